//! Sparse offset index and time index of one segment.
//!
//! Owns the in-memory index of a segment (sparse entries plus a summary: offsets, timestamps,
//! append times, bytes) and the three index files written beside a segment when it is sealed:
//! `<base>.index` (offset → file position), `<base>.timeindex` (running max record timestamp
//! → offset) and `<base>.appendindex` (running max append time → offset). The active segment's index lives only in memory and is rebuilt by the recovery
//! scan on open, so index files are written once, whole, and never patched. Layouts are in
//! `docs/FORMAT.md`; any index file that fails its checks is rebuilt from the segment.

use std::path::Path;

use crate::batch::BatchHeader;
use crate::disk::Disk;

const OFFSET_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"TLIX");
const TIME_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"TLTI");
const APPEND_INDEX_MAGIC: u32 = u32::from_le_bytes(*b"TLAT");
const INDEX_VERSION: u8 = 1;
const INDEX_HEADER_BYTES: usize = 48;
const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

/// Stands for the append time of a batch written before append times were recorded, in every
/// summary and index of append times: such batches always precede stamped ones in a
/// partition, and are before every stamped one.
pub const NO_APPEND_TIME: i64 = i64::MIN;

/// One sparse entry: the batch starting at `position` has base `offset`; every record before
/// it in the segment has a timestamp ≤ `max_timestamp_before`, and every batch before it was
/// appended at or before `max_append_time_before` ([`NO_APPEND_TIME`] when none was stamped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u32,
    pub max_timestamp_before: i64,
    pub max_append_time_before: i64,
}

/// Index and summary of one segment's batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub base_offset: u64,
    /// Offset the next appended record gets; equals `base_offset` while empty.
    pub next_offset: u64,
    /// Bytes of valid batches in the segment file.
    pub bytes: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Smallest and largest append time of its batches ([`NO_APPEND_TIME`] for a batch
    /// without one); `i64::MAX` and `NO_APPEND_TIME` while empty.
    pub min_append_time: i64,
    pub max_append_time: i64,
    pub entries: Vec<IndexEntry>,
    interval_bytes: u64,
    bytes_at_last_entry: u64,
}

/// Where a segment's index stood, so a failed append can be undone exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexMark {
    pub next_offset: u64,
    pub bytes: u64,
    min_timestamp: i64,
    max_timestamp: i64,
    min_append_time: i64,
    max_append_time: i64,
    entries: usize,
    bytes_at_last_entry: u64,
}

impl SegmentIndex {
    pub fn mark(&self) -> IndexMark {
        IndexMark {
            next_offset: self.next_offset,
            bytes: self.bytes,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            min_append_time: self.min_append_time,
            max_append_time: self.max_append_time,
            entries: self.entries.len(),
            bytes_at_last_entry: self.bytes_at_last_entry,
        }
    }

    /// Forgets every batch pushed since `mark` was taken.
    pub fn rewind(&mut self, mark: IndexMark) {
        assert!(mark.entries <= self.entries.len() && mark.bytes <= self.bytes, "rewind only goes back");
        self.next_offset = mark.next_offset;
        self.bytes = mark.bytes;
        self.min_timestamp = mark.min_timestamp;
        self.max_timestamp = mark.max_timestamp;
        self.min_append_time = mark.min_append_time;
        self.max_append_time = mark.max_append_time;
        self.entries.truncate(mark.entries);
        self.bytes_at_last_entry = mark.bytes_at_last_entry;
    }

    pub fn new(base_offset: u64, interval_bytes: u64) -> Self {
        SegmentIndex {
            base_offset,
            next_offset: base_offset,
            bytes: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            min_append_time: i64::MAX,
            max_append_time: NO_APPEND_TIME,
            entries: Vec::new(),
            interval_bytes,
            bytes_at_last_entry: 0,
        }
    }

