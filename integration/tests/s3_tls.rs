//! The real `tierlog` binary against moto over HTTPS with a certificate from a private CA
//! that this test creates (openssl): the AWS SDK's conventions for a private S3 server.
//! - with the CA (`remote.ca_file`, or `AWS_CA_BUNDLE`), tiering and reading work through
//!   both S3 clients (object_store's for data, the SDK's for Object Lock writes);
//! - without it, tiering fails naming the endpoint, the certificate problem and the fix;
//! - `remote.storage_class` and `remote.sse` reach every object either client writes (moto
//!   reports the storage class it stored, and refuses unknown ones; it echoes the SSE headers
//!   it was sent but neither checks the KMS key nor encrypts anything).
//!
//! `.ci/run` installs moto (`pip install 'moto[server]'`) and openssl; where one is missing
//! the test fails and says which.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use tierlog_integration::cli::{json_lines, run};

const ACCESS: (&str, &str) = ("testing", "testing");

/// moto serving HTTPS with a server certificate signed by a fresh CA. Stopped when dropped.
struct TlsMoto {
    dir: tempfile::TempDir,
    endpoint: String,
    child: Child,
}

impl Drop for TlsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str, install: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success();
    assert!(found, "{tool} is not installed: .ci/run installs it ({install})");
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

impl TlsMoto {
    fn start() -> TlsMoto {
        require("openssl", "apt-get install openssl");
        require("moto_server", "pip install 'moto[server]'");
        let dir = tempfile::tempdir().unwrap();
        // A CA, and a server certificate for 127.0.0.1 signed by it (what a private MinIO
        // behind an in-house CA looks like).
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh(
            dir.path(),
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
               -days 2 -subj '/CN=tierlog test CA' -addext 'basicConstraints=critical,CA:TRUE' \
               -addext 'keyUsage=critical,keyCertSign,cRLSign' 2>/dev/null && \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
               -subj '/CN=127.0.0.1' 2>/dev/null && \
             openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
               -extfile server.ext 2>/dev/null",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c", "server.pem", "-k", "server.key"])
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsMoto { dir, endpoint: format!("https://127.0.0.1:{port}"), child }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Runs `code` with boto3 (installed with moto), `s3` a client trusting the CA.
    fn boto3(&self, code: &str) -> String {
        let script = format!(
            "import boto3, json\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='{}', aws_secret_access_key='{}', verify='{}')\n{code}",
            self.endpoint,
            ACCESS.0,
            ACCESS.1,
            self.ca().display()
        );
        let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success(), "boto3: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn create_bucket(&self, bucket: &str, object_lock: bool) {
        self.boto3(&format!("s3.create_bucket(Bucket='{bucket}', ObjectLockEnabledForBucket={})", py(object_lock)));
    }

    /// Every object under `prefix`: key → (storage class from LIST, HEAD's SSE and KMS key).
    fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, Value)> {
        let out = self.boto3(&format!(
            "out = []\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket='{bucket}', Prefix='{prefix}'):\n\
             \x20   for o in page.get('Contents', []):\n\
             \x20       h = s3.head_object(Bucket='{bucket}', Key=o['Key'])\n\
             \x20       out.append([o['Key'], {{'list_class': o.get('StorageClass'), 'head_class': h.get('StorageClass'),\n\
             \x20           'sse': h.get('ServerSideEncryption'), 'kms_key': h.get('SSEKMSKeyId')}}])\n\
             print(json.dumps(out))"
        ));
        serde_json::from_str(&out).unwrap()
    }
}

