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

/// What the pending file holds.
enum OnDisk {
    Absent,
    Events(Vec<Event>),
    /// Bytes this build cannot read (another version's events, a torn or hand-edited file).
    Unreadable(Vec<u8>),
}

fn read_pending(disk: &dyn Disk, path: &Path) -> Result<OnDisk> {
    let bytes = match disk.read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Absent),
        Err(e) => return Err(Error::io(path, "read", e)),
    };
    Ok(match serde_json::from_slice(&bytes) {
        Ok(events) => OnDisk::Events(events),
        Err(_) => OnDisk::Unreadable(bytes),
    })
}

/// The events a previous run of this data directory queued and could not write. An
/// unreadable file is logged and left where it is: [`save_pending`] never removes it, and sets
/// it aside before writing new events over it.
pub fn load_pending(disk: &dyn Disk, data_dir: &Path) -> Vec<Event> {
    let path = data_dir.join(PENDING_FILE);
    match read_pending(disk, &path) {
        Ok(OnDisk::Absent) => Vec::new(),
        Ok(OnDisk::Events(events)) => events,
        Ok(OnDisk::Unreadable(bytes)) => {
            let error = serde_json::from_slice::<Vec<Event>>(&bytes).err().map(|e| e.to_string()).unwrap_or_default();
            tracing::error!(path = %path.display(), error = %error, "unreadable queued audit events: they are not written; the file is left for inspection (set aside as {PENDING_FILE}.unreadable-<ms> when new events must be queued)");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the queued audit events: they are not written; the file is left for inspection");
            Vec::new()
        }
    }
}

/// Copies an unreadable pending file's `bytes` to a new `audit-pending.json.unreadable-<ms>`
/// (never over an existing file), durably, before the pending file is overwritten.
fn set_aside(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<()> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    // Bounded: a name taken (two set-asides in one millisecond) moves on to the next number.
    for ms in now_ms..now_ms + 1_000 {
        let aside = path.with_file_name(format!("{PENDING_FILE}.unreadable-{ms}"));
        let file = match disk.create_new(&aside) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&aside, "create", e)),
        };
        file.append(bytes).and_then(|()| file.sync_data()).map_err(|e| Error::io(&aside, "write", e))?;
        if let Some(dir) = path.parent() {
            disk.sync_dir(dir).map_err(|e| Error::io(dir, "fsync directory", e))?;
        }
        tracing::error!(path = %path.display(), kept = %aside.display(), "unreadable queued audit events set aside for inspection before queuing new ones");
        return Ok(());
    }
    Err(Error::io(path, "set aside", std::io::Error::other("no free .unreadable-<ms> name")))
}

/// Writes `events` as the pending file, setting an unreadable one aside first.
fn replace_pending(disk: &dyn Disk, path: &Path, on_disk: &OnDisk, events: &[Event]) -> Result<()> {
    if let OnDisk::Unreadable(bytes) = on_disk {
        set_aside(disk, path, bytes)?;
    }
    let bytes = serde_json::to_vec(events).expect("events serialize");
    disk.write_atomic(path, &bytes).map_err(|e| Error::io(path, "write", e))
}

/// Adds `event` to the events queued in the data directory, for the writer's next start to
/// write (a CLI under the writer lock whose bucket write failed).
pub fn queue_pending(disk: &dyn Disk, data_dir: &Path, event: Event) -> Result<()> {
    let path = data_dir.join(PENDING_FILE);
    let on_disk = read_pending(disk, &path)?;
    let mut pending = match &on_disk {
        OnDisk::Events(events) => events.clone(),
        OnDisk::Absent | OnDisk::Unreadable(_) => Vec::new(),
    };
    pending.push(event);
    replace_pending(disk, &path, &on_disk, &pending)
}

/// Records `trail`'s queued events in the data directory (removes the file when none are,
/// unless it is unreadable: that one stays for inspection).
pub fn save_pending(disk: &dyn Disk, data_dir: &Path, trail: &Trail) -> Result<()> {
    let path = data_dir.join(PENDING_FILE);
    let pending = trail.pending();
    if pending.is_empty() && !disk.is_file(&path) {
        return Ok(());
    }
    let on_disk = read_pending(disk, &path)?;
    match on_disk {
        OnDisk::Absent if pending.is_empty() => Ok(()),
        OnDisk::Unreadable(_) if pending.is_empty() => Ok(()),
        OnDisk::Events(_) if pending.is_empty() => disk.remove_file(&path).map_err(|e| Error::io(&path, "remove", e)),
        _ => replace_pending(disk, &path, &on_disk, &pending),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unreadable pending file is never lost: left in place while nothing is queued, and
    /// copied aside (never over an earlier copy) before new events are written over it.
    #[test]
    fn given_an_unreadable_pending_file_when_queuing_should_set_it_aside_first() {
        let dir = tempfile::tempdir().unwrap();
        let disk = crate::disk::os();
        let path = dir.path().join(PENDING_FILE);
        let unknown = br#"[{"time_ms":1,"actor":"a@h","action":"hold_release","ticket":"SEC-7"}]"#;
        std::fs::write(&path, unknown).unwrap();
        assert!(load_pending(&*disk, dir.path()).is_empty());
        let event = Event::new(2, "b@h", audit::action::TOPIC_ALTER).topic("t");
        queue_pending(&*disk, dir.path(), event.clone()).unwrap();
        std::fs::write(&path, unknown).unwrap();
        queue_pending(&*disk, dir.path(), event.clone()).unwrap();
        assert_eq!(load_pending(&*disk, dir.path()), [event]);
        let asides: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".unreadable-"))
            .collect();
        assert_eq!(asides.len(), 2, "two set-asides, neither over the other: {asides:?}");
        for aside in asides {
            assert_eq!(std::fs::read(aside).unwrap(), unknown);
        }
    }
}
