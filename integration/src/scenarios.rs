//! Test scenarios shared by the suites (in-process S3, Garage/moto in CI, MinIO in Docker).

use std::collections::BTreeMap;
use std::path::Path;

use object_store::ObjectStoreExt;
use tierlog::Log;
use tierlog::config::{Config, FsyncPolicy};
use tierlog::tier::Tiering;
use tierlog_tiering::manifest::{ManifestStore, Writer};
use tierlog_tiering::segment_object;
use tierlog_tiering::store::RemoteStore;

use crate::S3Target;

pub fn config(dir: &Path) -> Config {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.segment.max_bytes = 64 * 1024;
    config.durability.fsync = FsyncPolicy::Never;
    config.tiering.local_retention_bytes = 0;
    config.tiering.chunk_bytes = 64 * 1024;
    config.tiering.upload_attempts = 3;
    config
}

/// Appends `n` payment events to `topic` (created with `partitions`), returns the log.
pub fn filled_log(dir: &Path, topic: &str, partitions: u32, n: u64) -> Log {
    let log = Log::open(config(dir)).unwrap();
    let topic = log.create_topic(topic, partitions).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        for p in 0..partitions {
            let records: Vec<_> =
                chunk.iter().map(|i| tierlog::sample::payment_event(*i, 1_700_000_000_000 + *i as i64, 300)).collect();
            topic.partition(p).unwrap().append(&records, 0).unwrap();
        }
    }
    log
}

/// Raw bytes of every sealed local segment of a partition, by base offset.
pub fn local_segments(log: &Log, topic: &str, partition: u32) -> BTreeMap<u64, Vec<u8>> {
    let p = log.topic(topic).unwrap().partition(partition).unwrap().clone();
    p.sealed_segments().into_iter().map(|s| (s.base_offset, std::fs::read(&s.path).unwrap())).collect()
}

pub async fn manifest(store: &RemoteStore, topic: &str, partition: u32) -> tierlog_tiering::manifest::Manifest {
    ManifestStore::open(store.clone(), topic, partition, Writer { id: "test".into(), epoch: 0 }, 0)
        .await
        .unwrap()
        .current
}

/// Produce across several segments → `tier run` → local sealed segments gone → manifest and
/// objects present → every object decodes (with our reader and with the `zstd` CLI) to the
/// exact bytes of the local segment it came from.
pub async fn tier_round_trip(s3: &S3Target) {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path(), "payments", 2, 600);
    let p0 = log.topic("payments").unwrap().partition(0).unwrap().clone();
    p0.seal_active(0).unwrap();
    let before = local_segments(&log, "payments", 0);
    assert!(before.len() >= 3, "need several segments, got {}", before.len());
    let store = s3.store(&s3.unique_prefix("e2e"));
    let tiering = Tiering::start_with(log.clone(), store.clone()).await.unwrap();
    assert_eq!(tiering.conditional_writes, s3.conditional_writes, "conditional-write probe on {}", s3.provider);

    let reports = tiering.run_once(None, true).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert!(p0.sealed_segments().is_empty(), "tiered sealed segments are deleted locally (retention 0)");
    assert_eq!(p0.start_offset(), p0.end_offset());

    let m = manifest(&store, "payments", 0).await;
    assert_eq!((m.start_offset(), m.next_offset()), (Some(0), p0.end_offset()));
    assert_eq!(m.entries.len(), before.len());
    let scratch = tempfile::tempdir().unwrap();
    for entry in &m.entries {
        let object = store.store.get(&entry.key.as_str().into()).await.unwrap().bytes().await.unwrap();
        assert_eq!(object.len() as u64, entry.object_bytes);
        let raw = segment_object::decode_object(&object).unwrap();
        assert_eq!(&raw, &before[&entry.base_offset], "object {} decodes to the local segment", entry.key);
        // The standard zstd CLI yields the same bytes.
        let path = scratch.path().join("object.zst");
        std::fs::write(&path, &object).unwrap();
        let out = std::process::Command::new("zstd")
            .args(["-d", "-c", "-q"])
            .arg(&path)
            .output()
            .expect("zstd CLI (apt-get install zstd)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, raw, "zstd -d of {} equals the segment file", entry.key);
    }
    // A second run finds nothing to do and changes nothing.
    let again = tiering.run_once(None, true).await.unwrap();
    assert!(again.iter().all(|r| r.uploaded_segments == 0 && r.error.is_none()));
    assert_eq!(manifest(&store, "payments", 0).await, m);
}

