//! The audit trail in the bucket: the CLI's actions and the tiering driver's commits each leave
//! an event that `tierlog audit` prints and `tierlog verify` proves, and a bucket that refuses
//! audit records costs neither a segment commit nor its event.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use common::{BIN, json_lines, run_with_stdin};
use serde_json::Value;
use tierlog::config::Config;
use tierlog::host::{Clock, Host};
use tierlog::tier::{self, Tiering};
use tierlog::{Log, Record};
use tierlog_tiering::audit;
use tierlog_tiering::fault::FaultStore;

fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args).env_remove("TIERLOG_CONFIG");
    run_with_stdin(&mut cmd, "")
}

fn ok(output: Output) -> Output {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn given_topic_commit_and_hold_actions_when_listing_the_trail_should_print_each_and_verify() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    ok(run(&dir, &["topic", "create", "payments", "--partitions", "1"]));
    let mut produce = Command::new(BIN);
    produce.arg("--data-dir").arg(&dir).args(["produce", "payments"]).env_remove("TIERLOG_CONFIG");
    ok(run_with_stdin(&mut produce, "a\nb\nc\n"));
    ok(run(&dir, &["tier", "run"]));
    let set = ok(run(&dir, &["hold", "set", "payments", "--reason", "SEC 2026-114"]));
    let id = json_lines(&set)[0]["hold"]["id"].as_str().unwrap().to_string();
    ok(run(&dir, &["hold", "release", &id, "--reason", "case closed"]));
    ok(run(&dir, &["topic", "alter", "payments", "--set", "retention.ms=86400000"]));

    let events = json_lines(&ok(run(&dir, &["audit"])));
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["topic_create", "segment_commit", "hold_set", "hold_release", "topic_alter"], "{events:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert!(events.iter().all(|e| e["actor"].as_str().unwrap().contains('@') && e["topic"] == "payments"));
    let commit = &events[1];
    assert_eq!(
        (commit["partition"].as_u64(), commit["first_offset"].as_u64(), commit["last_offset"].as_u64()),
        (Some(0), Some(0), Some(2))
    );
    assert_eq!(events[2]["reason"], "SEC 2026-114");
    assert_eq!(events[3]["before"]["hold"]["id"].as_str(), Some(id.as_str()));
    assert_eq!(events[4]["after"]["settings"]["retention.ms"], "86400000");
    assert_eq!(events[4]["before"]["settings"].get("retention.ms"), None);

    // Filters: by topic and by time.
    assert!(json_lines(&ok(run(&dir, &["audit", "--topic", "other"]))).is_empty());
    let from = events[2]["time_ms"].as_i64().unwrap().to_string();
    let to = (events[3]["time_ms"].as_i64().unwrap() + 1).to_string();
    let window = json_lines(&ok(run(&dir, &["audit", "--from-time", &from, "--to-time", &to])));
    assert_eq!(window.iter().map(|e| e["action"].as_str().unwrap()).collect::<Vec<_>>(), ["hold_set", "hold_release"]);

    // A take-over from the bucket alone: the new node's data directory, the same bucket.
    let bucket = format!("file://{}", root.path().join("data-remote").display());
    let mut restore = Command::new(BIN);
    restore.arg("--data-dir").arg(root.path().join("restored")).args(["restore", "--take-over"]);
    restore.env_remove("TIERLOG_CONFIG").env("TIERLOG_REMOTE_URL", &bucket);
    ok(run_with_stdin(&mut restore, ""));
    let events = json_lines(&ok(run(&dir, &["audit"])));
    let last = events.last().unwrap();
    assert_eq!((last["action"].as_str(), last["seq"].as_u64()), (Some("take_over"), Some(6)), "{events:?}");
    assert!(last["after"]["writer_id"].is_string() && last["actor"].as_str().unwrap().contains('@'));

    let verified = json_lines(&ok(run(&dir, &["verify"])));
    let last = verified.last().unwrap();
    assert_eq!(
        (last["ok"].as_bool(), last["audit"]["records"].as_u64(), last["audit"]["events"].as_u64()),
        (Some(true), Some(6), Some(6))
    );

    // A forged record (a consistent checksum of its own) is named by verify; exit status 3.
    let record = root.path().join("data-remote/audit/00000000000000000003.json");
    let text = std::fs::read_to_string(&record).unwrap();
    let body = text.lines().nth(1).unwrap().replace("SEC 2026-114", "nothing");
    let header = format!(
        "{{\"format\":\"tierlog-audit\",\"format_version\":1,\"body_sha256\":\"{}\"}}",
        tierlog_tiering::sha256_hex(body.as_bytes())
    );
    std::fs::write(&record, format!("{header}\n{body}\n")).unwrap();
    let damaged = run(&dir, &["verify"]);
    assert_eq!(damaged.status.code(), Some(3));
    let problems: Vec<Value> = json_lines(&damaged).into_iter().filter(|p| p.get("kind").is_some()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["kind"], "audit_chain_broken");
    assert!(problems[0]["key"].as_str().unwrap().ends_with("audit/00000000000000000004.json"), "{problems:?}");
}

