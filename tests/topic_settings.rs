//! Per-topic settings (Kafka's topic-config names over the configuration): that each one acts
//! on its own topic's partitions only, that an alter is in force at once and after a reopen,
//! that bad changes are refused by name and change nothing, and that the settings travel
//! through the HTTP API and the bucket catalog to a restored node.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tierlog::config::Config;
use tierlog::serve::http::{AppState, router};
use tierlog::settings::{NewTopicSettings, SettingsChange, Source};
use tierlog::tier::Tiering;
use tierlog::{Error, Log, Record};
use tower::ServiceExt;

const T0: i64 = 1_772_546_400_000;

fn config(dir: &Path) -> Config {
    let mut config = Config { data_dir: dir.join("data"), ..Config::default() };
    config.segment.max_bytes = 1024 * 1024;
    config.segment.index_interval_bytes = 256;
    config
}

fn new_settings(topic: &str, pairs: &[(&str, &str)]) -> NewTopicSettings {
    NewTopicSettings::parse(topic, pairs.iter().copied()).unwrap()
}

fn set(pairs: &[(&str, &str)]) -> SettingsChange {
    SettingsChange { set: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), unset: vec![] }
}

fn unset(keys: &[&str]) -> SettingsChange {
    SettingsChange { set: vec![], unset: keys.iter().map(|k| k.to_string()).collect() }
}

/// Appends `n` records of about 500 bytes, one append each (so each can roll the segment).
fn append_each(log: &Log, topic: &str, n: u64) {
    let p = log.topic(topic).unwrap().partition(0).unwrap().clone();
    for i in 0..n {
        let record = Record { timestamp: T0 + i as i64, value: vec![b'v'; 500], ..Record::default() };
        p.append(&[record], T0).unwrap();
    }
}

fn sealed(log: &Log, topic: &str) -> usize {
    log.topic(topic).unwrap().partition(0).unwrap().sealed_segments().len()
}

fn topic_json(config: &Config, topic: &str) -> Value {
    let path = config.data_dir.join("topics").join(topic).join("topic.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn given_two_topics_when_one_sets_segment_bytes_then_only_its_partitions_roll_early() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    log.create_topic_with_settings("small", 1, &new_settings("small", &[("segment.bytes", "4096")])).unwrap();
    log.create_topic("big", 1).unwrap();
    append_each(&log, "small", 40);
    append_each(&log, "big", 40);
    assert!(sealed(&log, "small") >= 4, "20 KB in 4 KiB segments: {} sealed", sealed(&log, "small"));
    assert_eq!(sealed(&log, "big"), 0, "the configuration's 1 MiB applies to the other topic");
}

#[test]
fn given_an_alter_of_segment_bytes_when_appending_then_the_new_size_applies_at_once_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", 1).unwrap();
    append_each(&log, "t", 10);
    assert_eq!(sealed(&log, "t"), 0);
    assert_eq!(topic_json(&config, "t")["version"], 2, "no settings: version 2, which older builds open");

    let effective = log.alter_topic("t", &set(&[("segment.bytes", "4096")])).unwrap();
    assert_eq!((effective.segment_bytes.value, effective.segment_bytes.source), (4096, Source::Topic));
    append_each(&log, "t", 1);
    assert_eq!(sealed(&log, "t"), 1, "the 5 KB active segment rolled at the first append after the alter");
    append_each(&log, "t", 20);
    assert!(sealed(&log, "t") >= 3, "and every 4 KiB since");
    let file = topic_json(&config, "t");
    assert_eq!((file["version"].clone(), file["settings"].clone()), (json!(3), json!({"segment.bytes": 4096})));
    drop(log);

    let log = Log::open(config.clone()).unwrap();
    let topic = log.topic("t").unwrap();
    assert_eq!(topic.settings(&config).segment_bytes.value, 4096, "persisted");
    assert_eq!(topic.partition(0).unwrap().roll_policy().0, 4096, "and applied to the reopened partition");
    let before = sealed(&log, "t");
    append_each(&log, "t", 20);
    assert!(sealed(&log, "t") >= before + 2);

    let effective = log.alter_topic("t", &unset(&["segment.bytes"])).unwrap();
    assert_eq!((effective.segment_bytes.value, effective.segment_bytes.source), (1024 * 1024, Source::Config));
    let file = topic_json(&config, "t");
    assert_eq!((file["version"].clone(), file.get("settings")), (json!(2), None), "back to version 2");
    let before = sealed(&log, "t");
    append_each(&log, "t", 20);
    assert_eq!(sealed(&log, "t"), before, "the configuration's size again");
}

