//! The policy parser: a walk over the JSON value that records every error
//! with its JSON path and keeps going (serde's derive stops at the first
//! error). The reader notes keys given twice, as `amai-jail-spec` does: a
//! duplicated key reads differently in different JSON parsers, so it is
//! refused.

use std::collections::BTreeMap;
use std::fmt;

use amai_json_doc::{field, index, show, type_name};
use amai_trust::{AlertKind, Severity};
use serde_json::{Map, Value};

use super::{
    Action, Condition, LifecycleAction, Policy, When, MAX_ALL_OF, MAX_POLICY_BYTES, POLICY_VERSION,
};
use crate::sanction::SanctionKind;

pub(crate) const POLICY_FIELDS: [&str; 6] = [
    "policy_version",
    "id",
    "description",
    "when",
    "then",
    "enabled",
];
pub(crate) const CONDITION_FIELDS: [&str; 4] = ["trust_below", "trust_alert", "crashes", "all_of"];
pub(crate) const TRUST_ALERT_FIELDS: [&str; 2] = ["severity", "kind"];
pub(crate) const CRASHES_FIELDS: [&str; 2] = ["count", "within"];
pub(crate) const THEN_FIELDS: [&str; 4] =
    ["sanction", "rate_per_minute", "expires_after", "lifecycle"];
pub(crate) const SANCTIONS: [&str; 5] = ["warn", "throttle", "quarantine", "suspend", "ban"];
pub(crate) const LIFECYCLE_ACTIONS: [&str; 1] = ["disable"];
pub(crate) const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
pub(crate) const ALERT_KINDS: [&str; 3] = ["rate_spike", "mix_shift", "new_peers"];

/// The longest description, in bytes.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 4_096;
/// The most crashes a rule counts.
pub(crate) const MAX_CRASH_COUNT: u64 = 1_000;
/// The shortest crash window: 1 s.
pub(crate) const MIN_WITHIN_MS: u64 = 1_000;
/// The longest crash window: 7 days.
pub(crate) const MAX_WITHIN_MS: u64 = 7 * 86_400_000;
/// The highest throttle rate.
pub(crate) const MAX_RATE_PER_MINUTE: u64 = 100_000;
/// The shortest expiry: 1 s.
pub(crate) const MIN_EXPIRES_MS: u64 = 1_000;
/// The longest expiry: 365 days.
pub(crate) const MAX_EXPIRES_MS: u64 = 365 * 86_400_000;

/// What kind of error a [`PolicyError`] is, to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyErrorKind {
    /// The document is not JSON, or too large.
    NotJson,
    /// A key given twice in one object.
    DuplicateKey,
    /// A field the format does not have.
    UnknownField,
    /// A required field is missing.
    Required,
    /// A value of the wrong JSON type.
    WrongType,
    /// A number out of its range.
    OutOfRange,
    /// A string that is not one of the allowed values or not well formed.
    Invalid,
    /// Fields that do not go together (two conditions, a rate without a
    /// throttle, ...).
    Conflict,
    /// A `policy_version` this build does not read.
    UnsupportedVersion,
    /// A policy id given twice in a set.
    DuplicateId,
}

/// One error of a policy, at a JSON path (`when.crashes.within`,
/// `[2].id`; empty for the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The JSON path.
    pub path: String,
    /// What kind of error.
    pub kind: PolicyErrorKind,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error of a policy, in document order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl PolicyErrors {
    /// The errors.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }

    /// The paths of the errors, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }

    /// (path, kind) of every error, in order.
    pub fn kinds(&self) -> Vec<(&str, PolicyErrorKind)> {
        self.0.iter().map(|e| (e.path.as_str(), e.kind)).collect()
    }
}

fn one(path: &str, kind: PolicyErrorKind, message: String) -> PolicyErrors {
    PolicyErrors(vec![PolicyError {
        path: path.to_owned(),
        kind,
        message,
    }])
}

