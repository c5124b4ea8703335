//! One partition of a topic: an ordered list of sealed segments plus one active segment.
//!
//! Owns the partition's policies: dense offset assignment, rolling by size and age, fsync per
//! the durability policy, recovery on open (validate the active segment batch by batch,
//! truncate a torn tail, rebuild damaged indexes), and lookups by offset and by time. It does
//! not know about topics, keys or the remote tier.
//!
//! Concurrency: one mutex guards the segment list. Appends hold it for write + fsync, so
//! appends to one partition are serialised (the order is the log). Plain appends (no
//! producer stamp) that arrive while another holds it queue and are then written together by
//! one of them and share one fsync (group commit, see `group_commit` and
//! [`Partition::append`]); each stays all or nothing. Reads hold it only to take
//! a [`SegmentSlice`] snapshot of committed bytes and then read without it, so a slow reader
//! never blocks a writer. Only bytes of fully written batches are ever visible to readers.
//!
//! Failed appends: one `append` call is all or nothing. Its batches are written after the
//! last acknowledged byte and only then recorded in the index; if a write or fsync fails, the
//! file is cut back to the last acknowledged byte and that is fsynced, so no byte of the
//! failed call can be read, or be found by recovery between acknowledged batches. (If the undo
//! itself fails, the partition stops and the call's first batches may come back after a
//! restart, after every acknowledged record, like those of a call a crash interrupted.) After
//! a failed fsync (or a cut that itself failed) the partition stops accepting appends until it
//! is reopened: Linux may already have dropped the unsynced pages while reporting the error
//! only once (PostgreSQL's "fsyncgate"), so retrying the fsync proves nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::ack_end::{self, AckEnd};
use crate::batch::{self, HEADER_BYTES, ProducerStamp, RecordView};
use crate::config::{Config, FsyncPolicy};
use crate::disk::{self, Disk, FileRef};
use crate::error::{Error, Result};
use crate::group_commit::GroupCommit;
use crate::host::Host;
use crate::index::IndexMark;
use crate::index::SegmentIndex;
use crate::producers::{self, Producers, Snapshot, Verdict};
use crate::record::{Record, StoredRecord};
use crate::segment::{self, Segment, SegmentSlice};

/// Written (durably) when a writer opens a partition, removed when it closes cleanly. Found at
/// open, it means the last writer crashed or stopped on a failed fsync — and after a failed
/// write-back Linux keeps the pages in the cache, marked clean, so a restarted process reads
/// back bytes that are not on the medium and that no later fsync will ever write. So the
/// active segment is first rewritten into a fresh file. Written at open rather than at the
/// failure, when the disk may refuse it: if it cannot be written, the writer does not open.
const WRITER_OPEN_FILE: &str = "writer-open";

/// Bytes a single read returns at most (whole batches; at least one batch).
pub const READ_BYTES_MAX: usize = 1024 * 1024;

/// A batch header and the position of its batch in a segment file.
pub type BatchAt = (u64, batch::BatchHeader);

/// Summary of a sealed segment, for tiering and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub path: PathBuf,
}

/// Result of one append: the offsets the records got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_offset: u64,
    pub last_offset: u64,
    /// The append time the call's batches got; for an idempotent producer's retry, the one
    /// the stored batch got the first time (`None` when it is no longer local).
    pub append_time: Option<i64>,
}

/// Result of appending one producer batch ([`Partition::append_as_sent`],
/// [`Partition::append_stamped`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub appended: Appended,
    pub records: usize,
    /// An idempotent producer's retry of a batch the log holds: nothing was written, and
    /// `appended` holds the offsets the batch got the first time.
    pub duplicate: bool,
}

pub struct Partition {
    pub topic: String,
    pub id: u32,
    dir: PathBuf,
    host: Host,
    policy: Policy,
    /// When the active segment rolls: its topic's `segment.bytes` and `segment.ms` in force,
    /// which an alter of the topic changes while the partition is open ([`Self::set_roll`]).
    roll: RollPolicy,
    writable: bool,
    state: Mutex<State>,
    /// The end offset, published after every append, so followers wait without polling.
    end_watch: tokio::sync::watch::Sender<u64>,
    /// Plain appends waiting to be written and fsynced together (see `group_commit`).
    commits: GroupCommit<Call, Result<Appended>>,
    /// Set on a read-only replica's partitions (the bucket URL): every append is refused.
    replica_of: std::sync::OnceLock<String>,
    /// The first offset remote retention has not expired, as this process last learned it
    /// (from its tiering pass or a replica's refresh): a reader below it reloads the manifest
    /// rather than answer from a version (or a cached chunk) from before the expiry.
    expired_before: std::sync::atomic::AtomicU64,
}

/// Where a call started writing: the base offset of the segment it started in and the
/// index mark there (what an undo cuts back to).
type CallStart = (u64, IndexMark);

/// A call of a group commit written and not yet known to be durable.
struct Pending {
    /// Its place in the group.
    at: usize,
    appended: Appended,
    start: CallStart,
    /// Where its last batch ends: (segment base offset, bytes).
    ends_at: (u64, u64),
}

/// The most encoded bytes one group commit writes (or one call's, when larger): bounds how
/// long a group holds the partition's lock, which readers take too.
const GROUP_COMMIT_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// A plain append (no producer stamp) waiting for its group commit: its batches encoded at
/// offset 0 without an append time, which the group's leader sets where they land
/// ([`batch::place`]).
struct Call {
    batches: Vec<Vec<u8>>,
    now_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Policy {
    max_record_bytes: usize,
    index_interval_bytes: u64,
    fsync: FsyncPolicy,
}

/// Roll size and age, read at every append and age check. Atomics, not part of the state
/// under the partition's mutex, so an alter never waits behind an append's fsync; a change
/// applies from the next append on (a batch being written is not cut).
#[derive(Debug)]
struct RollPolicy {
    segment_max_bytes: AtomicU64,
    segment_max_age_ms: AtomicU64,
}

struct State {
    /// Sealed segments by base offset; immutable once here.
    sealed: BTreeMap<u64, Segment>,
    active: Segment,
    /// Appended but not yet fsynced (interval policy).
    dirty: bool,
    /// Why appends are refused until the partition is reopened, after a failed fsync.
    stopped: Option<String>,
    /// The writer's `ack-end` file, where it publishes the acknowledged end for readers.
    ack_end: Option<FileRef>,
    /// Idempotent producers' state as of the log end (the writer's only).
    producers: Producers,
    /// How far the written bytes are known to be on the medium, as (segment base offset,
    /// bytes in it), from the last successful fsync of the active segment before a roll (or
    /// a flush); lowered by an undo. A group commit's calls that end there are durable even
    /// when the group fails after.
    synced: (u64, u64),
}

/// Where the first batch appended after a time lies in the local log ([`Partition::offset_as_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalCut {
    /// The first local offset appended after the time; the end offset when there is none.
    pub offset: u64,
    /// Whether the batch just before `offset` has no append time; `None` when `offset` is the
    /// local start (what lies before it is below the local log).
    pub previous_unstamped: Option<bool>,
}