fn py(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// A configuration for `bucket/prefix` on `moto`; `remote` holds extra `[remote]` lines (the
/// endpoint and region are among them when the test sets them).
fn write_config(dir: &Path, bucket: &str, prefix: &str, remote: &str, tiering: &str) -> PathBuf {
    let path = dir.join("tierlog.toml");
    let text = format!(
        "data_dir = \"{data}\"\n[segment]\nmax_bytes = 65536\n[durability]\nfsync = \"never\"\n\
         [remote]\nurl = \"s3://{bucket}/{prefix}\"\n{remote}\n\
         [tiering]\nlocal_retention_bytes = 0\nchunk_bytes = 65536\n{tiering}\n",
        data = dir.join("data").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn credentials() -> Vec<(String, String)> {
    vec![("AWS_ACCESS_KEY_ID".into(), ACCESS.0.into()), ("AWS_SECRET_ACCESS_KEY".into(), ACCESS.1.into())]
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn events(n: u64) -> String {
    (0..n).map(|i| format!("{{\"key\":\"acct-{}\",\"value\":\"payment {i} {}\"}}\n", i % 5, "x".repeat(200))).collect()
}

/// Produces `n` events, tiers them, and replays them from the bucket alone (`--replica`):
/// every record comes back, in order.
fn tier_and_replay(config: &Path, env: &[(String, String)], n: u64) {
    let out = run(config, env, &["topic", "create", "payments"], "");
    assert!(out.status.success(), "{}", text(&out));
    let out = run(config, env, &["produce", "payments", "--input-format", "json"], &events(n));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(config, env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", text(&out));
    let reports = json_lines(&out);
    assert!(
        reports.iter().all(|r| r["uploaded_segments"].as_u64().unwrap() >= 2 && r["error"].is_null()),
        "{reports:?}"
    );
    let out = run(config, env, &["consume", "payments", "--replica", "--from-beginning"], "");
    assert!(out.status.success(), "{}", text(&out));
    let records = json_lines(&out);
    let tiered: u64 = reports.iter().map(|r| r["remote_end_offset"].as_u64().unwrap()).sum();
    assert!(tiered >= n / 2, "most records are tiered: {reports:?}");
    assert_eq!(records.len() as u64, tiered, "the replica reads every tiered record");
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["offset"], i as u64);
        assert!(record["value"].as_str().unwrap().starts_with(&format!("payment {i} ")), "{record}");
    }
}

#[test]
fn over_https_with_the_ca_in_remote_ca_file_objects_are_tiered_with_storage_class_and_sse_and_read_back() {
    let moto = TlsMoto::start();
    moto.create_bucket("tls-plain", false);
    let dir = tempfile::tempdir().unwrap();
    let remote = format!(
        "endpoint = \"{}\"\nregion = \"us-east-1\"\nca_file = \"{}\"\nstorage_class = \"STANDARD_IA\"\n\
         sse = \"aws:kms\"\nsse_kms_key_id = \"alias/tierlog-test\"",
        moto.endpoint,
        moto.ca().display()
    );
    let config = write_config(dir.path(), "tls-plain", "p", &remote, "");
    tier_and_replay(&config, &credentials(), 2000);

    let objects = moto.objects("tls-plain", "p/");
    assert!(objects.iter().any(|(k, _)| k.contains("/segments/")), "{objects:?}");
    for (key, meta) in &objects {
        assert_eq!(meta["list_class"], "STANDARD_IA", "{key}: {meta}");
        assert_eq!(meta["head_class"], "STANDARD_IA", "{key}: {meta}");
        assert_eq!(meta["sse"], "aws:kms", "{key}: {meta}");
        assert_eq!(meta["kms_key"], "alias/tierlog-test", "{key}: {meta}");
    }
}

/// The SDK's conventions end to end: the endpoint from `AWS_ENDPOINT_URL_S3` (over a wrong
/// `AWS_ENDPOINT_URL`), the region from `AWS_REGION`, the CA from `AWS_CA_BUNDLE`; Object
/// Lock on, so the locked writes go through the SDK's client, which must trust the CA too
/// and send the storage class and SSE headers object_store would.
#[test]
fn over_https_with_aws_ca_bundle_and_the_endpoint_from_the_environment_locked_writes_go_through_the_sdk() {
    let moto = TlsMoto::start();
    moto.create_bucket("tls-locked", true);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "tls-locked",
        "p",
        "storage_class = \"STANDARD_IA\"\nsse = \"AES256\"",
        "object_lock_mode = \"governance\"\nobject_lock_retain_days = 1",
    );
    let mut env = credentials();
    env.push(("AWS_ENDPOINT_URL_S3".into(), moto.endpoint.clone()));
    env.push(("AWS_ENDPOINT_URL".into(), "https://127.0.0.1:9".into()));
    env.push(("AWS_REGION".into(), "eu-west-1".into()));
    env.push(("AWS_CA_BUNDLE".into(), moto.ca().display().to_string()));
    tier_and_replay(&config, &env, 2000);

    let objects = moto.objects("tls-locked", "p/");
    let segments: Vec<_> = objects.iter().filter(|(k, _)| k.contains("/segments/")).collect();
    assert!(!segments.is_empty(), "{objects:?}");
    for (key, meta) in &objects {
        assert_eq!(meta["head_class"], "STANDARD_IA", "{key}: {meta}");
        assert_eq!(meta["sse"], "AES256", "{key}: {meta}");
    }
    // The segment objects really were written locked (through the SDK).
    let key = &segments[0].0;
    let lock = moto.boto3(&format!("print(s3.head_object(Bucket='tls-locked', Key='{key}').get('ObjectLockMode'))"));
    assert_eq!(lock.trim(), "GOVERNANCE", "{key}");
}

#[test]
fn over_https_without_the_ca_tiering_fails_naming_the_endpoint_the_certificate_problem_and_the_fix() {
    let moto = TlsMoto::start();
    moto.create_bucket("tls-untrusted", false);
    let dir = tempfile::tempdir().unwrap();
    let remote = format!("endpoint = \"{}\"\nregion = \"us-east-1\"", moto.endpoint);
    let config = write_config(dir.path(), "tls-untrusted", "p", &remote, "");
    let env = credentials();
    assert!(run(&config, &env, &["topic", "create", "t"], "").status.success());
    let started = Instant::now();
    let out = run(&config, &env, &["tier", "run"], "");
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&moto.endpoint) && err.contains("tls-untrusted"), "names the endpoint and bucket: {err}");
    assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "names the certificate problem: {err}");
    assert!(err.contains("AWS_CA_BUNDLE") && err.contains("remote.ca_file"), "says what to do: {err}");
    assert!(started.elapsed() < Duration::from_secs(60), "fails without retrying for long: {:?}", started.elapsed());
}
