//! The audit trail in the bucket: every action that changes what the archive holds or who may
//! read it (segment commit, retention expiry and deletion, hold set/release, lock extension,
//! topic create/alter/delete, restore/take-over, key rotation) as events in a hash-chained
//! series of create-only records.
//!
//! ```text
//! <prefix>/audit/<seq:020>.json   format "tierlog-audit", format_version 1
//! {"format":"tierlog-audit","format_version":1,"body_sha256":"<hex>"}
//! {"seq":N,"prev_sha256":"<SHA-256 of record N-1's bytes>","written_ms":…,"writer":"<who wrote it>",
//!  "events":[{"time_ms","actor","action","topic"?,"partition"?,"first_offset"?,"last_offset"?,"reason"?,"before"?,"after"?}]}
//! ```
//!
//! A record holds one or more events (the tiering driver batches a whole pass into one record,
//! so a pass costs one PUT however many partitions committed). Records are numbered from 1
//! with no gap; each names the SHA-256 of the whole previous object (64 zeros for record 1), and
//! its header the SHA-256 of its own body: a removed, altered, inserted or reordered record
//! breaks the chain at the record after it, and [`verify`] names that record.
//!
//! Writers race for the next number with create-only PUTs (`PutMode::Create`): the loser reads
//! the winner's record and tries the number after it, so concurrent writers (nodes, CLIs) never
//! overwrite each other. Every write is read back: on a store that ignores conditional writes
//! (Garage), a writer that finds another record under its number tries again, but a writer
//! whose own record was read back before another overwrote it cannot know — there, two
//! writers at once can lose a record without trace; one writer at a time (the local writer
//! lock) loses nothing.
//!
//! The tail is found from a hint without LIST (HEAD the hint, gallop, bisect, as manifests do);
//! [`Trail`] keeps the tail's number and hash, so its steady state costs one PUT per record
//! (and one GET to read it back, unless the store is proven to honour create-only writes). Reading the whole trail ([`read_all`], for `tierlog audit` and `verify`) LISTs
//! the folder.
//!
//! Owns: the format, the series, batching and retrying queued events. Not owned: when events
//! happen and who the actor is (the callers say), nor the local audit log of reads.

use std::collections::VecDeque;

use futures::{StreamExt, TryStreamExt};
use object_store::PutPayload;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{self, GENESIS_HASH};
use crate::store::RemoteStore;

pub const AUDIT_FORMAT: &str = "tierlog-audit";
/// The version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The folder of the series, under the cluster prefix.
pub const FOLDER: &str = "audit";
/// Most attempts at the next number when other writers keep taking it first: a few nodes and
/// CLIs writing at once settle in a handful; more means something writes in a loop.
pub const RACES_MAX: u32 = 32;
/// Events per record: bounds one object (an event is a few hundred bytes, so ~300 KiB).
pub const EVENTS_PER_RECORD_MAX: usize = 1_000;
/// Events a [`Trail`] queues while the bucket cannot be written (about 30 MiB of memory):
/// beyond it the oldest are dropped and counted, rather than grow without bound.
pub const PENDING_EVENTS_MAX: usize = 100_000;
/// Records read at once by [`read_all`].
const READ_CONCURRENCY: usize = 16;
/// A record larger than this is damaged or hostile: reported, never read whole.
const RECORD_BYTES_MAX: u64 = 16 << 20;

/// The action names. `lock_extend` and `key_rotate` are written by the Object Lock and
/// encryption code through [`append`] or [`Trail::record`].
pub mod action {
    pub const SEGMENT_COMMIT: &str = "segment_commit";
    pub const RETENTION_EXPIRE: &str = "retention_expire";
    pub const RETENTION_DELETE: &str = "retention_delete";
    pub const HOLD_SET: &str = "hold_set";
    pub const HOLD_RELEASE: &str = "hold_release";
    pub const LOCK_EXTEND: &str = "lock_extend";
    pub const TOPIC_CREATE: &str = "topic_create";
    pub const TOPIC_ALTER: &str = "topic_alter";
    pub const TOPIC_DELETE: &str = "topic_delete";
    pub const RESTORE: &str = "restore";
    pub const TAKE_OVER: &str = "take_over";
    pub const KEY_ROTATE: &str = "key_rotate";
}

/// One change to the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// When the action took effect (ms since the epoch).
    pub time_ms: i64,
    /// Who: the HTTP/Kafka token name, else the OS user and host (`user@host`).
    pub actor: String,
    /// One of [`action`].
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The offsets concerned, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The state before and after the action, as the action defines it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

impl Event {
    pub fn new(time_ms: i64, actor: &str, action: &str) -> Event {
        Event {
            time_ms,
            actor: actor.to_string(),
            action: action.to_string(),
            topic: None,
            partition: None,
            first_offset: None,
            last_offset: None,
            reason: None,
            before: None,
            after: None,
        }
    }

    pub fn topic(mut self, topic: &str) -> Event {
        self.topic = Some(topic.to_string());
        self
    }

