//! Idempotent producers: what a partition remembers of each producer so that a batch it
//! retries is stored once, and the file that carries that memory across restarts.
//!
//! A Kafka producer with idempotence on (`enable.idempotence`, librdkafka's and the Java
//! client's default) gets a producer id from the broker (`InitProducerId`, see [`IdAllocator`])
//! and numbers its records per partition: each batch carries the producer id, an epoch and the
//! sequence of its first record ([`ProducerStamp`]). The log stores these fields with the batch.
//! Per partition, [`Producers`] keeps for each producer its epoch and its last
//! [`BATCHES_KEPT`] batches (sequence range and offsets), and judges each new batch as Kafka
//! does:
//!
//! - the same sequence range and the same bytes (CRC32C) as a remembered batch: a retry of a
//!   stored batch. Nothing is written; the producer gets the offsets the batch got the first
//!   time. The same range with other bytes is not a retry (another writer used the producer's
//!   id): refused, never acknowledged without being stored.
//! - an older epoch: a fenced (replaced) producer; refused.
//! - a newer epoch: must start at sequence 0; the producer starts over.
//! - the same epoch: must continue the sequence (last + 1); a gap or a repeat that is not a
//!   remembered batch is refused as out of order, and nothing is written.
//! - a producer the partition does not know (new, or expired): any sequence is accepted.
//!
//! Durability: the state is rebuilt from the log itself, since every stored batch carries its
//! stamp. When a segment is sealed the partition writes a snapshot of the state as of the end
//! of that segment (`<offset:020>.producers`, format in `docs/FORMAT.md`); recovery loads the
//! newest snapshot at or below the log end and replays the stamps of the batches after it. A
//! batch the writer appended is thus remembered after a crash exactly when it survived, so a
//! retry after a restart is recognised whenever the first attempt is in the log.
//!
//! Bounds: a producer is forgotten [`EXPIRATION_MS`] after its last batch (Kafka's default
//! `producer.id.expiration.ms`), and a partition remembers at most
//! [`crate::limits::PRODUCERS_PER_PARTITION_MAX`] producers (the one idle longest goes first).
//! A forgotten producer's retry is stored again, as in Kafka.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::batch::ProducerStamp;
use crate::disk::Disk;
use crate::error::{Error, Result};

/// Batches remembered per producer: Kafka's bound on in-flight requests of an idempotent
/// producer, so every batch a producer may retry is among them.
pub const BATCHES_KEPT: usize = 5;
/// How long a producer is remembered after its last batch: Kafka's default
/// `producer.id.expiration.ms` (one day).
pub const EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// Snapshots kept per partition: the newest, and the one before it in case the newest is
/// damaged.
const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_SUFFIX: &str = ".producers";
const SNAPSHOT_MAGIC: &[u8; 4] = b"TLPS";
const SNAPSHOT_VERSION: u8 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 20;
const ENTRY_BYTES: usize = 20;
const BATCH_BYTES: usize = 28;

/// One remembered batch: its sequence range, the offsets it got and its CRC32C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sequenced {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: u64,
    last_offset: u64,
    checksum: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    epoch: i16,
    last_append_ms: i64,
    /// Oldest first; at most [`BATCHES_KEPT`]; never empty.
    batches: VecDeque<Sequenced>,
}

/// What a partition knows of its idempotent producers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Producers {
    entries: HashMap<i64, Entry>,
}

/// How a batch stands against the producer state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retry of a stored batch, which got these offsets: write nothing.
    Duplicate { first_offset: u64, last_offset: u64 },
}

/// Why a batch is refused (nothing is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("producer {id} epoch {epoch} is fenced: epoch {current} has written since")]
    Fenced { id: i64, epoch: i16, current: i16 },
    #[error("producer {id} epoch {epoch} sent sequence {found} where {expected} comes next")]
    OutOfOrder { id: i64, epoch: i16, expected: i32, found: i32 },
    #[error(
        "producer {id} epoch {epoch} sent sequences {first}..={last} again with other content than the batch stored at \
         offsets {first_offset}..={last_offset} (is another client using this producer id?)"
    )]
    Conflict { id: i64, epoch: i16, first: i32, last: i32, first_offset: u64, last_offset: u64 },
}

