//! Scrub: find, and with `delete` remove, segment and archive objects that no manifest
//! references — uploads whose commit never happened (a crash, a failed or abandoned commit,
//! a retried ambiguous PUT). Leaks are acceptable, loss is not: every rule below errs towards
//! keeping an object.
//!
//! Owns: classifying keys, deciding which unreferenced objects are old enough to delete, and
//! deleting them. Does not own: what is referenced (the manifests say so, read with
//! [`manifest`]), the key grammar ([`keys`]), or which partitions exist (the caller says).
//!
//! **Candidates.** Keys are parsed with [`keys::parse_key`], the exact inverse of the key
//! builders, never by substring: only `Segment` and `Archive` keys of the (topic, partition)
//! pairs the caller passed are candidates. Manifest versions, the scrub clock markers, other
//! partitions' objects and anything the grammar does not fully recognise are never touched.
//!
//! **Age against the server's clock.** Object ages come from `last_modified`, which the
//! server stamps with its own clock. Comparing that with the local clock would make a scrub
//! host whose clock runs ahead delete young objects. So scrub first writes a marker object
//! (`<prefix>/_tierlog/scrub/<unique>`, create-only), takes the marker's `last_modified` as
//! "now", and deletes the marker when it is done.
//!
//! **Commit window plus grace.** The uploader never commits an entry whose object PUT began
//! more than `commit_window_ms` earlier, and never starts a manifest PUT after that window (see
//! [`crate::uploader`]). An object's `last_modified` is not earlier than its PUT's start, so
//! any commit referencing it starts at most `commit_window_ms` after its `last_modified`.
//! Scrub deletes an unreferenced object only when `now - last_modified >= commit_window_ms +
//! orphan_grace_ms` (plus [`CLOCK_RESOLUTION_MS`]): grace counts from a time that cannot
//! precede the start of any commit of that object, and only has to cover a manifest PUT that
//! was started in time and is still in flight — so it is never less than
//! [`MANIFEST_PUT_IN_FLIGHT_MAX_MS`], whatever the configuration says. Elapsed times are measured by one clock each
//! (the uploader's for the window, the server's for the age), so clock offsets between hosts
//! cancel out.
//!
//! **Re-read before delete.** Scrub loads each partition's manifest, LISTs, re-reads the
//! manifest (probing forward from the version it had), and re-reads it again right before each
//! delete batch, deleting only keys still unreferenced by the latest version, its archives and
//! the entries inside them. An object committed after the LIST — even one that looks old — is
//! therefore kept. What remains is a commit landing between the last re-read and the delete;
//! the age rule above excludes it.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::Result;
use crate::keys::{self, ParsedKey};
use crate::manifest::{self, Entry};
use crate::store::RemoteStore;

/// The longest a manifest PUT started inside the commit window can stay in flight and still
/// land: object_store's retry budget for one request plus one last request timeout
/// (`store::RETRY_TIMEOUT` + `store::REQUEST_TIMEOUT`). Added to every age threshold
/// whatever `orphan_grace_ms` says, so even `orphan_grace_ms = 0` cannot outrun a slow commit.
pub const MANIFEST_PUT_IN_FLIGHT_MAX_MS: u64 =
    (crate::store::RETRY_TIMEOUT.as_millis() + crate::store::REQUEST_TIMEOUT.as_millis()) as u64;
/// S3's `Last-Modified` has one-second resolution (HEAD returns an HTTP date), so an age
/// computed from two such times may be overstated by up to this much; it is added to the
/// age an object must reach before it is deleted.
pub const CLOCK_RESOLUTION_MS: u64 = 1000;
/// Keys deleted per batch, with a manifest re-read before each: S3's DeleteObjects takes at
/// most 1000 keys, and a batch must be short so the re-read stays current.
const DELETE_BATCH_MAX: usize = 1000;

/// The partitions to scrub, with the manifest version their writer last knew (0: unknown).
#[derive(Debug, Clone)]
pub struct ScrubPartition {
    pub topic: String,
    pub partition: u32,
    pub version_hint: u64,
}

#[derive(Debug, Clone)]
pub struct ScrubSettings {
    /// `tiering.commit_window_ms` of the writers: the longest an upload may wait for its commit.
    pub commit_window_ms: u64,
    /// `tiering.orphan_grace_ms`: extra age required after the commit window.
    pub orphan_grace_ms: u64,
    /// Delete old enough unreferenced objects; otherwise only report them.
    pub delete: bool,
}

/// What scrub did with one unreferenced object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrubAction {
    /// Too young: an upload may still commit it.
    Young,
    /// Old enough, but `delete` was not asked for.
    Orphan,
    Deleted,
    /// Unreferenced when listed, referenced by a manifest version committed since: kept.
    CommittedMeanwhile,
}

