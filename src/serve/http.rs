//! The HTTP/JSON serving layer of `tierlog serve` (routes documented in `docs/HTTP.md`).
//!
//! Owns request parsing and validation, limits (body size, records per request, concurrent
//! follow streams, slow bodies), mapping errors to status codes with a JSON body, NDJSON
//! streaming (with live following of appends); the metrics are `super::metrics`'. Appends go
//! through `spawn_blocking` (they fsync); reads go through the unified reader, so both tiers
//! are served. Everything a client sends is untrusted: every input is checked before use,
//! and no request can make the server panic.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use super::connection;
use super::metrics::{Metrics, count_requests, metrics};
use crate::append::{Failure, PartitionRecords, Written, append_all};
use crate::auth::{Auth, Denied, Right};
use crate::config::ServerSection;
use crate::error::{Error, ErrorKind};
use crate::partition::{Partition, now_ms};
use crate::plain_json::PlainValue;
use crate::reader::Reader;
use crate::record::{Record, StoredRecord};
use crate::settings::{NewTopicSettings, SettingsChange};
use crate::{Log, append, envelope, groups, time};

/// Bytes read from a partition per step of a fetch stream.
const STREAM_STEP_BYTES: usize = 256 * 1024;

pub struct AppState {
    pub log: Log,
    pub reader: Reader,
    pub metrics: Metrics,
    pub limits: ServerSection,
    follow_permits: Arc<Semaphore>,
    /// `server.max_produce_bytes_in_flight`, in KiB.
    produce_kib: Arc<Semaphore>,
    /// Follow streams open per token (with tokens configured).
    follows_by_token: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    pub ready: AtomicBool,
    shutdown: watch::Receiver<bool>,
    pub(super) auth: Auth,
    pub(super) tiering: Option<Arc<crate::tier::TieringStats>>,
    /// A live replica's refresher counters (`serve --replica`), set once it runs.
    pub replica: std::sync::OnceLock<Arc<crate::replica::ReplicaStats>>,
    /// The tiering driver's audit trail (set when it runs): topic changes are queued on it.
    pub audit: std::sync::OnceLock<Arc<tierlog_tiering::audit::Trail>>,
}

impl AppState {
    /// Token checks and the audit log, shared with the Kafka listener.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Queues `event` on the audit trail in the bucket and starts writing it; a failure leaves
    /// it queued for the next tiering pass (docs/AUDIT.md). Without tiering there is no trail.
    pub fn record_audit(&self, event: tierlog_tiering::audit::Event) {
        let Some(trail) = self.audit.get() else { return };
        trail.record(event);
        let (trail, now) = (trail.clone(), crate::partition::now_ms());
        tokio::spawn(async move {
            if let Err(e) = trail.flush(now).await {
                tracing::warn!(error = %e, "audit event queued: the bucket refused it; the next tiering pass writes it");
            }
        });
    }

    /// `shutdown` turning true ends follow streams, so a graceful shutdown does not wait on them.
    /// `tiering` is the background tiering task's counters, when it runs.
    pub fn new(
        log: Log,
        shutdown: watch::Receiver<bool>,
        tiering: Option<Arc<crate::tier::TieringStats>>,
    ) -> crate::Result<Arc<AppState>> {
        let limits = log.config().server.clone();
        let auth = Auth::new(log.config())?;
        Ok(Arc::new(AppState {
            auth,
            reader: Reader::new(log.clone()),
            follow_permits: Arc::new(Semaphore::new(limits.max_follow_streams as usize)),
            produce_kib: Arc::new(Semaphore::new(produce_kib(limits.max_produce_bytes_in_flight) as usize)),
            follows_by_token: Arc::default(),
            limits,
            log,
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
            shutdown,
            tiering,
            replica: std::sync::OnceLock::new(),
            audit: std::sync::OnceLock::new(),
        }))
    }

