//! `tierlog demo`: the guided tour on the embedded default. Writes a day of payment events,
//! then reads them back by offset and by time, explaining each step for a newcomer. The day is
//! simulated: each batch is appended a moment after its events happened (its append time is
//! that simulated instant), and one payment stamped 13:55 only arrives at 16:40, to show the
//! difference between the producers' timestamps and what the log knew when.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use tierlog::Log;
use tierlog::config::Config;
use tierlog::time::{format_time, parse_time};

use super::GlobalArgs;

/// Marks a directory as created by the demo, so a rerun may replace it and nothing else.
const DEMO_MARKER: &str = "TIERLOG_DEMO";
/// 00:00 UTC on 3 March 2026: the simulated day starts here.
const DAY_START: &str = "2026-03-03T00:00:00Z";
const DAY_MS: i64 = 24 * 3600 * 1000;
const MINUTE_MS: i64 = 60 * 1000;
/// Batches reach the log this long after their newest event.
const DELIVERY_MS: i64 = 2_000;
/// The late payment: stamped 13:55 by its producer, appended at 16:40.
const LATE_STAMPED_MS: i64 = (13 * 60 + 55) * MINUTE_MS;
const LATE_ARRIVES_MS: i64 = (16 * 60 + 40) * MINUTE_MS;
/// The question of step 5: 14:02.
const QUESTION_MS: i64 = (14 * 60 + 2) * MINUTE_MS;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Payment events to write (at least 100, so every partition has some).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub events: u64,
    /// Directory for the demo's data (replaced on each run). Default: ./tierlog-demo.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(global: &GlobalArgs, args: DemoArgs) -> Result<ExitCode> {
    let dir = args.dir.clone().or_else(|| global.data_dir.clone()).unwrap_or_else(|| PathBuf::from("tierlog-demo"));
    prepare_dir(&dir)?;
    let mut config = global.load_config()?;
    config.data_dir = dir.join("data");
    // Small segments so a demo-sized log spans many of them, as a real one would.
    config.segment.max_bytes = 1024 * 1024;
    // Keep a little locally and tier the rest, to show both tiers at work.
    config.tiering.local_retention_bytes = 1024 * 1024;
    config.tiering.local_retention_ms = 100 * 365 * 24 * 3600 * 1000; // demo events are dated 2026-03-03
    config.remote.url = String::new(); // the embedded default, beside the demo's data dir
    println!("tierlog demo — an append-only log you can replay by offset or by time\n");
    println!(
        "1. Opening a fresh log in {} (segments roll every 1 MiB here; 128 MiB by default).",
        config.data_dir.display()
    );
    let log = Log::open(config.clone())?;
    let topic = log.create_topic("payments", 3)?;
    println!("   Created topic 'payments' with 3 partitions; records with the same account key share a partition.\n");

    let day_start = parse_time(DAY_START).map_err(anyhow::Error::msg)?;
    println!(
        "2. Writing {} card payments spread over {} (UTC), in batches, fsync per batch...",
        args.events,
        &DAY_START[..10]
    );
    println!("   (The day is simulated: each batch is appended {} s after its events.)", DELIVERY_MS / 1000);
    let written = write_events(&topic, args.events, day_start)?;
    for p in &topic.partitions {
        println!(
            "   partition {}: offsets {}..{} in {} sealed segments + 1 active",
            p.id,
            p.start_offset(),
            p.end_offset(),
            p.sealed_segments().len()
        );
    }
    println!(
        "   {written} records are durable, one of them late: stamped {} by its producer, it reached the log at {}.\n",
        &format_time(day_start + LATE_STAMPED_MS)[11..16],
        &format_time(day_start + LATE_ARRIVES_MS)[11..16]
    );

    let runtime = tokio::runtime::Runtime::new()?;
    tier_to_remote(&runtime, &log, &config)?;
    runtime.block_on(describe_reads(&log, day_start))?;
    drop(log);
    println!("Explore it yourself:");
    println!(
        "  tierlog --data-dir {} consume payments --partition 0 --from-offset 100 --max-records 3",
        config.data_dir.display()
    );
    println!("  tierlog --data-dir {} offsets payments --time 2026-03-03T14:02:00Z", config.data_dir.display());
    println!("  tierlog --data-dir {} snapshot --as-of 2026-03-03T14:02:00Z", config.data_dir.display());
    println!(
        "  tierlog --data-dir {} consume payments --as-of 2026-03-03T14:02:00Z --from-time 2026-03-03T13:50:00Z --to-time 2026-03-03T14:00:00Z",
        config.data_dir.display()
    );
    println!("  tierlog --data-dir {} tier status payments", config.data_dir.display());
    Ok(ExitCode::SUCCESS)
}

