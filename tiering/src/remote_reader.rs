//! Reading the remote tier: offset or time → manifest (in memory) → chunk index (cached) →
//! one ranged GET of one chunk → decompress → raw batch bytes for the caller to decode.
//!
//! Request budget: a cold seek costs 2 requests with the manifest loaded (index range + chunk
//! range), 1 when the chunk index is cached, 0 when the chunk is cached. Sequential replay
//! (a read starting right after the previous chunk of the same partition) prefetches the
//! following chunks, across segment boundaries, within `prefetch_bytes`. Concurrent loads of
//! one chunk are coalesced into one GET; a load runs as its own task, so it completes and
//! fills the cache even if the reader that asked for it went away. Decompressed chunks are
//! cached up to `cache_bytes`. Remote GETs have their own concurrency limit and timeout.
//!
//! Knows nothing about records: it returns validated (CRC32C per chunk, zstd checksum)
//! decompressed bytes that are whole batches. Chunks of encrypted objects are opened with the
//! keyring's key of the id the manifest entry (and the chunk index) names; a key the keyring
//! lacks fails the read with [`Error::KeyMissing`], before any chunk is fetched.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::sync::Semaphore;

use crate::encryption::{DataKey, Keyring};
use crate::error::{Error, Result};
use crate::manifest::{Entry, Manifest, ManifestStore, Writer};
use crate::segment_object::{self, ChunkIndex};
use crate::store::RemoteStore;

/// Chunk indexes kept in memory. An index is ~60 bytes per 4 MiB chunk, so this bound is
/// about an MiB of memory while covering thousands of segments.
const INDEXES_MAX: usize = 4096;
/// Damaged chunks remembered per reader (see `RemoteReader::damaged`); an evicted one costs
/// one more GET when it is read again.
const DAMAGED_MAX: u64 = 4096;

#[derive(Debug, Clone)]
pub struct ReaderSettings {
    pub cache_bytes: u64,
    pub prefetch_bytes: u64,
    pub concurrency: usize,
    pub timeout: Duration,
    /// Keys to open encrypted objects with (`None`: only objects in clear can be read).
    pub keyring: Option<Arc<Keyring>>,
}

/// Decompressed bytes of one chunk: whole batches covering `first_offset..=last_offset`.
#[derive(Debug, Clone)]
pub struct RemoteChunk {
    pub raw: Bytes,
    pub first_offset: u64,
    pub last_offset: u64,
    pub key: String,
    pub chunk: usize,
    /// The reader's [`ChunkCheck`] passed on these bytes (once, when they were loaded): the
    /// caller need not check them again. `false` when the reader has no check.
    pub checked: bool,
}

/// A check of a chunk's decompressed bytes (`raw`, starting at offset `first_offset`) by the
/// caller, who knows the record format (the log checks every batch's CRC and that offsets run
/// on densely). It runs once per load, off the async threads and in parallel with other
/// loads; a chunk enters the cache only after passing it, so a cache hit is served without
/// checking again, and bytes that failed it are never served. The error says what is wrong
/// (e.g. "byte 4096: CRC mismatch").
pub type ChunkCheck = Arc<dyn Fn(&[u8], u64) -> std::result::Result<(), String> + Send + Sync>;

type ChunkId = (String, usize);
type Loading<V> = Shared<BoxFuture<'static, std::result::Result<V, Arc<Error>>>>;

/// What opening the chunks of one encrypted object takes, owned by a load task.
struct Sealed {
    key: Arc<DataKey>,
    topic: String,
    partition: u32,
    base_offset: u64,
}

/// Joins concurrent loads of the same key into one. Each load runs as its own task, so it
/// completes (and fills the cache) even if every caller went away.
struct Coalescer<K, V> {
    inflight: Arc<Mutex<HashMap<K, Loading<V>>>>,
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static, V: Clone + Send + Sync + 'static> Coalescer<K, V> {
    fn new() -> Self {
        Coalescer { inflight: Arc::default() }
    }

    fn load<F>(&self, key: K, work: F) -> Loading<V>
    where
        F: std::future::Future<Output = Result<V>> + Send + 'static,
    {
        let mut inflight = lock(&self.inflight);
        if let Some(existing) = inflight.get(&key) {
            return existing.clone();
        }
        let leave = Leave { registry: self.inflight.clone(), key: key.clone() };
        let task = tokio::spawn(async move {
            // Leaves the registry however the load ends, a panic included: a key left behind
            // would answer every later read of it with that panic.
            let _leave = leave;
            work.await.map_err(Arc::new)
        });
        let shared =
            async move { task.await.unwrap_or_else(|e| Err(Arc::new(Error::Format(format!("load task: {e}"))))) }
                .boxed()
                .shared();
        inflight.insert(key, shared.clone());
        shared
    }
}

