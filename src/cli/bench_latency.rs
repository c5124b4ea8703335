//! `tierlog bench latency`: how long a record takes from a producer's HTTP request to a
//! follower's NDJSON stream, with fsync per batch, at fixed shares of the produce rate the
//! same server reaches in the same run, against the write+fdatasync latency of the same disk.
//!
//! Method. The closed-loop maximum comes first: `--max-producers` producers each send one
//! record per request, back to back, for `--seconds`. Then, for each load level, one follow
//! stream opens at the log end and an open-loop producer sends one record per request on a
//! fixed schedule (a late request never delays the next one: requests overlap when the server
//! falls behind, as independent clients would). Each record's value carries the instant its
//! request was sent; the follower subtracts it from the instant the record's line arrived.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};
use tierlog::Log;
use tierlog::config::FsyncPolicy;

use super::GlobalArgs;
use super::bench::{Scratch, percentile, round2};

/// Shares of the measured maximum produce rate at which delivery latency is measured.
const LOAD_LEVELS: [f64; 3] = [0.1, 0.5, 0.9];

/// The load level whose tail is held to [`P99_VS_P50_TARGET`].
const TARGET_LEVEL: f64 = 0.5;

/// p99 at most this many times p50 at [`TARGET_LEVEL`]: a tail made of the same work as the
/// median (an fsync, a wake-up, a write), not of a timer or a buffer waiting to fill.
const P99_VS_P50_TARGET: f64 = 3.0;

/// How long the follower waits for the last records after the producer stopped before it
/// calls them lost (far beyond any healthy delivery).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Scratch directory on the disk to measure (removed afterwards).
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Seconds of the maximum-rate measurement and of each load level.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Size of each record value, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Concurrent closed-loop producers when measuring the maximum produce rate.
    #[arg(long, default_value_t = 4)]
    pub max_producers: usize,
    /// 1 KiB write+fdatasync calls timed for the disk's own latency.
    #[arg(long, default_value_t = 2000)]
    pub raw_writes: usize,
}

