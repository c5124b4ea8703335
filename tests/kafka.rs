//! The Kafka listener of `tierlog serve` as a real process, proven with clients nobody here
//! wrote (`kcat`, `kafka-python`) and with raw protocol requests for the error paths:
//! records round-trip with keys, headers and timestamps and read the same through HTTP;
//! records tiered to the bucket are consumed again through Kafka; time lookups equal
//! `tierlog offsets --time`; bad requests get Kafka error codes; malformed frames close only
//! their own connection.
//!
//! The client tools are required: a missing `kcat` or `kafka-python` fails the test (CI installs
//! them, see .ci/run) unless `KAFKA_CLIENTS_OPTIONAL=1`, which skips with a message.
//! `KAFKA_PYTHON` names the Python that has `kafka-python` (default `python3`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{BIN, json_lines, run_with_stdin};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use serde_json::{Value, json};

struct Server {
    child: Child,
    http: String,
    kafka: String,
}

impl Server {
    /// `tierlog serve` with HTTP and Kafka on ephemeral loopback ports.
    fn start(data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(data_dir).args(["serve", "--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"]);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
            cmd.env_remove(k);
        }
        cmd.env("TIERLOG_TIERING_ENABLED", "false").envs(extra_env.iter().copied());
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut server = Server { child, http: String::new(), kafka: String::new() };
        let mut line = String::new();
        while server.http.is_empty() {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
            if let Some(kafka) = common::announced(&line, "kafka") {
                server.kafka = kafka;
            }
            if let Some(url) = common::announced(&line, "http") {
                server.http = url;
            }
        }
        assert!(!server.kafka.is_empty(), "no Kafka listener announced");
        std::thread::spawn(move || for _ in stderr.lines() {});
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// SIGTERM, then wait for the clean exit (releases the data directory's lock).
    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request from a synchronous test: (status, body).
fn http(method: reqwest::Method, url: String, content_type: &str, body: String) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let response =
            client.request(method, url).header("content-type", content_type).body(body).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    })
}

fn get_json(s: &Server, path: &str) -> Value {
    serde_json::from_str(&http(reqwest::Method::GET, s.url(path), "application/json", String::new()).1).unwrap()
}

fn post_records(url: String, ndjson: String) -> u16 {
    http(reqwest::Method::POST, url, "application/x-ndjson", ndjson).0
}

fn create_topic(s: &Server, name: &str, partitions: u32) {
    let body = json!({"name": name, "partitions": partitions}).to_string();
    let (status, text) = http(reqwest::Method::POST, s.url("/v1/topics"), "application/json", body);
    assert_eq!(status, 201, "{text}");
}

fn http_records(s: &Server, topic: &str, partition: u32) -> Vec<Value> {
    let path = format!("/v1/topics/{topic}/partitions/{partition}/records");
    let (_, text) = http(reqwest::Method::GET, s.url(&path), "application/json", String::new());
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether a client tool is there; a missing one fails the test unless skipping is allowed.
fn client_available(tool: &str, probe: &mut Command, install: &str) -> bool {
    if probe.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        return true;
    }
    if std::env::var("KAFKA_CLIENTS_OPTIONAL").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {tool} is not installed ({install}); KAFKA_CLIENTS_OPTIONAL=1 allows skipping");
        return false;
    }
    panic!("{tool} is not installed: {install} (or set KAFKA_CLIENTS_OPTIONAL=1 to skip this test)");
}

/// `tests/kafka_clients/<script>`, when the Python that runs it has `module` (see
/// [`client_available`]); `None` to skip.
fn python_script(module: &str, package: &str, script: &str) -> Option<PathBuf> {
    let probe = &mut Command::new(python());
    client_available(package, probe.args(["-c", &format!("import {module}")]), &format!("pip install {package}"))
        .then(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients").join(script))
}

fn kcat_available() -> bool {
    client_available("kcat", Command::new("kcat").arg("-V"), "apt-get install -y kcat")
}

fn python() -> String {
    std::env::var("KAFKA_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn kcat(args: &[&str], stdin: &str) -> Output {
    let out = run_with_stdin(Command::new("kcat").args(args), stdin);
    assert!(out.status.success(), "kcat {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// kcat consumer lines `offset|key|value|timestamp|headers` (kcat prints an absent key as empty).
const KCAT_FORMAT: &str = "%o|%k|%s|%T|%h\\n";

fn kcat_consume(s: &Server, topic: &str) -> Vec<Vec<String>> {
    let out =
        kcat(&["-b", &s.kafka, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q", "-f", KCAT_FORMAT], "");
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// One HTTP-served record in kcat's line format, for comparison.
fn as_kcat_line(r: &Value) -> Vec<String> {
    let headers = r["headers"].as_object().map_or(String::new(), |h| {
        h.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap())).collect::<Vec<_>>().join(",")
    });
    vec![
        r["offset"].to_string(),
        r["key"].as_str().unwrap_or("").to_string(),
        r["value"].as_str().unwrap().to_string(),
        r["timestamp"].to_string(),
        headers,
    ]
}

#[test]
fn kcat_produces_keyed_records_with_headers_and_consumes_what_http_serves() {
    if !kcat_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let input: String = (0..50).map(|i| format!("key-{i}:value-{i}\n")).collect();
    kcat(&["-b", &s.kafka, "-P", "-t", "t", "-p", "0", "-K:", "-H", "source=kcat", "-H", "trace=abc"], &input);
    let consumed = kcat_consume(&s, "t");
    let served = http_records(&s, "t", 0);
    assert_eq!(consumed.len(), 50, "{consumed:?}");
    assert_eq!(consumed, served.iter().map(as_kcat_line).collect::<Vec<_>>(), "Kafka and HTTP serve the same records");
    for (i, line) in consumed.iter().enumerate() {
        assert_eq!(line[..3], [i.to_string(), format!("key-{i}"), format!("value-{i}")]);
        assert_eq!(line[4], "source=kcat,trace=abc");
    }
}

#[test]
fn kafka_python_round_trips_keys_headers_timestamps_and_group_offsets() {
    let Some(script) = python_script("kafka", "kafka-python", "round_trip.py") else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "py", 1);
    let base_ms = 1_772_546_400_000i64; // 2026-03-03T14:00:00Z
    let out = Command::new(python()).arg(script).args([&s.kafka, "py", "30", &base_ms.to_string()]).output().unwrap();
    assert!(out.status.success(), "kafka-python failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    let (records, summary) = lines.split_at(lines.len() - 1);
    let served = http_records(&s, "py", 0);
    assert_eq!(records.len(), 30);
    for (i, (kafka, http)) in records.iter().zip(&served).enumerate() {
        let key = (i % 10 != 9).then(|| format!("key-{i}"));
        assert_eq!(kafka["offset"], i as u64);
        assert_eq!(kafka["key"], json!(key), "a null key stays null");
        assert_eq!(kafka["value"], format!("value-{i}"));
        assert_eq!(kafka["timestamp"], base_ms + i as i64 * 1000);
        assert_eq!(kafka["headers"], json!([["seq", hex(i.to_string().as_bytes())], ["kind", "00ff62696e"]]));
        assert_eq!(
            (&http["offset"], &http["key"], &http["value"], &http["timestamp"]),
            (&kafka["offset"], &kafka["key"], &kafka["value"], &kafka["timestamp"])
        );
        assert_eq!(http["headers"]["kind"], json!({"base64": "AP9iaW4="}), "binary header bytes kept");
    }
    assert_eq!(summary[0]["committed"], 15);
    let group = get_json(&s, "/v1/groups/py/offsets?topic=py");
    assert_eq!(group["offsets"], json!({"0": 15}), "Kafka commits land in the groups store HTTP reads");
    assert_eq!((&summary[0]["time_offset"], &summary[0]["time_timestamp"]), (&json!(3), &json!(base_ms + 3000)));
}

/// Two kafka-python members of one group split a topic's partitions, consume and commit; when
/// one leaves, the other takes every partition and resumes from the committed offsets: every
/// record delivered exactly once.
#[test]
fn a_two_member_group_rebalances_and_resumes_from_committed_offsets() {
    let Some(script) = python_script("kafka", "kafka-python", "group.py") else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "grp", 4);
    let out = Command::new(python()).arg(script).args([&s.kafka, "grp", "4", "400", "100"]).output().unwrap();
    assert!(out.status.success(), "kafka-python failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary = &json_lines(&out)[0];
    let (a, b) = (summary["split"]["a"].as_array().unwrap(), summary["split"]["b"].as_array().unwrap());
    assert_eq!(a.len() + b.len(), 4, "disjoint halves: {summary}");
    assert!(!a.is_empty() && !b.is_empty(), "{summary}");
    assert_eq!(summary["after_leave"], json!([0, 1, 2, 3]), "{summary}");
    assert_eq!(
        (&summary["records"], &summary["deliveries"]),
        (&json!(500), &json!(500)),
        "no loss, no duplicate: {summary}"
    );
    assert_eq!(summary["errors"], json!([null, null]), "{summary}");
    assert_eq!(summary["values_ok"], true);
    let offsets = get_json(&s, "/v1/groups/grp/offsets?topic=grp");
    assert_eq!(offsets["offsets"], json!({"0": 125, "1": 125, "2": 125, "3": 125}), "commits in the groups store");
    assert_eq!(post_records(s.url("/v1/topics/grp/records?partition=2"), "{\"value\":\"late\"}\n".into()), 200);
    let metrics = http(reqwest::Method::GET, s.url("/metrics"), "text/plain", String::new()).1;
    for (partition, lag) in [(0, 0), (2, 1)] {
        let line = format!("tierlog_consumer_group_lag{{group=\"grp\",topic=\"grp\",partition=\"{partition}\"}} {lag}");
        assert!(metrics.lines().any(|l| l == line), "{line} missing from /metrics:\n{metrics}");
    }
    let mut c = Conn::open(&s);
    let described: DescribeGroupsResponse = c.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("grp"))]),
    );
    assert_eq!(described.groups[0].group_state.as_str(), "Empty", "every member left");
    s.stop();
}

/// confluent-kafka's AdminClient creates a topic (and gets Kafka's errors for a replication
/// factor above 1 and an existing name), reads its settings under Kafka's names, and cannot
/// delete it: tierlog is an archive.
#[test]
fn confluent_admin_creates_topics_describes_configs_and_cannot_delete() {
    let Some(script) = python_script("confluent_kafka", "confluent-kafka", "admin_confluent.py") else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("TIERLOG_LOG_MAX_RECORD_BYTES", "2097152")]);
    let out = Command::new(python()).arg(script).arg(&s.kafka).output().unwrap();
    assert!(out.status.success(), "confluent-kafka failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["adm"], "created", "{summary}");
    assert_eq!(summary["adm-rf3"], "INVALID_REPLICATION_FACTOR", "{summary}");
    assert_eq!(summary["adm-again"], "TOPIC_ALREADY_EXISTS", "{summary}");
    assert_eq!(summary["delete"], "TOPIC_DELETION_DISABLED", "{summary}");
    assert_eq!(summary["partitions"], 3);
    assert_eq!(summary["configs"]["max.message.bytes"], "2097152", "{summary}");
    assert_eq!(summary["configs"]["cleanup.policy"], "delete");
    assert_eq!(get_json(&s, "/v1/topics/adm")["partitions"].as_array().unwrap().len(), 3, "the same log as HTTP");
    s.stop();
}

