//! Stored formats across versions: a data directory and remote tier written by a build that
//! stored batch format version 1 (tests/fixtures/v1) stay readable by this build, which
//! appends version-2 batches (Kafka's RecordBatch v2) beside them, recovers and tiers segments
//! holding both, and serves both to Kafka clients as RecordBatch v2.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tierlog::config::Config;
use tierlog::partition::Partition;
use tierlog::reader::Reader;
use tierlog::tier::Tiering;
use tierlog::{Log, Record};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What the version-1 build printed for every record, as (offset, record).
fn expected() -> Vec<(u64, Record)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/expected.jsonl"))
        .unwrap();
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            let headers = v["headers"]
                .as_object()
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec())).collect())
                .unwrap_or_default();
            let record = Record {
                timestamp: v["timestamp"].as_i64().unwrap(),
                key: v["key"].as_str().map(|k| k.as_bytes().to_vec()),
                value: v["value"].as_str().unwrap().as_bytes().to_vec(),
                headers,
            };
            (v["offset"].as_u64().unwrap(), record)
        })
        .collect()
}

async fn read_all(reader: &Reader, p: &Arc<Partition>) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    loop {
        let records = reader.read(p, out.len() as u64, 1024).await.unwrap();
        if records.is_empty() {
            return out;
        }
        out.extend(records.into_iter().map(|s| (s.offset, s.record)));
    }
}

/// Every record as a Kafka client decodes the fetch bytes (`kafka-protocol`, not written here).
async fn read_all_as_kafka(reader: &Reader, p: &Arc<Partition>) -> Vec<(u64, Record)> {
    let mut out: Vec<(u64, Record)> = Vec::new();
    while let Some(batches) = reader.read_batches(p, out.len() as u64, 1024).await.unwrap() {
        let mut bytes = batches.into_kafka(tierlog::batch::TimestampType::CreateTime).unwrap().bytes;
        while !bytes.is_empty() {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
            let from = out.len() as i64;
            for r in set.records.into_iter().filter(|r| r.offset >= from) {
                let headers = r.headers.iter().map(|(k, v)| (k.to_string(), v.clone().unwrap().to_vec())).collect();
                let record = Record {
                    timestamp: r.timestamp,
                    key: r.key.map(|k| k.to_vec()),
                    value: r.value.unwrap().to_vec(),
                    headers,
                };
                assert_eq!(r.offset as usize, out.len(), "dense offsets");
                out.push((r.offset as u64, record));
            }
        }
    }
    out
}

fn config(data_dir: &Path) -> Config {
    let mut config = Config { data_dir: data_dir.to_path_buf(), ..Config::default() };
    config.segment.max_bytes = 4096;
    config.segment.index_interval_bytes = 256;
    config.tiering.local_retention_bytes = 0;
    config
}

#[tokio::test]
async fn a_version_1_archive_reads_the_same_records_and_takes_version_2_batches_beside_them() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture.join("legacy-data"), &tmp.path().join("legacy-data"));
    copy_dir(&fixture.join("legacy-data-remote"), &tmp.path().join("legacy-data-remote"));
    let config = config(&tmp.path().join("legacy-data"));
    let mut want = expected();
    assert_eq!(want.len(), 190);

    // Read as written: offsets 0..120 from version-1 objects, 120..190 from version-1 segments.
    let log = Log::open(config.clone()).unwrap();
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    assert_eq!((p.start_offset(), p.end_offset()), (120, 190));
    let reader = Reader::new(log.clone());
    assert_eq!(read_all(&reader, &p).await, want);
    assert_eq!(read_all_as_kafka(&reader, &p).await, want);
    assert_eq!(reader.offset_for_time(&p, 1_700_000_050_500).await.unwrap(), 51);
    assert_eq!(reader.offset_for_time(&p, 1_700_000_150_500).await.unwrap(), 151);

    // Version-2 batches go into the version-1 active segment, then past it.
    for i in 190..230u64 {
        let record = Record {
            timestamp: 1_700_000_000_000 + i as i64 * 1000,
            key: Some(format!("acct-{}", i % 4).into_bytes()),
            value: format!("v2-{i}").into_bytes(),
            headers: vec![("src".into(), format!("v2-{i}").into_bytes())],
        };
        p.append(std::slice::from_ref(&record), 0).unwrap();
        want.push((i, record));
    }
    drop((reader, p, log));

    // Reopen: recovery scans segments holding both versions.
    let log = Log::open(config.clone()).unwrap();
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.end_offset(), 230);
    let reader = Reader::new(log.clone());
    assert_eq!(read_all(&reader, &p).await, want);

    // Tier everything (retention 0 leaves only the active segment local), read it back
    // through a new reader, from the remote tier, and as a Kafka client would.
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(p.start_offset(), 230, "every segment tiered and deleted locally");
    let reader = Reader::new(log.clone());
    assert_eq!(read_all(&reader, &p).await, want);
    assert_eq!(read_all_as_kafka(&reader, &p).await, want);
    assert_eq!(reader.offset_for_time(&p, 1_700_000_200_000).await.unwrap(), 200);
}

