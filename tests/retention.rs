//! Remote retention through the tiering driver on a `file://` bucket: what expires, what
//! readers are told below the new start (a reader holding the version before the expiry
//! included), deletion only after the grace period, a failed DELETE resumed by the next run,
//! and a bucket that still verifies deep. (Crashes at every step: the simulation.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use object_store::ObjectStoreExt;
use tierlog::config::Config;
use tierlog::host::{Clock, Host};
use tierlog::reader::Reader;
use tierlog::tier::{self, Tiering};
use tierlog::{Error, Log, Record};
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::manifest;
use tierlog_tiering::verify::{self, VerifyOptions};

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;
const GRACE: i64 = 60_000;

fn config(root: &std::path::Path) -> Config {
    let mut config = Config { data_dir: root.join("data"), ..Config::default() };
    config.remote.url = format!("file://{}", root.join("bucket").display());
    config.tiering.local_retention_bytes = 0; // every tiered segment leaves local disk
    config.tiering.remote_retention_ms = 2 * DAY;
    config.tiering.expiry_grace_ms = GRACE as u64;
    config
}

/// A writer whose clock the test moves.
fn open(config: Config, time: &Arc<AtomicI64>) -> Log {
    let host = Host::new(tierlog::disk::os(), Clock::manual(time.clone()));
    Log::open_on(host, config).unwrap()
}

fn append(log: &Log, from: u64, n: u64, timestamp: i64) {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let records: Vec<Record> = (from..from + n)
        .map(|i| Record { timestamp, value: format!("v{i}").into_bytes(), ..Record::default() })
        .collect();
    p.append(&records, timestamp).unwrap();
}

/// A writer of topic `t` that tiered 10 records appended at T0, its tiering through `faulty`
/// (wrapping the configured bucket) when given.
async fn tiered_writer(config: Config, time: &Arc<AtomicI64>, faulty: Option<Arc<FaultStore>>) -> (Log, Tiering) {
    let log = open(config, time);
    log.create_topic("t", 1).unwrap();
    let store = tier::connect(log.config()).await.unwrap();
    let store = faulty.map_or(store.clone(), |faulty| store.with_store(faulty));
    let tiering = Tiering::start_with(log.clone(), store).await.unwrap();
    append(&log, 0, 10, T0);
    tiering.run_once(None, true).await.unwrap();
    (log, tiering)
}

/// Ten days on: the writer's clock, and 10 more records appended then.
fn ten_days_later(log: &Log, time: &AtomicI64) {
    time.fetch_add(10 * DAY, Ordering::SeqCst);
    append(log, 10, 10, T0 + 10 * DAY);
}

async fn first_value(reader: &Reader, log: &Log, offset: u64) -> Result<String, Error> {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let records = reader.read(&p, offset, 1).await?;
    Ok(String::from_utf8(records[0].record.value.clone()).unwrap())
}

async fn problems(log: &Log) -> (Vec<String>, verify::Summary) {
    let store = tier::connect(log.config()).await.unwrap();
    let found = std::sync::Mutex::new(Vec::new());
    let on_event = |event: verify::Event<'_>| {
        if let verify::Event::Problem(p) = event {
            found.lock().unwrap().push(p.detail.clone());
        }
    };
    let options = VerifyOptions { deep: true, concurrency: 2, ..VerifyOptions::default() };
    let summary = verify::verify(&store, &options, tierlog::verify::segment_check(), &on_event).await.unwrap();
    (found.into_inner().unwrap(), summary)
}

