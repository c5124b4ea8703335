//! The audit trail in the bucket against a real S3 server (s3s-fs in `cargo test`, moto and
//! Garage in CI): the CLI's actions and the tiering driver's commits each leave an event that
//! `tierlog audit` prints and `tierlog verify` proves, and a record rewritten in the bucket is
//! named by `verify`.

use object_store::ObjectStoreExt;
use tierlog_integration::S3Target;
use tierlog_integration::cli::{json_lines, run, write_config};

#[test]
fn every_action_is_in_the_bucket_trail_and_a_rewritten_record_is_named() {
    let s3 = S3Target::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("audit-trail");
    let config = write_config(dir.path(), &s3, &prefix);
    let env = s3.child_env();
    let ok = |args: &[&str], stdin: &str| {
        let out = run(&config, &env, args, stdin);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    ok(&["topic", "create", "payments"], "");
    ok(&["produce", "payments"], "a\nb\nc\n");
    ok(&["tier", "run"], "");
    let set = ok(&["hold", "set", "payments", "--reason", "SEC 2026-114"], "");
    let id = json_lines(&set)[0]["hold"]["id"].as_str().unwrap().to_string();
    ok(&["hold", "release", &id, "--reason", "case closed"], "");
    ok(&["topic", "alter", "payments", "--set", "retention.ms=86400000"], "");

    let events = json_lines(&ok(&["audit"], ""));
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["topic_create", "segment_commit", "hold_set", "hold_release", "topic_alter"], "{events:?}");
    assert_eq!(events.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert_eq!(events[2]["reason"], "SEC 2026-114");
    let verified = json_lines(&ok(&["verify"], ""));
    let last = verified.last().unwrap();
    assert_eq!((last["ok"].as_bool(), last["audit"]["records"].as_u64()), (Some(true), Some(5)), "{last}");

    // Rewrite record 3 in the bucket with a consistent checksum of its own (on a store that
    // takes overwrites): the chain breaks at record 4, and verify says so.
    let store = s3.store(&prefix);
    let key = store.key(&["audit", "00000000000000000003.json"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async { store.store.get(&key).await.unwrap().bytes().await.unwrap() });
    let text = String::from_utf8(text.to_vec()).unwrap();
    let body = text.lines().nth(1).unwrap().replace("SEC 2026-114", "nothing");
    let header = format!(
        "{{\"format\":\"tierlog-audit\",\"format_version\":1,\"body_sha256\":\"{}\"}}",
        tierlog_tiering::sha256_hex(body.as_bytes())
    );
    runtime.block_on(store.store.put(&key, format!("{header}\n{body}\n").into_bytes().into())).unwrap();
    let damaged = run(&config, &env, &["verify"], "");
    assert_eq!(damaged.status.code(), Some(3), "{}", String::from_utf8_lossy(&damaged.stdout));
    let problems: Vec<serde_json::Value> =
        json_lines(&damaged).into_iter().filter(|p| p.get("kind").is_some()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["kind"], "audit_chain_broken");
    assert!(problems[0]["key"].as_str().unwrap().ends_with("audit/00000000000000000004.json"), "{problems:?}");
}