#[test]
fn invalid_settings_are_refused_by_name_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = Log::open(config.clone()).unwrap();
    log.create_topic_with_settings("t", 1, &new_settings("t", &[("segment.ms", "60000")])).unwrap();
    let file = || std::fs::read(config.data_dir.join("topics/t/topic.json")).unwrap();
    let before = file();
    let refused = |change: SettingsChange| log.alter_topic("t", &change).unwrap_err().to_string();

    let err = refused(set(&[("cleanup.policy", "compact")]));
    assert!(
        err.contains("topic 't': unknown setting \"cleanup.policy\"") && err.contains("local.retention.bytes"),
        "{err}"
    );
    let err = refused(set(&[("segment.bytes", "12")]));
    assert!(err.contains("segment.bytes = \"12\" is out of range: allowed 4096..=2147483648"), "{err}");
    let err = refused(set(&[("local.retention.ms", "-5")]));
    assert!(err.contains("local.retention.ms = \"-5\" is not a whole number"), "{err}");
    // The configuration keeps tiered segments locally for a day.
    let err = refused(set(&[("retention.ms", "3600000")]));
    assert!(
        err.contains("retention.ms = 3600000 is shorter than local.retention.ms (from tiering.local_retention_ms)"),
        "{err}"
    );
    let err = refused(set(&[("retention.ms", "7200000"), ("local.retention.ms", "7200001")]));
    assert!(err.contains("is shorter than local.retention.ms = 7200001"), "{err}");
    let err = refused(set(&[("message.timestamp.type", "LogAppendTime")]));
    assert!(err.contains("message.timestamp.type cannot be changed after the topic is created"), "{err}");
    let err = refused(set(&[("remote.storage.enable", "false")]));
    assert!(err.contains("cannot be turned off once the topic is tiered"), "{err}");
    let err =
        refused(SettingsChange { set: vec![("segment.ms".into(), "2000".into())], unset: vec!["segment.ms".into()] });
    assert!(err.contains("named twice"), "{err}");
    let err = log.alter_topic("nope", &set(&[("segment.ms", "2000")])).unwrap_err();
    assert!(matches!(err, Error::UnknownTopic(_)), "{err}");
    assert_eq!(file(), before, "no refused change touched topic.json");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().roll_policy().1, 60_000);

    // Together, a shorter remote retention and a local one within it are fine.
    log.alter_topic("t", &set(&[("retention.ms", "3600000"), ("local.retention.ms", "60000")])).unwrap();
    assert_eq!(log.topic("t").unwrap().remote_retention(&config), (Some(3_600_000), None));

    let bad = NewTopicSettings::parse("u", [("retention.bytes", "0")]).unwrap_err().to_string();
    assert!(bad.contains("retention.bytes = 0 is out of range: -1 (no limit) or at least 1"), "{bad}");
    let short = new_settings("u", &[("retention.ms", "1000")]);
    let err = log.create_topic_with_settings("u", 1, &short).err().expect("refused").to_string();
    assert!(err.contains("topic 'u': retention.ms = 1000 is shorter than"), "{err}");
    assert!(log.topic("u").is_err(), "nothing was created");
}

#[test]
fn a_read_only_log_refuses_an_alter() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    Log::open(config.clone()).unwrap().create_topic("t", 1).unwrap();
    let reader = Log::open_read_only(config).unwrap();
    let err = reader.alter_topic("t", &set(&[("segment.ms", "2000")])).unwrap_err();
    assert!(matches!(err, Error::ReadOnly(_)), "{err}");
}

