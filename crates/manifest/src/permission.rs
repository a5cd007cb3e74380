//! The permission taxonomy: what a manifest may ask for and an operator may
//! approve, as strings with one canonical spelling.
//!
//! | permission | grammar |
//! | --- | --- |
//! | LLM access | `llm:openai`, `llm:anthropic` |
//! | network egress | `network:egress:<host>[:<port>]` (port 443 when omitted; DNS name, IPv4, or `[IPv6]`; no wildcards) |
//! | filesystem writes | `fs:write:<absolute path or glob>` under `/workspace` or `/tmp` |
//! | messaging | `messages:send` |
//! | jail limits | `jail:limits:<cpus\|memory\|pids\|disk\|timeout>=<value>` |
//!
//! [`Permission`] parses ([`FromStr`]) and prints ([`Display`](fmt::Display))
//! its canonical form, so `network:egress:API.example.com` reads back as
//! `network:egress:api.example.com:443`. [`PermissionSet`] is sorted and
//! unique. [`approve`] turns an operator's approval into a set and refuses
//! any permission the manifest did not request: approving more than was
//! asked for is impossible.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use amai_jail_spec::{
    check_glob, format_size, parse_duration_secs, parse_size, Endpoint, Host, MAX_MILLICPUS,
    MAX_PIDS, MAX_TIMEOUT_SECS, MIN_DISK, MIN_MEMORY,
};
use serde_json::Value;

use crate::json::{quoted, type_name};

/// The longest permission string accepted.
pub const MAX_PERMISSION_LEN: usize = 4096 + 16;
/// The default port of `network:egress:<host>`.
pub const DEFAULT_EGRESS_PORT: u16 = 443;
/// The directories `fs:write:` globs must be under.
pub const WRITABLE_ROOTS: [&str; 2] = ["/workspace", "/tmp"];

const FORMS: &str = "llm:openai, llm:anthropic, network:egress:<host>[:<port>], fs:write:<path or glob under /workspace or /tmp>, messages:send, jail:limits:<cpus|memory|pids|disk|timeout>=<value>";

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// `llm:<provider>`: a recorded LLM session with that provider.
    Llm(LlmProvider),
    /// `network:egress:<host>:<port>`: one endpoint on the jail's allowlist.
    NetworkEgress(Endpoint),
    /// `fs:write:<glob>`: paths the run may add, change or delete.
    FsWrite(String),
    /// `messages:send`: the agent may send messages on the bus.
    MessagesSend,
    /// `jail:limits:<key>=<value>`: a resource limit above or below the jail
    /// defaults.
    JailLimit(Limit),
}

/// An LLM provider of `llm:<provider>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LlmProvider {
    /// `openai`.
    OpenAi,
    /// `anthropic`.
    Anthropic,
}

impl LlmProvider {
    /// The permission's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmProvider::OpenAi => "openai",
            LlmProvider::Anthropic => "anthropic",
        }
    }
}

/// A resource limit, in the jail spec's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    /// CPU quota in thousandths of a CPU.
    MilliCpus(u32),
    /// Memory in bytes.
    Memory(u64),
    /// Maximum number of processes and threads.
    Pids(u32),
    /// Writable tmpfs size in bytes.
    Disk(u64),
    /// Wall-clock timeout in seconds.
    Timeout(u64),
}

/// The keys of `jail:limits:` (and of a manifest's `resources`).
pub const LIMIT_KEYS: [&str; 5] = ["cpus", "memory", "pids", "disk", "timeout"];

impl Limit {
    /// The key (`cpus`, `memory`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            Limit::MilliCpus(_) => "cpus",
            Limit::Memory(_) => "memory",
            Limit::Pids(_) => "pids",
            Limit::Disk(_) => "disk",
            Limit::Timeout(_) => "timeout",
        }
    }

    /// The value as the jail spec's `limits` object spells it in its normal
    /// form (CPUs as a number, sizes in bytes, the timeout in seconds).
    pub fn spec_value(&self) -> Value {
        match *self {
            Limit::MilliCpus(m) => Value::from(f64::from(m) / 1000.0),
            Limit::Memory(n) | Limit::Disk(n) | Limit::Timeout(n) => Value::from(n),
            Limit::Pids(n) => Value::from(n),
        }
    }

    /// The canonical text of the value (`0.5`, `512MiB`, `128`, `30m`).
    pub fn value_text(&self) -> String {
        match *self {
            Limit::MilliCpus(m) => {
                let (whole, frac) = (m / 1000, m % 1000);
                if frac == 0 {
                    whole.to_string()
                } else {
                    let digits = format!("{frac:03}");
                    format!("{whole}.{}", digits.trim_end_matches('0'))
                }
            }
            Limit::Memory(n) | Limit::Disk(n) => format_size(n),
            Limit::Pids(n) => n.to_string(),
            Limit::Timeout(s) if s % 3600 == 0 => format!("{}h", s / 3600),
            Limit::Timeout(s) if s % 60 == 0 => format!("{}m", s / 60),
            Limit::Timeout(s) => format!("{s}s"),
        }
    }
}

