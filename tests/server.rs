//! `tierlog serve` as a real process on a loopback port: the HTTP API round trip, live
//! following, bad input answered with clear 4xx, SIGTERM and kill -9 losing nothing that was
//! acknowledged.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::Server;
use common::{BIN, json_lines, run_with_stdin};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn produce(c: &reqwest::Client, s: &Server, topic: &str, body: String) -> reqwest::Response {
    c.post(s.url(&format!("/v1/topics/{topic}/records")))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn fetch_all(c: &reqwest::Client, s: &Server, topic: &str, partition: u32) -> Vec<Value> {
    let text = c
        .get(s.url(&format!("/v1/topics/{topic}/partitions/{partition}/records")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn produce_fetch_offsets_and_groups_round_trip_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let r = c.post(s.url("/v1/topics")).json(&json!({"name": "pay", "partitions": 2})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let body =
        "{\"key\":\"a\",\"value\":{\"x\":1},\"timestamp\":1000}\n{\"key\":\"a\",\"value\":\"y\",\"timestamp\":2000}\n";
    let r = produce(&c, &s, "pay", body.into()).await;
    assert_eq!(r.status(), 200);
    let acks: Vec<Value> = r.json().await.unwrap();
    let p = acks[0]["partition"].as_u64().unwrap() as u32;
    assert_eq!(acks[0]["count"], 2);
    let records = fetch_all(&c, &s, "pay", p).await;
    assert_eq!(records[0]["value"], "{\"x\":1}");
    assert_eq!(records[1]["offset"], 1);
    let offsets: Vec<Value> =
        c.get(s.url("/v1/topics/pay/offsets?time=1500")).send().await.unwrap().json().await.unwrap();
    assert_eq!(offsets[p as usize]["offset"], 1);
    let windowed = c
        .get(s.url(&format!("/v1/topics/pay/partitions/{p}/records?from_time=1500&to_offset=2")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(windowed.lines().count(), 1);
    let r = c
        .post(s.url("/v1/groups/audit/offsets"))
        .json(&json!({"topic": "pay", "offsets": {p.to_string(): 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let g: Value = c.get(s.url("/v1/groups/audit/offsets?topic=pay")).send().await.unwrap().json().await.unwrap();
    assert_eq!(g["offsets"][p.to_string()], 1);
    let metrics = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("tierlog_appended_records_total 2"), "{metrics}");
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn follow_stream_delivers_a_new_record_well_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "live", "partitions": 1})).send().await.unwrap();
    let mut stream =
        c.get(s.url("/v1/topics/live/partitions/0/records?from_offset=0&follow=true")).send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    produce(&c, &s, "live", "{\"value\":\"now\"}\n".into()).await;
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await.unwrap().unwrap().unwrap();
    let elapsed = started.elapsed();
    let record: Value = serde_json::from_slice(&chunk).unwrap();
    assert_eq!(record["value"], "now");
    assert!(elapsed < Duration::from_millis(500), "delivered after {elapsed:?}");
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_answers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[("TIERLOG_SERVER_MAX_BODY_BYTES", "4096"), ("TIERLOG_SERVER_MAX_FOLLOW_STREAMS", "1")],
    );
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(s.url("/v1/topics/t/records"))
                .header("content-type", "application/x-ndjson")
                .body("{\"value\":1}\n{oops\n"),
            400,
            "line 2",
        ),
        (c.post(s.url("/v1/topics/t/records")).header("content-type", "text/plain").body("x"), 415, "content-type"),
        (
            c.post(s.url("/v1/topics/nope/records")).header("content-type", "application/json").body("[{\"value\":1}]"),
            404,
            "does not exist",
        ),
        (
            c.post(s.url("/v1/topics/t/records"))
                .header("content-type", "application/json")
                .body(vec![b'[', 0xff, b']']),
            400,
            "UTF-8",
        ),
        (
            c.post(s.url("/v1/topics/t/records"))
                .header("content-type", "application/x-ndjson")
                .body("x".repeat(10_000)),
            413,
            "max_body_bytes",
        ),
        (c.get(s.url("/v1/topics/t/partitions/0/records?from_offset=-5")), 400, "from_offset"),
        (c.get(s.url("/v1/topics/t/partitions/0/records?from_time=yesterday")), 400, "from_time"),
        (c.get(s.url("/v1/topics/t/partitions/9/records")), 404, "no partition 9"),
        (c.get(s.url("/v1/topics/t/partitions/0/records?from_offset=99999999999999999999999")), 400, "from_offset"),
        (c.get(s.url("/v1/topics/..%2Fetc/offsets")), 400, "invalid topic name"),
        (c.post(s.url("/v1/topics")).json(&json!({"name": "a/b"})), 400, "invalid topic name"),
        (c.post(s.url("/v1/topics")).header("content-type", "application/json").body("{"), 400, "expected"),
        (
            c.post(s.url("/v1/topics")).header("content-type", "text/plain").body(r#"{"name":"web"}"#),
            415,
            "content-type",
        ),
        (c.post(s.url("/v1/topics")).body(r#"{"name":"web"}"#), 415, "application/json"),
        (
            c.post(s.url("/v1/groups/g/offsets"))
                .header("content-type", "text/plain")
                .body(r#"{"topic":"t","offsets":{"0":1}}"#),
            415,
            "content-type",
        ),
        (c.get(s.url("/v1/topics")).header("host", "rebound.example:7070"), 421, "DNS rebinding"),
        (c.delete(s.url("/v1/topics")), 405, "Method Not Allowed"),
        (c.get(s.url("/v1/topics/t/partitions/0/records?from_offset=1&from_offset=2")), 400, "duplicate"),
        (c.post(s.url("/v1/topics")).header("host", "rebound.example").json(&json!({"name": "web"})), 421, "Host"),
    ];
    for (request, status, needle) in cases {
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{status}: {body}");
    }
    let topics: Value = c.get(s.url("/v1/topics")).send().await.unwrap().json().await.unwrap();
    assert!(!topics.to_string().contains("\"web\""), "a refused request created nothing: {topics}");
    let _first = c.get(s.url("/v1/topics/t/partitions/0/records?follow=true")).send().await.unwrap();
    let second = c.get(s.url("/v1/topics/t/partitions/0/records?follow=true")).send().await.unwrap();
    assert_eq!(second.status(), 429, "follow streams are limited");
    assert_eq!(c.get(s.url("/healthz")).send().await.unwrap().status(), 200, "still serving");
}

#[test]
fn refuses_a_non_loopback_address_without_explicit_permission() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(BIN).arg("--data-dir").arg(dir.path()).args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_non_loopback"));
}

/// Sends appends from a task until the server stops answering; returns every acknowledged
/// (value id → offset).
async fn append_until_gone(base: String, topic: &'static str, from: u64) -> HashMap<u64, u64> {
    let c = client();
    let mut acked = HashMap::new();
    for id in from.. {
        let r = c
            .post(format!("{base}/v1/topics/{topic}/records?partition=0"))
            .header("content-type", "application/x-ndjson")
            .body(format!("{{\"value\":\"id-{id}\"}}\n"))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => {
                let acks: Vec<Value> = r.json().await.unwrap_or_default();
                if let Some(offset) = acks.first().and_then(|a| a["first_offset"].as_u64()) {
                    acked.insert(id, offset);
                }
            }
            _ => return acked,
        }
    }
    acked
}

async fn check_exactly_once(dir: &Path, topic: &str, acked: &HashMap<u64, u64>) {
    let s = Server::start(dir, &[]);
    let records = fetch_all(&client(), &s, topic, 0).await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"].as_u64().unwrap(), i as u64, "dense offsets");
        let id: u64 = r["value"].as_str().unwrap().trim_start_matches("id-").parse().unwrap();
        *seen.entry(id).or_default() += 1;
    }
    for (id, offset) in acked {
        assert_eq!(seen.get(id), Some(&1), "acknowledged id-{id} present exactly once");
        assert_eq!(records[*offset as usize]["value"], format!("id-{id}"), "at the acknowledged offset");
    }
}

#[tokio::test]
async fn sigterm_finishes_in_flight_appends_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    client().post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    let appender = tokio::spawn(append_until_gone(s.base.clone(), "t", 0));
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.signal("-TERM");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let acked = appender.await.unwrap();
    assert!(!acked.is_empty());
    check_exactly_once(dir.path(), "t", &acked).await;
}

#[tokio::test]
async fn kill_9_during_http_appends_loses_nothing_acknowledged() {
    let rounds: u64 = std::env::var("TIERLOG_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = HashMap::new();
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("http crash test: {rounds} rounds, seed {seed}");
    for round in 0..rounds {
        let mut s = Server::start(dir.path(), &[]);
        if round == 0 {
            client().post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
        }
        let appender = tokio::spawn(append_until_gone(s.base.clone(), "t", round * 1_000_000));
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(50 + (seed >> 33) % 300)).await;
        s.signal("-KILL");
        s.child.wait().unwrap();
        acked.extend(appender.await.unwrap());
    }
    assert!(acked.len() as u64 > rounds, "appends were acknowledged between kills");
    check_exactly_once(dir.path(), "t", &acked).await;
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn bearer_tokens_grant_per_topic_rights_and_historical_reads_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntokens = [\n  {{ name = \"ingest\", token_sha256 = \"{}\", write = [\"pay*\"] }},\n  {{ name = \"auditor\", token_sha256 = \"{}\", read = [\"*\"] }},\n  {{ name = \"ops\", token_sha256 = \"{}\", admin = true }},\n  {{ name = \"billing\", token_sha256 = \"{}\", read = [\"pay*\"], groups = [\"billing-*\"] }},\n]\n",
            sha256_hex("w-token"),
            sha256_hex("r-token"),
            sha256_hex("a-token"),
            sha256_hex("g-token")
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &[("TIERLOG_CONFIG", config.to_str().unwrap())]);
    let c = client();
    let create = |token: Option<&'static str>| {
        let r = c.post(s.url("/v1/topics")).json(&json!({"name": "payments", "partitions": 1}));
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    assert_eq!(create(None).send().await.unwrap().status(), 401);
    assert_eq!(create(Some("wrong")).send().await.unwrap().status(), 401);
    assert_eq!(create(Some("w-token")).send().await.unwrap().status(), 403);
    assert_eq!(create(Some("a-token")).send().await.unwrap().status(), 201);
    let produce = |token: &'static str| {
        c.post(s.url("/v1/topics/payments/records"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body("{\"value\":\"x\"}\n")
    };
    assert_eq!(produce("w-token").send().await.unwrap().status(), 200);
    assert_eq!(produce("r-token").send().await.unwrap().status(), 403);
    let fetch =
        |token: &'static str| c.get(s.url("/v1/topics/payments/partitions/0/records?from_offset=0")).bearer_auth(token);
    assert_eq!(fetch("w-token").send().await.unwrap().status(), 403);
    let r = fetch("r-token").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"value\":\"x\""));
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let line: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (line["who"].as_str(), line["topic"].as_str(), line["from_offset"].as_u64()),
        (Some("auditor"), Some("payments"), Some(0))
    );
    assert!(!audit.contains("r-token"), "tokens never reach the audit log");
    // Listing topics: an unknown token is refused (it got 200 [] before), a known one sees
    // what it may read.
    // A name with CR/LF is refused as a name (400) before rights are checked and logged:
    // the refusal's log line once carried the raw, percent-decoded name.
    let injected = c.get(s.url("/v1/topics/x%0D%0Aforged%20line/offsets")).bearer_auth("w-token").send().await.unwrap();
    assert_eq!(injected.status(), 400);
    assert!(injected.text().await.unwrap().contains("invalid topic name"));
    // Moving a group's offsets needs a right on the group, not just read on the topic; every
    // commit is audited.
    let commit = |token: &'static str, group: &str| {
        c.post(s.url(&format!("/v1/groups/{group}/offsets")))
            .bearer_auth(token)
            .json(&json!({"topic": "payments", "offsets": {"0": 1}}))
    };
    assert_eq!(commit("r-token", "billing-eu").send().await.unwrap().status(), 403);
    assert_eq!(commit("g-token", "fraud").send().await.unwrap().status(), 403);
    assert_eq!(commit("g-token", "billing-eu").send().await.unwrap().status(), 200);
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let line: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (line["action"].as_str(), line["who"].as_str(), line["group"].as_str(), &line["offsets"]),
        (Some("commit"), Some("billing"), Some("billing-eu"), &json!({"0": 1}))
    );
    let list = |token: &'static str| c.get(s.url("/v1/topics")).bearer_auth(token);
    assert_eq!(list("wrong").send().await.unwrap().status(), 401);
    let listed: Value = list("r-token").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["topic"], "payments", "{listed}");
}

