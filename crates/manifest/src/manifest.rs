//! Agent manifests, version 1 (`amai-manifest.json`, JSON Schema in
//! `schemas/agent-manifest.schema.json`): what an agent is, where its image
//! comes from, how it starts, what it asks permission for, the resources it
//! would like and the MCP tools it offers.
//!
//! [`Manifest::from_json`] reports every error it finds, each with its JSON
//! path (`permissions[2]`, `source.build.context`, `tools[0].inputSchema`).
//! Unknown fields are errors, except the registry-derived ones a publisher
//! must never declare about itself ([`REGISTRY_DERIVED_FIELDS`]): those are
//! stripped and listed in [`Parsed::ignored`], never carried into the
//! [`Manifest`]. [`Manifest::to_json_value`] is the normal form, which parses
//! back to the same manifest; [`Manifest::canonical_digest`] is the SHA-256
//! of its RFC 8785 canonical JSON.

use std::fmt;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::json::{field, has_control, index, parse_with_duplicates, quoted, show, type_name};
use crate::permission::{parse_limit_json, Limit, Permission, PermissionSet};
use crate::tools::Tool;

/// The only manifest version this crate reads.
pub const MANIFEST_VERSION: u64 = 1;
/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 << 10;
/// The longest id (a DNS name's limit).
pub const MAX_ID_LEN: usize = 253;
/// The longest name, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// The longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4096;
/// The longest entrypoint element and build path, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// The most entrypoint elements.
pub const MAX_ENTRYPOINT_ARGS: usize = 256;
/// The most permissions a manifest requests.
pub const MAX_PERMISSIONS: usize = 256;
/// The most capabilities.
pub const MAX_CAPABILITIES: usize = 64;
/// The most keywords.
pub const MAX_KEYWORDS: usize = 32;
/// The longest keyword, in characters.
pub const MAX_KEYWORD_CHARS: usize = 64;
/// The longest image reference.
pub const MAX_IMAGE_LEN: usize = 255;
/// The Dockerfile of a build source when the manifest names none.
pub const DEFAULT_DOCKERFILE: &str = "Dockerfile";
/// Why a registry-derived field is ignored.
pub const REGISTRY_DERIVED_REASON: &str = "registry-derived; never trusted when self-declared";

/// Fields only a registry may state (verification, trust, approval, install
/// state, digests, signatures, popularity). A manifest that declares them
/// about itself is not refused, but they are stripped and reported.
pub const REGISTRY_DERIVED_FIELDS: [&str; 13] = [
    "verified",
    "verification",
    "trust",
    "trust_score",
    "status",
    "approved_permissions",
    "installed",
    "digest",
    "image_digest",
    "signatures",
    "publisher_verified",
    "downloads",
    "rating",
];

pub(crate) const MANIFEST_FIELDS: [&str; 13] = [
    "manifest_version",
    "id",
    "name",
    "version",
    "description",
    "publisher",
    "source",
    "entrypoint",
    "permissions",
    "capabilities",
    "keywords",
    "resources",
    "tools",
];
const PUBLISHER_FIELDS: [&str; 3] = ["name", "url", "email"];
const SOURCE_FIELDS: [&str; 2] = ["image", "build"];
const BUILD_FIELDS: [&str; 2] = ["context", "dockerfile"];

/// A parsed, normalised agent manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Reverse-DNS id (`com.example.summarizer`).
    pub id: String,
    /// Display name (1 to 128 characters, no control characters).
    pub name: String,
    /// The agent's version (SemVer 2.0).
    pub version: semver::Version,
    /// What the agent does (at most 4096 characters; empty when not given).
    pub description: String,
    /// Who publishes it.
    pub publisher: Publisher,
    /// Where the image comes from.
    pub source: Source,
    /// Program and arguments (exec form); never empty.
    pub entrypoint: Vec<String>,
    /// What the agent asks permission for.
    pub permissions: PermissionSet,
    /// Short capability names (`[a-z0-9][a-z0-9._-]{0,63}`), in order.
    pub capabilities: Vec<String>,
    /// Search keywords, in order.
    pub keywords: Vec<String>,
    /// The resources the agent asks for by default (informational: the jail
    /// gets the approved `jail:limits:` permissions).
    pub resources: Option<Resources>,
    /// MCP tool definitions.
    pub tools: Vec<Tool>,
}