/// A load's key in its coalescer's registry, removed when the load ends or unwinds.
struct Leave<K: std::hash::Hash + Eq, V> {
    registry: Arc<Mutex<HashMap<K, Loading<V>>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq, V> Drop for Leave<K, V> {
    fn drop(&mut self) {
        lock(&self.registry).remove(&self.key);
    }
}

/// The error of a shared (coalesced) load, for one caller. An outage stays an outage, which
/// callers report as "unavailable, try again"; anything else is damage to `key`, named with
/// the `part` that failed.
fn unshare(e: Arc<Error>, key: &str, part: &str) -> Error {
    match Arc::try_unwrap(e).unwrap_or_else(|shared| shared.copy()) {
        e @ (Error::Timeout { .. } | Error::Store { .. } | Error::Missing { .. } | Error::Io { .. }) => e,
        other => Error::Corrupt { key: key.to_string(), reason: format!("{part}: {other}") },
    }
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug)]
pub struct ReadStats {
    pub chunk_gets: std::sync::atomic::AtomicU64,
    pub index_gets: std::sync::atomic::AtomicU64,
    pub bytes_fetched: std::sync::atomic::AtomicU64,
    pub cache_hits: std::sync::atomic::AtomicU64,
    /// Chunk loads given the buffer of a chunk the cache gave up to decode into (see
    /// `make_room`), whether the decode then succeeded or not.
    pub buffers_reused: std::sync::atomic::AtomicU64,
    /// Ranged GETs that failed: timed out, refused by the store, missing, or short.
    pub get_errors: std::sync::atomic::AtomicU64,
    /// Time of every ranged GET (failed ones included), in seconds over [`GET_LATENCY_BUCKETS_US`].
    pub get_latency: prometheus_client::metrics::histogram::Histogram,
}

/// Upper bounds (µs) of the GET latency buckets: from a read of a `file://` remote (a tenth
/// of a millisecond) to a GET that used the whole `reader.timeout_ms` (30 s by default) and
/// beyond.
pub const GET_LATENCY_BUCKETS_US: [u64; 16] = [
    100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 200_000, 300_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];

impl Default for ReadStats {
    fn default() -> ReadStats {
        ReadStats {
            chunk_gets: Default::default(),
            index_gets: Default::default(),
            bytes_fetched: Default::default(),
            cache_hits: Default::default(),
            buffers_reused: Default::default(),
            get_errors: Default::default(),
            get_latency: prometheus_client::metrics::histogram::Histogram::new(
                GET_LATENCY_BUCKETS_US.map(|us| us as f64 / 1e6),
            ),
        }
    }
}

impl ReadStats {
    /// Counts one ranged GET that took `elapsed` (to the microsecond) and `failed` or not.
    fn count_get(&self, elapsed: std::time::Duration, failed: bool) {
        self.get_latency.observe(elapsed.as_micros() as f64 / 1e6);
        self.get_errors.fetch_add(u64::from(failed), std::sync::atomic::Ordering::Relaxed);
    }
}

pub struct RemoteReader {
    store: RemoteStore,
    settings: ReaderSettings,
    permits: Arc<Semaphore>,
    manifests: Mutex<HashMap<(String, u32), Arc<PartitionView>>>,
    indexes: Mutex<Lru<String, Arc<ChunkIndex>>>,
    chunks: Mutex<Lru<ChunkId, Bytes>>,
    loading_chunks: Coalescer<ChunkId, Bytes>,
    /// Chunks whose stored bytes failed to decode or failed the check, with why: objects are
    /// immutable, so asking again would fetch the same damage; a read of one answers at once,
    /// with no GET (a client retrying a damaged offset must not cost a GET each time).
    damaged: Mutex<Lru<ChunkId, String>>,
    loading_indexes: Coalescer<String, Arc<ChunkIndex>>,
    /// Per partition: the offset right after the last chunk served (sequential detection).
    next_expected: Mutex<HashMap<(String, u32), u64>>,
    pub stats: Arc<ReadStats>,
    me: std::sync::Weak<RemoteReader>,
    hints: Option<VersionHints>,
    check: Option<ChunkCheck>,
}

/// Where a reader may learn a partition's last known manifest version (e.g. the writer's
/// local state), so the first load of a manifest probes forward from there rather than from
/// version 1. Consulted only when a partition's manifest is first loaded.
pub type VersionHints = Box<dyn Fn(&str, u32) -> u64 + Send + Sync>;

