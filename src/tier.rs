//! Tiering driver: decides which local segments go to the remote tier, hands them to the
//! `tierlog-tiering` pipeline, and applies local retention once they are committed.
//!
//! Owns: connecting to the remote tier at startup (fail fast, conditional-write probe),
//! the writer identity used in manifests, per-partition tiering state on local disk
//! (`tiering.json`: manifest version hint, last error), reconciliation (everything sealed
//! locally and not in the manifest is uploaded, whatever happened before a crash), local
//! deletion (only segments a committed manifest covers, and only when local retention says
//! so), and the background task that long-running owners of the log start.
//!
//! Does not own: object formats, keys, manifests, retries (all in `tierlog-tiering`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use tierlog_tiering::audit::{self, Event, Trail};
use tierlog_tiering::blocking;
use tierlog_tiering::catalog::{self, CatalogTopic, GroupOffsets, PartitionCut};
use tierlog_tiering::encryption::Keyring;
use tierlog_tiering::manifest::{Manifest, ManifestStore, Writer};
use tierlog_tiering::segment_object::{self, BatchMark};
use tierlog_tiering::signing::Signer;
use tierlog_tiering::store::{RemoteConfig, RemoteStore};
use tierlog_tiering::uploader::{self, SegmentBytes, UploadSettings};
use tierlog_tiering::{holds, retention};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::Log;
use crate::config::Config;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::partition::Partition;

const PARTITION_STATE_FILE: &str = "tiering.json";
const STORE_STATE_FILE: &str = "tiering.json";
const WRITER_ID_FILE: &str = "writer-id";

/// What the writer remembers about a partition's remote tier between runs. A hint and a
/// report, never the truth: the manifest in the bucket is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub manifest_version: u64,
    /// The offset after the last one in the remote tier, as of the last run.
    #[serde(default)]
    pub remote_end_offset: u64,
    /// The first offset retention has not expired (0: nothing expired), as of the last run.
    #[serde(default)]
    pub remote_start_offset: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    /// The S3 Object Lock period (ms) everything the partition holds in the bucket was last
    /// stamped with (0: never): a longer period in force re-stamps it all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lock_retain_ms: u64,
    /// The weakest lock mode among what was stamped with `lock_retain_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_mode: Option<tierlog_tiering::lock::Mode>,
    /// The legal-holds version whose holds S3's legal-hold flags were last brought up to (on
    /// the partition's objects, for a locked topic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holds_flagged_version: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Local bytes of `partition` not yet in the remote tier (per the last tiering run).
pub fn untiered_bytes(partition: &Partition) -> u64 {
    untiered_bytes_above(partition, read_partition_state(partition).remote_end_offset)
}

/// Local bytes of `partition` at or above `remote_end` (the remote tier's end offset).
pub fn untiered_bytes_above(partition: &Partition, remote_end: u64) -> u64 {
    let sealed: u64 = partition.sealed_segments().iter().filter(|s| s.next_offset > remote_end).map(|s| s.bytes).sum();
    sealed + partition.active_bytes()
}

/// What `/metrics` shows of a partition's tiering, kept in memory so a scrape reads no file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionTiering {
    pub remote_end_offset: u64,
    pub last_success_ms: Option<i64>,
}

impl From<&PartitionState> for PartitionTiering {
    fn from(state: &PartitionState) -> PartitionTiering {
        PartitionTiering { remote_end_offset: state.remote_end_offset, last_success_ms: state.last_success_ms }
    }
}

/// What the writer learned about the store at startup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreState {
    pub store: String,
    pub conditional_writes: bool,
    pub probed_ms: i64,
    /// The encryption key new segment objects were sealed with by the last start (its id):
    /// a different one now is a key rotation, recorded in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_id: Option<String>,
}

/// The legal holds of one tiering pass, read when first needed.
type PassHolds = tokio::sync::OnceCell<std::result::Result<holds::HoldSet, String>>;

/// The result of tiering one partition once.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: u32,
    pub uploaded_segments: usize,
    pub uploaded_raw_bytes: u64,
    pub uploaded_object_bytes: u64,
    pub remote_end_offset: u64,
    pub deleted_local_segments: usize,
    /// Segments remote retention expired in this run, and expired objects deleted.
    pub expired_segments: u64,
    pub deleted_expired_objects: usize,
    pub error: Option<String>,
}

/// The `[remote]` section with the embedded default's URL resolved.
pub fn remote_config(config: &Config) -> RemoteConfig {
    RemoteConfig { url: config.remote_url(), ..config.remote.clone() }
}

/// Connects to the configured remote tier and checks it answers (bucket, credentials).
pub async fn connect(config: &Config) -> Result<RemoteStore> {
    let mut remote = RemoteStore::connect(&remote_config(config)).await?;
    remote.check().await?;
    remote.records_lock = records_lock(config);
    Ok(remote)
}

/// The configuration's S3 Object Lock, which the records of no topic (the audit trail, the
/// legal-hold series) are written under.
pub fn records_lock(config: &Config) -> Option<tierlog_tiering::lock::LockPolicy> {
    let mode = tierlog_tiering::lock::Mode::parse(&config.tiering.object_lock_mode).flatten()?;
    let retain_ms = config.tiering.object_lock_retain_days.saturating_mul(tierlog_tiering::lock::DAY_MS);
    Some(tierlog_tiering::lock::LockPolicy { mode, retain_ms })
}

/// The manifest signing key of `[integrity] signing_key_file`, if one is configured.
pub fn load_signer(config: &Config) -> Result<Option<Arc<Signer>>> {
    let file = &config.integrity.signing_key_file;
    if file.is_empty() {
        return Ok(None);
    }
    let signer =
        Signer::from_file(Path::new(file)).map_err(|e| Error::Config(format!("integrity.signing_key_file: {e}")))?;
    Ok(Some(Arc::new(signer)))
}

/// The encryption keyring of `[encryption] key_file` or `TIERLOG_ENCRYPTION_KEYS`, if one is
/// configured: new segment objects are sealed with its current key, and reads open older ones
/// with any key it lists.
pub fn load_keyring(config: &Config) -> Result<Option<Arc<Keyring>>> {
    let env = std::env::var(tierlog_tiering::encryption::KEYS_ENV).ok();
    let keyring = Keyring::from_config(&config.encryption.key_file, env.as_deref())
        .map_err(|e| Error::Config(format!("[encryption]: {e}")))?;
    Ok(keyring.map(Arc::new))
}

