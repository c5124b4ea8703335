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
