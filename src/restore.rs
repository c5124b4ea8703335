//! Restore: rebuilds a data directory from the bucket alone, after every local disk is lost.
//!
//! From the bucket's topic catalog, every topic is created as it was (partition count,
//! settings, creation time); each partition starts **empty at the remote tier's end** (older
//! offsets are read from the bucket by the unified reader), with its append clock at the
//! remote tier's newest append time, so producing continues at the next offset with no gap
//! and no reuse, and as-of cuts stay consistent. Group offsets come from the newest snapshot
//! in the bucket, clamped to the restored end (a group never points past restored data).
//!
//! The writer identity is continued (the manifests' writer id; a node with that id still
//! running is fenced by the manifest's create-only versions on its next commit) or, with
//! `take_over`, replaced by a new one that commits a take-over version on every partition,
//! which fences the old writer at once.
//!
//! Crash safety: the first thing written is `restore-in-progress.json` (the plan: writer id,
//! topics); a log with that file is not opened by anything but restore; every step is
//! idempotent, so running the same restore again finishes the job; the file goes last.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tierlog_tiering::catalog::{self, Catalog};
use tierlog_tiering::manifest::{Manifest, ManifestStore, Writer};
use tierlog_tiering::segment_object::NO_APPEND_TIME;
use tierlog_tiering::store::RemoteStore;

use crate::Log;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::tier::{self, PartitionState};
use crate::topic::TopicMetadata;

pub use crate::log::RESTORE_MARKER as MARKER_FILE;
/// Attempts per manifest PUT of a take-over.
const TAKE_OVER_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these topics (default: every topic of the catalog).
    pub topics: Vec<String>,
    /// Take the partitions over under a new writer identity (fencing the old writer).
    pub take_over: bool,
}

/// The plan, as first written; a resumed restore follows it rather than its own arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    version: u32,
    started_ms: i64,
    store: String,
    /// `remote.url`: a resumed restore must read the same bucket and prefix.
    url: String,
    writer_id: String,
    take_over: bool,
    topics: Vec<String>,
    /// The writers whose history is restored (before any take-over): group offsets come
    /// from their snapshots only.
    history_writers: std::collections::BTreeSet<String>,
}

/// One restored partition (a line of `tierlog restore`'s output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoredPartition {
    pub topic: String,
    pub partition: u32,
    /// First offset in the bucket (`None`: the partition never reached it).
    pub remote_start_offset: Option<u64>,
    /// Where the restored log starts, and producing continues.
    pub end_offset: u64,
    pub manifest_version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    pub topics: usize,
    pub partitions: usize,
    pub writer_id: String,
    pub took_over: bool,
    pub catalog_version: u64,
    pub group_snapshot_version: Option<u64>,
    /// Group offsets restored (group, topic, partition) and how many were clamped.
    pub group_offsets: usize,
    pub group_offsets_clamped: usize,
    /// Whether this run finished an interrupted one.
    pub resumed: bool,
}