impl Producers {
    /// Judges a batch of `count` records stamped `stamp` whose CRC32C is `checksum` (see the
    /// module doc).
    pub fn check(&self, stamp: ProducerStamp, count: u32, checksum: u32) -> std::result::Result<Verdict, Refusal> {
        let Some(entry) = self.entries.get(&stamp.id) else { return Ok(Verdict::Append) };
        let (id, epoch, found) = (stamp.id, stamp.epoch, stamp.first_sequence);
        if epoch < entry.epoch {
            return Err(Refusal::Fenced { id, epoch, current: entry.epoch });
        }
        if epoch > entry.epoch {
            return if found == 0 {
                Ok(Verdict::Append)
            } else {
                Err(Refusal::OutOfOrder { id, epoch, expected: 0, found })
            };
        }
        let last = stamp.last_sequence(count);
        if let Some(b) = entry.batches.iter().find(|b| b.first_sequence == found && b.last_sequence == last) {
            let (first_offset, last_offset) = (b.first_offset, b.last_offset);
            if b.checksum != checksum {
                return Err(Refusal::Conflict { id, epoch, first: found, last, first_offset, last_offset });
            }
            return Ok(Verdict::Duplicate { first_offset, last_offset });
        }
        let expected = next_sequence(entry.batches.back().expect("entries hold a batch").last_sequence);
        if found == expected { Ok(Verdict::Append) } else { Err(Refusal::OutOfOrder { id, epoch, expected, found }) }
    }

