//! The per-partition manifest: the only source of truth for what the remote tier holds.
//!
//! Format (version 2; version 1 is still read) — two JSON documents separated by a newline, so `jq` reads it as is:
//!
//! ```text
//! {"format":"tierlog-manifest","format_version":2,"body_sha256":"<hex of the body bytes>"}
//! {<body: topic, partition, manifest_version, writer, archives, entries…>}
//! ```
//!
//! Every entry carries the hash of the previous entry and its own hash over its fields, a
//! chain that makes any edit or removal in the middle evident. Versions are objects of their
//! own, `…/<version:020>.json`, written create-only (`PutMode::Create`): a second writer that
//! tries to commit the same version gets `AlreadyExists` and is fenced. A timed-out PUT that
//! in fact landed is recognised on retry (the existing version is ours, byte for byte) and
//! also after the commit returned an error: the next commit finds a version with our writer id
//! and epoch that extends our state, adopts it, and commits only what it lacks.
//!
//! Finding the latest version never LISTs: from a hint (the writer remembers its last
//! version locally) the reader probes forward with HEADs, galloping then bisecting.
//!
//! Bounded size: once more than [`ENTRIES_MAX`] entries accumulate, the oldest
//! [`ARCHIVE_ENTRIES`] are moved into an immutable archive object (written create-only before
//! the manifest that references it), which the manifest lists by key, range and SHA-256.

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys;
use crate::segment_object::NO_APPEND_TIME;
use crate::signing::{Signature, Signer};
use crate::store::RemoteStore;

pub const FORMAT: &str = "tierlog-manifest";
pub const ARCHIVE_FORMAT: &str = "tierlog-manifest-archive";
/// The version this build writes. Version 2 adds each entry's smallest and largest append
/// time (covered by the entry hash when present); version 1 documents are read as before.
/// A signed manifest version is [`SIGNED_FORMAT_VERSION`].
pub const FORMAT_VERSION: u32 = 2;
/// Version 3 is version 2 with a `signature` in the header (see [`crate::signing`]); a build
/// that reads only 1 and 2 refuses it by its version rather than skip the signature.
pub const SIGNED_FORMAT_VERSION: u32 = 3;
/// Version 4: the body has an `expired` section (retention moved the partition's start). A
/// build that predates retention refuses it by version rather than reading a chain that no
/// longer starts at the genesis hash. Signed or not (the signature is in the header).
pub const EXPIRED_FORMAT_VERSION: u32 = 4;
const FORMAT_VERSIONS_READ: [u32; 4] = [1, 2, 3, 4];
/// Entries kept inline; beyond this the oldest are archived. Keeps each manifest version
/// around 100 KiB, so commits and startup loads stay cheap however long history grows.
pub const ENTRIES_MAX: usize = 256;
/// Entries moved per archive object.
pub const ARCHIVE_ENTRIES: usize = 128;
/// Hash a chain starts from.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Most versions the forward probe will gallop over before giving up (2^40 versions).
const PROBE_STEPS_MAX: u32 = 40;
/// Versions of our own one commit may adopt before giving up. Each commit call that
/// returned an error can leave at most one landed version behind, and the next call adopts
/// it: more than a handful in a row means something else is writing as us.
const ADOPTIONS_MAX: usize = 8;

/// The process that wrote a manifest version: a data directory's id and a start epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    pub id: String,
    pub epoch: u64,
}

/// One sealed segment in the remote tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub base_offset: u64,
    pub last_offset: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub raw_bytes: u64,
    pub object_bytes: u64,
    pub chunks: u32,
    pub key: String,
    /// Where the chunk index frame lies in the object: one exact ranged GET fetches it.
    pub index_position: u64,
    pub index_len: u64,
    pub raw_sha256: String,
    pub object_sha256: String,
    /// When the PUT that stored the object started (writer's clock): the uploader's commit
    /// window counts from here.
    pub uploaded_ms: i64,
    /// Smallest and largest time the log appended a batch of the segment (ms since the
    /// epoch); absent where a batch has none (written before append times were recorded): the
    /// smallest when any batch lacks one, both when all do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_append_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_time: Option<i64>,
    /// The id of the encryption key the object's chunks are sealed with (the object's chunk
    /// index names it too); absent for an object stored in clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl Entry {
    /// The smallest append time, [`NO_APPEND_TIME`] when a batch has none.
    pub fn min_append(&self) -> i64 {
        self.min_append_time.unwrap_or(NO_APPEND_TIME)
    }

    /// The largest append time, [`NO_APPEND_TIME`] when no batch has one.
    pub fn max_append(&self) -> i64 {
        self.max_append_time.unwrap_or(NO_APPEND_TIME)
    }

    /// The chain hash over every field but `hash` itself. The append times join the hashed
    /// text when either is present (so entries written before them keep their hashes, and
    /// adding or removing them breaks the chain); so does `key_id=<id>` when the object is
    /// encrypted (labelled, so it cannot be read as an append time).
    pub fn compute_hash(&self) -> String {
        let mut text = format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.prev_hash,
            self.base_offset,
            self.last_offset,
            self.min_timestamp,
            self.max_timestamp,
            self.raw_bytes,
            self.object_bytes,
            self.chunks,
            self.key,
            self.index_position,
            self.index_len,
            self.raw_sha256,
            self.object_sha256,
            self.uploaded_ms
        );
        if self.min_append_time.is_some() || self.max_append_time.is_some() {
            let time = |t: Option<i64>| t.map_or_else(String::new, |t| t.to_string());
            text.push_str(&format!("|{}|{}", time(self.min_append_time), time(self.max_append_time)));
        }
        if let Some(id) = &self.key_id {
            text.push_str(&format!("|key_id={id}"));
        }
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// A reference to an archive object holding older entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    pub key: String,
    pub base_offset: u64,
    pub last_offset: u64,
    pub entries: u32,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// As in [`Entry`], over the archive's entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_append_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_time: Option<i64>,
    pub raw_bytes: u64,
    pub object_bytes: u64,
    pub sha256: String,
    pub first_prev_hash: String,
    pub last_hash: String,
}

/// What retention has removed from the start of a partition's remote tier. The expired
/// entries are gone from the manifest; this keeps the chain's link across them (`last_hash`)
/// so the first kept entry still proves continuity, plus totals and the objects still to
/// delete once readers of older versions are done with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expired {
    /// The first offset still held: every offset below it was expired.
    pub before_offset: u64,
    /// The chain hash of the last expired entry (the first kept entry's `prev_hash`).
    pub last_hash: String,
    /// The largest record timestamp and append time among expired entries.
    pub max_timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_time: Option<i64>,
    /// Totals over every segment ever expired from this partition.
    pub segments: u64,
    pub raw_bytes: u64,
    pub object_bytes: u64,
    /// When the latest expiry was committed (writer's clock, ms) and the rule that chose it.
    pub expired_ms: i64,
    pub reason: String,
    /// Segment objects no longer listed and not yet deleted: each is deleted once
    /// `delete_after_ms` has passed, then dropped from here by a later version. (Archive
    /// objects of expired entries are never deleted: they hold no records, older versions list
    /// them, and they keep the expired history's hashes provable.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_deletes: Vec<PendingDelete>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingDelete {
    pub key: String,
    pub delete_after_ms: i64,
    /// The expired segment's record-time and append-time ranges, as its entry had them: a
    /// legal hold set after the expiry still keeps the object (see `retention::delete_due`).
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_append_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_append_time: Option<i64>,
}

impl PendingDelete {
    pub fn of(entry: &Entry, delete_after_ms: i64) -> PendingDelete {
        PendingDelete {
            key: entry.key.clone(),
            delete_after_ms,
            min_timestamp: entry.min_timestamp,
            max_timestamp: entry.max_timestamp,
            min_append_time: entry.min_append_time,
            max_append_time: entry.max_append_time,
        }
    }
}

/// What one expiry commit removed, for the caller's report and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryOutcome {
    pub before_offset: u64,
    pub segments: u64,
    pub raw_bytes: u64,
    pub object_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub topic: String,
    pub partition: u32,
    pub manifest_version: u64,
    pub writer: Writer,
    pub written_ms: i64,
    /// Older entries, oldest first, in immutable archive objects.
    pub archives: Vec<ArchiveRef>,
    /// Recent entries, contiguous in offsets, oldest first.
    pub entries: Vec<Entry>,
    /// What retention removed before the first archive or entry (absent: nothing, and the
    /// chain starts at the genesis hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<Expired>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    format_version: u32,
    body_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<Signature>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Archive {
    topic: String,
    partition: u32,
    entries: Vec<Entry>,
}

