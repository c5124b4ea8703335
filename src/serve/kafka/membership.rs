//! JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ListGroups and DescribeGroups: the wire side
//! of the group coordinator (`coordinator` owns the state machine).

use std::net::SocketAddr;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse, delete_groups_response::DeletableGroupResult,
    describe_groups_response::DescribedGroup, describe_groups_response::DescribedGroupMember,
    join_group_response::JoinGroupResponseMember, leave_group_response::MemberResponse,
    list_groups_response::ListedGroup,
};
use kafka_protocol::protocol::StrBytes;

use super::coordinator::{Join, State};
use super::{Broker, Close, Request, respond};

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A group id the groups store can hold (the same rule as topic names), else INVALID_GROUP_ID.
fn valid_group(group: &str) -> Result<(), ResponseError> {
    crate::topic::validate_name(group).map_err(|_| ResponseError::InvalidGroupId)
}

/// GROUP_AUTHORIZATION_FAILED unless the principal has the group right on `group`.
fn allowed(broker: &Broker, who: &str, group: &str) -> Result<(), ResponseError> {
    if broker.allows(who, crate::auth::Right::Group, group) {
        Ok(())
    } else {
        Err(ResponseError::GroupAuthorizationFailed)
    }
}

fn code(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}

pub(super) async fn join_group(
    broker: &Broker,
    request: &mut Request,
    peer: SocketAddr,
    who: &str,
) -> Result<Option<Bytes>, Close> {
    let body: JoinGroupRequest = request.decode()?;
    let group = body.group_id.0.as_str().to_string();
    if let Err(error) = valid_group(&group).and_then(|()| allowed(broker, who, &group)) {
        let response = JoinGroupResponse::default().with_error_code(error.code()).with_generation_id(-1);
        return respond(request, &response);
    }
    let version = request.version();
    let join = Join {
        group,
        principal: who.to_string(),
        member_id: body.member_id.as_str().to_string(),
        instance_id: body.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
        client_id: request.header.client_id.as_ref().map_or(String::new(), |c| c.as_str().to_string()),
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 { body.session_timeout_ms } else { body.rebalance_timeout_ms },
        protocol_type: body.protocol_type.as_str().to_string(),
        protocols: body.protocols.iter().map(|p| (p.name.as_str().to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    let joined = broker.groups.join(join).await;
    let members = joined
        .members
        .iter()
        .map(|(id, instance, metadata)| {
            JoinGroupResponseMember::default()
                .with_member_id(text(id))
                .with_group_instance_id(instance.as_deref().map(text))
                .with_metadata(metadata.clone())
        })
        .collect();
    let response = JoinGroupResponse::default()
        .with_error_code(joined.error.map_or(0, |e| e.code()))
        .with_generation_id(joined.generation)
        .with_protocol_type(Some(text(&joined.protocol_type)))
        // Before v7 the field is not nullable: an empty name, as Kafka answers on errors.
        .with_protocol_name(if version >= 7 && joined.error.is_some() { None } else { Some(text(&joined.protocol)) })
        .with_leader(text(&joined.leader))
        .with_member_id(text(&joined.member_id))
        .with_members(members);
    respond(request, &response)
}

pub(super) async fn sync_group(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: SyncGroupRequest = request.decode()?;
    if let Err(error) = allowed(broker, who, body.group_id.0.as_str()) {
        return respond(request, &SyncGroupResponse::default().with_error_code(error.code()));
    }
    let assignments =
        body.assignments.iter().map(|a| (a.member_id.as_str().to_string(), a.assignment.clone())).collect();
    let synced =
        broker.groups.sync(body.group_id.0.as_str(), body.generation_id, body.member_id.as_str(), assignments).await;
    let response = match synced {
        Ok((protocol_type, protocol, assignment)) => SyncGroupResponse::default()
            .with_protocol_type(Some(text(&protocol_type)))
            .with_protocol_name(Some(text(&protocol)))
            .with_assignment(assignment),
        Err(error) => SyncGroupResponse::default().with_error_code(error.code()),
    };
    respond(request, &response)
}

pub(super) fn heartbeat(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: HeartbeatRequest = request.decode()?;
    let group = body.group_id.0.as_str();
    let beat = allowed(broker, who, group)
        .and_then(|()| broker.groups.heartbeat(group, body.generation_id, body.member_id.as_str()));
    respond(request, &HeartbeatResponse::default().with_error_code(code(beat)))
}

pub(super) fn leave_group(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: LeaveGroupRequest = request.decode()?;
    let group = body.group_id.0.as_str();
    if let Err(error) = allowed(broker, who, group) {
        return respond(request, &LeaveGroupResponse::default().with_error_code(error.code()));
    }
    if request.version() < 3 {
        let left = broker.groups.leave(group, &[body.member_id.as_str().to_string()]);
        return respond(request, &LeaveGroupResponse::default().with_error_code(code(left[0])));
    }
    let ids: Vec<String> = body.members.iter().map(|m| m.member_id.as_str().to_string()).collect();
    let left = broker.groups.leave(group, &ids);
    let members = body
        .members
        .iter()
        .zip(left)
        .map(|(m, result)| {
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code(result))
        })
        .collect();
    respond(request, &LeaveGroupResponse::default().with_members(members))
}

/// DeleteGroups (kafka-consumer-groups --delete): each named group's committed offsets are
/// deleted from the groups store, unless it has members (NON_EMPTY_GROUP); one neither known
/// to the coordinator nor with committed offsets is GROUP_ID_NOT_FOUND. Needs the group right;
/// every deletion is audited, also one that failed part-way. Each group is answered once,
/// however often it is named. The file work runs on the blocking pool, never under the
/// coordinator's lock.
pub(super) async fn delete_groups(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: DeleteGroupsRequest = request.decode()?;
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::new();
    for name in body.groups_names {
        if !seen.insert(name.clone()) {
            continue;
        }
        let group = name.0.to_string();
        let outcome = match valid_group(&group).and_then(|()| allowed(broker, who, &group)) {
            Err(e) => Err(e),
            Ok(()) => delete_group(broker, who, group).await,
        };
        results.push(DeletableGroupResult::default().with_group_id(name).with_error_code(code(outcome)));
    }
    respond(request, &DeleteGroupsResponse::default().with_results(results))
}

async fn delete_group(broker: &Broker, who: &str, group: String) -> Result<(), ResponseError> {
    // After every OffsetCommit in flight to the group has landed, and before any later one is
    // checked: none brings the deleted offsets back.
    let _deleting = broker.group_writes.delete(&group).await;
    let known = broker.groups.forget_if_empty(&group)?;
    let data_dir = broker.state.log.data_dir().to_path_buf();
    let task_group = group.clone();
    let (deleted, result) = tokio::task::spawn_blocking(move || crate::groups::delete(&data_dir, &task_group, None))
        .await
        .expect("delete task");
    if !deleted.is_empty() {
        broker.state.auth().audit_group_delete(who, &group, &deleted);
    }
    match result {
        Err(e) => {
            tracing::error!(group = ?group, error = %e, deleted_topics = deleted.len(), "DeleteGroups failed part-way");
            Err(ResponseError::KafkaStorageError)
        }
        Ok(()) if deleted.is_empty() && !known => Err(ResponseError::GroupIdNotFound),
        Ok(()) => Ok(()),
    }
}

/// Groups with committed offsets and no members (HTTP and CLI consumers, Kafka groups whose
/// members all left): Kafka lists them as Empty, with no protocol type.
fn stored_groups(broker: &Broker) -> Vec<String> {
    crate::groups::list(broker.state.log.data_dir()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the groups store");
        Vec::new()
    })
}

pub(super) fn list_groups(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: ListGroupsRequest = request.decode()?;
    let wanted =
        |state: State| body.states_filter.is_empty() || body.states_filter.iter().any(|s| s.as_str() == state.name());
    let mut groups = broker.groups.list();
    for name in stored_groups(broker) {
        if !groups.iter().any(|(known, _, _)| *known == name) {
            groups.push((name, State::Empty, String::new()));
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let groups = groups
        .into_iter()
        .filter(|(name, state, _)| wanted(*state) && allowed(broker, who, name).is_ok())
        .map(|(name, state, protocol_type)| {
            ListedGroup::default()
                .with_group_id(text(&name).into())
                .with_protocol_type(text(&protocol_type))
                .with_group_state(text(state.name()))
                .with_group_type(text("classic"))
        })
        .collect();
    respond(request, &ListGroupsResponse::default().with_groups(groups))
}

/// Bytes of member metadata and assignments one DescribeGroups answer carries at most; members
/// past it are listed without them (the answer stays bounded whatever the request names).
const DESCRIBE_BYTES_MAX: usize = 16 << 20;

pub(super) fn describe_groups(broker: &Broker, request: &mut Request, who: &str) -> Result<Option<Bytes>, Close> {
    let body: DescribeGroupsRequest = request.decode()?;
    let mut names = body.groups;
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.0.clone())); // each group once, however often named
    let mut stored: Option<Vec<String>> = None; // read only if a named group is not in memory
    let mut budget = DESCRIBE_BYTES_MAX;
    let groups = names
        .into_iter()
        .map(|name| {
            if allowed(broker, who, name.0.as_str()).is_err() {
                let code = ResponseError::GroupAuthorizationFailed.code();
                return DescribedGroup::default().with_group_id(name).with_error_code(code);
            }
            let Some(info) = broker.groups.describe(name.0.as_str()) else {
                // Kafka describes a group it does not know as Dead, without an error; one with
                // committed offsets only as Empty.
                let stored = stored.get_or_insert_with(|| stored_groups(broker));
                let state = if stored.iter().any(|g| g == name.0.as_str()) { "Empty" } else { "Dead" };
                return DescribedGroup::default().with_group_id(name).with_group_state(text(state));
            };
            let members = info
                .members
                .into_iter()
                .map(|m| {
                    let bytes = m.metadata.len() + m.assignment.len();
                    let (metadata, assignment) = if bytes <= budget {
                        budget -= bytes;
                        (m.metadata, m.assignment)
                    } else {
                        (Bytes::new(), Bytes::new())
                    };
                    DescribedGroupMember::default()
                        .with_member_id(text(&m.member_id))
                        .with_group_instance_id(m.instance_id.as_deref().map(text))
                        .with_client_id(text(&m.client_id))
                        .with_client_host(text(&m.client_host))
                        .with_member_metadata(metadata)
                        .with_member_assignment(assignment)
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(name)
                .with_group_state(text(info.state.name()))
                .with_protocol_type(text(&info.protocol_type))
                .with_protocol_data(text(&info.protocol))
                .with_members(members)
        })
        .collect();
    respond(request, &DescribeGroupsResponse::default().with_groups(groups))
}