/// A loaded manifest plus the archives loaded on demand.
struct PartitionView {
    store: ManifestStore,
    archives: Mutex<HashMap<usize, Arc<Vec<Entry>>>>,
}

impl RemoteReader {
    pub fn new(store: RemoteStore, settings: ReaderSettings) -> Arc<RemoteReader> {
        RemoteReader::with_hints(store, settings, None)
    }

    pub fn with_hints(store: RemoteStore, settings: ReaderSettings, hints: Option<VersionHints>) -> Arc<RemoteReader> {
        RemoteReader::with_check(store, settings, hints, None)
    }

    /// A reader that runs `check` on every chunk it loads, before caching it (see
    /// [`ChunkCheck`]).
    pub fn with_check(
        store: RemoteStore,
        settings: ReaderSettings,
        hints: Option<VersionHints>,
        check: Option<ChunkCheck>,
    ) -> Arc<RemoteReader> {
        Arc::new_cyclic(|me| RemoteReader {
            me: me.clone(),
            hints,
            check,
            permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            indexes: Mutex::new(Lru::new(INDEXES_MAX as u64)),
            chunks: Mutex::new(Lru::new(settings.cache_bytes)),
            store,
            settings,
            manifests: Mutex::default(),
            loading_chunks: Coalescer::new(),
            damaged: Mutex::new(Lru::new(DAMAGED_MAX)),
            loading_indexes: Coalescer::new(),
            next_expected: Mutex::default(),
            stats: Arc::default(),
        })
    }

    pub fn store(&self) -> &RemoteStore {
        &self.store
    }

    /// The partition's manifest as this reader knows it (loaded on first use).
    pub async fn manifest(&self, topic: &str, partition: u32) -> Result<Manifest> {
        Ok(self.view(topic, partition, 0).await?.store.current.clone())
    }

    /// Reloads the partition's manifest when the version this reader holds starts before
    /// `expired_before` (retention moved the start since it was loaded): reads below the new
    /// start then find no entry, whatever chunks are still cached.
    pub async fn catch_up_with_expiry(&self, topic: &str, partition: u32, expired_before: u64) -> Result<()> {
        let known = lock(&self.manifests).get(&(topic.to_string(), partition)).cloned();
        if known.is_some_and(|view| view.store.current.expired_before() < expired_before) {
            self.view(topic, partition, u64::MAX).await?;
        }
        Ok(())
    }

    /// The partition's manifest view, reloaded (probing forward from the known version) when
    /// it does not reach `upto`: the one rule for noticing what the writer tiered since.
    async fn view(&self, topic: &str, partition: u32, upto: u64) -> Result<Arc<PartitionView>> {
        let key = (topic.to_string(), partition);
        let known = lock(&self.manifests).get(&key).cloned();
        if let Some(view) = known.as_ref().filter(|v| v.store.current.next_offset() >= upto) {
            return Ok(view.clone());
        }
        let hint = match &known {
            Some(view) => view.store.current.manifest_version,
            None => self.hints.as_ref().map_or(0, |hints| hints(topic, partition)),
        };
        let reader = Writer { id: "reader".into(), epoch: 0 };
        let store = ManifestStore::open(self.store.clone(), topic, partition, reader, hint).await?;
        let view = Arc::new(PartitionView { store, archives: Mutex::default() });
        lock(&self.manifests).insert(key, view.clone());
        Ok(view)
    }

    /// Runs `read` on the partition's view (reaching `upto`). When an object it needs is gone
    /// — retention expired it in a manifest version newer than this reader's and deleted it
    /// after the grace period — reloads the manifest and runs `read` once more on the newer
    /// version, where the expired range is no longer listed. A missing object the newest
    /// version still lists stays an error.
    async fn on_current_view<T, Fut>(
        &self,
        topic: &str,
        partition: u32,
        upto: u64,
        read: impl Fn(Arc<PartitionView>) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let view = self.view(topic, partition, upto).await?;
        let version = view.store.current.manifest_version;
        match read(view).await {
            Err(Error::Missing { key }) => {
                let newer = self.view(topic, partition, u64::MAX).await?;
                if newer.store.current.manifest_version == version {
                    return Err(Error::Missing { key });
                }
                tracing::debug!(
                    topic,
                    partition,
                    key,
                    version = newer.store.current.manifest_version,
                    "object gone: read again on the newer manifest version"
                );
                read(newer).await
            }
            other => other,
        }
    }

