//! As-of replay ("what did the log know at T?") against a real S3 server: for logs whose
//! producer timestamps are late, early and out of order, half of them remote-only, and whose
//! wall clock sometimes steps back, every as-of answer, consistent cut and replay equals an
//! in-memory oracle; event-time answers are unchanged; a cold as-of lookup costs at most two
//! GETs and no LIST.

use std::sync::Arc;

use proptest::prelude::*;
use tierlog::partition::Partition;
use tierlog::reader::{Reader, settings};
use tierlog::tier::Tiering;
use tierlog::{Log, Record};
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::config;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::remote_reader::RemoteReader;
use tierlog_tiering::store::RemoteStore;

const PARTITIONS: u32 = 2;
const CLOCK_START: i64 = 1_772_546_520_000; // 2026-03-03T14:02:00Z

/// One append: to `partition`, when the wall clock read `clock`, of a record the producer
/// stamped `timestamp`.
#[derive(Debug, Clone, Copy)]
struct Append {
    partition: u32,
    clock: i64,
    timestamp: i64,
}

/// What the log must hold: per partition, per offset, (append time, producer timestamp).
/// Append times are the wall clock clamped to never decrease, across all partitions (one
/// clock per writer).
struct Oracle {
    records: Vec<Vec<(i64, i64)>>,
}

impl Oracle {
    fn new(appends: &[Append]) -> Oracle {
        let mut records = vec![Vec::new(); PARTITIONS as usize];
        let mut last = i64::MIN;
        for a in appends {
            last = last.max(a.clock);
            records[a.partition as usize].push((last, a.timestamp));
        }
        Oracle { records }
    }

    /// The first offset appended after `t`.
    fn as_of(&self, partition: u32, t: i64) -> u64 {
        let p = &self.records[partition as usize];
        p.iter().position(|(appended, _)| *appended > t).unwrap_or(p.len()) as u64
    }

    /// The first offset whose producer timestamp is ≥ `t` (Kafka's ListOffsets).
    fn for_time(&self, partition: u32, t: i64) -> u64 {
        let p = &self.records[partition as usize];
        p.iter().position(|(_, ts)| *ts >= t).unwrap_or(p.len()) as u64
    }
}

fn record(i: usize, timestamp: i64) -> Record {
    let mut r = tierlog::sample::payment_event(i as u64, timestamp, 200);
    r.timestamp = timestamp;
    r
}

struct TwoTierLog {
    _dir: tempfile::TempDir,
    log: Log,
    store: RemoteStore,
    oracle: Oracle,
}

/// Appends `appends` one record per call (one batch each), tiers and deletes locally what the
/// first `tiered` appends wrote, then appends the rest.
async fn two_tier_log(s3: &S3Target, appends: &[Append], tiered: usize) -> TwoTierLog {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.segment.max_bytes = 32 * 1024;
    cfg.segment.index_interval_bytes = 1024;
    let log = Log::open(cfg).unwrap();
    let topic = log.create_topic("t", PARTITIONS).unwrap();
    let append = |(i, a): (usize, &Append)| {
        topic.partition(a.partition).unwrap().append(&[record(i, a.timestamp)], a.clock).unwrap();
    };
    appends[..tiered].iter().enumerate().for_each(append);
    let store = s3.store(&s3.unique_prefix("as-of"));
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    appends.iter().enumerate().skip(tiered).for_each(append);
    TwoTierLog { _dir: dir, log, store, oracle: Oracle::new(appends) }
}

fn counting_reader(t: &TwoTierLog) -> (Reader, Arc<FaultStore>, Arc<RemoteReader>) {
    let faulty = Arc::new(FaultStore::new(t.store.store.clone()));
    let mut s = settings(t.log.config());
    s.prefetch_bytes = 0;
    let remote = RemoteReader::new(t.store.with_store(faulty.clone()), s);
    (Reader::with_remote(t.log.clone(), remote.clone()), faulty, remote)
}

fn partition(log: &Log, p: u32) -> Arc<Partition> {
    log.topic("t").unwrap().partition(p).unwrap().clone()
}

/// Every record of `[from, to)` as (offset, append time, producer timestamp).
async fn replay(reader: &Reader, p: &Arc<Partition>, from: u64, to: u64) -> Vec<(u64, Option<i64>, i64)> {
    let mut out = Vec::new();
    let mut next = from;
    while next < to {
        let records = reader.read(p, next, 16 * 1024).await.unwrap();
        assert!(!records.is_empty(), "offset {next} below {to} must exist");
        for r in records.into_iter().take_while(|r| r.offset < to) {
            assert_eq!(r.offset, next, "dense, no gap, no duplicate");
            out.push((r.offset, r.append_time, r.record.timestamp));
            next += 1;
        }
    }
    out
}

