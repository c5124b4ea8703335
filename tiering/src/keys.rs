//! Object keys. Segment objects get a fresh key per upload attempt (never overwritten) under
//! a short hash prefix that spreads them over S3's per-prefix request limits:
//!
//! ```text
//! <prefix>/segments/<hash4>/<topic>/<partition>/<base:020>-<unique>.zst
//! <prefix>/manifests/<topic>/<partition>/<version:020>.json       (create-only)
//! <prefix>/manifests/<topic>/<partition>/archive/<base:020>-<unique>.json
//! ```
//!
//! `hash4` is the first two bytes of SHA-256 of `<topic>/<partition>/<base>` in lowercase hex;
//! `unique` is `<millis:x>-<random:016x>`; `partition` is a decimal `u32` without leading
//! zeros; `topic` is a valid topic name. [`parse_key`] is the exact inverse of the builders:
//! anything that deletes objects (scrub) classifies keys with it and never with substrings, so
//! a topic or bucket prefix named `archive`, `segments` or `manifests` cannot make a manifest
//! version look like a segment or an archive.

use std::sync::{Arc, Mutex};

use object_store::path::Path;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::RemoteStore;

/// Longest topic name, as the log crate's topic validation allows (Kafka's limit).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Digits of a zero-padded offset or version: `u64::MAX` has 20.
const NUMBER_DIGITS: usize = 20;
/// Hex digits of the random part of a unique suffix.
const RANDOM_HEX_DIGITS: usize = 16;
/// Most hex digits of the millisecond part of a unique suffix (a `u128`).
const MILLIS_HEX_DIGITS_MAX: usize = 32;

/// 16 random hex digits plus the time: unique per attempt without coordination.
pub fn unique_suffix() -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:016x}", rand::rng().random::<u64>())
}

/// Where a store's unique key suffixes come from: the time and real randomness
/// ([`unique_suffix`]), or, in a simulation, a sequence drawn from a seed, so that the keys,
/// and with them LIST order and which object a seeded fault hits, are the same every run.
#[derive(Debug, Clone, Default)]
pub struct UniqueIds(Option<Arc<Mutex<(u64, rand::rngs::StdRng)>>>);

impl UniqueIds {
    /// Suffixes of the same shape as [`unique_suffix`]: a counter for the time part and a
    /// seeded generator for the random part.
    pub fn seeded(seed: u64) -> UniqueIds {
        UniqueIds(Some(Arc::new(Mutex::new((0, rand::SeedableRng::seed_from_u64(seed))))))
    }

    pub fn next(&self) -> String {
        let Some(state) = &self.0 else { return unique_suffix() };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let (count, rng) = &mut *state;
        *count += 1;
        format!("{count:x}-{:016x}", rng.random::<u64>())
    }
}

pub fn segment_key(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64) -> Path {
    segment_key_with(store, topic, partition, base_offset, &store.ids.next())
}

fn segment_key_with(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64, unique: &str) -> Path {
    let name = format!("{base_offset:020}-{unique}.zst");
    store.key(&["segments", &segment_hash(topic, partition, base_offset), topic, &partition.to_string(), &name])
}

/// The short hash prefix of a segment key.
fn segment_hash(topic: &str, partition: u32, base_offset: u64) -> String {
    let digest = Sha256::digest(format!("{topic}/{partition}/{base_offset}").as_bytes());
    hex::encode(&digest[..2])
}

pub fn manifest_key(store: &RemoteStore, topic: &str, partition: u32, version: u64) -> Path {
    store.key(&["manifests", topic, &partition.to_string(), &format!("{version:020}.json")])
}

pub fn archive_key(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64) -> Path {
    archive_key_with(store, topic, partition, base_offset, &store.ids.next())
}

fn archive_key_with(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64, unique: &str) -> Path {
    let name = format!("{base_offset:020}-{unique}.json");
    store.key(&["manifests", topic, &partition.to_string(), "archive", &name])
}

/// What a key built by this module names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    Segment { topic: String, partition: u32, base_offset: u64 },
    ManifestVersion { topic: String, partition: u32, version: u64 },
    Archive { topic: String, partition: u32, base_offset: u64 },
}

/// Parses `key` as one of the keys this module builds under `store`'s prefix. `None` for
/// anything not fully recognised: another prefix, an unknown layout, a bad topic name, a
/// number that is not 20 digits, a unique suffix of the wrong shape, or a segment whose hash
/// prefix does not match its topic, partition and offset.
pub fn parse_key(store: &RemoteStore, key: &Path) -> Option<ParsedKey> {
    let parts: Vec<String> = key.prefix_match(&store.prefix)?.map(|p| p.as_ref().to_string()).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["segments", hash, topic, partition, name] => {
            let (topic, partition) = (parse_topic(topic)?, parse_partition(partition)?);
            let base_offset = parse_unique_name(name, ".zst")?;
            (*hash == segment_hash(&topic, partition, base_offset)).then_some(ParsedKey::Segment {
                topic,
                partition,
                base_offset,
            })
        }
        ["manifests", topic, partition, name] => Some(ParsedKey::ManifestVersion {
            topic: parse_topic(topic)?,
            partition: parse_partition(partition)?,
            version: parse_number(name.strip_suffix(".json")?)?,
        }),
        ["manifests", topic, partition, "archive", name] => Some(ParsedKey::Archive {
            topic: parse_topic(topic)?,
            partition: parse_partition(partition)?,
            base_offset: parse_unique_name(name, ".json")?,
        }),
        _ => None,
    }
}

/// A topic name as the log crate accepts it: 1..=249 of `[A-Za-z0-9._-]`, not `.` or `..`.
fn parse_topic(part: &str) -> Option<String> {
    let chars_ok = part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let ok = chars_ok && (1..=TOPIC_NAME_BYTES_MAX).contains(&part.len()) && part != "." && part != "..";
    ok.then(|| part.to_string())
}