/// The two clocks through librdkafka: a topic created with `message.timestamp.type =
/// LogAppendTime` (Kafka's topic config, over CreateTopics) shows the client the time the log
/// appended each batch and looks up offsets by it; a CreateTime topic shows the producer's
/// timestamps, byte for byte the batch it sent. Both keep both clocks (HTTP shows them).
#[test]
fn confluent_sees_append_times_on_a_log_append_time_topic_and_producer_times_otherwise() {
    let Some(script) = python_script("confluent_kafka", "confluent-kafka", "timestamps_confluent.py") else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let produced_ms = 1_772_546_400_000i64; // backdated: 2026-03-03T14:00:00Z
    let out = Command::new(python()).arg(script).args([&s.kafka, &produced_ms.to_string()]).output().unwrap();
    assert!(out.status.success(), "confluent-kafka failed: {}", String::from_utf8_lossy(&out.stderr));
    let summary = &json_lines(&out)[0];
    assert_eq!(summary["lat_config"], "LogAppendTime", "{summary}");
    const CREATE_TIME: u64 = 1;
    const LOG_APPEND_TIME: u64 = 2;
    let seen = |topic: &str| -> Vec<(u64, i64)> {
        summary[topic]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["type"].as_u64().unwrap(), r["timestamp"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(seen("cre"), (0..5).map(|i| (CREATE_TIME, produced_ms + i)).collect::<Vec<_>>(), "{summary}");
    let served = http_records(&s, "lat", 0);
    assert_eq!(served.len(), 5);
    let appended: Vec<(u64, i64)> =
        served.iter().map(|r| (LOG_APPEND_TIME, r["append_time"].as_i64().unwrap())).collect();
    assert_eq!(seen("lat"), appended, "LogAppendTime: the client sees the append times: {summary}");
    for (i, r) in served.iter().enumerate() {
        assert_eq!(r["timestamp"].as_i64(), Some(produced_ms + i as i64), "the producer's time is kept");
        assert!(r["append_time"].as_i64().unwrap() > produced_ms + 86_400_000, "appended now, not in March");
    }
    assert_eq!(summary["cre_offset_for_time"], 4, "by the producer's time: {summary}");
    let last_append = appended[4].1;
    let first_at_last = appended.iter().position(|(_, t)| *t == last_append).unwrap();
    assert_eq!(summary["lat_offset_for_time"], first_at_last as u64, "by the append time: {summary}");
    s.stop();
}

/// With `server.tokens`, Kafka clients authenticate with SASL/PLAIN (username = token name,
/// password = token) and get that token's rights, as HTTP clients do: a reader reads but cannot
/// write, a wrong password or no SASL at all gets nothing, group commits need the group right,
/// and historical reads and commits land in the audit log.
#[test]
fn sasl_plain_checks_kafka_clients_against_the_tokens_and_audits_their_reads() {
    if !kcat_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = [
        ("writer", "writer-secret", "read = [\"t*\"], write = [\"t*\"], groups = [\"g*\"]"),
        ("reader", "reader-secret", "read = [\"t*\"]"),
    ];
    let (s, data, config) = start_with_tokens(dir.path(), &tokens, &["t1"]);
    let config_env = config.as_str();
    let sasl = |user: &str, password: &str| {
        ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN"]
            .into_iter()
            .map(str::to_string)
            .chain(["-X".into(), format!("sasl.username={user}"), "-X".into(), format!("sasl.password={password}")])
            .collect::<Vec<String>>()
    };
    let run = |creds: &[String], args: &[&str], stdin: &str| {
        let mut all: Vec<&str> = vec!["-b", &s.kafka, "-m", "3"];
        all.extend(creds.iter().map(String::as_str));
        all.extend(args);
        run_with_stdin(Command::new("kcat").args(&all), stdin)
    };
    let produced = run(&sasl("writer", "writer-secret"), &["-P", "-t", "t1", "-p", "0"], "one\ntwo\n");
    assert!(produced.status.success(), "writer produces: {}", String::from_utf8_lossy(&produced.stderr));
    let consumed =
        run(&sasl("reader", "reader-secret"), &["-C", "-t", "t1", "-o", "beginning", "-e", "-f", "%s\n"], "");
    assert_eq!(
        String::from_utf8_lossy(&consumed.stdout),
        "one\ntwo\n",
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let refused = run(&sasl("reader", "reader-secret"), &["-P", "-t", "t1", "-p", "0"], "three\n");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("Topic authorization failed"), "reader may not write: {stderr}");
    let wrong = run(&sasl("reader", "writer-secret"), &["-L"], "");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && stderr.contains("uthentication"), "a token under another name fails: {stderr}");
    let bare = run(&[], &["-L"], "");
    assert!(!bare.status.success(), "no SASL, no metadata: {}", String::from_utf8_lossy(&bare.stdout));
    let group =
        run(&sasl("writer", "writer-secret"), &["-G", "g1", "-X", "auto.offset.reset=earliest", "-e", "t1"], "");
    assert!(group.status.success(), "writer consumes as group g1: {}", String::from_utf8_lossy(&group.stderr));
    // kcat keeps retrying a group it may not use: give it three seconds.
    let mut denied = Command::new("timeout");
    denied.args(["3", "kcat", "-b", &s.kafka]).args(sasl("reader", "reader-secret")).args(["-G", "g1", "-e", "t1"]);
    let denied = run_with_stdin(&mut denied, "");
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("reader may not use group \"g1\""), "reader has no group right: {stderr}");
    s.stop();
    let stored = json_lines(&cli(&data, &[("TIERLOG_CONFIG", config_env)], &["consume", "t1"]));
    assert_eq!(stored.len(), 2, "nothing written by the refused producer");
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        lines
            .iter()
            .any(|l| l["who"] == "reader" && l["action"] == "read" && l["topic"] == "t1" && l["from_offset"] == 0),
        "{audit}"
    );
    assert!(lines.iter().any(|l| l["who"] == "writer" && l["action"] == "commit" && l["group"] == "g1"), "{audit}");
}

