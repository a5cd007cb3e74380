//! JSON reading shared by the parsers: a `serde_json::Value` built while
//! noting every key an object gives twice (different JSON parsers keep the
//! first or the last; refused so a document has one meaning), JSON-path
//! helpers and short renderings of values for messages.

use serde_json::Value;

pub(crate) use amai_json_doc::{field, index, join, show, type_name};

/// Parses `bytes` as one JSON document, returning the value and the JSON
/// paths of keys given more than once.
pub(crate) fn parse_with_duplicates(bytes: &[u8]) -> Result<(Value, Vec<String>), String> {
    amai_json_doc::parse_with_duplicates(bytes).map_err(|e| format!("not JSON: {e}"))
}

/// A string as a JSON string literal, for messages.
pub(crate) fn quoted(text: &str) -> String {
    let shown = if text.chars().count() <= 80 {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(77).collect::<String>())
    };
    Value::String(shown).to_string()
}

/// Whether every number in `value` survives RFC 8785 canonicalisation
/// unchanged (integers within ±2^53; JCS writes numbers as IEEE doubles, so
/// larger integers would collide in digests).
pub(crate) fn first_unsafe_number(value: &Value, path: &str) -> Option<String> {
    const MAX_SAFE: u64 = (1 << 53) - 1;
    match value {
        Value::Number(n) => {
            let unsafe_int = n.as_u64().is_some_and(|u| u > MAX_SAFE)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() > MAX_SAFE);
            unsafe_int.then(|| path.to_owned())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| first_unsafe_number(v, &index(path, i))),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| first_unsafe_number(v, &field(path, k))),
        _ => None,
    }
}

/// Whether `text` has a control character (C0, DEL or C1).
pub(crate) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}
