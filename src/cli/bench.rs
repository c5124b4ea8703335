//! `tierlog bench`: benchmarks that print JSON and compare tierlog against limits measured in
//! the same run, on the same disk and data (absolute numbers on shared machines are noise;
//! ratios are the result).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use object_store::ObjectStoreExt;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tierlog::config::FsyncPolicy;
use tierlog::{Log, Record};

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Append and sequential-read throughput against raw write+fdatasync and raw read.
    #[command(after_help = "Example:\n  tierlog bench append --total-mb 256 --dir /var/tmp/tierlog-bench")]
    Append(AppendArgs),
    /// Seal + compress + upload throughput to the configured remote, against single-thread
    /// zstd on the same data at the same level.
    #[command(
        after_help = "Example:\n  tierlog bench tier --total-mb 128\n  tierlog --config config/minio.toml bench tier"
    )]
    Tier(TierArgs),
    /// Cold random seeks and sequential replay from the remote tier, against local replay of
    /// the same data, with requests, bytes and peak memory.
    #[command(after_help = "Example:\n  tierlog bench read --total-mb 192 --seeks 50")]
    Read(ReadArgs),
    /// Concurrent producers and consumers over HTTP against an in-process server, against the
    /// library append rate measured in the same run.
    #[command(after_help = "Example:\n  tierlog bench http --producers 4 --batch-records 256")]
    Http(HttpArgs),
    /// librdkafka (kcat) producing and fetching over the Kafka listener of an in-process
    /// server, against the library's append, local and remote replay of the same records, and
    /// produce latency with acks=all against raw write+fdatasync latency.
    #[command(after_help = "Example:\n  tierlog bench kafka --total-mb 128   # needs kcat on PATH")]
    Kafka(super::bench_kafka::KafkaArgs),
    /// Deep `verify` of a tiered log against single-thread zstd decompression of the same objects.
    #[command(after_help = "Example:\n  tierlog bench verify --total-mb 128 --rounds 3")]
    Verify(super::bench_verify::VerifyBenchArgs),
    /// Produce → follow delivery latency over HTTP (fsync per batch, one 1 KiB record per
    /// request) at 10%, 50% and 90% of the maximum produce rate measured in the same run,
    /// against the write+fdatasync latency of the same disk.
    #[command(
        after_help = "Examples:\n  tierlog bench latency --seconds 5\n  tierlog --server http://127.0.0.1:7070 bench latency --dir /data/bench-scratch   # a running server"
    )]
    Latency(super::bench_latency::LatencyArgs),
    /// Every bench above, each in a subprocess, with `--report DIR` an HTML page of charts
    /// (DIR/index.html) and DIR/report.json; a bench that is missing or fails is reported as
    /// not run and the rest still are.
    #[command(
        after_help = "Example:\n  tierlog bench all --report bench-report\n  tierlog bench all --quick --report /tmp/r   # smoke sizes, a minute or two"
    )]
    All(super::bench_report::AllArgs),
    /// (internal to `bench read`) replay the remote tier of a bench log in a fresh process.
    #[command(hide = true)]
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[arg(long)]
    pub cache_mb: u64,
}

#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Scratch directory, new (removed afterwards) or empty (emptied afterwards); a non-empty
    /// one is refused.
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Concurrent HTTP producers (and partitions: one each).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Concurrent HTTP consumers reading everything back.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// Records per produce request (and per library append).
    #[arg(long, default_value_t = 256)]
    pub batch_records: usize,
    /// Produce requests per producer.
    #[arg(long, default_value_t = 100)]
    pub requests: usize,
    /// Size of each record value (JSON payment events).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
}

#[derive(Args, Debug)]
pub struct ReadArgs {
    /// Scratch directory, new (removed afterwards) or empty (emptied afterwards); a non-empty
    /// one is refused. The embedded remote goes beside its log.
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Raw bytes of payment events to write, tier and replay.
    #[arg(long, default_value_t = 192)]
    pub total_mb: u64,
    /// Cold seeks to random offsets.
    #[arg(long, default_value_t = 50)]
    pub seeks: usize,
    /// Chunk cache for this run (smaller than the data, so replay exercises eviction).
    #[arg(long, default_value_t = 64)]
    pub cache_mb: u64,
}

