//! The acknowledged end of a partition, published by the writer for read-only readers in
//! other processes (`consume`, `offsets`, a read-only `Log`).
//!
//! A segment file can hold bytes that are not acknowledged: a batch written and waiting for
//! its fsync, or a whole call being undone after a failed write or fsync (see `partition`).
//! A reader that indexed the file up to its length could serve records the writer then cuts,
//! and find its index pointing past the end of the file. So after every acknowledged append,
//! roll, undo and recovery, the writer overwrites `<partition>/ack-end` in place with the
//! active segment's base offset and its acknowledged length; readers index no further.
//!
//! Format (version 1, 28 bytes, little-endian, in `docs/FORMAT.md`): magic `TLAE`, version
//! u8, 3 zero bytes, active base offset u64, acknowledged bytes u64, CRC32C u32 of the 24
//! bytes before it. The file is never fsynced: it only speaks to
//! processes on the same machine while the writer runs. After a crash it may be stale, torn
//! or missing; a reader then falls back to indexing whole valid batches up to the file's end
//! (what it did before this file existed), and the writer rewrites it when it reopens.

use std::path::Path;

use crate::disk::{Disk, FileRef};

pub const FILE_NAME: &str = "ack-end";
const MAGIC: u32 = u32::from_le_bytes(*b"TLAE");
const VERSION: u8 = 1;
pub const BYTES: usize = 28;

/// Where the acknowledged records of a partition end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckEnd {
    /// Base offset of the segment the writer appends to.
    pub active_base: u64,
    /// Bytes of that segment that hold acknowledged batches.
    pub active_bytes: u64,
}

impl AckEnd {
    /// How far a reader may index the segment starting at `base`: all of a segment before the
    /// writer's active one, the acknowledged bytes of the active one, nothing of a newer one
    /// (a roll in progress, or a segment a failing call created and is about to remove).
    pub fn limit_for(self, base: u64) -> u64 {
        match base.cmp(&self.active_base) {
            std::cmp::Ordering::Less => u64::MAX,
            std::cmp::Ordering::Equal => self.active_bytes,
            std::cmp::Ordering::Greater => 0,
        }
    }
}

/// The 28 bytes of the file: magic u32, version u8, 3 zero bytes, active base u64, active
/// bytes u64, CRC32C u32 of the 24 bytes before it.
pub fn encode(end: AckEnd) -> [u8; BYTES] {
    let mut out = [0u8; BYTES];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = VERSION;
    out[8..16].copy_from_slice(&end.active_base.to_le_bytes());
    out[16..24].copy_from_slice(&end.active_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Option<AckEnd> {
    if bytes.len() != BYTES || bytes[0..4] != MAGIC.to_le_bytes() || bytes[4] != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    if crc32c::crc32c(&bytes[..24]) != crc {
        return None;
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Some(AckEnd { active_base: field(8), active_bytes: field(16) })
}

/// The writer's handle on the file.
pub fn open(disk: &dyn Disk, partition_dir: &Path) -> std::io::Result<FileRef> {
    disk.open_rw(&partition_dir.join(FILE_NAME))
}

/// Publishes `end`. Readers see it at once (same page cache); it is never fsynced.
pub fn publish(file: &FileRef, end: AckEnd) -> std::io::Result<()> {
    file.write_at(0, &encode(end))
}

/// Reads of a bad copy retried before giving up: a read racing the writer's in-place write
/// can come back torn (the CRC catches it), and giving up means no limit at all.
const TORN_READ_RETRIES: usize = 3;

/// What the writer last published, if the file is there and intact.
pub fn read(disk: &dyn Disk, partition_dir: &Path) -> Option<AckEnd> {
    let path = partition_dir.join(FILE_NAME);
    for _ in 0..TORN_READ_RETRIES {
        match disk.read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Some(end) => return Some(end),
                None => continue, // torn by a concurrent write, or damaged: look again
            },
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_any_flipped_byte_is_rejected() {
        let end = AckEnd { active_base: 1234, active_bytes: 98765 };
        let bytes = encode(end);
        assert_eq!(decode(&bytes), Some(end));
        for i in 0..BYTES {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad), None, "byte {i}");
        }
        assert_eq!(decode(&bytes[..20]), None, "torn");
    }

    /// Golden bytes of version 1.
    #[test]
    fn ack_end_v1_golden_bytes() {
        let hex: String =
            encode(AckEnd { active_base: 5, active_bytes: 200 }).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN);
    }

    const GOLDEN: &str = "544c4145010000000500000000000000c800000000000000732d1b9f";
}
