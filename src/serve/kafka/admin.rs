//! CreateTopics, DeleteTopics and DescribeConfigs: what Kafka admin clients (kafkajs' admin,
//! confluent-kafka's AdminClient, `kafka-topics.sh`) need to manage topics here.
//!
//! Topics are created in the same log as `tierlog topic create` and `POST /v1/topics`. Deleting
//! a topic is refused (TOPIC_DELETION_DISABLED, as a Kafka broker with
//! `delete.topic.enable=false` answers): an archive kept for regulators does not lose a topic
//! to one admin call. Topic settings are the configuration's (per-topic settings do not exist
//! yet), shown read-only under Kafka's names.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, create_topics_request::CreatableTopicConfig, create_topics_response::CreatableTopicResult,
    delete_topics_response::DeletableTopicResult, describe_configs_response::DescribeConfigsResourceResult,
    describe_configs_response::DescribeConfigsResult,
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Close, Request, error_code, respond};
use crate::config::Config;
use crate::error::Error;

/// DescribeConfigs resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// DescribeConfigs config sources.
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(super) async fn create_topics(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: CreateTopicsRequest = request.decode()?;
    let mut results = Vec::new();
    for topic in body.topics {
        let name = topic.name.0.as_str().to_string();
        let answer = CreatableTopicResult::default().with_name(topic.name.clone());
        let partitions = if topic.num_partitions == -1 {
            broker.state.log.config().log.default_partitions as i32
        } else {
            topic.num_partitions
        };
        let refused = if !broker.state.auth().allows(who, crate::auth::Right::Admin, None) {
            Some((ResponseError::TopicAuthorizationFailed, format!("{who} may not create topics (an admin token may)")))
        } else if !matches!(topic.replication_factor, -1 | 1) {
            Some((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {}: tierlog keeps one copy (1 or -1)", topic.replication_factor),
            ))
        } else if !topic.assignments.is_empty() {
            Some((ResponseError::InvalidReplicaAssignment, "replica assignments are not supported".to_string()))
        } else if let Err(e) = timestamp_type(&topic.configs) {
            Some((ResponseError::InvalidConfig, e.to_string()))
        } else if partitions < 1 {
            Some((ResponseError::InvalidPartitions, format!("{partitions} partitions: at least 1")))
        } else {
            None
        };
        let result = match refused {
            Some(refusal) => Err(refusal),
            None if body.validate_only => check_new(broker, &name, partitions as u32),
            None => {
                let log = broker.state.log.clone();
                let timestamps = timestamp_type(&topic.configs).expect("checked above");
                let create = move || log.create_topic_with(&name, partitions as u32, timestamps).map(drop);
                let created = tokio::task::spawn_blocking(create).await;
                created.expect("create task").map_err(|e| (error_code(&e), e.to_string()))
            }
        };
        results.push(match result {
            Ok(()) => answer.with_num_partitions(partitions).with_replication_factor(1),
            Err((code, message)) => answer
                .with_error_code(code.code())
                .with_error_message(Some(text(&message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        });
    }
    respond(request, &CreateTopicsResponse::default().with_topics(results))
}

/// The `message.timestamp.type` of CreateTopics configs (null values are the default).
fn timestamp_type(configs: &[CreatableTopicConfig]) -> crate::error::Result<crate::batch::TimestampType> {
    let settings = configs.iter().map(|c| (c.name.as_str(), c.value.as_ref().map_or("CreateTime", |v| v.as_str())));
    crate::topic::timestamp_type_from_settings(settings)
}

/// What creating the topic would answer, without creating it (validate_only).
fn check_new(broker: &Broker, name: &str, partitions: u32) -> Result<(), (ResponseError, String)> {
    let refuse = |e: Error| (error_code(&e), e.to_string());
    if let Some(remote) = broker.state.log.replica_of() {
        let what = format!("creating topic '{name}'");
        return Err(refuse(Error::Replica { what, remote: remote.to_string() }));
    }
    crate::topic::validate_name(name).map_err(refuse)?;
    if broker.state.log.topic(name).is_ok() {
        return Err(refuse(Error::TopicExists(name.to_string())));
    }
    if partitions > crate::topic::PARTITIONS_MAX {
        let message = format!("{partitions} partitions: at most {}", crate::topic::PARTITIONS_MAX);
        return Err((ResponseError::InvalidPartitions, message));
    }
    Ok(())
}

pub(super) fn delete_topics(request: &mut Request) -> Result<Option<Bytes>, Close> {
    let body: DeleteTopicsRequest = request.decode()?;
    let message = "tierlog never deletes a topic: it is an archive (delete.topic.enable=false)";
    let refuse = |name: Option<kafka_protocol::messages::TopicName>| {
        DeletableTopicResult::default()
            .with_name(name)
            .with_error_code(ResponseError::TopicDeletionDisabled.code())
            .with_error_message(Some(text(message)))
    };
    // Before v6 topics are named in `topic_names`, from v6 in `topics`.
    let mut responses: Vec<_> = body.topic_names.into_iter().map(|n| refuse(Some(n))).collect();
    responses.extend(body.topics.into_iter().map(|t| refuse(t.name).with_topic_id(t.topic_id)));
    respond(request, &DeleteTopicsResponse::default().with_responses(responses))
}

/// The settings every topic has, under Kafka's names: (name, value, is it the built-in default).
fn topic_configs(config: &Config, topic: &crate::topic::TopicMetadata) -> Vec<(&'static str, String, bool)> {
    let defaults = Config::default();
    let remote_forever = "-1".to_string(); // nothing expires from the remote tier yet
    let timestamps = topic.timestamp_type;
    vec![
        ("cleanup.policy", "delete".to_string(), true),
        ("compression.type", "producer".to_string(), true),
        ("message.timestamp.type", timestamps.as_str().to_string(), timestamps == Default::default()),
        (
            "max.message.bytes",
            config.log.max_record_bytes.to_string(),
            config.log.max_record_bytes == defaults.log.max_record_bytes,
        ),
        ("segment.bytes", config.segment.max_bytes.to_string(), config.segment.max_bytes == defaults.segment.max_bytes),
        ("segment.ms", config.segment.max_age_ms.to_string(), config.segment.max_age_ms == defaults.segment.max_age_ms),
        ("retention.ms", remote_forever.clone(), true),
        ("retention.bytes", remote_forever, true),
        (
            "remote.storage.enable",
            config.tiering.enabled.to_string(),
            config.tiering.enabled == defaults.tiering.enabled,
        ),
        (
            "local.retention.ms",
            config.tiering.local_retention_ms.to_string(),
            config.tiering.local_retention_ms == defaults.tiering.local_retention_ms,
        ),
        (
            "local.retention.bytes",
            config.tiering.local_retention_bytes.to_string(),
            config.tiering.local_retention_bytes == defaults.tiering.local_retention_bytes,
        ),
    ]
}

pub(super) fn describe_configs(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: DescribeConfigsRequest = request.decode()?;
    let config = broker.state.log.config();
    let mut resources = body.resources;
    let mut seen = std::collections::HashSet::new();
    resources.retain(|r| seen.insert((r.resource_type, r.resource_name.clone()))); // each once
    let results = resources
        .into_iter()
        .map(|resource| {
            let answer = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match resource.resource_type {
                TOPIC if !broker.allows(who, crate::auth::Right::Read, resource.resource_name.as_str()) => answer
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(text(&format!("{who} may not read this topic")))),
                TOPIC => {
                    let topic = match broker.state.log.topic(resource.resource_name.as_str()) {
                        Ok(topic) => topic,
                        Err(e) => {
                            return answer
                                .with_error_code(error_code(&e).code())
                                .with_error_message(Some(text(&e.to_string())));
                        }
                    };
                    let wanted = |name: &str| {
                        resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                    };
                    let configs = topic_configs(config, &topic.metadata)
                        .into_iter()
                        .filter(|(name, ..)| wanted(name))
                        .map(|(name, value, default)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(text(name))
                                .with_value(Some(text(&value)))
                                .with_read_only(true)
                                .with_config_source(if default { DEFAULT_CONFIG } else { STATIC_BROKER_CONFIG })
                        })
                        .collect();
                    answer.with_configs(configs)
                }
                BROKER => answer.with_configs(Vec::new()),
                other => answer
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(text(&format!("resource type {other}: only topics (2) and brokers (4)")))),
            }
        })
        .collect();
    respond(request, &DescribeConfigsResponse::default().with_results(results))
}
