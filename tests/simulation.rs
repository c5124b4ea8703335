//! Deterministic simulation of the whole storage path, under one seed: the real partition
//! append/roll/seal/recovery code on a simulated disk with crash semantics and seeded I/O
//! faults, the real upload pipeline, manifest commits, local retention and scrub against an
//! in-memory object store with seeded faults (failed and ambiguous PUTs, failed GETs, HEADs and
//! DELETEs), the unified reader and consumer groups, with power cuts landing between any two
//! disk operations. After every step the invariants are checked against an in-memory oracle:
//!
//! - every acknowledged record is readable exactly once, in order, with dense offsets, through
//!   the unified reader (both tiers); a failed append left nothing; a call cut short by a
//!   power cut left at most a prefix of itself;
//! - a time lookup equals the oracle's (first offset whose timestamp is ≥ T);
//! - every record has an append time, never decreasing along a partition nor later than the
//!   simulated clock, and an as-of lookup (first offset appended after T) agrees with the
//!   append times read back, in both tiers;
//! - the manifest chain verifies, starts at offset 0 (or where remote retention expired it)
//!   and never runs past the local log;
//! - client-side encryption (on for a third of the seeds, the current key rotated at every
//!   clean restart, old keys kept) changes none of the above: every read decrypts;
//! - remote retention (on for half the seeds, by time and/or bytes, with a random grace
//!   period) only moves the log's start forward, never past what the local log still holds,
//!   and by time only over records older than the limit; every record from the start on stays
//!   readable while expired objects are deleted under faults, crashes and scrubs;
//! - no local segment is gone unless its object is in the bucket (else the read check fails);
//! - scrub never deletes a referenced object (else the read check fails);
//! - committed group offsets read back as committed;
//! - an idempotent producer's batch is stored once however often it is sent: a retry of a
//!   batch the log holds (its answer lost to a failed call, a crash or a dropped response)
//!   gets the offsets of the stored one and writes nothing, across restarts and rolls.
//!
//! - at the end of every run, with faults off, one tiering pass commits everything: no
//!   partition is left fenced, stuck or diverged (liveness).
//!
//! Each seed picks the durability policy: `batch` (every acknowledged record must survive a
//! power cut) or `never` (acknowledged records past the last sealed segment may be lost at a
//! power cut, by design; sealed and tiered ones may not, and what survives is a prefix).
//! Time is simulated: object-store requests take simulated time (now and then a stall longer
//! than the commit window), objects are stamped with simulated time, and the clock sometimes
//! jumps by minutes, so commit windows expire, segments roll by age, local retention deletes
//! by time and scrub really deletes old orphans — while a tiering pass runs beside it.
//!
//! Runs `TIERLOG_SIM_SEEDS` seeds (default 150, about 2 minutes in a debug build here) from `TIERLOG_SIM_FIRST_SEED` (default 1);
//! `TIERLOG_SIM_SEED=N` replays one seed with its trace printed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use futures::{FutureExt, TryStreamExt};

use object_store::memory::InMemory;
use tierlog::batch::ProducerStamp;
use tierlog::config::{Config, FsyncPolicy};
use tierlog::disk::sim::{DiskFaults, SimDisk, SimRng};
use tierlog::host::{Clock, Host};
use tierlog::reader::Reader;
use tierlog::tier::Tiering;
use tierlog::{Error, Log, Record};
use tierlog_tiering::fault::{FaultStore, SeededFaults};
use tierlog_tiering::keys::UniqueIds;
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::remote_reader::RemoteReader;
use tierlog_tiering::scrub::{self, ScrubAction, ScrubPartition, ScrubSettings};
use tierlog_tiering::store::RemoteStore;

/// Named `archive`, the name that once made scrub take manifests for orphans.
const TOPIC: &str = "archive";
/// Seeds that once failed, run every time: 1094 found the page-cache trap after a failed
/// fsync (a restarted writer trusted bytes that were never written back); 142 found an undo
/// that cut the first segment before a later one was gone (a hole recovery refuses).
const REGRESSION_SEEDS: &[u64] = &[1094, 142];
const PARTITIONS: u32 = 2;
const STEPS: usize = 60;

/// What the oracle knows about one partition.
#[derive(Debug, Default, Clone)]
struct PartitionOracle {
    /// Records known to be in the log, in offset order: (value, timestamp).
    records: Vec<(String, i64)>,
    /// A call cut short by a power cut: any prefix of it may have survived.
    in_doubt: Vec<(String, i64)>,
}

struct World {
    seed: u64,
    rng: SimRng,
    _dir: tempfile::TempDir,
    disk: SimDisk,
    time: Arc<AtomicI64>,
    config: Config,
    remote: RemoteStore,
    faults: Arc<FaultStore>,
    log: Option<Log>,
    tiering: Option<Tiering>,
    oracle: Vec<PartitionOracle>,
    /// Per partition, the offset below which records must survive a power cut (`never`).
    floor: Vec<u64>,
    groups: BTreeMap<u32, u64>,
    calls: u64,
    trace: Vec<String>,
    /// One idempotent producer per partition, and its own random source (so the seeds that
    /// predate it keep the rest of their course).
    producers: Vec<SimProducer>,
    producer_rng: SimRng,
    /// Draws of group commits (its own stream, so older seeds keep their traces).
    group_rng: SimRng,
    /// Draws of the as-of check (its own stream, so older seeds keep their traces).
    as_of_rng: SimRng,
    /// Per partition, the log's start as last read: retention may only move it forward.
    start: Vec<u64>,
    /// Encryption key rotations so far (encrypted seeds): key `k<n>` is current.
    rotations: u64,
}