#[tokio::test]
async fn expired_segments_leave_the_log_start_readers_say_so_and_objects_go_after_the_grace() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let log = open(config(root.path()), &time);
    log.create_topic("t", 1).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    append(&log, 0, 10, T0);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].uploaded_segments, report[0].expired_segments), (1, 0), "{report:?}");
    // A reader that loads the manifest now keeps this version in memory.
    let stale = Reader::new(log.clone());
    assert_eq!(first_value(&stale, &log, 0).await.unwrap(), "v0");

    // Ten days later: the first segment's records are older than retention.ms (2 days).
    ten_days_later(&log, &time);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].expired_segments, report[0].deleted_expired_objects), (1, 0), "{report:?}");
    let store = tier::connect(log.config()).await.unwrap();
    let current = manifest::load_version(&store, "t", 0, manifest::latest_version(&store, "t", 0, 0).await.unwrap())
        .await
        .unwrap();
    let expired = current.expired.clone().unwrap();
    assert_eq!((expired.before_offset, expired.segments), (10, 1));
    let expired_key = object_store::path::Path::from(expired.pending_deletes[0].key.as_str());
    assert!(store.store.head(&expired_key).await.is_ok(), "kept through the grace period");

    let fresh = Reader::new(log.clone());
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(fresh.start_offset(&p).await.unwrap(), 10);
    match first_value(&fresh, &log, 3).await {
        Err(e @ Error::OffsetBelowStart { start: 10, .. }) => {
            let text = e.to_string();
            assert!(text.contains("expired by retention (retention.ms=172800000)"), "{text}");
            assert!(text.contains("earliest available offset is 10"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(first_value(&fresh, &log, 10).await.unwrap(), "v10");

    // After the grace period the next run deletes the object; a reader still holding the old
    // version is told the offset expired (it reloads the manifest), never "missing" or "corrupt".
    time.fetch_add(GRACE, Ordering::SeqCst);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].deleted_expired_objects, 1, "{report:?}");
    assert!(store.store.head(&expired_key).await.is_err(), "deleted");
    match first_value(&stale, &log, 0).await {
        Err(Error::OffsetBelowStart { start: 10, .. }) => {}
        other => panic!("a stale reader after deletion: {other:?}"),
    }
    assert_eq!(first_value(&stale, &log, 15).await.unwrap(), "v15");
    let stats = &tiering.stats;
    assert_eq!(stats.expired_segments.load(Ordering::Relaxed), 1);
    assert_eq!(stats.deleted_expired_objects.load(Ordering::Relaxed), 1);

    let (problems, summary) = problems(&log).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.expiries, summary.expired_segments, summary.objects), (1, 1, 1));
    let state = tier::read_partition_state(&p);
    assert_eq!(state.remote_start_offset, 10);
}

/// An injected DELETE failure stops nothing but the deletion: the pending list stays in the
/// bucket, the run reports the error, and the next run deletes and forgets the object.
#[tokio::test]
async fn a_failed_delete_of_an_expired_object_is_resumed_by_the_next_run() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let mut cfg = config(root.path());
    cfg.tiering.expiry_grace_ms = 0;
    cfg.tiering.upload_attempts = 2; // every request is tried twice
    let store = tier::connect(&cfg).await.unwrap();
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    let (log, tiering) = tiered_writer(cfg, &time, Some(faulty.clone())).await;
    ten_days_later(&log, &time);
    faulty.faults.fail_deletes.store(2, Ordering::SeqCst); // both attempts of the one DELETE
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 1);
    assert!(report[0].error.as_deref().is_some_and(|e| e.contains("DELETE")), "{report:?}");
    let latest = manifest::latest_version(&store, "t", 0, 0).await.unwrap();
    let pending = manifest::load_version(&store, "t", 0, latest).await.unwrap().expired.unwrap().pending_deletes;
    assert_eq!(pending.len(), 1, "still pending in the bucket");
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].deleted_expired_objects, report[0].error.clone()), (1, None));
    let latest = manifest::latest_version(&store, "t", 0, 0).await.unwrap();
    assert!(manifest::load_version(&store, "t", 0, latest).await.unwrap().expired.unwrap().pending_deletes.is_empty());
    assert!(store.store.head(&object_store::path::Path::from(pending[0].key.as_str())).await.is_err());
}

/// Retention off (the default) expires nothing however old the records are.
#[tokio::test]
async fn without_remote_retention_nothing_ever_expires() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let mut cfg = config(root.path());
    cfg.tiering.remote_retention_ms = -1;
    let (log, tiering) = tiered_writer(cfg, &time, None).await;
    time.fetch_add(3650 * DAY, Ordering::SeqCst);
    append(&log, 10, 10, T0 + 3650 * DAY);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 0);
    assert_eq!(first_value(&Reader::new(log.clone()), &log, 0).await.unwrap(), "v0");
}

