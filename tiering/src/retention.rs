//! Remote retention: which segments leave the remote tier, and deleting their objects later.
//!
//! Evaluated per segment, oldest first: a segment expires when its newest record is older
//! than the time limit, or while the partition's remote tier holds more raw bytes than the
//! byte limit. History stays contiguous, so expiry stops at the first segment that must stay:
//! one not old enough (when only the time limit applies), one under legal hold, or one the
//! log still holds locally (`keep_from`: the local copy would outlive the remote one).
//!
//! Crash-safe order, each step idempotent:
//! 1. commit a manifest version that starts after the expired segments
//!    ([`ManifestStore::expire_before`]; the chain's link across them stays in `expired`),
//!    listing their objects as pending deletes due after a grace period;
//! 2. once due, delete those objects (a missing one counts as deleted);
//! 3. commit a version without the deleted ones ([`ManifestStore::forget_deleted`]).
//!
//! A crash between steps leaves the pending list in the bucket: the next pass resumes it.

use object_store::ObjectStoreExt;

use crate::Result;
use crate::error::Error;
use crate::manifest::{ArchiveRef, Entry, ExpiryOutcome, ManifestStore};

/// What may expire from one partition, decided by the caller (per-topic settings, holds, the
/// local log's start).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Expire a segment once its newest record is older than this (ms); `None`: no limit.
    pub retention_ms: Option<u64>,
    /// Expire the oldest segments while the remote tier holds more raw bytes than this.
    pub retention_bytes: Option<u64>,
    /// Record-time ranges `[from, to)` under legal hold: a segment whose records overlap one
    /// is never expired, and neither is anything after it.
    pub holds: Vec<(i64, i64)>,
    /// The first offset the log still holds locally: nothing at or after it expires.
    pub keep_from: u64,
    /// Time between the expiry commit and the deletion of the objects.
    pub grace_ms: u64,
}

impl Policy {
    fn is_off(&self) -> bool {
        self.retention_ms.is_none() && self.retention_bytes.is_none()
    }

    fn held(&self, min_timestamp: i64, max_timestamp: i64) -> bool {
        self.holds.iter().any(|(from, to)| min_timestamp < *to && *from <= max_timestamp)
    }

    /// Whether a segment expires with `remaining` raw bytes in the remote tier (itself included).
    fn expires(&self, entry: &Entry, remaining: u64, now_ms: i64) -> bool {
        let old = self.retention_ms.is_some_and(|ms| now_ms.saturating_sub(entry.max_timestamp) > ms as i64);
        let over = self.retention_bytes.is_some_and(|bytes| remaining > bytes);
        (old || over) && entry.last_offset < self.keep_from && !self.held(entry.min_timestamp, entry.max_timestamp)
    }

    /// Whether any segment of an archive could expire, from its reference alone (so a pass
    /// that expires nothing loads no archive).
    fn may_expire(&self, archive: &ArchiveRef, remaining: u64, now_ms: i64) -> bool {
        let old = self.retention_ms.is_some_and(|ms| now_ms.saturating_sub(archive.min_timestamp) > ms as i64);
        let over = self.retention_bytes.is_some_and(|bytes| remaining > bytes);
        (old || over) && archive.base_offset < self.keep_from
    }

    fn reason(&self) -> String {
        let mut rules = Vec::new();
        if let Some(ms) = self.retention_ms {
            rules.push(format!("retention.ms={ms}"));
        }
        if let Some(bytes) = self.retention_bytes {
            rules.push(format!("retention.bytes={bytes}"));
        }
        rules.join(", ")
    }
}

/// The new start of the partition under `policy`: every segment below it expires. `None`
/// when nothing expires.
pub async fn plan(manifest: &ManifestStore, policy: &Policy, now_ms: i64) -> Result<Option<u64>> {
    if policy.is_off() {
        return Ok(None);
    }
    let current = &manifest.current;
    let mut remaining = current.totals().1;
    let mut cut = None;
    for archive in &current.archives {
        if !policy.may_expire(archive, remaining, now_ms) {
            return Ok(cut);
        }
        for entry in manifest.load_archive(archive).await? {
            if !policy.expires(&entry, remaining, now_ms) {
                return Ok(cut);
            }
            remaining -= entry.raw_bytes;
            cut = Some(entry.last_offset + 1);
        }
    }
    for entry in &current.entries {
        if !policy.expires(entry, remaining, now_ms) {
            break;
        }
        remaining -= entry.raw_bytes;
        cut = Some(entry.last_offset + 1);
    }
    Ok(cut)
}