impl Manifest {
    pub fn empty(topic: &str, partition: u32, writer: Writer) -> Manifest {
        Manifest {
            topic: topic.into(),
            partition,
            manifest_version: 0,
            writer,
            written_ms: 0,
            archives: vec![],
            entries: vec![],
            expired: None,
        }
    }

    /// First offset in the remote tier, if any.
    pub fn start_offset(&self) -> Option<u64> {
        self.archives.first().map(|a| a.base_offset).or_else(|| self.entries.first().map(|e| e.base_offset))
    }

    /// The offset after the last one in the remote tier (0 when nothing was ever tiered; the
    /// expired end when retention expired everything).
    pub fn next_offset(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.last_offset + 1)
            .or_else(|| self.archives.last().map(|a| a.last_offset + 1))
            .or_else(|| self.expired.as_ref().map(|x| x.before_offset))
            .unwrap_or(0)
    }

    /// The first offset not expired by retention (0 when nothing was).
    pub fn expired_before(&self) -> u64 {
        self.expired.as_ref().map_or(0, |x| x.before_offset)
    }

    /// Whether nothing was ever tiered (no entry, no archive, nothing expired).
    pub fn is_fresh(&self) -> bool {
        self.entries.is_empty() && self.archives.is_empty() && self.expired.is_none()
    }

    pub fn last_hash(&self) -> String {
        self.entries
            .last()
            .map(|e| e.hash.clone())
            .or_else(|| self.archives.last().map(|a| a.last_hash.clone()))
            .or_else(|| self.expired.as_ref().map(|x| x.last_hash.clone()))
            .unwrap_or_else(|| GENESIS_HASH.into())
    }

    /// Totals over archives and entries: (segments, raw bytes, object bytes).
    pub fn totals(&self) -> (u64, u64, u64) {
        let a = self
            .archives
            .iter()
            .fold((0, 0, 0), |t, a| (t.0 + u64::from(a.entries), t.1 + a.raw_bytes, t.2 + a.object_bytes));
        self.entries.iter().fold(a, |t, e| (t.0 + 1, t.1 + e.raw_bytes, t.2 + e.object_bytes))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_signed_bytes(None)
    }

    /// The document, signed by `signer` when given (header format_version 3, or 4 whenever
    /// the body has an `expired` section).
    pub fn to_signed_bytes(&self, signer: Option<&Signer>) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("manifest serializes");
        let body_sha256 = hex::encode(Sha256::digest(&body));
        let signature = signer.map(|s| s.sign(&self.topic, self.partition, self.manifest_version, &body_sha256));
        let format_version = match (&self.expired, &signature) {
            (Some(_), _) => EXPIRED_FORMAT_VERSION,
            (None, Some(_)) => SIGNED_FORMAT_VERSION,
            (None, None) => FORMAT_VERSION,
        };
        frame(Header { format: FORMAT.into(), format_version, body_sha256, signature }, &body)
    }

    /// Parses and checks a manifest: header, body checksum, chain, offset contiguity.
    /// Signatures are not checked here (see [`crate::verify`]).
    pub fn from_bytes(bytes: &[u8], key: &str) -> Result<Manifest> {
        let parsed = parse_signed(bytes, key)?;
        parsed.manifest.check_chain().map_err(|reason| corrupt(key, reason))?;
        Ok(parsed.manifest)
    }

    /// Checks the entries' hashes and links, offset order and append-time order inside this
    /// version (archived entries are not loaded: only their references' ends are linked).
    pub fn check_chain(&self) -> std::result::Result<(), String> {
        let mut prev_hash = self
            .archives
            .first()
            .map_or_else(|| self.entries.first().map(|e| e.prev_hash.clone()), |a| Some(a.first_prev_hash.clone()));
        let mut next_offset: Option<u64> = None;
        // Append times never decrease along a partition (and batches without one come first).
        let mut appended = NO_APPEND_TIME;
        if let Some(x) = &self.expired {
            // The kept history continues exactly where the expired part ended.
            (prev_hash, next_offset) = (Some(x.last_hash.clone()), Some(x.before_offset));
            appended = x.max_append_time.unwrap_or(NO_APPEND_TIME);
            if x.pending_deletes.iter().any(|p| p.key.is_empty()) {
                return Err("expired: a pending delete has no key".into());
            }
        }
        let mut in_order = |min: Option<i64>, max: Option<i64>| {
            let (min, max) = (min.unwrap_or(NO_APPEND_TIME), max.unwrap_or(NO_APPEND_TIME));
            let ok = appended <= min && min <= max;
            appended = max;
            ok
        };
        for a in &self.archives {
            if prev_hash.as_deref() != Some(&a.first_prev_hash) || next_offset.is_some_and(|n| n != a.base_offset) {
                return Err(format!("archive {} breaks the hash chain or offset order", a.key));
            }
            if !in_order(a.min_append_time, a.max_append_time) {
                return Err(format!("archive {}: append times decrease", a.key));
            }
            (prev_hash, next_offset) = (Some(a.last_hash.clone()), Some(a.last_offset + 1));
        }
        for e in &self.entries {
            if prev_hash.as_deref() != Some(&e.prev_hash) || next_offset.is_some_and(|n| n != e.base_offset) {
                return Err(format!("entry at offset {} breaks the hash chain or offset order", e.base_offset));
            }
            if e.compute_hash() != e.hash || e.last_offset < e.base_offset {
                return Err(format!("entry at offset {} does not match its hash", e.base_offset));
            }
            if !in_order(e.min_append_time, e.max_append_time) {
                return Err(format!("entry at offset {}: append times decrease", e.base_offset));
            }
            (prev_hash, next_offset) = (Some(e.hash.clone()), Some(e.last_offset + 1));
        }
        Ok(())
    }

    /// The largest append time the remote tier holds ([`NO_APPEND_TIME`] when none).
    pub fn max_append_time(&self) -> i64 {
        self.entries
            .last()
            .map(Entry::max_append)
            .or_else(|| self.archives.last().map(|a| a.max_append_time.unwrap_or(NO_APPEND_TIME)))
            .or_else(|| self.expired.as_ref().map(|x| x.max_append_time.unwrap_or(NO_APPEND_TIME)))
            .unwrap_or(NO_APPEND_TIME)
    }

    /// Appends entries (filling in their chain hashes). Entries must continue the offsets, and
    /// their append times must not go below the remote tier's (a manifest that says so would
    /// be refused by every reader).
    pub fn append(&mut self, entries: Vec<Entry>) -> Result<()> {
        for mut entry in entries {
            let last = self.max_append_time();
            if entry.min_append() < last || entry.max_append() < entry.min_append() {
                return Err(Error::Diverged {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    detail: format!(
                        "segment at offset {} was appended from {} on, before the remote tier's last append time {last}: \
                         the writer's clock went back while its local log held no append time; the segment stays local \
                         (nothing is lost) — see docs/FORMAT.md, \"append-time floor\"",
                        entry.base_offset,
                        entry.min_append_time.map_or("an unknown time".to_string(), |t| t.to_string())
                    ),
                });
            }
            if entry.base_offset != self.next_offset() && !self.is_fresh() {
                return Err(Error::Diverged {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    detail: format!(
                        "segment at offset {} does not continue the remote tier, which ends before {}",
                        entry.base_offset,
                        self.next_offset()
                    ),
                });
            }
            entry.prev_hash = self.last_hash();
            entry.hash = entry.compute_hash();
            self.entries.push(entry);
        }
        Ok(())
    }
}

/// Whether `next` continues `current`: a start that retention moved forward (never back, never
/// past `current`'s end, linked to `current`'s chain where it cut), an end at least as far, and
/// the same chain hash where `current` ends (when that point is still visible in `next`).
fn extends(next: &Manifest, current: &Manifest) -> bool {
    if current.is_fresh() {
        return true;
    }
    let end = current.next_offset();
    let (cut, current_cut) = (next.expired_before(), current.expired_before());
    let start_ok = if cut == current_cut {
        // Everything expired (no start, end = cut): the next entry starts at the cut.
        let emptied = |m: &Manifest| m.start_offset().is_none_or(|start| start == cut) && cut == end;
        next.start_offset() == current.start_offset() || (emptied(next) && emptied(current))
    } else {
        let link = next.expired.as_ref().map(|x| &x.last_hash);
        cut > current_cut
            && cut <= end
            && link.is_some_and(|link| hash_ending_at(current, cut).is_none_or(|h| h == *link))
    };
    start_ok && next.next_offset() >= end && hash_ending_at(next, end).is_none_or(|hash| hash == current.last_hash())
}

