//! `tierlog restore` with the real binary against a real S3 server (in-process s3s-fs by
//! default; moto and Garage in CI): a node rebuilt from the bucket alone replays history byte
//! for byte, keeps its groups' offsets, continues at the next offset, and fences or continues
//! the old writer as asked; a restore killed with SIGKILL finishes when run again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;
use tierlog_integration::S3Target;
use tierlog_integration::cli::{json_lines, run, tierlog, write_config};

struct Node {
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    /// A node on `prefix` with its data in `dir/data`.
    fn new(s3: &S3Target, dir: &Path, prefix: &str) -> Node {
        Node { config: write_config(dir, s3, prefix), env: s3.child_env() }
    }

    /// The same bucket prefix, another data directory.
    fn data_dir(&self, dir: &Path) -> Vec<String> {
        vec!["--data-dir".into(), dir.display().to_string()]
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        run(&self.config, &self.env, args, stdin)
    }

    fn ok(&self, args: &[&str], stdin: &str) -> Output {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "tierlog {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }
}

fn events(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"key\":\"acct-{}\",\"value\":\"payment {i} {}\"}}\n", i % 7, "x".repeat(150)))
        .collect()
}

/// Two topics (one with append-time timestamps), records, group offsets, all tiered.
fn original(node: &Node) {
    node.ok(&["topic", "create", "payments", "--partitions", "3"], "");
    node.ok(&["topic", "create", "audit", "--set", "message.timestamp.type=LogAppendTime"], "");
    node.ok(&["produce", "payments", "--input-format", "json"], &events(0, 1500));
    node.ok(&["produce", "audit"], "first\nsecond\nthird\n");
    node.ok(&["group", "seek", "billing", "--topic", "payments", "--to-offset", "100"], "");
    node.ok(&["group", "seek", "ledger", "--topic", "payments", "--to-latest"], "");
    let reports = json_lines(&node.ok(&["tier", "run"], ""));
    assert!(reports.iter().all(|r| r["error"].is_null()), "{reports:?}");
}

fn with(dir: &[String], args: &[&str]) -> Vec<String> {
    dir.iter().cloned().chain(args.iter().map(|a| a.to_string())).collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_restored_node_replays_history_byte_for_byte_keeps_group_offsets_and_continues() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("restore"));
    original(&node);
    let replay =
        |data: &[String], topic: &str| node.ok(&args(&with(data, &["consume", topic, "--from-beginning"])), "").stdout;
    let old: Vec<String> = vec![];
    let (payments, audit) = (replay(&old, "payments"), replay(&old, "audit"));
    let groups = node.ok(&["group", "describe", "billing"], "").stdout;

    let restored = dir.path().join("restored");
    let new = node.data_dir(&restored);
    let out = node.ok(&args(&with(&new, &["restore"])), "");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 5, "4 partitions and the summary: {lines:?}");
    let summary = &lines[4]["restored"];
    assert_eq!(
        (summary["topics"].as_u64(), summary["partitions"].as_u64(), summary["resumed"].as_bool()),
        (Some(2), Some(4), Some(false))
    );
    assert_eq!(summary["group_offsets"], 6, "{summary}");

    assert_eq!(replay(&new, "payments"), payments, "the restored node replays the same bytes");
    assert_eq!(replay(&new, "audit"), audit, "append times included");
    assert_eq!(node.ok(&args(&with(&new, &["group", "describe", "billing"])), "").stdout, groups);
    let metadata = std::fs::read_to_string(restored.join("topics/audit/topic.json")).unwrap();
    assert!(metadata.contains("\"message.timestamp.type\": \"LogAppendTime\""), "{metadata}");

    // Producing continues at the remote end: no gap, no reuse; the chain goes on.
    let ends: Vec<Value> = json_lines(&node.ok(&args(&with(&new, &["offsets", "payments"])), ""));
    let produced =
        json_lines(&node.ok(&args(&with(&new, &["produce", "payments", "--input-format", "json"])), &events(1500, 30)));
    for line in &produced {
        let p = line["partition"].as_u64().unwrap() as usize;
        assert_eq!(line["first_offset"], ends[p]["end"], "partition {p} continues where the bucket ends");
    }
    let reports = json_lines(&node.ok(&args(&with(&new, &["tier", "run"])), ""));
    assert!(reports.iter().all(|r| r["error"].is_null()), "{reports:?}");
    let verify = node.run(&args(&with(&new, &["verify", "--deep"])), "");
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn take_over_fences_the_old_writer_and_never_restores_over_data() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("take-over"));
    original(&node);

    let occupied = dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let out = node.run(&args(&with(&node.data_dir(&occupied), &["restore"])), "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(occupied.join("keep.txt")).unwrap(), "mine");

    let new = node.data_dir(&dir.path().join("new"));
    let summary = json_lines(&node.ok(&args(&with(&new, &["restore", "--take-over"])), "")).pop().unwrap();
    assert_eq!(summary["restored"]["took_over"], true);
    // The old node goes on producing: its next tiering pass must not extend the chain.
    node.ok(&["produce", "payments", "--input-format", "json"], &events(5000, 30));
    let reports = json_lines(&node.run(&["tier", "run"], ""));
    let payments: Vec<&Value> = reports.iter().filter(|r| r["topic"] == "payments").collect();
    assert_eq!(payments.len(), 3);
    for report in payments {
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains("written by another data directory"), "the old writer is stopped: {report}");
    }
    // The new node commits on top of its take-over.
    node.ok(&args(&with(&new, &["produce", "payments", "--input-format", "json"])), &events(6000, 30));
    let reports = json_lines(&node.ok(&args(&with(&new, &["tier", "run"])), ""));
    assert!(reports.iter().all(|r| r["error"].is_null()), "{reports:?}");
}

