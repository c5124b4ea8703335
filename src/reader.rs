//! The unified reader: one read path over both tiers, used by `consume`, `offsets`, the demo
//! (and the HTTP server). A caller asks for an offset or a time and gets records, whichever
//! tier holds them.
//!
//! Offsets at or above the local start are read from local segments. Below it (the local copy
//! was deleted after tiering, possibly while the reader was inside it) the reader asks the
//! remote tier for the one chunk holding the offset, checks every batch's CRC and decodes it.
//! Time lookups consult the remote tier only when part of the log is remote-only, and then
//! read one chunk at most: no scan of cold data.
//!
//! The remote tier is connected lazily, on the first read below the local start, so local
//! reads keep working when the object store is down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tierlog_tiering::blocking;
use tierlog_tiering::manifest::Expired;
use tierlog_tiering::remote_reader::{ReaderSettings, RemoteChunk, RemoteReader};
use tokio::sync::OnceCell;

use crate::batch;
use crate::error::{Error, Result};
use crate::partition::{Chunk, Partition};
use crate::record::StoredRecord;
use crate::{Log, tier};

pub struct Reader {
    log: Log,
    remote: OnceCell<Arc<RemoteReader>>,
}

impl Reader {
    pub fn new(log: Log) -> Reader {
        Reader { log, remote: OnceCell::new() }
    }

    /// A reader over an already built remote reader (tests count its requests).
    pub fn with_remote(log: Log, remote: Arc<RemoteReader>) -> Reader {
        Reader { log, remote: OnceCell::new_with(Some(remote)) }
    }

