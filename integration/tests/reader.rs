//! The unified reader against a real S3 server, with requests counted by a wrapper: request
//! budgets, seamless reads across the tier boundary, handoff when retention deletes a local
//! segment under a reader, time windows checked against an in-memory oracle, and corrupt or
//! missing objects.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::ObjectStoreExt;
use proptest::prelude::*;
use tierlog::reader::{Reader, settings};
use tierlog::tier::Tiering;
use tierlog::{Log, Record};
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::config;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::remote_reader::RemoteReader;
use tierlog_tiering::store::RemoteStore;

const PAYLOAD: usize = 200;

fn record(i: u64, timestamp: i64) -> Record {
    let mut r = tierlog::sample::payment_event(i, timestamp, PAYLOAD);
    r.timestamp = timestamp;
    r
}

/// A log whose first `tiered` records are remote-only and the rest local, 256 KiB segments
/// and 64 KiB chunks (so segments hold several chunks).
struct TwoTierLog {
    _dir: tempfile::TempDir,
    log: Log,
    store: RemoteStore,
    timestamps: Vec<i64>,
}

async fn two_tier_log(s3: &S3Target, timestamps: Vec<i64>, tiered_fraction: f64) -> TwoTierLog {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tiering.chunk_bytes = 64 * 1024; // the minimum allowed: 4 chunks per segment here
    cfg.segment.max_bytes = 256 * 1024;
    cfg.tiering.local_retention_bytes = 0;
    let log = Log::open(cfg).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let tiered = (timestamps.len() as f64 * tiered_fraction) as usize;
    for (i, ts) in timestamps[..tiered].iter().enumerate() {
        p.append(&[record(i as u64, *ts)], 0).unwrap();
    }
    let store = s3.store(&s3.unique_prefix("reader"));
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports[0].error.is_none(), "{reports:?}");
    for (i, ts) in timestamps.iter().enumerate().skip(tiered) {
        p.append(&[record(i as u64, *ts)], 0).unwrap();
    }
    assert_eq!(p.start_offset(), tiered as u64, "older part is remote-only");
    TwoTierLog { _dir: dir, log, store, timestamps }
}

fn counting_reader(t: &TwoTierLog, prefetch_bytes: u64) -> (Reader, Arc<FaultStore>, Arc<RemoteReader>) {
    let faulty = Arc::new(FaultStore::new(t.store.store.clone()));
    let mut s = settings(t.log.config());
    s.prefetch_bytes = prefetch_bytes;
    let remote = RemoteReader::new(t.store.with_store(faulty.clone()), s);
    (Reader::with_remote(t.log.clone(), remote.clone()), faulty, remote)
}