impl Partition {
    /// Opens (or, when `writable`, creates) the partition in `dir` and recovers it.
    pub fn open(host: &Host, topic: &str, id: u32, dir: PathBuf, config: &Config, writable: bool) -> Result<Self> {
        let policy = Policy {
            max_record_bytes: config.log.max_record_bytes as usize,
            index_interval_bytes: config.segment.index_interval_bytes,
            fsync: config.durability.fsync,
        };
        // The configuration's, until the topic opening it sets its own in force (`Topic` does so
        // for every partition it opens, before any append).
        let roll = RollPolicy {
            segment_max_bytes: AtomicU64::new(config.segment.max_bytes),
            segment_max_age_ms: AtomicU64::new(config.segment.max_age_ms),
        };
        if writable {
            host.disk.create_dir_all(&dir).map_err(|e| Error::io(&dir, "create partition directory", e))?;
            // The new directory's entry must be durable in its parent before data goes in it.
            if let Some(parent) = dir.parent() {
                segment::sync_dir(&*host.disk, parent)?;
            }
        }
        let state = recover(host, topic, id, &dir, policy, writable)?;
        let end_watch = tokio::sync::watch::Sender::new(state.active.index.next_offset);
        let host = host.clone();
        Ok(Partition {
            topic: topic.to_string(),
            id,
            dir,
            host,
            policy,
            roll,
            writable,
            state: Mutex::new(state),
            end_watch,
            commits: GroupCommit::new(GROUP_COMMIT_MAX_BYTES, |call: &Call| {
                call.batches.iter().map(|b| b.len() as u64).sum()
            }),
            replica_of: std::sync::OnceLock::new(),
            expired_before: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Sets the roll size and age (the topic's `segment.bytes` and `segment.ms` in force):
    /// from the next append (and age check) on. The caller checks the ranges.
    pub fn set_roll(&self, segment_max_bytes: u64, segment_max_age_ms: u64) {
        assert!(segment_max_bytes as usize > HEADER_BYTES, "a segment holds at least a batch header");
        self.roll.segment_max_bytes.store(segment_max_bytes, Ordering::Relaxed);
        self.roll.segment_max_age_ms.store(segment_max_age_ms, Ordering::Relaxed);
    }

    /// The roll size and age in force: `(segment_max_bytes, segment_max_age_ms)`.
    pub fn roll_policy(&self) -> (u64, u64) {
        (self.roll.segment_max_bytes.load(Ordering::Relaxed), self.roll.segment_max_age_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state it guards is still the files.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The disk and clock the partition runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The first offset remote retention has not expired, as far as this process knows.
    pub fn expired_before(&self) -> u64 {
        self.expired_before.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records that remote retention expired everything below `offset` (never moves back).
    pub fn note_expired_before(&self, offset: u64) {
        self.expired_before.fetch_max(offset, std::sync::atomic::Ordering::AcqRel);
    }

    /// First offset held locally.
    pub fn start_offset(&self) -> u64 {
        let state = self.lock();
        state.sealed.keys().next().copied().unwrap_or(state.active.index.base_offset)
    }

    /// A receiver that sees the end offset change after each append in this process.
    pub fn watch_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.end_watch.subscribe()
    }

    /// Offset the next appended record will get (the "log end offset").
    pub fn end_offset(&self) -> u64 {
        self.lock().active.index.next_offset
    }

    /// The largest idempotent producer id this partition remembers.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.lock().producers.max_id()
    }

    /// Marks the partition as a read-only replica's of `remote` (the bucket it serves):
    /// every append is refused from now on with [`Error::Replica`].
    pub fn refuse_appends(&self, remote: &str) {
        let _ = self.replica_of.set(remote.to_string());
    }

    fn check_appendable(&self) -> Result<()> {
        if let Some(remote) = self.replica_of.get() {
            let what = format!("{}/{}", self.topic, self.id);
            return Err(Error::Replica { what, remote: remote.clone() });
        }
        if !self.writable {
            return Err(Error::ReadOnly(self.dir.clone()));
        }
        Ok(())
    }

    /// A replica's partition, whose local log is always empty (every offset below its start
    /// is read from the bucket): moves the start and end to `start`, the remote tier's new
    /// end, and wakes the followers. The new empty segment is created before the old one is
    /// removed, under the partition's lock, so a reader in this process sees either the old
    /// end or the new one. Refused on a partition holding records (that would cut them) and
    /// backwards (offsets the followers were told about would vanish).
    pub fn advance_empty(&self, start: u64) -> Result<()> {
        let mut state = self.lock();
        let end = state.active.index.next_offset;
        if self.replica_of.get().is_none()
            || !self.writable
            || !state.sealed.is_empty()
            || !state.active.index.is_empty()
        {
            return Err(Error::Invalid(format!(
                "{}/{}: only a replica's empty local log can be moved forward (it ends at {end})",
                self.topic, self.id
            )));
        }
        if start <= end {
            if start < end {
                return Err(Error::Invalid(format!(
                    "{}/{}: the bucket now ends at offset {start}, before {end} which this replica served: the remote history went backwards; \
                     stop the replica and run `tierlog verify` on the bucket",
                    self.topic, self.id
                )));
            }
            return Ok(());
        }
        let disk = &*self.host.disk;
        let fresh =
            Segment::create(disk, &self.dir, start, self.policy.index_interval_bytes, self.host.clock.now_ms())?;
        let old = std::mem::replace(&mut state.active, fresh);
        self.publish_ack_end(&state);
        drop(state);
        self.end_watch.send_replace(start);
        drop(old);
        segment::remove_files(disk, &self.dir, end)
    }

    /// Plain appends waiting for the group commit in progress to end, to be written together
    /// after it.
    pub fn appends_waiting(&self) -> usize {
        self.commits.waiting()
    }

    /// Bytes in the active segment.
    pub fn active_bytes(&self) -> u64 {
        self.lock().active.index.bytes
    }

    /// Appends `records` as one or more batches with dense offsets and returns once they are
    /// durable under the fsync policy. All or nothing: records over `log.max_record_bytes`
    /// reject the whole call before anything is written, and an I/O error leaves none of the
    /// call's records in the log, even when the call had rolled segments (see the module doc).
    /// Calls that arrive while another is written wait and are written after it together,
    /// with one fsync (see `write_group`).
    pub fn append(&self, records: &[Record], now_ms: i64) -> Result<Appended> {
        self.check_appendable()?;
        assert!(!records.is_empty(), "append needs at least one record");
        self.check_records(records)?;
        // Encoded here, outside the partition's lock (beside another call's fsync); the
        // group's leader only places each batch where it lands.
        let batches =
            split_by_size(records, self.batch_bytes_target()).into_iter().map(|g| batch::encode(0, g)).collect();
        self.commit(Call { batches, now_ms })
    }

    /// Appends an idempotent producer's records as one batch stamped `producer`, unless the
    /// partition holds that batch already (a retry: nothing is written, see `producers`). The
    /// records must fit one batch of the format (over it: [`Error::RecordTooLarge`]), which
    /// may exceed `segment.max_bytes` as a single large record may; otherwise as
    /// [`Self::append`].
    pub fn append_stamped(&self, records: &[Record], producer: ProducerStamp, now_ms: i64) -> Result<Produced> {
        self.check_appendable()?;
        assert!(!records.is_empty(), "append needs at least one record");
        self.check_records(records)?;
        let bytes: usize = HEADER_BYTES + records.iter().map(batch::record_encoded_len).sum::<usize>();
        if bytes > batch::BATCH_BYTES_MAX {
            let max = batch::BATCH_BYTES_MAX;
            return Err(Error::RecordTooLarge { topic: self.topic.clone(), partition: self.id, bytes, max });
        }
        let encode = |base, at| batch::encode_appended(base, records, Some(producer), at);
        let (appended, duplicate) = self.append_producer_batch(encode, (producer, records.len() as u32), now_ms)?;
        Ok(Produced { appended, records: records.len(), duplicate })
    }

    /// Appends a Kafka producer's batch as it was sent, its base offset set to the log end:
    /// no decoding and re-encoding of its records. `None` when the batch cannot be stored as
    /// it is ([`batch::storable`]: compressed, …) or, unless an idempotent producer's, exceeds
    /// one batch of this partition; the caller then decodes it and calls [`Self::append`] (or
    /// [`Self::append_stamped`]). Otherwise the same checks, all-or-nothing and durability as
    /// [`Self::append`], and for an idempotent producer's batch those of
    /// [`Self::append_stamped`].
    pub fn append_as_sent(&self, bytes: &[u8], now_ms: i64) -> Option<Result<Produced>> {
        let (header, views) = batch::storable(bytes)?;
        if bytes.len() > self.batch_bytes_target() + HEADER_BYTES && header.producer.is_none() {
            return None;
        }
        if let Err(e) = self.check_appendable() {
            return Some(Err(e));
        }
        let count = views.len();
        let checked = self.check_views(&views);
        drop(views);
        let Some(stamp) = header.producer else {
            let produced = |appended| Produced { appended, records: count, duplicate: false };
            let call = || Call { batches: vec![bytes.to_vec()], now_ms };
            return Some(checked.and_then(|()| self.commit(call())).map(produced));
        };
        let producer = (stamp, header.record_count);
        Some(checked.and_then(|()| {
            let encode = |base, at| {
                let mut stored = bytes.to_vec();
                batch::place(&mut stored, base, at);
                stored
            };
            let (appended, duplicate) = self.append_producer_batch(encode, producer, now_ms)?;
            Ok(Produced { appended, records: count, duplicate })
        }))
    }

    /// Writes an idempotent producer's batch, encoded by `encode(its base offset, append
    /// time)`, and makes it durable under the fsync policy; all or nothing (see
    /// [`Self::append`]). `producer` is its stamp and record count: the producer state decides
    /// first, and a retry of a stored batch returns its offsets and `true`, writing nothing.
    /// One at a time under the lock, not through the group commit: a batch's sequence check
    /// needs every earlier batch of its producer recorded.
    fn append_producer_batch(
        &self,
        encode: impl Fn(u64, i64) -> Vec<u8>,
        (stamp, records): (ProducerStamp, u32),
        now_ms: i64,
    ) -> Result<(Appended, bool)> {
        let mut state = self.lock();
        self.check_running(&state)?;
        let append_time = self.append_time(now_ms);
        // Judged by its bytes as sent (a retry is the same bytes, before the append time is
        // set), encoded at the log end: a roll before it is written does not move the end.
        let bytes = encode(state.active.index.next_offset, append_time);
        let header = batch::peek_header(&bytes).expect("freshly encoded batch is valid");
        let sent_checksum = batch::sent_checksum(&bytes, &header);
        match state.producers.check(stamp, records, sent_checksum) {
            Ok(Verdict::Append) => {}
            Ok(Verdict::Duplicate { first_offset, last_offset }) => {
                drop(state);
                // The stored batch's append time, as Kafka answers a retry.
                let append_time = self.stored_append_time(first_offset);
                return Ok((Appended { first_offset, last_offset, append_time }, true));
            }
            Err(refusal) => return Err(Error::Producer { topic: self.topic.clone(), partition: self.id, refusal }),
        }
        let mut bytes = Some(bytes);
        let encoded = |_, _| bytes.take().expect("one batch");
        let start = self
            .write_batches(&mut state, 1, encoded, now_ms)
            .map_err(|failed| self.undo_append(&mut state, failed.0, failed.1))?;
        let fsync = self.policy.fsync == FsyncPolicy::Batch;
        if fsync && let Err(e) = state.active.sync_data() {
            return Err(self.undo_append(&mut state, start, Failure::Sync(e)));
        }
        state.dirty |= !fsync;
        self.publish_ack_end(&state);
        let end = state.active.index.next_offset;
        state.producers.record(stamp, records, (start.1.next_offset, end - 1), sent_checksum, now_ms);
        if state.active.index.base_offset != start.0 {
            self.prune_producer_snapshots();
        }
        drop(state);
        self.publish_end(end);
        let appended =
            Appended { first_offset: start.1.next_offset, last_offset: end - 1, append_time: Some(append_time) };
        Ok((appended, false))
    }

    /// Wakes the followers with the end offset an append reached, after it let go of the
    /// lock: an append that took the lock later may have told a larger end first, which
    /// stays (the end never goes back).
    fn publish_end(&self, end: u64) {
        self.end_watch.send_if_modified(|told| {
            let larger = end > *told;
            *told = (*told).max(end);
            larger
        });
    }

    /// The append time of a call made at `now_ms`, from the partition's clock (never
    /// decreasing), told once when the wall clock falls behind.
    fn append_time(&self, now_ms: i64) -> i64 {
        let (append_time, fell_behind) = self.host.append_clock.next(now_ms);
        if fell_behind {
            tracing::warn!(
                topic = %self.topic, partition = self.id, clock_ms = now_ms, last_append_ms = append_time,
                "the wall clock is behind the last append time; appends keep the last append time until it catches up"
            );
        }
        append_time
    }

    /// Writes one call's `count` batches after the log end, the `i`th encoded by
    /// `encode(i, its base offset)`, rolling as needed, and records them in the index; they
    /// are not durable yet. Returns where the call started (what an undo cuts back to). On
    /// failure, that start and the failure: the caller undoes the call (see
    /// [`Self::undo_append`]).
    fn write_batches(
        &self,
        state: &mut State,
        count: usize,
        mut encode: impl FnMut(usize, u64) -> Vec<u8>,
        now_ms: i64,
    ) -> std::result::Result<CallStart, Box<(CallStart, Failure)>> {
        debug_assert!(count > 0, "a call writes at least one batch");
        let start = (state.active.index.base_offset, state.active.index.mark());
        for i in 0..count {
            let bytes = encode(i, state.active.index.next_offset);
            let header = batch::peek_header(&bytes).expect("freshly encoded batch is valid");
            let written = self
                .roll_if_needed(state, bytes.len() as u64, now_ms)
                .map_err(Failure::Roll)
                .and_then(|()| state.active.write_batch(&bytes).map_err(Failure::Write));
            if let Err(failure) = written {
                return Err(Box::new((start, failure)));
            }
            state.active.index.push(&header);
        }
        Ok(start)
    }

    /// Appends a plain call (no producer stamp) through the partition's group commit.
    fn commit(&self, call: Call) -> Result<Appended> {
        self.commits.run(call, |calls| self.write_group(calls))
    }

    /// Leads one group commit (see `group_commit`): writes the calls one after another at the
    /// log end, as if each had come alone, then makes them durable with one fsync (under the
    /// `batch` policy) and acknowledges them together. Each call is all or nothing, as
    /// [`Self::append`] says:
    ///
    /// - a call whose write fails is undone alone, after the calls written before it are made
    ///   durable and so acknowledged (an fsync of their own, so that an undo that fails cannot
    ///   take them along); the calls after it go on;
    /// - when the group's fsync (or that one) fails, every call written since the last durable
    ///   point is undone and fails, and the partition stops;
    /// - when a roll's fsync fails (the partition stops), the calls written before it that are
    ///   not durable fail too and are forgotten in memory, so the stopped writer never serves
    ///   them; on disk they read, after a restart, like a call a crash cut short.
    ///
    /// Readers in this process see nothing of the group before its end (they wait for the
    /// lock), and readers in other processes nothing past the acknowledged end, published once
    /// the group is durable.
    fn write_group(&self, calls: Vec<Call>) -> Vec<Result<Appended>> {
        let mut state = self.lock();
        let base_before = state.active.index.base_offset;
        let mut results: Vec<Option<Result<Appended>>> = Vec::with_capacity(calls.len());
        // Calls written and not yet known to be durable, in log order.
        let mut pending: Vec<Pending> = Vec::new();
        let mut durable: Vec<(usize, Appended)> = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            if let Err(e) = self.check_running(&state) {
                results.push(Some(Err(e)));
                continue;
            }
            let append_time = self.append_time(call.now_ms);
            let count = call.batches.len();
            let mut batches = call.batches.into_iter();
            let encode = |_, base| {
                let mut bytes = batches.next().expect("one encoded batch per write");
                batch::place(&mut bytes, base, append_time);
                bytes
            };
            match self.write_batches(&mut state, count, encode, call.now_ms) {
                Ok(start) => {
                    let end = state.active.index.next_offset;
                    let first_offset = start.1.next_offset;
                    let appended = Appended { first_offset, last_offset: end - 1, append_time: Some(append_time) };
                    let ends_at = (state.active.index.base_offset, state.active.index.bytes);
                    pending.push(Pending { at: i, appended, start, ends_at });
                    results.push(None);
                }
                Err(failed) => {
                    let (start, failure) = *failed;
                    // The calls before it are acknowledged before it is undone, so an undo that
                    // fails cannot take them along (a call answered as failed must not come
                    // back, and a roll may have put them on the medium already). Not after a
                    // failed fsync (a roll's: the partition is stopped), which a later one
                    // cannot make good: those are settled at the end, after this undo.
                    if state.stopped.is_none()
                        && !self.settle_pending(&mut state, &mut pending, &mut durable, &mut results)
                    {
                        // Their fsync failed and undid them, this call included.
                        results.push(Some(Err(self.stopped(state.stopped.clone().unwrap_or_default()))));
                        continue;
                    }
                    results.push(Some(Err(self.undo_append(&mut state, start, failure))));
                }
            }
        }
        self.settle_pending(&mut state, &mut pending, &mut durable, &mut results);
        if !durable.is_empty() {
            self.publish_ack_end(&state);
            if state.active.index.base_offset != base_before {
                self.prune_producer_snapshots();
            }
        }
        let end = state.active.index.next_offset;
        drop(state);
        if !durable.is_empty() {
            self.publish_end(end);
        }
        for (i, appended) in durable {
            results[i] = Some(Ok(appended));
        }
        results.into_iter().map(|r| r.expect("every call of the group answered")).collect()
    }

    /// Ends the pending calls of a group: those a roll's fsync covered are durable; the others
    /// are made durable by one fsync (under `batch`) and moved to `durable`. When that fsync
    /// fails they are undone (the partition stops); when the partition was already stopped (a
    /// roll's fsync failed) they are forgotten in memory only (the disk is the failed call's
    /// undo's to leave as it could). Either way each is answered with the failure, and false
    /// is returned.
    fn settle_pending(
        &self,
        state: &mut State,
        pending: &mut Vec<Pending>,
        durable: &mut Vec<(usize, Appended)>,
        results: &mut [Option<Result<Appended>>],
    ) -> bool {
        let covered = pending.iter().take_while(|call| call.ends_at <= state.synced).count();
        durable.extend(pending.drain(..covered).map(|call| (call.at, call.appended)));
        let Some(start) = pending.first().map(|call| call.start) else { return true };
        let fsync = self.policy.fsync == FsyncPolicy::Batch;
        let failed = match state.stopped.clone() {
            Some(reason) => {
                self.forget(state, start);
                Some(self.stopped(reason))
            }
            None if fsync => state.active.sync_data().err().map(|e| self.undo_append(state, start, Failure::Sync(e))),
            None => None,
        };
        let Some(error) = failed else {
            state.dirty |= !fsync;
            durable.extend(pending.drain(..).map(|call| (call.at, call.appended)));
            return true;
        };
        let reason = state.stopped.clone().unwrap_or_default();
        let mut first = Some(error);
        for call in pending.drain(..) {
            results[call.at] = Some(Err(first.take().unwrap_or_else(|| self.stopped(reason.clone()))));
        }
        false
    }

    /// Tells read-only readers in other processes how far the acknowledged records go. Never
    /// called inside an append call (not even when the call rolls a segment): until the call
    /// is acknowledged or undone, readers keep the end from before it. A failure is logged, not
    /// returned: the records are acknowledged either way, and readers only lag until the next
    /// publication.
    fn publish_ack_end(&self, state: &State) {
        let Some(file) = &state.ack_end else { return };
        let end = AckEnd { active_base: state.active.index.base_offset, active_bytes: state.active.index.bytes };
        if let Err(e) = ack_end::publish(file, end) {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "cannot publish the acknowledged end for readers");
        }
    }

    fn check_running(&self, state: &State) -> Result<()> {
        match &state.stopped {
            Some(reason) => Err(self.stopped(reason.clone())),
            None => Ok(()),
        }
    }

    fn stopped(&self, reason: String) -> Error {
        Error::Stopped { topic: self.topic.clone(), partition: self.id, reason }
    }

    /// After a failed append: undoes the call (see [`Self::rewind`]) and fsyncs the result. A
    /// failed write whose undo succeeded leaves the partition usable (ENOSPC may pass); a
    /// failed fsync, or an undo that fails, stops it.
    fn undo_append(&self, state: &mut State, start: (u64, IndexMark), failure: Failure) -> Error {
        let path = state.active.path.clone();
        let (error, reason) = match failure {
            Failure::Write(e) => (Error::io(&path, "append to", e), None),
            Failure::Roll(e @ Error::Stopped { .. }) => (e, state.stopped.clone()),
            Failure::Roll(e) => (e, None),
            Failure::Sync(e) => {
                let reason = format!("fsync of {} failed ({e}); the OS may have dropped unsynced data", path.display());
                (Error::io(&path, "fsync", e), Some(reason))
            }
        };
        let reason = match self.rewind(state, start) {
            Ok(()) => reason,
            Err(undo) => Some(format!("{error}, and undoing the failed append also failed ({undo})")),
        };
        tracing::error!(topic = %self.topic, partition = self.id, error = %error, stopped = reason.is_some(), "append failed; the call was undone");
        match reason {
            Some(reason) => self.stop(state, reason),
            None => error,
        }
    }

    /// Removes producer snapshots older than the newest few. Only outside an append call, or
    /// once it is acknowledged: until then, an undo may remove the newest ones (see
    /// [`Self::rewind`]) and the older ones are what recovery needs. A failure is logged: the
    /// files only take space.
    fn prune_producer_snapshots(&self) {
        if let Err(e) = producers::prune_snapshots(&*self.host.disk, &self.dir) {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "cannot remove old producer snapshots");
        }
    }

    /// Stops the partition. Its `writer-open` marker stays, so the next writer rewrites the
    /// active segment before trusting it (see [`WRITER_OPEN_FILE`]).
    fn stop(&self, state: &mut State, reason: String) -> Error {
        state.stopped = Some(reason.clone());
        self.stopped(reason)
    }

    /// A clean close: everything fsynced and the partition not stopped, so the active
    /// segment's bytes are on the medium and the `writer-open` marker can go.
    pub fn close_clean(&self) {
        if !self.writable {
            return;
        }
        let state = self.lock();
        if state.stopped.is_some() || state.dirty {
            return;
        }
        let marker = self.dir.join(WRITER_OPEN_FILE);
        let removed = self.host.disk.remove_file(&marker).and_then(|()| self.host.disk.sync_dir(&self.dir));
        if let Err(e) = removed {
            tracing::warn!(topic = %self.topic, partition = self.id, error = %e, "cannot remove the writer-open marker; the next writer rewrites the active segment");
        }
    }

    /// Puts the partition back where a call started: segments the call created hold nothing
    /// else and are removed, the segment it started in becomes active again (its index files,
    /// written when the call sealed it, are removed), and its file is cut back to the call's
    /// first byte and fsynced.
    ///
    /// The state in memory always goes back to the call's start, so a stopped writer never
    /// serves the call. On disk the order keeps the segments dense at every step, whatever a
    /// crash interrupts: the newest created segment goes first, the first segment is cut last,
    /// and only once every created segment is gone — cutting it while a later one survives
    /// would leave a hole that recovery refuses. So when a removal fails, the first segment
    /// keeps the call's first batches: after a restart they read like the records of a call
    /// cut short by a crash (never acknowledged, maybe present), and the partition is stopped.
    ///
    /// The acknowledged end readers in other processes see is not published here: it was
    /// never moved past the call's start (nor past the start of a group commit's first call
    /// not yet durable, which this call may follow).
    fn rewind(&self, state: &mut State, start: (u64, IndexMark)) -> Result<()> {
        let disk = &*self.host.disk;
        let (base, mark) = start;
        let created = self.forget(state, start);
        // A snapshot taken when the call rolled describes an offset the log no longer reaches.
        producers::remove_snapshots_after(disk, &self.dir, mark.next_offset)?;
        for created in &created {
            segment::remove_files(disk, &self.dir, *created)?; // newest first
        }
        if !created.is_empty() {
            segment::remove_index_files(disk, &self.dir, base)?;
        }
        state.active.truncate(mark.bytes)
    }

    /// The in-memory half of [`Self::rewind`]: the state goes back to `start`, segments
    /// created since then dropped from it (their base offsets returned, newest first). The
    /// files are left as they are.
    fn forget(&self, state: &mut State, (base, mark): (u64, IndexMark)) -> Vec<u64> {
        let mut created = Vec::new();
        while state.active.index.base_offset != base {
            let (_, previous) = state.sealed.pop_last().expect("the call's first segment was sealed by the call");
            created.push(std::mem::replace(&mut state.active, previous).index.base_offset);
        }
        state.active.index.rewind(mark);
        state.synced = state.synced.min((base, mark.bytes));
        created
    }

    /// [`Self::check_records`] for records of a batch as sent: the format's limits the decoder
    /// did not already enforce, and `log.max_record_bytes`, both measured as for a record.
    fn check_views(&self, views: &[RecordView<'_>]) -> Result<()> {
        for (index, view) in views.iter().enumerate() {
            let bytes = batch::view_encoded_len(view);
            crate::limits::check_record_bytes(bytes).map_err(|limit| self.over_limit(index, limit))?;
            self.check_policy(bytes)?;
        }
        Ok(())
    }

    fn over_limit(&self, index: usize, limit: crate::limits::LimitError) -> Error {
        Error::RecordLimit { topic: self.topic.clone(), partition: self.id, index, limit }
    }

    /// `log.max_record_bytes`, for a record of `bytes` encoded bytes.
    fn check_policy(&self, bytes: usize) -> Result<()> {
        if bytes > self.policy.max_record_bytes {
            return Err(Error::RecordTooLarge {
                topic: self.topic.clone(),
                partition: self.id,
                bytes,
                max: self.policy.max_record_bytes,
            });
        }
        Ok(())
    }

    /// Rejects records over `log.max_record_bytes`, so callers can validate a whole request
    /// before writing any of it.
    pub fn check_records(&self, records: &[Record]) -> Result<()> {
        for (index, record) in records.iter().enumerate() {
            // The format's limits first: a record the decoder would refuse must never be written.
            crate::limits::check_record(record).map_err(|limit| self.over_limit(index, limit))?;
            self.check_policy(batch::record_encoded_len(record))?;
        }
        Ok(())
    }

    /// Batches never exceed a segment, nor the batch format's cap.
    fn batch_bytes_target(&self) -> usize {
        (self.roll_policy().0 as usize).min(batch::BATCH_BYTES_MAX) - HEADER_BYTES
    }

    fn roll_if_needed(&self, state: &mut State, next_batch_bytes: u64, now_ms: i64) -> Result<()> {
        let active = &state.active.index;
        if active.is_empty() {
            return Ok(());
        }
        let (max_bytes, max_age_ms) = self.roll_policy();
        let full = active.bytes + next_batch_bytes > max_bytes;
        let old = now_ms - state.active.created_ms >= max_age_ms as i64;
        if full || old { self.roll(state, now_ms) } else { Ok(()) }
    }

    /// Seals the active segment (fsync, write index files) and starts a new one. The fsync
    /// happens under every policy, `never` included: index files are written durably, so the
    /// segment they describe must be durable first or a power cut leaves an index longer than
    /// its segment (and it is one fsync per segment).
    fn roll(&self, state: &mut State, now_ms: i64) -> Result<()> {
        self.check_running(state)?;
        self.sync_active(state)?;
        // The newest append time outlives the segment, which local retention may delete.
        // (First: a failure here leaves no index files of a segment that stays active.)
        let appended = state.active.index.max_append_time;
        if appended != crate::index::NO_APPEND_TIME {
            crate::append_floor::write(&*self.host.disk, &self.dir, appended)
                .map_err(|e| Error::io(&self.dir, "write the append-time floor in", e))?;
        }
        state
            .active
            .index
            .write_files(&*self.host.disk, &self.dir)
            .map_err(|e| Error::io(&self.dir, "write index files in", e))?;
        let next = state.active.index.next_offset;
        state.producers.expire(now_ms);
        producers::write_snapshot(&*self.host.disk, &self.dir, next, &state.producers)?;
        let fresh = Segment::create(&*self.host.disk, &self.dir, next, self.policy.index_interval_bytes, now_ms)?;
        let sealed = std::mem::replace(&mut state.active, fresh);
        tracing::debug!(topic = %self.topic, partition = self.id, base = sealed.index.base_offset, next, "rolled segment");
        state.sealed.insert(sealed.index.base_offset, sealed);
        Ok(())
    }

    /// Seals the active segment now if it holds anything (used before tiering it).
    pub fn seal_active(&self, now_ms: i64) -> Result<()> {
        let mut state = self.lock();
        if !state.active.index.is_empty() {
            self.roll(&mut state, now_ms)?;
            self.publish_ack_end(&state);
            self.prune_producer_snapshots();
        }
        Ok(())
    }

    /// Rolls the active segment if it is older than its topic's `segment.ms`.
    pub fn roll_if_old(&self, now_ms: i64) -> Result<()> {
        let mut state = self.lock();
        let base = state.active.index.base_offset;
        self.roll_if_needed(&mut state, 0, now_ms)?;
        self.publish_ack_end(&state);
        if state.active.index.base_offset != base {
            self.prune_producer_snapshots();
        }
        Ok(())
    }

    /// Read-only partitions: picks up what the writer appended since the last look. Extends
    /// the scan of the active segment, or re-lists the directory when segments were added or
    /// removed. A torn tail (a batch being written right now) is simply not visible yet.
    pub fn refresh(&self) -> Result<()> {
        if self.writable {
            return Ok(());
        }
        let files = list_segments(&*self.host.disk, &self.dir, false)?;
        let mut state = self.lock();
        let known: Vec<u64> =
            state.sealed.keys().copied().chain(std::iter::once(state.active.index.base_offset)).collect();
        let same_files = files.iter().map(|(b, _)| *b).eq(known.iter().copied());
        // A file shorter than what was indexed was cut by its writer (an undone append, or a
        // torn tail after a crash): index it again from the start.
        let mark = ack_end::read(&*self.host.disk, &self.dir);
        let active_base = state.active.index.base_offset;
        let mark_moved = mark.is_some_and(|m| m.active_base != active_base);
        let limit = mark.map_or(u64::MAX, |m| m.limit_for(active_base));
        let file_len = state.active.file_len()?;
        // Acknowledged bytes this handle cannot see: the writer replaced the file (a rewrite
        // after an unclean close), so the handle holds the old inode.
        let stale_handle = limit != u64::MAX && limit > file_len;
        if same_files && !mark_moved && !stale_handle && file_len >= state.active.index.bytes {
            state.active.scan(limit)?;
            return Ok(());
        }
        drop(state);
        let fresh = recover(&self.host, &self.topic, self.id, &self.dir, self.policy, false)?;
        *self.lock() = fresh;
        Ok(())
    }

    /// fsyncs the active segment if appends happened since the last fsync. A failure stops
    /// the partition: records acknowledged under the `interval` policy may be lost, and a
    /// later fsync that succeeds would not bring them back.
    pub fn flush(&self) -> Result<()> {
        let mut state = self.lock();
        self.check_running(&state)?;
        if state.dirty {
            self.sync_active(&mut state)?;
        }
        Ok(())
    }

    fn sync_active(&self, state: &mut State) -> Result<()> {
        if let Err(e) = state.active.sync() {
            let reason = format!("{e}; records acknowledged since the last successful fsync may be lost");
            tracing::error!(topic = %self.topic, partition = self.id, error = %e, "fsync failed; partition stopped");
            return Err(self.stop(state, reason));
        }
        state.dirty = false;
        state.synced = state.synced.max((state.active.index.base_offset, state.active.index.bytes));
        Ok(())
    }

    pub fn sealed_segments(&self) -> Vec<SegmentInfo> {
        self.lock().sealed.values().map(info).collect()
    }

    /// The bytes of a sealed segment and its batch boundaries `(position, header)`, every
    /// batch validated (CRC, dense offsets from the segment's base to its end) right before
    /// the bytes leave for the remote tier.
    pub fn read_sealed(&self, base_offset: u64) -> Result<(Vec<u8>, Vec<BatchAt>)> {
        let (mut slice, next_offset) = {
            let state = self.lock();
            let segment = state.sealed.get(&base_offset).ok_or_else(|| {
                Error::Invalid(format!("{}/{}: no sealed segment at offset {base_offset}", self.topic, self.id))
            })?;
            let (path, file, end) = (segment.path.clone(), segment.file.clone(), segment.index.bytes);
            (SegmentSlice { path, file, start: 0, end, offset: base_offset }, segment.index.next_offset)
        };
        let bytes = slice.read_batches(slice.end as usize, Vec::new())?;
        if slice.start != slice.end || slice.offset != next_offset {
            return Err(Error::Invalid(format!(
                "{}: sealed segment holds {} valid bytes up to offset {}, its index says {} bytes up to {next_offset}; \
                 it is not uploaded",
                slice.path.display(),
                slice.start,
                slice.offset,
                slice.end
            )));
        }
        let mut batches = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let header = batch::peek_header(&bytes[at..]).expect("read_batches returns validated batches");
            batches.push((at as u64, header));
            at += header.length;
        }
        Ok((bytes, batches))
    }

    /// Deletes a sealed segment's files. The caller (retention) decides that it may.
    pub fn remove_sealed(&self, base_offset: u64) -> Result<()> {
        let mut state = self.lock();
        if state.sealed.keys().next() != Some(&base_offset) {
            return Err(Error::Invalid(format!(
                "{}/{}: only the oldest sealed segment can be removed",
                self.topic, self.id
            )));
        }
        state.sealed.remove(&base_offset);
        drop(state);
        segment::remove_files(&*self.host.disk, &self.dir, base_offset)
    }

    /// Snapshot of the committed bytes holding `offset`, starting at the indexed batch at or
    /// before it. `None` when `offset` is at or past the end.
    fn slice_for(&self, offset: u64) -> Result<Option<SegmentSlice>> {
        let state = self.lock();
        let start = state.sealed.keys().next().copied().unwrap_or(state.active.index.base_offset);
        if offset < start {
            let why = "older records were removed by retention".to_string();
            return Err(Error::OffsetBelowStart { topic: self.topic.clone(), partition: self.id, offset, start, why });
        }
        if offset >= state.active.index.next_offset {
            return Ok(None);
        }
        let segment = match state.sealed.range(..=offset).next_back() {
            Some((_, s)) if offset < s.index.next_offset => s,
            _ => &state.active,
        };
        let (start, first) = segment.index.position_for_offset(offset);
        Ok(Some(SegmentSlice {
            path: segment.path.clone(),
            file: segment.file.clone(),
            start,
            end: segment.index.bytes,
            offset: first,
        }))
    }

    /// Reads whole batches holding `offset` and what follows it, about `max_bytes` (at least
    /// one batch). `None` at the end of the log. The bytes are validated (CRC) before return.
    /// `buf` is a buffer to reuse (see [`Chunk::into_buffer`]); `Vec::new()` is fine.
    pub fn read_chunk(&self, offset: u64, max_bytes: usize, mut buf: Vec<u8>) -> Result<Option<Chunk>> {
        let Some(mut slice) = self.slice_for(offset)? else { return Ok(None) };
        loop {
            let position = slice.start;
            let bytes = slice.read_batches(max_bytes.min(READ_BYTES_MAX), buf)?;
            let chunk = Chunk { path: slice.path.clone(), position, bytes, from_offset: offset };
            if slice.offset > offset || slice.start >= slice.end {
                return Ok(Some(chunk));
            }
            buf = chunk.into_buffer(); // every batch read lay before `offset`: keep scanning
        }
    }

    /// Reads owned records from `offset` on; empty at the end of the log. See [`Self::read_chunk`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        match self.read_chunk(offset, max_bytes, Vec::new())? {
            None => Ok(Vec::new()),
            Some(chunk) => {
                let stored = |v: &RecordView<'_>| StoredRecord {
                    offset: v.offset,
                    record: v.to_record(),
                    append_time: v.append_time,
                };
                Ok(chunk.views()?.iter().map(stored).collect())
            }
        }
    }

    /// First offset whose record timestamp is ≥ `time` (Kafka ListOffsets semantics, using
    /// the running max timestamp); the end offset when no record is that recent.
    pub fn offset_for_time(&self, time: i64) -> Result<u64> {
        let slice = {
            let state = self.lock();
            let hit = state
                .sealed
                .values()
                .chain(std::iter::once(&state.active))
                .find(|s| !s.index.is_empty() && s.index.max_timestamp >= time);
            match hit {
                None => return Ok(state.active.index.next_offset),
                Some(s) => {
                    let (start, offset) = s.index.position_for_time(time);
                    SegmentSlice { path: s.path.clone(), file: s.file.clone(), start, end: s.index.bytes, offset }
                }
            }
        };
        let mut slice = slice;
        while slice.start < slice.end {
            let position = slice.start;
            let bytes = slice.read_batches(READ_BYTES_MAX, Vec::new())?;
            let mut at = 0;
            while at < bytes.len() {
                let header = batch::peek_header(&bytes[at..]).expect("read_batches returns validated batches");
                if header.max_timestamp >= time {
                    let chunk = Chunk {
                        path: slice.path.clone(),
                        position: position + at as u64,
                        bytes: bytes[at..at + header.length].to_vec(),
                        from_offset: 0,
                    };
                    let views = chunk.views()?;
                    // A batch whose max timestamp no record reaches is damaged (CRC-valid, so
                    // written that way): an error, not a panic.
                    let promised = batch::BatchError::Malformed("max timestamp above every record's");
                    return views
                        .iter()
                        .find(|r| r.timestamp >= time)
                        .map(|r| r.offset)
                        .ok_or_else(|| chunk.corrupt(0, promised));
                }
                at += header.length;
            }
        }
        Err(Error::Invalid(format!(
            "{}: the segment index promised a record at or after {time} that the segment does not hold; \
             delete its .index and .timeindex files to have them rebuilt",
            slice.path.display()
        )))
    }
}

