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
    // Per partition: a multi-partition consume interleaves partitions in no fixed order.
    let replay = |data: &[String], topic: &str| -> Vec<Vec<u8>> {
        let partitions = if topic == "payments" { 0..3 } else { 0..1 };
        partitions
            .map(|p| {
                let p = p.to_string();
                node.ok(&args(&with(data, &["consume", topic, "--partition", &p, "--from-beginning"])), "").stdout
            })
            .collect()
    };
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
    assert_old_node_fenced_and_new_one_commits(&node, &new, 3);
}

/// The old node goes on producing payments: its next tiering pass must not extend the chain
/// of any of their `partitions`; the node that took over commits on top of its take-over.
fn assert_old_node_fenced_and_new_one_commits(node: &Node, new: &[String], partitions: usize) {
    node.ok(&["produce", "payments", "--input-format", "json"], &events(5000, 30));
    let reports = json_lines(&node.run(&["tier", "run"], ""));
    let payments: Vec<&Value> = reports.iter().filter(|r| r["topic"] == "payments").collect();
    assert_eq!(payments.len(), partitions);
    for report in payments {
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains("fenced") && error.contains("--take-over"), "the old writer is stopped: {report}");
    }
    node.ok(&args(&with(new, &["produce", "payments", "--input-format", "json"])), &events(6000, 30));
    let reports = json_lines(&node.ok(&args(&with(new, &["tier", "run"])), ""));
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
        for p in ["0", "1"] {
            let old = node.ok(&["consume", &topic, "--partition", p, "--from-beginning"], "").stdout;
            let restored = node.ok(&args(&with(&new, &["consume", &topic, "--partition", p, "--from-beginning"])), "");
            assert_eq!(restored.stdout, old, "{topic}/{p}");
        }
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
    // Written by the writer whose history is restored (snapshots of others are not taken).
    let writer = tierlog_integration::scenarios::manifest(&store, "t", 0).await.writer;
    let groups = vec![GroupOffsets { group: "g".into(), topic: "t".into(), offsets: BTreeMap::from([(0, 5000)]) }];
    catalog::publish_group_snapshot(&store, &writer, 1, BTreeMap::new(), groups, 0).await.unwrap();
    let restored = tierlog::config::Config { data_dir: dir.path().join("restored"), ..config };
    let report = tierlog::restore::restore(restored.clone(), &store, &Default::default(), &|_, _| {}).await.unwrap();
    assert_eq!((report.group_offsets, report.group_offsets_clamped), (1, 1));
    let offsets = tierlog::groups::load(&restored.data_dir, "g", "t").unwrap();
    assert_eq!(offsets[&0], 160, "the end of the two restored segments");
}

// Findings of an adversarial review, each a test that failed before its fix.

/// A node whose config keeps tiered segments locally (the default local retention).
fn node_keeping_local_segments(s3: &S3Target, dir: &Path, prefix: &str) -> Node {
    let node = Node::new(s3, dir, prefix);
    let text = std::fs::read_to_string(&node.config).unwrap();
    assert!(text.contains("local_retention_bytes = 0"));
    std::fs::write(&node.config, text.replace("local_retention_bytes = 0", "local_retention_bytes = 1073741824"))
        .unwrap();
    node
}

/// With its segments still local, the old node's chain-end check accepted the take-over
/// version (same entries) and went on committing on top of it.
#[test]
fn take_over_fences_an_old_node_that_kept_its_segments_locally() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = node_keeping_local_segments(&s3, dir.path(), &s3.unique_prefix("take-over-local"));
    node.ok(&["topic", "create", "payments"], "");
    node.ok(&["produce", "payments", "--input-format", "json"], &events(0, 300));
    let reports = json_lines(&node.ok(&["tier", "run"], ""));
    assert!(reports.iter().all(|r| r["error"].is_null()), "{reports:?}");
    let new = node.data_dir(&dir.path().join("new"));
    node.ok(&args(&with(&new, &["restore", "--take-over"])), "");
    assert_old_node_fenced_and_new_one_commits(&node, &new, 1);
}

/// A writer fenced by a take-over kept publishing group snapshots, and restore took the
/// newest whoever wrote it.
#[test]
fn a_fenced_writer_does_not_publish_group_snapshots() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("fenced-groups");
    let node = Node::new(&s3, dir.path(), &prefix);
    original(&node);
    let restored = dir.path().join("new");
    let new = node.data_dir(&restored);
    node.ok(&args(&with(&new, &["restore", "--take-over"])), "");
    node.ok(&args(&with(&new, &["produce", "payments", "--input-format", "json"])), &events(6000, 30));
    let reports = json_lines(&node.ok(&args(&with(&new, &["tier", "run"])), ""));
    assert!(reports.iter().all(|r| r["error"].is_null()), "{reports:?}");
    node.ok(&["group", "seek", "billing", "--topic", "payments", "--to-latest"], "");
    let reports = json_lines(&node.run(&["tier", "run"], ""));
    assert!(reports.iter().filter(|r| r["topic"] == "payments").all(|r| !r["error"].is_null()), "{reports:?}");
    let new_writer = std::fs::read_to_string(restored.join("writer-id")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let snapshot =
        runtime.block_on(tierlog_tiering::catalog::latest_group_snapshot(&s3.store(&prefix), 0)).unwrap().unwrap();
    assert_eq!(snapshot.writer.id.trim(), new_writer.trim(), "{snapshot:?}");
}