/// Plans and commits one expiry (step 1). Deletes nothing.
pub async fn expire(
    manifest: &mut ManifestStore,
    policy: &Policy,
    now_ms: i64,
    attempts: u32,
) -> Result<Option<ExpiryOutcome>> {
    match plan(manifest, policy, now_ms).await? {
        Some(before) => manifest.expire_before(before, &policy.reason(), policy.grace_ms, now_ms, attempts).await,
        None => Ok(None),
    }
}

/// Deletes the pending objects whose grace period has passed and commits a version without
/// them (steps 2 and 3). Returns the keys deleted. A key the manifest still lists is never
/// deleted (it would be a bug elsewhere): refused, naming it.
pub async fn delete_due(manifest: &mut ManifestStore, now_ms: i64, attempts: u32) -> Result<Vec<String>> {
    let Some(expired) = &manifest.current.expired else { return Ok(Vec::new()) };
    let due: Vec<String> =
        expired.pending_deletes.iter().filter(|p| p.delete_after_ms <= now_ms).map(|p| p.key.clone()).collect();
    if due.is_empty() {
        return Ok(due);
    }
    let current = &manifest.current;
    if let Some(key) = due
        .iter()
        .find(|k| current.entries.iter().any(|e| e.key == **k) || current.archives.iter().any(|a| a.key == **k))
    {
        return Err(Error::Diverged {
            topic: manifest.topic.clone(),
            partition: manifest.partition,
            detail: format!(
                "object {key} is pending deletion and still listed by manifest version {}: nothing is deleted; run `tierlog verify`",
                current.manifest_version
            ),
        });
    }
    for key in &due {
        delete_object(manifest, key, attempts).await?;
    }
    manifest.forget_deleted(&due, now_ms, attempts).await?;
    tracing::info!(topic = %manifest.topic, partition = manifest.partition, objects = due.len(), "deleted expired objects");
    Ok(due)
}

