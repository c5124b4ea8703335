//! The log: a data directory of topics, opened either as the one writer (holding the OS lock)
//! or read-only (no lock, for replaying history while a writer runs).
//!
//! Owns the topic registry, the writer lock and the background flusher of the `interval`
//! fsync policy. Partition-level behaviour lives in `partition`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::config::{Config, FsyncPolicy};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::lock::DirLock;
use crate::producers::IdAllocator;
use crate::settings::{EffectiveSettings, NewTopicSettings, SettingsChange};
use crate::topic::{self, Topic};

/// In a data directory a restore is writing (`tierlog restore`); only restore opens it.
pub const RESTORE_MARKER: &str = "restore-in-progress.json";
/// In a read-only replica's directory (`serve --replica`); only a replica opens it.
pub const REPLICA_MARKER: &str = "replica.json";

/// Who opens a directory as its one (lock-holding) user.
enum Opener {
    Writer,
    Restore,
    Replica { remote: String, pinned: bool },
}

#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    host: Host,
    writable: bool,
    /// A read-only replica's log: the bucket it serves (see `crate::replica`).
    replica_of: Option<String>,
    /// A replica that never moves (a restore to a point).
    pinned: bool,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Idempotent producers' ids (the writer's only).
    producer_ids: Option<IdAllocator>,
    _lock: Option<DirLock>,
}

impl Log {
    /// Opens `config.data_dir` as its one writer: takes the lock, recovers every partition.
    pub fn open(config: Config) -> Result<Log> {
        Log::open_on(Host::os(), config)
    }

    /// [`open`](Self::open) on another host (the simulation's disk and clock). The writer lock
    /// is always the OS lock on `config.data_dir`, which must exist on the real file system.
    pub fn open_on(host: Host, config: Config) -> Result<Log> {
        Log::open_writer(host, config, Opener::Writer, None)
    }

    /// Takes the lock of `dir` (creating it): `restore` and a replica hold it while they
    /// decide what the directory is and write their marker, then open the log with it, so no
    /// other opener can decide in between.
    pub fn lock_dir(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create data directory", e))?;
        DirLock::acquire(dir)
    }

    /// [`open`](Self::open) for `tierlog restore`, into the directory it is restoring and
    /// holds the `lock` of.
    pub fn open_restoring(config: Config, lock: DirLock) -> Result<Log> {
        Log::open_writer(Host::os(), config, Opener::Restore, Some(lock))
    }

    /// Opens a read-only replica's own directory (`crate::replica` marks it under `lock`) for
    /// the replica of `remote`: it holds the directory's lock, but refuses every append, topic
    /// creation and producer id; only the replica's refresher adds topics and moves the
    /// partitions' (empty) local logs forward. `pinned`: a restore to a point, which never moves.
    pub fn open_replica(config: Config, remote: &str, pinned: bool, lock: DirLock) -> Result<Log> {
        Log::open_writer(Host::os(), config, Opener::Replica { remote: remote.to_string(), pinned }, Some(lock))
    }