    /// A receiver that turns true when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// The caller's name, if its bearer token grants `right` on `topic`.
    /// A topic name is validated first, so nothing below (the refusal's log line included)
    /// ever sees raw input such as a percent-decoded CR/LF.
    pub(super) fn authorize(&self, headers: &HeaderMap, right: Right, topic: Option<&str>) -> ApiResult<String> {
        if let Some(topic) = topic {
            crate::topic::validate_name(topic)?;
        }
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        self.auth.check(authorization, right, topic).map_err(|denied| {
            let e = match denied {
                Denied::Unauthenticated(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
                Denied::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, why),
            };
            tracing::warn!(status = %e.status, error = ?e.message, topic = ?topic.unwrap_or("-"), "request refused");
            e
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/topics", post(create_topic).get(list_topics))
        .route("/v1/topics/{topic}", get(describe_topic).patch(alter_topic))
        .route("/v1/topics/{topic}/records", post(produce))
        .route("/v1/topics/{topic}/partitions/{partition}/records", get(fetch))
        .route("/v1/topics/{topic}/offsets", get(offsets))
        .route("/v1/snapshot", get(snapshot))
        .route("/v1/groups/{group}/offsets", get(group_offsets).post(commit_group_offsets))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route; see docs/HTTP.md") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard_host))
        .layer(axum::middleware::from_fn_with_state(state.clone(), error_bodies))
        .layer(axum::middleware::from_fn(access_log))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// The access log: one line per request at target `tierlog::access`, level info (off unless
/// `RUST_LOG` enables it): method, path as received (still percent-encoded, so no decoded
/// control character reaches the log), status, and the time to the response head.
async fn access_log(request: Request, next: axum::middleware::Next) -> Response {
    if !tracing::enabled!(target: "tierlog::access", tracing::Level::INFO) {
        return next.run(request).await;
    }
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(target: "tierlog::access", %method, path, status = response.status().as_u16(), elapsed_ms, "request");
    response
}

/// Serves `router` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish within `request_timeout_ms`. Unlike `axum::serve`, every connection runs with a timer and its limits:
/// - at most `max_connections` are open at once (the rest wait in the accept queue);
/// - one with no request in flight for `header_read_timeout_ms` is closed: a socket that
///   sends nothing or part of the HTTP/2 preface (hyper-util reads the protocol version before
///   any HTTP/1 timer runs), an HTTP/1 client slow to send its headers (slowloris), an idle
///   keep-alive or HTTP/2 connection;
/// - TCP keepalive and HTTP/2 pings every `keepalive_ms` find peers that vanished, whose
///   follow streams would otherwise hold their slots forever;
/// - an HTTP/2 connection carries at most `http2_max_concurrent_streams` requests at once;
/// - one that has had bytes to send that its client would not take (fewer than 4 KiB) for
///   `request_timeout_ms` is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: &ServerSection,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let idle = Duration::from_millis(limits.header_read_timeout_ms);
    let stalled = Duration::from_millis(limits.request_timeout_ms);
    let keepalive = Duration::from_millis(limits.keepalive_ms);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .max_concurrent_streams(limits.http2_max_concurrent_streams as u32);
    let (closing, closed) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Every write of a follow stream is a small record that must leave at once. With Nagle's
        // algorithm on, a write while the previous one is unacknowledged waits for the client's
        // ACK, which Linux delays by up to 40 ms when the client has nothing to send: a stall of
        // the size of the produce → follow p99 measured before this (`tierlog bench latency`).
        // hyper already gathers a response's pieces into one write, so waiting gains nothing.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
        }
        connection::set_tcp_keepalive(&stream, keepalive);
        let (service, tracking) = connection::tracked(router.clone());
        let stream = TokioIo::new(connection::Watched::new(stream, &tracking));
        let served = builder.serve_connection_with_upgrades(stream, service).into_owned();
        let closed = closed.clone();
        tokio::spawn(async move {
            connection::drive(served, |c| c.graceful_shutdown(), tracking, idle, stalled, closed).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Each connection's task holds its permit until the connection has ended. One whose client
    // stopped reading its response never ends on its own (its response can neither finish nor
    // fail), so in-flight requests get `request_timeout_ms` to finish; the rest are dropped
    // with the server rather than holding its shutdown (and the log's flush) forever.
    let drain = Duration::from_millis(limits.request_timeout_ms);
    if tokio::time::timeout(drain, permits.acquire_many(limits.max_connections as u32)).await.is_err() {
        let open = limits.max_connections as usize - permits.available_permits();
        tracing::warn!(
            open,
            "HTTP connections still sending a response {} ms after shutdown began (server.request_timeout_ms) are dropped",
            limits.request_timeout_ms
        );
    }
}

/// Error bodies are never longer than this (they are built here or by axum's extractors).
const ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// Every error answer is the JSON shape `{"error": …}`, axum's own included (405, extractor
/// rejections, which are plain text), and a 5xx answer names no directory of this server:
/// the data directory (and so the embedded remote beside it) reads `<data_dir>`, a
/// `file://` remote `<remote_dir>`. The server log keeps the full message.
async fn error_bodies(State(state): State<Arc<AppState>>, request: Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (mut parts, body) = response.into_parts();
    let mut text = match axum::body::to_bytes(body, ERROR_BODY_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::from("error body unavailable"),
    };
    if status.is_server_error() {
        for (path, label) in private_paths(&state) {
            text = text.replace(&path, label);
        }
    }
    let body = match (is_json, text.trim()) {
        (true, _) => text,
        (false, "") => json!({"error": status.canonical_reason().unwrap_or("error")}).to_string(),
        (false, message) => json!({"error": message}).to_string(),
    };
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Directories of this server that error messages may name, longest first, with what a
/// client sees instead.
fn private_paths(state: &AppState) -> Vec<(String, &'static str)> {
    let config = state.log.config();
    let mut paths = Vec::new();
    let mut add = |path: &std::path::Path, label| {
        for form in [Some(path.to_path_buf()), path.canonicalize().ok()].into_iter().flatten() {
            let form = form.display().to_string();
            if form.starts_with('/') && form.len() > 1 {
                paths.push((form, label));
            }
        }
    };
    if let Some(dir) = config.remote.url.strip_prefix("file://") {
        add(std::path::Path::new(dir), "<remote_dir>");
    }
    add(&config.data_dir, "<data_dir>");
    paths.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    paths
}

/// Without tokens, anyone who can reach the port may write, which on loopback means any
/// program on this machine, and any web page its browser opens if the page can make the
/// browser send requests here. DNS rebinding does exactly that, under the attacker's host
/// name. So without tokens a request must name this server by an IP address or `localhost`
/// (or send no Host at all, as no browser does); with tokens, the token is the guard.
async fn guard_host(State(state): State<Arc<AppState>>, request: Request, next: axum::middleware::Next) -> Response {
    if !state.auth.enabled()
        && let Some(host) = request.headers().get(header::HOST)
        && !is_ip_or_localhost(host.to_str().unwrap_or(""))
    {
        let shown = String::from_utf8_lossy(host.as_bytes()).escape_debug().to_string();
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {shown:?} is not an IP address or localhost: without tokens (server.tokens) this server answers only \
                 requests addressed to an IP address or localhost, a guard against DNS rebinding from web pages"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// `127.0.0.1`, `127.0.0.1:7070`, `[::1]:7070`, `localhost:7070`, `10.0.0.7` — not `evil.example`.
fn is_ip_or_localhost(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Writes other than produce take a JSON body and say so. A `text/plain` or form body is what
/// a web page can send cross-origin without a CORS preflight; requiring JSON makes the
/// browser ask first, and this server never grants it.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let (content_type, essence) = content_type(headers);
    if essence == "application/json" {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("content-type {content_type:?}: send application/json (curl: -H 'content-type: application/json')"),
    ))
}

/// An error answer: status plus `{"error": "...", ...details}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Fields beside `error`, e.g. what a failed produce did write.
    details: serde_json::Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), details: serde_json::Map::new() }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match (&e, e.kind()) {
            (Error::UnknownTopic(_) | Error::UnknownPartition { .. }, _) => StatusCode::NOT_FOUND,
            (Error::TopicExists(_), _) => StatusCode::CONFLICT,
            // A replica takes no writes, whoever asks: the method is not allowed here.
            (Error::Replica { .. }, _) => StatusCode::METHOD_NOT_ALLOWED,
            (Error::RecordTooLarge { .. } | Error::RecordLimit { .. }, _) => StatusCode::PAYLOAD_TOO_LARGE,
            (Error::OffsetBelowStart { .. } | Error::Expired { .. }, _) => StatusCode::RANGE_NOT_SATISFIABLE,
            (_, ErrorKind::Invalid) => StatusCode::BAD_REQUEST,
            (_, ErrorKind::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            (_, ErrorKind::Fenced) => StatusCode::CONFLICT,
            (_, ErrorKind::Data | ErrorKind::Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.client_message())
    }
}

/// Seconds a client is asked to wait (`Retry-After`) before retrying an overloaded (429) or
/// unavailable (503: object store outage or timeout, shutting down) request.
const RETRY_AFTER_BUSY_S: u32 = 1;
const RETRY_AFTER_UNAVAILABLE_S: u32 = 5;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.details;
        body.insert("error".into(), Value::String(self.message));
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        let retry_after = match self.status {
            StatusCode::TOO_MANY_REQUESTS => Some(RETRY_AFTER_BUSY_S),
            StatusCode::SERVICE_UNAVAILABLE => Some(RETRY_AFTER_UNAVAILABLE_S),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopic {
    name: String,
    partitions: Option<u32>,
    /// Per-topic settings under Kafka's names (`segment.bytes`, `message.timestamp.type`, …).
    #[serde(default)]
    config: BTreeMap<String, PlainValue>,
}

/// Settings of a request body in text form: strings as they are, numbers and booleans as
/// written (`{"segment.bytes": 1048576}` and `{"segment.bytes": "1048576"}` are the same).
fn setting_pairs(settings: BTreeMap<String, PlainValue>) -> ApiResult<Vec<(String, String)>> {
    settings
        .into_iter()
        .map(|(key, PlainValue(value))| match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok((key, crate::settings::text(&value))),
            other => {
                Err(ApiError::bad_request(format!("setting {key:?} = {other}: expected a string, number or boolean")))
            }
        })
        .collect()
}

async fn create_topic(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = state.authorize(&headers, Right::Admin, None)?;
    require_json(&headers)?;
    let body = read_body(&state, body, CONTROL_BODY_BYTES_MAX, None).await?;
    let request: CreateTopic = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"name\": str, \"partitions\"?: int, \"config\"?: {{str: str|int|bool}}}}: {e}"
        ))
    })?;
    let partitions = request.partitions.unwrap_or(state.log.config().log.default_partitions as u32);
    let pairs = setting_pairs(request.config)?;
    let new = NewTopicSettings::parse(&request.name, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let log = state.log.clone();
    let create = move || log.create_topic_with_settings(&request.name, partitions, &new);
    let topic = tokio::task::spawn_blocking(create).await.expect("create task")?;
    let actor = crate::audit::actor(&who);
    let (partitions, settings) = (topic.metadata.partitions, topic.catalog_settings());
    let event = crate::audit::topic_created(crate::partition::now_ms(), &actor, topic.name(), partitions, &settings);
    state.record_audit(event);
    let answer = json!({"topic": topic.name(), "partitions": topic.metadata.partitions,
                        "config": topic.catalog_settings(),
                        "settings": topic.settings(state.log.config()).to_json()});
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlterTopic {
    /// Settings to set, by Kafka name.
    #[serde(default)]
    set: BTreeMap<String, PlainValue>,
    /// Settings to fall back to the configuration.
    #[serde(default)]
    unset: Vec<String>,
}

/// `PATCH /v1/topics/{topic}` `{"set": {...}, "unset": [...]}`: changes a topic's own settings,
/// in force at once on its partitions. Needs the right to create topics (an admin token).
async fn alter_topic(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    crate::topic::validate_name(&topic)?;
    let who = state.authorize(&headers, Right::Admin, None)?;
    require_json(&headers)?;
    let body = read_body(&state, body, CONTROL_BODY_BYTES_MAX, None).await?;
    let request: AlterTopic = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"set\"?: {{str: str|int|bool}}, \"unset\"?: [str]}}: {e}"))
    })?;
    if request.set.is_empty() && request.unset.is_empty() {
        return Err(ApiError::bad_request("nothing to change: give \"set\": {key: value} and/or \"unset\": [key]"));
    }
    let change = SettingsChange { set: setting_pairs(request.set)?, unset: request.unset };
    let log = state.log.clone();
    let name = topic.clone();
    let before = state.log.topic(&topic)?.catalog_settings();
    let alter = move || log.alter_topic(&name, &change);
    let settings = tokio::task::spawn_blocking(alter).await.expect("alter task")?;
    let after = state.log.topic(&topic)?.catalog_settings();
    let actor = crate::audit::actor(&who);
    state.record_audit(crate::audit::topic_altered(crate::partition::now_ms(), &actor, &topic, &before, &after));
    tracing::info!(topic = %topic, by = %who, "topic altered over HTTP");
    Ok(Json(json!({"topic": topic, "settings": settings.to_json()})))
}

