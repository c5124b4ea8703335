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
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};
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
/// Settings left empty follow the AWS SDK's conventions (see [`S3Connection::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Where sealed segments go: `s3://bucket/prefix` for S3-compatible storage, or
    /// `file:///abs/dir` / `file://rel/dir` for a local directory. Empty: the embedded
    /// default, a directory beside the data dir named `<data_dir>-remote`.
    pub url: String,
    /// S3 endpoint for non-AWS servers (MinIO, Garage, Ceph), e.g. `http://127.0.0.1:9000`.
    /// Empty: `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`, then AWS's regional endpoint.
    pub endpoint: String,
    /// S3 region (MinIO and Garage accept any; Garage's default is `garage`). Empty: the AWS
    /// chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` in `~/.aws/config`,
    /// EC2 instance metadata), then `us-east-1`.
    pub region: String,
    /// Allow plain-HTTP endpoints (local MinIO/Garage). Never for production.
    pub allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.host`). Off: path-style (`host/bucket`), which
    /// MinIO, Garage and Ceph expect by default.
    pub virtual_hosted_style: bool,
    /// AWS shared-config profile for credentials and region; empty uses the default chain as
    /// is (environment, `AWS_PROFILE`, web identity, IMDS).
    pub profile: String,
    /// PEM file of CA certificates the endpoint's TLS certificate may chain to (a private
    /// MinIO's CA), trusted in addition to the system's roots by both S3 clients. Empty:
    /// `AWS_CA_BUNDLE` when set.
    pub ca_file: String,
    /// S3 storage class of every object tierlog writes (`x-amz-storage-class`), e.g.
    /// `STANDARD_IA` or `INTELLIGENT_TIERING`. Empty: the bucket's default (`STANDARD`).
    /// Classes that need a restore before a GET (`GLACIER`, `DEEP_ARCHIVE`) are refused: the
    /// reader must be able to fetch any chunk at once.
    pub storage_class: String,
    /// Server-side encryption of every object tierlog writes: `AES256` (SSE-S3), `aws:kms`
    /// (SSE-KMS), `aws:kms:dsse`. Empty: the bucket's default encryption.
    pub sse: String,
    /// KMS key (id, ARN or alias) for `sse = "aws:kms"` / `"aws:kms:dsse"`. Empty: the
    /// account's AWS-managed key `aws/s3`.
    pub sse_kms_key_id: String,
}

/// The region used when neither tierlog's configuration nor the AWS chain names one (the
/// AWS SDKs' own last resort for S3).
pub const FALLBACK_REGION: &str = "us-east-1";

/// Storage classes whose objects can be read at once (no restore), which tierlog's reader
/// needs; `GLACIER` and `DEEP_ARCHIVE` are left out on purpose.
pub const STORAGE_CLASSES: [&str; 7] = [
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "EXPRESS_ONEZONE",
];

/// The server-side encryption modes tierlog can ask for. SSE-C is left out: it needs a key
/// on every read, and tierlog's client-side encryption (`[encryption]`) covers that need.
pub const SSE_MODES: [&str; 3] = ["AES256", "aws:kms", "aws:kms:dsse"];

impl RemoteConfig {
    /// Checks the settings that need no connection: `storage_class`, `sse` and
    /// `sse_kms_key_id`, naming the key and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !self.storage_class.is_empty() && !STORAGE_CLASSES.contains(&self.storage_class.as_str()) {
            let cold = ["GLACIER", "DEEP_ARCHIVE"].contains(&self.storage_class.as_str());
            let why =
                if cold { " (its objects need a restore before a GET, so tiered data could not be read)" } else { "" };
            return Err(Error::Config(format!(
                "remote.storage_class = {:?} is not allowed{why}: expected one of {} or empty for the bucket's default; move older objects to colder classes with an S3 lifecycle rule instead",
                self.storage_class,
                STORAGE_CLASSES.join(", ")
            )));
        }
        if !self.sse.is_empty() && !SSE_MODES.contains(&self.sse.as_str()) {
            return Err(Error::Config(format!(
                "remote.sse = {:?}: expected \"AES256\", \"aws:kms\", \"aws:kms:dsse\" or empty for the bucket's default (for keys held by tierlog, use [encryption] instead of SSE-C)",
                self.sse
            )));
        }
        if !self.sse_kms_key_id.is_empty() && !self.sse.starts_with("aws:kms") {
            return Err(Error::Config(format!(
                "remote.sse_kms_key_id is set but remote.sse = {:?}: a KMS key is used only with remote.sse = \"aws:kms\" (or \"aws:kms:dsse\"); set that too",
                self.sse
            )));
        }
        Ok(())
    }
}

/// A setting's value and where it came from (`remote.region`, `env AWS_REGION`, …), for
/// `tierlog config show` and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub value: String,
    pub source: String,
}

impl Resolved {
    fn new(value: impl Into<String>, source: impl Into<String>) -> Resolved {
        Resolved { value: value.into(), source: source.into() }
    }
}

/// A CA bundle to trust for the endpoint's TLS: its PEM text, where it was read from and why.
#[derive(Clone)]
pub struct CaBundle {
    pub path: String,
    pub source: String,
    pem: Vec<u8>,
    certificates: Vec<object_store::Certificate>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({} from {}, {} certificates)", self.path, self.source, self.certificates.len())
    }
}

/// How to reach an S3 remote tier once the AWS SDK's conventions have filled in what the
/// `[remote]` section leaves empty. Both S3 clients (object_store's and the SDK's, for Object
/// Lock) are built from it, so they always agree on endpoint, region and trusted CAs.
#[derive(Debug, Clone)]
pub struct S3Connection {
    pub region: Resolved,
    /// `None`: AWS's regional endpoint.
    pub endpoint: Option<Resolved>,
    pub ca: Option<CaBundle>,
}

impl S3Connection {
    /// The AWS SDK's precedence, tierlog's own settings first:
    /// - region: `remote.region`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`
    ///   in the shared config file, EC2 instance metadata (not for an endpoint outside AWS: a
    ///   MinIO or Garage beside an EC2 instance does not take its region, and off EC2 the
    ///   question costs a timeout at every connect), then [`FALLBACK_REGION`];
    /// - endpoint: `remote.endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` (both ignored
    ///   under `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), then AWS's regional endpoint;
    /// - CA bundle: `remote.ca_file`, then `AWS_CA_BUNDLE`.
    pub async fn resolve(config: &RemoteConfig) -> Result<S3Connection> {
        let mut connection = S3Connection::resolve_without_profile(config, &process_env)?;
        if connection.region.source == FALLBACK_SOURCE {
            let ask_instance = connection.endpoint.as_ref().is_none_or(|endpoint| is_aws_endpoint(&endpoint.value));
            match chain_region(config, ask_instance).await {
                Some(region) => connection.region = region,
                None if !ask_instance => connection.region.source = FALLBACK_SOURCE_WITH_ENDPOINT.to_string(),
                None => {}
            }
        }
        Ok(connection)
    }

    /// [`resolve`](Self::resolve) without the shared config file and instance metadata (the
    /// explicit-keys path, and unit tests): `env` stands for the process environment.
    pub fn resolve_without_profile(
        config: &RemoteConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<S3Connection> {
        let region = if !config.region.is_empty() {
            Resolved::new(&config.region, "remote.region")
        } else if let Some((var, value)) = first_env(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]) {
            Resolved::new(value, format!("env {var}"))
        } else {
            Resolved::new(FALLBACK_REGION, FALLBACK_SOURCE)
        };
        Ok(S3Connection { region, endpoint: resolve_endpoint(config, env)?, ca: resolve_ca(config, env)? })
    }

    /// The endpoint for messages: the URL (saying which variable set it, when one did: an
    /// inherited `AWS_ENDPOINT_URL` sends the data elsewhere), or "AWS S3 (region)".
    pub fn endpoint_display(&self) -> String {
        match &self.endpoint {
            Some(endpoint) if endpoint.source == "remote.endpoint" => endpoint.value.clone(),
            Some(endpoint) => format!("{} (from {})", endpoint.value, endpoint.source),
            None => format!("AWS S3 ({})", self.region.value),
        }
    }

    /// The SDK's HTTP client trusting [`ca`](Self::ca) besides the system's roots; `None`:
    /// the SDK's default client.
    pub fn sdk_http_client(&self) -> Result<Option<aws_sdk_s3::config::SharedHttpClient>> {
        use aws_smithy_http_client::tls;
        let Some(ca) = &self.ca else { return Ok(None) };
        let trust = tls::TrustStore::default().with_pem_certificate(ca.pem.clone());
        let context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| Error::Config(format!("{} {} ({}): {e}", ca.source, ca.path, "CA bundle")))?;
        Ok(Some(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
                .tls_context(context)
                .build_https(),
        ))
    }
}