/// The catalog topics and group offsets this process last recorded, and their versions.
#[derive(Debug, Default)]
struct Published {
    catalog_version: u64,
    catalog: Option<Vec<CatalogTopic>>,
    groups_version: u64,
    groups: Option<(BTreeMap<String, PartitionCut>, Vec<GroupOffsets>)>,
}

/// Counters of the tiering driver, exported by the server's `/metrics`.
#[derive(Debug, Default)]
pub struct TieringStats {
    pub uploaded_segments: std::sync::atomic::AtomicU64,
    pub uploaded_raw_bytes: std::sync::atomic::AtomicU64,
    pub uploaded_object_bytes: std::sync::atomic::AtomicU64,
    pub failed_partition_runs: std::sync::atomic::AtomicU64,
    pub deleted_local_segments: std::sync::atomic::AtomicU64,
    /// Remote retention: segments and raw bytes expired, expired objects deleted, failed runs.
    pub expired_segments: std::sync::atomic::AtomicU64,
    pub expired_raw_bytes: std::sync::atomic::AtomicU64,
    pub deleted_expired_objects: std::sync::atomic::AtomicU64,
    pub failed_expiry_runs: std::sync::atomic::AtomicU64,
    /// Legal holds in force as last read (-1: the hold set could not be read).
    pub legal_holds: std::sync::atomic::AtomicI64,
    /// S3 Object Lock: object versions whose retention was extended (a longer policy), and
    /// partition passes a lock check or lock request failed.
    pub lock_extended_objects: std::sync::atomic::AtomicU64,
    pub lock_failures: std::sync::atomic::AtomicU64,
    /// Per partition, its tiering state as this process's last pass of it recorded it.
    pub partitions: std::sync::Mutex<HashMap<(String, u32), PartitionTiering>>,
}

pub struct Tiering {
    pub stats: Arc<TieringStats>,
    log: Log,
    remote: RemoteStore,
    settings: UploadSettings,
    writer: Writer,
    pub conditional_writes: bool,
    permits: Arc<Semaphore>,
    /// Signs every manifest version (`[integrity] signing_key_file`).
    signer: Option<Arc<Signer>>,
    /// What this process last recorded in the bucket: a pass whose topics and group offsets
    /// are unchanged since then costs no request.
    published: std::sync::Mutex<Published>,
    /// Set once a partition turns out fenced or taken over: from then on this process's
    /// group offsets are not the archive's, and no group snapshot is published.
    fenced: std::sync::atomic::AtomicBool,
    manifests: Mutex<HashMap<(String, u32), ManifestStore>>,
    /// Segments this process uploaded from its own local files, by (topic, partition) →
    /// (base offset → raw SHA-256). Their remote copies are known to be theirs, so local
    /// retention need not read and hash them again before deleting.
    uploaded: std::sync::Mutex<HashMap<(String, u32), HashMap<u64, String>>>,
    /// Per partition, the remote end offset whose last segment was checked against the
    /// local copy (or committed by this process): the chain may be extended from there.
    verified_end: std::sync::Mutex<HashMap<(String, u32), u64>>,
    /// The newest legal-holds version seen: the next read probes forward from it.
    holds_version: std::sync::atomic::AtomicU64,
    /// The encryption keyring (`[encryption]`): every key a partition's committed segments
    /// were sealed under must be in it, and a partition sealed before is never tiered in clear.
    keyring: Option<Arc<Keyring>>,
    /// Audit events of commits, expiries and the server's topic changes, written at the end
    /// of every pass (one record per pass), kept queued while the bucket refuses them.
    pub audit: Arc<Trail>,
    /// Who the driver's events name: the OS user and host of this process.
    actor: String,
}

impl Tiering {
    /// Connects to the remote tier of `log` (its writer), probes conditional writes and
    /// records what it found. Fails fast with a message naming the endpoint and bucket.
    pub async fn start(log: Log) -> Result<Tiering> {
        let remote = connect(log.config()).await?;
        Tiering::start_with(log, remote).await
    }

    /// Like [`start`](Self::start) with an already built store (tests wrap it with faults).
    pub async fn start_with(log: Log, remote: RemoteStore) -> Result<Tiering> {
        if let Some(replica_of) = log.replica_of() {
            // A replica never writes to the bucket (not even the conditional-write probe).
            return Err(Error::Replica { what: "tiering".into(), remote: replica_of.to_string() });
        }
        if !log.is_writable() {
            return Err(Error::ReadOnly(log.data_dir().to_path_buf()));
        }
        let conditional_writes = remote.probe_conditional_writes().await?;
        if !conditional_writes {
            tracing::warn!(store = %remote.display, "the object store ignores conditional writes (If-None-Match): a second writer on the same prefix cannot be fenced; relying on the local writer lock only");
        }
        let now = log.host().clock.now_ms();
        let keyring = load_keyring(log.config())?;
        if let Some(keyring) = &keyring {
            tracing::info!(key_id = %keyring.current().id(), keyring = %keyring.source(), "segment objects are encrypted");
        }
        let key_id = keyring.as_ref().map(|k| k.current().id().to_string());
        let previous_key_id = read_store_state(log.data_dir()).and_then(|s| s.encryption_key_id);
        let state = StoreState {
            store: remote.display.clone(),
            conditional_writes,
            probed_ms: now,
            encryption_key_id: key_id.clone(),
        };
        let disk = &*log.host().disk;
        write_json(disk, &log.data_dir().join(STORE_STATE_FILE), &state)?;
        let writer = Writer { id: writer_id(disk, log.data_dir(), &remote.ids)?, epoch: now as u64 };
        let tiering = &log.config().tiering;
        let settings = UploadSettings {
            chunk_bytes: tiering.chunk_bytes,
            zstd_level: tiering.zstd_level as i32,
            attempts: tiering.upload_attempts as u32,
            multipart_threshold_bytes: tiering.multipart_threshold_bytes,
            concurrency: tiering.upload_concurrency as usize,
            commit_window_ms: tiering.commit_window_ms,
            lock: None,
            holds: Vec::new(),
            holds_by_append_time: false,
            encryption: keyring.as_ref().map(|k| k.current()),
        };
        let permits = Arc::new(Semaphore::new(settings.concurrency));
        let audit = Arc::new(
            Trail::new(remote.clone(), &writer.id, settings.attempts).trusting_create_only(conditional_writes),
        );
        for event in crate::audit::load_pending(disk, log.data_dir()) {
            audit.record(event);
        }
        if key_id != previous_key_id {
            // Key ids only, never key material. (A first start with a keyring counts too.)
            audit.record(
                Event::new(now, &crate::audit::os_actor(), audit::action::KEY_ROTATE)
                    .before(serde_json::json!({"encryption_key_id": previous_key_id}))
                    .after(serde_json::json!({"encryption_key_id": key_id})),
            );
        }
        let signer = load_signer(log.config())?;
        if let Some(signer) = &signer {
            signer.publish(&remote).await?;
            tracing::info!(key_id = %signer.key_id, "manifest versions are signed");
        }
        let tiering = Tiering {
            stats: Arc::default(),
            log,
            remote,
            settings,
            writer,
            conditional_writes,
            permits,
            signer,
            published: Default::default(),
            fenced: Default::default(),
            manifests: Mutex::default(),
            uploaded: Default::default(),
            verified_end: Default::default(),
            holds_version: Default::default(),
            keyring,
            audit,
            actor: crate::audit::os_actor(),
        };
        tiering.check_object_lock().await?;
        tiering.check_keys().await?;
        Ok(tiering)
    }

