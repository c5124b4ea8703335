//! Fetch and ListOffsets, through the unified reader: any offset or time of either tier.
//!
//! Fetch reads the requested partitions one after another, each within what is left of the
//! response budget (reading them all at once would hold one budget of records per partition
//! named, and a request may name thousands), returns each partition's stored batches as they
//! are (the log stores Kafka's RecordBatch v2; batches of the older format are re-encoded),
//! whole batches from the one holding the fetch offset, as Kafka does, and honours `partition_max_bytes` and `max_bytes` the way Kafka does: the
//! first non-empty partition always returns at least one batch, so a consumer makes progress
//! whatever the limits. While fewer than `min_bytes` are ready it waits, up to `max_wait_ms`, on the
//! partitions' end-offset watches (the same notification HTTP follow streams use; no polling).
//! Fetch sessions (KIP-227) are not kept: every response is a full one with session id 0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    fetch_response::{FetchableTopicResponse, PartitionData},
    list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse},
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Broker, Close, Request, error_code, log_if_server_error, respond};
use crate::error::Error;
use crate::partition::Partition;

/// Most bytes of records in one fetch response, whatever the client asks: bounds the memory
/// one request can hold (Kafka's default `fetch.max.bytes` is 50 MiB; a smaller answer is
/// always allowed and the client simply fetches again).
const FETCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest long-poll, whatever the client asks (Kafka clients default to 500 ms).
const MAX_WAIT_MS_MAX: u64 = 30_000;
/// ListOffsets special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

/// One requested partition: where it is and where to read from.
struct Wanted {
    index: i32,
    partition: Result<Arc<Partition>, Error>,
    /// The principal may not read the topic.
    denied: bool,
    offset: i64,
    max_bytes: usize,
}

pub(super) async fn fetch(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: FetchRequest = request.decode()?;
    if body.session_id != 0 {
        let response = FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return respond(request, &response);
    }
    let wanted: Vec<(kafka_protocol::messages::TopicName, Vec<Wanted>)> = body
        .topics
        .iter()
        .map(|t| (t.topic.clone(), t.partitions.iter().map(|p| locate(broker, who, t.topic.as_str(), p)).collect()))
        .collect();
    let mut ends: Vec<watch::Receiver<u64>> =
        wanted.iter().flat_map(|(_, ps)| ps).filter_map(|w| w.partition.as_ref().ok()).map(|p| p.watch_end()).collect();
    let max_wait = Duration::from_millis((body.max_wait_ms.max(0) as u64).min(MAX_WAIT_MS_MAX));
    let deadline = Instant::now() + max_wait;
    let budget = (body.max_bytes.max(1) as usize).min(FETCH_BYTES_MAX);
    let mut shutdown = broker.state.shutdown_signal();
    loop {
        let (topics, bytes, errors) = read_all(broker, who, &wanted, budget).await;
        let enough = bytes >= body.min_bytes.max(0) as usize || errors;
        if enough || Instant::now() >= deadline || *shutdown.borrow() {
            return respond(request, &FetchResponse::default().with_responses(topics));
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = any_changed(&mut ends) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        for end in &mut ends {
            end.borrow_and_update();
        }
    }
}

/// Resolves when any of `ends` changes; never when there is none.
async fn any_changed(ends: &mut [watch::Receiver<u64>]) {
    if ends.is_empty() {
        return std::future::pending().await;
    }
    let _ = futures::future::select_all(ends.iter_mut().map(|e| Box::pin(e.changed()))).await;
}

fn locate(
    broker: &Broker,
    who: &str,
    topic: &str,
    p: &kafka_protocol::messages::fetch_request::FetchPartition,
) -> Wanted {
    let denied = !broker.allows(who, crate::auth::Right::Read, topic);
    let partition = broker.state.log.topic(topic).and_then(|t| {
        let partitions = t.metadata.partitions;
        let id = u32::try_from(p.partition).map_err(|_| Error::UnknownPartition {
            topic: topic.to_string(),
            partition: u32::MAX,
            partitions,
        })?;
        t.partition(id).cloned()
    });
    Wanted {
        index: p.partition,
        partition,
        denied,
        offset: p.fetch_offset,
        max_bytes: p.partition_max_bytes.max(1) as usize,
    }
}

/// Reads the wanted partitions in request order, each within what is left of the response
/// budget, so a request naming many partitions (or one partition many times) holds about one
/// budget of records, not one per partition. Only the first partition with records may go
/// over (by one batch), so a consumer always makes progress. Returns the topics, the bytes
/// of records in them, and whether any partition has an error.
async fn read_all(
    broker: &Broker,
    who: &str,
    wanted: &[(kafka_protocol::messages::TopicName, Vec<Wanted>)],
    budget: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let (mut total, mut errors) = (0usize, false);
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let mut answers = Vec::new();
        for w in partitions {
            let (data, bytes) = read_partition(broker, who, w, budget.saturating_sub(total), total == 0).await;
            errors |= data.error_code != 0;
            total += bytes;
            answers.push(data);
        }
        topics.push(FetchableTopicResponse::default().with_topic(name.clone()).with_partitions(answers));
    }
    (topics, total, errors)
}