/// librdkafka's balanced consumer (`kcat -G`) joins, gets every partition, reads to the end
/// and commits what it read.
#[test]
fn kcat_balanced_consumer_reads_every_partition_and_commits() {
    if !kcat_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "kg", 2);
    for p in 0..2 {
        let lines: String = (0..50).map(|i| format!("{{\"value\":\"p{p}-{i}\"}}\n")).collect();
        assert_eq!(post_records(s.url(&format!("/v1/topics/kg/records?partition={p}")), lines), 200);
    }
    let out =
        kcat(&["-b", &s.kafka, "-G", "kgroup", "-X", "auto.offset.reset=earliest", "-e", "-f", "%p %o %s\n", "kg"], "");
    assert!(out.status.success(), "kcat -G failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines.len(), 100, "{lines:?}");
    assert!(lines.contains(&"0 49 p0-49".to_string()) && lines.contains(&"1 0 p1-0".to_string()), "{lines:?}");
    let offsets = get_json(&s, "/v1/groups/kgroup/offsets?topic=kg");
    assert_eq!(offsets["offsets"], json!({"0": 50, "1": 50}), "kcat committed what it read");
    s.stop();
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cli(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIERLOG_")) {
        cmd.env_remove(k);
    }
    let out = run_with_stdin(cmd.envs(env.iter().copied()), "");
    assert!(out.status.success(), "tierlog {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn records_tiered_to_the_bucket_are_consumed_through_kafka_and_time_lookups_match_the_cli() {
    if !kcat_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (data, remote) = (dir.path().join("data"), format!("file://{}", dir.path().join("remote").display()));
    let env = [
        ("TIERLOG_TIERING_ENABLED", "true"),
        ("TIERLOG_REMOTE_URL", remote.as_str()),
        ("TIERLOG_TIERING_INTERVAL_MS", "3600000"),
        ("TIERLOG_TIERING_LOCAL_RETENTION_BYTES", "0"),
        ("TIERLOG_SEGMENT_MAX_BYTES", "8192"),
    ];
    let s = Server::start(&data, &env);
    create_topic(&s, "t", 1);
    let base_ms = 1_772_546_400_000i64;
    let body: String = (0..400)
        .map(|i| {
            format!(
                "{{\"key\":\"k{i}\",\"value\":\"v{i}-{}\",\"timestamp\":{},\"headers\":{{\"n\":\"{i}\"}}}}\n",
                "x".repeat(50),
                base_ms + i * 1000
            )
        })
        .collect();
    assert_eq!(post_records(s.url("/v1/topics/t/records"), body), 200);
    let before = http_records(&s, "t", 0);
    s.stop();
    let report = String::from_utf8(cli(&data, &env, &["tier", "run"]).stdout).unwrap();
    let s = Server::start(&data, &env);
    let topic = get_json(&s, "/v1/topics/t");
    assert_eq!(topic["partitions"][0]["local"]["start_offset"], 400, "every record is remote-only: {topic} {report}");
    let consumed = kcat_consume(&s, "t");
    assert_eq!(consumed, before.iter().map(as_kcat_line).collect::<Vec<_>>(), "the bucket serves what was produced");
    for instant in [base_ms - 5, base_ms + 1, base_ms + 123_500, base_ms + 399_000] {
        let out = kcat(&["-b", &s.kafka, "-Q", "-t", &format!("t:0:{instant}")], "");
        let kafka = String::from_utf8(out.stdout).unwrap();
        let offset: u64 =
            kafka.split("offset ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
        let cli_out = cli(&data, &env, &["offsets", "t", "--time", &instant.to_string()]);
        let expected = json_lines(&cli_out)[0]["offset"].as_u64().unwrap();
        assert_eq!(offset, expected, "kcat -Q at {instant} ({kafka}) equals tierlog offsets --time");
    }
    // kcat's "from this time on" replays what `tierlog consume --from-time` does.
    let instant = (base_ms + 123_500).to_string();
    let out = kcat(&["-b", &s.kafka, "-C", "-t", "t", "-o", &format!("s@{instant}"), "-e", "-f", "%o\n"], "");
    let kafka: Vec<u64> = String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let replayed: Vec<u64> = json_lines(&cli(&data, &env, &["consume", "t", "--from-time", &instant]))
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(kafka, replayed);
    assert_eq!(kafka.first(), Some(&124));
}

/// Records per client in the client matrix (the issue's figure; `KAFKA_MATRIX_RECORDS` for
/// quicker local runs).
fn matrix_records() -> u64 {
    std::env::var("KAFKA_MATRIX_RECORDS").ok().and_then(|n| n.parse().ok()).unwrap_or(100_000)
}

/// One client of the matrix, through its script's three modes (tests/kafka_clients/matrix_*):
/// it produces records into two partitions, they are tiered until every one is remote-only,
/// and it consumes them all back from the bucket (order per partition, keys, values, headers,
/// timestamps as produced) and looks offsets up by time exactly as `tierlog offsets --time`.
fn client_matrix(client: impl Fn(&[&str]) -> Command) {
    let n = matrix_records();
    let dir = tempfile::tempdir().unwrap();
    let (data, remote) = (dir.path().join("data"), format!("file://{}", dir.path().join("remote").display()));
    let env = [
        ("TIERLOG_TIERING_ENABLED", "true"),
        ("TIERLOG_REMOTE_URL", remote.as_str()),
        ("TIERLOG_TIERING_INTERVAL_MS", "3600000"),
        ("TIERLOG_TIERING_LOCAL_RETENTION_BYTES", "0"),
        ("TIERLOG_SEGMENT_MAX_BYTES", "262144"),
    ];
    let base_ms = 1_772_546_400_000i64;
    let s = Server::start(&data, &env);
    create_topic(&s, "m", 2);
    let run = |args: &[&str]| {
        let out = client(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    let produced = run(&["produce", &s.kafka, "m", &n.to_string(), &base_ms.to_string()]);
    assert_eq!(json_lines(&produced)[0]["produced"], n);
    s.stop();
    cli(&data, &env, &["tier", "run"]);

    let s = Server::start(&data, &env);
    let topic = get_json(&s, "/v1/topics/m");
    for p in 0..2 {
        let partition = &topic["partitions"][p];
        assert_eq!(
            partition["local"]["start_offset"], partition["end_offset"],
            "partition {p} is remote-only: {topic}"
        );
    }
    let consumed = json_lines(&run(&["consume", &s.kafka, "m", &n.to_string()]));
    assert_eq!(consumed.len() as u64, n);
    let mut next = [0u64; 2];
    for r in &consumed {
        let (p, o) = (r["p"].as_u64().unwrap() as usize, r["o"].as_u64().unwrap());
        assert_eq!(o, next[p], "partition {p} in order, nothing skipped or repeated: {r}");
        next[p] += 1;
        let i = 2 * o as i64 + p as i64;
        let want = json!({"p": p, "o": o, "k": format!("k{i}"), "v": format!("v{i}"), "h": {"n": i.to_string()}, "t": base_ms + 10 * i});
        assert_eq!(r, &want);
    }
    let last = base_ms + 10 * (n as i64 - 1);
    let instants: Vec<String> = [base_ms - 5, base_ms + 15, base_ms + 10 * (n as i64 / 3) + 5, last, last + 1]
        .iter()
        .map(i64::to_string)
        .collect();
    let mut args = vec!["times", s.kafka.as_str(), "m"];
    args.extend(instants.iter().map(String::as_str));
    let found = json_lines(&run(&args));
    assert_eq!(found.len(), 2 * instants.len());
    for f in &found {
        let (p, time) = (f["p"].as_u64().unwrap(), f["time"].as_i64().unwrap());
        let cli_out = json_lines(&cli(&data, &env, &["offsets", "m", "--time", &time.to_string()]));
        let expected = cli_out.iter().find(|l| l["partition"] == p).unwrap()["offset"].as_i64().unwrap();
        // Kafka answers -1 when no record is that recent; the CLI prints the end offset there.
        let offset = match f["offset"].as_i64().unwrap() {
            -1 => n as i64 / 2,
            offset => offset,
        };
        assert_eq!(offset, expected, "partition {p} at {time}: {f}");
    }
    s.stop();
}

#[test]
fn confluent_kafka_produces_replays_from_the_bucket_and_looks_up_times() {
    let Some(script) = python_script("confluent_kafka", "confluent-kafka", "matrix_confluent.py") else { return };
    client_matrix(|args| {
        let mut cmd = Command::new(python());
        cmd.arg(&script).args(args);
        cmd
    });
}

/// `NODE_PATH` must hold kafkajs (.ci/run installs it into /var/cache/tierlog-ci/node).
#[test]
fn kafkajs_produces_replays_from_the_bucket_and_looks_up_times() {
    let probe = &mut Command::new("node");
    if !client_available(
        "kafkajs",
        probe.args(["-e", "require('kafkajs')"]),
        "npm install kafkajs; export NODE_PATH=…/node_modules",
    ) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_clients/matrix_kafkajs.js");
    client_matrix(|args| {
        let mut cmd = Command::new("node");
        cmd.arg(&script).args(args);
        cmd
    });
}

/// A minimal Kafka client over one connection, with the crate's wire types.
struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn open(s: &Server) -> Conn {
        let stream = TcpStream::connect(&s.kafka).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { stream, correlation: 0 }
    }

    fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Resp {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("tierlog-test")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, key.request_header_version(version)).unwrap();
        request.encode(&mut frame, version).unwrap();
        self.send_raw(&frame);
        let mut body = self.read_frame().expect("a response, not a closed connection");
        let header = ResponseHeader::decode(&mut body, Resp::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        Resp::decode(&mut body, version).unwrap()
    }

    fn send_raw(&mut self, frame: &[u8]) {
        let mut out = Vec::with_capacity(frame.len() + 4);
        out.put_i32(frame.len() as i32);
        out.extend_from_slice(frame);
        self.stream.write_all(&out).unwrap();
    }

    /// The next response frame, `None` once the server closed the connection.
    fn read_frame(&mut self) -> Option<Bytes> {
        let mut length = [0u8; 4];
        if self.stream.read_exact(&mut length).is_err() {
            return None;
        }
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(body.into())
    }
}

fn fetch_request(topic: &str, offset: i64) -> FetchRequest {
    let partition = fetch_request::FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_partition_max_bytes(1 << 20);
    let topic = fetch_request::FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_string(topic.into())))
        .with_partitions(vec![partition]);
    FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![topic])
}

fn record(value: Option<&str>) -> kafka_protocol::records::Record {
    kafka_protocol::records::Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_772_546_400_000,
        key: None,
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Default::default(),
    }
}

fn produce_request(topic: &str, records: &[kafka_protocol::records::Record]) -> ProduceRequest {
    produce_request_with(topic, records, Compression::Lz4)
}

fn produce_request_with(
    topic: &str,
    records: &[kafka_protocol::records::Record],
    compression: Compression,
) -> ProduceRequest {
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(&mut batch, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
    let partition = produce_request::PartitionProduceData::default().with_index(0).with_records(Some(batch.freeze()));
    let topic = produce_request::TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.into())))
        .with_partition_data(vec![partition]);
    ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![topic])
}

/// An idempotent producer's batch: `values` with sequences from `first_sequence` on.
fn idempotent_batch(
    producer: i64,
    epoch: i16,
    first_sequence: i32,
    values: &[&str],
) -> Vec<kafka_protocol::records::Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| kafka_protocol::records::Record {
            producer_id: producer,
            producer_epoch: epoch,
            sequence: first_sequence + i as i32,
            offset: i as i64,
            ..record(Some(v))
        })
        .collect()
}

fn new_producer_id(c: &mut Conn) -> i64 {
    let init: InitProducerIdResponse =
        c.call(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transactional_id(None));
    assert_eq!((init.error_code, init.producer_epoch), (0, 0), "{init:?}");
    init.producer_id.0
}

