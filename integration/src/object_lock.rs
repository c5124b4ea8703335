//! S3 Object Lock (WORM) scenarios, run against moto (tests/object_lock.rs, in CI) and MinIO
//! (tests/minio.rs, with Docker). Where the server has Object Lock (moto in
//! CI: it enforces compliance retention and legal holds), every object a locked topic writes
//! is locked, the store refuses to delete it, expiry waits for the lock and then deletes the
//! versions themselves, a longer policy extends what is stored, and legal holds set S3's flag.
//! Where it has not (s3s-fs in `cargo test`, Garage in CI, a local directory), a topic asking
//! for a lock stops tiering from starting with a message that says what to do.

use crate::S3Target;
use crate::scenarios::{config, manifest};
use aws_sdk_s3::types::{ObjectLockLegalHoldStatus, ObjectLockMode};
use tierlog::Log;
use tierlog::settings::{NewTopicSettings, SettingsChange};
use tierlog::tier::Tiering;
use tierlog_tiering::fault::FaultStore;
use tierlog_tiering::store::RemoteStore;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn sdk(s3: &S3Target) -> aws_sdk_s3::Client {
    let credentials = aws_sdk_s3::config::Credentials::new(&s3.access_key, &s3.secret_key, None, None, "test");
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(s3.region.clone()))
        .credentials_provider(credentials)
        .endpoint_url(&s3.endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A fresh bucket created with Object Lock enabled, on servers that have it (moto, MinIO); `None`
/// elsewhere.
async fn lock_bucket(s3: &S3Target) -> Option<S3Target> {
    if s3.provider != "moto" && s3.provider != "minio" {
        eprintln!("{} has no Object Lock; the locked-bucket scenarios run against moto in CI", s3.provider);
        return None;
    }
    let bucket = format!("tierlog-lock-{}", tierlog_tiering::keys::unique_suffix()).replace('-', "").to_lowercase();
    let bucket = bucket[..bucket.len().min(40)].to_string();
    sdk(s3).create_bucket().bucket(&bucket).object_lock_enabled_for_bucket(true).send().await.unwrap();
    Some(S3Target::custom(s3.endpoint.clone(), &bucket, &s3.access_key, &s3.secret_key, &s3.provider))
}

fn locked(pairs: &[(&str, &str)]) -> NewTopicSettings {
    let mut all = vec![("object.lock.mode", "compliance"), ("object.lock.retain.days", "1")];
    all.extend_from_slice(pairs);
    NewTopicSettings::parse("t", all).unwrap()
}

/// A log with topic `t` (one partition) created with `settings`, holding `n` records.
fn log_with(dir: &std::path::Path, settings: &NewTopicSettings, n: u64, first_ms: i64) -> Log {
    let log = Log::open(config(dir)).unwrap();
    let topic = log.create_topic_with_settings("t", 1, settings).unwrap();
    let p = topic.partition(0).unwrap().clone();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(*i, first_ms + *i as i64, 300)).collect();
        p.append(&records, 0).unwrap();
    }
    log
}

/// Every key of the bucket under `store`'s prefix.
async fn keys(store: &RemoteStore) -> Vec<String> {
    crate::scenarios::bucket_listing(store).await.into_keys().collect()
}

/// The keys a locked topic's lock covers: segment objects, manifest versions and archives.
async fn locked_keys(store: &RemoteStore) -> Vec<String> {
    keys(store).await.into_iter().filter(|k| k.contains("/segments/") || k.contains("/manifests/")).collect()
}

struct Head {
    mode: Option<ObjectLockMode>,
    until_ms: Option<i64>,
    legal_hold: bool,
}

async fn head(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Head {
    let out = client.head_object().bucket(bucket).key(key).send().await.unwrap();
    Head {
        mode: out.object_lock_mode().cloned(),
        until_ms: out.object_lock_retain_until_date().map(|d| d.to_millis().unwrap()),
        legal_hold: out.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
    }
}

/// On a store without Object Lock (a bucket created without it, s3s-fs, Garage, a local
/// directory), a topic asking for a lock stops tiering from starting, saying what to do.
pub async fn refused_without_object_lock(s3: &S3Target) {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), &locked(&[]), 10, 1_700_000_000_000);
    let err = Tiering::start_with(log.clone(), s3.store(&s3.unique_prefix("nolock"))).await.err().expect("refused");
    let text = err.to_string();
    assert!(text.contains("topic 't'") && text.contains("Object Lock"), "{text}");
    assert!(text.contains("object.lock.mode=off"), "says how to turn it off: {text}");
    // A local directory cannot lock anything either.
    let remote_dir = tempfile::tempdir().unwrap();
    let err = Tiering::start_with(log, RemoteStore::local_dir(remote_dir.path()).unwrap()).await.err().unwrap();
    assert!(err.to_string().contains("not S3"), "{err}");
    assert!(keys(&RemoteStore::local_dir(remote_dir.path()).unwrap()).await.iter().all(|k| k.contains("_tierlog")));
}

