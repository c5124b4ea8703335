//! Scrub against a real (local-file) object store: it deletes only uncommitted segment and
//! archive objects of the partitions it was given, old enough that no commit can still
//! reference them, and never a manifest version, whatever the topic or prefix is called.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::manifest::{self, ManifestStore};
use tierlog_tiering::scrub::{self, ScrubAction, ScrubPartition, ScrubReport, ScrubSettings};
use tierlog_tiering::store::RemoteStore;

const HOUR: Duration = Duration::from_secs(3600);

fn partition(topic: &str, partition: u32) -> ScrubPartition {
    ScrubPartition { topic: topic.into(), partition, version_hint: 0 }
}

async fn run_scrub(
    store: &RemoteStore,
    partitions: &[ScrubPartition],
    commit_window_ms: u64,
    orphan_grace_ms: u64,
) -> ScrubReport {
    let settings = ScrubSettings { commit_window_ms, orphan_grace_ms, delete: true };
    scrub::scrub(store, partitions, &settings).await.unwrap()
}

fn deleted(report: &ScrubReport) -> Vec<String> {
    report.objects.iter().filter(|o| o.action == ScrubAction::Deleted).map(|o| o.key.clone()).collect()
}

async fn exists(store: &RemoteStore, key: &str) -> bool {
    store.store.head(&Path::from(key)).await.is_ok()
}

/// Every committed object of the partition's latest manifest decodes to the bytes tiered.
async fn assert_readable(store: &RemoteStore, topic: &str, expected: &[tierlog_tiering::uploader::SegmentBytes]) {
    let latest = manifest::latest_version(store, topic, 0, 0).await.unwrap();
    let current = manifest::load_version(store, topic, 0, latest).await.unwrap();
    assert_eq!(current.entries.len(), expected.len());
    for (entry, segment) in current.entries.iter().zip(expected) {
        let object = manifest::get_bytes(store, &Path::from(entry.key.as_str())).await.unwrap();
        let raw = tierlog_tiering::segment_object::decode_object(&object).unwrap();
        assert_eq!(raw, segment.raw, "segment at {} reads back unchanged", entry.base_offset);
    }
}

/// Defect 1: substring classification took every manifest version of a topic named
/// `archive` (or under a prefix with an `archive` part) for an orphan archive object.
#[tokio::test]
async fn scrub_never_deletes_manifests_of_a_topic_and_prefix_named_archive() {
    let dir = tempfile::tempdir().unwrap();
    let base = RemoteStore::local_dir(dir.path()).unwrap();
    let store = RemoteStore { prefix: Path::from("archive/segments"), ..base.clone() };
    let tiered = segments(0, 6, 2);
    for pair in tiered.chunks(2) {
        tier(&store, "archive", 0, pair.to_vec()).await; // three manifest versions
    }
    let orphan = upload_uncommitted(&store, "archive", 0, segment(120, 2)).await.key;
    let other_topic = upload_uncommitted(&store, "other", 0, segment(0, 2)).await.key;
    let unknown = "archive/segments/segments/zzzz/archive/0/garbage.zst";
    store.store.put(&Path::from(unknown), PutPayload::from_static(b"not ours")).await.unwrap();
    for key in all_keys(dir.path()) {
        set_age(dir.path(), &key, 2 * HOUR);
    }

    let report = run_scrub(&store, &[partition("archive", 0)], 0, 0).await;

    assert_eq!(deleted(&report), vec![orphan.clone()], "only the uncommitted segment object");
    for version in 1..=3 {
        manifest::load_version(&store, "archive", 0, version).await.unwrap();
    }
    assert_readable(&store, "archive", &tiered).await;
    assert!(exists(&store, &other_topic).await, "a partition scrub was not given is never touched");
    assert!(exists(&store, unknown).await, "a key scrub does not fully recognise is never touched");
    assert!(!exists(&store, &orphan).await);
    let markers: Vec<String> = all_keys(dir.path()).into_iter().filter(|k| k.contains("_tierlog")).collect();
    assert!(markers.is_empty(), "the scrub clock marker is removed: {markers:?}");
}

/// Defect 2: scrub loaded the manifests, then LISTed, then deleted what the (stale)
/// manifests did not list. An object uploaded before the LIST and committed right after it
/// must survive, even when it looks old and there is no grace at all.
#[tokio::test]
async fn an_object_committed_after_the_listing_is_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::local_dir(dir.path()).unwrap();
    tier(&store, "t", 0, segments(0, 2, 2)).await;
    let late = upload_uncommitted(&store, "t", 0, segment(40, 2)).await;
    for key in all_keys(dir.path()) {
        set_age(dir.path(), &key, HOUR); // a slow upload: its PUT began long ago
    }
    let committer = store.clone();
    let entry = late.clone();
    let commit = async move {
        let mut m = ManifestStore::open(committer, "t", 0, writer(), 0).await.unwrap();
        m.commit(vec![entry], wall_ms(), 3).await.unwrap();
    };
    // The commit runs once scrub's first LIST has been read to its end.
    let hooked = Arc::new(FaultStore::new(store.store.clone()));
    hooked.hooks.lock().unwrap().after_first_list = Some(commit.boxed());

    let report = run_scrub(&store.with_store(hooked.clone()), &[partition("t", 0)], 0, 0).await;

    assert!(!hooked.list_hook_pending(), "the commit ran during the scrub");
    assert_eq!(manifest::latest_version(&store, "t", 0, 0).await.unwrap(), 2);
    assert!(deleted(&report).is_empty(), "{:?}", report.objects);
    assert!(exists(&store, &late.key).await, "the committed object {} is still there", late.key);
    let mut expected = segments(0, 2, 2);
    expected.push(segment(40, 2));
    assert_readable(&store, "t", &expected).await;
}