/// One partition's answer and the bytes of records in it: at most `room` bytes, or one batch
/// when `first` (no partition before it answered records).
async fn read_partition(
    broker: &Broker,
    who: &str,
    wanted: &Wanted,
    room: usize,
    first: bool,
) -> (PartitionData, usize) {
    let answer = PartitionData::default().with_partition_index(wanted.index);
    if wanted.denied {
        return (answer.with_error_code(ResponseError::TopicAuthorizationFailed.code()).with_high_watermark(-1), 0);
    }
    let partition = match &wanted.partition {
        Ok(p) => p,
        Err(e) => return (answer.with_error_code(error_code(e).code()).with_high_watermark(-1), 0),
    };
    match read_records(broker, partition, wanted.offset, wanted.max_bytes.min(room), first).await {
        Ok((records, start, sent)) => {
            if !sent.is_empty() {
                // Historical reads go to the audit log (written only with tokens), as over HTTP:
                // every offset sent, the first batch's records before the fetch offset included.
                let auth = broker.state.auth();
                auth.audit_read(who, &partition.topic, partition.id, sent.start, Some(sent.end), false);
            }
            let end = partition.end_offset() as i64;
            let bytes = records.len();
            let answer = answer
                .with_high_watermark(end)
                .with_last_stable_offset(end)
                .with_log_start_offset(start as i64)
                .with_records(Some(records));
            (answer, bytes)
        }
        Err(refused) => {
            let code = match refused {
                ReadError::Log(e) => {
                    log_if_server_error(&e);
                    tracing::debug!(error = %e, "Kafka fetch refused");
                    error_code(&e)
                }
                ReadError::PastEnd { offset, end } => {
                    tracing::debug!(topic = %partition.topic, partition = partition.id, offset, end, "Kafka fetch past the log end");
                    ResponseError::OffsetOutOfRange
                }
            };
            let end = partition.end_offset() as i64;
            (answer.with_error_code(code.code()).with_high_watermark(end).with_last_stable_offset(end), 0)
        }
    }
}

/// The batches from the one holding `offset` on, within `max_bytes` (at least one batch when
/// `first`), as Kafka RecordBatch v2, the partition's first available offset, and the offsets
/// sent (whole batches: the first may start before `offset`).
async fn read_records(
    broker: &Broker,
    partition: &Arc<Partition>,
    offset: i64,
    max_bytes: usize,
    first: bool,
) -> Result<(Bytes, u64, std::ops::Range<u64>), ReadError> {
    let reader = &broker.state.reader;
    let start = reader.start_offset(partition).await?;
    let end = partition.end_offset();
    let out_of_range = || Error::OffsetBelowStart {
        topic: partition.topic.clone(),
        partition: partition.id,
        offset: offset.max(0) as u64,
        start,
        why: "older records were removed by retention".to_string(),
    };
    if offset < 0 || (offset as u64) < start {
        return Err(out_of_range().into());
    }
    if offset as u64 > end {
        return Err(ReadError::PastEnd { offset, end });
    }
    if offset as u64 == end || (max_bytes == 0 && !first) {
        return Ok((Bytes::new(), start, 0..0));
    }
    let Some(batches) = reader.read_batches(partition, offset as u64, max_bytes).await? else {
        return Ok((Bytes::new(), start, 0..0));
    };
    let timestamps = broker.state.log.topic(&partition.topic)?.metadata.timestamp_type;
    let mut batches = batches.into_kafka(timestamps)?;
    let next = batches.keep_within(max_bytes, first);
    broker.state.metrics.fetched_records.inc_by(next.saturating_sub(offset as u64));
    let sent = batches.base_offset..next.max(batches.base_offset);
    Ok((batches.bytes, start, sent))
}

