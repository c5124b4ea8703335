//! OffsetCommit and OffsetFetch, backed by the consumer-group store of `groups` — the same
//! committed offsets HTTP and CLI consumers use, so a group can move between front ends.
//!
//! A commit from a group member must name the group's current generation while the group is
//! Stable (the coordinator checks); one outside a generation (-1, as consumers with manual
//! assignment send) is accepted while the group has no members. The store keeps offsets only: commit metadata strings and
//! leader epochs are not kept (OffsetFetch answers "" and -1).
//!
//! A commit is checked against the coordinator, then written on the blocking pool. DeleteGroups
//! must not fall between the two, or the commit would bring back offsets of a group just
//! deleted: [`GroupWrites`] holds a group shared from a commit's check through its write, and
//! exclusively while the group is deleted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
    offset_commit_request::OffsetCommitRequestTopic,
    offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic},
    offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic},
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Close, Request, error_code, log_if_server_error, respond};
use crate::auth::Right;
use crate::error::Error;
use crate::groups;

pub(super) async fn commit(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: OffsetCommitRequest = request.decode()?;
    let group = body.group_id.0.as_str().to_string();
    // Held from the check through the writes: a DeleteGroups waits for them (or they for it).
    let _writing = broker.group_writes.commit(&group).await;
    let refusal = if crate::topic::validate_name(&group).is_err() {
        Some(ResponseError::InvalidGroupId)
    } else if !broker.allows(who, Right::Group, &group) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        let member = body.member_id.as_str();
        broker.groups.check_commit(&group, body.generation_id_or_member_epoch, member).err()
    };
    let mut topics = Vec::new();
    for topic in body.topics {
        let codes = match refusal {
            Some(code) => vec![code.code(); topic.partitions.len()],
            None if !broker.allows(who, Right::Read, topic.name.as_str()) => {
                vec![ResponseError::TopicAuthorizationFailed.code(); topic.partitions.len()]
            }
            None => commit_topic(broker, who, &group, &topic).await,
        };
        let partitions = topic
            .partitions
            .iter()
            .zip(codes)
            .map(|(p, code)| {
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)
            })
            .collect();
        topics.push(OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions));
    }
    respond(request, &OffsetCommitResponse::default().with_topics(topics))
}

/// Per consumer group, a lock that OffsetCommit holds shared from its check of the group
/// through its writes, and DeleteGroups exclusively: a commit whose check passed lands before
/// the group is deleted, never after. Entries exist only while held, so the map stays as small
/// as the number of groups being committed to at once.
#[derive(Default)]
pub(super) struct GroupWrites(Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>);

/// A group held by [`GroupWrites`]; dropping it releases the group (and its entry, when no
/// one else holds or waits for it).
pub(super) struct GroupHeld<'a, G> {
    writes: &'a GroupWrites,
    group: String,
    guard: Option<G>,
}

impl GroupWrites {
    fn lock_of(&self, group: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut locks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(group.to_string()).or_default().clone()
    }

    /// Holds `group` for a commit (commits to one group do not wait for each other).
    pub(super) async fn commit(&self, group: &str) -> GroupHeld<'_, tokio::sync::OwnedRwLockReadGuard<()>> {
        let guard = self.lock_of(group).read_owned().await;
        GroupHeld { writes: self, group: group.to_string(), guard: Some(guard) }
    }

    /// Holds `group` for its deletion, once every commit in flight to it has landed.
    pub(super) async fn delete(&self, group: &str) -> GroupHeld<'_, tokio::sync::OwnedRwLockWriteGuard<()>> {
        let guard = self.lock_of(group).write_owned().await;
        GroupHeld { writes: self, group: group.to_string(), guard: Some(guard) }
    }
}

impl<G> Drop for GroupHeld<'_, G> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.writes.0.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map's own reference left: nobody holds or waits for the group.
        if locks.get(&self.group).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.group);
        }
    }
}

