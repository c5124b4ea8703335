//! The Prometheus metrics of `tierlog serve` (`GET /metrics`, listed in docs/HTTP.md), kept
//! and encoded with the `prometheus-client` crate in the Prometheus text format 0.0.4.
//!
//! Owns: the counters and histograms the two front ends update ([`Metrics`]); the HTTP layer
//! that counts every request once, by method, route template and status
//! ([`count_requests`]); the process figures read from `/proc/self` at each scrape; and the
//! `/metrics` handler, which also reads the counters other parts keep (tiering driver,
//! replica refresher, remote reader, audit trail) at scrape time. Those stay theirs: plain
//! atomics (and the remote reader's GET histogram) in their own modules.
//!
//! A scrape costs no file read per partition: end offsets and local bytes are in memory, the
//! remote end and last tiering success of a partition come from the tiering driver's
//! counters (or, for a partition no pass of this process has reached yet, from its state
//! file read once and then kept), and consumer-group offsets from a copy of the groups store
//! at most [`GROUPS_REREAD`] old.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::http::AppState;
use crate::append::Written;
use crate::auth::Right;
use crate::tier::PartitionTiering;

/// Upper bounds (µs) of the request-latency histogram buckets: from a quarter millisecond
/// (an fsynced append) to a minute (a remote read that retries a slow object store).
const LATENCY_BUCKETS_US: [u64; 17] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];

/// How stale the consumer-group figures of `/metrics` may be.
pub(super) const GROUPS_REREAD: Duration = Duration::from_secs(10);

/// The `route` label of a request no route matched (404s of unknown paths): one value, so
/// clients probing paths cannot grow the number of series.
const UNMATCHED_ROUTE: &str = "unmatched";

/// A request-latency histogram in seconds over [`LATENCY_BUCKETS_US`].
fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_US.map(|us| us as f64 / 1e6))
}

/// Counts one request of `elapsed` in `histogram`, in seconds to the microsecond (a 1.5 ms
/// request is not a 1 ms one).
pub fn observe(histogram: &Histogram, elapsed: Duration) {
    histogram.observe(elapsed.as_micros() as f64 / 1e6);
}

/// The labels of an HTTP request: every value comes from a bounded set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The standard methods by name, any other as `other`.
    method: &'static str,
    /// The matched route template (`/v1/topics/{topic}/records`), never the path as sent.
    route: String,
    /// The status answered.
    code: u16,
}

/// What the server counts itself, and the registry that encodes it with the process figures.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    http_client_errors: Counter,
    http_server_errors: Counter,
    /// Produce requests received, HTTP and Kafka alike.
    pub produce_requests: Counter,
    pub appended_records: Counter,
    pub appended_bytes: Counter,
    pub fetched_records: Counter,
    /// Kafka Produce requests, until every partition's answer is known (durable or refused).
    pub kafka_produce_latency: Histogram,
    /// Requests received by the Kafka listener.
    pub kafka_requests: Counter,
    /// Kafka connections closed for a malformed, oversized or unanswerable request.
    pub kafka_closed_connections: Counter,
    /// The groups store as last read for `/metrics`, and when: scrapes re-read it at most
    /// every [`GROUPS_REREAD`], however often they come.
    groups_seen: tokio::sync::Mutex<Option<(Instant, Arc<Vec<crate::groups::Committed>>)>>,
    /// Tiering state of partitions no tiering pass of this process has reported, read once
    /// from their state files.
    tiering_seen: std::sync::Mutex<HashMap<(String, u32), PartitionTiering>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_latency: Family::new_with_constructor(latency_histogram),
            http_client_errors: Counter::default(),
            http_server_errors: Counter::default(),
            produce_requests: Counter::default(),
            appended_records: Counter::default(),
            appended_bytes: Counter::default(),
            fetched_records: Counter::default(),
            kafka_produce_latency: latency_histogram(),
            kafka_requests: Counter::default(),
            kafka_closed_connections: Counter::default(),
            groups_seen: tokio::sync::Mutex::new(None),
            tiering_seen: std::sync::Mutex::default(),
        };
        m.registered()
    }
}

