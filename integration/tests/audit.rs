//! docs/AUDIT.md's procedure, run as `integration/scripts/audit-partition.sh` with the AWS CLI,
//! jq, sha256sum, zstd and openssl (no tierlog code) against an archive tierlog wrote to a
//! real S3 server: it passes on the intact archive and catches tampering. `.ci/run` installs
//! the tools; where one is missing the test fails and says which.

use std::path::Path;
use std::process::{Command, Output};

use object_store::ObjectStoreExt;
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::{forge_version, manifest, tiered_history, tiered_history_with};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/audit-partition.sh")
}

fn audit(s3: &S3Target, prefix: &str, public_keys: &[&Path]) -> Output {
    audit_with(s3, prefix, public_keys, &[])
}

fn audit_with(s3: &S3Target, prefix: &str, public_keys: &[&Path], env: &[(&str, &Path)]) -> Output {
    for tool in ["aws", "jq", "sha256sum", "zstd", "openssl"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success();
        assert!(
            found,
            "{tool} is not installed: .ci/run installs it (pip install awscli; apt-get install jq zstd openssl)"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("aws-config");
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg(format!("s3://{}/{prefix}", s3.bucket)).arg("t").arg("0").args(public_keys);
    for (var, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(var);
    }
    cmd.envs(s3.child_env())
        .env("AWS_DEFAULT_REGION", &s3.region)
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_tools_audit_passes_on_an_intact_archive_and_catches_a_tampered_object() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("audit");
    tiered_history(&s3, dir.path(), &prefix, 3, None).await;
    let out = audit(&s3, &prefix, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("OK — 3 manifest versions, 6 segments, offsets up to 479"), "{}", text(&out));

    let store = s3.store(&prefix);
    let key = object_store::path::Path::from(manifest(&store, "t", 0).await.entries[4].key.as_str());
    let mut object = store.store.get(&key).await.unwrap().bytes().await.unwrap().to_vec();
    object[40] ^= 0x10;
    store.store.put(&key, object.into()).await.unwrap();
    let out = audit(&s3, &prefix, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains(&format!("object {key}: SHA-256 differs")), "{}", text(&out));
}

/// An encrypted archive: without the keyring the audit checks every hash of the stored bytes
/// (the key id is in the entry chain) and says which objects it did not decrypt; with it, the
/// independent Python decrypter and `zstd -d` give segments whose SHA-256 the manifest lists.
/// Needs python3 with `cryptography` (`.ci/run` installs it with the AWS CLI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_tools_audit_checks_an_encrypted_archive_with_and_without_its_keyring() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.toml");
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    std::fs::write(&keyring, format!("current = \"k1\"\n[[keys]]\nid = \"k1\"\nkey = \"{key}\"\n")).unwrap();
    let prefix = s3.unique_prefix("audit-encrypted");
    let key_file = keyring.display().to_string();
    tiered_history_with(&s3, &dir.path().join("data"), &prefix, 2, |c| c.encryption.key_file = key_file).await;
    let out = audit(&s3, &prefix, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("4 encrypted segment(s) not decrypted"), "{}", text(&out));
    assert!(text(&out).contains("encrypted with key id 'k1'"), "{}", text(&out));

    let out = audit_with(&s3, &prefix, &[], &[("AUDIT_KEYRING", &keyring)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("OK — 2 manifest versions, 4 segments"), "{}", text(&out));
    assert!(!text(&out).contains("not decrypted"), "{}", text(&out));

    // tierlog's own reader over S3: with the keyring, ranged GETs of sealed chunks decrypt to
    // the segment's first batch; without it, the read names the key id before any chunk GET.
    use tierlog_tiering::remote_reader::{ReaderSettings, RemoteReader};
    let settings = |keyring| ReaderSettings {
        cache_bytes: 1 << 26,
        prefetch_bytes: 0,
        concurrency: 2,
        timeout: std::time::Duration::from_secs(30),
        keyring,
    };
    let ring = tierlog_tiering::encryption::Keyring::from_file(&keyring).unwrap();
    let reader = RemoteReader::new(s3.store(&prefix), settings(Some(std::sync::Arc::new(ring))));
    let chunk = reader.read_at("t", 0, 0).await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(chunk.raw[..8].try_into().unwrap()), 0, "a Kafka batch at offset 0");
    let keyless = RemoteReader::new(s3.store(&prefix), settings(None));
    let err = keyless.read_at("t", 0, 0).await.unwrap_err().to_string();
    assert!(err.contains("key id 'k1'") && err.contains("no keyring is configured"), "{err}");
    assert_eq!(keyless.stats.chunk_gets.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_tools_audit_checks_signatures_and_catches_a_rewritten_history() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, private) = tierlog_tiering::signing::Signer::generate().unwrap();
    let (key_file, public_file) = (dir.path().join("key.pem"), dir.path().join("key.pub.pem"));
    std::fs::write(&key_file, private).unwrap();
    std::fs::write(&public_file, signer.public_pem()).unwrap();
    let prefix = s3.unique_prefix("audit-signed");
    tiered_history(&s3, &dir.path().join("data"), &prefix, 3, Some(&key_file)).await;
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // Version 2 replaced by a consistent forgery (valid chain and checksum, unsigned, another
    // segment in place of one it committed): the signature and the history both tell.
    let store = s3.store(&prefix);
    forge_version(&store, 2, |m| {
        let mut entries = std::mem::take(&mut m.entries);
        entries[3].raw_sha256 = "f".repeat(64);
        m.append(entries).unwrap();
    })
    .await;
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("00000000000000000002.json: not signed"), "{report}");
    assert!(report.contains("is not in the newest version's chain (history rewritten)"), "{report}");
}