/// Idempotent producers on the wire, for a batch stored as sent (uncompressed) and one
/// re-encoded (lz4): a batch sent again gets the offsets of the stored one and is not written
/// again, also after a restart; a gap in the sequence is OUT_OF_ORDER_SEQUENCE_NUMBER and an
/// older epoch INVALID_PRODUCER_EPOCH, with nothing written; producer ids are never handed out
/// twice, restarts included; a transactional id is refused.
#[test]
fn idempotent_batches_sent_again_are_stored_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    let mut ids = vec![new_producer_id(&mut c), new_producer_id(&mut c)];
    assert_ne!(ids[0], ids[1]);
    let produce = |c: &mut Conn, topic: &str, compression, batch: &[kafka_protocol::records::Record]| {
        let answer: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request_with(topic, batch, compression));
        let p = &answer.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    for (topic, compression) in [("plain", Compression::None), ("lz4", Compression::Lz4)] {
        create_topic(&s, topic, 1);
        let pid = ids[0];
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 0, &["a", "b"])), (0, 0));
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 0, &["a", "b"])), (0, 0), "a retry");
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 2, &["c"])), (0, 2));
        assert_eq!(
            produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 0, &["a", "b"])),
            (0, 0),
            "an older retry"
        );
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 5, &["gap"])), (45, -1));
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 1, 0, &["d"])), (0, 3), "a new epoch");
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(pid, 0, 3, &["old"])), (47, -1));
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(ids[1], 0, 0, &["e"])), (0, 4));
    }
    s.stop();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    for (topic, compression) in [("plain", Compression::None), ("lz4", Compression::Lz4)] {
        assert_eq!(
            produce(&mut c, topic, compression, &idempotent_batch(ids[1], 0, 0, &["e"])),
            (0, 4),
            "after a restart"
        );
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(ids[0], 1, 0, &["d"])), (0, 3));
        assert_eq!(produce(&mut c, topic, compression, &idempotent_batch(ids[0], 0, 3, &["old"])), (47, -1));
        let values: Vec<Value> = http_records(&s, topic, 0).iter().map(|r| r["value"].clone()).collect();
        assert_eq!(values, ["a", "b", "c", "d", "e"].map(|v| json!(v)), "{topic}: each record once");
    }
    ids.push(new_producer_id(&mut c));
    assert!(ids[2] > ids[1], "ids are not handed out again after a restart: {ids:?}");
    let transactional = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("tx"))))
        .with_transaction_timeout_ms(60_000);
    let refused: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &transactional);
    assert_eq!(refused.error_code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED: {refused:?}");
}

/// Review of a9c883f: a client could stamp any producer id, InitProducerId or not. One batch
/// stamped i64::MAX - 1 moved the id floor of the next start to i64::MAX, and then
/// InitProducerId panicked on the overflow (debug) or handed out negative ids and wrote a
/// next id that the following start refused (release). Now a batch from an id that was not
/// handed out is refused (UNKNOWN_PRODUCER_ID, nothing written), the floor saturates and
/// running out of ids is an error, never a wrap.
#[test]
fn review_a_client_chosen_producer_id_near_i64_max_breaks_init_producer_id_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let mut c = Conn::open(&s);
    let batch = idempotent_batch(i64::MAX - 1, 0, 0, &["x"]);
    let answer: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request_with("t", &batch, Compression::None));
    assert_eq!(answer.responses[0].partition_responses[0].error_code, 59, "UNKNOWN_PRODUCER_ID: {answer:?}");
    assert!(http_records(&s, "t", 0).is_empty(), "nothing was written");
    s.stop();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    let init = InitProducerIdRequest::default().with_transactional_id(None);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let given: InitProducerIdResponse = c.call(ApiKey::InitProducerId, 4, &init);
        if given.error_code == 0 {
            ids.push(given.producer_id.0);
        }
    }
    assert!(ids.iter().all(|&id| id >= 0), "negative producer ids handed out: {ids:?}");
    s.stop();
    let s = Server::start(dir.path(), &[]);
    s.stop();
}

/// Review of a9c883f: producer ids are sequential and a batch's id was not checked against
/// the ids handed out, so a writer could stamp the id the next InitProducerId would return;
/// the next producer's first batch (same epoch 0, same sequence range) was then answered as a
/// duplicate with the other writer's offset, and its records never stored although
/// acknowledged. (Apache Kafka trusts the producer id the same way.) Now the squatter is
/// refused; and a writer that uses an id already handed out to someone else cannot make that
/// producer's batch vanish either: a duplicate must have the same bytes (CRC), other bytes
/// under a stored sequence range are refused with an error, never acknowledged unstored.
#[test]
fn review_a_producer_id_stamped_before_it_is_handed_out_makes_another_producers_batch_vanish() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let mut a = Conn::open(&s);
    let next = new_producer_id(&mut a) + 1;
    let produce = |c: &mut Conn, pid: i64, value: &str| {
        let batch = idempotent_batch(pid, 0, 0, &[value]);
        let answer: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request_with("t", &batch, Compression::None));
        let p = &answer.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(produce(&mut a, next, "squatter"), (59, -1), "an id not handed out yet is refused");
    let mut b = Conn::open(&s);
    let pid = new_producer_id(&mut b);
    assert_eq!(pid, next, "ids are predictable");
    let answer = produce(&mut b, pid, "victim");
    let values: Vec<Value> = http_records(&s, "t", 0).iter().map(|r| r["value"].clone()).collect();
    assert!(
        values.contains(&json!("victim")),
        "the new producer's first batch was acknowledged ({answer:?}) but not stored: {values:?}"
    );
    // Impersonation of an id handed out: the owner's batch with the same sequence range is
    // refused (OUT_OF_ORDER_SEQUENCE_NUMBER), so its client learns it was not stored.
    let owner = new_producer_id(&mut b);
    assert_eq!(produce(&mut a, owner, "impostor"), (0, 1));
    assert_eq!(produce(&mut b, owner, "owner"), (45, -1), "not acknowledged as the impostor's batch");
    assert_eq!(produce(&mut a, owner, "impostor"), (0, 1), "the impostor's own retry is a duplicate");
    s.stop();
}

/// A real idempotent producer (librdkafka) whose produce answers are lost to cut connections
/// sends those batches again; each record is stored once, in order (the issue's "an
/// idempotent producer retried after a dropped connection stores nothing twice").
#[test]
fn an_idempotent_producer_retried_after_a_dropped_connection_stores_nothing_twice() {
    let Some(script) = python_script("confluent_kafka", "confluent-kafka", "idempotent_retry.py") else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let env = [("TIERLOG_KAFKA_ADVERTISED_HOST", "127.0.0.1"), ("TIERLOG_KAFKA_ADVERTISED_PORT", port.as_str())];
    let s = Server::start(dir.path(), &env);
    create_topic(&s, "idem", 1);
    let n = 1_000;
    let out =
        Command::new(python()).arg(&script).args([port.as_str(), &s.kafka, "idem", &n.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json_lines(&out)[0], json!({"produced": n, "answers_lost": 2}));
    let values: Vec<String> =
        http_records(&s, "idem", 0).iter().map(|r| r["value"].as_str().unwrap().to_string()).collect();
    assert_eq!(values, (0..n).map(|i| format!("v{i}")).collect::<Vec<_>>(), "every record once, in order");
    s.stop();
}

#[test]
fn bad_requests_get_kafka_error_codes_that_name_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let mut c = Conn::open(&s);
    let produced: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce_request("t", &[record(Some("a")), record(Some("b"))]));
    let p = &produced.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");

    // A topic named three times is answered once: the answer stays bounded by the topics.
    let named =
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("t"))));
    let metadata: MetadataResponse =
        c.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(Some(vec![named; 3])));
    assert_eq!(metadata.topics.len(), 1);

    let unknown: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request("nope", &[record(Some("a"))]));
    let p = &unknown.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert!(p.error_message.as_ref().unwrap().contains("'nope'"), "{p:?}");

    let null: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request("t", &[record(Some("a")), record(None)]));
    let p = &null.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 87, "INVALID_RECORD: {p:?}");
    assert!(p.error_message.as_ref().unwrap().contains("t/0: record 1 of the batch: null value"), "{p:?}");
    assert_eq!(p.record_errors[0].batch_index, 1);

    let fetched: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_request("nope", 0));
    assert_eq!(fetched.responses[0].partitions[0].error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    let fetched: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_request("t", 3));
    assert_eq!(fetched.responses[0].partitions[0].error_code, 1, "OFFSET_OUT_OF_RANGE past the end (2)");
    let fetched: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch_request("t", 1));
    let data = &fetched.responses[0].partitions[0];
    assert_eq!((data.error_code, data.high_watermark), (0, 2));
    let mut records = data.records.clone().unwrap();
    let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut records).unwrap();
    // As from Kafka: the whole stored batch holding offset 1; the client skips offset 0.
    assert_eq!(
        decoded.records.iter().map(|r| (r.offset, r.value.clone().unwrap())).collect::<Vec<_>>(),
        vec![(0, Bytes::from("a")), (1, Bytes::from("b"))]
    );
    assert_eq!(http_records(&s, "t", 0).len(), 2, "the refused batch wrote nothing");
}

#[test]
fn an_unsupported_api_gets_an_error_answer_on_a_connection_that_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    let answer: EndTxnResponse = c.call(ApiKey::EndTxn, 3, &EndTxnRequest::default());
    assert_eq!(answer.error_code, 35);
    // ApiVersions newer than the broker: a v0 answer with the error and the real versions.
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(4)
        .with_correlation_id(7)
        .encode(&mut frame, 2)
        .unwrap();
    ApiVersionsRequest::default().encode(&mut frame, 4).unwrap();
    c.send_raw(&frame);
    let mut body = c.read_frame().unwrap();
    assert_eq!(body.get_i32(), 7);
    let answer = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(answer.error_code, 35);
    let fetch = answer.api_keys.iter().find(|k| k.api_key == ApiKey::Fetch as i16).unwrap();
    assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
    let versions: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0, "the same connection still answers");
}

