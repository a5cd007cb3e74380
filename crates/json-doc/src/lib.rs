//! # amai-json-doc
//!
//! Strict JSON for the parsers of user documents (jail specs, manifests,
//! policies), which report every error with its JSON path:
//!
//! - [`parse_with_duplicates`] builds a `serde_json::Value` exactly as
//!   `serde_json::from_slice` does, noting the path of every key an object
//!   gives twice (JSON parsers disagree on which one wins, so such a document
//!   has no single meaning and the parsers refuse it);
//! - [`field`], [`index`] and [`join`] spell JSON paths (`limits.memory`,
//!   `files[2]`, `env["odd key"]`);
//! - [`show`] and [`type_name`] render values for messages.

use std::cell::RefCell;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parses `bytes` as one JSON document, returning the value and the JSON
/// paths of keys given more than once.
pub fn parse_with_duplicates(bytes: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed {
        path: String::new(),
        duplicates: &duplicates,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value))?;
    Ok((value, duplicates.into_inner()))
}

struct ValueSeed<'a> {
    path: String,
    duplicates: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
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
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            path: index(&self.path, items.len()),
            duplicates: self.duplicates,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = field(&self.path, &key);
            let value = map.next_value_seed(ValueSeed {
                path: path.clone(),
                duplicates: self.duplicates,
            })?;
            if object.insert(key, value).is_some() {
                self.duplicates.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(object))
    }
}

/// `parent.key`, or `parent["odd key"]` for keys that are not identifiers
/// (the key exactly, as a JSON string literal).
pub fn field(parent: &str, key: &str) -> String {
    let plain = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", Value::String(key.to_owned())),
    }
}

/// `parent[i]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Prefixes a path relative to an entry with the entry's own path.
pub fn join(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_owned()
    } else if prefix.is_empty() || path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

/// A value, shortened to 60 characters, for messages.
pub fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        format!("{}...", text.chars().take(57).collect::<String>())
    }
}

/// "a string", "an object", ... for messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_reported_at_its_path_and_the_value_is_serde_jsons() {
        let doc =
            br#"{"a": 1, "b": {"c": [1, {"d": 1, "d": 2}]}, "a": 3, "odd key": {"x": 1, "x": 1}}"#;
        let (value, duplicates) = parse_with_duplicates(doc).expect("json");
        assert_eq!(duplicates, vec!["b.c[1].d", "a", "[\"odd key\"].x"]);
        assert_eq!(
            value,
            serde_json::from_slice::<Value>(doc).expect("serde_json")
        );
    }

    #[test]
    fn trailing_garbage_and_bad_json_are_errors() {
        assert!(parse_with_duplicates(b"{} {}").is_err());
        assert!(parse_with_duplicates(b"{\"a\":").is_err());
    }

    #[test]
    fn paths_are_spelled_as_jsonpath_like_strings() {
        assert_eq!(field("", "limits"), "limits");
        assert_eq!(field("limits", "memory"), "limits.memory");
        assert_eq!(field("env", "odd key"), "env[\"odd key\"]");
        assert_eq!(index("files", 2), "files[2]");
        assert_eq!(join("manifests[3]", "version"), "manifests[3].version");
        assert_eq!(join("[3]", "[0]"), "[3][0]");
        assert_eq!(join("", "version"), "version");
        assert_eq!(type_name(&Value::Null), "null");
        assert_eq!(show(&Value::String("x".repeat(100))).chars().count(), 60);
    }
}
