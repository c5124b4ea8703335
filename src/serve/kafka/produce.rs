//! Produce, for principals with the write right on the topic, and InitProducerId, which
//! gives idempotent producers their ids. An uncompressed batch is stored as sent, its base
//! offset set by the partition (`Partition::append_as_sent`: the log's format is RecordBatch
//! v2); any other is decoded into records (see `records`) and appended through the same path
//! as HTTP produce ([`crate::append`]), or, for an idempotent producer, re-encoded as one
//! batch with its producer stamp (`Partition::append_stamped`). Either way: validated whole,
//! all or nothing per partition, acknowledged once durable under the partition's
//! `durability.fsync` policy. With one replica, acks 1 and -1 both mean "durable here";
//! acks 0 appends the same way and sends no response, as Kafka does.
//!
//! Idempotent producers (see `producers`): a retried batch the partition holds is answered
//! with the offsets it got the first time and written again nowhere; an out-of-order sequence
//! is OUT_OF_ORDER_SEQUENCE_NUMBER and a fenced epoch INVALID_PRODUCER_EPOCH, with nothing
//! written.
//!
//! Unlike an HTTP request, partitions of one Kafka request succeed or fail independently;
//! each gets its own error code and message naming topic and partition.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    produce_request::PartitionProduceData,
    produce_response::{BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse},
};
use kafka_protocol::protocol::StrBytes;

use super::records::{Refused, decode_produce};
use super::{Broker, Close, Request, error_code, log_if_server_error, respond};
use crate::append::{PartitionRecords, Written, append_all};
use crate::error::Error;
use crate::partition::now_ms;

pub(super) async fn produce(
    broker: &Broker,
    request: &mut Request,
    peer: SocketAddr,
    who: &str,
) -> Result<Option<Bytes>, Close> {
    let started = std::time::Instant::now();
    let body: ProduceRequest = request.decode()?;
    broker.state.metrics.produce_requests.inc();
    let acks = body.acks;
    let mut responses = Vec::new();
    for topic_data in body.topic_data {
        let name = topic_data.name.0.as_str().to_string();
        let mut partitions = Vec::new();
        for data in topic_data.partition_data {
            let answer = if !broker.allows(who, crate::auth::Right::Write, &name) {
                let message = format!("{who} may not write topic {name:?}; nothing was written");
                refused(data.index, ResponseError::TopicAuthorizationFailed, message)
            } else if (-1..=1).contains(&acks) {
                produce_partition(broker, &name, data).await
            } else {
                refused(data.index, ResponseError::InvalidRequiredAcks, format!("acks = {acks}: use 0, 1 or -1 (all)"))
            };
            partitions.push(answer);
        }
        responses.push(TopicProduceResponse::default().with_name(topic_data.name).with_partition_responses(partitions));
    }
    crate::serve::metrics::observe(&broker.state.metrics.kafka_produce_latency, started.elapsed());
    if acks == 0 {
        for failed in responses.iter().flat_map(|t| &t.partition_responses).filter(|p| p.error_code != 0) {
            // Nobody will read an answer: say in the log what was not written.
            tracing::warn!(%peer, partition = failed.index, error = ?failed.error_message, "acks=0 produce not written");
        }
        return Ok(None);
    }
    respond(request, &ProduceResponse::default().with_responses(responses))
}

