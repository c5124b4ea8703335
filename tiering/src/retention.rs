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
use crate::lock::Deleted;
use crate::manifest::{ArchiveRef, Entry, ExpiryOutcome, ManifestStore, PendingDelete};

/// Most segments one expiry commit removes.
pub const EXPIRY_SEGMENTS_MAX: usize = 256;
/// No expiry is committed while this many objects await deletion: every manifest version
/// carries the pending list, so it stays small (about 100 bytes per key).
pub const PENDING_DELETES_MAX: usize = 1024;

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
    /// The uploader's commit window (`tiering.commit_window_ms`): an archive an expiry writes
    /// must be listed within it, as an upload must (scrub relies on it).
    pub commit_window_ms: u64,
    /// Judge age and holds by append time rather than record timestamp (a topic whose clients
    /// see append times: `message.timestamp.type = LogAppendTime`).
    pub by_append_time: bool,
}

impl Policy {
    fn is_off(&self) -> bool {
        self.retention_ms.is_none() && self.retention_bytes.is_none()
    }

    /// Whether records of the time range `[min, max]` (in the topic's clock) are held.
    pub fn held(&self, (min, max): (i64, i64)) -> bool {
        self.holds.iter().any(|(from, to)| min < *to && *from <= max)
    }

    /// A segment's time range in the topic's clock: record timestamps, or append times.
    fn times(&self, e: &Entry) -> (i64, i64) {
        if self.by_append_time { (e.min_append(), e.max_append()) } else { (e.min_timestamp, e.max_timestamp) }
    }

    /// An expired object's time range in the topic's clock, as its entry had it.
    pub fn pending_times(&self, p: &PendingDelete) -> (i64, i64) {
        let none = crate::segment_object::NO_APPEND_TIME;
        match self.by_append_time {
            true => (p.min_append_time.unwrap_or(none), p.max_append_time.unwrap_or(none)),
            false => (p.min_timestamp, p.max_timestamp),
        }
    }

    /// Whether a segment expires with `remaining` raw bytes in the remote tier (itself included).
    fn expires(&self, entry: &Entry, remaining: u64, now_ms: i64) -> bool {
        let (min, max) = self.times(entry);
        let old = self.retention_ms.is_some_and(|ms| now_ms.saturating_sub(max) > ms as i64);
        let over = self.retention_bytes.is_some_and(|bytes| remaining > bytes);
        (old || over) && entry.last_offset < self.keep_from && !self.held((min, max))
    }

    /// Whether any segment of an archive could expire, from its reference alone (so a pass
    /// that expires nothing loads no archive).
    fn may_expire(&self, archive: &ArchiveRef, remaining: u64, now_ms: i64) -> bool {
        let min = match self.by_append_time {
            true => archive.min_append_time.unwrap_or(crate::segment_object::NO_APPEND_TIME),
            false => archive.min_timestamp,
        };
        let old = self.retention_ms.is_some_and(|ms| now_ms.saturating_sub(min) > ms as i64);
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
    let current = &manifest.current;
    let pending = current.expired.as_ref().map_or(0, |x| x.pending_deletes.len());
    // Bounded work per commit and a bounded pending list (every version carries it): a large
    // backlog is expired over several passes.
    let mut budget = EXPIRY_SEGMENTS_MAX.min(PENDING_DELETES_MAX.saturating_sub(pending));
    if policy.is_off() || budget == 0 {
        return Ok(None);
    }
    let mut remaining = current.totals().1;
    let mut cut = None;
    let mut consider = |entry: &Entry, remaining: &mut u64| {
        if budget == 0 || !policy.expires(entry, *remaining, now_ms) {
            return false;
        }
        budget -= 1;
        *remaining -= entry.raw_bytes;
        cut = Some(entry.last_offset + 1);
        true
    };
    'walk: {
        for archive in &current.archives {
            if !policy.may_expire(archive, remaining, now_ms) {
                break 'walk;
            }
            for entry in manifest.load_archive(archive).await? {
                if !consider(&entry, &mut remaining) {
                    break 'walk;
                }
            }
        }
        for entry in &current.entries {
            if !consider(entry, &mut remaining) {
                break;
            }
        }
    }
    Ok(cut)
}

