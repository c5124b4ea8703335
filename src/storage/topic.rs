//! A topic: a name, a fixed number of partitions, its own settings, and how records pick a
//! partition.
//!
//! Owns topic names (validation), topic metadata (`topic.json`, versioned, with the topic's
//! own settings — their meaning and resolution are `settings`'s) and partitioning: a record
//! with a key goes to `murmur2(key) % partitions` (Kafka's default partitioner, so keys land
//! where a Kafka user expects); a record without a key goes round-robin.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::batch::TimestampType;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::partition::Partition;
use crate::settings::{EffectiveSettings, NewTopicSettings, SettingsChange, TopicSettings};

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
/// Version 3: version 2 plus the topic's own `settings`. Written only while the topic sets
/// any (else version 2): a build from before per-topic settings would ignore them — roll,
/// retain and tier the topic by its configuration alone — so it must refuse the topic, and it
/// does, as it refuses any version it does not know. Unsetting every setting writes version 2
/// again, which such a build opens correctly.
const METADATA_VERSION_SETTINGS: u32 = 3;
/// Version 4: version 3 whose settings include S3 Object Lock (`object.lock.*`). Written only
/// then: a version-3 build would refuse the unknown keys anyway, but by number is clearer, and
/// a topic without a lock stays readable by it.
const METADATA_VERSION_LOCK: u32 = 4;
const METADATA_VERSIONS_READ: [u32; 4] = [1, 2, 3, 4];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// The version of the file as read (or as first written); a rewrite computes its own.
    pub version: u32,
    pub name: String,
    pub partitions: u32,
    pub created_ms: i64,
    /// Which timestamps Kafka clients see (Kafka's topic config of the same name). Absent in
    /// the file for the default, CreateTime, as in files written before it existed.
    #[serde(rename = "message.timestamp.type", default, skip_serializing_if = "is_create_time")]
    pub timestamp_type: TimestampType,
    /// The topic's own settings (version 3). In an open [`Topic`] this is empty: the settings
    /// in force, which an alter changes, are [`Topic::own_settings`] and [`Topic::settings`].
    #[serde(default, skip_serializing_if = "TopicSettings::is_empty")]
    pub settings: TopicSettings,
}

fn is_create_time(t: &TimestampType) -> bool {
    *t == TimestampType::CreateTime
}

/// The version a file holding `settings` is written as.
fn version_for(settings: &TopicSettings) -> u32 {
    if settings.object_lock_mode.is_some() || settings.object_lock_retain_days.is_some() {
        METADATA_VERSION_LOCK
    } else if settings.is_empty() {
        METADATA_VERSION
    } else {
        METADATA_VERSION_SETTINGS
    }
}

/// `topic.json` as written: `metadata` with `settings` and the version they call for.
pub fn metadata_json(metadata: &TopicMetadata, settings: &TopicSettings) -> Vec<u8> {
    let file = TopicMetadata { version: version_for(settings), settings: settings.clone(), ..metadata.clone() };
    serde_json::to_vec_pretty(&file).expect("metadata serializes")
}

