//! A2A Agent Cards (Agent2Agent protocol v1.0, Linux Foundation): export
//! from a manifest, JWS signing with the agent's Ed25519 key, verification,
//! and import of a foreign card as an untrusted manifest draft.
//!
//! The card's shape is `lf.a2a.v1.AgentCard` (JSON Schema vendored in
//! `schemas/vendor/a2a-agent-card.schema.json`). Every object of the v1.0
//! schema is closed (`additionalProperties: false`), so the agent's
//! `did:key`, its live trust score and its manifest's id and digest travel
//! in the one open place: the `params` of an [`AgentExtension`] with URI
//! [`IDENTITY_EXTENSION_URI`] in `capabilities.extensions`.
//!
//! Signatures follow A2A §8.4 (RFC 7515 with a detached payload): the
//! protected header is `{"alg":"EdDSA","kid":"did:key:z…#z…","typ":"JOSE"}`,
//! the payload is the RFC 8785 (JCS) canonical JSON of the card without its
//! `signatures` member, and the signature is Ed25519 over
//! `BASE64URL(protected) || '.' || BASE64URL(payload)`. No well-kept JWS
//! crate signs detached EdDSA over raw `ed25519-dalek` keys without pulling
//! OpenSSL or ring, so the few lines of compact-JWS assembly are here.
//!
//! Amai's console serves a card at `/.well-known/agents/<agent_id>/agent-card.json`
//! ([`well_known_card_path`]); A2A's own well-known path is
//! `/.well-known/agent-card.json`, one per host.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::did::{did_key, did_key_kid, resolve_did_key};
use crate::json::{has_control, parse_with_duplicates};
use crate::manifest::{
    check_https_url, check_id, Manifest, MANIFEST_VERSION, MAX_DESCRIPTION_CHARS, MAX_KEYWORDS,
    MAX_KEYWORD_CHARS, MAX_NAME_CHARS,
};
use crate::tools::{valid_tool_name, MAX_TOOLS, MAX_TOOL_DESCRIPTION};

/// The A2A protocol version the cards declare.
pub const A2A_PROTOCOL_VERSION: &str = "1.0";
/// The protocol binding of the interface the card points at.
pub const PROTOCOL_BINDING: &str = "JSONRPC";
/// The extension that carries Amai's identity data.
pub const IDENTITY_EXTENSION_URI: &str = "https://amai.dev/a2a/extensions/identity/v1";
/// The media types an Amai agent takes and gives by default.
pub const DEFAULT_MODES: [&str; 2] = ["application/json", "text/plain"];
/// The largest card [`verify_card`] and [`card_to_manifest`] read.
pub const MAX_CARD_BYTES: usize = 1 << 20;
/// The JWS algorithm of Amai's card signatures.
pub const JWS_ALG: &str = "EdDSA";

/// The path at which the console serves an agent's card.
pub fn well_known_card_path(agent_id: &str) -> String {
    format!("/.well-known/agents/{agent_id}/agent-card.json")
}

/// `lf.a2a.v1.AgentCard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    /// A human-readable name.
    pub name: String,
    /// What the agent does.
    pub description: String,
    /// Where the agent is reached; the first is preferred.
    pub supported_interfaces: Vec<AgentInterface>,
    /// Who provides the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AgentProvider>,
    /// The agent's version.
    pub version: String,
    /// Documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documentation_url: Option<String>,
    /// Optional A2A capabilities and extensions.
    pub capabilities: AgentCapabilities,
    /// Media types accepted by default.
    pub default_input_modes: Vec<String>,
    /// Media types produced by default.
    pub default_output_modes: Vec<String>,
    /// What the agent can do.
    pub skills: Vec<AgentSkill>,
    /// JWS signatures over the card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<AgentCardSignature>,
}

/// `lf.a2a.v1.AgentInterface`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    /// Where the interface is served.
    pub url: String,
    /// `JSONRPC`, `GRPC` or `HTTP+JSON`.
    pub protocol_binding: String,
    /// The A2A version served (`1.0`).
    pub protocol_version: String,
}

