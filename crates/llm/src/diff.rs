//! Field-level differences between two JSON bodies ([`field_diff`]), shown in
//! replay-miss answers as `messages[3].content[0].text: "old" != "new"`, and the
//! recorded body nearest to a request ([`nearest`]).
//!
//! Objects are compared key by key (in key order), arrays index by index; an element
//! or key on one side only is one difference with `(absent)` on the other side.
//! Values of different types are one difference at their path.

use std::fmt;

use serde_json::Value;

/// Longest rendering of a value in a difference line, in characters.
pub const MAX_RENDERED_CHARS: usize = 80;

/// One difference: the path and the value on each side (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDiff {
    /// Where, as `a.b[2].c` (keys that are not identifiers quoted: `headers["x-y"]`;
    /// empty for the whole body).
    pub path: String,
    /// The recorded (expected) value.
    pub expected: Option<Value>,
    /// The request's (actual) value.
    pub actual: Option<Value>,
}

impl FieldDiff {
    /// How many leaf fields this difference covers (a whole absent object counts
    /// each of its leaves).
    pub fn leaf_count(&self) -> usize {
        let count = |side: &Option<Value>| side.as_ref().map_or(0, leaf_count);
        count(&self.expected).max(count(&self.actual)).max(1)
    }
}

impl fmt::Display for FieldDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(body)"
        } else {
            &self.path
        };
        write!(
            f,
            "{path}: {} != {}",
            render(self.expected.as_ref()),
            render(self.actual.as_ref())
        )
    }
}

fn leaf_count(value: &Value) -> usize {
    match value {
        Value::Object(map) if !map.is_empty() => map.values().map(leaf_count).sum(),
        Value::Array(items) if !items.is_empty() => items.iter().map(leaf_count).sum(),
        _ => 1,
    }
}