/// A version-1 (`TLB1`) batch exactly as the last version-1 build encoded it
/// (layout in docs/FORMAT.md; checked against that build's golden bytes below).
fn v1_batch(base: u64, records: &[Record]) -> Vec<u8> {
    let len = |r: &Record| {
        20 + r.key.as_ref().map_or(0, Vec::len)
            + r.value.len()
            + r.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>()
    };
    let length = 48 + records.iter().map(len).sum::<usize>();
    let mut b = Vec::with_capacity(length);
    b.extend_from_slice(b"TLB1");
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    b.extend_from_slice(&[1, 0, 0, 0]);
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&records.iter().map(|r| r.timestamp).min().unwrap().to_le_bytes());
    b.extend_from_slice(&records.iter().map(|r| r.timestamp).max().unwrap().to_le_bytes());
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for r in records {
        b.extend_from_slice(&r.timestamp.to_le_bytes());
        match &r.key {
            None => b.extend_from_slice(&u32::MAX.to_le_bytes()),
            Some(k) => {
                b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                b.extend_from_slice(k);
            }
        }
        b.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
        b.extend_from_slice(&r.value);
        b.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
        for (k, v) in &r.headers {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        }
    }
    let crc = crc32c::crc32c(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The v1 fixture with `extra` appended to its active segment (offsets 190..),
/// as if the last version-1 build had appended it before the upgrade.
fn legacy_with_v1_tail(tmp: &Path, extra: &[u8]) -> Config {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture.join("legacy-data"), &tmp.join("legacy-data"));
    copy_dir(&fixture.join("legacy-data-remote"), &tmp.join("legacy-data-remote"));
    let active = tmp.join("legacy-data/topics/legacy/0/00000000000000000182.log");
    let mut bytes = std::fs::read(&active).unwrap();
    bytes.extend_from_slice(extra);
    std::fs::write(&active, bytes).unwrap();
    config(&tmp.join("legacy-data"))
}

/// Found in review: a version-1 batch of BATCH_BYTES_MAX bytes (two records the version-1 build
/// accepted with `log.max_record_bytes` at its 32 MiB maximum, in one append call) reads
/// back over HTTP, but a Kafka fetch of it panics in `Batches::to_kafka` (re-encoding grows
/// it past BATCH_BYTES_MAX and `batch::encode` asserts): those acknowledged records can never
/// be consumed over Kafka.
#[tokio::test]
async fn a_maximal_version_1_batch_is_fetchable_as_kafka() {
    // The helper writes what the version-1 build wrote (`batch::tests::V1_GOLDEN`).
    let sample = [
        Record {
            timestamp: 1_700_000_000_000,
            key: Some(b"acct-1".to_vec()),
            value: b"{\"amount\":12}".to_vec(),
            headers: vec![("source".into(), b"pos".to_vec())],
        },
        Record { timestamp: 1_699_999_999_000, key: None, value: b"x".to_vec(), headers: vec![] },
    ];
    let golden = "544c423168e015797d0000000100000007000000000000001864e5cf8b0100000068e5cf8b010000\
        02000000000000000068e5cf8b01000006000000616363742d310d0000007b22616d6f756e74223a31327d\
        0100000006000000736f7572636503000000706f731864e5cf8b010000ffffffff010000007800000000";
    let hex: String = v1_batch(7, &sample).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, golden.split_whitespace().collect::<String>());

    const POLICY_MAX: usize = 32 * 1024 * 1024; // log.max_record_bytes' upper bound
    let max = tierlog::batch::BATCH_BYTES_MAX;
    let a = Record { timestamp: 1_700_000_190_000, key: None, value: vec![b'a'; POLICY_MAX - 20], headers: vec![] };
    let b = Record {
        timestamp: 1_700_000_200_000,
        key: None,
        value: vec![b'b'; max - 48 - POLICY_MAX - 20],
        headers: vec![],
    };
    let extra = v1_batch(190, &[a.clone(), b.clone()]);
    assert_eq!(extra.len(), max);
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(legacy_with_v1_tail(tmp.path(), &extra)).unwrap();
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.end_offset(), 192, "recovery keeps the version-1 batch");
    let reader = Reader::new(log.clone());
    let read = reader.read(&p, 190, 1024).await.unwrap();
    assert_eq!(
        read.iter().map(|s| (s.offset, s.record.value.len())).collect::<Vec<_>>(),
        vec![(190, a.value.len()), (191, b.value.len())]
    );

    let batches = reader.read_batches(&p, 190, 1 << 20).await.unwrap().unwrap();
    let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        batches.into_kafka(tierlog::batch::TimestampType::CreateTime).map(|b| b.bytes)
    }));
    let mut bytes = fetched
        .unwrap_or_else(|panic| {
            let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            panic!("Kafka fetch of acknowledged offsets 190..=191 panicked: {text}")
        })
        .unwrap();
    let mut offsets = Vec::new();
    while !bytes.is_empty() {
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        offsets.extend(set.records.iter().map(|r| r.offset));
    }
    assert_eq!(offsets, vec![190, 191]);
}