/// The chain hash of the entry (or archive, or expired range) of `m` that ends right before
/// `offset`, when `m` shows it without loading an archive.
fn hash_ending_at(m: &Manifest, offset: u64) -> Option<String> {
    let last = offset.checked_sub(1)?;
    m.entries
        .iter()
        .find(|e| e.last_offset == last)
        .map(|e| e.hash.clone())
        .or_else(|| m.archives.iter().find(|a| a.last_offset == last).map(|a| a.last_hash.clone()))
        .or_else(|| m.expired.as_ref().filter(|x| x.before_offset == offset).map(|x| x.last_hash.clone()))
}

/// A manifest version as read, before its chain is trusted: for `verify`, which reports each
/// problem itself.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub manifest: Manifest,
    pub signature: Option<Signature>,
    /// The body's SHA-256 (hex), checked against the header.
    pub body_sha256: String,
}

/// Parses a manifest version: header, format version, body checksum, JSON. Neither the chain
/// nor the signature is checked.
pub fn parse_signed(bytes: &[u8], key: &str) -> Result<ParsedManifest> {
    let (header, body) = unwrap_header(bytes, FORMAT, &FORMAT_VERSIONS_READ, key)?;
    let manifest: Manifest = serde_json::from_slice(body).map_err(|e| corrupt(key, format!("body: {e}")))?;
    if manifest.expired.is_some() != (header.format_version == EXPIRED_FORMAT_VERSION) {
        return Err(corrupt(
            key,
            format!(
                "format_version {} with{} an expired section",
                header.format_version,
                if manifest.expired.is_some() { "" } else { "out" }
            ),
        ));
    }
    let signed_version = header.format_version == SIGNED_FORMAT_VERSION;
    if header.format_version != EXPIRED_FORMAT_VERSION && header.signature.is_some() != signed_version {
        return Err(corrupt(
            key,
            format!(
                "format_version {} with{} a signature",
                header.format_version,
                if header.signature.is_some() { "" } else { "out" }
            ),
        ));
    }
    Ok(ParsedManifest { manifest, signature: header.signature, body_sha256: header.body_sha256 })
}

fn wrap(format: &str, body: &[u8]) -> Vec<u8> {
    wrap_document(format, FORMAT_VERSION, body)
}

/// The two-line layout of manifests for another document format (the catalog, group
/// snapshots): a header naming `format` and `format_version` with the body's SHA-256, then the body.
pub fn wrap_document(format: &str, format_version: u32, body: &[u8]) -> Vec<u8> {
    frame(
        Header {
            format: format.into(),
            format_version,
            body_sha256: hex::encode(Sha256::digest(body)),
            signature: None,
        },
        body,
    )
}

/// The body of a document written by [`wrap_document`], checked: format, one of `versions`,
/// no signature, body SHA-256. Errors name `key`.
pub fn unwrap_document<'a>(bytes: &'a [u8], format: &str, versions: &[u32], key: &str) -> Result<&'a [u8]> {
    let (header, body) = unwrap_header(bytes, format, versions, key)?;
    if header.signature.is_some() {
        return Err(corrupt(key, format!("a {format} document is never signed")));
    }
    Ok(body)
}

/// `header` as one JSON line, then `body` and a newline.
fn frame(header: Header, body: &[u8]) -> Vec<u8> {
    let mut out = serde_json::to_vec(&header).expect("header serializes");
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(b'\n');
    out
}

fn unwrap<'a>(bytes: &'a [u8], format: &str, key: &str) -> Result<&'a [u8]> {
    let (header, body) = unwrap_header(bytes, format, &FORMAT_VERSIONS_READ, key)?;
    if header.signature.is_some() && format != FORMAT {
        return Err(corrupt(key, "only manifest versions are signed".into()));
    }
    Ok(body)
}

/// The header and body of a two-line document: `format`, one of `versions`, body SHA-256.
fn unwrap_header<'a>(bytes: &'a [u8], format: &str, versions: &[u32], key: &str) -> Result<(Header, &'a [u8])> {
    let newline = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt(key, "no header line".into()))?;
    let header: Header = serde_json::from_slice(&bytes[..newline]).map_err(|e| corrupt(key, format!("header: {e}")))?;
    if header.format != format {
        return Err(corrupt(key, format!("format {:?}, expected {format:?}", header.format)));
    }
    if !versions.contains(&header.format_version) {
        return Err(corrupt(
            key,
            format!("format_version {} is not supported by this build (reads {versions:?})", header.format_version),
        ));
    }
    let body = bytes[newline + 1..].strip_suffix(b"\n").unwrap_or(&bytes[newline + 1..]);
    if hex::encode(Sha256::digest(body)) != header.body_sha256 {
        return Err(corrupt(key, "body SHA-256 does not match the header: the object was altered or truncated".into()));
    }
    Ok((header, body))
}

fn corrupt(key: &str, reason: String) -> Error {
    Error::Corrupt { key: key.to_string(), reason }
}

/// A partition's manifest in the store: loading the latest version and committing new ones.
#[derive(Debug)]
pub struct ManifestStore {
    pub store: RemoteStore,
    pub topic: String,
    pub partition: u32,
    pub writer: Writer,
    /// The latest committed version (version 0: nothing committed yet).
    pub current: Manifest,
    /// Signs every version this store commits (`[integrity] signing_key_file`).
    pub signer: Option<std::sync::Arc<Signer>>,
    /// S3 Object Lock of the topic: every version and archive is written locked.
    pub lock: Option<crate::lock::LockPolicy>,
    /// Expired objects the store said are locked, and until when (wall clock, ms): not asked
    /// about again before then (in memory only; a restart asks once more).
    pub lock_waits: std::collections::HashMap<String, i64>,
}

impl ManifestStore {
    /// Loads the latest version, probing forward from `hint` (0 when unknown).
    pub async fn open(
        store: RemoteStore,
        topic: &str,
        partition: u32,
        writer: Writer,
        hint: u64,
    ) -> Result<ManifestStore> {
        let current = match latest_version(&store, topic, partition, hint).await? {
            0 => Manifest::empty(topic, partition, writer.clone()),
            version => load_version(&store, topic, partition, version).await?,
        };
        Ok(ManifestStore {
            store,
            topic: topic.into(),
            partition,
            writer,
            current,
            signer: None,
            lock: None,
            lock_waits: Default::default(),
        })
    }

    /// Commits `entries` as the next version, with no commit deadline. See
    /// [`commit_within`](Self::commit_within).
    pub async fn commit(&mut self, entries: Vec<Entry>, now_ms: i64, attempts: u32) -> Result<Vec<Entry>> {
        self.commit_within(entries, &|| now_ms, i64::MAX, attempts).await
    }

    /// Commits `entries` as the next version: archives first when the manifest grows past
    /// its bound, then the manifest itself, create-only. Retries transient failures, but
    /// starts no PUT after `deadline_ms` (by `now_ms`): the uploader's commit window, which
    /// scrub relies on. Returns the entries appended (with their chain hashes).
    ///
    /// An existing version at the number we try is either ours or another writer's. Ours
    /// (same writer id and epoch, extending `current`) is an earlier PUT that landed although
    /// it reported failure — in this call's retries, or in an earlier call that returned an
    /// error: it is adopted as `current`, entries it already holds are dropped (their fresh
    /// uploads become orphans), and the rest are committed on top. Anything else is another
    /// writer: [`Error::Fenced`].
    pub async fn commit_within(
        &mut self,
        entries: Vec<Entry>,
        now_ms: &impl Fn() -> i64,
        deadline_ms: i64,
        attempts: u32,
    ) -> Result<Vec<Entry>> {
        let mut entries = entries;
        for _ in 0..=ADOPTIONS_MAX {
            entries = self.drop_committed(entries).await?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let (next, appended) = self.next_version(entries.clone(), now_ms, deadline_ms, attempts).await?;
            match self.put_version(&next, now_ms, deadline_ms, attempts).await? {
                None => {
                    tracing::info!(topic = %self.topic, partition = self.partition, version = next.manifest_version, next_offset = next.next_offset(), "committed manifest");
                    self.current = next;
                    return Ok(appended);
                }
                Some(existing) => self.adopt_or_fence(existing)?,
            }
        }
        Err(self.adopted_too_often())
    }