#[derive(Args, Debug)]
pub struct TierArgs {
    /// Scratch directory, new (removed afterwards) or empty (emptied afterwards); a non-empty
    /// one is refused. The embedded remote goes beside its log.
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Raw bytes of payment events to tier.
    #[arg(long, default_value_t = 128)]
    pub total_mb: u64,
    /// Size of each record value (JSON payment events).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
}

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Scratch directory on the disk to measure: created if missing and removed afterwards,
    /// or an existing empty directory, emptied afterwards. A directory with anything in it is
    /// refused: the bench deletes only what it wrote.
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Bytes appended per round.
    #[arg(long, default_value_t = 256)]
    pub total_mb: u64,
    /// Size of each record value in bytes (payment events as JSON, cut to this size below
    /// ~250 bytes). The target against raw write+fdatasync is 0.8× from 1 KiB, 0.5× below.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per append (one batch, one fsync).
    #[arg(long, default_value_t = 64)]
    pub batch_records: usize,
    /// Rounds; the median of each measurement is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

pub fn run(global: &GlobalArgs, cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Append(args) => append(global, args),
        BenchCommand::Tier(args) => tier(global, args),
        BenchCommand::Read(args) => read(global, args),
        BenchCommand::Http(args) => http(global, args),
        BenchCommand::Kafka(args) => super::bench_kafka::kafka(global, args),
        BenchCommand::Verify(args) => super::bench_verify::verify(global, args),
        BenchCommand::Latency(args) => super::bench_latency::latency(global, args),
        BenchCommand::All(args) => super::bench_report::all(global, args),
        BenchCommand::Replay(args) => replay(global, args),
    }
}

/// One round's measurements in MB/s (10^6 bytes) and records/s.
#[derive(Default, Clone, Copy)]
struct Round {
    append_mb_s: f64,
    append_records_s: f64,
    raw_write_mb_s: f64,
    read_mb_s: f64,
    read_records_s: f64,
    raw_read_mb_s: f64,
}

/// The floors for append against raw write+fdatasync of the same bytes: small records
/// pay a per-record encoding cost that 1 KiB records amortise.
const APPEND_TARGET_SMALL: f64 = 0.5;
const APPEND_TARGET_1KIB: f64 = 0.8;

/// Benchmark record number `i`: a payment event whose value is exactly `value_bytes` long
/// (JSON events are longer than ~250 bytes; smaller sizes cut the JSON, which the log does
/// not parse), with its account key and one header as producers send them.
fn bench_record(i: u64, value_bytes: usize) -> Record {
    let mut record = tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, value_bytes);
    record.value.truncate(value_bytes);
    record
}

fn append(global: &GlobalArgs, args: AppendArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.rounds > 0 && args.batch_records > 0 && args.total_mb > 0 && args.record_bytes > 0,
        "--rounds, --batch-records, --total-mb and --record-bytes must be positive"
    );
    let batch: Vec<Record> = (0..args.batch_records as u64).map(|i| bench_record(i, args.record_bytes)).collect();
    let batch_bytes = tierlog::batch::encode(0, &batch).len();
    let batches = (args.total_mb * 1_000_000).div_ceil(batch_bytes as u64);
    let scratch = Scratch::new(&args.dir)?;
    let progress = indicatif::ProgressBar::new((args.rounds * 4) as u64).with_message("bench append");
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        // A fresh directory per round inside the scratch directory: created here (an existing
        // one is an error, never deleted), removed at the end of the round.
        let dir = scratch.dir.join(format!("round-{round}"));
        fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let mut config = global.load_config()?;
        config.data_dir = dir.join("log");
        config.durability.fsync = FsyncPolicy::Batch;
        let log = Log::open(config)?;
        let partition = log.create_topic("bench", 1)?.partition(0)?.clone();
        // The limit is measured batch by batch between tierlog's appends, so both meet the
        // disk in the same state (on a shared machine fsync times drift by 10x in seconds).
        let mut raw = RawWriter::create(&dir.join("raw.bin"), batch_bytes)?;
        let mut secs = 0.0;
        for _ in 0..batches {
            let start = Instant::now();
            partition.append(&batch, 0)?;
            secs += start.elapsed().as_secs_f64();
            raw.write_one()?;
        }
        let raw_write_mb_s = raw.finish()?;
        progress.inc(2);
        let log_bytes = partition.active_bytes() + partition.sealed_segments().iter().map(|s| s.bytes).sum::<u64>();
        let (read_secs, records) = read_all(&partition)?;
        anyhow::ensure!(
            records == batches * args.batch_records as u64,
            "read back {records} records, expected {}",
            batches * args.batch_records as u64
        );
        progress.inc(1);
        let raw_read_mb_s = raw_read(partition.dir())?;
        progress.inc(1);
        rounds.push(Round {
            append_mb_s: log_bytes as f64 / secs / 1e6,
            append_records_s: records as f64 / secs,
            raw_write_mb_s,
            read_mb_s: log_bytes as f64 / read_secs / 1e6,
            read_records_s: records as f64 / read_secs,
            raw_read_mb_s,
        });
        drop(log);
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    progress.finish_and_clear();
    let report = append_report(&args, &rounds, batch_bytes, batches);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// `tierlog serve`'s HTTP listener over `log` on a loopback port of the current runtime, until