/// A partition as `u32::to_string` writes it (no sign, no leading zeros).
fn parse_partition(part: &str) -> Option<u32> {
    let partition: u32 = part.parse().ok()?;
    (partition.to_string() == part).then_some(partition)
}

/// Exactly 20 decimal digits.
fn parse_number(text: &str) -> Option<u64> {
    (text.len() == NUMBER_DIGITS && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

/// `<number:020>-<millis:x>-<random:016x><extension>`, returning the number.
fn parse_unique_name(name: &str, extension: &str) -> Option<u64> {
    let (number, unique) = name.strip_suffix(extension)?.split_once('-')?;
    let (millis, random) = unique.split_once('-')?;
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let millis_ok = (1..=MILLIS_HEX_DIGITS_MAX).contains(&millis.len())
        && lower_hex(millis)
        && (millis == "0" || !millis.starts_with('0'));
    let random_ok = random.len() == RANDOM_HEX_DIGITS && lower_hex(random);
    (millis_ok && random_ok).then(|| parse_number(number))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn store(prefix: &str) -> RemoteStore {
        RemoteStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::from(prefix),
            display: "memory".into(),
            ids: UniqueIds::default(),
            lock: None,
            records_lock: None,
        }
    }

    fn topic() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("archive".to_string()),
            Just("segments".to_string()),
            Just("manifests".to_string()),
            Just("_tierlog".to_string()),
            "[A-Za-z0-9._-]{1,40}".prop_filter("not . or ..", |t| t != "." && t != ".."),
        ]
    }

    fn prefix() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just("archive".to_string()),
            Just("segments".to_string()),
            Just("manifests".to_string()),
            "[a-z0-9-]{1,12}",
        ];
        proptest::collection::vec(part, 0..4).prop_map(|parts| parts.join("/"))
    }

    fn unique() -> impl Strategy<Value = String> {
        (any::<u64>(), any::<u64>()).prop_map(|(millis, random)| format!("{millis:x}-{random:016x}"))
    }

    proptest! {
        #[test]
        fn parse_is_the_inverse_of_every_builder(
            prefix in prefix(), topic in topic(), partition in any::<u32>(), number in any::<u64>(), unique in unique(),
        ) {
            let store = store(&prefix);
            let segment = segment_key_with(&store, &topic, partition, number, &unique);
            let manifest = manifest_key(&store, &topic, partition, number);
            let archive = archive_key_with(&store, &topic, partition, number, &unique);
            let (t, p) = (topic.clone(), partition);
            prop_assert_eq!(parse_key(&store, &segment), Some(ParsedKey::Segment { topic: t.clone(), partition: p, base_offset: number }));
            prop_assert_eq!(parse_key(&store, &manifest), Some(ParsedKey::ManifestVersion { topic: t.clone(), partition: p, version: number }));
            prop_assert_eq!(parse_key(&store, &archive), Some(ParsedKey::Archive { topic: t, partition: p, base_offset: number }));
        }

        #[test]
        fn keys_of_another_prefix_are_not_recognised(topic in topic(), partition in any::<u32>(), number in any::<u64>()) {
            let (ours, theirs) = (store("cluster-1"), store("cluster-2"));
            prop_assert_eq!(parse_key(&ours, &segment_key(&theirs, &topic, partition, number)), None);
            prop_assert_eq!(parse_key(&ours, &manifest_key(&theirs, &topic, partition, number)), None);
        }
    }

    #[test]
    fn manifest_versions_of_a_topic_named_archive_are_manifest_versions() {
        let store = store("archive/segments");
        let key = manifest_key(&store, "archive", 0, 1);
        assert_eq!(key.as_ref(), "archive/segments/manifests/archive/0/00000000000000000001.json");
        assert_eq!(
            parse_key(&store, &key),
            Some(ParsedKey::ManifestVersion { topic: "archive".into(), partition: 0, version: 1 })
        );
    }

    #[test]
    fn near_misses_are_not_recognised() {
        let store = store("");
        let good = segment_key_with(&store, "t", 0, 5, "18f-00000000000000ab");
        let hash = good.parts().nth(1).unwrap().as_ref().to_string();
        assert!(parse_key(&store, &good).is_some(), "{good}");
        for bad in [
            format!("segments/{hash}/t/0/00000000000000000005-18f-00000000000000ab.json"),
            format!("segments/{hash}/t/00/00000000000000000005-18f-00000000000000ab.zst"),
            format!("segments/{hash}/t/0/0000000000000000005-18f-00000000000000ab.zst"),
            format!("segments/{hash}/t/0/00000000000000000005-18F-00000000000000ab.zst"),
            format!("segments/{hash}/t/0/00000000000000000005-18f-000000000000000ab.zst"),
            format!("segments/{hash}/t/0/00000000000000000005.zst"),
            format!("segments/{hash}/t/0/00000000000000000006-18f-00000000000000ab.zst"),
            format!("segments/{hash}/t$/0/00000000000000000005-18f-00000000000000ab.zst"),
            "segments/0000/t/0/00000000000000000005-18f-00000000000000ab.zst".to_string(),
            "manifests/t/0/1.json".to_string(),
            "manifests/t/0/00000000000000000001.json.tmp".to_string(),
            "manifests/t/0/archive/00000000000000000000.json".to_string(),
            "manifests/t/0/extra/00000000000000000001.json".to_string(),
            "_tierlog/scrub/18f-00000000000000ab".to_string(),
        ] {
            assert_eq!(parse_key(&store, &Path::from(bad.as_str())), None, "{bad}");
        }
    }
}