/// A bucket that cannot be reached when a topic is altered: the alter stands, the command
/// says its event is not in the trail yet and exits non-zero, and the next tiering run writes
/// the event it queued in the data directory.
#[test]
fn given_an_unreachable_bucket_when_altering_a_topic_should_report_it_and_write_the_event_later() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    ok(run(&dir, &["topic", "create", "payments", "--partitions", "1"]));
    let mut alter = Command::new(BIN);
    alter
        .arg("--data-dir")
        .arg(&dir)
        .args(["topic", "alter", "payments", "--set", "retention.ms=86400000"])
        .env_remove("TIERLOG_CONFIG")
        .env("TIERLOG_REMOTE_URL", "s3://nowhere")
        .env("TIERLOG_REMOTE_ENDPOINT", "http://127.0.0.1:1")
        .env("TIERLOG_REMOTE_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y");
    let altered = run_with_stdin(&mut alter, "");
    let err = String::from_utf8_lossy(&altered.stderr);
    assert!(!altered.status.success(), "{err}");
    assert!(err.contains("took effect") && err.contains("queued"), "{err}");
    let described = json_lines(&ok(run(&dir, &["topic", "describe", "payments"])));
    assert_eq!(described[0]["settings"]["retention.ms"]["value"], 86_400_000, "the alter stands: {described:?}");
    ok(run(&dir, &["tier", "run"]));
    let events = json_lines(&ok(run(&dir, &["audit"])));
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["topic_create", "topic_alter"], "{events:?}");
    assert!(!dir.join(tierlog::audit::PENDING_FILE).exists());
}

fn config(root: &Path) -> Config {
    let mut config = Config { data_dir: root.join("data"), ..Config::default() };
    config.remote.url = format!("file://{}", root.join("bucket").display());
    config
}

fn open(config: Config) -> Log {
    let host = Host::new(tierlog::disk::os(), Clock::manual(Arc::new(AtomicI64::new(1_700_000_000_000))));
    Log::open_on(host, config).unwrap()
}

async fn trail(log: &Log) -> Vec<audit::Event> {
    let store = tier::connect(log.config()).await.unwrap();
    let summary = audit::verify(&store).await.unwrap();
    assert!(summary.problems.is_empty(), "{:?}", summary.problems);
    let stored = audit::read_all(&store).await.unwrap();
    stored.into_iter().flat_map(|s| s.record.unwrap().events).collect()
}

