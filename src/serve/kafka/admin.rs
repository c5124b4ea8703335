//! CreateTopics, DeleteTopics, DescribeConfigs and IncrementalAlterConfigs: what Kafka admin
//! clients (kafkajs' admin, confluent-kafka's AdminClient, `kafka-topics.sh`,
//! `kafka-configs.sh`) need to manage topics here.
//!
//! Topics are created in the same log as `tierlog topic create` and `POST /v1/topics`. Deleting
//! a topic is refused (TOPIC_DELETION_DISABLED, as a Kafka broker with
//! `delete.topic.enable=false` answers): an archive kept for regulators does not lose a topic
//! to one admin call. Per-topic settings (`settings`) are created, described and altered under
//! Kafka's names, with the same checks as `tierlog topic create|alter`; the rest of a topic's
//! Kafka configs are shown read-only.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    create_topics_request::CreatableTopicConfig, create_topics_response::CreatableTopicResult,
    delete_topics_response::DeletableTopicResult, describe_configs_response::DescribeConfigsResourceResult,
    describe_configs_response::DescribeConfigsResult, incremental_alter_configs_request::AlterConfigsResource,
    incremental_alter_configs_response::AlterConfigsResourceResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Close, Request, error_code, respond};
use crate::config::Config;
use crate::error::Error;
use crate::settings::{NewTopicSettings, SettingsChange, Source, TopicSettings};