impl Partition {
    /// The append time of the local record at `offset`, if there is one.
    fn stored_append_time(&self, offset: u64) -> Option<i64> {
        self.read(offset, 1).ok()?.into_iter().find(|r| r.offset == offset)?.append_time
    }

    /// Where the first batch appended after `time` lies in the local log: the local part of
    /// an as-of cut (see [`LocalCut`]; the unified reader adds the remote tier). Batches
    /// without an append time count as appended before every time; the caller refuses an
    /// answer that depends on them (`previous_unstamped`).
    pub fn offset_as_of(&self, time: i64) -> Result<LocalCut> {
        let (mut slice, mut previous) = {
            let state = self.lock();
            let segments: Vec<&Segment> =
                state.sealed.values().chain(std::iter::once(&state.active)).filter(|s| !s.index.is_empty()).collect();
            let Some(i) = segments.iter().position(|s| s.index.max_append_time > time) else {
                let offset = state.active.index.next_offset;
                let previous = segments.last().map(|s| s.index.max_append_time == crate::index::NO_APPEND_TIME);
                return Ok(LocalCut { offset, previous_unstamped: previous });
            };
            let s = segments[i];
            let (start, offset, before) = s.index.entry_for_append_time(time);
            // The batch before the scan's start: in this segment, or the previous one's last.
            let previous = match (start, i) {
                (0, 0) => None,
                (0, _) => Some(segments[i - 1].index.max_append_time == crate::index::NO_APPEND_TIME),
                _ => Some(before == crate::index::NO_APPEND_TIME),
            };
            (SegmentSlice { path: s.path.clone(), file: s.file.clone(), start, end: s.index.bytes, offset }, previous)
        };
        while slice.start < slice.end {
            let bytes = slice.read_batches(READ_BYTES_MAX, Vec::new())?;
            let found = batch::first_appended_after(&bytes, time, &mut previous).map_err(|(_, e)| {
                Error::Invalid(format!("{}: read_batches returned a bad batch: {e}", slice.path.display()))
            })?;
            if let Some((offset, previous_unstamped)) = found {
                return Ok(LocalCut { offset, previous_unstamped });
            }
        }
        Err(Error::Invalid(format!(
            "{}: the segment index promised a batch appended after {time} that the segment does not hold; \
             delete its .index, .timeindex and .appendindex files to have them rebuilt",
            slice.path.display()
        )))
    }
}

