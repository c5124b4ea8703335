//! `tierlog hold set|release|list`: legal holds, kept in the bucket (docs/FORMAT.md, "Legal
//! holds"), which remote retention never expires.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use tierlog::tier;
use tierlog::time::parse_time;
use tierlog_tiering::audit::{Event, action};
use tierlog_tiering::holds::{self, Hold};

use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum HoldCommand {
    /// Put a topic (or the records of a time range) under legal hold: remote retention never
    /// expires them, nor anything after the first segment holding one.
    #[command(
        after_help = "Prints the hold set ({\"id\",\"topic\",\"from_ms\",\"to_ms\",\"reason\",\"set_ms\",\"set_by\"}).
The hold is written to the bucket (holds/<version>.json, create-only): every writer, and any node
restored from the bucket, honours it from its next tiering pass on.

Examples:
  tierlog hold set payments --reason \"SEC inquiry 2026-114\"
  tierlog hold set payments --from-time 2026-03-01T00:00:00Z --to-time 2026-04-01T00:00:00Z --reason \"case 7\""
    )]
    Set {
        topic: String,
        /// First record time held (RFC 3339 or epoch ms); default: the beginning.
        #[arg(long = "from-time", value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
        from_time: Option<i64>,
        /// Record time the hold ends before (exclusive); default: open-ended.
        #[arg(long = "to-time", value_name = "T", value_parser = parse_time, allow_hyphen_values = true)]
        to_time: Option<i64>,
        /// Why, for the record (a case or ticket number).
        #[arg(long)]
        reason: String,
    },
    /// Release a hold by its id (see `hold list`); retention applies again from the next pass.
    #[command(after_help = "Example:\n  tierlog hold release 3f9c2a71 --reason \"case closed\"")]
    Release {
        id: String,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// List the holds in force (one JSON line each), optionally of one topic.
    List { topic: Option<String> },
}

/// Who is acting: the OS user and host.
fn actor() -> String {
    tierlog::audit::os_actor()
}

/// Sets S3's legal-hold flag on the topic's segment objects (listed, or expired and awaiting
/// deletion) that a hold of `set` covers, where the bucket has Object Lock. `None`: the bucket
/// cannot flag objects (tierlog's retention still honours the hold). A writer of a locked topic
/// brings the flags up to every new holds version on its next pass too (objects it commits
/// after this reads the manifests, or after a failure here).
async fn flag_objects(
    remote: &tierlog_tiering::store::RemoteStore,
    topic: Option<&tierlog_tiering::catalog::CatalogTopic>,
    set: &holds::HoldSet,
) -> Result<Option<usize>> {
    let (Some(lock), Some(topic)) = (&remote.lock, topic) else { return Ok(None) };
    if !lock.bucket().await?.lock_enabled {
        eprintln!(
            "note: {} has no S3 Object Lock: the hold is enforced by tierlog's retention, not by the bucket",
            remote.display
        );
        return Ok(None);
    }
    let by_append_time = topic.settings.get("message.timestamp.type").is_some_and(|t| t == "LogAppendTime");
    let ranges = holds::ranges(set, &topic.name);
    let mut changed = 0;
    for partition in 0..topic.partitions {
        let version = tierlog_tiering::manifest::latest_version(remote, &topic.name, partition, 0).await?;
        if version == 0 {
            continue;
        }
        let manifest = tierlog_tiering::manifest::load_version(remote, &topic.name, partition, version).await?;
        let entries = tierlog_tiering::lock::listed_entries(remote, &manifest).await?;
        let objects = tierlog_tiering::lock::hold_candidates(&entries, &manifest, by_append_time);
        changed += tierlog_tiering::lock::apply_legal_holds(remote, &objects, &ranges)
            .await
            .with_context(|| format!("setting S3 legal-hold flags on {}/{partition}", topic.name))?;
    }
    Ok(Some(changed))
}