/// A partition's history in the bucket for `verify` to check: `versions` manifest versions
/// of two segments each (offsets 0.. dense), written by a log in `dir`.
pub async fn tiered_history(s3: &S3Target, dir: &Path, prefix: &str, versions: u64, signer: Option<&Path>) -> Log {
    let signing_key_file = signer.map(|p| p.display().to_string()).unwrap_or_default();
    tiered_history_with(s3, dir, prefix, versions, |config| config.integrity.signing_key_file = signing_key_file).await
}

/// [`tiered_history`] with the configuration changed by `edit` first (e.g. an encryption keyring).
pub async fn tiered_history_with(
    s3: &S3Target,
    dir: &Path,
    prefix: &str,
    versions: u64,
    edit: impl FnOnce(&mut tierlog::config::Config),
) -> Log {
    let mut config = config(dir);
    config.segment.max_bytes = 16 * 1024 * 1024; // segments end where the loop seals them
    s3.configure(&mut config, prefix);
    edit(&mut config);
    let log = Log::open(config).unwrap();
    let p = log.create_topic("t", 1).unwrap().partition(0).unwrap().clone();
    let tiering = Tiering::start_with(log.clone(), s3.store(prefix)).await.unwrap();
    let mut i = 0;
    for _ in 0..versions {
        for _ in 0..2 {
            for _ in 0..4 {
                let records: Vec<_> =
                    (i..i + 20).map(|n| tierlog::sample::payment_event(n, 1_700_000_000_000 + n as i64, 300)).collect();
                p.append(&records, 1_700_000_000_000 + i as i64).unwrap();
                i += 20;
            }
            p.seal_active(1_700_000_000_000 + i as i64).unwrap(); // (by age, nothing rolls)
        }
        let report = tiering.run_once(None, false).await.unwrap();
        assert!(report[0].error.is_none(), "{report:?}");
    }
    log
}

/// Runs `verify` over `store` in-process; returns the problems found and the summary.
pub async fn run_verify(
    store: &RemoteStore,
    options: &tierlog_tiering::verify::VerifyOptions,
) -> (Vec<tierlog_tiering::verify::Problem>, tierlog_tiering::verify::Summary) {
    use tierlog_tiering::verify::{self, Event};
    let problems = std::sync::Mutex::new(Vec::new());
    let on_event = |event: Event<'_>| {
        if let Event::Problem(p) = event {
            problems.lock().unwrap().push(p.clone());
        }
    };
    let options = tierlog_tiering::verify::VerifyOptions { concurrency: options.concurrency.max(2), ..options.clone() };
    let summary = verify::verify(store, &options, tierlog::verify::segment_check(), &on_event).await.unwrap();
    (problems.into_inner().unwrap(), summary)
}

/// Deep verification options.
pub fn deep() -> tierlog_tiering::verify::VerifyOptions {
    tierlog_tiering::verify::VerifyOptions { deep: true, ..Default::default() }
}

/// The kinds of `problems`, serialized as `tierlog verify` prints them.
pub fn kinds(problems: &[tierlog_tiering::verify::Problem]) -> Vec<String> {
    problems.iter().map(|p| serde_json::to_value(p.kind).unwrap().as_str().unwrap().to_string()).collect()
}

