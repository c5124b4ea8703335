//! The upload pipeline of one partition: sealed segments → build objects (zstd, off the async
//! threads) → bounded parallel uploads with retries → manifest commits in offset order.
//!
//! Crash consistency: objects are uploaded under fresh keys and only become visible when a
//! manifest version listing them is committed, which happens strictly after their PUTs
//! succeeded. A crash anywhere leaves at worst orphan objects (removed by a scrub), never a
//! manifest that lists a missing object. The manifest commits a contiguous run of offsets
//! only: when segment k fails, segments after k wait for the next run even if they uploaded.
//!
//! Ambiguous PUTs (a timeout after the server stored the object) are retried under a new key;
//! the first object becomes an orphan. object_store does not retry PUTs itself.
//!
//! Commit window: an entry is committed only while `commit_window_ms` has not passed since its
//! object's PUT started (by the injected clock), and no manifest PUT starts after the window
//! of the oldest entry it carries. Past it, the entry and everything after it wait for the
//! next run, which uploads them again under fresh keys. This bounds how long after an
//! object's `last_modified` a commit can still reference it, which is what lets scrub delete
//! unreferenced objects older than `commit_window_ms + orphan_grace_ms` without racing a
//! commit (see [`crate::scrub`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, PutResult, WriteMultipart};
use rand::Rng;
use tokio::sync::Semaphore;

use crate::encryption::DataKey;
use crate::error::{Error, Result};
use crate::keys;
use crate::lock::{LockPolicy, LockRequest};
use crate::manifest::{Entry, ManifestStore};
use crate::segment_object::{self, BatchMark};
use crate::store::RemoteStore;

/// First retry delay; doubles per attempt up to [`BACKOFF_MAX`], with full jitter so many
/// partitions retrying after an outage do not stampede the store together.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Multipart part size: S3's minimum is 5 MiB; 8 MiB keeps parts few and memory modest.
const MULTIPART_PART_BYTES: usize = 8 * 1024 * 1024;
/// Segments committed per manifest version during a long backlog, so progress is saved
/// regularly without writing one manifest version per segment.
pub const COMMIT_EVERY_SEGMENTS: usize = 16;

#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub chunk_bytes: u64,
    pub zstd_level: i32,
    pub attempts: u32,
    pub multipart_threshold_bytes: u64,
    /// Uploads in flight per partition (a shared semaphore bounds them globally).
    pub concurrency: usize,
    /// Longest time from the start of an object's PUT to the start of the manifest PUT that
    /// commits it; later, the object is left uncommitted (see the module doc).
    pub commit_window_ms: u64,
    /// S3 Object Lock of the topic: every segment object is written locked (a single PUT:
    /// S3 takes lock headers on multipart uploads too, but one request keeps the lock and the
    /// write atomic; objects stay far below S3's 5 GiB single-PUT limit).
    pub lock: Option<LockPolicy>,
    /// Legal-hold ranges of the topic (its clock: record time, or append time when
    /// `holds_by_append_time`): a locked object whose records overlap one also gets S3's
    /// legal-hold flag.
    pub holds: Vec<(i64, i64)>,
    pub holds_by_append_time: bool,
    /// The key new segment objects are sealed with (`[encryption]`); `None`: stored in clear.
    pub encryption: Option<Arc<DataKey>>,
}

impl UploadSettings {
    /// The lock of a segment object written now whose records span `times`.
    fn lock_for(&self, times: (i64, i64)) -> Option<LockRequest> {
        let policy = self.lock?;
        let held = self.holds.iter().any(|(from, to)| times.0 < *to && *from <= times.1);
        Some(LockRequest { legal_hold: held, ..policy.request_now() })
    }
}

/// A sealed segment's raw bytes and batch boundaries, as supplied by the log.
#[derive(Debug, Clone)]
pub struct SegmentBytes {
    pub base_offset: u64,
    pub raw: Bytes,
    pub batches: Vec<BatchMark>,
}

/// What one run of the pipeline achieved.
#[derive(Debug, Default)]
pub struct RunOutcome {
    pub committed: Vec<Entry>,
    /// The first failure, after which the run stopped; what came before it is committed.
    pub error: Option<Error>,
}

/// Full-jitter exponential backoff for attempt `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_BASE.saturating_mul(1 << attempt.min(16)).min(BACKOFF_MAX);
    cap.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// Create-only PUT with retries, locked under `lock` (computed per attempt). An
