//! Small rendering helpers: times, hashes, URL encoding and HTML-safe JSON.

/// Unix milliseconds as RFC 3339 (UTC), or `-` for 0.
pub(crate) fn time_ms(ms: i64) -> String {
    if ms == 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// A protobuf timestamp as RFC 3339, or `-`.
pub(crate) fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    match ts {
        Some(t) => time_ms(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
        None => "-".into(),
    }
}

/// The first 12 hex characters of `bytes`.
pub(crate) fn short_hex(bytes: &[u8]) -> String {
    let h = hex::encode(bytes);
    h.chars().take(12).collect()
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON that is safe inside HTML and event streams: `<`, `>`, `&` and the
/// line separators are escaped, so no sequence of event data can close a tag
/// or a field even if a consumer mishandles it.
pub(crate) fn html_safe_json(value: &serde_json::Value) -> String {
    let raw = value.to_string();
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_for_html_has_no_markup_characters() {
        let v = serde_json::json!({"x": "</script><script>alert(1)</script>&amp;"});
        let s = html_safe_json(&v);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&s).expect("still json");
        assert_eq!(back, v);
    }

    #[test]
    fn url_encoding_keeps_unreserved_characters_only() {
        assert_eq!(url_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(url_encode("AMAI_AGENTS-1.~"), "AMAI_AGENTS-1.~");
    }
}