/// Plans and commits one expiry (step 1). Deletes nothing.
pub async fn expire(
    manifest: &mut ManifestStore,
    policy: &Policy,
    clock: &impl Fn() -> i64,
    attempts: u32,
) -> Result<Option<ExpiryOutcome>> {
    match plan(manifest, policy, clock()).await? {
        Some(before) => {
            let reason = policy.reason();
            manifest.expire_before(before, &reason, policy.grace_ms, clock, policy.commit_window_ms, attempts).await
        }
        None => Ok(None),
    }
}

/// Deletes the pending objects whose grace period has passed and commits a version without
/// them (steps 2 and 3). Returns the keys deleted. An object under a legal hold of `policy`
/// (set after its expiry) stays in the bucket and on the list. A key that is not a segment
/// object of this partition below the cut is never deleted: refused, naming it.
pub async fn delete_due(
    manifest: &mut ManifestStore,
    policy: &Policy,
    now_ms: i64,
    attempts: u32,
) -> Result<Vec<String>> {
    let Some(expired) = &manifest.current.expired else { return Ok(Vec::new()) };
    let wall = crate::lock::wall_ms();
    let waiting = |key: &str| manifest.lock_waits.get(key).is_some_and(|until| *until > wall);
    let due: Vec<String> = expired
        .pending_deletes
        .iter()
        .filter(|p| p.delete_after_ms <= now_ms && !policy.held(policy.pending_times(p)) && !waiting(&p.key))
        .map(|p| p.key.clone())
        .collect();
    if due.is_empty() {
        return Ok(due);
    }
    // Only segment objects of this partition below the cut: nothing listed, nothing of
    // another partition, whatever a manifest version says.
    let current = &manifest.current;
    let cut = current.expired_before();
    let deletable = |key: &str| {
        let parsed = crate::keys::parse_key(&manifest.store, &object_store::path::Path::from(key));
        let ours = matches!(parsed, Some(crate::keys::ParsedKey::Segment { ref topic, partition, base_offset })
            if *topic == manifest.topic && partition == manifest.partition && base_offset < cut);
        ours && !current.entries.iter().any(|e| e.key == key)
    };
    if let Some(key) = due.iter().find(|k| !deletable(k)) {
        return Err(Error::Diverged {
            topic: manifest.topic.clone(),
            partition: manifest.partition,
            detail: format!(
                "object {key} is pending deletion in manifest version {} but is not a segment object of this partition below the retention cut {cut}: nothing is deleted; run `tierlog verify`",
                current.manifest_version
            ),
        });
    }
    let mut deleted = Vec::with_capacity(due.len());
    for key in due {
        match delete_object(manifest, &key, attempts).await? {
            Deleted::Gone { .. } => deleted.push(key),
            // The store still protects it (S3 Object Lock): it stays pending and is asked
            // about again once its retention ends (a legal hold: an hour later); never forced.
            Deleted::Locked { until_ms, legal_hold } => {
                let again = match (until_ms, legal_hold) {
                    (Some(until), false) if until > wall => until,
                    _ => wall + LOCK_RECHECK_MS,
                };
                tracing::info!(topic = %manifest.topic, partition = manifest.partition, key, until_ms, legal_hold, "expired object is still under S3 Object Lock; its deletion waits");
                manifest.lock_waits.insert(key, again);
            }
        }
    }
    if deleted.is_empty() {
        return Ok(deleted);
    }
    manifest.forget_deleted(&deleted, now_ms, attempts).await?;
    tracing::info!(topic = %manifest.topic, partition = manifest.partition, objects = deleted.len(), "deleted expired objects");
    Ok(deleted)
}

/// How long an expired object under an S3 legal hold (or one the store refused to delete)
/// waits before the store is asked again.
const LOCK_RECHECK_MS: i64 = 3_600_000;