    pub fn interval_bytes(&self) -> u64 {
        self.interval_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// Records a batch that was just written at the end of the segment.
    pub fn push(&mut self, header: &BatchHeader) {
        debug_assert_eq!(header.base_offset, self.next_offset, "batches must be dense");
        let position = self.bytes;
        if self.entries.is_empty() || position - self.bytes_at_last_entry >= self.interval_bytes {
            self.entries.push(IndexEntry {
                offset: header.base_offset,
                position: u32::try_from(position).expect("segment positions fit in u32"),
                max_timestamp_before: self.max_timestamp,
                max_append_time_before: self.max_append_time,
            });
            self.bytes_at_last_entry = position;
        }
        self.bytes += header.length as u64;
        self.next_offset = header.next_offset();
        self.min_timestamp = self.min_timestamp.min(header.min_timestamp);
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        let appended = header.append_time.unwrap_or(NO_APPEND_TIME);
        self.min_append_time = self.min_append_time.min(appended);
        self.max_append_time = self.max_append_time.max(appended);
    }

    /// `(position, base offset)` of the last indexed batch whose base offset is ≤ `offset`;
    /// scanning forward from it reaches `offset` within about one index interval. The base
    /// offset is what a reader checks the batch found there against.
    pub fn position_for_offset(&self, offset: u64) -> (u64, u64) {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        self.entry_before(i)
    }

    /// `(position, base offset)` from which a forward scan finds the first record with
    /// timestamp ≥ `time`: every record before it is older than `time`.
    pub fn position_for_time(&self, time: i64) -> (u64, u64) {
        let i = self.entries.partition_point(|e| e.max_timestamp_before < time);
        self.entry_before(i)
    }

    /// `(position, base offset, largest append time before it)` from which a forward scan
    /// finds the first batch appended after `time`: every batch before it was appended at or
    /// before `time` (batches without an append time count as before every time; the caller
    /// decides what that means).
    pub fn entry_for_append_time(&self, time: i64) -> (u64, u64, i64) {
        let i = self.entries.partition_point(|e| e.max_append_time_before <= time);
        let (position, offset) = self.entry_before(i);
        let before = if i == 0 { NO_APPEND_TIME } else { self.entries[i - 1].max_append_time_before };
        (position, offset, before)
    }

    fn entry_before(&self, i: usize) -> (u64, u64) {
        if i == 0 {
            (0, self.base_offset)
        } else {
            (u64::from(self.entries[i - 1].position), self.entries[i - 1].offset)
        }
    }

    /// Writes `<base>.appendindex`, `<base>.index` and `<base>.timeindex` into `dir`, each
    /// atomically (temp file, fsync, rename), in that order: `.index` and `.timeindex` without
    /// `.appendindex` then only ever come from a build before append times (see
    /// [`Self::load_files`]). Called once, when the segment is sealed.
    pub fn write_files(&self, disk: &dyn Disk, dir: &Path) -> std::io::Result<()> {
        let base = self.base_offset;
        let rel = |e: &IndexEntry| self.relative(e);
        let mut offsets = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        let mut times = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            offsets.extend_from_slice(&rel(e).to_le_bytes());
            offsets.extend_from_slice(&e.position.to_le_bytes());
            times.extend_from_slice(&e.max_timestamp_before.to_le_bytes());
            times.extend_from_slice(&rel(e).to_le_bytes());
        }
        let event = (self.min_timestamp, self.max_timestamp);
        self.write_append_file(disk, dir)?;
        disk.write_atomic(&dir.join(index_file_name(base)), &self.file_bytes(OFFSET_INDEX_MAGIC, event, &offsets))?;
        disk.write_atomic(&dir.join(time_index_file_name(base)), &self.file_bytes(TIME_INDEX_MAGIC, event, &times))
    }

    /// Writes `<base>.appendindex` alone, atomically (also for a segment sealed before append
    /// times, whose other index files stay as they are).
    pub fn write_append_file(&self, disk: &dyn Disk, dir: &Path) -> std::io::Result<()> {
        let mut appends = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for e in &self.entries {
            appends.extend_from_slice(&e.max_append_time_before.to_le_bytes());
            appends.extend_from_slice(&self.relative(e).to_le_bytes());
        }
        let bytes = self.file_bytes(APPEND_INDEX_MAGIC, (self.min_append_time, self.max_append_time), &appends);
        disk.write_atomic(&dir.join(append_index_file_name(self.base_offset)), &bytes)
    }