/// Why a partition's fetch was refused: a log error, or an offset past the log end (which
/// Kafka answers with OFFSET_OUT_OF_RANGE, like one below the start).
enum ReadError {
    Log(Error),
    PastEnd { offset: i64, end: u64 },
}

impl From<Error> for ReadError {
    fn from(e: Error) -> ReadError {
        ReadError::Log(e)
    }
}

pub(super) async fn list_offsets(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: ListOffsetsRequest = request.decode()?;
    let mut topics = Vec::new();
    for topic in body.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let answer =
                ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_leader_epoch(-1);
            if !broker.allows(who, crate::auth::Right::Read, topic.name.as_str()) {
                let code = ResponseError::TopicAuthorizationFailed.code();
                partitions.push(answer.with_error_code(code).with_timestamp(-1).with_offset(-1));
                continue;
            }
            let found = offset_at(broker, topic.name.as_str(), p.partition_index, p.timestamp).await;
            partitions.push(match found {
                Ok((timestamp, offset)) => answer.with_timestamp(timestamp).with_offset(offset),
                Err(e) => {
                    log_if_server_error(&e);
                    answer.with_error_code(error_code(&e).code()).with_timestamp(-1).with_offset(-1)
                }
            });
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    respond(request, &ListOffsetsResponse::default().with_topics(topics))
}

/// (timestamp, offset) for a ListOffsets query: earliest (-2) and latest (-1) with timestamp
/// -1; for a time, the first offset whose timestamp is ≥ it and that record's timestamp,
/// or (-1, -1) when no record is that recent (Kafka's answer; `tierlog offsets --time`
/// prints the end offset instead).
async fn offset_at(broker: &Broker, topic: &str, index: i32, timestamp: i64) -> Result<(i64, i64), Error> {
    let (topic, id) = super::locate(broker, topic, index)?;
    let partition = topic.partition(id)?;
    let reader = &broker.state.reader;
    match timestamp {
        EARLIEST => Ok((-1, reader.start_offset(partition).await? as i64)),
        LATEST => Ok((-1, partition.end_offset() as i64)),
        t if t < 0 => Err(Error::Invalid(format!(
            "ListOffsets timestamp {t} for {}/{id}: use -2 (earliest), -1 (latest) or a time in ms",
            topic.name()
        ))),
        // Kafka looks up the timestamps its clients see: the append time for LogAppendTime.
        t if topic.metadata.timestamp_type == crate::batch::TimestampType::LogAppendTime => {
            // First appended at or after t. A live replica knows only what is tiered: with
            // nothing tiered from t on, there is no such record (yet), as at a writer's end.
            let offset = if broker.state.log.is_live_replica() {
                match reader.first_remote_appended_after(partition, t - 1, partition.end_offset()).await? {
                    Some(offset) => offset,
                    None => return Ok((-1, -1)),
                }
            } else {
                reader.offset_as_of(partition, t - 1).await?
            };
            if offset >= partition.end_offset() {
                return Ok((-1, -1));
            }
            let record = reader.read(partition, offset, 1).await?;
            let found = record.first().filter(|r| r.offset == offset).and_then(|r| r.append_time).unwrap_or(-1);
            Ok((found, offset as i64))
        }
        t => {
            let offset = reader.offset_for_time(partition, t).await?;
            if offset >= partition.end_offset() {
                return Ok((-1, -1));
            }
            let record = reader.read(partition, offset, 1).await?;
            let found = record.first().filter(|r| r.offset == offset).map_or(-1, |r| r.record.timestamp);
            Ok((found, offset as i64))
        }
    }
}
