//! The parser: a walk over the JSON value that records every error with its
//! path and keeps going. (serde's derive, even through `serde_path_to_error`,
//! stops at the first error; users fixing a spec want them all.)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use amai_json_doc::{field, index, show, type_name};
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::units::{parse_duration_secs, parse_size, quoted};
use crate::*;

/// The spec's top-level fields.
pub(crate) const SPEC_FIELDS: [&str; 9] = [
    "image",
    "command",
    "env",
    "files",
    "workdir",
    "limits",
    "network",
    "llm",
    "diff_policy",
];
pub(crate) const FILE_FIELDS: [&str; 4] = ["path", "content", "content_base64", "mode"];
pub(crate) const LIMIT_FIELDS: [&str; 6] = ["cpus", "memory", "pids", "disk", "timeout", "output"];
pub(crate) const NETWORK_FIELDS: [&str; 1] = ["allow"];
pub(crate) const LLM_FIELDS: [&str; 2] = ["session", "create"];
pub(crate) const LLM_CREATE_FIELDS: [&str; 3] = ["mode", "upstream", "replay_from"];
pub(crate) const DIFF_POLICY_FIELDS: [&str; 3] = ["writable", "allow_setuid", "max_changed_bytes"];

const MAX_IMAGE_LEN: usize = 255;
const MAX_PATH_LEN: usize = 4096;

pub(crate) fn parse(bytes: &[u8]) -> Result<JailSpec, SpecErrors> {
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(SpecErrors(vec![SpecError {
            path: String::new(),
            message: format!(
                "the spec is {} bytes, more than the limit of {MAX_SPEC_BYTES}",
                bytes.len()
            ),
        }]));
    }
    let (value, duplicates) = amai_json_doc::parse_with_duplicates(bytes).map_err(|e| {
        SpecErrors(vec![SpecError {
            path: String::new(),
            message: format!("not JSON: {e}"),
        }])
    })?;
    // A key given twice reads differently in different JSON parsers (first or
    // last wins): refused, so the signed bytes have one meaning.
    let mut errors: Vec<SpecError> = duplicates
        .into_iter()
        .map(|path| SpecError {
            path,
            message: "given more than once".into(),
        })
        .collect();
    match parse_value(&value) {
        Ok(spec) if errors.is_empty() => Ok(spec),
        Ok(_) => Err(SpecErrors(errors)),
        Err(SpecErrors(more)) => {
            errors.extend(more);
            Err(SpecErrors(errors))
        }
    }
}

pub(crate) fn parse_value(value: &Value) -> Result<JailSpec, SpecErrors> {
    let mut p = Parser::default();
    let spec = p.spec(value);
    match spec {
        Some(spec) if p.errors.is_empty() => Ok(spec),
        _ => Err(SpecErrors(p.errors)),
    }
}

#[derive(Default)]
struct Parser {
    errors: Vec<SpecError>,
}

