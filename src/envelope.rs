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

use crate::plain_json::PlainValue;
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
    let value = value?;
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

/// An envelope's stored value (if it has one) and its other fields.
type Fields = (Option<Result<Vec<u8>, String>>, Map<String, Value>);

/// The stored value and the other fields of an envelope parsed as a `Value` first.
fn fields_of_value(line: &str) -> Result<Fields, String> {
    match serde_json::from_str::<PlainValue>(line).map_err(|e| format!("invalid JSON: {e}"))?.0 {
        Value::Object(mut object) => Ok((object.remove("value").map(value_bytes), object)),
        _ => Err("expected a JSON object with at least a \"value\" field".into()),
    }
}

/// A string value is stored as its UTF-8 bytes, `{"base64": "…"}` (what `consume` prints for
/// bytes that are not UTF-8) as the bytes it encodes, any other JSON value as its JSON text.
fn value_bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::String(s) => Ok(s.into_bytes()),
        other => match base64_bytes(&other) {
            Some(bytes) => bytes.map_err(|e| format!("\"value\": {e}")),
            None => Ok(other.to_string().into_bytes()),
        },
    }
}

/// A JSON object envelope as read in one pass: its `value` as stored bytes, every other field
/// as JSON (small: key, timestamp, headers, or a field that is refused afterwards). A field
/// given twice keeps its last value, as a `serde_json::Map` does.
struct Envelope {
    value: Option<Result<Vec<u8>, String>>,
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
                        envelope.rest.insert(name.into_owned(), map.next_value::<PlainValue>()?.0);
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
struct ValueBytes(Result<Vec<u8>, String>);

impl<'de> serde::Deserialize<'de> for ValueBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = ValueBytes;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_str<E>(self, s: &str) -> Result<ValueBytes, E> {
                Ok(ValueBytes(Ok(s.as_bytes().to_vec())))
            }

            fn visit_string<E>(self, s: String) -> Result<ValueBytes, E> {
                Ok(ValueBytes(Ok(s.into_bytes())))
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
                let PlainValue(value) =
                    serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ValueBytes(value_bytes(value)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<ValueBytes, A::Error> {
                let PlainValue(value) =
                    serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
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

    /// serde_json (with its `raw_value` feature, on in this build) reads an object whose one
    /// key is `$serde_json::private::RawValue` into a `Value` by parsing its string again,
    /// with a fresh nesting limit. Chained inside a 16 MiB produce body that is some 20 times
    /// 120 levels of recursion, past a 2 MiB server thread's stack: the process would abort.
    /// Input is read with no such key, under one limit, so this returns (an error or not).
    #[test]
    fn raw_value_magic_key_cannot_nest_past_the_depth_limit() {
        let mut nested = String::from("0");
        let mut levels = 0;
        loop {
            let text = serde_json::to_string(&nested).unwrap();
            let wrapped =
                format!("{}{{\"$serde_json::private::RawValue\":{text}}}{}", "[".repeat(120), "]".repeat(120));
            if wrapped.len() > 16 << 20 {
                break;
            }
            (nested, levels) = (wrapped, levels + 1);
        }
        assert!(levels >= 15, "only {levels} levels fit in 16 MiB");
        let envelope = format!("{{\"value\":{nested}}}");
        let bare = nested.clone();
        let small_stack = |text: String| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || parse_json_record(&text, 0).map(|r| r.value.len()))
                .unwrap()
                .join()
                .expect("parsing returned")
        };
        let stored = small_stack(envelope);
        // Stored as written, the key being an ordinary one (compact JSON text).
        if let Ok(len) = stored {
            assert!(len > 0);
        }
        let _ = small_stack(format!("{{\"value\":\"v\",\"headers\":{bare}}}"));
        let _ = small_stack(bare);
    }

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