/// Decodes, validates and appends one partition's records; the answer for that partition.
async fn produce_partition(broker: &Broker, topic_name: &str, data: PartitionProduceData) -> PartitionProduceResponse {
    let index = data.index;
    let (topic, id) = match super::locate(broker, topic_name, index) {
        Ok(found) => found,
        Err(e) => return failed(index, &e),
    };
    let partition = topic.partition(id).expect("checked by target").clone();
    if let Some(message) = crate::append::untiered_excess(&broker.state.log, &partition) {
        return refused(index, ResponseError::ThrottlingQuotaExceeded, message);
    }
    let start_offset = partition.start_offset() as i64;
    // Kafka answers a LogAppendTime topic's produce with the append time the batch got
    // (clients report it as the record's timestamp), and -1 for CreateTime.
    let log_append_time = topic.metadata.timestamp_type == crate::batch::TimestampType::LogAppendTime;
    let appended = |first_offset: u64, append_time: Option<i64>| {
        PartitionProduceResponse::default()
            .with_index(index)
            .with_base_offset(first_offset as i64)
            .with_log_append_time_ms(append_time.filter(|_| log_append_time).unwrap_or(-1))
            .with_log_start_offset(start_offset)
    };
    let raw = data.records.unwrap_or_default();
    let bytes = raw.len();
    let claimed = crate::batch::claimed_producer_id(&raw);
    if let Some(id) = claimed.filter(|&id| id >= 0 && !broker.state.log.producer_id_handed_out(id)) {
        let message = format!(
            "{topic_name}/{index}: producer id {id} was not handed out by this broker (InitProducerId); nothing was written"
        );
        return refused(index, ResponseError::UnknownProducerId, message);
    }
    // The common case, an uncompressed batch, is stored as sent.
    let as_sent = {
        let (partition, raw) = (partition.clone(), raw.clone());
        tokio::task::spawn_blocking(move || partition.append_as_sent(&raw, now_ms())).await.expect("append task")
    };
    let produced = match as_sent {
        Some(produced) => produced,
        None => {
            let (records, producer) = match decode_produce(raw, now_ms()) {
                Ok(decoded) => decoded,
                Err(Refused { code, message, record }) => {
                    let answer = refused(index, code, format!("{topic_name}/{index}: {message}; nothing was written"));
                    return with_record_error(answer, record);
                }
            };
            if let Err(e) = partition.check_records(&records) {
                return with_record_error(failed(index, &e), record_at_fault(&e));
            }
            let Some(stamp) = producer else {
                return append_decoded(broker, topic, id, index, records, appended).await;
            };
            let partition = partition.clone();
            tokio::task::spawn_blocking(move || partition.append_stamped(&records, stamp, now_ms()))
                .await
                .expect("append task")
        }
    };
    match produced {
        Ok(produced) => {
            let done = produced.appended;
            if !produced.duplicate {
                let count = produced.records;
                let written = Written {
                    partition: id,
                    first_offset: done.first_offset,
                    last_offset: done.last_offset,
                    count,
                    bytes,
                    append_time: done.append_time,
                };
                broker.state.metrics.count_written(std::slice::from_ref(&written));
            }
            appended(done.first_offset, done.append_time)
        }
        Err(e) => with_record_error(failed(index, &e), record_at_fault(&e)),
    }
}

/// Appends the decoded records of a non-idempotent producer through the path HTTP produce
/// takes.
async fn append_decoded(
    broker: &Broker,
    topic: std::sync::Arc<crate::topic::Topic>,
    id: u32,
    index: i32,
    records: Vec<crate::record::Record>,
    appended: impl Fn(u64, Option<i64>) -> PartitionProduceResponse,
) -> PartitionProduceResponse {
    let by_partition = BTreeMap::from([(id, PartitionRecords { positions: (0..records.len()).collect(), records })]);
    let outcome = tokio::task::spawn_blocking(move || append_all(&topic, by_partition)).await.expect("append task");
    broker.state.metrics.count_written(&outcome.written);
    match (outcome.written.first(), outcome.failure) {
        (_, Some(failure)) => failed(index, &failure.error),
        (Some(written), None) => appended(written.first_offset, written.append_time),
        (None, None) => unreachable!("append_all writes or fails every partition it is given"),
    }
}

/// InitProducerId without a transactional id: a new producer id, epoch 0, for a principal
/// that may write some topic (Kafka's rule since 2.8). Transactional ids are refused:
/// tierlog has no transactions. The allocation may write (and fsync) the `producer-ids` file,
/// so it runs on the blocking pool.
pub(super) async fn init_producer_id(
    broker: &Broker,
    request: &mut Request,
    who: &str,
) -> Result<Option<Bytes>, Close> {
    let body: InitProducerIdRequest = request.decode()?;
    let answer = |code: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(code.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    let response = if body.transactional_id.as_ref().is_some_and(|id| id.0.is_empty()) {
        answer(ResponseError::InvalidRequest) // as Kafka: an empty transactional id is neither null nor an id
    } else if let Some(id) = &body.transactional_id {
        tracing::info!(transactional_id = ?id.0.as_str(), "InitProducerId for a transactional producer refused: no transactions");
        answer(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !broker.may_write_some_topic(who) {
        answer(ResponseError::ClusterAuthorizationFailed)
    } else {
        let log = broker.state.log.clone();
        match tokio::task::spawn_blocking(move || log.allocate_producer_id()).await.expect("allocate task") {
            Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(e) => {
                log_if_server_error(&e);
                answer(error_code(&e))
            }
        }
    };
    respond(request, &response)
}

/// The position of the record a refusal names, if one record is at fault.
fn record_at_fault(e: &Error) -> Option<usize> {
    match e {
        Error::RecordLimit { index, .. } => Some(*index),
        _ => None,
    }
}

fn failed(index: i32, e: &Error) -> PartitionProduceResponse {
    log_if_server_error(e);
    refused(index, error_code(e), e.to_string())
}

fn refused(index: i32, code: ResponseError, message: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_base_offset(-1)
        .with_error_message(Some(StrBytes::from_string(message)))
}

/// Names the record at fault (ProduceResponse v8+ `record_errors`).
fn with_record_error(answer: PartitionProduceResponse, record: Option<usize>) -> PartitionProduceResponse {
    let Some(record) = record else { return answer };
    let error = BatchIndexAndErrorMessage::default()
        .with_batch_index(record as i32)
        .with_batch_index_error_message(answer.error_message.clone());
    answer.with_record_errors(vec![error])
}
