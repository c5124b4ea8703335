//! ApiVersions, Metadata and FindCoordinator: what a client asks before anything else. This
//! broker is a cluster of one: node [`NODE_ID`] leads every partition (no replicas) and
//! coordinates every group. Leader epochs are reported as -1 (unknown), which tells clients
//! not to validate offsets with OffsetForLeaderEpoch (not implemented).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiVersionsResponse, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
    api_versions_response::ApiVersion,
    find_coordinator_response::Coordinator,
    metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic},
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::{Broker, Close, NODE_ID, Request, SUPPORTED, respond};
use crate::auth::Right;

/// Reported as the cluster id: one tierlog process is one cluster.
const CLUSTER_ID: &str = "tierlog";

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default().with_api_key(*key as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect()
}

pub(super) fn api_versions(request: &Request) -> Result<Option<Bytes>, Close> {
    respond(request, &ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The answer to an ApiVersions request newer than this broker knows (KIP-511): version 0
/// with UNSUPPORTED_VERSION and the supported versions, so the client retries with one of them.
pub(super) fn api_versions_too_new(correlation_id: i32) -> Result<Option<Bytes>, Close> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id); // response header v0: the correlation id alone
    response.encode(&mut out, 0).map_err(|e| Close(format!("cannot encode ApiVersions v0: {e:#}")))?;
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Ok(Some(out.freeze()))
}

pub(super) fn metadata(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: MetadataRequest = request.decode()?;
    // Version 0 asks for every topic with an empty list; later versions with null.
    let names: Vec<String> = match body.topics {
        Some(topics) if !(topics.is_empty() && request.version() == 0) => {
            // Each topic once, however often named: the answer stays bounded by the topics.
            let mut seen = std::collections::HashSet::new();
            topics
                .into_iter()
                .filter_map(|t| t.name)
                .map(|n| n.as_str().to_string())
                .filter(|n| seen.insert(n.clone()))
                .collect()
        }
        // Every topic the principal may read or write (Kafka lists only what it may describe).
        _ => broker
            .state
            .log
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|name| visible(broker, who, name))
            .collect(),
    };
    let topics = names
        .into_iter()
        .map(|name| {
            if visible(broker, who, &name) {
                topic_metadata(broker, name)
            } else {
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name))))
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
            }
        })
        .collect();
    let this = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(StrBytes::from_string(broker.advertised_host.clone()))
        .with_port(broker.advertised_port);
    let response = MetadataResponse::default()
        .with_brokers(vec![this])
        .with_cluster_id(Some(StrBytes::from_static_str(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics);
    respond(request, &response)
}

/// Whether `who` may see topic `name` in metadata: it may read or write it.
fn visible(broker: &Broker, who: &str, name: &str) -> bool {
    broker.allows(who, Right::Read, name) || broker.allows(who, Right::Write, name)
}

fn topic_metadata(broker: &Broker, name: String) -> MetadataResponseTopic {
    let answer = MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
    match broker.state.log.topic(&name) {
        Err(e) => answer.with_error_code(super::error_code(&e).code()),
        Ok(topic) => {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.id as i32)
                        .with_leader_id(BrokerId(NODE_ID))
                        .with_leader_epoch(-1)
                        .with_replica_nodes(vec![BrokerId(NODE_ID)])
                        .with_isr_nodes(vec![BrokerId(NODE_ID)])
                })
                .collect();
            answer.with_partitions(partitions)
        }
    }
}

pub(super) fn find_coordinator(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: FindCoordinatorRequest = request.decode()?;
    let host = StrBytes::from_string(broker.advertised_host.clone());
    let keys = if request.version() >= 4 { body.coordinator_keys } else { vec![body.key] };
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let error = coordinator_error(body.key_type, key.as_str()).or_else(|| {
                (!broker.allows(who, Right::Group, key.as_str())).then(|| {
                    (ResponseError::GroupAuthorizationFailed, format!("{who} may not use group {:?}", key.as_str()))
                })
            });
            let found =
                Coordinator::default().with_key(key).with_error_code(error.as_ref().map_or(0, |(e, _)| e.code()));
            match error {
                Some((_, message)) => found
                    .with_error_message(Some(StrBytes::from_string(message)))
                    .with_node_id(BrokerId(-1))
                    .with_port(-1),
                None => found.with_node_id(BrokerId(NODE_ID)).with_host(host.clone()).with_port(broker.advertised_port),
            }
        })
        .collect();
    let response = if request.version() >= 4 {
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        let only = coordinators.into_iter().next().expect("one key below version 4");
        FindCoordinatorResponse::default()
            .with_error_code(only.error_code)
            .with_error_message(only.error_message)
            .with_node_id(only.node_id)
            .with_host(only.host)
            .with_port(only.port)
    };
    respond(request, &response)
}

/// Groups (key type 0) are coordinated here; transactions (1) and share groups are not.
fn coordinator_error(key_type: i8, key: &str) -> Option<(ResponseError, String)> {
    if key_type != 0 {
        return Some((
            ResponseError::CoordinatorNotAvailable,
            format!("coordinator key type {key_type}: tierlog coordinates consumer groups only (no transactions)"),
        ));
    }
    crate::topic::validate_name(key).err().map(|_| {
        (ResponseError::InvalidGroupId, format!("invalid group name {key:?}: use letters, digits, '.', '_' and '-'"))
    })
}
