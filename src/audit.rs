//! The log's side of the audit trail in the bucket (`tierlog_tiering::audit`): who the actor
//! is, the events the log's actions make, writing one at once for a CLI (which must report a
//! failure), and keeping a writer's queued events across a restart.
//!
//! Policy (docs/AUDIT.md, "The audit trail"): an action whose audit event cannot be written
//! is not undone. The tiering driver and the server queue their events ([`Trail`]) and write
//! them at the end of every tiering pass, so a segment commit never waits for, nor fails with,
//! its audit record; events still queued when a pass ends are kept in
//! `<data_dir>/audit-pending.json` and written after a restart. A CLI (hold, topic alter,
//! restore) writes its event at once and exits non-zero when that fails, saying the action
//! itself took effect; `topic create` and `topic alter` also queue the event in the data
//! directory (the writer's next start writes it), and `topic create` only warns: creating a
//! topic never depended on the bucket.

use std::path::Path;

use tierlog_tiering::audit::{self, Event, Trail};
use tierlog_tiering::store::RemoteStore;

use crate::disk::Disk;
use crate::error::{Error, Result};

/// Events queued by a writer that could not write them yet: read back at its next start.
pub const PENDING_FILE: &str = "audit-pending.json";

/// The OS user and host of this process (`user@host`), the actor of actions without a token.
pub fn os_actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{user}@{host}")
}

/// The actor of a request authorised as `who`: the token's name, or the OS user and host of
/// the server when authentication is off ("anonymous").
pub fn actor(who: &str) -> String {
    if who.is_empty() || who == "anonymous" { os_actor() } else { who.to_string() }
}

/// A topic was created with `partitions` and its own `settings`.
pub fn topic_created(
    time_ms: i64,
    actor: &str,
    topic: &str,
    partitions: u32,
    settings: &std::collections::BTreeMap<String, String>,
) -> Event {
    Event::new(time_ms, actor, audit::action::TOPIC_CREATE)
        .topic(topic)
        .after(serde_json::json!({"partitions": partitions, "settings": settings}))
}

/// A topic's own settings changed from `before` to `after`.
pub fn topic_altered(
    time_ms: i64,
    actor: &str,
    topic: &str,
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) -> Event {
    Event::new(time_ms, actor, audit::action::TOPIC_ALTER)
        .topic(topic)
        .before(serde_json::json!({"settings": before}))
        .after(serde_json::json!({"settings": after}))
}

/// Writes `event` now, as a CLI does: the error says the action took effect but is not in the
/// trail, and what to do.
pub async fn append_now(remote: &RemoteStore, event: Event) -> Result<u64> {
    let what = format!("{} by {}", event.action, event.actor);
    let now = event.time_ms;
    audit::append(remote, &os_actor(), now, vec![event]).await.map_err(|e| {
        Error::Remote(tierlog_tiering::Error::Format(format!(
            "{what} took effect, but its audit event could not be written to {}: {e}. The change stands; record it by hand, and check the bucket with `tierlog verify`",
            remote.display
        )))
    })
}

/// The events a previous run of this data directory queued and could not write.
pub fn load_pending(disk: &dyn Disk, data_dir: &Path) -> Vec<Event> {
    let path = data_dir.join(PENDING_FILE);
    let Ok(bytes) = disk.read(&path) else { return Vec::new() };
    match serde_json::from_slice(&bytes) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "unreadable queued audit events: they are not written; the file is left for inspection");
            Vec::new()
        }
    }
}

/// Adds `event` to the events queued in the data directory, for the writer's next start to
/// write (a CLI under the writer lock whose bucket write failed).
pub fn queue_pending(disk: &dyn Disk, data_dir: &Path, event: Event) -> Result<()> {
    let path = data_dir.join(PENDING_FILE);
    let mut pending = load_pending(disk, data_dir);
    pending.push(event);
    let bytes = serde_json::to_vec(&pending).expect("events serialize");
    disk.write_atomic(&path, &bytes).map_err(|e| Error::io(&path, "write", e))
}

/// Records `trail`'s queued events in the data directory (removes the file when none are).
pub fn save_pending(disk: &dyn Disk, data_dir: &Path, trail: &Trail) -> Result<()> {
    let path = data_dir.join(PENDING_FILE);
    let pending = trail.pending();
    if pending.is_empty() {
        if disk.is_file(&path) {
            disk.remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
        }
        return Ok(());
    }
    let bytes = serde_json::to_vec(&pending).expect("events serialize");
    disk.write_atomic(&path, &bytes).map_err(|e| Error::io(&path, "write", e))
}
