//! S3 Object Lock (WORM): locked writes, the bucket check, retention extensions, legal-hold
//! flags and version-aware deletes.
//!
//! object_store has no Object Lock headers, and it signs a request before any connector could
//! add them (S3 refuses unsigned `x-amz-*` headers), so every lock-related request goes
//! through the official `aws-sdk-s3` ([`S3Lock`]); everything else stays on object_store.
//! A caller asks for a locked write by putting a [`LockRequest`] into
//! `PutOptions::extensions`: [`LockingStore`] (the object_store every S3 [`RemoteStore`]
//! uses) routes such a PUT to the SDK, with the lock headers and `If-None-Match: *` for
//! create-only writes, and marks the result with [`Applied`]. A store that cannot lock
//! (a local directory) never marks it, and [`check_applied`] turns that into an error: a
//! lock that was asked for is never silently skipped.
//!
//! Deletes ask the store first: [`S3Lock::delete_versions`] lists every version of a key,
//! reads each one's retention and legal hold, and deletes nothing while any version is
//! locked; otherwise it deletes the versions themselves (and their delete markers), not only
//! adding a delete marker. Retention is only ever extended, never shortened.
//!
//! [`RemoteStore`]: crate::store::RemoteStore

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketVersioningStatus, ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UpdateVersion,
};
use tokio::sync::OnceCell;

use crate::error::{Error, Result};
use crate::manifest::{Entry, Manifest, ManifestStore};
use crate::store::{RemoteConfig, RemoteStore};

/// Milliseconds in a day: `object_lock.retain_days` is counted in days, as S3 counts them.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The wall clock in ms: S3 compares retain-until dates with its own clock, never with a
/// simulated one.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// S3's two lock modes. Compliance: no one, not even the root account, can shorten the
/// retention or delete a locked version. Governance: principals with
/// `s3:BypassGovernanceRetention` can; tierlog never sends the bypass header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Governance,
    Compliance,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Option<Mode>> {
        match text {
            "off" | "none" => Some(None),
            "governance" => Some(Some(Mode::Governance)),
            "compliance" => Some(Some(Mode::Compliance)),
            _ => None,
        }
    }

    /// Whether an object locked in `self` mode is held at least as firmly as `other` asks.
    pub fn covers(self, other: Mode) -> bool {
        self == Mode::Compliance || other == Mode::Governance
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Governance => "governance",
            Mode::Compliance => "compliance",
        }
    }

    fn object_mode(self) -> ObjectLockMode {
        match self {
            Mode::Governance => ObjectLockMode::Governance,
            Mode::Compliance => ObjectLockMode::Compliance,
        }
    }

    fn retention_mode(self) -> ObjectLockRetentionMode {
        match self {
            Mode::Governance => ObjectLockRetentionMode::Governance,
            Mode::Compliance => ObjectLockRetentionMode::Compliance,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic's lock: every object written for it stays locked for `retain_ms` from its write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: Mode,
    pub retain_ms: u64,
}

impl LockPolicy {
    /// The lock of an object written now (by the wall clock, which is what S3 compares
    /// retain-until dates with).
    pub fn request_now(&self) -> LockRequest {
        self.request(wall_ms())
    }

    /// The lock of an object written at `now_ms`.
    pub fn request(&self, now_ms: i64) -> LockRequest {
        LockRequest {
            mode: self.mode,
            retain_until_ms: now_ms.saturating_add(i64::try_from(self.retain_ms).unwrap_or(i64::MAX)),
            legal_hold: false,
        }
    }
}

/// Put into `PutOptions::extensions` to write the object locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRequest {
    pub mode: Mode,
    pub retain_until_ms: i64,
    /// Also set the S3 legal-hold flag (the object's records are under a tierlog legal hold).
    pub legal_hold: bool,
}

impl LockRequest {
    /// `PutOptions` for a write with this lock.
    pub fn options(self, mode: PutMode) -> PutOptions {
        let mut options = PutOptions { mode, ..PutOptions::default() };
        options.extensions.insert(self);
        options
    }
}