pub async fn a_locked_topic_writes_every_object_under_compliance_retention_that_the_store_then_enforces(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), &locked(&[]), 600, 1_700_000_000_000);
    let store = s3.store("p");
    // The first segment PUT fails (injected): the upload is retried under a fresh key and the
    // object that lands is locked like any other.
    let faults = std::sync::Arc::new(FaultStore::new(store.store.clone()));
    let tiering = Tiering::start_with(log.clone(), store.with_store(faults.clone())).await.unwrap();
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hit = failed.clone();
    faults.hooks.lock().unwrap().before_put = Some(std::sync::Arc::new(move |path: &object_store::path::Path| {
        let first_segment =
            path.as_ref().contains("/segments/") && !hit.swap(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            match first_segment {
                true => Err(object_store::Error::Generic {
                    store: "test",
                    source: "injected: first segment PUT fails".into(),
                }),
                false => Ok(()),
            }
        })
    }));
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert!(failed.load(std::sync::atomic::Ordering::SeqCst), "the first segment PUT failed");
    let m = manifest(&store, "t", 0).await;
    assert!(m.entries.len() >= 2, "several segments: {}", m.entries.len());
    let before = tierlog_tiering::lock::wall_ms();
    let written = locked_keys(&store).await;
    assert!(written.iter().any(|k| k.contains("/manifests/")) && written.iter().any(|k| k.contains("/segments/")));
    for key in &written {
        let h = head(&client, &s3.bucket, key).await;
        assert_eq!(h.mode, Some(ObjectLockMode::Compliance), "{key}");
        let until = h.until_ms.unwrap_or_else(|| panic!("{key} has no retain-until"));
        assert!((until - before - DAY_MS).abs() < 10 * 60 * 1000, "{key}: retain-until a day from its write");
        // The store refuses to delete the version: nobody can remove it through the bucket.
        let version = client.head_object().bucket(&s3.bucket).key(key).send().await.unwrap();
        let refused = client
            .delete_object()
            .bucket(&s3.bucket)
            .key(key)
            .set_version_id(version.version_id().map(str::to_string))
            .send()
            .await;
        assert!(refused.is_err(), "{key}: deleting a locked version must be refused");
    }
}

