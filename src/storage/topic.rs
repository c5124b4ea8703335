//! A topic: a name, a fixed number of partitions, and how records pick a partition.
//!
//! Owns topic names (validation), topic metadata (`topic.json`, versioned) and partitioning:
//! a record with a key goes to `murmur2(key) % partitions` (Kafka's default partitioner, so
//! keys land where a Kafka user expects); a record without a key goes round-robin.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::batch::TimestampType;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::partition::Partition;

/// Longest topic name, as in Kafka (it must fit in a file name with room to spare).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have; each holds open files.
pub const PARTITIONS_MAX: u32 = 10_000;
const METADATA_FILE: &str = "topic.json";
/// Version 2: the topic's batches may carry append times (Kafka's LogAppendTime encoding). A
/// build from before them reads such batches as damage and would cut them off as a torn tail,
/// so it must not open the topic at all: it refuses any version but 1. A writer upgrades a
/// version-1 file before it appends anything.
const METADATA_VERSION: u32 = 2;
const METADATA_VERSIONS_READ: [u32; 2] = [1, 2];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub version: u32,
    pub name: String,
    pub partitions: u32,
    pub created_ms: i64,
    /// Which timestamps Kafka clients see (Kafka's topic config of the same name). Absent in
    /// the file for the default, CreateTime, as in files written before it existed.
    #[serde(rename = "message.timestamp.type", default, skip_serializing_if = "is_create_time")]
    pub timestamp_type: TimestampType,
}

fn is_create_time(t: &TimestampType) -> bool {
    *t == TimestampType::CreateTime
}

/// Per-topic settings a topic can be created with, under Kafka's names. Only
/// `message.timestamp.type` is per topic so far; anything else is refused by name.
pub fn timestamp_type_from_settings<'a>(
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<TimestampType> {
    let mut timestamp_type = TimestampType::default();
    for (key, value) in settings {
        match key {
            "message.timestamp.type" => timestamp_type = value.parse().map_err(Error::Invalid)?,
            other => {
                return Err(Error::Invalid(format!(
                    "per-topic setting {other:?} is not supported (supported: message.timestamp.type = CreateTime | LogAppendTime); the others come from the server's configuration"
                )));
            }
        }
    }
    Ok(timestamp_type)
}

pub struct Topic {
    pub metadata: TopicMetadata,
    pub partitions: Vec<Arc<Partition>>,
    next_keyless: AtomicU64,
}

/// Checks a topic name: 1..=249 characters from `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() || name.len() > TOPIC_NAME_BYTES_MAX {
        return invalid("must be 1 to 249 characters");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

pub fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("topics").join(name)
}

impl Topic {
    /// Creates the topic's directories and metadata. Fails if it exists.
    pub fn create(
        host: &Host,
        data_dir: &Path,
        name: &str,
        partitions: u32,
        timestamp_type: TimestampType,
        config: &Config,
    ) -> Result<Topic> {
        validate_name(name)?;
        if partitions == 0 || partitions > PARTITIONS_MAX {
            return Err(Error::Invalid(format!(
                "topic '{name}': partitions must be 1..={PARTITIONS_MAX}, got {partitions}"
            )));
        }
        let dir = topic_dir(data_dir, name);
        if host.disk.is_file(&dir.join(METADATA_FILE)) {
            return Err(Error::TopicExists(name.to_string()));
        }
        let created_ms = host.clock.now_ms();
        let metadata =
            TopicMetadata { version: METADATA_VERSION, name: name.to_string(), partitions, created_ms, timestamp_type };
        Topic::write_new(host, data_dir, metadata, config)
    }

    /// Creates a topic restored from the bucket: as it was created (`created_ms`, settings),
    /// each partition starting empty at the remote tier's end with its append-time floor
    /// (`starts[p]`). A topic whose metadata exists is refused; partition directories a
    /// crashed restore prepared are accepted as they are (see `partition::prepare_restored`).
    pub fn create_restored(
        host: &Host,
        data_dir: &Path,
        spec: &TopicMetadata,
        starts: &[(u64, Option<i64>)],
        config: &Config,
    ) -> Result<Topic> {
        validate_name(&spec.name)?;
        let name = spec.name.as_str();
        if spec.partitions == 0 || spec.partitions > PARTITIONS_MAX || starts.len() != spec.partitions as usize {
            return Err(Error::Invalid(format!(
                "topic '{name}': {} partitions with {} start offsets",
                spec.partitions,
                starts.len()
            )));
        }
        let dir = topic_dir(data_dir, name);
        if host.disk.is_file(&dir.join(METADATA_FILE)) {
            return Err(Error::TopicExists(name.to_string()));
        }
        for (p, (start, floor)) in starts.iter().enumerate() {
            crate::partition::prepare_restored(host, &dir.join(p.to_string()), *start, *floor, config)?;
        }
        let metadata = TopicMetadata { version: METADATA_VERSION, ..spec.clone() };
        Topic::write_new(host, data_dir, metadata, config)
    }

