//! The CLI contract, through the real binary: JSON lines in and out, and clear errors for bad
//! input that write nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, json_lines, run_with_stdin};
use serde_json::Value;

fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir").arg(dir).args(args).env_remove("TIERLOG_CONFIG").env("TIERLOG_LOG_MAX_RECORD_BYTES", "2000");
    run_with_stdin(&mut cmd, stdin)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn produce_then_consume_round_trips_the_json_envelope() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["topic", "create", "t", "--partitions", "1"], "").status.success());
    let input = "{\"key\":\"k\",\"value\":{\"amount\":1},\"timestamp\":\"2026-03-03T14:02:00Z\",\"headers\":{\"h\":\"v\"}}\n\
                 {\"value\":\"plain\",\"timestamp\":1772546530000}\n";
    let out = run(dir.path(), &["produce", "t", "--input-format", "json"], input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out), vec![serde_json::json!({"partition":0,"first_offset":0,"last_offset":1,"count":2})]);

    let out = run(dir.path(), &["consume", "t"], "");
    let records = json_lines(&out);
    assert_eq!(
        records[0],
        serde_json::json!({"partition":0,"offset":0,"timestamp":1772546520000i64,"key":"k","value":"{\"amount\":1}","headers":{"h":"v"}})
    );
    assert_eq!(records[1]["value"], "plain");

    let out = run(dir.path(), &["consume", "t", "--from-time", "2026-03-03T14:02:05Z"], "");
    assert_eq!(json_lines(&out).iter().map(|r| r["offset"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1]);
    let out = run(dir.path(), &["offsets", "t", "--time", "2026-03-03T14:02:05Z"], "");
    assert_eq!(json_lines(&out), vec![serde_json::json!({"partition":0,"offset":1})]);
    let out = run(dir.path(), &["offsets", "t", "--time", "2099-01-01T00:00:00Z"], "");
    assert_eq!(
        json_lines(&out),
        vec![serde_json::json!({"partition":0,"offset":2})],
        "after the last record: the end offset"
    );
}

#[test]
fn malformed_line_is_reported_by_number_and_nothing_of_its_batch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["topic", "create", "t"], "");
    let out =
        run(dir.path(), &["produce", "t", "--input-format", "json"], "{\"value\":\"a\"}\n{\"value\":\"b\"}\n{oops\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line 3"), "{}", stderr(&out));
    assert!(json_lines(&run(dir.path(), &["consume", "t"], "")).is_empty(), "nothing of the bad batch is written");

    let big = format!("{}\n", "x".repeat(5000));
    let out = run(dir.path(), &["produce", "t"], &format!("small\n{big}"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("log.max_record_bytes = 2000"), "{}", stderr(&out));
    assert!(json_lines(&run(dir.path(), &["consume", "t"], "")).is_empty());
}

#[test]
fn bad_names_unknown_topics_and_offsets_past_the_end_get_clear_answers() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["topic", "create", "t"], "");
    for bad in ["../etc", "a/b", "bad\u{7}name"] {
        let out = run(dir.path(), &["topic", "create", bad], "");
        assert!(!out.status.success() && stderr(&out).contains("invalid topic name"), "{bad}: {}", stderr(&out));
    }
    let out = run(dir.path(), &["consume", "nope"], "");
    assert!(!out.status.success() && stderr(&out).contains("topic 'nope' does not exist"));
    let out = run(dir.path(), &["consume", "t", "--from-offset", "1000"], "");
    assert!(out.status.success() && out.stdout.is_empty(), "past the end: nothing, exit 0");
}

#[test]
fn follow_prints_records_appended_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["topic", "create", "t"], "");
    let mut follower = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["consume", "t", "--from-end", "--follow", "--max-records", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(run(dir.path(), &["produce", "t"], "hello\n").status.success());
    let mut line = String::new();
    BufReader::new(follower.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["value"], "hello");
    assert!(started.elapsed() < Duration::from_secs(2), "followed record arrived after {:?}", started.elapsed());
    assert!(follower.wait().unwrap().success());
}

#[test]
fn the_demo_runs_end_to_end_and_reads_across_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = Command::new(BIN)
        .args(["demo", "--events", "6000", "--dir"])
        .arg(&demo_dir)
        .env_remove("TIERLOG_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("remote tier: one ranged GET"), "{text}");
    assert!(text.contains("(remote tier)"), "the point-in-time answer comes from the remote tier: {text}");
    // A second run replaces its own directory and nothing else.
    assert!(
        Command::new(BIN).args(["demo", "--events", "600", "--dir"]).arg(&demo_dir).output().unwrap().status.success()
    );
    std::fs::create_dir_all(dir.path().join("precious")).unwrap();
    let out = Command::new(BIN).args(["demo", "--dir"]).arg(dir.path().join("precious")).output().unwrap();
    assert!(!out.status.success(), "the demo never deletes a directory it did not create");
}

/// Issue 8, defect 1, as a new user met it: a topic named `archive`, tiered with nothing kept
/// locally, then `tier scrub --delete` with the shortest window and no grace, every object made
/// to look two hours old. Scrub must recognise manifest versions by the key grammar, never as
/// orphans: it deletes the one uncommitted object, and every record is still readable.
#[test]
fn scrub_delete_keeps_every_manifest_of_a_topic_named_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tier_env = [
        ("TIERLOG_SEGMENT_MAX_BYTES", "65536"),
        ("TIERLOG_TIERING_LOCAL_RETENTION_BYTES", "0"),
        ("TIERLOG_TIERING_COMMIT_WINDOW_MS", "1000"),
        ("TIERLOG_TIERING_ORPHAN_GRACE_MS", "0"),
    ];
    let run_env = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(&data).args(args).env_remove("TIERLOG_CONFIG").envs(tier_env);
        run_with_stdin(&mut cmd, stdin)
    };
    assert!(run_env(&["topic", "create", "archive"], "").status.success());
    let input: String = (0..3000).map(|i| format!("{{\"value\":\"event {i} {}\"}}\n", "x".repeat(100))).collect();
    let out = run_env(&["produce", "archive", "--input-format", "json"], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_env(&["tier", "run"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(json_lines(&out)[0]["uploaded_segments"].as_u64().unwrap() >= 2, "several segments tiered");
    let remote_dir = dir.path().join("data-remote");
    let remote = tierlog_tiering::store::RemoteStore::local_dir(&remote_dir).unwrap();
    let orphan = tierlog_tiering::keys::segment_key(&remote, "archive", 0, 3000).to_string();
    std::fs::create_dir_all(remote_dir.join(&orphan).parent().unwrap()).unwrap();
    std::fs::write(remote_dir.join(&orphan), b"an upload that was never committed").unwrap();
    age_every_file(&remote_dir, Duration::from_secs(7200));

    let out = run_env(&["tier", "scrub", "--delete"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let deleted: Vec<String> = json_lines(&out)
        .into_iter()
        .filter(|l| l["action"] == "deleted")
        .map(|l| l["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, vec![orphan], "only the uncommitted object is deleted");

    let status = json_lines(&run_env(&["tier", "status", "archive"], ""));
    assert_eq!(status[0]["remote"]["end_offset"], 3000, "{status:?}");
    let out = run_env(&["consume", "archive", "--from-beginning"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let offsets: Vec<u64> = json_lines(&out).iter().map(|r| r["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (0..3000).collect::<Vec<_>>(), "every acknowledged record survives the scrub");
}

/// Sets the modification time of every file under `dir` to `age` ago.
fn age_every_file(dir: &Path, age: Duration) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            age_every_file(&path, age);
        } else {
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(std::time::SystemTime::now() - age).unwrap();
        }
    }
}