    /// The manifest entry holding `offset`, from inline entries or an archive. The one lookup
    /// for reads and for prefetch's "next segment", so an archive boundary is crossed the same
    /// way by both.
    async fn entry_for_offset(&self, view: &PartitionView, offset: u64) -> Result<Option<Entry>> {
        let m = &view.store.current;
        if m.entries.first().is_some_and(|e| e.base_offset <= offset) {
            let i = m.entries.partition_point(|e| e.last_offset < offset);
            return Ok(m.entries.get(i).cloned());
        }
        let Some(ai) = m.archives.iter().position(|a| a.base_offset <= offset && offset <= a.last_offset) else {
            return Ok(None);
        };
        let entries = self.archive(view, ai).await?;
        let i = entries.partition_point(|e| e.last_offset < offset);
        Ok(entries.get(i).cloned())
    }

    async fn archive(&self, view: &PartitionView, i: usize) -> Result<Arc<Vec<Entry>>> {
        if let Some(entries) = lock(&view.archives).get(&i) {
            return Ok(entries.clone());
        }
        let entries = Arc::new(view.store.load_archive(&view.store.current.archives[i]).await?);
        lock(&view.archives).insert(i, entries.clone());
        Ok(entries)
    }

    /// The first entry whose newest record is at or after `time` (every earlier entry holds
    /// only older records, so a time lookup's answer lies in it).
    async fn entry_for_time(&self, view: &PartitionView, time: i64) -> Result<Option<Entry>> {
        let m = &view.store.current;
        for (i, archive) in m.archives.iter().enumerate() {
            if archive.max_timestamp >= time {
                return Ok(self.archive(view, i).await?.iter().find(|e| e.max_timestamp >= time).cloned());
            }
        }
        Ok(m.entries.iter().find(|e| e.max_timestamp >= time).cloned())
    }

    /// The first entry holding a batch appended after `time` (append times never decrease, so
    /// every earlier entry was appended at or before it), and the largest append time of the
    /// entry before it (`None` when it is the first the remote tier holds). Batches without
    /// an append time count as appended before every time.
    async fn entry_for_append_time(&self, view: &PartitionView, time: i64) -> Result<Option<(Entry, Option<i64>)>> {
        let m = &view.store.current;
        let archive_max = |i: usize| m.archives[i].max_append_time.unwrap_or(segment_object::NO_APPEND_TIME);
        for i in 0..m.archives.len() {
            if archive_max(i) > time {
                let entries = self.archive(view, i).await?;
                let Some(j) = entries.iter().position(|e| e.max_append() > time) else { break };
                let before = if j > 0 { Some(entries[j - 1].max_append()) } else { i.checked_sub(1).map(archive_max) };
                return Ok(Some((entries[j].clone(), before)));
            }
        }
        let Some(j) = m.entries.iter().position(|e| e.max_append() > time) else { return Ok(None) };
        let before = match j {
            0 => m.archives.len().checked_sub(1).map(archive_max),
            _ => Some(m.entries[j - 1].max_append()),
        };
        Ok(Some((m.entries[j].clone(), before)))
    }