/// Review findings: an as-of question whose answer lies in the expired range is refused (it
/// was silently answered with the new start), a time lookup by a reader that loaded the
/// manifest before the expiry answers from the new start, and a restore to a point below the
/// start is refused (it was clamped to the start and called complete).
#[tokio::test]
async fn questions_whose_answers_were_expired_are_refused_not_moved_to_the_start() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let (log, tiering) = tiered_writer(config(root.path()), &time, None).await;
    let early = Reader::new(log.clone());
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(early.offset_for_time(&p, 0).await.unwrap(), 0, "loads the manifest before the expiry");
    ten_days_later(&log, &time);
    tiering.run_once(None, true).await.unwrap();

    assert_eq!(early.offset_for_time(&p, 0).await.unwrap(), 10, "the first record still held");
    assert_eq!(early.offset_as_of(&p, T0).await.unwrap(), 10, "everything expired was known at T0");
    match early.offset_as_of(&p, T0 - 1).await {
        Err(e @ Error::Expired { start: 10, .. }) => assert!(e.to_string().contains("expired by retention"), "{e}"),
        other => panic!("as-of inside the expired range: {other:?}"),
    }
    assert_eq!(early.offset_as_of(&p, T0 + 10 * DAY).await.unwrap(), 20, "after the cut: answered");

    let remote = tier::connect(log.config()).await.unwrap();
    let restore_config = Config { data_dir: root.path().join("point"), ..log.config().clone() };
    let refused = tierlog::replica::restore_to_point(
        restore_config,
        remote,
        &["t".to_string()],
        tierlog::replica::PointSpec::ToOffset(5),
        &|_, _| {},
    )
    .await;
    assert!(matches!(refused, Err(Error::Expired { start: 10, .. })), "{:?}", refused.err());
}

/// Review finding: a fence met by an expiry commit (nothing to upload) is a fence: the writer
/// stops publishing group offsets, as after a fenced upload.
#[tokio::test]
async fn a_fence_met_by_an_expiry_commit_stops_group_publication() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let log = open(config(root.path()), &time);
    log.create_topic("t", 1).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    append(&log, 0, 10, T0);
    append(&log, 10, 10, T0 + 1);
    tiering.run_once(None, true).await.unwrap();
    let published = tiering.publish_group_offsets().await.unwrap();
    // Another node takes the partition over.
    let store = tier::connect(log.config()).await.unwrap();
    let other = tierlog_tiering::manifest::Writer { id: "other".into(), epoch: 1 };
    let mut theirs = tierlog_tiering::manifest::ManifestStore::open(store, "t", 0, other, 0).await.unwrap();
    theirs.take_over(T0, 1).await.unwrap();
    // Ten days on, retention is due and nothing is left to upload.
    time.fetch_add(10 * DAY, Ordering::SeqCst);
    let report = tiering.run_once(None, false).await.unwrap();
    assert_eq!(report[0].uploaded_segments, 0);
    assert!(report[0].error.as_deref().is_some_and(|e| e.contains("fenced")), "{report:?}");
    tierlog::groups::commit(log.data_dir(), "g", "t", &[(0, 5)].into()).unwrap();
    assert_eq!(tiering.publish_group_offsets().await.unwrap(), published, "a fenced writer publishes no group offsets");
}

/// A legal hold in the bucket stops expiry at the first segment it covers, whatever retention
/// says; released, retention applies again; an unreadable hold set stops retention (fail
/// closed), nothing else.
#[tokio::test]
async fn a_legal_hold_blocks_expiry_until_released_and_unreadable_holds_stop_retention() {
    use tierlog_tiering::holds::{self, Hold};
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let (log, tiering) = tiered_writer(config(root.path()), &time, None).await;
    let store = tier::connect(log.config()).await.unwrap();
    let hold = Hold {
        id: "case-7".into(),
        topic: "t".into(),
        from_ms: Some(T0),
        to_ms: Some(T0 + 1),
        reason: "SEC inquiry".into(),
        set_ms: T0,
        set_by: "legal@host".into(),
    };
    holds::update(&store, "legal@host", T0, "set case-7: SEC inquiry", |h| {
        h.push(hold.clone());
        Ok(())
    })
    .await
    .unwrap();
    ten_days_later(&log, &time);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].expired_segments, report[0].error.clone()), (0, None), "held");
    assert_eq!(tiering.stats.legal_holds.load(Ordering::Relaxed), 1);
    assert_eq!(first_value(&Reader::new(log.clone()), &log, 0).await.unwrap(), "v0");

    // Unreadable holds: retention stops and says why; uploads go on.
    let garbage = store.key(&["holds", &format!("{:020}.json", 2)]);
    store.store.put(&garbage, b"not a hold set".to_vec().into()).await.unwrap();
    append(&log, 20, 5, T0 + 10 * DAY);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].uploaded_segments, report[0].expired_segments), (1, 0), "{report:?}");
    assert!(report[0].error.as_deref().is_some_and(|e| e.contains("legal holds")), "{report:?}");
    assert_eq!(tiering.stats.legal_holds.load(Ordering::Relaxed), -1, "unreadable");
    store.store.delete(&garbage).await.unwrap();

    holds::update(&store, "legal@host", T0, "release case-7: closed", |h| {
        h.clear();
        Ok(())
    })
    .await
    .unwrap();
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 1, "released: retention applies again {report:?}");
}