/// A wall clock that mostly moves forward and sometimes steps back, records spread over two
/// partitions, producer timestamps late (backdated by up to an hour), early and out of order;
/// and the instants to ask about, around and at the append times.
fn case() -> impl Strategy<Value = (Vec<Append>, Vec<i64>)> {
    let append = (0..PARTITIONS, -400i64..1_000, prop_oneof![-3_600_000i64..0, -5_000i64..5_000, 0i64..60_000]);
    (proptest::collection::vec(append, 400..900), proptest::collection::vec(any::<prop::sample::Index>(), 8)).prop_map(
        |(steps, picks)| {
            let mut clock = CLOCK_START;
            let appends: Vec<Append> = steps
                .into_iter()
                .map(|(partition, step, skew)| {
                    clock += step;
                    Append { partition, clock, timestamp: clock + skew }
                })
                .collect();
            let mut questions = vec![CLOCK_START - 10_000, clock + 10_000];
            for pick in picks {
                let a = appends[pick.index(appends.len())];
                questions.extend([a.clock - 1, a.clock, a.clock + 1, a.timestamp]);
            }
            (appends, questions)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5, ..ProptestConfig::default() })]
    #[test]
    fn as_of_cuts_and_replays_match_an_oracle_in_both_tiers((appends, questions) in case()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let s3 = S3Target::start();
            let t = two_tier_log(&s3, &appends, appends.len() / 2).await;
            let (reader, _, _) = counting_reader(&t);
            for id in 0..PARTITIONS {
                let p = partition(&t.log, id);
                assert!(p.start_offset() > 0, "partition {id}: part of the log is remote-only");
                // Append times as stored: the clamped clock, never decreasing, in both tiers.
                let stored = replay(&reader, &p, 0, p.end_offset()).await;
                let want: Vec<(u64, Option<i64>, i64)> = t.oracle.records[id as usize]
                    .iter()
                    .enumerate()
                    .map(|(o, (appended, ts))| (o as u64, Some(*appended), *ts))
                    .collect();
                assert_eq!(stored, want, "partition {id}: every record's two clocks");
            }
            for &time in &questions {
                let cut = tierlog::reader::snapshot(&reader, &["t".to_string()], time).await.unwrap();
                // Consistent across partitions: the cut holds a prefix of the appends in the
                // order the writer acknowledged them.
                let mut taken = [0u64; PARTITIONS as usize];
                let known = appends.iter().take_while(|a| {
                    let p = a.partition as usize;
                    let inside = taken[p] < cut[p]["end"].as_u64().unwrap();
                    taken[p] += u64::from(inside);
                    inside
                });
                let prefix = known.count();
                let ends: Vec<u64> = cut.iter().map(|c| c["end"].as_u64().unwrap()).collect();
                assert_eq!(ends.iter().sum::<u64>(), prefix as u64, "as of {time}: {ends:?} is not a prefix of the appends");
                for id in 0..PARTITIONS {
                    let p = partition(&t.log, id);
                    let expected = t.oracle.as_of(id, time);
                    let got = reader.offset_as_of(&p, time).await.unwrap();
                    assert_eq!(got, expected, "partition {id}: as of {time}");
                    assert_eq!(cut[id as usize]["end"], expected, "partition {id}: the snapshot at {time}");
                    let first = replay(&reader, &p, 0, got).await;
                    assert!(first.iter().all(|(_, appended, _)| appended.unwrap() <= time), "only what was known");
                    assert_eq!(reader.offset_as_of(&p, time).await.unwrap(), got, "asking again");
                    assert_eq!(replay(&reader, &p, 0, got).await, first, "the same records every time");
                    // Event time is a separate question, answered as before.
                    assert_eq!(reader.offset_for_time(&p, time).await.unwrap(), t.oracle.for_time(id, time));
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_as_of_lookup_costs_at_most_two_gets_and_no_list() {
    let s3 = S3Target::start();
    let appends: Vec<Append> = (0..3000)
        .map(|i| Append { partition: 0, clock: CLOCK_START + i * 10, timestamp: CLOCK_START - (i % 7) * 60_000 })
        .collect();
    let t = two_tier_log(&s3, &appends, 2000).await;
    let p = partition(&t.log, 0);
    for offset in [0u64, 777, 1234, 1999] {
        let (reader, faulty, remote) = counting_reader(&t);
        remote.manifest("t", 0).await.unwrap(); // "with the manifest loaded"
        let [_, gets0, heads0, lists0, _] = faulty.counters.snapshot();
        let time = CLOCK_START + offset as i64 * 10; // appended at that instant: the cut is just after it
        assert_eq!(reader.offset_as_of(&p, time).await.unwrap(), offset + 1);
        let [_, gets1, heads1, lists1, _] = faulty.counters.snapshot();
        assert!(gets1 - gets0 <= 2, "as of offset {offset}: {} GETs", gets1 - gets0);
        assert_eq!((heads1, lists1), (heads0, lists0), "no HEAD or LIST");
    }
    // In the local part: no request at all.
    let (reader, faulty, remote) = counting_reader(&t);
    remote.manifest("t", 0).await.unwrap();
    let gets = faulty.counters.snapshot()[1];
    assert_eq!(reader.offset_as_of(&p, CLOCK_START + 2500 * 10).await.unwrap(), 2501);
    assert_eq!(faulty.counters.snapshot()[1], gets);
}