/// Put into a `PutResult`'s extensions by a write that applied the requested lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version_id: Option<String>,
}

/// Fails when `lock` was asked for and `result` does not carry [`Applied`]: the store wrote
/// the object without the lock (it cannot lock). The object exists, unlocked; the caller must
/// not go on as if it were locked.
pub fn check_applied(store: &str, key: &Path, lock: Option<LockRequest>, result: &PutResult) -> Result<()> {
    if lock.is_none() || result.extensions.get::<Applied>().is_some() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "object store {store}: {key} was written without the S3 Object Lock its topic asks for: this store cannot lock objects (only S3 with Object Lock enabled on the bucket can); move the remote tier to a bucket with Object Lock, or turn it off with `tierlog topic alter TOPIC --set object.lock.mode=off` (or tiering.object_lock_mode = \"off\" in the configuration)"
    )))
}

/// What the bucket supports, from [`S3Lock::bucket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLock {
    /// Versioning is `Enabled` (deletes add markers; versions must be deleted by id).
    pub versioned: bool,
    /// Object Lock is enabled on the bucket (it then is versioned too).
    pub lock_enabled: bool,
    /// Why not, when a check failed or the server lacks the API (for messages).
    pub detail: String,
}

/// One version of a key and its lock, from [`S3Lock::versions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionLock {
    pub version_id: Option<String>,
    pub delete_marker: bool,
    pub mode: Option<Mode>,
    pub retain_until_ms: Option<i64>,
    pub legal_hold: bool,
}

impl VersionLock {
    /// Whether S3 would refuse to delete this version at `now_ms`.
    pub fn locked(&self, now_ms: i64) -> bool {
        self.legal_hold || self.retain_until_ms.is_some_and(|until| until > now_ms)
    }
}

/// What [`S3Lock::delete_versions`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Every version (and delete marker) of the key is gone, or there was none.
    Gone { versions: usize },
    /// A version is locked: nothing was deleted. `until_ms` is the latest retain-until of the
    /// locked versions (`None`: only a legal hold keeps it).
    Locked { until_ms: Option<i64>, legal_hold: bool },
}

/// What the SDK client is built from: the same resolved endpoint, region and CA bundle as
/// object_store's client, and the same credentials.
pub struct SdkClient<'a> {
    pub connection: &'a crate::store::S3Connection,
    /// Trusts the connection's CA bundle; `None`: the SDK's default client.
    pub http: Option<aws_sdk_s3::config::SharedHttpClient>,
    pub credentials: SharedCredentialsProvider,
}

/// Settings every object write carries, whichever client sends it: storage class and
/// server-side encryption (object_store adds the encryption headers itself; the storage
/// class goes into each PUT's attributes, see [`LockingStore`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSettings {
    pub storage_class: Option<String>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
}

impl WriteSettings {
    fn from_config(config: &RemoteConfig) -> WriteSettings {
        let set = |s: &String| (!s.is_empty()).then(|| s.clone());
        WriteSettings {
            storage_class: set(&config.storage_class),
            sse: set(&config.sse),
            sse_kms_key_id: set(&config.sse_kms_key_id),
        }
    }

    /// Adds the storage class to `attributes` unless the caller set one.
    fn add_storage_class(&self, attributes: &mut object_store::Attributes) {
        if let Some(class) = &self.storage_class
            && attributes.get(&object_store::Attribute::StorageClass).is_none()
        {
            attributes.insert(object_store::Attribute::StorageClass, class.clone().into());
        }
    }
}

/// The SDK client for the lock-related requests of one bucket.
pub struct S3Lock {
    client: aws_sdk_s3::Client,
    bucket: String,
    display: String,
    checked: OnceCell<BucketLock>,
    writes: WriteSettings,
}

impl fmt::Debug for S3Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Lock").field("store", &self.display).finish()
    }
}