/// Deletes one expired object. In a versioned bucket (S3 with Object Lock or versioning),
/// every version goes, not only the current one behind a delete marker, and the store is
/// asked first whether any version is locked: then nothing is deleted.
async fn delete_object(manifest: &ManifestStore, key: &str, attempts: u32) -> Result<Deleted> {
    let store = &manifest.store;
    if let Some(lock) = &store.lock
        && lock.bucket().await?.versioned
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match lock.delete_versions(key, crate::lock::wall_ms()).await {
                Ok(deleted) => return Ok(deleted),
                Err(e) if attempt < attempts => {
                    tracing::warn!(key, attempt, error = %e, "delete of an expired object's versions failed; retrying");
                    tokio::time::sleep(crate::uploader::backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let path = object_store::path::Path::from(key);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(Deleted::Gone { versions: 1 }),
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
        Policy { retention_ms, retention_bytes, keep_from: u64::MAX, grace_ms: GRACE, ..Policy::default() }
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
        let outcome = expire(&mut m, &policy(Some(100), None), &|| 300, 1).await.unwrap().unwrap();
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
        assert!(expire(&mut m, &policy(Some(100), None), &|| 300, 1).await.unwrap().is_none(), "nothing more expires");

        // Nothing is deleted before the grace period has passed.
        assert!(delete_due(&mut m, &Policy::default(), 300 + GRACE as i64 - 1, 1).await.unwrap().is_empty());
        assert!(exists(&store, &expired.pending_deletes[0].key).await);
        let deleted = delete_due(&mut m, &Policy::default(), 300 + GRACE as i64, 1).await.unwrap();
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
        let outcome = expire(&mut m, &policy(None, Some(350)), &|| 5, 1).await.unwrap().unwrap();
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
        expire(&mut m, &policy(Some(1), None), &|| 1000, 1).await.unwrap().unwrap();
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
        expire(&mut m, &policy(Some(1), None), &|| 1000, 1).await.unwrap().unwrap();
        let pending = m.current.expired.as_ref().unwrap().pending_deletes.clone();
        // Deleted by hand already (a run that crashed before forgetting): still fine.
        store.store.delete(&Path::from(pending[0].key.as_str())).await.unwrap();
        faults.faults.fail_deletes.store(1, std::sync::atomic::Ordering::SeqCst);
        let due = 1000 + GRACE as i64;
        assert!(
            delete_due(&mut m, &Policy::default(), due, 1).await.is_err(),
            "the injected DELETE failure is reported"
        );
        let reopened = reopen(&store).await;
        assert_eq!(reopened.current.expired.as_ref().unwrap().pending_deletes, pending, "nothing forgotten");
        let mut m = reopened;
        assert_eq!(delete_due(&mut m, &Policy::default(), due, 1).await.unwrap().len(), pending.len());
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
        let first = expire(&mut m, &policy(Some(1), None), &|| 1000, 1).await;
        assert!(first.is_err(), "the timeout is reported");
        // A later run (a new clock reading, so a different body) finds our landed version.
        let again = expire(&mut m, &policy(Some(1), None), &|| 1005, 3).await.unwrap();
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
        let e = m.expire_before(5, "test", GRACE, &|| 10, 600_000, 1).await.unwrap_err();
        assert!(e.to_string().contains("not the start of a remote segment"), "{e}");
        assert!(m.current.expired.is_none());
        assert_eq!(reopen(&store).await.current.manifest_version, 1);
    }

    #[tokio::test]
    async fn a_pending_delete_still_listed_is_never_deleted() {
        let store = memory_store();
        let mut m = history(&store, 4, 4).await;
        expire(&mut m, &policy(Some(1), Some(250)), &|| 3, 1).await.unwrap().unwrap();
        let kept = m.current.entries[0].key.clone();
        m.current.expired.as_mut().unwrap().pending_deletes.push(crate::manifest::PendingDelete {
            key: kept.clone(),
            delete_after_ms: 0,
            ..Default::default()
        });
        let e = delete_due(&mut m, &Policy::default(), 3 + GRACE as i64, 1).await.unwrap_err();
        assert!(e.to_string().contains(&kept), "{e}");
        assert!(exists(&store, &kept).await);
    }

    /// Review finding: once everything remote expired, a landed commit reported failed must be
    /// adopted as ours on the next attempt, not taken for another writer.
    #[tokio::test]
    async fn a_commit_that_landed_after_everything_expired_is_adopted_not_fenced() {
        let memory = memory_store();
        let faults = Arc::new(FaultStore::new(memory.store.clone()));
        let store = RemoteStore { store: faults.clone(), ..memory };
        let mut m = history(&store, 10, 10).await;
        expire(&mut m, &policy(Some(1), None), &|| 1000, 1).await.unwrap().unwrap();
        assert_eq!((m.current.start_offset(), m.current.next_offset()), (None, 10));
        faults.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        let entry = manifest::tests_support::valid_entry(&store, 10);
        assert!(m.commit(vec![entry.clone()], 1001, 1).await.is_err(), "the timeout is reported");
        let again = Entry { key: format!("{}-again", entry.key), ..entry.clone() };
        let next = manifest::tests_support::valid_entry(&store, 11);
        m.commit(vec![again, next], 1002, 1).await.expect("our landed version is adopted");
        assert_eq!((m.current.start_offset(), m.current.next_offset()), (Some(10), 12));
    }

    /// Review finding: an expiry that rewrites an archive starts no manifest PUT after the
    /// commit window, or scrub could already have deleted the new archive as an orphan.
    #[tokio::test]
    async fn an_expiry_that_wrote_an_archive_commits_within_the_commit_window_or_not_at_all() {
        let store = memory_store();
        let mut m = history(&store, 400, 50).await;
        let version = m.current.manifest_version;
        let time = std::sync::atomic::AtomicI64::new(300);
        let slow_clock = || time.fetch_add(700_000, std::sync::atomic::Ordering::SeqCst); // > 600 s per look
        let policy = Policy { commit_window_ms: 600_000, ..policy(Some(100), None) };
        let plan_at_300 = plan(&m, &policy, 300).await.unwrap();
        assert_eq!(plan_at_300, Some(200), "the cut falls inside the second archive");
        let e = m.expire_before(200, "test", GRACE, &slow_clock, 600_000, 1).await.unwrap_err();
        assert!(matches!(e, Error::CommitWindow { .. }), "{e}");
        assert_eq!(reopen(&store).await.current.manifest_version, version, "nothing committed");
        // With time to spare it commits.
        m.expire_before(200, "test", GRACE, &|| 400, 600_000, 1).await.unwrap().unwrap();
    }

    /// Review finding: a pending list naming a kept segment (inside an archive) or another
    /// partition's object is refused whole; nothing is deleted.
    #[tokio::test]
    async fn a_pending_delete_of_a_kept_archived_segment_or_another_partition_is_refused() {
        let store = memory_store();
        let mut m = history(&store, 400, 50).await;
        expire(&mut m, &policy(Some(100), None), &|| 300, 1).await.unwrap().unwrap();
        let archived = manifest::load_archive(&store, &m.current.archives[0]).await.unwrap();
        let kept = archived[0].key.clone();
        let foreign = crate::keys::segment_key(&store, "other", 0, 5).to_string();
        for key in [kept, foreign] {
            let mut forged = m.current.clone();
            forged.expired.as_mut().unwrap().pending_deletes.push(crate::manifest::PendingDelete {
                key: key.clone(),
                delete_after_ms: 0,
                ..Default::default()
            });
            store.store.put(&Path::from(key.as_str()), vec![1u8].into()).await.unwrap();
            let writer = Writer { id: "w".into(), epoch: 1 };
            let mut attacked = ManifestStore {
                current: forged,
                ..ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap()
            };
            let e = delete_due(&mut attacked, &Policy::default(), 300 + GRACE as i64, 1).await.unwrap_err();
            assert!(e.to_string().contains(&key), "{e}");
            assert!(exists(&store, &key).await, "{key} kept");
        }
    }

    /// Review finding: the pending list stays bounded; a backlog expires over several passes.
    #[tokio::test]
    async fn a_large_backlog_expires_in_bounded_steps() {
        let store = memory_store();
        let mut m = history(&store, 1500, 500).await;
        let everything = Policy { keep_from: 1400, ..policy(Some(1), None) };
        let mut cuts = Vec::new();
        while let Some(outcome) = expire(&mut m, &everything, &|| 10_000, 1).await.unwrap() {
            cuts.push(outcome.before_offset);
        }
        assert_eq!(cuts, vec![256, 512, 768, 1024], "256 per commit, then 1024 pending stop it");
        delete_due(&mut m, &Policy::default(), 10_000 + GRACE as i64, 1).await.unwrap();
        let outcome = expire(&mut m, &everything, &|| 20_000, 1).await.unwrap().unwrap();
        assert_eq!(outcome.before_offset, 1280);
    }
}