async fn read_range(reader: &Reader, log: &Log, from: u64, to: u64) -> Vec<(u64, i64)> {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut out = Vec::new();
    let mut next = from;
    while next < to {
        let records = reader.read(&p, next, 64 * 1024).await.unwrap();
        if records.is_empty() {
            break;
        }
        for r in records.into_iter().take_while(|r| r.offset < to) {
            assert_eq!(r.offset, next, "dense, no gap, no duplicate");
            out.push((r.offset, r.record.timestamp));
            next += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_seeks_cost_two_requests_then_one_and_replay_one_get_per_chunk() {
    let s3 = S3Target::start();
    let t = two_tier_log(&s3, (0..3000).map(|i| 1_000 + i * 10).collect(), 0.7).await;
    let (reader, faulty, remote) = counting_reader(&t, 0);
    let p = t.log.topic("t").unwrap().partition(0).unwrap().clone();
    remote.manifest("t", 0).await.unwrap(); // "with the manifest loaded"
    let [_, gets0, heads0, lists0, _] = faulty.counters.snapshot();

    let first = reader.read(&p, 1234, 1 << 20).await.unwrap();
    assert_eq!(first[0].offset, 1234);
    let [_, gets1, heads1, lists1, _] = faulty.counters.snapshot();
    assert!(gets1 - gets0 <= 2, "cold seek: {} GETs", gets1 - gets0);
    assert_eq!((heads1, lists1), (heads0, lists0), "no HEAD or LIST on the read path");
    let seek_bytes = remote.stats.bytes_fetched.load(Ordering::SeqCst);
    let manifest = remote.manifest("t", 0).await.unwrap();
    let entry = manifest.entries.iter().find(|e| e.base_offset <= 1234 && 1234 <= e.last_offset).unwrap();
    let object = t.store.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap();
    let index = tierlog_tiering::segment_object::parse_index_from_object(&object).unwrap();
    let chunk = index.chunk_for_offset(1234).unwrap();
    assert_eq!(
        seek_bytes,
        u64::from(chunk.compressed_len) + entry.index_len,
        "a seek fetches one compressed chunk and the index"
    );
    assert!((entry.index_len as f64) < 0.1 * f64::from(chunk.compressed_len), "the index is small next to a chunk");

    // Another offset of the same segment, other chunk: the index is cached → 1 GET.
    let next_chunk = first.last().unwrap().offset + 1;
    reader.read(&p, next_chunk, 1 << 20).await.unwrap();
    assert_eq!(faulty.counters.snapshot()[1] - gets1, 1, "seek with cached index");
    // The same chunk again: served from the cache, no request.
    let gets2 = faulty.counters.snapshot()[1];
    reader.read(&p, 1240, 1 << 20).await.unwrap();
    assert_eq!(faulty.counters.snapshot()[1], gets2);

    // Point in time, cold reader: at most 2 requests.
    let (reader, faulty, remote) = counting_reader(&t, 0);
    remote.manifest("t", 0).await.unwrap();
    let before = faulty.counters.snapshot()[1];
    assert_eq!(reader.offset_for_time(&p, 1_000 + 777 * 10).await.unwrap(), 777);
    assert!(faulty.counters.snapshot()[1] - before <= 2);

    // Sequential replay of the remote part: one GET per chunk, never two (prefetch included).
    let (reader, faulty, remote) = counting_reader(&t, 1 << 20);
    let replay = read_range(&reader, &t.log, 0, 3000).await;
    assert_eq!(replay.len(), 3000);
    let chunk_gets = remote.stats.chunk_gets.load(Ordering::SeqCst);
    let index_gets = remote.stats.index_gets.load(Ordering::SeqCst);
    let manifest = remote.manifest("t", 0).await.unwrap();
    let chunks: u64 = manifest.entries.iter().map(|e| u64::from(e.chunks)).sum();
    assert_eq!(chunk_gets, chunks, "every chunk fetched exactly once");
    assert_eq!(index_gets, manifest.entries.len() as u64, "every index fetched once");
    assert!(faulty.counters.snapshot()[1] <= chunks + manifest.entries.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_inside_a_segment_that_retention_deletes_continues_from_the_remote_copy() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tiering.local_retention_bytes = u64::MAX >> 2; // keep everything local at first
    cfg.tiering.local_retention_ms = 1 << 50;
    let log = Log::open(cfg.clone()).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for i in 0..2000u64 {
        p.append(&[record(i, i as i64)], 0).unwrap();
    }
    let store = s3.store(&s3.unique_prefix("handoff"));
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    assert_eq!(p.start_offset(), 0, "still local");

    // A separate read-only view, as a `consume` process would have.
    let ro = Log::open_read_only(cfg.clone()).unwrap();
    let reader = Reader::with_remote(ro.clone(), RemoteReader::new(store.clone(), settings(&cfg)));
    let rp = ro.topic("t").unwrap().partition(0).unwrap().clone();
    let mut got = reader.read(&rp, 0, 4096).await.unwrap();
    assert!(got.last().unwrap().offset < 1999, "the reader is inside the first segments");

    // Retention deletes every tiered local segment under the reader.
    let mut cfg2 = cfg.clone();
    cfg2.tiering.local_retention_bytes = 0;
    drop(tiering);
    drop(log);
    let log = Log::open(cfg2).unwrap();
    let tiering = Tiering::start_with(log.clone(), store).await.unwrap();
    let deleted = tiering.run_once(None, false).await.unwrap()[0].deleted_local_segments;
    assert!(deleted > 0);
    rp.refresh().unwrap();
    let mut next = got.last().unwrap().offset + 1;
    while next < 2000 {
        let more = reader.read(&rp, next, 4096).await.unwrap();
        assert_eq!(more[0].offset, next, "no gap at the handoff");
        next = more.last().unwrap().offset + 1;
        got.extend(more);
    }
    assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..2000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_chunks_and_missing_objects_are_reported_by_key_never_as_records() {
    let s3 = S3Target::start();
    let t = two_tier_log(&s3, (0..1500).collect(), 0.6).await;
    let p = t.log.topic("t").unwrap().partition(0).unwrap().clone();
    let manifest = tierlog_integration::scenarios::manifest(&t.store, "t", 0).await;
    let victim = &manifest.entries[0];
    let object = t.store.store.get(&victim.key.as_str().into()).await.unwrap().bytes().await.unwrap();
    let mut damaged = object.to_vec();
    damaged[20] ^= 0xff; // inside chunk 0
    t.store.store.put(&victim.key.as_str().into(), damaged.into()).await.unwrap();
    let (reader, _, _) = counting_reader(&t, 0);
    let err = reader.read(&p, 0, 4096).await.unwrap_err().to_string();
    assert!(err.contains(&victim.key) && err.contains("chunk 0"), "{err}");

    let missing = &manifest.entries[1];
    t.store.store.delete(&missing.key.as_str().into()).await.unwrap();
    let err = reader.read(&p, missing.base_offset, 4096).await.unwrap_err().to_string();
    assert!(err.contains(&missing.key) && err.contains("missing"), "{err}");

    // Local data is unaffected.
    let local = reader.read(&p, p.start_offset(), 4096).await.unwrap();
    assert_eq!(local[0].offset, p.start_offset());
}

fn window_case() -> impl Strategy<Value = (Vec<i64>, Vec<(i64, i64)>)> {
    // Mostly increasing timestamps with out-of-order producers, and random windows.
    (proptest::collection::vec(-50i64..100, 600..1200), proptest::collection::vec((0i64..60_000, 0i64..60_000), 1..6))
        .prop_map(|(steps, windows)| {
            let mut t = 0i64;
            let timestamps = steps.into_iter().map(|s| {
                t += s.max(0);
                t + s.min(0) * 3
            });
            (timestamps.collect(), windows.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn replay_windows_match_an_oracle_and_repeat_exactly((timestamps, windows) in window_case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let s3 = S3Target::start();
            let t = two_tier_log(&s3, timestamps, 0.5).await;
            let (reader, _, _) = counting_reader(&t, 1 << 20);
            let p = t.log.topic("t").unwrap().partition(0).unwrap().clone();
            let end = t.timestamps.len() as u64;
            let oracle_offset = |time: i64| t.timestamps.iter().position(|ts| *ts >= time).map_or(end, |i| i as u64);
            for (from, to) in windows {
                let (a, b) = (reader.offset_for_time(&p, from).await.unwrap(), reader.offset_for_time(&p, to).await.unwrap());
                assert_eq!((a, b), (oracle_offset(from), oracle_offset(to)), "window [{from}, {to})");
                let first = read_range(&reader, &t.log, a, b).await;
                let expected: Vec<(u64, i64)> = (a..b).map(|o| (o, t.timestamps[o as usize])).collect();
                assert_eq!(first, expected);
                assert_eq!(read_range(&reader, &t.log, a, b).await, first, "the same window returns the same records");
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_load_completes_and_fills_the_cache_after_its_reader_gave_up() {
    let s3 = S3Target::start();
    let t = two_tier_log(&s3, (0..1500).collect(), 0.6).await;
    let (reader, faulty, remote) = counting_reader(&t, 0);
    remote.manifest("t", 0).await.unwrap();
    let p = t.log.topic("t").unwrap().partition(0).unwrap().clone();
    faulty.faults.latency_ms.store(300, Ordering::SeqCst);
    // The client stops waiting long before the store answers.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), reader.read(&p, 10, 4096)).await;
    assert!(gave_up.is_err(), "the read should still be waiting");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    faulty.faults.latency_ms.store(0, Ordering::SeqCst);
    assert_eq!(remote.stats.chunk_gets.load(Ordering::SeqCst), 1, "the abandoned load ran to completion");
    let gets = faulty.counters.snapshot()[1];
    let records = reader.read(&p, 10, 4096).await.unwrap();
    assert_eq!(records[0].offset, 10);
    assert_eq!(faulty.counters.snapshot()[1], gets, "served from the cache the abandoned load filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_lookups_see_segments_tiered_after_the_reader_loaded_the_manifest() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let log = Log::open(cfg.clone()).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let store = s3.store(&s3.unique_prefix("stale"));
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    let append = |from: u64| {
        for i in from..from + 1000 {
            p.append(&[record(i, i as i64)], 0).unwrap();
        }
    };
    append(0);
    tiering.run_once(None, true).await.unwrap();
    let reader = Reader::with_remote(log.clone(), RemoteReader::new(store.clone(), settings(&cfg)));
    assert_eq!(reader.offset_for_time(&p, 500).await.unwrap(), 500, "loads the manifest");
    // The writer tiers and deletes more while the reader keeps its manifest in memory.
    append(1000);
    tiering.run_once(None, true).await.unwrap();
    assert_eq!(p.start_offset(), 2000, "the second thousand is remote-only now");
    assert_eq!(reader.offset_for_time(&p, 1500).await.unwrap(), 1500);
    assert_eq!(reader.read(&p, 1700, 4096).await.unwrap()[0].offset, 1700);
}
