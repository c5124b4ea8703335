//! Client-side encryption end to end, on a `file://` bucket through the real tiering driver
//! and unified reader: segments tiered under key A, then (after a rotation) under key B, read
//! back from the bucket alone; a reader without key A is told which key, segment and object;
//! verify without any key still checks every stored byte's hash and says what it could not
//! check; a failed upload of an encrypted segment loses nothing.

use std::path::Path;
use std::sync::Arc;

use tierlog::config::Config;
use tierlog::reader::{self, Reader};
use tierlog::tier::{self, Tiering};
use tierlog::{Log, Record};
use tierlog_tiering::encryption::Keyring;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::manifest;
use tierlog_tiering::remote_reader::{ReaderSettings, RemoteReader};
use tierlog_tiering::segment_object;
use tierlog_tiering::verify::{self, VerifyOptions};

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// Writes a keyring file of `keys` (id, base64) whose current key is `current`.
fn keyring_file(dir: &Path, name: &str, current: &str, keys: &[(&str, &str)]) -> String {
    let mut text = format!("current = \"{current}\"\n");
    for (id, key) in keys {
        text.push_str(&format!("[[keys]]\nid = \"{id}\"\nkey = \"{key}\"\n"));
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn config(root: &Path, key_file: &str) -> Config {
    let mut config = Config { data_dir: root.join("data"), ..Config::default() };
    config.remote.url = format!("file://{}", root.join("bucket").display());
    config.tiering.local_retention_bytes = 0; // every tiered segment leaves local disk
    config.encryption.key_file = key_file.to_string();
    config
}

fn append(log: &Log, from: u64, n: u64) {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let records: Vec<Record> = (from..from + n)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            value: format!("v{i}").into_bytes(),
            ..Record::default()
        })
        .collect();
    p.append(&records, 1_700_000_000_000 + from as i64).unwrap();
}

async fn values(reader: &Reader, log: &Log, from: u64, n: usize) -> Result<Vec<String>, tierlog::Error> {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let mut out = Vec::new();
    while out.len() < n {
        let records = reader.read(&p, from + out.len() as u64, 1 << 20).await?;
        assert!(!records.is_empty(), "nothing read at {}", from + out.len() as u64);
        out.extend(records.iter().map(|r| String::from_utf8(r.record.value.clone()).unwrap()));
    }
    out.truncate(n);
    Ok(out)
}

fn expected(from: u64, n: u64) -> Vec<String> {
    (from..from + n).map(|i| format!("v{i}")).collect()
}

async fn newest_manifest(config: &Config) -> manifest::Manifest {
    let store = tier::connect(config).await.unwrap();
    let version = manifest::latest_version(&store, "t", 0, 0).await.unwrap();
    manifest::load_version(&store, "t", 0, version).await.unwrap()
}

async fn deep_verify(config: &Config, keyring: Option<Arc<Keyring>>) -> (Vec<String>, verify::Summary) {
    let store = tier::connect(config).await.unwrap();
    let found = std::sync::Mutex::new(Vec::new());
    let on_event = |event: verify::Event<'_>| {
        if let verify::Event::Problem(p) = event {
            found.lock().unwrap().push(format!("{:?}: {}", p.kind, p.detail));
        }
    };
    let options = VerifyOptions { deep: true, concurrency: 2, keyring, ..VerifyOptions::default() };
    let summary = verify::verify(&store, &options, tierlog::verify::segment_check(), &on_event).await.unwrap();
    (found.into_inner().unwrap(), summary)
}