#[test]
fn malformed_and_oversized_frames_close_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("TIERLOG_KAFKA_MAX_REQUEST_BYTES", "65536")]);
    let mut healthy = Conn::open(&s);
    let mut garbage = Conn::open(&s);
    // A Metadata v9 header whose client id claims more bytes than the frame holds.
    garbage.send_raw(&[0, 3, 0, 9, 0, 0, 0, 1, 0x7f, 0xff, 1, 2]);
    assert!(garbage.read_frame().is_none(), "a malformed frame closes its connection");
    let mut oversized = Conn::open(&s);
    oversized.stream.write_all(&(1i32 << 20).to_be_bytes()).unwrap();
    assert!(oversized.read_frame().is_none(), "a frame over kafka.max_request_bytes closes its connection");
    let mut unknown = Conn::open(&s);
    unknown.send_raw(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1]);
    assert!(unknown.read_frame().is_none(), "an API key no Kafka release defines closes its connection");
    let versions: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0, "other connections are served");
    let metadata: MetadataResponse = Conn::open(&s).call(ApiKey::Metadata, 12, &MetadataRequest::default());
    assert_eq!(metadata.brokers[0].port.to_string(), s.kafka.rsplit(':').next().unwrap(), "new connections too");
}

#[test]
fn a_fetch_at_the_end_waits_for_the_next_append_instead_of_polling() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let url = s.url("/v1/topics/t/records");
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        post_records(url, "{\"value\":\"late\"}\n".to_string())
    });
    let started = Instant::now();
    let request = fetch_request("t", 0).with_max_wait_ms(10_000).with_min_bytes(1);
    let fetched: FetchResponse = Conn::open(&s).call(ApiKey::Fetch, 12, &request);
    let waited = started.elapsed();
    assert_eq!(producer.join().unwrap(), 200);
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    assert!(!records.is_empty(), "the fetch returned the appended record");
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "waited {waited:?}");
}

#[test]
fn a_request_claiming_two_billion_array_elements_is_refused_without_taking_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    let mut healthy = Conn::open(&s);
    // Metadata v1 (header v1: key, version, correlation id, null client id), whose topics array
    // claims i32::MAX entries in a 12-byte body: the decoder must not reserve memory for them.
    let mut bomb = Conn::open(&s);
    bomb.send_raw(&[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
    assert!(bomb.read_frame().is_none(), "an impossible array length closes its connection");
    // Metadata v12 (flexible): a compact array claiming u32::MAX - 1 entries.
    let mut compact = Conn::open(&s);
    compact.send_raw(&[0, 3, 0, 12, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(compact.read_frame().is_none(), "an impossible compact array length closes its connection");
    assert!(s.child.try_wait().unwrap().is_none(), "the server is still running");
    let versions: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0, "other connections are served");
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn a_fetch_naming_one_partition_many_times_stays_within_the_response_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let value = "x".repeat(64 * 1024);
    let ndjson: String = (0..32).map(|_| format!("{{\"value\":\"{value}\"}}\n")).collect();
    assert_eq!(post_records(s.url("/v1/topics/t/records"), ndjson), 200);
    let before = peak_rss(s.child.id());
    // 300 entries for the same partition, each allowed 16 MiB, in a 2 MiB response.
    let partition = fetch_request::FetchPartition::default().with_partition(0).with_partition_max_bytes(16 << 20);
    let topic = fetch_request::FetchTopic::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")))
        .with_partitions(vec![partition; 300]);
    let request = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(2 << 20).with_topics(vec![topic]);
    let fetched: FetchResponse = Conn::open(&s).call(ApiKey::Fetch, 12, &request);
    let answered: usize =
        fetched.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
    assert!(answered > 0 && answered <= (2 << 20) + (128 << 10), "{answered} bytes of records answered");
    let grown = peak_rss(s.child.id()).saturating_sub(before);
    assert!(grown < 64 << 20, "one 2 MiB fetch raised the server's peak memory by {} MiB", grown >> 20);
}

#[test]
fn a_client_that_stalls_in_the_middle_of_a_frame_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("TIERLOG_SERVER_REQUEST_TIMEOUT_MS", "300")]);
    let mut stalled = Conn::open(&s);
    // A frame of 100 bytes of which only 10 ever arrive.
    let mut partial = 100i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
    stalled.stream.write_all(&partial).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let read = stalled.stream.read(&mut buf);
    assert!(matches!(read, Ok(0)), "the server closes a connection stalled mid-frame, got {read:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    // An idle connection between requests is not a stalled one.
    let mut idle = Conn::open(&s);
    std::thread::sleep(Duration::from_millis(600));
    let versions: ApiVersionsResponse = idle.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
}

/// CPU time (user + system) a process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn running_out_of_file_descriptors_does_not_spin_the_accept_loop() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let pid = s.child.id();
    let limited = Command::new("prlimit").args(["--pid", &pid.to_string(), "--nofile=64:64"]).status().unwrap();
    assert!(limited.success(), "prlimit failed");
    // More connections than the server has file descriptors left: accept fails with EMFILE
    // while they wait in the backlog.
    let _waiting: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(&s.kafka).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    assert!(used < 50, "the server used {}0 ms of CPU in 2 s with nothing to do but a full fd table", used);
}

// Found in an adversarial review of the SASL and group coordinator change (7e140fb): each of
// these failed before its fix.

/// A config file with `tokens` = (name, secret, extra TOML fields of the token).
fn tokens_config(dir: &Path, tokens: &[(&str, &str, &str)]) -> PathBuf {
    use sha2::Digest;
    let entries: String = tokens
        .iter()
        .map(|(name, secret, extra)| {
            let sha = hex(&sha2::Sha256::digest(secret.as_bytes()));
            format!("  {{ name = \"{name}\", token_sha256 = \"{sha}\", {extra} }},\n")
        })
        .collect();
    let path = dir.join("tierlog.toml");
    std::fs::write(&path, format!("[server]\ntokens = [\n{entries}]\n")).unwrap();
    path
}

/// A server with `tokens` (see [`tokens_config`]) and `topics` of one partition created
/// first: the server, its data directory and its config file (for the CLI).
fn start_with_tokens(dir: &Path, tokens: &[(&str, &str, &str)], topics: &[&str]) -> (Server, PathBuf, String) {
    let data = dir.join("data");
    let config = tokens_config(dir, tokens).to_str().unwrap().to_string();
    for topic in topics {
        cli(&data, &[("TIERLOG_CONFIG", &config)], &["topic", "create", topic, "--partitions", "1"]);
    }
    let s = Server::start(&data, &[("TIERLOG_CONFIG", &config)]);
    (s, data, config)
}

/// A connection authenticated with SASL/PLAIN.
fn sasl_conn(s: &Server, user: &str, password: &str) -> Conn {
    let mut c = Conn::open(s);
    let mechanism = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let handshake: SaslHandshakeResponse = c.call(ApiKey::SaslHandshake, 1, &mechanism);
    assert_eq!(handshake.error_code, 0);
    let plain = Bytes::from(format!("\0{user}\0{password}"));
    let auth: SaslAuthenticateResponse =
        c.call(ApiKey::SaslAuthenticate, 2, &SaslAuthenticateRequest::default().with_auth_bytes(plain));
    assert_eq!(auth.error_code, 0, "{:?}", auth.error_message);
    c
}

fn join_request(group: &str, member: &str, metadata: Bytes) -> JoinGroupRequest {
    let protocol = join_group_request::JoinGroupRequestProtocol::default()
        .with_name(StrBytes::from_static_str("range"))
        .with_metadata(metadata);
    JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_member_id(StrBytes::from_string(member.into()))
        .with_session_timeout_ms(60_000)
        .with_rebalance_timeout_ms(60_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![protocol])
}

/// JoinGroup v4+ with an empty member id hands out a member id and creates the group. These
/// counted against one limit for the whole broker, so one principal that may use `a-*` filled
/// it in a second and every other principal's new group was refused. Now each principal has
/// its own limit.
#[test]
fn one_principal_cannot_use_up_every_other_principals_consumer_groups() {
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(
        dir.path(),
        &[("tenant-a", "secret-a", "groups = [\"a-*\"]"), ("tenant-b", "secret-b", "groups = [\"b-*\"]")],
    );
    let s = Server::start(&dir.path().join("data"), &[("TIERLOG_CONFIG", config.to_str().unwrap())]);
    let mut a = sasl_conn(&s, "tenant-a", "secret-a");
    for i in 0..10_000 {
        let joined: JoinGroupResponse =
            a.call(ApiKey::JoinGroup, 5, &join_request(&format!("a-{i}"), "", Bytes::new()));
        assert_eq!(joined.error_code, 79, "MEMBER_ID_REQUIRED");
    }
    let over: JoinGroupResponse = a.call(ApiKey::JoinGroup, 5, &join_request("a-more", "", Bytes::new()));
    assert_eq!(over.error_code, 81, "GROUP_MAX_SIZE_REACHED past the principal's 10 000");
    drop(a); // the attacker leaves; its handed-out ids expire after 30 s
    std::thread::sleep(Duration::from_secs(1));
    let mut b = sasl_conn(&s, "tenant-b", "secret-b");
    let joined: JoinGroupResponse = b.call(ApiKey::JoinGroup, 5, &join_request("b-orders", "", Bytes::new()));
    assert_eq!(
        joined.error_code, 79,
        "tenant-b's first join should get its member id (79), got {} (15 = COORDINATOR_NOT_AVAILABLE)",
        joined.error_code
    );
}