/// A value as compact JSON, at most [`MAX_RENDERED_CHARS`] characters (then `…`);
/// a string keeps its closing quote; `(absent)` for a missing side.
pub fn render(value: Option<&Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(Value::String(text)) if text.chars().count() > MAX_RENDERED_CHARS => {
            let kept: String = text.chars().take(MAX_RENDERED_CHARS).collect();
            let quoted = Value::String(kept).to_string();
            format!("{}…\"", &quoted[..quoted.len() - 1])
        }
        Some(value) => {
            let compact = value.to_string();
            if compact.chars().count() > MAX_RENDERED_CHARS {
                let kept: String = compact.chars().take(MAX_RENDERED_CHARS).collect();
                format!("{kept}…")
            } else {
                compact
            }
        }
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn key_path(parent: &str, key: &str) -> String {
    if is_identifier(key) {
        if parent.is_empty() {
            key.to_owned()
        } else {
            format!("{parent}.{key}")
        }
    } else {
        format!("{parent}[{}]", Value::String(key.to_owned()))
    }
}

/// Every difference between `expected` and `actual`, in path order.
pub fn field_diff(expected: &Value, actual: &Value) -> Vec<FieldDiff> {
    let mut diffs = Vec::new();
    collect(String::new(), expected, actual, &mut diffs);
    diffs
}

fn collect(path: String, expected: &Value, actual: &Value, diffs: &mut Vec<FieldDiff>) {
    match (expected, actual) {
        (Value::Object(expected_map), Value::Object(actual_map)) => {
            let mut keys: Vec<&String> = expected_map.keys().chain(actual_map.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = key_path(&path, key);
                match (expected_map.get(key), actual_map.get(key)) {
                    (Some(e), Some(a)) => collect(child, e, a, diffs),
                    (e, a) => diffs.push(FieldDiff {
                        path: child,
                        expected: e.cloned(),
                        actual: a.cloned(),
                    }),
                }
            }
        }
        (Value::Array(expected_items), Value::Array(actual_items)) => {
            for index in 0..expected_items.len().max(actual_items.len()) {
                let child = format!("{path}[{index}]");
                match (expected_items.get(index), actual_items.get(index)) {
                    (Some(e), Some(a)) => collect(child, e, a, diffs),
                    (e, a) => diffs.push(FieldDiff {
                        path: child,
                        expected: e.cloned(),
                        actual: a.cloned(),
                    }),
                }
            }
        }
        _ if expected == actual => {}
        _ => diffs.push(FieldDiff {
            path,
            expected: Some(expected.clone()),
            actual: Some(actual.clone()),
        }),
    }
}

/// How many leaf fields differ between two values.
pub fn difference_count(expected: &Value, actual: &Value) -> usize {
    field_diff(expected, actual)
        .iter()
        .map(FieldDiff::leaf_count)
        .sum()
}

/// The index of the candidate with the fewest differing leaf fields from `actual`
/// (ties: the lowest index); `None` when there is no candidate.
pub fn nearest(actual: &Value, candidates: &[&Value]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .min_by_key(|(index, candidate)| (difference_count(candidate, actual), *index))
        .map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(expected: &Value, actual: &Value) -> Vec<String> {
        field_diff(expected, actual)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn equal_values_have_no_difference() {
        let value = json!({"a": [1, {"b": null}], "c": "x"});
        assert!(field_diff(&value, &value.clone()).is_empty());
    }

    #[test]
    fn nested_paths_and_values() {
        let expected = json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "old text"}]}]});
        let actual = json!({"model": "m", "messages": [
            {"role": "user", "content": [{"type": "text", "text": "new text"}]}]});
        assert_eq!(
            lines(&expected, &actual),
            vec![r#"messages[0].content[0].text: "old text" != "new text""#]
        );
    }

    #[test]
    fn absent_sides_lengths_and_types() {
        let expected = json!({"a": 1, "list": [1, 2, 3], "t": {"x": 1}});
        let actual = json!({"b": true, "list": [1, 5], "t": [1]});
        assert_eq!(
            lines(&expected, &actual),
            vec![
                "a: 1 != (absent)",
                "b: (absent) != true",
                "list[1]: 2 != 5",
                "list[2]: 3 != (absent)",
                r#"t: {"x":1} != [1]"#,
            ]
        );
    }

    #[test]
    fn keys_that_are_not_identifiers_are_quoted() {
        let expected = json!({"headers": {"x-y": "1", "ok_1": "a"}, "9": 0, "é": 1});
        let actual = json!({"headers": {"x-y": "2", "ok_1": "b"}, "9": 1, "é": 2});
        assert_eq!(
            lines(&expected, &actual),
            vec![
                r#"["9"]: 0 != 1"#,
                r#"headers.ok_1: "a" != "b""#,
                r#"headers["x-y"]: "1" != "2""#,
                r#"["é"]: 1 != 2"#,
            ]
        );
    }

    #[test]
    fn whole_body_difference_and_long_values_are_truncated() {
        assert_eq!(lines(&json!(1), &json!("1")), vec![r#"(body): 1 != "1""#]);
        let long = "x".repeat(200);
        let rendered = render(Some(&json!(long)));
        assert_eq!(rendered, format!("\"{}…\"", "x".repeat(80)));
        let list: Vec<u32> = (0..100).collect();
        let rendered = render(Some(&json!(list)));
        assert!(rendered.ends_with('…'));
        assert_eq!(rendered.chars().count(), 81);
        let accents = "é".repeat(100);
        assert_eq!(
            render(Some(&json!(accents))),
            format!("\"{}…\"", "é".repeat(80))
        );
    }

    #[test]
    fn nearest_counts_differing_leaves_and_breaks_ties_low() {
        let actual = json!({"model": "m", "messages": [{"content": "a"}], "temperature": 1});
        let far = json!({"model": "x", "messages": [{"content": "b"}], "temperature": 0});
        let near = json!({"model": "m", "messages": [{"content": "b"}], "temperature": 1});
        let also_near = json!({"model": "m", "messages": [{"content": "a"}], "temperature": 2});
        assert_eq!(nearest(&actual, &[&far, &near, &also_near]), Some(1));
        assert_eq!(nearest(&actual, &[&far]), Some(0));
        assert_eq!(nearest(&actual, &[]), None);
        let missing_object = json!({"model": "m", "temperature": 1});
        assert_eq!(difference_count(&missing_object, &actual), 1);
        let two_leaves = json!({"model": "m", "messages": [{"content": "a", "x": 1}], "temperature": 1, "y": {"p": 1, "q": 2}});
        assert_eq!(difference_count(&two_leaves, &actual), 3);
    }
}