/// Why an append call failed part-way.
enum Failure {
    Write(std::io::Error),
    Sync(std::io::Error),
    Roll(Error),
}

/// Validated batch bytes read from one segment, and the offset the reader asked for.
pub struct Chunk {
    pub path: PathBuf,
    /// Position of `bytes[0]` in the segment file.
    pub position: u64,
    pub bytes: Vec<u8>,
    pub from_offset: u64,
}

impl Chunk {
    /// Views of the records at or after `from_offset`, in offset order. The CRC of every
    /// batch was checked when the chunk was read.
    pub fn views(&self) -> Result<Vec<RecordView<'_>>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.bytes.len() {
            let (header, views) =
                batch::views_of_validated(&self.bytes[at..]).map_err(|error| self.corrupt(at, error))?;
            at += header.length;
            out.extend(views.into_iter().filter(|v| v.offset >= self.from_offset));
        }
        Ok(out)
    }

    /// Gives the buffer back for the next read.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    fn corrupt(&self, at: usize, error: batch::BatchError) -> Error {
        Error::Corrupt { path: self.path.clone(), position: self.position + at as u64, error }
    }
}

fn info(segment: &Segment) -> SegmentInfo {
    let index = &segment.index;
    SegmentInfo {
        base_offset: index.base_offset,
        next_offset: index.next_offset,
        bytes: index.bytes,
        min_timestamp: index.min_timestamp,
        max_timestamp: index.max_timestamp,
        path: segment.path.clone(),
    }
}

