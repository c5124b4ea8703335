//! The append-time floor of a partition: the newest append time its sealed segments held,
//! kept durably beside them so the append clock never goes back below it after a restart.
//!
//! The writer's append clock resumes from the newest append time the local log holds. Once
//! local retention has deleted the sealed segments that were tiered, the local log may hold
//! none (an empty active segment), while the remote tier holds append times up to the last
//! sealed segment's; a wall clock behind them would then hand out smaller ones, and the
//! manifest would refuse the next segment. So every seal records its segment's newest append
//! time here, and recovery starts the clock from the larger of this file and the local log.
//!
//! Format (version 1, 20 bytes, little-endian, in `docs/FORMAT.md`): magic `TLAF`, version u8,
//! 3 zero bytes, append time i64 (ms since the epoch), CRC32C u32 of the 16 bytes before it.
//! Written atomically (temp file, fsync, rename, directory fsync) at each seal of a segment
//! that holds an append time. Missing (a partition sealed nothing since append times exist) or
//! damaged (logged): recovery goes by the local log alone; a segment that would then go below
//! the remote tier's append times is refused by the manifest commit, not stored.

use std::path::Path;

use crate::disk::Disk;

pub const FILE_NAME: &str = "append-floor";
const MAGIC: u32 = u32::from_le_bytes(*b"TLAF");
const VERSION: u8 = 1;
const BYTES: usize = 20;

fn encode(append_time: i64) -> [u8; BYTES] {
    let mut out = [0u8; BYTES];
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = VERSION;
    out[8..16].copy_from_slice(&append_time.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<i64> {
    let ok = bytes.len() == BYTES
        && bytes[0..4] == MAGIC.to_le_bytes()
        && bytes[4] == VERSION
        && bytes[5..8] == [0, 0, 0]
        && crc32c::crc32c(&bytes[..16]).to_le_bytes() == bytes[16..20];
    ok.then(|| i64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")))
}

/// Records `append_time` as the partition's floor, durably.
pub fn write(disk: &dyn Disk, dir: &Path, append_time: i64) -> std::io::Result<()> {
    disk.write_atomic(&dir.join(FILE_NAME), &encode(append_time))
}

/// The partition's floor: `None` when there is no file, or it is damaged (logged).
pub fn read(disk: &dyn Disk, dir: &Path) -> Option<i64> {
    let path = dir.join(FILE_NAME);
    let bytes = disk.read(&path).ok()?;
    let floor = decode(&bytes);
    if floor.is_none() {
        tracing::warn!(path = %path.display(), "append-time floor is damaged; the append clock goes by the local log only");
    }
    floor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_floor_v1_golden_bytes_and_damage() {
        let bytes = encode(1_772_546_520_000);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "544c414601000000c07301b49c010000736f2d59"); // CRC checked against an independent CRC32C
        assert_eq!(decode(&bytes), Some(1_772_546_520_000));
        for i in 0..BYTES {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert_eq!(decode(&damaged), None, "flip in byte {i}");
        }
        assert_eq!(decode(&bytes[..19]), None);
    }
}