/// The publisher of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// Name (1 to 128 characters).
    pub name: String,
    /// An `https://` URL.
    pub url: Option<String>,
    /// A contact address.
    pub email: Option<String>,
}

/// Where an agent's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Docker image reference (`name[:tag][@sha256:<hex>]`).
    Image(String),
    /// A Docker build, paths relative to the manifest's directory.
    Build {
        /// The build context directory (relative, never escaping).
        context: String,
        /// The Dockerfile, relative to the context.
        dockerfile: String,
    },
}

/// The default resources an agent asks for, in the jail spec's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    /// CPU quota in thousandths of a CPU.
    pub millicpus: Option<u32>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u32>,
    /// Writable tmpfs size in bytes.
    pub disk_bytes: Option<u64>,
    /// Wall-clock timeout in seconds.
    pub timeout_secs: Option<u64>,
}

/// A registry-derived field found in a manifest and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredField {
    /// Its JSON path.
    pub path: String,
    /// Why it was dropped.
    pub reason: String,
}

/// A manifest and the fields that were dropped while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The manifest.
    pub manifest: Manifest,
    /// Registry-derived fields the document declared, never trusted.
    pub ignored: Vec<IgnoredField>,
}

/// One error of a manifest, at a JSON path (empty for the whole document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The JSON path (`permissions[2]`, `source.build.context`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error of a manifest, in document order; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
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

impl ManifestErrors {
    /// The errors.
    pub fn errors(&self) -> &[ManifestError] {
        &self.0
    }

    /// The paths of the errors, in order.
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl Manifest {
    /// Parses and validates a manifest, collecting every error with its JSON
    /// path. Documents over [`MAX_MANIFEST_BYTES`] are refused unread.
    pub fn from_json(bytes: &[u8]) -> Result<Parsed, ManifestErrors> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestErrors(vec![ManifestError {
                path: String::new(),
                message: format!(
                    "the manifest is {} bytes, more than the limit of {MAX_MANIFEST_BYTES}",
                    bytes.len()
                ),
            }]));
        }
        let (value, duplicates) = parse_with_duplicates(bytes).map_err(|message| {
            ManifestErrors(vec![ManifestError {
                path: String::new(),
                message,
            }])
        })?;
        let mut errors: Vec<ManifestError> = duplicates
            .into_iter()
            .map(|path| ManifestError {
                path,
                message: "given more than once".into(),
            })
            .collect();
        match Manifest::from_value(&value) {
            Ok(parsed) if errors.is_empty() => Ok(parsed),
            Ok(_) => Err(ManifestErrors(errors)),
            Err(ManifestErrors(more)) => {
                errors.extend(more);
                Err(ManifestErrors(errors))
            }
        }
    }

    /// Parses a manifest that is already a JSON value (no size limit, no
    /// duplicate-key check: those need the bytes).
    pub fn from_value(value: &Value) -> Result<Parsed, ManifestErrors> {
        let mut p = Parser::default();
        let manifest = p.manifest(value);
        match manifest {
            Some(manifest) if p.errors.is_empty() => Ok(Parsed {
                manifest,
                ignored: p.ignored,
            }),
            _ => Err(ManifestErrors(p.errors)),
        }
    }

    /// The normal form: permissions canonical and sorted, resources in
    /// bytes and seconds, defaults explicit. It parses back to `self`.
    pub fn to_json_value(&self) -> Value {
        let mut root = Map::new();
        root.insert("manifest_version".into(), json!(MANIFEST_VERSION));
        root.insert("id".into(), json!(self.id));
        root.insert("name".into(), json!(self.name));
        root.insert("version".into(), json!(self.version.to_string()));
        root.insert("description".into(), json!(self.description));
        let mut publisher = Map::new();
        publisher.insert("name".into(), json!(self.publisher.name));
        if let Some(url) = &self.publisher.url {
            publisher.insert("url".into(), json!(url));
        }
        if let Some(email) = &self.publisher.email {
            publisher.insert("email".into(), json!(email));
        }
        root.insert("publisher".into(), Value::Object(publisher));
        let source = match &self.source {
            Source::Image(image) => json!({ "image": image }),
            Source::Build {
                context,
                dockerfile,
            } => json!({ "build": { "context": context, "dockerfile": dockerfile } }),
        };
        root.insert("source".into(), source);
        root.insert("entrypoint".into(), json!(self.entrypoint));
        root.insert("permissions".into(), json!(self.permissions.to_strings()));
        root.insert("capabilities".into(), json!(self.capabilities));
        root.insert("keywords".into(), json!(self.keywords));
        if let Some(r) = &self.resources {
            let mut m = Map::new();
            let limits = [
                r.millicpus.map(Limit::MilliCpus),
                r.memory_bytes.map(Limit::Memory),
                r.pids.map(Limit::Pids),
                r.disk_bytes.map(Limit::Disk),
                r.timeout_secs.map(Limit::Timeout),
            ];
            for limit in limits.into_iter().flatten() {
                m.insert(limit.key().into(), limit.spec_value());
            }
            root.insert("resources".into(), Value::Object(m));
        }
        let tools: Vec<Value> = self.tools.iter().map(Tool::to_json_value).collect();
        root.insert("tools".into(), Value::Array(tools));
        Value::Object(root)
    }

    /// The RFC 8785 canonical JSON of the normal form.
    pub fn canonical_json(&self) -> Vec<u8> {
        // Strings, booleans, integers within ±2^53 (tool schemas are checked
        // for that) and finite doubles: canonicalisation cannot fail.
        serde_json_canonicalizer::to_vec(&self.to_json_value()).unwrap_or_default()
    }

    /// SHA-256 of [`Manifest::canonical_json`]: equal digests mean the same
    /// manifest, whatever the key order, spacing, units or permission order.
    pub fn canonical_digest(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_json()).into()
    }

    /// [`Manifest::canonical_digest`] in lowercase hex.
    pub fn canonical_digest_hex(&self) -> String {
        hex::encode(self.canonical_digest())
    }
}