/// Three topics on one writer, the configuration keeping every tiered segment locally:
/// `drop` sets `local.retention.bytes=0` (its tiered segments leave the local disk), `local`
/// sets `remote.storage.enable=false` (never tiered), `keep` sets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_per_topic_tiering_settings_when_tiering_then_each_topic_keeps_its_own_segments_local() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.tiering.local_retention_bytes = u64::MAX >> 2;
    config.tiering.local_retention_ms = 100 * 365 * 24 * 3_600_000;
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("keep", 1).unwrap();
    log.create_topic_with_settings("drop", 1, &new_settings("drop", &[("local.retention.bytes", "0")])).unwrap();
    log.create_topic_with_settings("local", 1, &new_settings("local", &[("remote.storage.enable", "false")])).unwrap();
    for topic in ["keep", "drop", "local"] {
        append_each(&log, topic, 10);
        log.topic(topic).unwrap().partition(0).unwrap().seal_active(T0).unwrap();
    }
    let tiering = Tiering::start(log.clone()).await.unwrap();
    let reports = tiering.run_once(None, false).await.unwrap();
    let report = |topic: &str| reports.iter().find(|r| r.topic == topic).cloned();
    let keep = report("keep").expect("tiered");
    assert_eq!((keep.uploaded_segments, keep.deleted_local_segments, keep.error), (1, 0, None));
    let drop = report("drop").expect("tiered");
    assert_eq!((drop.uploaded_segments, drop.deleted_local_segments, drop.error), (1, 1, None));
    assert!(report("local").is_none(), "an untiered topic is not tiered at all: {reports:?}");
    assert_eq!((sealed(&log, "keep"), sealed(&log, "drop"), sealed(&log, "local")), (1, 0, 1));
    let remote = tiering.remote().clone();
    let reader = tierlog_tiering::manifest::Writer { id: "test".into(), epoch: 0 };
    let manifest = tierlog_tiering::manifest::ManifestStore::open(remote, "local", 0, reader, 0).await.unwrap();
    assert_eq!(manifest.current.start_offset(), None, "nothing of `local` is in the bucket");

    // Turning tiering on later (an unset: the configuration's `true`) uploads what it holds.
    log.alter_topic("local", &unset(&["remote.storage.enable"])).unwrap();
    let reports = tiering.run_once(None, false).await.unwrap();
    let local = reports.iter().find(|r| r.topic == "local").expect("tiered now");
    assert_eq!((local.uploaded_segments, local.error.clone()), (1, None));
}

/// The catalog records each topic's own settings; an alter is recorded by the next pass (the
/// catalog is rewritten when any topic's settings change); a restore recreates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_an_alter_when_tiering_and_restoring_then_the_catalog_carries_the_settings_to_the_new_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.remote.url = format!("file://{}", dir.path().join("bucket").display());
    let log = Log::open(config.clone()).unwrap();
    let new = new_settings("t", &[("message.timestamp.type", "LogAppendTime"), ("segment.bytes", "8192")]);
    log.create_topic_with_settings("t", 1, &new).unwrap();
    append_each(&log, "t", 5);
    let tiering = Tiering::start(log.clone()).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    let catalog =
        || async { tierlog_tiering::catalog::latest_catalog(tiering.remote(), 0).await.unwrap().expect("a catalog") };
    let first = catalog().await;
    let settings = |c: &tierlog_tiering::catalog::Catalog| c.topics[0].settings.clone();
    assert_eq!(settings(&first).get("segment.bytes").map(String::as_str), Some("8192"));
    assert_eq!(settings(&first).get("message.timestamp.type").map(String::as_str), Some("LogAppendTime"));

    tiering.run_once(None, true).await.unwrap();
    assert_eq!(catalog().await.version, first.version, "no change, no new version");
    log.alter_topic("t", &set(&[("segment.ms", "60000"), ("retention.bytes", "1000000")])).unwrap();
    tiering.run_once(None, true).await.unwrap();
    let second = catalog().await;
    assert!(second.version > first.version, "the alter was recorded by the next pass");
    assert_eq!(settings(&second).get("segment.ms").map(String::as_str), Some("60000"));
    let own = log.topic("t").unwrap().own_settings();
    drop(tiering);
    drop(log);

    let restored_config = Config { data_dir: dir.path().join("restored"), ..config.clone() };
    let remote = tierlog::tier::connect(&restored_config).await.unwrap();
    let options = tierlog::restore::RestoreOptions::default();
    let restore = tierlog::restore::restore(restored_config.clone(), &remote, &options, &|_, _| {});
    restore.await.unwrap();
    let restored = Log::open(restored_config.clone()).unwrap();
    let topic = restored.topic("t").unwrap();
    assert_eq!(topic.own_settings(), own);
    assert_eq!(topic.metadata.timestamp_type, tierlog::batch::TimestampType::LogAppendTime);
    assert_eq!(topic.remote_retention(&restored_config), (None, Some(1_000_000)));
    assert_eq!(topic.partition(0).unwrap().roll_policy(), (8192, 60_000));
}

