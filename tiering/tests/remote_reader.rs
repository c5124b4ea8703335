//! Sequential replay prefetch across archive boundaries, with GETs counted by the fault
//! store: the chunk prefetched at the end of a segment is the next segment's, wherever the
//! manifest keeps that segment (the next archive, or the inline entries).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tierlog_tiering::fault::{Counters, FaultStore};
use tierlog_tiering::manifest::{ARCHIVE_ENTRIES, Manifest};
use tierlog_tiering::remote_reader::{ReaderSettings, RemoteReader};
use tierlog_tiering::store::RemoteStore;

/// 400 one-chunk segments of 10 offsets: archives hold segments 0..128 and 128..256, the
/// manifest keeps 256..400 inline.
const SEGMENTS: u64 = 400;

fn gets(counters: &Counters) -> u64 {
    counters.gets.load(Ordering::SeqCst)
}

/// Waits until no request has arrived for a while: the spawned prefetch has finished.
async fn settle(counters: &Counters) {
    let (mut last, mut quiet) = (counters.snapshot(), 0);
    while quiet < 4 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counters.snapshot();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

fn reader(store: &RemoteStore) -> (Arc<RemoteReader>, Arc<FaultStore>) {
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    let settings = ReaderSettings {
        cache_bytes: 64 * 1024 * 1024,
        prefetch_bytes: 1024 * 1024,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        keyring: None,
    };
    (RemoteReader::new(store.with_store(faulty.clone()), settings), faulty)
}

/// Replays the segments `last - 1`, `last` (the last one of an archive) and `last + 1`, and
/// returns the GETs of the third read and the GETs of the whole replay (prefetch included).
async fn replay_across(store: &RemoteStore, last: u64) -> (u64, u64) {
    let (reader, faulty) = reader(store);
    let first_offset = |segment: u64| segment * BATCH_OFFSETS;
    for segment in [last - 1, last] {
        let chunk = reader.read_at("t", 0, first_offset(segment)).await.unwrap().unwrap();
        assert_eq!(chunk.raw, segment_bytes(segment), "segment {segment} reads back unchanged");
    }
    settle(&faulty.counters).await;
    let before = gets(&faulty.counters);
    let chunk = reader.read_at("t", 0, first_offset(last + 1)).await.unwrap().unwrap();
    assert_eq!(chunk.raw, segment_bytes(last + 1));
    let crossing = gets(&faulty.counters) - before;
    settle(&faulty.counters).await;
    (crossing, gets(&faulty.counters))
}

fn segment_bytes(segment: u64) -> bytes::Bytes {
    common::segment(segment * BATCH_OFFSETS, 1).raw
}

async fn tiered_store(dir: &std::path::Path) -> (RemoteStore, Manifest) {
    let store = RemoteStore::local_dir(dir).unwrap();
    let manifest = tier(&store, "t", 0, segments(0, SEGMENTS, 1)).await;
    assert_eq!(manifest.archives.len(), 2, "two archives, then inline entries");
    assert_eq!(manifest.archives[1].base_offset, ARCHIVE_ENTRIES as u64 * BATCH_OFFSETS);
    assert_eq!(manifest.entries[0].base_offset, 2 * ARCHIVE_ENTRIES as u64 * BATCH_OFFSETS);
    (store, manifest)
}

/// Defect 12: at the end of the first archive, prefetch fetched the first inline entry
/// instead of the first entry of the next archive.
#[tokio::test]
async fn prefetch_from_the_end_of_an_archive_fetches_the_first_segment_of_the_next_archive() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tiered_store(dir.path()).await;
    let last = ARCHIVE_ENTRIES as u64 - 1;
    let (crossing, total) = replay_across(&store, last).await;
    assert_eq!(crossing, 0, "the next segment (first of the next archive) was prefetched");
    // manifest 1 + archive 0 1 + two reads 2×2 + prefetch of the next segment (archive 1,
    // index, chunk) 3 + prefetch after the third read (index, chunk) 2.
    assert_eq!(total, 11, "no GET beyond what the replay and its read-ahead need");
}