/// Splits records into groups whose encoded batch stays under `target` bytes (a single record
/// larger than that still gets a batch of its own).
fn split_by_size(records: &[Record], target: usize) -> Vec<&[Record]> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let len = batch::record_encoded_len(record);
        if i > start && bytes + len > target {
            groups.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    groups.push(&records[start..]);
    groups
}

/// Lists `<base>.log` files in `dir`, sorted by base offset, removing leftover temp files.
/// Prepares the directory of a partition restored from the remote tier: its local log starts
/// empty at `start` (the remote tier's end; older offsets are read from the bucket), and its
/// append clock does not go below `append_floor` (the remote tier's newest append time).
/// Idempotent, for a resumed restore: a directory already holding exactly an empty segment at
/// `start` is accepted; one holding anything else is refused, never overwritten.
pub fn prepare_restored(host: &Host, dir: &Path, start: u64, append_floor: Option<i64>, config: &Config) -> Result<()> {
    let disk = &*host.disk;
    disk.create_dir_all(dir).map_err(|e| Error::io(dir, "create partition directory", e))?;
    if let Some(parent) = dir.parent() {
        segment::sync_dir(disk, parent)?;
    }
    match list_segments(disk, dir, true)?.as_slice() {
        [] => {
            Segment::create(disk, dir, start, config.segment.index_interval_bytes, host.clock.now_ms())?;
        }
        [(base, path)]
            if *base == start
                && disk.open(path, false).and_then(|f| f.len()).map_err(|e| Error::io(path, "stat", e))? == 0 => {}
        other => {
            return Err(Error::Invalid(format!(
                "{}: holds segments {:?}, not an empty log starting at offset {start}: refusing to restore over it",
                dir.display(),
                other.iter().map(|(base, _)| *base).collect::<Vec<_>>()
            )));
        }
    }
    if let Some(floor) = append_floor {
        crate::append_floor::write(disk, dir, floor)
            .map_err(|e| Error::io(dir, "write the append-time floor in", e))?;
    }
    segment::sync_dir(disk, dir)
}