    /// The largest append time of the batches before `offset` in the remote tier
    /// ([`segment_object::NO_APPEND_TIME`] when none has one), when `offset` is where an
    /// entry ends (a local segment's base); `None` when the remote tier holds nothing below it.
    pub async fn max_append_time_before(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<i64>> {
        let Some(previous) = offset.checked_sub(1) else { return Ok(None) };
        let view = self.view(topic, partition, offset).await?;
        Ok(self.entry_for_offset(&view, previous).await?.map(|e| e.max_append()))
    }

    /// The chunk holding the first batch appended after `time`, and whether the batch before
    /// the chunk has no append time (`None`: the chunk starts the remote tier); `None` when
    /// every remote batch was appended at or before `time`. Manifest, chunk index, one chunk:
    /// the budget of a time lookup. `local_start` as for [`Self::read_for_time`].
    pub async fn read_for_append_time(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        time: i64,
        local_start: u64,
    ) -> Result<Option<(RemoteChunk, Option<bool>)>> {
        let read = |view: Arc<PartitionView>| async move {
            let Some((entry, before)) = self.entry_for_append_time(&view, time).await? else { return Ok(None) };
            let index = self.index(&entry).await?;
            let Some((chunk_no, _)) = index.chunk_for_append_time(time) else {
                return Err(Error::Corrupt {
                    key: entry.key.clone(),
                    reason: format!("manifest says a batch was appended after {time}, the chunk index disagrees"),
                });
            };
            let before = if chunk_no > 0 { Some(index.chunks[chunk_no - 1].max_append_time) } else { before };
            let chunk = self.chunk(topic, partition, &entry, &index, chunk_no).await?;
            Ok(Some((chunk, before.map(|t| t == segment_object::NO_APPEND_TIME))))
        };
        self.on_current_view(topic, partition, local_start, read).await
    }

    /// The chunk holding `offset`, or `None` when the remote tier does not hold it (after
    /// refreshing the manifest once, in case the writer tiered more since it was loaded).
    pub async fn read_at(self: &Arc<Self>, topic: &str, partition: u32, offset: u64) -> Result<Option<RemoteChunk>> {
        let read = |view: Arc<PartitionView>| {
            let this = self.clone();
            async move {
                let Some(entry) = this.entry_for_offset(&view, offset).await? else { return Ok(None) };
                // Index then chunk, as one task: if the caller stops waiting, the fill still completes.
                let (filler, fill_entry, fill_topic) = (this.clone(), entry.clone(), view.store.topic.clone());
                let fill = tokio::spawn(async move {
                    let index = filler.index(&fill_entry).await?;
                    let Some(chunk_no) =
                        index.chunks.iter().position(|c| c.first_offset <= offset && offset <= c.last_offset)
                    else {
                        return Err(Error::Corrupt {
                            key: fill_entry.key.clone(),
                            reason: format!("chunk index has no chunk for offset {offset}"),
                        });
                    };
                    let chunk = filler.chunk(&fill_topic, partition, &fill_entry, &index, chunk_no).await?;
                    Ok((index, chunk_no, chunk))
                });
                let filled = fill.await.map_err(|e| Error::Format(format!("remote read task: {e}")))??;
                Ok(Some((view, entry, filled)))
            }
        };
        let Some((view, entry, (index, chunk_no, chunk))) =
            self.on_current_view(topic, partition, offset + 1, read).await?
        else {
            return Ok(None);
        };
        let sequential = lock(&self.next_expected).get(&(topic.to_string(), partition))
            == Some(&index.chunks[chunk_no].first_offset);
        lock(&self.next_expected).insert((topic.to_string(), partition), chunk.last_offset + 1);
        if sequential && self.settings.prefetch_bytes > 0 {
            self.clone().prefetch(view, entry, index, chunk_no + 1);
        }
        Ok(Some(chunk))
    }

    /// The chunk holding the first record with timestamp ≥ `time`, or `None` when no remote
    /// record is that recent. No scan of cold data: manifest, then chunk index, then one chunk.
    /// `local_start` is the first offset the caller still holds locally: a manifest that ends
    /// before it is refreshed first, or records tiered since it was loaded would be skipped.
    pub async fn read_for_time(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        time: i64,
        local_start: u64,
    ) -> Result<Option<RemoteChunk>> {
        let read = |view: Arc<PartitionView>| async move {
            let Some(entry) = self.entry_for_time(&view, time).await? else { return Ok(None) };
            let index = self.index(&entry).await?;
            let Some(chunk_no) = index.chunks.iter().position(|c| c.max_timestamp >= time) else {
                return Err(Error::Corrupt {
                    key: entry.key.clone(),
                    reason: format!("manifest says a record ≥ {time} exists, the chunk index disagrees"),
                });
            };
            Ok(Some(self.chunk(topic, partition, &entry, &index, chunk_no).await?))
        };
        self.on_current_view(topic, partition, local_start, read).await
    }

    async fn index(&self, entry: &Entry) -> Result<Arc<ChunkIndex>> {
        if let Some(index) = lock(&self.indexes).get(&entry.key) {
            return Ok(index);
        }
        let this = self.self_handle();
        let owned = entry.clone();
        let loading = self.loading_indexes.load(entry.key.clone(), async move { this.fetch_index(&owned).await });
        loading.await.map_err(|e| unshare(e, &entry.key, "chunk index"))
    }

    async fn fetch_index(&self, entry: &Entry) -> Result<Arc<ChunkIndex>> {
        let range = entry.index_position..entry.index_position + entry.index_len;
        let frame = self.get_range(&entry.key, range).await?;
        self.stats.index_gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let index = Arc::new(
            segment_object::parse_index_frame(&frame)
                .map_err(|e| Error::Corrupt { key: entry.key.clone(), reason: e.to_string() })?,
        );
        if index.base_offset != entry.base_offset
            || index.chunks.last().map(|c| c.last_offset) != Some(entry.last_offset)
        {
            return Err(Error::Corrupt {
                key: entry.key.clone(),
                reason: "chunk index disagrees with the manifest entry".into(),
            });
        }
        if index.key_id != entry.key_id {
            let name = |id: &Option<String>| {
                id.as_ref().map_or("no key (in clear)".to_string(), |id| format!("key id '{id}'"))
            };
            return Err(Error::Corrupt {
                key: entry.key.clone(),
                reason: format!(
                    "chunk index names {}, the manifest entry {}",
                    name(&index.key_id),
                    name(&entry.key_id)
                ),
            });
        }
        lock(&self.indexes).insert(entry.key.clone(), index.clone(), 1);
        Ok(index)
    }

    /// The index entry of a chunk whose index is cached (for benchmarks and diagnostics).
    pub fn chunk_meta(&self, key: &str, chunk: usize) -> Option<segment_object::ChunkMeta> {
        lock(&self.indexes).get(&key.to_string()).and_then(|index| index.chunks.get(chunk).copied())
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let _permit = self.permits.acquire().await.map_err(|_| Error::Config("reader closed".into()))?;
        let path = Path::from(key);
        let len = range.end - range.start;
        let started = std::time::Instant::now();
        let fetched = tokio::time::timeout(self.settings.timeout, self.store.store.get_range(&path, range)).await;
        self.stats.count_get(started.elapsed(), !matches!(&fetched, Ok(Ok(bytes)) if bytes.len() as u64 == len));
        let bytes = match fetched {
            Err(_) => {
                return Err(Error::Timeout {
                    store: self.store.display.clone(),
                    action: format!("GET {key}"),
                    after_ms: self.settings.timeout.as_millis() as u64,
                    setting: "reader.timeout_ms",
                });
            }
            Ok(Err(object_store::Error::NotFound { .. })) => return Err(Error::Missing { key: key.to_string() }),
            Ok(Err(e)) => return Err(self.store.error(format!("GET {key}"), e)),
            Ok(Ok(bytes)) => bytes,
        };
        if bytes.len() as u64 != len {
            return Err(Error::Corrupt {
                key: key.into(),
                reason: format!("ranged GET returned {} bytes, expected {len}", bytes.len()),
            });
        }
        self.stats.bytes_fetched.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    }

    /// The key to open `entry`'s chunks with (`None`: stored in clear). A key the keyring
    /// lacks is an error naming the partition, offsets, object and key id.
    fn sealed(&self, topic: &str, partition: u32, entry: &Entry, index: &ChunkIndex) -> Result<Option<Arc<Sealed>>> {
        let Some(key_id) = &index.key_id else { return Ok(None) };
        let keyring = self.settings.keyring.as_ref();
        let Some(key) = keyring.and_then(|k| k.get(key_id)) else {
            return Err(Error::KeyMissing {
                topic: topic.to_string(),
                partition,
                base_offset: entry.base_offset,
                last_offset: entry.last_offset,
                key: entry.key.clone(),
                key_id: key_id.clone(),
                why: keyring.map_or("no keyring is configured".into(), |k| {
                    format!("the keyring {} does not hold it", k.source())
                }),
            });
        };
        let base_offset = index.base_offset;
        Ok(Some(Arc::new(Sealed { key, topic: topic.to_string(), partition, base_offset })))
    }

    /// One chunk, from the cache or from one (coalesced) GET.
    async fn chunk(
        &self,
        topic: &str,
        partition: u32,
        entry: &Entry,
        index: &ChunkIndex,
        chunk_no: usize,
    ) -> Result<RemoteChunk> {
        let meta = index.chunks[chunk_no];
        let id: ChunkId = (entry.key.clone(), chunk_no);
        let wrap = |raw: Bytes| RemoteChunk {
            raw,
            first_offset: meta.first_offset,
            last_offset: meta.last_offset,
            key: entry.key.clone(),
            chunk: chunk_no,
            checked: self.check.is_some(),
        };
        if let Some(raw) = lock(&self.chunks).get(&id) {
            self.stats.cache_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(wrap(raw));
        }
        let sealed = self.sealed(topic, partition, entry, index)?;
        let loading = self.start_load(id.clone(), meta, sealed);
        match loading.await {
            Ok(raw) => Ok(wrap(raw)),
            Err(e) => Err(unshare(e, &entry.key, &format!("chunk {chunk_no}"))),
        }
    }

    /// The shared load of a chunk: joins one in flight or starts one.
    fn start_load(&self, id: ChunkId, meta: segment_object::ChunkMeta, sealed: Option<Arc<Sealed>>) -> Loading<Bytes> {
        if let Some(reason) = lock(&self.damaged).get(&id) {
            let damaged = Error::Corrupt { key: id.0.clone(), reason };
            return futures::future::ready(Err(Arc::new(damaged))).boxed().shared();
        }
        let this = self.self_handle();
        let task_id = id.clone();
        self.loading_chunks.load(id, async move { this.fetch_chunk(&task_id, meta, sealed).await })
    }

    async fn fetch_chunk(
        &self,
        id: &ChunkId,
        meta: segment_object::ChunkMeta,
        sealed: Option<Arc<Sealed>>,
    ) -> Result<Bytes> {
        let range = meta.compressed_position..meta.compressed_position + u64::from(meta.compressed_len);
        let compressed = self.get_range(&id.0, range).await?;
        self.stats.chunk_gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chunk_no = id.1;
        let check = self.check.clone();
        // Bytes damaged in transit (or rotted) are refused before they may evict a chunk: a
        // client retrying such a read must not flush the cache.
        let stored = segment_object::check_stored_chunk(&meta, compressed)?;
        let (room, mut raw) = self.make_room(u64::from(meta.raw_len));
        // Decoded (and checked) on the blocking pool: the loads prefetch starts decode in
        // parallel, one per core, while the reader serves the chunks already cached.
        let raw = crate::blocking::run(move || {
            match &sealed {
                None => segment_object::decode_chunk(&meta, &stored, &mut raw)?,
                Some(s) => {
                    let opening = segment_object::Opening {
                        key: &s.key,
                        topic: &s.topic,
                        partition: s.partition,
                        base_offset: s.base_offset,
                    };
                    segment_object::open_chunk(&meta, chunk_no, &stored, &opening, &mut raw)?
                }
            }
            let verdict = match &check {
                Some(check) => check(&raw, meta.first_offset).map_err(|e| format!("chunk {chunk_no} {e}")),
                None => Ok(()),
            };
            Ok::<_, Error>((raw, verdict))
        })
        .await
        .map_err(|e| Error::Corrupt { key: id.0.clone(), reason: e.to_string() })?;
        // Bytes that decoded passed the stored CRC32C and zstd checksum: they are what the
        // object holds, so a failed check is the object's damage and is remembered. (A decode
        // failure may be a GET damaged in transit: the next read asks again.)
        let (raw, verdict) = raw;
        if let Err(why) = verdict {
            let reason = Error::Format(why).to_string();
            lock(&self.damaged).insert(id.clone(), reason.clone(), 1);
            return Err(Error::Corrupt { key: id.0.clone(), reason });
        }
        let cost = raw.capacity() as u64;
        let raw = Bytes::from(raw);
        let mut cache = lock(&self.chunks);
        cache.release(room.take());
        cache.insert(id.clone(), raw.clone(), cost);
        Ok(raw)
    }

    /// Makes room in the chunk cache for a chunk of `raw_len` bytes about to be decoded, so the
    /// cache's budget bounds the chunks being decoded too, and returns the buffer to decode it
    /// into: that of a chunk the cache gave up for it, when no reader holds that one any more and
    /// its size fits, else a new one. (A new buffer costs a page fault and a zeroed page per
    /// 4 KiB: about 15% of a remote replay's time before buffers were reused.)
    fn make_room(&self, raw_len: u64) -> (Room<'_>, Vec<u8>) {
        let mut room = Room { cache: &self.chunks, reserved: 0 };
        let evicted;
        (room.reserved, evicted) = lock(&self.chunks).reserve(raw_len);
        // Chunks end on batch boundaries at or below the chunk size: a buffer of one is at most
        // a batch larger than the next. The slack (an eighth) is counted when it is cached.
        let fits = |b: &Vec<u8>| (raw_len..=raw_len + raw_len / 8).contains(&(b.capacity() as u64));
        let spare = evicted.into_iter().filter_map(|b| b.try_into_mut().ok().map(Vec::from)).find(fits);
        let reused = spare.is_some();
        self.stats.buffers_reused.fetch_add(u64::from(reused), std::sync::atomic::Ordering::Relaxed);
        let mut buffer = spare.unwrap_or_default();
        buffer.clear();
        (room, buffer)
    }

    /// Starts loading the chunks after `from` (in this segment, then the next segment) up to
    /// `prefetch_bytes` of decompressed data — at most half the cache, so prefetched chunks
    /// are not evicted before they are read. Loads run in parallel (bounded by the reader's
    /// GET concurrency) and are coalesced with any reader asking for the same chunk. The next
    /// segment is the entry holding `entry.last_offset + 1`, looked up here (not at read time)
    /// so a seek that is not followed by more reads never loads the next archive.
    fn prefetch(self: Arc<Self>, view: Arc<PartitionView>, entry: Entry, index: Arc<ChunkIndex>, from: usize) {
        tokio::spawn(async move {
            let mut budget = self.settings.prefetch_bytes.min(self.settings.cache_bytes / 2);
            let mut plan: Vec<(Entry, Arc<ChunkIndex>, usize)> =
                (from..index.chunks.len()).map(|c| (entry.clone(), index.clone(), c)).collect();
            let raw_ahead: u64 = plan.iter().map(|(_, i, c)| u64::from(i.chunks[*c].raw_len)).sum();
            if raw_ahead < budget
                && let Ok(Some(next)) = self.entry_for_offset(&view, entry.last_offset + 1).await
                && let Ok(next_index) = self.index(&next).await
            {
                plan.extend((0..next_index.chunks.len()).map(|c| (next.clone(), next_index.clone(), c)));
            }
            let (topic, partition) = (view.store.topic.clone(), view.store.partition);
            for (entry, index, c) in plan {
                let meta = index.chunks[c];
                if u64::from(meta.raw_len) > budget {
                    break;
                }
                budget -= u64::from(meta.raw_len);
                let id: ChunkId = (entry.key.clone(), c);
                if lock(&self.chunks).contains(&id) || lock(&self.damaged).contains(&id) {
                    continue;
                }
                let Ok(sealed) = self.sealed(&topic, partition, &entry, &index) else { break };
                drop(self.start_load(id, meta, sealed)); // runs to completion on its own
            }
        });
    }

    /// Loads run as tasks that own a handle to the reader (and so outlive the asker).
    fn self_handle(&self) -> Arc<RemoteReader> {
        self.me.upgrade().expect("a reader is alive while one of its methods runs")
    }
}

/// Room reserved in the chunk cache for a chunk being loaded: given back when the load ends,
/// fails, panics or is dropped with the runtime.
struct Room<'a> {
    cache: &'a Mutex<Lru<ChunkId, Bytes>>,
    reserved: u64,
}

