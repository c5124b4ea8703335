//! The unified reader: one read path over both tiers, used by `consume`, `offsets`, the demo
//! (and the HTTP server). A caller asks for an offset or a time and gets records, whichever
//! tier holds them.
//!
//! Offsets at or above the local start are read from local segments. Below it (the local copy
//! was deleted after tiering, possibly while the reader was inside it) the reader asks the
//! remote tier for the one chunk holding the offset, checks every batch's CRC and decodes it.
//! Time lookups consult the remote tier only when part of the log is remote-only, and then
//! read one chunk at most: no scan of cold data.
//!
//! The remote tier is connected lazily, on the first read below the local start, so local
//! reads keep working when the object store is down.

use std::sync::Arc;
use std::time::Duration;

use tierlog_tiering::blocking;
use tierlog_tiering::remote_reader::{ReaderSettings, RemoteChunk, RemoteReader};
use tokio::sync::OnceCell;

use crate::batch;
use crate::error::{Error, Result};
use crate::partition::Partition;
use crate::record::StoredRecord;
use crate::{Log, tier};

pub struct Reader {
    log: Log,
    remote: OnceCell<Arc<RemoteReader>>,
}

impl Reader {
    pub fn new(log: Log) -> Reader {
        Reader { log, remote: OnceCell::new() }
    }

    /// A reader over an already built remote reader (tests count its requests).
    pub fn with_remote(log: Log, remote: Arc<RemoteReader>) -> Reader {
        Reader { log, remote: OnceCell::new_with(Some(remote)) }
    }

    /// Remote read counters, once the remote tier has been used.
    pub fn remote_stats(&self) -> Option<Arc<tierlog_tiering::remote_reader::ReadStats>> {
        self.remote.get().map(|r| r.stats.clone())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    async fn remote(&self) -> Result<&Arc<RemoteReader>> {
        self.remote
            .get_or_try_init(|| async {
                let config = self.log.config();
                let store = tier::connect(config).await?;
                // The writer's last committed manifest version, from its local state.
                let data_dir = config.data_dir.clone();
                let disk = self.log.host().disk.clone();
                let hints: tierlog_tiering::remote_reader::VersionHints = Box::new(move |topic, partition| {
                    let dir = crate::topic::topic_dir(&data_dir, topic).join(partition.to_string());
                    tier::read_partition_state_in(&*disk, &dir).manifest_version
                });
                Ok::<_, Error>(RemoteReader::with_hints(store, settings(config), Some(hints)))
            })
            .await
    }

    fn remote_enabled(&self) -> bool {
        self.log.config().tiering.enabled
    }

    /// First available offset: the remote tier's start when part of the log is remote-only.
    pub async fn start_offset(&self, partition: &Partition) -> Result<u64> {
        let local = partition.start_offset();
        if local == 0 || !self.remote_enabled() {
            return Ok(local);
        }
        let manifest = self.remote().await?.manifest(&partition.topic, partition.id).await?;
        Ok(manifest.start_offset().map_or(local, |remote| remote.min(local)))
    }

    /// Records from `offset` on, from whichever tier holds them: about `max_bytes` locally,
    /// one chunk remotely. Empty at the end of the log.
    pub async fn read(&self, partition: &Arc<Partition>, offset: u64, max_bytes: usize) -> Result<Vec<StoredRecord>> {
        if offset >= partition.start_offset() {
            let local = partition.clone();
            let result = blocking::run(move || local.read(offset, max_bytes)).await;
            match result {
                Err(Error::OffsetBelowStart { .. }) => {} // deleted by retention meanwhile: remote
                other => return other,
            }
        }
        if !self.remote_enabled() {
            return Err(below_start(partition, offset, partition.start_offset()));
        }
        let remote = self.remote().await?;
        match remote.read_at(&partition.topic, partition.id, offset).await? {
            Some(chunk) => decode_chunk(&chunk, offset),
            None => {
                // Not remote: maybe a read-only view is behind the writer's local segments.
                partition.refresh()?;
                if offset >= partition.start_offset() {
                    let local = partition.clone();
                    return blocking::run(move || local.read(offset, max_bytes)).await;
                }
                let manifest = remote.manifest(&partition.topic, partition.id).await?;
                let start = manifest.start_offset().unwrap_or(partition.start_offset());
                Err(below_start(partition, offset, start))
            }
        }
    }

    /// First offset whose timestamp is ≥ `time` (running max, Kafka ListOffsets semantics),
    /// across both tiers; the end offset when no record is that recent.
    pub async fn offset_for_time(&self, partition: &Arc<Partition>, time: i64) -> Result<u64> {
        if partition.start_offset() > 0 && self.remote_enabled() {
            let remote = self.remote().await?;
            let local_start = partition.start_offset();
            if let Some(chunk) = remote.read_for_time(&partition.topic, partition.id, time, local_start).await? {
                let records = decode_chunk(&chunk, chunk.first_offset)?;
                let hit = records.iter().find(|r| r.record.timestamp >= time);
                return hit.map(|r| r.offset).ok_or_else(|| {
                    Error::Remote(tierlog_tiering::Error::Corrupt {
                        key: chunk.key.clone(),
                        reason: format!("chunk {} promised a record ≥ {time}", chunk.chunk),
                    })
                });
            }
        }
        let local = partition.clone();
        blocking::run(move || local.offset_for_time(time)).await
    }
}

pub fn settings(config: &crate::config::Config) -> ReaderSettings {
    ReaderSettings {
        cache_bytes: config.reader.cache_bytes,
        prefetch_bytes: config.reader.prefetch_bytes,
        concurrency: config.reader.concurrency as usize,
        timeout: Duration::from_millis(config.reader.timeout_ms),
    }
}

fn below_start(partition: &Partition, offset: u64, start: u64) -> Error {
    Error::OffsetBelowStart { topic: partition.topic.clone(), partition: partition.id, offset, start }
}

/// Decodes a remote chunk's batches (each CRC-checked) into records at or after `from`.
pub fn decode_chunk(chunk: &RemoteChunk, from: u64) -> Result<Vec<StoredRecord>> {
    let corrupt = |at: usize, e: batch::BatchError| {
        Error::Remote(tierlog_tiering::Error::Corrupt {
            key: chunk.key.clone(),
            reason: format!("chunk {} byte {at}: {e}", chunk.chunk),
        })
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < chunk.raw.len() {
        let (header, views) = batch::views(&chunk.raw[at..]).map_err(|e| corrupt(at, e))?;
        out.extend(
            views.iter().filter(|v| v.offset >= from).map(|v| StoredRecord { offset: v.offset, record: v.to_record() }),
        );
        at += header.length;
    }
    Ok(out)
}
