//! Read-only replicas: serving a bucket's history without the writer's disks.
//!
//! A replica (`tierlog serve --replica`, `consume --replica`, `offsets --replica`) reads
//! everything from the bucket: its topics come from the bucket's catalog, and each partition
//! is a local log that is always empty and starts at the remote tier's end, so the unified
//! reader reads every offset below it from the bucket — the same path a restored node takes.
//! The refresher looks at the bucket every `replica.refresh_ms`: new manifest versions move
//! a partition's empty log forward to the new remote end (followers wake up as they do for
//! an append), and topics new in the catalog are added.
//!
//! A replica never writes to the bucket: it only LISTs, HEADs and GETs (no tiering, no
//! catalog or group snapshot, no manifest version), and it refuses every produce, topic
//! creation and producer id with [`Error::Replica`]. Its directory holds its lock, its own
//! consumer groups' offsets (they are this replica's consumers', never the writer's) and a
//! view of the bucket rebuilt at every start; `replica.json` marks it, and neither a writer
//! nor a restore opens such a directory, nor does a replica open anything else.
//!
//! What a replica serves is what the writer has tiered: records still only on the writer's
//! disk appear once a tiering pass commits them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tierlog_tiering::catalog;
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::store::RemoteStore;

use crate::Log;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::REPLICA_MARKER;
use crate::tier::{self, PartitionState};

/// What `replica.json` records: the bucket (and prefix) the directory is a replica of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    version: u32,
    url: String,
    created_ms: i64,
}

/// A replica: its log (the view of the bucket) and what the refresher last saw.
pub struct Replica {
    log: Log,
    remote: RemoteStore,
    catalog_version: u64,
    /// Per partition: the manifest version the view reflects.
    versions: BTreeMap<(String, u32), u64>,
}

/// What one look at the bucket changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Refreshed {
    pub topics_added: Vec<String>,
    pub partitions_advanced: usize,
    /// Per partition that could not be brought up to date: why (the others were).
    pub errors: Vec<String>,
}

