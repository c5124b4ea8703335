//! The Kafka wire-protocol front end of `tierlog serve` (docs/KAFKA.md), beside the HTTP API
//! and sharing its state: the same `Log`, unified `Reader` (both tiers), consumer-group store
//! and metrics.
//!
//! Owns the listener and the connection loop: size-limited frames, request headers, version
//! negotiation, dispatch to one module per group of APIs, and error answers for what is not
//! implemented. Requests on one connection are answered one at a time, in order, as Kafka
//! brokers do. Everything a client sends is untrusted: a frame that is too large or cannot be
//! parsed closes that connection with a log line naming the peer; nothing a client sends can
//! stop the server. Wire types and RecordBatch coding are the `kafka-protocol` crate's; this
//! module does not own the record mapping (`records`) nor any storage.

mod admin;
mod cluster;
mod coordinator;
mod fetch;
mod membership;
mod offsets;
mod produce;
pub mod records;
mod sasl;
mod unsupported;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::error::Error;
use crate::serve::http::AppState;

/// The one broker id tierlog answers as: it is every partition's leader and every group's
/// coordinator.
pub const NODE_ID: i32 = 0;

/// The API versions this broker implements, advertised by ApiVersions. Anything else gets
/// UNSUPPORTED_VERSION (see `unsupported`).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    // v0 is advertised because librdkafka requires it to use SASL at all; a v0 handshake itself
    // is refused (its unframed SASL exchange is not implemented), clients then use v1.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The versions of `key` this broker implements, if any.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED.iter().find(|(k, _, _)| *k == key).map(|(_, min, max)| (*min, *max))
}

/// What the Kafka front end needs: the shared state and where clients should connect.
pub struct Broker {
    pub state: Arc<AppState>,
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Consumer-group membership (committed offsets are in the groups store).
    pub groups: Arc<coordinator::Coordinator>,
    /// Orders each group's OffsetCommits and DeleteGroups (see [`offsets::GroupWrites`]).
    group_writes: offsets::GroupWrites,
}

impl Broker {
    /// The broker for `listener`: advertised host/port from `[kafka]`, defaulting to the
    /// address the listener is bound to.
    pub fn new(state: Arc<AppState>, listener: &TcpListener) -> std::io::Result<Broker> {
        let bound = listener.local_addr()?;
        let config = &state.log.config().kafka;
        let advertised_host =
            if config.advertised_host.is_empty() { bound.ip().to_string() } else { config.advertised_host.clone() };
        let advertised_port = if config.advertised_port == 0 { bound.port() } else { config.advertised_port as u16 };
        let groups = Arc::new(coordinator::Coordinator::default());
        let advertised_port = i32::from(advertised_port);
        Ok(Broker { state, advertised_host, advertised_port, groups, group_writes: offsets::GroupWrites::default() })
    }
}

/// A connection without a request this long is closed (Kafka's `connections.max.idle.ms`
/// default); clients reconnect when they need to.
const IDLE_CLOSE: Duration = Duration::from_secs(600);

/// How long the listener waits after a failed accept before trying again.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Accepts connections until `shutdown` turns true; each connection runs as its own task and
/// ends at its next request boundary once shutdown starts.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let config = &broker.state.log.config().kafka;
    let (max_frame, connections) =
        (config.max_request_bytes as usize, Arc::new(Semaphore::new(config.max_connections as usize)));
    let frame_timeout = Duration::from_millis(broker.state.log.config().server.request_timeout_ms);
    tokio::spawn(broker.groups.clone().run(shutdown.clone()));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically out of file descriptors (EMFILE): the connection stays in the
                // backlog and the next accept fails at once, so retrying right away would spin
                // a core and flood the log. Wait, as the HTTP listener does.
                tracing::warn!(error = %e, "cannot accept a Kafka connection; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(ACCEPT_RETRY) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                continue;
            }
        };
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tokio::spawn(async move {
            // Boxed: the connection's future is deep enough that computing its layout inline
            // overflows rustc's query depth in crates that monomorphise `serve`.
            Box::pin(connection(stream, peer, &broker, Limits { max_frame, frame_timeout }, shutdown)).await;
            drop(permit);
        });
    }
}

