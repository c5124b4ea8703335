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
    // An object is read in one pass with its value straight into the record's bytes (values
    // are most of a produce body: a tree of `Value`s first cost a copy and an allocation per
    // field); anything else is parsed as before, for its error message.
    let (value, mut object) = if line.trim_start().starts_with('{') {
        let Envelope { value, rest } = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
        (value, rest)
    } else {
        fields_of_value(line)?
    };
    let Some(value) = value else { return Err("missing \"value\" field".into()) };
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

/// An envelope's stored value (if it has one) and its other fields.
type Fields = (Option<Vec<u8>>, Map<String, Value>);

/// The stored value and the other fields of an envelope parsed as a `Value` first.
fn fields_of_value(line: &str) -> Result<Fields, String> {
    match serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))? {
        Value::Object(mut object) => Ok((object.remove("value").map(value_bytes), object)),
        _ => Err("expected a JSON object with at least a \"value\" field".into()),
    }
}

/// A string value is stored as its UTF-8 bytes; any other JSON value as its JSON text.
fn value_bytes(value: Value) -> Vec<u8> {
    match value {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

/// A JSON object envelope as read in one pass: its `value` as stored bytes, every other field
/// as JSON (small: key, timestamp, headers, or a field that is refused afterwards). A field
/// given twice keeps its last value, as a `serde_json::Map` does.
struct Envelope {
    value: Option<Vec<u8>>,
    rest: Map<String, Value>,
}

impl<'de> serde::Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Envelope;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object with at least a \"value\" field")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
                let mut envelope = Envelope { value: None, rest: Map::new() };
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if name == "value" {
                        envelope.value = Some(map.next_value::<ValueBytes>()?.0);
                    } else {
                        envelope.rest.insert(name.into_owned(), map.next_value()?);
                    }
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An envelope's `value` as [`value_bytes`] stores it, read without building a `Value` when it
/// is a string (the common case).
struct ValueBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for ValueBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = ValueBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_str<E>(self, s: &str) -> Result<ValueBytes, E> {
                Ok(ValueBytes(s.as_bytes().to_vec()))
            }

            fn visit_string<E>(self, s: String) -> Result<ValueBytes, E> {
                Ok(ValueBytes(s.into_bytes()))
            }

            fn visit_bool<E>(self, b: bool) -> Result<ValueBytes, E> {
                Ok(ValueBytes(value_bytes(Value::Bool(b))))
            }

            fn visit_i64<E>(self, n: i64) -> Result<ValueBytes, E> {
                Ok(ValueBytes(value_bytes(Value::from(n))))
            }

            fn visit_u64<E>(self, n: u64) -> Result<ValueBytes, E> {
                Ok(ValueBytes(value_bytes(Value::from(n))))
            }

            fn visit_f64<E>(self, n: f64) -> Result<ValueBytes, E> {
                Ok(ValueBytes(value_bytes(Value::from(n))))
            }

            fn visit_unit<E>(self) -> Result<ValueBytes, E> {
                Ok(ValueBytes(value_bytes(Value::Null)))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ValueBytes, A::Error> {
                let value = serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ValueBytes(value_bytes(value)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ValueBytes, A::Error> {
                let value = serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(ValueBytes(value_bytes(value)))
            }
        }
        deserializer.deserialize_any(Bytes)
    }
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

/// Appends [`record_to_json`]'s text for `stored` to `out`, the same bytes, without building
/// a `Value` first (a fetch stream renders every record it sends).
pub fn write_record_json(out: &mut Vec<u8>, partition: u32, stored: &StoredRecord) {
    let record = &stored.record;
    // Fields in the order a `Value` object (sorted keys) prints them; a header name given twice
    // keeps its last value there, so here too.
    let headers: std::collections::BTreeMap<&str, JsonBytes> =
        record.headers.iter().map(|(k, v)| (k.as_str(), JsonBytes(v))).collect();
    let json = RecordJson {
        append_time: stored.append_time,
        headers,
        key: record.key.as_deref().map(JsonBytes),
        offset: stored.offset,
        partition,
        timestamp: record.timestamp,
        value: JsonBytes(&record.value),
    };
    serde_json::to_writer(out, &json).expect("JSON into a Vec cannot fail");
}

#[derive(serde::Serialize)]
struct RecordJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    append_time: Option<i64>,
    headers: std::collections::BTreeMap<&'a str, JsonBytes<'a>>,
    key: Option<JsonBytes<'a>>,
    offset: u64,
    partition: u32,
    timestamp: i64,
    value: JsonBytes<'a>,
}

/// Bytes as [`bytes_to_json`] renders them.
struct JsonBytes<'a>(&'a [u8]);

impl serde::Serialize for JsonBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match std::str::from_utf8(self.0) {
            Ok(s) => serializer.serialize_str(s),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &base64::engine::general_purpose::STANDARD.encode(self.0))?;
                map.end()
            }
        }
    }
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

    /// The one-pass read of an object stores exactly what parsing it as a `Value` stored:
    /// string values as their bytes (escapes resolved), other values as their JSON text
    /// (object keys sorted, numbers as serde_json prints them), a repeated field's last value.
    #[test]
    fn one_pass_envelopes_store_what_value_parsing_stored() {
        for line in [
            r#"{"value":"plain"}"#,
            r#"{"value":"q\"uote\\ \u00e9\n","key":"k"}"#,
            r#" { "key" : null , "value" : {"b":1,"a":[1,2.5,null,true,"x"]} } "#,
            r#"{"value":12345678901234567890123}"#,
            r#"{"value":-7}"#,
            r#"{"value":18446744073709551615}"#,
            r#"{"value":null}"#,
            r#"{"value":false}"#,
            r#"{"value":[]}"#,
            r#"{"value":"first","value":"second"}"#,
            r#"{"v\u0061lue":"escaped name","timestamp":3,"headers":{"z":"1","a":"2"}}"#,
        ] {
            let (value, rest) = match serde_json::from_str::<Envelope>(line) {
                Ok(Envelope { value, rest }) => (value, rest),
                Err(e) => panic!("{line}: {e}"),
            };
            assert_eq!((value, rest), fields_of_value(line).unwrap(), "{line}");
        }
        let r = parse_json_record(r#"{"value":{"b":1,"a":2}}"#, 0).unwrap();
        assert_eq!(r.value, br#"{"a":2,"b":1}"#);
        let err = parse_json_record(r#"{"value":"x""#, 0).unwrap_err();
        assert!(err.starts_with("invalid JSON: EOF"), "{err}");
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

    /// A fetch stream's records are the bytes `record_to_json` printed: every field, in
    /// its order, base64 where not UTF-8, the last of a repeated header name.
    #[test]
    fn written_record_json_is_record_to_json_text() {
        let headers = vec![("z".to_string(), b"1".to_vec()), ("a".into(), vec![0xfe]), ("z".into(), b"\"2".to_vec())];
        for (key, append_time) in [(None, None), (Some(b"k\n".to_vec()), Some(7)), (Some(vec![0xff]), Some(-1))] {
            let stored = StoredRecord {
                offset: 9,
                record: Record { timestamp: 1, key, value: "v\"é\u{1}".into(), headers: headers.clone() },
                append_time,
            };
            let mut out = Vec::new();
            write_record_json(&mut out, 4, &stored);
            assert_eq!(String::from_utf8(out).unwrap(), record_to_json(4, &stored).to_string());
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
