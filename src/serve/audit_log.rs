//! The local audit log of historical reads and group-offset changes (`<data_dir>/audit.log`,
//! one JSON line each), written by the HTTP and Kafka front ends when tokens are configured.
//!
//! Why fsync in batches: an fsync per line would put a disk flush on every historical read;
//! instead a flusher thread fsyncs at most every [`FSYNC_INTERVAL`] when lines were written, so
//! a crash loses at most that window of lines, and readers never wait for the disk. Why
//! rotate: the log grows with every read; at `server.audit_log_max_bytes` it is renamed
//! `audit.log.1` (the older ones shift up to `audit.log.<server.audit_log_keep>`, the oldest
//! is deleted) and a new one starts. A rotation fsyncs the old file first, then the directory.
//!
//! A rotation opens the new file (as `audit.log.new`) before it moves anything: one that cannot
//! (no file descriptor, no inode, no permission) changes nothing, lines go on to the full file,
//! and the next attempt waits [`ROTATE_RETRY_INTERVAL`]. So the file being written is always
//! `audit.log`, and only files no longer written are shifted or deleted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest a written line waits for its fsync: the window a crash can lose.
pub const FSYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Least time between rotation attempts after one failed: each attempt costs an fsync and a
/// few syscalls, and the cause (descriptors, disk) rarely clears within a second.
pub const ROTATE_RETRY_INTERVAL: Duration = Duration::from_secs(10);

struct State {
    file: File,
    bytes: u64,
    dirty: bool,
    closed: bool,
    /// After a failed rotation: no new attempt before this instant.
    rotate_not_before: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

/// An append-only JSON-lines file, fsynced in batches and rotated by size.
pub struct AuditLog {
    shared: Arc<Shared>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl AuditLog {
    /// Opens (or creates) `path` for appending; rotates at `max_bytes`, keeping `keep` old files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<AuditLog> {
        let file = open_append(path)?;
        let bytes = file.metadata().map_err(|e| Error::io(path, "stat audit log", e))?.len();
        let state = State { file, bytes, dirty: false, closed: false, rotate_not_before: None };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            path: path.to_path_buf(),
            max_bytes,
            keep: keep.max(1),
        });
        let flusher_shared = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("audit-log-fsync".into())
            .spawn(move || flush_loop(&flusher_shared))
            .map_err(|e| Error::io(path, "start the audit log's fsync thread", e))?;
        Ok(AuditLog { shared, flusher: Some(flusher) })
    }

    /// Appends `line` and a newline; rotates first when the file is full.
    pub fn write_line(&self, line: &str) {
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let full = state.bytes > 0 && state.bytes + line.len() as u64 + 1 > self.shared.max_bytes;
        let may_rotate = state.rotate_not_before.is_none_or(|t| Instant::now() >= t);
        if full && may_rotate {
            match rotate(&self.shared, &mut state) {
                Ok(()) => state.rotate_not_before = None,
                Err(e) => {
                    state.rotate_not_before = Some(Instant::now() + ROTATE_RETRY_INTERVAL);
                    tracing::error!(path = %self.shared.path.display(), error = %e, "cannot rotate the audit log; writing on to the full file, trying again in {ROTATE_RETRY_INTERVAL:?}");
                }
            }
        }
        // One write per line: another process appending (a CLI, see `append_line`) never
        // lands between a line and its newline.
        match state.file.write_all(format!("{line}\n").as_bytes()) {
            Ok(()) => {
                state.bytes += line.len() as u64 + 1;
                state.dirty = true;
            }
            Err(e) => tracing::error!(path = %self.shared.path.display(), error = %e, "cannot write the audit log"),
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.shared.wake.notify_all();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

/// Appends `line` to the audit log at `path` from a process that does not own it (the server
/// rotates it): one append-mode write of the line and its newline, then an fsync.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file = open_append(path)?;
    file.write_all(format!("{line}\n").as_bytes()).map_err(|e| Error::io(path, "write audit log", e))?;
    file.sync_data().map_err(|e| Error::io(path, "fsync audit log", e))
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, "open audit log", e))
}