/// `lf.a2a.v1.AgentProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProvider {
    /// The provider's website.
    pub url: String,
    /// The provider's name.
    pub organization: String,
}

/// `lf.a2a.v1.AgentCapabilities`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    /// Streaming responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Push notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notifications: Option<bool>,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<AgentExtension>,
    /// An extended card for authenticated clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_agent_card: Option<bool>,
}

/// `lf.a2a.v1.AgentExtension`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentExtension {
    /// The extension's URI.
    pub uri: String,
    /// How the agent uses it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Whether clients must understand it.
    #[serde(default)]
    pub required: bool,
    /// Extension-specific parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
}

/// `lf.a2a.v1.AgentSkill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    /// Unique within the card.
    pub id: String,
    /// A human-readable name.
    pub name: String,
    /// What the skill does.
    pub description: String,
    /// Keywords.
    pub tags: Vec<String>,
    /// Example prompts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// `lf.a2a.v1.AgentCardSignature`: one JWS (flattened, detached payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCardSignature {
    /// BASE64URL of the protected header.
    pub protected: String,
    /// BASE64URL of the signature.
    pub signature: String,
    /// Unprotected header values (never trusted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Map<String, Value>>,
}

/// What kind of card could not be built or imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardErrorKind {
    /// The interface URL is not an http(s) URL.
    BadUrl,
    /// The trust score is not a finite number.
    BadTrustScore,
    /// An imported card is not a JSON object of the expected shape.
    Malformed,
    /// An imported card is over [`MAX_CARD_BYTES`].
    TooLarge,
}

/// A card that could not be built or imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CardError {
    kind: CardErrorKind,
    message: String,
}

