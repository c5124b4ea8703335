//! The append clock: every batch records when the log appended it, from one clock per writer
//! that never goes backwards, whatever the wall clock does, across partitions and restarts.

mod common;
use common::Captured;

use tierlog::config::Config;
use tierlog::reader::Reader;
use tierlog::tier::Tiering;
use tierlog::{Log, Record};

fn record(i: i64) -> Record {
    Record { timestamp: 1_000 + i, value: format!("r{i}-{}", "x".repeat(300)).into_bytes(), ..Record::default() }
}

/// The wall clock steps back (injected through the append's clock reading): append times
/// stay where they were until it catches up, a warning names the partition once, and a
/// restart goes on from the last append time, not from the clock. Without the clamp the
/// stored append times decrease and as-of answers stop being cuts of the log.
#[test]
fn append_times_never_decrease_when_the_clock_goes_backwards() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).finish();
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets the global subscriber");
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.segment.max_bytes = 1024;
    let clock = [10_000, 10_500, 9_000, 9_800, 10_400, 10_600, 11_000];
    {
        let log = Log::open(config.clone()).unwrap();
        let p = log.create_topic("clock", 1).unwrap().partition(0).unwrap().clone();
        for (i, now) in clock.iter().enumerate() {
            p.append(&[record(i as i64)], *now).unwrap();
        }
    }
    let log = Log::open(config).unwrap();
    let p = log.topic("clock").unwrap().partition(0).unwrap().clone();
    p.append(&[record(7)], 5_000).unwrap(); // the clock is far behind after the restart
    p.append(&[record(8)], 11_200).unwrap();
    let mut stored: Vec<(u64, Option<i64>)> = Vec::new();
    loop {
        let records = p.read(stored.len() as u64, 1 << 20).unwrap();
        if records.is_empty() {
            break;
        }
        stored.extend(records.iter().map(|r| (r.offset, r.append_time)));
    }
    let want = [10_000, 10_500, 10_500, 10_500, 10_500, 10_600, 11_000, 11_000, 11_200];
    assert_eq!(stored, want.iter().enumerate().map(|(o, t)| (o as u64, Some(*t))).collect::<Vec<_>>());
    assert!(p.sealed_segments().len() >= 2, "the clock also survived rolls");
    let text = captured.text();
    // (Other tests of this binary log beside it: only this test's topic counts.)
    let warnings: Vec<&str> =
        text.lines().filter(|l| l.contains("wall clock is behind") && l.contains("\"topic\":\"clock\"")).collect();
    assert_eq!(warnings.len(), 2, "once per episode (before and after the restart): {text}");
    assert!(warnings[0].contains("\"WARN\"") && warnings[0].contains("\"partition\":0"), "{}", warnings[0]);
    // As of any instant, the cut is a prefix: exactly the records appended at or before it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = tierlog::reader::Reader::new(log.clone());
    for (t, cut) in [(9_999, 0), (10_000, 1), (10_500, 5), (10_999, 6), (11_000, 8), (11_200, 9)] {
        assert_eq!(runtime.block_on(reader.offset_as_of(&p, t)).unwrap(), cut, "as of {t}");
    }

    // Across partitions: an append acknowledged before another starts never gets a later
    // append time, even when the clock steps back in between and they are different
    // partitions, so every as-of cut is consistent across the topic.
    let q = log.create_topic("u", 2).unwrap();
    q.partition(0).unwrap().append(&[record(20)], 12_000).unwrap();
    q.partition(1).unwrap().append(&[record(21)], 11_500).unwrap(); // the clock stepped back
    let appended = |id: u32| q.partition(id).unwrap().read(0, 1 << 20).unwrap()[0].append_time;
    assert_eq!((appended(0), appended(1)), (Some(12_000), Some(12_000)));
    for t in [11_999, 12_000] {
        let cut: Vec<u64> =
            (0..2).map(|id| runtime.block_on(reader.offset_as_of(q.partition(id).unwrap(), t)).unwrap()).collect();
        assert!(cut == [0, 0] || cut == [1, 1], "as of {t}: partition 1's later write without partition 0's: {cut:?}");
    }
}

// Adversarial review of 1391cf4. The first fails on 1391cf4, the second on 1391cf4 too (fixed by edd4bc0).

/// Finding: the append clock restarts from the newest append time the *local* log holds.
/// After tiering + local retention (or a seal before tiering) the local log is empty, so a
/// restart whose wall clock is behind the last append time hands out append times below the
/// ones already in the remote tier: the partition's append times decrease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_clock_goes_backwards_after_restart_when_everything_is_tiered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    config.tiering.local_retention_bytes = 0; // tiered segments are deleted locally
    {
        let log = Log::open(config.clone()).unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&[record(0)], 10_000).unwrap();
        p.append(&[record(1)], 10_500).unwrap();
        let tiering = Tiering::start(log.clone()).await.unwrap();
        let reports = tiering.run_once(None, true).await.unwrap();
        assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
        assert_eq!(p.start_offset(), 2, "offsets 0..2 are remote-only");
    }
    // Restart; the wall clock is 1.5 s behind the last append time (NTP step, another host).
    let log = Log::open(config.clone()).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    p.append(&[record(2)], 9_000).unwrap();
    let stored = Reader::new(log.clone()).read(&p, 2, 1 << 20).await.unwrap();
    let appended = stored[0].append_time.unwrap();
    // Tier the new segment too, then read the partition from the start with a fresh reader.
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    let fresh = Reader::new(log.clone());
    let read_back = fresh.read(&p, 0, 1 << 20).await.map(|r| r.len());
    let as_of = fresh.offset_as_of(&p, 9_000).await;
    assert!(
        appended >= 10_500 && reports.iter().all(|r| r.error.is_none()) && read_back.is_ok(),
        "append time of offset 2 = {appended} (offsets 0, 1 were appended at 10000, 10500); \
         tiering: {reports:?}; read from offset 0 with a fresh reader: {read_back:?}; as of 9000: {as_of:?}"
    );
}