impl ScrubAction {
    pub fn describe(self) -> &'static str {
        match self {
            ScrubAction::Young => {
                "kept: younger than tiering.commit_window_ms + tiering.orphan_grace_ms (an upload may still commit it)"
            }
            ScrubAction::Orphan => "orphan: would delete with --delete",
            ScrubAction::Deleted => "deleted",
            ScrubAction::CommittedMeanwhile => "kept: a manifest version committed during the scrub references it",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScrubbedObject {
    pub key: String,
    pub bytes: u64,
    /// Age by the server's clock.
    pub age_ms: i64,
    pub action: ScrubAction,
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    /// Every candidate that was unreferenced when listed, with what happened to it.
    pub objects: Vec<ScrubbedObject>,
    /// Keys the latest manifests read reference (segments and archives).
    pub referenced: usize,
    pub deleted: usize,
}

impl ScrubReport {
    /// Objects still unreferenced at the end of the scrub (deleted or not).
    pub fn unreferenced(&self) -> usize {
        self.objects.iter().filter(|o| o.action != ScrubAction::CommittedMeanwhile).count()
    }
}

/// Scrubs `partitions` of `remote`. See the module doc for the rules.
pub async fn scrub(
    remote: &RemoteStore,
    partitions: &[ScrubPartition],
    settings: &ScrubSettings,
) -> Result<ScrubReport> {
    let mut references = References::default();
    let mut loaded = Vec::with_capacity(partitions.len());
    for p in partitions {
        loaded.push(references.read(remote, p, p.version_hint).await?);
    }
    let marker = marker_key(remote);
    let now_ms = write_marker(remote, &marker).await?;
    let result = scrub_listed(remote, partitions, settings, &mut references, loaded, now_ms).await;
    if let Err(e) = remote.store.delete(&marker).await {
        tracing::warn!(key = %marker, error = %e, "could not delete the scrub clock marker; it is harmless and may be removed by hand");
    }
    result
}

fn marker_key(remote: &RemoteStore) -> Path {
    remote.key(&["_tierlog", "scrub", &remote.ids.next()])
}

/// Writes the clock marker create-only and returns its `last_modified`: the server's "now".
async fn write_marker(remote: &RemoteStore, marker: &Path) -> Result<i64> {
    let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
    let payload = PutPayload::from_static(b"tierlog scrub clock marker: deleted when the scrub ends\n");
    remote
        .store
        .put_opts(marker, payload, options)
        .await
        .map_err(|e| remote.error(format!("PUT {marker} (scrub clock marker)"), e))?;
    match remote.store.head(marker).await {
        Ok(meta) => Ok(meta.last_modified.timestamp_millis()),
        Err(e) => {
            let _ = remote.store.delete(marker).await;
            Err(remote.error(format!("HEAD {marker} (scrub clock marker)"), e))
        }
    }
}

async fn scrub_listed(
    remote: &RemoteStore,
    partitions: &[ScrubPartition],
    settings: &ScrubSettings,
    references: &mut References,
    loaded: Vec<Referenced>,
    now_ms: i64,
) -> Result<ScrubReport> {
    let mut candidates = list_candidates(remote, partitions, &loaded).await?;
    let min_age_ms = settings
        .commit_window_ms
        .saturating_add(settings.orphan_grace_ms.max(MANIFEST_PUT_IN_FLIGHT_MAX_MS))
        .saturating_add(CLOCK_RESOLUTION_MS);
    let min_age_ms = i64::try_from(min_age_ms).unwrap_or(i64::MAX);
    let mut report = ScrubReport::default();
    for ((p, before), listed) in partitions.iter().zip(loaded).zip(candidates.iter_mut()) {
        if listed.is_empty() {
            report.referenced += before.keys.len();
            continue;
        }
        let after = references.read(remote, p, before.version).await?;
        let mut doomed = Vec::new();
        for meta in listed.drain(..) {
            let key = meta.location.to_string();
            let age_ms = now_ms - meta.last_modified.timestamp_millis();
            let action = if after.keeps(remote, &key) {
                ScrubAction::CommittedMeanwhile
            } else if age_ms < min_age_ms {
                ScrubAction::Young
            } else if settings.delete {
                doomed.push(ScrubbedObject { key, bytes: meta.size, age_ms, action: ScrubAction::Deleted });
                continue;
            } else {
                ScrubAction::Orphan
            };
            report.objects.push(ScrubbedObject { key, bytes: meta.size, age_ms, action });
        }
        let mut version = after.version;
        let mut referenced = after.keys.len();
        for batch in doomed.chunks(DELETE_BATCH_MAX) {
            let latest = references.read(remote, p, version).await?;
            (version, referenced) = (latest.version, latest.keys.len());
            report.deleted += delete_unreferenced(remote, p, batch, &latest, &mut report.objects).await?;
        }
        report.referenced += referenced;
    }
    Ok(report)
}

/// LISTs the segment and manifest roots once and keeps, per partition (in `partitions`
/// order), the segment and archive objects its loaded manifest does not reference.
async fn list_candidates(
    remote: &RemoteStore,
    partitions: &[ScrubPartition],
    loaded: &[Referenced],
) -> Result<Vec<Vec<ObjectMeta>>> {
    let wanted: HashMap<(&str, u32), usize> =
        partitions.iter().enumerate().map(|(i, p)| ((p.topic.as_str(), p.partition), i)).collect();
    let mut candidates = vec![Vec::new(); partitions.len()];
    for root in [remote.key(&["segments"]), remote.key(&["manifests"])] {
        let mut listing = remote.store.list(Some(&root));
        while let Some(meta) = listing.try_next().await.map_err(|e| remote.error(format!("LIST {root}"), e))? {
            let (topic, partition) = match keys::parse_key(remote, &meta.location) {
                Some(ParsedKey::Segment { topic, partition, .. } | ParsedKey::Archive { topic, partition, .. }) => {
                    (topic, partition)
                }
                Some(ParsedKey::ManifestVersion { .. }) | None => continue,
            };
            let Some(&i) = wanted.get(&(topic.as_str(), partition)) else { continue };
            if !loaded[i].keeps(remote, meta.location.as_ref()) {
                candidates[i].push(meta);
            }
        }
    }
    Ok(candidates)
}

/// Deletes the objects of `batch` that `referenced` (just re-read) does not list; reports
/// the others as committed meanwhile. Returns how many were deleted.
async fn delete_unreferenced(
    remote: &RemoteStore,
    p: &ScrubPartition,
    batch: &[ScrubbedObject],
    referenced: &Referenced,
    report: &mut Vec<ScrubbedObject>,
) -> Result<usize> {
    let (kept, doomed): (Vec<_>, Vec<_>) = batch.iter().cloned().partition(|o| referenced.keeps(remote, &o.key));
    report.extend(kept.into_iter().map(|o| ScrubbedObject { action: ScrubAction::CommittedMeanwhile, ..o }));
    let paths: Vec<object_store::Result<Path>> = doomed.iter().map(|o| Ok(Path::from(o.key.as_str()))).collect();
    let mut results = remote.store.delete_stream(futures::stream::iter(paths).boxed());
    while let Some(result) = results.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {} // deleted, by us or a concurrent scrub
            Err(e) => {
                return Err(remote.error(format!("DELETE of unreferenced objects of {}/{}", p.topic, p.partition), e));
            }
        }
    }
    let deleted = doomed.len();
    report.extend(doomed);
    Ok(deleted)
}

