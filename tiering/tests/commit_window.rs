//! The uploader's commit window, with an injected clock that a store wrapper moves forward
//! while PUTs are in flight: an entry whose object PUT started more than `commit_window_ms`
//! ago is never committed, and no manifest PUT starts once the window has passed.

mod common;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use async_trait::async_trait;
use common::*;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use tierlog_tiering::Error;
use tierlog_tiering::manifest::{self, ManifestStore};
use tierlog_tiering::store::RemoteStore;
use tierlog_tiering::uploader::{self, RunOutcome, SegmentBytes, UploadSettings};
use tokio::sync::Semaphore;

const WINDOW_MS: u64 = 60_000;

/// Moves the test clock forward by `segment_put_ms` during every segment PUT (a slow
/// upload), and makes manifest PUTs fail while moving it by `manifest_put_ms`.
#[derive(Debug)]
struct SlowStore {
    inner: Arc<dyn ObjectStore>,
    clock: Arc<AtomicI64>,
    segment_put_ms: AtomicI64,
    manifest_put_ms: AtomicI64,
    fail_manifest_puts: AtomicU64,
    manifest_puts: AtomicU64,
}

impl fmt::Display for SlowStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlowStore({})", self.inner)
    }
}

fn is_under(location: &Path, root: &str) -> bool {
    location.parts().next().is_some_and(|p| p.as_ref() == root)
}

#[async_trait]
impl ObjectStore for SlowStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if is_under(location, "manifests") {
            self.manifest_puts.fetch_add(1, Ordering::SeqCst);
            self.clock.fetch_add(self.manifest_put_ms.load(Ordering::SeqCst), Ordering::SeqCst);
            if self.fail_manifest_puts.load(Ordering::SeqCst) > 0 {
                return Err(object_store::Error::Generic { store: "SlowStore", source: "injected: PUT failed".into() });
            }
        }
        let result = self.inner.put_opts(location, payload, opts).await;
        if is_under(location, "segments") {
            self.clock.fetch_add(self.segment_put_ms.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    base: RemoteStore,
    slow: Arc<SlowStore>,
    store: RemoteStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = RemoteStore::local_dir(dir.path()).unwrap();
    let slow = Arc::new(SlowStore {
        inner: base.store.clone(),
        clock: Arc::new(AtomicI64::new(1_000_000)),
        segment_put_ms: AtomicI64::new(0),
        manifest_put_ms: AtomicI64::new(0),
        fail_manifest_puts: AtomicU64::new(0),
        manifest_puts: AtomicU64::new(0),
    });
    let store = base.with_store(slow.clone());
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
    let clock = f.slow.clock.clone();
    let now_ms = move || clock.load(Ordering::SeqCst);
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