async fn list_topics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    // A missing or unknown token is 401, not an empty list; a known token sees the topics
    // it may read.
    state.authorize(&headers, Right::Read, None)?;
    let visible =
        state.log.topics().into_iter().filter(|t| state.auth.check(auth, Right::Read, Some(t.name())).is_ok());
    Ok(Json(visible.map(|t| json!({"topic": t.name(), "partitions": t.metadata.partitions})).collect()))
}

async fn describe_topic(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, Right::Read, Some(&topic))?;
    let topic = state.log.topic(&topic)?;
    let mut partitions = Vec::new();
    for p in &topic.partitions {
        let sealed = p.sealed_segments();
        let local_bytes: u64 = sealed.iter().map(|s| s.bytes).sum::<u64>() + p.active_bytes();
        let start = state.reader.start_offset(p).await.ok();
        partitions.push(json!({
            "partition": p.id, "start_offset": start, "end_offset": p.end_offset(),
            "local": {"start_offset": p.start_offset(), "bytes": local_bytes, "sealed_segments": sealed.len()},
            "remote_only_below": start.filter(|s| *s < p.start_offset()).map(|_| p.start_offset()),
        }));
    }
    let settings = topic.settings(state.log.config()).to_json();
    Ok(Json(json!({"topic": topic.name(), "partitions": partitions, "settings": settings})))
}

#[derive(Deserialize)]
struct ProduceQuery {
    partition: Option<String>,
}

async fn produce(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    Query(query): Query<ProduceQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    produce_inner(&state, &topic, query, request).await
}