/// Parses one limit from JSON: numbers or strings, as the jail spec reads its
/// `limits` (`cpus` a number; sizes bytes or `256MiB`; durations seconds or
/// `30s`/`5m`/`2h`), within the jail spec's bounds.
pub(crate) fn parse_limit_json(key: &str, value: &Value) -> Result<Limit, String> {
    match (key, value) {
        ("cpus", Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| format!("{n} is not a CPU count"))
            .and_then(millicpus),
        ("cpus", other) => Err(format!(
            "must be a number of CPUs, not {}",
            type_name(other)
        )),
        ("pids", Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a pids limit"))
            .and_then(pids),
        ("pids", other) => Err(format!("must be an integer, not {}", type_name(other))),
        ("memory" | "disk", Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a size (use bytes or 256MiB)"))
            .and_then(|b| size(key, b)),
        ("memory" | "disk", Value::String(s)) => parse_size(s).and_then(|b| size(key, b)),
        ("memory" | "disk", other) => Err(format!(
            "must be a size (bytes or a string like 256MiB), not {}",
            type_name(other)
        )),
        ("timeout", Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not a duration (use seconds or 30s, 5m, 2h)"))
            .and_then(timeout),
        ("timeout", Value::String(s)) => parse_duration_secs(s).and_then(timeout),
        ("timeout", other) => Err(format!(
            "must be a duration (seconds or a string like 30s, 5m, 2h), not {}",
            type_name(other)
        )),
        _ => Err(format!(
            "unknown limit {} (expected one of: {})",
            quoted(key),
            LIMIT_KEYS.join(", ")
        )),
    }
}

/// Parses the text of `jail:limits:<key>=<text>`.
fn parse_limit_text(key: &str, text: &str) -> Result<Limit, String> {
    match key {
        "cpus" => {
            let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if whole.is_empty()
                || !digits(whole)
                || !digits(frac)
                || (text.contains('.') && frac.is_empty())
            {
                return Err(format!(
                    "{} is not a CPU count (a decimal number like 2 or 0.5)",
                    quoted(text)
                ));
            }
            let x: f64 = text
                .parse()
                .map_err(|_| format!("{} is not a CPU count", quoted(text)))?;
            millicpus(x)
        }
        "pids" => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{} is not a pids limit (an integer)", quoted(text)));
            }
            text.parse::<u64>()
                .map_err(|_| format!("{} is too large", quoted(text)))
                .and_then(pids)
        }
        "memory" | "disk" => parse_size(text).and_then(|b| size(key, b)),
        "timeout" => parse_duration_secs(text).and_then(timeout),
        _ => Err(format!(
            "unknown limit {} (expected one of: {})",
            quoted(key),
            LIMIT_KEYS.join(", ")
        )),
    }
}

fn millicpus(x: f64) -> Result<Limit, String> {
    let max = f64::from(MAX_MILLICPUS) / 1000.0;
    if !(x > 0.0 && x <= max) {
        return Err(format!(
            "{x} CPUs is outside the jail's range (more than 0, at most {max})"
        ));
    }
    let m = x * 1000.0;
    if (m - m.round()).abs() > 1e-6 || m.round() < 1.0 {
        return Err(format!("{x} is not a CPU count in steps of 0.001"));
    }
    Ok(Limit::MilliCpus(m.round() as u32))
}

fn pids(n: u64) -> Result<Limit, String> {
    if (1..=u64::from(MAX_PIDS)).contains(&n) {
        Ok(Limit::Pids(n as u32))
    } else {
        Err(format!(
            "{n} is outside the jail's pids range (1 to {MAX_PIDS})"
        ))
    }
}

fn size(key: &str, bytes: u64) -> Result<Limit, String> {
    let (min, make): (u64, fn(u64) -> Limit) = if key == "memory" {
        (MIN_MEMORY, Limit::Memory)
    } else {
        (MIN_DISK, Limit::Disk)
    };
    if bytes < min {
        return Err(format!("{key} must be at least {}", format_size(min)));
    }
    Ok(make(bytes))
}

fn timeout(secs: u64) -> Result<Limit, String> {
    match secs {
        0 => Err("the timeout must be more than 0 seconds".into()),
        s if s > MAX_TIMEOUT_SECS => Err("the timeout must be at most 24h".into()),
        s => Ok(Limit::Timeout(s)),
    }
}

/// What is wrong with a permission string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionErrorKind {
    /// Not one of the known forms.
    Unknown,
    /// A `*` (or other glob character) where a host is expected.
    Wildcard,
    /// A malformed host or port.
    BadEndpoint,
    /// A malformed path glob, or one outside `/workspace` and `/tmp`.
    BadPath,
    /// A malformed limit, or one outside the jail spec's bounds.
    BadLimit,
}