/// the runtime ends: its base URL, and the shutdown sender to keep while it serves (dropping it
/// ends follow streams).
pub(super) async fn serve_in_process(log: &Log) -> Result<(String, tokio::sync::watch::Sender<bool>)> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let state = tierlog::serve::http::AppState::new(log.clone(), stopped, None)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let limits = state.limits.clone();
    let router = tierlog::serve::http::router(state);
    tokio::spawn(async move { tierlog::serve::http::serve(listener, router, &limits, std::future::pending()).await });
    Ok((base, stop))
}

/// Reads every record of `partition` back (zero-copy views, CRC per batch): seconds and records.
fn read_all(partition: &tierlog::partition::Partition) -> Result<(f64, u64)> {
    let start = Instant::now();
    let (mut next, mut records) = (0, 0u64);
    let mut buf = Vec::new();
    while let Some(chunk) = partition.read_chunk(next, tierlog::partition::READ_BYTES_MAX, buf)? {
        let views = chunk.views()?;
        let Some(last) = views.last() else { break };
        next = last.offset + 1;
        records += views.len() as u64;
        drop(views);
        buf = chunk.into_buffer();
    }
    Ok((start.elapsed().as_secs_f64(), records))
}

fn append_report(args: &AppendArgs, rounds: &[Round], batch_bytes: usize, batches: u64) -> Value {
    let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let (append_mb_s, raw_write_mb_s, read_mb_s, raw_read_mb_s) =
        (m(|r| r.append_mb_s), m(|r| r.raw_write_mb_s), m(|r| r.read_mb_s), m(|r| r.raw_read_mb_s));
    // Records/s the raw writer would carry: the same bytes per batch, the same records in them.
    let records_per_byte = args.batch_records as f64 / batch_bytes as f64;
    let target = if args.record_bytes >= 1024 { APPEND_TARGET_1KIB } else { APPEND_TARGET_SMALL };
    json!({
        "bench": "append",
        "record_bytes": args.record_bytes, "batch_records": args.batch_records, "batch_bytes": batch_bytes,
        "bytes_per_round": batches * batch_bytes as u64, "rounds": args.rounds,
        "append": {"mb_per_s": round2(append_mb_s), "records_per_s": round2(m(|r| r.append_records_s)), "fsync": "per batch"},
        "raw_write_fdatasync": {"mb_per_s": round2(raw_write_mb_s), "write_bytes": batch_bytes,
                                "records_per_s": round2(raw_write_mb_s * 1e6 * records_per_byte)},
        "append_vs_raw": round2(append_mb_s / raw_write_mb_s),
        "append_vs_raw_per_round": spread(rounds.iter().map(|r| r.append_mb_s / r.raw_write_mb_s).collect()),
        "append_target": target,
        "sequential_read": {"mb_per_s": round2(read_mb_s), "records_per_s": round2(m(|r| r.read_records_s))},
        "raw_read": {"mb_per_s": round2(raw_read_mb_s)},
        "read_vs_raw": round2(read_mb_s / raw_read_mb_s),
        "read_vs_raw_per_round": spread(rounds.iter().map(|r| r.read_mb_s / r.raw_read_mb_s).collect()),
        "read_target": 0.5,
        "note": "record_bytes is each value's size (plus a 10-byte key and one header); the raw write+fdatasync of each batch's size runs between tierlog's appends, batch by batch; reads of freshly written files come from the page cache for both tierlog and the raw reader",
    })
}

/// The disk's limit for this workload: writes of one batch's size, each followed by
/// fdatasync, into a file growing by append, exactly as a segment is written.
struct RawWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    secs: f64,
}

