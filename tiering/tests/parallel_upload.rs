//! Parallel builds on the upload path: segments whose chunks are compressed on every core,
//! several segments at once, with the PUT of a segment in the middle of the run failing hard.
//! Nothing after the failure is committed, nothing before it is lost, and the next run
//! uploads objects byte for byte equal to a fresh build of the same segments.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use object_store::path::Path;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::manifest::{self, ManifestStore};
use tierlog_tiering::segment_object;
use tierlog_tiering::store::RemoteStore;
use tierlog_tiering::uploader::{self, RunOutcome, SegmentBytes, UploadSettings};
use tokio::sync::Semaphore;

/// 100-byte batches, 4 KiB chunks: 400 batches make 10 chunks per segment, more than one
/// build has in flight on any machine with fewer than 5 cores.
const CHUNK_BYTES: u64 = 4096;
const BATCHES: u64 = 400;

fn settings() -> UploadSettings {
    UploadSettings { chunk_bytes: CHUNK_BYTES, zstd_level: 3, attempts: 2, concurrency: 4, ..upload_settings() }
}

async fn run(manifest: &mut ManifestStore, segments: &[SegmentBytes]) -> RunOutcome {
    let bases: Vec<u64> = segments.iter().map(|s| s.base_offset).collect();
    let pending: Vec<u64> = bases.into_iter().filter(|b| *b >= manifest.current.next_offset()).collect();
    let by_base: HashMap<u64, SegmentBytes> = segments.iter().map(|s| (s.base_offset, s.clone())).collect();
    let load = |base: u64| {
        let segment = by_base[&base].clone();
        async move { Ok(segment) }
    };
    uploader::upload_in_order(manifest, pending, load, &settings(), Arc::new(Semaphore::new(4)), wall_ms).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_failed_put_in_the_middle_of_parallel_builds_when_retried_then_nothing_is_lost_and_bytes_match() {
    let dir = tempfile::tempdir().unwrap();
    let base = RemoteStore::local_dir(dir.path()).unwrap();
    let faulty = Arc::new(FaultStore::new(base.store.clone()));
    let store = base.with_store(faulty.clone());
    let tiered = segments(0, 6, BATCHES);
    let third = tiered[2].base_offset;
    *faulty.faults.fail_puts_matching.lock().unwrap() = Some(format!("/{third:020}-"));
    let mut manifest = ManifestStore::open(store.clone(), "t", 0, writer(), 0).await.unwrap();

    let outcome = run(&mut manifest, &tiered).await;

    let committed: Vec<u64> = outcome.committed.iter().map(|e| e.base_offset).collect();
    assert_eq!(committed, [tiered[0].base_offset, tiered[1].base_offset], "only the prefix before the failure");
    let error = outcome.error.expect("the failed PUT stops the run").to_string();
    assert!(error.contains(&format!("{third:020}")), "{error}");
    let listed = manifest::load_version(&base, "t", 0, manifest.current.manifest_version).await.unwrap();
    assert_eq!(listed.entries.iter().map(|e| e.base_offset).collect::<Vec<_>>(), committed);

    *faulty.faults.fail_puts_matching.lock().unwrap() = None;
    let outcome = run(&mut manifest, &tiered).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);

    let listed = manifest::load_version(&base, "t", 0, manifest.current.manifest_version).await.unwrap();
    assert_eq!(listed.entries.len(), tiered.len(), "every segment committed once");
    for (entry, segment) in listed.entries.iter().zip(&tiered) {
        assert_eq!(entry.base_offset, segment.base_offset);
        let object = manifest::get_bytes(&base, &Path::from(entry.key.as_str())).await.unwrap();
        let fresh = segment_object::build(&segment.raw, &segment.batches, CHUNK_BYTES, 3).unwrap();
        assert_eq!(fresh.index.chunks.len() as u32, entry.chunks);
        assert!(entry.chunks >= 10, "{} chunks", entry.chunks);
        assert!(object == fresh.bytes, "object of segment {} differs from a fresh build", segment.base_offset);
        assert_eq!(segment_object::decode_object(&object).unwrap(), segment.raw);
        assert_eq!(entry.object_sha256, tierlog_tiering::sha256_hex(&object));
    }
}