pub struct Topic {
    /// Name, partition count, creation time and timestamp type: fixed for the topic's life.
    pub metadata: TopicMetadata,
    pub partitions: Vec<Arc<Partition>>,
    next_keyless: AtomicU64,
    /// The topic's own settings in force (as `topic.json` holds them). Read by the resolver;
    /// replaced only after the file holding the new ones is written.
    settings: RwLock<TopicSettings>,
    /// Held across every rewrite of `topic.json` by an open topic, so two alters never
    /// interleave and the file and `settings` change in the same order. Readers of the settings
    /// never wait on it (nor on the disk).
    metadata_write: Mutex<()>,
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
        new: &NewTopicSettings,
        config: &Config,
    ) -> Result<Topic> {
        validate_name(name)?;
        new.settings.check(name, config)?;
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
        let metadata = TopicMetadata {
            version: version_for(&new.settings),
            name: name.to_string(),
            partitions,
            created_ms,
            timestamp_type: new.timestamp_type,
            settings: new.settings.clone(),
        };
        Topic::write_new(host, data_dir, metadata, config)
    }

    /// Creates a topic restored from the bucket: as it was created (`created_ms`, settings —
    /// taken as the bucket has them, not checked against this node's configuration),
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
        let metadata = TopicMetadata { version: version_for(&spec.settings), ..spec.clone() };
        Topic::write_new(host, data_dir, metadata, config)
    }

    /// Opens the partitions of a new topic, then writes its metadata.
    fn write_new(host: &Host, data_dir: &Path, metadata: TopicMetadata, config: &Config) -> Result<Topic> {
        let dir = topic_dir(data_dir, &metadata.name);
        host.disk.create_dir_all(&dir).map_err(|e| Error::io(&dir, "create topic directory", e))?;
        let topics = data_dir.join("topics");
        host.disk.sync_dir(&topics).map_err(|e| Error::io(&topics, "fsync directory", e))?;
        let json = metadata_json(&metadata, &metadata.settings);
        let topic = Topic::open_partitions(host, data_dir, metadata, config, true)?;
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
                    "{}: unsupported version {} (this build reads 1 to 4) or wrong name",
                    path.display(),
                    metadata.version
                ),
            });
        }
        // Values in range, as an alter would have checked them: a hand-edited or damaged file
        // is refused naming it, never trusted (a tiny segment.bytes, a zero retention.ms).
        let texts = metadata.settings.to_strings();
        TopicSettings::from_strings(name, texts.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| {
            Error::Damaged { topic: name.to_string(), partition: 0, detail: format!("{}: {e}", path.display()) }
        })?;
        let mut metadata = metadata;
        if writable && metadata.version < METADATA_VERSION {
            // Before any batch with an append time goes in: from now on, older builds refuse it.
            metadata.version = version_for(&metadata.settings);
            let json = metadata_json(&metadata, &metadata.settings);
            host.disk.write_atomic(&path, &json).map_err(|e| Error::io(&path, "upgrade topic metadata", e))?;
        }
        Topic::open_partitions(host, data_dir, metadata, config, writable)
    }

    fn open_partitions(
        host: &Host,
        data_dir: &Path,
        mut metadata: TopicMetadata,
        config: &Config,
        writable: bool,
    ) -> Result<Topic> {
        let dir = topic_dir(data_dir, &metadata.name);
        let settings = std::mem::take(&mut metadata.settings);
        let effective = settings.resolve(metadata.timestamp_type, config);
        let open = |p: u32| {
            let partition = Partition::open(host, &metadata.name, p, dir.join(p.to_string()), config, writable)?;
            partition.set_roll(effective.segment_bytes.value, effective.segment_ms.value);
            Ok(Arc::new(partition))
        };
        let partitions = (0..metadata.partitions).map(open).collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            metadata,
            partitions,
            next_keyless: AtomicU64::new(0),
            settings: RwLock::new(settings),
            metadata_write: Mutex::new(()),
        })
    }

    /// The settings the topic sets itself (what `topic.json` and the bucket catalog hold).
    pub fn own_settings(&self) -> TopicSettings {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The settings in force: the topic's own, else `config`'s. Everything that acts on a
    /// topic's partitions by a setting asks this (see `settings`).
    pub fn settings(&self, config: &Config) -> EffectiveSettings {
        self.own_settings().resolve(self.metadata.timestamp_type, config)
    }

    /// The remote retention in force: `(ms, bytes)`, `None` where a limit is off (what remote
    /// expiry applies to each partition of the topic).
    pub fn remote_retention(&self, config: &Config) -> (Option<u64>, Option<u64>) {
        self.settings(config).remote_retention()
    }

    /// The S3 Object Lock in force for the topic's objects, if any.
    pub fn object_lock(&self, config: &Config) -> Option<tierlog_tiering::lock::LockPolicy> {
        self.settings(config).object_lock()
    }

    /// What the bucket catalog records of the topic's settings: `message.timestamp.type` and
    /// every setting the topic sets, in text form by Kafka name (what restore recreates).
    pub fn catalog_settings(&self) -> std::collections::BTreeMap<String, String> {
        let new = NewTopicSettings { timestamp_type: self.metadata.timestamp_type, settings: self.own_settings() };
        new.to_strings()
    }

    /// Whether the topic's partitions are tiered (`remote.storage.enable` in force).
    pub fn is_tiered(&self, config: &Config) -> bool {
        self.settings(config).remote_storage_enable.value
    }

    /// The topic's own settings now and after `change`, and the settings that would then be
    /// in force; refused if any value or rule fails, or if it would turn tiering off.
    fn altered(
        &self,
        config: &Config,
        change: &SettingsChange,
    ) -> Result<(TopicSettings, TopicSettings, EffectiveSettings)> {
        let (name, timestamps) = (self.name(), self.metadata.timestamp_type);
        let current = self.own_settings();
        let next = change.apply(name, timestamps, &current)?;
        next.check(name, config)?;
        let (before, after) = (current.resolve(timestamps, config), next.resolve(timestamps, config));
        // Judged by what the partitions hold, not by the value in force (which a configuration
        // with tiering off also turns false).
        let tiered = self.partitions.iter().any(|p| crate::tier::read_partition_state(p).manifest_version > 0);
        let turned_off = before.remote_storage_enable.value && !after.remote_storage_enable.value;
        if turned_off || (tiered && next.remote_storage_enable == Some(false)) {
            return Err(Error::Invalid(format!(
                "topic '{name}': remote.storage.enable cannot be turned off once the topic is tiered: its remote \
                 segments would no longer be expired, nor its local ones deleted. Create a new topic with \
                 remote.storage.enable=false for data that stays local"
            )));
        }
        Ok((current, next, after))
    }

    /// What [`Self::alter`] would put in force, without changing anything (Kafka's validate_only).
    pub fn check_alter(&self, config: &Config, change: &SettingsChange) -> Result<EffectiveSettings> {
        self.altered(config, change).map(|(.., after)| after)
    }

    /// Changes the topic's own settings: checks the change, writes `topic.json` (temp file,
    /// fsync, rename, directory fsync), and only then puts the new settings in force, on the
    /// live partitions too. If the write fails, the old settings stay in force and the old
    /// file is put back (best effort: should that fail too after the rename, the next open
    /// reads the new file). Returns the settings now in force.
    pub fn alter(
        &self,
        host: &Host,
        data_dir: &Path,
        config: &Config,
        change: &SettingsChange,
    ) -> Result<EffectiveSettings> {
        let name = self.name();
        let _write = self.metadata_write.lock().unwrap_or_else(|p| p.into_inner());
        let (current, next, after) = self.altered(config, change)?;
        if next == current {
            return Ok(after);
        }
        let path = topic_dir(data_dir, name).join(METADATA_FILE);
        if let Err(e) = host.disk.write_atomic(&path, &metadata_json(&self.metadata, &next)) {
            if let Err(undo) = host.disk.write_atomic(&path, &metadata_json(&self.metadata, &current)) {
                tracing::error!(topic = name, error = %undo, "cannot put the previous topic.json back after a failed alter");
            }
            return Err(Error::io(&path, "write the new settings (the previous ones stay in force) to", e));
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = next;
        for partition in &self.partitions {
            partition.set_roll(after.segment_bytes.value, after.segment_ms.value);
        }
        tracing::info!(topic = name, settings = %after.to_json(), "topic settings altered");
        Ok(after)
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