/// A keyring whose keys are `k0..=k<current>` (fixed bytes each) and whose current key is
/// `k<current>`.
fn write_keyring(path: &std::path::Path, current: u64) {
    use base64::Engine;
    let mut text = format!("current = \"k{current}\"\n");
    for n in 0..=current {
        let key = base64::engine::general_purpose::STANDARD.encode([n as u8 + 1; 32]);
        text.push_str(&format!("[[keys]]\nid = \"k{n}\"\nkey = \"{key}\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

/// An idempotent producer as a Kafka client drives it: numbered batches, and a batch whose
/// answer was lost sent again with the same sequence until it is answered.
#[derive(Debug, Clone, Default)]
struct SimProducer {
    id: i64,
    next_sequence: i32,
    /// A batch to send again, and its first sequence.
    retry: Option<(Vec<(String, i64)>, i32)>,
}

impl World {
    fn new(seed: u64) -> World {
        let mut rng = SimRng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let faults = DiskFaults { enospc_per_million: 4_000, fsync_error_per_million: 2_000 };
        let disk = SimDisk::new(rng.next_u64(), faults);
        let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        config.durability.fsync = if rng.below(10) < 7 { FsyncPolicy::Batch } else { FsyncPolicy::Never };
        config.segment.max_age_ms = 60_000 + rng.below(20 * 60_000);
        config.segment.max_bytes = 1024 + rng.below(4096);
        config.segment.index_interval_bytes = 256;
        config.tiering.chunk_bytes = 512 + rng.below(2048);
        config.tiering.local_retention_bytes = rng.below(8192);
        config.tiering.local_retention_ms = 10 * 60_000 + rng.below(2 * 3_600_000);
        config.tiering.upload_attempts = 1 + rng.below(3);
        config.tiering.upload_concurrency = 1; // one request at a time: the same order every run
        config.tiering.commit_window_ms = 1_000;
        config.tiering.orphan_grace_ms = 0;
        // Remote retention for half the seeds (its own stream, so older seeds keep their traces).
        let mut retention_rng = SimRng::new(seed ^ 0x7265_7465);
        if retention_rng.below(2) == 0 {
            let local_ms = config.tiering.local_retention_ms as i64;
            config.tiering.remote_retention_ms = match retention_rng.below(3) {
                0 => -1,
                _ => local_ms + retention_rng.below(3 * 3_600_000) as i64,
            };
            config.tiering.remote_retention_bytes = match retention_rng.below(3) {
                0 => 1 + retention_rng.below(16_384) as i64,
                _ => -1,
            };
            config.tiering.expiry_grace_ms = retention_rng.below(120_000);
        }
        // Encryption for a third of the seeds (its own stream, so older seeds keep their traces).
        // Nonces are random, but only object bytes depend on them, never sizes or requests.
        if SimRng::new(seed ^ 0x656e_6372).below(3) == 0 {
            let keyring = dir.path().join("keyring.toml");
            write_keyring(&keyring, 0);
            config.encryption.key_file = keyring.display().to_string();
        }
        let time = Arc::new(AtomicI64::new(1_700_000_000_000));
        let faulty = Arc::new(FaultStore::new(Arc::new(InMemory::new())));
        let mut seeded = SeededFaults::new(rng.next_u64(), 20_000);
        seeded.clock = Some(time.clone());
        (seeded.latency_ms_max, seeded.stall_per_million, seeded.stall_ms) = (20, 10_000, 3_000);
        (seeded.list_stale_per_million, seeded.list_lag_ms) = (200_000, 5_000);
        *faulty.faults.seeded.lock().unwrap() = Some(seeded);
        let remote = RemoteStore::local_dir(&dir.path().join("unused"))
            .unwrap()
            .with_store(faulty.clone())
            .with_ids(UniqueIds::seeded(seed ^ 0x6b65_7973)); // not drawn from rng: older seeds keep their traces
        let oracle = vec![PartitionOracle::default(); PARTITIONS as usize];
        let floor = vec![0; PARTITIONS as usize];
        let (log, tiering, groups, calls, trace) = (None, None, BTreeMap::new(), 0, Vec::new());
        let producers =
            (0..PARTITIONS).map(|p| SimProducer { id: i64::from(p) * 1000, ..SimProducer::default() }).collect();
        let producer_rng = SimRng::new(seed ^ 0x7072_6f64);
        let group_rng = SimRng::new(seed ^ 0x6772_6f75);
        let as_of_rng = SimRng::new(seed ^ 0x6173_6f66);
        World {
            seed,
            rng,
            _dir: dir,
            disk,
            time,
            config,
            remote,
            faults: faulty,
            log,
            tiering,
            oracle,
            floor,
            groups,
            calls,
            trace,
            producers,
            producer_rng,
            group_rng,
            as_of_rng,
            start: vec![0; PARTITIONS as usize],
            rotations: 0,
        }
    }

    /// Faults stop while the checker reads (it is not under test) and for the final pass.
    /// Returns whether they were paused before, for the caller to restore.
    fn pause_faults(&self, paused: bool) -> bool {
        self.faults.faults.paused.swap(paused, Ordering::SeqCst)
    }

    fn host(&self) -> Host {
        Host::new(Arc::new(self.disk.clone()), Clock::manual(self.time.clone()))
    }

    fn log(&self) -> &Log {
        self.log.as_ref().expect("log is open")
    }

    fn note(&mut self, line: String) {
        self.trace.push(line);
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {}: {what}\ntrace:\n  {}\nreplay: TIERLOG_SIM_SEED={} cargo test --test simulation -- --nocapture",
            self.seed,
            self.trace.join("\n  "),
            self.seed
        );
    }

    /// Opens the log (creating the topic the first time) and a tiering driver on it.
    async fn open(&mut self) {
        self.disk.set_now_ms(self.time.load(Ordering::SeqCst));
        let mut attempts = 0;
        let log = loop {
            match Log::open_on(self.host(), self.config.clone()) {
                Ok(log) => break log,
                Err(e) if self.disk.is_dead() => {
                    self.note(format!("power cut during recovery ({})", kind(&e)));
                    return; // the crash that follows restarts again
                }
                // An injected I/O error during recovery: the operator starts it again.
                Err(e) if e.kind() == tierlog::ErrorKind::Internal && attempts < 20 => {
                    attempts += 1;
                    self.note(format!("recovery hit an I/O error ({}), starting again", kind(&e)));
                }
                Err(e) => self.fail(format!("recovery failed: {e}")),
            }
        };
        // Creating the topic is setup, not under test: an injected fault makes it try again
        // (a failed creation leaves no metadata, so the retry starts clean).
        for attempt in 0.. {
            if !log.topics().is_empty() || self.disk.is_dead() {
                break;
            }
            match log.create_topic(TOPIC, PARTITIONS) {
                Ok(_) => break,
                Err(e) if attempt >= 20 => self.fail(format!("create topic: {e}")),
                Err(e) => self.note(format!("create topic failed ({}), trying again", kind(&e))),
            }
        }
        let tiering = match Tiering::start_with(log.clone(), self.remote.clone()).await {
            Ok(t) => Some(t),
            Err(e) => {
                self.note(format!("tiering start failed: {}", kind(&e)));
                None
            }
        };
        self.log = Some(log);
        self.tiering = tiering;
    }

    fn close(&mut self) {
        self.tiering = None;
        self.log = None;
    }

    /// A power cut: what was not durable is lost or torn; the process starts again.
    async fn crash_and_restart(&mut self) {
        self.close();
        self.disk.crash();
        self.open().await;
        let was = self.pause_faults(true);
        self.reconcile_after_crash(true).await;
        self.pause_faults(was);
    }

    async fn produce(&mut self) {
        let partition = self.rng.below(u64::from(PARTITIONS)) as u32;
        let count = 1 + self.rng.below(40) as usize;
        let size = 1 + self.rng.below(300) as usize;
        let call = self.calls;
        self.calls += 1;
        let now = self.time.load(Ordering::SeqCst);
        let records: Vec<(String, i64)> = (0..count)
            .map(|i| (format!("p{partition}-c{call}-r{i}-{}", "x".repeat(size)), now + self.rng.below(50) as i64 - 25))
            .collect();
        let batch: Vec<Record> = records
            .iter()
            .map(|(v, ts)| Record { timestamp: *ts, key: None, value: v.clone().into_bytes(), headers: vec![] })
            .collect();
        let p = self.log().topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        if self.producer_rng.below(3) == 0 {
            return self.produce_idempotent(partition, call, records, now).await;
        }
        // Not on the regression seeds: their course must stay the one that once failed.
        if !REGRESSION_SEEDS.contains(&self.seed) && self.group_rng.below(4) == 0 {
            return self.produce_group(partition, call, records, batch, now).await;
        }
        let expected_first = self.oracle[partition as usize].records.len() as u64;
        match p.append(&batch, now) {
            Ok(appended) => {
                if appended.first_offset != expected_first
                    || appended.last_offset + 1 - appended.first_offset != count as u64
                {
                    self.fail(format!(
                        "append {call} got {appended:?}, expected {count} records from {expected_first}"
                    ));
                }
                self.note(format!("produce p{partition} call {call}: {count} acked at {expected_first}"));
                self.oracle[partition as usize].records.extend(records);
            }
            Err(e) => self.failed_call(partition, call, records, e).await,
        }
    }

    /// A group commit: the call `call` is sent, and while it is in an fsync (held there by
    /// the disk's hook) 1–3 more calls to the same partition queue behind it, one thread each,
    /// in order, so the next group holds them all. Each call's answer is checked as if it had
    /// come alone: acknowledged ones at the oracle's end in queue order, cleanly failed ones
    /// leave nothing, and the calls in doubt (stopped, or cut by a power cut) are in doubt
    /// together, in order (what survives is a prefix of them). When the call never reaches an
    /// fsync (it failed before, or the `never` policy), the others are sent one after another.
    async fn produce_group(
        &mut self,
        partition: u32,
        call: u64,
        records: Vec<(String, i64)>,
        batch: Vec<Record>,
        now: i64,
    ) {
        let p = self.log().topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        let mut calls = vec![(call, records, batch)];
        for _ in 0..1 + self.group_rng.below(3) {
            let call = self.calls;
            self.calls += 1;
            let count = 1 + self.group_rng.below(20) as usize;
            let size = 1 + self.group_rng.below(300) as usize;
            let records: Vec<(String, i64)> = (0..count)
                .map(|i| (format!("p{partition}-c{call}-r{i}-{}", "x".repeat(size)), now + i as i64))
                .collect();
            let batch = records
                .iter()
                .map(|(v, ts)| Record { timestamp: *ts, key: None, value: v.clone().into_bytes(), headers: vec![] })
                .collect();
            calls.push((call, records, batch));
        }
        let queued: Vec<Vec<Record>> = calls[1..].iter().map(|(_, _, batch)| batch.clone()).collect();
        let (spawned, wait_spawned) = std::sync::mpsc::channel();
        let queuer = p.clone();
        self.disk.before_next_sync(move || {
            let handles: Vec<_> = queued
                .into_iter()
                .enumerate()
                .map(|(k, batch)| {
                    let p = queuer.clone();
                    let handle = std::thread::spawn(move || p.append(&batch, now));
                    while queuer.appends_waiting() <= k {
                        std::thread::yield_now();
                    }
                    handle
                })
                .collect();
            spawned.send(handles).unwrap();
        });
        let first = p.append(&calls[0].2, now);
        let mut results = vec![first];
        if self.disk.cancel_sync_hook() {
            // Never reached an fsync: the others go one after another.
            self.note(format!("group p{partition} call {call}: no fsync to queue behind"));
            results.extend(calls[1..].iter().map(|(_, _, batch)| p.append(batch, now)));
        } else {
            let handles = wait_spawned.recv().unwrap();
            results.extend(handles.into_iter().map(|h| h.join().unwrap()));
            self.note(format!(
                "group p{partition}: calls {call}..={} queued behind an fsync",
                call + results.len() as u64 - 1
            ));
        }
        let mut doubt = Vec::new();
        let mut doubt_error = None;
        for ((call, records, _), result) in calls.into_iter().zip(results) {
            let expected_first = self.oracle[partition as usize].records.len() as u64;
            match result {
                Ok(appended) => {
                    let count = records.len() as u64;
                    if !doubt.is_empty()
                        || appended.first_offset != expected_first
                        || appended.last_offset + 1 - appended.first_offset != count
                    {
                        self.fail(format!(
                            "group call {call} got {appended:?}, expected {count} records from {expected_first} ({} in doubt before it)",
                            doubt.len()
                        ));
                    }
                    self.note(format!(
                        "produce p{partition} call {call}: {count} acked at {expected_first} in a group"
                    ));
                    self.oracle[partition as usize].records.extend(records);
                }
                // Judged by its own error: the disk may have died after it answered.
                Err(e) if cut_by_power(&e) || matches!(e, Error::Stopped { .. }) => {
                    self.note(format!("produce p{partition} call {call}: in doubt in a group ({})", kind(&e)));
                    doubt.extend(records);
                    doubt_error.get_or_insert(e);
                }
                Err(e) => {
                    if !doubt.is_empty() {
                        self.fail(format!("group call {call} failed cleanly ({e}) after calls in doubt"));
                    }
                    self.note(format!(
                        "produce p{partition} call {call}: failed in a group, must leave nothing ({})",
                        kind(&e)
                    ));
                }
            }
        }
        if let Some(e) = doubt_error {
            self.failed_call(partition, call, doubt, e).await;
        }
    }

    /// What a failed append call leaves: nothing, a call in doubt until a restart decides, or
    /// a stopped partition that the operator restarts.
    async fn failed_call(&mut self, partition: u32, call: u64, records: Vec<(String, i64)>, e: Error) {
        match e {
            e if self.disk.is_dead() => {
                self.note(format!("produce p{partition} call {call}: cut by the power cut ({})", kind(&e)));
                self.oracle[partition as usize].in_doubt = records;
            }
            e @ Error::Stopped { .. } => {
                // The undo may have failed part-way: a prefix of the call's batches may come
                // back (never acknowledged). The restart decides, and what the restarted
                // writer shows must be what is durable from then on.
                self.note(format!("produce p{partition} call {call}: stopped the partition, in doubt ({})", kind(&e)));
                self.oracle[partition as usize].in_doubt = records;
                if self.disk.crash_pending() {
                    return; // the power cut comes first, and its restart reconciles
                }
                self.close();
                self.open().await; // the operator restarts the stopped process
                let was = self.pause_faults(true);
                self.reconcile_after_crash(false).await; // no power cut: every acknowledged record stays
                self.pause_faults(was);
            }
            e => {
                self.note(format!("produce p{partition} call {call}: failed, must leave nothing ({})", kind(&e)));
            }
        }
    }

    /// The idempotent producer of `partition` sends its batch to retry, or else `fresh`. A
    /// batch the log holds (by the oracle) must come back as a duplicate with its offsets;
    /// any other must be appended at the end.
    async fn produce_idempotent(&mut self, partition: u32, call: u64, fresh: Vec<(String, i64)>, now: i64) {
        let producer = &mut self.producers[partition as usize];
        let (records, sequence) = match producer.retry.take() {
            Some(retry) => retry,
            None => {
                let sequence = producer.next_sequence;
                producer.next_sequence += fresh.len() as i32;
                (fresh, sequence)
            }
        };
        let stamp = ProducerStamp { id: producer.id, epoch: 0, first_sequence: sequence };
        let batch: Vec<Record> = records
            .iter()
            .map(|(v, ts)| Record { timestamp: *ts, key: None, value: v.clone().into_bytes(), headers: vec![] })
            .collect();
        let oracle = &self.oracle[partition as usize];
        let stored_at = oracle.records.iter().position(|(v, _)| *v == records[0].0).map(|at| at as u64);
        let end = oracle.records.len() as u64;
        let p = self.log().topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        match p.append_stamped(&batch, stamp, now) {
            Ok(produced) => {
                let (first, count) = (produced.appended.first_offset, records.len() as u64);
                let want = stored_at.unwrap_or(end);
                if produced.duplicate != stored_at.is_some()
                    || first != want
                    || produced.appended.last_offset + 1 - first != count
                {
                    self.fail(format!(
                        "idempotent call {call} (sequence {sequence}) got {produced:?}; the batch is {}, so expected {} at {want}",
                        if stored_at.is_some() { "stored" } else { "not stored" },
                        if stored_at.is_some() { "a duplicate" } else { "an append" },
                    ));
                }
                self.note(format!("idempotent p{partition} call {call} seq {sequence}: {produced:?}"));
                if !produced.duplicate {
                    self.oracle[partition as usize].records.extend(records.iter().cloned());
                }
                if self.producer_rng.below(3) == 0 {
                    self.note(format!(
                        "idempotent p{partition} call {call}: the answer is lost, the batch will be sent again"
                    ));
                    self.producers[partition as usize].retry = Some((records, sequence));
                }
            }
            // Only a power cut under `never` loses acknowledged batches, and with them the
            // producer's place in its sequence: a client then starts a new producer.
            Err(Error::Producer { refusal, .. })
                if self.config.durability.fsync == FsyncPolicy::Never && !self.disk.is_dead() =>
            {
                self.note(format!("idempotent p{partition} call {call}: {refusal} after lost batches; new producer"));
                let producer = &mut self.producers[partition as usize];
                *producer = SimProducer { id: producer.id + 1, ..SimProducer::default() };
            }
            Err(e @ Error::Producer { .. }) => self.fail(format!("idempotent call {call} refused: {e}")),
            Err(e) => {
                self.producers[partition as usize].retry = Some((records.clone(), sequence));
                self.failed_call(partition, call, records, e).await;
            }
        }
    }

    async fn tier(&mut self) {
        let seal = self.rng.below(2) == 0;
        let Some(tiering) = self.tiering.as_ref() else {
            self.close();
            self.open().await;
            return;
        };
        match tiering.run_once(None, seal).await {
            Ok(reports) => {
                let summary: Vec<String> = reports
                    .iter()
                    .map(|r| {
                        format!(
                            "p{} up {} del {} exp {}/{} err {}",
                            r.partition,
                            r.uploaded_segments,
                            r.deleted_local_segments,
                            r.expired_segments,
                            r.deleted_expired_objects,
                            r.error.is_some()
                        )
                    })
                    .collect();
                self.note(format!("tier run (seal {seal}): {}", summary.join(", ")));
            }
            Err(e) => self.note(format!("tier run failed: {}", kind(&e))),
        }
    }

    async fn scrub(&mut self) {
        let partitions: Vec<ScrubPartition> =
            (0..PARTITIONS).map(|p| ScrubPartition { topic: TOPIC.into(), partition: p, version_hint: 0 }).collect();
        let settings = ScrubSettings { commit_window_ms: 1_000, orphan_grace_ms: 0, delete: true };
        match scrub::scrub(&self.remote, &partitions, &settings).await {
            Ok(report) => {
                let deleted = report.objects.iter().filter(|o| o.action == ScrubAction::Deleted).count();
                self.note(format!("scrub: {} unreferenced, {deleted} deleted", report.unreferenced()))
            }
            Err(e) => self.note(format!("scrub failed: {}", if e.is_fenced() { "fenced" } else { "error" })),
        }
    }

    fn commit_group(&mut self) {
        let partition = self.rng.below(u64::from(PARTITIONS)) as u32;
        let end = self.oracle[partition as usize].records.len() as u64;
        let offset = self.rng.below(end + 1);
        let dir = self.config.data_dir.clone();
        match tierlog::groups::commit(&dir, "g", TOPIC, &[(partition, offset)].into()) {
            Ok(()) => {
                self.groups.insert(partition, offset);
            }
            Err(e) => self.fail(format!("group commit: {e}")),
        }
        let loaded = tierlog::groups::load(&dir, "g", TOPIC).unwrap_or_else(|e| self.fail(format!("group load: {e}")));
        if loaded != self.groups {
            self.fail(format!("group offsets {loaded:?}, committed {:?}", self.groups));
        }
    }

    /// The unified reader over both tiers of the open log, with a cold remote cache.
    fn reader(&self) -> (Log, Reader) {
        let log = self.log().clone();
        let settings = tierlog::reader::settings_with_keys(&self.config).unwrap_or_else(|e| self.fail(format!("{e}")));
        let remote = RemoteReader::new(self.remote.clone(), settings);
        (log.clone(), Reader::with_remote(log, remote))
    }

    /// Everything the log holds now, through the unified reader.
    async fn read_all(&self, partition: u32) -> Result<Vec<(u64, String, i64)>, Error> {
        let (log, reader) = self.reader();
        let p = log.topic(TOPIC)?.partition(partition)?.clone();
        let mut out = Vec::new();
        let mut next = reader.start_offset(&p).await?;
        loop {
            let records = reader.read(&p, next, 64 * 1024).await?;
            let Some(last) = records.last() else { return Ok(out) };
            next = last.offset + 1;
            out.extend(
                records.into_iter().map(|r| (r.offset, String::from_utf8(r.record.value).unwrap(), r.record.timestamp)),
            );
        }
    }

    /// After a crash: the log must hold every acknowledged record and at most a prefix of the
    /// call the crash interrupted; what survived of that call becomes known. Only a power cut
    /// (`power_cut`) may lose acknowledged records, and only under `never`: a restart after a
    /// stopped partition keeps the page cache, so it must keep every acknowledged record.
    async fn reconcile_after_crash(&mut self, power_cut: bool) {
        let strict = !power_cut || self.config.durability.fsync == FsyncPolicy::Batch;
        for p in 0..PARTITIONS {
            let start = self.check_start(p).await as usize;
            let got = self.read_checked(p).await;
            // Counted from offset 0: what retention expired before the start still counts.
            let got: Vec<(u64, String, i64)> = (0..start).map(|_| (0, String::new(), 0)).chain(got).collect();
            let oracle = &self.oracle[p as usize];
            let known = oracle.records.len();
            // `batch`: everything acknowledged; `never`: at least what was sealed or tiered.
            let must = if strict { known } else { self.floor[p as usize] as usize };
            if got.len() < must || got.len() > known + oracle.in_doubt.len() {
                self.fail(format!(
                    "p{p}: {} records after the crash; {known} acknowledged, {must} must survive, {} in doubt",
                    got.len(),
                    oracle.in_doubt.len()
                ));
            }
            let doubt = oracle.in_doubt[..got.len().saturating_sub(known)].to_vec();
            let lost = known.saturating_sub(got.len());
            self.check_prefix(p, &got[start..], &doubt);
            let oracle = &mut self.oracle[p as usize];
            oracle.records.truncate(got.len());
            oracle.records.extend(doubt.iter().cloned());
            oracle.in_doubt.clear();
            self.note(format!("p{p}: {} in-doubt records survived the crash, {lost} unsynced lost", doubt.len()));
        }
    }

    async fn read_checked(&mut self, partition: u32) -> Vec<(u64, String, i64)> {
        match self.read_all(partition).await {
            Ok(records) => records,
            Err(e) => self.fail(format!("p{partition}: read failed: {e}")),
        }
    }

    /// `got` (read from the log's start on) holds the oracle's records from there, offsets dense.
    fn check_prefix(&self, partition: u32, got: &[(u64, String, i64)], doubt: &[(String, i64)]) {
        let oracle = &self.oracle[partition as usize];
        let start = self.start[partition as usize];
        let want = oracle.records.iter().chain(doubt).skip(start as usize);
        for (i, ((offset, value, ts), (want_value, want_ts))) in (start..).zip(got.iter().zip(want)) {
            if *offset != i || value != want_value || ts != want_ts {
                self.fail(format!(
                    "p{partition} offset {i}: got {offset} {value:.20} @ {ts}, want {want_value:.20} @ {want_ts}"
                ));
            }
        }
    }

    /// Reads the partition's start and checks what retention may do: move it forward only,
    /// never past the local log's start, and (by time alone) only over records older than the
    /// limit. Returns the start; the records from it on are read and checked by the caller.
    async fn check_start(&mut self, partition: u32) -> u64 {
        let (log, reader) = self.reader();
        let p = log.topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        let start = match reader.start_offset(&p).await {
            Ok(start) => start,
            Err(e) => self.fail(format!("p{partition}: start offset: {e}")),
        };
        let known = self.oracle[partition as usize].records.len() as u64;
        let previous = self.start[partition as usize];
        // (Never past the local start: `check_manifest` checks the expiry against it.)
        if start < previous || start > known {
            self.fail(format!("p{partition}: start {start} after {previous}; {known} records acknowledged"));
        }
        let (by_time, by_bytes) = self.config.remote_retention();
        if let (Some(ms), None) = (by_time, by_bytes) {
            let limit = self.time.load(Ordering::SeqCst) - ms as i64;
            let records = &self.oracle[partition as usize].records;
            if let Some(i) = records[..start as usize].iter().position(|(_, ts)| *ts >= limit) {
                self.fail(format!("p{partition}: offset {i} (timestamp {}) expired before {limit}", records[i].1));
            }
        }
        if start != previous {
            self.note(format!("p{partition}: retention moved the start from {previous} to {start}"));
        }
        self.start[partition as usize] = start;
        start
    }

    /// The invariants that must hold after every step.
    async fn check(&mut self) {
        for p in 0..PARTITIONS {
            let start = self.check_start(p).await;
            let got = self.read_checked(p).await;
            if start + got.len() as u64 != self.oracle[p as usize].records.len() as u64 {
                self.fail(format!(
                    "p{p}: {} records readable from {start}, {} acknowledged",
                    got.len(),
                    self.oracle[p as usize].records.len()
                ));
            }
            self.check_prefix(p, &got, &[]);
            self.check_seek(p).await;
            self.check_time_lookup(p).await;
            self.check_as_of(p).await;
            self.check_manifest(p).await;
        }
    }

    /// A read from a random offset starts exactly there (an index seek, locally or in a chunk
    /// of the remote tier) with the oracle's record.
    async fn check_seek(&mut self, partition: u32) {
        let records = self.oracle[partition as usize].records.clone();
        let start = self.start[partition as usize];
        if records.len() as u64 <= start {
            return;
        }
        let offset = start + self.rng.below(records.len() as u64 - start);
        let (log, reader) = self.reader();
        let p = log.topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        match reader.read(&p, offset, 1).await {
            Ok(got)
                if got
                    .first()
                    .is_some_and(|r| r.offset == offset && r.record.value == records[offset as usize].0.as_bytes()) => {
            }
            Ok(got) => self.fail(format!(
                "p{partition}: read at {offset} returned offsets {:?}",
                got.iter().map(|r| r.offset).collect::<Vec<_>>()
            )),
            Err(e) => self.fail(format!("p{partition}: read at {offset} failed: {e}")),
        }
    }

    async fn check_time_lookup(&mut self, partition: u32) {
        let records = self.oracle[partition as usize].records.clone();
        let Some(first) = records.first() else { return };
        let t = first.1 - 30 + self.rng.below((records.last().unwrap().1 - first.1 + 60).max(1) as u64) as i64;
        // Among the records still held (from the start on).
        let start = self.start[partition as usize] as usize;
        let want =
            (start + records[start..].iter().position(|(_, ts)| *ts >= t).unwrap_or(records.len() - start)) as u64;
        let (log, reader) = self.reader();
        let p = log.topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        match reader.offset_for_time(&p, t).await {
            Ok(got) if got == want => {}
            Ok(got) => self.fail(format!("p{partition}: offset_for_time({t}) = {got}, oracle says {want}")),
            Err(e) => self.fail(format!("p{partition}: offset_for_time({t}) failed: {e}")),
        }
    }

    /// Append times read back are present, never decrease and are not in the future; an
    /// as-of lookup at, just before or just after one of them (or outside them all) returns the
    /// first offset whose append time is later.
    async fn check_as_of(&mut self, partition: u32) {
        if self.as_of_rng.below(2) == 0 {
            return;
        }
        let (log, reader) = self.reader();
        let p = log.topic(TOPIC).unwrap().partition(partition).unwrap().clone();
        let mut times = Vec::new();
        let start = self.start[partition as usize];
        let mut next = start;
        loop {
            match reader.read(&p, next, 64 * 1024).await {
                Ok(records) if records.is_empty() => break,
                Ok(records) => {
                    next = records.last().unwrap().offset + 1;
                    times.extend(records.iter().map(|r| r.append_time));
                }
                Err(e) => self.fail(format!("p{partition}: read for append times failed: {e}")),
            }
        }
        let now = self.time.load(Ordering::SeqCst);
        let Some(times) = times.into_iter().collect::<Option<Vec<i64>>>() else {
            self.fail(format!("p{partition}: a record without an append time"));
        };
        if let Some(i) = times.windows(2).position(|w| w[1] < w[0]) {
            self.fail(format!("p{partition}: append time decreases at offset {}: {times:?}", i + 1));
        }
        if times.last().is_some_and(|t| *t > now) {
            self.fail(format!("p{partition}: append time {} after the clock {now}", times.last().unwrap()));
        }
        let t = match times.len() {
            0 => now,
            n => times[self.as_of_rng.below(n as u64) as usize] + self.as_of_rng.below(3) as i64 - 1,
        };
        let want = start + times.iter().position(|a| *a > t).unwrap_or(times.len()) as u64;
        match reader.offset_as_of(&p, t).await {
            Ok(got) if got == want => {}
            // Before the first append time still held, an expired batch may have been appended
            // after `t`: that answer was expired, and saying so is right.
            Err(Error::Expired { .. }) if start > 0 && times.first().is_none_or(|first| t < *first) => {}
            Ok(got) => self.fail(format!("p{partition}: offset_as_of({t}) = {got}, append times say {want}")),
            Err(e) => self.fail(format!("p{partition}: offset_as_of({t}) failed: {e}")),
        }
    }

    async fn check_manifest(&mut self, partition: u32) {
        let was = self.pause_faults(true);
        let loaded =
            ManifestStore::open(self.remote.clone(), TOPIC, partition, Writer { id: "sim".into(), epoch: 0 }, 0).await;
        self.pause_faults(was);
        let manifest = match loaded {
            Ok(m) => m.current,
            Err(e) => self.fail(format!("p{partition}: manifest does not load or verify: {e}")),
        };
        let end = self.oracle[partition as usize].records.len() as u64;
        let expected_start = manifest.expired_before();
        let local_start = self.log().topic(TOPIC).unwrap().partition(partition).unwrap().start_offset();
        if expected_start > local_start {
            self.fail(format!(
                "p{partition}: retention expired up to {expected_start}, the local log starts at {local_start}"
            ));
        }
        if manifest.start_offset().is_some_and(|s| s != expected_start) || manifest.next_offset() > end {
            self.fail(format!(
                "p{partition}: manifest covers {:?}..{}, log ends at {end}",
                manifest.start_offset(),
                manifest.next_offset()
            ));
        }
        // Encrypted seeds: every inline entry names a key the keyring holds (k0..=k<rotations>).
        let encrypted = !self.config.encryption.key_file.is_empty();
        let known =
            |id: &str| id.strip_prefix('k').and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n <= self.rotations);
        if let Some(e) = manifest.entries.iter().find(|e| e.key_id.as_deref().is_some_and(known) != encrypted) {
            self.fail(format!(
                "p{partition}: entry at {} has key id {:?} (encrypted: {encrypted})",
                e.base_offset, e.key_id
            ));
        }
    }

    /// What must survive a power cut under `never`: sealed segments (fsynced when sealed) and
    /// the remote tier.
    async fn record_floor(&mut self) {
        for p in 0..PARTITIONS {
            let partition = self.log().topic(TOPIC).unwrap().partition(p).unwrap().clone();
            let sealed = partition.sealed_segments().last().map_or(0, |s| s.next_offset);
            let remote = self.remote_end(p).await;
            self.floor[p as usize] = sealed.max(remote);
        }
    }

    async fn remote_end(&mut self, partition: u32) -> u64 {
        let was = self.pause_faults(true);
        let writer = Writer { id: "sim".into(), epoch: 0 };
        let loaded = ManifestStore::open(self.remote.clone(), TOPIC, partition, writer, 0).await;
        self.pause_faults(was);
        loaded.map_or(0, |m| m.current.next_offset())
    }

    /// A scrub in the middle of a tiering pass: it runs whole right before the pass's k-th PUT
    /// (k from the seed), e.g. between a segment's upload and the manifest commit listing it —
    /// the window scrub must never delete from. Placed by a store hook rather than left to the
    /// scheduler, so the interleaving is the same on every run.
    async fn tier_beside_scrub(&mut self) {
        let Some(tiering) = self.tiering.as_ref() else { return };
        let k = self.rng.below(8);
        let (puts, outcome) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(None)));
        let (remote, hook_outcome) = (self.remote.clone(), outcome.clone());
        self.faults.hooks.lock().unwrap().before_put = Some(Arc::new(move |_: &object_store::path::Path| {
            let at = puts.fetch_add(1, Ordering::SeqCst);
            let (remote, outcome) = (remote.clone(), hook_outcome.clone());
            async move {
                if at == k {
                    let deleted = run_scrub(&remote).await;
                    *outcome.lock().unwrap() = Some(format!("before PUT {k}: deleted {deleted:?}"));
                }
                Ok(())
            }
            .boxed()
        }));
        let tiered = tiering.run_once(None, true).await;
        self.faults.hooks.lock().unwrap().before_put = None;
        let ran = outcome.lock().unwrap().take();
        let scrubbed = match ran {
            Some(outcome) => outcome,
            None => format!("after the pass: deleted {:?}", run_scrub(&self.remote).await),
        };
        self.note(format!("tier beside scrub: tier ok {}, scrub {scrubbed}", tiered.is_ok()));
    }

    /// With faults off, one pass must commit everything: nothing is left fenced or stuck.
    async fn check_liveness(&mut self) {
        self.pause_faults(true); // for good: the final pass runs without faults
        self.disk.set_faults(DiskFaults::default());
        self.close();
        self.open().await;
        let Some(tiering) = self.tiering.as_ref() else { self.fail("tiering does not start without faults".into()) };
        let reports = match tiering.run_once(None, true).await {
            Ok(reports) => reports,
            Err(e) => self.fail(format!("final pass: {e}")),
        };
        if reports.len() != PARTITIONS as usize {
            self.fail(format!("final pass reported {} partitions of {PARTITIONS}", reports.len()));
        }
        for r in &reports {
            let end = self.oracle[r.partition as usize].records.len() as u64;
            if r.error.is_some() || r.remote_end_offset != end {
                self.fail(format!(
                    "final pass without faults left p{} at {} of {end}: {:?}",
                    r.partition, r.remote_end_offset, r.error
                ));
            }
        }
        self.check().await;
    }

    async fn step(&mut self) {
        if self.rng.below(100) < 5 {
            // Minutes pass: windows expire, segments age, orphans become old enough to scrub.
            self.time.fetch_add(60_000 * (10 + self.rng.below(30)) as i64, Ordering::SeqCst);
        }
        self.time.fetch_add(1 + self.rng.below(500) as i64, Ordering::SeqCst);
        self.disk.set_now_ms(self.time.load(Ordering::SeqCst));
        match self.rng.below(100) {
            0..=49 => self.produce().await,
            50..=69 => self.tier().await,
            70..=79 => {
                // A power cut somewhere inside the next produce or tiering pass.
                self.record_floor().await;
                let after = self.rng.below(60);
                self.note(format!("power cut armed after {after} disk operations"));
                self.disk.crash_after(after);
                if self.rng.below(2) == 0 {
                    self.produce().await
                } else {
                    self.tier().await
                }
                self.crash_and_restart().await;
            }
            80..=84 => {
                self.note("clean restart".into());
                self.close();
                if !self.config.encryption.key_file.is_empty() {
                    // Key rotation: a new current key; the older ones stay for reading.
                    self.rotations += 1;
                    write_keyring(std::path::Path::new(&self.config.encryption.key_file), self.rotations);
                }
                self.open().await;
            }
            85..=89 => self.scrub().await,
            90..=92 => self.tier_beside_scrub().await,
            _ => self.commit_group(),
        }
        // Faults stop while the invariants are checked: the checker reads, it is not tested.
        let was = self.pause_faults(true);
        self.check().await;
        self.pause_faults(was);
    }
}

