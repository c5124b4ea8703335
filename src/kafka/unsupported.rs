//! Answers to requests this broker does not implement: a well-formed response of the
//! request's own type and version carrying UNSUPPORTED_VERSION, so the client reports a clear
//! error instead of seeing its connection dropped. Covers the producer-id API clients
//! commonly try; for any other API the response format is
//! unknown to this module and the connection is closed with a log line (docs/KAFKA.md).

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{ApiKey, InitProducerIdResponse};

use super::{Close, Request, respond, supported};

const UNSUPPORTED: i16 = ResponseError::UnsupportedVersion.code();

pub(super) fn answer(key: ApiKey, request: &Request) -> Result<Option<Bytes>, Close> {
    let version = request.version();
    if let Some((min, max)) = supported(key) {
        return Err(Close(format!(
            "{key:?} version {version} was not advertised (this broker implements {min}..={max}); the client ignored ApiVersions"
        )));
    }
    tracing::info!(api = ?key, version, "answering UNSUPPORTED_VERSION: API not implemented");
    match key {
        ApiKey::InitProducerId => respond(request, &InitProducerIdResponse::default().with_error_code(UNSUPPORTED)),
        other => Err(Close(format!("{other:?} (version {version}) is not implemented and has no error answer here"))),
    }
}
