//! The JSON record envelope shared by the CLI (and the HTTP API): parsing producer input and
//! rendering records for consumers.
//!
//! Input (`--input-format json`), one object per line:
//! `{"key"?: str, "value": str | any JSON, "timestamp"?: ms | RFC 3339, "headers"?: {str: str}}`.
//! A string value is stored as its UTF-8 bytes; any other JSON value is stored as its JSON text.
//!
//! Output: `{"partition":P,"offset":O,"timestamp":MS,"key":…,"value":…,"headers":{…}}` with
//! key, value and header values as strings when valid UTF-8, else `{"base64":"…"}`.

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::record::{Record, StoredRecord};

/// Parses one JSON envelope. `now_ms` is the timestamp of records that carry none.
pub fn parse_json_record(line: &str, now_ms: i64) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object with at least a \"value\" field".into());
    };
    let value = match object.remove("value") {
        Some(Value::String(s)) => s.into_bytes(),
        Some(other) => other.to_string().into_bytes(),
        None => return Err("missing \"value\" field".into()),
    };
    let key = match object.remove("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.into_bytes()),
        Some(_) => return Err("\"key\" must be a string".into()),
    };
    let timestamp = match object.remove("timestamp") {
        None | Some(Value::Null) => now_ms,
        Some(Value::Number(n)) => n.as_i64().ok_or("\"timestamp\" must be integer milliseconds")?,
        Some(Value::String(s)) => crate::time::parse_time(&s)?,
        Some(_) => return Err("\"timestamp\" must be epoch milliseconds or an RFC 3339 string".into()),
    };
    let headers = match object.remove("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s.into_bytes())),
                _ => Err(format!("header {k:?} must have a string value")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"headers\" must be an object of strings".into()),
    };
    if let Some(extra) = object.keys().next() {
        return Err(format!("unknown field {extra:?} (allowed: key, value, timestamp, headers)"));
    }
    Ok(Record { timestamp, key, value, headers })
}

/// Renders one record as the consumer JSON object.
pub fn record_to_json(partition: u32, stored: &StoredRecord) -> Value {
    let record = &stored.record;
    let headers: Map<String, Value> = record.headers.iter().map(|(k, v)| (k.clone(), bytes_to_json(v))).collect();
    let mut out = json!({
        "partition": partition,
        "offset": stored.offset,
        "timestamp": record.timestamp,
        "key": record.key.as_deref().map_or(Value::Null, bytes_to_json),
        "value": bytes_to_json(&record.value),
        "headers": headers,
    });
    if let Some(appended) = stored.append_time {
        out["append_time"] = json!(appended);
    }
    out
}

fn bytes_to_json(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_envelope_field() {
        let r = parse_json_record(
            r#"{"key":"k","value":{"a":1},"timestamp":"2026-03-03T14:02:00Z","headers":{"h":"v"}}"#,
            5,
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value, br#"{"a":1}"#);
        assert_eq!(r.timestamp, 1_772_546_520_000);
        assert_eq!(r.headers, vec![("h".to_string(), b"v".to_vec())]);
        let r = parse_json_record(r#"{"value":"plain"}"#, 5).unwrap();
        assert_eq!((r.timestamp, r.value.as_slice(), r.key), (5, &b"plain"[..], None));
    }

    #[test]
    fn rejects_malformed_envelopes_with_a_reason() {
        for (line, needle) in [
            ("{", "invalid JSON"),
            ("[1]", "JSON object"),
            (r#"{"key":"k"}"#, "missing \"value\""),
            (r#"{"value":1,"timestamp":"soon"}"#, "soon"),
            (r#"{"value":1,"extra":2}"#, "extra"),
            (r#"{"value":1,"headers":{"h":1}}"#, "header"),
        ] {
            let err = parse_json_record(line, 0).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn non_utf8_bytes_render_as_base64() {
        let stored = StoredRecord {
            offset: 3,
            record: Record { timestamp: 1, key: Some(vec![0xff]), value: b"v".to_vec(), headers: vec![] },
            append_time: None,
        };
        let json = record_to_json(2, &stored);
        assert_eq!(
            json.to_string(),
            r#"{"headers":{},"key":{"base64":"/w=="},"offset":3,"partition":2,"timestamp":1,"value":"v"}"#
        );
    }
}