    /// Takes the partition over from the writer of `current` (a node restored from the
    /// bucket under a new identity): commits `current` unchanged as the next version under
    /// this store's writer. The old writer's next commit then meets a version it did not write
    /// and is fenced. Nothing is written when this writer (by id) already holds the newest
    /// version or the partition has none. Returns the version this writer now holds.
    pub async fn take_over(&mut self, now_ms: i64, attempts: u32) -> Result<u64> {
        for _ in 0..=ADOPTIONS_MAX {
            if self.current.manifest_version == 0 || self.current.writer.id == self.writer.id {
                return Ok(self.current.manifest_version);
            }
            let next = self.successor(now_ms);
            match self.put_version(&next, &|| now_ms, i64::MAX, attempts).await? {
                None => {
                    tracing::info!(topic = %self.topic, partition = self.partition, version = next.manifest_version, "took the partition over");
                    self.current = next;
                    return Ok(self.current.manifest_version);
                }
                // The old writer committed meanwhile: take over from its newer version.
                Some(existing) => self.current = existing,
            }
        }
        Err(Error::Diverged {
            topic: self.topic.clone(),
            partition: self.partition,
            detail: "another writer keeps committing while this one takes the partition over: stop it first".into(),
        })
    }

    /// `current` plus `entries` as the next version (archives spilled and written), and the
    /// appended entries with their chain hashes.
    async fn next_version(
        &self,
        entries: Vec<Entry>,
        now_ms: &impl Fn() -> i64,
        deadline_ms: i64,
        attempts: u32,
    ) -> Result<(Manifest, Vec<Entry>)> {
        let mut next = self.successor(now_ms());
        let count = entries.len();
        next.append(entries)?;
        let appended = next.entries[next.entries.len() - count..].to_vec();
        while next.entries.len() > ENTRIES_MAX {
            self.check_deadline(&next, now_ms, deadline_ms)?;
            self.spill(&mut next, attempts).await?;
        }
        Ok((next, appended))
    }