    pub fn partition(mut self, topic: &str, partition: u32) -> Event {
        self.partition = Some(partition);
        self.topic(topic)
    }

    pub fn offsets(mut self, first: u64, last: u64) -> Event {
        (self.first_offset, self.last_offset) = (Some(first), Some(last));
        self
    }

    pub fn reason(mut self, reason: &str) -> Event {
        self.reason = Some(reason.to_string());
        self
    }

    pub fn before(mut self, before: serde_json::Value) -> Event {
        self.before = Some(before);
        self
    }

    pub fn after(mut self, after: serde_json::Value) -> Event {
        self.after = Some(after);
        self
    }
}

/// One object of the series: a batch of events and its link to the record before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// SHA-256 (hex) of the previous record's whole object; 64 zeros for record 1.
    pub prev_sha256: String,
    pub written_ms: i64,
    /// Who wrote the record: a writer id, or `user@host` for a CLI.
    pub writer: String,
    pub events: Vec<Event>,
}

/// The newest record known: its number and the SHA-256 of its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub seq: u64,
    pub sha256: String,
}

pub fn key(store: &RemoteStore, seq: u64) -> Path {
    store.key(&[FOLDER, &format!("{seq:020}.json")])
}

pub fn to_bytes(record: &Record) -> Vec<u8> {
    let body = serde_json::to_vec(record).expect("an audit record serializes");
    manifest::wrap_document(AUDIT_FORMAT, FORMAT_VERSION, &body)
}

/// The record in `bytes`, checked: format, version, body SHA-256, and the number `seq` its key says.
pub fn from_bytes(bytes: &[u8], key: &str, seq: u64) -> Result<Record> {
    let body = manifest::unwrap_document(bytes, AUDIT_FORMAT, &[FORMAT_VERSION], key)?;
    let record: Record = serde_json::from_slice(body)
        .map_err(|e| Error::Corrupt { key: key.to_string(), reason: format!("body: {e}") })?;
    if record.seq != seq {
        return Err(Error::Corrupt {
            key: key.to_string(),
            reason: format!("holds record {} (moved or reordered)", record.seq),
        });
    }
    Ok(record)
}

/// GETs the object at `key`, refusing one larger than [`RECORD_BYTES_MAX`] before reading its
/// body: a damaged or hostile object must not make a writer or `verify` read gigabytes.
async fn get_record_bytes(store: &RemoteStore, key: &Path) -> Result<bytes::Bytes> {
    use object_store::ObjectStoreExt;
    let result = match store.store.get(key).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return Err(Error::Missing { key: key.to_string() }),
        Err(e) => return Err(store.error(format!("GET {key}"), e)),
    };
    if result.meta.size > RECORD_BYTES_MAX {
        let reason = format!("{} bytes: larger than any audit record is", result.meta.size);
        return Err(Error::Corrupt { key: key.to_string(), reason });
    }
    result.bytes().await.map_err(|e| store.error(format!("GET {key}"), e))
}

/// The newest record, probing from `hint` (a number known to exist, or 0): HEADs only, then
/// one GET of the tail to hash it. `seq` 0 and the genesis hash when the series is empty.
pub async fn tail(store: &RemoteStore, hint: u64) -> Result<Tail> {
    let seq = manifest::latest_number(store, |n| key(store, n), hint).await?;
    if seq == 0 {
        return Ok(Tail { seq: 0, sha256: GENESIS_HASH.to_string() });
    }
    // Hashed as stored, even if damaged: the chain goes on, and `verify` names the damage.
    let bytes = get_record_bytes(store, &key(store, seq)).await?;
    Ok(Tail { seq, sha256: crate::sha256_hex(&bytes) })
}

/// Appends `events` as one record after the newest, create-only: the simple call for one
/// action (a CLI, a lock extension, a key rotation). Returns the record's number. An error
/// means the events may not be recorded: the caller reports it.
pub async fn append(store: &RemoteStore, writer: &str, now_ms: i64, events: Vec<Event>) -> Result<u64> {
    let mut known = None;
    write(store, &mut known, &mut None, 0, writer, now_ms, events, 3, true).await
}