async fn produce_inner(state: &AppState, topic: &str, query: ProduceQuery, request: Request) -> ApiResult<Json<Value>> {
    state.metrics.produce_requests.inc();
    state.authorize(request.headers(), Right::Write, Some(topic))?;
    let topic = state.log.topic(topic)?;
    if let Some(remote) = state.log.replica_of() {
        // Before the body is read: nothing of it could be written.
        let what = format!("producing to '{}'", topic.name());
        return Err(Error::Replica { what, remote: remote.to_string() }.into());
    }
    let explicit = match query.partition {
        Some(p) => Some(
            p.parse::<u32>()
                .map_err(|_| ApiError::bad_request(format!("partition must be a non-negative integer, got {p:?}")))?,
        ),
        None => None,
    };
    if let Some(p) = explicit {
        topic.partition(p)?;
    }
    let ndjson = content_type_is_ndjson(request.headers())?;
    let declared = declared_length(state, request.headers())?;
    let (body, mut share) = read_produce_body(state, declared, request.into_body()).await?;
    let texts = record_texts(&body, ndjson, state.limits.max_records_per_request as usize)?;
    let charge = body.len() as u64 + texts.parsed_bytes();
    let records = if declared.is_some() {
        // Charged up front for the most records the body could hold: every valid record text
        // is 11 bytes or more and parsing stops at the first invalid one, so it stays within
        // that, and the share only gives back what the records did not use.
        let parsed = texts.parse()?;
        share.cover_exactly(charge).await?;
        parsed
    } else {
        // A chunked body is charged its records now, before they are parsed.
        share.cover_exactly(charge).await?;
        texts.parse()?
    };
    let share = share.held;
    let mut by_partition: BTreeMap<u32, PartitionRecords> = BTreeMap::new();
    for (position, record) in records.into_iter().enumerate() {
        let p = explicit.unwrap_or_else(|| topic.partition_for(record.key.as_deref()));
        let group = by_partition.entry(p).or_default();
        group.positions.push(position);
        group.records.push(record);
    }
    for (p, group) in &by_partition {
        let partition = topic.partition(*p)?;
        // Validate everything before writing anything.
        partition.check_records(&group.records).map_err(|e| locate(e, &group.positions, &texts))?;
        backpressure(state, partition)?;
    }
    // One blocking task for every partition: a client that disconnects cannot stop the request
    // half-way, between partitions, where nobody would learn what was written. The task holds
    // the request's share of the budget until its records are appended, even when the client
    // has gone away and this handler was dropped.
    drop(body);
    let outcome = tokio::task::spawn_blocking(move || {
        let _share = share;
        append_all(&topic, by_partition)
    })
    .await
    .expect("append task");
    state.metrics.count_written(&outcome.written);
    match outcome.failure {
        None => Ok(Json(outcome.written.iter().map(Written::to_json).collect())),
        Some(failure) => Err(partial_write_error(outcome.written, failure)),
    }
}

/// The answer to a produce that failed after writing some partitions: the failure's usual
/// status and message, plus what was written and what was not, so a retry resends only the
/// records listed in `unwritten_records` and duplicates nothing. Unless the failed partition
/// stopped: its records are then in doubt (they may be in the log after its restart), which
/// the answer says (`"in_doubt": true`), so the client reads before it resends them.
fn partial_write_error(written: Vec<Written>, failure: Failure) -> ApiError {
    let error_text = failure.error.to_string();
    let in_doubt = matches!(failure.error, Error::Stopped { .. });
    let mut e = ApiError::from(failure.error);
    let written_partitions: Vec<u32> = written.iter().map(|w| w.partition).collect();
    let resend = if in_doubt {
        format!(
            "The records sent to {0}/{1} are in doubt: the partition stopped, and after its restart they may or may not be in the log; read {0}/{1} from its end before resending them. The records of the partitions not attempted were not written",
            failure.topic, failure.partition
        )
    } else {
        "Resend only the records listed in \"unwritten_records\"".to_string()
    };
    e.message = format!(
        "{}/{} failed: {error_text}. Written before the failure: partitions {written_partitions:?} (see \"written\"); not attempted: partitions {:?}. {resend}",
        failure.topic, failure.partition, failure.not_attempted
    );
    e.details.insert("written".into(), written.iter().map(Written::to_json).collect());
    e.details
        .insert("failed".into(), json!({"partition": failure.partition, "error": error_text, "in_doubt": in_doubt}));
    e.details.insert("not_attempted".into(), json!(failure.not_attempted));
    e.details.insert("unwritten_records".into(), json!(failure.unwritten_positions));
    e
}

/// Names a refused record by its place in the request instead of its place in the partition's
/// share of it.
fn locate(e: Error, positions: &[usize], texts: &RecordTexts<'_>) -> ApiError {
    match e {
        Error::RecordLimit { topic, partition, index, limit } => {
            let label = positions.get(index).map_or_else(|| "a record".to_string(), |p| texts.label(*p));
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{topic}/{partition}: {label} {limit}; nothing was written"),
            )
        }
        other => other.into(),
    }
}

/// 429 while the partition holds more untiered bytes than `server.max_untiered_bytes`.
fn backpressure(state: &AppState, partition: &Partition) -> ApiResult<()> {
    match append::untiered_excess(&state.log, partition) {
        None => Ok(()),
        Some(message) => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)),
    }
}

/// The `Content-Type` as sent, and its media type without parameters, lowercased.
fn content_type(headers: &HeaderMap) -> (&str, String) {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    (content_type, content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn content_type_is_ndjson(headers: &HeaderMap) -> ApiResult<bool> {
    let (content_type, essence) = content_type(headers);
    match essence.as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/json-seq" => Ok(true),
        "application/json" => Ok(false),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type {content_type:?}: send application/x-ndjson (one record per line) or application/json (an array of records)"
            ),
        )),
    }
}

/// KiB units of `bytes`, rounded up (at most `u32::MAX`: what one acquire can take).
fn produce_kib(bytes: u64) -> u32 {
    bytes.div_ceil(1024).min(u64::from(u32::MAX)) as u32
}

/// The request's Content-Length, if it declares one: 413 at once when over `max_body_bytes`.
fn declared_length(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let limit = state.limits.max_body_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {length} bytes over server.max_body_bytes = {limit}"),
        )),
        _ => Ok(declared),
    }
}

/// A produce request's share of `server.max_produce_bytes_in_flight`, grown as its body
/// arrives and held until dropped.
struct Share<'a> {
    state: &'a AppState,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    kib: u32,
    deadline: tokio::time::Instant,
}

impl Share<'_> {
    /// Makes the share cover `bytes`, waiting until the deadline; 503 with Retry-After when
    /// the budget stays taken.
    async fn cover(&mut self, bytes: u64) -> ApiResult<()> {
        let want = produce_kib(bytes).clamp(1, produce_kib(self.state.limits.max_produce_bytes_in_flight));
        if want <= self.kib {
            return Ok(());
        }
        let more = self.state.produce_kib.clone().acquire_many_owned(want - self.kib);
        let Ok(Ok(permit)) = tokio::time::timeout_at(self.deadline, more).await else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "server.max_produce_bytes_in_flight = {} bytes of produce requests are being processed; retry later",
                    self.state.limits.max_produce_bytes_in_flight
                ),
            ));
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.kib = want;
        Ok(())
    }

    /// Makes the share cover exactly `bytes`: more as [`cover`](Self::cover) takes it, or
    /// less by giving back what is over.
    async fn cover_exactly(&mut self, bytes: u64) -> ApiResult<()> {
        let want = produce_kib(bytes).clamp(1, produce_kib(self.state.limits.max_produce_bytes_in_flight));
        if want < self.kib
            && let Some(held) = &mut self.held
        {
            drop(held.split((self.kib - want) as usize));
            self.kib = want;
        }
        self.cover(bytes).await
    }
}