    /// Refuses to start when a tiered partition's committed segments were sealed under a key
    /// the keyring lacks: the keyring was changed in a way that loses access. (Encrypted
    /// segments and no keyring at all: each pass refuses that partition.)
    async fn check_keys(&self) -> Result<()> {
        // Without a keyring there is no key to miss: a partition encrypted before is refused by
        // its pass (the same check on the manifest it opens), so an unencrypted deployment
        // reads no manifest at start.
        if self.keyring.is_none() {
            return Ok(());
        }
        let config = self.log.config();
        for topic in self.log.topics().into_iter().filter(|t| t.is_tiered(config)) {
            for p in &topic.partitions {
                // A manifest that cannot be read is that partition's problem, reported by its
                // pass (which checks the keys again); it never stops the others from tiering.
                let hint = read_partition_state(p).manifest_version;
                let remote = &self.remote;
                let manifest = match tierlog_tiering::manifest::latest_version(remote, topic.name(), p.id, hint).await {
                    Ok(0) => continue,
                    Ok(version) => tierlog_tiering::manifest::load_version(remote, topic.name(), p.id, version).await,
                    Err(e) => Err(e),
                };
                match manifest {
                    Ok(manifest) => tierlog_tiering::encryption::check_manifest_keys(
                        topic.name(),
                        p.id,
                        &manifest,
                        self.keyring.as_deref(),
                    )?,
                    Err(e) => {
                        tracing::warn!(topic = %topic.name(), partition = p.id, error = %e, "cannot read the manifest to check its encryption keys; the partition's pass will say why");
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuses to tier when the configuration or a topic asks for S3 Object Lock and the
    /// bucket cannot give it (not S3, or a bucket without Object Lock): nothing would be
    /// written unprotected.
    pub async fn check_object_lock(&self) -> Result<()> {
        let config = self.log.config();
        if tierlog_tiering::lock::Mode::parse(&config.tiering.object_lock_mode).flatten().is_some() {
            let why = format!("the configuration (tiering.object_lock_mode = {:?})", config.tiering.object_lock_mode);
            self.remote.require_lock(&why).await?;
        }
        for topic in self.log.topics() {
            if let Some(policy) = topic.object_lock(config).filter(|_| topic.is_tiered(config)) {
                self.remote.require_lock(&lock_why(topic.name(), policy)).await?;
            }
        }
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.log.host().clock.now_ms()
    }

    pub fn remote(&self) -> &RemoteStore {
        &self.remote
    }

    /// One pass over every partition (or one topic's): roll segments that are old enough
    /// (or every non-empty active segment when `seal_active`), upload and commit what is
    /// sealed and not yet remote, then apply local retention. Partitions are independent: an
    /// error in one is recorded in its report and its `tiering.json`, and the pass goes on.
    pub async fn run_once(&self, topic: Option<&str>, seal_active: bool) -> Result<Vec<PartitionReport>> {
        // The bucket must be enough to rebuild this node: topics first, so a partition's data
        // is never in the bucket without its topic's partition count and settings.
        if let Err(e) = self.publish_catalog().await {
            tracing::error!(error = %e, "cannot record the topic catalog in the bucket; tiering goes on, retrying next pass");
        }
        let reports = self.tier_topics(topic, seal_active).await;
        self.flush_audit().await;
        let reports = reports?;
        if let Err(e) = self.publish_group_offsets().await {
            tracing::error!(error = %e, "cannot record group offsets in the bucket; retrying next pass");
        }
        Ok(reports)
    }

    /// Writes the queued audit events as one record. A failure never fails the pass: the
    /// events stay queued (and in the data directory, for a restart) until a pass writes them.
    pub async fn flush_audit(&self) {
        if let Err(e) = self.audit.flush(self.now_ms()).await {
            tracing::error!(error = %e, queued = self.audit.pending_len(), "cannot write the audit trail to the bucket; the events stay queued and are written by a later pass");
        }
        if let Err(e) = crate::audit::save_pending(&*self.log.host().disk, self.log.data_dir(), &self.audit) {
            tracing::error!(error = %e, "cannot keep the queued audit events in the data directory");
        }
    }

    /// Writes a catalog version to the bucket if the topics changed since the newest one.
    pub async fn publish_catalog(&self) -> Result<u64> {
        let topics = self
            .log
            .topics()
            .iter()
            .map(|t| CatalogTopic {
                name: t.name().to_string(),
                partitions: t.metadata.partitions,
                created_ms: t.metadata.created_ms,
                settings: t.catalog_settings(),
            })
            .collect::<Vec<_>>();
        let (hint, last) = {
            let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            (published.catalog_version, published.catalog.clone())
        };
        if last.as_ref() == Some(&topics) {
            return Ok(hint);
        }
        let version = catalog::publish_catalog(&self.remote, &self.writer, self.now_ms(), topics.clone(), hint).await?;
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        (published.catalog_version, published.catalog) = (version, Some(topics));
        Ok(version)
    }

    /// Writes a group-offsets snapshot to the bucket if offsets (or the remote ends they
    /// were taken against) changed since the newest one.
    pub async fn publish_group_offsets(&self) -> Result<u64> {
        if self.fenced.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("a partition of this writer is fenced or taken over: its group offsets are not published");
            return Ok(self.published.lock().unwrap_or_else(|p| p.into_inner()).groups_version);
        }
        let data_dir = self.log.data_dir().to_path_buf();
        let groups = blocking::run(move || crate::groups::all(&data_dir)).await?;
        let partitions: BTreeMap<String, PartitionCut> = self
            .manifests
            .lock()
            .await
            .iter()
            .map(|((topic, partition), m)| {
                let cut = PartitionCut {
                    manifest_version: m.current.manifest_version,
                    remote_end_offset: m.current.next_offset(),
                };
                (format!("{topic}/{partition}"), cut)
            })
            .collect();
        let groups: Vec<GroupOffsets> =
            groups.into_iter().map(|c| GroupOffsets { group: c.group, topic: c.topic, offsets: c.offsets }).collect();
        let contents = (partitions, groups);
        let (hint, last) = {
            let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            (published.groups_version, published.groups.clone())
        };
        if last.as_ref() == Some(&contents) {
            return Ok(hint);
        }
        let (partitions, groups) = contents.clone();
        let version =
            catalog::publish_group_snapshot(&self.remote, &self.writer, self.now_ms(), partitions, groups, hint)
                .await?;
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        (published.groups_version, published.groups) = (version, Some(contents));
        Ok(version)
    }

    async fn tier_topics(&self, topic: Option<&str>, seal_active: bool) -> Result<Vec<PartitionReport>> {
        let topics = match topic {
            Some(name) => vec![self.log.topic(name)?],
            None => self.log.topics(),
        };
        let mut reports = Vec::new();
        // Legal holds, read at most once per pass from the bucket, and only when a partition
        // has retention to apply (an idle pass costs no request); fail closed: unreadable holds
        // stop remote retention, nothing else.
        let holds = PassHolds::new();
        for topic in topics {
            // `remote.storage.enable` in force, read at every pass: an alter applies from the next.
            if !topic.is_tiered(self.log.config()) {
                continue;
            }
            for partition in &topic.partitions {
                let report = match self.tier_partition(partition.clone(), seal_active, &holds).await {
                    Ok(report) => report,
                    Err(e) => self.failed_pass(partition, e),
                };
                reports.push(report);
            }
        }
        Ok(reports)
    }

    /// The report of a pass that stopped before uploading, recorded in the partition state.
    fn failed_pass(&self, partition: &Partition, error: Error) -> PartitionReport {
        tracing::error!(topic = %partition.topic, partition = partition.id, error = %error, "tiering pass of the partition failed; other partitions go on");
        self.stats.failed_partition_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = read_partition_state(partition);
        (state.last_error, state.last_error_ms) = (Some(error.to_string()), Some(self.now_ms()));
        if let Err(e) = write_json(&*self.log.host().disk, &partition.dir().join(PARTITION_STATE_FILE), &state) {
            tracing::error!(topic = %partition.topic, partition = partition.id, error = %e, "cannot record the tiering error");
        }
        PartitionReport {
            topic: partition.topic.clone(),
            partition: partition.id,
            uploaded_segments: 0,
            uploaded_raw_bytes: 0,
            uploaded_object_bytes: 0,
            remote_end_offset: state.remote_end_offset,
            deleted_local_segments: 0,
            expired_segments: 0,
            deleted_expired_objects: 0,
            error: Some(error.to_string()),
        }
    }

    /// The bucket's legal holds, probing from the last version seen; an error as text (the
    /// holds cannot be trusted, so retention must not run).
    async fn load_holds(&self) -> std::result::Result<holds::HoldSet, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let hint = self.holds_version.load(Relaxed);
        match holds::latest(&self.remote, hint).await {
            Ok(set) => {
                self.holds_version.store(set.version, Relaxed);
                self.stats.legal_holds.store(set.holds.len() as i64, Relaxed);
                Ok(set)
            }
            Err(e) => {
                self.stats.legal_holds.store(-1, Relaxed);
                Err(format!("legal holds in the bucket cannot be read, so nothing expires this pass: {e}"))
            }
        }
    }

    async fn tier_partition(
        &self,
        partition: Arc<Partition>,
        seal_active: bool,
        holds: &PassHolds,
    ) -> Result<PartitionReport> {
        if seal_active {
            partition.seal_active(self.now_ms())?
        } else {
            partition.roll_if_old(self.now_ms())?
        }
        let key = (partition.topic.clone(), partition.id);
        let mut manifests = self.manifests.lock().await;
        if !manifests.contains_key(&key) {
            let hint = read_partition_state(&partition).manifest_version;
            let mut store = ManifestStore::open(self.remote.clone(), &key.0, key.1, self.writer.clone(), hint).await?;
            store.signer = self.signer.clone();
            manifests.insert(key.clone(), store);
        }
        let manifest = manifests.get_mut(&key).expect("inserted above");
        // Checked every pass too: another writer's version, read since, may need other keys.
        tierlog_tiering::encryption::check_manifest_keys(&key.0, key.1, &manifest.current, self.keyring.as_deref())?;
        // The newest version by another writer id: the partition was taken over (`restore
        // --take-over`) or belongs to another data directory. This writer never extends it
        // again, whatever its local segments say.
        let current = &manifest.current;
        if current.manifest_version > 0 && current.writer.id != self.writer.id {
            self.fenced.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::Remote(tierlog_tiering::Error::Fenced {
                topic: key.0.clone(),
                partition: key.1,
                version: current.manifest_version,
                other: format!(
                    "writer {} epoch {} — a node restored with --take-over, or another data directory (this one is writer {})",
                    current.writer.id, current.writer.epoch, self.writer.id
                ),
            }));
        }
        // S3 Object Lock in force, read at every pass (an alter applies from the next): checked
        // against the bucket (once per process when it passes) before anything is written.
        let topic = self.log.topic(&partition.topic)?;
        let lock = topic.object_lock(self.log.config());
        if let Some(policy) = lock {
            self.remote.require_lock(&lock_why(&key.0, policy)).await.inspect_err(|_| self.lock_failed())?;
        }
        manifest.lock = lock;
        let by_append_time = topic.metadata.timestamp_type == crate::batch::TimestampType::LogAppendTime;
        let bases = eligible(&partition, &manifest.current)?;
        let mut settings = std::borrow::Cow::Borrowed(&self.settings);
        // A locked topic reads the holds every pass: objects it writes under a hold get S3's
        // flag as they are written, and flags are brought up to date below. Unreadable holds
        // stop the pass (a flag could be missed).
        let mut upload_holds = None;
        if lock.is_some() {
            let set = holds.get_or_init(|| self.load_holds()).await;
            let set = set.as_ref().map_err(|e| Error::Remote(tierlog_tiering::Error::Format(e.clone())))?;
            settings = std::borrow::Cow::Owned(UploadSettings {
                lock,
                holds: holds::ranges(set, &key.0),
                holds_by_append_time: by_append_time,
                ..self.settings.clone()
            });
            upload_holds = Some(set.clone());
        }
        if !bases.is_empty() {
            self.check_chain_end(&partition, manifest).await?;
        }
        let load = |base: u64| {
            let partition = partition.clone();
            async move { blocking::run(move || segment_bytes(&partition, base)).await }
        };
        let clock = self.log.host().clock.clone();
        let now_ms = move || clock.now_ms();
        let mut outcome =
            uploader::upload_in_order(manifest, bases, load, &settings, self.permits.clone(), now_ms).await;
        let mut state = read_partition_state(&partition);
        if let Some(known) = &upload_holds {
            // S3 legal-hold flags follow the holds: after a hold set while this pass uploaded
            // (`hold set` flags only what it found committed), after a crash or a failed
            // `hold set` flagging, every object a hold covers is flagged once per holds version.
            let flagged = async {
                let newer = holds::refresh(&self.remote, known).await?;
                if newer.version == state.holds_flagged_version {
                    return Ok(None);
                }
                let entries = tierlog_tiering::lock::listed_entries(&self.remote, &manifest.current).await?;
                let objects = tierlog_tiering::lock::hold_candidates(&entries, &manifest.current, by_append_time);
                let ranges = holds::ranges(&newer, &key.0);
                tierlog_tiering::lock::apply_legal_holds(&self.remote, &objects, &ranges).await?;
                Ok(Some(newer.version))
            };
            match flagged.await {
                Ok(Some(version)) => state.holds_flagged_version = version,
                Ok(None) => {}
                Err(e) => {
                    self.lock_failed();
                    outcome.error.get_or_insert(e);
                }
            }
        }
        if let (Some(first), Some(last)) = (outcome.committed.first(), outcome.committed.last()) {
            let after = serde_json::json!({"manifest_version": manifest.current.manifest_version, "segments": outcome.committed.len(),
                "raw_bytes": outcome.committed.iter().map(|e| e.raw_bytes).sum::<u64>()});
            self.audit.record(
                Event::new(self.now_ms(), &self.actor, audit::action::SEGMENT_COMMIT)
                    .partition(&key.0, key.1)
                    .offsets(first.base_offset, last.last_offset)
                    .after(after),
            );
        }
        if let Some(last) = outcome.committed.last() {
            self.verified_end.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), last.last_offset + 1);
        }
        state.manifest_version = manifest.current.manifest_version;
        state.remote_end_offset = manifest.current.next_offset();
        // What is stored is locked at least as long and as firmly as `state.lock_*` says: the
        // weakest lock objects got since the last re-stamp (none while the lock is off). A
        // lock in force that is longer or firmer (or newly turned on) extends what is stored.
        match lock {
            None => (state.lock_retain_ms, state.lock_mode) = (0, None),
            Some(p) => {
                state.lock_retain_ms = state.lock_retain_ms.min(p.retain_ms);
                if state.lock_mode.is_some_and(|m| !p.mode.covers(m)) {
                    state.lock_mode = Some(p.mode);
                }
            }
        }
        let weaker = |p: &tierlog_tiering::lock::LockPolicy| {
            state.lock_retain_ms < p.retain_ms || !state.lock_mode.is_some_and(|m| m.covers(p.mode))
        };
        if let Some(policy) = lock.filter(|p| outcome.error.is_none() && weaker(p)) {
            match tierlog_tiering::lock::restamp(manifest, policy).await {
                Ok(extended) => {
                    tracing::info!(topic = %key.0, partition = key.1, extended, retain_ms = policy.retain_ms, "extended the S3 Object Lock of the partition's objects");
                    self.stats.lock_extended_objects.fetch_add(extended as u64, std::sync::atomic::Ordering::Relaxed);
                    self.audit.record(
                        Event::new(self.now_ms(), &self.actor, audit::action::LOCK_EXTEND)
                            .partition(&key.0, key.1)
                            .before(serde_json::json!({"retain_ms": state.lock_retain_ms}))
                            .after(serde_json::json!({"mode": policy.mode.as_str(), "retain_ms": policy.retain_ms, "object_versions_extended": extended})),
                    );
                    (state.lock_retain_ms, state.lock_mode) = (policy.retain_ms, Some(policy.mode));
                }
                Err(e) => {
                    self.lock_failed();
                    outcome.error.get_or_insert(e);
                }
            }
        }
        match &outcome.error {
            Some(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "tiering stopped; local segments stay until the next run succeeds");
                (state.last_error, state.last_error_ms) = (Some(e.to_string()), Some(self.now_ms()));
            }
            None => (state.last_error, state.last_success_ms) = (None, Some(self.now_ms())),
        }
        // Counted before retention deletes anything: nobody may see a segment gone from local
        // disk while the metrics still say it was never uploaded.
        self.record_uploads(&outcome);
        let mut uploaded =
            std::mem::take(self.uploaded.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default());
        uploaded.extend(outcome.committed.iter().map(|e| (e.base_offset, e.raw_sha256.clone())));
        let retention = apply_local_retention(&partition, manifest, &self.log, &mut uploaded, self.now_ms()).await;
        self.uploaded.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), uploaded);
        let deleted = match retention {
            Ok(deleted) => deleted,
            Err(e) => {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "local retention stopped");
                (state.last_error, state.last_error_ms) = (Some(e.to_string()), Some(self.now_ms()));
                outcome.error.get_or_insert(tierlog_tiering::Error::Format(e.to_string()));
                0
            }
        };
        // Remote retention, once this run's uploads and local retention are done (it never
        // expires what the local log still holds, so local retention goes first).
        let (mut expired_segments, mut deleted_expired_objects) = (0, 0);
        if outcome.error.is_none() {
            let retention = self.expire_remote(&partition, manifest, holds, &mut expired_segments).await;
            if let Err(e) = retention.map(|deleted| deleted_expired_objects = deleted) {
                tracing::error!(topic = %key.0, partition = key.1, error = %e, "remote retention stopped; it resumes on the next run");
                self.stats.failed_expiry_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (state.last_error, state.last_error_ms) = (Some(e.to_string()), Some(self.now_ms()));
                // A fence met by an expiry or delete commit is a fence like an upload's.
                let e = match e {
                    Error::Remote(remote) => remote,
                    other => tierlog_tiering::Error::Format(other.to_string()),
                };
                outcome.error.get_or_insert(e);
            }
        }
        state.manifest_version = manifest.current.manifest_version;
        state.remote_start_offset = manifest.current.expired_before();
        write_json(&*self.log.host().disk, &partition.dir().join(PARTITION_STATE_FILE), &state)?;
        self.stats.partitions.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), (&state).into());
        let fenced = outcome.error.as_ref().is_some_and(tierlog_tiering::Error::is_fenced);
        if fenced {
            self.fenced.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.record_outcome(&outcome, deleted);
        let report = PartitionReport {
            topic: key.0.clone(),
            partition: key.1,
            uploaded_segments: outcome.committed.len(),
            uploaded_raw_bytes: outcome.committed.iter().map(|e| e.raw_bytes).sum(),
            uploaded_object_bytes: outcome.committed.iter().map(|e| e.object_bytes).sum(),
            remote_end_offset: manifest.current.next_offset(),
            deleted_local_segments: deleted,
            expired_segments,
            deleted_expired_objects,
            error: outcome.error.map(|e| e.to_string()),
        };
        if fenced {
            manifests.remove(&key); // reload on the next run rather than keep a stale view
        }
        Ok(report)
    }

    fn lock_failed(&self) {
        self.stats.lock_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commits the expiry of what the partition's remote retention says has expired (nothing
    /// is deleted yet); returns the segments expired.
    /// Remote retention of one partition: commits the expiry of what its policy says has
    /// expired (counted into `expired_segments` even when the deletion then fails), then
    /// deletes the objects of earlier expiries whose grace period has passed; returns how many.
    async fn expire_remote(
        &self,
        partition: &Partition,
        manifest: &mut ManifestStore,
        holds: &PassHolds,
        expired_segments: &mut u64,
    ) -> Result<usize> {
        use std::sync::atomic::Ordering::Relaxed;
        let config = self.log.config();
        let topic = self.log.topic(&partition.topic)?;
        let (retention_ms, retention_bytes) = topic.remote_retention(config);
        let pending = manifest.current.expired.as_ref().is_some_and(|x| !x.pending_deletes.is_empty());
        if retention_ms.is_none() && retention_bytes.is_none() && !pending {
            return Ok(0);
        }
        // The holds of this pass, brought up to date right before anything is expired or
        // deleted (one HEAD when unchanged): a hold set during the pass counts.
        let holds = holds.get_or_init(|| self.load_holds()).await;
        let holds = holds.as_ref().map_err(|e| Error::Remote(tierlog_tiering::Error::Format(e.clone())))?;
        let holds = holds::refresh(&self.remote, holds).await?;
        let policy = retention::Policy {
            retention_ms,
            retention_bytes,
            holds: holds::ranges(&holds, &partition.topic),
            keep_from: partition.start_offset(),
            grace_ms: config.tiering.expiry_grace_ms,
            commit_window_ms: config.tiering.commit_window_ms,
            by_append_time: topic.metadata.timestamp_type == crate::batch::TimestampType::LogAppendTime,
        };
        let clock = || self.now_ms();
        let start_before = manifest.current.start_offset();
        let expired = retention::expire(manifest, &policy, &clock, self.settings.attempts).await?;
        if let Some(expired) = &expired {
            self.stats.expired_segments.fetch_add(expired.segments, Relaxed);
            self.stats.expired_raw_bytes.fetch_add(expired.raw_bytes, Relaxed);
            self.audit.record(expiry_event(self.now_ms(), &self.actor, partition, manifest, start_before, expired));
        }
        // This process's readers stop answering below the new start (before any deletion).
        partition.note_expired_before(manifest.current.expired_before());
        // Objects of earlier expiries whose grace period passed, unless a hold now covers them.
        *expired_segments = expired.map_or(0, |x| x.segments);
        // Objects of earlier expiries whose grace period passed, unless a hold now covers them.
        let deleted = retention::delete_due(manifest, &policy, self.now_ms(), self.settings.attempts).await?;
        self.stats.deleted_expired_objects.fetch_add(deleted.len() as u64, Relaxed);
        if !deleted.is_empty() {
            let after =
                serde_json::json!({"manifest_version": manifest.current.manifest_version, "deleted_objects": deleted});
            let event = Event::new(self.now_ms(), &self.actor, audit::action::RETENTION_DELETE)
                .partition(&partition.topic, partition.id)
                .after(after);
            self.audit.record(event);
        }
        Ok(deleted.len())
    }

    /// Before extending the remote chain: the segment at its end must be the local segment
    /// with the same offsets, byte for byte (SHA-256). Another data directory that wrote
    /// different records at the same offsets must never splice its history onto this chain.
    /// Checked once per process and partition (later ends were committed by this process).
    async fn check_chain_end(&self, partition: &Arc<Partition>, manifest: &ManifestStore) -> Result<()> {
        let key = (partition.topic.clone(), partition.id);
        let remote_end = manifest.current.next_offset();
        let Some(last) = manifest.current.entries.last() else { return Ok(()) };
        if self.verified_end.lock().unwrap_or_else(|p| p.into_inner()).get(&key) == Some(&remote_end) {
            return Ok(());
        }
        let w = &manifest.current.writer;
        let refuse = |detail: String| {
            Err(diverged(
                partition,
                format!(
                    "the remote tier's last segment (offsets {}..={}, written by writer {} epoch {}) {detail} (this data directory is writer {}): \
                     nothing was uploaded. Point remote.url at another prefix, or restore this node from the bucket",
                    last.base_offset, last.last_offset, w.id, w.epoch, self.writer.id
                ),
            ))
        };
        let sealed = partition.sealed_segments();
        let covering = sealed.iter().find(|s| s.base_offset <= last.last_offset && last.base_offset < s.next_offset);
        let Some(local) = covering else {
            // No local copy: local retention deletes one only after checking its SHA-256
            // against this entry, so only a chain this data directory wrote may go on unchecked.
            if w.id != self.writer.id {
                return refuse(
                    "cannot be checked against a local copy and was written by another data directory".into(),
                );
            }
            return Ok(());
        };
        if local.base_offset != last.base_offset || local.next_offset != remote_end {
            return refuse(format!(
                "has other boundaries than the local segment {} (offsets {}..{}): this data directory holds different records at the same offsets",
                local.path.display(),
                local.base_offset,
                local.next_offset
            ));
        }
        let (disk, path) = (partition.host().disk.clone(), local.path.clone());
        let sha = blocking::run(move || disk.read(&path).map(|b| tierlog_tiering::sha256_hex(&b)))
            .await
            .map_err(|e| Error::io(&local.path, "read", e))?;
        if sha != last.raw_sha256 {
            return refuse(format!(
                "differs from the local segment {} (SHA-256): this data directory holds different records at the same offsets",
                local.path.display()
            ));
        }
        self.verified_end.lock().unwrap_or_else(|p| p.into_inner()).insert(key, remote_end);
        Ok(())
    }

    fn record_uploads(&self, outcome: &uploader::RunOutcome) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        s.uploaded_segments.fetch_add(outcome.committed.len() as u64, Relaxed);
        s.uploaded_raw_bytes.fetch_add(outcome.committed.iter().map(|e| e.raw_bytes).sum(), Relaxed);
        s.uploaded_object_bytes.fetch_add(outcome.committed.iter().map(|e| e.object_bytes).sum(), Relaxed);
    }

    fn record_outcome(&self, outcome: &uploader::RunOutcome, deleted: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        s.failed_partition_runs.fetch_add(u64::from(outcome.error.is_some()), Relaxed);
        s.deleted_local_segments.fetch_add(deleted as u64, Relaxed);
    }

    /// Starts the background task: a pass every `tiering.interval_ms` until `stop` is called.
    pub fn spawn(self: Arc<Self>) -> Background {
        let (stop, mut stopped) = watch::channel(false);
        let period = Duration::from_millis(self.log.config().tiering.interval_ms);
        let handle = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stopped.changed() => {
                        self.flush_audit().await;
                        // Offsets committed since the last pass reach the bucket before exit.
                        if let Err(e) = self.publish_group_offsets().await {
                            tracing::error!(error = %e, "cannot record group offsets in the bucket at shutdown");
                        }
                        return;
                    }
                }
                match self.run_once(None, false).await {
                    Ok(reports) => {
                        for r in reports.iter().filter(|r| r.uploaded_segments > 0 || r.deleted_local_segments > 0) {
                            tracing::info!(topic = %r.topic, partition = r.partition, uploaded = r.uploaded_segments, deleted = r.deleted_local_segments, "tiering pass");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "tiering pass failed; retrying next interval"),
                }
            }
        });
        Background { stop, handle }
    }
}

