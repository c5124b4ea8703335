//! Object keys. Segment objects get a fresh key per upload attempt (never overwritten) under
//! a short hash prefix that spreads them over S3's per-prefix request limits:
//!
//! ```text
//! <prefix>/segments/<hash4>/<topic>/<partition>/<base:020>-<unique>.zst
//! <prefix>/manifests/<topic>/<partition>/<version:020>.json       (create-only)
//! <prefix>/manifests/<topic>/<partition>/archive/<base:020>-<unique>.json
//! ```

use object_store::path::Path;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::RemoteStore;

/// 16 random hex digits plus the time: unique per attempt without coordination.
pub fn unique_suffix() -> String {
    let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{millis:x}-{:016x}", rand::rng().random::<u64>())
}

pub fn segment_key(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64) -> Path {
    let digest = Sha256::digest(format!("{topic}/{partition}/{base_offset}").as_bytes());
    let hash = hex::encode(&digest[..2]);
    let name = format!("{base_offset:020}-{}.zst", unique_suffix());
    store.key(&["segments", &hash, topic, &partition.to_string(), &name])
}

pub fn manifest_key(store: &RemoteStore, topic: &str, partition: u32, version: u64) -> Path {
    store.key(&["manifests", topic, &partition.to_string(), &format!("{version:020}.json")])
}

pub fn archive_key(store: &RemoteStore, topic: &str, partition: u32, base_offset: u64) -> Path {
    let name = format!("{base_offset:020}-{}.json", unique_suffix());
    store.key(&["manifests", topic, &partition.to_string(), "archive", &name])
}