const FALLBACK_SOURCE: &str =
    "default (no region in remote.region, AWS_REGION, AWS_DEFAULT_REGION, the AWS profile or instance metadata)";
const FALLBACK_SOURCE_WITH_ENDPOINT: &str = "default (no region in remote.region, AWS_REGION, AWS_DEFAULT_REGION or the AWS profile; instance metadata is not asked for an endpoint outside AWS)";

/// Whether `url` is one of AWS's own endpoints (a VPC, FIPS or regional S3 endpoint), whose
/// region an EC2 instance's metadata gives.
fn is_aws_endpoint(url: &str) -> bool {
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    host.is_some_and(|host| host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The first of `names` set to a non-empty value.
fn first_env(env: &dyn Fn(&str) -> Option<String>, names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty()).map(|v| (*name, v.trim().to_string())))
}

/// The region of the AWS profile (shared config file), else, if `ask_instance`, of the EC2
/// instance metadata (which aws-config skips under `AWS_EC2_METADATA_DISABLED=true`).
async fn chain_region(config: &RemoteConfig, ask_instance: bool) -> Option<Resolved> {
    use aws_config::meta::region::ProvideRegion;
    let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
    let name = if config.profile.is_empty() {
        first_env(&process_env, &["AWS_PROFILE"]).map_or_else(|| "default".to_string(), |(_, p)| p)
    } else {
        profile = profile.profile_name(&config.profile);
        config.profile.clone()
    };
    if let Some(region) = profile.build().region().await {
        return Some(Resolved::new(region.to_string(), format!("AWS profile '{name}' (shared config file)")));
    }
    if !ask_instance {
        return None;
    }
    let imds = aws_config::imds::region::ImdsRegionProvider::builder().build();
    imds.region().await.map(|region| Resolved::new(region.to_string(), "EC2 instance metadata"))
}