/// Writes `events` as the record after `known` (found from `hint` when unknown), racing other
/// writers for the number; `known` becomes the new tail. Transient failures are retried up to
/// `attempts` times. `read_back`: GET every record written (see [`put_and_confirm`]).
/// `attempt`: on an error, the record whose PUT failed last (it may have landed), to be PUT
/// again unchanged before anything else ([`Trail::flush`]); `None` when no PUT may have landed.
#[allow(clippy::too_many_arguments)]
async fn write(
    store: &RemoteStore,
    known: &mut Option<Tail>,
    attempt: &mut Option<InFlight>,
    hint: u64,
    writer: &str,
    now_ms: i64,
    events: Vec<Event>,
    attempts: u32,
    read_back: bool,
) -> Result<u64> {
    assert!(!events.is_empty() && events.len() <= EVENTS_PER_RECORD_MAX, "a record holds 1..=1000 events");
    let mut hint = hint;
    let mut failures = 0;
    for _ in 0..RACES_MAX {
        let previous = match known.take() {
            Some(tail) => tail,
            None => match tail(store, hint).await {
                Ok(tail) => tail,
                Err(e) => {
                    failures += 1;
                    if failures >= attempts {
                        return Err(e);
                    }
                    tokio::time::sleep(crate::uploader::backoff(failures)).await;
                    continue;
                }
            },
        };
        let record = Record {
            seq: previous.seq + 1,
            prev_sha256: previous.sha256.clone(),
            written_ms: now_ms,
            writer: writer.to_string(),
            events: events.clone(),
        };
        let bytes = to_bytes(&record);
        *attempt = None;
        match put_and_confirm(store, record.seq, &bytes, read_back).await {
            Ok(true) => {
                *known = Some(Tail { seq: record.seq, sha256: crate::sha256_hex(&bytes) });
                return Ok(record.seq);
            }
            Ok(false) => {
                tracing::debug!(seq = record.seq, "another writer took this audit record number; trying the next");
                hint = record.seq;
            }
            Err(e) => {
                failures += 1;
                if failures >= attempts {
                    *attempt = Some(InFlight { seq: record.seq, bytes, events: record.events });
                    return Err(e);
                }
                tracing::warn!(seq = record.seq, error = %e, "audit record write failed; retrying");
                *known = Some(previous); // the same number again: a landed attempt is recognised below
                tokio::time::sleep(crate::uploader::backoff(failures)).await;
            }
        }
    }
    Err(Error::Format(format!(
        "{FOLDER}: other writers took the next audit record number {RACES_MAX} times in a row; is something writing in a loop?"
    )))
}

/// PUTs `bytes` as record `seq`, create-only. `true`: the record under that number is ours
/// (also when an earlier attempt landed); `false`: another writer's. A taken number is read to
/// tell the two apart; with `read_back`, so is a successful PUT (a store that may ignore
/// create-only writes: the only way to see we were overwritten). Where the startup probe
/// proved create-only writes honoured, a successful PUT is ours and costs no GET.
async fn put_and_confirm(store: &RemoteStore, seq: u64, bytes: &[u8], read_back: bool) -> Result<bool> {
    let key = key(store, seq);
    let (options, lock) = store.record_options();
    match store.store.put_opts(&key, PutPayload::from(bytes.to_vec()), options).await {
        Ok(result) if !read_back => {
            crate::lock::check_applied(&store.display, &key, lock, &result)?;
            return Ok(true);
        }
        Ok(_) | Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
        Err(e) => return Err(store.error(format!("PUT {key} (audit record)"), e)),
    }
    // Read back: the conflict case needs the winner's bytes, and on a store that ignores
    // create-only writes this is the only way to see we were overwritten.
    let stored = get_record_bytes(store, &key).await?;
    Ok(stored.as_ref() == bytes)
}

/// A record whose last PUT reported a failure: it may be in the bucket. It is PUT again with
/// the same number and the very same bytes before any new event is taken (a taken number
/// holding equal bytes is ours), so a PUT that landed but reported a timeout is never written
/// a second time under the next number.
#[derive(Debug, Clone)]
struct InFlight {
    seq: u64,
    bytes: Vec<u8>,
    events: Vec<Event>,
}

/// What a [`Trail`] has not written yet: at most one record in flight, then queued events.
#[derive(Debug, Default)]
struct Queue {
    in_flight: Option<InFlight>,
    events: VecDeque<Event>,
}

/// A writer's queue of events, written in batches by [`flush`](Self::flush). Recording never
/// fails and never waits for the bucket: what cannot be written stays queued (up to
/// [`PENDING_EVENTS_MAX`]) and goes with the next flush.
#[derive(Debug)]
pub struct Trail {
    store: RemoteStore,
    writer: String,
    attempts: u32,
    pending: std::sync::Mutex<Queue>,
    /// Events dropped because the queue was full (logged, and exported as a metric).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Held by one flush at a time, across its requests: the tail it extends.
    tail: tokio::sync::Mutex<(Option<Tail>, u64)>,
    /// Read every record back (unless the store is known to honour create-only writes).
    read_back: bool,
}

impl Trail {
    pub fn new(store: RemoteStore, writer: &str, attempts: u32) -> Trail {
        Trail {
            store,
            writer: writer.to_string(),
            attempts: attempts.max(1),
            pending: Default::default(),
            dropped: Default::default(),
            tail: tokio::sync::Mutex::new((None, 0)),
            read_back: true,
        }
    }

    /// The store's create-only writes are proven honoured (`RemoteStore::probe_conditional_writes`):
    /// a record whose PUT succeeded is ours, and is not read back (one request per flush).
    pub fn trusting_create_only(mut self, honoured: bool) -> Trail {
        self.read_back = !honoured;
        self
    }