/// A permission string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PermissionError {
    kind: PermissionErrorKind,
    message: String,
}

impl PermissionError {
    fn new(kind: PermissionErrorKind, message: impl Into<String>) -> Self {
        PermissionError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> PermissionErrorKind {
        self.kind
    }
}

impl FromStr for Permission {
    type Err = PermissionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        use PermissionErrorKind as K;
        if text.len() > MAX_PERMISSION_LEN {
            return Err(PermissionError::new(
                K::Unknown,
                format!("longer than {MAX_PERMISSION_LEN} bytes"),
            ));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(PermissionError::new(
                K::Unknown,
                format!("{} contains whitespace or control characters", quoted(text)),
            ));
        }
        if let Some(provider) = text.strip_prefix("llm:") {
            return match provider {
                "openai" => Ok(Permission::Llm(LlmProvider::OpenAi)),
                "anthropic" => Ok(Permission::Llm(LlmProvider::Anthropic)),
                _ => Err(PermissionError::new(
                    K::Unknown,
                    format!(
                        "{} is not an LLM provider (llm:openai or llm:anthropic)",
                        quoted(provider)
                    ),
                )),
            };
        }
        if let Some(target) = text.strip_prefix("network:egress:") {
            return parse_egress(target).map(Permission::NetworkEgress);
        }
        if let Some(glob) = text.strip_prefix("fs:write:") {
            return parse_fs_write(glob).map(Permission::FsWrite);
        }
        if text == "messages:send" {
            return Ok(Permission::MessagesSend);
        }
        if let Some(setting) = text.strip_prefix("jail:limits:") {
            let Some((key, value)) = setting.split_once('=') else {
                return Err(PermissionError::new(
                    K::BadLimit,
                    format!(
                        "{} is not <key>=<value> (keys: {})",
                        quoted(setting),
                        LIMIT_KEYS.join(", ")
                    ),
                ));
            };
            return parse_limit_text(key, value)
                .map(Permission::JailLimit)
                .map_err(|m| PermissionError::new(K::BadLimit, m));
        }
        Err(PermissionError::new(
            K::Unknown,
            format!("{} is not a permission (allowed: {FORMS})", quoted(text)),
        ))
    }
}

fn parse_egress(target: &str) -> Result<Endpoint, PermissionError> {
    use PermissionErrorKind as K;
    if target.contains(['*', '?']) {
        return Err(PermissionError::new(
            K::Wildcard,
            format!(
                "{} has a wildcard: hosts are never wildcards, name each host (network:egress:api.example.com)",
                quoted(target)
            ),
        ));
    }
    let bad = |m: String| PermissionError::new(K::BadEndpoint, m);
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("{} has no closing ]", quoted(target))))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| bad(format!("{} is not an IPv6 address", quoted(ip))))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| {
                bad(format!(
                    "{} is not [ipv6]:port (unexpected {})",
                    quoted(target),
                    quoted(after)
                ))
            })?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match target.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (target, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad(format!(
                "{} is not host[:port] (IPv6 literals go in brackets: [::1]:443)",
                quoted(target)
            )));
        }
        let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            Host::Dns(amai_jail_spec::dns_name(host).map_err(|e| {
                bad(format!(
                    "{e} (ASCII labels of a-z, 0-9 and -; internationalised names in xn-- form)"
                ))
            })?)
        };
        (host, port)
    };
    let port = match port {
        None => DEFAULT_EGRESS_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|n| *n != 0 && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad(format!("{} is not a port (1..=65535)", quoted(p))))?,
    };
    Ok(Endpoint { host, port })
}