/// Restores `config.data_dir` from `remote` (the configured remote tier: see
/// `tier::connect`). `on_partition` sees each partition as it is restored, with the number
/// of partitions to restore (progress). See the module documentation.
pub async fn restore(
    config: Config,
    remote: &RemoteStore,
    options: &RestoreOptions,
    on_partition: &(dyn Fn(&RestoredPartition, usize) + Sync),
) -> Result<RestoreReport> {
    let data_dir = config.data_dir.clone();
    let catalog = catalog::latest_catalog(remote, 0).await?.ok_or_else(|| {
        Error::Invalid(format!(
            "{} holds no topic catalog: it is written by each tiering pass of tierlog 0.1 builds from this one on; \
             run `tierlog tier run` once on the old node if it still runs",
            remote.display
        ))
    })?;
    check_catalog(&catalog)?;
    let signer = tier::load_signer(&config)?;
    // Under the lock from here: no writer or replica can take the directory while the plan
    // decides what it is.
    let lock = Log::lock_dir(&data_dir)?;
    let (marker, resumed) = plan(&data_dir, &config.remote_url(), remote, &catalog, options).await?;
    let log = Log::open_restoring(config, lock)?;
    tier::write_writer_id(&*log.host().disk, &data_dir, &marker.writer_id)?;
    let now = log.host().clock.now_ms();
    let writer = Writer { id: marker.writer_id.clone(), epoch: now.max(0) as u64 };
    let mut ends: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let total: usize =
        catalog.topics.iter().filter(|t| marker.topics.contains(&t.name)).map(|t| t.partitions as usize).sum();
    for spec in catalog.topics.iter().filter(|t| marker.topics.contains(&t.name)) {
        let mut manifests = Vec::new();
        for p in 0..spec.partitions {
            let mut store = ManifestStore::open(remote.clone(), &spec.name, p, writer.clone(), 0).await?;
            store.signer = signer.clone();
            if marker.take_over {
                store.take_over(now, TAKE_OVER_ATTEMPTS).await?;
            }
            manifests.push(store.current);
        }
        let topic = match log.topic(&spec.name) {
            Ok(topic) => topic, // restored by the interrupted run
            Err(_) => log.restore_topic(&metadata(spec)?, &starts(&manifests))?,
        };
        for (p, manifest) in manifests.iter().enumerate() {
            let partition = topic.partition(p as u32)?;
            let end = manifest.next_offset();
            if partition.end_offset() < end {
                return Err(Error::Invalid(format!(
                    "{}/{p}: the interrupted restore prepared the log to start at {}, but the bucket now holds offsets up \
                     to {end}: the old node is still writing. Stop it (or restore with --take-over, which fences it), \
                     remove {} and restore again",
                    spec.name,
                    partition.end_offset(),
                    data_dir.display()
                )));
            }
            let state = PartitionState {
                manifest_version: manifest.manifest_version,
                remote_end_offset: end,
                ..PartitionState::default()
            };
            tier::write_partition_state(partition, &state)?;
            ends.insert((spec.name.clone(), p as u32), end);
            let restored = RestoredPartition {
                topic: spec.name.clone(),
                partition: p as u32,
                remote_start_offset: manifest.start_offset(),
                end_offset: partition.end_offset(),
                manifest_version: manifest.manifest_version,
            };
            on_partition(&restored, total);
        }
    }
    let mut writers = marker.history_writers.clone();
    if writers.is_empty() {
        writers.insert(catalog.writer.id.clone()); // no manifest at all: the catalog's writer
    }
    let snapshot = catalog::latest_group_snapshot_by(remote, &writers).await?;
    let (groups, clamped) =
        clamp_group_offsets(snapshot.as_ref(), |topic, p| ends.get(&(topic.to_string(), p)).copied());
    let restored_offsets = groups.iter().map(|g| g.offsets.len()).sum();
    for group in &groups {
        crate::groups::commit(&data_dir, &group.group, &group.topic, &group.offsets)?;
    }
    log.flush()?;
    let marker_path = data_dir.join(MARKER_FILE);
    log.host().disk.remove_file(&marker_path).map_err(|e| Error::io(&marker_path, "remove", e))?;
    log.host().disk.sync_dir(&data_dir).map_err(|e| Error::io(&data_dir, "fsync directory", e))?;
    Ok(RestoreReport {
        topics: marker.topics.len(),
        partitions: ends.len(),
        writer_id: marker.writer_id,
        took_over: marker.take_over,
        catalog_version: catalog.version,
        group_snapshot_version: snapshot.map(|s| s.version),
        group_offsets: restored_offsets,
        group_offsets_clamped: clamped,
        resumed,
    })
}

/// The group offsets of `snapshot` for the partitions `end_of` knows, each clamped to that
/// partition's end (a group never points past restored data), and how many were clamped.
pub(crate) fn clamp_group_offsets(
    snapshot: Option<&catalog::GroupSnapshot>,
    end_of: impl Fn(&str, u32) -> Option<u64>,
) -> (Vec<catalog::GroupOffsets>, usize) {
    let (mut groups, mut clamped) = (Vec::new(), 0);
    for group in snapshot.iter().flat_map(|s| &s.groups) {
        let mut offsets = BTreeMap::new();
        for (&p, &offset) in &group.offsets {
            let Some(end) = end_of(&group.topic, p) else { continue };
            clamped += usize::from(offset > end);
            offsets.insert(p, offset.min(end));
        }
        if !offsets.is_empty() {
            groups.push(catalog::GroupOffsets { group: group.group.clone(), topic: group.topic.clone(), offsets });
        }
    }
    (groups, clamped)
}

/// A catalog restore can trust: valid unique names, partition counts in range, known settings.
pub(crate) fn check_catalog(catalog: &Catalog) -> Result<()> {
    let mut names = std::collections::BTreeSet::new();
    for spec in &catalog.topics {
        check_catalog_topic(spec)?;
        if !names.insert(&spec.name) {
            return Err(Error::Invalid(format!("the bucket's catalog lists topic {:?} twice", spec.name)));
        }
    }
    Ok(())
}

/// One topic of the bucket's catalog: a valid name, a partition count in range, known settings.
pub(crate) fn check_catalog_topic(spec: &catalog::CatalogTopic) -> Result<()> {
    crate::topic::validate_name(&spec.name)?;
    if !(1..=crate::topic::PARTITIONS_MAX).contains(&spec.partitions) {
        return Err(Error::Invalid(format!(
            "the bucket's catalog gives topic {:?} {} partitions (1..={} allowed)",
            spec.name,
            spec.partitions,
            crate::topic::PARTITIONS_MAX
        )));
    }
    metadata(spec).map(drop)
}

