//! Untrusted JSON read into a `serde_json::Value` under one nesting limit.
//!
//! serde_json's own `Value` reader gives an object whose first key is one of its private
//! tokens special meaning: with the `raw_value` feature (on in this build, for the produce
//! body's array elements), `{"$serde_json::private::RawValue": "…"}` has its string parsed
//! again as JSON by a new parser with a fresh 128-level limit. Such objects chain, each
//! string holding the next one escaped, so a 16 MiB body nests some 20 × 128 levels of
//! recursion and overflows a server thread's stack (the process aborts). [`PlainValue`]
//! reads every key as an ordinary key, so the one parser's limit bounds the recursion.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON value read from untrusted input, every object key taken as written.
pub struct PlainValue(pub Value);

impl<'de> Deserialize<'de> for PlainValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Plain).map(PlainValue)
    }
}

/// Builds a `Value` as serde_json's own visitor does, except for the private keys.
struct Plain;

impl<'de> Visitor<'de> for Plain {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(Plain)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(PlainValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let PlainValue(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Value {
        serde_json::from_str::<PlainValue>(text).unwrap().0
    }

    #[test]
    fn reads_what_serde_json_reads_for_ordinary_input() {
        for text in [
            r#"{"a":[1,-2,3.5,true,false,null,"s",{"b":{}}],"c":"\u00e9\n","d":18446744073709551615}"#,
            "[]",
            "0",
            r#""text""#,
            "-9223372036854775808",
            "1e300",
        ] {
            assert_eq!(plain(text), serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn private_keys_are_ordinary_keys() {
        let text = r#"{"$serde_json::private::RawValue":"[1,2]"}"#;
        let value = plain(text);
        assert_eq!(value["$serde_json::private::RawValue"], Value::String("[1,2]".into()));
        // What serde_json's own reader does with it, which is why this module exists.
        assert_eq!(serde_json::from_str::<Value>(text).unwrap(), serde_json::json!([1, 2]));
    }

    #[test]
    fn nesting_past_the_limit_is_an_error() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let error = serde_json::from_str::<PlainValue>(&deep).err().expect("refused");
        assert!(error.to_string().contains("recursion limit"), "{error}");
    }
}