#[tokio::test]
async fn segments_tiered_before_and_after_a_key_rotation_read_back_and_a_missing_key_is_named() {
    let root = tempfile::tempdir().unwrap();
    let ring_a = keyring_file(root.path(), "a.toml", "a", &[("a", KEY_A)]);
    // Key A: the first segment.
    let config_a = config(root.path(), &ring_a);
    {
        let log = Log::open(config_a.clone()).unwrap();
        log.create_topic("t", 1).unwrap();
        let tiering = Tiering::start(log.clone()).await.unwrap();
        append(&log, 0, 10);
        let report = tiering.run_once(None, true).await.unwrap();
        assert_eq!((report[0].uploaded_segments, report[0].error.as_deref()), (1, None), "{report:?}");
    }
    // Rotation: B is current, A stays in the keyring for reading.
    let ring_ab = keyring_file(root.path(), "ab.toml", "b", &[("a", KEY_A), ("b", KEY_B)]);
    let config_ab = config(root.path(), &ring_ab);
    let log = Log::open(config_ab.clone()).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    append(&log, 10, 10);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].uploaded_segments, report[0].error.as_deref()), (1, None), "{report:?}");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().start_offset(), 20, "both segments left local disk");

    let m = newest_manifest(&config_ab).await;
    let key_ids: Vec<Option<&str>> = m.entries.iter().map(|e| e.key_id.as_deref()).collect();
    assert_eq!(key_ids, vec![Some("a"), Some("b")]);
    // The objects are no zstd archive any more; with the keyring they decode to the segments.
    let store = tier::connect(&config_ab).await.unwrap();
    let keyring = Keyring::from_file(Path::new(&ring_ab)).unwrap();
    for entry in &m.entries {
        let object = manifest::get_bytes(&store, &object_store::path::Path::from(entry.key.as_str())).await.unwrap();
        assert!(zstd::stream::decode_all(&object[..]).is_err());
        let raw = segment_object::decode_object_with(&object, Some(&keyring), "t", 0).unwrap();
        assert_eq!(tierlog_tiering::sha256_hex(&raw), entry.raw_sha256);
    }

    // The writer's own reader holds both keys: every record, from the bucket.
    assert_eq!(values(&Reader::new(log.clone()), &log, 0, 20).await.unwrap(), expected(0, 20));

    // A reader with only key B reads B's segment; A's fails, naming the key and what to do.
    let only_b =
        Keyring::from_toml(&format!("current = \"b\"\n[[keys]]\nid = \"b\"\nkey = \"{KEY_B}\"\n"), "b-only.toml")
            .unwrap();
    let settings = ReaderSettings { keyring: Some(Arc::new(only_b)), ..reader::settings(&config_ab) };
    let b_reader = Reader::with_remote(log.clone(), RemoteReader::new(store.clone(), settings));
    assert_eq!(values(&b_reader, &log, 10, 10).await.unwrap(), expected(10, 10));
    let err = values(&b_reader, &log, 0, 1).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("t/0") && text.contains("offsets 0..=9") && text.contains(&m.entries[0].key), "{text}");
    assert!(text.contains("key id 'a'") && text.contains("b-only.toml does not hold it"), "{text}");
    assert!(text.contains("Add that key to the keyring"), "{text}");
    assert_eq!(err.kind(), tierlog::ErrorKind::Internal, "a missing key is the operator's to fix, not damage");

    // No keyring at all: the same, saying none is configured.
    let none = Reader::with_remote(log.clone(), RemoteReader::new(store.clone(), reader::settings(&config_ab)));
    let text = values(&none, &log, 10, 1).await.unwrap_err().to_string();
    assert!(text.contains("key id 'b'") && text.contains("no keyring is configured"), "{text}");

    // Verify without the keys: every hash over stored bytes checked, nothing reported, and
    // the summary says which objects were not decrypted and what that left unchecked.
    let (problems, summary) = deep_verify(&config_ab, None).await;
    assert!(problems.is_empty(), "{problems:?}");
    let missing = summary.not_decrypted.clone().unwrap();
    assert_eq!((summary.objects, missing.objects), (2, 2));
    assert_eq!(missing.key_ids.iter().map(String::as_str).collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(missing.detail.contains("object SHA-256") && missing.detail.contains("not checked"), "{}", missing.detail);
    assert_eq!(summary.records, None);
    // With them: decrypted, every batch checked and counted.
    let (problems, summary) = deep_verify(&config_ab, Some(Arc::new(keyring))).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.not_decrypted, summary.records), (None, Some(20)));
}

#[tokio::test]
async fn verify_without_the_key_still_catches_a_replaced_encrypted_object() {
    let root = tempfile::tempdir().unwrap();
    let ring_a = keyring_file(root.path(), "a.toml", "a", &[("a", KEY_A)]);
    let config = config(root.path(), &ring_a);
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", 1).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    append(&log, 0, 10);
    tiering.run_once(None, true).await.unwrap();
    let m = newest_manifest(&config).await;
    let path = root.path().join("bucket").join(&m.entries[0].key);
    let mut object = std::fs::read(&path).unwrap();
    object[20] ^= 0x01; // inside the first sealed chunk
    std::fs::write(&path, &object).unwrap();
    let (problems, summary) = deep_verify(&config, None).await;
    assert!(problems.iter().any(|p| p.starts_with("ObjectChecksumMismatch")), "{problems:?}");
    assert!(problems.iter().any(|p| p.starts_with("ObjectCorrupt") && p.contains("CRC32C")), "{problems:?}");
    assert_eq!(summary.not_decrypted.unwrap().objects, 1);
}

