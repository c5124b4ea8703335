//! Scrub: find (and optionally delete) objects no manifest references.
//!
//! Moved out of the CLI unchanged; the next commits make it safe.

use std::collections::HashSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::error::Result;
use crate::manifest::{ManifestStore, Writer};
use crate::store::RemoteStore;

/// The partitions to scrub, with the manifest version their writer last knew.
#[derive(Debug, Clone)]
pub struct ScrubPartition {
    pub topic: String,
    pub partition: u32,
    pub version_hint: u64,
}

#[derive(Debug, Clone)]
pub struct ScrubSettings {
    pub orphan_grace_ms: u64,
    pub delete: bool,
}

#[derive(Debug, Clone)]
pub struct ScrubbedObject {
    pub key: String,
    pub bytes: u64,
    pub age_ms: i64,
    pub action: &'static str,
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub objects: Vec<ScrubbedObject>,
    pub referenced: usize,
    pub deleted: usize,
}

pub async fn scrub(
    remote: &RemoteStore,
    partitions: &[ScrubPartition],
    settings: &ScrubSettings,
    now_ms: i64,
) -> Result<ScrubReport> {
    let grace_ms = settings.orphan_grace_ms as i64;
    let mut referenced = HashSet::new();
    let mut known = HashSet::new();
    for p in partitions {
        known.insert((p.topic.clone(), p.partition.to_string()));
        let reader = Writer { id: "scrub".into(), epoch: 0 };
        let store = ManifestStore::open(remote.clone(), &p.topic, p.partition, reader, p.version_hint).await?;
        for archive in &store.current.archives {
            referenced.insert(archive.key.clone());
            referenced.extend(store.load_archive(archive).await?.into_iter().map(|e| e.key));
        }
        referenced.extend(store.current.entries.iter().map(|e| e.key.clone()));
    }
    let mut report = ScrubReport::default();
    for root in [remote.key(&["segments"]), remote.key(&["manifests"])] {
        let objects: Vec<_> =
            remote.store.list(Some(&root)).try_collect().await.map_err(|e| remote.error(format!("LIST {root}"), e))?;
        for meta in objects {
            let key = meta.location.to_string();
            let is_segment_or_archive = key.ends_with(".zst") || key.contains("/archive/");
            if !is_segment_or_archive || referenced.contains(&key) || !belongs_to(&key, &known) {
                continue;
            }
            let age_ms = now_ms - meta.last_modified.timestamp_millis();
            let action = match (age_ms >= grace_ms, settings.delete) {
                (false, _) => "kept: younger than tiering.orphan_grace_ms (may be an upload in progress)",
                (true, false) => "orphan: would delete with --delete",
                (true, true) => {
                    remote.store.delete(&meta.location).await.map_err(|e| remote.error(format!("DELETE {key}"), e))?;
                    report.deleted += 1;
                    "deleted"
                }
            };
            report.objects.push(ScrubbedObject { key, bytes: meta.size, age_ms, action });
        }
    }
    report.referenced = referenced.len();
    Ok(report)
}

/// Whether an object key lies under a topic/partition this data directory knows, so a scrub
/// never touches another cluster's objects sharing the bucket prefix.
fn belongs_to(key: &str, known: &HashSet<(String, String)>) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    parts.windows(2).any(|w| known.contains(&(w[0].to_string(), w[1].to_string())))
}