#[tokio::test]
async fn prefetch_from_the_end_of_the_last_archive_fetches_the_first_inline_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tiered_store(dir.path()).await;
    let last = 2 * ARCHIVE_ENTRIES as u64 - 1;
    let (crossing, total) = replay_across(&store, last).await;
    assert_eq!(crossing, 0, "the next segment (first inline entry) was prefetched");
    // manifest 1 + archive 1 1 + two reads 2×2 + prefetch of the next segment 2 + prefetch
    // after the third read 2.
    assert_eq!(total, 10, "no GET beyond what the replay and its read-ahead need");
}

/// Two one-chunk segments (offsets 0..10 and 10..20) tiered, and a fault store over them.
async fn two_segments(dir: &std::path::Path) -> (RemoteStore, Arc<FaultStore>) {
    let store = RemoteStore::local_dir(dir).unwrap();
    tier(&store, "t", 0, segments(0, 2, 1)).await;
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    (store, faulty)
}

/// One GET at a time, a 1 MiB cache and no prefetch: every GET is one the test asked for.
fn no_prefetch(timeout: Duration) -> ReaderSettings {
    ReaderSettings { cache_bytes: 1 << 20, prefetch_bytes: 0, concurrency: 1, timeout, keyring: None }
}

/// A store that does not answer in time is an outage (`Timeout`, which callers report as
/// unavailable: HTTP 503), not damage: it was reported as a format error, HTTP 500 "corrupt".
#[tokio::test]
async fn a_ranged_get_that_times_out_is_a_timeout_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faulty) = two_segments(dir.path()).await;
    let reader = RemoteReader::new(store.with_store(faulty.clone()), no_prefetch(Duration::from_millis(100)));
    faulty.faults.latency_ms.store(400, Ordering::SeqCst);
    let err = reader.read_at("t", 0, 0).await.unwrap_err();
    assert!(matches!(err, tierlog_tiering::Error::Timeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("reader.timeout_ms") && text.contains("GET"), "{text}");
}

/// The caller's chunk check runs once per load, before the chunk is cached: repeated reads of
/// a cached chunk are served as checked without running it again. A chunk that fails it is
/// never served and never cached (every read fetches it again and fails again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_is_checked_once_when_it_enters_the_cache_and_never_served_unchecked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faulty) = two_segments(dir.path()).await;
    let settings = no_prefetch(Duration::from_secs(10));
    let checks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = checks.clone();
    let check: tierlog_tiering::remote_reader::ChunkCheck = Arc::new(move |raw: &[u8], first_offset: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        // Segment 1 (offsets 10..) plays a chunk whose batches are damaged.
        if first_offset == BATCH_OFFSETS { Err(format!("byte 0: bad CRC in {} bytes", raw.len())) } else { Ok(()) }
    });
    let reader = RemoteReader::with_check(store.with_store(faulty.clone()), settings, None, Some(check));
    for _ in 0..5 {
        let chunk = reader.read_at("t", 0, 3).await.unwrap().unwrap();
        assert!(chunk.checked);
        assert_eq!(chunk.raw, segment_bytes(0));
    }
    assert_eq!(checks.load(Ordering::SeqCst), 1, "checked once, served from the cache four times");
    assert_eq!(reader.stats.cache_hits.load(Ordering::SeqCst), 4);
    let gets = reader.stats.chunk_gets.load(Ordering::SeqCst);
    for _ in 0..3 {
        let err = reader.read_at("t", 0, BATCH_OFFSETS).await.unwrap_err().to_string();
        assert!(err.contains("chunk 0 byte 0: bad CRC"), "{err}");
    }
    // The damage is remembered, never cached as data: a client retrying the damaged offset
    // costs neither a GET nor a check each time.
    assert_eq!(checks.load(Ordering::SeqCst), 2, "the damaged chunk was checked once");
    assert_eq!(reader.stats.chunk_gets.load(Ordering::SeqCst), gets + 1, "and fetched once");
}

