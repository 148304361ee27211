//! Strict JSON: a parse that refuses a key repeated anywhere in the document. serde_json's
//! `Value` keeps the last of two repeated keys while other parsers keep the first, so a
//! document that repeats a key can mean one thing to this crate and another to the server or
//! library behind it. Everything the crate reads from an attacker for a security decision
//! (MCP request bodies, JWT headers and claims) goes through here.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The JSON document in `bytes`, or `None` when it is not JSON (trailing bytes included) or
/// repeats a key in any object.
pub(crate) fn parse_strict(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Strict>(bytes).ok().map(|Strict(value)| value)
}

/// A JSON value parsed with repeated object keys refused (serde_json's `Value` keeps the last).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON without repeated keys")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom("repeated key"));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_anywhere_are_refused() {
        assert!(parse_strict(br#"{"a":1,"b":{"c":[{"d":1}]}}"#).is_some());
        assert!(parse_strict(br#"{"a":1,"a":1}"#).is_none());
        assert!(parse_strict(br#"{"a":{"b":1,"b":2}}"#).is_none());
        assert!(parse_strict(br#"[{"x":1},{"y":1,"y":1}]"#).is_none());
        assert!(parse_strict(br#"{"a":1} x"#).is_none());
        assert!(parse_strict(b"").is_none());
    }
}
