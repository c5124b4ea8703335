//! `tierlog verify` against a real S3 HTTP server (in-process s3s-fs by default; moto and
//! Garage in CI): each way history can be damaged or rewritten in the bucket is detected and
//! named — by kind, object key and offsets.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::{deep, forge_version, kinds, manifest, run_verify, tiered_history};
use tierlog_tiering::keys::manifest_key;
use tierlog_tiering::verify::{Problem, VerifyOptions};

fn has(problems: &[Problem], kind: &str, key: &str) -> bool {
    problems.iter().any(|p| kinds(std::slice::from_ref(p))[0] == kind && p.key.as_deref() == Some(key))
}

async fn history(s3: &S3Target, name: &str, versions: u64) -> (tempfile::TempDir, tierlog_tiering::store::RemoteStore) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix(name);
    tiered_history(s3, dir.path(), &prefix, versions, None).await;
    (dir, s3.store(&prefix))
}

async fn object_keys(store: &tierlog_tiering::store::RemoteStore) -> Vec<Path> {
    manifest(store, "t", 0).await.entries.iter().map(|e| Path::from(e.key.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tamper_case_in_one_run() {
    tierlog_integration::scenarios::verify_detects_tampering(&S3Target::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_archive_verifies_clean_shallow_and_deep() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-clean", 3).await;
    let (problems, summary) = run_verify(&store, &VerifyOptions::default()).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.partitions, summary.manifest_versions, summary.objects), (1, 3, 6));
    assert_eq!(
        (summary.first_offset, summary.last_offset, summary.offsets, summary.records),
        (Some(0), Some(479), 480, None)
    );
    let (problems, summary) = run_verify(&store, &deep()).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(summary.records, Some(480));
    assert!(summary.min_append_time.is_some() && summary.raw_bytes > summary.object_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_byte_is_found_by_deep_verify() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-byte", 2).await;
    let keys = object_keys(&store).await;
    let mut object = store.store.get(&keys[2]).await.unwrap().bytes().await.unwrap().to_vec();
    object[30] ^= 0x01; // inside the first zstd frame: same size, so only the contents tell
    store.store.put(&keys[2], object.into()).await.unwrap();
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert!(problems.is_empty(), "a same-size change is invisible to HEAD: {problems:?}");
    let (problems, _) = run_verify(&store, &deep()).await;
    assert!(has(&problems, "object_checksum_mismatch", keys[2].as_ref()), "{problems:#?}");
    assert!(has(&problems, "object_corrupt", keys[2].as_ref()), "the chunk's CRC names the chunk too: {problems:#?}");
    let p = problems.iter().find(|p| p.key.as_deref() == Some(keys[2].as_ref())).unwrap();
    assert_eq!((p.first_offset, p.last_offset), (Some(160), Some(239)), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_object_is_found_by_head() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-deleted", 2).await;
    let keys = object_keys(&store).await;
    store.store.delete(&keys[0]).await.unwrap();
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert_eq!(kinds(&problems), ["object_missing"], "{problems:?}");
    assert_eq!(problems[0].key.as_deref(), Some(keys[0].as_ref()));
    assert_eq!((problems[0].first_offset, problems[0].last_offset), (Some(0), Some(79)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_object_is_found_by_its_size() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-truncated", 2).await;
    let keys = object_keys(&store).await;
    let object = store.store.get(&keys[3]).await.unwrap().bytes().await.unwrap();
    store.store.put(&keys[3], object.slice(..object.len() - 1).into()).await.unwrap();
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert_eq!(kinds(&problems), ["object_size_mismatch"], "{problems:?}");
    let p = &problems[0];
    assert_eq!(
        (p.expected.clone(), p.found.clone()),
        (Some(object.len().to_string()), Some((object.len() - 1).to_string()))
    );
    let (problems, _) = run_verify(&store, &deep()).await;
    assert_eq!(
        kinds(&problems),
        ["object_size_mismatch"],
        "an object of another size is not downloaded: {problems:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_manifest_entry_breaks_the_chain_and_the_history() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-removed", 3).await;
    forge_version(&store, 3, |m| {
        m.entries.remove(2);
    })
    .await;
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    let v3 = manifest_key(&store, "t", 0, 3);
    assert!(has(&problems, "chain_broken", v3.as_ref()), "{problems:#?}");
    assert!(has(&problems, "manifest_rewritten", v3.as_ref()), "{problems:#?}");
    assert!(has(&problems, "offset_gap", v3.as_ref()), "{problems:#?}");
    let gap = problems.iter().find(|p| kinds(std::slice::from_ref(p))[0] == "offset_gap").unwrap();
    assert_eq!((gap.first_offset, gap.last_offset), (Some(160), Some(239)), "{gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_manifest_entries_are_found() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-reordered", 2).await;
    forge_version(&store, 2, |m| m.entries.swap(1, 2)).await;
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    let v2 = manifest_key(&store, "t", 0, 2);
    let found = kinds(&problems);
    assert!(
        has(&problems, "chain_broken", v2.as_ref()) && has(&problems, "manifest_rewritten", v2.as_ref()),
        "{found:?}"
    );
    assert!(found.contains(&"offset_overlap".to_string()) || found.contains(&"offset_gap".to_string()), "{found:?}");
}

/// A consistent forgery of an older version (a valid chain, valid checksums, another segment
/// in place of one it committed) is caught by the version after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_manifest_version_is_found_by_its_neighbours() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-replaced", 3).await;
    forge_version(&store, 2, |m| {
        let mut entries = std::mem::take(&mut m.entries);
        entries[3].raw_sha256 = "f".repeat(64); // a segment version 2 committed, "replaced"
        m.append(entries).unwrap(); // a valid chain and checksum: consistent in itself
    })
    .await;
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    let v3 = manifest_key(&store, "t", 0, 3);
    assert_eq!(kinds(&problems), ["manifest_rewritten"], "{problems:#?}");
    assert!(
        has(&problems, "manifest_rewritten", v3.as_ref()),
        "version 3 does not extend the forged version 2: {problems:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_manifest_version_is_found() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-gap", 3).await;
    let v2 = manifest_key(&store, "t", 0, 2);
    store.store.delete(&v2).await.unwrap();
    let (problems, summary) = run_verify(&store, &VerifyOptions::default()).await;
    assert_eq!(kinds(&problems), ["manifest_version_missing"], "{problems:#?}");
    assert_eq!(problems[0].key.as_deref(), Some(v2.as_ref()));
    assert_eq!(summary.objects, 6, "the newest version's objects are still all checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_range_checks_only_the_objects_in_it() {
    let s3 = S3Target::start();
    let (_dir, store) = history(&s3, "verify-range", 3).await;
    // Append times are 1_700_000_000_000 + first offset of each 20-record batch.
    let options = VerifyOptions { from_time: Some(1_700_000_000_160), to_time: Some(1_700_000_000_239), ..deep() };
    let (problems, summary) = run_verify(&store, &options).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.objects, summary.first_offset, summary.last_offset), (1, Some(160), Some(239)));
    assert_eq!(summary.manifest_versions, 3, "manifests are always checked whole");
}

/// A key pair written to `dir`: the private key file and the public key file.
fn key_files(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (signer, private) = tierlog_tiering::signing::Signer::generate().unwrap();
    let (private_path, public_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub.pem")));
    std::fs::write(&private_path, private).unwrap();
    std::fs::write(&public_path, signer.public_pem()).unwrap();
    (private_path, public_path)
}

fn signed_by(public: &[&std::path::Path]) -> VerifyOptions {
    let mut keys = tierlog_tiering::signing::PublicKeys::default();
    for path in public {
        keys.add_file(path).unwrap();
    }
    VerifyOptions { public_keys: keys, ..VerifyOptions::default() }
}

/// Rewrites version `version` keeping its signature: the body checksum is recomputed (the
/// header must match the body to be read at all), the signature cannot be.
async fn forge_keeping_signature(store: &tierlog_tiering::store::RemoteStore, version: u64) {
    let key = manifest_key(store, "t", 0, version);
    let bytes = store.store.get(&key).await.unwrap().bytes().await.unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    let (header, body) = text.trim_end().split_once('\n').unwrap();
    let body = body.replace("\"uploaded_ms\":", "\"uploaded_ms\":1");
    let mut header: serde_json::Value = serde_json::from_str(header).unwrap();
    header["body_sha256"] = tierlog_tiering::sha256_hex(body.as_bytes()).into();
    store.store.put(&key, format!("{header}\n{body}\n").into_bytes().into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_history_proves_its_writer_and_every_forgery_is_named() {
    let s3 = S3Target::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let (private, public) = key_files(keys_dir.path(), "a");
    let (_, stranger) = key_files(keys_dir.path(), "b");
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("verify-signed");
    tiered_history(&s3, dir.path(), &prefix, 4, Some(&private)).await;
    let store = s3.store(&prefix);
    let (problems, summary) = run_verify(&store, &signed_by(&[&public])).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(summary.signed_versions, 4);
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert!(problems.is_empty(), "checked against the key published in the bucket: {problems:?}");
    let (problems, _) = run_verify(&store, &signed_by(&[&stranger])).await;
    assert_eq!(kinds(&problems), ["signature_unknown_key"; 4], "{problems:?}");

    // The newest version replaced by a consistent, unsigned forgery: nothing but the
    // signature can tell, and it does (even without keys given: signing never stops silently).
    forge_version(&store, 4, |m| m.written_ms += 1).await;
    let v4 = manifest_key(&store, "t", 0, 4);
    let (problems, _) = run_verify(&store, &signed_by(&[&public])).await;
    assert_eq!(kinds(&problems), ["signature_missing"], "{problems:?}");
    assert_eq!(problems[0].key.as_deref(), Some(v4.as_ref()));
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert_eq!(kinds(&problems), ["signature_missing"], "{problems:?}");

    // Changed contents under the old signature.
    forge_keeping_signature(&store, 3).await;
    let v3 = manifest_key(&store, "t", 0, 3);
    let (problems, _) = run_verify(&store, &signed_by(&[&public])).await;
    assert!(has(&problems, "signature_invalid", v3.as_ref()), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_signs_new_versions_and_old_ones_keep_verifying() {
    let s3 = S3Target::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let (old_private, old_public) = key_files(keys_dir.path(), "2025");
    let (new_private, new_public) = key_files(keys_dir.path(), "2026");
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("verify-rotation");
    let log = tiered_history(&s3, dir.path(), &prefix, 2, Some(&old_private)).await;
    let mut config = log.config().clone();
    drop(log);
    config.integrity.signing_key_file = new_private.display().to_string();
    let log = tierlog::Log::open(config).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let now = 1_700_000_010_000;
    p.append(&[tierlog::sample::payment_event(1, now, 300)], now).unwrap();
    p.seal_active(now).unwrap();
    let tiering = tierlog::tier::Tiering::start_with(log.clone(), s3.store(&prefix)).await.unwrap();
    assert!(tiering.run_once(None, false).await.unwrap()[0].error.is_none());
    let store = s3.store(&prefix);
    let (problems, summary) = run_verify(&store, &signed_by(&[&old_public, &new_public])).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.manifest_versions, summary.signed_versions), (3, 3));
    let (problems, _) = run_verify(&store, &signed_by(&[&new_public])).await;
    assert_eq!(kinds(&problems), ["signature_unknown_key"; 2], "the old versions need the old key: {problems:?}");
    let (problems, _) = run_verify(&store, &VerifyOptions::default()).await;
    assert!(problems.is_empty(), "both public keys are published in the bucket: {problems:?}");
}
