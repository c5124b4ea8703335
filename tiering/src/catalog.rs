//! What the bucket knows beyond the manifests, so that the bucket alone is enough to rebuild a
//! node (`tierlog restore`): the topic catalog and snapshots of consumer-group offsets.
//!
//! Both are series of numbered documents, written create-only like manifest versions, in the
//! manifest's two-line layout (header with format, version and body SHA-256; then the body):
//!
//! ```text
//! <prefix>/catalog/<version:020>.json        format "tierlog-catalog", format_version 1
//! <prefix>/group-offsets/<version:020>.json  format "tierlog-group-offsets", format_version 1
//! ```
//!
//! A new version is written only when the contents change. The newest is found without LIST
//! (HEAD the hint, gallop, bisect). Owns: these two formats and their series; not when they
//! are written (the tiering driver decides) nor what the settings mean (the log does).

use std::collections::BTreeMap;

use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::{self, Writer};
use crate::store::RemoteStore;

pub const CATALOG_FORMAT: &str = "tierlog-catalog";
pub const GROUP_OFFSETS_FORMAT: &str = "tierlog-group-offsets";
/// The version of both documents.
pub const FORMAT_VERSION: u32 = 1;
/// Most attempts at writing the next version when another write takes its number first.
pub(crate) const RACES_MAX: u32 = 8;
/// Versions looked back over, from the newest, for a readable one (or one by a given writer).
const LOOK_BACK_MAX: u64 = 64;

/// A topic as the bucket records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogTopic {
    pub name: String,
    pub partitions: u32,
    pub created_ms: i64,
    /// Per-topic settings under Kafka's names (e.g. `message.timestamp.type`).
    pub settings: BTreeMap<String, String>,
}

/// Every topic of the writer, as of `written_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub version: u64,
    pub written_ms: i64,
    pub writer: Writer,
    pub topics: Vec<CatalogTopic>,
}

/// The remote tier of one partition when a group snapshot was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionCut {
    pub manifest_version: u64,
    /// The offset after the last one in the remote tier at that version.
    pub remote_end_offset: u64,
}

/// One group's committed offsets in one topic (partition → next offset to read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupOffsets {
    pub group: String,
    pub topic: String,
    pub offsets: BTreeMap<u32, u64>,
}

/// Every group's committed offsets, with the manifest versions they were taken against
/// (`"<topic>/<partition>"` → cut): an offset past its partition's remote end points at data
/// only the writer's local disk held then; a restore clamps it to what it restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSnapshot {
    pub version: u64,
    pub written_ms: i64,
    pub writer: Writer,
    pub partitions: BTreeMap<String, PartitionCut>,
    pub groups: Vec<GroupOffsets>,
}

/// A numbered series of create-only documents.
pub(crate) trait Document: Serialize + DeserializeOwned + Clone + PartialEq {
    const FORMAT: &'static str;
    const FOLDER: &'static str;
    /// Written under the store's `records_lock` (S3 Object Lock) when one is set.
    const LOCKED: bool = false;
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
    /// The contents without version, time and writer (what "changed" compares).
    fn same_contents(&self, other: &Self) -> bool;
    /// Takes over from the newest readable version what a new one must keep (before comparing).
    fn carry_over(&mut self, _previous: &Self) {}
}

