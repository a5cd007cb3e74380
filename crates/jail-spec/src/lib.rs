//! # amai-jail-spec
//!
//! The jail spec a user writes (`amai jail run --spec spec.json`, JSON Schema
//! in `schemas/jail-spec.schema.json`): what to run (image, command, env,
//! files, working directory), its limits, its network policy, its LLM session
//! and its diff policy.
//!
//! [`JailSpec::from_json`] reports every error it finds, each with its JSON
//! path (`limits.memory: "12 bananas" is not a size (use bytes or 256MiB)`),
//! not only the first. A parsed spec is normalised (defaults filled in, sizes
//! in bytes, timeouts in seconds, file contents in base64, allowlists sorted);
//! [`JailSpec::canonical_digest`] is the SHA-256 of the RFC 8785 canonical
//! JSON of that normal form, which is how a reproduction proves it ran "the
//! same spec". The normal form parses back to the same spec.

mod glob;
mod parse;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub use glob::{check_glob, glob_match};
pub use parse::dns_name;
pub use units::{format_size, parse_duration_secs, parse_size};

/// The largest spec accepted, in bytes (file contents included). A spec over
/// the event size limit travels as a blob (`JailRequested.spec_blob`).
pub const MAX_SPEC_BYTES: usize = 8 << 20;
/// The working directory when the spec names none.
pub const DEFAULT_WORKDIR: &str = "/workspace";
/// Directories injected files may be written under.
pub const FILE_ROOTS: [&str; 2] = ["/workspace", "/tmp"];
/// The mode of an injected file when the spec names none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// CPUs when the spec names none, in thousandths of a CPU.
pub const DEFAULT_MILLICPUS: u32 = 1000;
/// The most CPUs a spec may ask for, in thousandths.
pub const MAX_MILLICPUS: u32 = 64_000;
/// Memory when the spec names none (memory+swap is the same: no swap).
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// The least memory a jail runs with.
pub const MIN_MEMORY: u64 = 8 << 20;
/// Pids when the spec names none.
pub const DEFAULT_PIDS: u32 = 256;
/// The most pids a spec may ask for.
pub const MAX_PIDS: u32 = 32_768;
/// The writable tmpfs size when the spec names none.
pub const DEFAULT_DISK: u64 = 256 << 20;
/// The least writable space a jail runs with.
pub const MIN_DISK: u64 = 1 << 20;
/// The wall-clock timeout when the spec names none, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest timeout, in seconds (24 h).
pub const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// The stdout+stderr cap when the spec names none.
pub const DEFAULT_OUTPUT: u64 = 16 << 20;
/// Writable globs of the diff policy when the spec names none.
pub const DEFAULT_WRITABLE: [&str; 2] = ["/tmp/**", "/workspace/**"];
/// The prefix of environment variables the jail role sets itself.
pub const RESERVED_ENV_PREFIX: &str = "AMAI_";
/// Variables the jail sets when the spec has an `llm` session.
pub const LLM_ENV: [&str; 4] = [
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
];

/// A parsed, normalised jail spec.
#[derive(Debug, Clone, PartialEq)]
pub struct JailSpec {
    /// `busybox`, `python` (the locally built base images) or any image
    /// reference present on the engine.
    pub image: String,
    /// Program and arguments (exec form, no shell); never empty.
    pub command: Vec<String>,
    /// Environment variables (`[A-Z_][A-Z0-9_]*`, never `AMAI_*`).
    pub env: BTreeMap<String, String>,
    /// Files written before the run, sorted by path.
    pub files: Vec<InjectedFile>,
    /// The working directory (absolute).
    pub workdir: String,
    /// Resource limits.
    pub limits: Limits,
    /// What the jail may reach.
    pub network: NetworkPolicy,
    /// The LLM session the run uses, if any.
    pub llm: Option<LlmSpec>,
    /// What the run may change.
    pub diff_policy: DiffPolicy,
}

/// A file injected before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedFile {
    /// Absolute, under `/workspace` or `/tmp`, without `.`/`..` components.
    pub path: String,
    /// The content.
    pub content: Vec<u8>,
    /// Permission bits (at most `0o7777`).
    pub mode: u32,
}

/// Resource limits, in engine units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU quota in thousandths of a CPU (`cpus` × 1000).
    pub millicpus: u32,
    /// Memory (and memory+swap) in bytes.
    pub memory_bytes: u64,
    /// Maximum number of processes and threads.
    pub pids: u32,
    /// Size of the writable tmpfs, in bytes.
    pub disk_bytes: u64,
    /// Wall-clock timeout, in seconds.
    pub timeout_secs: u64,
    /// Cap on stdout+stderr, in bytes.
    pub output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            millicpus: DEFAULT_MILLICPUS,
            memory_bytes: DEFAULT_MEMORY,
            pids: DEFAULT_PIDS,
            disk_bytes: DEFAULT_DISK,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            output_bytes: DEFAULT_OUTPUT,
        }
    }
}

impl Limits {
    /// The CPU quota in CPUs.
    pub fn cpus(&self) -> f64 {
        f64::from(self.millicpus) / 1000.0
    }

    /// Docker's `NanoCpus`.
    pub fn nano_cpus(&self) -> i64 {
        i64::from(self.millicpus) * 1_000_000
    }

    /// The wall-clock timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_secs)
    }
}

/// What a jail may reach over the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkPolicy {
    /// Nothing at all.
    #[default]
    None,
    /// Only the LLM proxy.
    LlmOnly,
    /// The LLM proxy (when the spec has an `llm` session) and these endpoints,
    /// sorted and without duplicates.
    Allow(Vec<Endpoint>),
}