/// DescribeConfigs and IncrementalAlterConfigs resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// DescribeConfigs config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;
/// IncrementalAlterConfigs operations (APPEND and SUBTRACT are for list configs; none here is).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

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
        } else if let Err(e) = new_settings(&name, &topic.configs, broker.state.log.config()) {
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
                let new = new_settings(&name, &topic.configs, log.config()).expect("checked above");
                let create = move || log.create_topic_with_settings(&name, partitions as u32, &new);
                let created = tokio::task::spawn_blocking(create).await.expect("create task");
                created.map(|t| record_created(broker, who, &t)).map_err(|e| (error_code(&e), e.to_string()))
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

/// Queues the audit event of a topic created over Kafka.
fn record_created(broker: &Broker, who: &str, topic: &crate::topic::Topic) {
    let (partitions, settings) = (topic.metadata.partitions, topic.catalog_settings());
    let event = crate::audit::topic_created(
        crate::partition::now_ms(),
        &crate::audit::actor(who),
        topic.name(),
        partitions,
        &settings,
    );
    broker.state.record_audit(event);
}

/// The settings of CreateTopics configs (a null value is the default: not set), checked as
/// `topic create --set` checks them.
fn new_settings(
    topic: &str,
    configs: &[CreatableTopicConfig],
    config: &Config,
) -> crate::error::Result<NewTopicSettings> {
    let set = configs.iter().filter_map(|c| c.value.as_ref().map(|v| (c.name.as_str(), v.as_str())));
    let new = NewTopicSettings::parse(topic, set)?;
    new.settings.check(topic, config)?;
    Ok(new)
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

/// One config of a topic as DescribeConfigs shows it.
struct Described {
    name: &'static str,
    value: String,
    source: i8,
    read_only: bool,
}

/// Every config a topic has, under Kafka's names: its settings in force (the resolver's), and
/// the fixed ones. A value from the configuration equal to the built-in default is reported as
/// Kafka's DEFAULT_CONFIG, another as STATIC_BROKER_CONFIG; a topic's own as DYNAMIC_TOPIC_CONFIG.
fn topic_configs(config: &Config, topic: &crate::topic::Topic) -> Vec<Described> {
    let defaults = Config::default();
    let built_in = TopicSettings::default().resolve(Default::default(), &defaults).entries();
    let fixed = |name, value: String, default: bool| Described {
        name,
        value,
        source: if default { DEFAULT_CONFIG } else { STATIC_BROKER_CONFIG },
        read_only: true,
    };
    let mut configs = vec![
        fixed("cleanup.policy", "delete".to_string(), true),
        fixed("compression.type", "producer".to_string(), true),
        fixed(
            "max.message.bytes",
            config.log.max_record_bytes.to_string(),
            config.log.max_record_bytes == defaults.log.max_record_bytes,
        ),
    ];
    for (i, (name, value, source)) in topic.settings(config).entries().into_iter().enumerate() {
        let source = match source {
            Source::Topic => DYNAMIC_TOPIC_CONFIG,
            Source::Config if value != built_in[i].1 => STATIC_BROKER_CONFIG,
            Source::Config | Source::Default => DEFAULT_CONFIG,
        };
        let read_only = name == crate::settings::TIMESTAMP_TYPE; // fixed at creation
        configs.push(Described { name, value: crate::settings::text(&value), source, read_only });
    }
    configs
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
                    let configs = topic_configs(config, &topic)
                        .into_iter()
                        .filter(|c| wanted(c.name))
                        .map(|c| {
                            DescribeConfigsResourceResult::default()
                                .with_name(text(c.name))
                                .with_value(Some(text(&c.value)))
                                .with_read_only(c.read_only)
                                .with_config_source(c.source)
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

/// IncrementalAlterConfigs of topics: SET and DELETE (back to the configuration) of per-topic
/// settings, each resource all or nothing, checked as `tierlog topic alter` checks them and in
/// force at once. Broker configs are the server's configuration file: refused.
pub(super) async fn incremental_alter_configs(
    broker: &Broker,
    request: &mut Request,
    who: &str,
) -> Result<Option<Bytes>, Close> {
    let body: IncrementalAlterConfigsRequest = request.decode()?;
    let mut responses = Vec::new();
    for resource in body.resources {
        let answer = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let result = alter_resource(broker, &resource, who, body.validate_only).await;
        responses.push(match result {
            Ok(()) => answer,
            Err((code, message)) => answer.with_error_code(code.code()).with_error_message(Some(text(&message))),
        });
    }
    respond(request, &IncrementalAlterConfigsResponse::default().with_responses(responses))
}

async fn alter_resource(
    broker: &Broker,
    resource: &AlterConfigsResource,
    who: &str,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    let name = resource.resource_name.as_str().to_string();
    match resource.resource_type {
        TOPIC => {}
        BROKER => {
            let message =
                "broker configs are the server's configuration file (and TIERLOG_* variables); restart to change them";
            return Err((ResponseError::InvalidRequest, message.to_string()));
        }
        other => return Err((ResponseError::InvalidRequest, format!("resource type {other}: only topics (2)"))),
    }
    if !broker.state.auth().allows(who, crate::auth::Right::Admin, None) {
        let message = format!("{who} may not alter topics (an admin token may, as it may create them)");
        return Err((ResponseError::TopicAuthorizationFailed, message));
    }
    let mut change = SettingsChange::default();
    for config in &resource.configs {
        let key = config.name.as_str().to_string();
        match (config.config_operation, &config.value) {
            (OP_SET, Some(value)) => change.set.push((key, value.as_str().to_string())),
            (OP_SET, None) | (OP_DELETE, _) => change.unset.push(key),
            (op, _) => {
                let message = format!("{key}: operation {op} (APPEND/SUBTRACT) is for list configs; use SET or DELETE");
                return Err((ResponseError::InvalidConfig, message));
            }
        }
    }
    let refuse = |e: Error| match e {
        Error::Invalid(_) | Error::Config(_) => (ResponseError::InvalidConfig, e.to_string()),
        other => (error_code(&other), other.to_string()),
    };
    let log = broker.state.log.clone();
    let before = log.topic(&name).map(|t| t.catalog_settings()).ok();
    let topic = name.clone();
    let alter = move || {
        if validate_only {
            log.check_alter_topic(&name, &change).map(drop)
        } else {
            log.alter_topic(&name, &change).map(drop)
        }
    };
    tokio::task::spawn_blocking(alter).await.expect("alter task").map_err(refuse)?;
    if let (false, Some(before), Ok(after)) = (validate_only, before, broker.state.log.topic(&topic)) {
        let actor = crate::audit::actor(who);
        let event =
            crate::audit::topic_altered(crate::partition::now_ms(), &actor, &topic, &before, &after.catalog_settings());
        broker.state.record_audit(event);
    }
    Ok(())
}