impl Document for Catalog {
    const FORMAT: &'static str = CATALOG_FORMAT;
    const FOLDER: &'static str = "catalog";
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn same_contents(&self, other: &Self) -> bool {
        self.topics == other.topics
    }
    /// Topics are never deleted: those of the previous version this one lacks stay (a node
    /// restored with a subset of them must not make the bucket forget the rest).
    fn carry_over(&mut self, previous: &Self) {
        let known: std::collections::BTreeSet<String> = self.topics.iter().map(|t| t.name.clone()).collect();
        self.topics.extend(previous.topics.iter().filter(|t| !known.contains(&t.name)).cloned());
        self.topics.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

impl Document for GroupSnapshot {
    const FORMAT: &'static str = GROUP_OFFSETS_FORMAT;
    const FOLDER: &'static str = "group-offsets";
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn same_contents(&self, other: &Self) -> bool {
        self.groups == other.groups && self.partitions == other.partitions
    }
}

pub(crate) fn key<D: Document>(store: &RemoteStore, version: u64) -> Path {
    store.key(&[D::FOLDER, &format!("{version:020}.json")])
}

pub(crate) fn to_bytes<D: Document>(document: &D) -> Vec<u8> {
    let body = serde_json::to_vec(document).expect("document serializes");
    manifest::wrap_document(D::FORMAT, FORMAT_VERSION, &body)
}

pub(crate) fn from_bytes<D: Document>(bytes: &[u8], key: &str, version: u64) -> Result<D> {
    let body = manifest::unwrap_document(bytes, D::FORMAT, &[FORMAT_VERSION], key)?;
    let document: D = serde_json::from_slice(body)
        .map_err(|e| Error::Corrupt { key: key.to_string(), reason: format!("body: {e}") })?;
    if document.version() != version {
        return Err(Error::Corrupt { key: key.to_string(), reason: format!("names version {}", document.version()) });
    }
    Ok(document)
}

/// The newest version number, and the newest version among the last [`LOOK_BACK_MAX`] that
/// reads and satisfies `accept` (a damaged newest version is skipped with a warning, so one
/// bad object never wedges the series).
async fn latest_accepted<D: Document>(
    store: &RemoteStore,
    hint: u64,
    accept: impl Fn(&D) -> bool,
) -> Result<(u64, Option<D>)> {
    let newest = manifest::latest_number(store, |v| key::<D>(store, v), hint).await?;
    let mut version = newest;
    while version > 0 && newest - version < LOOK_BACK_MAX {
        let key = key::<D>(store, version);
        let read = match manifest::get_bytes(store, &key).await {
            Ok(bytes) => from_bytes::<D>(&bytes, key.as_ref(), version),
            Err(Error::Missing { key }) => Err(Error::Corrupt { key, reason: "missing".into() }),
            Err(e) => return Err(e),
        };
        match read {
            Ok(document) if accept(&document) => return Ok((newest, Some(document))),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "unreadable {} version; looking at the one before", D::FORMAT)
            }
        }
        version -= 1;
    }
    Ok((newest, None))
}

async fn latest<D: Document>(store: &RemoteStore, hint: u64) -> Result<Option<D>> {
    Ok(latest_accepted(store, hint, |_: &D| true).await?.1)
}

/// Writes `next` as the version after the newest unless the newest readable one has the
/// same contents. Returns the version holding these contents.
async fn publish<D: Document>(store: &RemoteStore, mut next: D, hint: u64) -> Result<u64> {
    let mut hint = hint;
    for _ in 0..RACES_MAX {
        let (newest, current): (u64, Option<D>) = latest_accepted(store, hint, |_: &D| true).await?;
        if let Some(current) = &current {
            next.carry_over(current);
        }
        if let Some(current) = &current
            && current.version() == newest
            && current.same_contents(&next)
        {
            return Ok(current.version());
        }
        let version = newest + 1;
        next.set_version(version);
        if put_create(store, &next).await? {
            return Ok(version);
        }
        hint = version; // someone wrote this number first (or our earlier attempt landed): look again
    }
    Err(Error::Format(format!(
        "{}: other writers keep taking the next version number; is another node writing to this prefix?",
        D::FOLDER
    )))
}

/// Writes `document` under its version number, create-only: `false` when the number is taken.
pub(crate) async fn put_create<D: Document>(store: &RemoteStore, document: &D) -> Result<bool> {
    let key = key::<D>(store, document.version());
    let (options, lock) = match D::LOCKED {
        true => store.record_options(),
        false => (PutOptions { mode: PutMode::Create, ..PutOptions::default() }, None),
    };
    match store.store.put_opts(&key, PutPayload::from(to_bytes(document)), options).await {
        Ok(result) => crate::lock::check_applied(&store.display, &key, lock, &result).map(|()| true),
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
        Err(e) => Err(store.error(format!("PUT {key}"), e)),
    }
}