impl S3Lock {
    /// A client for `bucket` with the same endpoint, region, addressing, trusted CAs and
    /// credentials as object_store's. No request is made.
    pub fn new(config: &RemoteConfig, client: SdkClient<'_>, bucket: &str, display: &str) -> S3Lock {
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(crate::store::REQUEST_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build();
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(client.connection.region.value.clone()))
            .credentials_provider(client.credentials)
            .timeout_config(timeouts)
            .force_path_style(!config.virtual_hosted_style);
        if let Some(endpoint) = &client.connection.endpoint {
            builder = builder.endpoint_url(sdk_endpoint(&endpoint.value, config.virtual_hosted_style, bucket));
        }
        if let Some(http) = client.http {
            builder = builder.http_client(http);
        }
        S3Lock {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: bucket.to_string(),
            display: display.to_string(),
            checked: OnceCell::new(),
            writes: WriteSettings::from_config(config),
        }
    }

    /// Whether the bucket is versioned and has Object Lock enabled; asked once, then cached.
    /// A server without the APIs (s3s-fs, Garage) answers "no", with why in `detail`.
    pub async fn bucket(&self) -> Result<BucketLock> {
        self.checked
            .get_or_try_init(|| async {
                // Object Lock implies versioning (S3 turns it on and never lets it be
                // suspended), so versioning is asked only of buckets without a lock. (moto
                // answers GetBucketVersioning with a root element the SDK refuses.)
                let lock = self.client.get_object_lock_configuration().bucket(&self.bucket).send().await;
                let mut detail = String::new();
                let lock_enabled = match lock {
                    Ok(out) => out
                        .object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        .is_some_and(|e| *e == ObjectLockEnabled::Enabled),
                    // An outage is no answer: asked again next time, never cached as "no lock".
                    Err(e) if is_transient(&e) => return Err(self.error("GET ?object-lock", e)),
                    Err(e) => {
                        detail = format!("GetObjectLockConfiguration: {}", describe(&e));
                        false
                    }
                };
                if lock_enabled {
                    return Ok(BucketLock { versioned: true, lock_enabled, detail });
                }
                let versioned = match self.client.get_bucket_versioning().bucket(&self.bucket).send().await {
                    Ok(out) => out.status() == Some(&BucketVersioningStatus::Enabled),
                    Err(e) if is_transient(&e) => return Err(self.error("GET ?versioning", e)),
                    // Unknown: plain deletes, which in a versioned bucket leave the data
                    // behind a delete marker (never more than intended).
                    Err(e) => {
                        tracing::warn!(store = %self.display, error = %describe(&e), "cannot tell whether the bucket is versioned; expired objects are deleted with plain DELETEs");
                        false
                    }
                };
                Ok(BucketLock { versioned, lock_enabled, detail })
            })
            .await
            .cloned()
    }

    /// Refuses (with what to do) unless the bucket has Object Lock enabled.
    pub async fn require_lock(&self, why: &str) -> Result<()> {
        let bucket = self.bucket().await.map_err(|e| {
            Error::Config(format!(
                "{why} asks for S3 Object Lock, but {} could not be asked whether it has it: {e}. Try again once the store answers, or turn the lock off with `tierlog topic alter TOPIC --set object.lock.mode=off` (or tiering.object_lock_mode = \"off\" in the configuration)",
                self.display
            ))
        })?;
        if bucket.lock_enabled {
            return Ok(());
        }
        let detail =
            if bucket.detail.is_empty() { String::new() } else { format!(" (the server said: {})", bucket.detail) };
        Err(Error::Config(format!(
            "object store {}: {why} asks for S3 Object Lock, but the bucket does not have Object Lock enabled{detail}. Create the bucket with Object Lock (aws s3api create-bucket --object-lock-enabled-for-bucket; it turns versioning on) on a server that supports it (AWS S3, MinIO, Ceph; not s3s-fs or Garage), or turn it off with `tierlog topic alter TOPIC --set object.lock.mode=off` (or tiering.object_lock_mode = \"off\" in the configuration)",
            self.display
        )))
    }

