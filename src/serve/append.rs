//! Appending a request's records, shared by the HTTP and Kafka front ends: one partition's
//! share of a request is appended all or nothing, partitions one after another, and the
//! outcome says exactly what was written and what was not, so a retry duplicates nothing
//! (unless the failed partition stopped: its share is then in doubt, see `Error::Stopped`).
//! Also the backpressure rule (`server.max_untiered_bytes`) both front ends apply before
//! appending. Owns no protocol: each front end maps [`Outcome`] to its own answer.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::Error;
use crate::partition::{Partition, now_ms};
use crate::record::Record;

/// The records of one request that go to one partition, with their positions in the request.
#[derive(Default)]
pub struct PartitionRecords {
    pub positions: Vec<usize>,
    pub records: Vec<Record>,
}

/// One partition's acknowledged range.
pub struct Written {
    pub partition: u32,
    pub first_offset: u64,
    pub last_offset: u64,
    pub count: usize,
    pub bytes: usize,
    /// When the log appended them.
    pub append_time: Option<i64>,
}

impl Written {
    pub fn to_json(&self) -> Value {
        json!({"partition": self.partition, "first_offset": self.first_offset, "last_offset": self.last_offset, "count": self.count})
    }
}

/// The append that failed, and what the request had not written when it stopped.
pub struct Failure {
    pub topic: String,
    pub partition: u32,
    pub error: Error,
    pub not_attempted: Vec<u32>,
    pub unwritten_positions: Vec<usize>,
}

pub struct Outcome {
    pub written: Vec<Written>,
    pub failure: Option<Failure>,
}

/// Appends each partition's records in partition order and stops at the first failure, so
/// the answer can say exactly which partitions hold the request's records and which do not.
pub fn append_all(topic: &crate::topic::Topic, by_partition: BTreeMap<u32, PartitionRecords>) -> Outcome {
    let mut written = Vec::new();
    let mut groups = by_partition.into_iter();
    while let Some((p, group)) = groups.next() {
        let result = topic.partition(p).and_then(|partition| partition.append(&group.records, now_ms()));
        match result {
            Ok(appended) => written.push(Written {
                partition: p,
                first_offset: appended.first_offset,
                last_offset: appended.last_offset,
                count: group.records.len(),
                bytes: group.records.iter().map(crate::batch::record_encoded_len).sum(),
                append_time: appended.append_time,
            }),
            Err(error) => {
                let rest: Vec<(u32, PartitionRecords)> = groups.collect();
                let mut unwritten_positions: Vec<usize> =
                    group.positions.into_iter().chain(rest.iter().flat_map(|(_, g)| g.positions.clone())).collect();
                unwritten_positions.sort_unstable();
                let not_attempted = rest.into_iter().map(|(p, _)| p).collect();
                let topic = topic.name().to_string();
                let failure = Failure { topic, partition: p, error, not_attempted, unwritten_positions };
                return Outcome { written, failure: Some(failure) };
            }
        }
    }
    Outcome { written, failure: None }
}

/// Why an append to `partition` must wait: it holds more bytes not yet in the remote tier than
/// `server.max_untiered_bytes` allows (a stalled object store must not fill the local disk).
/// `None` when it may go ahead.
/// A partition whose topic is not tiered (`remote.storage.enable` in force) has no such limit.
pub fn untiered_excess(log: &crate::Log, partition: &Partition) -> Option<String> {
    let config = log.config();
    let limit = config.server.max_untiered_bytes;
    if limit == 0 || !log.topic(&partition.topic).is_ok_and(|t| t.is_tiered(config)) {
        return None;
    }
    let untiered = crate::tier::untiered_bytes(partition);
    (untiered > limit).then(|| {
        format!(
            "{}/{}: tiering is behind, {untiered} bytes are not yet in the remote tier (server.max_untiered_bytes = {limit}); retry later and check `tierlog tier status`",
            partition.topic, partition.id
        )
    })
}
