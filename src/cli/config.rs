//! `tierlog config show`: the effective configuration, each setting with where its value came
//! from (flag, environment variable, file or default), so "which value is in force?" has one
//! answer. Token hashes are shown by token name only.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// One JSON line per setting: {"key","value","source"}, source "flag", "env TIERLOG_…",
    /// "file" or "default".
    #[command(
        after_help = "Example:\n  TIERLOG_SEGMENT_MAX_BYTES=1048576 tierlog --config config/local.toml config show"
    )]
    Show,
}

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Show => {
            let settings = tierlog::config::Config::explain(global.config.as_deref(), std::env::vars().collect())?;
            for (key, value, source) in settings {
                let (value, source) = match (&global.data_dir, key.as_str()) {
                    (Some(dir), "data_dir") => (json!(dir), "flag --data-dir".to_string()),
                    _ => (serde_json::to_value(&value)?, source),
                };
                println!("{}", json!({"key": key, "value": value, "source": source}));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
