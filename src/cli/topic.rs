//! `tierlog topic create|list|describe`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use tierlog::Log;

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = "Example:\n  tierlog topic create payments --partitions 3")]
    Create {
        topic: String,
        /// Number of partitions (default: log.default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// List topics, one JSON line each.
    List,
    /// Show a topic's partitions with their offsets and local bytes.
    Describe { topic: String },
}

pub fn run(global: &GlobalArgs, cmd: TopicCommand) -> Result<ExitCode> {
    let config = global.load_config()?;
    match cmd {
        TopicCommand::Create { topic, partitions } => {
            let partitions = partitions.unwrap_or(config.log.default_partitions as u32);
            let log = Log::open(config)?;
            let created = log.create_topic(&topic, partitions)?;
            println!(
                "{}",
                json!({"topic": created.name(), "partitions": created.metadata.partitions, "created": true})
            );
        }
        TopicCommand::List => {
            let log = Log::open_read_only(config)?;
            for topic in log.topics() {
                println!("{}", json!({"topic": topic.name(), "partitions": topic.metadata.partitions}));
            }
        }
        TopicCommand::Describe { topic } => {
            let log = Log::open_read_only(config)?;
            let topic = log.topic(&topic)?;
            for p in &topic.partitions {
                let sealed = p.sealed_segments();
                let sealed_bytes: u64 = sealed.iter().map(|s| s.bytes).sum();
                println!(
                    "{}",
                    json!({
                        "topic": topic.name(), "partition": p.id,
                        "start_offset": p.start_offset(), "end_offset": p.end_offset(),
                        "sealed_segments": sealed.len(), "local_bytes": sealed_bytes + p.active_bytes(),
                    })
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
