//! End-to-end tiering against a real S3 HTTP server (in-process s3s-fs by default; Garage or
//! moto in CI through TIERLOG_TEST_S3_*): segments move to the bucket, the manifest lists
//! them, objects decode to the local bytes, and bad configuration fails fast and clearly.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use object_store::ObjectStoreExt;
use tierlog::Log;
use tierlog::tier::{self, Tiering};
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::{config, filled_log, local_segments, manifest};
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::segment_object;
use tierlog_tiering::store::RemoteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_run_moves_sealed_segments_to_s3_and_objects_decode_to_the_local_bytes() {
    tierlog_integration::scenarios::tier_round_trip(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_prefix_is_fenced() {
    let s3 = S3Target::start();
    if !s3.conditional_writes {
        eprintln!("{} ignores conditional writes: fencing is unavailable there (reported by the probe)", s3.provider);
        return;
    }
    let prefix = s3.unique_prefix("fence");
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Little enough data that nothing is sealed yet: both writers load the empty manifest
    // before either commits, as two writers started together would.
    let a = Tiering::start_with(filled_log(a_dir.path(), "t", 1, 100), s3.store(&prefix)).await.unwrap();
    let b = Tiering::start_with(filled_log(b_dir.path(), "t", 1, 100), s3.store(&prefix)).await.unwrap();
    assert_eq!(a.run_once(None, false).await.unwrap()[0].uploaded_segments, 0);
    assert_eq!(b.run_once(None, false).await.unwrap()[0].uploaded_segments, 0);
    let first = a.run_once(None, true).await.unwrap();
    assert!(first[0].error.is_none(), "{first:?}");
    let second = b.run_once(None, true).await.unwrap();
    let error = second[0].error.clone().expect("the second writer must be fenced");
    assert!(error.contains("fenced"), "{error}");
    assert!(
        b_dir.path().join("topics/t/0").read_dir().unwrap().count() > 2,
        "the fenced writer keeps its local segments"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_never_deletes_local_segments_another_data_dir_tiered() {
    let s3 = S3Target::start();
    let prefix = s3.unique_prefix("foreign");
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Tiering::start_with(filled_log(a_dir.path(), "t", 1, 300), s3.store(&prefix)).await.unwrap();
    assert!(a.run_once(None, true).await.unwrap()[0].error.is_none());
    // B holds different data at the same offsets and starts after A committed.
    let b_log = Log::open(config(b_dir.path())).unwrap();
    let p = b_log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for i in 0..300u64 {
        p.append(&[tierlog::sample::payment_event(i + 1_000_000, 5, 300)], 0).unwrap();
    }
    let sealed_before = p.sealed_segments().len();
    let b = Tiering::start_with(b_log.clone(), s3.store(&prefix)).await.unwrap();
    let report = b.run_once(None, false).await.unwrap();
    let error = report[0].error.clone().expect("B must refuse to trust A's manifest for its own data");
    assert!(error.contains("fenced") && error.contains("another data directory"), "{error}");
    assert!(p.sealed_segments().len() >= sealed_before, "nothing of B is deleted");
    assert_eq!(p.start_offset(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_put_failures_and_ambiguous_timeouts_lose_nothing_and_commit_once() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path(), "t", 1, 400);
    log.topic("t").unwrap().partition(0).unwrap().seal_active(0).unwrap();
    let before = local_segments(&log, "t", 0);
    let base = s3.store(&s3.unique_prefix("faults"));
    let faulty = Arc::new(FaultStore::new(base.store.clone()));
    let tiering = Tiering::start_with(log.clone(), base.with_store(faulty.clone())).await.unwrap();
    faulty.faults.fail_puts.store(2, Ordering::SeqCst);
    faulty.faults.timeout_after_store_puts.store(2, Ordering::SeqCst);
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports[0].error.is_none(), "{reports:?}");
    let m = manifest(&base, "t", 0).await;
    assert_eq!(
        m.entries.iter().map(|e| e.base_offset).collect::<Vec<_>>(),
        before.keys().copied().collect::<Vec<_>>(),
        "each segment committed exactly once"
    );
    for entry in &m.entries {
        let object = base.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap();
        assert_eq!(segment_object::decode_object(&object).unwrap(), before[&entry.base_offset]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_failure_keeps_the_local_segment_and_is_visible_in_status_state() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path(), "t", 1, 300);
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    p.seal_active(0).unwrap();
    let sealed_before = p.sealed_segments().len();
    let base = s3.store(&s3.unique_prefix("hard"));
    let faulty = Arc::new(FaultStore::new(base.store.clone()));
    let tiering = Tiering::start_with(log.clone(), base.with_store(faulty.clone())).await.unwrap();
    *faulty.faults.fail_puts_matching.lock().unwrap() = Some("/segments/".into());
    let reports = tiering.run_once(None, true).await.unwrap();
    let error = reports[0].error.clone().expect("uploads must fail");
    assert!(error.contains("injected fault"), "{error}");
    assert_eq!(p.sealed_segments().len(), sealed_before, "nothing is deleted locally");
    let state = tier::read_partition_state(&p);
    assert!(state.last_error.unwrap().contains("injected fault"));
    // Once the store recovers, the next run catches up.
    *faulty.faults.fail_puts_matching.lock().unwrap() = None;
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports[0].error.is_none() && reports[0].uploaded_segments == sealed_before, "{reports:?}");
    assert!(tier::read_partition_state(&p).last_error.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_remote_configuration_fails_fast_naming_endpoint_and_bucket() {
    let s3 = S3Target::start();
    // Missing bucket.
    let mut missing = s3.remote_config("x");
    missing.url = "s3://no-such-bucket-tierlog/x".into();
    let store = RemoteStore::connect_s3_with_keys(&missing, &s3.access_key, &s3.secret_key).unwrap();
    let err = store.check().await.unwrap_err().to_string();
    assert!(err.contains("no-such-bucket-tierlog") && err.contains(&s3.endpoint), "{err}");
    assert!(err.contains("bucket does not exist"), "{err}");

    // Wrong credentials (where the server checks them at all).
    if s3.authenticates {
        let store = RemoteStore::connect_s3_with_keys(&s3.remote_config("x"), &s3.access_key, "wrong-secret").unwrap();
        let err = store.check().await.unwrap_err().to_string();
        assert!(err.contains("credentials were refused"), "{err}");
        assert!(!err.contains("wrong-secret"), "secrets never appear in errors: {err}");
    }

    // Unreachable endpoint.
    let mut unreachable = s3.remote_config("x");
    unreachable.endpoint = "http://127.0.0.1:9".into();
    let store = RemoteStore::connect_s3_with_keys(&unreachable, &s3.access_key, &s3.secret_key).unwrap();
    let err = store.check().await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:9") && err.contains("unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_task_tiers_new_segments_until_stopped() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tiering.interval_ms = 100;
    let log = Log::open(cfg).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let store = s3.store(&s3.unique_prefix("bg"));
    let tiering = Arc::new(Tiering::start_with(log.clone(), store.clone()).await.unwrap());
    let background = tiering.spawn();
    for i in 0..400u64 {
        p.append(&[tierlog::sample::payment_event(i, i as i64, 300)], 0).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while manifest(&store, "t", 0).await.entries.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "background tiering made no progress");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    background.stop().await;
    assert!(manifest(&store, "t", 0).await.next_offset() <= p.end_offset());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_above_the_multipart_threshold_upload_in_parts_and_decode_exactly() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment.max_bytes = 16 * 1024 * 1024;
    cfg.tiering.multipart_threshold_bytes = 5 * 1024 * 1024; // S3's smallest part size
    cfg.tiering.chunk_bytes = 1024 * 1024;
    let log = Log::open(cfg).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    // Incompressible values, so the object stays above the threshold after zstd.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..120 {
        let value: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        p.append(&[tierlog::Record { timestamp: i, key: None, value, headers: vec![] }], 0).unwrap();
    }
    p.seal_active(0).unwrap();
    let before = local_segments(&log, "t", 0);
    let store = s3.store(&s3.unique_prefix("multipart"));
    let counting = Arc::new(FaultStore::new(store.store.clone()));
    let tiering = Tiering::start_with(log.clone(), store.with_store(counting.clone())).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports[0].error.is_none(), "{reports:?}");
    let m = manifest(&store, "t", 0).await;
    let entry = &m.entries[0];
    assert!(entry.object_bytes > 5 * 1024 * 1024, "object of {} bytes should have gone multipart", entry.object_bytes);
    assert_eq!(counting.counters.multipart_uploads.load(Ordering::SeqCst), 1, "one multipart upload");
    let object = store.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap();
    assert_eq!(segment_object::decode_object(&object).unwrap(), before[&entry.base_offset]);
}

/// The catalog and group snapshots make the bucket enough to restore from, but a failure
/// writing them never stops tiering: segments still go up, and the next pass writes them.
/// A PUT that lands but reports a timeout leaves one version, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_group_snapshot_failures_never_stop_tiering_and_are_retried() {
    use tierlog_tiering::catalog;
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path(), "t", 1, 300);
    tierlog::groups::commit(log.data_dir(), "g", "t", &std::collections::BTreeMap::from([(0, 10)])).unwrap();
    let base = s3.store(&s3.unique_prefix("catalog-faults"));
    let faulty = Arc::new(FaultStore::new(base.store.clone()));
    let tiering = Tiering::start_with(log.clone(), base.with_store(faulty.clone())).await.unwrap();
    *faulty.faults.fail_puts_matching.lock().unwrap() = Some("/catalog/".into());
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports[0].error.is_none() && reports[0].uploaded_segments > 0, "{reports:?}");
    assert_eq!(catalog::latest_catalog(&base, 0).await.unwrap(), None);
    assert_eq!(catalog::latest_group_snapshot(&base, 0).await.unwrap().unwrap().groups[0].offsets[&0], 10);

    *faulty.faults.fail_puts_matching.lock().unwrap() = None;
    faulty.faults.timeout_after_store_puts.store(1, Ordering::SeqCst); // the catalog PUT lands, reports failure
    tiering.run_once(None, true).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    let newest = catalog::latest_catalog(&base, 0).await.unwrap().expect("written once the store recovers");
    assert_eq!((newest.version, newest.topics.len()), (1, 1), "the landed version is recognised, not written again");
    // Nothing new: a pass costs no request for the catalog or the group offsets.
    tiering.run_once(None, false).await.unwrap();
    let before = faulty.counters.snapshot();
    tiering.run_once(None, false).await.unwrap();
    assert_eq!(faulty.counters.snapshot(), before, "an idle pass reads nothing from the bucket");
}

/// A take-over PUT that lands but reports a timeout is recognised as ours on retry: one
/// take-over version per partition, and the restore succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_over_whose_put_lands_but_reports_failure_is_committed_once() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("take-over-faults");
    let log = tierlog_integration::scenarios::tiered_history(&s3, dir.path(), &prefix, 2, None).await;
    let config = log.config().clone();
    let old_writer = manifest(&s3.store(&prefix), "t", 0).await.writer;
    drop(log);
    let base = s3.store(&prefix);
    let faulty = Arc::new(FaultStore::new(base.store.clone()));
    faulty.faults.timeout_after_store_puts.store(1, Ordering::SeqCst);
    let restored = tierlog::config::Config { data_dir: dir.path().join("restored"), ..config };
    let options = tierlog::restore::RestoreOptions { take_over: true, ..Default::default() };
    let report =
        tierlog::restore::restore(restored, &base.with_store(faulty.clone()), &options, &|_, _| {}).await.unwrap();
    assert!(report.took_over);
    let newest = manifest(&base, "t", 0).await;
    assert_eq!(newest.manifest_version, 3, "versions 1-2 by the old writer, one take-over version");
    assert_eq!(newest.writer.id, report.writer_id);
    assert_ne!(newest.writer.id, old_writer.id);
}