    /// PUT with the lock headers (and `If-None-Match: *` when `create_only`).
    pub async fn put(
        &self,
        key: &Path,
        payload: PutPayload,
        create_only: bool,
        lock: LockRequest,
    ) -> object_store::Result<PutResult> {
        // One part (every caller here): no copy.
        let body = match payload.iter().collect::<Vec<_>>().as_slice() {
            [single] => (*single).clone(),
            parts => bytes::Bytes::from(parts.iter().flat_map(|p| p.iter().copied()).collect::<Vec<u8>>()),
        };
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_ref())
            .body(ByteStream::from(body))
            .object_lock_mode(lock.mode.object_mode())
            .object_lock_retain_until_date(DateTime::from_millis(lock.retain_until_ms));
        if lock.legal_hold {
            request = request.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
        }
        if let Some(class) = &self.writes.storage_class {
            request = request.storage_class(aws_sdk_s3::types::StorageClass::from(class.as_str()));
        }
        if let Some(sse) = &self.writes.sse {
            request = request.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(key) = &self.writes.sse_kms_key_id {
            request = request.ssekms_key_id(key);
        }
        if create_only {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(out) => {
                let version_id = out.version_id().map(str::to_string);
                let mut result = PutResult {
                    e_tag: out.e_tag().map(str::to_string),
                    version: version_id.clone(),
                    extensions: Default::default(),
                };
                result.extensions.insert(Applied { version_id });
                Ok(result)
            }
            Err(e) => Err(to_object_store_error(key, e)),
        }
    }