    /// PUTs `next` create-only. `None`: committed (possibly by an earlier attempt of this
    /// loop that reported failure). `Some(existing)`: the version exists and differs.
    async fn put_version(
        &self,
        next: &Manifest,
        now_ms: &impl Fn() -> i64,
        deadline_ms: i64,
        attempts: u32,
    ) -> Result<Option<Manifest>> {
        let key = keys::manifest_key(&self.store, &self.topic, self.partition, next.manifest_version);
        let bytes = next.to_signed_bytes(self.signer.as_deref());
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.check_deadline(next, now_ms, deadline_ms)?;
            let lock = self.lock.map(|l| l.request_now());
            let options = match lock {
                Some(lock) => lock.options(PutMode::Create),
                None => PutOptions { mode: PutMode::Create, ..PutOptions::default() },
            };
            match self.store.store.put_opts(&key, PutPayload::from(bytes.clone()), options).await {
                // A version written without the lock asked for is committed all the same (it
                // is create-only and cannot be taken back); the lock error stops this writer.
                Ok(result) => {
                    crate::lock::check_applied(&self.store.display, &key, lock, &result)?;
                    return Ok(None);
                }
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                    let existing =
                        load_version(&self.store, &self.topic, self.partition, next.manifest_version).await?;
                    return Ok((existing != *next).then_some(existing));
                }
                Err(e) if attempt < attempts => {
                    tracing::warn!(key = %key, attempt, error = %e, "manifest commit failed; retrying");
                    tokio::time::sleep(crate::uploader::backoff(attempt)).await;
                }
                Err(e) => return Err(self.store.error(format!("PUT {key} (manifest commit)"), e)),
            }
        }
    }

    /// No manifest PUT (or archive PUT for it) starts once the commit window of the oldest
    /// entry it carries has passed: scrub may already count those objects as orphans.
    fn check_deadline(&self, next: &Manifest, now_ms: &impl Fn() -> i64, deadline_ms: i64) -> Result<()> {
        if now_ms() <= deadline_ms {
            return Ok(());
        }
        let key = keys::manifest_key(&self.store, &self.topic, self.partition, next.manifest_version);
        Err(Error::CommitWindow {
            topic: self.topic.clone(),
            partition: self.partition,
            base_offset: self.current.next_offset(),
            what: "manifest commit",
            key: key.to_string(),
        })
    }

    /// Adopts `existing` (the version after `current`) when this writer wrote it and it
    /// extends `current`; otherwise another writer holds the partition: fenced.
    fn adopt_or_fence(&mut self, existing: Manifest) -> Result<()> {
        if existing.writer == self.writer && extends(&existing, &self.current) {
            tracing::warn!(topic = %self.topic, partition = self.partition, version = existing.manifest_version, next_offset = existing.next_offset(), "found a manifest version of ours that was reported failed; adopting it");
            self.current = existing;
            return Ok(());
        }
        Err(Error::Fenced {
            topic: self.topic.clone(),
            partition: self.partition,
            version: existing.manifest_version,
            other: format!("writer {} epoch {}", existing.writer.id, existing.writer.epoch),
        })
    }

    /// Drops the entries `current` already holds — the same segment (offsets and raw
    /// SHA-256) committed under another key by an earlier, adopted version. A different
    /// segment at those offsets is a divergence, never silently replaced.
    async fn drop_committed(&self, entries: Vec<Entry>) -> Result<Vec<Entry>> {
        let end = self.current.next_offset();
        let mut remaining = Vec::with_capacity(entries.len());
        for entry in entries {
            if self.current.start_offset().is_none() || entry.base_offset >= end {
                remaining.push(entry);
                continue;
            }
            let committed = self.committed_entry(entry.base_offset).await?;
            let same = committed
                .as_ref()
                .is_some_and(|c| c.last_offset == entry.last_offset && c.raw_sha256 == entry.raw_sha256);
            if !same {
                return Err(Error::Diverged {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    detail: format!(
                        "segment at offset {} (object {}) overlaps the remote tier, which ends before {end}, and differs from the committed segment there",
                        entry.base_offset, entry.key
                    ),
                });
            }
            tracing::debug!(topic = %self.topic, partition = self.partition, base_offset = entry.base_offset, key = %entry.key, "segment already committed; its fresh upload is an orphan");
        }
        Ok(remaining)
    }

    /// The committed entry starting at `base`, inline or in an archive.
    async fn committed_entry(&self, base: u64) -> Result<Option<Entry>> {
        if let Some(entry) = self.current.entries.iter().find(|e| e.base_offset == base) {
            return Ok(Some(entry.clone()));
        }
        match self.current.archives.iter().find(|a| a.base_offset <= base && base <= a.last_offset) {
            Some(archive) => Ok(self.load_archive(archive).await?.into_iter().find(|e| e.base_offset == base)),
            None => Ok(None),
        }
    }

    async fn spill(&self, next: &mut Manifest, attempts: u32) -> Result<()> {
        let moved: Vec<Entry> = next.entries.drain(..ARCHIVE_ENTRIES).collect();
        let reference = self.write_archive(moved, attempts).await?;
        next.archives.push(reference);
        Ok(())
    }

    /// Writes `entries` (oldest first, at least one) into a new immutable archive object,
    /// create-only under a fresh key, and returns its reference.
    async fn write_archive(&self, entries: Vec<Entry>, attempts: u32) -> Result<ArchiveRef> {
        let first = entries.first().expect("archive has entries");
        let last = entries.last().expect("archive has entries");
        let key = keys::archive_key(&self.store, &self.topic, self.partition, first.base_offset);
        let reference = ArchiveRef {
            key: key.to_string(),
            base_offset: first.base_offset,
            last_offset: last.last_offset,
            entries: entries.len() as u32,
            min_timestamp: entries.iter().map(|e| e.min_timestamp).min().unwrap_or(i64::MAX),
            max_timestamp: entries.iter().map(|e| e.max_timestamp).max().unwrap_or(i64::MIN),
            min_append_time: entries.iter().map(Entry::min_append).min().filter(|t| *t != NO_APPEND_TIME),
            max_append_time: entries.iter().map(Entry::max_append).max().filter(|t| *t != NO_APPEND_TIME),
            raw_bytes: entries.iter().map(|e| e.raw_bytes).sum(),
            object_bytes: entries.iter().map(|e| e.object_bytes).sum(),
            sha256: String::new(),
            first_prev_hash: first.prev_hash.clone(),
            last_hash: last.hash.clone(),
        };
        let archive = Archive { topic: self.topic.clone(), partition: self.partition, entries };
        let bytes = wrap(ARCHIVE_FORMAT, &serde_json::to_vec(&archive).expect("archive serializes"));
        let reference = ArchiveRef { sha256: crate::sha256_hex(&bytes), ..reference };
        crate::uploader::put_create_with_retries(&self.store, &key, bytes.into(), attempts, self.lock).await?;
        Ok(reference)
    }

    /// Commits a version whose history starts at `before` (an entry boundary, at most the
    /// remote tier's end): the entries below it leave the manifest, the chain's link across
    /// them is kept in `expired`, and their segment objects are
    /// listed as pending deletes due `grace_ms` from now. Nothing is deleted here. `Ok(None)`
    /// when the start is already at or past `before`. Fencing and adoption as in
    /// [`commit_within`](Self::commit_within).
    pub async fn expire_before(
        &mut self,
        before: u64,
        reason: &str,
        grace_ms: u64,
        clock: &impl Fn() -> i64,
        commit_window_ms: u64,
        attempts: u32,
    ) -> Result<Option<ExpiryOutcome>> {
        for _ in 0..=ADOPTIONS_MAX {
            if self.current.start_offset().is_none_or(|start| before <= start) {
                return Ok(None);
            }
            let (next, outcome, deadline) =
                self.expired_version(before, reason, grace_ms, clock, commit_window_ms, attempts).await?;
            if self.put_next(next, clock, deadline, attempts).await? {
                tracing::info!(topic = %self.topic, partition = self.partition, version = self.current.manifest_version, before_offset = before, segments = outcome.segments, reason, "expired by retention");
                return Ok(Some(outcome));
            }
        }
        Err(self.adopted_too_often())
    }

    /// Commits a version without the pending deletes named in `deleted` (objects confirmed
    /// gone). Nothing to do: `Ok(false)`.
    pub async fn forget_deleted(&mut self, deleted: &[String], now_ms: i64, attempts: u32) -> Result<bool> {
        for _ in 0..=ADOPTIONS_MAX {
            let Some(expired) = &self.current.expired else { return Ok(false) };
            if !expired.pending_deletes.iter().any(|p| deleted.contains(&p.key)) {
                return Ok(false);
            }
            let mut next = self.successor(now_ms);
            next.expired.as_mut().expect("checked above").pending_deletes.retain(|p| !deleted.contains(&p.key));
            if self.put_next(next, &|| now_ms, i64::MAX, attempts).await? {
                return Ok(true);
            }
        }
        Err(self.adopted_too_often())
    }

    /// PUTs `next` create-only: `true` once committed (it becomes `current`), `false` when a
    /// version of ours was adopted instead (the caller recomputes its change on top).
    async fn put_next(
        &mut self,
        next: Manifest,
        clock: &impl Fn() -> i64,
        deadline_ms: i64,
        attempts: u32,
    ) -> Result<bool> {
        match self.put_version(&next, clock, deadline_ms, attempts).await? {
            None => {
                self.current = next;
                Ok(true)
            }
            Some(existing) => {
                self.adopt_or_fence(existing)?;
                Ok(false)
            }
        }
    }

    /// `current` as the next version, by this writer, at `now_ms` (the caller changes it).
    fn successor(&self, now_ms: i64) -> Manifest {
        Manifest {
            manifest_version: self.current.manifest_version + 1,
            writer: self.writer.clone(),
            written_ms: now_ms,
            ..self.current.clone()
        }
    }

    fn adopted_too_often(&self) -> Error {
        Error::Diverged {
            topic: self.topic.clone(),
            partition: self.partition,
            detail: format!(
                "more than {ADOPTIONS_MAX} manifest versions after {} were written by this writer without its knowledge; restart the writer",
                self.current.manifest_version
            ),
        }
    }

    /// `current` with everything below `before` expired (see [`expire_before`](Self::expire_before)),
    /// and the deadline of its PUT: an archive written for it (a cut inside an archive) must be
    /// listed within the commit window, or scrub may take it for an orphan.
    async fn expired_version(
        &self,
        before: u64,
        reason: &str,
        grace_ms: u64,
        clock: &impl Fn() -> i64,
        commit_window_ms: u64,
        attempts: u32,
    ) -> Result<(Manifest, ExpiryOutcome, i64)> {
        let now_ms = clock();
        let mut deadline = i64::MAX;
        let current = &self.current;
        let mut removed: Vec<Entry> = Vec::new();
        // Archives kept as they are, or the entries of one the cut falls inside (rewritten
        // into a new archive once the cut is known to be valid).
        let mut kept: Vec<std::result::Result<ArchiveRef, Vec<Entry>>> = Vec::with_capacity(current.archives.len());
        for reference in &current.archives {
            if reference.base_offset >= before {
                kept.push(Ok(reference.clone()));
                continue;
            }
            // The archive object itself stays: older versions list it, and it is the proof of
            // the expired entries' hashes that `verify` walks (it holds no records).
            let mut entries = self.load_archive(reference).await?;
            let rest = entries.split_off(entries.partition_point(|e| e.base_offset < before));
            removed.extend(entries);
            if !rest.is_empty() {
                kept.push(Err(rest));
            }
        }
        let split = current.entries.partition_point(|e| e.base_offset < before);
        removed.extend_from_slice(&current.entries[..split]);
        // Contiguous history: the cut is a segment boundary exactly when the last entry
        // removed ends right before it.
        let Some(last) = removed.last().filter(|e| e.last_offset + 1 == before) else {
            return Err(self.not_a_boundary(before));
        };
        let mut archives = Vec::with_capacity(kept.len());
        for part in kept {
            archives.push(match part {
                Ok(reference) => reference,
                Err(rest) => {
                    deadline = clock().saturating_add(commit_window_ms as i64);
                    self.write_archive(rest, attempts).await?
                }
            });
        }
        let delete_after_ms = now_ms.saturating_add(grace_ms as i64);
        let previous = current.expired.clone();
        let mut pending = previous.as_ref().map(|x| x.pending_deletes.clone()).unwrap_or_default();
        pending.extend(removed.iter().map(|e| PendingDelete::of(e, delete_after_ms)));
        let outcome = ExpiryOutcome {
            before_offset: before,
            segments: removed.len() as u64,
            raw_bytes: removed.iter().map(|e| e.raw_bytes).sum(),
            object_bytes: removed.iter().map(|e| e.object_bytes).sum(),
        };
        let max_append = removed.iter().map(Entry::max_append).max().filter(|t| *t != NO_APPEND_TIME);
        let expired = Expired {
            before_offset: before,
            last_hash: last.hash.clone(),
            max_timestamp: removed
                .iter()
                .map(|e| e.max_timestamp)
                .chain(previous.as_ref().map(|x| x.max_timestamp))
                .max()
                .expect("at least one removed entry"),
            max_append_time: max_append.max(previous.as_ref().and_then(|x| x.max_append_time)),
            segments: previous.as_ref().map_or(0, |x| x.segments) + outcome.segments,
            raw_bytes: previous.as_ref().map_or(0, |x| x.raw_bytes) + outcome.raw_bytes,
            object_bytes: previous.as_ref().map_or(0, |x| x.object_bytes) + outcome.object_bytes,
            expired_ms: now_ms,
            reason: reason.to_string(),
            pending_deletes: pending,
        };
        let mut next = self.successor(now_ms);
        next.archives = archives;
        next.entries = current.entries[split..].to_vec();
        next.expired = Some(expired);
        next.check_chain().map_err(|reason| {
            Error::Format(format!("{}/{}: expiry would break the chain: {reason}", self.topic, self.partition))
        })?;
        Ok((next, outcome, deadline))
    }

    fn not_a_boundary(&self, before: u64) -> Error {
        Error::Format(format!(
            "{}/{}: cannot expire before offset {before}: it is not the start of a remote segment (start {:?}, end {})",
            self.topic,
            self.partition,
            self.current.start_offset(),
            self.current.next_offset()
        ))
    }

    /// The entries of an archive, checked against its reference.
    pub async fn load_archive(&self, reference: &ArchiveRef) -> Result<Vec<Entry>> {
        load_archive(&self.store, reference).await
    }
}

/// The entries of an archive, checked against its reference.
pub async fn load_archive(store: &RemoteStore, reference: &ArchiveRef) -> Result<Vec<Entry>> {
    load_archive_bounded(store, reference, u64::MAX).await
}

