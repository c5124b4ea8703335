//! The JSON record envelope shared by the CLI (and the HTTP API): parsing producer input and
//! rendering records for consumers.
//!
//! Input (`--input-format json`), one object per line:
//! `{"key"?: str, "value": str | any JSON, "timestamp"?: ms | RFC 3339, "headers"?: {str: str}}`.
//! A string value is stored as its UTF-8 bytes; `{"base64": "…"}` (an object with that one
//! field) as the bytes it encodes, in a key, value or header value; any other JSON value is
//! stored as its JSON text.
//!
//! Output: `{"partition":P,"offset":O,"timestamp":MS,"key":…,"value":…,"headers":{…}}` with
//! key, value and header values as strings when valid UTF-8, else `{"base64":"…"}`.
//!
//! Output is valid input: `consume | produce` copies records (key, value, headers, timestamp)
//! byte for byte. The fields the log assigns (`partition`, `offset`, `append_time`) are
//! accepted and ignored on input: a produce chooses its partition by key or `--partition`.

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
        Some(other) => match base64_bytes(&other) {
            Some(bytes) => bytes.map_err(|e| format!("\"value\": {e}"))?,
            None => other.to_string().into_bytes(),
        },
        None => return Err("missing \"value\" field".into()),
    };
    let key = match object.remove("key") {
        None | Some(Value::Null) => None,
        Some(key) => Some(json_to_bytes(&key).map_err(|e| format!("\"key\" {e}"))?),
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
            .map(|(k, v)| match json_to_bytes(&v) {
                Ok(bytes) => Ok((k, bytes)),
                Err(e) => Err(format!("header {k:?} {e}")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"headers\" must be an object of strings".into()),
    };
    for assigned_by_the_log in ["partition", "offset", "append_time"] {
        object.remove(assigned_by_the_log);
    }
    if let Some(extra) = object.keys().next() {
        return Err(format!(
            "unknown field {extra:?} (allowed: key, value, timestamp, headers; partition, offset and append_time are ignored)"
        ));
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

/// Reads one record back from its consumer JSON object (the inverse of [`record_to_json`]):
/// the partition and the record, for clients of the HTTP API that print it another way.
pub fn record_from_json(object: &Value) -> Result<(u32, StoredRecord), String> {
    let number = |field: &str| object[field].as_u64().ok_or_else(|| format!("\"{field}\" is not a number in {object}"));
    let partition =
        u32::try_from(number("partition")?).map_err(|_| format!("\"partition\" out of range in {object}"))?;
    let offset = number("offset")?;
    let timestamp = object["timestamp"].as_i64().ok_or_else(|| format!("\"timestamp\" is not a number in {object}"))?;
    let key = match &object["key"] {
        Value::Null => None,
        key => Some(json_to_bytes(key).map_err(|e| format!("\"key\" {e}"))?),
    };
    let value = json_to_bytes(&object["value"]).map_err(|e| format!("\"value\" {e}"))?;
    let headers = match &object["headers"] {
        Value::Null => Vec::new(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| json_to_bytes(v).map(|v| (k.clone(), v)).map_err(|e| format!("header {k:?} {e}")))
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("\"headers\" is not an object in {object}")),
    };
    let record = Record { timestamp, key, value, headers };
    Ok((partition, StoredRecord { offset, record, append_time: object["append_time"].as_i64() }))
}

/// The bytes a key or header value stands for: a string's UTF-8, or what `{"base64": …}` encodes.
fn json_to_bytes(value: &Value) -> Result<Vec<u8>, String> {
    match value {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        other => base64_bytes(other).unwrap_or_else(|| Err("must be a string or {\"base64\": \"…\"}".into())),
    }
}

/// `Some` when `value` is `{"base64": "…"}`: the bytes it encodes, or why they are not base64.
fn base64_bytes(value: &Value) -> Option<Result<Vec<u8>, String>> {
    let Value::Object(object) = value else { return None };
    let (Some(Value::String(text)), 1) = (object.get("base64"), object.len()) else { return None };
    Some(base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("invalid base64 ({e})")))
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

    #[test]
    fn consumer_output_parses_back_to_the_same_record() {
        let records = [
            Record { timestamp: 7, key: Some(vec![0xff, 0, b'\n']), value: vec![0x80, 0x81], headers: vec![] },
            Record {
                timestamp: -3,
                key: Some(Vec::new()),
                value: "naïve ✓".as_bytes().to_vec(),
                headers: vec![("a".into(), vec![0xfe]), ("b".into(), b"text".to_vec())],
            },
            Record { timestamp: 0, key: None, value: Vec::new(), headers: vec![("h".into(), Vec::new())] },
            // Text that looks like the base64 form stays text both ways.
            Record { timestamp: 1, key: None, value: br#"{"base64":"AAAA"}"#.to_vec(), headers: vec![] },
        ];
        for record in records {
            let stored = StoredRecord { offset: 9, record: record.clone(), append_time: Some(11) };
            let line = record_to_json(4, &stored).to_string();
            assert_eq!(parse_json_record(&line, 12_345).unwrap(), record, "{line}");
            let object: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(record_from_json(&object).unwrap(), (4, stored), "{line}");
        }
    }

    #[test]
    fn base64_objects_are_decoded_and_bad_base64_is_refused_by_field() {
        let r = parse_json_record(
            r#"{"key":{"base64":"/w=="},"value":{"base64":"AAE="},"headers":{"h":{"base64":""}}}"#,
            0,
        )
        .unwrap();
        assert_eq!((r.key, r.value, r.headers), (Some(vec![0xff]), vec![0, 1], vec![("h".to_string(), vec![])]));
        // Any other object is a JSON value, stored as its text.
        let r = parse_json_record(r#"{"value":{"base64":"AA==","more":1}}"#, 0).unwrap();
        assert_eq!(r.value, br#"{"base64":"AA==","more":1}"#);
        for (line, needle) in [
            (r#"{"value":{"base64":"%%"}}"#, "\"value\": invalid base64"),
            (r#"{"key":{"base64":"%%"},"value":""}"#, "\"key\" invalid base64"),
            (r#"{"key":1,"value":""}"#, "\"key\" must be a string or {\"base64\""),
            (r#"{"value":"","headers":{"h":{"base64":"%"}}}"#, "header \"h\" invalid base64"),
        ] {
            let err = parse_json_record(line, 0).unwrap_err();
            assert!(err.contains(needle), "{line}: {err}");
        }
    }
}
