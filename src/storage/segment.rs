//! One segment file: a sequence of batches named by its zero-padded base offset.
//!
//! Owns the file handle, appends (with the fsync the caller asks for), the recovery scan that
//! validates batches one by one, and positional reads. It does not decide when to roll or
//! fsync (that is `partition`'s policy) and it never interprets records beyond their batch.

use std::path::{Path, PathBuf};

use crate::batch::{self, BatchError, BatchHeader, HEADER_BYTES, HEADER_BYTES_MIN};
use crate::disk::{Disk, FileRef};
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
    pub file: FileRef,
    pub index: SegmentIndex,
    /// Wall-clock time (ms) the segment was created, for age-based rolling.
    pub created_ms: i64,
}

impl Segment {
    /// Creates a new, empty segment file and makes its directory entry durable.
    pub fn create(disk: &dyn Disk, dir: &Path, base_offset: u64, interval_bytes: u64, now_ms: i64) -> Result<Self> {
        let path = dir.join(index::segment_file_name(base_offset));
        let file = disk.create_new(&path).map_err(|e| Error::io(&path, "create segment", e))?;
        if let Err(e) = sync_dir(disk, dir) {
            // Leave no half-created segment behind: the next roll creates it again.
            let _ = disk.remove_file(&path);
            return Err(e);
        }
        Ok(Segment { path, file, index: SegmentIndex::new(base_offset, interval_bytes), created_ms: now_ms })
    }

    /// Opens an existing segment. `writable` opens it for appends (the active segment).
    pub fn open(disk: &dyn Disk, path: PathBuf, base_offset: u64, interval_bytes: u64, writable: bool) -> Result<Self> {
        let file = disk.open(&path, writable).map_err(|e| Error::io(&path, "open segment", e))?;
        let created_ms = file.modified_ms().unwrap_or(0);
        Ok(Segment { path, file, index: SegmentIndex::new(base_offset, interval_bytes), created_ms })
    }

    pub fn file_len(&self) -> Result<u64> {
        self.file.len().map_err(|e| Error::io(&self.path, "stat segment", e))
    }