/// The shortest text of a record, `{"value":0}`: a body of N bytes holds at most N / 11 + 1.
const MIN_RECORD_TEXT_BYTES: u64 = 11;

/// Reads a produce body within `max_body_bytes` and `request_timeout_ms`, taking its share of
/// `server.max_produce_bytes_in_flight` as it goes: all of a declared Content-Length before
/// the first byte, with what parsing the most records it can hold takes, else as much as has
/// arrived before each chunk is kept, so a request that sends nothing holds nothing. The share
/// is held until the caller drops it.
async fn read_produce_body<'a>(
    state: &'a AppState,
    declared: Option<u64>,
    body: Body,
) -> ApiResult<(Bytes, Share<'a>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(state.limits.request_timeout_ms);
    let mut share = Share { state, held: None, kib: 0, deadline };
    if let Some(length) = declared {
        // All at once, records included: a request that held its body's share while waiting
        // for its records' would deadlock with others doing the same.
        let most_records = (length / MIN_RECORD_TEXT_BYTES + 1).min(state.limits.max_records_per_request);
        share.cover(length + most_records * PARSED_RECORD_BYTES).await?;
    }
    let bytes = read_body(state, body, state.limits.max_body_bytes as usize, Some(&mut share)).await?;
    Ok((bytes, share))
}

/// Bytes of a control request's body (create a topic, commit a group's offsets).
const CONTROL_BODY_BYTES_MAX: usize = 64 * 1024;

/// Reads the whole body within `limit` bytes and `request_timeout_ms` (for a produce, its
/// `share` covers each chunk before it is kept). Handlers call it after checking the token, so
/// no unauthenticated client makes the server wait for or hold a body.
async fn read_body(state: &AppState, body: Body, limit: usize, mut share: Option<&mut Share<'_>>) -> ApiResult<Bytes> {
    use futures::StreamExt;
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let deadline = share.as_ref().map_or_else(|| tokio::time::Instant::now() + timeout, |s| s.deadline);
    // Room for a declared length at once (within the limit, and a produce's share covers it):
    // growing by doubling copied a 256 KiB body some six times over and faulted in fresh pages.
    let declared = hyper::body::Body::size_hint(&body).lower().min(limit as u64) as usize;
    let mut stream = body.into_data_stream();
    let mut bytes = bytes::BytesMut::with_capacity(declared);
    loop {
        let data = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {} ms", timeout.as_millis()),
                ));
            }
            Ok(None) => return Ok(bytes.freeze()),
            Ok(Some(Err(e))) => return Err(ApiError::bad_request(format!("cannot read the request body: {e}"))),
            Ok(Some(Ok(data))) => data,
        };
        if bytes.len() + data.len() > limit {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {limit} bytes")));
        }
        if let Some(share) = share.as_deref_mut() {
            share.cover((bytes.len() + data.len()) as u64).await?; // no-op within a declared length
        }
        bytes.extend_from_slice(&data);
    }
}

/// The texts of a produce body's records (one pointer each, nothing parsed yet), each with
/// the number its label carries: the line of NDJSON, the place in a JSON array.
fn record_texts(body: &[u8], ndjson: bool, max_records: usize) -> ApiResult<RecordTexts<'_>> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid UTF-8 (byte {})", e.valid_up_to())))?;
    let too_many = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than server.max_records_per_request = {max_records} records"),
        )
    };
    let texts: Vec<(usize, &str)> = if ndjson {
        let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let texts: Vec<(usize, &str)> = lines.take(max_records + 1).map(|(i, line)| (i + 1, line)).collect();
        if texts.len() > max_records {
            return Err(too_many());
        }
        texts
    } else {
        let over_limit = std::cell::Cell::new(false);
        let elements = array_elements(text, max_records, &over_limit).map_err(|e| match over_limit.get() {
            true => too_many(),
            false => ApiError::bad_request(format!("expected a JSON array of records: {e}")),
        })?;
        elements.into_iter().enumerate().map(|(i, element)| (i, element.get())).collect()
    };
    if texts.is_empty() {
        return Err(ApiError::bad_request("no records in the body"));
    }
    Ok(RecordTexts { ndjson, texts })
}

/// A produce body split into its records' texts.
struct RecordTexts<'a> {
    ndjson: bool,
    texts: Vec<(usize, &'a str)>,
}

impl RecordTexts<'_> {
    /// What parsing these records takes beyond the body's bytes (see [`PARSED_RECORD_BYTES`]).
    fn parsed_bytes(&self) -> u64 {
        self.texts.len() as u64 * PARSED_RECORD_BYTES
    }

    /// The records, in order.
    fn parse(&self) -> ApiResult<Vec<Record>> {
        let now = now_ms();
        let parse = |(position, (_, text)): (usize, &(usize, &str))| {
            envelope::parse_json_record(text, now)
                .map_err(|e| ApiError::bad_request(format!("{}: {e}; nothing was written", self.label(position))))
        };
        self.texts.iter().enumerate().map(parse).collect()
    }

    /// The record at `position` as error messages name it ("line 3" of NDJSON, "record 2" of
    /// a JSON array); formatted only for an error, not kept per record.
    fn label(&self, position: usize) -> String {
        match self.texts.get(position) {
            Some((n, _)) if self.ndjson => format!("line {n}"),
            Some((n, _)) => format!("record {n}"),
            None => "a record".to_string(),
        }
    }
}

/// Memory a parsed record takes beyond its body bytes: its `Record`, its text's place in the
/// request, allocation slack. A produce's share of `server.max_produce_bytes_in_flight`
/// covers this for every record before any is parsed, so a small body of many tiny records
/// counts by what parsing it costs, not by its length.
const PARSED_RECORD_BYTES: u64 = 192;