/// Why a connection is closed instead of answered.
struct Close(String);

/// What one connection may send: the largest frame, and how long a frame may take to arrive
/// once its first byte has (`server.request_timeout_ms`, as for HTTP request bodies), so a
/// client that stalls mid-frame cannot hold a connection slot and its buffer forever.
#[derive(Clone, Copy)]
struct Limits {
    max_frame: usize,
    frame_timeout: Duration,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut session = Session { peer, principal: None, handshake: false, close: false };
    loop {
        // A connection that must still authenticate gets a request's time for each frame, so
        // sockets that never speak cannot hold every connection slot; any other is closed after
        // IDLE_CLOSE without a request, as Kafka's connections.max.idle.ms does.
        let unauthenticated = broker.state.auth().enabled() && session.principal.is_none();
        let idle = if unauthenticated { limits.frame_timeout } else { IDLE_CLOSE };
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle, read_frame(&mut stream, limits)) => match frame {
                Ok(frame) => frame,
                Err(_) if unauthenticated => Err(Close(format!("no SASL authentication within {} ms", idle.as_millis()))),
                Err(_) => return tracing::debug!(%peer, "closing an idle Kafka connection"),
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let answer = match frame {
            Ok(None) => return, // the client closed the connection
            Ok(Some(frame)) => broker.handle(frame, &mut session).await,
            Err(close) => Err(close),
        };
        let written = match answer {
            Ok(Some(response)) => stream.write_all(&response).await,
            Ok(None) => Ok(()), // Produce with acks=0: Kafka sends no response
            Err(Close(why)) => {
                broker.state.metrics.kafka_closed_connections.inc();
                tracing::warn!(%peer, reason = ?why, "closing Kafka connection");
                return;
            }
        };
        if let Err(e) = written {
            tracing::debug!(%peer, error = %e, "Kafka client went away");
            return;
        }
        if session.close {
            return; // answered a failed authentication: Kafka closes the connection after it
        }
    }
}

/// One connection's authentication state.
pub(super) struct Session {
    peer: SocketAddr,
    /// The token's name once SASL/PLAIN succeeded.
    principal: Option<String>,
    /// A SaslHandshake for PLAIN was accepted.
    handshake: bool,
    /// Close the connection once the current answer is written.
    close: bool,
}

impl Session {
    /// Who the requests of this connection come from: the authenticated token's name, or
    /// "anonymous" when authentication is off.
    fn who(&self) -> &str {
        self.principal.as_deref().unwrap_or("anonymous")
    }
}

/// One request frame (without its length prefix); `None` at a clean end of the connection.
/// A connection may idle between frames; a frame must arrive within `limits.frame_timeout`.
async fn read_frame(stream: &mut TcpStream, limits: Limits) -> Result<Option<Bytes>, Close> {
    let mut length = [0u8; 4];
    match stream.read(&mut length[..1]).await {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(Close(format!("read failed: {e}"))),
    }
    let timeout = limits.frame_timeout;
    tokio::time::timeout(timeout, read_frame_rest(stream, length, limits.max_frame))
        .await
        .unwrap_or_else(|_| Err(Close(format!("request frame not received within {} ms", timeout.as_millis()))))
        .map(Some)
}

/// The rest of a frame whose first length byte is in `length`.
async fn read_frame_rest(stream: &mut TcpStream, mut length: [u8; 4], max_frame: usize) -> Result<Bytes, Close> {
    stream.read_exact(&mut length[1..]).await.map_err(|e| Close(format!("truncated request frame length: {e}")))?;
    let length = i32::from_be_bytes(length);
    if length < 8 || length as usize > max_frame {
        return Err(Close(format!(
            "request frame of {length} bytes: a request holds at least its 8-byte header and at most kafka.max_request_bytes = {max_frame}"
        )));
    }
    let mut frame = BytesMut::zeroed(length as usize);
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|e| Close(format!("truncated request frame of {length} bytes: {e}")))?;
    Ok(frame.freeze())
}

