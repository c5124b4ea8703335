//! docs/AUDIT.md's procedure, run as `integration/scripts/audit-partition.sh` with the AWS CLI,
//! jq, sha256sum, zstd and openssl (no tierlog code) against an archive tierlog wrote to a
//! real S3 server: it passes on the intact archive and catches tampering. `.ci/run` installs
//! the tools; where one is missing the test fails and says which.

use std::path::Path;
use std::process::{Command, Output};

use object_store::ObjectStoreExt;
use tierlog_integration::S3Target;
use tierlog_integration::scenarios::{forge_version, manifest, tiered_history};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/audit-partition.sh")
}

fn audit(s3: &S3Target, prefix: &str, public_keys: &[&Path]) -> Output {
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
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
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
