//! One limit table for write and read: whatever `Partition::append` accepts, `Partition::read`
//! returns unchanged, before and after a reopen; whatever it refuses leaves the partition as
//! it was. Records are generated around every limit (headers per record, record bytes).

use std::path::Path;

use proptest::prelude::*;
use tierlog::config::{Config, FsyncPolicy};
use tierlog::{Log, Record};

/// `log.max_record_bytes` of these tests: large enough that a record with more headers than
/// the format allows still fits, so the header limit (not the size policy) is what refuses it.
const POLICY_RECORD_BYTES_MAX: usize = 64 * 1024;
/// Bytes of a record with no key, no headers and an empty value.
const RECORD_OVERHEAD_BYTES: usize = 8 + 4 + 4 + 4;

fn config(dir: &Path) -> Config {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.log.max_record_bytes = POLICY_RECORD_BYTES_MAX as u64;
    config.segment.max_bytes = 96 * 1024; // a few records per segment: appends roll
    config.durability.fsync = FsyncPolicy::Never; // the process does not crash here
    config
}

fn read_all(log: &Log) -> Vec<(u64, Record)> {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut out = Vec::new();
    loop {
        let next = out.last().map_or(0, |(o, _): &(u64, Record)| o + 1);
        let batch = p.read(next, 4096).unwrap_or_else(|e| panic!("read at offset {next}: {e}"));
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|s| (s.offset, s.record)));
    }
}

fn headers(count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count).map(|i| (format!("h{i}"), b"v".to_vec())).collect()
}

fn arb_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name_value = ("[a-z]{0,3}", proptest::collection::vec(any::<u8>(), 0..4));
    prop_oneof![
        proptest::collection::vec(name_value.clone(), 0..3),
        // Around RECORD_HEADERS_MAX = 1024.
        proptest::collection::vec(name_value, 1022..=1026),
    ]
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    let edge = POLICY_RECORD_BYTES_MAX - RECORD_OVERHEAD_BYTES;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        // Around log.max_record_bytes, counting the fixed fields of a record.
        ((edge - 24)..=(edge + 8)).prop_map(|len| vec![b'x'; len]),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    (any::<i64>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)), arb_value(), arb_headers())
        .prop_map(|(timestamp, key, value, headers)| Record { timestamp, key, value, headers })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn whatever_append_accepts_read_returns_unchanged_and_refusals_change_nothing(
        calls in proptest::collection::vec(proptest::collection::vec(arb_record(), 1..4), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut oracle: Vec<(u64, Record)> = Vec::new();
        {
            let log = Log::open(config(dir.path())).unwrap();
            let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
            for records in &calls {
                let before = p.end_offset();
                match p.append(records, 0) {
                    Ok(appended) => {
                        prop_assert_eq!(appended.first_offset, before);
                        prop_assert_eq!(appended.last_offset, before + records.len() as u64 - 1);
                        oracle.extend((before..).zip(records.iter().cloned()));
                    }
                    Err(_) => prop_assert_eq!(p.end_offset(), before, "a refused append changed the end offset"),
                }
                prop_assert_eq!(read_all(&log), oracle.clone());
            }
        }
        let reopened = Log::open(config(dir.path())).unwrap();
        prop_assert_eq!(read_all(&reopened), oracle, "after reopening (recovery scan)");
    }
}

#[test]
fn given_a_record_with_1025_headers_when_appending_then_it_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let ok = Record { timestamp: 1, key: None, value: b"ok".to_vec(), headers: headers(1024) };
    let bad = Record { headers: headers(1025), ..ok.clone() };
    let err = p.append(&[ok.clone(), bad], 0).expect_err("1025 headers must be refused").to_string();
    for needle in ["t/0", "record 1", "1025 headers", "maximum is 1024"] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    assert_eq!(p.end_offset(), 0, "nothing of the refused append is written");
    p.append(std::slice::from_ref(&ok), 0).unwrap();
    assert_eq!(read_all(&log), vec![(0, ok)], "1024 headers is the maximum, and it reads back");
}