/// The newest topic catalog, if any (`hint`: a version known to exist, or 0).
pub async fn latest_catalog(store: &RemoteStore, hint: u64) -> Result<Option<Catalog>> {
    latest(store, hint).await
}

/// The newest catalog version number (HEADs only, probing from `hint`): what a reader that
/// already holds version `hint` asks before reading anything.
pub async fn latest_catalog_number(store: &RemoteStore, hint: u64) -> Result<u64> {
    manifest::latest_number(store, |v| key::<Catalog>(store, v), hint).await
}

/// Records `topics` as the catalog unless the newest version already says so. Topics of the
/// newest readable version that `topics` lacks are kept (see `carry_over`).
pub async fn publish_catalog(
    store: &RemoteStore,
    writer: &Writer,
    now_ms: i64,
    mut topics: Vec<CatalogTopic>,
    hint: u64,
) -> Result<u64> {
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    publish(store, Catalog { version: 0, written_ms: now_ms, writer: writer.clone(), topics }, hint).await
}

/// The newest group-offsets snapshot, if any.
pub async fn latest_group_snapshot(store: &RemoteStore, hint: u64) -> Result<Option<GroupSnapshot>> {
    latest(store, hint).await
}

/// The newest group-offsets snapshot written by one of `writers` (the writer ids whose chain
/// is being restored), looking back at most 64 versions: a snapshot by another writer (one
/// fenced meanwhile) describes another history.
pub async fn latest_group_snapshot_by(
    store: &RemoteStore,
    writers: &std::collections::BTreeSet<String>,
) -> Result<Option<GroupSnapshot>> {
    Ok(latest_accepted(store, 0, |s: &GroupSnapshot| writers.contains(&s.writer.id)).await?.1)
}