impl CardError {
    fn new(kind: CardErrorKind, message: impl Into<String>) -> Self {
        CardError {
            kind,
            message: message.into(),
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> CardErrorKind {
        self.kind
    }
}

/// Builds the (unsigned) card of an agent.
///
/// `interface_url` is where the agent's A2A interface is served (the
/// console's per-agent endpoint), `agent_key` the agent's identity key and
/// `trust_score` its live trust score, if known. Skills: one per MCP tool,
/// then one per capability that is not also a tool name, or a single skill
/// named after the agent when it declares neither; every skill is tagged
/// with the manifest's keywords.
pub fn agent_card(
    manifest: &Manifest,
    agent_key: &VerifyingKey,
    trust_score: Option<f64>,
    interface_url: &str,
) -> Result<AgentCard, CardError> {
    let url = url::Url::parse(interface_url)
        .map_err(|e| CardError::new(CardErrorKind::BadUrl, format!("{interface_url:?}: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(CardError::new(
            CardErrorKind::BadUrl,
            format!("{interface_url:?} is not an http(s) URL with a host"),
        ));
    }
    if trust_score.is_some_and(|t| !t.is_finite()) {
        return Err(CardError::new(
            CardErrorKind::BadTrustScore,
            "the trust score must be a finite number",
        ));
    }
    let tags = manifest.keywords.clone();
    let mut skills: Vec<AgentSkill> = manifest
        .tools
        .iter()
        .map(|t| AgentSkill {
            id: t.name.clone(),
            name: t.title.clone().unwrap_or_else(|| t.name.clone()),
            description: t.description.clone(),
            tags: tags.clone(),
            examples: Vec::new(),
        })
        .collect();
    for capability in &manifest.capabilities {
        if !skills.iter().any(|s| &s.id == capability) {
            skills.push(AgentSkill {
                id: capability.clone(),
                name: capability.clone(),
                description: format!("{} capability of {}", capability, manifest.name),
                tags: tags.clone(),
                examples: Vec::new(),
            });
        }
    }
    if skills.is_empty() {
        skills.push(AgentSkill {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            description: manifest.description.clone(),
            tags: tags.clone(),
            examples: Vec::new(),
        });
    }
    let mut params = Map::new();
    params.insert("did".into(), json!(did_key(agent_key)));
    if let Some(t) = trust_score {
        params.insert("trustScore".into(), json!(t));
    }
    params.insert("manifestId".into(), json!(manifest.id));
    params.insert(
        "manifestDigest".into(),
        json!(format!("sha256:{}", manifest.canonical_digest_hex())),
    );
    params.insert("publisher".into(), json!(manifest.publisher.name));
    Ok(AgentCard {
        name: manifest.name.clone(),
        description: manifest.description.clone(),
        supported_interfaces: vec![AgentInterface {
            url: interface_url.to_owned(),
            protocol_binding: PROTOCOL_BINDING.into(),
            protocol_version: A2A_PROTOCOL_VERSION.into(),
        }],
        provider: manifest.publisher.url.as_ref().map(|url| AgentProvider {
            url: url.clone(),
            organization: manifest.publisher.name.clone(),
        }),
        version: manifest.version.to_string(),
        documentation_url: None,
        capabilities: AgentCapabilities {
            streaming: Some(false),
            push_notifications: Some(false),
            extensions: vec![AgentExtension {
                uri: IDENTITY_EXTENSION_URI.into(),
                description: "Amai identity: the agent's did:key (the key that signs this card), its live trust score, and the manifest it was installed from".into(),
                required: false,
                params: Some(params),
            }],
            extended_agent_card: Some(false),
        },
        default_input_modes: DEFAULT_MODES.iter().map(|s| (*s).to_owned()).collect(),
        default_output_modes: DEFAULT_MODES.iter().map(|s| (*s).to_owned()).collect(),
        skills,
        signatures: Vec::new(),
    })
}

impl AgentCard {
    /// The card as JSON.
    pub fn to_json_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The `did:key` the card declares in its identity extension.
    pub fn declared_did(&self) -> Option<&str> {
        self.capabilities
            .extensions
            .iter()
            .find(|e| e.uri == IDENTITY_EXTENSION_URI)
            .and_then(|e| e.params.as_ref())
            .and_then(|p| p.get("did"))
            .and_then(Value::as_str)
    }
}

/// The JWS payload: the JCS of the card without `signatures`.
fn signing_payload(card: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let mut unsigned = card.clone();
    unsigned.remove("signatures");
    serde_json_canonicalizer::to_vec(&Value::Object(unsigned))
        .map_err(|e| format!("the card cannot be canonicalised: {e}"))
}

/// Adds a signature by `key` to the card (keeping any earlier ones).
pub fn sign_card(card: &AgentCard, key: &SigningKey) -> AgentCard {
    let mut signed = card.clone();
    let kid = did_key_kid(&key.verifying_key());
    let header = json!({ "alg": JWS_ALG, "kid": kid, "typ": "JOSE" });
    let protected = URL_SAFE_NO_PAD.encode(
        serde_json_canonicalizer::to_vec(&header).unwrap_or_else(|_| header.to_string().into()),
    );
    let payload = match card.to_json_value() {
        Value::Object(map) => signing_payload(&map).unwrap_or_default(),
        _ => Vec::new(),
    };
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = key.sign(input.as_bytes());
    signed.signatures.push(AgentCardSignature {
        protected,
        signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        header: None,
    });
    signed
}

/// What [`verify_card`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardVerdict {
    /// A signature verifies under `did`, which is the card's declared
    /// identity (or the card declares none).
    Verified {
        /// The signer.
        did: String,
    },
    /// The card has no signatures.
    Unsigned,
    /// Signature `index` does not verify (or cannot be read).
    BadSignature {
        /// Its index in `signatures`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Signature `index` uses an algorithm other than EdDSA.
    UnsupportedAlgorithm {
        /// Its index in `signatures`.
        index: usize,
        /// The algorithm it names.
        alg: String,
    },
    /// Signature `index` verifies, but under a key other than the card's
    /// declared `did:key`: someone else vouches for this card.
    KeyMismatch {
        /// Its index in `signatures`.
        index: usize,
        /// Who signed.
        signer: String,
        /// Who the card says it is.
        declared: String,
    },
    /// The document is not a card (not JSON, duplicate keys, too large, or
    /// `signatures` is not an array).
    Malformed {
        /// Why.
        reason: String,
    },
}

impl CardVerdict {
    /// Whether the card is signed by the identity it declares.
    pub fn is_verified(&self) -> bool {
        matches!(self, CardVerdict::Verified { .. })
    }
}

/// Verifies a card's signatures.
///
/// Each signature's `kid` is resolved as a `did:key` (nothing is fetched;
/// `jku` is ignored) and checked with `verify_strict` over the JCS of the
/// card as received, minus `signatures`, so member order and whitespace do
/// not matter but every member does, known or not. The card is
/// [`CardVerdict::Verified`] if any signature verifies under its declared
/// identity; otherwise a valid signature by another key gives
/// [`CardVerdict::KeyMismatch`], and failing that the first failure is
/// reported.
pub fn verify_card(card_json: &[u8]) -> CardVerdict {
    let malformed = |reason: String| CardVerdict::Malformed { reason };
    if card_json.len() > MAX_CARD_BYTES {
        return malformed(format!("over {MAX_CARD_BYTES} bytes"));
    }
    let (value, duplicates) = match parse_with_duplicates(card_json) {
        Ok(v) => v,
        Err(e) => return malformed(e),
    };
    if let Some(path) = duplicates.first() {
        return malformed(format!("{path}: given more than once"));
    }
    let Value::Object(card) = value else {
        return malformed("not a JSON object".into());
    };
    let signatures = match card.get("signatures") {
        None => return CardVerdict::Unsigned,
        Some(Value::Array(s)) if s.is_empty() => return CardVerdict::Unsigned,
        Some(Value::Array(s)) => s.clone(),
        Some(_) => return malformed("signatures is not an array".into()),
    };
    let declared = match declared_did(&card) {
        Ok(d) => d,
        Err(reason) => return malformed(reason),
    };
    let payload = match signing_payload(&card) {
        Ok(p) => p,
        Err(reason) => return malformed(reason),
    };
    let payload_b64 = URL_SAFE_NO_PAD.encode(payload);
    let mut mismatch = None;
    let mut first_failure = None;
    for (index, signature) in signatures.iter().enumerate() {
        match verify_one(index, signature, &payload_b64) {
            Ok(signer) => match &declared {
                Some(d) if *d != signer => {
                    mismatch.get_or_insert(CardVerdict::KeyMismatch {
                        index,
                        signer,
                        declared: d.clone(),
                    });
                }
                _ => return CardVerdict::Verified { did: signer },
            },
            Err(verdict) => {
                first_failure.get_or_insert(verdict);
            }
        }
    }
    mismatch.or(first_failure).unwrap_or(CardVerdict::Unsigned)
}

/// The `did` of the identity extension, if the card has one.
fn declared_did(card: &Map<String, Value>) -> Result<Option<String>, String> {
    let extensions = card
        .get("capabilities")
        .and_then(|c| c.get("extensions"))
        .and_then(Value::as_array);
    let mut found = None;
    for e in extensions.into_iter().flatten() {
        if e.get("uri").and_then(Value::as_str) == Some(IDENTITY_EXTENSION_URI) {
            if found.is_some() {
                return Err("the identity extension is given more than once".into());
            }
            let did = e
                .get("params")
                .and_then(|p| p.get("did"))
                .and_then(Value::as_str)
                .ok_or("the identity extension has no params.did")?;
            found = Some(did.to_owned());
        }
    }
    Ok(found)
}

fn verify_one(index: usize, signature: &Value, payload_b64: &str) -> Result<String, CardVerdict> {
    let bad = |reason: String| CardVerdict::BadSignature { index, reason };
    let protected = signature
        .get("protected")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no protected header".into()))?;
    let sig = signature
        .get("signature")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no signature".into()))?;
    let header_bytes = URL_SAFE_NO_PAD
        .decode(protected)
        .map_err(|e| bad(format!("protected header is not base64url: {e}")))?;
    let (header, duplicates) =
        parse_with_duplicates(&header_bytes).map_err(|e| bad(format!("protected header: {e}")))?;
    if !duplicates.is_empty() {
        return Err(bad("protected header repeats a member".into()));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("protected header has no alg".into()))?;
    if alg != JWS_ALG {
        return Err(CardVerdict::UnsupportedAlgorithm {
            index,
            alg: alg.to_owned(),
        });
    }
    if header.get("crit").is_some() {
        return Err(bad("critical header extensions are not supported".into()));
    }
    if header.get("b64").is_some() {
        return Err(bad("the b64 header parameter is not supported".into()));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("protected header has no kid".into()))?;
    let (did, key) = resolve_did_key(kid).map_err(bad)?;
    if did_key(&key) != did {
        return Err(bad(format!(
            "{did:?} is not the canonical did:key of its key"
        )));
    }
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|e| bad(format!("signature is not base64url: {e}")))?;
    let sig_bytes: [u8; 64] = sig_bytes
        .try_into()
        .map_err(|_| bad("an Ed25519 signature is 64 bytes".into()))?;
    let input = format!("{protected}.{payload_b64}");
    key.verify_strict(input.as_bytes(), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| bad("the signature does not match the card".into()))?;
    Ok(did)
}

/// A foreign card mapped to a manifest draft.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedCard {
    /// A manifest document without `source` and `entrypoint` (a card says
    /// nothing about how to run the agent) and with no permissions (a card
    /// never grants any). Add what `missing` names, then parse it with
    /// [`Manifest::from_value`].
    pub manifest_draft: Value,
    /// What the card's signatures say.
    pub verdict: CardVerdict,
    /// Top-level manifest fields the draft lacks (always `source` and
    /// `entrypoint`; `version` or `publisher` when the card's could not be
    /// used).
    pub missing: Vec<String>,
    /// Card fields that were dropped or changed on the way (JSON paths of
    /// the card, with why).
    pub notes: Vec<String>,
}