/// DescribeGroups answers every name it is given, however often it repeats: a request of a
/// few hundred bytes naming one group (whose member sent 1 MiB of subscription metadata)
/// 128 times makes the broker build a 128 MiB response. A 16 MiB request can name it ~5.5
/// million times: terabytes, and the process aborts on allocation failure.
#[test]
fn describe_groups_naming_one_group_many_times_stays_within_a_response_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    let joined: JoinGroupResponse =
        c.call(ApiKey::JoinGroup, 3, &join_request("g", "", Bytes::from(vec![7u8; 1 << 20])));
    assert_eq!(joined.error_code, 0);
    let before = peak_rss(s.child.id());
    let request = DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("g")); 128]);
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::DescribeGroups as i16)
        .with_request_api_version(5)
        .with_correlation_id(99)
        .encode(&mut frame, ApiKey::DescribeGroups.request_header_version(5))
        .unwrap();
    request.encode(&mut frame, 5).unwrap();
    let sent = frame.len();
    c.send_raw(&frame);
    let answer = c.read_frame().expect("an answer");
    let grown = peak_rss(s.child.id()).saturating_sub(before);
    assert!(
        answer.len() < 16 << 20 && grown < 64 << 20,
        "a {sent}-byte DescribeGroups got a {} MiB answer and raised the server's peak memory by {} MiB",
        answer.len() >> 20,
        grown >> 20
    );
}

/// A Fetch returns the whole stored batch holding the fetch offset (records before it
/// included, as Kafka does), but the audit line says the read started at the fetch offset:
/// a reader fetching at offset 9 receives records 0..=9 and the audit log shows only 9.
/// A producer id is for principals that may write some topic, as in Kafka.
#[test]
fn only_a_principal_that_may_write_gets_a_producer_id() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [("writer", "writer-secret", "write = [\"t*\"]"), ("reader", "reader-secret", "read = [\"t*\"]")];
    let (s, _, _) = start_with_tokens(dir.path(), &tokens, &["t1"]);
    let init = InitProducerIdRequest::default().with_transactional_id(None);
    let refused: InitProducerIdResponse =
        sasl_conn(&s, "reader", "reader-secret").call(ApiKey::InitProducerId, 4, &init);
    assert_eq!(refused.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED: {refused:?}");
    let given: InitProducerIdResponse = sasl_conn(&s, "writer", "writer-secret").call(ApiKey::InitProducerId, 4, &init);
    assert_eq!((given.error_code, given.producer_epoch), (0, 0));
    s.stop();
}

#[test]
fn the_audit_log_covers_every_offset_a_fetch_returned() {
    let dir = tempfile::tempdir().unwrap();
    let (s, data, _) = start_with_tokens(
        dir.path(),
        &[("writer", "writer-secret", "write = [\"t*\"]"), ("reader", "reader-secret", "read = [\"t*\"]")],
        &["t1"],
    );
    let records: Vec<_> = (0..10).map(|i| record(Some(&format!("secret-{i}")))).collect();
    let produced: ProduceResponse =
        sasl_conn(&s, "writer", "writer-secret").call(ApiKey::Produce, 9, &produce_request("t1", &records));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let fetched: FetchResponse =
        sasl_conn(&s, "reader", "reader-secret").call(ApiKey::Fetch, 12, &fetch_request("t1", 9));
    let mut batch = fetched.responses[0].partitions[0].records.clone().unwrap();
    let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch).unwrap();
    let returned: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
    s.stop();
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let read: Value =
        audit.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["who"] == "reader").unwrap();
    assert!(
        read["from_offset"].as_i64().unwrap() <= returned[0],
        "the reader received offsets {returned:?}; the audit log says: {read}"
    );
}

/// /metrics needs no token, and it listed every consumer group with its committed offsets:
/// what OffsetFetch and ListGroups refuse a Kafka client without the group right, HTTP gave
/// anyone. With tokens, the group series now need a token with the metrics (or admin) right.
#[test]
fn metrics_do_not_reveal_group_names_and_offsets_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = start_with_tokens(
        dir.path(),
        &[
            ("writer", "writer-secret", "read = [\"t*\"], write = [\"t*\"], groups = [\"payroll-*\"]"),
            ("prometheus", "prom-secret", "metrics = true"),
        ],
        &["t1"],
    );
    let mut w = sasl_conn(&s, "writer", "writer-secret");
    let produced: ProduceResponse = w.call(ApiKey::Produce, 9, &produce_request("t1", &[record(Some("x"))]));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    let partition = offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(1);
    let topic = offset_commit_request::OffsetCommitRequestTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("t1")))
        .with_partitions(vec![partition]);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("payroll-layoffs-2026")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![topic]);
    let committed: OffsetCommitResponse = w.call(ApiKey::OffsetCommit, 8, &commit);
    assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    let (status, metrics) = http(reqwest::Method::GET, s.url("/metrics"), "text/plain", String::new());
    assert_eq!(status, 200);
    let leaked: Vec<&str> = metrics.lines().filter(|l| l.contains("payroll-layoffs-2026")).collect();
    assert!(leaked.is_empty(), "an unauthenticated GET /metrics shows: {leaked:#?}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let scraped = runtime.block_on(async {
        let response = reqwest::Client::new().get(s.url("/metrics")).bearer_auth("prom-secret").send().await.unwrap();
        response.text().await.unwrap()
    });
    let line = "tierlog_consumer_group_lag{group=\"payroll-layoffs-2026\",topic=\"t1\",partition=\"0\"} 0";
    assert!(scraped.lines().any(|l| l == line), "a metrics token sees the groups:\n{scraped}");
}

/// With tokens the listener is meant for untrusted networks, but a connection that never
/// authenticated (never sent a byte) kept its slot forever: `kafka.max_connections` idle
/// sockets from anyone locked every client out. Now an unauthenticated connection must send
/// each request within `server.request_timeout_ms`, and any connection idle for 10 minutes is
/// closed (Kafka's connections.max.idle.ms).
#[test]
fn unauthenticated_idle_connections_cannot_hold_every_connection_slot() {
    let dir = tempfile::tempdir().unwrap();
    let config = tokens_config(dir.path(), &[("ops", "ops-secret", "admin = true")]);
    let s = Server::start(
        &dir.path().join("data"),
        &[
            ("TIERLOG_CONFIG", config.to_str().unwrap()),
            ("TIERLOG_KAFKA_MAX_CONNECTIONS", "4"),
            ("TIERLOG_SERVER_REQUEST_TIMEOUT_MS", "1000"),
        ],
    );
    let _idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(&s.kafka).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut c = Conn::open(&s);
    c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(3)
        .with_correlation_id(1)
        .encode(&mut frame, ApiKey::ApiVersions.request_header_version(3))
        .unwrap();
    ApiVersionsRequest::default().encode(&mut frame, 3).unwrap();
    c.send_raw(&frame);
    assert!(c.read_frame().is_some(), "no answer within 5 s: 4 sockets that never sent a byte hold every slot");
}

/// From the review of SASL and groups: every path refuses an unauthenticated or unprivileged
/// request (it passed before the review's fixes too).
#[test]
fn unauthenticated_and_unprivileged_requests_are_refused_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [
        ("writer", "w", "read = [\"*\"], write = [\"*\"], groups = [\"g*\"]"),
        ("reader", "r", "read = [\"t*\"]"),
        ("grp", "g", "read = [\"t1\"], groups = [\"g*\"]"),
    ];
    let (s, _, _) = start_with_tokens(dir.path(), &tokens, &["t1", "t2", "secret"]);
    let frame = |key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| {
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut f, key.request_header_version(version))
            .unwrap();
        body(&mut f);
        f
    };
    // Metadata before authenticating; an InitProducerId too.
    let mut c = Conn::open(&s);
    c.send_raw(&frame(ApiKey::Metadata, 12, &|f| MetadataRequest::default().encode(f, 12).unwrap()));
    assert!(c.read_frame().is_none());
    let mut c = Conn::open(&s);
    c.send_raw(&frame(ApiKey::InitProducerId, 4, &|f| InitProducerIdRequest::default().encode(f, 4).unwrap()));
    assert!(c.read_frame().is_none());
    // Handshake, a wrong password and a Metadata pipelined in one write: two answers, then closed.
    let mut c = Conn::open(&s);
    let hs = frame(ApiKey::SaslHandshake, 1, &|f| {
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")).encode(f, 1).unwrap()
    });
    let auth = frame(ApiKey::SaslAuthenticate, 2, &|f| {
        SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from("\0reader\0w")).encode(f, 2).unwrap()
    });
    let md = frame(ApiKey::Metadata, 12, &|f| MetadataRequest::default().encode(f, 12).unwrap());
    let mut all = Vec::new();
    for f in [&hs, &auth, &md] {
        all.put_i32(f.len() as i32);
        all.extend_from_slice(f);
    }
    c.stream.write_all(&all).unwrap();
    assert!(c.read_frame().is_some() && c.read_frame().is_some() && c.read_frame().is_none());
    // A second SaslAuthenticate (as someone else) after authenticating: refused, closed.
    let mut r = sasl_conn(&s, "reader", "r");
    let again: SaslAuthenticateResponse = r.call(
        ApiKey::SaslAuthenticate,
        2,
        &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from("\0writer\0w")),
    );
    assert_eq!(again.error_code, 34);
    assert!(r.read_frame().is_none());
    // writer commits for g1 in t1 and t2.
    let mut w = sasl_conn(&s, "writer", "w");
    for t in ["t1", "t2"] {
        let p: ProduceResponse = w.call(ApiKey::Produce, 9, &produce_request(t, &[record(Some("x"))]));
        assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
        let topic = offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(t.into())))
            .with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(1),
            ]);
        let c: OffsetCommitResponse = w.call(
            ApiKey::OffsetCommit,
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g1")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![topic]),
        );
        assert_eq!(c.topics[0].partitions[0].error_code, 0);
    }
    let mut r = sasl_conn(&s, "reader", "r");
    let of: OffsetFetchResponse = r.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g1"))).with_topics(None),
    );
    assert_eq!(of.error_code, 30);
    let fc: FindCoordinatorResponse = r.call(
        ApiKey::FindCoordinator,
        4,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![StrBytes::from_static_str("g1")]),
    );
    assert_eq!(fc.coordinators[0].error_code, 30);
    let lg: ListGroupsResponse = r.call(ApiKey::ListGroups, 5, &ListGroupsRequest::default());
    assert!(lg.groups.is_empty(), "{lg:?}");
    let dg: DescribeGroupsResponse = r.call(
        ApiKey::DescribeGroups,
        5,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_static_str("g1"))]),
    );
    assert_eq!(dg.groups[0].error_code, 30);
    let named = |n: &str| {
        metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(n.into()))))
    };
    let md: MetadataResponse = r.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![named("secret"), named("nope")])),
    );
    assert!(md.topics.iter().all(|t| t.error_code == 29), "{md:?}");
    let all: MetadataResponse = r.call(ApiKey::Metadata, 12, &MetadataRequest::default().with_topics(None));
    let mut listed: Vec<_> = all.topics.iter().map(|t| t.name.clone().unwrap().0.to_string()).collect();
    listed.sort();
    assert_eq!(listed, ["t1", "t2"]);
    let dc: DescribeConfigsResponse = r.call(
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("secret")),
        ]),
    );
    assert_eq!(dc.results[0].error_code, 29);
    let ct: CreateTopicsResponse = r.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_validate_only(true).with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("secret")))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ]),
    );
    assert_eq!(ct.topics[0].error_code, 29, "no existence leak through validate_only");
    // grp may use g1 and read t1 only: OffsetFetch with null topics lists t1, not t2.
    let mut g = sasl_conn(&s, "grp", "g");
    let of: OffsetFetchResponse = g.call(
        ApiKey::OffsetFetch,
        7,
        &OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g1"))).with_topics(None),
    );
    let topics: Vec<_> = of.topics.iter().map(|t| t.name.0.to_string()).collect();
    assert_eq!((of.error_code, topics), (0, vec!["t1".to_string()]));
}