/// Handle of the background tiering task.
pub struct Background {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Asks the task to stop after its current pass and waits for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// The audit event of an expiry commit that moved the partition's start from `start_before`.
fn expiry_event(
    now_ms: i64,
    actor: &str,
    partition: &Partition,
    manifest: &ManifestStore,
    start_before: Option<u64>,
    expired: &tierlog_tiering::manifest::ExpiryOutcome,
) -> Event {
    let current = &manifest.current;
    let reason = current.expired.as_ref().map(|x| x.reason.clone()).unwrap_or_default();
    let first = start_before.unwrap_or(0);
    Event::new(now_ms, actor, audit::action::RETENTION_EXPIRE)
        .partition(&partition.topic, partition.id)
        .offsets(first, expired.before_offset.saturating_sub(1))
        .reason(&reason)
        .before(serde_json::json!({"start_offset": first}))
        .after(serde_json::json!({"start_offset": expired.before_offset, "manifest_version": current.manifest_version,
            "segments": expired.segments, "raw_bytes": expired.raw_bytes}))
}

/// Sealed segments not yet in the manifest, in order. Reconciliation after a crash is this
/// same comparison: whatever the manifest lacks is uploaded again.
fn eligible(partition: &Partition, manifest: &Manifest) -> Result<Vec<u64>> {
    let remote_end = manifest.next_offset();
    // Anything ever tiered, even when retention has expired all of it: the end still binds.
    let has_remote = !manifest.is_fresh();
    let mut bases = Vec::new();
    for segment in partition.sealed_segments() {
        if segment.next_offset <= remote_end && has_remote {
            continue;
        }
        if has_remote && segment.base_offset < remote_end {
            return Err(diverged(
                partition,
                format!(
                    "local segment {}..{} straddles the remote end {remote_end}",
                    segment.base_offset, segment.next_offset
                ),
            ));
        }
        if has_remote && bases.is_empty() && segment.base_offset != remote_end {
            return Err(diverged(
                partition,
                format!(
                    "the remote tier ends before {remote_end} but the next local segment starts at {}",
                    segment.base_offset
                ),
            ));
        }
        bases.push(segment.base_offset);
    }
    if has_remote && partition.end_offset() < remote_end {
        return Err(diverged(
            partition,
            format!(
                "the remote tier holds offsets up to {} but the local log ends at {}: this data directory did not write that prefix; use another remote.url or restore it from the bucket",
                remote_end - 1,
                partition.end_offset()
            ),
        ));
    }
    Ok(bases)
}

/// What asks for a topic's lock, for messages.
fn lock_why(topic: &str, policy: tierlog_tiering::lock::LockPolicy) -> String {
    format!("topic '{topic}' (object.lock.mode = {})", policy.mode)
}

fn diverged(partition: &Partition, detail: String) -> Error {
    Error::Remote(tierlog_tiering::Error::Diverged { topic: partition.topic.clone(), partition: partition.id, detail })
}

fn segment_bytes(partition: &Partition, base: u64) -> tierlog_tiering::Result<SegmentBytes> {
    let (raw, headers) = partition.read_sealed(base).map_err(|e| tierlog_tiering::Error::Format(e.to_string()))?;
    let batches = headers
        .into_iter()
        .map(|(position, h)| BatchMark {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            position,
            length: h.length as u64,
            min_timestamp: h.min_timestamp,
            max_timestamp: h.max_timestamp,
            append_time: h.append_time.unwrap_or(segment_object::NO_APPEND_TIME),
        })
        .collect();
    Ok(SegmentBytes { base_offset: base, raw: raw.into(), batches })
}

/// Deletes the oldest local sealed segments that the committed manifest covers, while the
/// partition holds more than its topic's `local.retention.bytes` or they are older than its
/// `local.retention.ms` (by their newest record; both as in force now, the topic's own or the
/// configuration's). Never touches anything not yet remote, and
/// checks right before deleting that the remote entry is this very segment (same offsets,
/// same SHA-256 of the raw bytes): a manifest written by another data directory never causes
/// a local deletion.
async fn apply_local_retention(
    partition: &Arc<Partition>,
    manifest: &ManifestStore,
    log: &Log,
    uploaded: &mut HashMap<u64, String>,
    now: i64,
) -> Result<usize> {
    let settings = log.topic(&partition.topic)?.settings(log.config());
    let (bytes_max, age_max_ms) = (settings.local_retention_bytes.value, settings.local_retention_ms.value);
    let remote_end = manifest.current.next_offset();
    let sealed = partition.sealed_segments();
    let mut local_bytes: u64 = sealed.iter().map(|s| s.bytes).sum::<u64>() + partition.active_bytes();
    let mut deleted = 0;
    for segment in sealed {
        let tiered = manifest.current.start_offset().is_some() && segment.next_offset <= remote_end;
        let too_big = local_bytes > bytes_max;
        let too_old = now.saturating_sub(segment.max_timestamp) > age_max_ms as i64;
        if !tiered || !(too_big || too_old) {
            break;
        }
        let entry = remote_entry(manifest, segment.base_offset).await?;
        let sha = match uploaded.remove(&segment.base_offset) {
            Some(sha) => sha, // hashed from these very bytes when this process uploaded them
            None => {
                let (disk, path) = (partition.host().disk.clone(), segment.path.clone());
                blocking::run(move || disk.read(&path).map(|b| tierlog_tiering::sha256_hex(&b)))
                    .await
                    .map_err(|e| Error::io(&segment.path, "read", e))?
            }
        };
        let same = entry.as_ref().is_some_and(|e| e.last_offset + 1 == segment.next_offset && e.raw_sha256 == sha);
        if !same {
            return Err(diverged(
                partition,
                format!(
                    "local segment {} differs from the remote copy of offsets {}..{} (SHA-256 or range): it is kept; this data directory did not write that prefix",
                    segment.path.display(),
                    segment.base_offset,
                    segment.next_offset
                ),
            ));
        }
        let entry = entry.expect("`same` implies an entry");
        confirm_object(manifest, &entry).await?;
        partition.remove_sealed(segment.base_offset)?;
        tracing::debug!(topic = %partition.topic, partition = partition.id, base = segment.base_offset, "deleted local segment (tiered)");
        local_bytes -= segment.bytes;
        deleted += 1;
    }
    Ok(deleted)
}

/// The manifest's word is not enough to delete the only local copy: one HEAD confirms the
/// committed object exists with the size the entry records (a bucket emptied by hand, a
/// lifecycle rule, or a scrub bug must not cost the local copy too).
async fn confirm_object(manifest: &ManifestStore, entry: &tierlog_tiering::manifest::Entry) -> Result<()> {
    let store = &manifest.store;
    let key = object_store::path::Path::from(entry.key.as_str());
    let meta = match object_store::ObjectStoreExt::head(&*store.store, &key).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Remote(tierlog_tiering::Error::Missing { key: entry.key.clone() }));
        }
        Err(e) => return Err(Error::Remote(store.error(format!("HEAD {key}"), e))),
    };
    if meta.size != entry.object_bytes {
        return Err(Error::Remote(tierlog_tiering::Error::Corrupt {
            key: entry.key.clone(),
            reason: format!(
                "{} bytes in the bucket, {} in the manifest; the local segment of offsets {}..={} is kept",
                meta.size, entry.object_bytes, entry.base_offset, entry.last_offset
            ),
        }));
    }
    Ok(())
}