/// The elements of the JSON array `text` as raw text, stopping with an error (and
/// `over_limit` set) at element `max + 1`: a 16 MiB body of `[0,0,0,…]` costs one pointer per
/// element up to the limit, never a tree of millions of `Value`s first.
fn array_elements<'a>(
    text: &'a str,
    max: usize,
    over_limit: &std::cell::Cell<bool>,
) -> serde_json::Result<Vec<&'a serde_json::value::RawValue>> {
    struct Elements<'c> {
        max: usize,
        over_limit: &'c std::cell::Cell<bool>,
    }
    impl<'de> serde::de::Visitor<'de> for Elements<'_> {
        type Value = Vec<&'de serde_json::value::RawValue>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of records")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut elements = Vec::new();
            while let Some(element) = seq.next_element()? {
                if elements.len() == self.max {
                    self.over_limit.set(true);
                    return Err(serde::de::Error::custom("too many records"));
                }
                elements.push(element);
            }
            Ok(elements)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let elements = serde::Deserializer::deserialize_seq(&mut deserializer, Elements { max, over_limit })?;
    deserializer.end()?;
    Ok(elements)
}

#[derive(Deserialize)]
struct FetchQuery {
    from_offset: Option<String>,
    from_time: Option<String>,
    to_offset: Option<String>,
    to_time: Option<String>,
    as_of: Option<String>,
    max_records: Option<String>,
    follow: Option<String>,
}

fn parse_u64(name: &str, value: Option<&String>) -> ApiResult<Option<u64>> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer, got {v:?}")))
        })
        .transpose()
}

fn parse_time_param(name: &str, value: Option<&String>) -> ApiResult<Option<i64>> {
    value.map(|v| time::parse_time(v).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))).transpose()
}

async fn fetch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((topic, partition)): Path<(String, String)>,
    Query(q): Query<FetchQuery>,
) -> ApiResult<Response> {
    let who = state.authorize(&headers, Right::Read, Some(&topic))?;
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    // EventSource sends the id of the last event it received when it reconnects.
    let last_event_id = match headers.get("last-event-id").filter(|_| sse) {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::bad_request("Last-Event-ID must be the offset of a record this stream sent (an integer)")
        })?),
    };
    fetch_inner(state.clone(), topic, partition, q, who, sse, last_event_id).await
}

async fn fetch_inner(
    state: Arc<AppState>,
    topic: String,
    partition: String,
    q: FetchQuery,
    who: String,
    sse: bool,
    last_event_id: Option<u64>,
) -> ApiResult<Response> {
    let id: u32 = partition
        .parse()
        .map_err(|_| ApiError::bad_request(format!("partition must be a non-negative integer, got {partition:?}")))?;
    let partition = state.log.topic(&topic)?.partition(id)?.clone();
    let follow = match q.follow.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request(format!("follow must be true or false, got {other:?}"))),
    };
    let next =
        match (parse_u64("from_offset", q.from_offset.as_ref())?, parse_time_param("from_time", q.from_time.as_ref())?)
        {
            (Some(_), Some(_)) => return Err(ApiError::bad_request("give from_offset or from_time, not both")),
            _ if let Some(last) = last_event_id => last.saturating_add(1), // a reconnect resumes after it
            (Some(offset), None) => offset,
            (None, Some(time)) => state.reader.offset_for_time(&partition, time).await?,
            (None, None) => state.reader.start_offset(&partition).await?,
        };
    let as_of = parse_time_param("as_of", q.as_of.as_ref())?;
    if let Some(t) = as_of {
        crate::reader::check_as_of(t, now_ms())?;
    }
    if as_of.is_some() && follow {
        return Err(ApiError::bad_request("as_of replays a past cut of the log; it cannot follow (drop follow=true)"));
    }
    let to_time = parse_time_param("to_time", q.to_time.as_ref())?;
    let stop = match (parse_u64("to_offset", q.to_offset.as_ref())?, to_time) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give to_offset or to_time, not both")),
        (Some(offset), None) => Some(offset),
        // As of a time, to_time selects by timestamp (a late record may lie past its offset).
        (None, Some(time)) if as_of.is_none() => Some(state.reader.offset_for_time(&partition, time).await?),
        (None, _) => None,
    };
    // As of T: stop at the partition's as-of cut, and select by timestamp within [from_time, to_time).
    let (stop, window) = match as_of {
        Some(t) => {
            let cut = state.reader.offset_as_of(&partition, t).await?;
            let from = parse_time_param("from_time", q.from_time.as_ref())?;
            (Some(stop.map_or(cut, |s| s.min(cut))), (from, to_time))
        }
        None => (stop, (None, None)),
    };
    let remaining = parse_u64("max_records", q.max_records.as_ref())?.unwrap_or(u64::MAX);
    let more = next < partition.end_offset() && stop.is_none_or(|s| next < s);
    // A reconnect after a stream that finished: 204 tells EventSource to stop reconnecting,
    // instead of replaying it forever. Finished: a fetch (not a follow) with nothing left, or
    // any stream that reached its `to_*`. (`max_records` counts per connection, so a reconnect
    // cannot know how many were left: such a stream ends too.)
    let reached_stop = stop.is_some_and(|s| next >= s);
    if last_event_id.is_some() && (q.max_records.is_some() || reached_stop || (!follow && !more)) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Fail before streaming starts when the first read fails (e.g. below the log start).
    if more {
        state.reader.read(&partition, next, 1).await?;
    }
    let permit = if follow {
        let permit = state.follow_permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "server.max_follow_streams = {} follow streams are open; retry later",
                    state.limits.max_follow_streams
                ),
            )
        })?;
        let per_token = if state.auth.enabled() { Some(TokenFollow::take(&state, &who)?) } else { None };
        Some((permit, per_token))
    } else {
        None
    };
    state.auth.audit_read(&who, &topic, id, next, stop, follow);
    let stream = FetchStream {
        state: state.clone(),
        ends: partition.watch_end(),
        partition,
        next,
        stop,
        window,
        remaining,
        follow,
        sse,
        opened: false,
        ended: false,
        _permit: permit,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        match s.step().await {
            Ok(Some(bytes)) => Some((Ok::<_, std::io::Error>(bytes), s)),
            Ok(None) => None,
            Err(e) => {
                // Mid-stream errors cannot change the status any more: end with an error line.
                let error = json!({"error": e.to_string()});
                let line = if s.sse { format!("event: error\ndata: {error}\n\n") } else { format!("{error}\n") };
                // Not `event: end`: the stream did not finish, and a client resumes it with
                // Last-Event-ID.
                (s.remaining, s.ended) = (0, true);
                Some((Ok(Bytes::from(line)), s))
            }
        }
    }));
    let content_type = if sse { "text/event-stream" } else { "application/x-ndjson" };
    Ok(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}