/// Found in review: `keep_within(max_bytes)` measured stored version-1 bytes, but `to_kafka` sends them
/// re-encoded as version 2, which can be larger: a fetch partition that is not the first may
/// then answer more than its `partition_max_bytes` / remaining response budget.
#[tokio::test]
async fn kafka_bytes_of_version_1_batches_stay_within_max_bytes() {
    let record = Record { timestamp: 1_700_000_190_000, key: None, value: vec![b'v'; 1000], headers: vec![] };
    let extra = v1_batch(190, std::slice::from_ref(&record));
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(legacy_with_v1_tail(tmp.path(), &extra)).unwrap();
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    let reader = Reader::new(log.clone());
    let max_bytes = extra.len(); // room for exactly this batch as stored
    let read = || async {
        reader
            .read_batches(&p, 190, max_bytes)
            .await
            .unwrap()
            .unwrap()
            .into_kafka(tierlog::batch::TimestampType::CreateTime)
            .unwrap()
    };
    let mut batches = read().await;
    batches.keep_within(max_bytes, false); // not the first partition of the fetch
    let sent = batches.bytes;
    assert!(sent.len() <= max_bytes, "fetch answered {} bytes with max_bytes {max_bytes}", sent.len());
    let mut first = read().await;
    assert_eq!(first.keep_within(max_bytes, true), 191, "the first partition of a fetch gets the batch anyway");
}

/// Records written before append times were recorded (the version-1 archive, in both tiers)
/// have none. An as-of question whose answer depends on them is refused, naming the offset
/// from which append times exist — never answered with a guess. From that offset's append
/// time on, as-of works across old and new records, in both tiers.
#[tokio::test]
async fn as_of_on_records_without_append_times_is_refused_never_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture.join("legacy-data"), &tmp.path().join("legacy-data"));
    copy_dir(&fixture.join("legacy-data-remote"), &tmp.path().join("legacy-data-remote"));
    let config = config(&tmp.path().join("legacy-data"));
    let log = Log::open(config).unwrap();
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    let unknown = |e: tierlog::Error| match e {
        tierlog::Error::AppendTimeUnknown { offset, .. } => offset,
        other => panic!("expected AppendTimeUnknown, got {other}"),
    };
    let reader = Reader::new(log.clone());
    for t in [0, 1_700_000_100_000, 4_000_000_000_000] {
        let err = reader.offset_as_of(&p, t).await.unwrap_err();
        assert!(err.to_string().contains("offset 190"), "{err}");
        assert_eq!(unknown(err), 190, "as of {t}: nothing has an append time");
    }
    const FIRST: i64 = 1_800_000_000_190;
    for i in 190..230u64 {
        let record = Record {
            timestamp: 1_700_000_000_000 + i as i64 * 1000,
            value: format!("v2-{i}").into_bytes(),
            ..Record::default()
        };
        p.append(&[record], FIRST - 190 + i as i64).unwrap();
    }
    check_as_of(&Reader::new(log.clone()), &p, FIRST, unknown).await;
    // Tier everything: version-1 objects, the segment holding both kinds, stamped segments.
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert_eq!(p.start_offset(), 230, "every segment is remote-only");
    check_as_of(&Reader::new(log.clone()), &p, FIRST, unknown).await;
}