impl Replica {
    /// Opens `config.data_dir` as the replica's own directory (creating it when new or
    /// empty; refusing a directory that is not a replica's, or a replica of another bucket)
    /// and builds the view of `remote`: every topic of its catalog, each partition ending
    /// where the bucket's manifest ends.
    pub async fn open(mut config: Config, remote: RemoteStore) -> Result<Replica> {
        let url = config.remote_url();
        prepare_dir(&config.data_dir, &url)?;
        // Every offset below a partition's (empty) local log is read from the bucket.
        config.tiering.enabled = true;
        let log = Log::open_replica(config, &url)?;
        let mut replica = Replica { log, remote, catalog_version: 0, versions: BTreeMap::new() };
        let first = replica.refresh().await?;
        if let Some(error) = first.errors.first() {
            return Err(Error::Invalid(format!("building the replica view of {}: {error}", replica.remote.display)));
        }
        if replica.catalog_version == 0 {
            tracing::warn!(bucket = %replica.remote.display, "the bucket holds no topic catalog yet: serving no topics until the writer's first tiering pass writes one");
        }
        Ok(replica)
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Looks at the bucket once: topics new in the catalog are added, partitions whose
    /// manifest grew move forward. A partition that fails (a network error, a manifest that
    /// went backwards) is reported in [`Refreshed::errors`] and keeps serving what it had.
    pub async fn refresh(&mut self) -> Result<Refreshed> {
        let mut refreshed = Refreshed::default();
        if let Some(catalog) = catalog::latest_catalog(&self.remote, self.catalog_version).await?
            && catalog.version > self.catalog_version
        {
            crate::restore::check_catalog(&catalog)?;
            for spec in &catalog.topics {
                match self.log.topic(&spec.name) {
                    Ok(topic) if topic.metadata.partitions != spec.partitions => refreshed.errors.push(format!(
                        "topic {}: the catalog now gives {} partitions, the replica serves {}: restart the replica",
                        spec.name, spec.partitions, topic.metadata.partitions
                    )),
                    Ok(_) => {}
                    Err(_) => {
                        self.add_topic(spec).await?;
                        refreshed.topics_added.push(spec.name.clone());
                    }
                }
            }
            self.catalog_version = catalog.version;
        }
        let reader = Writer { id: "replica".into(), epoch: 0 };
        for topic in self.log.topics() {
            for partition in &topic.partitions {
                let key = (topic.name().to_string(), partition.id);
                let known = self.versions.get(&key).copied().unwrap_or(0);
                let opened =
                    ManifestStore::open(self.remote.clone(), topic.name(), partition.id, reader.clone(), known).await;
                let manifest = match opened {
                    Ok(store) => store.current,
                    Err(e) => {
                        refreshed.errors.push(format!("{}/{}: {e}", topic.name(), partition.id));
                        continue;
                    }
                };
                if manifest.manifest_version == known {
                    continue;
                }
                let end = manifest.next_offset();
                if let Err(e) = partition.advance_empty(end) {
                    refreshed.errors.push(e.to_string());
                    continue;
                }
                let state = PartitionState {
                    manifest_version: manifest.manifest_version,
                    remote_end_offset: end,
                    ..PartitionState::default()
                };
                tier::write_partition_state(partition, &state)?;
                self.versions.insert(key, manifest.manifest_version);
                refreshed.partitions_advanced += 1;
            }
        }
        Ok(refreshed)
    }

    /// Creates a topic of the catalog in the view, each partition ending where the bucket
    /// ends (the next refresh records the manifest versions).
    async fn add_topic(&mut self, spec: &catalog::CatalogTopic) -> Result<()> {
        let reader = Writer { id: "replica".into(), epoch: 0 };
        let mut manifests = Vec::new();
        for p in 0..spec.partitions {
            manifests.push(ManifestStore::open(self.remote.clone(), &spec.name, p, reader.clone(), 0).await?.current);
        }
        let starts: Vec<_> = manifests.iter().map(|m| (m.next_offset(), None)).collect();
        let topic = self.log.restore_topic(&crate::restore::metadata(spec)?, &starts)?;
        for (partition, manifest) in topic.partitions.iter().zip(&manifests) {
            let state = PartitionState {
                manifest_version: manifest.manifest_version,
                remote_end_offset: manifest.next_offset(),
                ..PartitionState::default()
            };
            tier::write_partition_state(partition, &state)?;
            self.versions.insert((spec.name.clone(), partition.id), manifest.manifest_version);
        }
        Ok(())
    }

    /// Refreshes every `replica.refresh_ms` until `stop` turns true. Errors are logged and
    /// retried at the next look; the replica keeps serving what it has.
    pub fn spawn(mut self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let period = Duration::from_millis(self.log.config().replica.refresh_ms);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.changed() => return,
                }
                if *stop.borrow() {
                    return;
                }
                match self.refresh().await {
                    Ok(refreshed) => {
                        for error in &refreshed.errors {
                            tracing::warn!(error = %error, "replica refresh: a partition stays behind");
                        }
                        if !refreshed.topics_added.is_empty() || refreshed.partitions_advanced > 0 {
                            tracing::debug!(topics_added = ?refreshed.topics_added, partitions = refreshed.partitions_advanced, "replica refreshed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "replica refresh failed; serving what the replica has"),
                }
            }
        })
    }
}

/// Makes `dir` a replica's directory of `url`, or checks that it is one.
fn prepare_dir(dir: &Path, url: &str) -> Result<()> {
    let path = dir.join(REPLICA_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Invalid(format!(
                    "{}: unreadable ({e}); remove the directory to start the replica afresh",
                    path.display()
                ))
            })?;
            if marker.url != url {
                return Err(Error::Invalid(format!(
                    "{} is a replica of {}, not of {url}: use another --data-dir for this bucket",
                    dir.display(),
                    marker.url
                )));
            }
            return Ok(());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path, "read", e)),
    }
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(dir, "read", e)),
    };
    if !empty {
        return Err(Error::Invalid(format!(
            "{} is not empty and is not a replica's directory: a replica needs a directory of its own \
             (it never opens a writer's data directory); give it a new or empty --data-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let marker = Marker { version: 1, url: url.to_string(), created_ms: crate::partition::now_ms() };
    let disk = crate::disk::os();
    disk.write_atomic(&path, &serde_json::to_vec_pretty(&marker).expect("marker serializes"))
        .map_err(|e| Error::io(&path, "write", e))?;
    disk.sync_dir(dir).map_err(|e| Error::io(dir, "fsync directory", e))
}
