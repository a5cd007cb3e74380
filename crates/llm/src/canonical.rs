//! Request matching: which body fields are left out ([`IgnoredFields`]) and the
//! request hash ([`request_hash`]): SHA-256 of the RFC 8785 (JCS) canonical JSON of
//! `{"method": ..., "path": ..., "body": <body without the ignored fields, or null>}`.
//!
//! Headers never count: `x-stainless-*` (the SDKs' platform and retry-count headers),
//! `Idempotency-Key`, `Authorization`, `x-api-key`, `anthropic-version`, user agents
//! and the like vary between runs of the same program, so two requests with the same
//! method, path and (filtered) body are the same request.
//!
//! Canonicalisation uses the `serde_json_canonicalizer` crate. It was chosen over
//! `serde_jcs` because it states RFC 8785 conformance as its goal (UTF-16 key
//! order, ECMAScript number rendering through `ryu-js`) and was written because
//! `serde_jcs` had gone unmaintained with known deviations from the RFC; it is small,
//! has no dependencies beyond serde, and its maintainers keep releasing it. Numbers
//! are hashed as IEEE-754 doubles, as RFC 8785 requires: `1.0` and `1` hash alike,
//! and integers past 2^53 lose precision (as they would in any JavaScript client).

use amai_proto::v1::LlmMatchOptions;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Fields left out of the hash unless the options say `keep_default_fields`:
/// `user` and `metadata` (per-end-user and tracing data, not the question asked) and
/// `stream_options.include_obfuscation` (OpenAI's switch for stream padding).
pub const DEFAULT_IGNORED_FIELDS: &[&str] =
    &["user", "metadata", "stream_options.include_obfuscation"];

/// A failure to canonicalise a JSON value (not expected for parsed JSON: only
/// non-finite numbers, which `serde_json` never produces, are refused).
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalise JSON (RFC 8785): {0}")]
pub struct CanonicalError(#[from] serde_json::Error);

/// The body fields left out of a request's hash, as dotted paths.
///
/// A path's segments are object keys; on an array, a segment that is a number
/// selects that element and `*` selects every element (on an object, `*` selects
/// every value). The last segment removes an object key. A path into a missing
/// field, or through a value of another type, removes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredFields {
    paths: Vec<Vec<String>>,
}

impl IgnoredFields {
    /// No field ignored.
    pub fn none() -> IgnoredFields {
        IgnoredFields::default()
    }

    /// The session's ignored fields: the defaults (unless `keep_default_fields`)
    /// plus `ignore_fields`.
    pub fn from_options(options: &LlmMatchOptions) -> IgnoredFields {
        let defaults = if options.keep_default_fields {
            &[][..]
        } else {
            DEFAULT_IGNORED_FIELDS
        };
        IgnoredFields::from_paths(
            defaults
                .iter()
                .copied()
                .chain(options.ignore_fields.iter().map(String::as_str)),
        )
    }

    /// Ignored fields from dotted paths (empty paths are skipped).
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> IgnoredFields {
        let mut parsed: Vec<Vec<String>> = Vec::new();
        for path in paths {
            if path.is_empty() {
                continue;
            }
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if !parsed.contains(&segments) {
                parsed.push(segments);
            }
        }
        IgnoredFields { paths: parsed }
    }

    /// The ignored paths, dotted.
    pub fn paths(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|segments| segments.join("."))
            .collect()
    }

    /// Removes the ignored fields from `body`, in place.
    pub fn remove_from(&self, body: &mut Value) {
        for segments in &self.paths {
            remove_path(body, segments);
        }
    }
}

fn remove_path(value: &mut Value, segments: &[String]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            Value::Object(map) if first == "*" => map.clear(),
            Value::Object(map) => {
                map.remove(first);
            }
            _ => {}
        }
        return;
    }
    match value {
        Value::Object(map) if first == "*" => {
            map.values_mut().for_each(|child| remove_path(child, rest))
        }
        Value::Object(map) => {
            if let Some(child) = map.get_mut(first) {
                remove_path(child, rest);
            }
        }
        Value::Array(items) if first == "*" => {
            items.iter_mut().for_each(|child| remove_path(child, rest))
        }
        Value::Array(items) => {
            if let Some(child) = first
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get_mut(index))
            {
                remove_path(child, rest);
            }
        }
        _ => {}
    }
}

/// The body with the ignored fields removed (what is hashed, and what replay-miss
/// diffs compare).
pub fn canonical_body(body: &Value, ignored: &IgnoredFields) -> Value {
    let mut filtered = body.clone();
    ignored.remove_from(&mut filtered);
    filtered
}

