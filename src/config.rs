//! Configuration: TOML file, then `TIERLOG_<SECTION>_<KEY>` environment overrides, then CLI
//! flags (applied by the CLI). Unknown keys and out-of-range values are rejected with the key,
//! the value and what is allowed. Owns parsing and validation only; each module reads its own
//! section.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "TIERLOG_";
/// Variables read by the CLI itself, not configuration keys (the encryption keys are read
/// where the keyring is built, so they never appear in `config explain`).
const CLI_ENV: [&str; 4] = ["TIERLOG_CONFIG", "TIERLOG_SERVER", "TIERLOG_TOKEN", tierlog_tiering::encryption::KEYS_ENV];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding topics, segments and the writer lock.
    pub data_dir: PathBuf,
    pub log: LogSection,
    pub segment: SegmentSection,
    pub durability: DurabilitySection,
    pub remote: RemoteSection,
    pub tiering: TieringSection,
    pub reader: ReaderSection,
    pub server: ServerSection,
    pub kafka: KafkaSection,
    pub integrity: IntegritySection,
    pub replica: ReplicaSection,
    pub encryption: EncryptionSection,
}

/// Client-side encryption of segment objects (AES-256-GCM per chunk; README, docs/FORMAT.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionSection {
    /// Keyring file (TOML: `current = "<id>"`, `[[keys]]` of `id` and base64 `key`): new
    /// segments are sealed with the current key; every key listed is used to read. Empty: no
    /// keyring, unless `TIERLOG_ENCRYPTION_KEYS` holds the keys (`id:base64,…`, first current).
    pub key_file: String,
}

/// Read-only replicas (`tierlog serve --replica`): serving the bucket without local segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSection {
    /// How often a replica looks for new manifest versions and topics in the bucket: new
    /// data becomes visible within this (once the writer has tiered it). Each look costs
    /// about two HEAD requests per partition.
    pub refresh_ms: u64,
}

impl Default for ReplicaSection {
    fn default() -> Self {
        ReplicaSection { refresh_ms: 5_000 }
    }
}

