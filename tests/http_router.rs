//! The HTTP router driven in-process (the real `router`, on a real log in a temporary
//! directory): Server-Sent Events behaviour, and fuzzing.
//!
//! Fuzzing: random routes, query strings, headers and bodies thrown at the router. Every answer must
//! be a status below 500 — an error with the JSON error shape — and arrive in time; a body that
//! never ends is allowed only for a follow stream. A panic, a 5xx or a hang fails the test with
//! the request that caused it (proptest shrinks it).
//!
//! `HTTP_FUZZ_CASES` sets the number of requests (default 3000, about ten seconds here);
//! `HTTP_FUZZ_TRACE=1` prints each status, method and path (to see what the cases reach).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use tierlog::config::Config;
use tierlog::serve::http::{AppState, router};
use tierlog::{Log, Record};
use tower::ServiceExt;

/// One generated request, printable for the failure report.
#[derive(Debug, Clone)]
struct Fuzzed {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Fuzzed {
    fn follows(&self) -> bool {
        self.query.iter().any(|(k, v)| k == "follow" && v != "false" && v != "0")
    }

    fn request(&self) -> Request<Body> {
        let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let uri = if query.is_empty() { self.path.clone() } else { format!("{}?{}", self.path, query.join("&")) };
        let mut builder = Request::builder().method(self.method.clone()).uri(uri);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder.body(Body::from(self.body.clone())).expect("generated requests are well-formed HTTP")
    }
}

/// Path segments: valid names, unknown ones, percent-encoded control characters and traversal,
/// overlong ones, and arbitrary printable junk (percent-encoded so the URI stays valid).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("t".to_string()),
        1 => Just("empty".to_string()),
        1 => Just("nope".to_string()),
        1 => Just("%0d%0aX-Injected:%201".to_string()),
        1 => Just("..".to_string()),
        1 => Just("%2e%2e%2fetc".to_string()),
        1 => Just("a".repeat(300)),
        1 => Just("0".to_string()),
        1 => Just("1".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("99999999999999999999".to_string()),
        1 => "[ -~]{0,12}".prop_map(|s| percent(&s)),
    ]
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn path() -> impl Strategy<Value = String> {
    let route = prop_oneof![
        2 => Just(0usize),
        1 => Just(1),
        4 => Just(2),
        4 => Just(3),
        1 => Just(4),
        2 => Just(5),
        1 => 6..11usize,
    ];
    (route, segment(), segment()).prop_map(|(route, a, b)| match route {
        0 => "/v1/topics".to_string(),
        1 => format!("/v1/topics/{a}"),
        2 => format!("/v1/topics/{a}/records"),
        3 => format!("/v1/topics/{a}/partitions/{b}/records"),
        4 => format!("/v1/topics/{a}/offsets"),
        5 => format!("/v1/groups/{a}/offsets"),
        6 => "/healthz".to_string(),
        7 => "/readyz".to_string(),
        8 => "/metrics".to_string(),
        9 => format!("/{a}/{b}"),
        _ => format!("/v1/topics/t/partitions/{a}/records"),
    })
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("9223372036854775807".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("sse".to_string()),
        Just("ndjson".to_string()),
        Just("json".to_string()),
        Just("2026-03-03T14:02:00Z".to_string()),
        Just("2026-03-03".to_string()),
        Just(String::new()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,10}".prop_map(|s| percent(&s)),
    ]
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("offset"),
        Just("max_records"),
        Just("max_bytes"),
        Just("from_time"),
        Just("to_time"),
        Just("time"),
        Just("follow"),
        Just("format"),
        Just("partition"),
        Just("group"),
        Just("topic"),
        Just("timeout_ms"),
        Just("key"),
        Just("x"),
    ];
    proptest::collection::vec((key.prop_map(str::to_string), query_value()), 0..5)
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    // Mostly what gets past the Host guard and the content-type check, so handlers are reached.
    let host = prop_oneof![
        8 => Just("127.0.0.1".to_string()),
        1 => Just("localhost:8080".to_string()),
        1 => Just("evil.example".to_string()),
    ];
    let content_type = prop_oneof![
        4 => Just("application/json".to_string()),
        4 => Just("application/x-ndjson".to_string()),
        1 => Just("text/plain".to_string()),
        1 => Just("application/json; charset=utf-8".to_string()),
        1 => "[ -~]{0,12}",
    ];
    let accept =
        prop_oneof![Just("text/event-stream"), Just("application/json"), Just("*/*"), Just("application/x-ndjson")];
    let authorization =
        prop_oneof![Just("Bearer wrong".to_string()), Just("Basic xyz".to_string()), Just("Bearer ".to_string())];
    (
        host,
        proptest::option::weighted(0.8, content_type),
        proptest::option::of(accept),
        proptest::option::of(authorization),
        proptest::option::of(query_value()),
    )
        .prop_map(|(host, content_type, accept, authorization, last_event_id)| {
            let mut out = vec![("host", host)];
            out.extend(content_type.map(|v| ("content-type", v)));
            out.extend(accept.map(|v| ("accept", v.to_string())));
            out.extend(authorization.map(|v| ("authorization", v)));
            out.extend(last_event_id.map(|v| ("last-event-id", v)));
            out
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let envelope = (proptest::option::of("[a-z]{0,4}"), "[ -~]{0,20}", proptest::option::of(any::<i64>())).prop_map(
        |(k, v, ts)| {
            let mut o = serde_json::json!({"value": v});
            if let Some(k) = k {
                o["key"] = k.into();
            }
            if let Some(ts) = ts {
                o["timestamp"] = ts.into();
            }
            o.to_string()
        },
    );
    prop_oneof![
        1 => Just(Vec::new()),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        3 => proptest::collection::vec(envelope.clone(), 0..5).prop_map(|lines| lines.join("\n").into_bytes()),
        3 => proptest::collection::vec(envelope, 0..5).prop_map(|lines| format!("[{}]", lines.join(",")).into_bytes()),
        1 => (segment(), any::<i64>()).prop_map(|(name, n)| format!("{{\"name\":\"{name}\",\"partitions\":{n}}}").into_bytes()),
        1 => (0..2usize, any::<i64>()).prop_map(|(p, o)| format!("{{\"topic\":\"t\",\"offsets\":{{\"{p}\":{o}}}}}").into_bytes()),
        1 => Just(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()),
        1 => Just(b"[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]".to_vec()),
    ]
}

fn fuzzed() -> impl Strategy<Value = Fuzzed> {
    let method = prop_oneof![
        6 => Just(Method::GET),
        6 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::PATCH),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
    ];
    (method, path(), query(), headers(), body()).prop_map(|(method, path, query, headers, body)| Fuzzed {
        method,
        path,
        query,
        headers,
        body,
    })
}

/// The router of a log with a topic `t` (two partitions, some records) and an empty topic.
fn app(dir: &std::path::Path) -> (Router, Log) {
    app_with(Config { data_dir: dir.to_path_buf(), ..Config::default() })
}

fn app_with(config: Config) -> (Router, Log) {
    let log = Log::open(config).unwrap();
    let topic = log.create_topic("t", 2).unwrap();
    log.create_topic("empty", 1).unwrap();
    for p in 0..2 {
        let records: Vec<Record> = (0..20)
            .map(|i| Record {
                timestamp: 1_772_546_400_000 + i,
                value: format!("v{i}").into_bytes(),
                ..Record::default()
            })
            .collect();
        topic.partition(p).unwrap().append(&records, 1_772_546_400_000).unwrap();
    }
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(_keep); // the server never shuts down during the test
    let state: Arc<AppState> = AppState::new(log.clone(), shutdown, None).unwrap();
    (router(state), log)
}

async fn check(app: &Router, case: &Fuzzed) -> Result<(), String> {
    let answer = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(case.request())).await;
    let response = match answer {
        Err(_) => return Err("no response within 10 s".into()),
        Ok(Err(never)) => match never {},
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if std::env::var("HTTP_FUZZ_TRACE").is_ok() {
        eprintln!("FUZZ {} {} {}", status.as_u16(), case.method, case.path);
    }
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect()).await;
    let bytes = match body {
        Err(_) if case.follows() => return Ok(()), // a follow stream never ends by itself
        Err(_) => return Err(format!("{status}: the body did not end within 2 s")),
        Ok(Err(e)) => return Err(format!("{status}: the body failed: {e}")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if status.is_server_error() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if status.is_client_error() && case.method != Method::HEAD {
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
        let shaped = parsed.as_ref().is_ok_and(|v| v["error"].is_string());
        if !shaped || !content_type.starts_with("application/json") {
            return Err(format!(
                "{status} without the JSON error shape ({content_type}): {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
    }
    Ok(())
}

#[test]
fn random_requests_get_a_4xx_or_a_valid_answer_never_a_panic_5xx_or_hang() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (app, _log) = runtime.block_on(async { app(dir.path()) });
    let cases = std::env::var("HTTP_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let mut runner = TestRunner::new(ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() });
    let result = runner.run(&fuzzed(), |case| {
        let outcome = runtime.block_on(check(&app, &case));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn sse_request(path: &str, last_event_id: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().uri(path).header("host", "127.0.0.1").header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id);
    }
    builder.body(Body::empty()).unwrap()
}

async fn body_text(response: axum::response::Response) -> String {
    String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// An SSE fetch starts with `retry:`, carries each record as `id:` = offset and `data:`, and
/// a stream that is not a follow ends with `event: end`. EventSource reconnects with
/// Last-Event-ID: the stream resumes after that offset, and once nothing is left the answer is
/// 204, which tells EventSource to stop (instead of replaying the fetch forever).
#[test]
fn server_sent_events_resume_after_last_event_id_and_stop_a_finished_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let (app, _log) = app(dir.path());
        let path = "/v1/topics/t/partitions/0/records?from_offset=0";
        let first = app.clone().oneshot(sse_request(path, None)).await.unwrap();
        assert_eq!(first.headers()["content-type"], "text/event-stream");
        let text = body_text(first).await;
        assert!(text.starts_with("retry: 3000\n\n"), "{text}");
        assert!(text.contains("id: 0\ndata: {") && text.contains("id: 19\ndata: {"), "{text}");
        assert!(text.ends_with("event: end\ndata: {}\n\n"), "{text}");

        let resumed = body_text(app.clone().oneshot(sse_request(path, Some("16"))).await.unwrap()).await;
        let ids: Vec<&str> = resumed.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
        assert_eq!(ids, ["17", "18", "19"], "a reconnect resumes after the last event: {resumed}");

        let done = app.clone().oneshot(sse_request(path, Some("19"))).await.unwrap();
        assert_eq!(done.status(), 204, "nothing left: EventSource must stop reconnecting");
        let limited = app.clone().oneshot(sse_request(&format!("{path}&max_records=5"), Some("4"))).await.unwrap();
        assert_eq!(limited.status(), 204, "a max_records stream ended: its reconnect must not start it again");
        let bad = app.clone().oneshot(sse_request(path, Some("x"))).await.unwrap();
        assert_eq!(bad.status(), 400);
    });
}

/// An idle SSE follow sends a comment every `server.sse_keepalive_ms`, so proxies keep it open
/// and a client that went away is noticed; records appended later still arrive.
#[test]
fn an_idle_server_sent_events_follow_sends_keep_alive_comments() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.server.sse_keepalive_ms = 100;
        let (app, log) = app_with(config);
        let request = sse_request("/v1/topics/empty/partitions/0/records?follow=true", None);
        let mut body = app.oneshot(request).await.unwrap().into_body();
        let mut seen = String::new();
        let started = std::time::Instant::now();
        while seen.matches(": keep-alive").count() < 2 {
            let frame =
                tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("a keep-alive within 5 s");
            seen.push_str(std::str::from_utf8(frame.unwrap().unwrap().data_ref().unwrap()).unwrap());
        }
        assert!(seen.starts_with("retry: 3000\n\n: keep-alive\n\n"), "{seen:?}");
        assert!(started.elapsed() >= Duration::from_millis(200), "comments come at the configured pace");
        let record = Record { timestamp: 1, value: b"late".to_vec(), ..Record::default() };
        log.topic("empty").unwrap().partition(0).unwrap().append(&[record], 1).unwrap();
        let mut data = String::new();
        while !data.contains("late") {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("the record");
            data.push_str(std::str::from_utf8(frame.unwrap().unwrap().data_ref().unwrap()).unwrap());
        }
        assert!(data.contains("id: 0\ndata: {"), "{data}");
    });
}

/// A body that never arrives.
fn endless_body() -> Body {
    Body::from_stream(futures::stream::pending::<Result<bytes::Bytes, std::io::Error>>())
}

fn post(path: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(body).unwrap()
}

/// Creating a topic and committing a group's offsets read the body only after the token is
/// checked, within a small size limit and `server.request_timeout_ms`: a client without a
/// valid token is answered 401 at once (it cannot make the server wait for, or hold, a body),
/// and one with a token that trickles its body is cut off with 408.
#[test]
fn control_requests_check_the_token_before_reading_a_bounded_body() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.server.request_timeout_ms = 300;
        let sha: String = sha2::Sha256::digest(b"admin-secret").iter().map(|b| format!("{b:02x}")).collect();
        config.server.tokens = vec![tierlog::config::TokenConfig {
            name: "admin".into(),
            token_sha256: sha,
            read: vec![],
            write: vec![],
            admin: true,
            groups: vec![],
            metrics: false,
        }];
        let (app, _log) = app_with(config);
        for path in ["/v1/topics", "/v1/groups/g/offsets"] {
            let answer =
                tokio::time::timeout(Duration::from_secs(2), app.clone().oneshot(post(path, None, endless_body())))
                    .await
                    .unwrap_or_else(|_| panic!("{path}: the server waited for the body of a client without a token"))
                    .unwrap();
            assert_eq!(answer.status(), 401, "{path}");
            let slow = app.clone().oneshot(post(path, Some("admin-secret"), endless_body())).await.unwrap();
            assert_eq!(slow.status(), 408, "{path}: a body that does not arrive is cut off");
            let big = Body::from(format!("{{\"name\":\"{}\"}}", "x".repeat(100_000)));
            let answer = app.clone().oneshot(post(path, Some("admin-secret"), big)).await.unwrap();
            assert_eq!(answer.status(), 413, "{path}: control bodies are small");
        }
        let created = app
            .clone()
            .oneshot(post("/v1/topics", Some("admin-secret"), Body::from("{\"name\":\"new\"}")))
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    });
}