    /// Remote read counters, once the remote tier has been used.
    pub fn remote_stats(&self) -> Option<Arc<tierlog_tiering::remote_reader::ReadStats>> {
        self.remote.get().map(|r| r.stats.clone())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    async fn remote(&self) -> Result<&Arc<RemoteReader>> {
        self.remote
            .get_or_try_init(|| async {
                let config = self.log.config();
                let store = tier::connect(config).await?;
                // The writer's last committed manifest version, from its local state.
                let data_dir = config.data_dir.clone();
                let disk = self.log.host().disk.clone();
                let hints: tierlog_tiering::remote_reader::VersionHints = Box::new(move |topic, partition| {
                    let dir = crate::topic::topic_dir(&data_dir, topic).join(partition.to_string());
                    tier::read_partition_state_in(&*disk, &dir).manifest_version
                });
                let settings = settings_with_keys(config)?;
                Ok::<_, Error>(RemoteReader::with_check(store, settings, Some(hints), Some(Arc::new(check_chunk))))
            })
            .await
    }

    fn remote_enabled(&self) -> bool {
        self.log.config().tiering.enabled
    }

    /// First available offset: the remote tier's start when part of the log is remote-only.
    pub async fn start_offset(&self, partition: &Partition) -> Result<u64> {
        let local = partition.start_offset();
        if local == 0 || !self.remote_enabled() {
            return Ok(local);
        }
        let remote = self.remote().await?;
        remote.catch_up_with_expiry(&partition.topic, partition.id, partition.expired_before()).await?;
        let manifest = remote.manifest(&partition.topic, partition.id).await?;
        Ok(manifest.start_offset().map_or(local, |remote| remote.min(local)))
    }

    /// Records from `offset` on, from whichever tier holds them: about `max_bytes` locally,
    /// one chunk remotely. Empty at the end of the log.
    pub async fn read(&self, partition: &Arc<Partition>, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        match self.read_batches(partition, offset, max_bytes).await? {
            Some(batches) => batches.records_from(offset),
            None => Ok(Vec::new()),
        }
    }

    /// Whole stored batches from the one holding `offset` on, as the log stores them, from
    /// whichever tier holds them: about `max_bytes` (at least one batch) locally, the rest of
    /// one chunk remotely. Every batch passed its CRC and continues the offsets of the one
    /// before it. `None` at the end of the log.
    pub async fn read_batches(
        &self,
        partition: &Arc<Partition>,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Option<Batches>> {
        if offset >= partition.start_offset() {
            match self.read_local(partition, offset, max_bytes).await {
                Err(Error::OffsetBelowStart { .. }) => {} // deleted by retention meanwhile: remote
                other => return other,
            }
        }
        if !self.remote_enabled() {
            return Err(below_start(partition, offset, partition.start_offset(), None));
        }
        let remote = self.remote().await?;
        remote.catch_up_with_expiry(&partition.topic, partition.id, partition.expired_before()).await?;
        match remote.read_at(&partition.topic, partition.id, offset).await? {
            Some(chunk) => {
                let mut batches = Batches::of_chunk(&chunk, offset)?;
                if self.log.is_pinned() {
                    // A restore to a point ends inside what the bucket holds: never past it.
                    batches.end_before(partition.end_offset());
                }
                Ok(Some(batches))
            }
            None => {
                // Not remote: maybe a read-only view is behind the writer's local segments.
                partition.refresh()?;
                if offset >= partition.start_offset() {
                    return self.read_local(partition, offset, max_bytes).await;
                }
                let manifest = remote.manifest(&partition.topic, partition.id).await?;
                let start = manifest.start_offset().unwrap_or(partition.start_offset());
                Err(below_start(partition, offset, start, manifest.expired.as_ref()))
            }
        }
    }

    async fn read_local(&self, partition: &Arc<Partition>, offset: u64, max_bytes: usize) -> Result<Option<Batches>> {
        let local = partition.clone();
        let chunk = blocking::run(move || local.read_chunk(offset, max_bytes, Vec::new())).await?;
        Ok(chunk.map(|chunk| Batches::of_local(chunk, offset)))
    }

    /// First offset whose timestamp is ≥ `time` (running max, Kafka ListOffsets semantics),
    /// across both tiers; the end offset when no record is that recent.
    pub async fn offset_for_time(&self, partition: &Arc<Partition>, time: i64) -> Result<u64> {
        if partition.start_offset() > 0 && self.remote_enabled() {
            let remote = self.remote().await?;
            remote.catch_up_with_expiry(&partition.topic, partition.id, partition.expired_before()).await?;
            let local_start = partition.start_offset();
            if let Some(chunk) = remote.read_for_time(&partition.topic, partition.id, time, local_start).await? {
                let records = Batches::of_chunk(&chunk, chunk.first_offset)?.records_from(chunk.first_offset)?;
                let hit = records.iter().find(|r| r.record.timestamp >= time);
                // A hit past the log's end (a restore to a point) is no hit: the end is the answer.
                return hit.map(|r| self.within_end(partition, r.offset)).ok_or_else(|| {
                    Error::Remote(tierlog_tiering::Error::Corrupt {
                        key: chunk.key.clone(),
                        reason: format!("chunk {} promised a record ≥ {time}", chunk.chunk),
                    })
                });
            }
        }
        let local = partition.clone();
        blocking::run(move || local.offset_for_time(time)).await
    }
}

impl Reader {
    /// The as-of cut of `partition` at `time`: the first offset appended after `time`, across
    /// both tiers, so the records below it are exactly those the log had appended at or before
    /// `time` (the end offset when every record was). Costs what a time lookup costs: with the
    /// manifest loaded, at most the chunk index and one chunk of the remote tier. Refused with
    /// [`Error::AppendTimeUnknown`] when the answer depends on records written before append
    /// times were recorded.
    pub async fn offset_as_of(&self, partition: &Arc<Partition>, time: i64) -> Result<u64> {
        let local_start = partition.start_offset();
        if local_start > 0
            && self.remote_enabled()
            && let Some(offset) = self.first_remote_appended_after(partition, time, local_start).await?
        {
            // Past the end of a restore to a point: everything it holds was known by then.
            return Ok(self.within_end(partition, offset));
        }
        if self.log.is_live_replica() {
            return Err(self.not_known_yet(partition, time).await);
        }
        let local = partition.clone();
        let cut = blocking::run(move || local.offset_as_of(time)).await?;
        let previous_unstamped = match cut.previous_unstamped {
            Some(previous) => Some(previous),
            None if cut.offset > 0 && self.remote_enabled() => {
                let remote = self.remote().await?;
                let before = remote.max_append_time_before(&partition.topic, partition.id, cut.offset).await?;
                before.map(|t| t == tierlog_tiering::segment_object::NO_APPEND_TIME)
            }
            None => None,
        };
        if previous_unstamped == Some(true) {
            return Err(Error::AppendTimeUnknown {
                topic: partition.topic.clone(),
                partition: partition.id,
                time: crate::time::format_time(time),
                offset: cut.offset,
            });
        }
        Ok(cut.offset)
    }
}

impl Reader {
    /// A live replica asked for the as-of cut at a time no batch in the bucket was appended
    /// after: it holds what the writer has tiered, so records the writer appended by then but
    /// has not tiered yet would be left out, and the answer would change once they arrive.
    async fn not_known_yet(&self, partition: &Partition, time: i64) -> Error {
        let newest = match self.remote().await {
            Ok(remote) => remote.manifest(&partition.topic, partition.id).await.ok().map(|m| m.max_append_time()),
            Err(_) => None,
        };
        let holds = match newest.filter(|t| *t != tierlog_tiering::segment_object::NO_APPEND_TIME) {
            Some(newest) => format!(
                "its newest batch was appended at {}; ask for a time before that",
                crate::time::format_time(newest)
            ),
            None => "it holds no batch with an append time yet".to_string(),
        };
        Error::Invalid(format!(
            "{}/{}: what the log had at {} cannot be told by a replica: it holds what the writer has tiered, and \
             the writer may have appended more by then that it has not tiered yet; {holds}, or ask the writer",
            partition.topic,
            partition.id,
            crate::time::format_time(time)
        ))
    }
}

impl Reader {
    /// The first offset of the bucket's copy of `partition` appended after `time`, below
    /// `upto` (the manifest is refreshed when it ends before); `None` when every batch there
    /// was appended at or before `time`. Refused with [`Error::AppendTimeUnknown`] when the
    /// answer depends on records written before append times were recorded.
    pub async fn first_remote_appended_after(
        &self,
        partition: &Partition,
        time: i64,
        upto: u64,
    ) -> Result<Option<u64>> {
        let remote = self.remote().await?;
        remote.catch_up_with_expiry(&partition.topic, partition.id, partition.expired_before()).await?;
        let manifest = remote.manifest(&partition.topic, partition.id).await?;
        if let Some(x) = manifest.expired.as_ref().filter(|x| x.max_append_time.is_some_and(|m| m > time)) {
            // Batches appended after `time` were expired: what was known then is gone.
            return Err(Error::Expired {
                topic: partition.topic.clone(),
                partition: partition.id,
                asked: format!("what was known at {}", crate::time::format_time(time)),
                start: x.before_offset,
                why: expired_why(x),
            });
        }
        let Some((chunk, before)) = remote.read_for_append_time(&partition.topic, partition.id, time, upto).await?
        else {
            return Ok(None);
        };
        let batches = Batches::of_chunk(&chunk, chunk.first_offset)?;
        let mut previous = before;
        let found = batch::first_appended_after(&batches.bytes, time, &mut previous)
            .map_err(|(at, e)| batches.corrupt(at, e))?;
        match found {
            Some((offset, Some(true))) => Err(Error::AppendTimeUnknown {
                topic: partition.topic.clone(),
                partition: partition.id,
                time: crate::time::format_time(time),
                offset,
            }),
            Some((offset, _)) => Ok(Some(offset)),
            None => Err(Error::Remote(tierlog_tiering::Error::Corrupt {
                key: chunk.key.clone(),
                reason: format!("chunk {} promised a batch appended after {time}", chunk.chunk),
            })),
        }
    }

    /// A restore to a point ends inside what the bucket holds: nothing at or past its end
    /// exists there. Elsewhere `offset` stands (a read-only view's end may lag the writer's).
    fn within_end(&self, partition: &Partition, offset: u64) -> u64 {
        if self.log.is_pinned() { offset.min(partition.end_offset()) } else { offset }
    }
}

/// Refuses an as-of instant in the future (after `now_ms`): what the log will have received
/// by then is not decided yet, so the answer would change as appends arrive.
pub fn check_as_of(time: i64, now_ms: i64) -> Result<()> {
    if time > now_ms {
        return Err(Error::Invalid(format!(
            "as of {} is in the future (it is {} now): what the log will have received by then is not known yet; \
             ask for a time up to now",
            crate::time::format_time(time),
            crate::time::format_time(now_ms)
        )));
    }
    Ok(())
}

/// The as-of cut at `time` of every partition of `topics` (every topic when empty), as JSON
/// objects `{"topic","partition","as_of","end","start"}`: `end` is the cut (records below it
/// were appended at or before `time`), `start` the first offset still held. Topics are sorted
/// by name. One writer stamps every batch of every partition from one clock, so the cut is
/// consistent across partitions and topics.
pub async fn snapshot(reader: &Reader, topics: &[String], time: i64) -> Result<Vec<serde_json::Value>> {
    let log = reader.log();
    let mut names: Vec<String> =
        if topics.is_empty() { log.topics().iter().map(|t| t.name().to_string()).collect() } else { topics.to_vec() };
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let topic = log.topic(&name)?;
        for p in &topic.partitions {
            let end = reader.offset_as_of(p, time).await?;
            let start = reader.start_offset(p).await?;
            out.push(serde_json::json!({
                "topic": name,
                "partition": p.id,
                "as_of": crate::time::format_time(time),
                "start": start.min(end),
                "end": end,
            }));
        }
    }
    Ok(out)
}

/// Every batch of a chunk passes its CRC, the first starts at `first_offset` and each one
/// continues the one before it; else the byte where it fails and why.
fn validate_chunk(bytes: &[u8], first_offset: u64) -> std::result::Result<(), (usize, batch::BatchError)> {
    let (mut expected, mut at) = (first_offset, 0);
    while at < bytes.len() {
        let header = batch::validate(&bytes[at..])
            .and_then(|header| header.expect_base(expected).map(|()| header))
            .map_err(|e| (at, e))?;
        expected = header.next_offset();
        at += header.length;
    }
    Ok(())
}

/// The remote reader's [`tierlog_tiering::remote_reader::ChunkCheck`]: [`validate_chunk`],
/// run once per chunk load, before the chunk is cached.
fn check_chunk(bytes: &[u8], first_offset: u64) -> std::result::Result<(), String> {
    validate_chunk(bytes, first_offset).map_err(|(at, e)| format!("byte {at}: {e}"))
}

/// The reader settings of `config`, without a keyring (objects in clear only): see
/// [`settings_with_keys`].
pub fn settings(config: &crate::config::Config) -> ReaderSettings {
    ReaderSettings {
        cache_bytes: config.reader.cache_bytes,
        prefetch_bytes: config.reader.prefetch_bytes,
        concurrency: config.reader.concurrency as usize,
        timeout: Duration::from_millis(config.reader.timeout_ms),
        keyring: None,
    }
}

/// The reader settings of `config` with its encryption keyring, if one is configured. A
/// keyring that cannot be loaded is [`Error::Keyring`] (Internal): a reader asking for records
/// did nothing wrong, whatever the configuration error inside says.
pub fn settings_with_keys(config: &crate::config::Config) -> Result<ReaderSettings> {
    let keyring = tier::load_keyring(config).map_err(|e| match e {
        Error::Config(detail) => Error::Keyring(detail),
        other => Error::Keyring(other.to_string()),
    })?;
    Ok(ReaderSettings { keyring, ..settings(config) })
}

/// `offset` is below `start`; `expired` (the manifest's) says when and why retention expired
/// what the bucket held below it.
fn below_start(partition: &Partition, offset: u64, start: u64, expired: Option<&Expired>) -> Error {
    let why = match expired.filter(|x| offset < x.before_offset) {
        Some(x) => expired_why(x),
        None => "older records were removed by retention".to_string(),
    };
    Error::OffsetBelowStart { topic: partition.topic.clone(), partition: partition.id, offset, start, why }
}

/// What retention expired, for an error: the range, the rule and when.
fn expired_why(x: &Expired) -> String {
    format!(
        "records below offset {} were expired by retention ({}), last at {}",
        x.before_offset,
        x.reason,
        crate::time::format_time(x.expired_ms)
    )
}

/// Validated batches read from one tier, starting with the batch that holds the offset
/// asked for (Kafka's fetch returns whole batches too; a client skips the records before its
/// fetch offset).
pub struct Batches {
    pub bytes: Bytes,
    /// Base offset of the first batch.
    pub base_offset: u64,
    origin: Origin,
}

/// Where batches were read, for errors.
enum Origin {
    Local { path: std::path::PathBuf, position: u64 },
    Remote { key: String, chunk: usize },
}

impl Batches {
    fn of_local(chunk: Chunk, offset: u64) -> Batches {
        let origin = Origin::Local { path: chunk.path.clone(), position: chunk.position };
        let bytes = Bytes::from(chunk.into_buffer());
        let mut batches = Batches { base_offset: 0, bytes, origin };
        // read_chunk validated every batch (CRC and dense offsets) and starts at an index entry.
        batches.skip_before(offset).expect("read_chunk returns validated batches");
        batches
    }

