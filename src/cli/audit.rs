//! `tierlog audit`: the audit trail in the bucket (docs/AUDIT.md), as JSON lines.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog::time::parse_time;
use tierlog_tiering::audit;

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only events at or after this time (RFC 3339, epoch ms, or relative: -1h).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub from_time: Option<i64>,
    /// Only events before this time.
    #[arg(long, value_name = "T", value_parser = parse_time)]
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
    let stored = runtime.block_on(async {
        let remote = tierlog::tier::connect(&config).await?;
        anyhow::Ok(audit::read_all(&remote).await?)
    })?;
    let mut unreadable = 0;
    for item in &stored {
        let record = match &item.record {
            Ok(record) => record,
            Err(e) => {
                eprintln!("audit: {e}");
                unreadable += 1;
                continue;
            }
        };
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
    if unreadable > 0 {
        eprintln!("audit: {unreadable} record(s) could not be read; `tierlog verify` checks the whole trail");
        return Ok(ExitCode::from(super::verify::EXIT_DAMAGE));
    }
    Ok(ExitCode::SUCCESS)
}