    /// Queues `event` for the next flush.
    pub fn record(&self, event: Event) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.events.len() >= PENDING_EVENTS_MAX {
            let lost = pending.events.pop_front().expect("the queue is full");
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(action = %lost.action, topic = ?lost.topic, time_ms = lost.time_ms, "the audit queue is full (the bucket has refused audit records for long): the oldest event is dropped");
        }
        pending.events.push_back(event);
    }

    /// How many events wait to be written (a metric), the record in flight's included.
    pub fn pending_len(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.in_flight.as_ref().map_or(0, |f| f.events.len()) + pending.events.len()
    }

    /// Events waiting to be written, oldest first (to keep them across a restart): the
    /// record in flight's first. (After a restart they go in a new record: if the one in
    /// flight had landed, they are then in the trail twice, both records naming the writer.)
    pub fn pending(&self) -> Vec<Event> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let in_flight = pending.in_flight.iter().flat_map(|f| f.events.iter());
        in_flight.chain(pending.events.iter()).cloned().collect()
    }

    /// PUTs the record in flight again, unchanged. Returns how many events it wrote. When
    /// another writer holds its number, its events go back to the front of the queue for a
    /// record after the newest; on an error it stays in flight.
    async fn settle_in_flight(&self, tail: &mut (Option<Tail>, u64)) -> Result<usize> {
        let in_flight = self.pending.lock().unwrap_or_else(|p| p.into_inner()).in_flight.clone();
        let Some(record) = in_flight else { return Ok(0) };
        let ours = put_and_confirm(&self.store, record.seq, &record.bytes, self.read_back).await?;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.in_flight = None;
        if ours {
            tail.0 = Some(Tail { seq: record.seq, sha256: crate::sha256_hex(&record.bytes) });
            tail.1 = record.seq;
            return Ok(record.events.len());
        }
        tracing::debug!(
            seq = record.seq,
            "another writer took the number of the audit record in flight; its events go in a later record"
        );
        for event in record.events.into_iter().rev() {
            pending.events.push_front(event);
        }
        (tail.0, tail.1) = (None, record.seq);
        Ok(0)
    }

    /// Writes every queued event, [`EVENTS_PER_RECORD_MAX`] per record. Returns how many were
    /// written; on an error the rest stay queued, in order, for the next flush.
    pub async fn flush(&self, now_ms: i64) -> Result<usize> {
        let mut tail = self.tail.lock().await;
        let mut written = self.settle_in_flight(&mut tail).await?;
        loop {
            let batch: Vec<Event> = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let n = pending.events.len().min(EVENTS_PER_RECORD_MAX);
                pending.events.drain(..n).collect()
            };
            if batch.is_empty() {
                return Ok(written);
            }
            let count = batch.len();
            let (known, hint) = &mut *tail;
            let events = batch.clone();
            let mut attempt = None;
            let result = write(
                &self.store,
                known,
                &mut attempt,
                *hint,
                &self.writer,
                now_ms,
                events,
                self.attempts,
                self.read_back,
            )
            .await;
            match result {
                Ok(seq) => {
                    *hint = seq;
                    written += count;
                }
                Err(e) => {
                    let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                    match attempt {
                        // It may have landed: PUT again as it is, never rebuilt under a new number.
                        Some(record) => pending.in_flight = Some(record),
                        None => {
                            for event in batch.into_iter().rev() {
                                pending.events.push_front(event);
                            }
                        }
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// One record as read by [`read_all`]: its key and number, its bytes' SHA-256, and the record
/// or why it cannot be read.
#[derive(Debug)]
pub struct Stored {
    pub key: String,
    pub seq: u64,
    pub sha256: String,
    pub record: Result<Record>,
}

/// The record number of the object at `location`, only if it is exactly where that record
/// lives: `<prefix>/audit/` and twenty ASCII digits (not `+…`, not in a subfolder, which a
/// recursive LIST also returns). Anything else is not a record, whatever it holds.
fn record_number(store: &RemoteStore, location: &Path) -> Option<u64> {
    let digits = location.filename()?.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = digits.parse::<u64>().ok().filter(|seq| *seq > 0)?;
    (*location == key(store, seq)).then_some(seq)
}

/// Every record of the series, in number order (one LIST, then GETs `READ_CONCURRENCY` at a
/// time). Other objects under `audit/` (any name but a record's key) are returned with seq 0
/// and an error: [`check_chain`] reports them as `audit_stray`.
pub async fn read_all(store: &RemoteStore) -> Result<Vec<Stored>> {
    let folder = store.key(&[FOLDER]);
    let listed: Vec<object_store::ObjectMeta> =
        store.store.list(Some(&folder)).try_collect().await.map_err(|e| store.error(format!("LIST {folder}/"), e))?;
    let mut numbered: Vec<(u64, object_store::ObjectMeta)> = Vec::with_capacity(listed.len());
    let mut foreign = Vec::new();
    for meta in listed {
        match record_number(store, &meta.location) {
            Some(seq) => numbered.push((seq, meta)),
            None => foreign.push(meta.location.to_string()),
        }
    }
    numbered.sort_by_key(|(seq, _)| *seq);
    let mut stored: Vec<Stored> = futures::stream::iter(numbered)
        .map(|(seq, meta)| async move {
            let key = meta.location.to_string();
            if meta.size > RECORD_BYTES_MAX {
                let reason = format!("{} bytes: larger than any audit record is", meta.size);
                return Ok(Stored {
                    key: key.clone(),
                    seq,
                    sha256: String::new(),
                    record: Err(Error::Corrupt { key, reason }),
                });
            }
            let bytes = get_record_bytes(store, &meta.location).await?;
            let record = from_bytes(&bytes, &key, seq);
            Ok::<_, Error>(Stored { key, seq, sha256: crate::sha256_hex(&bytes), record })
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    for key in foreign {
        let reason = "not an audit record's key (<prefix>/audit/<seq:020>.json)".to_string();
        stored.push(Stored {
            key: key.clone(),
            seq: 0,
            sha256: String::new(),
            record: Err(Error::Corrupt { key, reason }),
        });
    }
    Ok(stored)
}

/// A break in the audit trail, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `audit_missing` (a number with no record), `audit_corrupt` (unreadable, altered, or
    /// under another number), `audit_chain_broken` (does not name the record before it),
    /// `audit_duplicate` (a second item for a number already seen), `audit_stray` (an object
    /// under `audit/` that is not at a record's key: it is not read as a record).
    pub kind: &'static str,
    pub key: String,
    pub seq: u64,
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub records: u64,
    pub events: u64,
    pub last_seq: u64,
    pub problems: Vec<Problem>,
}

/// Checks the chain of `stored` (as [`read_all`] returns it): every number from 1 to the
/// newest present, each record readable with its checksum, each naming the SHA-256 of the
/// record before it. A removed record at the very end is not detectable from the bucket alone.
pub fn check_chain(store: &RemoteStore, stored: &[Stored]) -> Summary {
    let mut summary = Summary::default();
    let mut expected_prev: Option<String> = Some(GENESIS_HASH.to_string());
    let mut next_seq = 1;
    for item in stored {
        if item.seq == 0 {
            let detail = item.record.as_ref().err().map(ToString::to_string).unwrap_or_default();
            summary.problems.push(Problem { kind: "audit_stray", key: item.key.clone(), seq: 0, detail });
            continue;
        }
        if item.seq < next_seq {
            // Never one chain link for two objects: the first stays, the second is named.
            let detail = format!("a second object for record {} (records must be in number order, once)", item.seq);
            summary.problems.push(Problem { kind: "audit_duplicate", key: item.key.clone(), seq: item.seq, detail });
            continue;
        }
        if item.seq > next_seq {
            let gap = if item.seq - next_seq == 1 {
                format!("record {next_seq} is missing")
            } else {
                format!("records {next_seq}..={} are missing", item.seq - 1)
            };
            let key = key(store, next_seq).to_string();
            summary.problems.push(Problem { kind: "audit_missing", key, seq: next_seq, detail: gap });
            expected_prev = None; // the link over a gap cannot be checked
        }
        next_seq = item.seq + 1;
        summary.records += 1;
        summary.last_seq = item.seq;
        match &item.record {
            Err(e) => {
                let detail = e.to_string();
                summary.problems.push(Problem { kind: "audit_corrupt", key: item.key.clone(), seq: item.seq, detail });
            }
            Ok(record) => {
                summary.events += record.events.len() as u64;
                if let Some(prev) = &expected_prev
                    && *prev != record.prev_sha256
                {
                    let detail = format!(
                        "names {} as the SHA-256 of record {}, which is {prev}: a record before it was altered, replaced or removed",
                        record.prev_sha256,
                        item.seq - 1
                    );
                    summary.problems.push(Problem {
                        kind: "audit_chain_broken",
                        key: item.key.clone(),
                        seq: item.seq,
                        detail,
                    });
                }
            }
        }
        expected_prev = Some(item.sha256.clone());
    }
    summary
}

/// Reads and checks the whole audit trail of `store`.
pub async fn verify(store: &RemoteStore) -> Result<Summary> {
    Ok(check_chain(store, &read_all(store).await?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::ObjectStoreExt;
    use serde_json::json;

    use super::*;
    use crate::manifest::tests_support::memory_store;

    fn event(n: i64) -> Event {
        Event::new(n, "alice@host", action::HOLD_SET).topic("payments").reason(&format!("case {n}"))
    }

    async fn events(store: &RemoteStore) -> Vec<Event> {
        let stored = read_all(store).await.unwrap();
        stored.into_iter().flat_map(|s| s.record.unwrap().events).collect()
    }

    #[tokio::test]
    async fn appended_records_chain_and_verify() {
        let store = memory_store();
        assert_eq!(verify(&store).await.unwrap(), Summary::default());
        assert_eq!(append(&store, "w", 1, vec![event(1)]).await.unwrap(), 1);
        assert_eq!(append(&store, "w", 2, vec![event(2), event(3)]).await.unwrap(), 2);
        let stored = read_all(&store).await.unwrap();
        let second = stored[1].record.as_ref().unwrap();
        assert_eq!(stored[0].record.as_ref().unwrap().prev_sha256, GENESIS_HASH);
        assert_eq!(second.prev_sha256, stored[0].sha256);
        let summary = verify(&store).await.unwrap();
        assert_eq!((summary.records, summary.events, summary.last_seq), (2, 3, 2));
        assert!(summary.problems.is_empty(), "{:?}", summary.problems);
        assert_eq!(events(&store).await, [event(1), event(2), event(3)]);
    }

    /// Writers that race for the same number (each believing record 1 is the tail) never
    /// overwrite each other: every event is recorded once, and the chain holds.
    #[tokio::test]
    async fn concurrent_writers_racing_for_one_number_lose_nothing() {
        let store = memory_store();
        append(&store, "w", 1, vec![event(0)]).await.unwrap();
        let writers = (1..=8).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut stale = Some(tail(&store, 1).await.unwrap());
                write(&store, &mut stale, &mut None, 1, &format!("w{n}"), n, vec![event(n)], 3, n % 2 == 0)
                    .await
                    .unwrap()
            })
        });
        let mut seqs: Vec<u64> = futures::future::join_all(writers).await.into_iter().map(|r| r.unwrap()).collect();
        seqs.sort();
        assert_eq!(seqs, (2..=9).collect::<Vec<u64>>());
        let mut times: Vec<i64> = events(&store).await.iter().map(|e| e.time_ms).collect();
        times.sort();
        assert_eq!(times, (0..=8).collect::<Vec<i64>>());
        assert!(verify(&store).await.unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn a_gap_a_forged_record_and_a_reordering_are_named() {
        let store = memory_store();
        for n in 1..=6 {
            append(&store, "w", n, vec![event(n)]).await.unwrap();
        }
        // Forged: record 2's event rewritten with a fresh, consistent body checksum.
        let bytes = manifest::get_bytes(&store, &key(&store, 2)).await.unwrap();
        let mut forged = from_bytes(&bytes, "k", 2).unwrap();
        forged.events[0].reason = Some("nothing to see".into());
        store.store.put(&key(&store, 2), to_bytes(&forged).into()).await.unwrap();
        // Removed: record 4.
        store.store.delete(&key(&store, 4)).await.unwrap();
        let summary = verify(&store).await.unwrap();
        let found: Vec<(&str, u64)> = summary.problems.iter().map(|p| (p.kind, p.seq)).collect();
        assert_eq!(found, [("audit_chain_broken", 3), ("audit_missing", 4)], "{:?}", summary.problems);
        assert!(summary.problems[0].key.ends_with("00000000000000000003.json"));
        // Reordered: records 5 and 6 swapped.
        let five = manifest::get_bytes(&store, &key(&store, 5)).await.unwrap();
        let six = manifest::get_bytes(&store, &key(&store, 6)).await.unwrap();
        store.store.put(&key(&store, 5), six.into()).await.unwrap();
        store.store.put(&key(&store, 6), five.into()).await.unwrap();
        let summary = verify(&store).await.unwrap();
        let corrupt: Vec<u64> = summary.problems.iter().filter(|p| p.kind == "audit_corrupt").map(|p| p.seq).collect();
        assert_eq!(corrupt, [5, 6], "{:?}", summary.problems);
        assert!(summary.problems.iter().any(|p| p.detail.contains("holds record 6")));
    }

    /// A store that fails every audit PUT: recording never fails, flushing reports the error
    /// and keeps the events, and the next flush writes them all, in order, in one record.
    #[tokio::test]
    async fn a_failed_flush_keeps_the_events_for_the_next() {
        let inner = memory_store();
        let faulty = Arc::new(crate::fault::FaultStore::new(inner.store.clone()));
        let store = RemoteStore { store: faulty.clone(), ..inner.clone() };
        let trail = Trail::new(store.clone(), "w", 2);
        *faulty.faults.fail_puts_matching.lock().unwrap() = Some("audit/".into());
        trail.record(event(1));
        trail.record(event(2));
        assert!(trail.flush(10).await.is_err());
        assert_eq!(trail.pending(), [event(1), event(2)]);
        *faulty.faults.fail_puts_matching.lock().unwrap() = None;
        trail.record(event(3));
        assert_eq!(trail.flush(11).await.unwrap(), 3);
        assert!(trail.pending().is_empty());
        assert_eq!(events(&store).await, [event(1), event(2), event(3)]);
        assert_eq!(trail.flush(12).await.unwrap(), 0, "nothing queued: no request");
    }

    /// The tiering driver's steady state: the tail is cached, so a flush costs one PUT and
    /// the read-back GET (only the PUT where create-only writes are proven), no HEAD probe and
    /// no LIST, however long the trail is.
    #[tokio::test]
    async fn a_flush_after_the_first_costs_one_put_and_one_get() {
        let inner = memory_store();
        for n in 1..=40 {
            append(&inner, "other", n, vec![event(n)]).await.unwrap();
        }
        let faulty = Arc::new(crate::fault::FaultStore::new(inner.store.clone()));
        let store = RemoteStore { store: faulty.clone(), ..inner.clone() };
        let trail = Trail::new(store, "w", 3);
        trail.record(event(41));
        trail.flush(41).await.unwrap();
        let first = faulty.counters.snapshot();
        assert_eq!(first[3], 0, "no LIST to find the tail");
        for n in 42..=44 {
            trail.record(event(n));
            trail.flush(n).await.unwrap();
        }
        let [puts, gets, heads, lists, deletes] = faulty.counters.snapshot();
        assert_eq!([puts, gets, heads, lists, deletes], [first[0] + 3, first[1] + 3, first[2], 0, 0]);
        // Where the probe proved create-only writes honoured, not even the read-back GET.
        let store = RemoteStore { store: faulty.clone(), ..inner.clone() };
        let trusting = Trail::new(store, "w2", 3).trusting_create_only(true);
        trusting.record(event(45));
        trusting.flush(45).await.unwrap();
        let first = faulty.counters.snapshot();
        trusting.record(event(46));
        trusting.flush(46).await.unwrap();
        let [puts, gets, heads, lists, _] = faulty.counters.snapshot();
        assert_eq!([puts, gets, heads, lists], [first[0] + 1, first[1], first[2], 0]);
        assert!(verify(&inner).await.unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn a_put_that_landed_but_reported_failure_is_not_written_twice() {
        let inner = memory_store();
        let faulty = Arc::new(crate::fault::FaultStore::new(inner.store.clone()));
        let store = RemoteStore { store: faulty.clone(), ..inner.clone() };
        faulty.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(append(&store, "w", 1, vec![event(1)]).await.unwrap(), 1);
        assert_eq!(events(&store).await, [event(1)]);
    }

    /// rev-audit: a flush whose last attempt landed in the bucket but reported a failure
    /// (a timeout after the store kept the object) gives the events back to the queue and
    /// forgets the tail; the next flush finds the landed record as the tail and writes the same
    /// events again as the record after it. The trail then says the same commit, hold or
    /// expiry happened twice. (The within-flush retry recognises a landed attempt; the last
    /// attempt's does not.)
    #[tokio::test]
    async fn rev_audit_a_last_attempt_that_landed_is_not_written_again_by_the_next_flush() {
        let inner = memory_store();
        let faulty = Arc::new(crate::fault::FaultStore::new(inner.store.clone()));
        let store = RemoteStore { store: faulty.clone(), ..inner.clone() };
        // One attempt per flush (tiering.upload_attempts = 1), or every attempt timing out.
        let trail = Trail::new(store.clone(), "w", 1);
        trail.record(event(1));
        faulty.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        assert!(trail.flush(10).await.is_err(), "the PUT reported a timeout");
        trail.flush(11).await.unwrap();
        assert_eq!(events(&store).await, [event(1)], "the hold/commit is recorded once, not twice");
    }

    /// rev-audit: `read_all` takes any object under `audit/` whose *last path segment* parses
    /// as a number for a record: `audit/x/<seq>.json` (S3 LIST is recursive) or a name with a
    /// leading `+` (`u64::from_str` accepts it). Two items with the same number are never
    /// reported by `check_chain` (only `seq > next_seq` is checked), so a hostile object that
    /// names the tail's hash is accepted by `verify` with no problem, and `tierlog audit`
    /// prints its events as record N.
    #[tokio::test]
    async fn rev_audit_a_second_object_for_one_number_is_reported() {
        let store = memory_store();
        for n in 1..=2 {
            append(&store, "w", n, vec![event(n)]).await.unwrap();
        }
        let tail = tail(&store, 2).await.unwrap();
        let forged = Record {
            seq: 2,
            prev_sha256: tail.sha256.clone(),
            written_ms: 3,
            writer: "w".into(),
            events: vec![Event::new(3, "alice@host", action::HOLD_RELEASE).topic("payments").reason("forged")],
        };
        // A nested key (S3 LIST is recursive; `filename()` is its last segment). (A top-level
        // `+0000000000000000002.json` is parsed as 2 too; it lists before the real record, so
        // there the real record 2 is blamed as `audit_chain_broken` and the forgery passes.)
        for name in ["cluster/audit/x/00000000000000000002.json"] {
            let path = Path::from(name);
            store.store.put(&path, to_bytes(&forged).into()).await.unwrap();
            let summary = verify(&store).await.unwrap();
            assert!(
                !summary.problems.is_empty(),
                "{name}: a second object numbered 2 passes verify ({} records, {} events, last_seq {})",
                summary.records,
                summary.events,
                summary.last_seq
            );
            store.store.delete(&path).await.unwrap();
        }
    }

    /// Only the object at a record's exact key is a record: a `+`-signed name or one in a
    /// subfolder (a recursive LIST returns both) is reported as stray and never read, so it
    /// cannot stand in for the real record of its number.
    #[tokio::test]
    async fn given_objects_beside_the_records_when_verifying_should_report_them_as_stray() {
        let store = memory_store();
        for n in 1..=2 {
            append(&store, "w", n, vec![event(n)]).await.unwrap();
        }
        let record_two = manifest::get_bytes(&store, &key(&store, 2)).await.unwrap();
        for name in ["cluster/audit/+0000000000000000002.json", "cluster/audit/x/00000000000000000002.json"] {
            store.store.put(&Path::from(name), record_two.clone().into()).await.unwrap();
        }
        let summary = verify(&store).await.unwrap();
        let found: Vec<(&str, &str)> = summary.problems.iter().map(|p| (p.kind, p.key.as_str())).collect();
        assert_eq!(
            found,
            [
                ("audit_stray", "cluster/audit/+0000000000000000002.json"),
                ("audit_stray", "cluster/audit/x/00000000000000000002.json")
            ]
        );
        assert_eq!((summary.records, summary.events, summary.last_seq), (2, 2, 2), "the real records still count");
    }

    /// A second item for a number already seen (as a caller of `check_chain` may pass) is
    /// named, never taken as the chain's next link.
    #[tokio::test]
    async fn given_two_items_for_one_number_when_checking_the_chain_should_report_a_duplicate() {
        let store = memory_store();
        for n in 1..=2 {
            append(&store, "w", n, vec![event(n)]).await.unwrap();
        }
        let mut stored = read_all(&store).await.unwrap();
        let second = &stored[1];
        let copy = Stored {
            key: "cluster/audit/copy".into(),
            seq: 2,
            sha256: second.sha256.clone(),
            record: Ok(second.record.as_ref().unwrap().clone()),
        };
        stored.push(copy);
        let summary = check_chain(&store, &stored);
        let found: Vec<(&str, u64)> = summary.problems.iter().map(|p| (p.kind, p.seq)).collect();
        assert_eq!(found, [("audit_duplicate", 2)]);
        assert_eq!(summary.records, 2);
    }

    /// A record object over `RECORD_BYTES_MAX` is refused before its body is read, naming its
    /// key: by a writer looking for the tail as by `verify`.
    #[tokio::test]
    async fn given_an_oversized_record_object_when_reading_should_refuse_it_naming_the_key() {
        let store = memory_store();
        append(&store, "w", 1, vec![event(1)]).await.unwrap();
        let huge = vec![b' '; RECORD_BYTES_MAX as usize + 1];
        store.store.put(&key(&store, 2), huge.into()).await.unwrap();
        let e = tail(&store, 1).await.unwrap_err().to_string();
        assert!(e.contains("00000000000000000002.json") && e.contains("larger than any audit record"), "{e}");
        let summary = verify(&store).await.unwrap();
        assert_eq!(summary.problems.iter().map(|p| (p.kind, p.seq)).collect::<Vec<_>>(), [("audit_corrupt", 2)]);
    }

    #[test]
    fn audit_record_golden_bytes() {
        let record = Record {
            seq: 1,
            prev_sha256: GENESIS_HASH.into(),
            written_ms: 1_700_000_000_000,
            writer: "w1".into(),
            events: vec![
                Event::new(1_700_000_000_000, "alice@host", action::SEGMENT_COMMIT)
                    .partition("payments", 2)
                    .offsets(100, 199)
                    .after(json!({"manifest_version": 7})),
            ],
        };
        let body = format!(
            r#"{{"seq":1,"prev_sha256":"{GENESIS_HASH}","written_ms":1700000000000,"writer":"w1","events":[{{"time_ms":1700000000000,"actor":"alice@host","action":"segment_commit","topic":"payments","partition":2,"first_offset":100,"last_offset":199,"after":{{"manifest_version":7}}}}]}}"#
        );
        let golden = format!(
            "{{\"format\":\"tierlog-audit\",\"format_version\":1,\"body_sha256\":\"{}\"}}\n{body}\n",
            crate::sha256_hex(body.as_bytes())
        );
        assert_eq!(String::from_utf8(to_bytes(&record)).unwrap(), golden);
        assert_eq!(from_bytes(golden.as_bytes(), "k", 1).unwrap(), record);
        let altered = golden.replace("\"last_offset\":199", "\"last_offset\":198");
        assert!(from_bytes(altered.as_bytes(), "k", 1).unwrap_err().to_string().contains("SHA-256"));
        assert!(from_bytes(golden.as_bytes(), "k", 2).unwrap_err().to_string().contains("holds record 1"));
    }
}
