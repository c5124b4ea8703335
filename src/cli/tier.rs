//! `tierlog tier run|status|scrub`: the remote tier from the command line.

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::json;
use tierlog::Log;
use tierlog::partition::now_ms;
use tierlog::tier::{self, Tiering};
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::store::RemoteStore;

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum TierCommand {
    /// Seal active segments, upload everything not yet remote, commit, apply local retention.
    #[command(
        after_help = "Prints one JSON line per partition; exits non-zero if any partition failed.\n\nExample:\n  tierlog tier run payments"
    )]
    Run {
        /// Only this topic (default: all).
        topic: Option<String>,
    },
    /// Per partition: local and remote offset ranges, bytes per tier, tiering lag, last error.
    Status { topic: Option<String> },
    /// List objects no manifest references (uploads that were never committed); with
    /// --delete, remove those older than tiering.orphan_grace_ms.
    Scrub {
        #[arg(long)]
        delete: bool,
    },
}

pub fn run(global: &GlobalArgs, cmd: TierCommand) -> Result<ExitCode> {
    let config = global.load_config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cmd {
            TierCommand::Run { topic } => run_once(Log::open(config)?, topic.as_deref()).await,
            TierCommand::Status { topic } => status(Log::open_read_only(config)?, topic.as_deref()).await,
            TierCommand::Scrub { delete } => scrub(Log::open_read_only(config)?, delete).await,
        }
    })
}

async fn run_once(log: Log, topic: Option<&str>) -> Result<ExitCode> {
    anyhow::ensure!(log.config().tiering.enabled, "tiering is disabled (tiering.enabled = false)");
    let tiering = Tiering::start(log).await?;
    let progress =
        indicatif::ProgressBar::new_spinner().with_message(format!("tiering to {}", tiering.remote().display));
    progress.enable_steady_tick(std::time::Duration::from_millis(200));
    let reports = tiering.run_once(topic, true).await?;
    progress.finish_and_clear();
    let mut failed = false;
    for report in &reports {
        failed |= report.error.is_some();
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn load_manifest(
    remote: &RemoteStore,
    partition: &tierlog::partition::Partition,
) -> Result<tierlog_tiering::manifest::Manifest> {
    let hint = tier::read_partition_state(partition).manifest_version;
    let reader = Writer { id: "reader".into(), epoch: 0 };
    Ok(ManifestStore::open(remote.clone(), &partition.topic, partition.id, reader, hint).await?.current)
}

async fn status(log: Log, topic: Option<&str>) -> Result<ExitCode> {
    let remote = tier::connect(log.config()).await?;
    let store_state = tier::read_store_state(log.data_dir());
    let topics = match topic {
        Some(name) => vec![log.topic(name)?],
        None => log.topics(),
    };
    for topic in topics {
        for p in &topic.partitions {
            let manifest = load_manifest(&remote, p).await?;
            let state = tier::read_partition_state(p);
            let sealed = p.sealed_segments();
            let local_bytes: u64 = sealed.iter().map(|s| s.bytes).sum::<u64>() + p.active_bytes();
            let remote_end = manifest.next_offset();
            let lag: u64 =
                sealed.iter().filter(|s| s.base_offset >= remote_end).map(|s| s.bytes).sum::<u64>() + p.active_bytes();
            let (segments, raw, stored) = manifest.totals();
            let line = json!({
                "topic": topic.name(), "partition": p.id,
                "local": {"start_offset": p.start_offset(), "end_offset": p.end_offset(), "bytes": local_bytes, "sealed_segments": sealed.len()},
                "remote": {"start_offset": manifest.start_offset(), "end_offset": remote_end, "segments": segments,
                           "raw_bytes": raw, "stored_bytes": stored, "manifest_version": manifest.manifest_version},
                "tiering_lag_bytes": lag,
                "last_upload_error": state.last_error,
                "last_upload_error_ms": state.last_error_ms,
                "store": remote.display,
                "conditional_writes": store_state.as_ref().map(|s| s.conditional_writes),
            });
            println!("{line}");
        }
    }
    if store_state.as_ref().is_some_and(|s| !s.conditional_writes) {
        eprintln!(
            "warning: {} does not honour conditional writes; a second writer on this prefix cannot be fenced (the local writer lock still applies)",
            remote.display
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn scrub(log: Log, delete: bool) -> Result<ExitCode> {
    let remote = tier::connect(log.config()).await?;
    let grace_ms = log.config().tiering.orphan_grace_ms as i64;
    let mut referenced = HashSet::new();
    let mut known = HashSet::new();
    for topic in log.topics() {
        for p in &topic.partitions {
            known.insert((topic.name().to_string(), p.id.to_string()));
            let reader = Writer { id: "scrub".into(), epoch: 0 };
            let hint = tier::read_partition_state(p).manifest_version;
            let store = ManifestStore::open(remote.clone(), &p.topic, p.id, reader, hint).await?;
            for archive in &store.current.archives {
                referenced.insert(archive.key.clone());
                referenced.extend(store.load_archive(archive).await?.into_iter().map(|e| e.key));
            }
            referenced.extend(store.current.entries.iter().map(|e| e.key.clone()));
        }
    }
    let (mut orphans, mut removed) = (0, 0);
    for root in [remote.key(&["segments"]), remote.key(&["manifests"])] {
        let objects: Vec<_> =
            remote.store.list(Some(&root)).try_collect().await.map_err(|e| remote.error(format!("LIST {root}"), e))?;
        for meta in objects {
            let key = meta.location.to_string();
            let is_segment_or_archive = key.ends_with(".zst") || key.contains("/archive/");
            if !is_segment_or_archive || referenced.contains(&key) || !belongs_to(&key, &known) {
                continue;
            }
            orphans += 1;
            let age_ms = now_ms() - meta.last_modified.timestamp_millis();
            let action = match (age_ms >= grace_ms, delete) {
                (false, _) => "kept: younger than tiering.orphan_grace_ms (may be an upload in progress)",
                (true, false) => "orphan: would delete with --delete",
                (true, true) => {
                    remote.store.delete(&meta.location).await.map_err(|e| remote.error(format!("DELETE {key}"), e))?;
                    removed += 1;
                    "deleted"
                }
            };
            println!("{}", json!({"key": key, "bytes": meta.size, "age_ms": age_ms, "action": action}));
        }
    }
    eprintln!("scrub: {orphans} unreferenced objects, {removed} deleted, {} referenced objects kept", referenced.len());
    Ok(ExitCode::SUCCESS)
}

/// Whether an object key lies under a topic/partition this data directory knows, so a scrub
/// never touches another cluster's objects sharing the bucket prefix.
fn belongs_to(key: &str, known: &HashSet<(String, String)>) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.windows(2).any(|w| known.contains(&(w[0].to_string(), w[1].to_string())))
}
