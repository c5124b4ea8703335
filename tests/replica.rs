//! Read-only replicas on a `file://` bucket: the cases an adversarial review found — a writer
//! and a replica racing for one new directory, a refresher that one bad topic must not
//! freeze, as-of questions a replica cannot answer, the embedded default bucket. (The S3
//! scenarios are in integration/tests/replica.rs.)

mod common;

use std::path::Path;
use std::process::Command;

use object_store::ObjectStoreExt;
use tierlog::config::Config;
use tierlog::reader::Reader;
use tierlog::replica::Replica;
use tierlog::tier::{self, Tiering};
use tierlog::{Log, Record};

use common::{BIN, run_with_stdin};

const T0: i64 = 1_700_000_000_000;

fn record(i: u64) -> Record {
    Record { timestamp: T0 + i as i64, value: vec![b'x'; 100], ..Record::default() }
}

/// A writer and a replica configuration on one file:// bucket.
fn configs(root: &Path) -> (Config, Config) {
    let mut writer = Config { data_dir: root.join("writer"), ..Config::default() };
    writer.remote.url = format!("file://{}", root.join("bucket").display());
    let replica = Config { data_dir: root.join("replica"), ..writer.clone() };
    (writer, replica)
}

fn append(log: &Log, topic: &str, from: u64, n: u64, at: i64) {
    let p = log.topic(topic).unwrap().partition(0).unwrap().clone();
    let records: Vec<_> = (from..from + n).map(record).collect();
    p.append(&records, at).unwrap();
}

/// A writer that tiered 10 records of `t`, and a replica of its bucket.
async fn writer_and_replica(root: &Path) -> (Log, Tiering, Replica) {
    let (wc, rc) = configs(root);
    let writer = Log::open(wc).unwrap();
    writer.create_topic("t", 1).unwrap();
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    append(&writer, "t", 0, 10, T0);
    tiering.run_once(None, true).await.unwrap();
    let replica = Replica::open(rc, tier::connect(writer.config()).await.unwrap()).await.unwrap();
    (writer, tiering, replica)
}

