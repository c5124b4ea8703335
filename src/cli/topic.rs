//! `tierlog topic create|alter|list|describe`.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use tierlog::Log;
use tierlog::audit::os_actor;
use tierlog::partition::now_ms;
use tierlog::settings::{NewTopicSettings, SettingsChange};

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(after_help = CREATE_EXAMPLES)]
    Create {
        topic: String,
        /// Number of partitions (default: log.default_partitions).
        #[arg(long)]
        partitions: Option<u32>,
        /// A per-topic setting under Kafka's name, KEY=VALUE (repeatable; kafka-topics' and rpk's
        /// --config). Settings not given come from the configuration (see below).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Change a topic's own settings; a running server (--server) applies them at once.
    #[command(after_help = ALTER_EXAMPLES)]
    Alter {
        topic: String,
        /// Set a per-topic setting, KEY=VALUE (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
        set: Vec<(String, String)>,
        /// Remove the topic's own value of KEY: the configuration's applies again (repeatable).
        #[arg(long = "unset", value_name = "KEY")]
        unset: Vec<String>,
    },
    /// List topics, one JSON line each.
    List,
    /// Show a topic's settings in force (and where each comes from), then its partitions with
    /// their offsets and local bytes, one JSON line each.
    Describe { topic: String },
}

/// The per-topic settings, for `--help` (a macro: `concat!` takes only literals).
macro_rules! settings_help {
    () => {
        "Per-topic settings (Kafka's names; unset ones fall back to the configuration key):
  retention.ms           tiering.remote_retention_ms    how long the log keeps a segment (-1: forever)
  retention.bytes        tiering.remote_retention_bytes remote bytes per partition (-1: no limit)
  local.retention.ms     tiering.local_retention_ms     tiered segments stay local at least this long
  local.retention.bytes  tiering.local_retention_bytes  local bytes of tiered segments per partition
  remote.storage.enable  tiering.enabled                tier the topic at all (true|false)
  segment.bytes          segment.max_bytes              roll the active segment at this size
  segment.ms             segment.max_age_ms             roll the active segment at this age
  message.timestamp.type (CreateTime)                   CreateTime|LogAppendTime; fixed at creation"
    };
}

const CREATE_EXAMPLES: &str = concat!(
    "Examples:
  tierlog topic create payments --partitions 3
  tierlog topic create ledger --set message.timestamp.type=LogAppendTime
  tierlog topic create audit --set retention.ms=315360000000 --set local.retention.bytes=0
  tierlog topic create scratch --set remote.storage.enable=false --set segment.bytes=16777216

",
    settings_help!()
);

const ALTER_EXAMPLES: &str = concat!(
    "Examples:
  tierlog topic alter payments --set segment.bytes=67108864 --set local.retention.ms=3600000
  tierlog topic alter payments --unset segment.bytes
  tierlog --server http://127.0.0.1:7070 topic alter payments --set retention.ms=2592000000

Without --server, the data directory is altered under its writer lock (no server may run on it).
remote.storage.enable cannot be turned off once a topic is tiered, nor message.timestamp.type changed.

",
    settings_help!()
);

pub fn run(global: &GlobalArgs, cmd: TopicCommand) -> Result<ExitCode> {
    if global.server.is_some() {
        let client = super::client::Client::new(global)?;
        match cmd {
            TopicCommand::Create { topic, partitions, settings } => {
                client.create_topic(&topic, partitions, &settings)?
            }
            TopicCommand::Alter { topic, set, unset } => client.alter_topic(&topic, &set, &unset)?,
            TopicCommand::List => client.list_topics()?,
            TopicCommand::Describe { topic } => client.describe_topic(&topic)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = global.load_config()?;
    match cmd {
        TopicCommand::Create { topic, partitions, settings } => {
            let partitions = partitions.unwrap_or(config.log.default_partitions as u32);
            let new = NewTopicSettings::parse(&topic, settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            let log = Log::open(config)?;
            let created = log.create_topic_with_settings(&topic, partitions, &new)?;
            let settings = created.catalog_settings();
            let event = tierlog::audit::topic_created(
                now_ms(),
                &os_actor(),
                created.name(),
                created.metadata.partitions,
                &settings,
            );
            let recorded = record(&log, event);
            if let Err(e) = &recorded {
                eprintln!("warning: {e:#}");
            }
            println!(
                "{}",
                json!({"topic": created.name(), "partitions": created.metadata.partitions, "created": true,
                       "message.timestamp.type": new.timestamp_type.as_str()})
            );
        }
        TopicCommand::Alter { topic, set, unset } => {
            anyhow::ensure!(
                !set.is_empty() || !unset.is_empty(),
                "nothing to change: give --set KEY=VALUE or --unset KEY"
            );
            // The writer lock: a server running on this directory refuses this (alter it with --server).
            let log = Log::open(config)?;
            let before = log.topic(&topic)?.catalog_settings();
            let settings = log.alter_topic(&topic, &SettingsChange { set, unset })?;
            let after = log.topic(&topic)?.catalog_settings();
            let recorded = record(&log, tierlog::audit::topic_altered(now_ms(), &os_actor(), &topic, &before, &after));
            println!("{}", json!({"topic": topic, "settings": settings.to_json()}));
            recorded?;
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
            // Same shape as the `settings` of GET /v1/topics/{topic}.
            println!("{}", json!({"topic": topic.name(), "settings": topic.settings(log.config()).to_json()}));
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

/// Writes a topic change's audit event to the bucket now. When it cannot, the event is queued
/// in the data directory (this command holds the writer lock), the writer's next start writes
/// it, and the error says so. Nothing is written when the remote tier is off.
fn record(log: &Log, event: tierlog_tiering::audit::Event) -> Result<()> {
    if !log.config().tiering.enabled {
        return Ok(());
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let (action, topic) = (event.action.clone(), event.topic.clone().unwrap_or_default());
    let written = runtime.block_on(async {
        let remote = tierlog::tier::connect(log.config()).await?;
        let (writer, now) = (os_actor(), event.time_ms);
        anyhow::Ok(tierlog_tiering::audit::append(&remote, &writer, now, vec![event.clone()]).await?)
    });
    let Err(e) = written else { return Ok(()) };
    tierlog::audit::queue_pending(&*log.host().disk, log.data_dir(), event)?;
    anyhow::bail!(
        "{action} of topic {topic:?} took effect, but its audit event could not be written to the bucket ({e}); it is queued in {} and written by the next tiering run",
        log.data_dir().join(tierlog::audit::PENDING_FILE).display()
    )
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?}: expected KEY=VALUE, e.g. message.timestamp.type=LogAppendTime")),
    }
}