    /// Every version and delete marker of exactly `key`, each with its lock (one HEAD per
    /// version: the store is asked, never guessed).
    pub async fn versions(&self, key: &str) -> Result<Vec<VersionLock>> {
        let mut found = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|e| self.error(format!("LIST versions of {key}"), e))?;
            for v in out.versions().iter().filter(|v| v.key() == Some(key)) {
                found.push((v.version_id().map(str::to_string), false));
            }
            for m in out.delete_markers().iter().filter(|m| m.key() == Some(key)) {
                found.push((m.version_id().map(str::to_string), true));
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            version_marker = out.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        let mut versions = Vec::with_capacity(found.len());
        for (version_id, delete_marker) in found {
            if delete_marker {
                versions.push(VersionLock {
                    version_id,
                    delete_marker,
                    mode: None,
                    retain_until_ms: None,
                    legal_hold: false,
                });
                continue;
            }
            let head = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version_id.clone())
                .send()
                .await
                .map_err(|e| {
                    self.error(format!("HEAD {key} version {}", version_id.as_deref().unwrap_or("null")), e)
                })?;
            let mode = head.object_lock_mode().and_then(|m| match m {
                ObjectLockMode::Compliance => Some(Mode::Compliance),
                ObjectLockMode::Governance => Some(Mode::Governance),
                _ => None,
            });
            versions.push(VersionLock {
                version_id,
                delete_marker,
                mode,
                retain_until_ms: head.object_lock_retain_until_date().and_then(|d| d.to_millis().ok()),
                legal_hold: head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
            });
        }
        Ok(versions)
    }

    /// Deletes every version of `key` (and its delete markers), unless one is locked at
    /// `now_ms`: then nothing is deleted and the lock is returned. A version S3 still refuses
    /// to delete (a lock set after we asked) fails the call; nothing is skipped silently.
    pub async fn delete_versions(&self, key: &str, now_ms: i64) -> Result<Deleted> {
        let versions = self.versions(key).await?;
        let locked: Vec<&VersionLock> = versions.iter().filter(|v| v.locked(now_ms)).collect();
        if !locked.is_empty() {
            return Ok(Deleted::Locked {
                until_ms: locked.iter().filter_map(|v| v.retain_until_ms).max(),
                legal_hold: locked.iter().any(|v| v.legal_hold),
            });
        }
        for version in &versions {
            let deleted = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.version_id.clone())
                .send()
                .await;
            match deleted {
                Ok(_) => {}
                // Still locked by the store's clock (ours may run ahead of it), or a lock set
                // since we asked: it waits, as any locked object does.
                Err(e) if e.code() == Some("AccessDenied") => {
                    return Ok(Deleted::Locked { until_ms: version.retain_until_ms, legal_hold: version.legal_hold });
                }
                Err(e) => {
                    let id = version.version_id.as_deref().unwrap_or("null");
                    return Err(self.error(format!("DELETE {key} version {id}"), e));
                }
            }
        }
        Ok(Deleted::Gone { versions: versions.len() })
    }

    /// Extends the retention of every version of `key` to at least `until_ms` in `mode` (or a
    /// firmer one): a governance lock is raised to compliance. Versions already locked that
    /// long in a mode at least as firm are left alone: retention is never shortened, nor a
    /// compliance lock lowered. Returns how many versions were changed.
    pub async fn extend(&self, key: &str, mode: Mode, until_ms: i64) -> Result<usize> {
        let mut extended = 0;
        for version in self.versions(key).await? {
            let long_enough = version.retain_until_ms.is_some_and(|current| current >= until_ms);
            let firm_enough = version.mode.is_some_and(|m| m.covers(mode));
            if version.delete_marker || (long_enough && firm_enough) {
                continue;
            }
            let until = version.retain_until_ms.map_or(until_ms, |current| current.max(until_ms));
            let mode = match version.mode {
                Some(Mode::Compliance) => Mode::Compliance,
                _ => mode,
            };
            let retention = ObjectLockRetention::builder()
                .mode(mode.retention_mode())
                .retain_until_date(DateTime::from_millis(until))
                .build();
            self.client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.version_id.clone())
                .retention(retention)
                .send()
                .await
                .map_err(|e| self.error(format!("PUT {key}?retention"), e))?;
            extended += 1;
        }
        Ok(extended)
    }

    /// Sets or clears the S3 legal-hold flag on every version of `key`. Returns how many
    /// versions changed. (tierlog only ever sets it: see [`apply_legal_holds`].)
    pub async fn set_legal_hold(&self, key: &str, on: bool) -> Result<usize> {
        let mut changed = 0;
        for version in self.versions(key).await? {
            if version.delete_marker || version.legal_hold == on {
                continue;
            }
            let status = if on { ObjectLockLegalHoldStatus::On } else { ObjectLockLegalHoldStatus::Off };
            self.client
                .put_object_legal_hold()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.version_id.clone())
                .legal_hold(ObjectLockLegalHold::builder().status(status).build())
                .send()
                .await
                .map_err(|e| self.error(format!("PUT {key}?legal-hold"), e))?;
            changed += 1;
        }
        Ok(changed)
    }

    fn error<E, R>(&self, action: impl Into<String>, e: aws_sdk_s3::error::SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug,
    {
        let detail = describe(&e);
        let source = object_store::Error::Generic { store: "S3", source: detail.into() };
        let hint = match e.code() {
            Some("AccessDenied") => {
                "The store refused: the object may be locked (Object Lock retention or legal hold), or the credentials lack s3:GetObjectRetention/s3:PutObjectRetention/s3:PutObjectLegalHold/s3:ListBucketVersions/s3:DeleteObjectVersion"
            }
            Some("NoSuchBucket") => "The bucket does not exist: create it, or fix the bucket in remote.url",
            _ if is_unreachable(&e) => {
                "The endpoint is unreachable: check remote.endpoint, that the server is running, and remote.allow_http"
            }
            _ => "Check remote.url, remote.endpoint and the server's logs",
        };
        Error::Store { store: self.display.clone(), action: action.into(), hint, source: Box::new(source) }
    }
}

/// Every segment entry a manifest version lists: its archives' (loaded) and its own.
pub async fn listed_entries(store: &RemoteStore, manifest: &Manifest) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for archive in &manifest.archives {
        entries.extend(crate::manifest::load_archive(store, archive).await?);
    }
    entries.extend(manifest.entries.iter().cloned());
    Ok(entries)
}