    /// Extends `self.index` by validating batches from `index.bytes` to the end of the file,
    /// or to `limit` bytes when that comes first (readers stop at the acknowledged end).
    /// Stops at the first batch that is torn, corrupt or not dense with its predecessor and
    /// reports where; everything before that point is valid and indexed.
    pub fn scan(&mut self, limit: u64) -> Result<Option<ScanStop>> {
        let file_len = self.file_len()?.min(limit);
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
                let header = match batch::peek_frame(&buf) {
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

    /// Calls `f` with the header and bytes of each indexed batch, in order, each checked to
    /// continue the offsets (their bytes were validated when the segment was scanned or sealed).
    pub fn for_each_batch(&self, mut f: impl FnMut(&BatchHeader, &[u8])) -> Result<()> {
        let (end, mut expected) = (self.index.bytes, self.index.base_offset);
        let (mut buf, mut position) = (Vec::new(), 0u64);
        while position < end {
            let want = (end - position).min(SCAN_READ_BYTES as u64) as usize;
            read_at(&self.file, &self.path, position, want, &mut buf)?;
            let mut at = 0usize;
            while at < buf.len() {
                let corrupt = |error| Error::Corrupt { path: self.path.clone(), position: position + at as u64, error };
                let frame = match batch::peek_frame(&buf[at..]) {
                    Ok(frame) => frame,
                    // The header runs past this read: read again from it.
                    Err(BatchError::Truncated { .. }) if at > 0 => break,
                    Err(error) => return Err(corrupt(error)),
                };
                if at + frame.length > buf.len() {
                    if at > 0 {
                        break; // read again from this batch
                    }
                    if position + frame.length as u64 > end {
                        return Err(corrupt(BatchError::Truncated { needed: frame.length, available: buf.len() }));
                    }
                    // One batch larger than a read: read all of it.
                    read_at(&self.file, &self.path, position, frame.length, &mut buf)?;
                }
                let bytes = &buf[at..at + frame.length];
                let header = batch::peek_header(bytes).map_err(corrupt)?;
                header.expect_base(expected).map_err(corrupt)?;
                expected = header.next_offset();
                at += header.length;
                f(&header, bytes);
            }
            position += at as u64;
        }
        Ok(())
    }

    /// Whether the last batch of the indexed bytes claims an append time, stepping from
    /// `from` (a batch boundary) over the batches' fixed headers. Append times, once a
    /// partition has them, are on every later batch: a segment whose last batch has none has
    /// none at all.
    pub fn last_batch_says_append_time(&self, from: u64) -> Result<bool> {
        let (end, mut position, mut header) = (self.index.bytes, from, Vec::new());
        let mut last = false;
        while position < end {
            let frame = self.peek_at(position, &mut header)?;
            last = frame.append_time.is_some();
            position += frame.length as u64;
        }
        Ok(last)
    }

    /// After [`scan`](Self::scan) stopped at `position`: the position of the first valid
    /// batch (magic, length and CRC) anywhere after it, if there is one. `None` means nothing
    /// valid follows — a torn tail, safe to cut. `Some` means damage in the middle of the
    /// file with acknowledged batches behind it, which must never be cut.
    pub fn next_valid_batch_after(&self, position: u64) -> Result<Option<u64>> {
        self.next_batch_after(position, |_| true)
    }

    /// The position of the first valid batch after `position` whose header `accept`s.
    fn next_batch_after(&self, position: u64, accept: impl Fn(&batch::Frame) -> bool) -> Result<Option<u64>> {
        let file_len = self.file_len()?;
        let (mut window, mut candidate) = (Vec::new(), Vec::new());
        let mut at = position + 1;
        // A whole batch of any version is longer than HEADER_BYTES, so every start worth
        // looking at has a full header inside the window it is examined in.
        while at + HEADER_BYTES as u64 <= file_len {
            let want = (file_len - at).min(SCAN_READ_BYTES as u64) as usize;
            read_at(&self.file, &self.path, at, want, &mut window)?;
            for i in 0..=want - HEADER_BYTES {
                if !batch::has_magic(&window[i..]) {
                    continue;
                }
                let Ok(header) = batch::peek_frame(&window[i..]) else { continue };
                let start = at + i as u64;
                if !accept(&header) || start + header.length as u64 > file_len {
                    continue;
                }
                read_at(&self.file, &self.path, start, header.length, &mut candidate)?;
                if batch::validate(&candidate).is_ok() {
                    return Ok(Some(start));
                }
            }
            // The next window starts at the first start not examined in this one.
            at += (want - HEADER_BYTES + 1) as u64;
        }
        Ok(None)
    }

    /// Whether a scan stop is a batch cut short by the end of the file: its header is intact,
    /// continues the offsets, and claims more bytes than the file holds. Nothing after it is
    /// searched for just any valid batch: what lies there is that batch's own body, and a
    /// producer's value may well contain valid-looking batches. But a flipped bit in the length
    /// field looks the same, with the acknowledged batches after it intact; so a valid batch
    /// that starts exactly where this one's offsets end proves damage. (A producer value that
    /// embeds such a batch, torn, is refused rather than cut: refusing loses nothing.)
    pub fn is_torn_tail(&self, stop: &ScanStop) -> Result<bool> {
        if !matches!(stop.error, BatchError::Truncated { .. }) {
            return Ok(false);
        }
        Ok(match self.peek_at(stop.position, &mut Vec::new()) {
            Ok(header) if header.base_offset == self.index.next_offset => {
                let next = header.next_offset();
                self.next_batch_after(stop.position, |later| later.base_offset == next)?.is_none()
            }
            Ok(_) => false,
            Err(_) => self.file_len()? - stop.position < HEADER_BYTES as u64,
        })
    }

    /// Whether the bytes from a scan stop to the end of the file are one whole batch, by its
    /// checksum, whose header fields outside the checksum are damaged (see
    /// [`batch::is_whole_by_checksum`]): the last batch, fully written and perhaps
    /// acknowledged, not a torn tail.
    pub fn ends_with_whole_batch_of_damaged_header(&self, stop: &ScanStop) -> Result<bool> {
        let len = self.file_len()? - stop.position;
        if !(HEADER_BYTES_MIN as u64..=batch::BATCH_BYTES_MAX as u64).contains(&len) {
            return Ok(false);
        }
        let mut bytes = Vec::new();
        read_at(&self.file, &self.path, stop.position, len as usize, &mut bytes)?;
        Ok(batch::is_whole_by_checksum(&bytes))
    }

    fn peek_at(&self, position: u64, buf: &mut Vec<u8>) -> Result<batch::Frame> {
        let len = (self.file_len()? - position).min(HEADER_BYTES as u64) as usize;
        read_at(&self.file, &self.path, position, len, buf)?;
        batch::peek_frame(buf).map_err(|error| Error::Corrupt { path: self.path.clone(), position, error })
    }

    /// Cuts the file back to `len` bytes and makes that durable.
    pub fn truncate(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| Error::io(&self.path, "truncate", e))?;
        self.sync()
    }

    /// Writes one encoded batch at the end of the file. The index is not touched: the caller
    /// records the batch, or cuts the file back to `index.bytes` when the call fails, so no
    /// byte of a failed call stays behind. On error a prefix of `bytes` may have been written.
    pub fn write_batch(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.append(bytes)
    }

    /// fsync, with the raw error (the caller decides what a failure means).
    pub fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, "fsync", e))
    }
}