/// A decoded request header, and what a handler answers with.
struct Request {
    pub header: RequestHeader,
    pub body: Bytes,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// The request body as `T`, decoded at the request's version.
    pub fn decode<T: Decodable>(&mut self) -> Result<T, Close> {
        let version = self.version();
        T::decode(&mut self.body, version)
            .map_err(|e| Close(format!("malformed request body (version {version}): {e:#}")))
    }
}

/// A response frame: length, header (of the response's header version), body.
fn respond<R: Encodable + HeaderVersion>(request: &Request, response: &R) -> Result<Option<Bytes>, Close> {
    let version = request.version();
    let header = ResponseHeader::default().with_correlation_id(request.header.correlation_id);
    let mut out = BytesMut::new();
    out.put_i32(0); // length, filled in below
    let encoded = header.encode(&mut out, R::header_version(version)).and_then(|()| response.encode(&mut out, version));
    encoded.map_err(|e| Close(format!("cannot encode the response (version {version}): {e:#}")))?;
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Ok(Some(out.freeze()))
}

impl Broker {
    /// Answers one request frame, `Ok(None)` when the request wants no answer.
    async fn handle(&self, frame: Bytes, session: &mut Session) -> Result<Option<Bytes>, Close> {
        self.state.metrics.kafka_requests.inc();
        // Every header version starts with key, version and correlation id (frames are ≥ 8 bytes).
        let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Ok(key) = ApiKey::try_from(raw_key) else {
            return Err(Close(format!(
                "unknown API key {raw_key} (version {version}): no response format exists for it"
            )));
        };
        let valid = key.valid_versions();
        let ours = supported(ApiKey::ApiVersions).expect("ApiVersions is supported").1;
        if key == ApiKey::ApiVersions && version > ours {
            // KIP-511: an ApiVersions request newer than the broker gets a v0 answer.
            return cluster::api_versions_too_new(correlation_id);
        }
        if version < valid.min || version > valid.max {
            return Err(Close(format!("{key:?} version {version} is outside the versions any Kafka release defines")));
        }
        let mut body = frame;
        let header = RequestHeader::decode(&mut body, key.request_header_version(version))
            .map_err(|e| Close(format!("malformed {key:?} request header: {e:#}")))?;
        let mut request = Request { header, body };
        let before_authentication =
            matches!(key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate);
        if self.state.auth().enabled() && session.principal.is_none() && !before_authentication {
            return Err(Close(format!(
                "{key:?} before SASL authentication: with server.tokens configured, clients authenticate with SASL/PLAIN \
                 (username = token name, password = token) first"
            )));
        }
        match supported(key) {
            Some((min, max)) if (min..=max).contains(&version) => self.dispatch(key, &mut request, session).await,
            _ => unsupported::answer(key, &request),
        }
    }

    /// Whether the connection's principal has `right` on `resource` (a topic, or a group).
    fn allows(&self, who: &str, right: crate::auth::Right, resource: &str) -> bool {
        self.state.auth().allows(who, right, Some(resource))
    }

    fn may_write_some_topic(&self, who: &str) -> bool {
        self.state.auth().may_write_some_topic(who)
    }