/// The replica marker and the writer's checks are both made under the directory's lock: a
/// writer and a replica started together on one new directory never leave a writer's records
/// in a directory marked as a replica's (whose next start would remove them).
#[test]
fn a_writer_and_a_replica_racing_for_a_new_directory_never_share_it() {
    let root = tempfile::tempdir().unwrap();
    let (wc, _) = configs(root.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    {
        let seed = Log::open(wc.clone()).unwrap();
        seed.create_topic("t", 1).unwrap();
        append(&seed, "t", 0, 1, T0);
        runtime.block_on(async { Tiering::start(seed.clone()).await.unwrap().run_once(None, true).await.unwrap() });
    }
    let store = runtime.block_on(tier::connect(&wc)).unwrap();
    let (mut writers, mut replicas) = (0, 0);
    for i in 0..200 {
        let dir = root.path().join(format!("shared-{i}"));
        let w = Config { data_dir: dir.clone(), ..wc.clone() };
        let r = w.clone();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let b = barrier.clone();
        let writer = std::thread::spawn(move || {
            b.wait();
            let log = Log::open(w)?;
            log.create_topic("mine", 1)?.partition(0)?.append(&[record(0)], T0)?;
            Ok::<_, tierlog::Error>(())
        });
        barrier.wait();
        let replica = runtime.block_on(Replica::open(r, store.clone()));
        let wrote = writer.join().unwrap();
        assert!(
            !(wrote.is_ok() && dir.join("replica.json").is_file()),
            "try {i}: the writer wrote into a directory marked as a replica's (replica: {:?})",
            replica.err()
        );
        writers += usize::from(wrote.is_ok());
        replicas += usize::from(replica.is_ok());
    }
    eprintln!("of 200 races the writer won {writers}, the replica {replicas}");
}

/// One new topic whose manifest cannot be read, or one catalog entry this build cannot
/// serve, is reported at every refresh and never stops the other partitions from following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_topic_never_freezes_the_other_partitions() {
    use tierlog_tiering::catalog::{CatalogTopic, publish_catalog};
    use tierlog_tiering::manifest::Writer;
    let root = tempfile::tempdir().unwrap();
    let (writer, tiering, mut replica) = writer_and_replica(root.path()).await;
    let store = tier::connect(writer.config()).await.unwrap();
    let rp = replica.log().topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(rp.end_offset(), 10);

    // Topic u arrives with a damaged manifest; t goes on.
    writer.create_topic("u", 1).unwrap();
    append(&writer, "u", 0, 5, T0 + 10);
    append(&writer, "t", 10, 10, T0 + 20);
    tiering.run_once(None, true).await.unwrap();
    let key = tierlog_tiering::keys::manifest_key(&store, "u", 0, 1);
    store.store.put(&key, object_store::PutPayload::from_static(b"{not json")).await.unwrap();
    let refreshed = replica.refresh().await.unwrap();
    assert_eq!(rp.end_offset(), 20, "t/0 follows the writer: {refreshed:?}");
    assert!(refreshed.errors.iter().any(|e| e.contains("\"u\"")), "{refreshed:?}");
    assert!(replica.refresh().await.unwrap().errors.iter().any(|e| e.contains("\"u\"")), "reported again");

    // A catalog entry with a setting value this build does not know.
    let bad = CatalogTopic {
        name: "v".into(),
        partitions: 1,
        created_ms: T0,
        settings: [("message.timestamp.type".to_string(), "SomeFutureType".to_string())].into(),
    };
    publish_catalog(&store, &Writer { id: "someone".into(), epoch: 1 }, T0, vec![bad], 0).await.unwrap();
    append(&writer, "t", 20, 10, T0 + 30);
    tiering.run_once(None, true).await.unwrap();
    let refreshed = replica.refresh().await.unwrap();
    assert_eq!(rp.end_offset(), 30, "t/0 follows the writer: {refreshed:?}");
    assert!(refreshed.errors.iter().any(|e| e.contains("\"v\"") && e.contains("SomeFutureType")), "{refreshed:?}");
}

/// A catalog that changes a served topic's partition count is reported at every refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_count_change_is_reported_at_every_refresh() {
    use tierlog_tiering::catalog::{CatalogTopic, publish_catalog};
    use tierlog_tiering::manifest::Writer;
    let root = tempfile::tempdir().unwrap();
    let (writer, _tiering, mut replica) = writer_and_replica(root.path()).await;
    let store = tier::connect(writer.config()).await.unwrap();
    let t = CatalogTopic { name: "t".into(), partitions: 3, created_ms: T0, settings: Default::default() };
    publish_catalog(&store, &Writer { id: "other".into(), epoch: 1 }, T0, vec![t], 0).await.unwrap();
    let first = replica.refresh().await.unwrap();
    let second = replica.refresh().await.unwrap();
    assert_eq!(first.errors.len(), 1, "{first:?}");
    assert_eq!(second.errors, first.errors, "still wrong, still reported");

    // A writer's directory, even one no process holds, is never taken for a replica's.
    let (wc, _) = configs(root.path());
    drop((writer, _tiering));
    let err = Replica::open(wc.clone(), store).await.err().unwrap().to_string();
    assert!(err.contains("not a replica's directory"), "{err}");
    assert!(!wc.data_dir.join("replica.json").exists());
    Log::open(wc).unwrap();
}