impl RawWriter {
    fn create(path: &Path, size: usize) -> Result<RawWriter> {
        let file = OpenOptions::new().create_new(true).append(true).open(path)?;
        Ok(RawWriter { path: path.to_path_buf(), file, buf: vec![0x5au8; size], secs: 0.0 })
    }

    fn write_one(&mut self) -> Result<()> {
        let start = Instant::now();
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Removes the file; MB/s written.
    fn finish(self) -> Result<f64> {
        let bytes = self.file.metadata()?.len();
        drop(self.file);
        fs::remove_file(&self.path)?;
        Ok(bytes as f64 / self.secs / 1e6)
    }
}

/// Plain sequential read of every segment file in `dir` with the same read size tierlog uses.
fn raw_read(dir: &Path) -> Result<f64> {
    let mut buf = vec![0u8; tierlog::partition::READ_BYTES_MAX];
    let mut total = 0u64;
    let start = Instant::now();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let mut file = File::open(&path)?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `q` quantile (0..=1) of sorted values.
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// `{"min","median","max"}` of `values`, rounded to two decimals.
pub(super) fn spread(values: Vec<f64>) -> Value {
    let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    json!({"min": round2(min), "median": round2(median(values)), "max": round2(max)})
}

pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn tier(global: &GlobalArgs, args: TierArgs) -> Result<ExitCode> {
    let _scratch = Scratch::new(&args.dir)?;
    let mut config = global.load_config()?;
    config.data_dir = args.dir.join("log");
    config.durability.fsync = FsyncPolicy::Never; // this bench measures tiering, not appends
    config.segment.max_bytes = config.segment.max_bytes.min(64 * 1024 * 1024);
    config.tiering.local_retention_bytes = u64::MAX >> 2; // measure tiering, not deletion
    config.tiering.local_retention_ms = 1 << 50;
    let log = Log::open(config.clone())?;
    let partition = log.create_topic("bench", 1)?.partition(0)?.clone();
    let total = args.total_mb * 1_000_000;
    let mut n = 0u64;
    while partition.active_bytes() + partition.sealed_segments().iter().map(|s| s.bytes).sum::<u64>() < total {
        let batch: Vec<Record> = (n..n + 256)
            .map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, args.record_bytes))
            .collect();
        partition.append(&batch, tierlog::partition::now_ms())?;
        n += 256;
    }
    partition.seal_active(tierlog::partition::now_ms())?;
    let segments = partition.sealed_segments();
    let raw_bytes: u64 = segments.iter().map(|s| s.bytes).sum();

