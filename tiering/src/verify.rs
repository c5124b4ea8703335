//! Verify: proves what a bucket holds for each partition, from the bucket alone.
//!
//! Owns: which checks run and in what order, and what each problem is called. Does not own:
//! the formats it checks ([`manifest`], [`segment_object`]), or the records inside a segment
//! (the caller passes a [`SegmentCheck`] that walks the batches: this crate knows no records).
//!
//! Per partition (found by LISTing `<prefix>/manifests/`):
//! 1. **Every manifest version**, 1 to the newest (a gap is a problem): header, body SHA-256,
//!    topic, partition and version number, its own chain and offset order, its signature
//!    where signed (and where public keys are given, a signature by one of them), and that it
//!    extends the version before it: the same archives, then every entry the older version
//!    held, unchanged. A version replaced after the fact breaks this with its neighbours.
//! 2. **The whole chain of the newest version**, archives included: each archive's SHA-256
//!    and its reference (range, count, first and last hash, totals), every entry's hash and
//!    link from the genesis hash, offsets dense across entries, time ranges ordered.
//! 3. **Every listed object** (of the entries in the time range asked for): HEAD, size.
//!    `deep` GETs each (bounded parallelism, so memory is bounded by `concurrency` objects)
//!    and checks the object SHA-256, the chunk index against the manifest entry, each
//!    chunk's CRC32C and zstd checksum, the raw SHA-256 of the decompressed segment, and,
//!    through the [`SegmentCheck`], every batch CRC and dense offsets, with batch boundaries
//!    on chunk boundaries. An encrypted object is decrypted with the keyring's key of the id
//!    it names; without that key, everything over the stored bytes (size, SHA-256, chunk index,
//!    each chunk's CRC32C) is still checked, and the summary's `not_decrypted` says what was not.
//!
//! Outcomes: damage is reported as [`Problem`]s through the callback and verification goes
//! on; a store that cannot be read at all (credentials, network, an outage) stops it with an
//! `Err` — "could not run", never "damage".

use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use crate::blocking;
use crate::encryption::Keyring;
use crate::error::{Error, Result};
use crate::keys::{self, ParsedKey};
use crate::manifest::{self, ArchiveRef, Entry, GENESIS_HASH, Manifest, ParsedManifest};
use crate::segment_object::{self, ChunkIndex, NO_APPEND_TIME};
use crate::signing::PublicKeys;
use crate::store::RemoteStore;

/// Largest manifest version or archive verify reads (a version is about 100 KiB; an archive
/// of 128 entries less): anything larger is reported, never loaded.
const MANIFEST_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest segment object (or raw segment) deep verify downloads: segments are at most 2 GiB
/// (`segment.max_bytes`), and zstd adds little even to incompressible data.
const OBJECT_BYTES_MAX: u64 = 3 * 1024 * 1024 * 1024;

/// What verification covers and how.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only this topic (default: every topic with a manifest in the bucket).
    pub topic: Option<String>,
    /// Only this partition.
    pub partition: Option<u32>,
    /// Only objects of segments with a batch appended (or, for segments written before
    /// append times were recorded, a record timestamped) in `[from_time, to_time]`. Manifests
    /// are always checked whole: continuity cannot be proved in part.
    pub from_time: Option<i64>,
    pub to_time: Option<i64>,
    /// Download every object and check its contents, not only its presence and size.
    pub deep: bool,
    /// Requests (shallow) or objects (deep) in flight at once.
    pub concurrency: usize,
    /// Keys every manifest version must be signed by one of (empty: signatures found are
    /// checked against the keys published in the bucket, which proves integrity, not authorship).
    pub public_keys: PublicKeys,
    /// With keys given: versions before a partition's first signed one may be unsigned (signing
    /// was turned on later). The newest must still be signed, and every version is a prefix of
    /// it, so its signature covers the whole history.
    pub unsigned_before_signing: bool,
    /// Keys to decrypt encrypted objects with (deep). Without one, their stored bytes are
    /// still checked; what needs the key is counted in [`Summary::not_decrypted`].
    pub keyring: Option<Arc<Keyring>>,
}

/// What a [`SegmentCheck`] found in a decompressed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
    pub records: u64,
    pub last_offset: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// Walks the batches of a decompressed segment that should start at `base_offset`: checks
/// every batch (CRC, framing) and that offsets are dense, and calls `boundary` with the raw
/// position at which each batch starts. `Err(text)` names the first bad batch by offset and
/// position.
pub type SegmentCheck = Arc<SegmentCheckFn>;
pub type SegmentCheckFn =
    dyn Fn(&[u8], u64, &mut dyn FnMut(u64)) -> std::result::Result<SegmentFacts, String> + Send + Sync;

/// One thing found wrong. Serialized as one JSON line of `tierlog verify`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub topic: String,
    pub partition: u32,
    /// The object concerned (manifest version, archive or segment object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A manifest version number between 1 and the newest has no object.
    ManifestVersionMissing,
    /// A manifest version cannot be read: header, body checksum, JSON, or names another
    /// topic, partition or version.
    ManifestCorrupt,
    /// A manifest version does not extend the one before it: history was rewritten.
    ManifestRewritten,
    /// An entry's hash or link breaks the chain from the genesis hash.
    ChainBroken,
    /// Consecutive entries leave offsets out or cover some twice.
    OffsetGap,
    OffsetOverlap,
    /// Time ranges that contradict each other (min above max, append times going back).
    TimeInconsistent,
    ArchiveMissing,
    /// A manifest names an object key that is not this partition's (segment or archive at
    /// that offset, under this prefix): e.g. a signed history copied from another prefix.
    ForeignKey,
    /// An archive differs from its SHA-256, cannot be read, or disagrees with its reference.
    ArchiveCorrupt,
    ObjectMissing,
    ObjectSizeMismatch,
    /// The object's SHA-256 differs from the manifest's.
    ObjectChecksumMismatch,
    /// The object's chunk index, a chunk's CRC32C or zstd frame is damaged.
    ObjectCorrupt,
    /// The chunk index disagrees with the manifest entry (offsets, sizes, times, position).
    IndexMismatch,
    /// The decompressed segment's SHA-256 differs from the manifest's.
    SegmentChecksumMismatch,
    /// A batch fails its CRC, offsets are not dense, or a batch straddles a chunk boundary.
    BatchCorrupt,
    /// A version carries no signature though public keys were given.
    SignatureMissing,
    /// Signed by a key that is neither given nor (without keys given) published in the bucket.
    SignatureUnknownKey,
    SignatureInvalid,
}

/// The closing line of `tierlog verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub partitions: u64,
    pub manifest_versions: u64,
    pub signed_versions: u64,
    pub archives: u64,
    /// Segment objects checked (those in the time range asked for).
    pub objects: u64,
    pub object_bytes: u64,
    pub raw_bytes: u64,
    /// Offsets covered by the checked objects; with `deep`, `records` counts them one by one.
    pub offsets: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    pub first_offset: Option<u64>,
    pub last_offset: Option<u64>,
    /// Smallest and largest record timestamp, and append time, of the checked objects (ms).
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    pub min_append_time: Option<i64>,
    pub max_append_time: Option<i64>,
    pub deep: bool,
    pub problems: u64,
    /// Manifest versions that expired a prefix by retention, each proven to cut the chain of
    /// the version before it at a segment boundary and keep everything after it.
    pub expiries: u64,
    /// Segments expired by retention, over all partitions (as the newest versions count them).
    pub expired_segments: u64,
    /// Encrypted objects `deep` could not decrypt (their key is not in the keyring given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_decrypted: Option<NotDecrypted>,
}

/// What a deep verify without the keys checked, and did not, of encrypted objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotDecrypted {
    pub objects: u64,
    /// The key ids that would decrypt them.
    pub key_ids: std::collections::BTreeSet<String>,
    pub detail: String,
}

/// What [`NotDecrypted::detail`] says.
const NOT_DECRYPTED_DETAIL: &str = "checked without the key: size, object SHA-256, chunk index against the manifest, \
     each chunk's CRC32C; not checked: decryption (authentication), zstd, the raw segment's SHA-256, batch CRCs and \
     offsets. Run verify with a keyring holding these key ids to check them";

/// Progress and findings, as they happen.
pub enum Event<'a> {
    Problem(&'a Problem),
    /// Objects to check in a partition, and their bytes: a progress bar's length grows by them.
    Planned {
        objects: u64,
        bytes: u64,
    },
    /// One object checked, of this many bytes.
    Checked {
        bytes: u64,
    },
}