#[tokio::test]
async fn server_sent_events_frame_each_record_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    produce(&c, &s, "t", "{\"value\":\"a\"}\n{\"value\":\"b\"}\n".into()).await;
    let r = c
        .get(s.url("/v1/topics/t/partitions/0/records?from_offset=0"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    // retry:, the two records, event: end (see tests/http_router.rs for resuming).
    assert_eq!(events.len(), 4, "{body}");
    assert_eq!(events[0], "retry: 3000");
    assert!(events[2].starts_with("id: 1\ndata: {"), "{body}");
    assert_eq!(events[3], "event: end\nid: 1\ndata: {}");
}

#[tokio::test]
async fn appends_are_refused_with_429_while_tiering_is_behind_the_local_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_tiered(
        dir.path(),
        &[("TIERLOG_TIERING_INTERVAL_MS", "3600000"), ("TIERLOG_SERVER_MAX_UNTIERED_BYTES", "2048")],
    );
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    let big = format!("{{\"value\":\"{}\"}}\n", "x".repeat(4000));
    assert_eq!(produce(&c, &s, "t", big.clone()).await.status(), 200, "under the budget");
    let r = produce(&c, &s, "t", big).await;
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("max_untiered_bytes"), "{body}");
}

#[test]
fn the_cli_against_a_server_prints_what_it_prints_locally() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let cli = |args: &[&str], stdin: &str| {
        let out = run_with_stdin(
            Command::new(BIN).args(["--server", &s.base]).args(args).env_remove("TIERLOG_CONFIG"),
            stdin,
        );
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out)
    };
    assert_eq!(
        cli(&["topic", "create", "t", "--partitions", "2"], ""),
        vec![json!({"topic":"t","partitions":2,"created":true})]
    );
    let acks = cli(&["produce", "t", "--partition", "1"], "a\nb\n");
    assert_eq!(acks, vec![json!({"partition":1,"first_offset":0,"last_offset":1,"count":2})]);
    let json_acks =
        cli(&["produce", "t", "--input-format", "json"], "{\"key\":\"k\",\"value\":{\"n\":1},\"timestamp\":5}\n");
    assert_eq!(json_acks[0]["count"], 1);
    let records = cli(&["consume", "t", "--partition", "1"], "");
    assert_eq!(records.iter().map(|r| r["value"].clone()).collect::<Vec<_>>(), vec![json!("a"), json!("b")]);
    let grouped = cli(&["consume", "t", "--partition", "1", "--group", "g", "--max-records", "1"], "");
    assert_eq!(grouped[0]["offset"], 0);
    let resumed = cli(&["consume", "t", "--partition", "1", "--group", "g"], "");
    assert_eq!(
        resumed.iter().map(|r| r["offset"].clone()).collect::<Vec<_>>(),
        vec![json!(1)],
        "the group resumes after what it printed"
    );
    let offsets = cli(&["offsets", "t"], "");
    assert_eq!(offsets[1], json!({"partition":1,"start":0,"end":2}));
    assert_eq!(cli(&["topic", "list"], ""), vec![json!({"topic":"t","partitions":2})]);
}

