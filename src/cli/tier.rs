//! `tierlog tier run|status|scrub`: the remote tier from the command line.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use tierlog::Log;
use tierlog::tier::{self, Tiering};
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::scrub::{self, ScrubPartition, ScrubSettings};
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
    /// List segment and archive objects no manifest references (uploads that were never
    /// committed); with --delete, remove those older than tiering.commit_window_ms +
    /// tiering.orphan_grace_ms by the object store's clock. Manifest versions and keys it
    /// does not recognise are never touched.
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
    if let Some(name) = topic {
        anyhow::ensure!(
            log.topic(name)?.is_tiered(log.config()),
            "topic '{name}' is not tiered (remote.storage.enable = false); see `tierlog topic describe {name}`"
        );
    }
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
    // Which key signs this writer's manifest versions, and which public keys the bucket holds.
    let signing_key_id = tier::load_signer(log.config())?.map(|s| s.key_id.clone());
    let published_keys = tierlog_tiering::signing::published_keys(&remote).await?.ids();
    // The key new segment objects are sealed with (`[encryption]`), none when stored in clear.
    let encryption_key_id = tier::load_keyring(log.config())?.map(|k| k.current().id().to_string());
    let topics = match topic {
        Some(name) => vec![log.topic(name)?],
        None => log.topics(),
    };
    // Legal holds in force (an unreadable hold set is shown as such: retention is stopped).
    let holds = tierlog_tiering::holds::latest(&remote, 0).await.map_err(|e| e.to_string());
    for topic in topics {
        let (retention_ms, retention_bytes) = topic.remote_retention(log.config());
        let lock = topic.object_lock(log.config());
        let topic_holds = match &holds {
            Ok(set) => json!(set.holds.iter().filter(|h| h.topic == topic.name()).collect::<Vec<_>>()),
            Err(e) => json!({"error": e}),
        };
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
                "retention": {"retention.ms": retention_ms, "retention.bytes": retention_bytes,
                              "expired_before": manifest.expired_before(),
                              "pending_deletes": manifest.expired.as_ref().map_or(0, |x| x.pending_deletes.len())},
                "legal_holds": topic_holds,
                "object_lock": lock.map(|l| json!({"mode": l.mode.as_str(), "retain_ms": l.retain_ms,
                                                   "stamped_retain_ms": state.lock_retain_ms})),
                "tiering_lag_bytes": lag,
                "last_upload_error": state.last_error,
                "last_upload_error_ms": state.last_error_ms,
                "store": remote.display,
                "conditional_writes": store_state.as_ref().map(|s| s.conditional_writes),
                "signing_key_id": signing_key_id,
                "published_public_keys": published_keys,
                "encryption_key_id": encryption_key_id,
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
    let mut partitions = Vec::new();
    for topic in log.topics() {
        for p in &topic.partitions {
            let version_hint = tier::read_partition_state(p).manifest_version;
            partitions.push(ScrubPartition { topic: p.topic.clone(), partition: p.id, version_hint });
        }
    }
    let tiering = &log.config().tiering;
    let settings =
        ScrubSettings { commit_window_ms: tiering.commit_window_ms, orphan_grace_ms: tiering.orphan_grace_ms, delete };
    let report = scrub::scrub(&remote, &partitions, &settings).await?;
    for object in &report.objects {
        let action = object.action.describe();
        println!("{}", json!({"key": object.key, "bytes": object.bytes, "age_ms": object.age_ms, "action": action}));
    }
    eprintln!(
        "scrub: {} unreferenced objects, {} deleted, {} referenced objects kept",
        report.unreferenced(),
        report.deleted,
        report.referenced
    );
    Ok(ExitCode::SUCCESS)
}
