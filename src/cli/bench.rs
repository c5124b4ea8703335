//! `tierlog bench`: benchmarks that print JSON and compare tierlog against limits measured in
//! the same run, on the same disk and data (absolute numbers on shared machines are noise;
//! ratios are the result).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
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
}

#[derive(Args, Debug)]
pub struct TierArgs {
    /// Scratch directory (removed afterwards; the embedded remote goes beside its log).
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
    /// Scratch directory on the disk to measure (removed afterwards).
    #[arg(long, default_value = "tierlog-bench")]
    pub dir: PathBuf,
    /// Bytes appended per round.
    #[arg(long, default_value_t = 256)]
    pub total_mb: u64,
    /// Size of each record value (JSON payment events).
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

fn append(global: &GlobalArgs, args: AppendArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.rounds > 0 && args.batch_records > 0 && args.total_mb > 0,
        "--rounds, --batch-records and --total-mb must be positive"
    );
    let batch: Vec<Record> = (0..args.batch_records as u64)
        .map(|i| tierlog::sample::payment_event(i, 1_700_000_000_000 + i as i64, args.record_bytes))
        .collect();
    let batch_bytes = tierlog::batch::encode(0, &batch).len();
    let batches = (args.total_mb * 1_000_000).div_ceil(batch_bytes as u64);
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let progress = indicatif::ProgressBar::new((args.rounds * 4) as u64).with_message("bench append");
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let dir = args.dir.join(format!("round-{round}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let raw_write_mb_s = raw_write(&dir.join("raw.bin"), batch_bytes, batches)?;
        progress.inc(1);
        let mut config = global.load_config()?;
        config.data_dir = dir.join("log");
        config.durability.fsync = FsyncPolicy::Batch;
        let log = Log::open(config)?;
        let partition = log.create_topic("bench", 1)?.partition(0)?.clone();
        let start = Instant::now();
        for _ in 0..batches {
            partition.append(&batch, 0)?;
        }
        let secs = start.elapsed().as_secs_f64();
        let log_bytes = partition.active_bytes() + partition.sealed_segments().iter().map(|s| s.bytes).sum::<u64>();
        progress.inc(1);
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
        let read_secs = start.elapsed().as_secs_f64();
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
        fs::remove_dir_all(&dir)?;
    }
    progress.finish_and_clear();
    let _ = fs::remove_dir(&args.dir);
    let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let (append_mb_s, raw_write_mb_s, read_mb_s, raw_read_mb_s) =
        (m(|r| r.append_mb_s), m(|r| r.raw_write_mb_s), m(|r| r.read_mb_s), m(|r| r.raw_read_mb_s));
    let report = json!({
        "bench": "append",
        "record_bytes": args.record_bytes, "batch_records": args.batch_records, "batch_bytes": batch_bytes,
        "bytes_per_round": batches * batch_bytes as u64, "rounds": args.rounds,
        "append": {"mb_per_s": round2(append_mb_s), "records_per_s": round2(m(|r| r.append_records_s)), "fsync": "per batch"},
        "raw_write_fdatasync": {"mb_per_s": round2(raw_write_mb_s), "write_bytes": batch_bytes},
        "append_vs_raw": round2(append_mb_s / raw_write_mb_s),
        "append_target": 0.6,
        "sequential_read": {"mb_per_s": round2(read_mb_s), "records_per_s": round2(m(|r| r.read_records_s))},
        "raw_read": {"mb_per_s": round2(raw_read_mb_s)},
        "read_vs_raw": round2(read_mb_s / raw_read_mb_s),
        "read_target": 0.5,
        "note": "reads of freshly written files come from the page cache for both tierlog and the raw reader",
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The disk's limit for this workload: `count` writes of `size` bytes, each followed by
/// fdatasync, into a preallocated-by-append file, exactly as a segment is written.
fn raw_write(path: &Path, size: usize, count: u64) -> Result<f64> {
    let buf = vec![0x5au8; size];
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(&buf)?;
        file.sync_data()?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(path)?;
    Ok((size as u64 * count) as f64 / secs / 1e6)
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

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn tier(global: &GlobalArgs, args: TierArgs) -> Result<ExitCode> {
    let _ = fs::remove_dir_all(&args.dir);
    fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let mut config = global.load_config()?;
    config.data_dir = args.dir.join("log");
    config.durability.fsync = FsyncPolicy::Never; // this bench measures tiering, not appends
    config.segment.max_bytes = config.segment.max_bytes.min(64 * 1024 * 1024);
    config.tiering.local_retention_bytes = u64::MAX >> 2;
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
    let report = json!({
        "bench": "tier",
        "store": store,
        "segments": segments.len(), "raw_bytes": raw_bytes, "object_bytes": object_bytes,
        "record_bytes": args.record_bytes, "zstd_level": level, "chunk_bytes": config.tiering.chunk_bytes,
        "upload_concurrency": config.tiering.upload_concurrency,
        "tier": {"raw_mb_per_s": round2(tier_mb_s), "seconds": round2(secs)},
        "zstd_single_thread": {"mb_per_s": round2(zstd_mb_s), "ratio": round2(raw_bytes as f64 / zstd_out as f64)},
        "compression_ratio": round2(raw_bytes as f64 / object_bytes as f64),
        "tier_vs_zstd": round2(tier_mb_s / zstd_mb_s),
        "tier_target": 0.7,
        "ratio_target": 4.0,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    drop(log);
    fs::remove_dir_all(&args.dir)?;
    Ok(ExitCode::SUCCESS)
}
