//! Sizes (`268435456`, `"256MiB"`) and durations (`30`, `"30s"`, `"5m"`).

/// Parses a size string: digits, an optional space, and a unit. Binary units
/// (`KiB`, `MiB`, `GiB`, `TiB`, and Docker's `k`/`K`, `m`/`M`, `g`/`G`,
/// `t`/`T`) are powers of 1024; decimal units (`KB`, `MB`, `GB`, `TB`) powers
/// of 1000; no unit or `B` is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let not_a_size = || format!("{} is not a size (use bytes or 256MiB)", quoted(text));
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(not_a_size());
    }
    let (digits, rest) = text.split_at(digits_end);
    let unit = rest.strip_prefix(' ').unwrap_or(rest);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        "g" | "G" | "GiB" => 1 << 30,
        "t" | "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(not_a_size()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{} is too large", quoted(text)))
}

/// Formats a byte count the way [`parse_size`] reads it back, in the largest
/// binary unit that divides it (`268435456` → `256MiB`).
pub fn format_size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// Parses a duration string into seconds: digits and a unit `s`, `m` or `h`
/// (`30s`, `5m`, `2h`); bare digits are seconds.
pub fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let not_a_duration = || {
        format!(
            "{} is not a duration (use seconds or a string like 30s, 5m, 2h)",
            quoted(text)
        )
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(not_a_duration());
    }
    let (digits, unit) = text.split_at(digits_end);
    let multiplier: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(not_a_duration()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{} is too large", quoted(text)))
}

pub(crate) fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}
