//! The real `tierlog` binary against a real S3 server: `tier run|status|scrub`, startup
//! failures that leave the local log working, and kill -9 during tiering.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use tierlog_integration::S3Target;
use tierlog_integration::cli::{json_lines, run, tierlog, write_config};
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::segment_object;

fn events(from: u64, n: u64) -> String {
    (from..from + n)
        .map(|i| format!("{{\"key\":\"acct-{}\",\"value\":\"payment {i} {}\"}}\n", i % 5, "x".repeat(200)))
        .collect()
}

#[test]
fn tier_run_status_and_scrub_through_the_cli() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &s3, &s3.unique_prefix("cli"));
    let env = s3.child_env();
    assert!(run(&config, &env, &["topic", "create", "payments", "--partitions", "2"], "").status.success());
    let out = run(&config, &env, &["produce", "payments", "--input-format", "json"], &events(0, 2000));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = run(&config, &env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports = json_lines(&out);
    assert_eq!(reports.len(), 2);
    assert!(
        reports.iter().all(|r| r["uploaded_segments"].as_u64().unwrap() >= 2 && r["error"].is_null()),
        "{reports:?}"
    );

    let status = json_lines(&run(&config, &env, &["tier", "status", "payments"], ""));
    for s in &status {
        assert_eq!(s["remote"]["start_offset"], 0);
        assert_eq!(s["remote"]["end_offset"], s["local"]["end_offset"]);
        assert_eq!(s["local"]["sealed_segments"], 0);
        assert_eq!(s["tiering_lag_bytes"], 0);
        assert_eq!(s["conditional_writes"], s3.conditional_writes);
        assert!(
            s["remote"]["stored_bytes"].as_u64().unwrap() * 4 < s["remote"]["raw_bytes"].as_u64().unwrap(),
            "compressed: {s}"
        );
    }
    let out = run(&config, &env, &["tier", "scrub"], "");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "no orphans after a clean run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn missing_credentials_fail_tiering_fast_and_the_local_log_keeps_working() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &s3, "nocreds");
    assert!(run(&config, &[], &["topic", "create", "t"], "").status.success());
    let started = Instant::now();
    let out = run(&config, &[], &["tier", "run"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&s3.endpoint) && err.contains(&s3.bucket) && err.contains("credentials"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "fails fast, took {:?}", started.elapsed());
    let out = run(&config, &[], &["produce", "t"], "still works\n");
    assert!(out.status.success(), "appends never depend on the remote tier");
}

/// kill -9 `tier run` at random moments, over and over, then let one finish: the manifest
/// must cover every sealed offset exactly once and every object must decode to the records
/// that were produced.
#[test]
fn kill_9_during_tiering_converges_with_no_loss() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("crash");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    assert!(run(&config, &env, &["topic", "create", "t"], "").status.success());
    let produced = produce_and_kill_tier_runs(&config, &env, "tiering", 400);
    let out = run(&config, &env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    assert_remote_holds_each_record_once(&s3, &prefix, produced);
    let scrub = run(&config, &env, &["tier", "scrub"], "");
    let orphans = json_lines(&scrub).len();
    eprintln!(
        "tiering crash test: {orphans} orphan objects left by killed runs (a scrub removes them after the grace period)"
    );
}

/// `TIERLOG_CRASH_ROUNDS` (default 12) rounds of: produce 700 events to `t`, start `tier
/// run`, kill -9 it after a random time below `kill_within_ms` (if still running). Returns how
/// many events were produced.
fn produce_and_kill_tier_runs(
    config: &std::path::Path,
    env: &[(String, String)],
    what: &str,
    kill_within_ms: u64,
) -> u64 {
    let rounds: u64 = std::env::var("TIERLOG_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("{what} crash test: {rounds} rounds, seed {seed}");
    let (mut produced, mut killed) = (0, 0);
    for _ in 0..rounds {
        let out = run(config, env, &["produce", "t", "--input-format", "json"], &events(produced, 700));
        assert!(out.status.success());
        produced += 700;
        let mut child =
            tierlog(config, env).args(["tier", "run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let deadline = Instant::now() + Duration::from_millis((seed >> 33) % kill_within_ms);
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    eprintln!("{what} crash test: {killed} of {rounds} runs killed mid-way");
    produced
}

/// The remote tier of topic `t` partition 0 holds offsets 0..produced contiguously, every
/// object decodes to its recorded SHA-256, and every produced record appears exactly once.
fn assert_remote_holds_each_record_once(s3: &S3Target, prefix: &str, produced: u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = s3.store(prefix);
    let manifest = runtime
        .block_on(ManifestStore::open(store.clone(), "t", 0, Writer { id: "check".into(), epoch: 0 }, 0))
        .unwrap()
        .current;
    assert_eq!(
        (manifest.start_offset(), manifest.next_offset()),
        (Some(0), produced),
        "every produced record is in the remote tier"
    );
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut next = 0;
    for entry in &manifest.entries {
        assert_eq!(entry.base_offset, next, "entries are contiguous");
        let object = runtime
            .block_on(async { store.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap() });
        let raw = segment_object::decode_object(&object).unwrap();
        assert_eq!(tierlog_tiering::sha256_hex(&raw), entry.raw_sha256);
        let mut at = 0;
        while at < raw.len() {
            let (header, records) = tierlog::batch::decode(&raw[at..]).unwrap();
            for (offset, record) in records {
                assert_eq!(offset, next);
                let value = String::from_utf8(record.value).unwrap();
                let id: u64 = value.split(' ').nth(1).unwrap().parse().unwrap();
                *seen.entry(id).or_default() += 1;
                next += 1;
            }
            at += header.length;
        }
    }
    assert!(manifest.archives.is_empty());
    assert_eq!(next, produced);
    assert!((0..produced).all(|id| seen.get(&id) == Some(&1)), "every record exactly once");
}

/// kill -9 steered into the commit window: the in-process server holds `tier run`'s manifest
/// PUT until the process is dead, then either stores it (the commit landed after its writer
/// died) or drops it (it never landed); in the last rounds a successor `tier run` commits
/// while the dead writer's PUT is still held, and only then is that PUT let through (it must
/// not overwrite the successor's version). Each time the next `tier run` converges: every
/// record in the remote tier exactly once, the chain contiguous, nothing re-committed.
#[test]
fn kill_9_inside_the_commit_window_converges_whether_the_commit_lands_or_not() {
    let s3 = S3Target::start();
    let Some(gate) = s3.gate.clone() else {
        eprintln!("{}: the commit window can only be steered on the in-process server; skipped", s3.provider);
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("commit-window");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    assert!(run(&config, &env, &["topic", "create", "t"], "").status.success());
    let mut produced = 0;
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        Land,
        Lose,
        SuccessorFirstThenLand,
    }
    use Then::*;
    for (round, then) in
        [Land, Lose, Land, Lose, SuccessorFirstThenLand, SuccessorFirstThenLand].into_iter().enumerate()
    {
        let land = then != Lose;
        let out = run(&config, &env, &["produce", "t", "--input-format", "json"], &events(produced, 600));
        assert!(out.status.success());
        produced += 600;
        gate.release.store(false, std::sync::atomic::Ordering::SeqCst);
        gate.land.store(land, std::sync::atomic::Ordering::SeqCst);
        gate.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut child =
            tierlog(&config, &env).args(["tier", "run"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        assert!(gate.wait_held(round as u64 + 1, Duration::from_secs(60)), "round {round}: no manifest PUT arrived");
        child.kill().unwrap(); // SIGKILL while the commit is at the server
        child.wait().unwrap();
        gate.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        if then == SuccessorFirstThenLand {
            let out = run(&config, &env, &["tier", "run"], "");
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(remote_end(&s3, &prefix), produced, "round {round}: the successor committed everything");
        }
        gate.release.store(true, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200)); // the held PUT lands (or is dropped)
        let remote_end = remote_end(&s3, &prefix);
        match then {
            Land => assert_eq!(remote_end, produced, "round {round}: the held commit landed after its writer died"),
            Lose => assert!(remote_end < produced, "round {round}: the held commit was lost"),
            SuccessorFirstThenLand => {
                assert_eq!(remote_end, produced, "round {round}: the late PUT did not replace the successor's version")
            }
        }
    }
    let out = run(&config, &env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_remote_holds_each_record_once(&s3, &prefix, produced);
}

fn remote_end(s3: &S3Target, prefix: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reader = Writer { id: "check".into(), epoch: 0 };
    runtime.block_on(ManifestStore::open(s3.store(prefix), "t", 0, reader, 0)).unwrap().current.next_offset()
}

/// `tierlog verify` exits 0 on an intact archive, 3 with one JSON line per problem on a
/// damaged one, and 1 ("could not run", never "damage") when the store cannot be reached.
#[test]
fn verify_exit_status_separates_damage_from_could_not_run() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("cli-verify");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    let lines: String = (0..3000).map(|i| format!("event-{i}\n")).collect();
    assert!(run(&config, &env, &["topic", "create", "t"], "").status.success());
    assert!(run(&config, &env, &["produce", "t"], &lines).status.success());
    assert!(run(&config, &env, &["tier", "run"], "").status.success());

    let out = run(&config, &env, &["verify", "--deep"], "");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["summary"]["records"], 3000, "{summary}");

    let store = s3.store(&prefix);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = runtime.block_on(async {
        let manifest =
            ManifestStore::open(store.clone(), "t", 0, Writer { id: "test".into(), epoch: 0 }, 0).await.unwrap();
        let key = object_store::path::Path::from(manifest.current.entries[0].key.as_str());
        store.store.delete(&key).await.unwrap();
        key
    });
    let out = run(&config, &env, &["verify"], "");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!((lines[0]["kind"].as_str(), lines[0]["key"].as_str()), (Some("object_missing"), Some(key.as_ref())));
    assert_eq!((lines[0]["topic"].as_str(), lines[0]["partition"].as_u64()), (Some("t"), Some(0)));
    assert_eq!(lines[1]["ok"], false);

    let unreachable = "http://127.0.0.1:9".to_string(); // discard port: nothing listens
    let text = std::fs::read_to_string(&config).unwrap().replace(&s3.endpoint, &unreachable);
    std::fs::write(&config, text).unwrap();
    let out = run(&config, &env, &["verify"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "names the endpoint: {stderr}");
    assert!(out.stdout.is_empty(), "no verdict when verification could not run");
}

/// kill -9 `tier run` at random moments while remote retention (a byte cap, no grace period)
/// expires and deletes on every pass, then let it finish: the remote tier holds a contiguous
/// suffix of the log, every record of it exactly once (nothing unexpired lost), nothing below
/// the start is still listed or pending, and `verify` proves the chain across every cut.
#[test]
fn kill_9_during_expiry_converges_with_no_unexpired_record_lost() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("expiry-crash");
    let config = write_config(dir.path(), &s3, &prefix);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[tiering]\n",
        "[tiering]\nremote_retention_bytes = 400000\nexpiry_grace_ms = 0\nlocal_retention_ms = 0\n",
    );
    std::fs::write(&config, text).unwrap();
    let env = s3.child_env();
    assert!(run(&config, &env, &["topic", "create", "t"], "").status.success());
    let produced = produce_and_kill_tier_runs(&config, &env, "expiry", 600);
    // Two clean passes: the first may still commit an expiry whose deletes the second makes.
    for _ in 0..2 {
        let out = run(&config, &env, &["tier", "run"], "");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = s3.store(&prefix);
    let manifest = runtime
        .block_on(ManifestStore::open(store.clone(), "t", 0, Writer { id: "check".into(), epoch: 0 }, 0))
        .unwrap()
        .current;
    let start = manifest.expired_before();
    assert!(start > 0, "the byte cap expired something");
    assert_eq!(manifest.start_offset(), Some(start));
    assert_eq!(manifest.next_offset(), produced, "every produced record up to the end is in the remote tier");
    assert!(manifest.expired.as_ref().is_none_or(|x| x.pending_deletes.is_empty()), "no delete left pending");
    let mut seen: HashMap<u64, u64> = HashMap::new();
    let mut next = start;
    for entry in &manifest.entries {
        assert_eq!(entry.base_offset, next, "entries are contiguous from the start");
        let object = runtime
            .block_on(async { store.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap() });
        let raw = segment_object::decode_object(&object).unwrap();
        let mut at = 0;
        while at < raw.len() {
            let (header, records) = tierlog::batch::decode(&raw[at..]).unwrap();
            for (offset, record) in records {
                assert_eq!(offset, next);
                let id: u64 = String::from_utf8(record.value).unwrap().split(' ').nth(1).unwrap().parse().unwrap();
                *seen.entry(id).or_default() += 1;
                next += 1;
            }
            at += header.length;
        }
    }
    assert_eq!(next, produced);
    assert!((start..produced).all(|id| seen.get(&id) == Some(&1)), "every unexpired record exactly once");
    // Records below the start are gone from the log: asking says so.
    let out = run(&config, &env, &["consume", "t", "--from-offset", "0", "--max-records", "1"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("expired by retention"));
    let out = run(&config, &env, &["verify"], "");
    assert!(out.status.success(), "verify proves the chain across the cuts: {}", String::from_utf8_lossy(&out.stdout));
}
