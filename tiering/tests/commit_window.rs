//! The uploader's commit window, with an injected clock that a store wrapper moves forward
//! while PUTs are in flight: an entry whose object PUT started more than `commit_window_ms`
//! ago is never committed, and no manifest PUT starts once the window has passed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use common::*;
use futures::FutureExt;
use object_store::path::Path;
use tierlog_tiering::Error;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::manifest::{self, ManifestStore};
use tierlog_tiering::store::RemoteStore;
use tierlog_tiering::uploader::{self, RunOutcome, SegmentBytes, UploadSettings};
use tokio::sync::Semaphore;

const WINDOW_MS: u64 = 60_000;

/// Knobs of the store's hooks: every segment PUT moves the test clock by `segment_put_ms`
/// (a slow upload); manifest PUTs move it by `manifest_put_ms` and fail while
/// `fail_manifest_puts` lasts.
#[derive(Debug, Default)]
struct Slow {
    clock: AtomicI64,
    segment_put_ms: AtomicI64,
    manifest_put_ms: AtomicI64,
    fail_manifest_puts: AtomicU64,
    manifest_puts: AtomicU64,
}

fn is_under(location: &Path, root: &str) -> bool {
    location.parts().next().is_some_and(|p| p.as_ref() == root)
}

fn slow_store(inner: Arc<dyn object_store::ObjectStore>, slow: Arc<Slow>) -> Arc<FaultStore> {
    let store = Arc::new(FaultStore::new(inner));
    let mut hooks = store.hooks.lock().unwrap();
    let before = slow.clone();
    hooks.before_put = Some(Arc::new(move |location: &Path| {
        let manifest = is_under(location, "manifests");
        let slow = before.clone();
        async move {
            if manifest {
                slow.manifest_puts.fetch_add(1, Ordering::SeqCst);
                slow.clock.fetch_add(slow.manifest_put_ms.load(Ordering::SeqCst), Ordering::SeqCst);
                let failing =
                    slow.fail_manifest_puts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if failing.is_ok() {
                    return Err(object_store::Error::Generic { store: "Slow", source: "injected: PUT failed".into() });
                }
            }
            Ok(())
        }
        .boxed()
    }));
    hooks.after_put = Some(Arc::new(move |location: &Path| {
        if is_under(location, "segments") {
            slow.clock.fetch_add(slow.segment_put_ms.load(Ordering::SeqCst), Ordering::SeqCst);
        }
    }));
    drop(hooks);
    store
}

struct Fixture {
    _dir: tempfile::TempDir,
    base: RemoteStore,
    slow: Arc<Slow>,
    store: RemoteStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = RemoteStore::local_dir(dir.path()).unwrap();
    let slow = Arc::new(Slow { clock: AtomicI64::new(1_000_000), ..Slow::default() });
    let store = base.with_store(slow_store(base.store.clone(), slow.clone()));
    Fixture { _dir: dir, base, slow, store }
}

fn settings(attempts: u32) -> UploadSettings {
    UploadSettings { attempts, concurrency: 1, commit_window_ms: WINDOW_MS, ..upload_settings() }
}

async fn run(f: &Fixture, manifest: &mut ManifestStore, segments: &[SegmentBytes], attempts: u32) -> RunOutcome {
    let bases = segments.iter().map(|s| s.base_offset).collect();
    let load = |base: u64| {
        let segment = segments.iter().find(|s| s.base_offset == base).cloned().unwrap();
        async move { Ok(segment) }
    };
    let slow = f.slow.clone();
    let now_ms = move || slow.clock.load(Ordering::SeqCst);
    uploader::upload_in_order(manifest, bases, load, &settings(attempts), Arc::new(Semaphore::new(1)), now_ms).await
}

#[tokio::test]
async fn an_upload_older_than_the_commit_window_is_not_committed_and_goes_again_next_run() {
    let f = fixture();
    let mut manifest = ManifestStore::open(f.store.clone(), "t", 0, writer(), 0).await.unwrap();
    let tiered = segments(0, 2, 2);
    f.slow.segment_put_ms.store(WINDOW_MS as i64 / 2 + 1, Ordering::SeqCst);

    let outcome = run(&f, &mut manifest, &tiered, 1).await;

    assert!(outcome.committed.is_empty(), "{:?}", outcome.committed);
    match &outcome.error {
        Some(Error::CommitWindow { topic, partition: 0, base_offset: 0, what: "upload of", key }) => {
            assert_eq!(topic, "t");
            assert!(key.contains("/00000000000000000000-"), "{key}");
        }
        other => panic!("expected a commit-window error for offset 0, got {other:?}"),
    }
    let message = outcome.error.unwrap().to_string();
    assert!(message.contains("t/0") && message.contains("tiering.commit_window_ms"), "{message}");
    assert_eq!(manifest::latest_version(&f.base, "t", 0, 0).await.unwrap(), 0, "nothing committed");
    assert_eq!(manifest.current.manifest_version, 0);

    f.slow.segment_put_ms.store(0, Ordering::SeqCst);
    let outcome = run(&f, &mut manifest, &tiered, 1).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    assert_eq!(outcome.committed.iter().map(|e| e.base_offset).collect::<Vec<_>>(), [0, 20]);
    let committed = manifest::load_version(&f.base, "t", 0, 1).await.unwrap();
    for (entry, segment) in committed.entries.iter().zip(&tiered) {
        let object = manifest::get_bytes(&f.base, &Path::from(entry.key.as_str())).await.unwrap();
        assert_eq!(tierlog_tiering::segment_object::decode_object(&object).unwrap(), segment.raw);
    }
}

#[tokio::test]
async fn no_manifest_put_starts_after_the_commit_window_of_its_oldest_entry() {
    let f = fixture();
    let mut manifest = ManifestStore::open(f.store.clone(), "t", 0, writer(), 0).await.unwrap();
    f.slow.fail_manifest_puts.store(1, Ordering::SeqCst);
    f.slow.manifest_put_ms.store(WINDOW_MS as i64 + 1, Ordering::SeqCst);

    let outcome = run(&f, &mut manifest, &segments(0, 1, 2), 3).await;

    assert_eq!(f.slow.manifest_puts.load(Ordering::SeqCst), 1, "the retry after the window was not started");
    assert!(
        matches!(outcome.error, Some(Error::CommitWindow { base_offset: 0, what: "manifest commit", .. })),
        "{:?}",
        outcome.error
    );
    assert!(outcome.committed.is_empty());
    assert_eq!(manifest::latest_version(&f.base, "t", 0, 0).await.unwrap(), 0);
}
