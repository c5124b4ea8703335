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
use tierlog_tiering::manifest::{self, ManifestStore, Writer};
use tierlog_tiering::store::RemoteStore;

use crate::Log;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::log::REPLICA_MARKER;
use crate::tier::{self, PartitionState};

/// What `replica.json` records: the bucket (and prefix) the directory is a replica of, and
/// for a restore to a point, where it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    version: u32,
    url: String,
    created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    point: Option<Point>,
}

/// A restore to a point: what was asked, where each partition ends, and the group offsets
/// to write. Computed before the marker is written; `groups_written` turns true once the
/// group offsets are in the directory (until then only `restore` and `serve --replica`, which
/// finish it, open the directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub to: PointSpec,
    /// The topics restored (every topic of the catalog at the time, when not chosen).
    pub topics: Vec<String>,
    /// Per topic, per partition: the offset the restored log ends at (exclusive).
    pub ends: BTreeMap<String, Vec<u64>>,
    /// Per topic, per partition: whether the end is proven — a batch appended after the time
    /// (or the offset asked for) is in the bucket. `false`: the bucket held nothing past the
    /// end; what the writer had by then but never tiered is not in it.
    pub complete: BTreeMap<String, Vec<bool>>,
    /// The group offsets of the newest snapshot, clamped to the ends.
    pub groups: Vec<catalog::GroupOffsets>,
    pub group_snapshot_version: Option<u64>,
    pub group_offsets_clamped: usize,
    pub groups_written: bool,
}

/// Where a restore to a point ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointSpec {
    /// Before this offset, in every partition, rounded down to the batch holding it (a
    /// Kafka fetch serves whole batches).
    ToOffset(u64),
    /// What the log had appended at or before this instant (the as-of cut, ms).
    ToTime(i64),
}

impl std::fmt::Display for PointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointSpec::ToOffset(offset) => write!(f, "offset {offset}"),
            PointSpec::ToTime(time) => write!(f, "{}", crate::time::format_time(*time)),
        }
    }
}

/// One partition of a restore to a point (a line of `tierlog restore --to-…`'s output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointPartition {
    pub topic: String,
    pub partition: u32,
    /// Where the restored log ends (exclusive): it serves offsets below it.
    pub end_offset: u64,
    /// Where the bucket's history ends today.
    pub remote_end_offset: u64,
    /// Whether the end is proven by a later batch in the bucket (see [`Point::complete`]).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointReport {
    pub to: PointSpec,
    pub topics: usize,
    pub partitions: usize,
    /// Partitions whose end no later batch in the bucket proves (see [`Point::complete`]).
    pub incomplete: usize,
    pub group_snapshot_version: Option<u64>,
    pub group_offsets: usize,
    pub group_offsets_clamped: usize,
    /// Whether this run finished an interrupted one (or found it finished).
    pub resumed: bool,
}

/// How a replica's looks at the bucket go, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    pub refreshes: std::sync::atomic::AtomicU64,
    /// Looks that failed, or left a topic or partition behind.
    pub failed_refreshes: std::sync::atomic::AtomicU64,
    /// When a look last brought everything up to date (ms; 0: never).
    pub last_success_ms: std::sync::atomic::AtomicI64,
    /// `replica.refresh_ms`.
    pub refresh_ms: u64,
}

impl ReplicaStats {
    /// Why the replica should not take traffic: its view is older than three refresh
    /// periods (at least 30 s), so it may be serving stale history. `None`: it is current, or
    /// it is a restore to a point (it never moves).
    pub fn behind(&self, now_ms: i64) -> Option<String> {
        let last = self.last_success_ms.load(std::sync::atomic::Ordering::Relaxed);
        let limit = (3 * self.refresh_ms).max(30_000) as i64;
        (now_ms - last > limit).then(|| match last {
            0 => "the replica has not brought its view of the bucket up to date yet".to_string(),
            last => format!(
                "the replica's view of the bucket is {} s old (last complete refresh at {}); see the log for why",
                (now_ms - last) / 1000,
                crate::time::format_time(last)
            ),
        })
    }
}

