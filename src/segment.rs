//! One segment file: a sequence of batches named by its zero-padded base offset.
//!
//! Owns the file handle, appends (with the fsync the caller asks for), the recovery scan that
//! validates batches one by one, and positional reads. It does not decide when to roll or
//! fsync (that is `partition`'s policy) and it never interprets records beyond their batch.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, BatchError, BatchHeader, HEADER_BYTES};
use crate::error::{Error, Result};
use crate::index::{self, SegmentIndex};

/// How much the recovery scan reads per syscall. Large enough to amortise syscalls on
/// sequential scans, small enough to be irrelevant next to the page cache.
const SCAN_READ_BYTES: usize = 1024 * 1024;

/// Where a scan stopped and why, when it did not reach the end of the file cleanly.
#[derive(Debug)]
pub struct ScanStop {
    pub position: u64,
    pub error: BatchError,
}

pub struct Segment {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub index: SegmentIndex,
    /// Wall-clock time (ms) the segment was created, for age-based rolling.
    pub created_ms: i64,
}

impl Segment {
    /// Creates a new, empty segment file and makes its directory entry durable.
    pub fn create(dir: &Path, base_offset: u64, interval_bytes: u64, now_ms: i64) -> Result<Self> {
        let path = dir.join(index::segment_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "create segment", e))?;
        sync_dir(dir)?;
        Ok(Segment {
            path,
            file: Arc::new(file),
            index: SegmentIndex::new(base_offset, interval_bytes),
            created_ms: now_ms,
        })
    }

    /// Opens an existing segment. `writable` opens it for appends (the active segment).
    pub fn open(path: PathBuf, base_offset: u64, interval_bytes: u64, writable: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .append(writable)
            .open(&path)
            .map_err(|e| Error::io(&path, "open segment", e))?;
        let created_ms = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Ok(Segment { path, file: Arc::new(file), index: SegmentIndex::new(base_offset, interval_bytes), created_ms })
    }

    pub fn file_len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(|e| Error::io(&self.path, "stat segment", e))?.len())
    }

    /// Extends `self.index` by validating batches from `index.bytes` to the end of the file.
    /// Stops at the first batch that is torn, corrupt or not dense with its predecessor and
    /// reports where; everything before that point is valid and indexed.
    pub fn scan(&mut self) -> Result<Option<ScanStop>> {
        let file_len = self.file_len()?;
        let mut buf = Vec::new();
        while self.index.bytes < file_len {
            let position = self.index.bytes;
            let want = (file_len - position).min(SCAN_READ_BYTES as u64) as usize;
            read_at(&self.file, &self.path, position, want, &mut buf)?;
            let mut consumed = 0;
            while consumed < buf.len() {
                let at = position + consumed as u64;
                match batch::validate(&buf[consumed..]) {
                    Ok(header) if header.base_offset == self.index.next_offset => {
                        self.index.push(&header);
                        consumed += header.length;
                    }
                    Ok(header) => {
                        let error = BatchError::Malformed(if header.base_offset < self.index.next_offset {
                            "batch base offset repeats an earlier offset"
                        } else {
                            "batch base offset skips offsets"
                        });
                        return Ok(Some(ScanStop { position: at, error }));
                    }
                    Err(BatchError::Truncated { needed, .. }) if at + needed as u64 <= file_len => {
                        break; // the batch continues past this read buffer: read again from it
                    }
                    Err(error) => return Ok(Some(ScanStop { position: at, error })),
                }
            }
            if consumed == 0 {
                // A single batch larger than the read buffer: read exactly that batch.
                let header = match batch::peek_header(&buf) {
                    Ok(h) => h,
                    Err(error) => return Ok(Some(ScanStop { position, error })),
                };
                read_at(&self.file, &self.path, position, header.length.min((file_len - position) as usize), &mut buf)?;
                match batch::validate(&buf) {
                    Ok(h) if h.base_offset == self.index.next_offset => self.index.push(&h),
                    Ok(_) => {
                        return Ok(Some(ScanStop {
                            position,
                            error: BatchError::Malformed("batch offsets not dense"),
                        }));
                    }
                    Err(error) => return Ok(Some(ScanStop { position, error })),
                }
            }
        }
        Ok(None)
    }

    /// Cuts the file back to `len` bytes and makes that durable. Used by recovery only.
    pub fn truncate(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| Error::io(&self.path, "truncate torn tail of", e))?;
        self.file.sync_all().map_err(|e| Error::io(&self.path, "fsync", e))
    }

    /// Appends one encoded batch; fsyncs before returning when `fsync` is set.
    pub fn append(&mut self, header: &BatchHeader, bytes: &[u8], fsync: bool) -> Result<()> {
        debug_assert_eq!(header.length, bytes.len());
        (&*self.file).write_all(bytes).map_err(|e| Error::io(&self.path, "append to", e))?;
        if fsync {
            self.sync()?;
        }
        self.index.push(header);
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, "fsync", e))
    }
}

/// A read-only view of a byte range of a segment, detached from the partition's lock.
#[derive(Clone)]
pub struct SegmentSlice {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub start: u64,
    pub end: u64,
}

impl SegmentSlice {
    /// Reads whole batches starting at `self.start`, about `max_bytes` worth (at least one
    /// batch), validating each. Returns the batches' bytes and the position after them.
    /// `buf` is reused (pass a recycled buffer on hot paths to avoid page faults).
    pub fn read_batches(&self, max_bytes: usize, mut buf: Vec<u8>) -> Result<(Vec<u8>, u64)> {
        let want = (self.end - self.start).min(max_bytes.max(HEADER_BYTES) as u64) as usize;
        read_at(&self.file, &self.path, self.start, want, &mut buf)?;
        let mut valid = 0;
        while valid < buf.len() {
            let at = self.start + valid as u64;
            match batch::validate(&buf[valid..]) {
                Ok(header) => valid += header.length,
                Err(BatchError::Truncated { needed, .. }) if valid == 0 && at + needed as u64 <= self.end => {
                    read_at(&self.file, &self.path, self.start, needed, &mut buf)?;
                }
                Err(BatchError::Truncated { .. }) if valid > 0 => break,
                Err(error) => return Err(Error::Corrupt { path: self.path.clone(), position: at, error }),
            }
        }
        buf.truncate(valid);
        Ok((buf, self.start + valid as u64))
    }
}

fn read_at(file: &File, path: &Path, position: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, position).map_err(|e| Error::io(path, "read", e))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Removes a segment file and its index files.
pub fn remove_files(dir: &Path, base_offset: u64) -> Result<()> {
    for name in [
        index::segment_file_name(base_offset),
        index::index_file_name(base_offset),
        index::time_index_file_name(base_offset),
    ] {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "remove", e)),
        }
    }
    sync_dir(dir)
}