/// Extends the lock of everything the partition holds in the bucket to `policy`: each
/// segment object to its upload time + `retain_ms`, each manifest version and archive to its
/// write time (`last_modified`) + `retain_ms`. Objects whose new retain-until has already
/// passed are left alone; nothing is shortened. Idempotent: a failure part way is finished by
/// the next call. Returns how many object versions were extended.
pub async fn restamp(manifest: &ManifestStore, policy: LockPolicy) -> Result<usize> {
    let store = &manifest.store;
    let why = format!("topic '{}' (object lock {})", manifest.topic, policy.mode);
    let lock = store.require_lock(&why).await?;
    let now = wall_ms();
    let retain = i64::try_from(policy.retain_ms).unwrap_or(i64::MAX);
    let mut extended = 0;
    for entry in listed_entries(store, &manifest.current).await? {
        let until = entry.uploaded_ms.saturating_add(retain);
        if until > now {
            extended += lock.extend(&entry.key, policy.mode, until).await?;
        }
    }
    let folder = store.key(&["manifests", &manifest.topic, &manifest.partition.to_string()]);
    let mut objects = store.store.list(Some(&folder));
    use futures::StreamExt;
    while let Some(meta) = objects.next().await {
        let meta = meta.map_err(|e| store.error(format!("LIST {folder}"), e))?;
        let until = meta.last_modified.timestamp_millis().saturating_add(retain);
        if until > now {
            extended += lock.extend(meta.location.as_ref(), policy.mode, until).await?;
        }
    }
    Ok(extended)
}

/// A segment object and the time range of its records in the topic's clock (record time, or
/// append time on LogAppendTime topics), as legal holds judge it.
pub type HeldObject = (String, (i64, i64));

/// The objects a legal hold can cover: the segment objects `entries` list and those of
/// `manifest`'s expired segments still awaiting deletion (a hold set after an expiry keeps
/// them, see `retention::delete_due`).
pub fn hold_candidates(entries: &[Entry], manifest: &Manifest, by_append_time: bool) -> Vec<HeldObject> {
    let none = crate::segment_object::NO_APPEND_TIME;
    let mut objects: Vec<HeldObject> = entries
        .iter()
        .map(|e| {
            let times =
                if by_append_time { (e.min_append(), e.max_append()) } else { (e.min_timestamp, e.max_timestamp) };
            (e.key.clone(), times)
        })
        .collect();
    for p in manifest.expired.iter().flat_map(|x| &x.pending_deletes) {
        let times = match by_append_time {
            true => (p.min_append_time.unwrap_or(none), p.max_append_time.unwrap_or(none)),
            false => (p.min_timestamp, p.max_timestamp),
        };
        objects.push((p.key.clone(), times));
    }
    objects
}

/// Sets S3's legal-hold flag on the `objects` a hold in `holds` covers. Never clears one: a
/// flag may have been set by someone else (a compliance officer, another tool), and tierlog
/// cannot tell; clearing flags after a `hold release` is the operator's decision. Returns how
/// many object versions were flagged.
pub async fn apply_legal_holds(store: &RemoteStore, objects: &[HeldObject], holds: &[(i64, i64)]) -> Result<usize> {
    let Some(lock) = &store.lock else { return Ok(0) };
    let overlaps = |(min, max): (i64, i64), (from, to): (i64, i64)| min < to && from <= max;
    let mut changed = 0;
    for (key, times) in objects {
        if holds.iter().any(|range| overlaps(*times, *range)) {
            changed += lock.set_legal_hold(key, true).await?;
        }
    }
    Ok(changed)
}

/// `code: message (HTTP status)` of an SDK error, or its chain when there was no response.
fn describe<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                text.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            text
        }
    }
}

/// The endpoint for the SDK. With virtual-hosted style, object_store takes an endpoint that
/// already names the bucket (`https://bucket.host`), while the SDK puts the bucket in front of
/// the endpoint's host itself: give it the host without the bucket.
fn sdk_endpoint(endpoint: &str, virtual_hosted_style: bool, bucket: &str) -> String {
    if !virtual_hosted_style {
        return endpoint.to_string();
    }
    for scheme in ["https://", "http://"] {
        if let Some(host) = endpoint.strip_prefix(scheme).and_then(|rest| rest.strip_prefix(&format!("{bucket}."))) {
            return format!("{scheme}{host}");
        }
    }
    endpoint.to_string()
}