/// The bucket refuses every audit PUT: the segments are committed all the same, the event
/// waits in the data directory, and once the bucket takes audit records again — after a
/// restart of the writer, here — the next pass writes it.
#[tokio::test]
async fn given_failing_audit_puts_when_tiering_should_commit_and_write_the_event_later() {
    let root = tempfile::tempdir().unwrap();
    let log = open(config(root.path()));
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let records: Vec<Record> =
        (0..5).map(|i| Record { timestamp: 1_000 + i, value: vec![b'v'; 10], ..Record::default() }).collect();
    p.append(&records, 1_000).unwrap();
    let store = tier::connect(log.config()).await.unwrap();
    let faulty = Arc::new(FaultStore::new(store.store.clone()));
    *faulty.faults.fail_puts_matching.lock().unwrap() = Some("audit/".into());
    let tiering = Tiering::start_with(log.clone(), store.with_store(faulty.clone())).await.unwrap();
    let reports = tiering.run_once(None, true).await.unwrap();
    assert_eq!((reports[0].uploaded_segments, reports[0].error.as_deref()), (1, None), "{reports:?}");
    assert_eq!(tiering.audit.pending().len(), 1, "the commit's event is queued");
    assert!(trail(&log).await.is_empty());
    let manifest = tierlog_tiering::manifest::latest_version(&store, "t", 0, 0).await.unwrap();
    assert_eq!(manifest, 1, "the segment is committed although its audit record is not");
    assert!(log.data_dir().join(tierlog::audit::PENDING_FILE).exists());

    // A restart: the queued event is read back and written by the next pass.
    drop(tiering);
    *faulty.faults.fail_puts_matching.lock().unwrap() = None;
    let tiering = Tiering::start_with(log.clone(), store.with_store(faulty)).await.unwrap();
    assert_eq!(tiering.audit.pending().len(), 1);
    tiering.run_once(None, true).await.unwrap();
    let events = trail(&log).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, audit::action::SEGMENT_COMMIT);
    assert_eq!(
        (events[0].topic.as_deref(), events[0].first_offset, events[0].last_offset),
        (Some("t"), Some(0), Some(4))
    );
    assert!(!log.data_dir().join(tierlog::audit::PENDING_FILE).exists());
}