/// A chunk is decoded into the buffer of a chunk the cache gave up, but never into one a reader
/// still holds: the bytes a reader was served stay what the object holds while it reads them.
#[tokio::test]
async fn chunks_reuse_the_buffers_of_evicted_chunks_but_never_one_a_reader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::local_dir(dir.path()).unwrap();
    let batches = 100; // one chunk of 10 000 bytes per segment
    tier(&store, "t", 0, segments(0, 8, batches)).await;
    let settings = ReaderSettings { cache_bytes: 25_000, ..no_prefetch(Duration::from_secs(10)) };
    let reader = RemoteReader::new(store, settings);
    let segment_bytes = |s: u64| common::segment(s * batches * BATCH_OFFSETS, batches).raw;
    let held = reader.read_at("t", 0, 0).await.unwrap().unwrap();
    for s in 1..8 {
        let chunk = reader.read_at("t", 0, s * batches * BATCH_OFFSETS).await.unwrap().unwrap();
        assert_eq!(chunk.raw, segment_bytes(s), "segment {s} reads back unchanged");
    }
    assert_eq!(held.raw, segment_bytes(0), "the chunk a reader held was decoded into");
    // Two chunks fit the cache. The read of segment 2 evicts the held chunk, whose buffer is
    // not reused; the reads of segments 3..=7 each evict one nobody holds, and reuse it.
    let reused = reader.stats.buffers_reused.load(Ordering::Relaxed);
    assert_eq!(reused, 5, "buffers reused");
}

/// A chunk whose stored bytes fail their CRC32C (rotted, or damaged in transit) is refused
/// before it takes room in the cache: a client retrying it does not flush the chunks cached.
#[tokio::test]
async fn retrying_a_damaged_chunk_does_not_evict_the_cached_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::local_dir(dir.path()).unwrap();
    let batches = 100; // one chunk of 10 000 bytes per segment
    let manifest = tier(&store, "t", 0, segments(0, 3, batches)).await;
    let object = dir.path().join(manifest.entries[0].key.as_str());
    let mut bytes = std::fs::read(&object).unwrap();
    bytes[20] ^= 0x40;
    std::fs::write(&object, bytes).unwrap();
    let settings = ReaderSettings { cache_bytes: 25_000, ..no_prefetch(Duration::from_secs(10)) };
    let reader = RemoteReader::new(store, settings);
    let first = |s: u64| s * batches * BATCH_OFFSETS;
    for s in [1, 2] {
        reader.read_at("t", 0, first(s)).await.unwrap().unwrap();
    }
    for _ in 0..3 {
        let err = reader.read_at("t", 0, 0).await.unwrap_err().to_string();
        assert!(err.contains("CRC32C"), "{err}");
    }
    let gets = reader.stats.chunk_gets.load(Ordering::Relaxed);
    for s in [1, 2] {
        reader.read_at("t", 0, first(s)).await.unwrap().unwrap();
    }
    assert_eq!(reader.stats.chunk_gets.load(Ordering::Relaxed), gets, "a cached chunk was evicted");
}

/// A load that panics (here, the chunk check) fails the reads waiting on it, and the next read
/// of that chunk loads it again: the panic is not kept as the chunk's answer for the reader's
/// lifetime, and the room it took in the cache is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_panics_is_not_kept_as_the_answer_for_that_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faulty) = two_segments(dir.path()).await;
    let panicked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = panicked.clone();
    let check: tierlog_tiering::remote_reader::ChunkCheck = Arc::new(move |_: &[u8], _: u64| {
        if !once.swap(true, Ordering::SeqCst) {
            panic!("a check that panics once");
        }
        Ok(())
    });
    // Room for the two segments' chunks (100 bytes each) and not a third.
    let settings = ReaderSettings { cache_bytes: 250, ..no_prefetch(Duration::from_secs(10)) };
    let reader = RemoteReader::with_check(store.with_store(faulty.clone()), settings, None, Some(check));
    let err = reader.read_at("t", 0, 3).await.unwrap_err().to_string();
    assert!(panicked.load(Ordering::SeqCst) && err.contains("load task"), "{err}");
    let chunk = reader.read_at("t", 0, 3).await.unwrap().unwrap();
    assert_eq!(chunk.raw, segment_bytes(0));
    // The cache still takes both chunks: the panicked load left no room reserved.
    reader.read_at("t", 0, BATCH_OFFSETS).await.unwrap().unwrap();
    let gets = reader.stats.chunk_gets.load(Ordering::SeqCst);
    reader.read_at("t", 0, 3).await.unwrap().unwrap();
    assert_eq!(reader.stats.chunk_gets.load(Ordering::SeqCst), gets, "segment 0 was evicted");
}