pub async fn expired_objects_wait_for_their_lock_and_unlocked_ones_go_with_every_version(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    // Old records: retention (one hour) has long passed. The locked topic's expired objects
    // stay (pending) while S3 holds them; a topic without a lock in the same versioned bucket
    // loses its expired objects for good, not behind a delete marker.
    for (topic_settings, lock) in [
        (locked(&[("retention.ms", "3600000")]), true),
        (NewTopicSettings::parse("t", [("retention.ms", "3600000")]).unwrap(), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.tiering.expiry_grace_ms = 0;
        c.tiering.local_retention_ms = 0;
        let log = Log::open(c).unwrap();
        let p = log.create_topic_with_settings("t", 1, &topic_settings).unwrap().partition(0).unwrap().clone();
        for chunk in (0..600u64).collect::<Vec<_>>().chunks(50) {
            let records: Vec<_> =
                chunk.iter().map(|i| tierlog::sample::payment_event(*i, 1_600_000_000_000, 300)).collect();
            p.append(&records, 0).unwrap();
        }
        let prefix = if lock { "locked" } else { "unlocked" };
        let store = s3.store(prefix);
        let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
        // Tier everything, then drop it locally (it is in the bucket), so it may expire.
        let mut reports = tiering.run_once(None, true).await.unwrap();
        if manifest(&store, "t", 0).await.expired_before() == 0 {
            reports = tiering.run_once(None, true).await.unwrap();
        }
        let uploaded = tierlog_tiering::manifest::load_version(&store, "t", 0, 1).await.unwrap();
        let after = manifest(&store, "t", 0).await;
        assert!(after.expired_before() > 0, "{prefix}: something expired: {reports:?}");
        let expired: Vec<&String> =
            uploaded.entries.iter().filter(|e| e.base_offset < after.expired_before()).map(|e| &e.key).collect();
        assert!(!expired.is_empty());
        let pending: Vec<String> = after
            .expired
            .as_ref()
            .map(|x| x.pending_deletes.iter().map(|p| p.key.clone()).collect())
            .unwrap_or_default();
        for key in expired {
            let versions = client.list_object_versions().bucket(&s3.bucket).prefix(key.as_str()).send().await.unwrap();
            if lock {
                assert!(pending.contains(key), "{key} stays pending while locked");
                assert_eq!(versions.versions().len(), 1, "{key} kept");
                assert!(versions.delete_markers().is_empty(), "{key}: not even a delete marker");
            } else {
                assert!(!pending.contains(key), "{key} was deleted and forgotten");
                assert!(
                    versions.versions().is_empty() && versions.delete_markers().is_empty(),
                    "{key}: every version gone"
                );
            }
        }
        assert!(reports.iter().all(|r| r.error.is_none()), "{prefix}: waiting for a lock is not an error: {reports:?}");
    }
}

pub async fn a_longer_lock_extends_every_stored_object_and_never_shortens_one(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), &locked(&[]), 300, 1_700_000_000_000);
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    let written = locked_keys(&store).await;
    let now = tierlog_tiering::lock::wall_ms();
    let change = |k: &str, v: &str| SettingsChange { set: vec![(k.into(), v.into())], unset: vec![] };
    log.alter_topic("t", &change("object.lock.retain.days", "3")).unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    assert!(tiering.stats.lock_extended_objects.load(std::sync::atomic::Ordering::Relaxed) >= written.len() as u64);
    for key in &written {
        let until = head(&client, &s3.bucket, key).await.until_ms.unwrap();
        assert!(until > now + 2 * DAY_MS, "{key} extended to three days");
    }
    // A shorter policy changes nothing already stored.
    log.alter_topic("t", &change("object.lock.retain.days", "1")).unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    for key in &written {
        assert!(head(&client, &s3.bucket, key).await.until_ms.unwrap() > now + 2 * DAY_MS, "{key} not shortened");
    }
}

pub async fn a_legal_hold_sets_the_s3_flag_on_held_objects_and_release_leaves_it(s3: &S3Target) {
    use crate::cli::run;
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let (_dir, config_path, env, records) = tiered_through_the_cli(&s3);
    let store = s3.store("p");
    let segments: Vec<String> = manifest(&store, "t", 0).await.entries.iter().map(|e| e.key.clone()).collect();
    assert!(!segments.is_empty());
    for key in &segments {
        assert!(!head(&client, &s3.bucket, key).await.legal_hold, "{key}: no hold yet");
    }
    let out = run(&config_path, &env, &["hold", "set", "t", "--reason", "case 7"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set["s3_legal_hold_flags_set"], segments.len(), "{set}");
    for key in &segments {
        assert!(head(&client, &s3.bucket, key).await.legal_hold, "{key} flagged");
    }
    // Segments written while the hold is in force are flagged as they are written.
    let out = run(&config_path, &env, &["produce", "t", "--input-format", "json"], &records);
    assert!(out.status.success());
    let out = run(&config_path, &env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<String> = manifest(&store, "t", 0).await.entries.iter().map(|e| e.key.clone()).collect();
    assert!(all.len() > segments.len());
    for key in &all {
        assert!(head(&client, &s3.bucket, key).await.legal_hold, "{key} flagged at upload");
    }
    let id = set["hold"]["id"].as_str().unwrap();
    let out = run(&config_path, &env, &["hold", "release", id, "--reason", "closed"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // tierlog never clears a flag (it cannot tell its own from anyone else's): they stay, and
    // the release says so.
    assert!(String::from_utf8_lossy(&out.stderr).contains("stay set"), "{}", String::from_utf8_lossy(&out.stderr));
    for key in &all {
        assert!(head(&client, &s3.bucket, key).await.legal_hold, "{key} still flagged after the release");
    }
}

// ---- Adversarial review (rev-lock): scenarios expected to FAIL on the reviewed code. ----

fn append_more(log: &Log, n: u64, first_ms: i64) {
    let p = log.topic("t").unwrap().partition(0).unwrap().clone();
    let start = p.end_offset();
    for chunk in (start..start + n).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(*i, first_ms + *i as i64, 300)).collect();
        p.append(&records, 0).unwrap();
    }
}

/// A lock turned off for a while and then on again with the same period: the docs promise
/// that "a lock newly turned on" extends what is already stored, but the pass compares only
/// the period recorded in the local tiering.json (unchanged), so the objects written while the
/// lock was off stay unlocked for good, and nothing reports it.
pub async fn a_lock_turned_off_and_on_again_locks_what_was_written_meanwhile(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), &locked(&[]), 300, 1_700_000_000_000);
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    let first: Vec<String> = manifest(&store, "t", 0).await.entries.iter().map(|e| e.key.clone()).collect();
    let change = |k: &str, v: &str| SettingsChange { set: vec![(k.into(), v.into())], unset: vec![] };
    log.alter_topic("t", &change("object.lock.mode", "off")).unwrap();
    append_more(&log, 300, 1_700_000_100_000);
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    log.alter_topic("t", &change("object.lock.mode", "compliance")).unwrap();
    append_more(&log, 50, 1_700_000_200_000);
    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let all: Vec<String> = manifest(&store, "t", 0).await.entries.iter().map(|e| e.key.clone()).collect();
    let meanwhile: Vec<&String> = all.iter().filter(|k| !first.contains(k)).collect();
    assert!(!meanwhile.is_empty());
    let mut unlocked = Vec::new();
    for key in all.iter().chain(locked_keys(&store).await.iter().filter(|k| k.contains("/manifests/"))) {
        let h = head(&client, &s3.bucket, key).await;
        if h.mode != Some(ObjectLockMode::Compliance) || h.until_ms.is_none_or(|u| u < tierlog_tiering::lock::wall_ms())
        {
            unlocked.push(key.clone());
        }
    }
    assert!(
        unlocked.is_empty(),
        "the topic is locked (compliance, 1 day) again, yet {} of its committed objects/manifest versions are not locked: {unlocked:?}",
        unlocked.len()
    );
}

