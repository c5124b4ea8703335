//! The append clock: every batch records when the log appended it, from one clock per writer
//! that never goes backwards, whatever the wall clock does, across partitions and restarts.

mod common;
use common::Captured;

use tierlog::config::Config;
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
        let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
        for (i, now) in clock.iter().enumerate() {
            p.append(&[record(i as i64)], *now).unwrap();
        }
    }
    let log = Log::open(config).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
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
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("wall clock is behind")).collect();
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
