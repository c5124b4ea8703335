//! `tierlog audit`: the audit trail in the bucket (docs/AUDIT.md), as JSON lines. The chain
//! of the records read is checked too: a trail with a gap, a broken link, a duplicate or a
//! stray object is printed (what can be read) but reported on stderr, exit 3, never as complete.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog::time::parse_time;
use tierlog_tiering::audit;

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only events at or after this time (RFC 3339, epoch ms, or relative: -1h).
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub from_time: Option<i64>,
    /// Only events before this time.
    #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
    pub to_time: Option<i64>,
    /// Only events of this topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,
}

pub fn run(global: &GlobalArgs, args: AuditArgs) -> Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from_time, args.to_time) {
        anyhow::ensure!(from < to, "--from-time must be before --to-time");
    }
    let config = global.load_config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (stored, summary) = runtime.block_on(async {
        let remote = tierlog::tier::connect(&config).await?;
        let stored = audit::read_all(&remote).await?;
        let summary = audit::check_chain(&remote, &stored);
        anyhow::Ok((stored, summary))
    })?;
    for item in &stored {
        // Strays and duplicates are not records of the trail: reported below, never printed.
        let Ok(record) = &item.record else { continue };
        if summary.problems.iter().any(|p| p.kind == "audit_duplicate" && p.key == item.key) {
            continue;
        }
        for event in &record.events {
            let in_time =
                args.from_time.is_none_or(|t| event.time_ms >= t) && args.to_time.is_none_or(|t| event.time_ms < t);
            let in_topic = args.topic.as_ref().is_none_or(|t| event.topic.as_ref() == Some(t));
            if in_time && in_topic {
                let mut line = serde_json::to_value(event)?;
                line["seq"] = record.seq.into();
                line["writer"] = record.writer.clone().into();
                println!("{line}");
            }
        }
    }
    if !summary.problems.is_empty() {
        for problem in &summary.problems {
            eprintln!("audit: {}: {} (record {}): {}", problem.kind, problem.key, problem.seq, problem.detail);
        }
        eprintln!(
            "audit: the trail is not complete or not intact ({} problem(s)); what is printed is not the whole story",
            summary.problems.len()
        );
        return Ok(ExitCode::from(super::verify::EXIT_DAMAGE));
    }
    Ok(ExitCode::SUCCESS)
}