/// A `host:port` of an allowlist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The host.
    pub host: Host,
    /// The port (1..=65535).
    pub port: u16,
}

/// A DNS name (lowercase) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    /// A DNS name, lowercase, without a trailing dot.
    Dns(String),
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The LLM session of a jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmSpec {
    /// An existing session of the requester (32 lowercase hex characters).
    Session(String),
    /// A new session, opened for the jail.
    Create(LlmCreate),
}

/// A session to open for the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmCreate {
    /// Record or replay.
    pub mode: LlmMode,
    /// Which upstream APIs the session serves.
    pub upstream: LlmUpstreams,
    /// Replay mode: the session whose recordings are replayed (required in
    /// replay mode, refused in record mode).
    pub replay_from: Option<String>,
}

/// The mode of a session created for a jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmMode {
    /// Forward to the upstream and record.
    Record,
    /// Answer from a recording only.
    Replay,
}

/// Which upstream APIs a session created for a jail serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmUpstreams {
    /// OpenAI's API only.
    OpenAi,
    /// Anthropic's API only.
    Anthropic,
    /// Both.
    All,
}

/// What the run may change in the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffPolicy {
    /// Globs of the paths the run may add, modify or delete (sorted, unique).
    pub writable: Vec<String>,
    /// Whether new or changed files may carry setuid/setgid bits.
    pub allow_setuid: bool,
    /// The most bytes the changed files may add up to.
    pub max_changed_bytes: Option<u64>,
}

impl Default for DiffPolicy {
    fn default() -> Self {
        DiffPolicy {
            writable: DEFAULT_WRITABLE.iter().map(|s| (*s).to_owned()).collect(),
            allow_setuid: false,
            max_changed_bytes: None,
        }
    }
}

impl DiffPolicy {
    /// Whether the run may change `path`.
    pub fn allows_write(&self, path: &str) -> bool {
        self.writable.iter().any(|glob| glob_match(glob, path))
    }
}

/// One error of a spec, at a JSON path (`files[2].path`; empty for the whole
/// document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The JSON path (`limits.memory`, `files[2].path`, `env.FOO`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error of a spec, in document order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
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

impl SpecErrors {
    /// The errors.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }

    /// The paths of the errors, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl JailSpec {
    /// Parses and validates a spec, collecting every error with its JSON path.
    pub fn from_json(bytes: &[u8]) -> Result<JailSpec, SpecErrors> {
        parse::parse(bytes)
    }

    /// Parses a spec that is already a JSON value.
    pub fn from_value(value: &Value) -> Result<JailSpec, SpecErrors> {
        parse::parse_value(value)
    }

    /// The normal form as JSON: every default explicit, sizes in bytes, the
    /// timeout in seconds, file contents in base64. It parses back to `self`.
    pub fn to_json_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("image".into(), json!(self.image));
        root.insert("command".into(), json!(self.command));
        root.insert("env".into(), json!(self.env));
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path,
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(&f.content),
                    "mode": f.mode,
                })
            })
            .collect();
        root.insert("files".into(), Value::Array(files));
        root.insert("workdir".into(), json!(self.workdir));
        let l = &self.limits;
        root.insert(
            "limits".into(),
            json!({
                "cpus": l.cpus(),
                "memory": l.memory_bytes,
                "pids": l.pids,
                "disk": l.disk_bytes,
                "timeout": l.timeout_secs,
                "output": l.output_bytes,
            }),
        );
        let network = match &self.network {
            NetworkPolicy::None => json!("none"),
            NetworkPolicy::LlmOnly => json!("llm-only"),
            NetworkPolicy::Allow(endpoints) => {
                let allow: Vec<String> = endpoints.iter().map(Endpoint::to_string).collect();
                json!({ "allow": allow })
            }
        };
        root.insert("network".into(), network);
        if let Some(llm) = &self.llm {
            let value = match llm {
                LlmSpec::Session(id) => json!({ "session": id }),
                LlmSpec::Create(create) => {
                    let mut c = Map::new();
                    c.insert("mode".into(), json!(create.mode.as_str()));
                    c.insert("upstream".into(), json!(create.upstream.as_str()));
                    if let Some(from) = &create.replay_from {
                        c.insert("replay_from".into(), json!(from));
                    }
                    json!({ "create": c })
                }
            };
            root.insert("llm".into(), value);
        }
        let mut diff = Map::new();
        diff.insert("writable".into(), json!(self.diff_policy.writable));
        diff.insert("allow_setuid".into(), json!(self.diff_policy.allow_setuid));
        if let Some(max) = self.diff_policy.max_changed_bytes {
            diff.insert("max_changed_bytes".into(), json!(max));
        }
        root.insert("diff_policy".into(), Value::Object(diff));
        Value::Object(root)
    }

    /// The RFC 8785 canonical JSON of the normal form.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(&self.to_json_value())
            .expect("a JSON value of strings, integers, finite numbers and booleans canonicalises")
    }

    /// SHA-256 of [`JailSpec::canonical_json`]: equal digests mean the same
    /// spec, whatever the key order, spacing, size units or defaults.
    pub fn canonical_digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json()).into()
    }

    /// [`JailSpec::canonical_digest`] in lowercase hex.
    pub fn canonical_digest_hex(&self) -> String {
        hex::encode(self.canonical_digest())
    }
}

impl serde::Serialize for JailSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json_value().serialize(serializer)
    }
}

impl LlmMode {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Record => "record",
            LlmMode::Replay => "replay",
        }
    }
}

impl LlmUpstreams {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmUpstreams::OpenAi => "openai",
            LlmUpstreams::Anthropic => "anthropic",
            LlmUpstreams::All => "all",
        }
    }
}

#[cfg(test)]
mod tests;