/// Proving the archive (docs/AUDIT.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegritySection {
    /// Ed25519 private key (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`) that signs every
    /// manifest version this writer commits; its public key is published in the bucket under
    /// `keys/`. Empty: versions are unsigned (still hash-chained).
    pub signing_key_file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Largest encoded record (key + value + headers) accepted by an append.
    pub max_record_bytes: u64,
    /// Partitions of a topic created without an explicit count.
    pub default_partitions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentSection {
    /// Roll the active segment when the next batch would take it past this size.
    pub max_bytes: u64,
    /// Roll the active segment once it is older than this, so time-based retention and
    /// tiering can act on quiet partitions.
    pub max_age_ms: u64,
    /// Bytes between sparse index entries: the most a lookup scans past its index entry.
    pub index_interval_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before acknowledging every append: nothing acknowledged is lost on power failure.
    Batch,
    /// fsync every `interval_ms` in the background: a power failure may lose that window,
    /// a process crash loses nothing (the data is in the page cache).
    Interval,
    /// Leave flushing to the OS.
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySection {
    pub fsync: FsyncPolicy,
    /// Background fsync period under `fsync = "interval"`.
    pub interval_ms: u64,
}

/// The `[remote]` section is the tiering crate's own connection settings.
pub use tierlog_tiering::store::RemoteConfig as RemoteSection;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TieringSection {
    /// Upload sealed segments to the remote tier. Off: a purely local log.
    pub enabled: bool,
    /// Raw bytes per compressed chunk of a segment object (batch-aligned): one ranged GET
    /// serves one chunk, so this bounds the bytes a cold seek fetches.
    pub chunk_bytes: u64,
    /// zstd level of segment objects (1 is fastest; 3 is zstd's default).
    pub zstd_level: i64,
    /// Segment uploads in flight at once, across all partitions.
    pub upload_concurrency: u64,
    /// Attempts per object PUT before the upload is reported failed and retried next run.
    pub upload_attempts: u64,
    /// Objects above this size are uploaded in multipart parts.
    pub multipart_threshold_bytes: u64,
    /// Keep at most this many bytes of *tiered* sealed segments locally per partition.
    pub local_retention_bytes: u64,
    /// Keep tiered sealed segments locally for at least this long.
    pub local_retention_ms: u64,
    /// Expire a segment from the remote tier (and so from the log) once its newest record is
    /// older than this; -1 keeps every segment forever (the default). A legal hold overrides
    /// it. Kafka's `retention.ms`. Never below `local_retention_ms`.
    pub remote_retention_ms: i64,
    /// Expire the oldest remote segments of a partition while its remote tier holds more
    /// than this many raw bytes; -1: no byte limit (the default). Kafka's `retention.bytes`.
    pub remote_retention_bytes: i64,
    /// Time between committing a manifest version without expired segments and deleting
    /// their objects: readers holding the older version can still finish reading them.
    pub expiry_grace_ms: u64,
    /// S3 Object Lock of every segment object, archive and manifest version: "off" (the
    /// default), "governance" or "compliance" (WORM: nobody can delete or shorten it, see
    /// docs/ARCHITECTURE.md). Needs an S3 bucket created with Object Lock enabled; tierlog
    /// refuses to start otherwise. Topics override it with `object.lock.mode`.
    pub object_lock_mode: String,
    /// Days each object stays locked from its write (S3 retain-until = write time + this, or
    /// + the topic's `retention.ms` when longer). Required (≥ 1) when a lock mode is set.
    pub object_lock_retain_days: u64,
    /// How often the background tiering task looks for sealed segments.
    pub interval_ms: u64,
    /// Longest time from the start of a segment object's PUT to the start of the manifest
    /// PUT that commits it. A segment that misses it is not committed (its object becomes an
    /// orphan) and is uploaded again on the next run. Scrub relies on it: an unreferenced
    /// object is deleted only once older than `commit_window_ms + orphan_grace_ms` by the
    /// store's clock, when no commit can still reference it. Every writer and scrub sharing
    /// a bucket prefix must use the same value.
    pub commit_window_ms: u64,
    /// Extra age, beyond `commit_window_ms`, before a scrub removes an uploaded-but-never-
    /// committed object: covers a manifest PUT started inside the window and still in flight.
    pub orphan_grace_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReaderSection {
    /// Decompressed remote chunks kept in memory, shared by every reader of the process.
    pub cache_bytes: u64,
    /// Compressed bytes fetched ahead of a sequential remote replay (across segments).
    pub prefetch_bytes: u64,
    /// Remote GETs in flight at once, separate from uploads, so cold replays cannot starve
    /// tiering (or appends, which never wait on the remote tier).
    pub concurrency: u64,
    /// A remote GET that has not answered after this long fails (and may be retried by the
    /// caller); independent of how long a client is willing to wait.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address `tierlog serve` listens on.
    pub listen: String,
    /// Without authentication, listening beyond loopback exposes every topic: refused
    /// unless this is set.
    pub allow_non_loopback: bool,
    /// Largest request body; larger requests get 413.
    pub max_body_bytes: u64,
    /// Most records one produce request may carry; more gets 413.
    pub max_records_per_request: u64,
    /// Body bytes of all produce requests being processed at once (each takes its
    /// Content-Length, or `max_body_bytes` without one): a request that cannot get its share
    /// within `request_timeout_ms` gets 503, so many large requests cannot exhaust memory.
    pub max_produce_bytes_in_flight: u64,
    /// Most concurrent `follow=true` streams; more get 429.
    pub max_follow_streams: u64,
    /// Most concurrent follow streams one token may hold (with tokens configured), so one
    /// client cannot take every follow slot; more get 429.
    pub max_follow_streams_per_token: u64,
    /// A request whose body has not arrived completely after this long is cut off
    /// (slow-body clients), and a connection whose client has taken no bytes of a response
    /// for this long is dropped (a client that stopped reading, or an HTTP/2 client that
    /// grants no flow-control window).
    pub request_timeout_ms: u64,
    /// A connection that has not sent a request's complete headers this long after it
    /// opened (or after its previous request) is closed: slow or idle clients do not hold
    /// connections forever. The same holds before the first byte (a socket that sends nothing,
    /// or only part of the HTTP/2 preface) and for an HTTP/2 connection with no request open.
    pub header_read_timeout_ms: u64,
    /// Most open HTTP connections; further ones wait in the accept queue until one closes.
    pub max_connections: u64,
    /// Most requests open at once on one HTTP/2 connection (advertised to the client), so one
    /// connection cannot park an unbounded number of produce requests or follow streams.
    pub http2_max_concurrent_streams: u64,
    /// Dead peers: TCP keepalive probes start after this long without traffic on a
    /// connection (one every this long, three unanswered close it), and an HTTP/2 connection
    /// is pinged this often and closed when a ping is not answered within this long.
    pub keepalive_ms: u64,
    /// An idle follow stream sends a keep-alive this often: a comment line under
    /// Server-Sent Events, an empty line under NDJSON. Proxies and load balancers then do
    /// not cut it, and a write to a client that went away fails and frees its follow slot.
    pub sse_keepalive_ms: u64,
    /// Refuse appends (429) while a partition holds more than this many bytes not yet in the
    /// remote tier, so a stalled object store cannot fill the local disk. 0: no limit.
    pub max_untiered_bytes: u64,
    /// The local audit log of reads (`<data_dir>/audit.log`, with tokens) is renamed
    /// `audit.log.1` and a new one started when it would grow past this size.
    pub audit_log_max_bytes: u64,
    /// Rotated audit logs kept (`audit.log.1` … `audit.log.<keep>`); older ones are deleted.
    pub audit_log_keep: u64,
    /// Bearer tokens. Empty: no authentication (loopback only, see `allow_non_loopback`).
    pub tokens: Vec<TokenConfig>,
    /// `/metrics` only for a token with the metrics (or admin) right (401/403 otherwise);
    /// needs `tokens`. Off: anyone may scrape, and only such a token sees consumer groups.
    pub metrics_requires_token: bool,
}

/// The Kafka wire-protocol listener of `tierlog serve` (docs/KAFKA.md). Off unless `listen`
/// is set. With `server.tokens` configured, clients must authenticate with SASL/PLAIN
/// (username = token name, password = token) and get the tokens' rights; without tokens it
/// refuses to be reachable beyond this machine unless explicitly allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Address of the Kafka listener, e.g. "127.0.0.1:9092". Empty: no Kafka listener.
    pub listen: String,
    /// Host that Metadata and FindCoordinator tell clients to connect to. Empty: the
    /// listen address's host.
    pub advertised_host: String,
    /// Port that Metadata and FindCoordinator tell clients to connect to. 0: the port the
    /// listener is bound to.
    pub advertised_port: u64,
    /// Without tokens (so without authentication), a non-loopback Kafka listener exposes every
    /// topic to anyone who can reach it: refused unless this is set (as
    /// `server.allow_non_loopback`).
    pub allow_non_loopback: bool,
    /// Largest request frame a client may send; a larger one closes the connection. Kafka's
    /// clients send produce requests of about `batch.size` × partitions (1 MiB by default).
    pub max_request_bytes: u64,
    /// Most open Kafka connections; more wait in the accept queue.
    pub max_connections: u64,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            listen: String::new(),
            advertised_host: String::new(),
            advertised_port: 0,
            allow_non_loopback: false,
            max_request_bytes: 16 * 1024 * 1024,
            max_connections: 1024,
        }
    }
}