/// Verifies every partition with a manifest under `store`'s prefix (as `options` narrows).
pub async fn verify(
    store: &RemoteStore,
    options: &VerifyOptions,
    check: SegmentCheck,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Summary> {
    let mut summary = Summary { deep: options.deep, ..Summary::default() };
    let published = if options.public_keys.is_empty() {
        crate::signing::published_keys(store).await?
    } else {
        options.public_keys.clone()
    };
    // The newest group-offsets snapshot saw each partition's manifest at some version: fewer
    // versions in the bucket now means versions were deleted from the end.
    let snapshot = crate::catalog::latest_group_snapshot(store, 0).await.ok().flatten();
    let snapshot_version = snapshot.as_ref().map_or(0, |s| s.version);
    let cuts = snapshot.map(|s| s.partitions).unwrap_or_default();
    let mut all = partitions(store, options).await?;
    for name in cuts.keys() {
        let Some((topic, partition)) = name.rsplit_once('/').and_then(|(t, p)| Some((t.to_string(), p.parse().ok()?)))
        else {
            continue;
        };
        let wanted =
            options.topic.as_ref().is_none_or(|t| *t == topic) && options.partition.is_none_or(|p| p == partition);
        if wanted && !all.contains(&(topic.clone(), partition)) {
            all.push((topic, partition));
        }
    }
    all.sort();
    for (topic, partition) in all {
        let mut run = PartitionRun {
            store,
            options,
            keys: &published,
            topic: &topic,
            partition,
            summary: &mut summary,
            on_event,
            archives: HashMap::new(),
            signed: false,
        };
        let cut = cuts.get(&format!("{topic}/{partition}")).map(|c| (c.manifest_version, snapshot_version));
        run.verify(check.clone(), cut).await?;
        summary.partitions += 1;
    }
    Ok(summary)
}

/// The (topic, partition) pairs with manifest objects under the prefix, in order.
async fn partitions(store: &RemoteStore, options: &VerifyOptions) -> Result<Vec<(String, u32)>> {
    let root = store.key(&["manifests"]);
    let topics: Vec<String> = match &options.topic {
        Some(topic) => vec![topic.clone()],
        None => sub_folders(store, &root).await?,
    };
    let mut found = Vec::new();
    for topic in topics {
        let mut ids: Vec<u32> = sub_folders(store, &store.key(&["manifests", &topic]))
            .await?
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        ids.sort_unstable();
        found.extend(
            ids.into_iter().filter(|p| options.partition.is_none_or(|only| only == *p)).map(|p| (topic.clone(), p)),
        );
    }
    Ok(found)
}

async fn sub_folders(store: &RemoteStore, under: &Path) -> Result<Vec<String>> {
    let listing =
        store.store.list_with_delimiter(Some(under)).await.map_err(|e| store.error(format!("LIST {under}/"), e))?;
    let mut names: Vec<String> =
        listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
    names.sort();
    Ok(names)
}

struct PartitionRun<'a> {
    store: &'a RemoteStore,
    options: &'a VerifyOptions,
    keys: &'a PublicKeys,
    topic: &'a str,
    partition: u32,
    summary: &'a mut Summary,
    on_event: &'a (dyn Fn(Event<'_>) + Sync),
    /// Archives loaded so far, by key: `None` when unreadable (reported once).
    archives: HashMap<String, Option<Arc<Vec<Entry>>>>,
    /// Whether an earlier version of the partition was signed.
    signed: bool,
}

