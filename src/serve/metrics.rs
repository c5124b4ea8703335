//! The Prometheus metrics of `tierlog serve`: the counters both front ends bump, and the
//! `/metrics` handler that renders them with the tiering, replica and remote-read counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::http::AppState;
use crate::append::Written;

/// Upper bounds (µs) of the request-latency histogram buckets: from a quarter millisecond
/// (an fsynced append) to a minute (a remote read that retries a slow object store).
const LATENCY_BUCKETS_US: [u64; 17] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000, 60_000_000,
];

/// A Prometheus-style cumulative histogram of request latencies.
#[derive(Default)]
pub struct Latency {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Latency {
    /// Counts one request of `elapsed`, in microseconds (a 1.5 ms request is not a 1 ms one).
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_US) {
            if us <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, labels: &str, out: &mut String) {
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_US) {
            let le = bound as f64 / 1e6;
            out.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} {}\n", bucket.load(Ordering::Relaxed)));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{{labels},le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!("{name}_sum{{{labels}}} {}\n", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6));
        out.push_str(&format!("{name}_count{{{labels}}} {count}\n"));
    }
}

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub produce_latency: Latency,
    pub fetch_latency: Latency,
    pub produce_requests: AtomicU64,
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub fetched_records: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Requests received by the Kafka listener.
    pub kafka_requests: AtomicU64,
    /// Kafka connections closed for a malformed, oversized or unanswerable request.
    pub kafka_closed_connections: AtomicU64,
}

impl Metrics {
    /// Counts the records and bytes of acknowledged appends, whichever front end made them.
    pub fn count_written(&self, written: &[Written]) {
        for w in written {
            self.appended_records.fetch_add(w.count as u64, Ordering::Relaxed);
            self.appended_bytes.fetch_add(w.bytes as u64, Ordering::Relaxed);
        }
    }
}

/// How stale the consumer-group figures of `/metrics` may be.
pub(super) const GROUPS_REREAD: std::time::Duration = std::time::Duration::from_secs(10);

pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let m = &state.metrics;
    let mut counters: Vec<(&str, &str, &AtomicU64)> = vec![
        ("tierlog_produce_requests_total", "Produce requests received.", &m.produce_requests),
        ("tierlog_appended_records_total", "Records appended.", &m.appended_records),
        ("tierlog_appended_bytes_total", "Encoded record bytes appended.", &m.appended_bytes),
        ("tierlog_fetched_records_total", "Records streamed to clients.", &m.fetched_records),
        ("tierlog_http_client_errors_total", "Requests answered with 4xx.", &m.client_errors),
        ("tierlog_http_server_errors_total", "Requests answered with 5xx.", &m.server_errors),
        ("tierlog_kafka_requests_total", "Requests received by the Kafka listener.", &m.kafka_requests),
        (
            "tierlog_kafka_closed_connections_total",
            "Kafka connections closed for a malformed, oversized or unanswerable request.",
            &m.kafka_closed_connections,
        ),
    ];
    if let Some(t) = &state.tiering {
        counters.extend([
            (
                "tierlog_uploaded_segments_total",
                "Segments uploaded and committed to the remote tier.",
                &t.uploaded_segments,
            ),
            ("tierlog_uploaded_raw_bytes_total", "Raw segment bytes tiered.", &t.uploaded_raw_bytes),
            ("tierlog_uploaded_object_bytes_total", "Compressed object bytes uploaded.", &t.uploaded_object_bytes),
            (
                "tierlog_tiering_failures_total",
                "Partition tiering runs that stopped on an error.",
                &t.failed_partition_runs,
            ),
            (
                "tierlog_local_segments_deleted_total",
                "Tiered local segments removed by local retention.",
                &t.deleted_local_segments,
            ),
            (
                "tierlog_remote_segments_expired_total",
                "Segments expired from the remote tier (and the log) by remote retention.",
                &t.expired_segments,
            ),
            (
                "tierlog_remote_expired_raw_bytes_total",
                "Raw bytes of segments expired by remote retention.",
                &t.expired_raw_bytes,
            ),
            (
                "tierlog_remote_expired_objects_deleted_total",
                "Objects of expired segments deleted after the grace period.",
                &t.deleted_expired_objects,
            ),
            (
                "tierlog_remote_retention_failures_total",
                "Partition runs whose remote retention (expiry commit or deletion) stopped on an error.",
                &t.failed_expiry_runs,
            ),
            (
                "tierlog_object_lock_extended_total",
                "Object versions whose S3 Object Lock retention was extended to a longer policy.",
                &t.lock_extended_objects,
            ),
            (
                "tierlog_object_lock_failures_total",
                "Partition runs stopped by an S3 Object Lock check or request (bucket without Object Lock, a refused lock request).",
                &t.lock_failures,
            ),
        ]);
    }
    if let Some(r) = state.replica.get() {
        counters.extend([
            ("tierlog_replica_refreshes_total", "Looks of the replica at the bucket.", &r.refreshes),
            (
                "tierlog_replica_refresh_failures_total",
                "Looks at the bucket that failed or left a topic or partition behind.",
                &r.failed_refreshes,
            ),
        ]);
    }
    let remote = state.reader.remote_stats();
    if let Some(r) = &remote {
        counters.extend([
            ("tierlog_remote_chunk_gets_total", "Ranged GETs of segment chunks.", &r.chunk_gets),
            ("tierlog_remote_index_gets_total", "Ranged GETs of chunk indexes.", &r.index_gets),
            ("tierlog_remote_bytes_fetched_total", "Bytes fetched from the remote tier.", &r.bytes_fetched),
            ("tierlog_remote_cache_hits_total", "Remote chunk reads served from the cache.", &r.cache_hits),
        ]);
    }
    let mut out = String::new();
    for (name, help, value) in counters {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            value.load(Ordering::Relaxed)
        ));
    }
    if let Some(r) = &remote {
        let (hits, gets) = (r.cache_hits.load(Ordering::Relaxed), r.chunk_gets.load(Ordering::Relaxed));
        out.push_str("# HELP tierlog_remote_cache_hit_ratio Share of remote chunk reads served from the cache.\n# TYPE tierlog_remote_cache_hit_ratio gauge\n");
        out.push_str(&format!("tierlog_remote_cache_hit_ratio {}\n", hits as f64 / (hits + gets).max(1) as f64));
    }
    if let Some(t) = &state.tiering {
        out.push_str("# HELP tierlog_legal_holds Legal holds in force in the bucket, as the last retention pass read them (-1: unreadable, retention stopped).\n# TYPE tierlog_legal_holds gauge\n");
        out.push_str(&format!("tierlog_legal_holds {}\n", t.legal_holds.load(Ordering::Relaxed)));
    }
    if let Some(trail) = state.audit.get() {
        out.push_str("# HELP tierlog_audit_events_pending Audit events waiting to be written to the bucket's audit trail (written at the end of each tiering pass).\n# TYPE tierlog_audit_events_pending gauge\n");
        out.push_str(&format!("tierlog_audit_events_pending {}\n", trail.pending_len()));
        out.push_str("# HELP tierlog_audit_events_dropped_total Audit events dropped because the queue was full while the bucket refused audit records.\n# TYPE tierlog_audit_events_dropped_total counter\n");
        out.push_str(&format!("tierlog_audit_events_dropped_total {}\n", trail.dropped.load(Ordering::Relaxed)));
    }
    if let Some(r) = state.replica.get() {
        out.push_str("# HELP tierlog_replica_last_refresh_success_seconds When the replica last brought its whole view up to date (Unix time; 0: never).\n# TYPE tierlog_replica_last_refresh_success_seconds gauge\n");
        let last = r.last_success_ms.load(Ordering::Relaxed);
        out.push_str(&format!("tierlog_replica_last_refresh_success_seconds {}\n", last as f64 / 1000.0));
    }
    out.push_str("# HELP tierlog_http_request_duration_seconds Produce latency (until durable) and fetch latency (until the stream starts).\n# TYPE tierlog_http_request_duration_seconds histogram\n");
    m.produce_latency.render("tierlog_http_request_duration_seconds", "route=\"produce\"", &mut out);
    m.fetch_latency.render("tierlog_http_request_duration_seconds", "route=\"fetch\"", &mut out);
    let mut ends = String::from(
        "# HELP tierlog_partition_end_offset Log end offset.\n# TYPE tierlog_partition_end_offset gauge\n",
    );
    let mut lag = String::from(
        "# HELP tierlog_tiering_lag_bytes Local bytes not yet in the remote tier.\n# TYPE tierlog_tiering_lag_bytes gauge\n",
    );
    for topic in state.log.topics() {
        for p in &topic.partitions {
            let labels = format!("topic=\"{}\",partition=\"{}\"", topic.name(), p.id);
            ends.push_str(&format!("tierlog_partition_end_offset{{{labels}}} {}\n", p.end_offset()));
            lag.push_str(&format!("tierlog_tiering_lag_bytes{{{labels}}} {}\n", crate::tier::untiered_bytes(p)));
        }
    }
    out.push_str(&ends);
    out.push_str(&lag);
    // Group names and positions are not everyone's business: with tokens, only for a token
    // with the metrics (or admin) right.
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if state.auth.check(authorization, crate::auth::Right::Metrics, None).is_ok() {
        group_lag(&state, &mut out).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Every consumer group's committed offset and lag (end offset − committed) per partition, from
/// the groups store shared by HTTP, CLI and Kafka consumers (committed offsets at most
/// [`GROUPS_REREAD`] old; end offsets current). A store that cannot be read is logged and left
/// out, never a failed scrape.
async fn group_lag(state: &AppState, out: &mut String) {
    let stored = {
        let mut seen = state.groups_seen.lock().await;
        match &*seen {
            Some((at, stored)) if at.elapsed() < GROUPS_REREAD => stored.clone(),
            _ => {
                let data_dir = state.log.data_dir().to_path_buf();
                let stored = match tokio::task::spawn_blocking(move || crate::groups::all(&data_dir)).await {
                    Ok(Ok(stored)) => Arc::new(stored),
                    Ok(Err(e)) => return tracing::warn!(error = %e, "metrics: cannot read the groups store"),
                    Err(e) => return tracing::warn!(error = %e, "metrics: groups store task failed"),
                };
                *seen = Some((std::time::Instant::now(), stored.clone()));
                stored
            }
        }
    };
    out.push_str("# HELP tierlog_consumer_group_committed_offset Next offset the group will read.\n# TYPE tierlog_consumer_group_committed_offset gauge\n");
    let mut lags = String::from(
        "# HELP tierlog_consumer_group_lag Records between the group's committed offset and the log end.\n# TYPE tierlog_consumer_group_lag gauge\n",
    );
    for crate::groups::Committed { group, topic, offsets } in stored.iter() {
        let Ok(t) = state.log.topic(topic) else { continue };
        for (&partition, &committed) in offsets {
            let Ok(p) = t.partition(partition) else { continue };
            let labels = format!("group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"");
            out.push_str(&format!("tierlog_consumer_group_committed_offset{{{labels}}} {committed}\n"));
            lags.push_str(&format!(
                "tierlog_consumer_group_lag{{{labels}}} {}\n",
                p.end_offset().saturating_sub(committed)
            ));
        }
    }
    out.push_str(&lags);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets are counted in microseconds (1.5 ms was counted as 1 ms when latencies were
    /// truncated to whole milliseconds) and reach a minute (remote reads may take 30 s).
    #[test]
    fn latency_buckets_count_sub_millisecond_and_long_requests() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(1_500));
        latency.observe(Duration::from_secs(20));
        let mut text = String::new();
        latency.render("x", "route=\"r\"", &mut text);
        let count = |le: &str| -> u64 {
            let line =
                text.lines().find(|l| l.contains(&format!("le=\"{le}\""))).unwrap_or_else(|| panic!("{le}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!((count("0.001"), count("0.0025")), (0, 1), "1.5 ms is over 1 ms: {text}");
        assert_eq!((count("10"), count("30"), count("+Inf")), (1, 2, 2), "20 s is counted below 30 s: {text}");
    }
}