/// REVIEW (measurement for finding 1): pending member ids embed the client id (up to 32 KiB)
/// and outlive the connection for 5 minutes.
#[test]
fn handed_out_member_ids_do_not_hold_the_client_ids_memory() {
    let rss = |pid: u32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let before = rss(s.child.id());
    let mut c = Conn::open(&s);
    let client_id = "c".repeat(32_000);
    for i in 0..4_000 {
        let mut f = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::JoinGroup as i16)
            .with_request_api_version(5)
            .with_correlation_id(i)
            .with_client_id(Some(StrBytes::from_string(client_id.clone())))
            .encode(&mut f, ApiKey::JoinGroup.request_header_version(5))
            .unwrap();
        join_request(&format!("g-{i}"), "", Bytes::new()).encode(&mut f, 5).unwrap();
        c.send_raw(&f);
        c.read_frame().unwrap();
    }
    drop(c);
    std::thread::sleep(Duration::from_secs(2));
    let held = rss(s.child.id()).saturating_sub(before);
    assert!(held < 32 << 20, "4000 JoinGroups (one connection, now closed) left {} MiB resident", held >> 20);
}

/// DeleteGroups (kafka-consumer-groups --delete): a group without members loses its committed
/// offsets (OffsetFetch then answers -1, ListGroups no longer lists it); a group with a member
/// or a joiner is NON_EMPTY_GROUP and keeps them; an unknown group is GROUP_ID_NOT_FOUND; a
/// group named twice is answered once.
#[test]
fn delete_groups_removes_committed_offsets_of_groups_without_members_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let mut c = Conn::open(&s);
    let p: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_request("t", &[record(Some("x"))]));
    assert_eq!(p.responses[0].partition_responses[0].error_code, 0);
    let group = |name: &str| GroupId(StrBytes::from_string(name.into()));
    for name in ["g", "busy"] {
        let topic = offset_commit_request::OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(1),
            ]);
        let request = OffsetCommitRequest::default()
            .with_group_id(group(name))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![topic]);
        let committed: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
    }
    // A first JoinGroup (v5) hands out a member id: "busy" has a joiner now.
    let joined: JoinGroupResponse = c.call(ApiKey::JoinGroup, 5, &join_request("busy", "", Bytes::new()));
    assert_eq!(joined.error_code, 79, "MEMBER_ID_REQUIRED: {joined:?}");
    let names = ["g", "g", "busy", "nope", "bad/name"].map(group).to_vec();
    let deleted: DeleteGroupsResponse =
        c.call(ApiKey::DeleteGroups, 2, &DeleteGroupsRequest::default().with_groups_names(names));
    let codes: Vec<(String, i16)> = deleted.results.iter().map(|r| (r.group_id.0.to_string(), r.error_code)).collect();
    assert_eq!(
        codes,
        [("g", 0), ("busy", 68), ("nope", 69), ("bad/name", 24)].map(|(g, e)| (g.to_string(), e)).to_vec()
    );
    let fetch = |name: &str, c: &mut Conn| -> i64 {
        let request = OffsetFetchRequest::default().with_group_id(group(name)).with_topics(None);
        let answer: OffsetFetchResponse = c.call(ApiKey::OffsetFetch, 7, &request);
        answer.topics.first().map_or(-1, |t| t.partitions[0].committed_offset)
    };
    assert_eq!(fetch("g", &mut c), -1, "g's offsets are gone");
    assert_eq!(fetch("busy", &mut c), 1, "busy keeps its offsets");
    let listed: ListGroupsResponse = c.call(ApiKey::ListGroups, 5, &ListGroupsRequest::default());
    let names: Vec<String> = listed.groups.iter().map(|g| g.group_id.0.to_string()).collect();
    assert!(!names.contains(&"g".to_string()) && names.contains(&"busy".to_string()), "{names:?}");
    s.stop();
}

// Adversarial review of 5adecdb (DeleteGroups). Each of these fails on 5adecdb.

fn commit_offset(c: &mut Conn, group: &str, topic: &str, offset: i64) {
    let partitions = vec![offset_commit_request::OffsetCommitRequestPartition::default().with_committed_offset(offset)];
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(partitions),
        ]);
    let answer: OffsetCommitResponse = c.call(ApiKey::OffsetCommit, 8, &request);
    assert_eq!(answer.topics[0].partitions[0].error_code, 0, "commit {group}/{topic}");
}

fn delete_groups(c: &mut Conn, names: &[&str]) -> Vec<i16> {
    let names = names.iter().map(|n| GroupId(StrBytes::from_string(n.to_string()))).collect();
    let answer: DeleteGroupsResponse =
        c.call(ApiKey::DeleteGroups, 2, &DeleteGroupsRequest::default().with_groups_names(names));
    answer.results.iter().map(|r| r.error_code).collect()
}

/// Review of 5adecdb: Coordinator::delete_if_empty runs `groups::delete` (wait for the group's
/// lock file, read, unlink, fsync the directory, per topic) while holding the coordinator's one
/// mutex, on an async worker thread (delete_groups is not spawn_blocking) — against the
/// coordinator's own rule "held for map updates only, never across I/O". While it waits (here:
/// another holder of `groups/g/t.lock`, as a commit's fsync on a slow disk or a CLI seek
/// would be), every JoinGroup/SyncGroup/Heartbeat/OffsetCommit of every group blocks on the
/// mutex, and so do the coordinator's 100 ms tick and the worker threads they run on: the whole
/// server, HTTP included, stops answering.
#[test]
fn review_delete_groups_holds_the_coordinator_lock_across_file_io() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    create_topic(&s, "t", 1);
    let mut c = Conn::open(&s);
    commit_offset(&mut c, "g", "t", 0);
    let holder = std::fs::OpenOptions::new().write(true).open(dir.path().join("groups/g/t.lock")).unwrap();
    holder.lock().unwrap();
    let kafka = s.kafka.clone();
    let deleter = std::thread::spawn(move || {
        let stream = TcpStream::connect(&kafka).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        delete_groups(&mut Conn { stream, correlation: 0 }, &["g"])
    });
    std::thread::sleep(Duration::from_millis(300));
    // A heartbeat of an unrelated group: normally UNKNOWN_MEMBER_ID at once.
    let mut other = Conn::open(&s);
    other.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("other")))
        .with_member_id(StrBytes::from_static_str("m"))
        .with_generation_id(1);
    let started = Instant::now();
    other.correlation += 1;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Heartbeat as i16)
        .with_request_api_version(4)
        .with_correlation_id(other.correlation);
    let mut frame = BytesMut::new();
    header.encode(&mut frame, ApiKey::Heartbeat.request_header_version(4)).unwrap();
    heartbeat.encode(&mut frame, 4).unwrap();
    other.send_raw(&frame);
    let heartbeat_answered = other.read_frame().is_some();
    let heartbeat_wait = started.elapsed();
    // And HTTP, which shares the runtime's worker threads.
    let url = s.url("/healthz");
    let healthz = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
            client
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| if e.is_timeout() { "no answer within 3 s".to_string() } else { e.to_string() })
        })
    })
    .join()
    .unwrap();
    holder.unlock().unwrap();
    let deleted = deleter.join().unwrap();
    assert_eq!(deleted, [0], "the delete itself completes once the lock file is free");
    assert!(
        heartbeat_answered && healthz.is_ok(),
        "while DeleteGroups(g) waited on g's lock file: a Heartbeat of group \"other\" answered: {heartbeat_answered} \
         (waited {heartbeat_wait:?}); GET /healthz: {healthz:?}"
    );
    s.stop();
}

