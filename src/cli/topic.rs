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
    #[command(
        after_help = "Examples:\n  tierlog topic create payments --partitions 3\n  tierlog topic create ledger --set message.timestamp.type=LogAppendTime"
    )]
    Create {
        topic: String,
        /// Number of partitions (default: log.default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// A per-topic setting under Kafka's name, KEY=VALUE (repeatable; kafka-topics' and rpk's
        /// --config): message.timestamp.type=CreateTime|LogAppendTime (which timestamps Kafka
        /// clients see).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// List topics, one JSON line each.
    List,
    /// Show a topic's partitions with their offsets and local bytes.
    Describe { topic: String },
}

pub fn run(global: &GlobalArgs, cmd: TopicCommand) -> Result<ExitCode> {
    if global.server.is_some() {
        let client = super::client::Client::new(global)?;
        match cmd {
            TopicCommand::Create { topic, partitions, settings } => {
                client.create_topic(&topic, partitions, &settings)?
            }
            TopicCommand::List => client.list_topics()?,
            TopicCommand::Describe { topic } => client.describe_topic(&topic)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = global.load_config()?;
    match cmd {
        TopicCommand::Create { topic, partitions, settings } => {
            let partitions = partitions.unwrap_or(config.log.default_partitions as u32);
            let timestamps =
                tierlog::topic::timestamp_type_from_settings(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let log = Log::open(config)?;
            let created = log.create_topic_with(&topic, partitions, timestamps)?;
            println!(
                "{}",
                json!({"topic": created.name(), "partitions": created.metadata.partitions, "created": true,
                       "message.timestamp.type": timestamps.as_str()})
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
            let reader = tierlog::reader::Reader::new(log.clone());
            let runtime = tokio::runtime::Runtime::new()?;
            for p in &topic.partitions {
                let sealed = p.sealed_segments();
                let local_bytes: u64 = sealed.iter().map(|s| s.bytes).sum::<u64>() + p.active_bytes();
                // Same shape as GET /v1/topics/{topic}, so scripts work against either.
                let start = runtime.block_on(reader.start_offset(p))?;
                println!(
                    "{}",
                    json!({
                        "topic": topic.name(), "partition": p.id, "start_offset": start, "end_offset": p.end_offset(),
                        "local": {"start_offset": p.start_offset(), "bytes": local_bytes, "sealed_segments": sealed.len()},
                        "remote_only_below": (start < p.start_offset()).then(|| p.start_offset()),
                    })
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: expected KEY=VALUE, e.g. message.timestamp.type=LogAppendTime")),
    }
}