impl KafkaSection {
    /// The listen address, `None` when the listener is off. Checks what [`Config::validate`]
    /// checks about it, so a CLI override can be checked the same way.
    pub fn listen_addr(&self, server: &ServerSection) -> Result<Option<std::net::SocketAddr>> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        let addr: std::net::SocketAddr = self.listen.parse().map_err(|_| {
            Error::Config(format!("kafka.listen = {:?} is not an address such as 127.0.0.1:9092", self.listen))
        })?;
        if !addr.ip().is_loopback() && !self.allow_non_loopback && server.tokens.is_empty() {
            return Err(Error::Config(format!(
                "kafka.listen = {addr}: refusing a non-loopback address without authentication. Configure server.tokens (clients then authenticate with SASL/PLAIN), use a loopback address, or set kafka.allow_non_loopback = true (TIERLOG_KAFKA_ALLOW_NON_LOOPBACK=true) behind your own access control"
            )));
        }
        if self.advertised_host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Config(format!(
                "kafka.advertised_host = {:?}: expected a host name or address",
                self.advertised_host
            )));
        }
        Ok(Some(addr))
    }
}

/// One bearer token and its rights. Only the token's SHA-256 is configured, so the file
/// holds no secret: `printf %s "$TOKEN" | sha256sum`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who this token is, for the audit log.
    pub name: String,
    pub token_sha256: String,
    /// Topic patterns (`*` matches any run of characters) this token may read.
    #[serde(default)]
    pub read: Vec<String>,
    /// Topic patterns this token may write.
    #[serde(default)]
    pub write: Vec<String>,
    /// May create topics.
    #[serde(default)]
    pub admin: bool,
    /// Consumer-group patterns whose offsets this token may commit (it also needs read on
    /// the topic). None by default: reading a topic does not let a token move other
    /// consumers' positions.
    #[serde(default)]
    pub groups: Vec<String>,
    /// May read the consumer-group series of `/metrics` (group names and positions); without
    /// such a token (or an admin one) they are left out when tokens are configured.
    #[serde(default)]
    pub metrics: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7070".into(),
            allow_non_loopback: false,
            max_body_bytes: 16 * 1024 * 1024,
            max_records_per_request: 50_000,
            max_produce_bytes_in_flight: 256 * 1024 * 1024,
            max_follow_streams: 256,
            max_follow_streams_per_token: 64,
            metrics_requires_token: false,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            max_connections: 1024,
            http2_max_concurrent_streams: 32,
            keepalive_ms: 30_000,
            sse_keepalive_ms: 15_000,
            max_untiered_bytes: 0,
            audit_log_max_bytes: 64 * 1024 * 1024,
            audit_log_keep: 10,
            tokens: Vec::new(),
        }
    }
}

impl Default for ReaderSection {
    fn default() -> Self {
        ReaderSection {
            cache_bytes: 256 * 1024 * 1024,
            prefetch_bytes: 32 * 1024 * 1024,
            concurrency: 8,
            timeout_ms: 30_000,
        }
    }
}