pub fn latency(global: &GlobalArgs, args: LatencyArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.max_producers > 0 && args.raw_writes > 0,
        "--seconds, --max-producers and --raw-writes must be positive"
    );
    anyhow::ensure!(args.record_bytes >= 32, "--record-bytes must be at least 32 (the value carries a send time)");
    let _scratch = Scratch::new(&args.dir)?;
    let raw = raw_sync_latencies(&args.dir.join("raw.bin"), args.raw_writes)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = match &global.server {
        // A running server (on the disk --dir is on, for the raw figures to mean anything).
        Some(url) => runtime.block_on(async {
            let client = client(global.token.as_deref())?;
            let topic = format!("bench-latency-{}", tierlog::partition::now_ms());
            let created = client
                .post(format!("{}/v1/topics", url.trim_end_matches('/')))
                .json(&json!({"name": topic, "partitions": 1}))
                .send()
                .await?;
            anyhow::ensure!(created.status().is_success(), "creating topic {topic} answered {}", created.status());
            run(client, url.trim_end_matches('/'), &topic, &args, raw).await
        })?,
        None => {
            let mut config = global.load_config()?;
            config.data_dir = args.dir.join("log");
            config.tiering.enabled = false; // measures the serving path, not the object store
            config.durability.fsync = FsyncPolicy::Batch;
            let log = Log::open(config)?;
            log.create_topic("bench", 1)?;
            let report = runtime.block_on(async {
                let (base, _stop) = super::bench::serve_in_process(&log).await?;
                run(client(None)?, &base, "bench", &args, raw).await
            })?;
            drop(log);
            report
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// An HTTP client that sends `token` as a bearer token, if given.
fn client(token: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    // Idle connections are let go before the server closes them (`header_read_timeout_ms`,
    // 10 s): reusing one just as the server's close arrives fails the request (seen between
    // load levels: "connection closed before message completed").
    let idle = std::time::Duration::from_secs(5);
    Ok(reqwest::Client::builder().default_headers(headers).pool_idle_timeout(idle).build()?)
}

async fn run(client: reqwest::Client, base: &str, topic: &str, args: &LatencyArgs, raw: Vec<f64>) -> Result<Value> {
    let bench = Bench {
        client,
        produce_url: format!("{base}/v1/topics/{topic}/records?partition=0"),
        follow_url: format!("{base}/v1/topics/{topic}/partitions/0/records?follow=true&from_offset="),
        offsets_url: format!("{base}/v1/topics/{topic}/offsets"),
        origin: Instant::now(),
        record_bytes: args.record_bytes,
    };
    let duration = Duration::from_secs_f64(args.seconds);
    let max_rps = bench.max_rate(args.max_producers, duration).await?;
    let mut levels = Vec::new();
    let mut target_ratio = f64::NAN;
    for share in LOAD_LEVELS {
        let level = bench.at_rate(max_rps * share, duration).await?;
        if share == TARGET_LEVEL {
            target_ratio = level.delivery_p(0.99) / level.delivery_p(0.5);
        }
        levels.push(level.to_json(share));
    }
    let raw_p = |q| percentile(&raw, q);
    Ok(json!({
        "bench": "latency",
        "server": base,
        "record_bytes": args.record_bytes, "fsync": "per batch", "records_per_request": 1,
        "seconds_per_level": args.seconds,
        "max_produce": {"records_per_s": round2(max_rps), "producers": args.max_producers},
        "levels": levels,
        "raw_write_fdatasync": {"write_bytes": 1024, "writes": raw.len(), "p50_ms": round3(raw_p(0.5)), "p99_ms": round3(raw_p(0.99)), "p999_ms": round3(raw_p(0.999))},
        "p99_vs_p50_at_50pct": round2(target_ratio),
        // The disk's own tail, for the ratio above: a record that arrives during a group's
        // fsync waits for it and then for its own, so delivery cannot have a shorter tail
        // than fdatasync has.
        "raw_p99_vs_p50": round2(raw_p(0.99) / raw_p(0.5)),
        "p99_vs_p50_target": P99_VS_P50_TARGET,
    }))
}

struct Bench {
    client: reqwest::Client,
    produce_url: String,
    /// The follow URL without its `from_offset` value.
    follow_url: String,
    offsets_url: String,
    /// The instant send times are counted from (one process, one clock).
    origin: Instant,
    record_bytes: usize,
}

/// One load level's samples, in milliseconds, sorted.
struct Level {
    rate: f64,
    sent: usize,
    delivery: Vec<f64>,
    produce: Vec<f64>,
}

impl Level {
    fn delivery_p(&self, q: f64) -> f64 {
        percentile(&self.delivery, q)
    }

    fn to_json(&self, share: f64) -> Value {
        let d = |q| round3(percentile(&self.delivery, q));
        let p = |q| round3(percentile(&self.produce, q));
        json!({
            "share_of_max": share, "target_records_per_s": round2(self.rate), "records": self.sent,
            "delivery": {"p50_ms": d(0.5), "p99_ms": d(0.99), "p999_ms": d(0.999), "max_ms": d(1.0)},
            "produce_ack": {"p50_ms": p(0.5), "p99_ms": p(0.99), "p999_ms": p(0.999)},
        })
    }
}

impl Bench {
    /// One NDJSON produce body of one record whose value starts with the send time (ns since
    /// `origin`), padded to `record_bytes`.
    fn body(&self) -> String {
        let sent_ns = self.origin.elapsed().as_nanos();
        let mut value = format!("{sent_ns:020}-");
        value.extend(std::iter::repeat_n('x', self.record_bytes.saturating_sub(value.len())));
        format!("{{\"value\":\"{value}\"}}\n")
    }

    /// Sends one record and returns the time to its acknowledgement, in ms.
    async fn produce_one(&self) -> Result<f64> {
        let body = self.body();
        let started = Instant::now();
        let response = self
            .client
            .post(&self.produce_url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "produce answered {}", response.status());
        response.bytes().await?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// Records per second that `producers` closed-loop producers of one record per request
    /// reach together.
    async fn max_rate(&self, producers: usize, duration: Duration) -> Result<f64> {
        let started = Instant::now();
        let sent = std::sync::atomic::AtomicU64::new(0);
        let one = || async {
            while started.elapsed() < duration {
                self.produce_one().await?;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        };
        futures::future::try_join_all((0..producers).map(|_| one())).await?;
        Ok(sent.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
    }

    /// Delivery latencies at `rate` records per second for `duration`.
    async fn at_rate(&self, rate: f64, duration: Duration) -> Result<Level> {
        let rate = rate.max(1.0);
        let offsets: Value = self.client.get(&self.offsets_url).send().await?.error_for_status()?.json().await?;
        let from = offsets[0]["end"].as_u64().context("the offsets answer has no end offset")?;
        let response = self.client.get(format!("{}{from}", self.follow_url)).send().await?;
        anyhow::ensure!(response.status().is_success(), "follow answered {}", response.status());
        let (done_tx, done_rx) = tokio::sync::watch::channel(None::<usize>);
        let origin = self.origin;
        let follower = tokio::spawn(follow(response, origin, done_rx));
        let count = (rate * duration.as_secs_f64()).ceil() as usize;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let started = tokio::time::Instant::now();
        let mut requests = futures::stream::FuturesUnordered::new();
        let mut produce = Vec::with_capacity(count);
        let mut next = 0;
        use futures::StreamExt;
        while next < count {
            // Every request whose time has come goes now: the timer's millisecond granularity
            // must not lower the rate, and a slow request must not hold back the next one.
            let due = started + interval.mul_f64(next as f64);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    while next < count && started + interval.mul_f64(next as f64) <= tokio::time::Instant::now() {
                        requests.push(self.produce_one());
                        next += 1;
                    }
                }
                Some(done) = requests.next() => produce.push(done?),
            }
        }
        while let Some(done) = requests.next().await {
            produce.push(done?);
        }
        done_tx.send_replace(Some(count));
        let mut delivery = follower.await??;
        anyhow::ensure!(
            delivery.len() == count,
            "the follower received {} of {count} records within {DRAIN_TIMEOUT:?}",
            delivery.len()
        );
        delivery.sort_by(f64::total_cmp);
        produce.sort_by(f64::total_cmp);
        Ok(Level { rate, sent: count, delivery, produce })
    }
}

/// Reads a follow stream and returns each record's delivery latency (ms), until `done` says
/// how many records were sent and that many arrived, or [`DRAIN_TIMEOUT`] after `done`.
async fn follow(
    response: reqwest::Response,
    origin: Instant,
    mut done: tokio::sync::watch::Receiver<Option<usize>>,
) -> Result<Vec<f64>> {
    use futures::StreamExt;
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        value: &'a str,
    }
    let mut stream = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut latencies = Vec::new();
    let mut deadline = None;
    loop {
        if done.borrow().is_some_and(|count| latencies.len() >= count) {
            return Ok(latencies);
        }
        let drain_at = deadline;
        let drained = async move {
            match drain_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            chunk = stream.next() => chunk.context("the follow stream ended")??,
            _ = done.changed(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                continue;
            }
            () = drained => return Ok(latencies),
        };
        let arrived_ns = origin.elapsed().as_nanos();
        pending.extend_from_slice(&chunk);
        let mut consumed = 0;
        while let Some(end) = pending[consumed..].iter().position(|b| *b == b'\n') {
            if end == 0 {
                consumed += 1; // an idle follow's keep-alive line
                continue;
            }
            let line: Line = serde_json::from_slice(&pending[consumed..consumed + end])?;
            let sent_ns: u128 =
                line.value.get(..20).and_then(|t| t.parse().ok()).context("a record without a send time")?;
            latencies.push(arrived_ns.saturating_sub(sent_ns) as f64 / 1e6);
            consumed += end + 1;
        }
        pending.drain(..consumed);
    }
}

/// Latencies (ms, sorted) of `count` 1 KiB writes each followed by fdatasync, appended to one
/// file as a segment is written.
fn raw_sync_latencies(path: &std::path::Path, count: usize) -> Result<Vec<f64>> {
    use std::io::Write;
    let buf = vec![0x5au8; 1024];
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        file.write_all(&buf)?;
        file.sync_data()?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    drop(file);
    std::fs::remove_file(path)?;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