/// A replica: its log (the view of the bucket) and what the refresher last saw.
pub struct Replica {
    log: Log,
    remote: RemoteStore,
    /// A restore to a point: nothing moves.
    pinned: bool,
    catalog_version: u64,
    /// Per partition: the manifest version the view reflects.
    versions: BTreeMap<(String, u32), u64>,
    /// What the first look at the bucket could not serve (retried by every refresh).
    pub startup_errors: Vec<String>,
    /// Serve only these topics of the catalog (all when empty).
    only: Vec<String>,
    pub stats: std::sync::Arc<ReplicaStats>,
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
    pub async fn open(config: Config, remote: RemoteStore) -> Result<Replica> {
        Replica::open_topics(config, remote, &[]).await
    }

    /// [`Self::open`] serving only `topics` (every topic when empty): a one-topic command
    /// reads that topic's manifests only.
    pub async fn open_topics(config: Config, remote: RemoteStore, topics: &[String]) -> Result<Replica> {
        let url = replica_url(&config)?;
        let lock = Log::lock_dir(&config.data_dir)?;
        let (marker, _) = prepare_dir(&config.data_dir, &url)?;
        Replica::open_prepared(config, remote, marker.point.as_ref(), lock, topics).await
    }

    /// Opens the directory `prepare_dir` marked under `lock`: live (`point` None) or pinned.
    async fn open_prepared(
        mut config: Config,
        remote: RemoteStore,
        point: Option<&Point>,
        lock: crate::lock::DirLock,
        only: &[String],
    ) -> Result<Replica> {
        let url = config.remote_url();
        let config_refresh_ms = config.replica.refresh_ms;
        // Every offset below a partition's (empty) local log is read from the bucket.
        config.tiering.enabled = true;
        let log = Log::open_replica(config, &url, point.is_some(), lock)?;
        let mut replica = Replica {
            log,
            remote,
            pinned: false,
            catalog_version: 0,
            versions: BTreeMap::new(),
            startup_errors: Vec::new(),
            only: only.to_vec(),
            stats: std::sync::Arc::new(ReplicaStats { refresh_ms: config_refresh_ms, ..ReplicaStats::default() }),
        };
        if let Some(point) = point {
            if !point.groups_written {
                // An interrupted restore to a point: its group offsets go in now, under the lock.
                let dir = replica.log.data_dir().to_path_buf();
                for group in &point.groups {
                    crate::groups::commit(&dir, &group.group, &group.topic, &group.offsets)?;
                }
                let mut marker = read_marker(&dir)?.expect("the marker the directory was opened by");
                marker.point = Some(Point { groups_written: true, ..point.clone() });
                write_marker(&dir, &marker)?;
            }
            replica.build_pinned(point).await?;
            // A point never moves: its view is as current as it will ever be.
            replica.stats.last_success_ms.store(crate::partition::now_ms(), std::sync::atomic::Ordering::Relaxed);
            return Ok(replica);
        }
        let first = replica.refresh().await?;
        for error in &first.errors {
            tracing::warn!(bucket = %replica.remote.display, error = %error, "replica: not served yet, retried every replica.refresh_ms");
        }
        replica.startup_errors = first.errors;
        if replica.catalog_version == 0 {
            tracing::warn!(bucket = %replica.remote.display, "the bucket holds no topic catalog yet: serving no topics until the writer's first tiering pass writes one");
        }
        Ok(replica)
    }

    /// The view of a restore to a point: its topics, each partition ending where `point` says
    /// (checked against the bucket, which must still hold that much).
    async fn build_pinned(&mut self, point: &Point) -> Result<()> {
        self.pinned = true;
        let catalog = catalog::latest_catalog(&self.remote, 0)
            .await?
            .ok_or_else(|| Error::Invalid(format!("{} holds no topic catalog any more", self.remote.display)))?;
        for (name, ends) in &point.ends {
            let spec = catalog.topics.iter().find(|t| &t.name == name).ok_or_else(|| {
                Error::Invalid(format!("topic {name} of this restore is not in the bucket's catalog any more"))
            })?;
            if spec.partitions as usize != ends.len() {
                return Err(Error::Invalid(format!(
                    "topic {name}: {} partitions in the catalog, {} in this restore",
                    spec.partitions,
                    ends.len()
                )));
            }
            let manifests = self.manifests(spec).await?;
            for (p, (manifest, end)) in manifests.iter().zip(ends).enumerate() {
                if manifest.next_offset() < *end {
                    return Err(Error::Invalid(format!(
                        "{name}/{p}: this restore ends at offset {end}, but the bucket's history now ends at {}: \
                         the history went backwards; run `tierlog verify` on the bucket",
                        manifest.next_offset()
                    )));
                }
            }
            let starts: Vec<_> = ends.iter().map(|end| (*end, None)).collect();
            self.create_topic(spec, &manifests, &starts)?;
        }
        Ok(())
    }