impl Default for TieringSection {
    fn default() -> Self {
        TieringSection {
            enabled: true,
            chunk_bytes: 4 * 1024 * 1024,
            zstd_level: 3,
            upload_concurrency: 4,
            upload_attempts: 5,
            multipart_threshold_bytes: 32 * 1024 * 1024,
            local_retention_bytes: 1024 * 1024 * 1024,
            local_retention_ms: 24 * 3600 * 1000,
            remote_retention_ms: -1,
            remote_retention_bytes: -1,
            expiry_grace_ms: 3600 * 1000,
            object_lock_mode: "off".into(),
            object_lock_retain_days: 0,
            interval_ms: 10_000,
            commit_window_ms: 600_000,
            orphan_grace_ms: 3600 * 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("tierlog-data"),
            log: LogSection::default(),
            segment: SegmentSection::default(),
            durability: DurabilitySection::default(),
            remote: RemoteSection::default(),
            tiering: TieringSection::default(),
            reader: ReaderSection::default(),
            server: ServerSection::default(),
            kafka: KafkaSection::default(),
            integrity: IntegritySection::default(),
            replica: ReplicaSection::default(),
            encryption: EncryptionSection::default(),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { max_record_bytes: 1024 * 1024, default_partitions: 1 }
    }
}

impl Default for SegmentSection {
    fn default() -> Self {
        SegmentSection { max_bytes: 128 * 1024 * 1024, max_age_ms: 7 * 24 * 3600 * 1000, index_interval_bytes: 4096 }
    }
}

impl Default for DurabilitySection {
    fn default() -> Self {
        DurabilitySection { fsync: FsyncPolicy::Batch, interval_ms: 1000 }
    }
}

/// Longest remote retention by time: a century.
pub const REMOTE_RETENTION_MS_MAX: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Checks remote retention values: -1 (keep forever) or a positive limit, and a time limit no
/// shorter than local retention (a segment still on local disk is never expired, so a shorter
/// remote retention would silently mean the local one). `prefix` names the keys in errors.
/// A lock mode is off, governance or compliance, and a set mode needs a retention period of
/// at least a day (S3 needs a retain-until date). `names`: the mode's and the days' names as
/// the user set them.
pub fn check_object_lock(
    mode: &str,
    retain_days: u64,
    names: [&str; 2],
) -> Result<Option<tierlog_tiering::lock::Mode>> {
    let Some(parsed) = tierlog_tiering::lock::Mode::parse(mode) else {
        return Err(Error::Config(format!(
            "{} = {mode:?}: expected \"off\", \"governance\" or \"compliance\"",
            names[0]
        )));
    };
    if parsed.is_some() && retain_days == 0 {
        return Err(Error::Config(format!(
            "{} = {mode:?} needs {} of at least 1 (how long S3 keeps each object locked)",
            names[0], names[1]
        )));
    }
    Ok(parsed)
}

pub fn check_remote_retention(ms: i64, bytes: i64, local_ms: u64, prefix: &str) -> Result<()> {
    let names = [
        format!("{prefix}remote_retention_ms"),
        format!("{prefix}remote_retention_bytes"),
        format!("{prefix}local_retention_ms"),
    ];
    check_remote_retention_as(ms, bytes, local_ms, [&names[0], &names[1], &names[2]])
}

/// [`check_remote_retention`] with the three keys (remote ms, remote bytes, local ms) named as
/// the caller's user knows them, e.g. a topic's Kafka names `retention.ms`, `retention.bytes`,
/// `local.retention.ms`.
pub fn check_remote_retention_as(
    ms: i64,
    bytes: i64,
    local_ms: u64,
    [ms_key, bytes_key, local_key]: [&str; 3],
) -> Result<()> {
    if ms != -1 && !(1..=REMOTE_RETENTION_MS_MAX).contains(&ms) {
        return Err(Error::Config(format!(
            "{ms_key} = {ms} is out of range: -1 (keep forever) or 1..={REMOTE_RETENTION_MS_MAX}"
        )));
    }
    if bytes != -1 && bytes < 1 {
        return Err(Error::Config(format!("{bytes_key} = {bytes} is out of range: -1 (no limit) or at least 1")));
    }
    if ms != -1 && (ms as u64) < local_ms {
        return Err(Error::Config(format!(
            "{ms_key} = {ms} is shorter than {local_key} = {local_ms}: the log keeps a segment at least as long as \
             its local copy; lower {local_key} too"
        )));
    }
    Ok(())
}

/// The allowed range of the numeric configuration key `section.key`, as [`Config::validate`]
/// checks it (per-topic settings that override a key are held to the same range).
pub fn range(key: &str) -> Option<(u64, u64)> {
    RANGES.iter().find(|(k, ..)| *k == key).map(|(_, min, max)| (*min, *max))
}

/// Allowed range of every numeric key, checked after all overrides are applied.
const RANGES: &[(&str, u64, u64)] = &[
    // A record must fit in one batch (64 MiB cap in `batch`).
    ("log.max_record_bytes", 1, 32 * 1024 * 1024),
    ("log.default_partitions", 1, 10_000),
    // Segment positions are u32 in the index; 2 GiB keeps every position representable.
    ("segment.max_bytes", 4096, 2 * 1024 * 1024 * 1024),
    ("segment.max_age_ms", 1000, 365 * 24 * 3600 * 1000),
    ("segment.index_interval_bytes", 1, 16 * 1024 * 1024),
    ("durability.interval_ms", 1, 3_600_000),
    // Chunks must hold at least one batch comfortably and stay cheap to fetch on a seek.
    ("tiering.chunk_bytes", 64 * 1024, 64 * 1024 * 1024),
    ("tiering.zstd_level", 1, 19),
    ("tiering.upload_concurrency", 1, 64),
    ("tiering.upload_attempts", 1, 20),
    // S3 parts are at least 5 MiB (except the last).
    ("tiering.multipart_threshold_bytes", 5 * 1024 * 1024, 5 * 1024 * 1024 * 1024),
    ("tiering.local_retention_bytes", 0, u64::MAX >> 2),
    ("tiering.local_retention_ms", 0, 100 * 365 * 24 * 3600 * 1000),
    ("tiering.expiry_grace_ms", 0, 30 * 24 * 3600 * 1000),
    ("tiering.object_lock_retain_days", 0, 36_500),
    ("tiering.interval_ms", 100, 3_600_000),
    // A commit needs at least a round trip after its upload; beyond a week, orphans of failed
    // runs would wait for scrub longer than anyone would expect.
    ("tiering.commit_window_ms", 1000, 7 * 24 * 3600 * 1000),
    ("tiering.orphan_grace_ms", 0, 365 * 24 * 3600 * 1000),
    // At least one 4 MiB chunk must fit, or every remote read would miss the cache.
    ("reader.cache_bytes", 8 * 1024 * 1024, 1 << 40),
    ("reader.prefetch_bytes", 0, 1 << 34),
    ("reader.concurrency", 1, 256),
    ("reader.timeout_ms", 100, 3_600_000),
    ("replica.refresh_ms", 100, 86_400_000),
    ("server.max_body_bytes", 1024, 1 << 30),
    ("server.max_records_per_request", 1, 10_000_000),
    ("server.max_produce_bytes_in_flight", 65_536, 1 << 40),
    ("server.max_follow_streams", 1, 100_000),
    ("server.max_follow_streams_per_token", 1, 100_000),
    ("server.request_timeout_ms", 100, 3_600_000),
    ("server.header_read_timeout_ms", 100, 3_600_000),
    ("server.max_connections", 1, 100_000),
    // One stream is one request: hyper's default of 200 per connection times
    // max_connections would let a few clients park far more requests than the limits assume.
    ("server.http2_max_concurrent_streams", 1, 1_000),
    ("server.keepalive_ms", 100, 3_600_000),
    ("server.sse_keepalive_ms", 100, 3_600_000),
    ("server.max_untiered_bytes", 0, u64::MAX >> 2),
    // A line is a few hundred bytes: smaller files would rotate on every few reads.
    ("server.audit_log_max_bytes", 4096, 1 << 40),
    ("server.audit_log_keep", 1, 1000),
    ("kafka.advertised_port", 0, 65_535),
    // A frame must hold at least a request header and a small produce; beyond 1 GiB one
    // client could hold a gigabyte of memory per connection.
    ("kafka.max_request_bytes", 1024, 1 << 30),
    ("kafka.max_connections", 1, 100_000),
];

impl Config {
    /// Loads `path` (or the defaults when `None`), then applies environment overrides taken
    /// from `env` (pass `std::env::vars()`), then validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read config file", e))?;
                text.parse::<toml::Table>().map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let config: Config = table.try_into().map_err(|e: toml::de::Error| {
            let source = path.map_or("environment".to_string(), |p| p.display().to_string());
            Error::Config(format!("{source}: {}", e.message()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every setting of the configuration `load` gives for `path` and `env`, as
    /// `(key, value, source)` with source "file", "env TIERLOG_…" or "default"; token hashes
    /// are shown by name only.
    pub fn explain(path: Option<&Path>, env: Vec<(String, String)>) -> Result<Vec<(String, toml::Value, String)>> {
        let config = Config::load(path, env.clone())?;
        let file = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, "read config file", e))?
                .parse::<toml::Table>()
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
            None => toml::Table::new(),
        };
        let mut from_env = toml::Table::new();
        apply_env(&mut from_env, env.clone())?;
        let env_var = |key: &str| {
            let name = format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase());
            env.iter().any(|(k, _)| *k == name).then_some(name)
        };
        let table = toml::Table::try_from(&config).map_err(|e| Error::Config(e.to_string()))?;
        let mut out = Vec::new();
        for (name, value) in &table {
            let leaves: Vec<(String, &toml::Value)> = match value {
                toml::Value::Table(section) => section.iter().map(|(k, v)| (format!("{name}.{k}"), v)).collect(),
                other => vec![(name.clone(), other)],
            };
            for (key, value) in leaves {
                let lookup = |t: &toml::Table| match key.split_once('.') {
                    Some((section, k)) => t.get(section).and_then(|s| s.get(k)).is_some(),
                    None => t.get(&key).is_some(),
                };
                let source = match env_var(&key) {
                    Some(var) if lookup(&from_env) => format!("env {var}"),
                    _ if lookup(&file) => "file".to_string(),
                    _ => "default".to_string(),
                };
                let value = if key == "server.tokens" {
                    let names = config.server.tokens.iter().map(|t| toml::Value::String(t.name.clone())).collect();
                    toml::Value::Array(names)
                } else {
                    value.clone()
                };
                out.push((key, value, source));
            }
        }
        Ok(out)
    }