/// A live replica holds what the writer has tiered: the as-of cut at a time after its
/// newest tiered batch is refused (records appended by then may not be tiered yet), while
/// cuts that a later tiered batch proves are answered as the writer answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_as_of_cuts_it_cannot_know() {
    let root = tempfile::tempdir().unwrap();
    let (writer, tiering, _) = writer_and_replica(root.path()).await;
    append(&writer, "t", 10, 10, T0 + 1_000); // tiered
    tiering.run_once(None, true).await.unwrap();
    append(&writer, "t", 20, 10, T0 + 2_000); // appended, not tiered
    let (_, rc) = configs(root.path());
    let rc = Config { data_dir: root.path().join("replica-2"), ..rc };
    let replica = Replica::open(rc, tier::connect(writer.config()).await.unwrap()).await.unwrap();
    let (wp, rp) = (
        writer.topic("t").unwrap().partition(0).unwrap().clone(),
        replica.log().topic("t").unwrap().partition(0).unwrap().clone(),
    );
    let (wr, rr) = (Reader::new(writer.clone()), Reader::new(replica.log().clone()));
    for t in [T0 - 1, T0, T0 + 500] {
        assert_eq!(rr.offset_as_of(&rp, t).await.unwrap(), wr.offset_as_of(&wp, t).await.unwrap(), "as of {t}");
    }
    assert_eq!(wr.offset_as_of(&wp, T0 + 3_000).await.unwrap(), 30);
    let err = rr.offset_as_of(&rp, T0 + 3_000).await.unwrap_err().to_string();
    assert!(err.contains("cannot be told by a replica"), "{err}");
}

/// `consume --replica` on the embedded default (no remote.url) reads the bucket beside the
/// configured data directory, the writer's; `serve --replica` needs remote.url named (its
/// data directory is its own, so the default would name another bucket).
#[test]
fn the_embedded_default_bucket_and_replicas() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let tierlog = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(BIN);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
            cmd.env_remove(k);
        }
        cmd.arg("--data-dir").arg(&data).args(args);
        run_with_stdin(&mut cmd, stdin)
    };
    assert!(tierlog(&["topic", "create", "t"], "").status.success());
    assert!(tierlog(&["produce", "t"], "a\nb\nc\n").status.success());
    assert!(tierlog(&["tier", "run"], "").status.success());
    let local = tierlog(&["consume", "t", "--from-beginning"], "");
    let replica = tierlog(&["consume", "t", "--from-beginning", "--replica"], "");
    assert!(replica.status.success(), "{}", String::from_utf8_lossy(&replica.stderr));
    assert_eq!(String::from_utf8_lossy(&replica.stdout), String::from_utf8_lossy(&local.stdout));
    assert_eq!(String::from_utf8_lossy(&replica.stdout).lines().count(), 3);

    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
        cmd.env_remove(k);
    }
    let served = cmd
        .arg("--data-dir")
        .arg(root.path().join("replica"))
        .args(["serve", "--replica", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(!served.status.success() && stderr.contains("remote.url is empty"), "{stderr}");
    assert!(!root.path().join("replica").exists(), "nothing made for a refused replica");
    assert!(!root.path().join("replica-remote").exists(), "no default bucket made either");
}

fn point_config(dir: &Path, bucket: &Path) -> Config {
    let mut c = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    c.remote.url = format!("file://{}", bucket.display());
    c
}

/// Every record `log` serves of `t/p`, from offset 0.
async fn values(log: &Log, p: u32) -> Vec<String> {
    let reader = Reader::new(log.clone());
    let part = log.topic("t").unwrap().partition(p).unwrap().clone();
    let (mut out, mut next) = (Vec::new(), 0);
    loop {
        let records = reader.read(&part, next, 1 << 20).await.unwrap();
        let Some(last) = records.last() else { return out };
        next = last.offset + 1;
        out.extend(records.into_iter().map(|r| String::from_utf8(r.record.value).unwrap()));
    }
}

/// A restore to a time ends each partition at its as-of cut when a later batch in the bucket
/// proves it, and at the bucket's end (marked incomplete) for a partition idle since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_time_with_idle_partitions_ends_them_at_the_bucket_end_marked_incomplete() {
    use tierlog::replica::{self, PointSpec};
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let writer = Log::open(point_config(&root.path().join("writer"), &bucket)).unwrap();
    let topic = writer.create_topic("t", 3).unwrap();
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    topic.partition(0).unwrap().append(&(0..10).map(record).collect::<Vec<_>>(), T0).unwrap();
    topic.partition(1).unwrap().append(&(0..10).map(record).collect::<Vec<_>>(), T0).unwrap();
    topic.partition(0).unwrap().append(&(10..20).map(record).collect::<Vec<_>>(), T0 + 1_000).unwrap();
    tiering.run_once(None, true).await.unwrap();
    let store = tier::connect(writer.config()).await.unwrap();
    let lines = std::sync::Mutex::new(Vec::new());
    let on = |p: &replica::PointPartition, _: usize| lines.lock().unwrap().push((p.end_offset, p.complete));
    let point = point_config(&root.path().join("point"), &bucket);
    let t = ["t".to_string()];
    let report = replica::restore_to_point(point, store, &t, PointSpec::ToTime(T0 + 500), &on).await.unwrap();
    assert_eq!(*lines.lock().unwrap(), vec![(10, true), (10, false), (0, false)]);
    assert_eq!(report.incomplete, 2);
}