/// A catalog written by a newer build with a setting this one does not know is not restored
/// without it: the restore refuses, naming the setting.
#[tokio::test]
async fn a_catalog_with_an_unknown_setting_is_refused_by_restore() {
    let spec = tierlog_tiering::catalog::CatalogTopic {
        name: "t".into(),
        partitions: 1,
        created_ms: T0,
        settings: [("cleanup.policy".to_string(), "compact".to_string())].into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.remote.url = format!("file://{}", dir.path().join("bucket").display());
    let remote = tierlog::tier::connect(&config).await.unwrap();
    let writer = tierlog_tiering::manifest::Writer { id: "w".into(), epoch: 1 };
    tierlog_tiering::catalog::publish_catalog(&remote, &writer, T0, vec![spec], 0).await.unwrap();
    let options = tierlog::restore::RestoreOptions::default();
    let err = tierlog::restore::restore(config, &remote, &options, &|_, _| {}).await.unwrap_err().to_string();
    assert!(err.contains("unknown setting \"cleanup.policy\""), "{err}");
}

// ---- HTTP ----

fn app(log: &Log) -> Router {
    let (keep, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(keep); // the server never shuts down during the test
    router(AppState::new(log.clone(), shutdown, None).unwrap())
}

fn request(method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path).header("host", "127.0.0.1");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder.header("content-type", "application/json").body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

async fn call(app: &Router, request: Request<Body>) -> (u16, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn token(name: &str, secret: &str, admin: bool) -> tierlog::config::TokenConfig {
    use sha2::Digest;
    tierlog::config::TokenConfig {
        name: name.into(),
        token_sha256: hex(&sha2::Sha256::digest(secret.as_bytes())),
        read: vec!["*".into()],
        write: vec!["*".into()],
        admin,
        groups: vec![],
        metrics: false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_alters_a_topic_with_the_right_to_create_topics_and_get_shows_where_each_value_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.server.tokens = vec![token("admin", "admin-secret", true), token("writer", "writer-secret", false)];
    let log = Log::open(config).unwrap();
    let app = app(&log);
    let body = json!({"name": "t", "config": {"segment.bytes": 8192, "remote.storage.enable": "true"}});
    let (status, created) = call(&app, request(Method::POST, "/v1/topics", Some("admin-secret"), Some(body))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["settings"]["segment.bytes"], json!({"value": 8192, "source": "topic"}));

    let change =
        json!({"set": {"segment.bytes": "4096", "local.retention.ms": 60000}, "unset": ["remote.storage.enable"]});
    let patch = |token, body: &Value| request(Method::PATCH, "/v1/topics/t", token, Some(body.clone()));
    assert_eq!(call(&app, patch(None, &change)).await.0, 401);
    let (status, refused) = call(&app, patch(Some("writer-secret"), &change)).await;
    assert_eq!(status, 403, "writing a topic is not enough to alter it: {refused}");
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().roll_policy().0, 8192, "nothing changed");

    let (status, altered) = call(&app, patch(Some("admin-secret"), &change)).await;
    assert_eq!(status, 200, "{altered}");
    assert_eq!(altered["settings"]["segment.bytes"], json!({"value": 4096, "source": "topic"}));
    assert_eq!(altered["settings"]["remote.storage.enable"], json!({"value": true, "source": "config"}));
    assert_eq!(log.topic("t").unwrap().partition(0).unwrap().roll_policy(), (4096, 7 * 24 * 3_600_000));

    let (status, described) = call(&app, request(Method::GET, "/v1/topics/t", Some("writer-secret"), None)).await;
    assert_eq!(status, 200);
    let settings = &described["settings"];
    assert_eq!(settings["local.retention.ms"], json!({"value": 60000, "source": "topic"}));
    assert_eq!(settings["segment.ms"], json!({"value": 7 * 24 * 3_600_000u64, "source": "config"}));
    assert_eq!(settings["retention.ms"], json!({"value": -1, "source": "config"}));
    assert_eq!(settings["message.timestamp.type"], json!({"value": "CreateTime", "source": "default"}));
    assert_eq!(described["partitions"][0]["partition"], 0, "the partitions are still there");

    for (body, expect) in [
        (json!({"set": {"cleanup.policy": "compact"}}), "unknown setting \"cleanup.policy\""),
        (json!({"set": {"message.timestamp.type": "LogAppendTime"}}), "cannot be changed after the topic is created"),
        (json!({"set": {"segment.bytes": [1]}}), "expected a string, number or boolean"),
        (json!({"sett": {}}), "unknown field"),
        (json!({}), "nothing to change"),
    ] {
        let (status, refused) = call(&app, patch(Some("admin-secret"), &body)).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert!(refused["error"].as_str().unwrap().contains(expect), "{body}: {refused}");
    }
    let (status, _) = call(&app, patch(Some("admin-secret"), &json!({"set": {"segment.ms": 5000}}))).await;
    assert_eq!(status, 200);
    let unknown = request(Method::PATCH, "/v1/topics/nope", Some("admin-secret"), Some(change.clone()));
    assert_eq!(call(&app, unknown).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refuses_an_alter_over_http() {
    let root = tempfile::tempdir().unwrap();
    let mut writer_config = config(root.path());
    writer_config.remote.url = format!("file://{}", root.path().join("bucket").display());
    let replica_config = Config { data_dir: root.path().join("replica"), ..writer_config.clone() };
    let writer = Log::open(writer_config).unwrap();
    writer.create_topic("t", 1).unwrap();
    append_each(&writer, "t", 3);
    let tiering = Tiering::start(writer.clone()).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    let store = tierlog::tier::connect(writer.config()).await.unwrap();
    let replica = tierlog::replica::Replica::open(replica_config, store).await.unwrap();
    let app = app(replica.log());
    let change = json!({"set": {"segment.bytes": 4096}});
    let (status, refused) = call(&app, request(Method::PATCH, "/v1/topics/t", None, Some(change))).await;
    assert_eq!(status, 405, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("read-only replica"), "{refused}");
    let err = replica.log().alter_topic("t", &set(&[("segment.bytes", "4096")])).unwrap_err();
    assert!(matches!(err, Error::Replica { .. }), "{err}");
    drop(Arc::new(tiering));
}

/// Review finding: a topic that holds tiered data cannot be switched to
/// `remote.storage.enable=false`, even by a node whose configuration has tiering off (which
/// makes the value in force false already).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_topic_cannot_be_made_local_by_an_alter_under_a_configuration_without_tiering() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let log = Log::open(config.clone()).unwrap();
    log.create_topic("t", 1).unwrap();
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    p.append(&[Record { value: b"x".to_vec(), ..Record::default() }], 1).unwrap();
    Tiering::start(log.clone()).await.unwrap().run_once(None, true).await.unwrap();
    drop((p, log));
    let off =
        Config { tiering: tierlog::config::TieringSection { enabled: false, ..config.tiering.clone() }, ..config };
    let log = Log::open(off).unwrap();
    let err = log.alter_topic("t", &set(&[("remote.storage.enable", "false")])).unwrap_err();
    assert!(err.to_string().contains("cannot be turned off once the topic is tiered"), "{err}");
}

/// Review finding: out-of-range values in a hand-edited or damaged topic.json are refused on
/// open, naming the file, rather than trusted (a 10-byte segment.bytes made the open panic).
#[test]
fn out_of_range_settings_in_topic_json_are_refused_on_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    Log::open(config.clone())
        .unwrap()
        .create_topic_with_settings("t", 1, &new_settings("t", &[("segment.bytes", "65536")]))
        .unwrap();
    let path = dir.path().join("data/topics/t/topic.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("65536", "10");
    std::fs::write(&path, text).unwrap();
    let err = match Log::open(config) {
        Err(e) => e,
        Ok(log) => log.topic("t").err().expect("the damaged topic is refused"),
    };
    assert!(err.to_string().contains("topic.json") && err.to_string().contains("segment.bytes"), "{err}");
}