fn resolve_endpoint(config: &RemoteConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Resolved>> {
    let ignore_env = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let endpoint = if !config.endpoint.is_empty() {
        Resolved::new(&config.endpoint, "remote.endpoint")
    } else if let Some((var, value)) =
        first_env(env, &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]).filter(|_| !ignore_env)
    {
        Resolved::new(value, format!("env {var}"))
    } else {
        return Ok(None);
    };
    let name =
        if endpoint.source == "remote.endpoint" { "remote.endpoint".to_string() } else { endpoint.source.clone() };
    if !endpoint.value.starts_with("http://") && !endpoint.value.starts_with("https://") {
        return Err(Error::Config(format!("{name} = {:?}: expected http://host:port or https://host", endpoint.value)));
    }
    if endpoint.value.starts_with("http://") && !config.allow_http {
        return Err(Error::Config(format!(
            "{name} = {:?} is plain HTTP, which remote.allow_http = false refuses: use https://, or set remote.allow_http = true (TIERLOG_REMOTE_ALLOW_HTTP=true) for a local test server",
            endpoint.value
        )));
    }
    Ok(Some(endpoint))
}

fn resolve_ca(config: &RemoteConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<CaBundle>> {
    let (path, source) = if !config.ca_file.is_empty() {
        (config.ca_file.clone(), "remote.ca_file".to_string())
    } else if let Some((var, value)) = first_env(env, &["AWS_CA_BUNDLE"]) {
        (value, format!("env {var}"))
    } else {
        return Ok(None);
    };
    let pem = std::fs::read(&path).map_err(|e| {
        Error::Config(format!(
            "{source} = {path:?}: cannot read the CA bundle: {e}; point it at a PEM file of CA certificates"
        ))
    })?;
    let certificates = object_store::Certificate::from_pem_bundle(&pem)
        .map_err(|e| Error::Config(format!("{source} = {path:?}: not a PEM bundle of CA certificates: {e}")))?;
    if certificates.is_empty() {
        return Err(Error::Config(format!(
            "{source} = {path:?} holds no certificate: expected PEM blocks (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(Some(CaBundle { path, source, pem, certificates }))
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
        config.validate()?;
        let connection = S3Connection::resolve(config).await?;
        let sdk_http = connection.sdk_http_client()?;
        let credentials =
            AwsChainCredentials::from_default_chain(config, &connection.region.value, sdk_http.clone()).await;
        let display = format!("{}, bucket '{bucket}'", connection.endpoint_display());
        let provider = credentials.provider.clone();
        let store = s3_builder(config, &connection, bucket)
            .with_credentials(Arc::new(credentials))
            .build()
            .map_err(|e| Error::Config(format!("{display}: {e}")))?;
        Ok(s3_store(config, &connection, sdk_http, bucket, prefix, store, provider, display))
    }

    /// Like [`connect`](Self::connect) for S3 with explicit credentials instead of the chain
    /// (and no region from the AWS profile: `remote.region`, `AWS_REGION`, or the fallback).
    pub fn connect_s3_with_keys(config: &RemoteConfig, key_id: &str, secret: &str) -> Result<RemoteStore> {
        let rest = config.url.strip_prefix("s3://").ok_or_else(|| Error::Config("expected an s3:// url".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        config.validate()?;
        let connection = S3Connection::resolve_without_profile(config, &process_env)?;
        let sdk_http = connection.sdk_http_client()?;
        let display = format!("{}, bucket '{bucket}'", connection.endpoint_display());
        let store = s3_builder(config, &connection, bucket)
            .with_access_key_id(key_id)
            .with_secret_access_key(secret)
            .build()
            .map_err(|e| Error::Config(format!("{display}: {e}")))?;
        let provider = SharedCredentialsProvider::new(aws_credential_types::Credentials::new(
            key_id, secret, None, None, "tierlog",
        ));
        Ok(s3_store(config, &connection, sdk_http, bucket, prefix, store, provider, display))
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
        let mut action = action.into();
        let hint = match tls_failure(&source) {
            Some((problem, hint)) => {
                action = format!("{action} (TLS: {problem})");
                hint
            }
            None => hint(&source),
        };
        Error::Store { store: self.display.clone(), action, hint, source: Box::new(source) }
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
#[allow(clippy::too_many_arguments)]
fn s3_store(
    config: &RemoteConfig,
    connection: &S3Connection,
    sdk_http: Option<aws_sdk_s3::config::SharedHttpClient>,
    bucket: &str,
    prefix: &str,
    store: object_store::aws::AmazonS3,
    provider: SharedCredentialsProvider,
    display: String,
) -> RemoteStore {
    let client = crate::lock::SdkClient { connection, http: sdk_http, credentials: provider };
    let lock = Arc::new(S3Lock::new(config, client, bucket, &display));
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

fn s3_builder(config: &RemoteConfig, connection: &S3Connection, bucket: &str) -> AmazonS3Builder {
    let mut client = ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_allow_http(config.allow_http);
    for certificate in connection.ca.iter().flat_map(|ca| ca.certificates.iter()) {
        client = client.with_root_certificate(certificate.clone());
    }
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&connection.region.value)
        .with_allow_http(config.allow_http)
        .with_virtual_hosted_style_request(config.virtual_hosted_style)
        .with_retry(RetryConfig { max_retries: CLIENT_RETRIES, retry_timeout: RETRY_TIMEOUT, ..RetryConfig::default() })
        .with_client_options(client);
    if let Some(endpoint) = &connection.endpoint {
        builder = builder.with_endpoint(&endpoint.value);
    }
    // object_store sends these headers on every PUT and multipart upload it makes.
    let encryption = [("aws_server_side_encryption", &config.sse), ("aws_sse_kms_key_id", &config.sse_kms_key_id)];
    for (key, value) in encryption.into_iter().filter(|(_, v)| !v.is_empty()) {
        let key: AmazonS3ConfigKey = key.parse().expect("object_store's own configuration key");
        builder = builder.with_config(key, value);
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
    /// The chain's credentials for `region` (STS and SSO are regional); `http`: the client
    /// trusting a custom CA bundle, so credential endpoints behind the same private CA work.
    pub async fn from_default_chain(
        config: &RemoteConfig,
        region: &str,
        http: Option<aws_sdk_s3::config::SharedHttpClient>,
    ) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()));
        if !config.profile.is_empty() {
            loader = loader.profile_name(&config.profile);
        }
        if let Some(http) = http {
            loader = loader.http_client(http);
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
            source: Box::new(NoCredentials(e.to_string())),
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

const HINT_BUCKET: &str = "The bucket does not exist: create it, or fix the bucket in remote.url";
const HINT_CREDENTIALS: &str = "The credentials were refused: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile, and the bucket policy";
const HINT_REGION: &str =
    "The server wants another addressing style or region: check remote.region and remote.virtual_hosted_style";
const HINT_UNREACHABLE: &str = "The endpoint is unreachable: check remote.endpoint, that the server is running, and remote.allow_http for http:// endpoints";
const HINT_NO_CREDENTIALS: &str =
    "No credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or remote.profile";
const HINT_OTHER: &str = "Check remote.url, remote.endpoint and the server's logs";
const HINT_CERTIFICATE: &str = "The endpoint's TLS certificate is not trusted: give the CA that signed it as a PEM file in remote.ca_file (TIERLOG_REMOTE_CA_FILE) or AWS_CA_BUNDLE, and check that the certificate names the endpoint's host";
const HINT_HANDSHAKE: &str = "The TLS handshake with the endpoint failed: check that it speaks HTTPS (use http:// with remote.allow_http for a plain-HTTP test server)";

/// What to check, by the error's kind: object_store's variants for answered requests, the
/// HTTP client's error kind for requests that got no answer, and S3's error code (the
/// `<Code>` of the response body, S3's documented machine-readable reason) for answers
/// object_store reports only as `Generic` (LIST, multipart).
fn hint(source: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match source {
        E::NotFound { .. } => HINT_BUCKET,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => HINT_CREDENTIALS,
        E::Generic { source, .. } => generic_hint(source.as_ref()),
        _ => HINT_OTHER,
    }
}

fn generic_hint(source: &(dyn std::error::Error + 'static)) -> &'static str {
    if chain(source).any(|e| e.is::<NoCredentials>()) {
        return HINT_NO_CREDENTIALS;
    }
    let http = chain(source).find_map(|e| e.downcast_ref::<object_store::client::HttpError>());
    if let Some(http) = http {
        use object_store::client::HttpErrorKind as K;
        if matches!(http.kind(), K::Connect | K::Timeout) {
            return HINT_UNREACHABLE;
        }
    }
    let text = source.to_string();
    match s3_error_code(&text) {
        Some("NoSuchBucket") => HINT_BUCKET,
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "InvalidToken" | "ExpiredToken") => {
            HINT_CREDENTIALS
        }
        Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException") => {
            HINT_REGION
        }
        // A redirect without a body (HEAD) or without a Location header: object_store says
        // only the status.
        _ if has_status(&text, "301") || text.contains("incorrectly configured region") => HINT_REGION,
        _ if has_status(&text, "403") => HINT_CREDENTIALS,
        _ => HINT_OTHER,
    }
}

/// A TLS failure anywhere in the chain: what the TLS library said, and the hint. Looks into
/// `std::io::Error` payloads too: the TLS stream reports through one, which the connector
/// wraps in another (and `io::Error::source` skips the payload itself).
fn tls_failure(source: &object_store::Error) -> Option<(String, &'static str)> {
    let rustls_error = chain(source).find_map(rustls_error)?;
    let hint = match rustls_error {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => HINT_CERTIFICATE,
        _ => HINT_HANDSHAKE,
    };
    Some((rustls_error.to_string(), hint))
}

/// `error` itself, or the payload of (nested) `io::Error`s, as a rustls error.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = error;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = current.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}

/// `error` and its sources.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The S3 error code of an error response body quoted in `text` (`<Code>NoSuchBucket</Code>`).
fn s3_error_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

/// The credential chain found no credentials (the source of object_store's `Generic` error).
#[derive(Debug)]
struct NoCredentials(String);

impl std::fmt::Display for NoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no usable AWS credentials from the default chain (env, profile, SSO, web identity, IMDS): {}",
            self.0
        )
    }
}

impl std::error::Error for NoCredentials {}

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
    /// check the addressing style (the "301" in the duration). The kind of the HTTP error
    /// decides now, not digits in its text.
    #[test]
    fn a_refused_connection_is_unreachable_whatever_its_duration_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::local_dir(dir.path()).unwrap();
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "in 333.330131ms: Connection refused");
        let http = object_store::client::HttpError::new(object_store::client::HttpErrorKind::Connect, refused);
        let err = store.error("LIST x", object_store::Error::Generic { store: "S3", source: Box::new(http) });
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    /// The shape reqwest's connector gives a certificate failure: the TLS error inside an
    /// `io::Error` inside another.
    #[test]
    fn a_certificate_failure_inside_nested_io_errors_gets_the_ca_hint() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::local_dir(dir.path()).unwrap();
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let http = object_store::client::HttpError::new(object_store::client::HttpErrorKind::Connect, io);
        let err = store.error("LIST x", object_store::Error::Generic { store: "S3", source: Box::new(http) });
        let text = err.to_string();
        assert!(text.contains("UnknownIssuer") && text.contains("AWS_CA_BUNDLE"), "{text}");
        assert!(!text.contains("unreachable"), "{text}");
    }

    #[test]
    fn answered_requests_are_told_apart_by_variant_and_s3_error_code() {
        let path = || "b/k".to_string();
        let status = |text: &str| -> Box<dyn std::error::Error + Send + Sync> { text.to_string().into() };
        let not_found = object_store::Error::NotFound { path: path(), source: status("404") };
        assert_eq!(hint(&not_found), HINT_BUCKET);
        let denied = object_store::Error::PermissionDenied { path: path(), source: status("403") };
        assert_eq!(hint(&denied), HINT_CREDENTIALS);
        let unauthenticated = object_store::Error::Unauthenticated { path: path(), source: status("401") };
        assert_eq!(hint(&unauthenticated), HINT_CREDENTIALS);
        let list = |body: &str| object_store::Error::Generic {
            store: "S3",
            source: status(&format!("Error performing list request: Server returned non-2xx status code: {body}")),
        };
        let code = |c: &str| list(&format!("404 Not Found: <Error><Code>{c}</Code></Error>"));
        assert_eq!(hint(&code("NoSuchBucket")), HINT_BUCKET);
        assert_eq!(hint(&code("SignatureDoesNotMatch")), HINT_CREDENTIALS);
        assert_eq!(hint(&code("PermanentRedirect")), HINT_REGION);
        assert_eq!(hint(&code("SlowDown")), HINT_OTHER);
        let no_credentials =
            object_store::Error::Generic { store: "S3", source: Box::new(NoCredentials("none in env".into())) };
        assert_eq!(hint(&no_credentials), HINT_NO_CREDENTIALS);
    }

    #[test]
    fn an_endpoint_from_the_environment_is_named_with_its_variable() {
        let config = RemoteConfig { url: "s3://b/p".into(), allow_http: true, ..RemoteConfig::default() };
        let env = |name: &str| (name == "AWS_ENDPOINT_URL").then(|| "http://10.0.0.9:9000".to_string());
        let connection = S3Connection::resolve_without_profile(&config, &env).unwrap();
        assert_eq!(connection.endpoint_display(), "http://10.0.0.9:9000 (from env AWS_ENDPOINT_URL)");
        let config = RemoteConfig { endpoint: "http://127.0.0.1:9000".into(), ..config };
        let connection = S3Connection::resolve_without_profile(&config, &env).unwrap();
        assert_eq!(connection.endpoint_display(), "http://127.0.0.1:9000");
    }

    #[test]
    fn aws_endpoints_are_told_from_others() {
        assert!(is_aws_endpoint("https://bucket.vpce-1a2b.s3.eu-west-1.vpce.amazonaws.com"));
        assert!(is_aws_endpoint("https://s3-fips.us-east-2.amazonaws.com:443/"));
        assert!(is_aws_endpoint("https://s3.cn-north-1.amazonaws.com.cn"));
        assert!(!is_aws_endpoint("http://127.0.0.1:9000"));
        assert!(!is_aws_endpoint("https://minio.amazonaws.com.example.org"));
        assert!(!is_aws_endpoint("http://s3.amazonaws.com@10.0.0.9:9000"));
    }
}