#[tokio::test]
async fn records_round_trip_over_http_across_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_tiered(
        dir.path(),
        &[
            ("TIERLOG_TIERING_INTERVAL_MS", "100"),
            ("TIERLOG_TIERING_LOCAL_RETENTION_BYTES", "0"),
            ("TIERLOG_SEGMENT_MAX_BYTES", "8192"),
        ],
    );
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    for chunk in 0..10 {
        let body: String =
            (0..50).map(|i| format!("{{\"value\":\"record-{}-{}\"}}\n", chunk * 50 + i, "p".repeat(100))).collect();
        assert_eq!(produce(&c, &s, "t", body).await.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let topic: Value = c.get(s.url("/v1/topics/t")).send().await.unwrap().json().await.unwrap();
        if topic["partitions"][0]["local"]["start_offset"].as_u64().unwrap() > 100 {
            break;
        }
        assert!(Instant::now() < deadline, "background tiering did not move old segments: {topic}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = fetch_all(&c, &s, "t", 0).await;
    assert_eq!(records.len(), 500, "everything is served, from the bucket and from local disk");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i as u64);
        assert!(r["value"].as_str().unwrap().starts_with(&format!("record-{i}-")));
    }
    let metrics = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("tierlog_remote_chunk_gets_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with("tierlog_uploaded_segments_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // What Prometheus's own Python client makes of the text: every family parses, with its type.
    if let Some(families) = prometheus_parse(&metrics) {
        for (family, kind) in [
            ("tierlog_http_request_duration_seconds", "histogram"),
            ("tierlog_remote_chunk_gets", "counter"),
            ("tierlog_uploaded_segments", "counter"),
            ("tierlog_partition_end_offset", "gauge"),
            ("tierlog_remote_segments_expired", "counter"),
            ("tierlog_remote_expired_objects_deleted", "counter"),
            ("tierlog_legal_holds", "gauge"),
        ] {
            assert_eq!(families[family]["type"], kind, "{family} in {families}");
        }
        let produced = [("route", "/v1/topics/{topic}/records"), ("code", "200")];
        let buckets = samples(&families, "tierlog_http_request_duration_seconds", "_bucket", &produced);
        let counts: Vec<f64> = buckets.iter().map(|b| b["value"].as_f64().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]) && counts.last() == Some(&10.0), "cumulative: {buckets:?}");
    }
}