    async fn dispatch(
        &self,
        key: ApiKey,
        request: &mut Request,
        session: &mut Session,
    ) -> Result<Option<Bytes>, Close> {
        let (peer, who) = (session.peer, session.who().to_string());
        let who = who.as_str();
        match key {
            ApiKey::ApiVersions => cluster::api_versions(request),
            ApiKey::SaslHandshake => sasl::handshake(self, request, session),
            ApiKey::SaslAuthenticate => sasl::authenticate(self, request, session),
            ApiKey::Metadata => cluster::metadata(self, request, who),
            ApiKey::FindCoordinator => cluster::find_coordinator(self, request, who),
            ApiKey::Produce => produce::produce(self, request, peer, who).await,
            ApiKey::InitProducerId => produce::init_producer_id(self, request, who).await,
            ApiKey::Fetch => fetch::fetch(self, request, who).await,
            ApiKey::ListOffsets => fetch::list_offsets(self, request, who).await,
            ApiKey::OffsetCommit => offsets::commit(self, request, who).await,
            ApiKey::OffsetFetch => offsets::fetch(self, request, who),
            ApiKey::JoinGroup => membership::join_group(self, request, peer, who).await,
            ApiKey::SyncGroup => membership::sync_group(self, request, who).await,
            ApiKey::Heartbeat => membership::heartbeat(self, request, who),
            ApiKey::LeaveGroup => membership::leave_group(self, request, who),
            ApiKey::ListGroups => membership::list_groups(self, request, who),
            ApiKey::DescribeGroups => membership::describe_groups(self, request, who),
            ApiKey::DeleteGroups => membership::delete_groups(self, request, who).await,
            ApiKey::CreateTopics => admin::create_topics(self, request, who).await,
            ApiKey::DeleteTopics => admin::delete_topics(request),
            ApiKey::DescribeConfigs => admin::describe_configs(self, request, who),
            ApiKey::IncrementalAlterConfigs => admin::incremental_alter_configs(self, request, who).await,
            other => unreachable!("{other:?} is in SUPPORTED but has no handler"),
        }
    }
}

/// The Kafka error code for a log error. Errors of this machine (I/O, a stopped partition,
/// damaged data, an unreachable remote tier) are KAFKA_STORAGE_ERROR, which clients retry.
fn error_code(e: &Error) -> ResponseError {
    use crate::limits::LimitError;
    use crate::producers::Refusal;
    match e {
        Error::UnknownTopic(_) | Error::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
        Error::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        Error::TopicExists(_) => ResponseError::TopicAlreadyExists,
        Error::RecordTooLarge { .. } => ResponseError::MessageTooLarge,
        Error::RecordLimit { limit: LimitError::Headers { .. }, .. } => ResponseError::InvalidRecord,
        Error::RecordLimit { .. } => ResponseError::MessageTooLarge,
        Error::OffsetBelowStart { .. } | Error::Expired { .. } => ResponseError::OffsetOutOfRange,
        Error::Producer { refusal: Refusal::Fenced { .. }, .. } => ResponseError::InvalidProducerEpoch,
        Error::Producer { refusal: Refusal::OutOfOrder { .. } | Refusal::Conflict { .. }, .. } => {
            ResponseError::OutOfOrderSequenceNumber
        }
        Error::Config(_) | Error::Invalid(_) | Error::AppendTimeUnknown { .. } => ResponseError::InvalidRequest,
        // Not retriable: a replica never becomes writable by waiting.
        Error::Replica { .. } => ResponseError::PolicyViolation,
        Error::Io { .. }
        | Error::Stopped { .. }
        | Error::Corrupt { .. }
        | Error::Damaged { .. }
        | Error::Locked { .. }
        | Error::ReadOnly(_)
        | Error::Keyring(_)
        | Error::Remote(_) => ResponseError::KafkaStorageError,
    }
}

/// Logs an error that is this machine's problem (not the client's) once, where it is answered.
/// The topic and partition index a request names; a negative or unknown index is
/// UNKNOWN_TOPIC_OR_PARTITION, as an unknown topic is.
fn locate(broker: &Broker, topic: &str, index: i32) -> Result<(Arc<crate::topic::Topic>, u32), Error> {
    let topic = broker.state.log.topic(topic)?;
    let partitions = topic.metadata.partitions;
    let id = u32::try_from(index).map_err(|_| Error::UnknownPartition {
        topic: topic.name().to_string(),
        partition: u32::MAX,
        partitions,
    })?;
    topic.partition(id)?;
    Ok((topic, id))
}

fn log_if_server_error(e: &Error) {
    if error_code(e) == ResponseError::KafkaStorageError {
        tracing::error!(error = %e, "Kafka request failed");
    }
}