/// The mode moves from governance to compliance with the same period: nothing is re-stamped
/// (same period), so everything written under governance stays removable by any principal
/// with s3:BypassGovernanceRetention, although `topic describe` says compliance.
pub async fn governance_to_compliance_upgrades_what_is_stored(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let settings =
        NewTopicSettings::parse("t", [("object.lock.mode", "governance"), ("object.lock.retain.days", "1")]).unwrap();
    let log = log_with(dir.path(), &settings, 300, 1_700_000_000_000);
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    let change = |k: &str, v: &str| SettingsChange { set: vec![(k.into(), v.into())], unset: vec![] };
    log.alter_topic("t", &change("object.lock.mode", "compliance")).unwrap();
    append_more(&log, 50, 1_700_000_200_000);
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    let mut governance = Vec::new();
    for key in manifest(&store, "t", 0).await.entries.iter().map(|e| e.key.clone()) {
        if head(&client, &s3.bucket, &key).await.mode != Some(ObjectLockMode::Compliance) {
            governance.push(key);
        }
    }
    assert!(governance.is_empty(), "still governance-locked after the switch to compliance: {governance:?}");
}

/// `tiering.object_lock_mode = "none"` is accepted by the configuration check as "off"
/// (`Mode::parse`), but `Tiering::check_object_lock` compares the text with "off" only, so a
/// server configured with "none" refuses to start on any store without Object Lock, saying
/// the configuration "asks for S3 Object Lock".
pub async fn object_lock_mode_none_means_off_at_startup_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tiering.object_lock_mode = "none".into();
    tierlog::config::check_object_lock(&c.tiering.object_lock_mode, 0, ["a", "b"])
        .expect("\"none\" is accepted as off");
    let log = Log::open(c).unwrap();
    log.create_topic("t", 1).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let started = Tiering::start_with(log, RemoteStore::local_dir(remote_dir.path()).unwrap()).await;
    assert!(started.is_ok(), "object_lock_mode = \"none\" (off) refused: {}", started.err().unwrap());
}