/// No answer about the bucket: unreachable, timed out, throttled, a server error, or refused
/// (credentials or policy) — as opposed to the server saying it has no Object Lock.
fn is_transient<E>(e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    let status = e.raw_response().map(|r| r.status().as_u16());
    is_unreachable(e) || status.is_some_and(|s| (s >= 500 && s != 501) || s == 429 || s == 403)
}

fn is_unreachable<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool {
    matches!(e, aws_sdk_s3::error::SdkError::DispatchFailure(_) | aws_sdk_s3::error::SdkError::TimeoutError(_))
}

fn to_object_store_error<E, R>(key: &Path, e: aws_sdk_s3::error::SdkError<E, R>) -> object_store::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let path = key.to_string();
    let source: Box<dyn std::error::Error + Send + Sync> = describe(&e).into();
    match e.code() {
        Some("PreconditionFailed") => object_store::Error::AlreadyExists { path, source },
        Some("ConditionalRequestConflict") => object_store::Error::Precondition { path, source },
        Some("AccessDenied") => object_store::Error::PermissionDenied { path, source },
        _ => object_store::Error::Generic { store: "S3", source },
    }
}

/// The object_store of an S3 remote tier: writes that carry a [`LockRequest`] go through the
/// SDK with the lock; everything else is `inner` unchanged.
#[derive(Debug)]
pub struct LockingStore {
    pub inner: Arc<dyn ObjectStore>,
    pub lock: Arc<S3Lock>,
}

impl fmt::Display for LockingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockingStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LockingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let Some(lock) = opts.extensions.get::<LockRequest>().copied() else {
            let mut opts = opts;
            self.lock.writes.add_storage_class(&mut opts.attributes);
            return self.inner.put_opts(location, payload, opts).await;
        };
        let create_only = match opts.mode {
            PutMode::Create => true,
            PutMode::Overwrite => false,
            PutMode::Update(UpdateVersion { .. }) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "conditional update of a locked object".into(),
                    implementer: "tierlog LockingStore".into(),
                });
            }
        };
        self.lock.put(location, payload, create_only, lock).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        mut opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.lock.writes.add_storage_class(&mut opts.attributes);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_name_and_off_means_none() {
        assert_eq!(Mode::parse("compliance"), Some(Some(Mode::Compliance)));
        assert_eq!(Mode::parse("governance"), Some(Some(Mode::Governance)));
        assert_eq!(Mode::parse("off"), Some(None));
        assert_eq!(Mode::parse("COMPLIANCE"), None);
    }

    #[test]
    fn a_version_is_locked_by_a_future_retain_until_or_a_legal_hold() {
        let v = |until, hold| VersionLock {
            version_id: None,
            delete_marker: false,
            mode: Some(Mode::Compliance),
            retain_until_ms: until,
            legal_hold: hold,
        };
        assert!(v(Some(2_000), false).locked(1_000));
        assert!(!v(Some(1_000), false).locked(1_000));
        assert!(!v(None, false).locked(1_000));
        assert!(v(None, true).locked(1_000));
    }

    /// A store that cannot lock (a local directory) writes the object but never marks the
    /// result: the writer must refuse to go on, not treat the object as locked.
    #[tokio::test]
    async fn a_lock_the_store_did_not_apply_is_an_error_not_a_silent_skip() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RemoteStore::local_dir(dir.path()).unwrap();
        let key = store.key(&["x"]);
        let lock = LockRequest { mode: Mode::Compliance, retain_until_ms: 10, legal_hold: false };
        let result =
            store.store.put_opts(&key, PutPayload::from_static(b"1"), lock.options(PutMode::Create)).await.unwrap();
        let err = check_applied(&store.display, &key, Some(lock), &result).unwrap_err().to_string();
        assert!(err.contains("cannot lock objects") && err.contains("object.lock.mode=off"), "{err}");
        check_applied(&store.display, &key, None, &result).unwrap();
    }
}
