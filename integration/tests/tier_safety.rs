//! Tiering never trusts one witness alone, against a real S3 server: a second data directory
//! cannot splice its history onto another's chain, one broken partition does not stop the
//! others, and a local segment is deleted only once its committed object is seen in the bucket.

use object_store::ObjectStoreExt;
use tierlog::Log;
use tierlog::tier::{self, Tiering};
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::{config, filled_log, manifest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_with_other_records_at_the_same_offsets_cannot_extend_another_writers_chain() {
    let s3 = S3Target::start();
    let prefix = s3.unique_prefix("splice");
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Tiering::start_with(filled_log(a_dir.path(), "t", 1, 300), s3.store(&prefix)).await.unwrap();
    assert!(a.run_once(None, true).await.unwrap()[0].error.is_none());
    let remote = manifest(&s3.store(&prefix), "t", 0).await;
    drop(a);
    // B: different records of the same sizes, so its segments line up with A's exactly, then
    // more records past A's end, sealed: the old code uploaded them onto A's chain.
    let mut b_config = config(b_dir.path());
    b_config.tiering.local_retention_bytes = u64::MAX >> 2;
    let b_log = Log::open(b_config).unwrap();
    let p = b_log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    for chunk in (0..400u64).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(i + 7_000_000, 1_700_000_000_000, 300)).collect();
        p.append(&records, 0).unwrap();
    }
    assert!(p.sealed_segments().iter().any(|s| s.next_offset == remote.next_offset()), "segments line up with A's");
    let b = Tiering::start_with(b_log.clone(), s3.store(&prefix)).await.unwrap();
    let report = b.run_once(None, true).await.unwrap();
    let error = report[0].error.clone().expect("B must refuse to extend A's chain");
    // (Refused before any comparison now: the chain's newest version names another writer.)
    assert!(error.contains("fenced") && error.contains(&remote.writer.id), "{error}");
    assert_eq!(manifest(&s3.store(&prefix), "t", 0).await, remote, "A's chain is unchanged");
    assert_eq!(report[0].uploaded_segments, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_partition_whose_manifest_cannot_be_read_does_not_stop_tiering_of_the_others() {
    let s3 = S3Target::start();
    let store = s3.store(&s3.unique_prefix("isolate"));
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path(), "t", 3, 300);
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    drop(tiering);
    // Damage partition 0's latest manifest version in place, then produce more everywhere.
    let m0 = manifest(&store, "t", 0).await;
    let key = tierlog_tiering::keys::manifest_key(&store, "t", 0, m0.manifest_version);
    store.store.put(&key, bytes::Bytes::from_static(b"{ not a manifest").into()).await.unwrap();
    for p in 0..3 {
        let records: Vec<_> =
            (0..300).map(|i| tierlog::sample::payment_event(10_000 + i, 1_700_000_000_000, 300)).collect();
        log.topic("t").unwrap().partition(p).unwrap().append(&records, 0).unwrap();
    }
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.expect("a pass reports per partition");
    assert_eq!(reports.len(), 3);
    let error = reports[0].error.clone().expect("partition 0 fails");
    assert!(error.contains(key.as_ref()), "names the object: {error}");
    for r in &reports[1..] {
        assert!(r.error.is_none() && r.uploaded_segments > 0, "{r:?}");
    }
    let p0 = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(tier::read_partition_state(&p0).last_error.as_deref(), Some(error.as_str()), "recorded in its state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_retention_keeps_a_segment_whose_committed_object_is_gone_from_the_bucket() {
    let s3 = S3Target::start();
    let store = s3.store(&s3.unique_prefix("head"));
    let dir = tempfile::tempdir().unwrap();
    {
        let mut keep = config(dir.path());
        keep.tiering.local_retention_bytes = u64::MAX >> 2;
        keep.tiering.local_retention_ms = u64::MAX >> 2;
        let log = Log::open(keep).unwrap();
        let topic = log.create_topic("t", 1).unwrap();
        let records: Vec<_> = (0..300).map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000, 300)).collect();
        topic.partition(0).unwrap().append(&records, 0).unwrap();
        let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
        assert!(tiering.run_once(None, true).await.unwrap()[0].error.is_none());
    }
    let m = manifest(&store, "t", 0).await;
    let lost = &m.entries[0];
    store.store.delete(&lost.key.as_str().into()).await.unwrap();
    // Reopened with retention 0, every committed segment is due for local deletion.
    let log = Log::open(config(dir.path())).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    let report = tiering.run_once(None, false).await.unwrap();
    let error = report[0].error.clone().expect("the missing object stops local retention");
    assert!(error.contains(&lost.key), "{error}");
    assert_eq!(p.start_offset(), 0, "the only copy of offsets {}..={} is kept", lost.base_offset, lost.last_offset);
}