fn hold(id: &str, from: Option<i64>, to: Option<i64>) -> tierlog_tiering::holds::Hold {
    tierlog_tiering::holds::Hold {
        id: id.into(),
        topic: "t".into(),
        from_ms: from,
        to_ms: to,
        reason: "case".into(),
        set_ms: T0,
        set_by: "legal@host".into(),
    }
}

async fn set_holds(store: &tierlog_tiering::store::RemoteStore, holds: Vec<tierlog_tiering::holds::Hold>) {
    tierlog_tiering::holds::update(store, "legal@host", T0, "replace", |h| {
        *h = holds.clone();
        Ok(())
    })
    .await
    .unwrap();
}

/// Review findings: on a LogAppendTime topic holds and retention use append times (a producer
/// with a wrong clock cannot get held records expired), and a hold set after an expiry keeps
/// the expired objects in the bucket past the grace period.
#[tokio::test]
async fn holds_use_the_topic_clock_and_keep_objects_expired_before_the_hold() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let log = open(config(root.path()), &time);
    log.create_topic_with("t", 1, tierlog::batch::TimestampType::LogAppendTime).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let store = tier::connect(log.config()).await.unwrap();
    // Producer timestamps from 2020, appended at T0.
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let old: Vec<Record> = (0..10)
        .map(|i| Record { timestamp: 1_577_836_800_000 + i, value: b"x".to_vec(), ..Record::default() })
        .collect();
    p.append(&old, T0).unwrap();
    tiering.run_once(None, true).await.unwrap();
    time.fetch_add(DAY, Ordering::SeqCst);
    append(&log, 10, 10, T0 + DAY);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 0, "a day old by append time {report:?}");
    set_holds(&store, vec![hold("by-append-time", Some(T0), Some(T0 + 1))]).await;
    time.fetch_add(9 * DAY, Ordering::SeqCst);
    append(&log, 20, 10, T0 + 10 * DAY);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 0, "held by append time {report:?}");

    // Released: the first segment expires; a hold over it set again within the grace period
    // keeps its object past it.
    set_holds(&store, Vec::new()).await;
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].expired_segments, 2, "both older than 2 days {report:?}");
    set_holds(&store, vec![hold("again", Some(T0), Some(T0 + 1))]).await;
    time.fetch_add(GRACE + 1, Ordering::SeqCst);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].deleted_expired_objects, 1, "the held one is kept {report:?}");
    let latest = manifest::latest_version(&store, "t", 0, 0).await.unwrap();
    let pending = manifest::load_version(&store, "t", 0, latest).await.unwrap().expired.unwrap().pending_deletes;
    assert_eq!(pending.len(), 1);
    assert!(store.store.head(&object_store::path::Path::from(pending[0].key.as_str())).await.is_ok());
}

/// Review finding: a hold set while a pass is uploading (after the pass read the holds) is
/// honoured by that pass's expiry.
#[tokio::test]
async fn a_hold_set_during_a_pass_is_honoured_by_that_pass() {
    let root = tempfile::tempdir().unwrap();
    let time = Arc::new(AtomicI64::new(T0));
    let cfg = config(root.path());
    let store = tier::connect(&cfg).await.unwrap();
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    let (log, tiering) = tiered_writer(cfg, &time, Some(faulty.clone())).await;
    ten_days_later(&log, &time);
    // The first segment PUT of the next pass sets a hold over everything.
    let inner = store.clone();
    let once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    faulty.hooks.lock().unwrap().before_put = Some(Arc::new(move |path: &object_store::path::Path| {
        let (inner, once) = (inner.clone(), once.clone());
        let segment = path.as_ref().contains("segments/");
        Box::pin(async move {
            if segment && !once.swap(true, Ordering::SeqCst) {
                set_holds(&inner, vec![hold("mid-pass", None, None)]).await;
            }
            Ok(())
        })
    }));
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].uploaded_segments, report[0].expired_segments), (1, 0), "{report:?}");
}