/// The take-over version restore writes is signed like every other version.
#[test]
fn take_over_versions_are_signed_like_every_other_version() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("take-over-signed"));
    let (signer, private) = tierlog_tiering::signing::Signer::generate().unwrap();
    let (key_file, public_file) = (dir.path().join("key.pem"), dir.path().join("key.pub.pem"));
    std::fs::write(&key_file, private).unwrap();
    std::fs::write(&public_file, signer.public_pem()).unwrap();
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text.push_str(&format!("[integrity]\nsigning_key_file = \"{}\"\n", key_file.display()));
    std::fs::write(&node.config, text).unwrap();
    node.ok(&["topic", "create", "payments"], "");
    node.ok(&["produce", "payments", "--input-format", "json"], &events(0, 300));
    node.ok(&["tier", "run"], "");
    let status = json_lines(&node.ok(&["tier", "status"], ""));
    assert_eq!(status[0]["signing_key_id"], signer.key_id.as_str(), "{status:?}");
    assert_eq!(status[0]["published_public_keys"], serde_json::json!([signer.key_id]), "{status:?}");
    let public = public_file.display().to_string();
    let verify = node.run(&["verify", "--public-key", &public], "");
    assert_eq!(verify.status.code(), Some(0), "before: {}", String::from_utf8_lossy(&verify.stdout));
    let new = node.data_dir(&dir.path().join("new"));
    node.ok(&args(&with(&new, &["restore", "--take-over"])), "");
    let verify = node.run(&args(&with(&new, &["verify", "--public-key", &public])), "");
    assert_eq!(verify.status.code(), Some(0), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// A restore of one topic made the restored node's first pass publish a catalog without the
/// others, whose history is still in the bucket.
#[test]
fn a_partial_restore_does_not_make_the_bucket_forget_other_topics() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("partial"));
    original(&node);
    let first = node.data_dir(&dir.path().join("first"));
    node.ok(&args(&with(&first, &["restore", "--topic", "payments", "--take-over"])), "");
    node.ok(&args(&with(&first, &["tier", "run"])), "");
    let second = node.data_dir(&dir.path().join("second"));
    let out = node.run(&args(&with(&second, &["restore", "--topic", "audit"])), "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A resumed restore reads the bucket and prefix the interrupted one read, or refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_restore_refuses_another_bucket_prefix() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (s3.unique_prefix("resume-a"), s3.unique_prefix("resume-b"));
    let log_a = tierlog_integration::scenarios::tiered_history(&s3, &dir.path().join("a"), &a, 1, None).await;
    let config = log_a.config().clone();
    drop(log_a);
    drop(tierlog_integration::scenarios::tiered_history(&s3, &dir.path().join("b"), &b, 1, None).await);
    let restored = tierlog::config::Config { data_dir: dir.path().join("restored"), ..config };
    let (interrupted, store_a) = (restored.clone(), s3.store(&a));
    let crashed = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            // A panic after the first partition stands in for kill -9.
            let _ =
                tierlog::restore::restore(interrupted, &store_a, &Default::default(), &|_, _| panic!("kill -9")).await;
        })
    })
    .join();
    assert!(crashed.is_err());
    assert!(restored.data_dir.join("restore-in-progress.json").exists());
    let mut other = restored.clone();
    s3.configure(&mut other, &b);
    let resumed = tierlog::restore::restore(other, &s3.store(&b), &Default::default(), &|_, _| {}).await;
    let error = resumed.unwrap_err().to_string();
    assert!(error.contains("the interrupted restore read"), "{error}");
}

/// A hostile catalog (a partition count no topic can have) is refused before anything is
/// probed or written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_with_absurd_partition_counts_is_refused_quickly() {
    use tierlog_tiering::catalog::{self, CatalogTopic};
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("huge");
    let store = s3.store(&prefix);
    let writer = tierlog_tiering::manifest::Writer { id: "w".into(), epoch: 1 };
    let topic = CatalogTopic { name: "t".into(), partitions: u32::MAX, created_ms: 1, settings: Default::default() };
    catalog::publish_catalog(&store, &writer, 1, vec![topic], 0).await.unwrap();
    let mut config = tierlog_integration::scenarios::config(&dir.path().join("restored"));
    s3.configure(&mut config, &prefix);
    let options = tierlog::restore::RestoreOptions::default();
    let restore = tierlog::restore::restore(config, &store, &options, &|_, _| {});
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), restore).await;
    let error = result.expect("refused at once").unwrap_err().to_string();
    assert!(error.contains("partitions"), "{error}");
    assert!(!dir.path().join("restored").exists(), "nothing written");
}

/// Every command but restore stays out of a half-restored directory, `group delete` too.
#[test]
fn group_delete_refuses_a_half_restored_directory() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&s3, dir.path(), &s3.unique_prefix("group-delete"));
    original(&node);
    let restored = dir.path().join("restored");
    let new = node.data_dir(&restored);
    node.ok(&args(&with(&new, &["restore"])), "");
    std::fs::write(restored.join("restore-in-progress.json"), "{}").unwrap();
    let out = node.run(&args(&with(&new, &["group", "delete", "billing"])), "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("restore"));
    assert!(restored.join("groups/billing/payments.json").exists());
}

/// The library-level round trip the MinIO suite runs too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restore_round_trip_scenario() {
    tierlog_integration::scenarios::restore_round_trip(&S3Target::start()).await;
}