impl PartitionRun<'_> {
    fn problem(&mut self, kind: ProblemKind, key: Option<&str>, range: Option<(u64, u64)>, detail: String) {
        self.problem_with(kind, key, range, None, detail);
    }

    fn problem_with(
        &mut self,
        kind: ProblemKind,
        key: Option<&str>,
        range: Option<(u64, u64)>,
        expected_found: Option<(String, String)>,
        detail: String,
    ) {
        let (expected, found) = expected_found.map_or((None, None), |(e, f)| (Some(e), Some(f)));
        let problem = Problem {
            kind,
            topic: self.topic.to_string(),
            partition: self.partition,
            key: key.map(str::to_string),
            first_offset: range.map(|r| r.0),
            last_offset: range.map(|r| r.1),
            expected,
            found,
            detail,
        };
        self.summary.problems += 1;
        (self.on_event)(Event::Problem(&problem));
    }

    async fn verify(&mut self, check: SegmentCheck, cut: Option<(u64, u64)>) -> Result<()> {
        let versions = self.listed_versions().await?;
        let newest = versions.last().map_or(0, |v| v.0);
        if let Some((seen, snapshot)) = cut
            && seen > newest
        {
            let missing = keys::manifest_key(self.store, self.topic, self.partition, newest + 1);
            self.problem_with(
                ProblemKind::ManifestVersionMissing,
                Some(missing.as_ref()),
                None,
                Some((format!("versions up to {seen}"), format!("versions up to {newest}"))),
                format!("group-offsets snapshot {snapshot} was taken against manifest version {seen}: versions {}..={seen} were deleted", newest + 1),
            );
        }
        if versions.is_empty() {
            return Ok(());
        }
        let newest_manifest = self.walk_versions(&versions).await?;
        // (Unsigned after a signed one is reported as it is read.)
        let never_signed = !self.signed;
        if self.options.unsigned_before_signing && !self.options.public_keys.is_empty() && never_signed {
            let key = keys::manifest_key(self.store, self.topic, self.partition, newest);
            self.problem(
                ProblemKind::SignatureMissing,
                Some(key.as_ref()),
                None,
                format!("the newest manifest version {newest} is not signed: nothing proves the history"),
            );
        }
        let Some(manifest) = newest_manifest else { return Ok(()) };
        self.summary.expired_segments += manifest.expired.as_ref().map_or(0, |x| x.segments);
        let entries = self.walk_chain(&manifest).await?;
        self.check_objects(entries, check).await
    }

    /// Manifest version numbers present, ascending, with their sizes.
    async fn listed_versions(&mut self) -> Result<Vec<(u64, u64)>> {
        let dir = self.store.key(&["manifests", self.topic, &self.partition.to_string()]);
        let listing = self
            .store
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| self.store.error(format!("LIST {dir}/"), e))?;
        let mut versions: Vec<(u64, u64)> = listing
            .objects
            .iter()
            .filter_map(|o| match keys::parse_key(self.store, &o.location) {
                Some(ParsedKey::ManifestVersion { version, .. }) => Some((version, o.size)),
                _ => None,
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Reads every listed version in order (a gap in the numbers is one problem, however
    /// long); returns the newest readable one.
    async fn walk_versions(&mut self, versions: &[(u64, u64)]) -> Result<Option<Manifest>> {
        let concurrency = self.options.concurrency.max(1);
        let (store, topic, partition) = (self.store.clone(), self.topic.to_string(), self.partition);
        let mut loads = futures::stream::iter(versions.to_vec())
            .map(|(version, size)| {
                let (store, topic) = (store.clone(), topic.clone());
                async move {
                    let key = keys::manifest_key(&store, &topic, partition, version);
                    if size > MANIFEST_BYTES_MAX {
                        return Ok((version, key, Err(format!("{size} bytes: larger than any manifest version is"))));
                    }
                    match manifest::get_bytes(&store, &key).await {
                        Ok(bytes) if bytes.len() as u64 > MANIFEST_BYTES_MAX => Ok((
                            version,
                            key,
                            Err(format!("{} bytes: larger than any manifest version is", bytes.len())),
                        )),
                        Ok(bytes) => Ok((version, key, Ok(bytes))),
                        Err(Error::Missing { .. }) => Ok((version, key, Err("deleted while verify ran".to_string()))),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffered(concurrency);
        let (mut previous, mut last_good): (Option<Manifest>, Option<Manifest>) = (None, None);
        let mut expected = 1u64;
        while let Some((version, key, bytes)) = loads.try_next().await? {
            self.summary.manifest_versions += 1;
            if version > expected {
                let missing = keys::manifest_key(self.store, self.topic, self.partition, expected);
                self.problem(
                    ProblemKind::ManifestVersionMissing,
                    Some(missing.as_ref()),
                    None,
                    format!("manifest versions {expected}..={} are missing", version - 1),
                );
                previous = None;
            }
            expected = version.saturating_add(1);
            let bytes = match bytes {
                Ok(bytes) => bytes,
                Err(reason) => {
                    self.problem(ProblemKind::ManifestCorrupt, Some(key.as_ref()), None, reason);
                    previous = None;
                    continue;
                }
            };
            let Some(current) = self.read_version(&bytes, key.as_ref(), version) else {
                previous = None;
                continue;
            };
            if let Some(previous) = &previous {
                self.check_extends(previous, &current, key.as_ref()).await?;
            }
            last_good = Some(current.clone());
            previous = Some(current);
        }
        // Where the newest version is unreadable (reported), the chain and objects are still
        // checked as of the newest readable one.
        Ok(last_good)
    }

    /// Parses and checks one version (checksum, identity, own chain, signature).
    fn read_version(&mut self, bytes: &[u8], key: &str, version: u64) -> Option<Manifest> {
        let parsed = match manifest::parse_signed(bytes, key) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.problem(ProblemKind::ManifestCorrupt, Some(key), None, e.to_string());
                return None;
            }
        };
        let manifest = &parsed.manifest;
        if manifest.topic != self.topic || manifest.partition != self.partition || manifest.manifest_version != version
        {
            self.problem_with(
                ProblemKind::ManifestCorrupt,
                Some(key),
                None,
                Some((
                    format!("{}/{} version {version}", self.topic, self.partition),
                    format!("{}/{} version {}", manifest.topic, manifest.partition, manifest.manifest_version),
                )),
                "the manifest names another partition or version than its key".into(),
            );
            return None;
        }
        if let Err(reason) = manifest.check_chain() {
            self.problem(ProblemKind::ChainBroken, Some(key), None, reason);
        }
        self.check_signature(&parsed, key);
        Some(parsed.manifest)
    }

    fn check_signature(&mut self, parsed: &ParsedManifest, key: &str) {
        let (manifest, body_sha256) = (&parsed.manifest, &parsed.body_sha256);
        // Signatures are required with keys given, and after a partition's first signed
        // version: signing does not stop silently.
        let keys_given = !self.options.public_keys.is_empty();
        let required = self.signed || (keys_given && !self.options.unsigned_before_signing);
        let Some(signature) = &parsed.signature else {
            if required {
                self.problem(
                    ProblemKind::SignatureMissing,
                    Some(key),
                    None,
                    format!(
                        "manifest version {} is not signed{}",
                        manifest.manifest_version,
                        if self.signed { ", though earlier versions of the partition are" } else { "" }
                    ),
                );
            }
            return;
        };
        self.signed = true;
        self.summary.signed_versions += 1;
        match self.keys.verify(signature, self.topic, self.partition, manifest.manifest_version, body_sha256) {
            Ok(()) => {}
            Err(crate::signing::VerifyError::UnknownKey) => self.problem(
                ProblemKind::SignatureUnknownKey,
                Some(key),
                None,
                format!(
                    "manifest version {} is signed by key {}, which is not among the {}",
                    manifest.manifest_version,
                    signature.key_id,
                    if required { "public keys given" } else { "public keys published in the bucket" }
                ),
            ),
            Err(crate::signing::VerifyError::Invalid) => self.problem(
                ProblemKind::SignatureInvalid,
                Some(key),
                None,
                format!(
                    "manifest version {}: the signature by key {} does not match its contents",
                    manifest.manifest_version, signature.key_id
                ),
            ),
        }
    }

    /// `current` keeps `previous`'s archives, then every entry `previous` held inline.
    async fn check_extends(&mut self, previous: &Manifest, current: &Manifest, key: &str) -> Result<()> {
        if current.expired_before() != previous.expired_before()
            || current.expired.is_some() != previous.expired.is_some()
        {
            return self.check_expiry(previous, current, key).await;
        }
        let (mut was, mut now) = (previous.expired.clone(), current.expired.clone());
        let shrunk = match (&mut was, &mut now) {
            (Some(was), Some(now)) => {
                let shrunk = now.pending_deletes.iter().all(|p| was.pending_deletes.contains(p));
                (was.pending_deletes, now.pending_deletes) = (Vec::new(), Vec::new());
                shrunk
            }
            _ => true,
        };
        if was != now || !shrunk {
            let detail = format!(
                "version {} changes the expired section of version {} (only an expiry may move it, and only a delete may shorten its pending list)",
                current.manifest_version, previous.manifest_version
            );
            self.problem(ProblemKind::ManifestRewritten, Some(key), None, detail);
            return Ok(());
        }
        let kept = previous.archives.len();
        let rewritten = |detail: String| (ProblemKind::ManifestRewritten, detail);
        let finding = if current.archives.len() < kept || current.archives[..kept] != previous.archives[..] {
            Some(rewritten(format!(
                "version {} does not keep the archives of version {}",
                current.manifest_version, previous.manifest_version
            )))
        } else {
            let mut combined: Vec<Entry> = Vec::new();
            let mut readable = true;
            for archive in &current.archives[kept..] {
                match self.archive(archive).await? {
                    Some(entries) => combined.extend(entries.iter().cloned()),
                    None => readable = false,
                }
            }
            combined.extend(current.entries.iter().cloned());
            let first_difference = previous.entries.iter().zip(&combined).position(|(a, b)| a != b);
            if !readable {
                None // the unreadable archive is reported by itself
            } else if let Some(i) = first_difference {
                let entry = &previous.entries[i];
                Some(rewritten(format!(
                    "version {} changes the entry at offsets {}..={} that version {} committed",
                    current.manifest_version, entry.base_offset, entry.last_offset, previous.manifest_version
                )))
            } else if combined.len() < previous.entries.len() {
                let entry = &previous.entries[combined.len()];
                Some(rewritten(format!(
                    "version {} drops the entry at offsets {}..={} that version {} committed",
                    current.manifest_version, entry.base_offset, entry.last_offset, previous.manifest_version
                )))
            } else {
                None
            }
        };
        if let Some((kind, detail)) = finding {
            self.problem(kind, Some(key), None, detail);
        }
        Ok(())
    }

    /// A version that expires a prefix of `previous`: it keeps every later entry of `previous`
    /// unchanged and in order (archived or not), links its `expired` section to the chain hash
    /// where it cut, and adds up what it removed. The expired objects themselves are gone by
    /// design; their hashes stay proven by the versions before this one.
    async fn check_expiry(&mut self, previous: &Manifest, current: &Manifest, key: &str) -> Result<()> {
        let (Some(before), Some(after)) = (self.all_entries(previous).await?, self.all_entries(current).await?) else {
            return Ok(()); // an unreadable archive is reported by itself
        };
        let cut = current.expired_before();
        let expired = current.expired.as_ref();
        let split = before.partition_point(|e| e.base_offset < cut);
        let removed = &before[..split];
        let link =
            removed.last().map(|e| e.hash.clone()).or_else(|| previous.expired.as_ref().map(|x| x.last_hash.clone()));
        let count = |m: &Manifest| m.expired.as_ref().map_or(0, |x| x.segments);
        let totals = |m: &Manifest| m.expired.as_ref().map_or((0, 0), |x| (x.raw_bytes, x.object_bytes));
        let (raw, object) = totals(previous);
        let cut_totals = removed
            .iter()
            .fold((raw, object), |(r, o), e| (r.saturating_add(e.raw_bytes), o.saturating_add(e.object_bytes)));
        // Pending deletes: the version before's, then exactly the objects of the entries cut.
        let pending_keys = |m: &Manifest| -> Vec<String> {
            m.expired.iter().flat_map(|x| x.pending_deletes.iter().map(|p| p.key.clone())).collect()
        };
        let mut expected_pending = pending_keys(previous);
        expected_pending.extend(removed.iter().map(|e| e.key.clone()));
        let problem = if cut < previous.expired_before() || expired.is_none() {
            Some("moves the start of the partition back".to_string())
        } else if removed.last().is_none_or(|e| e.last_offset + 1 != cut) {
            Some(format!("expires up to offset {cut}, which is not the end of a segment of the version before"))
        } else if expired.map(|x| &x.last_hash) != link.as_ref() {
            Some(format!("links the expired range to a hash that is not the chain's at offset {}", cut - 1))
        } else if count(current) != count(previous) + removed.len() as u64 {
            Some(format!(
                "counts {} expired segments, the version before plus its cut gives {}",
                count(current),
                count(previous) + removed.len() as u64
            ))
        } else if totals(current) != cut_totals {
            Some(format!(
                "adds up to {:?} expired (raw, object) bytes, the version before plus its cut gives {cut_totals:?}",
                totals(current)
            ))
        } else if pending_keys(current) != expected_pending {
            Some("lists other objects for deletion than those of the entries it cut".to_string())
        } else if after.len() < before.len() - split || after[..before.len() - split] != before[split..] {
            Some("does not keep, unchanged and in order, every entry after the cut".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            let detail =
                format!("version {} {problem} (version {})", current.manifest_version, previous.manifest_version);
            self.problem(ProblemKind::ManifestRewritten, Some(key), None, detail);
        } else {
            self.summary.expiries += 1;
        }
        Ok(())
    }

    /// Every entry of a version, archived ones included; `None` when an archive is unreadable.
    async fn all_entries(&mut self, manifest: &Manifest) -> Result<Option<Vec<Entry>>> {
        let mut all = Vec::new();
        for reference in &manifest.archives {
            match self.archive(reference).await? {
                Some(entries) => all.extend(entries.iter().cloned()),
                None => return Ok(None),
            }
        }
        all.extend(manifest.entries.iter().cloned());
        Ok(Some(all))
    }

    /// An archive's entries, loaded once and checked against its reference's SHA-256.
    async fn archive(&mut self, reference: &ArchiveRef) -> Result<Option<Arc<Vec<Entry>>>> {
        if let Some(loaded) = self.archives.get(&reference.key) {
            return Ok(loaded.clone());
        }
        let range = Some((reference.base_offset, reference.last_offset));
        let expected = ParsedKey::Archive {
            topic: self.topic.to_string(),
            partition: self.partition,
            base_offset: reference.base_offset,
        };
        if keys::parse_key(self.store, &Path::from(reference.key.as_str())) != Some(expected) {
            self.problem(
                ProblemKind::ForeignKey,
                Some(&reference.key),
                range,
                format!("not an archive of {}/{} under this prefix", self.topic, self.partition),
            );
            self.archives.insert(reference.key.clone(), None);
            return Ok(None);
        }
        let loaded = match manifest::load_archive_bounded(self.store, reference, MANIFEST_BYTES_MAX).await {
            Ok(entries) => Some(Arc::new(entries)),
            Err(Error::Missing { .. }) => {
                self.problem(ProblemKind::ArchiveMissing, Some(&reference.key), range, "the archive is missing".into());
                None
            }
            Err(e @ (Error::Corrupt { .. } | Error::Format(_))) => {
                self.problem(ProblemKind::ArchiveCorrupt, Some(&reference.key), range, e.to_string());
                None
            }
            Err(e) => return Err(e),
        };
        self.summary.archives += 1;
        self.archives.insert(reference.key.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Walks every entry of `manifest` from the genesis hash; returns them all (archived ones
    /// included, where readable).
    async fn walk_chain(&mut self, manifest: &Manifest) -> Result<Vec<Entry>> {
        let key = keys::manifest_key(self.store, self.topic, self.partition, manifest.manifest_version).to_string();
        let mut all: Vec<Entry> = Vec::new();
        let mut link = Some(GENESIS_HASH.to_string());
        let mut next_offset: Option<u64> = None;
        let mut appended = NO_APPEND_TIME;
        if let Some(x) = &manifest.expired {
            // Retention cut the history here: the walk starts from the link it kept (each
            // expiry was checked against the version before it as the versions were walked).
            (link, next_offset) = (Some(x.last_hash.clone()), Some(x.before_offset));
            appended = x.max_append_time.unwrap_or(NO_APPEND_TIME);
        }
        for reference in &manifest.archives {
            let Some(entries) = self.archive(reference).await? else {
                // Unreadable: carry on from its reference so later entries are still checked.
                (link, next_offset) =
                    (Some(reference.last_hash.clone()), Some(reference.last_offset.saturating_add(1)));
                appended = reference.max_append_time.unwrap_or(appended);
                continue;
            };
            self.check_reference(reference, &entries);
            for entry in entries.iter() {
                self.check_entry(entry, &reference.key, &mut link, &mut next_offset, &mut appended);
            }
            all.extend(entries.iter().cloned());
        }
        for entry in &manifest.entries {
            self.check_entry(entry, &key, &mut link, &mut next_offset, &mut appended);
        }
        all.extend(manifest.entries.iter().cloned());
        Ok(all)
    }

    /// An archive's reference describes its entries.
    fn check_reference(&mut self, reference: &ArchiveRef, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            self.problem(
                ProblemKind::ArchiveCorrupt,
                Some(&reference.key),
                None,
                "the archive holds no entries".into(),
            );
            return;
        };
        let known = |t: i64| (t != NO_APPEND_TIME).then_some(t);
        let described = ArchiveRef {
            key: reference.key.clone(),
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            entries: entries.len() as u32,
            min_timestamp: entries.iter().map(|e| e.min_timestamp).min().unwrap_or(i64::MAX),
            max_timestamp: entries.iter().map(|e| e.max_timestamp).max().unwrap_or(i64::MIN),
            min_append_time: entries.iter().map(Entry::min_append).min().and_then(known),
            max_append_time: entries.iter().map(Entry::max_append).max().and_then(known),
            raw_bytes: entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.raw_bytes)),
            object_bytes: entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.object_bytes)),
            sha256: reference.sha256.clone(),
            first_prev_hash: first.prev_hash.clone(),
            last_hash: last.hash.clone(),
        };
        if described != *reference {
            self.problem_with(
                ProblemKind::ArchiveCorrupt,
                Some(&reference.key),
                Some((reference.base_offset, reference.last_offset)),
                Some((
                    serde_json::to_string(reference).unwrap_or_default(),
                    serde_json::to_string(&described).unwrap_or_default(),
                )),
                "the archive's entries disagree with the manifest's reference to it".into(),
            );
        }
    }

    fn check_entry(
        &mut self,
        entry: &Entry,
        key: &str,
        link: &mut Option<String>,
        next_offset: &mut Option<u64>,
        appended: &mut i64,
    ) {
        let range = Some((entry.base_offset, entry.last_offset));
        if let Some(expected) = link.as_deref()
            && expected != entry.prev_hash
        {
            self.problem_with(
                ProblemKind::ChainBroken,
                Some(key),
                range,
                Some((expected.to_string(), entry.prev_hash.clone())),
                format!("the entry at offset {} does not link to the entry before it", entry.base_offset),
            );
        }
        let computed = entry.compute_hash();
        if computed != entry.hash {
            self.problem_with(
                ProblemKind::ChainBroken,
                Some(key),
                range,
                Some((computed, entry.hash.clone())),
                format!("the entry at offset {} does not match its hash: it was altered", entry.base_offset),
            );
        }
        if let Some(expected) = *next_offset {
            if entry.base_offset > expected {
                self.problem(
                    ProblemKind::OffsetGap,
                    Some(key),
                    Some((expected, entry.base_offset.saturating_sub(1))),
                    format!("offsets {expected}..{} are in no entry", entry.base_offset),
                );
            } else if entry.base_offset < expected {
                self.problem(
                    ProblemKind::OffsetOverlap,
                    Some(key),
                    Some((entry.base_offset, expected.saturating_sub(1))),
                    format!("offsets {}..{expected} are in two entries", entry.base_offset),
                );
            }
        }
        let times_ok = entry.base_offset <= entry.last_offset
            && entry.min_timestamp <= entry.max_timestamp
            && *appended <= entry.min_append()
            && entry.min_append() <= entry.max_append();
        if !times_ok {
            self.problem(
                ProblemKind::TimeInconsistent,
                Some(key),
                range,
                format!(
                    "offsets {}..={}, timestamps {}..={}, append times {:?}..={:?} after {}",
                    entry.base_offset,
                    entry.last_offset,
                    entry.min_timestamp,
                    entry.max_timestamp,
                    entry.min_append_time,
                    entry.max_append_time,
                    *appended
                ),
            );
        }
        *link = Some(entry.hash.clone());
        *next_offset = Some(entry.last_offset.saturating_add(1).max(next_offset.unwrap_or(0)));
        *appended = (*appended).max(entry.max_append());
    }

    /// Whether `entry` has a batch in the time range asked for: by append time where every
    /// batch has one; otherwise by record time and whatever append time it has (a segment
    /// from before append times were recorded, or one spanning the upgrade).
    fn in_time_range(&self, entry: &Entry) -> bool {
        let (min, max) = match (entry.min_append_time, entry.max_append_time) {
            (Some(min), Some(max)) => (min, max),
            (_, max_append) => (entry.min_timestamp, entry.max_timestamp.max(max_append.unwrap_or(i64::MIN))),
        };
        self.options.from_time.is_none_or(|from| max >= from) && self.options.to_time.is_none_or(|to| min <= to)
    }

    async fn check_objects(&mut self, entries: Vec<Entry>, check: SegmentCheck) -> Result<()> {
        let mut selected = Vec::new();
        let in_range: Vec<Entry> = entries.into_iter().filter(|e| self.in_time_range(e)).collect();
        for entry in in_range {
            // Only keys of this partition's segments are fetched: a manifest naming anything
            // else (another prefix's objects, another partition's) is itself the damage.
            let expected = ParsedKey::Segment {
                topic: self.topic.to_string(),
                partition: self.partition,
                base_offset: entry.base_offset,
            };
            if keys::parse_key(self.store, &Path::from(entry.key.as_str())) != Some(expected) {
                self.problem(
                    ProblemKind::ForeignKey,
                    Some(&entry.key),
                    Some((entry.base_offset, entry.last_offset)),
                    format!(
                        "the entry names an object that is not a segment of {}/{} at offset {} under this prefix",
                        self.topic, self.partition, entry.base_offset
                    ),
                );
                continue;
            }
            selected.push(entry);
        }
        let bytes: u64 = selected.iter().fold(0u64, |sum, e| sum.saturating_add(e.object_bytes));
        (self.on_event)(Event::Planned { objects: selected.len() as u64, bytes });
        let (store, deep) = (self.store.clone(), self.options.deep);
        let place =
            Place { topic: self.topic.to_string(), partition: self.partition, keyring: self.options.keyring.clone() };
        let mut checks = futures::stream::iter(selected)
            .map(|entry| {
                let (store, check, place) = (store.clone(), check.clone(), place.clone());
                async move {
                    let findings = if deep {
                        check_object_deep(&store, &entry, check, place).await?
                    } else {
                        check_object_head(&store, &entry).await?
                    };
                    Ok::<_, Error>((entry, findings))
                }
            })
            .buffered(self.options.concurrency.max(1));
        while let Some((entry, outcome)) = checks.try_next().await? {
            (self.on_event)(Event::Checked { bytes: entry.object_bytes });
            for finding in outcome.problems {
                self.problem_with(
                    finding.kind,
                    Some(&entry.key),
                    Some((entry.base_offset, entry.last_offset)),
                    finding.expected_found,
                    finding.detail,
                );
            }
            self.count(&entry, outcome.records);
            if let Some(key_id) = outcome.not_decrypted {
                let s = self.summary.not_decrypted.get_or_insert_with(|| NotDecrypted {
                    detail: NOT_DECRYPTED_DETAIL.into(),
                    ..NotDecrypted::default()
                });
                s.objects += 1;
                s.key_ids.insert(key_id);
            }
        }
        Ok(())
    }

    fn count(&mut self, entry: &Entry, records: Option<u64>) {
        let s = &mut *self.summary;
        s.objects += 1;
        s.object_bytes = s.object_bytes.saturating_add(entry.object_bytes);
        s.raw_bytes = s.raw_bytes.saturating_add(entry.raw_bytes);
        s.offsets = s.offsets.saturating_add(entry.last_offset.saturating_sub(entry.base_offset).saturating_add(1));
        if let Some(records) = records {
            *s.records.get_or_insert(0) += records;
        }
        s.first_offset = Some(s.first_offset.map_or(entry.base_offset, |o| o.min(entry.base_offset)));
        s.last_offset = Some(s.last_offset.map_or(entry.last_offset, |o| o.max(entry.last_offset)));
        s.min_timestamp = Some(s.min_timestamp.map_or(entry.min_timestamp, |t| t.min(entry.min_timestamp)));
        s.max_timestamp = Some(s.max_timestamp.map_or(entry.max_timestamp, |t| t.max(entry.max_timestamp)));
        if let Some(t) = entry.min_append_time {
            s.min_append_time = Some(s.min_append_time.map_or(t, |m| m.min(t)));
        }
        if let Some(t) = entry.max_append_time {
            s.max_append_time = Some(s.max_append_time.map_or(t, |m| m.max(t)));
        }
    }
}

/// A problem found in one object, before it is named with topic, partition and key.
struct Finding {
    kind: ProblemKind,
    expected_found: Option<(String, String)>,
    detail: String,
}

struct ObjectOutcome {
    problems: Vec<Finding>,
    /// Records counted one by one (deep only, when the segment could be walked).
    records: Option<u64>,
    /// The key id of an encrypted object that could not be decrypted (its key is not given).
    not_decrypted: Option<String>,
}

/// The partition an object belongs to (the AAD of its chunks) and the keys to open it.
#[derive(Clone)]
struct Place {
    topic: String,
    partition: u32,
    keyring: Option<Arc<Keyring>>,
}

fn finding(kind: ProblemKind, expected: impl ToString, found: impl ToString, detail: impl Into<String>) -> Finding {
    Finding { kind, expected_found: Some((expected.to_string(), found.to_string())), detail: detail.into() }
}

async fn check_object_head(store: &RemoteStore, entry: &Entry) -> Result<ObjectOutcome> {
    let key = Path::from(entry.key.as_str());
    let problems = match store.store.head(&key).await {
        Ok(meta) if meta.size == entry.object_bytes => vec![],
        Ok(meta) => vec![finding(
            ProblemKind::ObjectSizeMismatch,
            entry.object_bytes,
            meta.size,
            "the object's size differs from the manifest's",
        )],
        Err(object_store::Error::NotFound { .. }) => vec![Finding {
            kind: ProblemKind::ObjectMissing,
            expected_found: None,
            detail: "the object is listed in the manifest but missing from the bucket".into(),
        }],
        Err(e) => return Err(store.error(format!("HEAD {key}"), e)),
    };
    Ok(ObjectOutcome { problems, records: None, not_decrypted: None })
}

async fn check_object_deep(
    store: &RemoteStore,
    entry: &Entry,
    check: SegmentCheck,
    place: Place,
) -> Result<ObjectOutcome> {
    // Presence and size first: an object of another size is not the committed one, and its
    // contents are not downloaded (nor is anything larger than a segment object can be).
    let head = check_object_head(store, entry).await?;
    if !head.problems.is_empty() {
        return Ok(head);
    }
    if entry.object_bytes > OBJECT_BYTES_MAX || entry.raw_bytes > OBJECT_BYTES_MAX {
        let detail = format!("{} bytes ({} raw): larger than any segment object", entry.object_bytes, entry.raw_bytes);
        return Ok(ObjectOutcome {
            problems: vec![Finding { kind: ProblemKind::IndexMismatch, expected_found: None, detail }],
            records: None,
            not_decrypted: None,
        });
    }
    let key = Path::from(entry.key.as_str());
    let bytes = match manifest::get_bytes(store, &key).await {
        Ok(bytes) => bytes,
        Err(Error::Missing { .. }) => return check_object_head(store, entry).await,
        Err(e) => return Err(e),
    };
    let entry = entry.clone();
    Ok(blocking::run(move || check_object_bytes(&entry, &bytes, &*check, &place)).await)
}

/// Every check of `--deep` on an object's bytes.
fn check_object_bytes(entry: &Entry, bytes: &[u8], check: &SegmentCheckFn, place: &Place) -> ObjectOutcome {
    let mut problems = Vec::new();
    let outcome = |problems, records| ObjectOutcome { problems, records, not_decrypted: None };
    if bytes.len() as u64 != entry.object_bytes {
        problems.push(finding(
            ProblemKind::ObjectSizeMismatch,
            entry.object_bytes,
            bytes.len(),
            "the object's size differs from the manifest's",
        ));
    }
    let sha = crate::sha256_hex(bytes);
    if sha != entry.object_sha256 {
        problems.push(finding(
            ProblemKind::ObjectChecksumMismatch,
            &entry.object_sha256,
            sha,
            "the object's SHA-256 differs from the manifest's: it was altered or replaced",
        ));
    }
    let index = match segment_object::parse_index_from_object(bytes) {
        Ok(index) => index,
        Err(e) => {
            problems.push(Finding { kind: ProblemKind::ObjectCorrupt, expected_found: None, detail: e.to_string() });
            return outcome(problems, None);
        }
    };
    let location = segment_object::locate_index(bytes).unwrap_or((u64::MAX, 0));
    problems.extend(index_mismatches(entry, &index, location));
    // Decode no more than the manifest committed: an index that says otherwise is reported.
    let raw_total = index.chunks.iter().fold(0u64, |sum, c| sum.saturating_add(u64::from(c.raw_len)));
    if raw_total != entry.raw_bytes || index.raw_bytes != entry.raw_bytes {
        problems.push(finding(
            ProblemKind::IndexMismatch,
            entry.raw_bytes,
            raw_total,
            "the chunks' raw lengths differ from the segment's size in the manifest: not decoded",
        ));
        return outcome(problems, None);
    }
    let key = index.key_id.as_ref().map(|id| (id, place.keyring.as_ref().and_then(|k| k.get(id))));
    if let Some((key_id, None)) = &key {
        return check_sealed_chunks(bytes, &index, problems, key_id);
    }
    let mut raw = Vec::with_capacity(entry.raw_bytes as usize);
    for (chunk_no, chunk) in index.chunks.iter().enumerate() {
        let start = chunk.compressed_position as usize;
        let compressed = bytes.get(start..start.saturating_add(chunk.compressed_len as usize)).unwrap_or(&[]);
        let decoded = segment_object::check_stored_chunk(chunk, compressed).and_then(|stored| match &key {
            Some((_, Some(key))) => {
                let (topic, partition, base_offset) = (place.topic.as_str(), place.partition, index.base_offset);
                let opening = segment_object::Opening { key, topic, partition, base_offset };
                segment_object::open_chunk(chunk, chunk_no, &stored, &opening, &mut raw)
            }
            _ => segment_object::decode_chunk(chunk, &stored, &mut raw),
        });
        if let Err(e) = decoded {
            problems.push(Finding {
                kind: ProblemKind::ObjectCorrupt,
                expected_found: None,
                detail: format!("chunk of offsets {}..={}: {e}", chunk.first_offset, chunk.last_offset),
            });
            return outcome(problems, None);
        }
    }
    let raw_sha = crate::sha256_hex(&raw);
    if raw_sha != entry.raw_sha256 {
        problems.push(finding(
            ProblemKind::SegmentChecksumMismatch,
            &entry.raw_sha256,
            raw_sha,
            "the decompressed segment's SHA-256 differs from the manifest's",
        ));
    }
    let mut batch_starts = Vec::new();
    let facts = check(&raw, entry.base_offset, &mut |position| batch_starts.push(position));
    // Every chunk starts where a batch starts (batch starts ascend).
    let straddling = index.chunks.iter().map(|c| c.raw_position).find(|p| batch_starts.binary_search(p).is_err());
    let records = match facts {
        Ok(facts) => {
            if let Some(position) = straddling {
                problems.push(Finding {
                    kind: ProblemKind::BatchCorrupt,
                    expected_found: None,
                    detail: format!("a chunk starts at raw position {position}, inside a batch"),
                });
            }
            let found = (facts.last_offset, facts.min_timestamp, facts.max_timestamp);
            let expected = (entry.last_offset, entry.min_timestamp, entry.max_timestamp);
            if found != expected {
                problems.push(finding(
                    ProblemKind::IndexMismatch,
                    format!("last offset {}, timestamps {}..={}", expected.0, expected.1, expected.2),
                    format!("last offset {}, timestamps {}..={}", found.0, found.1, found.2),
                    "the segment's batches disagree with the manifest entry",
                ));
            }
            Some(facts.records)
        }
        Err(detail) => {
            problems.push(Finding { kind: ProblemKind::BatchCorrupt, expected_found: None, detail });
            None
        }
    };
    outcome(problems, records)
}

/// An encrypted object whose key is not given: every chunk's stored bytes against the index
/// (length, CRC32C), which needs no key; the rest is reported as not decrypted.
fn check_sealed_chunks(bytes: &[u8], index: &ChunkIndex, mut problems: Vec<Finding>, key_id: &str) -> ObjectOutcome {
    for chunk in &index.chunks {
        let start = chunk.compressed_position as usize;
        let stored = bytes.get(start..start.saturating_add(chunk.compressed_len as usize)).unwrap_or(&[]);
        if let Err(e) = segment_object::check_stored_chunk(chunk, stored) {
            problems.push(Finding {
                kind: ProblemKind::ObjectCorrupt,
                expected_found: None,
                detail: format!("chunk of offsets {}..={}: {e}", chunk.first_offset, chunk.last_offset),
            });
            break;
        }
    }
    ObjectOutcome { problems, records: None, not_decrypted: Some(key_id.to_string()) }
}

/// Where the chunk index disagrees with the manifest entry, or with itself.
fn index_mismatches(entry: &Entry, index: &ChunkIndex, location: (u64, u64)) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut compare = |what: &str, expected: String, actual: String| {
        if expected != actual {
            found.push(finding(ProblemKind::IndexMismatch, expected, actual, format!("chunk index: {what}")));
        }
    };
    let (first, last) = (index.chunks.first(), index.chunks.last());
    compare("base offset", entry.base_offset.to_string(), index.base_offset.to_string());
    compare("raw bytes", entry.raw_bytes.to_string(), index.raw_bytes.to_string());
    compare("chunks", entry.chunks.to_string(), index.chunks.len().to_string());
    compare("key id", format!("{:?}", entry.key_id), format!("{:?}", index.key_id));
    compare("first offset", entry.base_offset.to_string(), first.map_or(String::new(), |c| c.first_offset.to_string()));
    compare("last offset", entry.last_offset.to_string(), last.map_or(String::new(), |c| c.last_offset.to_string()));
    let min_ts = index.chunks.iter().map(|c| c.min_timestamp).min().unwrap_or(i64::MAX);
    let max_ts = index.chunks.iter().map(|c| c.max_timestamp).max().unwrap_or(i64::MIN);
    compare("timestamps", format!("{}..={}", entry.min_timestamp, entry.max_timestamp), format!("{min_ts}..={max_ts}"));
    let (min_append, max_append) = index.append_time_range();
    compare(
        "append times",
        format!("{:?}..={:?}", entry.min_append_time, entry.max_append_time),
        format!("{min_append:?}..={max_append:?}"),
    );
    compare(
        "index position and length",
        format!("{}+{}", entry.index_position, entry.index_len),
        format!("{}+{}", location.0, location.1),
    );
    let dense = index.chunks.windows(2).all(|w| Some(w[1].first_offset) == w[0].last_offset.checked_add(1))
        && index
            .chunks
            .windows(2)
            .all(|w| Some(w[1].raw_position) == w[0].raw_position.checked_add(u64::from(w[0].raw_len)))
        && index.chunks.iter().all(|c| c.first_offset <= c.last_offset);
    compare("chunks dense in offsets and raw bytes", "true".into(), dense.to_string());
    found
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use object_store::PutPayload;

    use super::*;

    use crate::manifest::tests_support::{history as committed_history, memory_store as store};

    async fn history(store: &RemoteStore, segments: u64, per_commit: u64) {
        committed_history(store, segments, per_commit).await;
    }

    pub(super) async fn run(store: &RemoteStore) -> (Vec<Problem>, Summary) {
        let problems = Mutex::new(Vec::new());
        let on_event = |event: Event<'_>| {
            if let Event::Problem(p) = event {
                problems.lock().unwrap().push(p.clone());
            }
        };
        let check: SegmentCheck = Arc::new(|_, _, _| Err("shallow only".into()));
        let options = VerifyOptions { concurrency: 4, ..VerifyOptions::default() };
        let summary = verify(store, &options, check, &on_event).await.unwrap();
        (problems.into_inner().unwrap(), summary)
    }

    #[tokio::test]
    async fn history_across_archives_verifies_and_a_damaged_archive_is_named() {
        let store = store();
        history(&store, 400, 50).await;
        let (problems, summary) = run(&store).await;
        assert!(problems.is_empty(), "{problems:?}");
        let newest = manifest::load_version(&store, "t", 0, 8).await.unwrap();
        assert_eq!(newest.archives.len(), 2, "the history spilled into archives");
        assert_eq!((summary.manifest_versions, summary.objects, summary.archives), (8, 400, 2));
        assert_eq!((summary.first_offset, summary.last_offset), (Some(0), Some(399)));

        // An archive replaced by another with one entry altered (and its own checksums
        // recomputed): its SHA-256 no longer matches the manifests that reference it.
        let reference = &newest.archives[0];
        let archive_key = Path::from(reference.key.as_str());
        let bytes = store.store.get(&archive_key).await.unwrap().bytes().await.unwrap();
        let altered = String::from_utf8(bytes.to_vec()).unwrap().replace("\"uploaded_ms\":7", "\"uploaded_ms\":8");
        store.store.put(&archive_key, PutPayload::from(altered.into_bytes())).await.unwrap();
        let (problems, _) = run(&store).await;
        assert!(!problems.is_empty() && problems.iter().all(|p| p.kind == ProblemKind::ArchiveCorrupt), "{problems:?}");
        assert_eq!(problems[0].key.as_deref(), Some(reference.key.as_str()));
        assert_eq!((problems[0].first_offset, problems[0].last_offset), (Some(0), Some(127)));

        store.store.delete(&archive_key).await.unwrap();
        let (problems, summary) = run(&store).await;
        assert_eq!(problems.iter().map(|p| p.kind).collect::<Vec<_>>(), [ProblemKind::ArchiveMissing], "{problems:?}");
        assert_eq!(summary.objects, 272, "the entries of the other archive and inline are still checked");
    }

    #[tokio::test]
    async fn a_forged_entry_inside_an_archive_breaks_the_chain() {
        let store = store();
        history(&store, 300, 100).await;
        let newest = manifest::load_version(&store, "t", 0, 3).await.unwrap();
        let reference = newest.archives[0].clone();
        // Rewrite the archive with one entry altered and re-hashed, and every manifest version
        // that references it with the new archive SHA-256: checksums all agree, the chain does not.
        let mut entries = manifest::load_archive(&store, &reference).await.unwrap();
        entries[5].raw_sha256 = "forged".into();
        entries[5].hash = entries[5].compute_hash();
        let body = serde_json::json!({"topic": "t", "partition": 0, "entries": entries}).to_string();
        let bytes = format!(
            "{}\n{body}\n",
            serde_json::json!({"format": manifest::ARCHIVE_FORMAT, "format_version": 2, "body_sha256": crate::sha256_hex(body.as_bytes())})
        );
        store
            .store
            .put(&Path::from(reference.key.as_str()), PutPayload::from(bytes.clone().into_bytes()))
            .await
            .unwrap();
        for version in 1..=3 {
            let mut m = manifest::load_version(&store, "t", 0, version).await.unwrap();
            if m.archives.is_empty() {
                continue;
            }
            m.archives[0].sha256 = crate::sha256_hex(bytes.as_bytes());
            let key = keys::manifest_key(&store, "t", 0, version);
            store.store.put(&key, PutPayload::from(m.to_bytes())).await.unwrap();
        }
        let (problems, _) = run(&store).await;
        let chain: Vec<&Problem> = problems.iter().filter(|p| p.kind == ProblemKind::ChainBroken).collect();
        assert_eq!(chain.len(), 1, "{problems:?}");
        assert_eq!((chain[0].first_offset, chain[0].key.as_deref()), (Some(6), Some(reference.key.as_str())));
    }
}

/// Findings of an adversarial review: hostile bucket contents must be reported, never hang,
/// crash or exhaust verify, and never pass.
#[cfg(test)]
mod adversarial_tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use object_store::PutPayload;

    use super::tests::run;
    use super::*;
    use crate::manifest::tests_support::{entry, history as committed_history, memory_store as store, valid_entry};
    use crate::manifest::{ManifestStore, Writer};

    fn store_at(shared: &Arc<object_store::memory::InMemory>, prefix: &str) -> RemoteStore {
        RemoteStore {
            store: shared.clone(),
            prefix: Path::from(prefix),
            display: "memory".into(),
            ids: crate::keys::UniqueIds::seeded(7),
            lock: None,
            records_lock: None,
        }
    }

    /// Problems found (at most 1000 kept) and the summary.
    async fn run_with(store: &RemoteStore, options: VerifyOptions, check: SegmentCheck) -> (Vec<Problem>, Summary) {
        let problems = Mutex::new(Vec::new());
        let on_event = |event: Event<'_>| {
            if let Event::Problem(p) = event {
                let mut problems = problems.lock().unwrap();
                if problems.len() < 1000 {
                    problems.push(p.clone());
                }
            }
        };
        let options = VerifyOptions { concurrency: 4, ..options };
        let summary = verify(store, &options, check, &on_event).await.unwrap();
        (problems.into_inner().unwrap(), summary)
    }

    fn shallow() -> SegmentCheck {
        Arc::new(|_, _, _| Err("shallow only".into()))
    }

    /// `versions` commits of one one-offset entry each, objects where their keys say,
    /// signed by `signer` when given.
    async fn history(store: &RemoteStore, versions: u64, signer: Option<Arc<crate::signing::Signer>>) {
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut manifests = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        manifests.signer = signer;
        for i in 0..versions {
            let e = valid_entry(store, i);
            store.store.put(&Path::from(e.key.as_str()), PutPayload::from(vec![0u8; 25])).await.unwrap();
            manifests.commit(vec![e], 1, 1).await.unwrap();
        }
    }

    /// One stray object named with the largest 20-digit version number made verify walk
    /// 1..=u64::MAX. (On a thread of its own: over the in-memory store such a loop never
    /// yields, so a tokio timeout could not interrupt it.)
    #[test]
    fn a_huge_version_number_in_the_listing_does_not_hang_verify() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let shared = Arc::new(object_store::memory::InMemory::new());
                let store = store_at(&shared, "cluster");
                history(&store, 3, None).await;
                let stray = keys::manifest_key(&store, "t", 0, u64::MAX);
                store.store.put(&stray, PutPayload::from(b"junk".to_vec())).await.unwrap();
                let _ = done.send(run_with(&store, VerifyOptions::default(), shallow()).await);
            });
        });
        let (problems, summary) = finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("verify did not finish within 10 s on one stray manifest key");
        let kinds: Vec<ProblemKind> = problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [ProblemKind::ManifestVersionMissing, ProblemKind::ManifestCorrupt], "{problems:?}");
        assert_eq!(summary.objects, 3, "the newest readable version is still checked");
    }

    /// A segment whose older batches have no append time but whose newer ones were appended
    /// at 5000 is in the range of `--from-time 4000`, whatever its record times say.
    #[tokio::test]
    async fn a_partly_append_timed_segment_in_the_time_range_is_checked() {
        let shared = Arc::new(object_store::memory::InMemory::new());
        let store = store_at(&shared, "cluster");
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut manifests = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        let mut e = valid_entry(&store, 0);
        e.max_append_time = Some(5000); // min_append_time: None (an older batch had none)
        manifests.commit(vec![e], 1, 1).await.unwrap(); // the object is never written
        let options = VerifyOptions { from_time: Some(4000), ..VerifyOptions::default() };
        let (problems, summary) = run_with(&store, options, shallow()).await;
        assert_eq!(summary.objects, 1, "a batch of the segment was appended at 5000, inside the range");
        assert_eq!(problems.iter().map(|p| p.kind).collect::<Vec<_>>(), [ProblemKind::ObjectMissing], "{problems:?}");
    }

    /// Two clusters under two prefixes of one bucket sign with one organisation key. Someone
    /// with write access copies cluster A's manifest versions over cluster B's: every signature
    /// is valid, but every entry names A's objects, which verify reports as foreign keys.
    #[tokio::test]
    async fn a_signed_history_copied_from_another_prefix_does_not_verify() {
        let shared = Arc::new(object_store::memory::InMemory::new());
        let signer = Arc::new(crate::signing::tests::golden_signer());
        let (a, b) = (store_at(&shared, "staging"), store_at(&shared, "prod"));
        history(&a, 3, Some(signer.clone())).await;
        history(&b, 2, Some(signer.clone())).await;
        let mut public_keys = PublicKeys::default();
        public_keys.add_pem(&signer.public_pem(), "test").unwrap();
        let options = VerifyOptions { public_keys, ..VerifyOptions::default() };
        let (problems, _) = run_with(&b, options.clone(), shallow()).await;
        assert!(problems.is_empty(), "{problems:?}");
        for version in 1..=3 {
            let from = keys::manifest_key(&a, "t", 0, version);
            let bytes = a.store.get(&from).await.unwrap().bytes().await.unwrap();
            b.store.put(&keys::manifest_key(&b, "t", 0, version), PutPayload::from(bytes)).await.unwrap();
        }
        let (problems, summary) = run_with(&b, options, shallow()).await;
        assert!(problems.iter().any(|p| p.kind == ProblemKind::ForeignKey), "{problems:?} {summary:?}");
        assert_eq!(summary.objects, 0, "no object outside the prefix is even fetched");
    }

    fn bomb() -> Vec<u8> {
        let raw = vec![0u8; 64 << 20];
        let mark = segment_object::BatchMark {
            base_offset: 0,
            last_offset: 0,
            position: 0,
            length: raw.len() as u64,
            min_timestamp: 0,
            max_timestamp: 0,
            append_time: NO_APPEND_TIME,
        };
        segment_object::build(&raw, &[mark], 1 << 30, 1).unwrap().bytes
    }

    /// A few KiB standing where a 100-byte segment was committed (another size: not fetched),
    /// or committed at its own size but claiming 64 MiB raw (the index disagrees with the
    /// manifest: not decoded): deep verify never decompresses more than the manifest committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deep_verify_decodes_no_more_than_the_manifest_commits() {
        let shared = Arc::new(object_store::memory::InMemory::new());
        let store = store_at(&shared, "cluster");
        let bomb = bomb();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut manifests = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        let (mut swapped, mut claimed) = (valid_entry(&store, 0), valid_entry(&store, 1));
        claimed.object_bytes = bomb.len() as u64;
        for e in [&mut swapped, &mut claimed] {
            store.store.put(&Path::from(e.key.as_str()), PutPayload::from(bomb.clone())).await.unwrap();
        }
        manifests.commit(vec![swapped.clone(), claimed.clone()], 1, 1).await.unwrap();
        let largest = Arc::new(AtomicU64::new(0));
        let seen = largest.clone();
        let check: SegmentCheck = Arc::new(move |raw, _, _| {
            seen.fetch_max(raw.len() as u64, Ordering::Relaxed);
            Err("not a segment".into())
        });
        let (problems, _) = run_with(&store, VerifyOptions { deep: true, ..VerifyOptions::default() }, check).await;
        let of =
            |key: &str| problems.iter().filter(|p| p.key.as_deref() == Some(key)).map(|p| p.kind).collect::<Vec<_>>();
        assert_eq!(of(&swapped.key), [ProblemKind::ObjectSizeMismatch], "{problems:?}");
        assert!(of(&claimed.key).contains(&ProblemKind::ObjectChecksumMismatch), "{problems:?}");
        assert!(of(&claimed.key).contains(&ProblemKind::IndexMismatch), "{problems:?}");
        assert_eq!(largest.load(Ordering::Relaxed), 0, "nothing was decoded");
    }

    /// A hostile manifest entry (base offset above last offset, chain hash recomputed) is
    /// reported, not a crash (`count` computed last - base + 1).
    #[tokio::test]
    async fn an_entry_with_base_above_last_is_reported_not_a_crash() {
        let shared = Arc::new(object_store::memory::InMemory::new());
        let store = store_at(&shared, "cluster");
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let e = Entry { key: keys::segment_key(&store, "t", 0, 5).to_string(), ..entry(5, 3) };
        store.store.put(&Path::from(e.key.as_str()), PutPayload::from(vec![0u8; 25])).await.unwrap();
        m.append(vec![e]).unwrap();
        m.manifest_version = 1;
        store.store.put(&keys::manifest_key(&store, "t", 0, 1), PutPayload::from(m.to_bytes())).await.unwrap();
        let outcome = tokio::spawn(async move { run_with(&store, VerifyOptions::default(), shallow()).await }).await;
        let (problems, _) = outcome.expect("verify panicked on a hostile manifest entry");
        assert!(problems.iter().any(|p| p.kind == ProblemKind::TimeInconsistent), "{problems:?}");
    }

    /// Deleting the newest versions (or every version) of a partition is caught by the newest
    /// group-offsets snapshot, which recorded the version it saw.
    #[tokio::test]
    async fn versions_deleted_from_the_end_are_caught_by_the_group_snapshot() {
        use std::collections::BTreeMap;
        let shared = Arc::new(object_store::memory::InMemory::new());
        let store = store_at(&shared, "cluster");
        history(&store, 3, None).await;
        let cut = crate::catalog::PartitionCut { manifest_version: 3, remote_end_offset: 3 };
        let writer = Writer { id: "w".into(), epoch: 1 };
        let cuts = BTreeMap::from([("t/0".to_string(), cut)]);
        crate::catalog::publish_group_snapshot(&store, &writer, 1, cuts, vec![], 0).await.unwrap();
        let (problems, _) = run_with(&store, VerifyOptions::default(), shallow()).await;
        assert!(problems.is_empty(), "{problems:?}");
        store.store.delete(&keys::manifest_key(&store, "t", 0, 3)).await.unwrap();
        let (problems, _) = run_with(&store, VerifyOptions::default(), shallow()).await;
        assert_eq!(
            problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProblemKind::ManifestVersionMissing],
            "{problems:?}"
        );
        for version in 1..=2 {
            store.store.delete(&keys::manifest_key(&store, "t", 0, version)).await.unwrap();
        }
        let (problems, summary) = run_with(&store, VerifyOptions::default(), shallow()).await;
        assert_eq!(
            problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProblemKind::ManifestVersionMissing],
            "{problems:?}"
        );
        assert_eq!(summary.partitions, 1, "a partition with every version deleted is still verified (and fails)");
    }

    /// Signing turned on for a partition with history: with the flag, only the newest version
    /// must be signed; without it every unsigned version is reported.
    #[tokio::test]
    async fn history_signed_from_some_version_on_verifies_with_the_flag() {
        let shared = Arc::new(object_store::memory::InMemory::new());
        let store = store_at(&shared, "cluster");
        history(&store, 2, None).await;
        let signer = Arc::new(crate::signing::tests::golden_signer());
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut manifests = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        manifests.signer = Some(signer.clone());
        let e = valid_entry(&store, 2);
        store.store.put(&Path::from(e.key.as_str()), PutPayload::from(vec![0u8; 25])).await.unwrap();
        manifests.commit(vec![e], 1, 1).await.unwrap();
        let mut public_keys = PublicKeys::default();
        public_keys.add_pem(&signer.public_pem(), "test").unwrap();
        let strict = VerifyOptions { public_keys, ..VerifyOptions::default() };
        let (problems, _) = run_with(&store, strict.clone(), shallow()).await;
        assert_eq!(problems.iter().map(|p| p.kind).collect::<Vec<_>>(), [ProblemKind::SignatureMissing; 2]);
        let lenient = VerifyOptions { unsigned_before_signing: true, ..strict };
        let (problems, _) = run_with(&store, lenient.clone(), shallow()).await;
        assert!(problems.is_empty(), "{problems:?}");
        // An unsigned newest version (a forgery appended after the signed one) still fails.
        let mut forged = manifest::load_version(&store, "t", 0, 3).await.unwrap();
        forged.manifest_version = 4;
        store.store.put(&keys::manifest_key(&store, "t", 0, 4), PutPayload::from(forged.to_bytes())).await.unwrap();
        let (problems, _) = run_with(&store, lenient, shallow()).await;
        assert_eq!(
            problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
            [ProblemKind::SignatureMissing],
            "{problems:?}"
        );
    }

    async fn put_version(store: &RemoteStore, m: &Manifest) {
        let key = keys::manifest_key(store, "t", 0, m.manifest_version);
        store.store.put(&key, PutPayload::from(m.to_bytes())).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_history_verifies_and_each_cut_is_proven_against_the_version_before() {
        let store = store();
        let mut m = committed_history(&store, 400, 50).await;
        let policy = crate::retention::Policy {
            retention_ms: Some(100),
            keep_from: u64::MAX,
            grace_ms: 10,
            ..Default::default()
        };
        crate::retention::expire(&mut m, &policy, &|| 300, 1).await.unwrap().unwrap();
        let (problems, summary) = run(&store).await;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((summary.expiries, summary.expired_segments, summary.objects), (1, 200, 200));
        assert_eq!(summary.first_offset, Some(200));
        // Once the expired objects are deleted, the history still verifies.
        crate::retention::delete_due(&mut m, &policy, 310, 1).await.unwrap();
        let (problems, summary) = run(&store).await;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((summary.manifest_versions, summary.expiries), (10, 1));
    }

    #[tokio::test]
    async fn an_expiry_that_miscounts_or_a_version_that_undoes_one_is_reported() {
        let store = store();
        let mut m = committed_history(&store, 10, 10).await;
        m.expire_before(4, "test", 0, &|| 5, 600_000, 1).await.unwrap().unwrap();
        // Forged: an expiry that claims fewer segments than it cut.
        let mut forged = m.current.clone();
        forged.manifest_version += 1;
        forged.entries.remove(0);
        let x = forged.expired.as_mut().unwrap();
        (x.before_offset, x.last_hash) = (5, m.current.entries[0].hash.clone());
        put_version(&store, &forged).await;
        let (problems, _) = run(&store).await;
        assert!(
            problems
                .iter()
                .any(|p| p.kind == ProblemKind::ManifestRewritten && p.detail.contains("counts 4 expired segments")),
            "{problems:?}"
        );
        // Forged: a version that drops the expired section (the history "starts" at 5 again).
        let mut undone = forged.clone();
        undone.manifest_version += 1;
        undone.expired = None;
        put_version(&store, &undone).await;
        let (problems, _) = run(&store).await;
        assert!(problems.iter().any(|p| p.detail.contains("moves the start of the partition back")), "{problems:?}");
        assert!(problems.iter().any(|p| p.kind == ProblemKind::ChainBroken), "{problems:?}");
    }

    /// Review finding: an expiry whose pending list names a segment it keeps (which a writer
    /// adopting the version would delete) is reported.
    #[tokio::test]
    async fn an_expiry_listing_a_kept_segment_for_deletion_is_reported() {
        let store = store();
        let mut m = committed_history(&store, 10, 10).await;
        m.expire_before(4, "test", 0, &|| 5, 600_000, 1).await.unwrap().unwrap();
        let mut greedy = m.current.clone();
        greedy.manifest_version += 1;
        let cut = greedy.entries.remove(0);
        let x = greedy.expired.as_mut().unwrap();
        (x.before_offset, x.last_hash, x.segments, x.raw_bytes, x.object_bytes) =
            (5, cut.hash.clone(), x.segments + 1, x.raw_bytes + cut.raw_bytes, x.object_bytes + cut.object_bytes);
        x.pending_deletes.push(crate::manifest::PendingDelete {
            key: cut.key.clone(),
            delete_after_ms: 0,
            ..Default::default()
        });
        let honest = greedy.clone();
        let kept = greedy.entries[0].key.clone();
        greedy.expired.as_mut().unwrap().pending_deletes.push(crate::manifest::PendingDelete {
            key: kept,
            delete_after_ms: 0,
            ..Default::default()
        });
        put_version(&store, &greedy).await;
        let (problems, _) = run(&store).await;
        assert!(problems.iter().any(|p| p.detail.contains("lists other objects for deletion")), "{problems:?}");
        put_version(&store, &honest).await;
        let (problems, summary) = run(&store).await;
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(summary.expiries, 2);
    }
}