    pub fn validate(&self) -> Result<()> {
        let table = toml::Table::try_from(self).map_err(|e| Error::Config(e.to_string()))?;
        for (key, min, max) in RANGES {
            let (section, name) = key.split_once('.').expect("ranges are section.key");
            let value = table.get(section).and_then(|s| s.get(name)).and_then(|v| v.as_integer());
            match value {
                Some(v) if (*min as i64..=*max as i64).contains(&v) => {}
                Some(v) => return Err(Error::Config(format!("{key} = {v} is out of range: allowed {min}..={max}"))),
                None => unreachable!("range table names a key that is not in Config: {key}"),
            }
        }
        for (i, token) in self.server.tokens.iter().enumerate() {
            if token.name.is_empty() || self.server.tokens[..i].iter().any(|t| t.name == token.name) {
                return Err(Error::Config(format!(
                    "server.tokens '{}': every token needs a name of its own (the audit log and Kafka's SASL username name it)",
                    token.name
                )));
            }
            let hex = token.token_sha256.len() == 64 && token.token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(Error::Config(format!(
                    "server.tokens '{}': token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)",
                    token.name
                )));
            }
        }
        check_remote_retention(
            self.tiering.remote_retention_ms,
            self.tiering.remote_retention_bytes,
            self.tiering.local_retention_ms,
            "tiering.",
        )?;
        check_object_lock(
            &self.tiering.object_lock_mode,
            self.tiering.object_lock_retain_days,
            ["tiering.object_lock_mode", "tiering.object_lock_retain_days"],
        )?;
        self.kafka.listen_addr(&self.server)?;
        let url = &self.remote.url;
        if !(url.is_empty() || url.starts_with("file://") || url.starts_with("s3://")) {
            return Err(Error::Config(format!("remote.url = {url:?}: expected s3://bucket/prefix or file:///dir")));
        }
        if url.starts_with("s3://") && url.trim_start_matches("s3://").split('/').next().is_none_or(str::is_empty) {
            return Err(Error::Config(format!(
                "remote.url = {url:?}: the bucket name is missing (s3://bucket/prefix)"
            )));
        }
        self.remote.validate()?;
        if !self.remote.endpoint.is_empty()
            && !self.remote.endpoint.starts_with("http://")
            && !self.remote.endpoint.starts_with("https://")
        {
            return Err(Error::Config(format!(
                "remote.endpoint = {:?}: expected http://host:port or https://host",
                self.remote.endpoint
            )));
        }
        Ok(())
    }

