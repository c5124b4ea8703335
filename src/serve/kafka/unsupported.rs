//! Answers to requests this broker does not implement: a well-formed response of the
//! request's own type and version carrying UNSUPPORTED_VERSION, so the client reports a clear
//! error instead of seeing its connection dropped. For an API whose response format is
//! unknown to this module the connection is closed with a log line (docs/KAFKA.md).

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnResponse, ApiKey, EndTxnResponse};

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
        // Transactions (a client that asked for a transactional id was already refused one).
        ApiKey::EndTxn => respond(request, &EndTxnResponse::default().with_error_code(UNSUPPORTED)),
        ApiKey::AddOffsetsToTxn => respond(request, &AddOffsetsToTxnResponse::default().with_error_code(UNSUPPORTED)),
        other => Err(Close(format!("{other:?} (version {version}) is not implemented and has no error answer here"))),
    }
}
