//! Test fixtures for tierlog's end-to-end suites: a real S3 HTTP server and helpers to run
//! the real binary.
//!
//! S3 target selection (what every suite here talks to):
//! - default: s3s-fs started in-process on a loopback port — a real HTTP server with SigV4
//!   authentication and conditional writes; needs no setup, so `cargo test --workspace`
//!   works on a fresh machine;
//! - `TIERLOG_TEST_S3_ENDPOINT` (+ `_BUCKET`, `_ACCESS_KEY`, `_SECRET_KEY`, `_REGION`,
//!   `_CONDITIONAL=true|false`, `_AUTH=true|false`): an external server such as Garage or moto, started by
//!   `integration/scripts/s3-servers.sh` in CI.

pub mod cli;
pub mod object_lock;
pub mod scenarios;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tierlog::config::Config;
use tierlog_tiering::store::{RemoteConfig, RemoteStore};

/// An S3 endpoint to test against, with the credentials to use.
pub struct S3Target {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Whether the server honours `If-None-Match: *`.
    pub conditional_writes: bool,
    /// Whether the server checks signatures (moto accepts any credentials).
    pub authenticates: bool,
    pub provider: String,
    /// Holds manifest PUTs at the server (in-process target only): see [`CommitGate`].
    pub gate: Option<Arc<CommitGate>>,
    _server: Option<InProcessS3>,
}

/// Steers a crash into the commit window: while `hold` is set, the in-process server takes
/// every PUT of a manifest version, reads its whole body, counts it in `held` and waits until
/// `release` is set; then it stores it (`land`) or answers 503 without storing it (the PUT
/// was lost). A test kills the client while its commit is held, then releases it.
#[derive(Debug, Default)]
pub struct CommitGate {
    pub hold: AtomicBool,
    pub held: AtomicU64,
    pub release: AtomicBool,
    pub land: AtomicBool,
}

impl CommitGate {
    fn holds(&self, method: &http::Method, path: &str) -> bool {
        let manifest_version = path.contains("/manifests/") && !path.contains("/archive/") && path.ends_with(".json");
        self.hold.load(Ordering::SeqCst) && method == http::Method::PUT && manifest_version
    }