/// `/metrics` parsed by prometheus-client (Python): family → {type, samples: [{name, labels,
/// value}]}; `None` when it is not installed and `KAFKA_CLIENTS_OPTIONAL=1` allows skipping.
fn prometheus_parse(text: &str) -> Option<Value> {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    assert f.name not in out, "family listed twice: " + f.name
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]
    out[f.name] = {"type": f.type, "samples": samples}
print(json.dumps(out))
"#;
    let python = std::env::var("KAFKA_PYTHON").unwrap_or_else(|_| "python3".into());
    let installed = Command::new(&python).args(["-c", "import prometheus_client"]).status().is_ok_and(|s| s.success());
    if !installed {
        assert_eq!(
            std::env::var("KAFKA_CLIENTS_OPTIONAL").as_deref(),
            Ok("1"),
            "prometheus-client is not installed (pip install prometheus-client), or set KAFKA_CLIENTS_OPTIONAL=1"
        );
        return None;
    }
    let out = run_with_stdin(Command::new(&python).args(["-c", SCRIPT]), text);
    assert!(out.status.success(), "prometheus-client refused /metrics: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// A server whose config has `settings` under `[server]` and a token per `(name, secret,
/// rights)`, data in `dir/data`, and topic `t` (one partition) created with the admin token
/// `a-token`, which must be among them.
async fn start_with_tokens_and_topic(
    dir: &Path,
    settings: &str,
    tokens: &[(&str, &str, &str)],
    c: &reqwest::Client,
) -> Server {
    let entries: String = tokens
        .iter()
        .map(|(name, secret, rights)| {
            format!("  {{ name = \"{name}\", token_sha256 = \"{}\", {rights} }},\n", sha256_hex(secret))
        })
        .collect();
    let config = dir.join("auth.toml");
    std::fs::write(&config, format!("[server]\n{settings}\ntokens = [\n{entries}]\n")).unwrap();
    let s = Server::start(&dir.join("data"), &[("TIERLOG_CONFIG", config.to_str().unwrap())]);
    let created = c.post(s.url("/v1/topics")).bearer_auth("a-token").json(&json!({"name": "t", "partitions": 1}));
    assert_eq!(created.send().await.unwrap().status(), 201);
    s
}

/// The samples of `family` named `family` + `suffix` whose labels include every pair of `labels`.
fn samples<'a>(families: &'a Value, family: &str, suffix: &str, labels: &[(&str, &str)]) -> Vec<&'a Value> {
    let all = families[family]["samples"].as_array().unwrap_or_else(|| panic!("no family {family}: {families}"));
    let name = format!("{family}{suffix}");
    all.iter().filter(|s| s["name"] == name.as_str() && labels.iter().all(|(k, v)| s["labels"][*k] == *v)).collect()
}