/// Writes a manifest version back with its body text edited and the header's body checksum
/// recomputed; the header (signature included) is otherwise kept as is.
async fn edit_raw_version(
    store: &tierlog_tiering::store::RemoteStore,
    version: u64,
    edit_header: impl FnOnce(&mut serde_json::Value),
    edit_body: impl FnOnce(&mut String),
) {
    let key = tierlog_tiering::keys::manifest_key(store, "t", 0, version);
    let bytes = store.store.get(&key).await.unwrap().bytes().await.unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (header, body) = text.trim_end().split_once('\n').unwrap();
    let mut body = body.to_string();
    edit_body(&mut body);
    let mut header: serde_json::Value = serde_json::from_str(header).unwrap();
    header["body_sha256"] = tierlog_tiering::sha256_hex(body.as_bytes()).into();
    edit_header(&mut header);
    store.store.put(&key, format!("{header}\n{body}\n").into_bytes().into()).await.unwrap();
}

fn signing_files(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (signer, private) = tierlog_tiering::signing::Signer::generate().unwrap();
    let (key_file, public_file) = (dir.join("key.pem"), dir.join("key.pub.pem"));
    std::fs::write(&key_file, private).unwrap();
    std::fs::write(&public_file, signer.public_pem()).unwrap();
    (key_file, public_file)
}