/// Grace counts from the end of the commit window: an orphan is deleted only when older
/// than both together, since until then an upload in progress may still commit it.
#[tokio::test]
async fn orphans_are_deleted_only_after_the_commit_window_and_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::local_dir(dir.path()).unwrap();
    tier(&store, "t", 0, segments(0, 2, 2)).await;
    for key in all_keys(dir.path()) {
        set_age(dir.path(), &key, 2 * HOUR);
    }
    let old = upload_uncommitted(&store, "t", 0, segment(40, 2)).await.key;
    set_age(dir.path(), &old, 2 * HOUR);
    let in_window = upload_uncommitted(&store, "t", 0, segment(40, 2)).await.key;
    set_age(dir.path(), &in_window, HOUR / 2);
    let fresh = upload_uncommitted(&store, "t", 0, segment(40, 2)).await.key;

    let report = run_scrub(&store, &[partition("t", 0)], HOUR.as_millis() as u64, 10_000).await;

    assert_eq!(deleted(&report), vec![old], "{:?}", report.objects);
    assert!(exists(&store, &in_window).await, "older than the grace but inside the commit window: kept");
    assert!(exists(&store, &fresh).await);
    assert_readable(&store, "t", &segments(0, 2, 2)).await;
}

/// Holds every manifest-version PUT until `release` is notified: a manifest PUT that was
/// started inside the commit window and is still in flight (a slow request, object_store's
/// internal retries of up to 120 s).
fn slow_manifest_puts(inner: Arc<dyn object_store::ObjectStore>, release: Arc<tokio::sync::Notify>) -> Arc<FaultStore> {
    let store = Arc::new(FaultStore::new(inner));
    store.hooks.lock().unwrap().before_put = Some(Arc::new(move |location: &Path| {
        let key = location.as_ref();
        let version = key.contains("manifests/") && key.ends_with(".json") && !key.contains("/archive/");
        let release = release.clone();
        async move {
            if version {
                release.notified().await;
            }
            Ok(())
        }
        .boxed()
    }));
    store
}

/// Review finding: `tiering.orphan_grace_ms` may be 0 (config minimum), but grace is the only
/// thing that covers a manifest PUT started inside the commit window and still in flight.
/// With the smallest window the config allows (1 s) and grace 0, a manifest PUT that takes
/// two seconds commits an object scrub has just deleted: the manifest references nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_manifest_put_in_flight_is_never_outrun_by_scrub_at_the_smallest_allowed_settings() {
    const WINDOW_MS: u64 = 1_000; // config minimum of tiering.commit_window_ms
    const GRACE_MS: u64 = 0; // config minimum of tiering.orphan_grace_ms
    let dir = tempfile::tempdir().unwrap();
    let store = RemoteStore::local_dir(dir.path()).unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let slow = store.with_store(slow_manifest_puts(store.store.clone(), release.clone()));
    let mut settings = upload_settings();
    settings.commit_window_ms = WINDOW_MS;
    let entry =
        tierlog_tiering::uploader::upload_segment(&slow, "t", 0, segment(0, 2), &settings, &wall_ms).await.unwrap();
    // The commit starts at once, well inside the window; its PUT is slow.
    let committer = slow.clone();
    let committed_entry = entry.clone();
    let commit = tokio::spawn(async move {
        let mut m = ManifestStore::open(committer, "t", 0, writer(), 0).await.unwrap();
        let deadline = committed_entry.uploaded_ms + WINDOW_MS as i64;
        m.commit_within(vec![committed_entry], &wall_ms, deadline, 1).await
    });
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let report = run_scrub(&store, &[partition("t", 0)], WINDOW_MS, GRACE_MS).await;
    release.notify_one();
    let committed = commit.await.unwrap();
    assert!(committed.is_ok(), "the manifest PUT started in time and landed: {committed:?}");
    let current = manifest::load_version(&store, "t", 0, 1).await.unwrap();
    assert_eq!(current.entries[0].key, entry.key);
    assert!(
        exists(&store, &entry.key).await,
        "manifest version 1 references {} but scrub deleted it (scrub report: {:?})",
        entry.key,
        report.objects
    );
}
