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
        let mut bytes = batches.to_kafka().unwrap();
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