/// An S3 legal hold placed on an object by someone else (a compliance officer through the S3
/// console, another tool) is cleared by `tierlog hold release`: release turns the flag off on
/// every object in the released range that no *tierlog* hold covers, whoever set it. The
/// object is then deletable through the bucket once its retention passes, and tierlog's own
/// expiry deletes it.
pub async fn hold_release_keeps_a_legal_hold_tierlog_did_not_set(s3: &S3Target) {
    use crate::cli::run;
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let (_dir, config_path, env, _records) = tiered_through_the_cli(&s3);
    let store = s3.store("p");
    let key = manifest(&store, "t", 0).await.entries[0].key.clone();
    // Someone else puts the object under an S3 legal hold (not a tierlog hold).
    client
        .put_object_legal_hold()
        .bucket(&s3.bucket)
        .key(&key)
        .legal_hold(aws_sdk_s3::types::ObjectLockLegalHold::builder().status(ObjectLockLegalHoldStatus::On).build())
        .send()
        .await
        .unwrap();
    let out = run(&config_path, &env, &["hold", "set", "t", "--reason", "case 7"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = set["hold"]["id"].as_str().unwrap();
    let out = run(&config_path, &env, &["hold", "release", id, "--reason", "closed"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        head(&client, &s3.bucket, &key).await.legal_hold,
        "{key}: the legal hold tierlog did not set was cleared by `tierlog hold release`"
    );
}

/// `hold set` flags only the objects the current manifest lists (`listed_entries`), never the
/// expired objects still waiting in `pending_deletes` — although tierlog's retention treats a
/// hold set after an expiry as protecting exactly those objects (`delete_due`: "an object under
/// a legal hold set after its expiry stays"). So the bucket does not protect them, and a writer
/// whose pass read the holds just before `hold set` deletes them (every version) in that pass.
pub async fn hold_set_flags_expired_objects_still_pending_deletion(s3: &S3Target) {
    use crate::cli::{run, write_config};
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tiering.expiry_grace_ms = 3_600_000; // expired objects wait an hour in pending_deletes
    c.tiering.local_retention_ms = 0;
    let log = Log::open(c).unwrap();
    // No lock of its own: only the hold (and S3's flag, in this Object Lock bucket) keeps it.
    let settings = NewTopicSettings::parse("t", [("retention.ms", "3600000")]).unwrap();
    let p = log.create_topic_with_settings("t", 1, &settings).unwrap().partition(0).unwrap().clone();
    for chunk in (0..600u64).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(*i, 1_600_000_000_000, 300)).collect();
        p.append(&records, 0).unwrap();
    }
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    tiering.run_once(None, true).await.unwrap();
    if manifest(&store, "t", 0).await.expired_before() == 0 {
        tiering.run_once(None, true).await.unwrap();
    }
    let after = manifest(&store, "t", 0).await;
    let pending: Vec<String> =
        after.expired.as_ref().map(|x| x.pending_deletes.iter().map(|p| p.key.clone()).collect()).unwrap_or_default();
    assert!(!pending.is_empty(), "some objects await deletion");
    let cli_dir = tempfile::tempdir().unwrap();
    let config_path = write_config(cli_dir.path(), &s3, "p");
    let out = run(&config_path, &s3.child_env(), &["hold", "set", "t", "--reason", "case 9"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut unflagged = Vec::new();
    for key in &pending {
        if !head(&client, &s3.bucket, key).await.legal_hold {
            unflagged.push(key.clone());
        }
    }
    assert!(unflagged.is_empty(), "held (pending-deletion) objects without S3's legal-hold flag: {unflagged:?}");
}

/// An expired object under a lock that lasts far longer than the topic's retention (six years
/// of `object.lock.retain.days` with `retention.bytes`, say) waits in `pending_deletes`, and
/// every pass asks the store about it again (ListObjectVersions + HEAD per version), although
/// the first answer said until when it is locked (`Deleted::Locked { until_ms }`, thrown
/// away). With up to PENDING_DELETES_MAX (1024) keys per partition and a pass every 10 s, that
/// is ~200 requests/s per partition for years, and an info log line per key per pass.
/// Measured through moto's access log (`TIERLOG_TEST_S3_SERVER_LOG`, the moto_server output file):
/// skipped when unset.
pub async fn a_locked_pending_delete_is_not_asked_about_again_before_its_lock_ends(s3: &S3Target) {
    let Ok(log_path) = std::env::var("TIERLOG_TEST_S3_SERVER_LOG") else {
        eprintln!("TIERLOG_TEST_S3_SERVER_LOG unset: skipped");
        return;
    };
    let Some(s3) = lock_bucket(s3).await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tiering.expiry_grace_ms = 0;
    c.tiering.local_retention_ms = 0;
    let log = Log::open(c).unwrap();
    let settings = NewTopicSettings::parse(
        "t",
        [("object.lock.mode", "compliance"), ("object.lock.retain.days", "2192"), ("retention.bytes", "4096")],
    )
    .unwrap();
    let p = log.create_topic_with_settings("t", 1, &settings).unwrap().partition(0).unwrap().clone();
    for chunk in (0..600u64).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(*i, 1_600_000_000_000, 300)).collect();
        p.append(&records, 0).unwrap();
    }
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    for _ in 0..3 {
        tiering.run_once(None, true).await.unwrap();
    }
    let pending = manifest(&store, "t", 0).await.expired.map(|x| x.pending_deletes.len()).unwrap_or(0);
    assert!(pending > 0, "objects locked for six years wait in pending_deletes");
    let count = || {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&s3.bucket) && l.contains("?versions"))
            .count()
    };
    let before = count();
    for _ in 0..3 {
        tiering.run_once(None, true).await.unwrap();
    }
    let asked = count() - before;
    assert_eq!(
        asked, 0,
        "three more passes listed the versions of {pending} objects known to be locked for six years {asked} times"
    );
}