/// Finding: `reader::snapshot` claims its cut is consistent across partitions ("one clock"),
/// but the clamp is per partition. After the wall clock steps back, a record acknowledged on
/// partition 0 gets partition 0's clamped (later) append time, while a record written
/// *afterwards* on partition 1 gets the (earlier) wall clock: a snapshot then contains the
/// effect (partition 1's record) but not its cause (partition 0's record).
#[tokio::test]
async fn review_snapshot_is_not_a_consistent_cut_when_the_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let log = Log::open(config).unwrap();
    let topic = log.create_topic("t", 2).unwrap();
    let (p0, p1) = (topic.partition(0).unwrap().clone(), topic.partition(1).unwrap().clone());
    p0.append(&[record(0)], 1_000).unwrap(); // clock at 1000
    // The wall clock steps back by 500 ms.
    p0.append(&[record(1)], 500).unwrap(); // X: acknowledged; stored with append time 1000 (clamped)
    p1.append(&[record(2)], 600).unwrap(); // Y: sent after X was acknowledged; append time 600
    let reader = Reader::new(log.clone());
    let cut = tierlog::reader::snapshot(&reader, &["t".to_string()], 800).await.unwrap();
    let ends: Vec<u64> = cut.iter().map(|c| c["end"].as_u64().unwrap()).collect();
    // A consistent cut that holds Y (p1 offset 0) must hold X (p0 offset 1), which precedes it.
    assert!(ends[1] == 0 || ends[0] == 2, "snapshot as of 800 holds Y but not X: {cut:?}");
}

// ---- Adversarial review of e2c5da6 ----

/// Finding: a sealed segment whose `.appendindex` is missing (but `.index` and `.timeindex`
/// are there) is no longer rebuilt from the segment, as docs/FORMAT.md still promises for a
/// missing index file ("An index file that is missing ... is rebuilt from the segment on
/// open"): `load_files` assumes the segment predates append times and derives "no batch has
/// an append time", and the writer then writes that derived `.appendindex` durably. For a
/// segment that does hold stamped batches, the local as-of answers are refused ("unknown")
/// from then on — every open, since the wrong file is now on disk.
#[tokio::test]
async fn review_e2c5_a_missing_appendindex_of_a_stamped_segment_is_derived_as_unstamped() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let pdir = dir.path().join("data/topics/t/0");
    {
        let log = Log::open(config.clone()).unwrap();
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        p.append(&[record(0)], 10_000).unwrap();
        p.append(&[record(1)], 10_500).unwrap();
        p.seal_active(10_500).unwrap();
        p.append(&[record(2)], 11_000).unwrap();
    }
    std::fs::remove_file(pdir.join(format!("{:020}.appendindex", 0))).unwrap(); // lost (fsck, backup, operator)
    let log = Log::open(config.clone()).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let local = p.offset_as_of(10_200).unwrap();
    let reader = Reader::new(log.clone());
    let answer = reader.offset_as_of(&p, 10_200).await;
    let written = std::fs::read(pdir.join(format!("{:020}.appendindex", 0))).ok();
    assert!(
        local.offset == 1 && local.previous_unstamped != Some(true) && matches!(answer, Ok(1)),
        "offsets 0, 1 were appended at 10000, 10500 (sealed), 2 at 11000; as of 10200 the cut is 1: \
         local {local:?}, reader {answer:?}; .appendindex written back at open: {} bytes",
        written.map_or(0, |b| b.len())
    );
}

/// Finding: Kafka answers an idempotent producer's retry (a duplicate) of a LogAppendTime
/// topic with the append time of the stored batch (UnifiedLog: `appendInfo.setLogAppendTime(
/// duplicate.timestamp)`); e2c5da6 answers -1 (`Appended::append_time` is `None` for a
/// duplicate), so a client whose first answer was lost reports the record's CreateTime as its
/// timestamp, only for retried batches.
#[test]
fn review_e2c5_a_duplicate_reports_the_append_time_of_the_stored_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let log = Log::open(config).unwrap();
    let id = log.allocate_producer_id().unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let stamp = tierlog::batch::ProducerStamp { id, epoch: 0, first_sequence: 0 };
    let first = p.append_stamped(&[record(0)], stamp, 10_000).unwrap();
    let retry = p.append_stamped(&[record(0)], stamp, 10_700).unwrap();
    assert!(retry.duplicate);
    assert_eq!(
        retry.appended.append_time, first.appended.append_time,
        "the retry's answer (ProduceResponse.log_append_time_ms on a LogAppendTime topic) is the stored batch's append time"
    );
}
