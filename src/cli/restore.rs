//! `tierlog restore`: rebuild a data directory from the bucket alone.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog::replica::{self, PointSpec};
use tierlog::restore::{self, RestoreOptions};
use tierlog_tiering::audit::{Event, action};

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Only this topic (repeat for several; default: every topic in the bucket's catalog).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Continue under a new writer identity and fence the old writer now (a take-over
    /// version on every partition's manifest). Without it the restored node continues the old
    /// writer's identity; a still-running old node is then fenced at its next commit.
    #[arg(long, conflicts_with_all = ["to_offset", "to_time"])]
    pub take_over: bool,
    /// Restore to a point: every partition ends before this offset (rounded down to the
    /// batch holding it). The result is read-only (history goes on past it in the bucket).
    #[arg(long, value_name = "N", conflicts_with = "to_time")]
    pub to_offset: Option<u64>,
    /// Restore to a point: what the log had appended at or before T (RFC 3339, a date,
    /// epoch ms, s:<epoch s>, or -15m/-1h/-2d). The result is read-only.
    #[arg(long, value_name = "T", value_parser = tierlog::time::parse_time, allow_hyphen_values = true)]
    pub to_time: Option<i64>,
}

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> Result<ExitCode> {
    let config = global.load_config()?;
    let data_dir = config.data_dir.clone();
    let point = match (args.to_offset, args.to_time) {
        (Some(offset), _) => Some(PointSpec::ToOffset(offset)),
        (_, Some(time)) => Some(PointSpec::ToTime(time)),
        _ => None,
    };
    if let Some(to) = point {
        return restore_to_point(global, config, &args.topics, to);
    }
    let options = RestoreOptions { topics: args.topics, take_over: args.take_over };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (progress, on_partition) = progress_lines::<restore::RestoredPartition>(&data_dir);
    let restored = runtime.block_on(async {
        let remote = tierlog::tier::connect(&config).await?;
        let report = restore::restore(config, &remote, &options, &on_partition).await?;
        Ok::<_, tierlog::Error>((remote, report))
    });
    progress.finish_and_clear();
    let (remote, report) = restored.with_context(|| format!("restoring {}", data_dir.display()))?;
    println!("{}", serde_json::json!({ "restored": report }));
    // A take-over changes who may write the archive; a restore, where its writer continues.
    let action = if report.took_over { action::TAKE_OVER } else { action::RESTORE };
    let after = serde_json::json!({"writer_id": report.writer_id, "topics": options.topics, "partitions": report.partitions,
        "catalog_version": report.catalog_version, "data_dir": data_dir.display().to_string()});
    let event = Event::new(tierlog::partition::now_ms(), &tierlog::audit::os_actor(), action).after(after);
    runtime.block_on(tierlog::audit::append_now(&remote, event))?;
    Ok(ExitCode::SUCCESS)
}

/// `restore --to-offset/--to-time`: a read-only directory of the bucket's history up to a point.
fn restore_to_point(
    global: &GlobalArgs,
    config: tierlog::config::Config,
    topics: &[String],
    to: PointSpec,
) -> Result<ExitCode> {
    let data_dir = config.data_dir.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (progress, on_partition) = progress_lines::<replica::PointPartition>(&data_dir);
    let report = runtime.block_on(async {
        let remote = tierlog::tier::connect(&config).await?;
        replica::restore_to_point(config, remote, topics, to, &on_partition).await
    });
    progress.finish_and_clear();
    let report = report.with_context(|| format!("restoring {} to a point", data_dir.display()))?;
    println!("{}", serde_json::json!({ "restored": report, "read_only": true }));
    let config_arg = global.config.as_ref().map(|c| format!("--config {} ", c.display())).unwrap_or_default();
    eprintln!(
        "read-only: serve it with `tierlog {config_arg}--data-dir {dir} serve --replica`, or read it with `tierlog {config_arg}--data-dir {dir} consume TOPIC`",
        dir = data_dir.display()
    );
    if report.incomplete > 0 {
        eprintln!(
            "note: {} partition(s) have \"complete\": false: the bucket holds nothing of them after the point, so records the writer had by then but never tiered are not in this copy",
            report.incomplete
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A progress bar over the partitions restored into `data_dir`, and the callback that moves
/// it and prints each partition's JSON line above it.
fn progress_lines<P: serde::Serialize>(
    data_dir: &std::path::Path,
) -> (indicatif::ProgressBar, impl Fn(&P, usize) + Sync) {
    let progress = indicatif::ProgressBar::new(0).with_message(format!("restoring into {}", data_dir.display()));
    let bar = progress.clone();
    let on_partition = move |restored: &P, total: usize| {
        bar.set_length(total as u64);
        bar.inc(1);
        bar.suspend(|| println!("{}", serde_json::to_string(restored).expect("a partition serializes")));
    };
    (progress, on_partition)
}