/// A scrub with delete, as `tier scrub --delete` runs it: how many objects it deleted.
async fn run_scrub(remote: &RemoteStore) -> Option<usize> {
    let partitions: Vec<ScrubPartition> =
        (0..PARTITIONS).map(|p| ScrubPartition { topic: TOPIC.into(), partition: p, version_hint: 0 }).collect();
    let settings = ScrubSettings { commit_window_ms: 1_000, orphan_grace_ms: 0, delete: true };
    let report = scrub::scrub(remote, &partitions, &settings).await.ok()?;
    Some(report.objects.iter().filter(|o| o.action == ScrubAction::Deleted).count())
}

/// Whether `e` came from the simulated disk after its power cut.
fn cut_by_power(e: &Error) -> bool {
    format!("{e:?}").contains("simulated power loss")
}

fn kind(e: &Error) -> String {
    format!("{:?}", e.kind())
}

/// One seed, one run; returns its trace.
fn run_seed(seed: u64) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    runtime.block_on(async {
        let mut world = World::new(seed);
        world.open().await;
        for _ in 0..STEPS {
            world.step().await;
        }
        world.check_liveness().await;
        // What the bucket holds ends the trace, so a key that differs between runs of one
        // seed (time or real randomness leaking into a key) fails `one_seed_gives_one_trace`.
        world.pause_faults(true);
        let mut objects: Vec<String> =
            world.remote.store.list(None).map_ok(|m| format!("{} {}", m.location, m.size)).try_collect().await.unwrap();
        objects.sort();
        world.note(format!("bucket: {}", objects.join(", ")));
        world.trace
    })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn every_acknowledged_record_survives_faults_crashes_tiering_retention_and_scrub() {
    if let Some(seed) = env_u64("TIERLOG_SIM_SEED") {
        let trace = run_seed(seed);
        println!("seed {seed} trace:\n  {}", trace.join("\n  "));
        return;
    }
    let first = env_u64("TIERLOG_SIM_FIRST_SEED").unwrap_or(1);
    let seeds = env_u64("TIERLOG_SIM_SEEDS").unwrap_or(150);
    let started = std::time::Instant::now();
    for seed in REGRESSION_SEEDS.iter().copied().chain(first..first + seeds) {
        run_seed(seed);
    }
    println!("simulation: {seeds} seeds from {first} in {:.1}s", started.elapsed().as_secs_f64());
}

#[test]
fn one_seed_gives_one_trace() {
    // Each seed runs twice, the second time after the others in the same process, so counters
    // kept in statics differ between the two runs too.
    let seeds = [7, 20811, 3];
    let first = seeds.map(run_seed);
    for (seed, (a, b)) in seeds.iter().zip(first.iter().zip(seeds.map(run_seed))) {
        if let Some(step) = (0..a.len().max(b.len())).find(|i| a.get(*i) != b.get(*i)) {
            panic!("seed {seed} diverges at trace line {step}:\n  {:?}\n  {:?}", a.get(step), b.get(step));
        }
    }
}