    /// A remote chunk's batches from the one holding `offset`, each CRC-checked, the first
    /// starting at the chunk's first offset and every one continuing the one before it.
    /// A chunk the remote reader already checked with [`check_chunk`] (when it entered its
    /// cache) is not checked again: a 1 MiB fetch from a 4 MiB chunk costs its own bytes only.
    fn of_chunk(chunk: &RemoteChunk, offset: u64) -> Result<Batches> {
        let origin = Origin::Remote { key: chunk.key.clone(), chunk: chunk.chunk };
        let mut batches = Batches { bytes: chunk.raw.clone(), base_offset: chunk.first_offset, origin };
        if !chunk.checked {
            validate_chunk(&batches.bytes, chunk.first_offset).map_err(|(at, e)| batches.corrupt(at, e))?;
        }
        batches.skip_before(offset).map_err(|e| batches.corrupt(0, e))?;
        Ok(batches)
    }

    /// Drops the leading batches that end before `offset`, but never the last one.
    fn skip_before(&mut self, offset: u64) -> std::result::Result<(), batch::BatchError> {
        loop {
            let header = batch::peek_frame(&self.bytes)?;
            if header.next_offset() > offset || header.length >= self.bytes.len() {
                self.base_offset = header.base_offset;
                return Ok(());
            }
            self.bytes = self.bytes.slice(header.length..);
            if let Origin::Local { position, .. } = &mut self.origin {
                *position += header.length as u64;
            }
        }
    }