/// Reads a document: size limit, JSON syntax, duplicate keys.
fn read(bytes: &[u8]) -> Result<(Value, Vec<PolicyError>), PolicyErrors> {
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(one(
            "",
            PolicyErrorKind::NotJson,
            format!(
                "the document is {} bytes, more than the limit of {MAX_POLICY_BYTES}",
                bytes.len()
            ),
        ));
    }
    let (value, duplicates) = amai_json_doc::parse_with_duplicates(bytes)
        .map_err(|e| one("", PolicyErrorKind::NotJson, format!("not JSON: {e}")))?;
    let errors = duplicates
        .into_iter()
        .map(|path| PolicyError {
            path,
            kind: PolicyErrorKind::DuplicateKey,
            message: "given more than once".into(),
        })
        .collect();
    Ok((value, errors))
}

fn finish<T>(
    parsed: Option<T>,
    mut errors: Vec<PolicyError>,
    more: Vec<PolicyError>,
) -> Result<T, PolicyErrors> {
    errors.extend(more);
    match parsed {
        Some(value) if errors.is_empty() => Ok(value),
        _ => Err(PolicyErrors(errors)),
    }
}

pub(crate) fn parse_policy(bytes: &[u8]) -> Result<Policy, PolicyErrors> {
    let (value, errors) = read(bytes)?;
    let mut p = Parser::default();
    let policy = p.policy("", &value);
    finish(policy, errors, p.errors)
}

pub(crate) fn policy_value(value: &Value) -> Result<Policy, PolicyErrors> {
    let mut p = Parser::default();
    let policy = p.policy("", value);
    finish(policy, Vec::new(), p.errors)
}

pub(crate) fn parse_set(bytes: &[u8]) -> Result<Vec<Policy>, PolicyErrors> {
    let (value, errors) = read(bytes)?;
    let mut p = Parser::default();
    let set = p.set(&value);
    finish(set, errors, p.errors)
}