/// Writes the plan into an empty data directory, or reads the plan of an interrupted restore.
async fn plan(
    data_dir: &Path,
    url: &str,
    remote: &RemoteStore,
    catalog: &Catalog,
    options: &RestoreOptions,
) -> Result<(Marker, bool)> {
    let path = data_dir.join(MARKER_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Invalid(format!("{}: unreadable ({e}); remove the directory and restore again", path.display()))
        })?;
        if marker.url != url {
            return Err(Error::Invalid(format!(
                "{}: the interrupted restore read {}, not {url}: finish it with that remote.url, or remove the directory",
                path.display(),
                marker.url
            )));
        }
        if let Some(gone) = marker.topics.iter().find(|t| !catalog.topics.iter().any(|c| &c.name == *t)) {
            return Err(Error::Invalid(format!(
                "{}: topic {gone} of the interrupted restore is not in the bucket's catalog",
                path.display()
            )));
        }
        if marker.take_over != options.take_over || (!options.topics.is_empty() && options.topics != marker.topics) {
            return Err(Error::Invalid(format!(
                "{}: the interrupted restore was started with other arguments (topics {:?}, take-over {}): run it again with those",
                path.display(),
                marker.topics,
                marker.take_over
            )));
        }
        return Ok((marker, true));
    }
    if !crate::log::holds_nothing(data_dir)? {
        return Err(Error::Invalid(format!(
            "{} is not empty: restore only into a new or empty directory (it never writes over a data directory)",
            data_dir.display()
        )));
    }
    let known: Vec<&str> = catalog.topics.iter().map(|t| t.name.as_str()).collect();
    if let Some(missing) = options.topics.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(Error::UnknownTopic(format!("{missing} (the bucket's catalog lists {known:?})")));
    }
    let topics =
        if options.topics.is_empty() { known.iter().map(|t| t.to_string()).collect() } else { options.topics.clone() };
    let history_writers = history_writers(remote, catalog, &topics).await?;
    let writer_id = match (options.take_over, history_writers.len()) {
        (true, _) => remote.ids.next(),
        (false, 0) => catalog.writer.id.clone(),
        (false, 1) => history_writers.iter().next().expect("one id").clone(),
        (false, _) => {
            return Err(Error::Invalid(format!(
                "the partitions were last written by several writers ({history_writers:?}): restore with --take-over to continue under one new identity"
            )));
        }
    };
    let marker = Marker {
        version: 1,
        started_ms: crate::partition::now_ms(),
        store: remote.display.clone(),
        url: url.to_string(),
        writer_id,
        take_over: options.take_over,
        topics,
        history_writers,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, "create", e))?;
    let disk = crate::disk::os();
    disk.write_atomic(&path, &serde_json::to_vec_pretty(&marker).expect("marker serializes"))
        .map_err(|e| Error::io(&path, "write", e))?;
    disk.sync_dir(data_dir).map_err(|e| Error::io(data_dir, "fsync directory", e))?;
    Ok((marker, false))
}

/// The writer ids of the newest manifest versions of `topics`: whose history is restored.
pub(crate) async fn history_writers(
    remote: &RemoteStore,
    catalog: &Catalog,
    topics: &[String],
) -> Result<std::collections::BTreeSet<String>> {
    let mut ids = std::collections::BTreeSet::new();
    let reader = Writer { id: "restore".into(), epoch: 0 };
    for spec in catalog.topics.iter().filter(|t| topics.contains(&t.name)) {
        for p in 0..spec.partitions {
            let current = ManifestStore::open(remote.clone(), &spec.name, p, reader.clone(), 0).await?.current;
            if current.manifest_version > 0 {
                ids.insert(current.writer.id);
            }
        }
    }
    Ok(ids)
}

/// The topic a catalog entry describes: its settings are exactly the known per-topic keys
/// (`message.timestamp.type` and the rest, see `settings`), each in range; anything else is
/// refused by name rather than restored without it.
pub(crate) fn metadata(spec: &catalog::CatalogTopic) -> Result<TopicMetadata> {
    let pairs = spec.settings.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let new = crate::settings::NewTopicSettings::parse(&spec.name, pairs).map_err(|e| {
        Error::Invalid(format!("the bucket's catalog: {e} (restore it with a build that knows the setting)"))
    })?;
    Ok(TopicMetadata {
        version: 0, // set by the log
        name: spec.name.clone(),
        partitions: spec.partitions,
        created_ms: spec.created_ms,
        timestamp_type: new.timestamp_type,
        settings: new.settings,
    })
}

/// Per partition: the remote end (where the restored log starts) and newest append time.
fn starts(manifests: &[Manifest]) -> Vec<(u64, Option<i64>)> {
    manifests.iter().map(|m| (m.next_offset(), Some(m.max_append_time()).filter(|t| *t != NO_APPEND_TIME))).collect()
}
