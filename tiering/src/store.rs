//! The object store behind the remote tier, built from configuration.
//!
//! `s3://bucket/prefix` builds an `AmazonS3` client (path-style unless asked otherwise, plain
//! HTTP only when allowed) whose credentials come from aws-config's default chain (env,
//! profile, SSO, web identity, IMDS) through [`AwsChainCredentials`], so everything the AWS
//! CLI accepts works here. `file://dir` is the embedded default: a local directory with the
//! same layout and semantics (including create-only writes).
//!
//! At startup [`RemoteStore::check`] fails fast with a message naming the endpoint and
//! bucket, and [`RemoteStore::probe_conditional_writes`] finds out whether create-only writes
//! are honoured (they fence a second writer); Garage, for one, ignores them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::path::Path;
use object_store::{
    ClientOptions, CredentialProvider, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::lock::{LockingStore, S3Lock};

/// Per-request timeout of S3 calls. A segment chunk is a few MiB; 60 s is generous even on a
/// slow link, yet bounds a hung connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long object_store keeps retrying one request (idempotent requests and, on connection
/// errors before a response, PUTs): with [`REQUEST_TIMEOUT`], the longest a request can be in
/// flight, which scrub must out-wait before deleting an unreferenced object.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(120);
/// Connecting should be quick; a long connect means a wrong or unreachable endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries inside object_store for idempotent requests (GET, HEAD, DELETE) on 5xx and
/// connection errors. Uploads get their own retries with fresh keys in `uploader`.
const CLIENT_RETRIES: usize = 3;
/// Refresh cached credentials this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where and how to reach the remote tier: the `[remote]` section of tierlog's config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Where sealed segments go: `s3://bucket/prefix` for S3-compatible storage, or
    /// `file:///abs/dir` / `file://rel/dir` for a local directory. Empty: the embedded
    /// default, a directory beside the data dir named `<data_dir>-remote`.
    pub url: String,
    /// S3 endpoint for non-AWS servers (MinIO, Garage, Ceph), e.g. `http://127.0.0.1:9000`.
    /// Empty: AWS's regional endpoint.
    pub endpoint: String,
    /// S3 region (MinIO and Garage accept any; Garage's default is `garage`).
    pub region: String,
    /// Allow plain-HTTP endpoints (local MinIO/Garage). Never for production.
    pub allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.host`). Off: path-style (`host/bucket`), which
    /// MinIO, Garage and Ceph expect by default.
    pub virtual_hosted_style: bool,
    /// AWS shared-config profile for credentials; empty uses the default chain as is
    /// (environment, `AWS_PROFILE`, web identity, IMDS).
    pub profile: String,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            allow_http: false,
            virtual_hosted_style: false,
            profile: String::new(),
        }
    }
}

/// A connected object store plus the key prefix everything of this cluster lives under.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// Endpoint and bucket (or directory), for messages. Never holds credentials.
    pub display: String,
    /// Unique parts of object keys (segments, archives, scrub markers, probes).
    pub ids: crate::keys::UniqueIds,
    /// The SDK client for S3 Object Lock requests (S3 stores only; see [`crate::lock`]).
    pub lock: Option<Arc<S3Lock>>,
    /// The lock of the records that belong to no topic: the audit trail and the legal-hold
    /// series (the configuration's `tiering.object_lock_*`; `None`: not locked).
    pub records_lock: Option<crate::lock::LockPolicy>,
}

impl RemoteStore {
    /// Builds the store described by `config` (no request is made yet).
    pub async fn connect(config: &RemoteConfig) -> Result<RemoteStore> {
        if let Some(dir) = config.url.strip_prefix("file://") {
            return RemoteStore::local_dir(std::path::Path::new(dir));
        }
        let Some(rest) = config.url.strip_prefix("s3://") else {
            return Err(Error::Config(format!(
                "remote.url {:?}: expected s3://bucket/prefix or file:///dir",
                config.url
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!("remote.url {:?}: bucket name missing", config.url)));
        }
        let credentials = AwsChainCredentials::from_default_chain(config).await;
        let endpoint =
            if config.endpoint.is_empty() { format!("AWS S3 ({})", config.region) } else { config.endpoint.clone() };
        let display = format!("{endpoint}, bucket '{bucket}'");
        let provider = credentials.provider.clone();
        let store = s3_builder(config, bucket)
            .with_credentials(Arc::new(credentials))
            .build()
            .map_err(|e| Error::Config(format!("{display}: {e}")))?;
        Ok(s3_store(config, bucket, prefix, store, provider, display))
    }

    /// Like [`connect`](Self::connect) for S3 with explicit credentials instead of the chain.
    pub fn connect_s3_with_keys(config: &RemoteConfig, key_id: &str, secret: &str) -> Result<RemoteStore> {
        let rest = config.url.strip_prefix("s3://").ok_or_else(|| Error::Config("expected an s3:// url".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let display = format!("{}, bucket '{bucket}'", config.endpoint);
        let store = s3_builder(config, bucket)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .build()
            .map_err(|e| Error::Config(format!("{display}: {e}")))?;
        let provider = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            key_id, secret, None, None, "tierlog",
        ));
        Ok(s3_store(config, bucket, prefix, store, provider, display))
    }

    /// The embedded default: objects as files under `dir`.
    pub fn local_dir(dir: &std::path::Path) -> Result<RemoteStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.display().to_string(), source: e })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::Config(format!("local remote directory {}: {e}", dir.display())))?;
        Ok(RemoteStore {
            store: Arc::new(store),
            prefix: Path::default(),
            display: format!("local directory {}", dir.display()),
            ids: Default::default(),
            lock: None,
            records_lock: None,
        })
    }

    /// Create-only `PutOptions` for a record that belongs to no topic, locked under
    /// [`records_lock`](Self::records_lock) when set; the lock asked for, for
    /// [`crate::lock::check_applied`].
    pub fn record_options(&self) -> (PutOptions, Option<crate::lock::LockRequest>) {
        match self.records_lock.map(|l| l.request_now()) {
            Some(lock) => (lock.options(PutMode::Create), Some(lock)),
            None => (PutOptions { mode: PutMode::Create, ..PutOptions::default() }, None),
        }
    }

    /// Refuses unless this store can lock objects: S3 with Object Lock enabled on the bucket.
    /// `why` names what asks for it (a topic, the config).
    pub async fn require_lock(&self, why: &str) -> Result<&Arc<S3Lock>> {
        let Some(lock) = &self.lock else {
            return Err(Error::Config(format!(
                "{}: {why} asks for S3 Object Lock, but the remote tier is not S3: only an S3 bucket with Object Lock enabled can hold objects under WORM retention; use such a bucket, or turn it off with `tierlog topic alter TOPIC --set object.lock.mode=off` (or tiering.object_lock_mode = \"off\" in the configuration)",
                self.display
            )));
        };
        lock.require_lock(why).await?;
        Ok(lock)
    }

    /// Wraps the store (e.g. with fault injection or request counting in tests).
    pub fn with_store(&self, store: Arc<dyn ObjectStore>) -> RemoteStore {
        RemoteStore { store, ..self.clone() }
    }

    /// Draws key suffixes from `ids` (a simulation seeds them).
    pub fn with_ids(self, ids: crate::keys::UniqueIds) -> RemoteStore {
        RemoteStore { ids, ..self }
    }

    /// `prefix/part/part…`
    pub fn key(&self, parts: &[&str]) -> Path {
        let mut path = self.prefix.clone();
        for part in parts {
            path = path.clone().join(*part);
        }
        path
    }

    /// Turns an object_store error into one that names the store and says what to check.
    pub fn error(&self, action: impl Into<String>, source: object_store::Error) -> Error {
        let text = format!("{source:?}");
        let hint = if text.contains("NoSuchBucket") || matches!(source, object_store::Error::NotFound { .. }) {
            "The bucket does not exist: create it, or fix the bucket in remote.url"
        } else if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || has_status(&text, "403")
        {
            "The credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile, and the bucket policy"
        } else if text.contains("PermanentRedirect")
            || has_status(&text, "301")
            || text.contains("AuthorizationHeaderMalformed")
        {
            "The server wants another addressing style or region: check remote.region and remote.virtual_hosted_style"
        } else if text.contains("onnect") || text.contains("dns error") || text.contains("timed out") {
            "The endpoint is unreachable: check remote.endpoint, that the server is running, and remote.allow_http for http:// endpoints"
        } else if text.contains("NoCredentials") || text.contains("credential") {
            "No credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or remote.profile"
        } else {
            "Check remote.url, remote.endpoint and the server's logs"
        };
        Error::Store { store: self.display.clone(), action: action.into(), hint, source: Box::new(source) }
    }

    /// Fails fast when the store is unreachable, the bucket is missing or the credentials are
    /// refused. A one-page LIST of our own check prefix tells a missing bucket apart from a
    /// missing key on every server; where LIST is not permitted, a GET of a key that need not
    /// exist still catches unreachable endpoints and refused credentials.
    pub async fn check(&self) -> Result<()> {
        let key = self.key(&["_tierlog", "check"]);
        match self.store.list_with_delimiter(Some(&key)).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::PermissionDenied { .. }) => {}
            Err(e) => return Err(self.error(format!("LIST {key}"), e)),
        }
        match self.store.get(&key).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(format!("GET {key}"), e)),
        }
    }

    /// Writes a fresh probe object twice with create-only semantics: a store that honours
    /// conditional writes refuses the second write. Returns whether it does.
    pub async fn probe_conditional_writes(&self) -> Result<bool> {
        let key = self.key(&["_tierlog", "probe", &self.ids.next()]);
        let create = || PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        self.store
            .put_opts(&key, PutPayload::from_static(b"1"), create())
            .await
            .map_err(|e| self.error(format!("PUT {key}"), e))?;
        let honoured = match self.store.put_opts(&key, PutPayload::from_static(b"2"), create()).await {
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => true,
            Ok(_) => false,
            Err(e) => return Err(self.error(format!("PUT {key} (conditional)"), e)),
        };
        if let Err(e) = self.store.delete(&key).await {
            tracing::warn!(key = %key, error = %e, "could not delete the conditional-write probe object");
        }
        Ok(honoured)
    }
}

/// An S3 remote tier: object_store for data, wrapped so locked writes go through the SDK.
fn s3_store(
    config: &RemoteConfig,
    bucket: &str,
    prefix: &str,
    store: object_store::aws::AmazonS3,
    provider: SharedCredentialsProvider,
    display: String,
) -> RemoteStore {
    let lock = Arc::new(S3Lock::new(config, bucket, provider, &display));
    let store = LockingStore { inner: Arc::new(store), lock: lock.clone() };
    RemoteStore {
        store: Arc::new(store),
        prefix: Path::from(prefix),
        display,
        ids: Default::default(),
        lock: Some(lock),
        records_lock: None,
    }
}

fn s3_builder(config: &RemoteConfig, bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(if config.region.is_empty() { "us-east-1" } else { &config.region })
        .with_allow_http(config.allow_http)
        .with_virtual_hosted_style_request(config.virtual_hosted_style)
        .with_retry(RetryConfig { max_retries: CLIENT_RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() })
        .with_client_options(
            ClientOptions::new()
                .with_timeout(REQUEST_TIMEOUT)
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_allow_http(config.allow_http),
        );
    if !config.endpoint.is_empty() {
        builder = builder.with_endpoint(&config.endpoint);
    }
    builder
}

/// Bridges aws-config's credential chain into object_store, caching credentials until shortly
/// before they expire. Its `Debug` never prints secrets.
pub struct AwsChainCredentials {
    pub provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl std::fmt::Debug for AwsChainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsChainCredentials(aws-config default chain)")
    }
}

impl AwsChainCredentials {
    pub async fn from_default_chain(config: &RemoteConfig) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !config.profile.is_empty() {
            loader = loader.profile_name(&config.profile);
        }
        if !config.region.is_empty() {
            loader = loader.region(aws_config::Region::new(config.region.clone()));
        }
        let sdk = loader.load().await;
        let provider = sdk.credentials_provider().unwrap_or_else(|| {
            SharedCredentialsProvider::new(aws_credential_types::Credentials::new("", "", None, None, "none"))
        });
        AwsChainCredentials { provider, cached: Mutex::new(None) }
    }
}

#[async_trait::async_trait]
impl CredentialProvider for AwsChainCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|e| SystemTime::now() + CREDENTIAL_REFRESH_MARGIN < e);
            if fresh {
                return Ok(credential.clone());
            }
        }
        let credentials = self.provider.provide_credentials().await.map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: format!(
                "no usable AWS credentials from the default chain (env, profile, SSO, web identity, IMDS): {e}"
            )
            .into(),
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: credentials.access_key_id().to_string(),
            secret_key: credentials.secret_access_key().to_string(),
            token: credentials.session_token().map(str::to_string),
        });
        *cached = Some((credential.clone(), credentials.expiry()));
        Ok(credential)
    }
}

/// Whether `text` holds the HTTP status `code` as a number of its own: not inside another
/// number such as a request's duration ("in 333.330131ms" once read as a 301 redirect, found
/// by a CI run whose unreachable endpoint was reported as a wrong addressing style).
fn has_status(text: &str, code: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(code).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + code.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit() || b == b'.') && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_codes_are_whole_numbers_not_digits_of_a_duration() {
        assert!(has_status("Server returned non-2xx status code: 403 Forbidden", "403"));
        assert!(has_status("status: 301", "301"));
        assert!(!has_status("Error performing GET http://127.0.0.1:9/b in 333.330131ms, after 3 retries", "301"));
        assert!(!has_status("in 14033ms", "403"));
        assert!(!has_status("port 4031", "403"));
    }

    /// The CI failure: a refused connection whose retry report took 333.330131 ms was told to
    /// check the addressing style (the "301" in the duration).
    #[test]
    fn a_refused_connection_is_unreachable_whatever_its_duration_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::local_dir(dir.path()).unwrap();
        let source = "Error performing GET http://127.0.0.1:9/b in 333.330131ms, after 3 retries - \
                      HTTP error: error sending request: ConnectError(\"tcp connect error\", Connection refused)";
        let err = store.error("LIST x", object_store::Error::Generic { store: "S3", source: source.into() });
        assert!(err.to_string().contains("unreachable"), "{err}");
    }
}