    fn open_writer(host: Host, config: Config, opener: Opener, lock: Option<DirLock>) -> Result<Log> {
        let dir = config.data_dir.clone();
        // The lock first: what the directory is (a writer's, a restore's, a replica's) is
        // decided under it, so two openers racing on a new directory cannot both go on.
        let lock = match lock {
            Some(lock) if lock.path == dir.join(crate::lock::LOCK_FILE) => lock,
            Some(lock) => {
                return Err(Error::Invalid(format!("{} is not the lock of {}", lock.path.display(), dir.display())));
            }
            None => Log::lock_dir(&dir)?,
        };
        match &opener {
            Opener::Writer => {
                check_not_restoring(&host, &dir)?;
                check_not_replica(&host, &dir)?;
            }
            Opener::Restore => check_not_replica(&host, &dir)?,
            Opener::Replica { .. } => {
                // A replica's topics are a view of the bucket, rebuilt at every start by its
                // refresher (they hold no records): the view of an earlier run goes, under the lock.
                if !host.disk.is_file(&dir.join(REPLICA_MARKER)) {
                    return Err(Error::Invalid(format!(
                        "{}: not a replica's directory (no {REPLICA_MARKER})",
                        dir.display()
                    )));
                }
                let topics = dir.join("topics");
                match std::fs::remove_dir_all(&topics) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&topics, "remove the earlier replica view", e)),
                }
            }
        }
        host.disk.create_dir_all(&dir.join("topics")).map_err(|e| Error::io(&dir, "create data directory", e))?;
        host.disk.sync_dir(&dir).map_err(|e| Error::io(&dir, "fsync directory", e))?;
        let (replica_of, pinned) = match opener {
            Opener::Replica { remote, pinned } => (Some(remote), pinned),
            _ => (None, false),
        };
        let log = Log::open_with(host, config, true, replica_of, pinned, Some(lock))?;
        if log.inner.config.durability.fsync == FsyncPolicy::Interval {
            start_flusher(Arc::downgrade(&log.inner), Duration::from_millis(log.inner.config.durability.interval_ms));
        }
        Ok(log)
    }

    /// Opens the data directory without the writer lock. Reads see every batch the writer
    /// had fully written when a partition was opened or refreshed; nothing is modified.
    pub fn open_read_only(config: Config) -> Result<Log> {
        Log::open_read_only_on(Host::os(), config)
    }

    /// [`open_read_only`](Self::open_read_only) on another host.
    pub fn open_read_only_on(host: Host, mut config: Config) -> Result<Log> {
        check_not_restoring(&host, &config.data_dir)?;
        let point = finished_point(&host, &config.data_dir);
        match &point {
            None => check_not_replica(&host, &config.data_dir)?,
            // A restore to a point is read from the bucket it was restored from.
            Some(url) if config.remote.url.is_empty() => config.remote.url = url.clone(),
            Some(url) if *url != config.remote.url => {
                return Err(Error::Invalid(format!(
                    "{} is a restore to a point of {url}, but remote.url names {}: read it with the configuration it was restored with",
                    config.data_dir.display(),
                    config.remote.url
                )));
            }
            Some(_) => {}
        }
        if !host.disk.is_dir(&config.data_dir.join("topics")) {
            return Err(Error::Invalid(format!(
                "{} is not a tierlog data directory (no topics/ inside); check --data-dir",
                config.data_dir.display()
            )));
        }
        Log::open_with(host, config, false, None, point.is_some(), None)
    }

    fn open_with(
        host: Host,
        config: Config,
        writable: bool,
        replica_of: Option<String>,
        pinned: bool,
        lock: Option<DirLock>,
    ) -> Result<Log> {
        let mut topics = BTreeMap::new();
        for name in list_topic_names(&host, &config.data_dir)? {
            let topic = Topic::open(&host, &config.data_dir, &name, &config, writable)?;
            topics.insert(name, mark_replica(Arc::new(topic), replica_of.as_deref()));
        }
        let producer_ids = if writable && replica_of.is_none() {
            let remembered =
                topics.values().flat_map(|t| t.partitions.iter()).filter_map(|p| p.max_producer_id()).max();
            let floor = remembered.map_or(0, |id| id.saturating_add(1));
            Some(IdAllocator::open(host.disk.clone(), &config.data_dir, floor)?)
        } else {
            None
        };
        let topics = RwLock::new(topics);
        let inner = Inner { config, host, writable, replica_of, pinned, topics, producer_ids, _lock: lock };
        Ok(Log { inner: Arc::new(inner) })
    }

    /// Whether `id` was handed out by [`Self::allocate_producer_id`] (in this or an earlier
    /// run): the writer accepts stamped batches only from such ids, so no client can take an
    /// id before the producer it will be given to.
    pub fn producer_id_handed_out(&self, id: i64) -> bool {
        self.inner.producer_ids.as_ref().is_some_and(|ids| ids.handed_out(id))
    }

    /// A producer id no idempotent producer of this data directory had before (Kafka's
    /// InitProducerId); the writer's only.
    pub fn allocate_producer_id(&self) -> Result<i64> {
        self.check_not_replica("a producer id")?;
        match &self.inner.producer_ids {
            Some(ids) => ids.allocate(),
            None => Err(Error::ReadOnly(self.data_dir().to_path_buf())),
        }
    }

    /// The disk and clock this log runs on.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    pub fn is_writable(&self) -> bool {
        self.inner.writable
    }

    /// The bucket a read-only replica serves; `None` for a writer or a read-only view.
    pub fn replica_of(&self) -> Option<&str> {
        self.inner.replica_of.as_deref()
    }

    /// Whether this is a restore to a point (served or read): it ends inside what the bucket
    /// holds, so nothing at or past a partition's end may be served from the bucket.
    pub fn is_pinned(&self) -> bool {
        self.inner.pinned
    }

    /// Whether this is a live replica: one that follows the bucket (not a restore to a point),
    /// so it holds what the writer has tiered, not everything it has appended.
    pub fn is_live_replica(&self) -> bool {
        self.inner.replica_of.is_some() && !self.inner.pinned
    }

    fn check_not_replica(&self, what: &str) -> Result<()> {
        match &self.inner.replica_of {
            Some(remote) => Err(Error::Replica { what: what.to_string(), remote: remote.clone() }),
            None => Ok(()),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        self.create_topic_with(name, partitions, crate::batch::TimestampType::default())
    }

    /// [`Self::create_topic`] with the timestamps Kafka clients see (`message.timestamp.type`).
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        timestamp_type: crate::batch::TimestampType,
    ) -> Result<Arc<Topic>> {
        let new = NewTopicSettings { timestamp_type, ..NewTopicSettings::default() };
        self.create_topic_with_settings(name, partitions, &new)
    }

    /// [`Self::create_topic`] with per-topic settings (checked against the configuration).
    pub fn create_topic_with_settings(
        &self,
        name: &str,
        partitions: u32,
        new: &NewTopicSettings,
    ) -> Result<Arc<Topic>> {
        self.check_not_replica(&format!("creating topic '{name}'"))?;
        if !self.inner.writable {
            return Err(Error::ReadOnly(self.data_dir().to_path_buf()));
        }
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(name) {
            return Err(Error::TopicExists(name.to_string()));
        }
        let (host, config) = (&self.inner.host, &self.inner.config);
        let topic = Arc::new(Topic::create(host, self.data_dir(), name, partitions, new, config)?);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Changes a topic's own settings (see `Topic::alter`): in force on its open partitions
    /// at once, and in `topic.json` for the next open. The writer's only.
    pub fn alter_topic(&self, name: &str, change: &SettingsChange) -> Result<EffectiveSettings> {
        self.check_not_replica(&format!("altering topic '{name}'"))?;
        if !self.inner.writable {
            return Err(Error::ReadOnly(self.data_dir().to_path_buf()));
        }
        let topic = self.topic(name)?;
        topic.alter(&self.inner.host, self.data_dir(), &self.inner.config, change)
    }

    /// What [`Self::alter_topic`] would put in force, without changing anything.
    pub fn check_alter_topic(&self, name: &str, change: &SettingsChange) -> Result<EffectiveSettings> {
        self.check_not_replica(&format!("altering topic '{name}'"))?;
        self.topic(name)?.check_alter(&self.inner.config, change)
    }

    /// Creates a topic restored from the bucket (see `Topic::create_restored`).
    pub fn restore_topic(&self, spec: &topic::TopicMetadata, starts: &[(u64, Option<i64>)]) -> Result<Arc<Topic>> {
        if !self.inner.writable {
            return Err(Error::ReadOnly(self.data_dir().to_path_buf()));
        }
        let mut topics = self.inner.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(&spec.name) {
            return Err(Error::TopicExists(spec.name.clone()));
        }
        let topic =
            Arc::new(Topic::create_restored(&self.inner.host, self.data_dir(), spec, starts, &self.inner.config)?);
        let topic = mark_replica(topic, self.replica_of());
        topics.insert(spec.name.clone(), topic.clone());
        Ok(topic)
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// The named topic. A read-only log also looks for topics created since it was opened.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        topic::validate_name(name)?;
        if let Some(topic) = self.inner.topics.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(topic.clone());
        }
        if self.inner.writable {
            return Err(Error::UnknownTopic(name.to_string()));
        }
        let topic = Arc::new(Topic::open(&self.inner.host, self.data_dir(), name, &self.inner.config, false)?);
        self.inner.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Re-reads a topic from disk (read-only logs use this to follow a running writer).
    pub fn reopen_topic(&self, name: &str) -> Result<Arc<Topic>> {
        if self.inner.writable {
            return Err(Error::Invalid("reopen_topic is for read-only logs".into()));
        }
        let topic = Arc::new(Topic::open(&self.inner.host, self.data_dir(), name, &self.inner.config, false)?);
        self.inner.topics.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// fsyncs every partition with unflushed appends.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

impl Inner {
    fn flush(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        // Every partition is flushed even when one fails: a stopped partition must not leave
        // the others unsynced.
        let mut first_error = None;
        for topic in topics {
            for partition in &topic.partitions {
                if let Err(e) = partition.flush() {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "final flush on close failed");
        }
        let topics: Vec<Arc<Topic>> = self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for partition in topics.iter().flat_map(|t| t.partitions.iter()) {
            partition.close_clean();
        }
    }
}

/// Background fsync for the `interval` policy. Holds only a weak reference, so it ends by
/// itself once the log is dropped.
fn start_flusher(log: Weak<Inner>, period: Duration) {
    std::thread::Builder::new()
        .name("tierlog-flusher".into())
        .spawn(move || {
            loop {
                std::thread::sleep(period);
                let Some(inner) = log.upgrade() else { return };
                if let Err(e) = inner.flush() {
                    // The partition concerned has stopped itself (see `Partition::flush`);
                    // the others are flushed again next period.
                    tracing::error!(error = %e, "interval fsync failed");
                }
            }
        })
        .expect("spawn flusher thread");
}

fn list_topic_names(host: &Host, data_dir: &Path) -> Result<Vec<String>> {
    let dir: PathBuf = data_dir.join("topics");
    let mut names = Vec::new();
    for name in host.disk.list(&dir).map_err(|e| Error::io(&dir, "list topics in", e))? {
        // A directory without metadata is a topic whose creation did not finish: skip it.
        if topic::validate_name(&name).is_ok() && host.disk.is_file(&dir.join(&name).join("topic.json")) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// A replica's topics refuse every append.
fn mark_replica(topic: Arc<Topic>, replica_of: Option<&str>) -> Arc<Topic> {
    if let Some(remote) = replica_of {
        topic.partitions.iter().for_each(|p| p.refuse_appends(remote));
    }
    topic
}

/// A read-only replica's directory is opened by the replica only: its topics are a view of
/// the bucket, rebuilt at every start, and nothing in it may be written as a log. (A finished
/// restore to a point is also opened read-only: see [`finished_point`].)
pub fn check_not_replica(host: &Host, data_dir: &Path) -> Result<()> {
    if !host.disk.is_file(&data_dir.join(REPLICA_MARKER)) {
        return Ok(());
    }
    let hint = match finished_point(host, data_dir) {
        Some(_) => "serve it with `tierlog serve --replica` or read it with `tierlog consume`",
        None => "serve it with `tierlog serve --replica`, or read the bucket with `consume --replica`",
    };
    Err(Error::Invalid(format!(
        "{}: this is a read-only replica's directory ({REPLICA_MARKER} is there): {hint}, or use another --data-dir",
        data_dir.display()
    )))
}

/// The bucket URL of a finished restore to a point in `data_dir` (its `replica.json` names
/// where every partition ends and its group offsets are written), `None` for anything else.
/// Such a directory never moves, so it can be read without its lock.
pub fn finished_point(host: &Host, data_dir: &Path) -> Option<String> {
    let bytes = host.disk.read(&data_dir.join(REPLICA_MARKER)).ok()?;
    let marker = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    let point = &marker["point"];
    let finished = point["ends"].as_object().is_some_and(|ends| !ends.is_empty())
        && point["groups_written"].as_bool() == Some(true);
    finished.then(|| marker["url"].as_str().map(str::to_string)).flatten()
}

/// Whether `dir` holds nothing (a missing directory does not), but perhaps the lock file a
/// caller of [`Log::lock_dir`] created: what restore and replicas require of a new directory.
pub fn holds_nothing(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(dir, "read", e))?;
                if entry.file_name() != crate::lock::LOCK_FILE {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io(dir, "read", e)),
    }
}

/// A data directory a restore has not finished is not opened: its topics, group offsets and
/// writer identity may be incomplete.
pub fn check_not_restoring(host: &Host, data_dir: &Path) -> Result<()> {
    if host.disk.is_file(&data_dir.join(RESTORE_MARKER)) {
        return Err(Error::Invalid(format!(
            "{}: a restore into this directory was interrupted ({RESTORE_MARKER} is there): run the same `tierlog restore` again to finish it",
            data_dir.display()
        )));
    }
    Ok(())
}