/// Review of 5adecdb: DeleteGroups of a group the coordinator knows (a consumer group whose
/// members all left without committing: ListGroups and DescribeGroups show it, Empty, protocol
/// type "consumer") answers GROUP_ID_NOT_FOUND — and has removed it from the coordinator all
/// the same (delete_if_empty removes it before `groups::delete` finds no offsets). Kafka
/// answers NONE for an Empty group; kafka-consumer-groups --delete reports a failure here for a
/// group it has just listed, and the "not found" group is in fact gone.
#[test]
fn review_delete_groups_of_a_known_empty_group_is_not_group_id_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let mut c = Conn::open(&s);
    let joined: JoinGroupResponse = c.call(ApiKey::JoinGroup, 3, &join_request("k", "", Bytes::new()));
    assert_eq!(joined.error_code, 0, "{joined:?}");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("k")))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    let synced: SyncGroupResponse = c.call(ApiKey::SyncGroup, 3, &sync);
    assert_eq!(synced.error_code, 0);
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("k")))
        .with_member_id(joined.member_id.clone());
    let left: LeaveGroupResponse = c.call(ApiKey::LeaveGroup, 0, &leave);
    assert_eq!(left.error_code, 0);
    let listed = |c: &mut Conn| -> Vec<(String, String, String)> {
        let answer: ListGroupsResponse = c.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
        answer
            .groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_state.to_string(), g.protocol_type.to_string()))
            .collect()
    };
    let before = listed(&mut c);
    assert_eq!(before, [("k".to_string(), "Empty".to_string(), "consumer".to_string())]);
    let codes = delete_groups(&mut c, &["k"]);
    let after = listed(&mut c);
    assert_eq!(codes, [0], "DeleteGroups of a group ListGroups listed; ListGroups afterwards: {after:?}");
    s.stop();
}

/// Review of 5adecdb: `groups::delete` removes a group's topics one by one and returns an error
/// at the first it cannot delete, dropping the list of those it already removed. DeleteGroups
/// then answers KAFKA_STORAGE_ERROR and writes no audit line, though the offsets of the topics
/// before the failure are gone (the CLI likewise prints only the error). Here the second
/// topic's file is one the store cannot read (a future version); the first topic's offsets are
/// deleted, unaudited.
#[test]
fn review_a_delete_groups_that_fails_half_way_leaves_its_deletions_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let (s, data, _) =
        start_with_tokens(dir.path(), &[("ops", "ops-secret", "read = [\"*\"], groups = [\"*\"]")], &["a", "b"]);
    let mut c = sasl_conn(&s, "ops", "ops-secret");
    commit_offset(&mut c, "g", "a", 0);
    commit_offset(&mut c, "g", "b", 0);
    std::fs::write(data.join("groups/g/b.json"), br#"{"version":2,"offsets":{"0":0}}"#).unwrap();
    let codes = delete_groups(&mut c, &["g"]);
    s.stop();
    let a_gone = !data.join("groups/g/a.json").exists();
    let audit = std::fs::read_to_string(data.join("audit.log")).unwrap();
    let audited = audit.lines().any(|l| l.contains("\"delete_group\""));
    assert!(
        !a_gone || audited,
        "DeleteGroups answered {codes:?}; g's offsets in topic a were deleted: {a_gone}; audit.log has a delete_group line: {audited}\n{audit}"
    );
}

/// Review of 1391cf4: Kafka answers a produce to a LogAppendTime topic with the append time it
/// gave the batch (Java's `RecordMetadata.timestamp()` and librdkafka's delivery reports take
/// it from there); the answer said -1.
#[test]
fn review_produce_to_a_log_append_time_topic_answers_its_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let body =
        json!({"name": "lat", "partitions": 1, "config": {"message.timestamp.type": "LogAppendTime"}}).to_string();
    let (status, text) = http(reqwest::Method::POST, s.url("/v1/topics"), "application/json", body);
    assert_eq!(status, 201, "{text}");
    create_topic(&s, "cre", 1);
    let mut c = Conn::open(&s);
    let answer: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce_request_with("lat", &[record(Some("a"))], Compression::None));
    let p = &answer.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{answer:?}");
    let appended = http_records(&s, "lat", 0)[0]["append_time"].as_i64().unwrap();
    assert_eq!(p.log_append_time_ms, appended, "ProduceResponse.log_append_time_ms of a LogAppendTime topic");
    let answer: ProduceResponse =
        c.call(ApiKey::Produce, 9, &produce_request_with("cre", &[record(Some("a"))], Compression::None));
    assert_eq!(answer.responses[0].partition_responses[0].log_append_time_ms, -1, "CreateTime: -1, as Kafka");
    s.stop();
}

/// Per-topic settings over Kafka's admin APIs: CreateTopics configs set them (checked as
/// `topic create --set`), DescribeConfigs reports each value in force with its source
/// (DYNAMIC_TOPIC_CONFIG for the topic's own, DEFAULT_CONFIG / STATIC_BROKER_CONFIG for the
/// configuration's), and IncrementalAlterConfigs SETs and DELETEs them on the running server.
#[test]
fn topic_configs_are_created_described_with_their_source_and_altered_incrementally() {
    const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    const STATIC_BROKER_CONFIG: i8 = 4;
    const DEFAULT_CONFIG: i8 = 5;
    const INVALID_CONFIG: i16 = 40;
    const INVALID_REQUEST: i16 = 42;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]); // tiering.enabled = false
    let mut c = Conn::open(&s);
    let config = |name: &str, value: &str| {
        create_topics_request::CreatableTopicConfig::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_value(Some(StrBytes::from_string(value.into())))
    };
    let topic = |name: &str, configs| {
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.into())))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(configs)
    };
    let ct: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![
            topic("k", vec![config("segment.bytes", "8192"), config("local.retention.ms", "60000")]),
            topic("short", vec![config("retention.ms", "1")]),
            topic("tiered", vec![config("remote.storage.enable", "true")]),
            topic("odd", vec![config("segment.jitter.ms", "1")]),
        ]),
    );
    let codes: Vec<_> = ct.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, INVALID_CONFIG, INVALID_CONFIG, INVALID_CONFIG], "{ct:?}");
    let message = |i: usize| ct.topics[i].error_message.as_ref().unwrap().to_string();
    assert!(message(1).contains("retention.ms = 1 is shorter than"), "{}", message(1));
    assert!(message(2).contains("tiering.enabled = false"), "{}", message(2));
    assert!(message(3).contains("unknown setting \"segment.jitter.ms\""), "{}", message(3));

    let describe = |c: &mut Conn| -> std::collections::BTreeMap<String, (String, i8, bool)> {
        let dc: DescribeConfigsResponse = c.call(
            ApiKey::DescribeConfigs,
            4,
            &DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("k"))
                    .with_configuration_keys(None),
            ]),
        );
        assert_eq!(dc.results[0].error_code, 0, "{dc:?}");
        let entry = |r: &describe_configs_response::DescribeConfigsResourceResult| {
            let value = r.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
            (r.name.to_string(), (value, r.config_source, r.read_only))
        };
        dc.results[0].configs.iter().map(entry).collect()
    };
    let configs = describe(&mut c);
    assert_eq!(configs["segment.bytes"], ("8192".into(), DYNAMIC_TOPIC_CONFIG, false));
    assert_eq!(configs["local.retention.ms"], ("60000".into(), DYNAMIC_TOPIC_CONFIG, false));
    assert_eq!(configs["segment.ms"], ("604800000".into(), DEFAULT_CONFIG, false));
    assert_eq!(configs["remote.storage.enable"], ("false".into(), STATIC_BROKER_CONFIG, false));
    assert_eq!(configs["message.timestamp.type"], ("CreateTime".into(), DEFAULT_CONFIG, true));

    let alter_config = |name: &str, op: i8, value: Option<&str>| {
        incremental_alter_configs_request::AlterableConfig::default()
            .with_name(StrBytes::from_string(name.into()))
            .with_config_operation(op)
            .with_value(value.map(|v| StrBytes::from_string(v.into())))
    };
    let resource = |kind: i8, name: &str, configs| {
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(StrBytes::from_string(name.into()))
            .with_configs(configs)
    };
    let alter = |c: &mut Conn, validate_only: bool, resources| -> Vec<i16> {
        let request =
            IncrementalAlterConfigsRequest::default().with_resources(resources).with_validate_only(validate_only);
        let answer: IncrementalAlterConfigsResponse = c.call(ApiKey::IncrementalAlterConfigs, 1, &request);
        answer.responses.iter().map(|r| r.error_code).collect()
    };
    let codes = alter(
        &mut c,
        false,
        vec![
            resource(
                2,
                "k",
                vec![alter_config("segment.bytes", 0, Some("4096")), alter_config("local.retention.ms", 1, None)],
            ),
            resource(2, "k", vec![alter_config("message.timestamp.type", 0, Some("LogAppendTime"))]),
            resource(2, "k", vec![alter_config("cleanup.policy", 0, Some("compact"))]),
            resource(2, "k", vec![alter_config("segment.ms", 2, Some("1000"))]),
            resource(4, "0", vec![alter_config("segment.bytes", 0, Some("4096"))]),
            resource(2, "nope", vec![alter_config("segment.bytes", 0, Some("4096"))]),
        ],
    );
    assert_eq!(codes, [0, INVALID_CONFIG, INVALID_CONFIG, INVALID_CONFIG, INVALID_REQUEST, 3]);
    let codes = alter(&mut c, true, vec![resource(2, "k", vec![alter_config("segment.ms", 0, Some("5000"))])]);
    assert_eq!(codes, [0], "validate_only checks");
    let configs = describe(&mut c);
    assert_eq!(configs["segment.bytes"], ("4096".into(), DYNAMIC_TOPIC_CONFIG, false));
    assert_eq!(configs["local.retention.ms"], ("86400000".into(), DEFAULT_CONFIG, false), "deleted: the default again");
    assert_eq!(configs["segment.ms"].0, "604800000", "validate_only changed nothing");
    let described = get_json(&s, "/v1/topics/k");
    assert_eq!(described["settings"]["segment.bytes"], json!({"value": 4096, "source": "topic"}), "{described}");
    s.stop();
}
