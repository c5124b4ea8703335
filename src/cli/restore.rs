//! `tierlog restore`: rebuild a data directory from the bucket alone.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tierlog::restore::{self, RestoreOptions};

use super::GlobalArgs;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Only this topic (repeat for several; default: every topic in the bucket's catalog).
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Continue under a new writer identity and fence the old writer now (a take-over
    /// version on every partition's manifest). Without it the restored node continues the old
    /// writer's identity; a still-running old node is then fenced at its next commit.
    #[arg(long)]
    pub take_over: bool,
}

pub fn run(global: &GlobalArgs, args: RestoreArgs) -> Result<ExitCode> {
    let config = global.load_config()?;
    let data_dir = config.data_dir.clone();
    let options = RestoreOptions { topics: args.topics, take_over: args.take_over };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let progress = indicatif::ProgressBar::new(0).with_message(format!("restoring into {}", data_dir.display()));
    let on_partition = |restored: &restore::RestoredPartition, total: usize| {
        progress.set_length(total as u64);
        progress.inc(1);
        progress.suspend(|| println!("{}", serde_json::to_string(restored).expect("a partition serializes")));
    };
    let report = runtime.block_on(async {
        let remote = tierlog::tier::connect(&config).await?;
        restore::restore(config, &remote, &options, &on_partition).await
    });
    progress.finish_and_clear();
    let report = report.with_context(|| format!("restoring {}", data_dir.display()))?;
    println!("{}", serde_json::json!({ "restored": report }));
    Ok(ExitCode::SUCCESS)
}
