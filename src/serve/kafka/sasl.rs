//! SaslHandshake (v1) and SaslAuthenticate with the PLAIN mechanism (RFC 4616), checked against
//! the tokens of `server.tokens`: the username is a token's name, the password that token. With
//! tokens configured, a connection must authenticate before any request other than ApiVersions
//! and the two SASL requests; a failed authentication is answered and the connection closed,
//! as Kafka does. PLAIN sends the token in clear: put TLS in front on untrusted networks.

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Close, Request, Session, respond};

const PLAIN: &str = "PLAIN";

pub(super) fn handshake(broker: &Broker, request: &mut Request, session: &mut Session) -> Result<Option<Bytes>, Close> {
    let body: SaslHandshakeRequest = request.decode()?;
    let enabled = broker.state.auth().enabled();
    let mechanisms = if enabled { vec![StrBytes::from_static_str(PLAIN)] } else { Vec::new() };
    let error = if !enabled || body.mechanism.as_str() != PLAIN || request.version() == 0 {
        session.close = true;
        ResponseError::UnsupportedSaslMechanism.code()
    } else {
        session.handshake = true;
        0
    };
    if error != 0 {
        // The mechanism is client bytes, logged before authentication: Debug-escaped, as text
        // logs do not escape CR/LF (a forged line otherwise).
        let version = request.version();
        tracing::warn!(peer = %session.peer, mechanism = ?body.mechanism.as_str(), tokens = enabled, version, "Kafka SASL handshake refused (PLAIN over SaslHandshake v1 and SaslAuthenticate only)");
    }
    respond(request, &SaslHandshakeResponse::default().with_error_code(error).with_mechanisms(mechanisms))
}

pub(super) fn authenticate(
    broker: &Broker,
    request: &mut Request,
    session: &mut Session,
) -> Result<Option<Bytes>, Close> {
    let body: SaslAuthenticateRequest = request.decode()?;
    let failed = |session: &mut Session, code: ResponseError, message: String| {
        tracing::warn!(peer = %session.peer, reason = %message, "Kafka SASL authentication failed");
        session.close = true;
        let message = Some(StrBytes::from_string(message));
        respond(request, &SaslAuthenticateResponse::default().with_error_code(code.code()).with_error_message(message))
    };
    if !session.handshake || session.principal.is_some() {
        let message = "SaslAuthenticate without a SaslHandshake for PLAIN first, or after authenticating".to_string();
        return failed(session, ResponseError::IllegalSaslState, message);
    }
    let Some((username, password)) = plain(&body.auth_bytes) else {
        let message = "malformed SASL/PLAIN message: expected [authzid] NUL username NUL password".to_string();
        return failed(session, ResponseError::SaslAuthenticationFailed, message);
    };
    match broker.state.auth().authenticate(username, password) {
        Ok(who) => {
            tracing::debug!(peer = %session.peer, who = %who, "Kafka client authenticated");
            session.principal = Some(who);
            respond(request, &SaslAuthenticateResponse::default())
        }
        Err(denied) => failed(session, ResponseError::SaslAuthenticationFailed, format!("{denied:?}")),
    }
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, UTF-8; an authzid, if any, must be the
/// username (no acting on behalf of another principal).
fn plain(message: &[u8]) -> Option<(&str, &str)> {
    let mut parts = message.split(|b| *b == 0);
    let (authzid, username, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || username.is_empty() || (!authzid.is_empty() && authzid != username) {
        return None;
    }
    Some((std::str::from_utf8(username).ok()?, std::str::from_utf8(password).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_parse_per_rfc_4616() {
        assert_eq!(plain(b"\0ops\0s3cret"), Some(("ops", "s3cret")));
        assert_eq!(plain(b"ops\0ops\0s3cret"), Some(("ops", "s3cret")));
        assert_eq!(plain(b"admin\0ops\0s3cret"), None, "no acting as another principal");
        assert_eq!(plain(b"\0\0s3cret"), None);
        assert_eq!(plain(b"ops\0s3cret"), None);
        assert_eq!(plain(b"\0ops\0pass\0extra"), None);
    }
}