    /// The remote retention in force: `(ms, bytes)`, `None` where a limit is off.
    pub fn remote_retention(&self) -> (Option<u64>, Option<u64>) {
        (u64::try_from(self.tiering.remote_retention_ms).ok(), u64::try_from(self.tiering.remote_retention_bytes).ok())
    }

    /// The remote URL with the embedded default resolved: a directory beside the data dir.
    pub fn remote_url(&self) -> String {
        if !self.remote.url.is_empty() {
            return self.remote.url.clone();
        }
        let name = self.data_dir.file_name().map_or("tierlog-data".into(), |n| n.to_string_lossy().into_owned());
        let parent = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        format!("file://{}", parent.join(format!("{name}-remote")).display())
    }
}

/// Applies `TIERLOG_<SECTION>_<KEY>` (or `TIERLOG_<KEY>` for top-level keys) onto `table`.
/// The value is typed like the key's default: integers and booleans are parsed, anything
/// else is a string. A variable inside a known section that names no key there
/// (`TIERLOG_SEGMENT_MAX_BYTE`) is an error, so typos do not go unseen; one that names no
/// section at all is warned about and ignored: Kubernetes injects `TIERLOG_PORT`,
/// `TIERLOG_SERVICE_HOST`, … into every pod of a service named `tierlog`.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && !CLI_ENV.contains(&k.as_str())).collect();
    vars.sort();
    for (var, raw) in vars {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let section = defaults
            .iter()
            .filter(|(_, v)| v.is_table())
            .map(|(k, _)| k.as_str())
            .find(|s| name.strip_prefix(s).is_some_and(|rest| rest.starts_with('_')));
        let (path, default) = match section {
            Some(section) => {
                let key = &name[section.len() + 1..];
                (vec![section.to_string(), key.to_string()], defaults[section].get(key))
            }
            None => (vec![name.clone()], defaults.get(&name).filter(|v| !v.is_table())),
        };
        let Some(default) = default else {
            if section.is_none() {
                warn_ignored_once(&var);
                continue;
            }
            return Err(Error::Config(format!("environment variable {var} names no configuration key")));
        };
        let value = typed_like(default, &raw)
            .ok_or_else(|| Error::Config(format!("{var} = {raw:?}: expected {}", default.type_str())))?;
        let mut target = &mut *table;
        for part in &path[..path.len() - 1] {
            let entry = target.entry(part.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            target =
                entry.as_table_mut().ok_or_else(|| Error::Config(format!("{part} must be a table to apply {var}")))?;
        }
        target.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

/// Warns that `var` is ignored, once per process: a command may load the configuration more
/// than once (and `config show` reads the environment twice), and one warning per variable is
/// enough.
fn warn_ignored_once(var: &str) {
    static WARNED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = WARNED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(var.to_string());
    if first {
        tracing::warn!(variable = %var, "ignoring an environment variable that names no configuration section or key");
    }
}

fn typed_like(default: &toml::Value, raw: &str) -> Option<toml::Value> {
    match default {
        toml::Value::Integer(_) => raw.trim().parse::<i64>().ok().map(toml::Value::Integer),
        toml::Value::Boolean(_) => raw.trim().parse::<bool>().ok().map(toml::Value::Boolean),
        _ => Some(toml::Value::String(raw.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_overrides_section_and_top_level_keys() {
        let config = Config::load(
            None,
            env(&[
                ("TIERLOG_DATA_DIR", "/tmp/x"),
                ("TIERLOG_SEGMENT_MAX_BYTES", "65536"),
                ("TIERLOG_DURABILITY_FSYNC", "never"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.segment.max_bytes, 65536);
        assert_eq!(config.durability.fsync, FsyncPolicy::Never);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_value_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[segment]\nmax_bytez = 10\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("max_bytez"), "{err}");

        std::fs::write(&path, "[segment]\nmax_bytes = 10\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("segment.max_bytes = 10") && err.contains("4096..="), "{err}");

        std::fs::write(&path, "[durability]\nfsync = \"sometimes\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("sometimes") || err.contains("unknown variant"), "{err}");

        let err = Config::load(None, env(&[("TIERLOG_SEGMENT_MAX_BYTES", "lots")])).unwrap_err().to_string();
        assert!(err.contains("TIERLOG_SEGMENT_MAX_BYTES") && err.contains("lots"), "{err}");
        let err = Config::load(None, env(&[("TIERLOG_SEGMENT_NOPE", "1")])).unwrap_err().to_string();
        assert!(err.contains("TIERLOG_SEGMENT_NOPE"), "{err}");
    }

    #[test]
    fn variables_kubernetes_injects_for_a_service_named_tierlog_are_ignored() {
        let injected = [
            ("TIERLOG_PORT", "tcp://10.0.0.7:7070"),
            ("TIERLOG_SERVICE_HOST", "10.0.0.7"),
            ("TIERLOG_SERVICE_PORT", "7070"),
            ("TIERLOG_PORT_7070_TCP_ADDR", "10.0.0.7"),
        ];
        let config = Config::load(None, env(&injected)).unwrap();
        assert_eq!(config.segment.max_bytes, Config::default().segment.max_bytes);
    }

    #[test]
    fn commit_window_has_a_default_an_env_override_and_a_range() {
        assert_eq!(Config::load(None, env(&[])).unwrap().tiering.commit_window_ms, 600_000);
        let config = Config::load(None, env(&[("TIERLOG_TIERING_COMMIT_WINDOW_MS", "120000")])).unwrap();
        assert_eq!(config.tiering.commit_window_ms, 120_000);
        let err = Config::load(None, env(&[("TIERLOG_TIERING_COMMIT_WINDOW_MS", "10")])).unwrap_err().to_string();
        assert!(err.contains("tiering.commit_window_ms = 10") && err.contains("1000..="), "{err}");
    }

    #[test]
    fn object_lock_is_off_by_default_and_a_mode_needs_a_known_name_and_days() {
        assert_eq!(Config::load(None, env(&[])).unwrap().tiering.object_lock_mode, "off");
        let err = Config::load(None, env(&[("TIERLOG_TIERING_OBJECT_LOCK_MODE", "worm")])).unwrap_err().to_string();
        assert!(err.contains("tiering.object_lock_mode") && err.contains("compliance"), "{err}");
        let err =
            Config::load(None, env(&[("TIERLOG_TIERING_OBJECT_LOCK_MODE", "compliance")])).unwrap_err().to_string();
        assert!(err.contains("tiering.object_lock_retain_days"), "{err}");
        let ok = Config::load(
            None,
            env(&[
                ("TIERLOG_TIERING_OBJECT_LOCK_MODE", "compliance"),
                ("TIERLOG_TIERING_OBJECT_LOCK_RETAIN_DAYS", "2555"),
            ]),
        )
        .unwrap();
        assert_eq!(ok.tiering.object_lock_retain_days, 2555);
    }

    #[test]
    fn remote_retention_is_off_by_default_and_never_shorter_than_local() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.remote_retention(), (None, None));
        let set = Config::load(
            None,
            env(&[
                ("TIERLOG_TIERING_REMOTE_RETENTION_MS", "172800000"),
                ("TIERLOG_TIERING_REMOTE_RETENTION_BYTES", "1000"),
            ]),
        )
        .unwrap();
        assert_eq!(set.remote_retention(), (Some(172_800_000), Some(1000)));
        let short = Config::load(None, env(&[("TIERLOG_TIERING_REMOTE_RETENTION_MS", "3600000")])).unwrap_err();
        assert!(short.to_string().contains("shorter than tiering.local_retention_ms"), "{short}");
        for bad in [("TIERLOG_TIERING_REMOTE_RETENTION_MS", "0"), ("TIERLOG_TIERING_REMOTE_RETENTION_BYTES", "-2")] {
            let e = Config::load(None, env(&[bad])).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{e}");
        }
    }

    #[test]
    fn the_encryption_keys_variable_is_no_configuration_key_and_never_shown() {
        let vars = env(&[
            ("TIERLOG_ENCRYPTION_KEY_FILE", "/etc/tierlog/keyring.toml"),
            ("TIERLOG_ENCRYPTION_KEYS", "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        ]);
        let config = Config::load(None, vars.clone()).unwrap();
        assert_eq!(config.encryption.key_file, "/etc/tierlog/keyring.toml");
        let shown = format!("{:?} {config:?}", Config::explain(None, vars).unwrap());
        assert!(!shown.contains("AAECAwQF"), "key material shown: {shown}");
        let err = Config::load(None, env(&[("TIERLOG_ENCRYPTION_KEYFILE", "x")])).unwrap_err().to_string();
        assert!(err.contains("TIERLOG_ENCRYPTION_KEYFILE names no configuration key"), "{err}");
    }

    #[test]
    fn every_example_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 4, "expected local, minio, aws and garage examples, found {seen}");
    }

    #[test]
    fn the_kafka_listener_is_off_by_default_and_refuses_what_it_cannot_protect() {
        assert_eq!(Config::default().kafka.listen_addr(&ServerSection::default()).unwrap(), None);
        let loopback = env(&[("TIERLOG_KAFKA_LISTEN", "127.0.0.1:9092")]);
        let config = Config::load(None, loopback).unwrap();
        assert_eq!(config.kafka.listen_addr(&config.server).unwrap(), Some("127.0.0.1:9092".parse().unwrap()));

        let err = Config::load(None, env(&[("TIERLOG_KAFKA_LISTEN", "0.0.0.0:9092")])).unwrap_err().to_string();
        assert!(err.contains("non-loopback") && err.contains("without authentication"), "{err}");
        let allowed = env(&[("TIERLOG_KAFKA_LISTEN", "0.0.0.0:9092"), ("TIERLOG_KAFKA_ALLOW_NON_LOOPBACK", "true")]);
        assert!(Config::load(None, allowed).is_ok());

        let err = Config::load(None, env(&[("TIERLOG_KAFKA_LISTEN", "localhost")])).unwrap_err().to_string();
        assert!(err.contains("kafka.listen = \"localhost\" is not an address"), "{err}");
        let err = Config::load(None, env(&[("TIERLOG_KAFKA_ADVERTISED_PORT", "70000")])).unwrap_err().to_string();
        assert!(err.contains("kafka.advertised_port = 70000 is out of range"), "{err}");
    }

    #[test]
    fn a_non_loopback_kafka_listener_needs_tokens_or_an_opt_in_and_token_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let sha = "0".repeat(64);
        let token = |name: &str| format!("{{ name = \"{name}\", token_sha256 = \"{sha}\", admin = true }}");
        let write = |tokens: &str, listen: &str| {
            std::fs::write(&path, format!("[server]\ntokens = [{tokens}]\n[kafka]\nlisten = \"{listen}\"\n")).unwrap();
            Config::load(Some(&path), env(&[]))
        };
        assert!(write(&token("ops"), "0.0.0.0:9092").is_ok(), "tokens: SASL/PLAIN guards it");
        let err = write("", "0.0.0.0:9092").unwrap_err().to_string();
        assert!(err.contains("refusing a non-loopback address without authentication"), "{err}");
        let err = write(&format!("{}, {}", token("ops"), token("ops")), "127.0.0.1:9092").unwrap_err().to_string();
        assert!(err.contains("every token needs a name of its own"), "{err}");
    }
}