async fn delete_object(manifest: &ManifestStore, key: &str, attempts: u32) -> Result<()> {
    let store = &manifest.store;
    let path = object_store::path::Path::from(key);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) if attempt < attempts => {
                tracing::warn!(key, attempt, error = %e, "delete of an expired object failed; retrying");
                tokio::time::sleep(crate::uploader::backoff(attempt)).await;
            }
            Err(e) => return Err(store.error(format!("DELETE {key} (expired by retention)"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::path::Path;

    use super::*;
    use crate::fault::FaultStore;
    use crate::manifest::tests_support::{history, memory_store};
    use crate::manifest::{self, Writer};
    use crate::store::RemoteStore;

    const GRACE: u64 = 1000;

    fn policy(retention_ms: Option<u64>, retention_bytes: Option<u64>) -> Policy {
        Policy { retention_ms, retention_bytes, holds: Vec::new(), keep_from: u64::MAX, grace_ms: GRACE }
    }

    async fn exists(store: &RemoteStore, key: &str) -> bool {
        store.store.head(&Path::from(key)).await.is_ok()
    }

    async fn reopen(store: &RemoteStore) -> ManifestStore {
        ManifestStore::open(store.clone(), "t", 0, Writer { id: "w".into(), epoch: 1 }, 0).await.unwrap()
    }

    /// Entries of the test history hold one offset each with timestamp = offset, 100 raw bytes.
    #[tokio::test]
    async fn time_retention_expires_across_archives_then_deletes_after_the_grace_period() {
        let store = memory_store();
        let mut m = history(&store, 400, 50).await;
        assert_eq!(m.current.archives.len(), 2);
        let old = m.current.clone();
        // now 300, 100 ms: every segment whose newest record is before 200 goes (cut inside
        // the second archive, which is rewritten).
        let outcome = expire(&mut m, &policy(Some(100), None), 300, 1).await.unwrap().unwrap();
        assert_eq!((outcome.before_offset, outcome.segments, outcome.raw_bytes), (200, 200, 20_000));
        assert_eq!(m.current.start_offset(), Some(200));
        assert_eq!(m.current.next_offset(), 400);
        let expired = m.current.expired.clone().unwrap();
        let archived = manifest::load_archive(&store, &old.archives[1]).await.unwrap();
        assert_eq!(expired.last_hash, archived.iter().find(|e| e.last_offset == 199).unwrap().hash);
        assert_eq!(expired.pending_deletes.len(), 200, "the 200 segment objects (archives stay, as proof)");
        assert_eq!(m.current.archives.len(), 1, "the cut archive was rewritten from offset 200");
        assert_eq!(m.current.archives[0].base_offset, 200);
        // The version reads back (v4) and a reopened store agrees.
        assert_eq!(reopen(&store).await.current, m.current);
        assert!(expire(&mut m, &policy(Some(100), None), 300, 1).await.unwrap().is_none(), "nothing more expires");

        // Nothing is deleted before the grace period has passed.
        assert!(delete_due(&mut m, 300 + GRACE as i64 - 1, 1).await.unwrap().is_empty());
        assert!(exists(&store, &expired.pending_deletes[0].key).await);
        let deleted = delete_due(&mut m, 300 + GRACE as i64, 1).await.unwrap();
        assert_eq!(deleted.len(), 200);
        for archive in &old.archives {
            assert!(exists(&store, &archive.key).await, "archives of expired entries are kept");
        }
        for key in &deleted {
            assert!(!exists(&store, key).await, "{key} deleted");
        }
        assert!(m.current.expired.as_ref().unwrap().pending_deletes.is_empty());
        // Everything kept is still there, and the chain continues.
        for e in &m.current.entries {
            assert!(exists(&store, &e.key).await);
        }
        assert!(exists(&store, &m.current.archives[0].key).await);
        m.commit(vec![manifest::tests_support::valid_entry(&store, 400)], 2000, 1).await.unwrap();
        assert_eq!(reopen(&store).await.current.start_offset(), Some(200));
    }

    #[tokio::test]
    async fn byte_retention_keeps_the_newest_segments_under_the_cap() {
        let store = memory_store();
        let mut m = history(&store, 10, 10).await;
        // 1000 raw bytes; expire while more than 350 remain: 7 go, 300 bytes stay.
        let outcome = expire(&mut m, &policy(None, Some(350)), 5, 1).await.unwrap().unwrap();
        assert_eq!((outcome.before_offset, outcome.segments), (7, 7));
        assert_eq!(m.current.totals().1, 300);
        assert!(m.current.expired.as_ref().unwrap().reason.contains("retention.bytes=350"));
    }

    #[tokio::test]
    async fn a_hold_or_the_local_log_stops_expiry_at_the_first_segment_it_covers() {
        let store = memory_store();
        let mut m = history(&store, 10, 10).await;
        let held = Policy { holds: vec![(3, 4)], ..policy(Some(1), None) };
        assert_eq!(plan(&m, &held, 1000).await.unwrap(), Some(3), "segment 3 is held, and everything after it");
        let local = Policy { keep_from: 5, ..policy(Some(1), None) };
        assert_eq!(plan(&m, &local, 1000).await.unwrap(), Some(5), "the local log still holds 5 on");
        let first_held = Policy { holds: vec![(i64::MIN, 1)], ..policy(Some(1), None) };
        assert_eq!(plan(&m, &first_held, 1000).await.unwrap(), None);
        assert_eq!(plan(&m, &policy(None, None), 1000).await.unwrap(), None, "retention off");
        // Expire everything the policy allows: the tier can end up empty, keeping its end.
        expire(&mut m, &policy(Some(1), None), 1000, 1).await.unwrap().unwrap();
        assert_eq!((m.current.start_offset(), m.current.next_offset()), (None, 10));
        m.commit(vec![manifest::tests_support::valid_entry(&store, 10)], 1001, 1).await.unwrap();
        assert_eq!(reopen(&store).await.current.start_offset(), Some(10));
        let gap = m.commit(vec![manifest::tests_support::valid_entry(&store, 12)], 1002, 1).await;
        assert!(gap.is_err(), "an expired tier still refuses a gap");
    }

    #[tokio::test]
    async fn a_failed_delete_keeps_the_pending_list_and_the_next_run_finishes_it() {
        let memory = memory_store();
        let faults = Arc::new(FaultStore::new(memory.store.clone()));
        let store = RemoteStore { store: faults.clone(), ..memory };
        let mut m = history(&store, 10, 10).await;
        expire(&mut m, &policy(Some(1), None), 1000, 1).await.unwrap().unwrap();
        let pending = m.current.expired.as_ref().unwrap().pending_deletes.clone();
        // Deleted by hand already (a run that crashed before forgetting): still fine.
        store.store.delete(&Path::from(pending[0].key.as_str())).await.unwrap();
        faults.faults.fail_deletes.store(1, std::sync::atomic::Ordering::SeqCst);
        let due = 1000 + GRACE as i64;
        assert!(delete_due(&mut m, due, 1).await.is_err(), "the injected DELETE failure is reported");
        let reopened = reopen(&store).await;
        assert_eq!(reopened.current.expired.as_ref().unwrap().pending_deletes, pending, "nothing forgotten");
        let mut m = reopened;
        assert_eq!(delete_due(&mut m, due, 1).await.unwrap().len(), pending.len());
        for p in &pending {
            assert!(!exists(&store, &p.key).await);
        }
        assert!(reopen(&store).await.current.expired.unwrap().pending_deletes.is_empty());
    }

    #[tokio::test]
    async fn an_expiry_that_landed_but_reported_a_timeout_is_adopted_not_repeated() {
        let memory = memory_store();
        let faults = Arc::new(FaultStore::new(memory.store.clone()));
        let store = RemoteStore { store: faults.clone(), ..memory };
        let mut m = history(&store, 10, 10).await;
        let version = m.current.manifest_version;
        faults.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        let first = expire(&mut m, &policy(Some(1), None), 1000, 1).await;
        assert!(first.is_err(), "the timeout is reported");
        // A later run (a new clock reading, so a different body) finds our landed version.
        let again = expire(&mut m, &policy(Some(1), None), 1005, 3).await.unwrap();
        assert!(again.is_none(), "already expired by the adopted version");
        assert_eq!(m.current.manifest_version, version + 1);
        assert_eq!(m.current.expired.as_ref().unwrap().segments, 10);
    }

    #[tokio::test]
    async fn a_cut_inside_a_segment_is_refused_and_writes_nothing() {
        let store = memory_store();
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut m = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        let wide = crate::manifest::tests_support::entry(0, 9);
        m.commit(vec![wide], 1, 1).await.unwrap();
        let e = m.expire_before(5, "test", GRACE, 10, 1).await.unwrap_err();
        assert!(e.to_string().contains("not the start of a remote segment"), "{e}");
        assert!(m.current.expired.is_none());
        assert_eq!(reopen(&store).await.current.manifest_version, 1);
    }

    #[tokio::test]
    async fn a_pending_delete_still_listed_is_never_deleted() {
        let store = memory_store();
        let mut m = history(&store, 4, 4).await;
        expire(&mut m, &policy(Some(1), Some(250)), 3, 1).await.unwrap().unwrap();
        let kept = m.current.entries[0].key.clone();
        m.current
            .expired
            .as_mut()
            .unwrap()
            .pending_deletes
            .push(crate::manifest::PendingDelete { key: kept.clone(), delete_after_ms: 0 });
        let e = delete_due(&mut m, 3 + GRACE as i64, 1).await.unwrap_err();
        assert!(e.to_string().contains(&kept), "{e}");
        assert!(exists(&store, &kept).await);
    }
}