    /// An entry's offset relative to the segment's base, as the index files store it.
    fn relative(&self, e: &IndexEntry) -> u32 {
        u32::try_from(e.offset - self.base_offset).expect("relative offset fits in u32")
    }

    fn file_bytes(&self, magic: u32, (min, max): (i64, i64), entries: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_BYTES + entries.len());
        out.extend_from_slice(&magic.to_le_bytes());
        out.push(INDEX_VERSION);
        out.extend_from_slice(&[0u8; 3]);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // crc, filled below
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&min.to_le_bytes());
        out.extend_from_slice(&max.to_le_bytes());
        out.extend_from_slice(entries);
        let crc = crc32c::crc32c(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Loads the index files of a sealed segment: the index and whether its append-time index
    /// was derived rather than read (see below; the caller writes it). Returns `None` when a
    /// file is missing, damaged, or disagrees with the segment (`segment_bytes` is the file's
    /// length): the caller then rebuilds the index by scanning the segment.
    ///
    /// A segment with `.index` and `.timeindex` but no `.appendindex` was sealed by a build
    /// before append times (this one writes `.appendindex` first): none of its batches has an
    /// append time, so its append-time index is derived, all [`NO_APPEND_TIME`], without
    /// reading the segment (whose batches are checked when read, as that build did).
    pub fn load_files(
        disk: &dyn Disk,
        dir: &Path,
        base_offset: u64,
        segment_bytes: u64,
        interval_bytes: u64,
    ) -> Option<(Self, bool)> {
        let offsets = disk.read(&dir.join(index_file_name(base_offset))).ok()?;
        let times = disk.read(&dir.join(time_index_file_name(base_offset))).ok()?;
        let (summary, offset_entries) = parse_file(&offsets, OFFSET_INDEX_MAGIC, OFFSET_ENTRY_BYTES)?;
        let (time_summary, time_entries) = parse_file(&times, TIME_INDEX_MAGIC, TIME_ENTRY_BYTES)?;
        let derived = match disk.read(&dir.join(append_index_file_name(base_offset))) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return None,
        };
        let derived_entries;
        let (append_summary, append_entries) = match &derived {
            Some(bytes) => parse_file(bytes, APPEND_INDEX_MAGIC, TIME_ENTRY_BYTES)?,
            None => {
                let rows = time_entries.len() / TIME_ENTRY_BYTES;
                derived_entries = time_entries
                    .chunks_exact(TIME_ENTRY_BYTES)
                    .flat_map(|t| NO_APPEND_TIME.to_le_bytes().into_iter().chain(t[8..12].iter().copied()))
                    .collect::<Vec<u8>>();
                debug_assert_eq!(derived_entries.len(), rows * TIME_ENTRY_BYTES);
                ((summary.0, summary.1, NO_APPEND_TIME, NO_APPEND_TIME), &derived_entries[..])
            }
        };
        let same_segment = summary == time_summary && (append_summary.0, append_summary.1) == (summary.0, summary.1);
        if !same_segment || summary.0 != segment_bytes || summary.1 <= base_offset {
            return None;
        }
        if append_entries.len() != time_entries.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(offset_entries.len() / OFFSET_ENTRY_BYTES);
        let rows = offset_entries
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .zip(time_entries.chunks_exact(TIME_ENTRY_BYTES))
            .zip(append_entries.chunks_exact(TIME_ENTRY_BYTES));
        for ((o, t), a) in rows {
            let rel = u32::from_le_bytes(o[0..4].try_into().ok()?);
            if rel != u32::from_le_bytes(t[8..12].try_into().ok()?)
                || rel != u32::from_le_bytes(a[8..12].try_into().ok()?)
            {
                return None;
            }
            entries.push(IndexEntry {
                offset: base_offset + u64::from(rel),
                position: u32::from_le_bytes(o[4..8].try_into().ok()?),
                max_timestamp_before: i64::from_le_bytes(t[0..8].try_into().ok()?),
                max_append_time_before: i64::from_le_bytes(a[0..8].try_into().ok()?),
            });
        }
        // Append times never decrease along a partition; an index saying otherwise is damaged.
        let (min_append_time, max_append_time) = (append_summary.2, append_summary.3);
        let appends_ordered = entries.windows(2).all(|w| w[0].max_append_time_before <= w[1].max_append_time_before)
            && entries.last().is_none_or(|e| e.max_append_time_before <= max_append_time)
            && min_append_time <= max_append_time;
        if !appends_ordered {
            return None;
        }
        let ordered = entries.windows(2).all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position);
        let in_range = entries.first().is_some_and(|e| e.position == 0 && e.offset == base_offset)
            && entries.last().is_some_and(|e| u64::from(e.position) < segment_bytes && e.offset < summary.1);
        if !ordered || !in_range {
            return None;
        }
        let bytes_at_last_entry = entries.last().map_or(0, |e| u64::from(e.position));
        let index = SegmentIndex {
            base_offset,
            next_offset: summary.1,
            bytes: summary.0,
            min_timestamp: summary.2,
            max_timestamp: summary.3,
            min_append_time,
            max_append_time,
            entries,
            interval_bytes,
            bytes_at_last_entry,
        };
        Some((index, derived.is_none()))
    }
}