/// The recursive-descent checker shared by the manifest and its tools.
#[derive(Default)]
pub(crate) struct Parser {
    pub(crate) errors: Vec<ManifestError>,
    pub(crate) ignored: Vec<IgnoredField>,
}

impl Parser {
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ManifestError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(crate) fn wrong_type(&mut self, path: &str, expected: &str, value: &Value) {
        self.error(
            path,
            format!("must be {expected}, not {}", type_name(value)),
        );
    }

    /// The object at `path`, its unknown fields reported.
    pub(crate) fn object<'a>(
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

    pub(crate) fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
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

    /// A string of `min..=max` characters without control characters.
    pub(crate) fn text<'a>(
        &mut self,
        path: &str,
        value: &'a Value,
        min: usize,
        max: usize,
    ) -> Option<&'a str> {
        let s = self.string(path, value)?;
        let n = s.chars().count();
        if n < min || n > max {
            self.error(
                path,
                if min > 0 {
                    format!("must be {min} to {max} characters")
                } else {
                    format!("must be at most {max} characters")
                },
            );
            return None;
        }
        if has_control(s) {
            self.error(path, "must not contain control characters");
            return None;
        }
        Some(s)
    }

    fn required<'a>(&mut self, map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
        let v = map.get(key);
        if v.is_none() {
            self.error(key, "required");
        }
        v
    }

    fn manifest(&mut self, value: &Value) -> Option<Manifest> {
        let Value::Object(root) = value else {
            self.wrong_type("", "an object", value);
            return None;
        };
        for key in root.keys() {
            if REGISTRY_DERIVED_FIELDS.contains(&key.as_str()) {
                self.ignored.push(IgnoredField {
                    path: field("", key),
                    reason: REGISTRY_DERIVED_REASON.into(),
                });
            } else if !MANIFEST_FIELDS.contains(&key.as_str()) {
                self.error(
                    field("", key),
                    format!(
                        "unknown field (expected one of: {})",
                        MANIFEST_FIELDS.join(", ")
                    ),
                );
            }
        }
        let version_ok = match self.required(root, "manifest_version") {
            Some(Value::Number(n)) if n.as_u64() == Some(MANIFEST_VERSION) => Some(()),
            Some(other) => {
                self.error(
                    "manifest_version",
                    format!(
                        "{} is not a supported manifest version (this reader knows version {MANIFEST_VERSION})",
                        show(other)
                    ),
                );
                None
            }
            None => None,
        };
        let id = self.required(root, "id").and_then(|v| self.id(v));
        let name = self
            .required(root, "name")
            .and_then(|v| self.text("name", v, 1, MAX_NAME_CHARS).map(str::to_owned));
        let version = self.required(root, "version").and_then(|v| {
            let s = self.string("version", v)?;
            semver::Version::parse(s)
                .map_err(|e| {
                    self.error(
                        "version",
                        format!("{} is not a SemVer 2.0 version: {e}", quoted(s)),
                    )
                })
                .ok()
        });
        let description = match root.get("description") {
            None => Some(String::new()),
            Some(v) => self
                .text("description", v, 0, MAX_DESCRIPTION_CHARS)
                .map(str::to_owned),
        };
        let publisher = self
            .required(root, "publisher")
            .and_then(|v| self.publisher(v));
        let source = self.required(root, "source").and_then(|v| self.source(v));
        let entrypoint = self
            .required(root, "entrypoint")
            .and_then(|v| self.entrypoint(v));
        let permissions = match root.get("permissions") {
            None => Some(PermissionSet::new()),
            Some(v) => self.permissions(v),
        };
        let capabilities = match root.get("capabilities") {
            None => Some(Vec::new()),
            Some(v) => self.capabilities(v),
        };
        let keywords = match root.get("keywords") {
            None => Some(Vec::new()),
            Some(v) => self.keywords(v),
        };
        let resources = match root.get("resources") {
            None => Some(None),
            Some(v) => self.resources(v).map(Some),
        };
        let tools = match root.get("tools") {
            None => Some(Vec::new()),
            Some(v) => self.tools(v),
        };
        version_ok?;
        Some(Manifest {
            id: id?,
            name: name?,
            version: version?,
            description: description?,
            publisher: publisher?,
            source: source?,
            entrypoint: entrypoint?,
            permissions: permissions?,
            capabilities: capabilities?,
            keywords: keywords?,
            resources: resources?,
            tools: tools?,
        })
    }

    fn id(&mut self, value: &Value) -> Option<String> {
        let s = self.string("id", value)?;
        match check_id(s) {
            Ok(()) => Some(s.to_owned()),
            Err(m) => {
                self.error("id", m);
                None
            }
        }
    }

    fn publisher(&mut self, value: &Value) -> Option<Publisher> {
        let map = self.object("publisher", value, &PUBLISHER_FIELDS)?;
        let name = match map.get("name") {
            None => {
                self.error("publisher.name", "required");
                None
            }
            Some(v) => self
                .text("publisher.name", v, 1, MAX_NAME_CHARS)
                .map(str::to_owned),
        };
        let url = match map.get("url") {
            None => Some(None),
            Some(v) => self.string("publisher.url", v).and_then(|s| {
                check_https_url(s)
                    .map_err(|m| self.error("publisher.url", m))
                    .ok()
                    .map(|()| Some(s.to_owned()))
            }),
        };
        let email = match map.get("email") {
            None => Some(None),
            Some(v) => self.string("publisher.email", v).and_then(|s| {
                if check_email(s) {
                    Some(Some(s.to_owned()))
                } else {
                    self.error(
                        "publisher.email",
                        format!("{} is not an email address", quoted(s)),
                    );
                    None
                }
            }),
        };
        Some(Publisher {
            name: name?,
            url: url?,
            email: email?,
        })
    }

    fn source(&mut self, value: &Value) -> Option<Source> {
        let map = self.object("source", value, &SOURCE_FIELDS)?;
        match (map.get("image"), map.get("build")) {
            (Some(_), Some(_)) => {
                self.error("source", "give image or build, not both");
                None
            }
            (None, None) => {
                self.error(
                    "source",
                    "must be {\"image\": \"<reference>\"} or {\"build\": {\"context\": \"<dir>\"}}",
                );
                None
            }
            (Some(v), None) => {
                let s = self.string("source.image", v)?;
                match check_image_ref(s) {
                    Ok(()) => Some(Source::Image(s.to_owned())),
                    Err(m) => {
                        self.error("source.image", m);
                        None
                    }
                }
            }
            (None, Some(v)) => {
                let map = self.object("source.build", v, &BUILD_FIELDS)?;
                let context = match map.get("context") {
                    None => {
                        self.error("source.build.context", "required");
                        None
                    }
                    Some(v) => self.relative_path("source.build.context", v),
                };
                let dockerfile = match map.get("dockerfile") {
                    None => Some(DEFAULT_DOCKERFILE.to_owned()),
                    Some(v) => self.relative_path("source.build.dockerfile", v),
                };
                Some(Source::Build {
                    context: context?,
                    dockerfile: dockerfile?,
                })
            }
        }
    }

    fn relative_path(&mut self, path: &str, value: &Value) -> Option<String> {
        let s = self.string(path, value)?;
        match check_relative_path(s) {
            Ok(()) => Some(s.to_owned()),
            Err(m) => {
                self.error(path, m);
                None
            }
        }
    }

    fn entrypoint(&mut self, value: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.wrong_type("entrypoint", "an array of strings (exec form)", value);
            return None;
        };
        if items.is_empty() {
            self.error("entrypoint", "must name a program (at least one element)");
            return None;
        }
        if items.len() > MAX_ENTRYPOINT_ARGS {
            self.error(
                "entrypoint",
                format!("at most {MAX_ENTRYPOINT_ARGS} elements"),
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("entrypoint", i);
            match self.string(&path, item) {
                Some("") if i == 0 => {
                    self.error(path, "the program must not be empty");
                    ok = false;
                }
                Some(s) if s.len() > MAX_ARG_BYTES => {
                    self.error(path, format!("must be at most {MAX_ARG_BYTES} bytes"));
                    ok = false;
                }
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn permissions(&mut self, value: &Value) -> Option<PermissionSet> {
        let Value::Array(items) = value else {
            self.wrong_type("permissions", "an array of permission strings", value);
            return None;
        };
        if items.len() > MAX_PERMISSIONS {
            self.error("permissions", format!("at most {MAX_PERMISSIONS}"));
            return None;
        }
        let mut set = PermissionSet::new();
        let mut seen: Vec<(Permission, usize)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("permissions", i);
            let Some(s) = self.string(&path, item) else {
                ok = false;
                continue;
            };
            match s.parse::<Permission>() {
                Ok(p) => {
                    if let Some((_, j)) = seen.iter().find(|(q, _)| *q == p) {
                        self.error(
                            &path,
                            format!("{} is already requested by permissions[{j}]", quoted(s)),
                        );
                        ok = false;
                    } else if let Permission::JailLimit(limit) = &p {
                        let clash = seen.iter().find(|(q, _)| {
                            matches!(q, Permission::JailLimit(l) if l.key() == limit.key())
                        });
                        if let Some((_, j)) = clash {
                            self.error(
                                &path,
                                format!(
                                    "jail:limits:{} is already requested by permissions[{j}] (one value per limit)",
                                    limit.key()
                                ),
                            );
                            ok = false;
                        }
                    }
                    seen.push((p.clone(), i));
                    set.insert(p);
                }
                Err(e) => {
                    self.error(path, e.to_string());
                    ok = false;
                }
            }
        }
        ok.then_some(set)
    }

    fn capabilities(&mut self, value: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.wrong_type("capabilities", "an array of strings", value);
            return None;
        };
        if items.len() > MAX_CAPABILITIES {
            self.error("capabilities", format!("at most {MAX_CAPABILITIES}"));
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("capabilities", i);
            let Some(s) = self.string(&path, item) else {
                ok = false;
                continue;
            };
            if !valid_capability(s) {
                self.error(
                    path,
                    format!(
                        "{} is not a capability ([a-z0-9][a-z0-9._-]{{0,63}})",
                        quoted(s)
                    ),
                );
                ok = false;
            } else if let Some(j) = out.iter().position(|c| c == s) {
                self.error(path, format!("already given as capabilities[{j}]"));
                ok = false;
            } else {
                out.push(s.to_owned());
            }
        }
        ok.then_some(out)
    }

    fn keywords(&mut self, value: &Value) -> Option<Vec<String>> {
        let Value::Array(items) = value else {
            self.wrong_type("keywords", "an array of strings", value);
            return None;
        };
        if items.len() > MAX_KEYWORDS {
            self.error("keywords", format!("at most {MAX_KEYWORDS} keywords"));
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("keywords", i);
            match self.text(&path, item, 1, MAX_KEYWORD_CHARS) {
                Some(s) if out.iter().any(|k| k == s) => {
                    self.error(path, "given more than once");
                    ok = false;
                }
                Some(s) => out.push(s.to_owned()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn resources(&mut self, value: &Value) -> Option<Resources> {
        let map = self.object("resources", value, &crate::permission::LIMIT_KEYS)?;
        let mut r = Resources::default();
        let mut ok = true;
        for (key, v) in map {
            let path = field("resources", key);
            match parse_limit_json(key, v) {
                Ok(Limit::MilliCpus(m)) => r.millicpus = Some(m),
                Ok(Limit::Memory(n)) => r.memory_bytes = Some(n),
                Ok(Limit::Pids(n)) => r.pids = Some(n),
                Ok(Limit::Disk(n)) => r.disk_bytes = Some(n),
                Ok(Limit::Timeout(n)) => r.timeout_secs = Some(n),
                Err(m) => {
                    // Unknown keys were already reported by `object`.
                    if crate::permission::LIMIT_KEYS.contains(&key.as_str()) {
                        self.error(path, m);
                    }
                    ok = false;
                }
            }
        }
        ok.then_some(r)
    }
}

/// Whether `s` is a capability name.
pub fn valid_capability(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// Checks a reverse-DNS id: at least two labels of `[a-z0-9-]` (1 to 63
/// characters, not starting or ending with `-`), at most 253 characters.
pub fn check_id(s: &str) -> Result<(), String> {
    let not = |why: &str| {
        format!(
            "{} is not a reverse-DNS id ({why}; like com.example.summarizer)",
            quoted(s)
        )
    };
    if s.len() > MAX_ID_LEN {
        return Err(not("at most 253 characters"));
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(not("at least two labels"));
    }
    for label in labels {
        if label.is_empty() || label.len() > 63 {
            return Err(not("labels of 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(not("lowercase labels of a-z, 0-9 and -"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(not("labels must not start or end with -"));
        }
    }
    Ok(())
}

/// Checks an `https://` URL with a host and no credentials.
pub fn check_https_url(s: &str) -> Result<(), String> {
    if s.len() > 2048 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{} is not a URL", quoted(s)));
    }
    let url = url::Url::parse(s).map_err(|e| format!("{} is not a URL: {e}", quoted(s)))?;
    if url.scheme() != "https" {
        return Err(format!("{} must be an https:// URL", quoted(s)));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{} has no host", quoted(s)));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{} must not carry credentials", quoted(s)));
    }
    Ok(())
}

/// A plausible address: `local@domain.tld`, no spaces, at most 254 bytes.
fn check_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    s.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Checks a build path: relative to the manifest's directory, never leaving
/// it: no leading `/`, no `..` components, no backslashes, no NUL, no empty
/// components. `.` alone means the directory itself.
pub fn check_relative_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty (use \".\" for the manifest's directory)".into());
    }
    if s.len() > MAX_ARG_BYTES {
        return Err(format!("must be at most {MAX_ARG_BYTES} bytes"));
    }
    if s.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if s.contains('\\') {
        return Err("must not contain backslashes (use /)".into());
    }
    if s.starts_with('/') {
        return Err(format!(
            "{} is absolute: build paths are relative to the manifest's directory",
            quoted(s)
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if s == "." {
        return Ok(());
    }
    for component in s.split('/') {
        match component {
            "" => {
                return Err("must not contain empty components (\"//\" or a trailing \"/\")".into())
            }
            ".." => {
                return Err(format!(
                "{} has a \"..\" component: build paths must not leave the manifest's directory",
                quoted(s)
            ))
            }
            "." => return Err("must not contain \".\" components (except \".\" alone)".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a Docker image reference: `[registry[:port]/]path[:tag][@sha256:<64 hex>]`,
/// path components `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+, a tag of
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, at most 255 characters (the
/// distribution reference grammar, with `sha256` the only digest).
pub fn check_image_ref(s: &str) -> Result<(), String> {
    let not = |why: &str| {
        format!(
            "{} is not an image reference ({why}; like ghcr.io/org/agent:1.2.0@sha256:<64 hex>)",
            quoted(s)
        )
    };
    if s.is_empty() || s.len() > MAX_IMAGE_LEN {
        return Err(not("1 to 255 characters"));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or_else(|| not("the digest must be sha256:<64 hex>"))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(not("the digest must be sha256:<64 lowercase hex>"));
        }
    }
    // The tag follows the last ':' after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
        if !ok {
            return Err(not("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let is_domain = first.contains(['.', ':'])
            || first == "localhost"
            || first.bytes().any(|b| b.is_ascii_uppercase());
        if is_domain {
            check_registry(first).map_err(|w| not(&w))?;
            components.remove(0);
        }
    }
    for c in components {
        if !path_component_ok(c) {
            return Err(not(
                "path components are lowercase [a-z0-9] joined by ., _, __ or -",
            ));
        }
    }
    Ok(())
}

fn check_registry(host: &str) -> Result<(), String> {
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 5 {
            return Err("the registry port must be digits".into());
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err("the registry host is malformed".into())
    }
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}