/// The as-of answers of the legacy partition with offsets 190..230 appended at `first`, `first + 1`, ….
async fn check_as_of(reader: &Reader, p: &Arc<Partition>, first: i64, unknown: impl Fn(tierlog::Error) -> u64) {
    assert_eq!(unknown(reader.offset_as_of(p, first - 1).await.unwrap_err()), 190, "before the first append time");
    assert_eq!(reader.offset_as_of(p, first).await.unwrap(), 191, "the old records came before it");
    assert_eq!(reader.offset_as_of(p, first + 20).await.unwrap(), 211);
    assert_eq!(reader.offset_as_of(p, first + 10_000).await.unwrap(), 230);
    // Event time is answered as before, old records included.
    assert_eq!(reader.offset_for_time(p, 1_700_000_050_500).await.unwrap(), 51);
}

/// Review of 1391cf4: segments sealed by the build before append times have no `.appendindex`,
/// and the first open rescanned (and CRC-checked) every one of them, so one latent flipped bit
/// in an old sealed segment, which the previous build only reported when that batch was read,
/// now refused the whole partition — and the server with it.
#[tokio::test]
async fn review_upgrade_does_not_refuse_a_partition_the_previous_build_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture.join("legacy-data"), &tmp.path().join("legacy-data"));
    copy_dir(&fixture.join("legacy-data-remote"), &tmp.path().join("legacy-data-remote"));
    let segment = tmp.path().join("legacy-data/topics/legacy/0/00000000000000000120.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let log = Log::open(config(&tmp.path().join("legacy-data")))
        .expect("the previous build opened this data directory (index files present)");
    let p = log.topic("legacy").unwrap().partition(0).unwrap().clone();
    assert_eq!(Reader::new(log.clone()).read(&p, 130, 1 << 20).await.unwrap()[0].offset, 130);
    // The damaged batch itself is still refused when read, naming the file.
    let err = Reader::new(log.clone()).read(&p, 129, 1 << 20).await.unwrap_err();
    assert!(err.to_string().contains("00000000000000000120.log"), "{err}");
}

/// Review of 1391cf4: a build from before append times reads stamped batches as damage and
/// cuts them off the active segment as a torn tail — acknowledged records lost on a rollback.
/// So the writer marks each topic version 2 before it appends anything, and those builds
/// refuse a topic of any version but 1 (`Topic::open` in commit 13dd1ba: "unsupported version
/// or wrong name") instead of cutting. A read-only open changes nothing.
#[test]
fn a_writer_marks_topics_so_that_builds_before_append_times_refuse_them() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    copy_dir(&fixture.join("legacy-data"), &tmp.path().join("legacy-data"));
    let config = config(&tmp.path().join("legacy-data"));
    let metadata = tmp.path().join("legacy-data/topics/legacy/topic.json");
    let version = || serde_json::from_slice::<Value>(&std::fs::read(&metadata).unwrap()).unwrap()["version"].clone();
    assert_eq!(version(), 1);
    drop(Log::open_read_only(config.clone()).unwrap().topic("legacy").unwrap());
    assert_eq!(version(), 1, "a reader changes nothing");
    let log = Log::open(config.clone()).unwrap();
    assert_eq!(version(), 2, "upgraded when the writer opened it, before any append");
    log.create_topic("fresh", 1).unwrap();
    let fresh = tmp.path().join("legacy-data/topics/fresh/topic.json");
    let fresh: Value = serde_json::from_slice(&std::fs::read(fresh).unwrap()).unwrap();
    assert_eq!(fresh["version"], 2);
    drop(log);
    // A version this build does not know is refused, by name, never guessed at.
    let text = std::fs::read_to_string(&metadata).unwrap().replace("\"version\": 2", "\"version\": 5");
    std::fs::write(&metadata, text).unwrap();
    let err = Log::open(config).err().expect("refused").to_string();
    assert!(err.contains("unsupported version 5"), "{err}");
}

