//! The writer lock: one writing process per data directory, enforced with an OS file lock
//! (`flock` on `<data_dir>/LOCK`). The lock file holds the holder's pid, host and start time
//! so a second writer can say who is in the way. The OS drops the lock when the process dies,
//! however it dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug)]
pub struct DirLock {
    _file: File,
    pub path: PathBuf,
}

impl DirLock {
    pub fn acquire(data_dir: &Path) -> Result<DirLock> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, "open lock file", e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "holder unknown".to_string() } else { holder.to_string() };
                return Err(Error::Locked { dir: data_dir.to_path_buf(), holder });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, "lock", e)),
        }
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let holder =
            format!("pid {} on {}, since {}", std::process::id(), host.trim(), chrono::Utc::now().to_rfc3339());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()))
            .map_err(|e| Error::io(&path, "write lock holder to", e))?;
        Ok(DirLock { _file: file, path })
    }
}