/// The manifest entry of the segment starting at `base`, inline or in an archive.
async fn remote_entry(manifest: &ManifestStore, base: u64) -> Result<Option<tierlog_tiering::manifest::Entry>> {
    if let Some(entry) = manifest.current.entries.iter().find(|e| e.base_offset == base) {
        return Ok(Some(entry.clone()));
    }
    match manifest.current.archives.iter().find(|a| a.base_offset <= base && base <= a.last_offset) {
        Some(archive) => Ok(manifest.load_archive(archive).await?.into_iter().find(|e| e.base_offset == base)),
        None => Ok(None),
    }
}

pub fn read_partition_state(partition: &Partition) -> PartitionState {
    read_partition_state_in(&*partition.host().disk, partition.dir())
}

/// The state file of the partition directory `partition_dir` (for callers without a
/// [`Partition`], e.g. the reader's manifest hints).
pub fn read_partition_state_in(disk: &dyn Disk, partition_dir: &Path) -> PartitionState {
    disk.read(&partition_dir.join(PARTITION_STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn read_store_state(data_dir: &Path) -> Option<StoreState> {
    std::fs::read(data_dir.join(STORE_STATE_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_json<T: Serialize>(disk: &dyn Disk, path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).expect("state serializes");
    disk.write_atomic(path, &bytes).map_err(|e| Error::io(path, "write", e))
}

/// Records the tiering state of a partition (restore writes its first one).
pub fn write_partition_state(partition: &Partition, state: &PartitionState) -> Result<()> {
    write_json(&*partition.host().disk, &partition.dir().join(PARTITION_STATE_FILE), state)
}

/// The writer id recorded in `data_dir`, if any.
pub fn read_writer_id(data_dir: &Path) -> Option<String> {
    std::fs::read(data_dir.join(WRITER_ID_FILE)).ok().map(|id| String::from_utf8_lossy(&id).trim().to_string())
}

/// Records the writer id of `data_dir` (restore: the identity the node continues or takes).
pub fn write_writer_id(disk: &dyn Disk, data_dir: &Path, id: &str) -> Result<()> {
    let path = data_dir.join(WRITER_ID_FILE);
    disk.write_atomic(&path, id.as_bytes()).map_err(|e| Error::io(&path, "write", e))
}

/// A stable id for this data directory's writer, created once.
fn writer_id(disk: &dyn Disk, data_dir: &Path, ids: &tierlog_tiering::keys::UniqueIds) -> Result<String> {
    let path = data_dir.join(WRITER_ID_FILE);
    if let Ok(id) = disk.read(&path) {
        return Ok(String::from_utf8_lossy(&id).trim().to_string());
    }
    let id = ids.next();
    disk.write_atomic(&path, id.as_bytes()).map_err(|e| Error::io(&path, "write", e))?;
    Ok(id)
}