/// The value of the one sample of `family` + `suffix` with `labels`.
fn sample(families: &Value, family: &str, suffix: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(families, family, suffix, labels);
    assert_eq!(found.len(), 1, "{family}{suffix} {labels:?}: {found:?}");
    found[0]["value"].as_f64().unwrap()
}

/// Every HTTP request is counted once, in one place, by method, route template and status: a
/// refused produce was counted twice (by the handler and by the token check) and the errors
/// of most routes not at all. Unknown paths share one route label, and no raw path (with a
/// client's topic name or partition) becomes a label. With `server.metrics_requires_token`,
/// `/metrics` itself needs a token with the metrics right.
#[tokio::test]
async fn every_request_is_counted_once_by_route_and_status_and_metrics_can_require_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let tokens = [
        ("ops", "a-token", "admin = true"),
        ("ingest", "w-token", "write = [\"t\"]"),
        ("prometheus", "p-token", "metrics = true"),
    ];
    let s = start_with_tokens_and_topic(dir.path(), "metrics_requires_token = true", &tokens, &c).await;
    let produce = c.post(s.url("/v1/topics/t/records")).header("content-type", "application/x-ndjson");
    assert_eq!(produce.try_clone().unwrap().body("{\"value\":\"x\"}\n").send().await.unwrap().status(), 401);
    let accepted = produce.bearer_auth("w-token").body("{\"value\":\"x\"}\n").send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    let unknown = c.get(s.url("/no/such/route-7f3a")).bearer_auth("a-token").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let no_partition = c.get(s.url("/v1/topics/t/partitions/7/records")).bearer_auth("a-token").send().await.unwrap();
    assert_eq!(no_partition.status(), 404);
    assert_eq!(c.get(s.url("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(s.url("/metrics")).bearer_auth("w-token").send().await.unwrap().status(), 403);
    let scraped = c.get(s.url("/metrics")).bearer_auth("p-token").send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    for line in [
        r#"tierlog_http_requests_total{method="POST",route="/v1/topics",code="201"} 1"#,
        r#"tierlog_http_requests_total{method="POST",route="/v1/topics/{topic}/records",code="401"} 1"#,
        r#"tierlog_http_requests_total{method="POST",route="/v1/topics/{topic}/records",code="200"} 1"#,
        r#"tierlog_http_requests_total{method="GET",route="unmatched",code="404"} 1"#,
        r#"tierlog_http_requests_total{method="GET",route="/v1/topics/{topic}/partitions/{partition}/records",code="404"} 1"#,
        r#"tierlog_http_requests_total{method="GET",route="/metrics",code="401"} 1"#,
        r#"tierlog_http_requests_total{method="GET",route="/metrics",code="403"} 1"#,
        "tierlog_http_client_errors_total 5",
        "tierlog_http_server_errors_total 0",
        "tierlog_produce_requests_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from /metrics:\n{text}");
    }
    assert!(!text.contains("route-7f3a") && !text.contains("partitions/7"), "a raw path became a label:\n{text}");
    if let Some(families) = prometheus_parse(&text) {
        assert_eq!(families["tierlog_http_requests"]["type"], "counter");
        assert_eq!(families["tierlog_http_request_duration_seconds"]["type"], "histogram");
        let refused = [("method", "POST"), ("route", "/v1/topics/{topic}/records"), ("code", "401")];
        assert_eq!(sample(&families, "tierlog_http_requests", "_total", &refused), 1.0);
        assert_eq!(sample(&families, "tierlog_http_request_duration_seconds", "_count", &refused), 1.0);
        let inf = [("route", "unmatched"), ("code", "404"), ("le", "+Inf")];
        assert_eq!(sample(&families, "tierlog_http_request_duration_seconds", "_bucket", &inf), 1.0);
    }
}

/// `server.metrics_requires_token` without tokens would lock every scraper out: refused at start.
#[test]
fn metrics_requires_token_without_tokens_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
        cmd.env_remove(k);
    }
    cmd.env("TIERLOG_SERVER_METRICS_REQUIRES_TOKEN", "true");
    let out = run_with_stdin(&mut cmd, "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("server.metrics_requires_token"), "{stderr}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        match entry.file_type().unwrap().is_dir() {
            true => files.extend(files_under(&entry.path())),
            false => files.push(entry.path()),
        }
    }
    files
}