/// One of a token's follow streams, counted against `server.max_follow_streams_per_token`
/// until dropped (when the stream ends or its client goes away).
struct TokenFollow {
    counts: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    who: String,
}

impl TokenFollow {
    fn take(state: &AppState, who: &str) -> ApiResult<TokenFollow> {
        let max = state.limits.max_follow_streams_per_token;
        let mut counts = state.follows_by_token.lock().unwrap_or_else(|p| p.into_inner());
        let open = counts.entry(who.to_string()).or_default();
        if *open >= max {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "token '{who}' holds server.max_follow_streams_per_token = {max} follow streams; close one or retry later"
                ),
            ));
        }
        *open += 1;
        Ok(TokenFollow { counts: state.follows_by_token.clone(), who: who.to_string() })
    }
}

impl Drop for TokenFollow {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.who) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.who);
            }
        }
    }
}

struct FetchStream {
    state: Arc<AppState>,
    partition: Arc<Partition>,
    ends: watch::Receiver<u64>,
    next: u64,
    stop: Option<u64>,
    /// Only records whose own timestamp lies in `[from, to)` are sent (an as-of replay's
    /// time window); the others are skipped.
    window: (Option<i64>, Option<i64>),
    remaining: u64,
    follow: bool,
    /// Server-Sent Events framing (`id:` = offset, `data:` = the record) instead of NDJSON.
    sse: bool,
    /// Whether the SSE preamble (`retry:`) went out.
    opened: bool,
    /// Whether the SSE `event: end` went out.
    ended: bool,
    /// The follow slots held while the stream lives (global, and the token's).
    _permit: Option<(tokio::sync::OwnedSemaphorePermit, Option<TokenFollow>)>,
}

impl FetchStream {
    /// The next piece of the stream, `None` at its end. An SSE stream starts with `retry:`
    /// (how long EventSource waits before reconnecting), a follow idle for
    /// `server.sse_keepalive_ms` sends a keep-alive, and an SSE stream that is not a follow
    /// ends with `event: end`.
    async fn step(&mut self) -> Result<Option<Bytes>, Error> {
        if self.sse && !self.opened {
            self.opened = true;
            return Ok(Some(Bytes::from_static(SSE_PREAMBLE)));
        }
        loop {
            if self.remaining == 0 || self.stop.is_some_and(|s| self.next >= s) {
                return Ok(self.end());
            }
            let records = self.state.reader.read(&self.partition, self.next, STREAM_STEP_BYTES).await?;
            let mut out = Vec::new();
            let read_to = records.last().map(|r| r.offset + 1);
            let (from, to) = self.window;
            let in_window = |r: &StoredRecord| {
                from.is_none_or(|f| r.record.timestamp >= f) && to.is_none_or(|t| r.record.timestamp < t)
            };
            let stop = self.stop;
            let wanted = records.into_iter().take_while(|r| stop.is_none_or(|s| r.offset < s)).filter(in_window);
            for stored in wanted.take(self.remaining as usize) {
                if self.sse {
                    out.extend_from_slice(format!("id: {}\ndata: ", stored.offset).as_bytes());
                }
                envelope::write_record_json(&mut out, self.partition.id, &stored);
                out.extend_from_slice(if self.sse { b"\n\n" } else { b"\n" });
                self.next = stored.offset + 1;
                self.remaining -= 1;
                self.state.metrics.fetched_records.inc();
            }
            if !out.is_empty() {
                return Ok(Some(Bytes::from(out)));
            }
            // Everything read was outside the window: go on after it.
            if let Some(read_to) = read_to.filter(|r| *r > self.next) {
                self.next = match self.stop {
                    Some(stop) => read_to.min(stop),
                    None => read_to,
                };
                continue;
            }
            if !self.follow {
                return Ok(self.end());
            }
            let mut shutdown = self.state.shutdown.clone();
            let end_now = self.partition.end_offset();
            if end_now > self.next {
                continue;
            }
            let keepalive = Duration::from_millis(self.state.limits.sse_keepalive_ms);
            tokio::select! {
                changed = self.ends.changed() => if changed.is_err() { return Ok(None) },
                _ = shutdown.wait_for(|stop| *stop) => return Ok(None),
                _ = tokio::time::sleep(keepalive) => return Ok(Some(Bytes::from_static(self.keepalive()))),
            }
        }
    }

    /// What an idle follow sends every `server.sse_keepalive_ms`: an SSE comment, or an empty
    /// NDJSON line (readers skip empty lines, docs/HTTP.md). Writing it keeps proxies from
    /// cutting the stream, and fails once the client is gone, which frees its follow slot.
    fn keepalive(&self) -> &'static [u8] {
        if self.sse { b": keep-alive\n\n" } else { b"\n" }
    }

    /// What ends a stream that finished (its end, `to_*` or `max_records`; not an error or a
    /// shutdown): an SSE stream sends `event: end` once first, so a client can close instead of
    /// reconnecting. It carries the id of the last offset before the next one, so a reconnect
    /// of a fetch that sent no record resumes there too (and gets 204).
    fn end(&mut self) -> Option<Bytes> {
        if !self.sse || self.ended {
            return None;
        }
        self.ended = true;
        let id = self.next.checked_sub(1).map(|last| format!("id: {last}\n")).unwrap_or_default();
        Some(Bytes::from(format!("event: end\n{id}data: {{}}\n\n")))
    }
}

/// Sent first on every SSE stream: how long EventSource waits before reconnecting (ms).
const SSE_PREAMBLE: &[u8] = b"retry: 3000\n\n";