/// The script computed `$((last + 1))` on a value read from the bucket, and bash arithmetic
/// expands `x[$(cmd)]`: whoever could write the bucket ran commands on the auditor's machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_script_never_executes_bucket_contents() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public_file) = signing_files(dir.path());
    let prefix = s3.unique_prefix("audit-inject");
    tiered_history(&s3, &dir.path().join("data"), &prefix, 3, Some(&key_file)).await;
    let store = s3.store(&prefix);
    let marker = dir.path().join("pwned");
    // `failures` is a variable the script sets, so `set -u` would not stop the expansion.
    let payload = format!(r#""last_offset":"failures[$(touch {})]","#, marker.display());
    edit_raw_version(&store, 3, |_| {}, |body| *body = body.replace(r#""last_offset":479,"#, &payload)).await;
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!marker.exists(), "the audit script ran a command from the bucket: {}", text(&out));
}

/// Tampering that leaves versions unreadable to tierlog (a header format version no build
/// reads; a line appended after the body) while body and signature stay valid fails the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_script_fails_where_tierlog_cannot_read_a_version() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public_file) = signing_files(dir.path());
    let prefix = s3.unique_prefix("audit-header");
    tiered_history(&s3, &dir.path().join("data"), &prefix, 3, Some(&key_file)).await;
    let store = s3.store(&prefix);
    edit_raw_version(&store, 3, |h| h["format_version"] = 5.into(), |_| {}).await;
    let v2 = tierlog_tiering::keys::manifest_key(&store, "t", 0, 2);
    let mut bytes = store.store.get(&v2).await.unwrap().bytes().await.unwrap().to_vec();
    bytes.extend_from_slice(b"{\"appended\":true}\n");
    store.store.put(&v2, bytes.into()).await.unwrap();
    assert!(tierlog_tiering::manifest::load_version(&store, "t", 0, 3).await.is_err(), "tierlog cannot read v3");
    assert!(tierlog_tiering::manifest::load_version(&store, "t", 0, 2).await.is_err(), "tierlog cannot read v2");
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(3), "versions 2 and 3 are damaged: {}", text(&out));
    let report = text(&out);
    assert!(report.contains("00000000000000000002.json: not exactly a header line and a body line"), "{report}");
    assert!(report.contains("00000000000000000003.json: not a manifest header of a version tierlog reads"), "{report}");

    // Version 4 without an expired section (or an expired section under 3) is refused too.
    edit_raw_version(&store, 3, |h| h["format_version"] = 4.into(), |_| {}).await;
    assert!(tierlog_tiering::manifest::load_version(&store, "t", 0, 3).await.is_err());
    let report = text(&audit(&s3, &prefix, &[&public_file]));
    assert!(
        report.contains("00000000000000000003.json: not a manifest header of a version tierlog reads with this body"),
        "{report}"
    );
}

/// After remote retention expired and deleted the oldest segments (manifest version 4, signed),
/// the standard-tools audit still passes: the chain resumes at the cut from the link an older
/// version gives, and the deleted objects are no longer asked for. A cut whose link no older
/// version gives is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_tools_audit_follows_the_chain_across_a_retention_cut() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, public_file) = signing_files(dir.path());
    let prefix = s3.unique_prefix("audit-expired");
    tiered_history(&s3, &dir.path().join("data"), &prefix, 3, Some(&key_file)).await;
    let store = s3.store(&prefix);
    let writer = tierlog_tiering::manifest::Writer { id: "expiry".into(), epoch: 1 };
    let mut m = tierlog_tiering::manifest::ManifestStore::open(store.clone(), "t", 0, writer, 0).await.unwrap();
    m.signer = Some(std::sync::Arc::new(tierlog_tiering::signing::Signer::from_file(&key_file).unwrap()));
    let cut = m.current.entries[2].base_offset;
    m.expire_before(cut, "retention.ms=1", 0, &|| 1, 600_000, 3).await.unwrap().unwrap();
    assert_eq!(tierlog_tiering::retention::delete_due(&mut m, &Default::default(), 1, 3).await.unwrap().len(), 2);
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("OK — 5 manifest versions, 4 segments, offsets up to 479"), "{}", text(&out));

    // A forged cut: the link of the expired range replaced (body re-checksummed, so only the
    // signature and the chain can tell).
    let version = m.current.manifest_version;
    let link = m.current.expired.as_ref().unwrap().last_hash.clone();
    edit_raw_version(&store, version, |_| {}, |body| *body = body.replace(&link, &"e".repeat(64))).await;
    let out = audit(&s3, &prefix, &[&public_file]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("which no older version gives the entry ending at"), "{}", text(&out));
}