/// Remote GETs are timed and their failures counted (an object the manifest lists that the
/// store cannot serve), each partition says when its tiering last succeeded, and the process
/// figures Prometheus clients export are there; all of it parsed by Prometheus's own parser.
#[tokio::test]
async fn remote_get_errors_tiering_success_and_process_figures_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let started_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let s = Server::start_tiered(
        dir.path(),
        &[
            ("TIERLOG_TIERING_INTERVAL_MS", "100"),
            ("TIERLOG_TIERING_LOCAL_RETENTION_BYTES", "0"),
            ("TIERLOG_SEGMENT_MAX_BYTES", "8192"),
        ],
    );
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    let body: String = (0..200).map(|i| format!("{{\"value\":\"record-{i}-{}\"}}\n", "p".repeat(100))).collect();
    assert_eq!(produce(&c, &s, "t", body).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let topic: Value = c.get(s.url("/v1/topics/t")).send().await.unwrap().json().await.unwrap();
        // A pass records its success when it ends, after it has deleted the local copies.
        let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let succeeded = text.lines().any(|l| {
            l.starts_with("tierlog_tiering_last_success_seconds{")
                && l.contains("topic=\"t\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0)
        });
        if topic["partitions"][0]["local"]["start_offset"].as_u64().unwrap() > 0 && succeeded {
            break;
        }
        assert!(Instant::now() < deadline, "background tiering did not move old segments: {topic}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let objects: Vec<_> = files_under(&dir.path().join("remote"))
        .into_iter()
        .filter(|f| f.to_string_lossy().contains("/segments/") && f.extension().is_some_and(|e| e == "zst"))
        .collect();
    assert!(!objects.is_empty(), "no segment object in the bucket");
    for object in &objects {
        std::fs::write(object, b"").unwrap(); // every ranged GET of it now fails
    }
    let read = c.get(s.url("/v1/topics/t/partitions/0/records?from_offset=0")).send().await.unwrap();
    assert!(read.status().is_server_error(), "{}", read.status());
    let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let Some(families) = prometheus_parse(&text) else { return };
    assert!(sample(&families, "tierlog_remote_get_errors", "_total", &[]) >= 1.0, "{text}");
    let gets = sample(&families, "tierlog_remote_get_duration_seconds", "_count", &[]);
    let buckets = samples(&families, "tierlog_remote_get_duration_seconds", "_bucket", &[]);
    let bound = |b: &Value| b["labels"]["le"].as_str().unwrap().parse::<f64>().unwrap();
    let last_finite = buckets.iter().filter(|b| bound(b).is_finite()).max_by(|a, b| bound(a).total_cmp(&bound(b)));
    let last_finite = last_finite.unwrap_or_else(|| panic!("no buckets: {text}"));
    assert!(gets >= 1.0 && bound(last_finite) == 60.0 && last_finite["value"] == gets, "{text}");
    let tiered = sample(&families, "tierlog_tiering_last_success_seconds", "", &[("topic", "t"), ("partition", "0")]);
    assert!((started_s - 1.0..=now_s + 1.0).contains(&tiered), "{tiered} not in [{started_s}, {now_s}]");
    assert_eq!(families["tierlog_tiering_last_success_seconds"]["type"], "gauge");
    let process_start = sample(&families, "process_start_time_seconds", "", &[]);
    assert!((started_s - 5.0..=now_s + 1.0).contains(&process_start), "{process_start} vs {started_s}");
    assert!(sample(&families, "process_resident_memory_bytes", "", &[]) > 1e6, "{text}");
    assert!(sample(&families, "process_open_fds", "", &[]) > 3.0, "{text}");
    assert!(sample(&families, "process_max_fds", "", &[]) > 3.0, "{text}");
    assert!(sample(&families, "process_cpu_seconds", "_total", &[]) > 0.0, "{text}");
    assert_eq!(families["process_cpu_seconds"]["type"], "counter");
}

/// `serve`'s start and stop lines go through the log: with `--log-format json` each is a JSON
/// object naming where it listens; a plain `eprintln!` broke a log shipper's JSON stream.
#[test]
fn start_and_stop_lines_are_json_with_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--log-format").arg("json").arg("--data-dir").arg(dir.path()).args(["serve", "--listen", "127.0.0.1:0"]);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
        cmd.env_remove(k);
    }
    cmd.env_remove("RUST_LOG");
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let http = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
        let logged: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if logged["fields"]["message"] == "tierlog serving" {
            assert_eq!(logged["target"], "tierlog::lifecycle");
            let data_dir = logged["fields"]["data_dir"].as_str().unwrap();
            assert!(data_dir.ends_with(dir.path().file_name().unwrap().to_str().unwrap()), "{line}");
            // Where the tiers go (the embedded default here), so an inherited endpoint shows.
            assert!(logged["fields"]["remote"].as_str().unwrap().starts_with("local directory "), "{line}");
            break logged["fields"]["http"].as_str().unwrap().to_string();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let health = runtime.block_on(async { client().get(format!("{http}/healthz")).send().await.unwrap().status() });
    assert_eq!(health, 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let rest: Vec<Value> = stderr.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let messages: Vec<&str> = rest.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"tierlog stopped cleanly"), "{rest:?}");
}