/// Rewrites manifest version `version` of t/0 through `edit` (body checksum recomputed, as
/// someone with write access to the bucket could).
pub async fn forge_version(
    store: &RemoteStore,
    version: u64,
    edit: impl FnOnce(&mut tierlog_tiering::manifest::Manifest),
) {
    let key = tierlog_tiering::keys::manifest_key(store, "t", 0, version);
    let bytes = store.store.get(&key).await.unwrap().bytes().await.unwrap();
    let mut manifest = tierlog_tiering::manifest::parse_signed(&bytes, key.as_ref()).unwrap().manifest;
    edit(&mut manifest);
    store.store.put(&key, manifest.to_bytes().into()).await.unwrap();
}

/// Every verify tamper case in one run (the MinIO suite; the per-case tests are in
/// `tests/verify.rs`): clean, then a tampered byte, a truncated object, a deleted object,
/// and a removed manifest entry, each detected and named.
pub async fn verify_detects_tampering(s3: &S3Target) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("verify-all");
    tiered_history(s3, dir.path(), &prefix, 3, None).await;
    let store = s3.store(&prefix);
    let (problems, summary) = run_verify(&store, &deep()).await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((summary.manifest_versions, summary.objects, summary.records), (3, 6, Some(480)));
    let m = manifest(&store, "t", 0).await;
    let keys: Vec<object_store::path::Path> = m.entries.iter().map(|e| e.key.as_str().into()).collect();
    let object = store.store.get(&keys[1]).await.unwrap().bytes().await.unwrap().to_vec();
    let mut flipped = object.clone();
    flipped[20] ^= 0x40;
    store.store.put(&keys[1], flipped.into()).await.unwrap();
    let other = store.store.get(&keys[4]).await.unwrap().bytes().await.unwrap();
    store.store.put(&keys[4], other.slice(..other.len() / 2).into()).await.unwrap();
    store.store.delete(&keys[3]).await.unwrap();
    forge_version(&store, 3, |m| {
        m.entries.remove(2); // committed by version 2
    })
    .await;
    let (problems, _) = run_verify(&store, &deep()).await;
    let found = kinds(&problems);
    let at = |kind: &str, key: &str| {
        problems.iter().any(|p| kinds(std::slice::from_ref(p))[0] == kind && p.key.as_deref() == Some(key))
    };
    assert!(at("object_checksum_mismatch", keys[1].as_ref()), "{found:?}");
    assert!(at("object_size_mismatch", keys[4].as_ref()), "{found:?}");
    assert!(at("object_missing", keys[3].as_ref()), "{found:?}");
    let v3 = tierlog_tiering::keys::manifest_key(&store, "t", 0, 3);
    assert!(at("chain_broken", v3.as_ref()) && at("manifest_rewritten", v3.as_ref()), "{problems:#?}");
}

/// Every record of t/0 as the unified reader serves it over `store` (offset, append time,
/// timestamp, value).
pub async fn replay_all(log: &Log, store: &RemoteStore) -> Vec<(u64, Option<i64>, i64, Vec<u8>)> {
    replay_topic(log, store, "t", 0).await
}

/// A unified reader of `log` over `store` (in-process tests cannot give the default
/// credential chain the fixture's keys).
pub fn reader(log: &Log, store: &RemoteStore) -> tierlog::reader::Reader {
    use tierlog::reader::{Reader, settings};
    use tierlog_tiering::remote_reader::RemoteReader;
    Reader::with_remote(log.clone(), RemoteReader::new(store.clone(), settings(log.config())))
}

/// Every record of `topic/partition`, from its first available offset, as the unified
/// reader serves it over `store`.
pub async fn replay_topic(
    log: &Log,
    store: &RemoteStore,
    topic: &str,
    partition: u32,
) -> Vec<(u64, Option<i64>, i64, Vec<u8>)> {
    let reader = reader(log, store);
    let p = log.topic(topic).unwrap().partition(partition).unwrap().clone();
    let mut out = Vec::new();
    let mut next = reader.start_offset(&p).await.unwrap();
    loop {
        let records = reader.read(&p, next, 64 * 1024).await.unwrap();
        let Some(last) = records.last() else { break };
        next = last.offset + 1;
        out.extend(records.into_iter().map(|r| (r.offset, r.append_time, r.record.timestamp, r.record.value)));
    }
    out
}