/// `topic.json` version 3 (per-topic settings), golden bytes: what this build writes for a
/// topic that sets every setting but the lock, byte for byte, and reads back the same. Versions 1 and 2 (no
/// settings) still read, and a setting this build does not know is refused by name rather
/// than ignored.
#[test]
fn topic_json_version_3_golden_bytes_round_trip_and_unknown_settings_are_refused() {
    use tierlog::settings::TopicSettings;
    use tierlog::topic::{TopicMetadata, metadata_json};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/topic-json/v3.json");
    let golden = std::fs::read(&fixture).unwrap();
    let settings = TopicSettings {
        retention_ms: Some(315_360_000_000),
        retention_bytes: Some(-1),
        local_retention_ms: Some(3_600_000),
        local_retention_bytes: Some(0),
        remote_storage_enable: Some(true),
        segment_bytes: Some(8 * 1024 * 1024),
        segment_ms: Some(600_000),
        ..TopicSettings::default()
    };
    let metadata = TopicMetadata {
        version: 0, // computed from the settings when written
        name: "ledger".into(),
        partitions: 2,
        created_ms: 1_772_546_400_000,
        timestamp_type: tierlog::batch::TimestampType::LogAppendTime,
        settings: TopicSettings::default(),
    };
    assert_eq!(
        String::from_utf8(metadata_json(&metadata, &settings)).unwrap(),
        String::from_utf8(golden.clone()).unwrap()
    );

    let tmp = tempfile::tempdir().unwrap();
    let config = Config { data_dir: tmp.path().join("data"), ..Config::default() };
    let file = config.data_dir.join("topics/ledger/topic.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &golden).unwrap();
    let topic = Log::open_read_only(config.clone()).unwrap().topic("ledger").unwrap();
    assert_eq!(topic.own_settings(), settings, "parse → serialize → parse is the identity");
    assert_eq!(topic.metadata.timestamp_type, tierlog::batch::TimestampType::LogAppendTime);

    let unknown = String::from_utf8(golden).unwrap().replace("\"segment.ms\"", "\"segment.jitter.ms\"");
    std::fs::write(&file, unknown).unwrap();
    let err = Log::open_read_only(config).err().expect("refused").to_string();
    assert!(err.contains("unknown field `segment.jitter.ms`") && err.contains("is damaged"), "{err}");
}

/// `topic.json` version 4: settings with S3 Object Lock. Golden bytes; a lock written as
/// version 3 would reach builds that only refuse it by an unknown key, so the number says it.
#[test]
fn topic_json_version_4_holds_the_object_lock_settings_golden_bytes() {
    use tierlog::settings::TopicSettings;
    use tierlog::topic::{TopicMetadata, metadata_json};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/topic-json/v4.json");
    let golden = std::fs::read(&fixture).unwrap();
    let settings = TopicSettings {
        retention_ms: Some(189_216_000_000),
        object_lock_mode: Some("compliance".into()),
        object_lock_retain_days: Some(2192),
        ..TopicSettings::default()
    };
    let metadata = TopicMetadata {
        version: 0,
        name: "trades".into(),
        partitions: 1,
        created_ms: 1_772_546_400_000,
        timestamp_type: tierlog::batch::TimestampType::CreateTime,
        settings: TopicSettings::default(),
    };
    assert_eq!(
        String::from_utf8(metadata_json(&metadata, &settings)).unwrap(),
        String::from_utf8(golden.clone()).unwrap()
    );
    let tmp = tempfile::tempdir().unwrap();
    let config = Config { data_dir: tmp.path().join("data"), ..Config::default() };
    let file = config.data_dir.join("topics/trades/topic.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &golden).unwrap();
    let topic = Log::open_read_only(config.clone()).unwrap().topic("trades").unwrap();
    assert_eq!(topic.own_settings(), settings);
    let lock = topic.object_lock(&config).unwrap();
    assert_eq!(lock.retain_ms, 2192 * 24 * 3600 * 1000, "the longer of the lock days and retention.ms");
    // A bad mode in the file is damage, named, never ignored.
    std::fs::write(&file, String::from_utf8(golden).unwrap().replace("compliance", "worm")).unwrap();
    let err = Log::open_read_only(config).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("object.lock.mode"), "{err}");
}