/// [`load_archive`], refusing (without reading it) an archive object larger than `max_bytes`.
pub async fn load_archive_bounded(store: &RemoteStore, reference: &ArchiveRef, max_bytes: u64) -> Result<Vec<Entry>> {
    let key = object_store::path::Path::from(reference.key.as_str());
    if max_bytes != u64::MAX {
        let size = match store.store.head(&key).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::Missing { key: key.to_string() }),
            Err(e) => return Err(store.error(format!("HEAD {key}"), e)),
        };
        if size > max_bytes {
            return Err(corrupt(&reference.key, format!("{size} bytes: larger than any archive is")));
        }
    }
    let bytes = get_bytes(store, &key).await?;
    if crate::sha256_hex(&bytes) != reference.sha256 {
        return Err(corrupt(&reference.key, "archive SHA-256 differs from the manifest".into()));
    }
    let body = unwrap(&bytes, ARCHIVE_FORMAT, &reference.key)?;
    let archive: Archive =
        serde_json::from_slice(body).map_err(|e| corrupt(&reference.key, format!("archive body: {e}")))?;
    Ok(archive.entries)
}

/// The latest committed version (0 when none), without LIST: check `hint`, then gallop
/// forward with HEADs and bisect.
pub async fn latest_version(store: &RemoteStore, topic: &str, partition: u32, hint: u64) -> Result<u64> {
    latest_number(store, |version| keys::manifest_key(store, topic, partition, version), hint).await
}

/// The largest `n` such that the objects `key_of(1..=n)` exist (0 when none), found from
/// `hint` by galloping and bisecting with HEADs: numbered create-only series are dense.
pub async fn latest_number(
    store: &RemoteStore,
    key_of: impl Fn(u64) -> object_store::path::Path,
    hint: u64,
) -> Result<u64> {
    let key_of = &key_of;
    let exists = |version: u64| async move {
        let key = key_of(version);
        match store.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store.error(format!("HEAD {key}"), e)),
        }
    };
    let mut low = if hint > 0 && exists(hint).await? { hint } else { 0 };
    if low == 0 {
        if !exists(1).await? {
            return Ok(0);
        }
        low = 1;
    }
    let mut step = 1u64;
    let mut steps = 0;
    while exists(low + step).await? {
        low += step;
        step *= 2;
        steps += 1;
        if steps > PROBE_STEPS_MAX {
            return Err(Error::Format(format!("{}: versions beyond {low}: refusing to probe further", key_of(low))));
        }
    }
    // `low` exists, `low + step` does not: bisect the gap.
    let mut high = low + step;
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if exists(mid).await? { low = mid } else { high = mid }
    }
    Ok(low)
}

pub async fn load_version(store: &RemoteStore, topic: &str, partition: u32, version: u64) -> Result<Manifest> {
    let key = keys::manifest_key(store, topic, partition, version);
    let bytes = get_bytes(store, &key).await?;
    let manifest = Manifest::from_bytes(&bytes, key.as_ref())?;
    if manifest.topic != topic || manifest.partition != partition || manifest.manifest_version != version {
        return Err(corrupt(
            key.as_ref(),
            format!("belongs to {}/{} version {}", manifest.topic, manifest.partition, manifest.manifest_version),
        ));
    }
    Ok(manifest)
}

