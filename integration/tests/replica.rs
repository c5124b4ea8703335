//! Read-only replicas against a real S3 server (in-process s3s-fs by default; moto and
//! Garage in CI): the library-level scenario, and `serve --replica` / `consume --replica` as
//! real processes next to a writer on the same bucket.

use tierlog_integration::S3Target;
use tierlog_integration::scenarios;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_and_follow_the_writer_and_never_write() {
    let s3 = S3Target::start();
    scenarios::replica_follows_writer(&s3).await;
}

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tierlog_integration::cli::{json_lines, run, run_command, tierlog, write_config};

fn ok(out: Output, what: &str) -> Output {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn events(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"key\":\"acct-{}\",\"value\":\"payment {i} {}\"}}\n", i % 5, "x".repeat(200)))
        .collect()
}

/// `prefix` then `args`.
fn with<'a>(prefix: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    prefix.iter().map(String::as_str).chain(args.iter().copied()).collect()
}

/// `tierlog serve --replica` as a child process; killed on drop.
struct ReplicaServer {
    child: Child,
    base: String,
    kafka: String,
}

impl ReplicaServer {
    fn start(config: &Path, env: &[(String, String)], dir: &Path) -> ReplicaServer {
        let mut child = tierlog(config, env)
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--replica", "--listen", "127.0.0.1:0", "--kafka-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut server = ReplicaServer { child, base: String::new(), kafka: String::new() };
        let mut line = String::new();
        while server.base.is_empty() {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "replica exited before listening: {line}");
            assert!(!line.contains("error"), "{line}");
            // `… tierlog speaking Kafka kafka=ADDR …` and `… tierlog serving … http=URL`.
            let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
            if let Some(kafka) = field("kafka=") {
                server.kafka = kafka;
            }
            if let Some(url) = field("http=") {
                server.base = url;
            }
        }
        std::thread::spawn(move || for _ in stderr.lines() {});
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for ReplicaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `consume payments --partition P` from the beginning (or as `start` says), as JSON values.
fn consume(config: &Path, env: &[(String, String)], partition: u32, start: &[&str]) -> Vec<Value> {
    let p = partition.to_string();
    let mut args = vec!["consume", "payments", "--partition", &p];
    args.extend_from_slice(if start.is_empty() { &["--from-beginning"] } else { start });
    json_lines(&ok(run(config, env, &args, ""), "consume"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_replica_serves_history_follows_new_data_and_refuses_writes() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("serve-replica");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    let writer = |args: &[&str], stdin: &str| ok(run(&config, &env, args, stdin), &format!("{args:?}"));
    writer(&["topic", "create", "payments", "--partitions", "2"], "");
    writer(&["produce", "payments", "--input-format", "json"], &events(0, 600));
    writer(&["tier", "run"], "");
    let history: Vec<Vec<Value>> = (0..2).map(|p| consume(&config, &env, p, &[])).collect();
    assert!(history.iter().all(|h| h.len() > 200), "both partitions hold records");

    let mut replica_env = env.clone();
    replica_env.push(("TIERLOG_REPLICA_REFRESH_MS".into(), "200".into()));
    let server = ReplicaServer::start(&config, &replica_env, &dir.path().join("replica"));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
    for (p, records) in history.iter().enumerate() {
        let body = http.get(server.url(&format!("/v1/topics/payments/partitions/{p}/records"))).send().await.unwrap();
        assert_eq!(body.status(), 200);
        let served: Vec<Value> = body.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let fields = |v: &Value| (v["offset"].clone(), v["key"].clone(), v["value"].clone(), v["timestamp"].clone());
        assert_eq!(served.iter().map(fields).collect::<Vec<_>>(), records.iter().map(fields).collect::<Vec<_>>());
    }

    // Writes are refused with 405 and a message that says where to write.
    let produce = http
        .post(server.url("/v1/topics/payments/records"))
        .header("content-type", "application/x-ndjson")
        .body("{\"value\":\"nope\"}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(produce.status(), 405);
    let error = produce.text().await.unwrap();
    assert!(error.contains("read-only replica") && error.contains(&prefix), "{error}");
    let create = http
        .post(server.url("/v1/topics"))
        .header("content-type", "application/json")
        .body("{\"name\":\"other\",\"partitions\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 405, "{}", create.text().await.unwrap());

    // Kafka clients read the same history and get POLICY_VIOLATION for a produce.
    if std::process::Command::new("kcat").arg("-V").output().is_ok_and(|o| o.status.success()) {
        let kcat = |args: &[&str], stdin: &str| {
            run_command(std::process::Command::new("kcat").args(["-b", &server.kafka]).args(args), stdin)
        };
        let read = kcat(&["-C", "-t", "payments", "-p", "0", "-o", "beginning", "-e", "-f", "%o %s\n"], "");
        assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
        let expected: String =
            history[0].iter().map(|r| format!("{} {}\n", r["offset"], r["value"].as_str().unwrap())).collect();
        assert_eq!(String::from_utf8_lossy(&read.stdout), expected, "kcat reads the history from the replica");
        let write = kcat(&["-P", "-t", "payments", "-p", "0"], "refused\n");
        let stderr = String::from_utf8_lossy(&write.stderr);
        assert!(stderr.contains("Policy violation"), "a Kafka produce to a replica: {stderr}");
    } else {
        eprintln!("kcat not installed (apt-get install -y kcat): the Kafka part of this test is skipped");
    }

    // A follower at the end sees what the writer tiers next, within the refresh period.
    let end = history[0].last().unwrap()["offset"].as_u64().unwrap() + 1;
    let follow = http
        .get(server.url(&format!("/v1/topics/payments/partitions/0/records?from_offset={end}&follow=true")))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), 200);
    let mut stream = follow.bytes_stream();
    writer(&["produce", "payments", "--input-format", "json"], &events(600, 300));
    writer(&["tier", "run"], "");
    let tiered = Instant::now();
    let newer = consume(&config, &env, 0, &["--from-offset", &end.to_string()]);
    assert!(!newer.is_empty());
    let mut seen = String::new();
    while seen.lines().count() < newer.len() {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the replica delivered the newly tiered records")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    eprintln!("follow delivered {} new records {:?} after the tiering pass", newer.len(), tiered.elapsed());
    let offsets: Vec<u64> =
        seen.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, newer.iter().map(|r| r["offset"].as_u64().unwrap()).collect::<Vec<_>>());

    // It reports how its looks at the bucket go, and is ready while they succeed.
    let metrics = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let looks = metrics.lines().find_map(|l| l.strip_prefix("tierlog_replica_refreshes_total ")).unwrap_or("0");
    assert!(looks.parse::<u64>().unwrap() > 0, "{metrics}");
    assert!(metrics.contains("tierlog_replica_refresh_failures_total 0"), "{metrics}");
    assert_eq!(http.get(server.url("/readyz")).send().await.unwrap().status(), 200);

    // Nothing the replica does writes to the bucket.
    let store = s3.store(&prefix);
    let listing = scenarios::bucket_listing(&store).await;
    for _ in 0..3 {
        let offsets = http.get(server.url("/v1/topics/payments/offsets")).send().await.unwrap();
        assert_eq!(offsets.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(scenarios::bucket_listing(&store).await, listing, "the replica wrote to the bucket");

    // Without any data directory: consume and offsets read the bucket alone.
    let nowhere = vec!["--data-dir".to_string(), dir.path().join("never-created").display().to_string()];
    for p in 0..2 {
        let writer_view = consume(&config, &env, p, &[]);
        let ps = p.to_string();
        let replica_view = json_lines(&ok(
            run(
                &config,
                &env,
                &with(&nowhere, &["consume", "payments", "--partition", &ps, "--from-beginning", "--replica"]),
                "",
            ),
            "consume --replica",
        ));
        assert_eq!(replica_view, writer_view, "consume --replica prints what the writer's consume prints");
    }
    let offsets =
        json_lines(&ok(run(&config, &env, &with(&nowhere, &["offsets", "payments", "--replica"]), ""), "offsets"));
    assert_eq!(offsets, json_lines(&ok(run(&config, &env, &["offsets", "payments"], ""), "offsets")));
    assert!(!dir.path().join("never-created").exists(), "--replica needs no data directory");
    let refused = run(&config, &env, &["--server", &server.base, "offsets", "payments", "--replica"], "");
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_point_serves_exactly_that_history_and_never_moves() {
    let s3 = S3Target::start();
    scenarios::restore_to_point(&s3).await;
}

#[test]
fn restore_to_offset_from_the_cli_is_read_only_and_readable_with_consume() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("cli-point");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    let node = |args: &[&str]| run(&config, &env, args, "");
    ok(run(&config, &env, &["topic", "create", "payments", "--partitions", "2"], ""), "create");
    for from in (0..800).step_by(40) {
        // One batch per partition per produce: small batches, so the point falls inside one.
        ok(run(&config, &env, &["produce", "payments", "--input-format", "json"], &events(from, 40)), "produce");
    }
    ok(node(&["tier", "run"]), "tier run");
    let full: Vec<Vec<Value>> = (0..2).map(|p| consume(&config, &env, p, &[])).collect();

    let point = dir.path().join("point");
    let at = vec!["--data-dir".to_string(), point.display().to_string()];
    let out = ok(node(&with(&at, &["restore", "--to-offset", "150"])), "restore --to-offset");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines[..2] {
        let end = line["end_offset"].as_u64().unwrap();
        assert!(end <= 150 && end > 100, "rounded down to a batch boundary: {line}");
    }
    assert_eq!(lines[2]["read_only"], true);
    for p in 0..2u32 {
        let end = lines[p as usize]["end_offset"].as_u64().unwrap() as usize;
        let ps = p.to_string();
        let read = json_lines(&ok(
            node(&with(&at, &["consume", "payments", "--partition", &ps, "--from-beginning"])),
            "consume",
        ));
        assert_eq!(read, full[p as usize][..end].to_vec(), "partition {p} up to the point, byte for byte");
    }
    let refused = run(&config, &env, &with(&at, &["produce", "payments"]), "late\n");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("replica"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let again = run(&config, &env, &with(&at, &["restore", "--to-offset", "300"]), "");
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already holds"));
}