/// Parses a duration: digits and a unit (`ms`, `s`, `m`, `h`, `d`).
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    let not_a_duration = || {
        format!(
            "{} is not a duration (digits and a unit: 500ms, 30s, 10m, 1h, 7d)",
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
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(not_a_duration()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{} is too large", quoted(text)))
}

#[derive(Default)]
struct Parser {
    errors: Vec<PolicyError>,
}

impl Parser {
    fn error(
        &mut self,
        path: impl Into<String>,
        kind: PolicyErrorKind,
        message: impl Into<String>,
    ) {
        self.errors.push(PolicyError {
            path: path.into(),
            kind,
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, path: &str, expected: &str, value: &Value) {
        self.error(
            path,
            PolicyErrorKind::WrongType,
            format!("must be {expected}, not {}", type_name(value)),
        );
    }

    fn required(&mut self, path: String) {
        self.error(path, PolicyErrorKind::Required, "required");
    }

    /// The object at `path`, its unknown fields reported.
    fn object<'a>(
        &mut self,
        path: &str,
        value: &'a Value,
        fields: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Value::Object(map) = value else {
            self.wrong_type(path, "an object", value);
            return None;
        };
        for key in map.keys() {
            if !fields.contains(&key.as_str()) {
                self.error(
                    field(path, key),
                    PolicyErrorKind::UnknownField,
                    format!("unknown field (expected one of: {})", fields.join(", ")),
                );
            }
        }
        Some(map)
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn integer(&mut self, path: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
        let Value::Number(n) = value else {
            self.wrong_type(path, &format!("an integer from {min} to {max}"), value);
            return None;
        };
        match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(_) => {
                self.error(
                    path,
                    PolicyErrorKind::OutOfRange,
                    format!("{n} is out of range ({min} to {max})"),
                );
                None
            }
            None if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
                self.wrong_type(path, &format!("an integer from {min} to {max}"), value);
                None
            }
            None => {
                self.error(
                    path,
                    PolicyErrorKind::OutOfRange,
                    format!("{n} is out of range ({min} to {max})"),
                );
                None
            }
        }
    }

    /// A duration string in `min..=max` milliseconds.
    fn duration(&mut self, path: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
        let Value::String(text) = value else {
            self.wrong_type(path, "a duration string (30s, 10m, 1h)", value);
            return None;
        };
        match duration_ms(text) {
            Ok(ms) if (min..=max).contains(&ms) => Some(ms),
            Ok(_) => {
                self.error(
                    path,
                    PolicyErrorKind::OutOfRange,
                    format!(
                        "{} is out of range ({} to {})",
                        quoted(text),
                        super::format_duration_ms(min),
                        super::format_duration_ms(max)
                    ),
                );
                None
            }
            Err(message) => {
                self.error(path, PolicyErrorKind::Invalid, message);
                None
            }
        }
    }

    /// One of `allowed`.
    fn choice<'a>(&mut self, path: &str, value: &'a Value, allowed: &[&str]) -> Option<&'a str> {
        let text = self.string(path, value)?;
        if allowed.contains(&text) {
            Some(text)
        } else {
            self.error(
                path,
                PolicyErrorKind::Invalid,
                format!("{} is not one of: {}", show(value), allowed.join(", ")),
            );
            None
        }
    }

    fn set(&mut self, value: &Value) -> Option<Vec<Policy>> {
        let Value::Array(items) = value else {
            self.wrong_type("", "an array of policies", value);
            return None;
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut policies = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("", i);
            match self.policy(&path, item) {
                Some(policy) => {
                    if let Some(first) = seen.get(&policy.id) {
                        self.error(
                            field(&path, "id"),
                            PolicyErrorKind::DuplicateId,
                            format!("{} is already the id of [{first}]", quoted(&policy.id)),
                        );
                        ok = false;
                    } else {
                        seen.insert(policy.id.clone(), i);
                    }
                    policies.push(policy);
                }
                None => ok = false,
            }
        }
        ok.then_some(policies)
    }

    fn policy(&mut self, path: &str, value: &Value) -> Option<Policy> {
        let map = self.object(path, value, &POLICY_FIELDS)?;
        let version_path = field(path, "policy_version");
        let version = match map.get("policy_version") {
            None => {
                self.required(version_path);
                None
            }
            Some(Value::Number(n)) if n.as_u64() == Some(POLICY_VERSION) => Some(()),
            Some(Value::Number(n)) => {
                self.error(
                    version_path,
                    PolicyErrorKind::UnsupportedVersion,
                    format!(
                        "policy_version {n} is not supported (this build reads {POLICY_VERSION})"
                    ),
                );
                None
            }
            Some(other) => {
                self.wrong_type(&version_path, "the integer 1", other);
                None
            }
        };
        let id = match map.get("id") {
            None => {
                self.required(field(path, "id"));
                None
            }
            Some(v) => self.id(&field(path, "id"), v),
        };
        let description = match map.get("description") {
            None => Some(String::new()),
            Some(v) => {
                let p = field(path, "description");
                match self.string(&p, v) {
                    Some(s) if s.len() > MAX_DESCRIPTION_BYTES => {
                        self.error(
                            p,
                            PolicyErrorKind::OutOfRange,
                            format!("longer than {MAX_DESCRIPTION_BYTES} bytes"),
                        );
                        None
                    }
                    other => other.map(str::to_owned),
                }
            }
        };
        let when = match map.get("when") {
            None => {
                self.required(field(path, "when"));
                None
            }
            Some(v) => self.when(&field(path, "when"), v),
        };
        let then = match map.get("then") {
            None => {
                self.required(field(path, "then"));
                None
            }
            Some(v) => self.then(&field(path, "then"), v),
        };
        let enabled = match map.get("enabled") {
            None => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.wrong_type(&field(path, "enabled"), "a boolean", other);
                None
            }
        };
        version?;
        Some(Policy {
            id: id?,
            description: description?,
            when: when?,
            then: then?,
            enabled: enabled?,
        })
    }

    fn id(&mut self, path: &str, value: &Value) -> Option<String> {
        let id = self.string(path, value)?;
        let ok = id.len() <= 63
            && id
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            self.error(
                path,
                PolicyErrorKind::Invalid,
                format!(
                    "{} is not a policy id (lowercase letters, digits, '-' and '_', 1 to 63 characters, starting with a letter or digit)",
                    show(value)
                ),
            );
            return None;
        }
        Some(id.to_owned())
    }

    fn when(&mut self, path: &str, value: &Value) -> Option<When> {
        let map = self.object(path, value, &CONDITION_FIELDS)?;
        let known: Vec<&String> = map
            .keys()
            .filter(|k| CONDITION_FIELDS.contains(&k.as_str()))
            .collect();
        match known.as_slice() {
            [] => {
                self.error(
                    path,
                    PolicyErrorKind::Required,
                    format!(
                        "a condition is required (one of: {})",
                        CONDITION_FIELDS.join(", ")
                    ),
                );
                None
            }
            [key] if key.as_str() == "all_of" => {
                let p = field(path, "all_of");
                let Some(Value::Array(items)) = map.get("all_of") else {
                    if let Some(v) = map.get("all_of") {
                        self.wrong_type(&p, "an array of conditions", v);
                    }
                    return None;
                };
                if items.is_empty() || items.len() > MAX_ALL_OF {
                    self.error(
                        &p,
                        PolicyErrorKind::OutOfRange,
                        format!(
                            "must hold 1 to {MAX_ALL_OF} conditions, not {}",
                            items.len()
                        ),
                    );
                    return None;
                }
                let mut conditions = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.single(&index(&p, i), item) {
                        Some(c) => conditions.push(c),
                        None => ok = false,
                    }
                }
                ok.then_some(When::AllOf(conditions))
            }
            [key] => {
                let key = key.as_str();
                let v = map.get(key)?;
                self.condition(&field(path, key), key, v).map(When::One)
            }
            _ => {
                self.error(
                    path,
                    PolicyErrorKind::Conflict,
                    format!(
                        "give exactly one condition, or all_of a list of them (found: {})",
                        known
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                None
            }
        }
    }

    /// An item of `all_of`: an object with exactly one condition, not an
    /// `all_of`.
    fn single(&mut self, path: &str, value: &Value) -> Option<Condition> {
        let map = self.object(path, value, &CONDITION_FIELDS)?;
        if map.contains_key("all_of") {
            self.error(
                field(path, "all_of"),
                PolicyErrorKind::Conflict,
                "all_of does not nest: list the conditions in one all_of",
            );
            return None;
        }
        let known: Vec<&String> = map
            .keys()
            .filter(|k| CONDITION_FIELDS.contains(&k.as_str()))
            .collect();
        match known.as_slice() {
            [key] => {
                let key = key.as_str();
                let v = map.get(key)?;
                self.condition(&field(path, key), key, v)
            }
            [] => {
                self.error(path, PolicyErrorKind::Required, "a condition is required");
                None
            }
            _ => {
                self.error(
                    path,
                    PolicyErrorKind::Conflict,
                    "one condition per all_of item",
                );
                None
            }
        }
    }

    fn condition(&mut self, path: &str, key: &str, value: &Value) -> Option<Condition> {
        match key {
            "trust_below" => self
                .integer(path, value, 1, 100)
                .and_then(|v| u8::try_from(v).ok())
                .map(|points| Condition::TrustBelow { points }),
            "trust_alert" => {
                let map = self.object(path, value, &TRUST_ALERT_FIELDS)?;
                let severity = match map.get("severity") {
                    None => {
                        self.required(field(path, "severity"));
                        None
                    }
                    Some(v) => {
                        self.choice(&field(path, "severity"), v, &SEVERITIES)
                            .map(|s| match s {
                                "info" => Severity::Info,
                                "warning" => Severity::Warning,
                                _ => Severity::Critical,
                            })
                    }
                };
                let kind = match map.get("kind") {
                    None => Some(None),
                    Some(v) => self.choice(&field(path, "kind"), v, &ALERT_KINDS).map(|k| {
                        Some(match k {
                            "rate_spike" => AlertKind::RateSpike,
                            "mix_shift" => AlertKind::MixShift,
                            _ => AlertKind::NewPeers,
                        })
                    }),
                };
                Some(Condition::TrustAlert {
                    min_severity: severity?,
                    kind: kind?,
                })
            }
            "crashes" => {
                let map = self.object(path, value, &CRASHES_FIELDS)?;
                let count = match map.get("count") {
                    None => {
                        self.required(field(path, "count"));
                        None
                    }
                    Some(v) => self
                        .integer(&field(path, "count"), v, 1, MAX_CRASH_COUNT)
                        .and_then(|c| u32::try_from(c).ok()),
                };
                let within = match map.get("within") {
                    None => {
                        self.required(field(path, "within"));
                        None
                    }
                    Some(v) => {
                        self.duration(&field(path, "within"), v, MIN_WITHIN_MS, MAX_WITHIN_MS)
                    }
                };
                Some(Condition::Crashes {
                    count: count?,
                    within_ms: within?,
                })
            }
            _ => None,
        }
    }

    fn then(&mut self, path: &str, value: &Value) -> Option<Action> {
        let map = self.object(path, value, &THEN_FIELDS)?;
        match (map.get("sanction"), map.get("lifecycle")) {
            (Some(_), Some(_)) => {
                self.error(
                    path,
                    PolicyErrorKind::Conflict,
                    "give a sanction or a lifecycle action, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    path,
                    PolicyErrorKind::Required,
                    "an action is required: sanction or lifecycle",
                );
                None
            }
            (None, Some(v)) => {
                let mut ok = true;
                for extra in ["rate_per_minute", "expires_after"] {
                    if map.contains_key(extra) {
                        self.error(
                            field(path, extra),
                            PolicyErrorKind::Conflict,
                            "only for a sanction",
                        );
                        ok = false;
                    }
                }
                self.choice(&field(path, "lifecycle"), v, &LIFECYCLE_ACTIONS)?;
                ok.then_some(Action::Lifecycle(LifecycleAction::Disable))
            }
            (Some(v), None) => {
                let expires = match map.get("expires_after") {
                    None => Some(None),
                    Some(e) => self
                        .duration(
                            &field(path, "expires_after"),
                            e,
                            MIN_EXPIRES_MS,
                            MAX_EXPIRES_MS,
                        )
                        .map(Some),
                };
                let name = self.choice(&field(path, "sanction"), v, &SANCTIONS);
                let rate_path = field(path, "rate_per_minute");
                let rate = match (name, map.get("rate_per_minute")) {
                    (Some("throttle"), None) => {
                        self.error(
                            rate_path,
                            PolicyErrorKind::Required,
                            "required for a throttle",
                        );
                        None
                    }
                    (Some("throttle"), Some(r)) => self
                        .integer(&rate_path, r, 1, MAX_RATE_PER_MINUTE)
                        .and_then(|r| u32::try_from(r).ok())
                        .map(Some),
                    (Some(_), Some(_)) => {
                        self.error(rate_path, PolicyErrorKind::Conflict, "only for a throttle");
                        None
                    }
                    (_, _) => Some(None),
                };
                let kind = match (name?, rate?) {
                    ("warn", _) => SanctionKind::Warn,
                    ("throttle", Some(per_minute)) => SanctionKind::Throttle { per_minute },
                    ("quarantine", _) => SanctionKind::Quarantine,
                    ("suspend", _) => SanctionKind::Suspend,
                    ("ban", _) => SanctionKind::Ban,
                    _ => return None,
                };
                Some(Action::Sanction {
                    kind,
                    expires_after_ms: expires?,
                })
            }
        }
    }
}

/// A string as a JSON string literal, for messages.
fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}