pub async fn get_bytes(store: &RemoteStore, key: &object_store::path::Path) -> Result<bytes::Bytes> {
    match store.store.get(key).await {
        Ok(result) => result.bytes().await.map_err(|e| store.error(format!("GET {key}"), e)),
        Err(object_store::Error::NotFound { .. }) => Err(Error::Missing { key: key.to_string() }),
        Err(e) => Err(store.error(format!("GET {key}"), e)),
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use object_store::path::Path;

    use super::*;

    pub(crate) fn memory_store() -> RemoteStore {
        RemoteStore {
            store: std::sync::Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::from("cluster"),
            display: "memory".into(),
            ids: crate::keys::UniqueIds::seeded(7),
            lock: None,
            records_lock: None,
        }
    }

    /// `segments` one-offset entries committed `per_commit` at a time, each with a 25-byte
    /// object where its key says: enough to spill into archives.
    pub(crate) async fn history(store: &RemoteStore, segments: u64, per_commit: u64) -> ManifestStore {
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut manifests = ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
        for first in (0..segments).step_by(per_commit as usize) {
            let batch: Vec<Entry> =
                (first..(first + per_commit).min(segments)).map(|i| valid_entry(store, i)).collect();
            for e in &batch {
                store.store.put(&Path::from(e.key.as_str()), PutPayload::from(vec![0u8; 25])).await.unwrap();
            }
            manifests.commit(batch, 1, 1).await.unwrap();
        }
        manifests
    }

    /// A one-offset entry whose key is a real segment key of t/0 under `store`'s prefix.
    pub(crate) fn valid_entry(store: &RemoteStore, offset: u64) -> Entry {
        Entry { key: keys::segment_key(store, "t", 0, offset).to_string(), ..entry(offset, offset) }
    }

    pub(crate) fn entry(base: u64, last: u64) -> Entry {
        Entry {
            base_offset: base,
            last_offset: last,
            min_timestamp: base as i64,
            max_timestamp: last as i64,
            raw_bytes: 100,
            object_bytes: 25,
            chunks: 1,
            key: format!("segments/ab/t/0/{base:020}-x.zst"),
            index_position: 20,
            index_len: 5,
            raw_sha256: "r".into(),
            object_sha256: "o".into(),
            uploaded_ms: 7,
            min_append_time: None,
            max_append_time: None,
            key_id: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::entry;
    use super::*;

    fn manifest(n: u64) -> Manifest {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        m.append((0..n).map(|i| entry(i * 10, i * 10 + 9)).collect()).unwrap();
        m.manifest_version = 1;
        m
    }

    #[test]
    fn round_trip_and_chain_check() {
        let m = manifest(5);
        assert_eq!(Manifest::from_bytes(&m.to_bytes(), "k").unwrap(), m);
        assert_eq!((m.start_offset(), m.next_offset()), (Some(0), 50));
        assert_eq!(m.entries[0].prev_hash, GENESIS_HASH);
        assert_eq!(m.entries[3].prev_hash, m.entries[2].hash);
    }

    #[test]
    fn tampering_with_an_entry_is_evident_even_with_a_recomputed_body_checksum() {
        let mut m = manifest(5);
        m.entries[2].raw_sha256 = "forged".into();
        let err = Manifest::from_bytes(&m.to_bytes(), "k").unwrap_err().to_string();
        assert!(err.contains("offset 20") && err.contains("hash"), "{err}");
        let mut m = manifest(5);
        m.entries.remove(2);
        assert!(Manifest::from_bytes(&m.to_bytes(), "k").is_err(), "a removed entry breaks the chain");
    }

    #[test]
    fn altered_bytes_fail_the_body_checksum() {
        let mut bytes = manifest(3).to_bytes();
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        let err = Manifest::from_bytes(&bytes, "manifests/t/0/1.json").unwrap_err().to_string();
        assert!(err.contains("manifests/t/0/1.json"), "{err}");
    }

    #[test]
    fn appending_a_gap_is_refused() {
        let mut m = manifest(2);
        assert!(m.append(vec![entry(25, 30)]).is_err());
    }

    /// Golden bytes of manifest format version 1 (header line + body), as builds before
    /// append times wrote them: still read, to the same manifest.
    #[test]
    fn manifest_v1_golden_bytes_still_read() {
        let m = manifest(1);
        let golden = concat!(
            r#"{"format":"tierlog-manifest","format_version":1,"body_sha256":"0e70bb64df325428640069623a29f17b34f4f80e642c83cde641d8950a728aaa"}"#,
            "\n",
            r#"{"topic":"t","partition":0,"manifest_version":1,"writer":{"id":"w","epoch":1},"written_ms":0,"archives":[],"entries":[{"#,
            r#""base_offset":0,"last_offset":9,"min_timestamp":0,"max_timestamp":9,"raw_bytes":100,"object_bytes":25,"chunks":1,"#,
            r#""key":"segments/ab/t/0/00000000000000000000-x.zst","index_position":20,"index_len":5,"raw_sha256":"r","object_sha256":"o","#,
            r#""uploaded_ms":7,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""hash":"1aed4609e0360625795f15f76f69f05dbddfeeebc7e421f596271926eb66f3e9"}]}"#,
            "\n"
        );
        assert_eq!(Manifest::from_bytes(golden.as_bytes(), "k").unwrap(), m);
        let written = String::from_utf8(m.to_bytes()).unwrap();
        assert_eq!(
            written.replace(r#""format_version":2"#, r#""format_version":1"#),
            golden,
            "same body, version 2 header"
        );
    }

    /// Golden bytes of manifest format version 2: an entry with append times, which join its
    /// hash. A failure means the format changed: add a version and keep a reader for this one.
    #[test]
    fn manifest_v2_golden_bytes() {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let mut e = entry(0, 9);
        (e.min_append_time, e.max_append_time) = (Some(1_700_000_000_000), Some(1_700_000_000_500));
        m.append(vec![e]).unwrap();
        m.manifest_version = 1;
        let golden = concat!(
            r#"{"format":"tierlog-manifest","format_version":2,"body_sha256":"7b20496ff438ed30d034a22d0735d340eb70f472e96c49af481fa536d166f243"}"#,
            "\n",
            r#"{"topic":"t","partition":0,"manifest_version":1,"writer":{"id":"w","epoch":1},"written_ms":0,"archives":[],"entries":[{"#,
            r#""base_offset":0,"last_offset":9,"min_timestamp":0,"max_timestamp":9,"raw_bytes":100,"object_bytes":25,"chunks":1,"#,
            r#""key":"segments/ab/t/0/00000000000000000000-x.zst","index_position":20,"index_len":5,"raw_sha256":"r","object_sha256":"o","#,
            r#""uploaded_ms":7,"min_append_time":1700000000000,"max_append_time":1700000000500,"#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""hash":"b54501ae1e571160e591dc5c85b6b20eda237191dacf198a66bbe78006e1db7f"}]}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), golden);
    }

    /// An encrypted segment's entry: `key_id` is written after the append times and joins the
    /// hash as `|key_id=<id>` (hash and body checksum computed independently, with Python's
    /// hashlib). Entries without it keep the bytes and hashes of the golden tests above.
    #[test]
    fn manifest_entry_with_key_id_golden_bytes() {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let mut e = entry(0, 9);
        (e.min_append_time, e.max_append_time) = (Some(1_700_000_000_000), Some(1_700_000_000_500));
        e.key_id = Some("2026-q2".into());
        m.append(vec![e]).unwrap();
        m.manifest_version = 1;
        let golden = concat!(
            r#"{"format":"tierlog-manifest","format_version":2,"body_sha256":"fa78af1bec8d7a632db838f9bb1408a18840c587ab3d13b3a5f7904d64335198"}"#,
            "\n",
            r#"{"topic":"t","partition":0,"manifest_version":1,"writer":{"id":"w","epoch":1},"written_ms":0,"archives":[],"entries":[{"#,
            r#""base_offset":0,"last_offset":9,"min_timestamp":0,"max_timestamp":9,"raw_bytes":100,"object_bytes":25,"chunks":1,"#,
            r#""key":"segments/ab/t/0/00000000000000000000-x.zst","index_position":20,"index_len":5,"raw_sha256":"r","object_sha256":"o","#,
            r#""uploaded_ms":7,"min_append_time":1700000000000,"max_append_time":1700000000500,"key_id":"2026-q2","#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""hash":"a10e1c062114ee36f32eb160f2e1f213f8139e887935d7d04136e51d8876e28a"}]}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(m.to_bytes()).unwrap(), golden);
        assert_eq!(Manifest::from_bytes(golden.as_bytes(), "k").unwrap(), m);
        // The key id is covered by the chain: dropping or changing it is refused.
        for forged in [golden.replace(r#""key_id":"2026-q2","#, ""), golden.replace("2026-q2", "2026-q1")] {
            let body = forged.lines().nth(1).unwrap();
            let header = format!(
                r#"{{"format":"tierlog-manifest","format_version":2,"body_sha256":"{}"}}"#,
                crate::sha256_hex(body.as_bytes())
            );
            let err = Manifest::from_bytes(format!("{header}\n{body}\n").as_bytes(), "k").unwrap_err();
            assert!(err.to_string().contains("hash"), "{err}");
        }
    }

    /// Version 3: version 2's body under a header with a signature (the signature checked
    /// by OpenSSL: `openssl pkeyutl -sign -rawin` over the same message gives these bytes).
    #[test]
    fn manifest_v3_signed_golden_bytes() {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let mut e = entry(0, 9);
        (e.min_append_time, e.max_append_time) = (Some(1_700_000_000_000), Some(1_700_000_000_500));
        m.append(vec![e]).unwrap();
        m.manifest_version = 1;
        let signer = crate::signing::tests::golden_signer();
        let bytes = String::from_utf8(m.to_signed_bytes(Some(&signer))).unwrap();
        let header = concat!(
            r#"{"format":"tierlog-manifest","format_version":3,"body_sha256":"7b20496ff438ed30d034a22d0735d340eb70f472e96c49af481fa536d166f243","#,
            r#""signature":{"algorithm":"ed25519","key_id":"689463b339b9c919","#,
            r#""value":"q5Ezmil09E3utPywfEslxtJf7eaSJz5Ele15uEoB6kogpJurCyVEumCdo+CKojctloS9gXuNaaFcEE2jjNrcAA=="}}"#,
        );
        assert_eq!(bytes.split_once('\n').unwrap().0, header);
        assert_eq!(
            bytes.split_once('\n').unwrap().1,
            String::from_utf8(m.to_bytes()).unwrap().split_once('\n').unwrap().1
        );
        assert_eq!(Manifest::from_bytes(bytes.as_bytes(), "k").unwrap(), m, "readers take a signed version as is");
        let parsed = parse_signed(bytes.as_bytes(), "k").unwrap();
        assert_eq!(parsed.signature.unwrap().key_id, "689463b339b9c919");
        // A signature under a version-2 header, or a version 3 without one, is refused.
        let mislabelled = bytes.replace(r#""format_version":3"#, r#""format_version":2"#);
        assert!(parse_signed(mislabelled.as_bytes(), "k").is_err());
    }

    /// A version after an expiry: the chain resumes from `expired.last_hash` at `before_offset`.
    #[test]
    fn manifest_v4_expired_golden_bytes() {
        let mut full = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        full.append(vec![entry(0, 9), entry(10, 19)]).unwrap();
        let mut m = full.clone();
        m.entries.remove(0);
        m.manifest_version = 2;
        m.expired = Some(Expired {
            before_offset: 10,
            last_hash: full.entries[0].hash.clone(),
            max_timestamp: 9,
            max_append_time: None,
            segments: 1,
            raw_bytes: 100,
            object_bytes: 25,
            expired_ms: 1_700_000_000_000,
            reason: "retention.ms=604800000".into(),
            pending_deletes: vec![PendingDelete::of(&full.entries[0], 1_700_003_600_000)],
        });
        let bytes = String::from_utf8(m.to_bytes()).unwrap();
        let golden = concat!(
            r#"{"format":"tierlog-manifest","format_version":4,"body_sha256":"GOLDEN_SHA"}"#,
            "\n",
            r#"{"topic":"t","partition":0,"manifest_version":2,"writer":{"id":"w","epoch":1},"written_ms":0,"archives":[],"entries":[{"base_offset":10,"last_offset":19,"min_timestamp":10,"max_timestamp":19,"raw_bytes":100,"object_bytes":25,"chunks":1,"key":"segments/ab/t/0/00000000000000000010-x.zst","index_position":20,"index_len":5,"raw_sha256":"r","object_sha256":"o","uploaded_ms":7,"prev_hash":"GOLDEN_PREV","hash":"GOLDEN_HASH"}],"#,
            r#""expired":{"before_offset":10,"last_hash":"GOLDEN_PREV","max_timestamp":9,"segments":1,"raw_bytes":100,"object_bytes":25,"expired_ms":1700000000000,"reason":"retention.ms=604800000","pending_deletes":[{"key":"segments/ab/t/0/00000000000000000000-x.zst","delete_after_ms":1700003600000,"min_timestamp":0,"max_timestamp":9}]}}"#,
            "\n"
        );
        let golden =
            golden.replace("GOLDEN_PREV", &full.entries[0].hash).replace("GOLDEN_HASH", &full.entries[1].hash).replace(
                "GOLDEN_SHA",
                &hex::encode(Sha256::digest(bytes.split_once('\n').unwrap().1.trim_end().as_bytes())),
            );
        assert_eq!(bytes, golden);
        assert_eq!(Manifest::from_bytes(bytes.as_bytes(), "k").unwrap(), m);
        assert_eq!((m.start_offset(), m.next_offset(), m.last_hash()), (Some(10), 20, full.entries[1].hash.clone()));
        // The kept entry must link to last_hash; the number must say "expired".
        let mut broken = m.clone();
        broken.expired.as_mut().unwrap().last_hash = GENESIS_HASH.into();
        assert!(Manifest::from_bytes(&broken.to_bytes(), "k").is_err());
        let mislabelled = bytes.replace(r#""format_version":4"#, r#""format_version":2"#);
        assert!(parse_signed(mislabelled.as_bytes(), "k").is_err(), "an expired section under version 2");
        let mut plain = full.clone();
        plain.manifest_version = 1;
        let relabelled =
            String::from_utf8(plain.to_bytes()).unwrap().replace(r#""format_version":2"#, r#""format_version":4"#);
        assert!(parse_signed(relabelled.as_bytes(), "k").is_err(), "version 4 without an expired section");
        // Everything expired: the tier is empty, keeps its end and links the next entry.
        let mut empty = m.clone();
        empty.entries.clear();
        let x = empty.expired.as_mut().unwrap();
        (x.before_offset, x.last_hash) = (20, full.entries[1].hash.clone());
        assert_eq!((empty.start_offset(), empty.next_offset(), empty.is_fresh()), (None, 20, false));
        empty.append(vec![entry(20, 29)]).unwrap();
        assert_eq!(empty.entries[0].prev_hash, full.entries[1].hash);
        assert!(empty.check_chain().is_ok());
        assert!(empty.clone().append(vec![entry(0, 9)]).is_err(), "an emptied tier is not a fresh one");
    }

    #[test]
    fn removing_or_adding_append_times_breaks_the_chain() {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let mut e = entry(0, 9);
        (e.min_append_time, e.max_append_time) = (None, Some(1_700_000_000_500));
        let mut later = entry(10, 19);
        later.max_append_time = Some(1_700_000_000_900);
        later.min_append_time = Some(1_700_000_000_600);
        m.append(vec![e, later]).unwrap();
        assert!(Manifest::from_bytes(&m.to_bytes(), "k").is_ok());
        let mut stripped = m.clone();
        stripped.entries[0].max_append_time = None;
        assert!(Manifest::from_bytes(&stripped.to_bytes(), "k").unwrap_err().to_string().contains("hash"));
        let mut added = m.clone();
        added.entries[0].min_append_time = Some(1);
        assert!(Manifest::from_bytes(&added.to_bytes(), "k").unwrap_err().to_string().contains("hash"));
        let mut moved = m;
        moved.entries[0].max_append_time = Some(1_700_000_000_499);
        assert!(Manifest::from_bytes(&moved.to_bytes(), "k").is_err());
    }

    #[test]
    fn append_times_that_decrease_are_refused_even_when_the_chain_is_recomputed() {
        let mut m = Manifest::empty("t", 0, Writer { id: "w".into(), epoch: 1 });
        let (mut a, mut b) = (entry(0, 9), entry(10, 19));
        (a.min_append_time, a.max_append_time) = (Some(100), Some(200));
        (b.min_append_time, b.max_append_time) = (Some(150), Some(300));
        // The writer refuses to commit it (review of 1391cf4: it wrote what no reader loads)...
        let err = m.append(vec![a.clone(), b.clone()]).unwrap_err().to_string();
        assert!(err.contains("offset 10") && err.contains("remote tier's last append time 200"), "{err}");
        assert_eq!(m.entries.len(), 1, "the entries before it are taken");
        // ...and a reader refuses one that says so, even with the chain recomputed.
        m.entries.truncate(0);
        b.min_append_time = Some(250);
        m.append(vec![a, b]).unwrap();
        m.entries[1].min_append_time = Some(150);
        m.entries[1].hash = m.entries[1].compute_hash();
        let err = Manifest::from_bytes(&m.to_bytes(), "k").unwrap_err().to_string();
        assert!(err.contains("offset 10") && err.contains("append times decrease"), "{err}");
    }
}

#[cfg(test)]
mod store_tests {
    use super::tests_support::entry;
    use super::*;

    /// Commits far more entries than a manifest keeps inline, through a real (local-file)
    /// object store: older entries move to archives, every version stays bounded, the chain
    /// still verifies across archives, and a reader finds the latest version without LIST.
    #[tokio::test]
    async fn long_histories_spill_into_archives_and_stay_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let store = RemoteStore::local_dir(dir.path()).unwrap();
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut m = ManifestStore::open(store.clone(), "t", 0, writer.clone(), 0).await.unwrap();
        let total = ENTRIES_MAX as u64 * 2 + 10;
        for batch in (0..total).collect::<Vec<_>>().chunks(16) {
            m.commit(batch.iter().map(|i| entry(i * 10, i * 10 + 9)).collect(), 1, 3).await.unwrap();
        }
        assert!(m.current.entries.len() <= ENTRIES_MAX);
        assert!(!m.current.archives.is_empty());
        assert_eq!((m.current.start_offset(), m.current.next_offset()), (Some(0), total * 10));
        assert_eq!(m.current.totals().0, total);
        assert!(m.current.to_bytes().len() < 256 * 1024, "each version stays bounded");

        let reader = ManifestStore::open(store.clone(), "t", 0, Writer { id: "r".into(), epoch: 0 }, 0).await.unwrap();
        assert_eq!(reader.current, m.current, "found the latest version by probing from nothing");
        let mut all = Vec::new();
        for archive in &reader.current.archives {
            all.extend(reader.load_archive(archive).await.unwrap());
        }
        all.extend(reader.current.entries.clone());
        assert_eq!(all.len() as u64, total);
        for pair in all.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "the chain runs through the archives");
            assert_eq!(pair[1].compute_hash(), pair[1].hash);
        }
    }

    /// A manifest PUT that stored the version and then reported a timeout is retried; the
    /// retry finds the identical version and counts it as committed, not as a fence.
    #[tokio::test]
    async fn a_commit_whose_put_timed_out_after_landing_is_recognised_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let base = RemoteStore::local_dir(dir.path()).unwrap();
        let faulty = std::sync::Arc::new(crate::fault::FaultStore::new(base.store.clone()));
        let store = base.with_store(faulty.clone());
        let mut m = ManifestStore::open(store, "t", 0, Writer { id: "w".into(), epoch: 1 }, 0).await.unwrap();
        faulty.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        m.commit(vec![entry(0, 9)], 1, 3).await.unwrap();
        assert_eq!(m.current.manifest_version, 1, "committed once");
        assert_eq!(latest_version(&base, "t", 0, 0).await.unwrap(), 1, "no second version was written");
        m.commit(vec![entry(10, 19)], 2, 3).await.unwrap();
        assert_eq!(load_version(&base, "t", 0, 2).await.unwrap().next_offset(), 20);
    }

    /// Defect 11: on the last attempt, a manifest PUT that landed but reported failure left
    /// `current` one version behind; the next commit found "its" version taken — by itself —
    /// and reported Fenced naming its own writer. It must adopt its own version instead and
    /// commit only what that version does not hold yet.
    #[tokio::test]
    async fn a_landed_commit_reported_failed_on_the_last_attempt_is_adopted_not_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let base = RemoteStore::local_dir(dir.path()).unwrap();
        let faulty = std::sync::Arc::new(crate::fault::FaultStore::new(base.store.clone()));
        let store = base.with_store(faulty.clone());
        let writer = Writer { id: "w".into(), epoch: 1 };
        let mut m = ManifestStore::open(store, "t", 0, writer.clone(), 0).await.unwrap();
        m.commit(vec![entry(0, 9)], 1, 1).await.unwrap();
        faulty.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
        let err = m.commit(vec![entry(10, 19)], 2, 1).await.unwrap_err();
        assert!(!err.is_fenced(), "an ambiguous PUT is not a fence: {err}");
        assert_eq!(m.current.manifest_version, 1, "the caller was told version 2 failed");

        // The next run uploads segment 10 again (a fresh key) along with segment 20.
        let mut again = entry(10, 19);
        again.key = "segments/ab/t/0/00000000000000000010-again.zst".into();
        m.commit(vec![again, entry(20, 29)], 3, 1).await.unwrap();

        assert_eq!(m.current.manifest_version, 3, "adopted version 2, then committed version 3");
        let v3 = load_version(&base, "t", 0, 3).await.unwrap();
        assert_eq!(v3, m.current);
        let keys: Vec<&str> = v3.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [entry(0, 9).key, entry(10, 19).key, entry(20, 29).key],
            "segment 10 listed once, as first committed"
        );
        assert_eq!(load_version(&base, "t", 0, 2).await.unwrap().writer, writer);
    }
}