#[derive(Deserialize)]
struct OffsetsQuery {
    time: Option<String>,
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct SnapshotQuery {
    as_of: Option<String>,
    /// Comma-separated topic names; every topic the caller may read when absent.
    topics: Option<String>,
}

/// `GET /v1/snapshot?as_of=T[&topics=a,b]`: the as-of cut at T of every partition (see
/// [`crate::reader::snapshot`]).
async fn snapshot(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<SnapshotQuery>,
) -> ApiResult<Json<Value>> {
    let time = parse_time_param("as_of", q.as_of.as_ref())?
        .ok_or_else(|| ApiError::bad_request("as_of is required: the instant to cut the log at"))?;
    crate::reader::check_as_of(time, now_ms())?;
    let topics: Vec<String> = match q.topics.as_deref() {
        Some(list) => list.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect(),
        None => {
            state.authorize(&headers, Right::Read, None)?;
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let readable = |t: &String| state.auth.check(auth, Right::Read, Some(t)).is_ok();
            state.log.topics().iter().map(|t| t.name().to_string()).filter(readable).collect()
        }
    };
    for topic in &topics {
        state.authorize(&headers, Right::Read, Some(topic))?;
    }
    if topics.is_empty() {
        return Ok(Json(Value::Array(Vec::new())));
    }
    Ok(Json(Value::Array(crate::reader::snapshot(&state.reader, &topics, time).await?)))
}

async fn offsets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(topic): Path<String>,
    Query(q): Query<OffsetsQuery>,
) -> ApiResult<Json<Value>> {
    state.authorize(&headers, Right::Read, Some(&topic))?;
    let topic = state.log.topic(&topic)?;
    let time = parse_time_param("time", q.time.as_ref())?;
    let as_of = parse_time_param("as_of", q.as_of.as_ref())?;
    if let Some(t) = as_of {
        crate::reader::check_as_of(t, now_ms())?;
    }
    if time.is_some() && as_of.is_some() {
        return Err(ApiError::bad_request("give time or as_of, not both"));
    }
    let mut out = Vec::new();
    for p in &topic.partitions {
        out.push(match (time, as_of) {
            (Some(t), _) => json!({"partition": p.id, "offset": state.reader.offset_for_time(p, t).await?}),
            (_, Some(t)) => json!({"partition": p.id, "offset": state.reader.offset_as_of(p, t).await?}),
            _ => json!({"partition": p.id, "start": state.reader.start_offset(p).await?, "end": p.end_offset()}),
        });
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
struct GroupQuery {
    topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupCommit {
    topic: String,
    offsets: BTreeMap<u32, u64>,
}

async fn group_offsets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    Query(q): Query<GroupQuery>,
) -> ApiResult<Json<Value>> {
    // A group's positions are its own, as for Kafka's OffsetFetch: the group right, and read
    // on the topic.
    groups::check_name(&group)?;
    state.authorize(&headers, Right::Group, Some(&group))?;
    let topic = q.topic.ok_or_else(|| ApiError::bad_request("topic query parameter is required"))?;
    state.authorize(&headers, Right::Read, Some(&topic))?;
    state.log.topic(&topic)?;
    let offsets = groups::load(state.log.data_dir(), &group, &topic)?;
    Ok(Json(json!({"group": group, "topic": topic, "offsets": offsets})))
}

async fn commit_group_offsets(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(group): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    // The group right is checked before the body is read (the topic right needs the body).
    groups::check_name(&group)?;
    let who = state.authorize(&headers, Right::Group, Some(&group))?;
    require_json(&headers)?;
    let body = read_body(&state, body, CONTROL_BODY_BYTES_MAX, None).await?;
    let commit: GroupCommit = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"topic\": str, \"offsets\": {{\"<partition>\": <offset>}}}}: {e}"))
    })?;
    state.authorize(&headers, Right::Read, Some(&commit.topic))?;
    let topic = state.log.topic(&commit.topic)?;
    for (p, offset) in &commit.offsets {
        let partition = topic.partition(*p)?;
        if *offset > partition.end_offset() {
            return Err(ApiError::bad_request(format!(
                "offset {offset} of partition {p} is past its end {}",
                partition.end_offset()
            )));
        }
    }
    // A commit waits for the group's file lock and fsyncs: keep it off the async workers.
    let data_dir = state.log.data_dir().to_path_buf();
    let (name, topic, offsets) = (group.clone(), commit.topic.clone(), commit.offsets.clone());
    tokio::task::spawn_blocking(move || groups::commit(&data_dir, &name, &topic, &offsets))
        .await
        .expect("group commit task")?;
    state.auth.audit_commit(&who, &group, &commit.topic, &commit.offsets);
    Ok(Json(json!({"group": group, "topic": commit.topic, "committed": commit.offsets})))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if let Some(why) = state.replica.get().and_then(|r| r.behind(crate::partition::now_ms())) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    "ready\n".into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_array_produce_stops_parsing_at_the_record_limit() {
        let body = format!("[{}{{\"value\":\"last\"}}]", "{\"value\":\"v\"},".repeat(4));
        let texts = record_texts(body.as_bytes(), false, 5).unwrap();
        let records = texts.parse().unwrap();
        assert_eq!((records.len(), texts.label(4).as_str()), (5, "record 4"));
        assert_eq!(records[4].value, b"last");
        let huge = format!("[{}0]", "0,".repeat(1_000_000));
        let err = record_texts(huge.as_bytes(), false, 10).err().unwrap();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", err.message);
        let err = record_texts(b"[{\"value\":1}] trailing", false, 10).err().unwrap();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{}", err.message);
        let err = record_texts(b"{\"value\":1}", false, 10).err().unwrap();
        assert!(err.message.contains("JSON array"), "{}", err.message);
    }

    /// A produce whose partition stopped says its records are in doubt instead of telling
    /// the client that resending them duplicates nothing; an ordinary failure still does.
    #[test]
    fn a_stopped_partition_leaves_the_records_sent_to_it_in_doubt() {
        let failure = |error| Failure {
            topic: "t".into(),
            partition: 1,
            error,
            not_attempted: vec![2],
            unwritten_positions: vec![1, 2],
        };
        let written =
            || vec![Written { partition: 0, first_offset: 4, last_offset: 4, count: 1, bytes: 10, append_time: None }];
        let stopped = Error::Stopped { topic: "t".into(), partition: 1, reason: "fsync of x failed".into() };
        let e = partial_write_error(written(), failure(stopped));
        assert_eq!(e.details["failed"]["in_doubt"], json!(true));
        assert!(e.message.contains("in doubt") && !e.message.contains("Resend only"), "{}", e.message);
        let full = Error::io(std::path::Path::new("x"), "append to", std::io::Error::other("no space"));
        let e = partial_write_error(written(), failure(full));
        assert_eq!(e.details["failed"]["in_doubt"], json!(false));
        assert!(e.message.contains("Resend only"), "{}", e.message);
    }

    /// An object store that does not answer in time is an outage: 503 with Retry-After, not
    /// 500 "corrupt" (which a client must not retry and an operator must investigate).
    #[test]
    fn a_store_timeout_is_503_with_retry_after() {
        let timeout = tierlog_tiering::Error::Timeout {
            store: "s3".into(),
            action: "GET k".into(),
            after_ms: 100,
            setting: "reader.timeout_ms",
        };
        let response = ApiError::from(Error::Remote(timeout)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let damaged = tierlog_tiering::Error::Corrupt { key: "k".into(), reason: "checksum".into() };
        let response = ApiError::from(Error::Remote(damaged)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