/// Until closed: every [`FSYNC_INTERVAL`], fsyncs the file if lines were written (outside the
/// lock, on a second handle, so writers never wait for the disk); a last fsync when closed.
fn flush_loop(shared: &Shared) {
    loop {
        let (file, closed) = {
            let state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            let (mut state, _) =
                shared.wake.wait_timeout_while(state, FSYNC_INTERVAL, |s| !s.closed).unwrap_or_else(|p| p.into_inner());
            let file = if state.dirty { state.file.try_clone().ok() } else { None };
            state.dirty &= file.is_none();
            (file, state.closed)
        };
        if let Some(file) = file
            && let Err(e) = file.sync_data()
        {
            // Still dirty: the next interval tries again (the lines are not known durable).
            shared.state.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
            tracing::error!(path = %shared.path.display(), error = %e, "cannot fsync the audit log");
        }
        if closed {
            return;
        }
    }
}

/// `audit.log` → `audit.log.1`, `.1` → `.2`, …, dropping `.<keep>`; a fresh `audit.log`.
/// The fresh file is opened first, as `audit.log.new`, and the full file linked as
/// `audit.log.old`: an error before the shift changes nothing, and the file being written is
/// never shifted nor deleted. `audit.log` is never missing: the link becomes `.1` and the
/// fresh file is renamed over `audit.log`. (Renaming it away first left a moment without
/// `audit.log`, in which a CLI appending a line — see [`append_line`] — created one that the
/// fresh file then replaced, losing the line.) Where the file system has no hard links, the
/// full file is renamed to `.1` as before, with that moment. A crash after the link became
/// `.1` leaves `.1` and `audit.log` one file: the next rotation only renames the fresh file
/// over `audit.log`.
fn rotate(shared: &Shared, state: &mut State) -> Result<()> {
    let path = &shared.path;
    state.file.sync_data().map_err(|e| Error::io(path, "fsync audit log", e))?;
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    let fresh_path = PathBuf::from(format!("{}.new", path.display()));
    let old_path = PathBuf::from(format!("{}.old", path.display()));
    // Emptied: a leftover of a rotation that died before its last rename was never written to.
    let fresh = open_append(&fresh_path)?;
    fresh.set_len(0).map_err(|e| Error::io(&fresh_path, "truncate new audit log", e))?;
    let undo = |e: Error| {
        let _ = std::fs::remove_file(&old_path);
        let _ = std::fs::remove_file(&fresh_path); // best effort: the next rotation truncates it
        e
    };
    let already_linked = same_file(path, &numbered(1));
    if !already_linked {
        let _ = std::fs::remove_file(&old_path); // a leftover of a rotation that died
        let linked = hard_link(path, &old_path).is_ok();
        shift(shared, &numbered).map_err(undo)?;
        let moved = if linked { std::fs::rename(&old_path, numbered(1)) } else { std::fs::rename(path, numbered(1)) };
        moved.map_err(|e| undo(Error::io(path, "rotate audit log", e)))?;
        if let Err(e) = std::fs::rename(&fresh_path, path) {
            // The file being written goes back under its name (or stays there, linked).
            match linked {
                true => drop(std::fs::remove_file(numbered(1))),
                false => drop(std::fs::rename(numbered(1), path)),
            }
            return Err(undo(Error::io(&fresh_path, "rotate audit log", e)));
        }
    } else if let Err(e) = std::fs::rename(&fresh_path, path) {
        return Err(undo(Error::io(&fresh_path, "rotate audit log", e)));
    }
    state.file = fresh;
    (state.bytes, state.dirty) = (0, false);
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, "fsync directory", e))?;
    }
    Ok(())
}

/// Whether `a` and `b` are one file (two links to it).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: this thread's rotations find no hard links (as on vfat or some network mounts).
    static NO_HARD_LINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn hard_link(from: &Path, to: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if NO_HARD_LINKS.with(|no| no.get()) {
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no hard links here"));
    }
    std::fs::hard_link(from, to)
}