impl Metrics {
    /// `self` with its metrics in its registry (each a handle on the same counter).
    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "tierlog_produce_requests",
            "Produce requests received (HTTP and Kafka)",
            self.produce_requests.clone(),
        );
        r.register("tierlog_appended_records", "Records appended", self.appended_records.clone());
        r.register("tierlog_appended_bytes", "Encoded record bytes appended", self.appended_bytes.clone());
        r.register("tierlog_fetched_records", "Records streamed to clients", self.fetched_records.clone());
        r.register(
            "tierlog_http_requests",
            "HTTP requests answered, by method, route template and status code",
            self.http_requests.clone(),
        );
        r.register(
            "tierlog_http_request_duration_seconds",
            "HTTP request latency until the response head (produce: until durable; fetch: until the stream starts), by method, route template and status code",
            self.http_latency.clone(),
        );
        r.register("tierlog_http_client_errors", "HTTP requests answered with 4xx", self.http_client_errors.clone());
        r.register("tierlog_http_server_errors", "HTTP requests answered with 5xx", self.http_server_errors.clone());
        r.register("tierlog_kafka_requests", "Requests received by the Kafka listener", self.kafka_requests.clone());
        r.register(
            "tierlog_kafka_closed_connections",
            "Kafka connections closed for a malformed, oversized or unanswerable request",
            self.kafka_closed_connections.clone(),
        );
        r.register(
            "tierlog_kafka_produce_duration_seconds",
            "Kafka Produce latency until every partition's answer is known (durable or refused)",
            self.kafka_produce_latency.clone(),
        );
        #[cfg(target_os = "linux")]
        r.register_collector(Box::new(ProcessCollector::new()));
        self
    }

    /// Counts the records and bytes of acknowledged appends, whichever front end made them.
    pub fn count_written(&self, written: &[Written]) {
        for w in written {
            self.appended_records.inc_by(w.count as u64);
            self.appended_bytes.inc_by(w.bytes as u64);
        }
    }

    /// Counts one answered HTTP request.
    fn count_request(&self, labels: RequestLabels, elapsed: Duration) {
        let status = axum::http::StatusCode::from_u16(labels.code).ok();
        if status.is_some_and(|s| s.is_client_error()) {
            self.http_client_errors.inc();
        } else if status.is_some_and(|s| s.is_server_error()) {
            self.http_server_errors.inc();
        }
        observe(&self.http_latency.get_or_create(&labels), elapsed);
        self.http_requests.get_or_create(&labels).inc();
    }
}