/// Topic changes over HTTP name the token that asked, with the settings before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_a_token_when_creating_and_altering_a_topic_over_http_should_record_the_token_as_actor() {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use sha2::Digest;
    use tower::ServiceExt;

    let root = tempfile::tempdir().unwrap();
    let mut config = config(root.path());
    config.server.tokens = vec![tierlog::config::TokenConfig {
        name: "ops-admin".into(),
        token_sha256: hex::encode(sha2::Sha256::digest(b"s3cret")),
        read: vec![],
        write: vec![],
        admin: true,
        groups: vec![],
        metrics: false,
    }];
    let log = open(config);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let state = tierlog::serve::http::AppState::new(log.clone(), stopped, None).unwrap();
    let store = tier::connect(log.config()).await.unwrap();
    let queue = Arc::new(audit::Trail::new(store, "w", 3));
    state.audit.set(queue.clone()).unwrap();
    let app = tierlog::serve::http::router(state);
    let request = |method: Method, path: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .header("authorization", "Bearer s3cret")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let created = app.clone().oneshot(request(Method::POST, "/v1/topics", r#"{"name":"p","partitions":2}"#)).await;
    assert_eq!(created.unwrap().status(), 201);
    let altered =
        app.clone().oneshot(request(Method::PATCH, "/v1/topics/p", r#"{"set":{"segment.bytes":1048576}}"#)).await;
    assert_eq!(altered.unwrap().status(), 200);
    queue.flush(1).await.unwrap(); // (the handlers started a flush each; this one waits for them)
    let metrics = app.clone().oneshot(request(Method::GET, "/metrics", "")).await.unwrap();
    let metrics = http_body_util::BodyExt::collect(metrics.into_body()).await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("\ntierlog_audit_events_pending 0\n"), "{metrics}");
    assert!(metrics.contains("\ntierlog_audit_events_dropped_total 0\n"), "{metrics}");
    let events = trail(&log).await;
    let summary: Vec<(&str, &str)> = events.iter().map(|e| (e.action.as_str(), e.actor.as_str())).collect();
    assert_eq!(summary, [("topic_create", "ops-admin"), ("topic_alter", "ops-admin")]);
    assert_eq!(events[0].after.as_ref().unwrap()["partitions"], 2);
    assert_eq!(events[1].after.as_ref().unwrap()["settings"]["segment.bytes"], "1048576");
}

/// Remote retention's expiry commit and the later deletion of the expired objects are both
/// in the trail, with the offsets expired, the rule, and the start before and after.
#[tokio::test]
async fn given_remote_retention_when_segments_expire_and_go_should_record_both() {
    const DAY: i64 = 24 * 3600 * 1000;
    let root = tempfile::tempdir().unwrap();
    let mut config = config(root.path());
    config.tiering.local_retention_bytes = 0;
    config.tiering.remote_retention_ms = 2 * DAY;
    config.tiering.expiry_grace_ms = 60_000;
    let time = Arc::new(AtomicI64::new(1_700_000_000_000));
    let host = Host::new(tierlog::disk::os(), Clock::manual(time.clone()));
    let log = Log::open_on(host, config).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let append = |from: u64, at: i64| {
        let records: Vec<Record> = (from..from + 10)
            .map(|i| Record { timestamp: at, value: format!("v{i}").into_bytes(), ..Record::default() })
            .collect();
        p.append(&records, at).unwrap();
    };
    append(0, 1_700_000_000_000);
    tiering.run_once(None, true).await.unwrap();
    time.fetch_add(10 * DAY, std::sync::atomic::Ordering::SeqCst);
    append(10, 1_700_000_000_000 + 10 * DAY);
    tiering.run_once(None, true).await.unwrap(); // commits 10..19, expires 0..9
    time.fetch_add(120_000, std::sync::atomic::Ordering::SeqCst);
    tiering.run_once(None, true).await.unwrap(); // the grace has passed: deletes
    let events = trail(&log).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["segment_commit", "segment_commit", "retention_expire", "retention_delete"], "{events:?}");
    let expiry = &events[2];
    assert_eq!((expiry.first_offset, expiry.last_offset), (Some(0), Some(9)));
    assert_eq!(expiry.before.as_ref().unwrap()["start_offset"], 0);
    assert_eq!(expiry.after.as_ref().unwrap()["start_offset"], 10);
    assert!(expiry.reason.as_deref().is_some_and(|r| !r.is_empty()), "{expiry:?}");
    assert_eq!(events[3].after.as_ref().unwrap()["deleted_objects"].as_array().unwrap().len(), 1);
}

/// rev-audit: `load_pending` says an unreadable `audit-pending.json` is "left for
/// inspection", but the first pass's `save_pending` (nothing queued) removes it, and a
/// queued event would overwrite it: the events it held are gone without trace. Unreadable
/// here means a file written by another tierlog version (an `Event` field this build does
/// not know: `deny_unknown_fields`), a torn or hand-edited file, or a disk error.
#[tokio::test]
async fn rev_audit_an_unreadable_pending_file_is_left_for_inspection() {
    let root = tempfile::tempdir().unwrap();
    let log = open(config(root.path()));
    log.create_topic("t", 1).unwrap();
    let pending = log.data_dir().join(tierlog::audit::PENDING_FILE);
    let queued = r#"[{"time_ms":1,"actor":"alice@host","action":"hold_release","topic":"t","reason":"case closed","ticket":"SEC-7"}]"#;
    std::fs::write(&pending, queued).unwrap();
    let store = tier::connect(log.config()).await.unwrap();
    let tiering = Tiering::start_with(log.clone(), store).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    assert!(
        pending.exists(),
        "the unreadable pending file (a hold_release event) was deleted by the pass; trail: {:?}",
        trail(&log).await
    );
    assert_eq!(std::fs::read_to_string(&pending).unwrap(), queued, "left as it was, for inspection");
}

/// rev-audit: `tierlog audit` prints the trail as complete and exits 0 when a record was
/// removed from the middle (here the segment commit): it only counts records it cannot parse,
/// never checks the numbering or the chain, so an auditor reading its output (the documented
/// way to answer "who did what, when") is not told that events are missing.
#[test]
fn rev_audit_tierlog_audit_does_not_print_a_trail_with_a_gap_as_complete() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    ok(run(&dir, &["topic", "create", "payments", "--partitions", "1"]));
    let mut produce = Command::new(BIN);
    produce.arg("--data-dir").arg(&dir).args(["produce", "payments"]).env_remove("TIERLOG_CONFIG");
    ok(run_with_stdin(&mut produce, "a\nb\nc\n"));
    ok(run(&dir, &["tier", "run"]));
    ok(run(&dir, &["hold", "set", "payments", "--reason", "SEC 2026-114"]));
    let before = json_lines(&ok(run(&dir, &["audit"])));
    assert_eq!(before.len(), 3, "{before:?}");
    std::fs::remove_file(root.path().join("data-remote/audit/00000000000000000002.json")).unwrap();
    let after = run(&dir, &["audit"]);
    assert!(
        !after.status.success(),
        "record 2 is gone, yet `tierlog audit` exits 0 printing {:?}; stderr: {}",
        json_lines(&after).iter().map(|e| e["action"].clone()).collect::<Vec<_>>(),
        String::from_utf8_lossy(&after.stderr)
    );
}