/// Object Lock protects object *versions*; tierlog reads the *current* version by key. A plain
/// DELETE (no version id) of a compliance-locked segment object succeeds — it adds a delete
/// marker — and a PUT to the same key succeeds too (a new current version). The docs say "the
/// store refuses to delete or overwrite it"; the bytes are indeed kept, but tierlog can no
/// longer serve them: the version id the locked PUT returned (`Applied::version_id`) is
/// dropped, not recorded in the entry, so reads cannot ask for the locked version.
pub async fn a_delete_marker_on_a_locked_object_does_not_hide_its_records(s3: &S3Target) {
    let Some(s3) = lock_bucket(s3).await else { return };
    let client = sdk(&s3);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tiering.local_retention_ms = 0;
    let log = Log::open(c).unwrap();
    let p = log.create_topic_with_settings("t", 1, &locked(&[])).unwrap().partition(0).unwrap().clone();
    for chunk in (0..300u64).collect::<Vec<_>>().chunks(50) {
        let records: Vec<_> =
            chunk.iter().map(|i| tierlog::sample::payment_event(*i, 1_700_000_000_000 + *i as i64, 300)).collect();
        p.append(&records, 0).unwrap();
    }
    let store = s3.store("p");
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    assert!(tiering.run_once(None, true).await.unwrap().iter().all(|r| r.error.is_none()));
    let m = manifest(&store, "t", 0).await;
    assert!(p.start_offset() > 0, "offset 0 is only in the bucket now");
    let key = m.entries[0].key.clone();
    // Anyone with s3:DeleteObject: allowed despite the compliance lock (it only adds a marker).
    client.delete_object().bucket(&s3.bucket).key(&key).send().await.expect("S3 allows a delete marker");
    let reader = crate::scenarios::reader(&log, &store);
    let read = reader.read(&p, 0, 64 * 1024).await;
    assert!(
        read.as_ref().is_ok_and(|r| r.first().is_some_and(|r| r.offset == 0)),
        "offset 0 is under compliance lock in the bucket, yet tierlog cannot serve it: {:?}",
        read.map(|r| r.len()).map_err(|e| e.to_string())
    );
}

/// A writer configured with the configuration-level compliance lock (one day), driven through
/// the binary: topic `t` created, 400 records produced and tiered under prefix `p`. Returns
/// its directory, configuration, environment and the records (JSON lines) it produced.
fn tiered_through_the_cli(s3: &S3Target) -> (tempfile::TempDir, std::path::PathBuf, Vec<(String, String)>, String) {
    use crate::cli::{run, write_config};
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), s3, "p");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("[tiering]\n", "[tiering]\nobject_lock_mode = \"compliance\"\nobject_lock_retain_days = 1\n"),
    )
    .unwrap();
    let env = s3.child_env();
    let out = run(&config_path, &env, &["topic", "create", "t", "--partitions", "1"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: String = (0..400).map(|i| format!("{{\"value\":\"record {i} {}\"}}\n", "x".repeat(300))).collect();
    let out = run(&config_path, &env, &["produce", "t", "--input-format", "json"], &records);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&config_path, &env, &["tier", "run"], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (dir, config_path, env, records)
}
