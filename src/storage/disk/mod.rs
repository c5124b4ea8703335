//! The local storage the log writes through: a small file-system trait with two
//! implementations.
//!
//! - [`OsDisk`]: the production path, a thin wrapper over `std::fs` (one virtual call per
//!   system call, nothing buffered or copied on the way).
//! - [`sim::SimDisk`]: an in-memory file system with crash semantics for the deterministic
//!   simulation: bytes not yet fsynced may be lost or torn at a crash, directory entries not
//!   yet made durable by a directory fsync may vanish or reappear, and seeded faults make a
//!   write stop part-way (ENOSPC), an fsync fail (and the page cache forget the data, as
//!   Linux does), or a bit flip on the medium.
//!
//! Owns only the mechanics of files. What is written, and when an fsync is owed, is decided by
//! `segment`, `index` and `partition`, which see nothing but this trait.

pub mod sim;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared handle to an open file.
pub type FileRef = Arc<dyn DiskFile>;
/// A shared handle to a file system.
pub type DiskRef = Arc<dyn Disk>;

/// File-system operations the log needs, and no more.
pub trait Disk: Send + Sync + fmt::Debug {
    /// Creates a new empty file opened for reads and appends; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<FileRef>;
    /// Opens an existing file for reads, and for appends when `append`.
    fn open(&self, path: &Path, append: bool) -> io::Result<FileRef>;
    /// Opens a file for reads and positional writes, creating it empty when missing.
    fn open_rw(&self, path: &Path) -> io::Result<FileRef>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` with `bytes` so that a crash leaves the old content or the whole new
    /// one (temp file, fsync, rename, directory fsync).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Names of the entries of a directory, unsorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn is_file(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
}

/// One open file.
#[allow(clippy::len_without_is_empty)] // files are measured, never tested for emptiness
pub trait DiskFile: Send + Sync + fmt::Debug {
    fn len(&self) -> io::Result<u64>;
    /// Last modification time, ms since the epoch.
    fn modified_ms(&self) -> io::Result<i64>;
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Writes all of `bytes` at the end of the file. On error a prefix may have been written.
    fn append(&self, bytes: &[u8]) -> io::Result<()>;
    /// Writes all of `bytes` at `position` (files from [`Disk::open_rw`] only).
    fn write_at(&self, position: u64, bytes: &[u8]) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fsync of the data (and the size). After an error, nothing written since the last
    /// successful sync may be assumed durable — nor, on Linux, still present after a crash.
    fn sync_data(&self) -> io::Result<()>;
}

/// The production disk: `std::fs`.
#[derive(Debug, Default)]
pub struct OsDisk;

/// [`Disk::write_atomic`] on the real file system through a temp file the caller names (for
/// callers whose cleanup recognises their own temp names): write it (a leftover of a dead
/// process under the same name is overwritten), fsync, rename over `path`, fsync the
/// directory. A failed step removes the temp file.
pub fn replace_via(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    let written = (|| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(tmp); // best effort: recovery removes leftover temp files
    }
    written?;
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The production disk as a shared handle.
pub fn os() -> DiskRef {
    Arc::new(OsDisk)
}

/// Distinguishes the temp files of concurrent atomic writes in one process.
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// `<name>.<pid>-<n>.tmp` beside `path`: unique per process and call, and ending in `.tmp` so
/// recovery removes leftovers.
pub fn temp_path(path: &Path) -> std::path::PathBuf {
    let n = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()))
}

impl Disk for OsDisk {
    fn create_new(&self, path: &Path) -> io::Result<FileRef> {
        let file = OpenOptions::new().read(true).append(true).create_new(true).open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn open(&self, path: &Path, append: bool) -> io::Result<FileRef> {
        let file = OpenOptions::new().read(true).append(append).open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn open_rw(&self, path: &Path) -> io::Result<FileRef> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        replace_via(path, &temp_path(path), bytes)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
}

#[derive(Debug)]
struct OsFile(File);

impl DiskFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn modified_ms(&self) -> io::Result<i64> {
        let modified = self.0.metadata()?.modified()?;
        Ok(modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, position)
    }

    fn append(&self, bytes: &[u8]) -> io::Result<()> {
        (&self.0).write_all(bytes)
    }

    fn write_at(&self, position: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, position)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// A file with no bytes, for read-only views of partitions that do not exist yet.
pub fn empty_file() -> FileRef {
    Arc::new(EmptyFile)
}

#[derive(Debug)]
struct EmptyFile;

impl DiskFile for EmptyFile {
    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn modified_ms(&self) -> io::Result<i64> {
        Ok(0)
    }

    fn read_exact_at(&self, buf: &mut [u8], _position: u64) -> io::Result<()> {
        if buf.is_empty() { Ok(()) } else { Err(io::Error::new(io::ErrorKind::UnexpectedEof, "empty file")) }
    }

    fn append(&self, _bytes: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only empty file"))
    }

    fn write_at(&self, _position: u64, _bytes: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only empty file"))
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only empty file"))
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}