/// A read-only view of a byte range of a segment, detached from the partition's lock.
#[derive(Clone)]
pub struct SegmentSlice {
    pub path: PathBuf,
    pub file: FileRef,
    pub start: u64,
    pub end: u64,
    /// Base offset of the batch at `start` (from the segment's index): every batch read is
    /// checked to continue the offsets from there.
    pub offset: u64,
}

impl SegmentSlice {
    /// Reads whole batches starting at `self.start`, about `max_bytes` worth (at least one
    /// batch), validating each (CRC, and its base offset against the one expected next), and
    /// moves `start` and `offset` past them. `buf` is reused (pass a recycled buffer on hot
    /// paths to avoid page faults).
    pub fn read_batches(&mut self, max_bytes: usize, mut buf: Vec<u8>) -> Result<Vec<u8>> {
        let want = (self.end - self.start).min(max_bytes.max(HEADER_BYTES) as u64) as usize;
        read_at(&self.file, &self.path, self.start, want, &mut buf)?;
        let (mut valid, mut offset) = (0, self.offset);
        while valid < buf.len() {
            let at = self.start + valid as u64;
            let corrupt = |error| Error::Corrupt { path: self.path.clone(), position: at, error };
            match batch::validate(&buf[valid..]) {
                Ok(header) => {
                    header.expect_base(offset).map_err(corrupt)?;
                    offset = header.next_offset();
                    valid += header.length;
                }
                Err(BatchError::Truncated { needed, .. }) if valid == 0 && at + needed as u64 <= self.end => {
                    read_at(&self.file, &self.path, self.start, needed, &mut buf)?;
                }
                Err(BatchError::Truncated { .. }) if valid > 0 => break,
                Err(error) => return Err(corrupt(error)),
            }
        }
        buf.truncate(valid);
        self.start += valid as u64;
        self.offset = offset;
        Ok(buf)
    }
}

fn read_at(file: &FileRef, path: &Path, position: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(len, 0);
    file.read_exact_at(buf, position).map_err(|e| Error::io(path, "read", e))
}

pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir).map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Removes a segment file and its index files.
pub fn remove_files(disk: &dyn Disk, dir: &Path, base_offset: u64) -> Result<()> {
    remove(disk, dir, &[index::segment_file_name(base_offset)])?;
    remove_index_files(disk, dir, base_offset)
}

/// Removes a segment's index files (rebuilt by the next seal or recovery).
pub fn remove_index_files(disk: &dyn Disk, dir: &Path, base_offset: u64) -> Result<()> {
    let names = [
        index::index_file_name(base_offset),
        index::time_index_file_name(base_offset),
        index::append_index_file_name(base_offset),
    ];
    remove(disk, dir, &names)
}

fn remove(disk: &dyn Disk, dir: &Path, names: &[String]) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        match disk.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "remove", e)),
        }
    }
    sync_dir(disk, dir)
}