/// Maps a card (untrusted) into a manifest draft.
///
/// The id is generated: the reversed DNS labels of the first interface's
/// host, then the card's name as a label (`https://agents.example.com/a2a`
/// and `Recipe Agent` give `com.example.agents.recipe-agent`); an IP or
/// missing host gives `imported.<name>`. Skills become tools whose
/// `inputSchema` is `{"type": "object"}` (a card does not describe
/// arguments) and their tags the keywords. Permissions are always empty.
pub fn card_to_manifest(card_json: &[u8]) -> Result<ImportedCard, CardError> {
    let malformed = |m: String| CardError::new(CardErrorKind::Malformed, m);
    if card_json.len() > MAX_CARD_BYTES {
        return Err(CardError::new(
            CardErrorKind::TooLarge,
            format!("the card is over {MAX_CARD_BYTES} bytes"),
        ));
    }
    let verdict = verify_card(card_json);
    let (value, _) = parse_with_duplicates(card_json).map_err(malformed)?;
    let Value::Object(card) = value else {
        return Err(malformed("the card is not a JSON object".into()));
    };
    let mut notes = Vec::new();
    let mut missing = Vec::new();
    let text = |key: &str| card.get(key).and_then(Value::as_str).unwrap_or("");
    let name = clean(text("name"), MAX_NAME_CHARS);
    if name.is_empty() {
        return Err(malformed("the card has no name".into()));
    }
    let host = card
        .get("supportedInterfaces")
        .and_then(Value::as_array)
        .and_then(|i| i.first())
        .and_then(|i| i.get("url"))
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| match u.host() {
            Some(url::Host::Domain(d)) => Some(d.to_ascii_lowercase()),
            _ => None,
        });
    let id = generated_id(host.as_deref(), &name);
    let mut draft = Map::new();
    draft.insert("manifest_version".into(), json!(MANIFEST_VERSION));
    draft.insert("id".into(), json!(id));
    draft.insert("name".into(), json!(name));
    match semver::Version::parse(text("version")) {
        Ok(v) => {
            draft.insert("version".into(), json!(v.to_string()));
        }
        Err(_) => {
            notes.push(format!(
                "version: {:?} is not SemVer; supply one",
                text("version")
            ));
            missing.push("version".into());
        }
    }
    draft.insert(
        "description".into(),
        json!(clean(text("description"), MAX_DESCRIPTION_CHARS)),
    );
    let provider = card.get("provider");
    let organization = provider
        .and_then(|p| p.get("organization"))
        .and_then(Value::as_str)
        .map(|o| clean(o, MAX_NAME_CHARS))
        .filter(|o| !o.is_empty());
    match organization {
        Some(org) => {
            let mut publisher = Map::new();
            publisher.insert("name".into(), json!(org));
            if let Some(url) = provider.and_then(|p| p.get("url")).and_then(Value::as_str) {
                if check_https_url(url).is_ok() {
                    publisher.insert("url".into(), json!(url));
                } else {
                    notes.push(format!(
                        "provider.url: {url:?} is not an https URL; dropped"
                    ));
                }
            }
            draft.insert("publisher".into(), Value::Object(publisher));
        }
        None => missing.push("publisher".into()),
    }
    let mut tools = Vec::new();
    let mut keywords: Vec<String> = Vec::new();
    let skills = card.get("skills").and_then(Value::as_array);
    for (i, skill) in skills.into_iter().flatten().enumerate() {
        let id = skill.get("id").and_then(Value::as_str).unwrap_or("");
        let tool_name = tool_name_from(id);
        if tools.len() >= MAX_TOOLS
            || tool_name.is_empty()
            || tools
                .iter()
                .any(|t: &Value| t.get("name") == Some(&json!(tool_name)))
        {
            notes.push(format!("skills[{i}]: no usable, unique id; dropped"));
            continue;
        }
        let mut tool = Map::new();
        tool.insert("name".into(), json!(tool_name));
        let title = skill
            .get("name")
            .and_then(Value::as_str)
            .map(|t| clean(t, 128))
            .filter(|t| !t.is_empty());
        if let Some(title) = title {
            tool.insert("title".into(), json!(title));
        }
        let description = skill
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        tool.insert(
            "description".into(),
            json!(clean(description, MAX_TOOL_DESCRIPTION)),
        );
        tool.insert("inputSchema".into(), json!({ "type": "object" }));
        tools.push(Value::Object(tool));
        for tag in skill
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let tag = clean(tag, MAX_KEYWORD_CHARS);
            if !tag.is_empty() && !keywords.contains(&tag) && keywords.len() < MAX_KEYWORDS {
                keywords.push(tag);
            }
        }
    }
    draft.insert("permissions".into(), json!([]));
    draft.insert("capabilities".into(), json!([]));
    draft.insert("keywords".into(), json!(keywords));
    draft.insert("tools".into(), Value::Array(tools));
    missing.splice(0..0, ["source".to_owned(), "entrypoint".to_owned()]);
    Ok(ImportedCard {
        manifest_draft: Value::Object(draft),
        verdict,
        missing,
        notes,
    })
}

/// Control characters removed, trimmed, cut to `max` characters.
fn clean(text: &str, max: usize) -> String {
    let kept: String = text.chars().filter(|c| !c.is_control()).collect();
    kept.trim()
        .chars()
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A label of `[a-z0-9-]`, at most 63 characters.
fn label(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out: String = out.chars().take(63).collect();
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        "agent".into()
    } else {
        out
    }
}

fn generated_id(host: Option<&str>, name: &str) -> String {
    let name = label(name);
    let prefix: Vec<String> = match host {
        Some(h) => h.split('.').rev().map(label).collect(),
        None => vec!["imported".into()],
    };
    let mut labels = prefix;
    labels.push(name);
    let mut id = labels.join(".");
    while id.len() > 253 && labels.len() > 2 {
        labels.remove(0);
        id = labels.join(".");
    }
    if check_id(&id).is_ok() {
        id
    } else {
        format!("imported.{}", label(&id))
    }
}

fn tool_name_from(id: &str) -> String {
    let name: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    if valid_tool_name(&name) && !has_control(&name) {
        name
    } else {
        String::new()
    }
}