/// A finished restore to a point is read from the bucket its marker names: with no
/// remote.url configured, that one; with another one configured, refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_point_is_read_from_its_own_bucket_only() {
    use tierlog::replica::{self, PointSpec};
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("bucket-a"), root.path().join("bucket-b"));
    for (name, bucket) in [("wa", &a), ("wb", &b)] {
        let writer = Log::open(point_config(&root.path().join(name), bucket)).unwrap();
        let p = writer.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        let tagged =
            |from: u64| (from..from + 5).map(|i| Record { value: format!("{name}-{i}").into_bytes(), ..record(i) });
        p.append(&tagged(0).collect::<Vec<_>>(), T0).unwrap();
        p.append(&tagged(5).collect::<Vec<_>>(), T0 + 1).unwrap();
        Tiering::start(writer.clone()).await.unwrap().run_once(None, true).await.unwrap();
    }
    let point = point_config(&root.path().join("point"), &a);
    let store = tier::connect(&point).await.unwrap();
    replica::restore_to_point(point.clone(), store, &[], PointSpec::ToOffset(5), &|_, _| {}).await.unwrap();
    let from_a = values(&Log::open_read_only(point.clone()).unwrap(), 0).await;
    assert_eq!(from_a, (0..5).map(|i| format!("wa-{i}")).collect::<Vec<_>>());
    let unconfigured = Config { data_dir: point.data_dir.clone(), ..Config::default() };
    assert_eq!(values(&Log::open_read_only(unconfigured).unwrap(), 0).await, from_a);
    let err = Log::open_read_only(point_config(&point.data_dir, &b)).err().unwrap().to_string();
    assert!(err.contains("is a restore to a point of"), "{err}");
}

/// An interrupted restore to an offset of every topic is finished by the same command even
/// after a topic was created meanwhile (the recorded point is finished, not recomputed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_is_finished_after_a_new_topic_appears() {
    use tierlog::replica::{self, PointSpec};
    let root = tempfile::tempdir().unwrap();
    let bucket = root.path().join("bucket");
    let writer = Log::open(point_config(&root.path().join("writer"), &bucket)).unwrap();
    let p = writer.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    p.append(&(0..5).map(record).collect::<Vec<_>>(), T0).unwrap();
    p.append(&(5..10).map(record).collect::<Vec<_>>(), T0).unwrap();
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    let store = tier::connect(writer.config()).await.unwrap();
    let done = point_config(&root.path().join("done"), &bucket);
    replica::restore_to_point(done.clone(), store.clone(), &[], PointSpec::ToOffset(5), &|_, _| {}).await.unwrap();
    let point = point_config(&root.path().join("point"), &bucket);
    std::fs::create_dir_all(&point.data_dir).unwrap();
    let mut marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(done.data_dir.join("replica.json")).unwrap()).unwrap();
    marker["point"]["groups_written"] = false.into();
    std::fs::write(point.data_dir.join("replica.json"), marker.to_string()).unwrap();
    writer.create_topic("u", 1).unwrap();
    tiering.run_once(None, true).await.unwrap(); // the catalog now lists u
    let again = replica::restore_to_point(point.clone(), store, &[], PointSpec::ToOffset(5), &|_, _| {}).await;
    assert!(again.as_ref().is_ok_and(|r| r.resumed && r.topics == 1), "{again:?}");
    assert_eq!(values(&Log::open_read_only(point).unwrap(), 0).await.len(), 5);
}

