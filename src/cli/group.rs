//! `tierlog group list|describe|seek|delete`: consumer groups' committed offsets (the one
//! groups store HTTP, CLI and Kafka consumers share), their lag, moving and deleting them, as
//! `kafka-consumer-groups --describe / --reset-offsets / --delete` do. Opens the data directory
//! read-only (a seek or delete only touches the group's files, under the same lock every commit
//! takes), so it works while `tierlog serve` runs.
//!
//! With tokens configured, a seek or delete is recorded in the server's `<data_dir>/audit.log`
//! as the same line an HTTP or Kafka commit or DeleteGroups writes, by the OS user and host.
//! The change stands when that line cannot be written; the command then says so and fails.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgGroup, Subcommand};
use serde_json::json;
use tierlog::Log;
use tierlog::time::parse_time;

use tierlog::audit::os_actor;
use tierlog::config::Config;
use tierlog::serve::auth::{audit_from_cli, commit_line, group_delete_line};

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// One JSON line per group and topic it committed in: partitions and total lag.
    List,
    /// One JSON line per partition the group committed in: committed offset, log end, lag.
    #[command(after_help = "Example:\n  tierlog group describe billing --topic payments")]
    Describe {
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a group's committed offsets on a topic (kafka-consumer-groups --reset-offsets).
    /// Stop the group's consumers first: a running consumer commits over the new position.
    #[command(
        group(ArgGroup::new("to").required(true).args(["to_offset", "to_time", "to_earliest", "to_latest"])),
        after_help = "Examples:\n  tierlog group seek billing --topic payments --to-time 2026-03-03T14:02:00Z\n  tierlog group seek billing --topic payments --partition 0,2 --to-earliest --dry-run"
    )]
    Seek {
        group: String,
        #[arg(long)]
        topic: String,
        /// Only these partitions (default: all of the topic's).
        #[arg(long, value_delimiter = ',')]
        partition: Vec<u32>,
        /// This offset (clamped to the partition's available range).
        #[arg(long, value_name = "N")]
        to_offset: Option<u64>,
        /// The first record with timestamp ≥ T, in either tier (RFC 3339, a date, epoch ms, s:<epoch s>, or -15m/-1h/-2d).
        #[arg(long, value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
        to_time: Option<i64>,
        /// The first available offset (the remote tier's start when history is remote-only).
        #[arg(long)]
        to_earliest: bool,
        /// The log end: only records appended from now on.
        #[arg(long)]
        to_latest: bool,
        /// Print what would be committed, commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group's committed offsets (kafka-consumer-groups --delete), in one topic or in
    /// all. Stop the group's consumers first: a running consumer commits again. Kafka clients
    /// can use DeleteGroups instead, which refuses while the group has members.
    #[command(
        after_help = "Examples:\n  tierlog group delete billing\n  tierlog group delete billing --topic payments --dry-run"
    )]
    Delete {
        group: String,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Print what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(global: &GlobalArgs, cmd: GroupCommand) -> Result<ExitCode> {
    anyhow::ensure!(
        global.server.is_none(),
        "tierlog group opens the data directory (read-only, safe while the server runs): run it on the server's machine without --server"
    );
    let config = global.load_config()?;
    let data_dir = config.data_dir.clone();
    if let GroupCommand::Delete { group, topic, dry_run } = cmd {
        tierlog::log::check_not_restoring(&tierlog::host::Host::os(), &data_dir)?;
        return delete(&config, &group, topic.as_deref(), dry_run);
    }
    let log = Log::open_read_only(config)?;
    let stored = tierlog::groups::all(&data_dir)?;
    let end = |topic: &str, partition: u32| -> Option<u64> {
        log.topic(topic).ok()?.partition(partition).ok().map(|p| p.end_offset())
    };
    match cmd {
        GroupCommand::List => {
            for c in &stored {
                let lag: u64 =
                    c.offsets.iter().filter_map(|(&p, &o)| end(&c.topic, p).map(|e| e.saturating_sub(o))).sum();
                println!("{}", json!({"group": c.group, "topic": c.topic, "partitions": c.offsets.len(), "lag": lag}));
            }
        }
        GroupCommand::Describe { group, topic } => {
            tierlog::groups::check_name(&group)?;
            let mine: Vec<_> =
                stored.iter().filter(|c| c.group == group && topic.as_ref().is_none_or(|t| *t == c.topic)).collect();
            anyhow::ensure!(
                !mine.is_empty(),
                "group {group:?} has no committed offsets{}",
                match &topic {
                    Some(t) => format!(" in topic {t:?}"),
                    None => String::new(),
                }
            );
            for c in mine {
                for (&partition, &committed) in &c.offsets {
                    let end = end(&c.topic, partition);
                    let lag = end.map(|e| e.saturating_sub(committed));
                    println!(
                        "{}",
                        json!({"group": group, "topic": c.topic, "partition": partition, "committed": committed, "end_offset": end, "lag": lag})
                    );
                }
            }
        }
        GroupCommand::Seek { group, topic, partition, to_offset, to_time, to_earliest, to_latest, dry_run } => {
            tierlog::groups::check_name(&group)?;
            let t = log.topic(&topic)?;
            let partitions: Vec<u32> =
                if partition.is_empty() { (0..t.metadata.partitions).collect() } else { partition };
            let reader = tierlog::reader::Reader::new(log.clone());
            let runtime = tokio::runtime::Runtime::new()?;
            let mut offsets = BTreeMap::new();
            for id in partitions {
                let p = t.partition(id)?;
                let (start, end) = (runtime.block_on(reader.start_offset(p))?, p.end_offset());
                let target = match (to_offset, to_time, to_earliest, to_latest) {
                    (Some(offset), ..) => offset.clamp(start, end),
                    (_, Some(time), ..) => runtime.block_on(reader.offset_for_time(p, time))?,
                    (_, _, true, _) => start,
                    _ => end,
                };
                offsets.insert(id, target);
            }
            let before = tierlog::groups::load(&data_dir, &group, &topic)?;
            if !dry_run {
                tierlog::groups::commit(&data_dir, &group, &topic, &offsets)
                    .with_context(|| format!("commit {group}'s offsets on {topic}"))?;
            }
            for (partition, offset) in &offsets {
                println!(
                    "{}",
                    json!({"group": group, "topic": topic, "partition": partition, "from": before.get(partition), "to": offset, "committed": !dry_run})
                );
            }
            if !dry_run {
                let line = commit_line(&os_actor(), &group, &topic, &offsets);
                audit(log.config(), &line, &format!("{group}'s offsets on {topic} were moved"))?;
            }
        }
        GroupCommand::Delete { .. } => unreachable!("handled before the store is read"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `group delete`: only the group's own files are read, so a damaged file elsewhere in the
/// store (or of this group: it is deleted too) does not stop it. Each deleted topic is printed,
/// also when a later one fails.
fn delete(config: &Config, group: &str, topic: Option<&str>, dry_run: bool) -> Result<ExitCode> {
    let data_dir = config.data_dir.as_path();
    let (deleted, result) = if dry_run {
        let topics = tierlog::groups::topics_of(data_dir, group)?;
        let planned = topics.into_iter().filter(|t| topic.is_none_or(|only| only == t)).map(|t| {
            let offsets = tierlog::groups::load(data_dir, group, &t).unwrap_or_default();
            tierlog::groups::Committed { group: group.to_string(), topic: t, offsets }
        });
        (planned.collect(), Ok(()))
    } else {
        tierlog::groups::delete(data_dir, group, topic)
    };
    for c in &deleted {
        println!("{}", json!({"group": group, "topic": c.topic, "offsets": c.offsets, "deleted": !dry_run}));
    }
    if !dry_run && !deleted.is_empty() {
        // Also when a later topic failed: what was deleted is recorded.
        let line = group_delete_line(&os_actor(), group, &deleted);
        audit(config, &line, &format!("{group}'s committed offsets were deleted"))?;
    }
    result.with_context(|| {
        format!("delete {group}'s committed offsets ({} topics deleted before the error)", deleted.len())
    })?;
    anyhow::ensure!(
        !deleted.is_empty(),
        "group {group:?} has no committed offsets{}; nothing to delete (see `tierlog group list`)",
        topic.map(|t| format!(" in topic {t:?}")).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Records `line` in the server's audit log (with tokens configured); `done` says what took
/// effect, for the error when the line cannot be written.
fn audit(config: &Config, line: &serde_json::Value, done: &str) -> Result<()> {
    audit_from_cli(config, line).map(|_| ()).with_context(|| {
        format!("{done}, but the audit line could not be written: the change stands; record it by hand ({line})")
    })
}