/// A node rebuilt from the bucket alone serves the same records (offsets, append times,
/// values), continues at the next offset, and its history verifies (the MinIO suite; the
/// CLI tests are in `tests/restore.rs`).
pub async fn restore_round_trip(s3: &S3Target) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("restore-round-trip");
    let store = s3.store(&prefix);
    let log = tiered_history(s3, &dir.path().join("old"), &prefix, 3, None).await;
    let original = replay_all(&log, &store).await;
    assert_eq!(original.len(), 480);
    let config = Config { data_dir: dir.path().join("restored"), ..log.config().clone() };
    drop(log);
    let report = tierlog::restore::restore(config.clone(), &store, &Default::default(), &|_, _| {}).await.unwrap();
    assert_eq!((report.topics, report.partitions), (1, 1));
    let restored = Log::open(config).unwrap();
    assert_eq!(replay_all(&restored, &store).await, original);
    let p = restored.topic("t").unwrap().partition(0).unwrap().clone();
    let next = p.append(&[tierlog::sample::payment_event(480, 1_700_000_001_000, 300)], 1_700_000_001_000).unwrap();
    assert_eq!(next.first_offset, 480, "producing continues at the next offset");
    p.seal_active(1_700_000_001_000).unwrap();
    let tiering = Tiering::start_with(restored.clone(), store.clone()).await.unwrap();
    let report = tiering.run_once(None, false).await.unwrap();
    assert!(report[0].error.is_none() && report[0].remote_end_offset == 481, "{report:?}");
    let (problems, _) = run_verify(&store, &deep()).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// Every object key under the store's prefix with its size and ETag: what a test compares to
/// prove that something wrote nothing to the bucket.
pub async fn bucket_listing(store: &RemoteStore) -> BTreeMap<String, (u64, Option<String>)> {
    use futures::TryStreamExt;
    let prefix = store.key(&[]);
    let objects: Vec<_> = store.store.list(Some(&prefix)).try_collect().await.unwrap();
    objects.into_iter().map(|o| (o.location.to_string(), (o.size, o.e_tag))).collect()
}

/// Appends `batches` batches of 20 records to `t/0` of a `tiered_history` log, seals and
/// tiers them (one manifest version).
pub async fn tier_more(log: &Log, tiering: &Tiering, topic: &str, batches: u64) {
    let p = log.topic(topic).unwrap().partition(0).unwrap().clone();
    for _ in 0..batches {
        let i = p.end_offset();
        let records: Vec<_> =
            (i..i + 20).map(|n| tierlog::sample::payment_event(n, 1_700_000_000_000 + n as i64, 300)).collect();
        p.append(&records, 1_700_000_000_000 + i as i64).unwrap();
    }
    p.seal_active(1_700_000_000_000 + p.end_offset() as i64).unwrap();
    let reports = tiering.run_once(None, false).await.unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
}