    /// Waits (up to `limit`) until `n` manifest PUTs are held.
    pub fn wait_held(&self, n: u64, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.held.load(Ordering::SeqCst) < n {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        true
    }
}

/// s3s-fs serving a temp directory, on its own thread and runtime so it outlives any test's
/// runtime. Stops when dropped (the thread's runtime is shut down).
struct InProcessS3 {
    _root: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for InProcessS3 {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

const ACCESS_KEY: &str = "tierlog-test-access";
const SECRET_KEY: &str = "tierlog-test-secret-0123456789";

impl S3Target {
    /// The configured external server, or a fresh in-process one.
    pub fn start() -> S3Target {
        match std::env::var("TIERLOG_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => S3Target::external(endpoint),
            _ => S3Target::in_process(),
        }
    }

    /// A server started by the caller (e.g. MinIO in a container).
    pub fn custom(endpoint: String, bucket: &str, access_key: &str, secret_key: &str, provider: &str) -> S3Target {
        S3Target {
            endpoint,
            bucket: bucket.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: "us-east-1".into(),
            conditional_writes: true,
            authenticates: true,
            provider: provider.into(),
            gate: None,
            _server: None,
        }
    }

    fn external(endpoint: String) -> S3Target {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
        S3Target {
            endpoint,
            bucket: var("TIERLOG_TEST_S3_BUCKET", "tierlog-test"),
            access_key: var("TIERLOG_TEST_S3_ACCESS_KEY", ""),
            secret_key: var("TIERLOG_TEST_S3_SECRET_KEY", ""),
            region: var("TIERLOG_TEST_S3_REGION", "us-east-1"),
            conditional_writes: var("TIERLOG_TEST_S3_CONDITIONAL", "true") == "true",
            authenticates: var("TIERLOG_TEST_S3_AUTH", "true") == "true",
            provider: var("TIERLOG_TEST_S3_PROVIDER", "external"),
            gate: None,
            _server: None,
        }
    }

    fn in_process() -> S3Target {
        let root = tempfile::tempdir().expect("temp dir for s3s");
        let bucket = "tierlog-test".to_string();
        std::fs::create_dir_all(root.path().join(&bucket)).expect("bucket directory");
        let listener = StdListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fs_root = root.path().to_path_buf();
        let gate = Arc::new(CommitGate::default());
        let server_gate = gate.clone();
        std::thread::Builder::new()
            .name("s3s-server".into())
            .spawn(move || serve(listener, fs_root, rx, server_gate))
            .expect("spawn s3s thread");
        S3Target {
            endpoint,
            bucket,
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            region: "us-east-1".into(),
            conditional_writes: true,
            authenticates: true,
            provider: "s3s-fs (in-process)".into(),
            gate: Some(gate),
            _server: Some(InProcessS3 { _root: root, shutdown: Some(tx) }),
        }
    }

    /// A fresh prefix per test, so tests sharing a server never see each other's objects.
    pub fn unique_prefix(&self, name: &str) -> String {
        format!("{name}-{}", tierlog_tiering::keys::unique_suffix())
    }

    pub fn remote_config(&self, prefix: &str) -> RemoteConfig {
        RemoteConfig {
            url: format!("s3://{}/{prefix}", self.bucket),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: true,
            virtual_hosted_style: false,
            ..RemoteConfig::default()
        }
    }

    /// A store with the fixture's keys (in-process tests cannot safely set process env).
    pub fn store(&self, prefix: &str) -> RemoteStore {
        RemoteStore::connect_s3_with_keys(&self.remote_config(prefix), &self.access_key, &self.secret_key)
            .expect("S3 store")
    }

    /// Applies this target to a tierlog configuration (remote section).
    pub fn configure(&self, config: &mut Config, prefix: &str) {
        config.remote.url = format!("s3://{}/{prefix}", self.bucket);
        config.remote.endpoint = self.endpoint.clone();
        config.remote.region = self.region.clone();
        config.remote.allow_http = true;
    }

    /// Environment for a child `tierlog` process: credentials through the AWS default chain.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ]
    }
}

fn serve(listener: StdListener, root: PathBuf, stop: tokio::sync::oneshot::Receiver<()>, gate: Arc<CommitGate>) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("s3s runtime");
    runtime.block_on(async move {
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let http = ConnBuilder::new(TokioExecutor::new());
        let mut stop = stop;
        loop {
            let (socket, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(_) => continue,
                },
                _ = &mut stop => return,
            };
            let (service, gate) = (service.clone(), gate.clone());
            let gated = hyper::service::service_fn(move |req| gated_call(service.clone(), gate.clone(), req));
            let connection = http.serve_connection(TokioIo::new(socket), gated).into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
}

/// Passes a request to s3s, holding it first when the [`CommitGate`] says so.
async fn gated_call(
    service: s3s::service::S3Service,
    gate: Arc<CommitGate>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<s3s::HttpResponse, s3s::HttpError> {
    use http_body_util::BodyExt;
    if !gate.holds(req.method(), req.uri().path()) {
        return hyper::service::Service::call(&service, req).await;
    }
    // The whole body first, so the PUT can land after its client is gone.
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(status(http::StatusCode::BAD_REQUEST)), // the client went away mid-body
    };
    gate.held.fetch_add(1, Ordering::SeqCst);
    // On a task of its own: hyper drops this future when the client's connection dies, and
    // the point is to store the PUT after that.
    let held = tokio::spawn(async move {
        while !gate.release.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if !gate.land.load(Ordering::SeqCst) {
            return Ok(status(http::StatusCode::SERVICE_UNAVAILABLE));
        }
        let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
        tower::Service::call(&mut service.clone(), req).await
    });
    held.await.unwrap_or_else(|_| Ok(status(http::StatusCode::INTERNAL_SERVER_ERROR)))
}

fn status(code: http::StatusCode) -> s3s::HttpResponse {
    let mut response = s3s::HttpResponse::new(s3s::Body::empty());
    *response.status_mut() = code;
    response
}

/// Path of the `tierlog` binary built beside this test executable
/// (`cargo test --workspace` builds it for the tierlog package's own tests).
pub fn tierlog_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let bin = dir.join("tierlog");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p tierlog --bin tierlog` first (cargo test --workspace does)",
        bin.display()
    );
    bin
}