/// Produce bodies held at once are bounded by `server.max_produce_bytes_in_flight`: while one
/// request holds the whole budget (its Content-Length), another waits (its body unread) until
/// the first is answered; one that cannot get its share within `request_timeout_ms` gets 503
/// with Retry-After. A Content-Length over `max_body_bytes` is 413 before anything is read.
#[test]
fn produce_bodies_in_flight_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.server.request_timeout_ms = 1_000;
        config.server.max_produce_bytes_in_flight = 65_536;
        let (app, _log) = app_with(config);
        let produce = |length: usize, body: Body| {
            Request::builder()
                .method(Method::POST)
                .uri("/v1/topics/t/records")
                .header("host", "127.0.0.1")
                .header("content-type", "application/x-ndjson")
                .header("content-length", length.to_string())
                .body(body)
                .unwrap()
        };
        let line = "{\"value\":\"v\"}\n";
        // One request holds the whole budget; a small one waits for it, then goes through.
        let holder = tokio::spawn(app.clone().oneshot(produce(65_536, endless_body())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiter = tokio::spawn(app.clone().oneshot(produce(line.len(), Body::from(line))));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the small request must wait while the budget is taken");
        assert_eq!(holder.await.unwrap().unwrap().status(), 408, "the endless body is cut off");
        assert_eq!(waiter.await.unwrap().unwrap().status(), 200, "then the waiting request goes through");
        // Two holders one after the other keep the budget for two timeouts: a request waiting
        // one timeout gets 503.
        let first = tokio::spawn(app.clone().oneshot(produce(65_536, endless_body())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::spawn(app.clone().oneshot(produce(65_536, endless_body())));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = app.clone().oneshot(produce(line.len(), Body::from(line))).await.unwrap();
        assert_eq!(refused.status(), 503, "no share of the budget within request_timeout_ms");
        assert_eq!(refused.headers()["retry-after"], "5");
        let (first, second) = (first.await.unwrap().unwrap(), second.await.unwrap().unwrap());
        assert_eq!(
            (first.status(), second.status()),
            (axum::http::StatusCode::REQUEST_TIMEOUT, axum::http::StatusCode::REQUEST_TIMEOUT)
        );
        let huge = app.clone().oneshot(produce(17 * 1024 * 1024, endless_body())).await.unwrap();
        assert_eq!(huge.status(), 413, "over max_body_bytes by its Content-Length");
    });
}

/// A log line sink for the subscriber of one test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access log (`RUST_LOG=tierlog::access=info`, here as `--log-format json` writes it):
/// one line per request with method, status and the path as received — still
/// percent-encoded, so a CR/LF a client put in a topic name never reaches the log decoded.
#[test]
fn the_access_log_names_method_raw_path_and_status() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("tierlog::access=info")
        .with_writer(move || writer.clone())
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let (app, _log) = app(dir.path());
            let request = Request::builder()
                .uri("/v1/topics/t%0d%0aX-Forged:%201/offsets")
                .header("host", "127.0.0.1")
                .body(Body::empty())
                .unwrap();
            assert_eq!(app.oneshot(request).await.unwrap().status(), 400);
        })
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let access: Vec<&serde_json::Value> = lines.iter().filter(|l| l["target"] == "tierlog::access").collect();
    assert_eq!(access.len(), 1, "{text}");
    let fields = &access[0]["fields"];
    assert_eq!((fields["method"].as_str(), fields["status"].as_u64()), (Some("GET"), Some(400)), "{text}");
    assert_eq!(fields["path"], "/v1/topics/t%0d%0aX-Forged:%201/offsets", "the raw path: {text}");
    assert!(!text.contains('\r') && !text.contains("\\r"), "nothing decoded reaches the log: {text}");
}