fn list_segments(disk: &dyn Disk, dir: &Path, writable: bool) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let names = match disk.list(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !writable => return Ok(out),
        Err(e) => return Err(Error::io(dir, "list partition directory", e)),
    };
    for name in names {
        let path = dir.join(&name);
        if writable && name.ends_with(".tmp") {
            disk.remove_file(&path).map_err(|e| Error::io(&path, "remove leftover temp file", e))?;
        } else if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<u64>().ok()) {
            out.push((base, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Recovery on open. Sealed segments load their index files, or are rescanned when those are
/// missing or damaged (a damaged sealed segment is an error: later segments depend on it).
/// The active segment is always scanned batch by batch; a torn or corrupt tail is cut off
/// (writer) or ignored (read-only), and everything before it is kept.
fn recover(host: &Host, topic: &str, id: u32, dir: &Path, policy: Policy, writable: bool) -> Result<State> {
    let disk = &*host.disk;
    let mut files = list_segments(disk, dir, writable)?;
    // A reader sees no segment past the writer's acknowledged end: one created by a call in
    // progress (or being undone) holds nothing acknowledged, whatever index files say.
    let mark = if writable { None } else { ack_end::read(disk, dir) };
    if let Some(mark) = mark {
        files.retain(|(base, _)| *base <= mark.active_base);
    }
    let damaged = |detail: String| Error::Damaged { topic: topic.to_string(), partition: id, detail };
    let mut sealed = BTreeMap::new();
    let mut expected: Option<u64> = None;
    let last = files.len().checked_sub(1);
    let mut active = None;
    for (i, (base, path)) in files.into_iter().enumerate() {
        if let Some(expected) = expected.filter(|e| *e != base) {
            return Err(damaged(format!(
                "segment {} starts at offset {base} but the previous one ends before {expected}: offsets would not be dense",
                path.display()
            )));
        }
        let is_active = Some(i) == last;
        let mut segment = Segment::open(disk, path, base, policy.index_interval_bytes, writable && is_active)?;
        if is_active {
            let limit = mark.map_or(u64::MAX, |m| m.limit_for(base));
            recover_active(&mut segment, writable, limit).map_err(|e| match e {
                ActiveDamage::Error(e) => e,
                ActiveDamage::Damaged(detail) => damaged(detail),
            })?;
        } else {
            load_or_rebuild_index(disk, &mut segment, dir, writable).map_err(damaged)?;
        }
        expected = Some(segment.index.next_offset);
        if is_active {
            active = Some(segment)
        } else {
            sealed.insert(base, segment);
        }
    }
    let active = match active {
        Some(active) => active,
        None if writable => Segment::create(disk, dir, 0, policy.index_interval_bytes, host.clock.now_ms())?,
        None => Segment {
            path: dir.join(crate::index::segment_file_name(0)),
            file: disk::empty_file(),
            index: SegmentIndex::new(0, policy.index_interval_bytes),
            created_ms: 0,
        },
    };
    let active = if writable { rewrite_after_unclean_close(disk, dir, active)? } else { active };
    let end = AckEnd { active_base: active.index.base_offset, active_bytes: active.index.bytes };
    let ack_end = if writable { open_ack_end(disk, dir, end) } else { None };
    let producers = if writable { rebuild_producers(host, dir, &sealed, &active)? } else { Producers::default() };
    // The append clock goes on from the newest append time the partition held: in the local
    // log, or in sealed segments local retention may have deleted (the floor).
    let local = sealed.values().chain(std::iter::once(&active)).map(|s| s.index.max_append_time).max();
    let floor = crate::append_floor::read(disk, dir);
    if let Some(last) = local.into_iter().chain(floor).max() {
        host.append_clock.observe(last);
    }
    Ok(State { sealed, active, dirty: false, stopped: None, ack_end, producers, synced: (0, 0) })
}

/// The producer state at the log end: the newest readable snapshot at or below it, and the
/// stamps of the batches after the snapshot. Without any snapshot file (a log from before
/// snapshots, which holds no stamped batch), the last sealed segment and the active one are
/// replayed, as Kafka does on upgrade. With snapshot files but none readable, every local
/// segment is replayed. Batches that are only in the remote tier (local retention removed
/// them after the snapshot used) cannot be replayed: that is logged, since a retry of one of
/// them would be stored again (see `producers`).
fn rebuild_producers(host: &Host, dir: &Path, sealed: &BTreeMap<u64, Segment>, active: &Segment) -> Result<Producers> {
    let disk = &*host.disk;
    let end = active.index.next_offset;
    let local_start = sealed.keys().next().copied().unwrap_or(active.index.base_offset);
    producers::remove_snapshots_after(disk, dir, end)?;
    let (from, mut state) = match producers::load_snapshot(disk, dir, end)? {
        Snapshot::Found(at, state) => (at, state),
        Snapshot::Absent => (sealed.values().next_back().unwrap_or(active).index.base_offset, Producers::default()),
        Snapshot::Unreadable => (0, Producers::default()),
    };
    if from < local_start {
        tracing::warn!(
            dir = %dir.display(), from, local_start,
            "idempotent producer state: offsets {from}..{local_start} are only in the remote tier and cannot be replayed; a \
             producer retrying a batch stored there would have it stored again"
        );
    }
    let now_ms = host.clock.now_ms();
    for segment in sealed.values().chain(std::iter::once(active)).filter(|s| s.index.next_offset > from) {
        segment.for_each_batch(|header, bytes| {
            if let (Some(stamp), true) = (header.producer, header.base_offset >= from) {
                let offsets = (header.base_offset, header.last_offset());
                // A retry carries the batch as the producer sent it, before its append time.
                let checksum = batch::sent_checksum(bytes, header);
                state.record(stamp, header.record_count, offsets, checksum, now_ms);
            }
        })?;
    }
    if !state.is_empty() {
        tracing::info!(dir = %dir.display(), from, producers = state.len(), "rebuilt idempotent producer state");
    }
    Ok(state)
}

/// After a writer that did not close cleanly (its `writer-open` marker is there), what this
/// writer sees of the active segment may exist only in the page cache, and what is durable
/// may differ either way: unsynced bytes, or an undo's cut whose fsync failed. The validated
/// bytes are written into a fresh file that replaces the old one (temp file, fsync, rename,
/// directory fsync) — an empty segment too, or the bytes of a failed call come back at the
/// next power cut. Holds the segment in memory once; this runs only after an unclean close.
fn rewrite_after_unclean_close(disk: &dyn Disk, dir: &Path, active: Segment) -> Result<Segment> {
    let marker = dir.join(WRITER_OPEN_FILE);
    let unclean = disk.is_file(&marker);
    let active = if unclean {
        let mut bytes = vec![0u8; active.index.bytes as usize];
        active.file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io(&active.path, "read", e))?;
        disk.write_atomic(&active.path, &bytes)
            .map_err(|e| Error::io(&active.path, "rewrite (the last writer did not close cleanly)", e))?;
        let file = disk.open(&active.path, true).map_err(|e| Error::io(&active.path, "open segment", e))?;
        tracing::info!(segment = %active.path.display(), bytes = bytes.len(), "rewrote the active segment: the last writer did not close cleanly");
        Segment { file, ..active }
    } else {
        active
    };
    // A marker found here was written durably by the writer that left it: it stays as it is.
    if !unclean {
        disk.write_atomic(&marker, b"a writer has this partition open; see docs/FORMAT.md\n")
            .map_err(|e| Error::io(&marker, "write the writer-open marker (free disk space, then restart) in", e))?;
    }
    Ok(active)
}

/// The writer's `ack-end`, published with the recovered end. Not being able to write it (a
/// full disk, say) does not stop the writer: readers then index every whole valid batch, as
/// they did before the file existed — so a stale copy is removed, or readers would lag at it.
fn open_ack_end(disk: &dyn Disk, dir: &Path, end: AckEnd) -> Option<FileRef> {
    let opened = ack_end::open(disk, dir).and_then(|file| ack_end::publish(&file, end).map(|()| file));
    match opened {
        Ok(file) => Some(file),
        Err(e) => {
            let removed = disk.remove_file(&dir.join(ack_end::FILE_NAME));
            tracing::warn!(dir = %dir.display(), error = %e, stale_removed = removed.is_ok(), "cannot publish the acknowledged end; read-only readers will index every whole batch");
            None
        }
    }
}

enum ActiveDamage {
    Error(Error),
    Damaged(String),
}

impl From<Error> for ActiveDamage {
    fn from(e: Error) -> Self {
        ActiveDamage::Error(e)
    }
}

/// Scans the active segment. A torn tail (nothing valid after the first bad byte) is what a
/// crash during a write leaves: the writer cuts it. Damage with valid batches after it is
/// something else — a bad sector, a lost write-back — and those batches were acknowledged:
/// the file is left as it is and the partition is not opened for writing. Read-only opens
/// serve what precedes the first bad byte either way.
fn recover_active(segment: &mut Segment, writable: bool, limit: u64) -> std::result::Result<(), ActiveDamage> {
    let Some(stop) = segment.scan(limit)? else { return Ok(()) };
    if !writable {
        return Ok(());
    }
    let file_len = segment.file_len()?;
    let damage = if segment.ends_with_whole_batch_of_damaged_header(&stop)? {
        Some(format!(
            "at byte {}: a header field of its last batch that the CRC does not cover is wrong ({}), but the bytes to the \
             end of the file are that whole batch (its CRC matches): it was fully written and may have been acknowledged",
            stop.position, stop.error
        ))
    } else if segment.is_torn_tail(&stop)? {
        None
    } else {
        segment.next_valid_batch_after(stop.position)?.map(|valid| {
            format!(
                "at bytes {}..{valid} ({}) and valid batches follow from byte {valid} to the end ({file_len} bytes): they \
                 were acknowledged",
                stop.position, stop.error
            )
        })
    };
    if let Some(finding) = damage {
        let offset = segment.index.next_offset;
        return Err(ActiveDamage::Damaged(format!(
            "active segment {} is damaged {finding}, so nothing was cut and the partition is not opened for \
             writing. Offsets from {offset} on are affected. Restore the file from a copy (the remote tier holds only sealed \
             segments, so a copy from a replica or backup), or, to give up the records from offset {offset} on, move the file \
             aside and cut it at byte {} (`truncate -s {} <file>`) before restarting",
            segment.path.display(),
            stop.position,
            stop.position,
        )));
    }
    tracing::warn!(
        segment = %segment.path.display(), position = stop.position, cut_bytes = file_len - stop.position,
        reason = %stop.error, "truncating the torn tail of the active segment (nothing valid follows it)"
    );
    segment.truncate(stop.position)?;
    Ok(())
}

fn load_or_rebuild_index(
    disk: &dyn Disk,
    segment: &mut Segment,
    dir: &Path,
    writable: bool,
) -> std::result::Result<(), String> {
    let base = segment.index.base_offset;
    let file_len = segment.file_len().map_err(|e| e.to_string())?;
    let loaded = SegmentIndex::load_files(disk, dir, base, file_len, segment.index.interval_bytes());
    if let Some((index, derived)) = loaded {
        let from = index.entries.last().map_or(0, |e| u64::from(e.position));
        segment.index = index;
        // Derived (no .appendindex): sealed before append times, unless the file was lost —
        // then its last batch has one, and only a scan tells the append times.
        let lost = derived && segment.last_batch_says_append_time(from).unwrap_or(true);
        if !lost {
            if derived && writable {
                // Sealed before append times: record that none of its batches has one.
                if let Err(e) = segment.index.write_append_file(disk, dir) {
                    tracing::warn!(segment = %segment.path.display(), error = %e, "cannot write its append-time index; derived again at the next open");
                }
            }
            return Ok(());
        }
        segment.index = SegmentIndex::new(base, segment.index.interval_bytes());
    }
    tracing::warn!(segment = %segment.path.display(), "index files missing or damaged; rebuilding from the segment");
    if let Some(stop) = segment.scan(u64::MAX).map_err(|e| e.to_string())? {
        return Err(format!(
            "sealed segment {} is corrupt at byte {}: {}. Nothing was changed; restore it from the remote tier or move it aside",
            segment.path.display(),
            stop.position,
            stop.error
        ));
    }
    if segment.index.is_empty() {
        return Err(format!("sealed segment {} is empty", segment.path.display()));
    }
    if writable {
        segment
            .index
            .write_files(disk, dir)
            .map_err(|e| format!("cannot rewrite index of {}: {e}", segment.path.display()))?;
    }
    Ok(())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