    /// The newest manifest of every partition of a catalog topic.
    async fn manifests(&self, spec: &catalog::CatalogTopic) -> Result<Vec<tierlog_tiering::manifest::Manifest>> {
        let reader = Writer { id: "replica".into(), epoch: 0 };
        let mut manifests = Vec::new();
        for p in 0..spec.partitions {
            manifests.push(ManifestStore::open(self.remote.clone(), &spec.name, p, reader.clone(), 0).await?.current);
        }
        Ok(manifests)
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Looks at the bucket once: topics new in the catalog are added, partitions whose
    /// manifest grew move forward. A partition that fails (a network error, a manifest that
    /// went backwards) is reported in [`Refreshed::errors`] and keeps serving what it had.
    pub async fn refresh(&mut self) -> Result<Refreshed> {
        use std::sync::atomic::Ordering;
        let result = self.look().await;
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(refreshed) if refreshed.errors.is_empty() => {
                self.stats.last_success_ms.store(crate::partition::now_ms(), Ordering::Relaxed);
            }
            _ => {
                self.stats.failed_refreshes.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn look(&mut self) -> Result<Refreshed> {
        let mut refreshed = Refreshed::default();
        if self.pinned {
            return Ok(refreshed);
        }
        // HEADs only while nothing changed; a catalog is read when a newer version exists.
        let newest = catalog::latest_catalog_number(&self.remote, self.catalog_version).await?;
        if newest > self.catalog_version
            && let Some(catalog) = catalog::latest_catalog(&self.remote, newest).await?
            && catalog.version > self.catalog_version
        {
            // A topic that cannot be served is reported (every time) and retried; it never
            // stops the others, nor the partitions below.
            let mut complete = true;
            let mut seen = std::collections::BTreeSet::new();
            let only = self.only.clone();
            for spec in catalog.topics.iter().filter(|t| only.is_empty() || only.contains(&t.name)) {
                let problem = if !seen.insert(&spec.name) {
                    Some("listed twice in the catalog".to_string())
                } else if let Err(e) = crate::restore::check_catalog_topic(spec) {
                    Some(e.to_string())
                } else {
                    match self.log.topic(&spec.name) {
                        Ok(topic) if topic.metadata.partitions != spec.partitions => Some(format!(
                            "the catalog now gives {} partitions, the replica serves {}: restart the replica",
                            spec.partitions, topic.metadata.partitions
                        )),
                        Ok(_) => None,
                        Err(_) => match self.add_topic(spec).await {
                            Ok(()) => {
                                refreshed.topics_added.push(spec.name.clone());
                                None
                            }
                            Err(e) => Some(e.to_string()),
                        },
                    }
                };
                if let Some(problem) = problem {
                    refreshed.errors.push(format!("topic {:?}: {problem}", spec.name));
                    complete = false;
                }
            }
            if complete {
                self.catalog_version = catalog.version;
            }
        }
        // A topic added by this look was built from manifests read a moment ago.
        for topic in self.log.topics().into_iter().filter(|t| !refreshed.topics_added.iter().any(|a| a == t.name())) {
            for partition in &topic.partitions {
                let key = (topic.name().to_string(), partition.id);
                let known = self.versions.get(&key).copied().unwrap_or(0);
                // HEADs only while nothing changed; the manifest is read when it did.
                let (remote, topic_name, id) = (&self.remote, topic.name(), partition.id);
                let read = async {
                    match manifest::latest_version(remote, topic_name, id, known).await? {
                        newest if newest == known => Ok(None),
                        newest => manifest::load_version(remote, topic_name, id, newest).await.map(Some),
                    }
                };
                let manifest = match read.await {
                    Ok(Some(manifest)) => manifest,
                    Ok(None) => continue,
                    Err(e) => {
                        refreshed.errors.push(format!("{}/{}: {e}", topic.name(), partition.id));
                        continue;
                    }
                };
                let end = manifest.next_offset();
                let state = PartitionState {
                    manifest_version: manifest.manifest_version,
                    remote_end_offset: end,
                    ..PartitionState::default()
                };
                // Moved first: a failed state write is retried next time (moving to the same
                // end again changes nothing).
                if let Err(e) =
                    partition.advance_empty(end).and_then(|()| tier::write_partition_state(partition, &state))
                {
                    refreshed.errors.push(e.to_string());
                    continue;
                }
                partition.note_expired_before(manifest.expired_before());
                self.versions.insert(key, manifest.manifest_version);
                refreshed.partitions_advanced += 1;
            }
        }
        Ok(refreshed)
    }

    /// Creates a topic of the catalog in the view, each partition ending where the bucket
    /// ends (the next refresh records the manifest versions).
    async fn add_topic(&mut self, spec: &catalog::CatalogTopic) -> Result<()> {
        let manifests = self.manifests(spec).await?;
        let starts: Vec<_> = manifests.iter().map(|m| (m.next_offset(), None)).collect();
        self.create_topic(spec, &manifests, &starts)
    }

    /// Creates a topic in the view whose partitions start (empty) at `starts`, recording the
    /// manifest versions they reflect.
    fn create_topic(
        &mut self,
        spec: &catalog::CatalogTopic,
        manifests: &[tierlog_tiering::manifest::Manifest],
        starts: &[(u64, Option<i64>)],
    ) -> Result<()> {
        let topic = self.log.restore_topic(&crate::restore::metadata(spec)?, starts)?;
        for (partition, manifest) in topic.partitions.iter().zip(manifests) {
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
                let refreshed = tokio::select! {
                    refreshed = self.refresh() => refreshed,
                    _ = stop.changed() => return,
                };
                match refreshed {
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

/// Makes `dir` a replica's directory of `url`, or checks that it is one (a live replica of
/// `url`, or a restore to a point of it); returns its marker and whether it was there before.
fn prepare_dir(dir: &Path, url: &str) -> Result<(Marker, bool)> {
    if let Some(marker) = read_marker(dir)? {
        if marker.url != url {
            return Err(Error::Invalid(format!(
                "{} is a replica of {}, not of {url}: use another --data-dir for this bucket",
                dir.display(),
                marker.url
            )));
        }
        return Ok((marker, true));
    }
    if !crate::log::holds_nothing(dir)? {
        return Err(Error::Invalid(format!(
            "{} is not empty and is not a replica's directory: a replica needs a directory of its own \
             (it never opens a writer's data directory); give it a new or empty --data-dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let marker = Marker { version: 1, url: url.to_string(), created_ms: crate::partition::now_ms(), point: None };
    write_marker(dir, &marker)?;
    Ok((marker, false))
}

/// The marker of `dir`, if it has one.
fn read_marker(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(REPLICA_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Invalid(format!("{}: unreadable ({e}); remove the directory to start afresh", path.display()))
            })?;
            Ok(Some(marker))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&path, "read", e)),
    }
}

/// The bucket a replica reads: `remote.url`, which must be set (its default names a
/// directory beside the data directory, and a replica's data directory is its own).
pub fn replica_url(config: &Config) -> Result<String> {
    if config.remote.url.is_empty() {
        return Err(Error::Config(
            "remote.url is empty: a replica reads the writer's bucket, so name it (s3://bucket/prefix, or \
             file:///path/to/<writer data_dir>-remote for the embedded default)"
                .into(),
        ));
    }
    Ok(config.remote.url.clone())
}

fn write_marker(dir: &Path, marker: &Marker) -> Result<()> {
    let path = dir.join(REPLICA_MARKER);
    let disk = crate::disk::os();
    disk.write_atomic(&path, &serde_json::to_vec_pretty(marker).expect("marker serializes"))
        .map_err(|e| Error::io(&path, "write", e))?;
    disk.sync_dir(dir).map_err(|e| Error::io(dir, "fsync directory", e))
}

/// Restores `config.data_dir` to a point of the bucket's history: a read-only replica whose
/// partitions end where `to` says (`topics`, or every topic the catalog lists — with
/// [`PointSpec::ToTime`], every topic created by then) and never move, with the consumer
/// groups of the newest group snapshot clamped to those ends. Serve it with `serve
/// --replica`, or read it with `consume --data-dir`.
///
/// Why read-only: the bucket's history goes on past the point, so a log that continued
/// writing from there would fork it under the same prefix — the splice the manifests exist
/// to prevent. (A writable copy would need its own prefix; see docs/AUDIT.md.)
///
/// Crash safety: the point (ends and group offsets) is computed first, in a scratch
/// directory; the marker recording it is the one commit; the group offsets and the view
/// follow and are finished by any later open (`serve --replica`, or this command again). The
/// directory's own `topics/` never holds anything but the view of the point.
pub async fn restore_to_point(
    config: Config,
    remote: RemoteStore,
    topics: &[String],
    to: PointSpec,
    on_partition: &(dyn Fn(&PointPartition, usize) + Sync),
) -> Result<PointReport> {
    if let PointSpec::ToTime(time) = to {
        crate::reader::check_as_of(time, crate::partition::now_ms())?;
    }
    let url = replica_url(&config)?;
    let catalog = catalog::latest_catalog(&remote, 0)
        .await?
        .ok_or_else(|| Error::Invalid(format!("{} holds no topic catalog: nothing to restore", remote.display)))?;
    crate::restore::check_catalog(&catalog)?;
    let known: Vec<&str> = catalog.topics.iter().map(|t| t.name.as_str()).collect();
    if let Some(missing) = topics.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(Error::UnknownTopic(format!("{missing} (the bucket's catalog lists {known:?})")));
    }
    let mut chosen: Vec<String> = match (topics.is_empty(), to) {
        (false, _) => topics.to_vec(),
        (true, PointSpec::ToTime(time)) => {
            catalog.topics.iter().filter(|t| t.created_ms <= time).map(|t| t.name.clone()).collect()
        }
        (true, PointSpec::ToOffset(_)) => catalog.topics.iter().map(|t| t.name.clone()).collect(),
    };
    chosen.sort();
    chosen.dedup();
    if chosen.is_empty() {
        let first = catalog.topics.iter().map(|t| t.created_ms).min();
        return Err(Error::Invalid(format!(
            "no topic of {} existed at {to}{}: name the topics to restore with --topic",
            remote.display,
            first.map(|ms| format!(" (the first was created at {})", crate::time::format_time(ms))).unwrap_or_default()
        )));
    }
    let dir = config.data_dir.clone();
    let lock = Log::lock_dir(&dir)?;
    let (point, resumed) = match read_marker(&dir)? {
        Some(marker) => {
            let same = marker.url == url
                && marker.point.as_ref().is_some_and(|p| p.to == to && (topics.is_empty() || p.topics == chosen));
            match marker.point {
                Some(point) if same => (point, true),
                recorded => {
                    return Err(Error::Invalid(format!(
                        "{} already holds {}: serve it with `serve --replica`, or restore into a new or empty directory",
                        dir.display(),
                        match recorded {
                            Some(p) => format!("a restore of {} to {} of topics {:?}", marker.url, p.to, p.topics),
                            None => format!("a live replica of {}", marker.url),
                        }
                    )));
                }
            }
        }
        None => {
            if !crate::log::holds_nothing(&dir)? {
                return Err(Error::Invalid(format!(
                    "{} is not empty: restore only into a new or empty directory (it never writes over one)",
                    dir.display()
                )));
            }
            let point = compute_point(&config, &remote, &catalog, chosen, to).await?;
            let marker = Marker { version: 1, url, created_ms: crate::partition::now_ms(), point: Some(point.clone()) };
            write_marker(&dir, &marker)?;
            (point, false)
        }
    };
    let pinned = Replica::open_prepared(config, remote, Some(&point), lock, &[]).await?;
    let topics = pinned.log.topics();
    let total: usize = topics.iter().map(|t| t.partitions.len()).sum();
    for topic in &topics {
        for partition in &topic.partitions {
            let complete = point.complete.get(topic.name()).and_then(|c| c.get(partition.id as usize));
            let restored = PointPartition {
                topic: topic.name().to_string(),
                partition: partition.id,
                end_offset: partition.end_offset(),
                remote_end_offset: tier::read_partition_state(partition).remote_end_offset,
                complete: complete.copied().unwrap_or(false),
            };
            on_partition(&restored, total);
        }
    }
    Ok(PointReport {
        to,
        topics: topics.len(),
        partitions: total,
        incomplete: point.complete.values().flatten().filter(|c| !**c).count(),
        group_snapshot_version: point.group_snapshot_version,
        group_offsets: point.groups.iter().map(|g| g.offsets.len()).sum(),
        group_offsets_clamped: point.group_offsets_clamped,
        resumed,
    })
}

/// Where each partition of `topics` ends at `to`, and the group offsets clamped to that,
/// from a live view of the bucket built in a scratch directory (removed afterwards).
async fn compute_point(
    config: &Config,
    remote: &RemoteStore,
    catalog: &catalog::Catalog,
    topics: Vec<String>,
    to: PointSpec,
) -> Result<Point> {
    let scratch = tempfile::Builder::new()
        .prefix("tierlog-restore-point-")
        .tempdir()
        .map_err(|e| Error::io(&std::env::temp_dir(), "create a scratch directory in", e))?;
    let live_config = Config { data_dir: scratch.path().to_path_buf(), ..config.clone() };
    let live = Replica::open_topics(live_config, remote.clone(), &topics).await?;
    let reader = crate::reader::Reader::with_remote(
        live.log.clone(),
        tierlog_tiering::remote_reader::RemoteReader::new(remote.clone(), crate::reader::settings_with_keys(config)?),
    );
    let (mut ends, mut complete) = (BTreeMap::new(), BTreeMap::new());
    for name in &topics {
        let topic = live.log.topic(name).map_err(|_| {
            Error::Invalid(format!("topic {name} could not be read from {}: {:?}", remote.display, live.startup_errors))
        })?;
        let (mut topic_ends, mut topic_complete) = (Vec::new(), Vec::new());
        for partition in &topic.partitions {
            let (end, proven) = point_end(&reader, partition, to).await?;
            topic_ends.push(end);
            topic_complete.push(proven);
        }
        ends.insert(name.clone(), topic_ends);
        complete.insert(name.clone(), topic_complete);
    }
    let writers = crate::restore::history_writers(remote, catalog, &topics).await?;
    let snapshot = catalog::latest_group_snapshot_by(remote, &writers).await?;
    let end_of = |topic: &str, p: u32| ends.get(topic).and_then(|e: &Vec<u64>| e.get(p as usize)).copied();
    let (groups, clamped) = crate::restore::clamp_group_offsets(snapshot.as_ref(), end_of);
    Ok(Point {
        to,
        topics,
        ends,
        complete,
        groups,
        group_snapshot_version: snapshot.map(|s| s.version),
        group_offsets_clamped: clamped,
        groups_written: false,
    })
}

/// Where a partition's restore to a point ends, in a live view (its empty log starts at the
/// bucket's end), and whether a later batch in the bucket proves it.
async fn point_end(
    reader: &crate::reader::Reader,
    partition: &std::sync::Arc<crate::partition::Partition>,
    to: PointSpec,
) -> Result<(u64, bool)> {
    let remote_end = partition.end_offset();
    match to {
        PointSpec::ToTime(time) => Ok(match reader.first_remote_appended_after(partition, time, remote_end).await? {
            Some(cut) => (cut, true),
            None => (remote_end, false),
        }),
        PointSpec::ToOffset(offset) => {
            let start = reader.start_offset(partition).await?;
            if offset < start {
                return Err(Error::Expired {
                    topic: partition.topic.clone(),
                    partition: partition.id,
                    asked: format!("a point at offset {offset}"),
                    start,
                    why: format!("the bucket holds the partition from offset {start} on (retention expired the rest)"),
                });
            }
            if offset >= remote_end || offset <= start {
                return Ok((offset.clamp(start, remote_end), offset <= remote_end));
            }
            // Rounded down to the batch holding `offset`: whole batches only.
            let batches = reader.read_batches(partition, offset, 1).await?.ok_or_else(|| {
                Error::Invalid(format!("{}/{}: offset {offset} not found below the end", partition.topic, partition.id))
            })?;
            Ok((batches.base_offset, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicaStats;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_replica_is_behind_after_three_refresh_periods_and_at_least_30_s_without_a_complete_look() {
        let stats = ReplicaStats { refresh_ms: 5_000, ..ReplicaStats::default() };
        assert!(stats.behind(1_000_000).unwrap().contains("not brought its view"));
        stats.last_success_ms.store(1_000_000, Ordering::Relaxed);
        assert_eq!(stats.behind(1_030_000), None, "30 s is the floor");
        assert!(stats.behind(1_030_001).unwrap().contains("30 s old"));
        let slow = ReplicaStats { refresh_ms: 60_000, ..ReplicaStats::default() };
        slow.last_success_ms.store(1_000_000, Ordering::Relaxed);
        assert_eq!(slow.behind(1_180_000), None, "three periods of a slow refresh");
        assert!(slow.behind(1_180_001).is_some());
    }
}