/// The end clamps are for restores to a point only: a read-only view of a live writer whose
/// end lags answers a time lookup from the bucket as the writer does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_read_only_view_answers_time_lookups_as_the_writer_does() {
    let root = tempfile::tempdir().unwrap();
    let mut wc = point_config(&root.path().join("writer"), &root.path().join("bucket"));
    wc.tiering.local_retention_bytes = 0;
    wc.tiering.local_retention_ms = 0;
    let writer = Log::open(wc.clone()).unwrap();
    let p = writer.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    let at = |ts: i64, n: u64| -> Vec<Record> {
        (0..n).map(|i| Record { timestamp: ts + i as i64, value: b"x".to_vec(), ..Record::default() }).collect()
    };
    p.append(&at(T0, 10), T0).unwrap();
    tiering.run_once(None, true).await.unwrap();
    p.append(&at(T0 + 10, 10), T0 + 10).unwrap();
    let view = Log::open_read_only(wc).unwrap();
    let vp = view.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!((vp.start_offset(), vp.end_offset()), (10, 20));
    let mut late = at(T0 + 50, 5);
    late.extend(at(T0 + 100, 5));
    p.append(&late, T0 + 20).unwrap(); // offsets 20..30: the first timestamp ≥ T0+100 is at 25
    tiering.run_once(None, true).await.unwrap();
    assert_eq!(Reader::new(writer.clone()).offset_for_time(&p, T0 + 100).await.unwrap(), 25);
    assert_eq!(Reader::new(view).offset_for_time(&vp, T0 + 100).await.unwrap(), 25);
}

/// What docs/AUDIT.md says an idle replica costs: a look at the bucket with nothing new is
/// about two HEADs per partition (plus two for the catalog), and never a PUT or DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_refresh_costs_two_heads_per_partition_and_writes_nothing() {
    use tierlog_tiering::fault::FaultStore;
    let root = tempfile::tempdir().unwrap();
    let (wc, rc) = configs(root.path());
    let writer = Log::open(wc).unwrap();
    writer.create_topic("t", 3).unwrap();
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    for p in 0..3 {
        writer.topic("t").unwrap().partition(p).unwrap().append(&[record(p as u64)], T0).unwrap();
    }
    tiering.run_once(None, true).await.unwrap();
    let store = tier::connect(writer.config()).await.unwrap();
    let counted = std::sync::Arc::new(FaultStore::new(store.store.clone()));
    let mut replica = Replica::open(rc, store.with_store(counted.clone())).await.unwrap();
    let before = counted.counters.snapshot();
    let refreshed = replica.refresh().await.unwrap();
    assert_eq!((refreshed.partitions_advanced, refreshed.errors.len()), (0, 0));
    let [puts, gets, heads, lists, deletes] = std::array::from_fn(|i| counted.counters.snapshot()[i] - before[i]);
    assert_eq!((puts, deletes, gets, lists), (0, 0, 0, 0), "an idle look only HEADs");
    assert_eq!(heads, 2 * 3 + 2, "two per partition, two for the catalog");
}