pub fn run(global: &GlobalArgs, cmd: HoldCommand) -> Result<ExitCode> {
    if let Some(server) = &global.server {
        bail!(
            "holds are written to the bucket, not through a server ({server}): run `tierlog hold` with the writer's configuration (--config) and no --server"
        );
    }
    let config = global.load_config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let remote = tier::connect(&config).await?;
        let now = tierlog::partition::now_ms();
        match cmd {
            HoldCommand::Set { topic, from_time, to_time, reason } => {
                tierlog::topic::validate_name(&topic)?;
                // Holds match topic names exactly: refuse one the bucket does not know.
                let catalog = tierlog_tiering::catalog::latest_catalog(&remote, 0).await?;
                let known: Vec<String> = catalog.iter().flat_map(|c| c.topics.iter().map(|t| t.name.clone())).collect();
                if !known.contains(&topic) {
                    bail!(
                        "topic {topic:?} is not in the catalog of {} (known: {}); a hold names a topic exactly. A topic created moments ago appears after the writer's next tiering pass",
                        remote.display,
                        if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    );
                }
                if let (Some(from), Some(to)) = (from_time, to_time)
                    && from >= to
                {
                    bail!("--from-time must be before --to-time");
                }
                if reason.trim().is_empty() {
                    bail!("--reason must say why (a case or ticket number)");
                }
                let id = remote.ids.next();
                let hold = Hold { id, topic, from_ms: from_time, to_ms: to_time, reason, set_ms: now, set_by: actor() };
                let what = format!("set {}: {}", hold.id, hold.reason);
                let set = holds::update(&remote, &actor(), now, &what, |holds| {
                    holds.push(hold.clone());
                    Ok(())
                })
                .await?;
                let catalog_topic = catalog.iter().flat_map(|c| c.topics.iter()).find(|t| t.name == hold.topic);
                let flagged = flag_objects(&remote, catalog_topic, &set).await;
                println!("{}", json!({"hold": hold, "holds_version": set.version, "s3_legal_hold_flags_set": flagged.as_ref().ok()}));
                // After the change (an audit event never names a hold that was not set); a
                // failure exits non-zero, saying the hold is in force.
                let (from, to) = (hold.from_ms, hold.to_ms);
                let event = Event::new(now, &actor(), action::HOLD_SET)
                    .topic(&hold.topic)
                    .reason(&hold.reason)
                    .after(json!({"hold": hold.id, "from_ms": from, "to_ms": to, "holds_version": set.version}));
                tierlog::audit::append_now(&remote, event).await?;
                flagged.context("the hold is in force (in the bucket and the audit trail), but S3 legal-hold flags were not all set: a writer of a locked topic sets them on its next pass; otherwise check the bucket and the credentials")?;
            }
            HoldCommand::Release { id, reason } => {
                if reason.trim().is_empty() {
                    bail!("--reason must say why the hold ends");
                }
                let what = format!("release {id}: {reason}");
                let released = std::sync::Mutex::new(None);
                let set = holds::update(&remote, &actor(), now, &what, |holds| {
                    let before = holds.len();
                    *released.lock().unwrap_or_else(|p| p.into_inner()) = holds.iter().find(|h| h.id == id).cloned();
                    holds.retain(|h| h.id != id);
                    if holds.len() == before {
                        return Err(tierlog_tiering::Error::Format(format!(
                            "no hold with id {id:?} is in force (see `tierlog hold list`)"
                        )));
                    }
                    Ok(())
                })
                .await?;
                let hold = released.into_inner().unwrap_or_else(|p| p.into_inner()).expect("a released hold was found");
                println!("{}", json!({"released": id, "reason": reason, "holds_version": set.version}));
                if remote.lock.is_some() {
                    // tierlog cannot tell its flags from anyone else's, so it never clears one.
                    eprintln!(
                        "note: S3 legal-hold flags on the objects of this hold stay set (tierlog never clears them: someone else may have set them too). Expired objects wait for them; clear each with `aws s3api put-object-legal-hold --legal-hold Status=OFF` once no one needs it"
                    );
                }
                let event = Event::new(now, &actor(), action::HOLD_RELEASE)
                    .topic(&hold.topic)
                    .reason(&reason)
                    .before(json!({"hold": hold, "holds_version": set.version - 1}))
                    .after(json!({"holds_version": set.version}));
                tierlog::audit::append_now(&remote, event).await?;
            }
            HoldCommand::List { topic } => {
                let set = holds::latest(&remote, 0).await?;
                for hold in set.holds.iter().filter(|h| topic.as_ref().is_none_or(|t| h.topic == *t)) {
                    println!("{}", serde_json::to_string(hold)?);
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