/// `.<keep-1>` → `.<keep>`, …, `.1` → `.2`, dropping `.<keep>`: files no longer written.
fn shift(shared: &Shared, numbered: &dyn Fn(u32) -> PathBuf) -> Result<()> {
    match std::fs::remove_file(numbered(shared.keep)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&numbered(shared.keep), "remove old audit log", e)),
    }
    for n in (1..shared.keep).rev() {
        match std::fs::rename(numbered(n), numbered(n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&numbered(n), "rotate audit log", e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
    }

    /// 10 lines of 40 bytes (with the newline) into a log of 100 bytes keeping 2: two per
    /// file, five files' worth; the newest three files stay.
    fn rotates_ten_lines_keeping_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 100, 2).unwrap();
        for n in 0..10 {
            log.write_line(&format!("{{\"n\":{n:02},\"pad\":\"{}\"}}", "x".repeat(22)));
        }
        drop(log);
        let numbers = |p: &Path| -> Vec<u32> { lines(p).iter().map(|l| l[5..7].parse().unwrap()).collect() };
        assert_eq!(numbers(&path), [8, 9]);
        assert_eq!(numbers(&dir.path().join("audit.log.1")), [6, 7]);
        assert_eq!(numbers(&dir.path().join("audit.log.2")), [4, 5]);
        assert!(!dir.path().join("audit.log.3").exists(), "only `keep` old files stay");
    }

    #[test]
    fn given_a_full_log_when_writing_should_rotate_and_keep_the_newest_files() {
        rotates_ten_lines_keeping_the_newest_files();
    }

    /// Another process appending (`append_line`, the CLI) opens `audit.log` by name: it must
    /// exist at every moment of a rotation, or the line lands in a file the rotation replaces.
    #[test]
    fn the_audit_log_never_goes_missing_while_it_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 100, 3).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let mut missing = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    missing += usize::from(!path.exists());
                }
                missing
            })
        };
        for n in 0..600 {
            log.write_line(&format!("{{\"n\":{n:03},\"pad\":\"{}\"}}", "x".repeat(21)));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(watcher.join().unwrap(), 0, "audit.log was missing during rotations");
        drop(log);
        let numbers = |p: &Path| -> Vec<u32> { lines(p).iter().map(|l| l[5..8].parse().unwrap()).collect() };
        assert_eq!(numbers(&path), [598, 599]);
        assert_eq!(numbers(&dir.path().join("audit.log.3")), [592, 593]);
    }

    /// Review: where hard links fail, rotation still works (renaming, as before), and a failed
    /// link never costs a rotated file.
    #[test]
    fn without_hard_links_rotation_renames_and_keeps_the_newest_files() {
        NO_HARD_LINKS.with(|no| no.set(true));
        rotates_ten_lines_keeping_the_newest_files();
        NO_HARD_LINKS.with(|no| no.set(false));
    }

    /// Review: a crash after the full file was linked as `.1` but before the fresh one took
    /// its name leaves `audit.log` and `.1` one file. The next rotation must not shift that
    /// file into `.2` as well (doubling its lines and dropping a real old file early).
    #[test]
    fn a_rotation_that_died_after_linking_is_finished_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = |n: u32| format!("{{\"n\":{n:02},\"pad\":\"{}\"}}", "x".repeat(22));
        std::fs::write(dir.path().join("audit.log.1"), format!("{}\n{}\n", line(0), line(1))).unwrap();
        std::fs::write(&path, format!("{}\n{}\n", line(2), line(3))).unwrap();
        std::fs::rename(dir.path().join("audit.log.1"), dir.path().join("audit.log.2")).unwrap();
        std::fs::hard_link(&path, dir.path().join("audit.log.1")).unwrap(); // the crash
        let log = AuditLog::open(&path, 100, 3).unwrap();
        log.write_line(&line(4));
        drop(log);
        let numbers = |p: &Path| -> Vec<u32> { lines(p).iter().map(|l| l[5..7].parse().unwrap()).collect() };
        assert_eq!(numbers(&path), [4]);
        assert_eq!(numbers(&dir.path().join("audit.log.1")), [2, 3]);
        assert_eq!(numbers(&dir.path().join("audit.log.2")), [0, 1]);
        assert!(!dir.path().join("audit.log.3").exists());
    }

    #[test]
    fn given_lines_written_when_the_interval_passes_should_fsync_without_a_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path, 1 << 20, 3).unwrap();
        log.write_line("{\"a\":1}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.shared.state.lock().unwrap().dirty {
            assert!(std::time::Instant::now() < deadline, "the flusher never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lines(&path), ["{\"a\":1}"]);
        // Reopened: appends after what is there, and counts it toward the size limit.
        drop(log);
        let log = AuditLog::open(&path, 1 << 20, 3).unwrap();
        log.write_line("{\"a\":2}");
        assert_eq!(log.shared.state.lock().unwrap().bytes, 16);
        drop(log);
        assert_eq!(lines(&path), ["{\"a\":1}", "{\"a\":2}"]);
    }
}