fn prepare_dir(dir: &std::path::Path) -> Result<()> {
    if dir.exists() {
        if !dir.join(DEMO_MARKER).exists() {
            bail!(
                "{} exists and was not created by `tierlog demo`; pass --dir with a new or demo directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(DEMO_MARKER), "created by `tierlog demo`; safe to delete\n")?;
    Ok(())
}

/// Writes the day's events in batches, one per partition each simulated minute (or 500
/// events), each appended (by the simulated clock) a moment after its newest event; and the
/// late payment when the day reaches 16:40.
fn write_events(topic: &tierlog::topic::Topic, events: u64, day_start: i64) -> Result<u64> {
    let progress = indicatif::ProgressBar::new(events);
    let step = DAY_MS / events.max(1) as i64;
    let mut batch: Vec<Vec<tierlog::Record>> = vec![Vec::new(); topic.partitions.len()];
    let mut late_sent = false;
    for n in 0..events {
        // Producers' clocks disagree a little: some events arrive with an earlier timestamp.
        let jitter = if n % 10 == 3 { -2 * step } else { 0 };
        let happened = day_start + n as i64 * step;
        if !late_sent && happened + DELIVERY_MS >= day_start + LATE_ARRIVES_MS {
            // A terminal that was offline since 13:55 delivers its payment hours late.
            let late = tierlog::sample::payment_event(events, day_start + LATE_STAMPED_MS, 600);
            let p = topic.partition_for(late.key.as_deref());
            topic.partition(p)?.append(&[late], day_start + LATE_ARRIVES_MS)?;
            late_sent = true;
        }
        let record = tierlog::sample::payment_event(n, happened + jitter, 600);
        let p = topic.partition_for(record.key.as_deref());
        batch[p as usize].push(record);
        let minute_ends = (happened + step) / MINUTE_MS != happened / MINUTE_MS;
        if minute_ends || batch.iter().map(Vec::len).sum::<usize>() >= 500 || n + 1 == events {
            for (p, records) in batch.iter_mut().enumerate().filter(|(_, r)| !r.is_empty()) {
                topic.partition(p as u32)?.append(records, happened + DELIVERY_MS)?;
                records.clear();
            }
            progress.set_position(n + 1);
        }
    }
    progress.finish_and_clear();
    Ok(events + u64::from(late_sent))
}

async fn describe_reads(log: &Log, day_start: i64) -> Result<()> {
    let reader = tierlog::reader::Reader::new(log.clone());
    let topic = log.topic("payments")?;
    let p0 = topic.partition(0)?;
    println!("4. Reading by offset, one reader over both tiers (partition 0, an old record and the newest):");
    for offset in [p0.end_offset() / 8, p0.end_offset().saturating_sub(1)] {
        let tier = if offset >= p0.start_offset() { "local disk" } else { "remote tier: one ranged GET of one chunk" };
        let record = reader.read(p0, offset, 64 * 1024).await?.into_iter().next().context("offset should exist")?;
        println!(
            "   offset {} ({tier}) at {}: {}",
            record.offset,
            format_time(record.record.timestamp),
            preview(&record.record.value)
        );
    }
    println!();
    let question = day_start + QUESTION_MS;
    let hhmm = |ms: i64| format_time(ms)[11..16].to_string();
    println!("5. Point in time: \"what did we know at {}?\"", format_time(question));
    println!("   Every record keeps two clocks: the timestamp its producer gave it, and the time the log appended it.");
    let (mut stamped_before, mut known, mut late) = (0, 0, Vec::<(u32, tierlog::record::StoredRecord)>::new());
    for p in &topic.partitions {
        let cut = reader.offset_as_of(p, question).await?;
        let tier = if cut >= p.start_offset() { "local" } else { "remote" };
        println!("   partition {}: as of {}, the log ended at offset {cut} ({tier} tier)", p.id, hhmm(question));
        let mut next = reader.start_offset(p).await?;
        loop {
            let records = reader.read(p, next, 1 << 20).await?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for r in records.iter().filter(|r| r.record.timestamp < question) {
                stamped_before += 1;
                if r.offset < cut {
                    known += 1;
                } else {
                    late.push((p.id, r.clone()));
                }
            }
        }
    }
    println!("   By the producers' timestamps, {stamped_before} payments happened before {}.", hhmm(question));
    println!("   As of {} the log had received {known} of them; {} arrived later.", hhmm(question), late.len());
    let delay = |r: &tierlog::record::StoredRecord| r.append_time.unwrap_or(i64::MAX) - r.record.timestamp;
    if let Some((p, r)) = late.iter().max_by_key(|(_, r)| delay(r)) {
        let appended = r.append_time.map_or_else(|| "?".to_string(), hhmm);
        println!(
            "   The latest: partition {p} offset {}, stamped {} but appended at {}.",
            r.offset,
            hhmm(r.record.timestamp),
            appended
        );
    }
    println!("   Event-time replay includes them; as-of replay does not: it is what we knew, for an audit.");
    println!("   Asking again returns the same records every time (tierlog snapshot / consume --as-of).\n");
    Ok(())
}

fn tier_to_remote(runtime: &tokio::runtime::Runtime, log: &Log, config: &Config) -> Result<()> {
    println!("3. Tiering: sealed segments are compressed (zstd, 4 MiB chunks) and uploaded to the remote tier.");
    println!("   Here the remote is the embedded default, a directory: {}", config.remote_url());
    println!("   (point remote.url at s3://bucket/prefix for MinIO, AWS S3, Garage or Ceph).");
    let reports = runtime.block_on(async {
        let tiering = tierlog::tier::Tiering::start(log.clone()).await?;
        anyhow::Ok(tiering.run_once(Some("payments"), true).await?)
    })?;
    let (mut raw, mut stored, mut segments) = (0, 0, 0);
    for r in &reports {
        if let Some(error) = &r.error {
            bail!("tiering partition {} failed: {error}", r.partition);
        }
        (raw, stored, segments) =
            (raw + r.uploaded_raw_bytes, stored + r.uploaded_object_bytes, segments + r.uploaded_segments);
    }
    println!(
        "   Uploaded {segments} segments: {:.1} MB of log became {:.1} MB in the bucket ({:.1}x smaller).",
        raw as f64 / 1e6,
        stored as f64 / 1e6,
        raw as f64 / stored.max(1) as f64
    );
    let topic = log.topic("payments")?;
    for (p, r) in topic.partitions.iter().zip(&reports) {
        println!(
            "   partition {}: remote tier holds offsets 0..{}, local disk keeps {}..{} ({} segments deleted locally by retention)",
            p.id,
            r.remote_end_offset,
            p.start_offset(),
            p.end_offset(),
            r.deleted_local_segments
        );
    }
    println!("   Each object decodes with the standard tool: zstd -d < object.zst > segment.log\n");
    Ok(())
}

fn preview(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    if text.len() > 160 { format!("{}…", &text[..160]) } else { text.into_owned() }
}