#[tokio::test]
async fn a_failed_upload_of_an_encrypted_segment_loses_nothing_and_the_next_pass_commits_it() {
    let root = tempfile::tempdir().unwrap();
    let ring_a = keyring_file(root.path(), "a.toml", "a", &[("a", KEY_A)]);
    let mut config = config(root.path(), &ring_a);
    config.tiering.upload_attempts = 2;
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", 1).unwrap();
    let store = tier::connect(&config).await.unwrap();
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    let tiering = Tiering::start_with(log.clone(), store.with_store(faulty.clone())).await.unwrap();
    append(&log, 0, 10);
    // Every segment PUT fails (an I/O error at the store), after the object was built and sealed.
    *faulty.faults.fail_puts_matching.lock().unwrap() = Some("segments/".into());
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!(report[0].uploaded_segments, 0, "{report:?}");
    assert!(report[0].error.as_deref().is_some_and(|e| e.contains("PUT")), "{report:?}");
    let partition = log.topic("t").unwrap().partition(0).unwrap().clone();
    assert_eq!(partition.start_offset(), 0, "the segment stays on local disk");
    assert_eq!(values(&Reader::new(log.clone()), &log, 0, 10).await.unwrap(), expected(0, 10));

    // A PUT that stores the object and then reports a timeout: retried under a fresh key
    // (and a fresh nonce), the first object an orphan.
    *faulty.faults.fail_puts_matching.lock().unwrap() = None;
    faulty.faults.timeout_after_store_puts.store(1, std::sync::atomic::Ordering::SeqCst);
    let report = tiering.run_once(None, true).await.unwrap();
    assert_eq!((report[0].uploaded_segments, report[0].error.as_deref()), (1, None), "{report:?}");
    assert_eq!(partition.start_offset(), 10, "deleted locally only once committed");
    let m = newest_manifest(&config).await;
    assert_eq!(m.entries[0].key_id.as_deref(), Some("a"));
    assert_eq!(values(&Reader::new(log.clone()), &log, 0, 10).await.unwrap(), expected(0, 10));
    let (problems, summary) = deep_verify(&config, tier::load_keyring(&config).unwrap()).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(summary.records, Some(10));
}

#[test]
fn a_bad_keyring_stops_the_writer_at_start_naming_the_file_and_key() {
    let root = tempfile::tempdir().unwrap();
    let bad = keyring_file(root.path(), "bad.toml", "a", &[("a", "c2hvcnQ=")]);
    let err = tier::load_keyring(&config(root.path(), &bad)).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("key 'a'") && err.contains("exactly 32"), "{err}");
    let missing = config(root.path(), &root.path().join("nope.toml").display().to_string());
    let err = tier::load_keyring(&missing).unwrap_err().to_string();
    assert!(err.contains("nope.toml"), "{err}");
}

/// The audit procedure's two decrypters give the segment the manifest hashed: `tierlog
/// decrypt`, and `integration/scripts/decrypt-object.py` (Python's `cryptography`, no tierlog
/// code) piped to the real `zstd -d`. The second is skipped, saying so, where Python, its
/// `cryptography` package or `zstd` is missing.
#[tokio::test]
async fn the_audit_decrypters_give_the_segment_the_manifest_hashed() {
    let root = tempfile::tempdir().unwrap();
    let ring_a = keyring_file(root.path(), "a.toml", "a", &[("a", KEY_A)]);
    let config = config(root.path(), &ring_a);
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", 1).unwrap();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    append(&log, 0, 10);
    tiering.run_once(None, true).await.unwrap();
    let entry = newest_manifest(&config).await.entries[0].clone();
    let object = root.path().join("bucket").join(&entry.key);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["decrypt", "--topic", "t", "--partition", "0", "--key-file", &ring_a])
        .arg(&object)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tierlog_tiering::sha256_hex(&out.stdout), entry.raw_sha256);
    let wrong_partition = std::process::Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(["decrypt", "--topic", "t", "--partition", "1", "--key-file", &ring_a])
        .arg(&object)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&wrong_partition.stderr);
    assert!(!wrong_partition.status.success() && err.contains("authentication failed"), "{err}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/scripts/decrypt-object.py");
    let shell = format!(
        "python3 -c 'import cryptography' 2>/dev/null && command -v zstd >/dev/null || exit 99; python3 {} {} t 0 {} | zstd -q -d -c",
        script.display(),
        ring_a,
        object.display()
    );
    let out = std::process::Command::new("sh").args(["-c", &shell]).output().unwrap();
    if out.status.code() == Some(99) {
        eprintln!("skipped: python3 with `cryptography`, or zstd, is not installed");
        return;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tierlog_tiering::sha256_hex(&out.stdout), entry.raw_sha256);
}
