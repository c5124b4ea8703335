//! Helpers shared by the tiering crate's integration tests: synthetic sealed segments (the
//! crate knows nothing about records, so any bytes tiled by batch marks will do), uploads and
//! commits through the real pipeline, and object ages set on the local-file store.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tierlog_tiering::manifest::{Entry, Manifest, ManifestStore, Writer};
use tierlog_tiering::segment_object::BatchMark;
use tierlog_tiering::store::RemoteStore;
use tierlog_tiering::uploader::{self, SegmentBytes, UploadSettings};
use tokio::sync::Semaphore;

/// Offsets per synthetic batch and bytes per batch.
pub const BATCH_OFFSETS: u64 = 10;
const BATCH_BYTES: usize = 100;

pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn upload_settings() -> UploadSettings {
    UploadSettings {
        chunk_bytes: 64 * 1024,
        zstd_level: 1,
        attempts: 3,
        multipart_threshold_bytes: 64 * 1024 * 1024,
        concurrency: 4,
        commit_window_ms: 600_000,
        lock: None,
        holds: Vec::new(),
        holds_by_append_time: false,
        encryption: None,
    }
}

/// A sealed segment of `batches` batches of [`BATCH_OFFSETS`] offsets each, starting at
/// `base`, whose bytes say which segment and batch they are.
pub fn segment(base: u64, batches: u64) -> SegmentBytes {
    let mut raw = Vec::new();
    let mut marks = Vec::new();
    for b in 0..batches {
        let first = base + b * BATCH_OFFSETS;
        let text = format!("segment {base} batch {b};");
        let bytes: Vec<u8> = text.bytes().cycle().take(BATCH_BYTES).collect();
        marks.push(BatchMark {
            base_offset: first,
            last_offset: first + BATCH_OFFSETS - 1,
            position: raw.len() as u64,
            length: BATCH_BYTES as u64,
            min_timestamp: first as i64,
            max_timestamp: (first + BATCH_OFFSETS - 1) as i64,
            append_time: 1_000_000 + first as i64,
        });
        raw.extend_from_slice(&bytes);
    }
    SegmentBytes { base_offset: base, raw: Bytes::from(raw), batches: marks }
}

/// Consecutive segments of `batches` batches each, starting at `base`.
pub fn segments(base: u64, count: u64, batches: u64) -> Vec<SegmentBytes> {
    (0..count).map(|i| segment(base + i * batches * BATCH_OFFSETS, batches)).collect()
}

pub fn writer() -> Writer {
    Writer { id: "test-writer".into(), epoch: 1 }
}

/// Uploads `segments` and commits them as one manifest version through the real pipeline.
pub async fn tier(store: &RemoteStore, topic: &str, partition: u32, segments: Vec<SegmentBytes>) -> Manifest {
    let mut manifest = ManifestStore::open(store.clone(), topic, partition, writer(), 0).await.unwrap();
    let bases = segments.iter().map(|s| s.base_offset).collect();
    let by_base: HashMap<u64, SegmentBytes> = segments.into_iter().map(|s| (s.base_offset, s)).collect();
    let load = |base: u64| {
        let segment = by_base[&base].clone();
        async move { Ok(segment) }
    };
    let permits = Arc::new(Semaphore::new(4));
    let outcome = uploader::upload_in_order(&mut manifest, bases, load, &upload_settings(), permits, wall_ms).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    manifest.current
}

/// Uploads one segment object without committing it: an orphan until a manifest lists it.
pub async fn upload_uncommitted(store: &RemoteStore, topic: &str, partition: u32, segment: SegmentBytes) -> Entry {
    uploader::upload_segment(store, topic, partition, segment, &upload_settings(), &wall_ms).await.unwrap()
}

/// Makes the local-file object `key` (under the store directory `dir`) look `age` old.
pub fn set_age(dir: &Path, key: &str, age: Duration) {
    let file = std::fs::File::options().write(true).open(dir.join(key)).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

/// Every object key under the local-file store directory `dir`.
pub fn all_keys(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