impl Parser {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(SpecError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, path: &str, expected: &str, value: &Value) {
        self.error(
            path,
            format!("must be {expected}, not {}", type_name(value)),
        );
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
                    format!("unknown field (expected one of: {})", fields.join(", ")),
                );
            }
        }
        Some(map)
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(s) if s.contains('\0') => {
                self.error(path, "must not contain NUL");
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(path, "a string", other);
                None
            }
        }
    }

    fn size(&mut self, path: &str, value: &Value) -> Option<u64> {
        let parsed = match value {
            Value::Number(n) => n
                .as_u64()
                .ok_or_else(|| format!("{n} is not a size (use bytes or 256MiB)")),
            Value::String(s) => parse_size(s),
            other => Err(format!(
                "must be a size (bytes or a string like 256MiB), not {}",
                type_name(other)
            )),
        };
        parsed.map_err(|message| self.error(path, message)).ok()
    }

    fn spec(&mut self, value: &Value) -> Option<JailSpec> {
        let root = self.object("", value, &SPEC_FIELDS)?;
        let image = match root.get("image") {
            Some(v) => self.image(v),
            None => {
                self.error("image", "required");
                None
            }
        };
        let command = match root.get("command") {
            Some(v) => self.command(v),
            None => {
                self.error("command", "required");
                None
            }
        };
        let has_llm = root.contains_key("llm");
        let env = root
            .get("env")
            .map_or(Some(BTreeMap::new()), |v| self.env(v, has_llm));
        let files = root
            .get("files")
            .map_or(Some(Vec::new()), |v| self.files(v));
        let workdir = root
            .get("workdir")
            .map_or(Some(DEFAULT_WORKDIR.to_owned()), |v| self.workdir(v));
        let limits = root
            .get("limits")
            .map_or(Some(Limits::default()), |v| self.limits(v));
        let llm = match root.get("llm") {
            None => Some(None),
            Some(v) => self.llm(v).map(Some),
        };
        let network = match root.get("network") {
            None if has_llm => Some(NetworkPolicy::LlmOnly),
            None => Some(NetworkPolicy::None),
            Some(v) => self.network(v),
        };
        if has_llm && network == Some(NetworkPolicy::None) {
            self.error(
                "llm",
                "the LLM proxy is unreachable under network \"none\" (use \"llm-only\" or an allowlist)",
            );
        }
        let diff_policy = root
            .get("diff_policy")
            .map_or(Some(DiffPolicy::default()), |v| self.diff_policy(v));
        Some(JailSpec {
            image: image?,
            command: command?,
            env: env?,
            files: files?,
            workdir: workdir?,
            limits: limits?,
            network: network?,
            llm: llm?,
            diff_policy: diff_policy?,
        })
    }

    fn image(&mut self, value: &Value) -> Option<String> {
        let image = self.string("image", value)?;
        let ok = !image.is_empty()
            && image.len() <= MAX_IMAGE_LEN
            && !image.starts_with(['-', '.', '/', ':', '@'])
            && image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b));
        if !ok {
            self.error(
                "image",
                format!(
                    "{} is not an image reference (busybox, python, or a name of [A-Za-z0-9._/:@-], at most {MAX_IMAGE_LEN} characters)",
                    show(value)
                ),
            );
            return None;
        }
        Some(image.to_owned())
    }

    fn command(&mut self, value: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.wrong_type("command", "an array of strings", value);
            return None;
        };
        if items.is_empty() {
            self.error("command", "must name a program (at least one element)");
            return None;
        }
        let mut command = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("command", i);
            match self.string(&path, item) {
                Some("") if i == 0 => {
                    self.error(path, "the program must not be empty");
                    ok = false;
                }
                Some(s) => command.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(command)
    }

    fn env(&mut self, value: &Value, has_llm: bool) -> Option<BTreeMap<String, String>> {
        let Value::Object(map) = value else {
            self.wrong_type("env", "an object of strings", value);
            return None;
        };
        let mut env = BTreeMap::new();
        let mut ok = true;
        for (name, v) in map {
            let path = field("env", name);
            let valid_name = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                self.error(
                    &path,
                    format!("{} is not a variable name ([A-Z_][A-Z0-9_]*)", quoted(name)),
                );
                ok = false;
            } else if name.starts_with(RESERVED_ENV_PREFIX) {
                self.error(&path, "AMAI_* variables are set by the jail");
                ok = false;
            } else if has_llm && LLM_ENV.contains(&name.as_str()) {
                self.error(&path, "set by the jail when the spec has an llm session");
                ok = false;
            }
            match self.string(&path, v) {
                Some(s) => {
                    env.insert(name.clone(), s.to_owned());
                }
                None => ok = false,
            }
        }
        ok.then_some(env)
    }

    fn files(&mut self, value: &Value) -> Option<Vec<InjectedFile>> {
        let Value::Array(items) = value else {
            self.wrong_type("files", "an array", value);
            return None;
        };
        let mut files: Vec<(usize, InjectedFile)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.file(&index("files", i), item) {
                Some(file) => {
                    for (j, other) in &files {
                        let inside = |a: &str, b: &str| {
                            a.strip_prefix(b).is_some_and(|rest| rest.starts_with('/'))
                        };
                        let message = if other.path == file.path {
                            Some(format!(
                                "{} is already given by files[{j}]",
                                quoted(&file.path)
                            ))
                        } else if inside(&file.path, &other.path) {
                            Some(format!(
                                "{} is inside files[{j}], a file",
                                quoted(&file.path)
                            ))
                        } else if inside(&other.path, &file.path) {
                            Some(format!(
                                "{} is a directory of files[{j}], not a file",
                                quoted(&file.path)
                            ))
                        } else {
                            None
                        };
                        if let Some(message) = message {
                            self.error(format!("files[{i}].path"), message);
                            ok = false;
                            break;
                        }
                    }
                    files.push((i, file));
                }
                None => ok = false,
            }
        }
        let mut files: Vec<InjectedFile> = files.into_iter().map(|(_, f)| f).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        ok.then_some(files)
    }

    fn file(&mut self, path: &str, value: &Value) -> Option<InjectedFile> {
        let map = self.object(path, value, &FILE_FIELDS)?;
        let file_path = match map.get("path") {
            None => {
                self.error(field(path, "path"), "required");
                None
            }
            Some(v) => {
                let p = field(path, "path");
                self.string(&p, v).and_then(|s| {
                    let checked = check_path(s).and_then(|()| {
                        FILE_ROOTS
                            .iter()
                            .any(|root| {
                                s.strip_prefix(root)
                                    .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
                            })
                            .then_some(())
                            .ok_or_else(|| "must be under /workspace or /tmp".to_owned())
                    });
                    checked
                        .map_err(|m| self.error(&p, m))
                        .ok()
                        .map(|()| s.to_owned())
                })
            }
        };
        let content = match (map.get("content"), map.get("content_base64")) {
            (Some(_), Some(_)) => {
                self.error(path, "give content or content_base64, not both");
                None
            }
            (None, None) => {
                self.error(path, "content or content_base64 is required");
                None
            }
            (Some(v), None) => self
                .string(&field(path, "content"), v)
                .map(|s| s.as_bytes().to_vec()),
            (None, Some(v)) => {
                let p = field(path, "content_base64");
                match v {
                    Value::String(s) => base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| self.error(&p, format!("not base64: {e}")))
                        .ok(),
                    other => {
                        self.wrong_type(&p, "a base64 string", other);
                        None
                    }
                }
            }
        };
        let mode = match map.get("mode") {
            None => Some(DEFAULT_FILE_MODE),
            Some(v) => {
                let parsed = match v {
                    Value::Number(n) => n.as_u64().filter(|m| *m <= 0o7777),
                    Value::String(s) if !s.is_empty() && s.len() <= 5 => {
                        u64::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
                    }
                    _ => None,
                };
                if parsed.is_none() {
                    self.error(
                        field(path, "mode"),
                        format!(
                            "{} is not a file mode (an integer up to 0o7777 = 4095, or an octal string like \"0644\")",
                            show(v)
                        ),
                    );
                }
                parsed.map(|m| m as u32)
            }
        };
        Some(InjectedFile {
            path: file_path?,
            content: content?,
            mode: mode?,
        })
    }

    fn workdir(&mut self, value: &Value) -> Option<String> {
        let s = self.string("workdir", value)?;
        if s == "/" {
            return Some(s.to_owned());
        }
        check_path(s)
            .map_err(|m| self.error("workdir", m))
            .ok()
            .map(|()| s.to_owned())
    }

    fn limits(&mut self, value: &Value) -> Option<Limits> {
        let map = self.object("limits", value, &LIMIT_FIELDS)?;
        let mut limits = Limits::default();
        let mut ok = true;
        if let Some(v) = map.get("cpus") {
            let millis = v
                .as_f64()
                .filter(|x| *x > 0.0 && *x <= f64::from(MAX_MILLICPUS) / 1000.0)
                .map(|x| x * 1000.0)
                .filter(|m| (m - m.round()).abs() < 1e-6 && m.round() >= 1.0);
            match millis {
                Some(m) => limits.millicpus = m.round() as u32,
                None => {
                    self.error(
                        "limits.cpus",
                        format!(
                            "{} is not a CPU count (more than 0, at most 64, in steps of 0.001)",
                            show(v)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(v) = map.get("memory") {
            match self.size("limits.memory", v) {
                Some(n) if n < MIN_MEMORY => {
                    self.error(
                        "limits.memory",
                        format!("must be at least {}", format_size(MIN_MEMORY)),
                    );
                    ok = false;
                }
                Some(n) => limits.memory_bytes = n,
                None => ok = false,
            }
        }
        if let Some(v) = map.get("pids") {
            match v.as_u64().filter(|n| (1..=u64::from(MAX_PIDS)).contains(n)) {
                Some(n) => limits.pids = n as u32,
                None => {
                    self.error(
                        "limits.pids",
                        format!(
                            "{} is not a pids limit (an integer from 1 to {MAX_PIDS})",
                            show(v)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(v) = map.get("disk") {
            match self.size("limits.disk", v) {
                Some(n) if n < MIN_DISK => {
                    self.error(
                        "limits.disk",
                        format!("must be at least {}", format_size(MIN_DISK)),
                    );
                    ok = false;
                }
                Some(n) => limits.disk_bytes = n,
                None => ok = false,
            }
        }
        if let Some(v) = map.get("timeout") {
            let parsed = match v {
                Value::Number(n) => n.as_u64().ok_or_else(|| {
                    format!("{n} is not a duration (use seconds or a string like 30s, 5m, 2h)")
                }),
                Value::String(s) => parse_duration_secs(s),
                other => Err(format!(
                    "must be a duration (seconds or a string like 30s, 5m, 2h), not {}",
                    type_name(other)
                )),
            };
            match parsed {
                Ok(0) => {
                    self.error("limits.timeout", "must be more than 0 seconds");
                    ok = false;
                }
                Ok(n) if n > MAX_TIMEOUT_SECS => {
                    self.error("limits.timeout", "must be at most 24h");
                    ok = false;
                }
                Ok(n) => limits.timeout_secs = n,
                Err(message) => {
                    self.error("limits.timeout", message);
                    ok = false;
                }
            }
        }
        if let Some(v) = map.get("output") {
            match self.size("limits.output", v) {
                Some(n) => limits.output_bytes = n,
                None => ok = false,
            }
        }
        ok.then_some(limits)
    }

    fn network(&mut self, value: &Value) -> Option<NetworkPolicy> {
        match value {
            Value::String(s) if s == "none" => Some(NetworkPolicy::None),
            Value::String(s) if s == "llm-only" => Some(NetworkPolicy::LlmOnly),
            Value::Object(_) => {
                let map = self.object("network", value, &NETWORK_FIELDS)?;
                let Some(allow) = map.get("allow") else {
                    self.error("network.allow", "required");
                    return None;
                };
                let Value::Array(items) = allow else {
                    self.wrong_type("network.allow", "an array of \"host:port\" strings", allow);
                    return None;
                };
                let mut endpoints = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let path = index("network.allow", i);
                    match self.string(&path, item).map(parse_endpoint) {
                        Some(Ok(endpoint)) => endpoints.push(endpoint),
                        Some(Err(message)) => {
                            self.error(path, message);
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
                endpoints.sort();
                endpoints.dedup();
                ok.then_some(NetworkPolicy::Allow(endpoints))
            }
            other => {
                self.error(
                    "network",
                    format!(
                        "{} is not a network policy (\"none\", \"llm-only\" or {{\"allow\": [\"host:port\", ...]}})",
                        show(other)
                    ),
                );
                None
            }
        }
    }

    fn session_id(&mut self, path: &str, value: &Value) -> Option<String> {
        let s = self.string(path, value)?;
        let ok = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            self.error(
                path,
                format!(
                    "{} is not a session id (32 lowercase hex characters)",
                    quoted(s)
                ),
            );
            return None;
        }
        Some(s.to_owned())
    }

    fn llm(&mut self, value: &Value) -> Option<LlmSpec> {
        let map = self.object("llm", value, &LLM_FIELDS)?;
        match (map.get("session"), map.get("create")) {
            (Some(_), Some(_)) => {
                self.error("llm", "give session or create, not both");
                None
            }
            (None, None) => {
                self.error(
                    "llm",
                    "must be {\"session\": \"<id>\"} or {\"create\": {...}}",
                );
                None
            }
            (Some(v), None) => self.session_id("llm.session", v).map(LlmSpec::Session),
            (None, Some(v)) => {
                let map = self.object("llm.create", v, &LLM_CREATE_FIELDS)?;
                let mode = match map.get("mode") {
                    Some(Value::String(s)) if s == "record" => Some(LlmMode::Record),
                    Some(Value::String(s)) if s == "replay" => Some(LlmMode::Replay),
                    Some(other) => {
                        self.error(
                            "llm.create.mode",
                            format!("{} is not a mode (\"record\" or \"replay\")", show(other)),
                        );
                        None
                    }
                    None => {
                        self.error("llm.create.mode", "required");
                        None
                    }
                };
                let upstream = match map.get("upstream") {
                    None => Some(LlmUpstreams::All),
                    Some(Value::String(s)) if s == "openai" => Some(LlmUpstreams::OpenAi),
                    Some(Value::String(s)) if s == "anthropic" => Some(LlmUpstreams::Anthropic),
                    Some(Value::String(s)) if s == "all" => Some(LlmUpstreams::All),
                    Some(other) => {
                        self.error(
                            "llm.create.upstream",
                            format!(
                                "{} is not an upstream (\"openai\", \"anthropic\" or \"all\")",
                                show(other)
                            ),
                        );
                        None
                    }
                };
                let replay_from = match map.get("replay_from") {
                    None => Some(None),
                    Some(v) => self.session_id("llm.create.replay_from", v).map(Some),
                };
                match (mode, &replay_from) {
                    (Some(LlmMode::Replay), Some(None)) => {
                        self.error(
                            "llm.create.replay_from",
                            "required in replay mode (a new session has no recordings of its own)",
                        );
                        return None;
                    }
                    (Some(LlmMode::Record), Some(Some(_))) => {
                        self.error("llm.create.replay_from", "only in replay mode");
                        return None;
                    }
                    _ => {}
                }
                Some(LlmSpec::Create(LlmCreate {
                    mode: mode?,
                    upstream: upstream?,
                    replay_from: replay_from?,
                }))
            }
        }
    }

    fn diff_policy(&mut self, value: &Value) -> Option<DiffPolicy> {
        let map = self.object("diff_policy", value, &DIFF_POLICY_FIELDS)?;
        let mut policy = DiffPolicy::default();
        let mut ok = true;
        if let Some(v) = map.get("writable") {
            match v {
                Value::Array(items) => {
                    let mut globs = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let path = index("diff_policy.writable", i);
                        match self.string(&path, item) {
                            Some(s) => match check_glob(s) {
                                Ok(()) => globs.push(s.to_owned()),
                                Err(m) => {
                                    self.error(
                                        path,
                                        format!("{} is not a path glob: {m}", quoted(s)),
                                    );
                                    ok = false;
                                }
                            },
                            None => ok = false,
                        }
                    }
                    globs.sort();
                    globs.dedup();
                    policy.writable = globs;
                }
                other => {
                    self.wrong_type("diff_policy.writable", "an array of path globs", other);
                    ok = false;
                }
            }
        }
        if let Some(v) = map.get("allow_setuid") {
            match v {
                Value::Bool(b) => policy.allow_setuid = *b,
                other => {
                    self.wrong_type("diff_policy.allow_setuid", "a boolean", other);
                    ok = false;
                }
            }
        }
        if let Some(v) = map.get("max_changed_bytes") {
            match self.size("diff_policy.max_changed_bytes", v) {
                Some(n) => policy.max_changed_bytes = Some(n),
                None => ok = false,
            }
        }
        ok.then_some(policy)
    }
}

/// An absolute path without `.`, `..` or empty components.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must be absolute (start with /)".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("must be at most {MAX_PATH_LEN} bytes"));
    }
    for component in path[1..].split('/') {
        match component {
            "" => {
                return Err("must not contain empty components (\"//\" or a trailing \"/\")".into())
            }
            "." | ".." => return Err("must not contain \".\" or \"..\" components".into()),
            _ => {}
        }
    }
    Ok(())
}

/// `host:port`, `[ipv6]:port`.
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let not = || format!("{} is not host:port", quoted(text));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or_else(not)?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| format!("{} is not an IPv6 address", quoted(ip)))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(not)?;
        if host.contains(':') {
            return Err(format!(
                "{} is not host:port (IPv6 literals go in brackets: [::1]:443)",
                quoted(text)
            ));
        }
        let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
            Host::Ip(IpAddr::V4(ip))
        } else {
            Host::Dns(dns_name(host)?)
        };
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0 && !port.starts_with('0'))
        .ok_or_else(|| format!("{} is not a port (1..=65535)", quoted(port)))?;
    Ok(Endpoint { host, port })
}

/// A DNS name of an allowlist: ASCII labels of `[a-z0-9-]` (lowercased),
/// not all-numeric at the top level (that would be a mistyped IPv4 address);
/// internationalised names in their `xn--` form. The permission taxonomy of
/// manifests (`network:egress:<host>`) uses the same rule.
pub fn dns_name(host: &str) -> Result<String, String> {
    let name = host.to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(name)
    } else {
        Err(format!(
            "{} is not a DNS name or an IP address",
            quoted(host)
        ))
    }
}