/// `(segment_bytes, next_offset, min_ts, max_ts)` and the entry bytes of a checked index file.
type FileSummary = (u64, u64, i64, i64);

fn parse_file(bytes: &[u8], magic: u32, entry_bytes: usize) -> Option<(FileSummary, &[u8])> {
    if bytes.len() < INDEX_HEADER_BYTES || u32::from_le_bytes(bytes[0..4].try_into().ok()?) != magic {
        return None;
    }
    if bytes[4] != INDEX_VERSION {
        return None;
    }
    let count = u32::from_le_bytes(bytes[8..12].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[12..16].try_into().ok()?);
    if bytes.len() != INDEX_HEADER_BYTES + count * entry_bytes || crc32c::crc32c(&bytes[16..]) != crc {
        return None;
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let summary = (field(16), field(24), field(32) as i64, field(40) as i64);
    Some((summary, &bytes[INDEX_HEADER_BYTES..]))
}

pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

pub fn time_index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.timeindex")
}

pub fn append_index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.appendindex")
}

/// Writes `bytes` to `path` on the real file system so that a crash leaves either the old
/// file or the whole new one. Code that runs under the simulation uses [`Disk::write_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::disk::OsDisk.write_atomic(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base: u64, count: u32, ts: i64, length: usize) -> BatchHeader {
        BatchHeader {
            version: 2,
            base_offset: base,
            record_count: count,
            min_timestamp: ts,
            max_timestamp: ts,
            // The first batch is from before append times; the rest were appended at 1000 + ts.
            append_time: (base > 100).then_some(1000 + base as i64),
            length,
            producer: None,
            checksum: 0,
        }
    }

    fn sample_index() -> SegmentIndex {
        let mut index = SegmentIndex::new(100, 1000);
        let mut offset = 100;
        for (i, ts) in [50, 40, 70, 60, 90, 80].into_iter().enumerate() {
            index.push(&header(offset, 2, ts, 600 + i));
            offset += 2;
        }
        index
    }

    #[test]
    fn sparse_entries_follow_the_interval_and_carry_running_max() {
        let index = sample_index();
        // Entries at the first batch and whenever 1000 bytes passed since the last entry.
        let got: Vec<(u64, u32, i64)> =
            index.entries.iter().map(|e| (e.offset, e.position, e.max_timestamp_before)).collect();
        assert_eq!(got, vec![(100, 0, i64::MIN), (104, 1201, 50), (108, 2406, 70)]);
        assert_eq!(index.position_for_offset(103), (0, 100));
        assert_eq!(index.position_for_offset(104), (1201, 104));
        assert_eq!(index.position_for_offset(200), (2406, 108));
        assert_eq!(index.position_for_time(50), (0, 100));
        assert_eq!(index.position_for_time(51), (1201, 104));
        assert_eq!(index.position_for_time(71), (2406, 108));
        // Append times 1102, 1104, … from offset 102 on; the batch at 100 has none.
        let appends: Vec<i64> = index.entries.iter().map(|e| e.max_append_time_before).collect();
        assert_eq!(appends, vec![NO_APPEND_TIME, 1102, 1106]);
        assert_eq!((index.min_append_time, index.max_append_time), (NO_APPEND_TIME, 1110));
        assert_eq!(index.entry_for_append_time(i64::MIN), (0, 100, NO_APPEND_TIME));
        assert_eq!(index.entry_for_append_time(1101), (0, 100, NO_APPEND_TIME));
        assert_eq!(index.entry_for_append_time(1102), (1201, 104, 1102));
        assert_eq!(index.entry_for_append_time(1106), (2406, 108, 1106));
    }

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample_index();
        let disk = crate::disk::OsDisk;
        index.write_files(&disk, dir.path()).unwrap();
        let loaded = SegmentIndex::load_files(&disk, dir.path(), 100, index.bytes, 1000).unwrap();
        assert_eq!(loaded, (index.clone(), false));
        // A segment length that disagrees with the index means the index is stale.
        assert!(SegmentIndex::load_files(&disk, dir.path(), 100, index.bytes + 1, 1000).is_none());
        let path = dir.path().join(time_index_file_name(100));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(SegmentIndex::load_files(&disk, dir.path(), 100, index.bytes, 1000).is_none());
        // A segment sealed before append times has no .appendindex: derived, every batch
        // without an append time, the other indexes as read.
        index.write_files(&disk, dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(append_index_file_name(100))).unwrap();
        let (old, derived) = SegmentIndex::load_files(&disk, dir.path(), 100, index.bytes, 1000).unwrap();
        assert!(derived);
        assert_eq!((old.min_append_time, old.max_append_time), (NO_APPEND_TIME, NO_APPEND_TIME));
        assert!(old.entries.iter().all(|e| e.max_append_time_before == NO_APPEND_TIME));
        let offsets = |i: &SegmentIndex| {
            i.entries.iter().map(|e| (e.offset, e.position, e.max_timestamp_before)).collect::<Vec<_>>()
        };
        assert_eq!(offsets(&old), offsets(&index));
        // Append times that decrease are damage.
        let mut backwards = index.clone();
        backwards.entries[2].max_append_time_before = 1000;
        backwards.write_files(&disk, dir.path()).unwrap();
        assert!(SegmentIndex::load_files(&disk, dir.path(), 100, index.bytes, 1000).is_none());
    }

    /// Golden bytes of the append-time index, version 1.
    #[test]
    fn append_index_v1_golden_bytes() {
        let mut index = SegmentIndex::new(5, 4096);
        index.push(&BatchHeader { append_time: Some(1_700_000_000_000), ..header(5, 3, 1000, 200) });
        let dir = tempfile::tempdir().unwrap();
        index.write_files(&crate::disk::OsDisk, dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(append_index_file_name(5))).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "544c41540100000001000000a6fb133ec80000000000000008000000000000000068e5cf8b0100000068e5cf8b010000\
             000000000000008000000000"
        );
    }

    /// Golden bytes of the offset index, version 1.
    #[test]
    fn offset_index_v1_golden_bytes() {
        let mut index = SegmentIndex::new(5, 4096);
        index.push(&header(5, 3, 1000, 200));
        let bytes = index.file_bytes(OFFSET_INDEX_MAGIC, (1000, 1000), &[0, 0, 0, 0, 0, 0, 0, 0]);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "544c49580100000001000000d42eb94ac8000000000000000800000000000000e803000000000000e8030000000000000000000000000000"
        );
    }
}