    /// Drops the batches from the first one starting at or after `end` on (a log that ends
    /// inside a remote chunk). The first batch is always kept: it holds the offset asked for.
    fn end_before(&mut self, end: u64) {
        let mut at = 0;
        while at < self.bytes.len() {
            let header = batch::peek_frame(&self.bytes[at..]).expect("batches were validated when read");
            if at > 0 && header.base_offset >= end {
                break;
            }
            at += header.length;
        }
        self.bytes.truncate(at);
    }

    /// Keeps the leading whole batches that fit in `max_bytes`, and at least the first when
    /// `at_least_one`. Returns the offset after the last batch kept (`base_offset` when none).
    pub fn keep_within(&mut self, max_bytes: usize, at_least_one: bool) -> u64 {
        let (mut at, mut next) = (0, self.base_offset);
        while at < self.bytes.len() {
            let header = batch::peek_frame(&self.bytes[at..]).expect("batches were validated when read");
            if at + header.length > max_bytes && !(at == 0 && at_least_one) {
                break;
            }
            at += header.length;
            next = header.next_offset();
        }
        self.bytes.truncate(at);
        next
    }

    /// The records at or after `from`.
    pub fn records_from(&self, from: u64) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < self.bytes.len() {
            let (header, views) = batch::views_of_validated(&self.bytes[at..]).map_err(|e| self.corrupt(at, e))?;
            out.extend(views.iter().filter(|v| v.offset >= from).map(|v| StoredRecord {
                offset: v.offset,
                record: v.to_record(),
                append_time: v.append_time,
            }));
            at += header.length;
        }
        Ok(out)
    }