/// The keys one manifest version references, and that version.
struct Referenced {
    version: u64,
    keys: HashSet<String>,
    /// The version's first offset not expired by retention: archives below it are kept as
    /// the proof of the expired history (older versions list them; verify reads them).
    expired_before: u64,
}

impl Referenced {
    /// Whether scrub must keep `key`: referenced, or an archive of expired history.
    fn keeps(&self, remote: &RemoteStore, key: &str) -> bool {
        self.keys.contains(key)
            || matches!(keys::parse_key(remote, &Path::from(key)),
                Some(ParsedKey::Archive { base_offset, .. }) if base_offset < self.expired_before)
    }
}

/// Reads what manifests reference. Archives are immutable (create-only, checked against the
/// SHA-256 in the manifest), so their entry keys are loaded once per scrub.
#[derive(Default)]
struct References {
    archives: HashMap<String, Vec<String>>,
}

impl References {
    /// The latest version of `p`'s manifest, probing forward from `from`, and every key it
    /// references: inline entries, archive objects and the entries inside them, and objects
    /// expired by retention whose deletion is pending (retention deletes them after its grace
    /// period; scrub must not cut that short).
    async fn read(&mut self, remote: &RemoteStore, p: &ScrubPartition, from: u64) -> Result<Referenced> {
        let version = manifest::latest_version(remote, &p.topic, p.partition, from).await?;
        if version == 0 {
            return Ok(Referenced { version, keys: HashSet::new(), expired_before: 0 });
        }
        let current = manifest::load_version(remote, &p.topic, p.partition, version).await?;
        let mut keys: HashSet<String> = current.entries.iter().map(|e| e.key.clone()).collect();
        keys.extend(current.expired.iter().flat_map(|x| x.pending_deletes.iter().map(|p| p.key.clone())));
        for archive in &current.archives {
            if !self.archives.contains_key(&archive.key) {
                let entries: Vec<Entry> = manifest::load_archive(remote, archive).await?;
                self.archives.insert(archive.key.clone(), entries.into_iter().map(|e| e.key).collect());
            }
            keys.extend(self.archives.get(&archive.key).into_iter().flatten().cloned());
            keys.insert(archive.key.clone());
        }
        Ok(Referenced { version, keys, expired_before: current.expired_before() })
    }
}