/// Read-only replicas next to a running writer on one bucket: each serves the writer's
/// history (records, time and as-of lookups), follows new manifest versions and topics on
/// refresh (followers woken), refuses every write, never writes to the bucket, and keeps its
/// own directory apart from any writer's.
pub async fn replica_follows_writer(s3: &S3Target) {
    use tierlog::error::Error;
    use tierlog::replica::Replica;
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("replica");
    let store = s3.store(&prefix);
    let writer = tiered_history(s3, &dir.path().join("writer"), &prefix, 2, None).await;
    let tiering = Tiering::start_with(writer.clone(), store.clone()).await.unwrap();
    let replica_config = |name: &str| Config { data_dir: dir.path().join(name), ..writer.config().clone() };

    let listing = bucket_listing(&store).await;
    let mut first = Replica::open(replica_config("replica-1"), store.clone()).await.unwrap();
    let mut second = Replica::open(replica_config("replica-2"), store.clone()).await.unwrap();
    let history = replay_topic(&writer, &store, "t", 0).await;
    assert_eq!(history.len(), 320);
    for replica in [&first, &second] {
        assert_eq!(replay_topic(replica.log(), &store, "t", 0).await, history, "a replica serves the writer's history");
    }
    let (wp, rp) = (
        writer.topic("t").unwrap().partition(0).unwrap().clone(),
        first.log().topic("t").unwrap().partition(0).unwrap().clone(),
    );
    let (wr, rr) = (reader(&writer, &store), reader(first.log(), &store));
    for time in [1_700_000_000_000, 1_700_000_000_100, 1_700_000_000_250, 1_800_000_000_000] {
        assert_eq!(rr.offset_for_time(&rp, time).await.unwrap(), wr.offset_for_time(&wp, time).await.unwrap());
    }
    for time in [1_700_000_000_000, 1_700_000_000_100, 1_700_000_000_250] {
        assert_eq!(rr.offset_as_of(&rp, time).await.unwrap(), wr.offset_as_of(&wp, time).await.unwrap());
    }
    // After the newest tiered batch, the cut depends on what the writer has not tiered yet.
    let err = rr.offset_as_of(&rp, 1_800_000_000_000).await.unwrap_err().to_string();
    assert!(err.contains("cannot be told by a replica") && err.contains("ask for a time before"), "{err}");

    // Writes are refused, whoever asks.
    let record = tierlog::sample::payment_event(0, 0, 10);
    assert!(matches!(rp.append(std::slice::from_ref(&record), 0), Err(Error::Replica { .. })));
    assert!(matches!(first.log().create_topic("new", 1), Err(Error::Replica { .. })));
    assert!(matches!(first.log().allocate_producer_id(), Err(Error::Replica { .. })));
    assert!(matches!(Tiering::start_with(first.log().clone(), store.clone()).await, Err(Error::Replica { .. })));
    assert_eq!(bucket_listing(&store).await, listing, "replicas wrote nothing to the bucket");

    // The writer goes on: a new manifest version and a new topic.
    tier_more(&writer, &tiering, "t", 8).await;
    let u = writer.create_topic("u", 1).unwrap().partition(0).unwrap().clone();
    tier_more(&writer, &tiering, "u", 3).await;
    assert_eq!((rp.end_offset(), first.log().topic("u").is_err()), (320, true), "nothing changes before a refresh");
    let woken = rp.watch_end();
    let refreshed = first.refresh().await.unwrap();
    assert_eq!((refreshed.topics_added.clone(), refreshed.errors.clone()), (vec!["u".to_string()], vec![]));
    assert!(woken.has_changed().unwrap(), "followers are woken by a refresh that moves the end");
    assert_eq!((rp.end_offset(), rp.start_offset()), (480, 480));
    assert_eq!(replay_topic(first.log(), &store, "t", 0).await, replay_topic(&writer, &store, "t", 0).await);
    assert_eq!(replay_topic(first.log(), &store, "u", 0).await.len() as u64, u.end_offset());
    second.refresh().await.unwrap();
    assert_eq!(replay_topic(second.log(), &store, "u", 0).await, replay_topic(&writer, &store, "u", 0).await);
    let after = bucket_listing(&store).await;
    let again = first.refresh().await.unwrap();
    assert_eq!((again.topics_added.len(), again.partitions_advanced), (0, 0), "an idle refresh changes nothing");
    assert_eq!(bucket_listing(&store).await, after, "replicas wrote nothing to the bucket");

    // Directories stay apart: a writer's is not a replica's, nor a replica's a writer's.
    let err = Replica::open(replica_config("writer"), store.clone()).await.err().unwrap().to_string();
    assert!(err.contains("locked"), "the running writer's directory is locked first: {err}");
    let err = Replica::open(replica_config("replica-2"), store.clone()).await.err().unwrap().to_string();
    assert!(err.contains("locked"), "a running replica's directory is locked: {err}");
    let other_prefix = s3.unique_prefix("other");
    let other = s3.store(&other_prefix);
    let mut elsewhere = replica_config("replica-2");
    s3.configure(&mut elsewhere, &other_prefix);
    drop(second);
    let err = Log::open(replica_config("replica-2")).err().unwrap().to_string();
    assert!(err.contains("read-only replica's directory"), "{err}");
    let err = Replica::open(elsewhere, other).await.err().unwrap().to_string();
    assert!(err.contains("is a replica of"), "{err}");

    // A replica restarted in its directory keeps its own groups and rebuilds its view.
    tierlog::groups::commit(first.log().data_dir(), "audit", "t", &BTreeMap::from([(0, 100)])).unwrap();
    drop((rp, rr, first));
    let reopened = Replica::open(replica_config("replica-1"), store.clone()).await.unwrap();
    assert_eq!(tierlog::groups::load(reopened.log().data_dir(), "audit", "t").unwrap()[&0], 100);
    assert_eq!(replay_topic(reopened.log(), &store, "t", 0).await, replay_topic(&writer, &store, "t", 0).await);
}