#[test]
fn a_slow_body_is_cut_off_with_408_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("TIERLOG_SERVER_REQUEST_TIMEOUT_MS", "300")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(async {
            client().post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await
        })
        .unwrap();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    write!(slow, "POST /v1/topics/t/records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{{\"val").unwrap();
    let mut answer = vec![0u8; 512];
    let n = slow.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let health = runtime.block_on(async { client().get(s.url("/healthz")).send().await }).unwrap();
    assert_eq!(health.status(), 200);
}

/// 300 clients that open a connection and send half a request line, then nothing: with a
/// connection cap of 64 they would hold every slot forever; the header-read timeout closes
/// them, so a normal client is served within a few seconds (`axum::serve` had no timer, so
/// neither a header timeout nor a cap).
#[test]
fn three_hundred_slow_sockets_do_not_stop_a_normal_client() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[("TIERLOG_SERVER_MAX_CONNECTIONS", "64"), ("TIERLOG_SERVER_HEADER_READ_TIMEOUT_MS", "500")],
    );
    let addr = s.base.trim_start_matches("http://").to_string();
    let slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut socket = std::net::TcpStream::connect(&addr).unwrap();
            socket.write_all(b"GET /v1/topi").unwrap();
            socket
        })
        .collect();
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let health = runtime.block_on(async { client().get(s.url("/healthz")).send().await }).unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(8), "served after {:?}", started.elapsed());
    // And the server let go of them: each one is closed (EOF, perhaps after a 408), not held.
    for mut socket in slow.into_iter().step_by(50) {
        use std::io::Read;
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let closed = socket.read_to_end(&mut rest);
        assert!(closed.is_ok(), "a slow socket is still open after 5 s: {closed:?}");
    }
}

#[tokio::test]
async fn a_record_with_1025_headers_is_refused_with_413_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    c.post(s.url("/v1/topics")).json(&json!({"name": "t", "partitions": 1})).send().await.unwrap();
    let headers =
        |n: usize| -> serde_json::Map<String, Value> { (0..n).map(|i| (format!("h{i}"), Value::from("v"))).collect() };
    let body = format!(
        "{}\n{}\n",
        json!({"value": "ok", "headers": headers(1)}),
        json!({"value": "bad", "headers": headers(1025)})
    );
    let r = produce(&c, &s, "t", body).await;
    let status = r.status().as_u16();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap();
    for needle in ["t/0", "line 2", "1025 headers", "maximum is 1024", "nothing was written"] {
        assert!(error.contains(needle), "{needle:?} missing from: {error}");
    }
    assert!(fetch_all(&c, &s, "t", 0).await.is_empty(), "nothing of the refused request is written");
}

/// Keys whose records go to partitions 0..partitions of topic `t` in `data_dir`.
fn keys_for_partitions(data_dir: &Path, partitions: u32) -> Vec<String> {
    let config = tierlog::config::Config { data_dir: data_dir.to_path_buf(), ..Default::default() };
    let log = tierlog::Log::open_read_only(config).unwrap();
    let topic = log.topic("t").unwrap();
    (0..partitions)
        .map(|p| (0..).map(|i| format!("key-{i}")).find(|k| topic.partition_for(Some(k.as_bytes())) == p).unwrap())
        .collect()
}

#[test]
fn given_an_append_failure_in_the_second_partition_produce_answers_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str], stdin: &str| {
        run_with_stdin(
            Command::new(BIN).arg("--data-dir").arg(dir.path()).args(args).env_remove("TIERLOG_CONFIG"),
            stdin,
        )
    };
    assert!(cli(&["topic", "create", "t", "--partitions", "3"], "").status.success());
    // Partition 1 holds ~1 MiB, past the server's 256 KiB file size limit: its next append fails.
    let filler = format!("{}\n", "f".repeat(1000)).repeat(1100);
    assert!(cli(&["produce", "t", "--partition", "1"], &filler).status.success());
    let keys = keys_for_partitions(dir.path(), 3);
    let body: String = [0, 1, 2].iter().map(|p| format!("{{\"key\":\"{}\",\"value\":\"v{p}\"}}\n", keys[*p])).collect();
    let s = Server::start_with_file_size_limit(dir.path(), 512);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let c = client();
    let r = runtime.block_on(produce(&c, &s, "t", body.clone()));
    let status = r.status().as_u16();
    let answer: Value = runtime.block_on(r.json()).unwrap();
    assert_eq!(status, 500, "an I/O error keeps its status: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("t/1"), "{answer}");
    assert_eq!(answer["written"], json!([{"partition": 0, "first_offset": 0, "last_offset": 0, "count": 1}]));
    assert_eq!(answer["failed"]["partition"], 1, "{answer}");
    assert!(answer["failed"]["error"].as_str().unwrap().contains("File too large"), "{answer}");
    let data_dir = dir.path().canonicalize().unwrap().display().to_string();
    assert!(!answer.to_string().contains(&data_dir), "a 5xx body names no server directory: {answer}");
    assert!(answer.to_string().contains("<data_dir>"), "{answer}");
    assert_eq!(answer["not_attempted"], json!([2]));
    assert_eq!(answer["unwritten_records"], json!([1, 2]), "positions in the request");
    let values = |p| runtime.block_on(fetch_all(&c, &s, "t", p)).iter().map(|r| r["value"].clone()).collect::<Vec<_>>();
    assert_eq!(values(0), vec![json!("v0")]);
    assert!(values(2).is_empty());

    // The CLI against the server reports the same, in the same form as locally.
    let out =
        run_with_stdin(Command::new(BIN).args(["--server", &s.base, "produce", "t", "--input-format", "json"]), &body);
    assert!(!out.status.success());
    let lines = json_lines(&out);
    assert_eq!(lines[0], json!({"partition": 0, "first_offset": 1, "last_offset": 1, "count": 1}));
    assert_eq!(lines[1]["failed"]["partition"], 1, "{}", lines[1]);
    assert_eq!(lines[1]["not_attempted"], json!([2]));
    assert_eq!(lines[1]["not_written_lines"], "2-3,4-");
}

