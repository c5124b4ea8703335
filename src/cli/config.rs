//! `tierlog config show`: the effective configuration, each setting with where its value came
//! from (flag, environment variable, file or default), so "which value is in force?" has one
//! answer. Token hashes are shown by token name only. For an S3 remote tier, the region,
//! endpoint and CA bundle left empty in the configuration show what the AWS conventions give
//! them (`env AWS_REGION`, `AWS profile 'default' …`, `env AWS_ENDPOINT_URL_S3`,
//! `env AWS_CA_BUNDLE`), as the connection will use them.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

use tierlog_tiering::store::{Resolved, S3Connection};

use super::GlobalArgs;

/// The S3 connection settings as `connect` resolves them; `None` for a local remote tier.
fn s3_connection(global: &GlobalArgs) -> Result<Option<S3Connection>> {
    let config = global.load_config()?;
    let remote = tierlog::tier::remote_config(&config);
    if !remote.url.starts_with("s3://") {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(Some(runtime.block_on(S3Connection::resolve(&remote))?))
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// One JSON line per setting: {"key","value","source"}, source "flag", "env TIERLOG_…",
    /// "file" or "default"; with an s3:// remote, an empty remote.region, remote.endpoint or
    /// remote.ca_file shows what the AWS chain gives it ("env AWS_REGION", "AWS profile …",
    /// "env AWS_ENDPOINT_URL_S3", "env AWS_CA_BUNDLE", …).
    #[command(
        after_help = "Example:\n  TIERLOG_SEGMENT_MAX_BYTES=1048576 tierlog --config config/local.toml config show"
    )]
    Show,
}

pub fn run(global: &GlobalArgs, cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Show => {
            let settings = tierlog::config::Config::explain(global.config.as_deref(), std::env::vars().collect())?;
            let s3 = s3_connection(global)?;
            for (key, value, source) in settings {
                let from_aws = |resolved: Option<&Resolved>| {
                    resolved.filter(|_| value.as_str() == Some("")).map(|r| (json!(r.value), r.source.clone()))
                };
                let aws = s3.as_ref().and_then(|s3| match key.as_str() {
                    "remote.region" => from_aws(Some(&s3.region)),
                    "remote.endpoint" => from_aws(s3.endpoint.as_ref()),
                    "remote.ca_file" => from_aws(
                        s3.ca
                            .as_ref()
                            .map(|ca| Resolved { value: ca.path.clone(), source: ca.source.clone() })
                            .as_ref(),
                    ),
                    _ => None,
                });
                let (value, source) = match (&global.data_dir, key.as_str(), aws) {
                    (Some(dir), "data_dir", _) => (json!(dir), "flag --data-dir".to_string()),
                    (_, _, Some(aws)) => aws,
                    _ => (serde_json::to_value(&value)?, source),
                };
                println!("{}", json!({"key": key, "value": value, "source": source}));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