    /// The batches as Kafka RecordBatch v2 for a topic of `timestamps` type: the stored bytes
    /// themselves when no batch needs a rewrite (no copy; see
    /// [`batch::Frame::needs_rewrite_for_kafka`]), else rewritten per [`batch::to_kafka`] (sizes can
    /// change: limit with [`Self::keep_within`] afterwards).
    pub fn into_kafka(self, timestamps: batch::TimestampType) -> Result<Batches> {
        let mut at = 0;
        while at < self.bytes.len() {
            let header = batch::peek_frame(&self.bytes[at..]).map_err(|e| self.corrupt(at, e))?;
            if header.needs_rewrite_for_kafka(timestamps) {
                break;
            }
            at += header.length;
        }
        if at == self.bytes.len() {
            return Ok(self);
        }
        let mut out = Vec::with_capacity(self.bytes.len() + self.bytes.len() / 8);
        batch::to_kafka(&self.bytes, self.base_offset, timestamps, &mut out).map_err(|e| self.corrupt(0, e))?;
        Ok(Batches { bytes: Bytes::from(out), ..self })
    }

    fn corrupt(&self, at: usize, error: batch::BatchError) -> Error {
        match &self.origin {
            Origin::Local { path, position } => {
                Error::Corrupt { path: path.clone(), position: position + at as u64, error }
            }
            Origin::Remote { key, chunk } => Error::Remote(tierlog_tiering::Error::Corrupt {
                key: key.clone(),
                reason: format!("chunk {chunk} byte {at}: {error}"),
            }),
        }
    }
}