#[test]
fn a_restore_killed_midway_is_finished_by_running_it_again() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("restore-kill"));
    for t in 0..12 {
        node.ok(&["topic", "create", &format!("t{t:02}"), "--partitions", "2"], "");
        node.ok(&["produce", &format!("t{t:02}")], &format!("a{t}\nb{t}\nc{t}\n"));
    }
    node.ok(&["tier", "run"], "");
    let restored = dir.path().join("restored");
    let new = node.data_dir(&restored);
    let mut child = tierlog(&node.config, &node.env)
        .args(args(&with(&new, &["restore"])))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..3 {
        lines.next().unwrap().unwrap();
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        restored.join("restore-in-progress.json").exists(),
        "killed after 3 of 24 partitions, the restore was not finished"
    );
    let refused = node.run(&args(&with(&new, &["consume", "t00", "--from-beginning"])), "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("run the same `tierlog restore` again"));

    let summary = json_lines(&node.ok(&args(&with(&new, &["restore"])), "")).pop().unwrap();
    assert_eq!(
        (summary["restored"]["resumed"].as_bool(), summary["restored"]["partitions"].as_u64()),
        (Some(true), Some(24))
    );
    assert!(!restored.join("restore-in-progress.json").exists());
    for t in 0..12 {
        let topic = format!("t{t:02}");
        let old = node.ok(&["consume", &topic, "--from-beginning"], "").stdout;
        assert_eq!(node.ok(&args(&with(&new, &["consume", &topic, "--from-beginning"])), "").stdout, old, "{topic}");
    }
}

#[test]
fn a_bucket_without_a_catalog_is_refused_clearly() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("restore-empty"));
    let out = node.run(&args(&with(&node.data_dir(&dir.path().join("new")), &["restore"])), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("holds no topic catalog"), "{stderr}");
    assert!(!dir.path().join("new").exists(), "nothing is created when there is nothing to restore");
}

/// A group snapshot taken while the writer held records only locally points past what the
/// bucket holds: the restored group is clamped to the restored end, never left beyond it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_past_the_restored_end_are_clamped() {
    use std::collections::BTreeMap;
    use tierlog_tiering::catalog::{self, GroupOffsets};
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("restore-clamp");
    let log = tierlog_integration::scenarios::tiered_history(&s3, dir.path(), &prefix, 1, None).await;
    let config = log.config().clone();
    drop(log);
    let store = s3.store(&prefix);
    let writer = tierlog_tiering::manifest::Writer { id: "w".into(), epoch: 1 };
    let groups = vec![GroupOffsets { group: "g".into(), topic: "t".into(), offsets: BTreeMap::from([(0, 5000)]) }];
    catalog::publish_group_snapshot(&store, &writer, 1, BTreeMap::new(), groups, 0).await.unwrap();
    let restored = tierlog::config::Config { data_dir: dir.path().join("restored"), ..config };
    let report = tierlog::restore::restore(restored.clone(), &store, &Default::default(), &|_, _| {}).await.unwrap();
    assert_eq!((report.group_offsets, report.group_offsets_clamped), (1, 1));
    let offsets = tierlog::groups::load(&restored.data_dir, "g", "t").unwrap();
    assert_eq!(offsets[&0], 160, "the end of the two restored segments");
}