    /// Remembers a batch stored at `first_offset..=last_offset` at `now_ms`; `checksum` is
    /// its CRC32C.
    pub fn record(
        &mut self,
        stamp: ProducerStamp,
        count: u32,
        (first_offset, last_offset): (u64, u64),
        checksum: u32,
        now_ms: i64,
    ) {
        let batch = Sequenced {
            first_sequence: stamp.first_sequence,
            last_sequence: stamp.last_sequence(count),
            first_offset,
            last_offset,
            checksum,
        };
        if !self.entries.contains_key(&stamp.id) && self.entries.len() >= crate::limits::PRODUCERS_PER_PARTITION_MAX {
            self.evict_idlest();
        }
        let entry = self.entries.entry(stamp.id).or_insert_with(|| Entry {
            epoch: stamp.epoch,
            last_append_ms: now_ms,
            batches: VecDeque::new(),
        });
        if entry.epoch != stamp.epoch {
            entry.epoch = stamp.epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        entry.batches.push_back(batch);
        if entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    fn evict_idlest(&mut self) {
        if let Some((&id, entry)) = self.entries.iter().min_by_key(|(id, e)| (e.last_append_ms, **id)) {
            tracing::warn!(
                producer = id,
                last_append_ms = entry.last_append_ms,
                "producer state full; forgetting the producer idle longest (a retry of its batches would be stored again)"
            );
            self.entries.remove(&id);
        }
    }

    /// Forgets producers whose last batch is older than [`EXPIRATION_MS`] at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) {
        self.entries.retain(|_, e| e.last_append_ms >= now_ms.saturating_sub(EXPIRATION_MS));
    }

    /// The largest producer id remembered.
    pub fn max_id(&self) -> Option<i64> {
        self.entries.keys().copied().max()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The snapshot file's bytes for this state as of `offset` (version 1, see
    /// `docs/FORMAT.md`): header, entries sorted by producer id, CRC32C of all bytes before it.
    pub fn encode(&self, offset: u64) -> Vec<u8> {
        let mut ids: Vec<&i64> = self.entries.keys().collect();
        ids.sort();
        let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + ids.len() * (ENTRY_BYTES + BATCH_BYTES) + 4);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for id in ids {
            let entry = &self.entries[id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&entry.epoch.to_le_bytes());
            out.push(entry.batches.len() as u8);
            out.push(0);
            out.extend_from_slice(&entry.last_append_ms.to_le_bytes());
            for b in &entry.batches {
                out.extend_from_slice(&b.first_sequence.to_le_bytes());
                out.extend_from_slice(&b.last_sequence.to_le_bytes());
                out.extend_from_slice(&b.first_offset.to_le_bytes());
                out.extend_from_slice(&b.last_offset.to_le_bytes());
                out.extend_from_slice(&b.checksum.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a snapshot: the offset it was taken at and the state. Every field is checked.
    pub fn decode(bytes: &[u8]) -> std::result::Result<(u64, Producers), String> {
        let body = bytes.len().checked_sub(4).filter(|&n| n >= SNAPSHOT_HEADER_BYTES).ok_or("shorter than a header")?;
        let stored = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..body]);
        if stored != computed {
            return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
        }
        if &bytes[..4] != SNAPSHOT_MAGIC {
            return Err("not a producer snapshot (magic is not TLPS)".into());
        }
        if bytes[4] != SNAPSHOT_VERSION || bytes[5..8] != [0; 3] {
            return Err(format!("unsupported version {} (this build reads version {SNAPSHOT_VERSION})", bytes[4]));
        }
        let mut at = 8;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            let field = bytes[..body].get(at..at + n).ok_or("entries run past the end")?;
            at += n;
            Ok(field)
        };
        let offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        if count > crate::limits::PRODUCERS_PER_PARTITION_MAX {
            return Err(format!(
                "{count} producers, more than the {} a partition keeps",
                crate::limits::PRODUCERS_PER_PARTITION_MAX
            ));
        }
        let mut entries = HashMap::with_capacity(count);
        let mut previous: Option<i64> = None;
        for _ in 0..count {
            let id = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            let epoch = i16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
            let (kept, zero) = match take(2)? {
                [kept, zero] => (*kept as usize, *zero),
                _ => unreachable!("take(2) gives two bytes"),
            };
            let last_append_ms = i64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
            if id < 0 || epoch < 0 || !(1..=BATCHES_KEPT).contains(&kept) || zero != 0 {
                return Err(format!("producer {id}: epoch {epoch}, {kept} batches or its zero byte out of range"));
            }
            if previous.is_some_and(|p| p >= id) {
                return Err(format!("producer {id} out of ascending order"));
            }
            previous = Some(id);
            let mut batches = VecDeque::with_capacity(kept);
            for _ in 0..kept {
                let first_sequence = i32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
                let last_sequence = i32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
                let first_offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
                let last_offset = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
                let checksum = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
                if first_sequence < 0 || last_sequence < 0 || first_offset > last_offset || last_offset >= offset {
                    return Err(format!(
                        "producer {id}: a batch at offsets {first_offset}..={last_offset} is out of range"
                    ));
                }
                batches.push_back(Sequenced { first_sequence, last_sequence, first_offset, last_offset, checksum });
            }
            entries.insert(id, Entry { epoch, last_append_ms, batches });
        }
        if at != body {
            return Err(format!("{} bytes after the last entry", body - at));
        }
        Ok((offset, Producers { entries }))
    }
}

/// Kafka's sequence successor: wraps from `i32::MAX` to 0.
fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

pub fn snapshot_file_name(offset: u64) -> String {
    format!("{offset:020}{SNAPSHOT_SUFFIX}")
}

/// Offsets of the snapshots in a partition directory, ascending.
fn list_snapshots(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>> {
    let names = disk.list(dir).map_err(|e| Error::io(dir, "list partition directory", e))?;
    let mut offsets: Vec<u64> =
        names.iter().filter_map(|n| n.strip_suffix(SNAPSHOT_SUFFIX).and_then(|o| o.parse().ok())).collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Writes the snapshot of `producers` as of `offset` durably (temp file, fsync, rename,
/// directory fsync).
pub fn write_snapshot(disk: &dyn Disk, dir: &Path, offset: u64, producers: &Producers) -> Result<()> {
    let path = dir.join(snapshot_file_name(offset));
    disk.write_atomic(&path, &producers.encode(offset)).map_err(|e| Error::io(&path, "write producer snapshot", e))
}

/// Removes all snapshots but the newest two. Never while an append call may
/// still be undone: the undo removes the snapshots the call took, and recovery then needs the
/// ones before them.
pub fn prune_snapshots(disk: &dyn Disk, dir: &Path) -> Result<()> {
    let offsets = list_snapshots(disk, dir)?;
    let old = offsets.len().saturating_sub(SNAPSHOTS_KEPT);
    remove_snapshots(disk, dir, &offsets[..old])
}

/// Removes the snapshots taken past `end`: after an append call is undone (or a crash cut the
/// log), they describe offsets the log no longer holds, and later appends will reuse them.
pub fn remove_snapshots_after(disk: &dyn Disk, dir: &Path, end: u64) -> Result<()> {
    let after: Vec<u64> = list_snapshots(disk, dir)?.into_iter().filter(|&o| o > end).collect();
    remove_snapshots(disk, dir, &after)
}

fn remove_snapshots(disk: &dyn Disk, dir: &Path, offsets: &[u64]) -> Result<()> {
    for &offset in offsets {
        let path = dir.join(snapshot_file_name(offset));
        match disk.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "remove producer snapshot", e)),
        }
    }
    if !offsets.is_empty() {
        disk.sync_dir(dir).map_err(|e| Error::io(dir, "fsync directory", e))?;
    }
    Ok(())
}

/// What [`load_snapshot`] found.
#[derive(Debug)]
pub enum Snapshot {
    /// The newest readable snapshot at or below the end: its offset and state.
    Found(u64, Producers),
    /// No snapshot file at all: a partition from before snapshots were written.
    Absent,
    /// Snapshot files, none of them readable.
    Unreadable,
}

/// The newest readable snapshot taken at or below `end`. A damaged snapshot is skipped with
/// a warning (the one before it, and a longer replay, stand in).
pub fn load_snapshot(disk: &dyn Disk, dir: &Path, end: u64) -> Result<Snapshot> {
    let offsets: Vec<u64> = list_snapshots(disk, dir)?.into_iter().filter(|&o| o <= end).collect();
    if offsets.is_empty() {
        return Ok(Snapshot::Absent);
    }
    for offset in offsets.into_iter().rev() {
        let path = dir.join(snapshot_file_name(offset));
        let loaded = disk.read(&path).map_err(|e| e.to_string()).and_then(|bytes| Producers::decode(&bytes));
        match loaded {
            Ok((at, producers)) if at == offset => return Ok(Snapshot::Found(at, producers)),
            Ok((at, _)) => {
                tracing::warn!(file = %path.display(), at, "producer snapshot names another offset; skipped")
            }
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "damaged producer snapshot; skipped"),
        }
    }
    Ok(Snapshot::Unreadable)
}

/// Hands out producer ids, never the same one twice for a data directory: ids come from
/// blocks reserved durably in `<data_dir>/producer-ids` before any id of a block is given
/// out, and never start below an id a partition remembers.
pub struct IdAllocator {
    path: PathBuf,
    disk: crate::disk::DiskRef,
    next: Mutex<(i64, i64)>, // (next id, end of the reserved block)
}

/// Ids reserved per write of the `producer-ids` file.
const ID_BLOCK: i64 = 1000;
pub const ID_FILE_NAME: &str = "producer-ids";
const ID_MAGIC: &[u8; 4] = b"TLPI";
const ID_VERSION: u8 = 1;

impl IdAllocator {
    /// Reads the reserved end from the file (absent: 0) and starts past it and past
    /// `floor` (one more than the largest id any partition remembers).
    pub fn open(disk: crate::disk::DiskRef, data_dir: &Path, floor: i64) -> Result<IdAllocator> {
        let path = data_dir.join(ID_FILE_NAME);
        let reserved = match disk.read(&path) {
            Ok(bytes) => decode_ids(&bytes).map_err(|e| {
                Error::Invalid(format!(
                    "{}: {e}. It holds the next producer id; to recover, write a fresh one by removing it only if no \
                     idempotent producer wrote to this data directory in the last day",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(&path, "read", e)),
        };
        let next = reserved.max(floor);
        Ok(IdAllocator { path, disk, next: Mutex::new((next, next)) })
    }

    /// A new producer id. Refused (never wrapped) when ids run out.
    pub fn allocate(&self) -> Result<i64> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if next.0 >= next.1 {
            let end = next.0.checked_add(ID_BLOCK).ok_or_else(|| {
                Error::Invalid(format!("{}: producer ids are used up (next {})", self.path.display(), next.0))
            })?;
            self.disk.write_atomic(&self.path, &encode_ids(end)).map_err(|e| Error::io(&self.path, "write", e))?;
            next.1 = end;
        }
        let id = next.0;
        next.0 += 1; // < next.1 ≤ i64::MAX
        Ok(id)
    }

    /// Whether `id` was handed out (or may have been, before a restart): a batch stamped with
    /// an id at or past the next one is not from a producer that called InitProducerId.
    pub fn handed_out(&self, id: i64) -> bool {
        id < self.next.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

/// `producer-ids`, version 1: magic `TLPI`, version u8, 3 zero bytes, the first id not yet
/// handed out (i64 LE), CRC32C (u32 LE) of the 16 bytes before it.
fn encode_ids(next: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    out.extend_from_slice(ID_MAGIC);
    out.push(ID_VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&next.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_ids(bytes: &[u8]) -> std::result::Result<i64, String> {
    if bytes.len() != 20 {
        return Err(format!("{} bytes where the file has 20", bytes.len()));
    }
    let (stored, computed) = (u32::from_le_bytes(bytes[16..].try_into().expect("4")), crc32c::crc32c(&bytes[..16]));
    if stored != computed || &bytes[..4] != ID_MAGIC || bytes[4] != ID_VERSION || bytes[5..8] != [0; 3] {
        return Err("damaged (magic, version or checksum wrong)".into());
    }
    let next = i64::from_le_bytes(bytes[8..16].try_into().expect("8"));
    if next < 0 { Err(format!("negative next id {next}")) } else { Ok(next) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamp(id: i64, epoch: i16, first_sequence: i32) -> ProducerStamp {
        ProducerStamp { id, epoch, first_sequence }
    }

    #[test]
    fn a_retry_of_a_remembered_batch_is_a_duplicate_with_its_first_offsets() {
        let mut p = Producers::default();
        assert_eq!(p.check(stamp(7, 0, 0), 3, 0xC0FFEE), Ok(Verdict::Append), "an unknown producer may start");
        p.record(stamp(7, 0, 0), 3, (100, 102), 0xC0FFEE, 1);
        p.record(stamp(7, 0, 3), 2, (110, 111), 0xC0FFEE, 2);
        assert_eq!(
            p.check(stamp(7, 0, 0), 3, 0xC0FFEE),
            Ok(Verdict::Duplicate { first_offset: 100, last_offset: 102 })
        );
        assert_eq!(
            p.check(stamp(7, 0, 3), 2, 0xC0FFEE),
            Ok(Verdict::Duplicate { first_offset: 110, last_offset: 111 })
        );
        assert_eq!(p.check(stamp(7, 0, 5), 1, 0xC0FFEE), Ok(Verdict::Append));
        let gap = p.check(stamp(7, 0, 6), 1, 0xC0FFEE);
        assert_eq!(gap, Err(Refusal::OutOfOrder { id: 7, epoch: 0, expected: 5, found: 6 }));
        // The same first sequence with another length is not the stored batch.
        assert_eq!(
            p.check(stamp(7, 0, 3), 1, 0xC0FFEE),
            Err(Refusal::OutOfOrder { id: 7, epoch: 0, expected: 5, found: 3 })
        );
    }

    /// The same sequence range with other bytes is another writer using the producer's id,
    /// not a retry: refused, so it is neither stored nor acknowledged as the stored batch.
    #[test]
    fn a_batch_with_a_remembered_range_but_other_bytes_is_a_conflict_not_a_duplicate() {
        let mut p = Producers::default();
        p.record(stamp(7, 0, 0), 2, (10, 11), 0xAAAA, 1);
        assert_eq!(p.check(stamp(7, 0, 0), 2, 0xAAAA), Ok(Verdict::Duplicate { first_offset: 10, last_offset: 11 }));
        let conflict = Refusal::Conflict { id: 7, epoch: 0, first: 0, last: 1, first_offset: 10, last_offset: 11 };
        assert_eq!(p.check(stamp(7, 0, 0), 2, 0xBBBB), Err(conflict));
    }

    #[test]
    fn epochs_fence_old_producers_and_restart_sequences() {
        let mut p = Producers::default();
        p.record(stamp(1, 2, 0), 1, (0, 0), 0xC0FFEE, 0);
        assert_eq!(p.check(stamp(1, 1, 1), 1, 0xC0FFEE), Err(Refusal::Fenced { id: 1, epoch: 1, current: 2 }));
        assert_eq!(p.check(stamp(1, 3, 0), 1, 0xC0FFEE), Ok(Verdict::Append));
        assert_eq!(
            p.check(stamp(1, 3, 4), 1, 0xC0FFEE),
            Err(Refusal::OutOfOrder { id: 1, epoch: 3, expected: 0, found: 4 })
        );
        p.record(stamp(1, 3, 0), 1, (1, 1), 0xC0FFEE, 0);
        assert_eq!(p.check(stamp(1, 2, 0), 1, 0xC0FFEE), Err(Refusal::Fenced { id: 1, epoch: 2, current: 3 }));
    }

    #[test]
    fn sequences_wrap_at_int32_max() {
        let mut p = Producers::default();
        let s = stamp(9, 0, i32::MAX - 1);
        assert_eq!(s.last_sequence(3), 0);
        p.record(s, 3, (0, 2), 0xC0FFEE, 0);
        assert_eq!(p.check(stamp(9, 0, 1), 1, 0xC0FFEE), Ok(Verdict::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_idle_producers_expire() {
        let mut p = Producers::default();
        for i in 0..7 {
            p.record(stamp(1, 0, i), 1, (i as u64, i as u64), 0xC0FFEE, 10);
        }
        assert_eq!(p.check(stamp(1, 0, 2), 1, 0xC0FFEE), Ok(Verdict::Duplicate { first_offset: 2, last_offset: 2 }));
        assert!(p.check(stamp(1, 0, 1), 1, 0xC0FFEE).is_err(), "batch 1 is older than the last five");
        p.expire(10 + EXPIRATION_MS);
        assert_eq!(p.len(), 1);
        p.expire(11 + EXPIRATION_MS);
        assert!(p.is_empty());
    }

    #[test]
    fn a_full_partition_forgets_the_producer_idle_longest() {
        let mut p = Producers::default();
        for id in 0..crate::limits::PRODUCERS_PER_PARTITION_MAX as i64 {
            p.record(stamp(id, 0, 0), 1, (id as u64, id as u64), 0xC0FFEE, 1_000 + id);
        }
        p.record(stamp(1_000_000, 0, 0), 1, (0, 0), 0xC0FFEE, 5_000_000);
        assert_eq!(p.len(), crate::limits::PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(p.check(stamp(0, 0, 5), 1, 0xC0FFEE), Ok(Verdict::Append), "producer 0 was idle longest: forgotten");
        assert!(p.check(stamp(1, 0, 5), 1, 0xC0FFEE).is_err(), "producer 1 is still remembered");
    }

    /// The snapshot layout of docs/FORMAT.md, byte for byte.
    #[test]
    fn snapshot_golden_bytes() {
        let mut p = Producers::default();
        p.record(stamp(5, 1, 10), 2, (40, 41), 0xC0FFEE, 1_700_000_000_000);
        let bytes = p.encode(42);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "544c5053",
                "01000000",
                "2a00000000000000",
                "01000000", // magic, version, offset 42, 1 entry
                "0500000000000000",
                "0100",
                "01",
                "00",
                "0068e5cf8b010000", // id 5, epoch 1, 1 batch, last append
                "0a000000",
                "0b000000",
                "2800000000000000",
                "2900000000000000", // sequences 10..=11, offsets 40..=41
                "eeffc000",         // the batch's CRC32C (0xC0FFEE here)
                "8f541013"          // CRC32C of the file (checked with an independent implementation)
            )
        );
        assert_eq!(Producers::decode(&bytes), Ok((42, p)));
    }

    #[test]
    fn id_file_golden_bytes_and_damage() {
        assert_eq!(
            encode_ids(1000).iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "544c504901000000e803000000000000b8ac73bc"
        );
        assert_eq!(decode_ids(&encode_ids(1000)), Ok(1000));
        let mut damaged = encode_ids(1000);
        damaged[9] ^= 1;
        assert!(decode_ids(&damaged).is_err());
    }

    /// Review of a9c883f: docs/FORMAT.md gives the byte after the batch count as "zero" and the
    /// entries in ascending id order, and `decode` says "every field is checked"; a file with
    /// a non-zero byte there, or with its entries out of order (CRC right), must be refused.
    #[test]
    fn review_a_snapshot_with_a_non_zero_reserved_byte_or_unsorted_ids_is_refused() {
        let reseal = |mut bytes: Vec<u8>| {
            let body = bytes.len() - 4;
            let crc = crc32c::crc32c(&bytes[..body]);
            bytes[body..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let mut p = Producers::default();
        p.record(stamp(5, 1, 10), 2, (40, 41), 0xC0FFEE, 1_700_000_000_000);
        let mut bytes = p.encode(42);
        bytes[SNAPSHOT_HEADER_BYTES + 11] = 0xff; // the zero byte after the batch count
        let reserved_byte_refused = Producers::decode(&reseal(bytes)).is_err();

        let mut q = Producers::default();
        q.record(stamp(1, 0, 0), 1, (0, 0), 0xC0FFEE, 1);
        q.record(stamp(2, 0, 0), 1, (1, 1), 0xC0FFEE, 1);
        let bytes = q.encode(2);
        let entry = ENTRY_BYTES + BATCH_BYTES;
        let (a, b) = (SNAPSHOT_HEADER_BYTES, SNAPSHOT_HEADER_BYTES + entry);
        let mut swapped = bytes.clone();
        swapped[a..a + entry].copy_from_slice(&bytes[b..b + entry]);
        swapped[b..b + entry].copy_from_slice(&bytes[a..a + entry]);
        let unsorted_refused = Producers::decode(&reseal(swapped)).is_err();
        assert_eq!(
            (reserved_byte_refused, unsorted_refused),
            (true, true),
            "(non-zero reserved byte, unsorted ids) refused"
        );
    }

    fn arb_producers() -> impl Strategy<Value = Producers> {
        proptest::collection::vec((0i64..50, 0i16..3, 0i32..1000, 1u32..20), 0..40).prop_map(|batches| {
            let mut p = Producers::default();
            for (i, (id, epoch, seq, count)) in batches.into_iter().enumerate() {
                p.record(
                    stamp(id, epoch, seq),
                    count,
                    (i as u64 * 100, i as u64 * 100 + u64::from(count) - 1),
                    0xC0FFEE,
                    i as i64,
                );
            }
            p
        })
    }

    proptest! {
        #[test]
        fn snapshots_round_trip(p in arb_producers()) {
            let bytes = p.encode(1_000_000);
            prop_assert_eq!(Producers::decode(&bytes), Ok((1_000_000, p)));
        }

        #[test]
        fn any_damaged_byte_or_cut_is_refused(p in arb_producers(), at in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<bool>()) {
            let mut bytes = p.encode(1_000_000);
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] ^= 1 << bit }
            prop_assert!(Producers::decode(&bytes).is_err());
        }
    }
}