/// The RFC 8785 canonical JSON of a value.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// The request hash: SHA-256 of the canonical JSON of
/// `{"method": method, "path": path, "body": <filtered body or null>}`.
///
/// `method` is taken as given (pass it as sent, e.g. `POST`); `path` is the proxy
/// path (`/v1/chat/completions`) without its query.
pub fn request_hash(
    method: &str,
    path: &str,
    body: Option<&Value>,
    ignored: &IgnoredFields,
) -> Result<[u8; 32], CanonicalError> {
    let mut document = Map::new();
    document.insert("method".to_owned(), Value::String(method.to_owned()));
    document.insert("path".to_owned(), Value::String(path.to_owned()));
    document.insert(
        "body".to_owned(),
        body.map_or(Value::Null, |body| canonical_body(body, ignored)),
    );
    let canonical = canonical_json(&Value::Object(document))?;
    Ok(Sha256::digest(&canonical).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hash(body: &Value, ignored: &IgnoredFields) -> [u8; 32] {
        request_hash("POST", "/v1/chat/completions", Some(body), ignored).expect("hash")
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("json")
    }

    fn defaults() -> IgnoredFields {
        IgnoredFields::from_options(&LlmMatchOptions::default())
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a = parse(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#);
        let b = parse(
            "{\n  \"messages\" : [ { \"content\" : \"hi\", \"role\" : \"user\" } ],\n  \"model\": \"gpt-4o\"\n}",
        );
        assert_eq!(hash(&a, &defaults()), hash(&b, &defaults()));
    }

    #[test]
    fn number_forms_hash_as_jcs_numbers() {
        let a = parse(r#"{"temperature":1.0,"top_p":1e-1,"n":1}"#);
        let b = parse(r#"{"temperature":1,"top_p":0.1,"n":1.0}"#);
        assert_eq!(hash(&a, &defaults()), hash(&b, &defaults()));
        assert_eq!(
            canonical_json(&parse(r#"{"b":1.0,"a":1e21,"c":-0.0}"#)).expect("jcs"),
            br#"{"a":1e+21,"b":1,"c":0}"#
        );
        let c = parse(r#"{"temperature":1.5}"#);
        assert_ne!(hash(&a, &defaults()), hash(&c, &defaults()));
    }

    #[test]
    fn ignored_fields_do_not_change_the_hash() {
        let plain =
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let noisy = json!({
            "model": "m", "stream": true, "user": "u-123", "metadata": {"trace": "x"},
            "stream_options": {"include_usage": true, "include_obfuscation": false}
        });
        assert_eq!(hash(&plain, &defaults()), hash(&noisy, &defaults()));
        let kept = IgnoredFields::from_options(&LlmMatchOptions {
            keep_default_fields: true,
            ..LlmMatchOptions::default()
        });
        assert_ne!(hash(&plain, &kept), hash(&noisy, &kept));
    }

    #[test]
    fn extra_ignored_fields_and_missing_paths() {
        let options = LlmMatchOptions {
            ignore_fields: vec![
                "temperature".into(),
                "messages.*.cache_control".into(),
                "no.such.field".into(),
                "model.not_an_object".into(),
                "tools.7.name".into(),
            ],
            ..LlmMatchOptions::default()
        };
        let ignored = IgnoredFields::from_options(&options);
        let a = json!({"model": "m", "temperature": 0.2, "messages": [
            {"role": "user", "content": "x", "cache_control": {"type": "ephemeral"}}]});
        let b = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(hash(&a, &ignored), hash(&b, &ignored));
        assert_eq!(canonical_body(&a, &ignored), b);
    }

    #[test]
    fn a_changed_message_changes_the_hash() {
        let a = json!({"messages": [{"role": "user", "content": "hello"}]});
        let b = json!({"messages": [{"role": "user", "content": "hello!"}]});
        assert_ne!(hash(&a, &defaults()), hash(&b, &defaults()));
    }

    #[test]
    fn method_path_and_absent_body_count() {
        let ignored = defaults();
        let models = request_hash("GET", "/v1/models", None, &ignored).expect("hash");
        let null_body =
            request_hash("GET", "/v1/models", Some(&Value::Null), &ignored).expect("hash");
        assert_eq!(models, null_body);
        assert_ne!(
            models,
            request_hash("POST", "/v1/models", None, &ignored).expect("hash")
        );
        let body = json!({});
        assert_ne!(
            request_hash("POST", "/v1/messages", Some(&body), &ignored).expect("hash"),
            request_hash("POST", "/v1/responses", Some(&body), &ignored).expect("hash")
        );
    }

    #[test]
    fn unicode_is_hashed_by_its_characters_not_its_escapes() {
        let escaped = parse(r#"{"content":"caf\u00e9 \ud83d\ude00","\u00e9":1}"#);
        let literal = parse(r#"{"content":"café 😀","é":1}"#);
        assert_eq!(hash(&escaped, &defaults()), hash(&literal, &defaults()));
        let other = parse(r#"{"content":"cafe 😀","é":1}"#);
        assert_ne!(hash(&literal, &defaults()), hash(&other, &defaults()));
        // RFC 8785 orders keys by UTF-16 code units: U+1F600 (surrogates 0xD83D
        // 0xDE00) sorts before U+E000, though its code point is larger.
        assert_eq!(
            canonical_json(&parse(r#"{"\ue000":1,"😀":2,"a":3}"#)).expect("jcs"),
            "{\"a\":3,\"😀\":2,\"\u{e000}\":1}".as_bytes()
        );
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_document() {
        let body = json!({"b": 2, "a": 1});
        let expected =
            Sha256::digest(br#"{"body":{"a":1,"b":2},"method":"POST","path":"/v1/embeddings"}"#);
        assert_eq!(
            request_hash(
                "POST",
                "/v1/embeddings",
                Some(&body),
                &IgnoredFields::none()
            )
            .expect("hash")
            .as_slice(),
            expected.as_slice()
        );
    }
}