/// `AlreadyExists` after a failed attempt means that attempt landed (keys passed here are
/// unique to the caller), so it counts as success.
pub async fn put_create_with_retries(
    store: &RemoteStore,
    key: &Path,
    payload: PutPayload,
    attempts: u32,
    lock: Option<LockPolicy>,
) -> Result<()> {
    for attempt in 1..=attempts {
        let request = lock.map(|l| l.request_now());
        let options = match request {
            Some(request) => request.options(PutMode::Create),
            None => PutOptions { mode: PutMode::Create, ..PutOptions::default() },
        };
        match store.store.put_opts(key, payload.clone(), options).await {
            Ok(result) => return crate::lock::check_applied(&store.display, key, request, &result),
            Err(object_store::Error::AlreadyExists { .. }) if attempt > 1 => return Ok(()),
            Err(e) if attempt < attempts => {
                tracing::warn!(key = %key, attempt, error = %e, "PUT failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(store.error(format!("PUT {key}"), e)),
        }
    }
    unreachable!("attempts >= 1")
}

/// Builds, uploads and describes one segment object. Each attempt uses a fresh key. The
/// entry's `uploaded_ms` is when the PUT that succeeded started: its commit window counts
/// from there.
pub async fn upload_segment(
    store: &RemoteStore,
    topic: &str,
    partition: u32,
    segment: SegmentBytes,
    settings: &UploadSettings,
    now_ms: &impl Fn() -> i64,
) -> Result<Entry> {
    let (chunk_bytes, level) = (settings.chunk_bytes, settings.zstd_level);
    let raw = segment.raw.clone();
    let batches = segment.batches.clone();
    let (key, sealed_topic) = (settings.encryption.clone(), topic.to_string());
    let (built, raw_sha256, object_sha256) = crate::blocking::run(move || {
        // The build spreads its chunks over the compression pool; the raw segment's SHA-256
        // is computed on that pool beside it rather than after it.
        let build = || match &key {
            None => segment_object::build(&raw, &batches, chunk_bytes, level),
            Some(key) => {
                let mut nonce = crate::encryption::random_nonce;
                let sealing = segment_object::Sealing { key, topic: &sealed_topic, partition, nonce: &mut nonce };
                segment_object::build_sealed(&raw, &batches, chunk_bytes, level, sealing)
            }
        };
        let (built, raw_sha) = rayon::join(build, || crate::sha256_hex(&raw));
        let built = built?;
        let object_sha = crate::sha256_hex(&built.bytes);
        Ok::<_, Error>((built, raw_sha, object_sha))
    })
    .await?;
    let object = Bytes::from(built.bytes);
    // The object's time range in the topic's clock, as retention judges holds by it.
    let times = if settings.holds_by_append_time {
        let (min, max) = built.index.append_time_range();
        (min.unwrap_or(segment_object::NO_APPEND_TIME), max.unwrap_or(segment_object::NO_APPEND_TIME))
    } else {
        let chunks = &built.index.chunks;
        (
            chunks.iter().map(|c| c.min_timestamp).min().unwrap_or(i64::MAX),
            chunks.iter().map(|c| c.max_timestamp).max().unwrap_or(i64::MIN),
        )
    };
    let mut last_error = None;
    for attempt in 1..=settings.attempts.max(1) {
        let key = keys::segment_key(store, topic, partition, segment.base_offset);
        let put_started_ms = now_ms();
        let lock = settings.lock_for(times);
        match put_object(store, &key, object.clone(), settings.multipart_threshold_bytes, lock).await {
            Ok(result) => {
                // The object exists but unlocked: not committed (it is an orphan for scrub).
                crate::lock::check_applied(&store.display, &key, lock, &result)?;
                let index = &built.index;
                let (min_append_time, max_append_time) = index.append_time_range();
                return Ok(Entry {
                    base_offset: segment.base_offset,
                    last_offset: index.chunks.last().map_or(segment.base_offset, |c| c.last_offset),
                    min_timestamp: index.chunks.iter().map(|c| c.min_timestamp).min().unwrap_or(i64::MAX),
                    max_timestamp: index.chunks.iter().map(|c| c.max_timestamp).max().unwrap_or(i64::MIN),
                    raw_bytes: segment.raw.len() as u64,
                    object_bytes: object.len() as u64,
                    chunks: index.chunks.len() as u32,
                    key: key.to_string(),
                    index_position: built.index_position,
                    index_len: built.index_len,
                    raw_sha256,
                    object_sha256,
                    uploaded_ms: put_started_ms,
                    min_append_time,
                    max_append_time,
                    key_id: index.key_id.clone(),
                    prev_hash: String::new(),
                    hash: String::new(),
                });
            }
            Err(e) => {
                tracing::warn!(topic, partition, base_offset = segment.base_offset, key = %key, attempt, error = %e, "segment upload failed");
                last_error = Some(store.error(format!("PUT {key}"), e));
                if attempt < settings.attempts {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
    Err(last_error.expect("at least one attempt ran"))
}

async fn put_object(
    store: &RemoteStore,
    key: &Path,
    object: Bytes,
    multipart_threshold: u64,
    lock: Option<LockRequest>,
) -> object_store::Result<PutResult> {
    if let Some(lock) = lock {
        return store.store.put_opts(key, PutPayload::from(object), lock.options(PutMode::Overwrite)).await;
    }
    if (object.len() as u64) < multipart_threshold {
        return store.store.put(key, PutPayload::from(object)).await;
    }
    let upload = store.store.put_multipart(key).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_BYTES);
    writer.write(&object);
    writer.finish().await // aborts the upload on failure
}

/// Uploads `bases` (ascending, contiguous with the manifest's end) with up to
/// `settings.concurrency` in flight, loading each segment with `load`, and commits the
/// successful prefix every [`COMMIT_EVERY_SEGMENTS`] segments and at the end.
pub async fn upload_in_order<F, Fut>(
    manifest: &mut ManifestStore,
    bases: Vec<u64>,
    load: F,
    settings: &UploadSettings,
    permits: Arc<Semaphore>,
    now_ms: impl Fn() -> i64,
) -> RunOutcome
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<SegmentBytes>>,
{
    let store = manifest.store.clone();
    let (topic, partition) = (manifest.topic.clone(), manifest.partition);
    let mut outcome = RunOutcome::default();
    let uploads = futures::stream::iter(bases)
        .map(|base| {
            let (store, topic, permits, load, now_ms) = (store.clone(), topic.clone(), permits.clone(), &load, &now_ms);
            async move {
                let _permit = permits.acquire_owned().await.map_err(|_| Error::Config("uploader shut down".into()))?;
                let segment = load(base).await?;
                upload_segment(&store, &topic, partition, segment, settings, now_ms).await
            }
        })
        .buffered(settings.concurrency.max(1));
    futures::pin_mut!(uploads);
    let mut ready = Vec::new();
    while let Some(result) = uploads.next().await {
        match result {
            Ok(entry) => ready.push(entry),
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        }
        if ready.len() >= COMMIT_EVERY_SEGMENTS && !commit(manifest, &mut ready, settings, &now_ms, &mut outcome).await
        {
            return outcome;
        }
    }
    commit(manifest, &mut ready, settings, &now_ms, &mut outcome).await;
    outcome
}

/// Commits the ready entries still inside their commit window (a contiguous prefix) and
/// reports the first one outside it as the run's error. Returns whether the run may go on.
async fn commit(
    manifest: &mut ManifestStore,
    ready: &mut Vec<Entry>,
    settings: &UploadSettings,
    now_ms: &impl Fn() -> i64,
    outcome: &mut RunOutcome,
) -> bool {
    if ready.is_empty() {
        return true;
    }
    let mut entries = std::mem::take(ready);
    let window_ms = i64::try_from(settings.commit_window_ms).unwrap_or(i64::MAX);
    let now = now_ms();
    let late_at = entries.iter().position(|e| now.saturating_sub(e.uploaded_ms) > window_ms);
    let late = late_at.map(|i| Error::CommitWindow {
        topic: manifest.topic.clone(),
        partition: manifest.partition,
        base_offset: entries[i].base_offset,
        what: "upload of",
        key: entries[i].key.clone(),
    });
    entries.truncate(late_at.unwrap_or(entries.len()));
    if let Some(oldest_ms) = entries.iter().map(|e| e.uploaded_ms).min() {
        let deadline_ms = oldest_ms.saturating_add(window_ms);
        match manifest.commit_within(entries, now_ms, deadline_ms, settings.attempts).await {
            Ok(appended) => outcome.committed.extend(appended),
            Err(e) => {
                outcome.error.get_or_insert(e);
                return false;
            }
        }
    }
    match late {
        Some(e) => {
            tracing::warn!(error = %e, "commit window passed");
            outcome.error.get_or_insert(e);
            false
        }
        None => true,
    }
}