/// Records group offsets unless the newest snapshot already holds exactly these.
pub async fn publish_group_snapshot(
    store: &RemoteStore,
    writer: &Writer,
    now_ms: i64,
    partitions: BTreeMap<String, PartitionCut>,
    mut groups: Vec<GroupOffsets>,
    hint: u64,
) -> Result<u64> {
    groups.sort_by(|a, b| (&a.group, &a.topic).cmp(&(&b.group, &b.topic)));
    let snapshot = GroupSnapshot { version: 0, written_ms: now_ms, writer: writer.clone(), partitions, groups };
    publish(store, snapshot, hint).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn store() -> RemoteStore {
        RemoteStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::from("p"),
            display: "memory".into(),
            ids: crate::keys::UniqueIds::seeded(1),
            lock: None,
            records_lock: None,
        }
    }

    fn topic(name: &str, partitions: u32) -> CatalogTopic {
        CatalogTopic { name: name.into(), partitions, created_ms: 5, settings: BTreeMap::new() }
    }

    #[tokio::test]
    async fn a_catalog_version_is_written_only_when_topics_change() {
        let store = store();
        let writer = Writer { id: "w".into(), epoch: 1 };
        assert_eq!(latest_catalog(&store, 0).await.unwrap(), None);
        assert_eq!(publish_catalog(&store, &writer, 10, vec![topic("b", 2), topic("a", 1)], 0).await.unwrap(), 1);
        assert_eq!(publish_catalog(&store, &writer, 11, vec![topic("a", 1), topic("b", 2)], 0).await.unwrap(), 1);
        assert_eq!(publish_catalog(&store, &writer, 12, vec![topic("a", 1), topic("b", 3)], 1).await.unwrap(), 2);
        let newest = latest_catalog(&store, 0).await.unwrap().unwrap();
        assert_eq!((newest.version, newest.written_ms), (2, 12));
        assert_eq!(newest.topics, [topic("a", 1), topic("b", 3)]);
        // A node that knows only some of the topics (a partial restore) keeps the others.
        assert_eq!(publish_catalog(&store, &writer, 13, vec![topic("c", 1)], 2).await.unwrap(), 3);
        let newest = latest_catalog(&store, 0).await.unwrap().unwrap();
        assert_eq!(newest.topics, [topic("a", 1), topic("b", 3), topic("c", 1)]);
        assert_eq!(publish_catalog(&store, &writer, 14, vec![topic("a", 1)], 3).await.unwrap(), 3, "no change");
    }

    /// One damaged newest version (a torn write on a store without atomic PUTs, a mistake, a
    /// hostile object) must not wedge the series: the next version is written after it, and
    /// readers fall back to the newest readable one.
    #[tokio::test]
    async fn a_damaged_newest_catalog_version_does_not_stop_publishing() {
        let store = store();
        let writer = Writer { id: "w".into(), epoch: 1 };
        assert_eq!(publish_catalog(&store, &writer, 10, vec![topic("a", 1)], 0).await.unwrap(), 1);
        let damaged = key::<Catalog>(&store, 2);
        object_store::ObjectStoreExt::put(
            &*store.store,
            &damaged,
            PutPayload::from_static(b"{\"format\":\"tierlog-catalog\""),
        )
        .await
        .unwrap();
        assert_eq!(latest_catalog(&store, 0).await.unwrap().unwrap().version, 1, "the newest readable");
        let published = publish_catalog(&store, &writer, 11, vec![topic("a", 1), topic("b", 1)], 1).await.unwrap();
        assert_eq!(published, 3);
        assert_eq!(latest_catalog(&store, 0).await.unwrap().unwrap().topics, [topic("a", 1), topic("b", 1)]);
    }

    #[test]
    fn catalog_golden_bytes() {
        let mut settings = BTreeMap::new();
        settings.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let catalog = Catalog {
            version: 1,
            written_ms: 1_700_000_000_000,
            writer: Writer { id: "w".into(), epoch: 1 },
            topics: vec![CatalogTopic {
                name: "payments".into(),
                partitions: 3,
                created_ms: 1_690_000_000_000,
                settings,
            }],
        };
        let body = r#"{"version":1,"written_ms":1700000000000,"writer":{"id":"w","epoch":1},"topics":[{"name":"payments","partitions":3,"created_ms":1690000000000,"settings":{"message.timestamp.type":"LogAppendTime"}}]}"#;
        let golden = format!(
            "{{\"format\":\"tierlog-catalog\",\"format_version\":1,\"body_sha256\":\"{}\"}}\n{body}\n",
            crate::sha256_hex(body.as_bytes())
        );
        assert_eq!(String::from_utf8(to_bytes(&catalog)).unwrap(), golden);
        assert_eq!(from_bytes::<Catalog>(golden.as_bytes(), "k", 1).unwrap(), catalog);
        let mut altered = golden.replace("\"partitions\":3", "\"partitions\":4").into_bytes();
        assert!(from_bytes::<Catalog>(&altered, "k", 1).unwrap_err().to_string().contains("SHA-256"));
        altered = golden.into_bytes();
        assert!(from_bytes::<Catalog>(&altered, "k", 2).is_err(), "a version under another number is refused");
    }

    #[tokio::test]
    async fn group_snapshots_record_the_cut_they_were_taken_against() {
        let store = store();
        let writer = Writer { id: "w".into(), epoch: 1 };
        let cut = |v, end| {
            BTreeMap::from([("t/0".to_string(), PartitionCut { manifest_version: v, remote_end_offset: end })])
        };
        let offsets =
            |o| vec![GroupOffsets { group: "g".into(), topic: "t".into(), offsets: BTreeMap::from([(0, o)]) }];
        assert_eq!(publish_group_snapshot(&store, &writer, 1, cut(3, 100), offsets(40), 0).await.unwrap(), 1);
        assert_eq!(publish_group_snapshot(&store, &writer, 2, cut(3, 100), offsets(40), 0).await.unwrap(), 1);
        assert_eq!(publish_group_snapshot(&store, &writer, 3, cut(3, 100), offsets(41), 0).await.unwrap(), 2);
        let newest = latest_group_snapshot(&store, 0).await.unwrap().unwrap();
        assert_eq!(
            (newest.version, newest.groups[0].offsets[&0], newest.partitions["t/0"].remote_end_offset),
            (2, 41, 100)
        );
    }
}