    /// Opens the partitions of a new topic, then writes its metadata.
    fn write_new(host: &Host, data_dir: &Path, metadata: TopicMetadata, config: &Config) -> Result<Topic> {
        let dir = topic_dir(data_dir, &metadata.name);
        host.disk.create_dir_all(&dir).map_err(|e| Error::io(&dir, "create topic directory", e))?;
        let topics = data_dir.join("topics");
        host.disk.sync_dir(&topics).map_err(|e| Error::io(&topics, "fsync directory", e))?;
        let topic = Topic::open_partitions(host, data_dir, metadata, config, true)?;
        let json = serde_json::to_vec_pretty(&topic.metadata).expect("metadata serializes");
        // Metadata last: a crash before this leaves no topic, only empty directories.
        host.disk
            .write_atomic(&dir.join(METADATA_FILE), &json)
            .map_err(|e| Error::io(&dir, "write topic metadata in", e))?;
        Ok(topic)
    }

    /// Opens an existing topic from its metadata.
    pub fn open(host: &Host, data_dir: &Path, name: &str, config: &Config, writable: bool) -> Result<Topic> {
        let path = topic_dir(data_dir, name).join(METADATA_FILE);
        let bytes = match host.disk.read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::UnknownTopic(name.to_string())),
            Err(e) => return Err(Error::io(&path, "read topic metadata", e)),
        };
        let metadata: TopicMetadata = serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
            topic: name.to_string(),
            partition: 0,
            detail: format!("{}: {e}", path.display()),
        })?;
        if !METADATA_VERSIONS_READ.contains(&metadata.version) || metadata.name != name || metadata.partitions == 0 {
            return Err(Error::Damaged {
                topic: name.to_string(),
                partition: 0,
                detail: format!(
                    "{}: unsupported version {} (this build reads 1 and 2) or wrong name",
                    path.display(),
                    metadata.version
                ),
            });
        }
        let mut metadata = metadata;
        if writable && metadata.version < METADATA_VERSION {
            // Before any batch with an append time goes in: from now on, older builds refuse it.
            metadata.version = METADATA_VERSION;
            let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
            host.disk.write_atomic(&path, &json).map_err(|e| Error::io(&path, "upgrade topic metadata", e))?;
        }
        Topic::open_partitions(host, data_dir, metadata, config, writable)
    }

    fn open_partitions(
        host: &Host,
        data_dir: &Path,
        metadata: TopicMetadata,
        config: &Config,
        writable: bool,
    ) -> Result<Topic> {
        let dir = topic_dir(data_dir, &metadata.name);
        let partitions = (0..metadata.partitions)
            .map(|p| Partition::open(host, &metadata.name, p, dir.join(p.to_string()), config, writable).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic { metadata, partitions, next_keyless: AtomicU64::new(0) })
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions.get(id as usize).ok_or_else(|| Error::UnknownPartition {
            topic: self.name().to_string(),
            partition: id,
            partitions: self.metadata.partitions,
        })
    }

    /// The partition a record goes to: by key hash, else round-robin.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let n = self.metadata.partitions;
        match key {
            Some(key) => (murmur2(key) as u32 & 0x7fff_ffff) % n,
            None => (self.next_keyless.fetch_add(1, Ordering::Relaxed) % u64::from(n)) as u32,
        }
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), so the same key maps to the same partition as in Kafka.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4-byte chunk"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own murmur2 tests.
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"), -58897971);
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn names_with_separators_dots_or_control_characters_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../etc", "a\0b", "tab\there", "é", &"x".repeat(250)] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in ["payments", "payments.v2", "a-b_c", "..x"] {
            validate_name(good).unwrap();
        }
    }
}