impl Room<'_> {
    /// Hands the reservation to the caller, who releases it under the cache's lock it holds.
    fn take(mut self) -> u64 {
        std::mem::take(&mut self.reserved)
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        if self.reserved > 0 {
            lock(self.cache).release(self.reserved);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A small LRU bounded by a cost (bytes for chunks, count for indexes).
struct Lru<K, V> {
    budget: u64,
    used: u64,
    tick: u64,
    items: HashMap<K, (V, u64, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new(budget: u64) -> Self {
        Lru { budget, used: 0, tick: 0, items: HashMap::new(), order: BTreeMap::new() }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let (value, _, tick) = self.items.get_mut(key)?;
        self.order.remove(tick);
        *tick = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value.clone())
    }

    fn contains(&self, key: &K) -> bool {
        self.items.contains_key(key)
    }

    fn insert(&mut self, key: K, value: V, cost: u64) {
        if cost > self.budget {
            return; // larger than the whole cache: serve it, do not keep it
        }
        if let Some((_, old_cost, old_tick)) = self.items.remove(&key) {
            self.used -= old_cost;
            self.order.remove(&old_tick);
        }
        self.evict_for(cost);
        self.tick += 1;
        self.items.insert(key.clone(), (value, cost, self.tick));
        self.order.insert(self.tick, key);
        self.used += cost;
    }

    /// Evicts the least recently used values until `cost` more fits, and returns them.
    fn evict_for(&mut self, cost: u64) -> Vec<V> {
        let mut evicted = Vec::new();
        while self.used + cost > self.budget {
            let Some((_, victim)) = self.order.pop_first() else { break };
            if let Some((value, victim_cost, _)) = self.items.remove(&victim) {
                self.used -= victim_cost;
                evicted.push(value);
            }
        }
        evicted
    }

    /// Counts `cost` as used (evicting what must go, returned) until [`Lru::release`]: room for
    /// a value on its way. Returns how much was reserved: nothing for a value larger than the
    /// whole cache, which is served and not kept.
    fn reserve(&mut self, cost: u64) -> (u64, Vec<V>) {
        if cost > self.budget {
            return (0, Vec::new());
        }
        let evicted = self.evict_for(cost);
        self.used += cost;
        (cost, evicted)
    }

    fn release(&mut self, reserved: u64) {
        self.used -= reserved;
    }
}