fn parse_fs_write(glob: &str) -> Result<String, PermissionError> {
    let bad = |m: String| PermissionError::new(PermissionErrorKind::BadPath, m);
    check_glob(glob).map_err(|m| bad(format!("{} is not a path glob: {m}", quoted(glob))))?;
    let under_root = WRITABLE_ROOTS
        .iter()
        .any(|root| glob == *root || glob.strip_prefix(root).is_some_and(|r| r.starts_with('/')));
    if !under_root {
        return Err(bad(format!(
            "{} is not under /workspace or /tmp (the only writable roots)",
            quoted(glob)
        )));
    }
    Ok(glob.to_owned())
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Llm(p) => write!(f, "llm:{}", p.as_str()),
            Permission::NetworkEgress(e) => write!(f, "network:egress:{e}"),
            Permission::FsWrite(glob) => write!(f, "fs:write:{glob}"),
            Permission::MessagesSend => f.write_str("messages:send"),
            Permission::JailLimit(l) => write!(f, "jail:limits:{}={}", l.key(), l.value_text()),
        }
    }
}

impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A sorted set of permissions without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    /// The empty set.
    pub fn new() -> Self {
        PermissionSet::default()
    }

    /// Parses permission strings; the first that does not parse is returned
    /// with its index.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, (usize, PermissionError)> {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| s.as_ref().parse::<Permission>().map_err(|e| (i, e)))
            .collect()
    }

    /// Adds a permission; `false` when it was already there.
    pub fn insert(&mut self, permission: Permission) -> bool {
        self.0.insert(permission)
    }

    /// Whether the set holds `permission`.
    pub fn contains(&self, permission: &Permission) -> bool {
        self.0.contains(permission)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset_of(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The permissions of `self` that are not in `other`.
    pub fn difference(&self, other: &PermissionSet) -> PermissionSet {
        PermissionSet(self.0.difference(&other.0).cloned().collect())
    }

    /// The permissions, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }

    /// How many permissions the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical strings, sorted as the set is.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Permission::to_string).collect()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        PermissionSet(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a PermissionSet {
    type Item = &'a Permission;
    type IntoIter = std::collections::btree_set::Iter<'a, Permission>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// What kind of approval was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalErrorKind {
    /// An approved string is not a permission.
    Invalid,
    /// Approved permissions that the manifest did not request.
    NotRequested,
}

/// An approval that cannot be granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// `approved[index]` is not a permission.
    #[error("approved[{index}]: {source}")]
    Invalid {
        /// Its index in the approval.
        index: usize,
        /// Why it does not parse.
        #[source]
        source: PermissionError,
    },
    /// These permissions (canonical strings) were approved but never
    /// requested.
    #[error("not requested by the manifest, so they cannot be approved: {}", .permissions.join(", "))]
    NotRequested {
        /// Each one, canonical.
        permissions: Vec<String>,
    },
}

impl ApprovalError {
    /// What kind of refusal it is.
    pub fn kind(&self) -> ApprovalErrorKind {
        match self {
            ApprovalError::Invalid { .. } => ApprovalErrorKind::Invalid,
            ApprovalError::NotRequested { .. } => ApprovalErrorKind::NotRequested,
        }
    }
}

/// The set an operator approves out of what a manifest requested.
///
/// Every approved string must parse and be (canonically) one of the
/// requested permissions; a limit is approved only at exactly the requested
/// value. Anything else is refused, each offender named: an approval can
/// only ever narrow what was asked for.
pub fn approve(
    requested: &PermissionSet,
    approved: &[String],
) -> Result<PermissionSet, ApprovalError> {
    let set = PermissionSet::parse(approved)
        .map_err(|(index, source)| ApprovalError::Invalid { index, source })?;
    let extra = set.difference(requested);
    if !extra.is_empty() {
        return Err(ApprovalError::NotRequested {
            permissions: extra.to_strings(),
        });
    }
    Ok(set)
}