/// The one place HTTP requests are counted: every route and every status, refusals and
/// 404s included, once each, timed until the response head.
pub(super) async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE, MatchedPath::as_str).to_string();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = RequestLabels { method, route, code: response.status().as_u16() };
    state.metrics.count_request(labels, started.elapsed());
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics`. Without `server.metrics_requires_token` anyone may scrape, and only a token
/// with the metrics (or admin) right sees the consumer-group series; with it, nobody else
/// may scrape at all (401 without a token, 403 with one lacking the right).
pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let sees_groups = if state.limits.metrics_requires_token {
        if let Err(refused) = state.authorize(&headers, Right::Metrics, None) {
            return refused.into_response();
        }
        true
    } else {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        state.auth.check(authorization, Right::Metrics, None).is_ok()
    };
    let mut scrape = Registry::default();
    register_others(&state, &mut scrape);
    scrape.register_collector(Box::new(partition_series(&state).await));
    if sees_groups && let Some(groups) = group_series(&state).await {
        scrape.register_collector(Box::new(groups));
    }
    let mut out = String::new();
    let encoded = prometheus_text::encode(&mut out, &state.metrics.registry)
        .and_then(|()| prometheus_text::encode(&mut out, &scrape));
    // Writing to a String fails only if a metric's own encoding does, which is a bug.
    encoded.expect("metrics encode into a String");
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response()
}

/// The counters other parts keep, as they are now.
fn register_others(state: &AppState, r: &mut Registry) {
    if let Some(t) = &state.tiering {
        counter(
            r,
            "tierlog_uploaded_segments",
            "Segments uploaded and committed to the remote tier",
            &t.uploaded_segments,
        );
        counter(r, "tierlog_uploaded_raw_bytes", "Raw segment bytes tiered", &t.uploaded_raw_bytes);
        counter(r, "tierlog_uploaded_object_bytes", "Compressed object bytes uploaded", &t.uploaded_object_bytes);
        counter(
            r,
            "tierlog_tiering_failures",
            "Partition tiering runs that stopped on an error",
            &t.failed_partition_runs,
        );
        counter(
            r,
            "tierlog_local_segments_deleted",
            "Tiered local segments removed by local retention",
            &t.deleted_local_segments,
        );
        counter(
            r,
            "tierlog_remote_segments_expired",
            "Segments expired from the remote tier (and the log) by remote retention",
            &t.expired_segments,
        );
        counter(
            r,
            "tierlog_remote_expired_raw_bytes",
            "Raw bytes of segments expired by remote retention",
            &t.expired_raw_bytes,
        );
        counter(
            r,
            "tierlog_remote_expired_objects_deleted",
            "Objects of expired segments deleted after the grace period",
            &t.deleted_expired_objects,
        );
        counter(
            r,
            "tierlog_remote_retention_failures",
            "Partition runs whose remote retention (expiry commit or deletion) stopped on an error",
            &t.failed_expiry_runs,
        );
        counter(
            r,
            "tierlog_object_lock_extended",
            "Object versions whose S3 Object Lock retention was extended to a longer policy",
            &t.lock_extended_objects,
        );
        counter(
            r,
            "tierlog_object_lock_failures",
            "Partition runs stopped by an S3 Object Lock check or request (bucket without Object Lock, a refused lock request)",
            &t.lock_failures,
        );
        r.register(
            "tierlog_legal_holds",
            "Legal holds in force in the bucket, as the last retention pass read them (-1: unreadable, retention stopped)",
            ConstGauge::new(t.legal_holds.load(Ordering::Relaxed)),
        );
    }
    if let Some(replica) = state.replica.get() {
        counter(r, "tierlog_replica_refreshes", "Looks of the replica at the bucket", &replica.refreshes);
        counter(
            r,
            "tierlog_replica_refresh_failures",
            "Looks at the bucket that failed or left a topic or partition behind",
            &replica.failed_refreshes,
        );
        r.register(
            "tierlog_replica_last_refresh_success_seconds",
            "When the replica last brought its whole view up to date (Unix time; 0: never)",
            ConstGauge::new(replica.last_success_ms.load(Ordering::Relaxed) as f64 / 1000.0),
        );
    }
    if let Some(remote) = state.reader.remote_stats() {
        counter(r, "tierlog_remote_chunk_gets", "Ranged GETs of segment chunks", &remote.chunk_gets);
        counter(r, "tierlog_remote_index_gets", "Ranged GETs of chunk indexes", &remote.index_gets);
        counter(r, "tierlog_remote_bytes_fetched", "Bytes fetched from the remote tier", &remote.bytes_fetched);
        counter(r, "tierlog_remote_cache_hits", "Remote chunk reads served from the cache", &remote.cache_hits);
        counter(
            r,
            "tierlog_remote_get_errors",
            "Ranged GETs of the remote tier that failed: timed out, refused, missing or short",
            &remote.get_errors,
        );
        r.register(
            "tierlog_remote_get_duration_seconds",
            "Latency of ranged GETs of the remote tier, failed ones included",
            remote.get_latency.clone(),
        );
        let (hits, gets) = (remote.cache_hits.load(Ordering::Relaxed), remote.chunk_gets.load(Ordering::Relaxed));
        r.register(
            "tierlog_remote_cache_hit_ratio",
            "Share of remote chunk reads served from the cache",
            ConstGauge::new(hits as f64 / (hits + gets).max(1) as f64),
        );
    }
    if let Some(trail) = state.audit.get() {
        r.register(
            "tierlog_audit_events_pending",
            "Audit events waiting to be written to the bucket's audit trail (written at the end of each tiering pass)",
            ConstGauge::new(trail.pending_len() as i64),
        );
        counter(
            r,
            "tierlog_audit_events_dropped",
            "Audit events dropped because the queue was full while the bucket refused audit records",
            &trail.dropped,
        );
    }
}

/// Registers `value` as it is now, as the counter `name`.
fn counter(r: &mut Registry, name: &str, help: &str, value: &AtomicU64) {
    r.register(name, help, ConstCounter::new(value.load(Ordering::Relaxed)));
}

/// Encodes one family of gauges, one series per row.
fn gauges<'a, L, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (&'a L, V)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet + 'a,
    V: prometheus_client::encoding::EncodeGaugeValue,
{
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

#[derive(Debug)]
struct PartitionRow {
    labels: PartitionLabels,
    end_offset: u64,
    untiered_bytes: u64,
    /// Unix time in seconds; 0: never.
    last_tiered_s: f64,
}

/// Every partition's end offset, tiering lag and last successful tiering pass, as of the scrape.
#[derive(Debug)]
struct PartitionSeries(Vec<PartitionRow>);

impl Collector for PartitionSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let rows = &self.0;
        gauges(
            &mut encoder,
            "tierlog_partition_end_offset",
            "Log end offset",
            rows.iter().map(|r| (&r.labels, r.end_offset)),
        )?;
        gauges(
            &mut encoder,
            "tierlog_tiering_lag_bytes",
            "Local bytes not yet in the remote tier",
            rows.iter().map(|r| (&r.labels, r.untiered_bytes)),
        )?;
        gauges(
            &mut encoder,
            "tierlog_tiering_last_success_seconds",
            "When a tiering pass of the partition last succeeded (Unix time; 0: never)",
            rows.iter().map(|r| (&r.labels, r.last_tiered_s)),
        )
    }
}

/// The partition figures, from memory: a partition's tiering state is the driver's (every
/// pass of this process records it) or, before the driver has reached it, its state file's,
/// read once for the life of the process.
async fn partition_series(state: &AppState) -> PartitionSeries {
    let partitions: Vec<_> = state.log.topics().iter().flat_map(|t| t.partitions.iter().cloned()).collect();
    let known = |key: &(String, u32)| {
        state.tiering.as_ref().is_some_and(|t| t.partitions.lock().unwrap_or_else(|p| p.into_inner()).contains_key(key))
            || lock(&state.metrics.tiering_seen).contains_key(key)
    };
    let unread: Vec<_> = partitions.iter().filter(|p| !known(&(p.topic.clone(), p.id))).cloned().collect();
    if !unread.is_empty() {
        let read = tokio::task::spawn_blocking(move || {
            unread
                .iter()
                .map(|p| ((p.topic.clone(), p.id), PartitionTiering::from(&crate::tier::read_partition_state(p))))
                .collect::<Vec<_>>()
        });
        match read.await {
            Ok(read) => lock(&state.metrics.tiering_seen).extend(read),
            Err(e) => tracing::warn!(error = %e, "metrics: reading partition tiering states failed"),
        }
    }
    let driver = state.tiering.as_ref().map(|t| t.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone());
    let seen = lock(&state.metrics.tiering_seen);
    let rows = partitions
        .iter()
        .map(|p| {
            let key = (p.topic.clone(), p.id);
            let tiering =
                driver.as_ref().and_then(|d| d.get(&key)).or_else(|| seen.get(&key)).copied().unwrap_or_default();
            PartitionRow {
                end_offset: p.end_offset(),
                untiered_bytes: crate::tier::untiered_bytes_above(p, tiering.remote_end_offset),
                last_tiered_s: tiering.last_success_ms.unwrap_or(0) as f64 / 1000.0,
                labels: PartitionLabels { topic: key.0, partition: key.1 },
            }
        })
        .collect();
    PartitionSeries(rows)
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    topic: String,
    partition: u32,
}

/// Every consumer group's committed offset and lag per partition.
#[derive(Debug)]
struct GroupSeries(Vec<(GroupLabels, u64, u64)>);

impl Collector for GroupSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let rows = &self.0;
        gauges(
            &mut encoder,
            "tierlog_consumer_group_committed_offset",
            "Next offset the group will read",
            rows.iter().map(|(labels, committed, _)| (labels, *committed)),
        )?;
        gauges(
            &mut encoder,
            "tierlog_consumer_group_lag",
            "Records between the group's committed offset and the log end",
            rows.iter().map(|(labels, _, lag)| (labels, *lag)),
        )
    }
}

/// Every consumer group's committed offset and lag (end offset − committed) per partition, from
/// the groups store shared by HTTP, CLI and Kafka consumers (committed offsets at most
/// [`GROUPS_REREAD`] old; end offsets current). A store that cannot be read is logged and left
/// out (`None`), never a failed scrape.
async fn group_series(state: &AppState) -> Option<GroupSeries> {
    let stored = {
        let mut seen = state.metrics.groups_seen.lock().await;
        match &*seen {
            Some((at, stored)) if at.elapsed() < GROUPS_REREAD => stored.clone(),
            _ => {
                let data_dir = state.log.data_dir().to_path_buf();
                let stored = match tokio::task::spawn_blocking(move || crate::groups::all(&data_dir)).await {
                    Ok(Ok(stored)) => Arc::new(stored),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "metrics: cannot read the groups store");
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: groups store task failed");
                        return None;
                    }
                };
                *seen = Some((Instant::now(), stored.clone()));
                stored
            }
        }
    };
    let mut rows = Vec::new();
    for crate::groups::Committed { group, topic, offsets } in stored.iter() {
        let Ok(t) = state.log.topic(topic) else { continue };
        for (&partition, &committed) in offsets {
            let Ok(p) = t.partition(partition) else { continue };
            let labels = GroupLabels { group: group.clone(), topic: topic.clone(), partition };
            rows.push((labels, committed, p.end_offset().saturating_sub(committed)));
        }
    }
    Some(GroupSeries(rows))
}

/// The `process_*` figures Prometheus clients export, from `/proc/self` at each scrape. A
/// figure `/proc` cannot give is left out of the scrape, never a failed scrape.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct ProcessCollector {
    /// Unix time in seconds, fixed at start.
    start_time_s: Option<f64>,
}

#[cfg(target_os = "linux")]
impl ProcessCollector {
    fn new() -> ProcessCollector {
        let stat = procfs::process::Process::myself().and_then(|me| me.stat());
        let start_time_s = stat
            .ok()
            .zip(procfs::boot_time_secs().ok())
            .map(|(stat, boot_s)| boot_s as f64 + stat.starttime as f64 / procfs::ticks_per_second() as f64);
        ProcessCollector { start_time_s }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        fn one(encoder: &mut DescriptorEncoder, name: &str, help: &str, metric: impl EncodeMetric) -> std::fmt::Result {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        }
        let Ok(me) = procfs::process::Process::myself() else { return Ok(()) };
        if let Ok(stat) = me.stat() {
            let cpu_s = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
            one(
                &mut encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                ConstCounter::new(cpu_s),
            )?;
            let resident = stat.rss.saturating_mul(procfs::page_size());
            one(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                ConstGauge::new(resident as i64),
            )?;
            one(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                ConstGauge::new(stat.vsize as i64),
            )?;
        }
        if let Ok(open) = me.fd_count() {
            one(&mut encoder, "process_open_fds", "Number of open file descriptors", ConstGauge::new(open as i64))?;
        }
        if let Ok(limits) = me.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            one(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                ConstGauge::new(max as i64),
            )?;
        }
        if let Some(start_s) = self.start_time_s {
            let help = "Start time of the process since unix epoch in seconds";
            one(&mut encoder, "process_start_time_seconds", help, ConstGauge::new(start_s))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are counted in microseconds (1.5 ms was counted as 1 ms when latencies were
    /// truncated to whole milliseconds) and reach a minute (remote reads may take 30 s).
    #[test]
    fn latency_buckets_count_sub_millisecond_and_long_requests() {
        let latency = latency_histogram();
        observe(&latency, Duration::from_micros(1_500));
        observe(&latency, Duration::from_secs(20));
        let mut registry = Registry::default();
        registry.register("x", "x", latency);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        let count = |le: &str| -> u64 {
            let line =
                text.lines().find(|l| l.contains(&format!("le=\"{le}\""))).unwrap_or_else(|| panic!("{le}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!((count("0.001"), count("0.0025")), (0, 1), "1.5 ms is over 1 ms: {text}");
        assert_eq!((count("10"), count("30"), count("+Inf")), (1, 2, 2), "20 s is counted below 30 s: {text}");
    }
}