/// One token cannot take every follow slot: with tokens configured, a token holds at most
/// `server.max_follow_streams_per_token` follow streams; another token still gets one, and a
/// closed stream gives its slot back.
#[tokio::test]
async fn one_token_cannot_hold_every_follow_stream() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let tokens = [("ops", "a-token", "admin = true"), ("tail", "t-token", "read = [\"*\"]")];
    let s = start_with_tokens_and_topic(dir.path(), "max_follow_streams_per_token = 2", &tokens, &c).await;
    let follow = |token: &'static str| {
        c.get(s.url("/v1/topics/t/partitions/0/records?from_offset=0&follow=true")).bearer_auth(token).send()
    };
    let first = follow("t-token").await.unwrap();
    let second = follow("t-token").await.unwrap();
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    let third = follow("t-token").await.unwrap();
    assert_eq!(third.status(), 429);
    let body = third.text().await.unwrap();
    assert!(body.contains("max_follow_streams_per_token = 2"), "{body}");
    assert_eq!(follow("a-token").await.unwrap().status(), 200, "another token still follows");
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let again = follow("t-token").await.unwrap();
        if again.status() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a closed stream never gave its slot back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A SIGTERM that comes the moment the server says it listens is a clean shutdown, not a
/// kill: the handler is installed before the announcement (it was installed when the
/// shutdown future was first polled, after it, and CI once caught the server dying by the
/// signal). Twenty starts, each stopped at once.
#[test]
fn sigterm_right_after_the_listening_line_is_a_clean_shutdown() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Server::start(dir.path(), &[]);
        s.signal("-TERM");
        let status = s.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

/// `topic alter --server` changes a running server's topic at once: appends after it roll at
/// the new `segment.bytes`; a local `topic alter` on the served directory is refused by the
/// writer lock, naming what to do.
#[test]
fn topic_alter_through_a_running_server_applies_to_its_live_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let cli = |args: &[&str], stdin: &str| {
        let out = run_with_stdin(
            Command::new(BIN).args(["--server", &s.base]).args(args).env_remove("TIERLOG_CONFIG"),
            stdin,
        );
        (out.status.success(), json_lines(&out), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(cli(&["topic", "create", "t", "--partitions", "1"], "").0);
    let line = format!("{}\n", "v".repeat(500));
    let segments = || {
        let files = std::fs::read_dir(dir.path().join("topics/t/0")).unwrap();
        files.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".log")).count()
    };
    for _ in 0..10 {
        assert!(cli(&["produce", "t"], &line).0);
    }
    assert_eq!(segments(), 1);

    let (ok, out, err) = cli(&["topic", "alter", "t", "--set", "segment.bytes=4096", "--set", "segment.ms=60000"], "");
    assert!(ok, "{err}");
    assert_eq!(out[0]["settings"]["segment.bytes"], json!({"value": 4096, "source": "topic"}), "{out:?}");
    for _ in 0..20 {
        assert!(cli(&["produce", "t"], &line).0);
    }
    assert!(segments() >= 3, "appends after the alter roll at 4 KiB: {} segments", segments());
    let (ok, described, _) = cli(&["topic", "describe", "t"], "");
    assert!(ok);
    assert_eq!(described[0]["settings"]["segment.ms"], json!({"value": 60000, "source": "topic"}));
    assert_eq!(described[1]["partition"], 0, "then the partitions, as before");

    let (ok, _, err) = cli(&["topic", "alter", "t", "--set", "message.timestamp.type=LogAppendTime"], "");
    assert!(!ok && err.contains("cannot be changed after the topic is created"), "{err}");
    let local = run_with_stdin(
        Command::new(BIN).arg("--data-dir").arg(dir.path()).args(["topic", "alter", "t", "--unset", "segment.ms"]),
        "",
    );
    let err = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success() && err.contains("locked by another tierlog process"), "{err}");
}