/// Commits one topic's partitions in one durable write; an error code per partition.
async fn commit_topic(broker: &Broker, who: &str, group: &str, topic: &OffsetCommitRequestTopic) -> Vec<i16> {
    let group_name = group;
    let name = topic.name.0.as_str().to_string();
    let checked: Vec<Result<(u32, u64), Error>> =
        topic.partitions.iter().map(|p| check_commit(broker, &name, p.partition_index, p.committed_offset)).collect();
    let offsets: BTreeMap<u32, u64> = checked.iter().filter_map(|c| c.as_ref().ok().copied()).collect();
    let written = if offsets.is_empty() {
        Ok(())
    } else {
        let data_dir = broker.state.log.data_dir().to_path_buf();
        let (group, topic, committed) = (group.to_string(), name.clone(), offsets.clone());
        // A commit waits for the group's file lock and fsyncs: keep it off the async workers.
        let written = tokio::task::spawn_blocking(move || groups::commit(&data_dir, &group, &topic, &committed))
            .await
            .expect("group commit task");
        if written.is_ok() {
            broker.state.auth().audit_commit(who, group_name, &name, &offsets);
        }
        written
    };
    if let Err(e) = &written {
        log_if_server_error(e);
    }
    checked
        .iter()
        .map(|c| match (c, &written) {
            (Err(e), _) | (Ok(_), Err(e)) => error_code(e).code(),
            (Ok(_), Ok(())) => 0,
        })
        .collect()
}

/// A committed offset must name a partition of the topic and lie within its log, as for HTTP.
fn check_commit(broker: &Broker, topic: &str, index: i32, offset: i64) -> Result<(u32, u64), Error> {
    let found = broker.state.log.topic(topic)?;
    let partitions = found.metadata.partitions;
    let id = u32::try_from(index).map_err(|_| Error::UnknownPartition {
        topic: topic.to_string(),
        partition: u32::MAX,
        partitions,
    })?;
    let end = found.partition(id)?.end_offset();
    match u64::try_from(offset) {
        Ok(offset) if offset <= end => Ok((id, offset)),
        _ => Err(Error::Invalid(format!("offset {offset} of {topic}/{id} is outside 0..={end}"))),
    }
}

pub(super) fn fetch(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: OffsetFetchRequest = request.decode()?;
    let group = body.group_id.0.as_str().to_string();
    if crate::topic::validate_name(&group).is_err() {
        return respond(request, &OffsetFetchResponse::default().with_error_code(ResponseError::InvalidGroupId.code()));
    }
    if !broker.allows(who, Right::Group, &group) {
        let code = ResponseError::GroupAuthorizationFailed.code();
        return respond(request, &OffsetFetchResponse::default().with_error_code(code));
    }
    // Null topics (version 2+): every topic the group has committed offsets in.
    let wanted: Vec<(TopicName, Option<Vec<i32>>)> = match body.topics {
        Some(topics) => topics.into_iter().map(|t| (t.name, Some(t.partition_indexes))).collect(),
        None => broker
            .state
            .log
            .topics()
            .iter()
            .filter(|t| broker.allows(who, Right::Read, t.name()))
            .map(|t| (TopicName(StrBytes::from_string(t.name().to_string())), None))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, indexes) in wanted {
        if !broker.allows(who, Right::Read, name.as_str()) {
            let code = ResponseError::TopicAuthorizationFailed.code();
            let partitions = indexes.unwrap_or_default().into_iter().map(|p| fetched(p, -1, code)).collect();
            topics.push(OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions));
            continue;
        }
        let partitions = match groups::load(broker.state.log.data_dir(), &group, name.as_str()) {
            Ok(committed) => {
                let indexes = indexes.unwrap_or_else(|| committed.keys().map(|p| *p as i32).collect());
                indexes
                    .into_iter()
                    .map(|p| {
                        let offset = u32::try_from(p).ok().and_then(|p| committed.get(&p)).map_or(-1, |o| *o as i64);
                        fetched(p, offset, 0)
                    })
                    .collect()
            }
            Err(e) => {
                log_if_server_error(&e);
                let code = error_code(&e).code();
                indexes.unwrap_or_default().into_iter().map(|p| fetched(p, -1, code)).collect()
            }
        };
        let partitions: Vec<_> = partitions;
        if !partitions.is_empty() {
            topics.push(OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions));
        }
    }
    respond(request, &OffsetFetchResponse::default().with_topics(topics))
}

fn fetched(partition: i32, offset: i64, error_code: i16) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(partition)
        .with_committed_offset(offset)
        .with_committed_leader_epoch(-1)
        .with_metadata(Some(StrBytes::from_static_str("")))
        .with_error_code(error_code)
}