    // The limit: one thread compressing the same bytes, in the same chunks, at the same level.
    let level = config.tiering.zstd_level as i32;
    let mut zstd_secs = 0.0;
    let mut zstd_out = 0u64;
    for segment in &segments {
        let raw = fs::read(&segment.path)?;
        let start = Instant::now();
        for chunk in raw.chunks(config.tiering.chunk_bytes as usize) {
            zstd_out += zstd::bulk::compress(chunk, level)?.len() as u64;
        }
        zstd_secs += start.elapsed().as_secs_f64();
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let (secs, object_bytes, store) = runtime.block_on(async {
        let tiering = tierlog::tier::Tiering::start(log.clone()).await?;
        let store = tiering.remote().display.clone();
        let start = Instant::now();
        let reports = tiering.run_once(Some("bench"), true).await?;
        let secs = start.elapsed().as_secs_f64();
        if let Some(error) = reports.iter().find_map(|r| r.error.clone()) {
            anyhow::bail!("tiering failed: {error}");
        }
        anyhow::Ok((secs, reports.iter().map(|r| r.uploaded_object_bytes).sum::<u64>(), store))
    })?;
    let tier_mb_s = raw_bytes as f64 / secs / 1e6;
    let zstd_mb_s = raw_bytes as f64 / zstd_secs / 1e6;
    // Chunks are independent frames compressed on every core: the limit is cores × one core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let limit_mb_s = cores as f64 * zstd_mb_s;
    let report = json!({
        "bench": "tier",
        "store": store,
        "segments": segments.len(), "raw_bytes": raw_bytes, "object_bytes": object_bytes,
        "record_bytes": args.record_bytes, "zstd_level": level, "chunk_bytes": config.tiering.chunk_bytes,
        "upload_concurrency": config.tiering.upload_concurrency,
        "tier": {"raw_mb_per_s": round2(tier_mb_s), "seconds": round2(secs)},
        "zstd_single_thread": {"mb_per_s": round2(zstd_mb_s), "ratio": round2(raw_bytes as f64 / zstd_out as f64)},
        "compression_ratio": round2(raw_bytes as f64 / object_bytes as f64),
        "single_thread_zstd_mb_s": round2(zstd_mb_s),
        "cores": cores,
        "cores_zstd_limit_mb_s": round2(limit_mb_s),
        "tier_vs_zstd": round2(tier_mb_s / zstd_mb_s),
        "tier_vs_cores_zstd": round2(tier_mb_s / limit_mb_s),
        "tier_vs_cores_zstd_target": 0.8,
        "ratio_target": 4.0,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(log);
    Ok(ExitCode::SUCCESS)
}

/// Writes `total_mb` of payment events into a fresh log under `dir` and tiers every sealed
/// segment, keeping local copies. Returns the log and its partition.
pub(super) fn tiered_log(
    global: &GlobalArgs,
    dir: &std::path::Path,
    total_mb: u64,
    runtime: &tokio::runtime::Runtime,
) -> Result<(Log, std::sync::Arc<tierlog::partition::Partition>)> {
    let mut config = global.load_config()?;
    config.data_dir = dir.join("log");
    config.durability.fsync = FsyncPolicy::Never;
    config.segment.max_bytes = config.segment.max_bytes.min(32 * 1024 * 1024);
    config.tiering.local_retention_bytes = u64::MAX >> 2;
    config.tiering.local_retention_ms = 1 << 50;
    let log = Log::open(config)?;
    let partition = log.create_topic("bench", 1)?.partition(0)?.clone();
    let mut n = 0u64;
    while partition.active_bytes() + partition.sealed_segments().iter().map(|s| s.bytes).sum::<u64>()
        < total_mb * 1_000_000
    {
        let batch: Vec<Record> =
            (n..n + 256).map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, 1024)).collect();
        partition.append(&batch, tierlog::partition::now_ms())?;
        n += 256;
    }
    runtime.block_on(async {
        let tiering = tierlog::tier::Tiering::start(log.clone()).await?;
        let reports = tiering.run_once(Some("bench"), true).await?;
        match reports.iter().find_map(|r| r.error.clone()) {
            Some(error) => anyhow::bail!("tiering failed: {error}"),
            None => anyhow::Ok(()),
        }
    })?;
    Ok((log, partition))
}

fn read(global: &GlobalArgs, args: ReadArgs) -> Result<ExitCode> {
    use std::sync::atomic::Ordering;
    use tierlog_tiering::remote_reader::RemoteReader;

    let runtime = tokio::runtime::Runtime::new()?;
    let _scratch = Scratch::new(&args.dir)?;
    let (log, partition) = tiered_log(global, &args.dir, args.total_mb, &runtime)?;
    let mut settings = tierlog::reader::settings_with_keys(log.config())?;
    settings.cache_bytes = args.cache_mb * 1024 * 1024;
    let end = partition.end_offset();
    let raw_bytes: u64 = partition.sealed_segments().iter().map(|s| s.bytes).sum();

    // Local sequential replay of the same data (page cache, views, CRC per batch).
    let start = Instant::now();
    let (mut next, mut buf) = (0, Vec::new());
    while let Some(chunk) = partition.read_chunk(next, tierlog::partition::READ_BYTES_MAX, buf)? {
        let Some(last) = chunk.views()?.last().map(|v| v.offset) else { break };
        next = last + 1;
        buf = chunk.into_buffer();
    }
    let local_secs = start.elapsed().as_secs_f64();

    let report = runtime.block_on(async {
        let store = tierlog::tier::connect(log.config()).await?;
        let faulty = std::sync::Arc::new(tierlog_tiering::fault::FaultStore::new(store.store.clone()));
        let counted = store.with_store(faulty.clone());

        // Cold seeks: a fresh reader per seek (nothing cached), manifest loaded first.
        let mut latencies = Vec::new();
        let (mut requests, mut bytes, mut worst_ratio) = (0u64, 0u64, 0f64);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..args.seeks {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let offset = (rng >> 11) % end;
            let reader = RemoteReader::new(counted.clone(), settings.clone());
            reader.manifest("bench", 0).await?;
            let before = faulty.counters.snapshot();
            let t = Instant::now();
            let chunk = reader.read_at("bench", 0, offset).await?.context("offset in the remote tier")?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            let after = faulty.counters.snapshot();
            let seek_requests: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
            let fetched = reader.stats.bytes_fetched.load(Ordering::SeqCst);
            let compressed = compressed_len_of(&reader, &chunk).await?;
            requests += seek_requests;
            bytes += fetched;
            worst_ratio = worst_ratio.max(fetched as f64 / compressed as f64);
        }
        latencies.sort_by(f64::total_cmp);

        // Remote sequential replay with prefetch, in a fresh process of its own, so its peak
        // RSS (VmHWM) is the replay's and not this process's write and tiering phases.
        let replay = std::process::Command::new(std::env::current_exe()?)
            .arg("--data-dir")
            .arg(log.data_dir())
            .args(["bench", "replay", "--cache-mb", &args.cache_mb.to_string()])
            .envs(global.config.as_ref().map(|c| ("TIERLOG_CONFIG", c.as_os_str().to_owned())))
            .output()?;
        anyhow::ensure!(replay.status.success(), "replay process failed: {}", String::from_utf8_lossy(&replay.stderr));
        let replay: Value = serde_json::from_slice(&replay.stdout)?;
        let remote_secs = replay["seconds"].as_f64().unwrap_or(f64::NAN);
        let records = replay["records"].as_u64().unwrap_or(0);
        anyhow::ensure!(records == end, "remote replay read {records} records, expected {end}");
        let reader = RemoteReader::new(counted.clone(), settings.clone());
        // The limit a remote replay cannot beat on one core: decompressing the same objects.
        let manifest = reader.manifest("bench", 0).await?;
        let mut objects = Vec::new();
        for entry in &manifest.entries {
            objects.push(store.store.get(&entry.key.as_str().into()).await.map_err(|e| store.error("GET", e))?.bytes().await.map_err(|e| store.error("GET", e))?);
        }
        let start = Instant::now();
        for object in &objects {
            tierlog_tiering::segment_object::decode_object_with(object, settings.keyring.as_deref(), "bench", 0)?;
        }
        let decompress_mb_s = raw_bytes as f64 / start.elapsed().as_secs_f64() / 1e6;
        // Prefetched chunks decode on every core: the limit is cores × one core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let remote_mb_s = raw_bytes as f64 / remote_secs / 1e6;
        let p = |q: f64| percentile(&latencies, q);
        let budget_mb = (settings.cache_bytes + settings.prefetch_bytes) as f64 / 1048576.0 + 64.0;
        anyhow::Ok(json!({
            "bench": "read",
            "store": store.display,
            "raw_bytes": raw_bytes, "records": end,
            "cold_seek": {
                "seeks": args.seeks,
                "requests_per_seek": round2(requests as f64 / args.seeks as f64),
                "bytes_per_seek": round2(bytes as f64 / args.seeks as f64),
                "worst_bytes_vs_compressed_chunk": round2(worst_ratio),
                "p50_ms": round2(p(0.5)), "p99_ms": round2(p(0.99)),
            },
            "local_replay": {"mb_per_s": round2(raw_bytes as f64 / local_secs / 1e6), "records_per_s": round2(end as f64 / local_secs)},
            "remote_replay": {"mb_per_s": round2(remote_mb_s), "records_per_s": round2(records as f64 / remote_secs),
                              "chunk_gets": replay["chunk_gets"], "index_gets": replay["index_gets"],
                              "buffers_reused": replay["buffers_reused"]},
            "remote_vs_local": round2(local_secs / remote_secs),
            "zstd_decompress_single_thread": {"mb_per_s": round2(decompress_mb_s)},
            "single_thread_zstd_mb_s": round2(decompress_mb_s),
            "cores": cores,
            "cores_decompress_limit_mb_s": round2(cores as f64 * decompress_mb_s),
            "remote_vs_decompress": round2(remote_mb_s / decompress_mb_s),
            "remote_vs_cores_decompress": round2(remote_mb_s / (cores as f64 * decompress_mb_s)),
            "replay_process_peak_rss_mb": replay["peak_rss_mb"],
            "rss_budget_mb": round2(budget_mb),
            "targets": {"requests_per_seek": 2, "bytes_vs_compressed_chunk": 1.1, "remote_vs_local": 0.5, "remote_vs_cores_decompress": 0.8},
        }))
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(log);
    Ok(ExitCode::SUCCESS)
}

/// Sequential replay of partition 0 of topic "bench" from the remote tier; prints seconds,
/// records, GETs and this process's peak RSS as one JSON line.
fn replay(global: &GlobalArgs, args: ReplayArgs) -> Result<ExitCode> {
    use tierlog_tiering::remote_reader::RemoteReader;
    let config = global.load_config()?;
    let mut settings = tierlog::reader::settings_with_keys(&config)?;
    settings.cache_bytes = args.cache_mb * 1024 * 1024;
    let runtime = tokio::runtime::Runtime::new()?;
    let line = runtime.block_on(async {
        let reader = RemoteReader::new(tierlog::tier::connect(&config).await?, settings);
        reader.manifest("bench", 0).await?;
        let start = Instant::now();
        let (mut next, mut records) = (0u64, 0u64);
        while let Some(chunk) = reader.read_at("bench", 0, next).await? {
            // Zero-copy views with a CRC check per batch, as the local replay does.
            let mut at = 0;
            while at < chunk.raw.len() {
                let (header, views) = tierlog::batch::views(&chunk.raw[at..])?;
                records += views.iter().filter(|v| v.offset >= next).count() as u64;
                at += header.length;
            }
            next = chunk.last_offset + 1;
        }
        let stats = &reader.stats;
        anyhow::Ok(json!({
            "seconds": start.elapsed().as_secs_f64(), "records": records,
            "chunk_gets": stats.chunk_gets.load(std::sync::atomic::Ordering::SeqCst),
            "index_gets": stats.index_gets.load(std::sync::atomic::Ordering::SeqCst),
            "buffers_reused": stats.buffers_reused.load(std::sync::atomic::Ordering::SeqCst),
            "peak_rss_mb": round2(peak_rss_bytes() as f64 / 1048576.0),
        }))
    })?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Compressed size of the chunk a seek fetched, from the (now cached) chunk index.
async fn compressed_len_of(
    reader: &tierlog_tiering::remote_reader::RemoteReader,
    chunk: &tierlog_tiering::remote_reader::RemoteChunk,
) -> Result<u64> {
    Ok(reader.chunk_meta(&chunk.key, chunk.chunk).map_or(1, |m| u64::from(m.compressed_len)))
}

/// Peak resident set size of this process (VmHWM), from /proc (Linux).
fn peak_rss_bytes() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn http(global: &GlobalArgs, args: HttpArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.producers > 0 && args.batch_records > 0 && args.requests > 0, "counts must be positive");
    let _scratch = Scratch::new(&args.dir)?;
    let mut config = global.load_config()?;
    config.data_dir = args.dir.join("log");
    config.tiering.enabled = false; // measures the serving path, not the object store
    config.durability.fsync = FsyncPolicy::Batch;
    let log = Log::open(config)?;
    let topic = log.create_topic("bench", args.producers as u32)?;
    let batch: Vec<Record> = (0..args.batch_records as u64)
        .map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, args.record_bytes))
        .collect();

    // Library rate, same batches, same concurrency (one thread per partition).
    let start = Instant::now();
    std::thread::scope(|scope| {
        let appenders: Vec<_> = (0..args.producers)
            .map(|p| {
                let (partition, batch) = (topic.partition(p as u32).expect("partition").clone(), &batch);
                scope.spawn(move || (0..args.requests).try_for_each(|_| partition.append(batch, 0).map(|_| ())))
            })
            .collect();
        appenders.into_iter().try_for_each(|a| a.join().expect("appender thread"))
    })?;
    let total_records = (args.producers * args.requests * args.batch_records) as f64;
    let library_rps = total_records / start.elapsed().as_secs_f64();

    let body: String = batch.iter().map(|r| format!("{}\n", json!({"key": String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()), "value": String::from_utf8_lossy(&r.value), "timestamp": r.timestamp}))).collect();
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let (base, _stop) = serve_in_process(&log).await?;
        let client = reqwest::Client::builder().pool_idle_timeout(std::time::Duration::from_secs(5)).build()?;
        let start = Instant::now();
        let mut producers = Vec::new();
        for p in 0..args.producers {
            let (client, url, body) =
                (client.clone(), format!("{base}/v1/topics/bench/records?partition={p}"), body.clone());
            producers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..args.requests {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "produce answered {}", r.status());
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut latencies = Vec::new();
        for p in producers {
            latencies.extend(p.await??);
        }
        let http_rps = total_records / start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let start = Instant::now();
        let mut consumers = Vec::new();
        for c in 0..args.consumers {
            let (client, base, partitions) = (client.clone(), base.clone(), args.producers);
            consumers.push(tokio::spawn(async move {
                let mut lines = 0u64;
                for p in (0..partitions).filter(|p| p % args.consumers.max(1) == c) {
                    // Lines counted on the bytes: decoding the text would put the client's
                    // UTF-8 check (a tenth of the CPU in a profile) on the server's bill.
                    let body = client
                        .get(format!("{base}/v1/topics/bench/partitions/{p}/records?from_offset=0"))
                        .send()
                        .await?
                        .bytes()
                        .await?;
                    lines += body.iter().filter(|b| **b == b'\n').count() as u64;
                }
                anyhow::Ok(lines)
            }));
        }
        let mut consumed = 0;
        for c in consumers {
            consumed += c.await??;
        }
        let consume_secs = start.elapsed().as_secs_f64();
        // The library's appends and then the HTTP ones went to the same partitions: both are read.
        let expected = 2 * (args.producers * args.requests * args.batch_records) as u64;
        anyhow::ensure!(consumed == expected, "HTTP consumers read {consumed} records, expected {expected}");
        let library_replay_rps = library_replay(&topic, args.producers, args.consumers)?;
        let fetch_rps = consumed as f64 / consume_secs;
        let p = |q: f64| percentile(&latencies, q);
        anyhow::Ok(json!({
            "bench": "http",
            "producers": args.producers, "consumers": args.consumers, "batch_records": args.batch_records,
            "record_bytes": args.record_bytes, "requests_per_producer": args.requests, "fsync": "per batch",
            "library_append": {"records_per_s": round2(library_rps)},
            "http_append": {"records_per_s": round2(http_rps), "p50_ms": round2(p(0.5)), "p99_ms": round2(p(0.99))},
            "http_vs_library": round2(http_rps / library_rps),
            "http_vs_library_target": 0.6,
            "http_fetch": {"records": consumed, "records_per_s": round2(fetch_rps), "format": "NDJSON"},
            "library_replay": {"records_per_s": round2(library_replay_rps)},
            "fetch_vs_library": round2(fetch_rps / library_replay_rps),
            "fetch_vs_library_target": 0.6,
        }))
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(log);
    Ok(ExitCode::SUCCESS)
}

/// Records per second that `consumers` threads reach reading every record of the topic's
/// first `partitions` partitions (split among them as the HTTP consumers split them) through
/// the library: `read_chunk` and CRC-checked record views, as `bench append` reads.
fn library_replay(topic: &tierlog::topic::Topic, partitions: usize, consumers: usize) -> Result<f64> {
    let consumers = consumers.max(1);
    let start = Instant::now();
    let records = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..consumers)
            .map(|c| {
                scope.spawn(move || {
                    let mut records = 0u64;
                    for p in (0..partitions).filter(|p| p % consumers == c) {
                        records += read_all(topic.partition(p as u32)?)?.1;
                    }
                    anyhow::Ok(records)
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().expect("replay thread")).sum::<Result<u64>>()
    })?;
    Ok(records as f64 / start.elapsed().as_secs_f64())
}

/// A bench's scratch directory: created if missing, or used if empty, and emptied (removed, if
/// the bench created it) when dropped. A directory that exists with anything in it is refused:
/// a bench deletes only what it created, never a `--dir` that happened to be someone's data.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    created: bool,
}

impl Scratch {
    pub(super) fn new(dir: &Path) -> Result<Scratch> {
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                anyhow::ensure!(
                    entries.next().is_none(),
                    "{} exists and is not empty: give --dir a new or empty directory (the bench deletes what it \
                     writes there, so it refuses to start where something else lives)",
                    dir.display()
                );
                Ok(Scratch { dir: dir.to_path_buf(), created: false })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
                Ok(Scratch { dir: dir.to_path_buf(), created: true })
            }
            Err(e) => Err(e).with_context(|| format!("read {}", dir.display())),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.created {
            let _ = fs::remove_dir_all(&self.dir);
            return;
        }
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let _ = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        }
    }
}