/// Restores to a point (`--to-time`, `--to-offset`) serve exactly the history up to that
/// point, never move while the writer goes on, take no writes, clamp group offsets to the
/// point, can be read with a plain read-only open, and finish when run again after an
/// interruption.
pub async fn restore_to_point(s3: &S3Target) {
    use tierlog::replica::{self, PointSpec, Replica};
    let dir = tempfile::tempdir().unwrap();
    let prefix = s3.unique_prefix("point");
    let store = s3.store(&prefix);
    let writer = tiered_history(s3, &dir.path().join("writer"), &prefix, 3, None).await;
    tierlog::groups::commit(writer.data_dir(), "billing", "t", &BTreeMap::from([(0, 300)])).unwrap();
    tierlog::groups::commit(writer.data_dir(), "audit", "t", &BTreeMap::from([(0, 100)])).unwrap();
    let tiering = Tiering::start_with(writer.clone(), store.clone()).await.unwrap();
    tier_more(&writer, &tiering, "t", 1).await; // publishes the group snapshot
    let history = replay_topic(&writer, &store, "t", 0).await;
    assert_eq!(history.len(), 500);
    let config = |name: &str| Config { data_dir: dir.path().join(name), ..writer.config().clone() };

    // tiered_history appends the batch at offset i at 1_700_000_000_000 + i, 20 records each:
    // as of …250 the log held the batches up to 240..259.
    let lines = std::sync::Mutex::new(Vec::new());
    let on = |p: &replica::PointPartition, _: usize| lines.lock().unwrap().push(p.clone());
    let at = PointSpec::ToTime(1_700_000_000_250);
    // The topic was created (by the wall clock) after these made-up append times: by default
    // a restore to a time leaves out topics created after it, so it is named.
    let err = replica::restore_to_point(config("none"), store.clone(), &[], at, &on).await.unwrap_err().to_string();
    assert!(err.contains("no topic of") && err.contains("--topic"), "{err}");
    let t = ["t".to_string()];
    let report = replica::restore_to_point(config("at-time"), store.clone(), &t, at, &on).await.unwrap();
    assert_eq!((report.topics, report.partitions, report.resumed), (1, 1, false));
    assert_eq!((report.group_offsets, report.group_offsets_clamped), (2, 1));
    let line = lines.lock().unwrap()[0].clone();
    assert_eq!((line.end_offset, line.remote_end_offset), (260, 500));
    let pinned = Replica::open(config("at-time"), store.clone()).await.unwrap();
    assert_eq!(replay_topic(pinned.log(), &store, "t", 0).await, history[..260].to_vec());
    let groups = |log: &Log, group: &str| tierlog::groups::load(log.data_dir(), group, "t").unwrap()[&0];
    assert_eq!((groups(pinned.log(), "billing"), groups(pinned.log(), "audit")), (260, 100), "clamped to the point");
    // Time lookups answer within the point: nothing after it exists there.
    let (p, r) = (pinned.log().topic("t").unwrap().partition(0).unwrap().clone(), reader(pinned.log(), &store));
    assert_eq!(r.offset_for_time(&p, 1_700_000_000_100).await.unwrap(), 100);
    assert_eq!(r.offset_for_time(&p, 1_700_000_000_400).await.unwrap(), 260);
    assert_eq!(r.offset_as_of(&p, 1_700_000_000_400).await.unwrap(), 260);
    let record = tierlog::sample::payment_event(0, 0, 10);
    assert!(matches!(p.append(std::slice::from_ref(&record), 0), Err(tierlog::error::Error::Replica { .. })));

    // The writer goes on; the restored point does not move.
    tier_more(&writer, &tiering, "t", 2).await;
    let mut pinned = pinned;
    assert_eq!(pinned.refresh().await.unwrap(), replica::Refreshed::default());
    assert_eq!((p.end_offset(), replay_topic(pinned.log(), &store, "t", 0).await.len()), (260, 260));
    drop((p, r, pinned));
    // A plain read-only open reads a finished restore to a point (what `consume --data-dir` does).
    let read_only = Log::open_read_only(config("at-time")).unwrap();
    assert_eq!(replay_topic(&read_only, &store, "t", 0).await, history[..260].to_vec());
    // Running it again finds it finished; another point in the same directory is refused.
    let again = replica::restore_to_point(config("at-time"), store.clone(), &t, at, &|_, _| {}).await.unwrap();
    assert!(again.resumed);
    let other = PointSpec::ToTime(1_700_000_000_300);
    let err = replica::restore_to_point(config("at-time"), store.clone(), &t, other, &|_, _| {}).await.unwrap_err();
    assert!(err.to_string().contains("already holds a restore of"), "{err}");
    let err = Log::open(config("at-time")).err().unwrap().to_string();
    assert!(err.contains("read-only replica's directory"), "{err}");

    // --to-offset: rounded down to the batch holding it; beyond the end: the end.
    let mid = replica::restore_to_point(config("mid"), store.clone(), &[], PointSpec::ToOffset(250), &|_, _| {});
    mid.await.unwrap();
    let log = Replica::open(config("mid"), store.clone()).await.unwrap();
    assert_eq!(replay_topic(log.log(), &store, "t", 0).await, history[..240].to_vec());
    let all = PointSpec::ToOffset(1_000_000);
    replica::restore_to_point(config("all"), store.clone(), &[], all, &|_, _| {}).await.unwrap();
    let log = Replica::open(config("all"), store.clone()).await.unwrap();
    assert_eq!(replay_topic(log.log(), &store, "t", 0).await.len(), 540);

    // Interrupted after its marker, before its group offsets: read-only opens refuse it
    // (the groups are not there yet), and the same restore run again finishes it.
    let interrupted = dir.path().join("interrupted");
    std::fs::create_dir_all(&interrupted).unwrap();
    let mut marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("at-time/replica.json")).unwrap()).unwrap();
    marker["point"]["groups_written"] = false.into();
    std::fs::write(interrupted.join("replica.json"), marker.to_string()).unwrap();
    let err = Log::open_read_only(config("interrupted")).err().unwrap().to_string();
    assert!(err.contains("read-only replica's directory"), "{err}");
    let resumed = replica::restore_to_point(config("interrupted"), store.clone(), &t, at, &|_, _| {}).await.unwrap();
    assert!(resumed.resumed);
    assert_eq!((resumed.group_offsets, resumed.group_offsets_clamped), (2, 1), "reported from the marker");
    let log = Replica::open(config("interrupted"), store.clone()).await.unwrap();
    assert_eq!(replay_topic(log.log(), &store, "t", 0).await, history[..260].to_vec());
    assert_eq!(groups(log.log(), "billing"), 260);
}
