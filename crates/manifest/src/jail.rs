//! Approved permissions to a jail spec: exactly what was approved, nothing
//! else.
//!
//! | approved | jail spec |
//! | --- | --- |
//! | no `llm:*`, no `network:egress:*` | `"network": "none"`, no `llm` |
//! | `llm:*` only | `"network": "llm-only"` |
//! | `network:egress:h:p`, ... | `"network": {"allow": ["h:p", ...]}` (exactly those) |
//! | `llm:openai` / `llm:anthropic` / both | `"llm": {"create": {"mode": "record", "upstream": "openai" / "anthropic" / "all"}}` |
//! | `fs:write:<glob>`, ... | `"diff_policy": {"writable": [<glob>, ...]}`; none approved: `[]`, every change is a violation |
//! | `jail:limits:<k>=<v>` | `"limits": {<k>: <v>}` over the jail spec's defaults |
//! | `messages:send` | nothing in the jail (a bus-level grant) |
//!
//! [`Confinement::Quarantined`] forces `"network": "none"` and no LLM session
//! whatever was approved. The manifest's `resources` are only what the agent
//! asks for; the jail gets the jail spec's defaults and the approved
//! `jail:limits:` values. The spec is built as JSON and parsed by
//! [`JailSpec::from_value`], so every jail-spec rule applies to it.

use amai_jail_spec::{JailSpec, SpecErrors};
use serde_json::{json, Map, Value};

use crate::manifest::{check_image_ref, Manifest};
use crate::permission::{LlmProvider, Permission, PermissionSet};

/// How tightly the jail is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// The approved permissions apply.
    Normal,
    /// No network and no LLM, whatever was approved (filesystem and limits
    /// still follow the approval).
    Quarantined,
}

/// What kind of plan failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanErrorKind {
    /// The approval holds permissions the manifest did not request.
    NotRequested,
    /// The image is not pinned by digest.
    ImageNotPinned,
    /// The jail spec refused the result.
    Spec,
}

/// A jail spec that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Approved but never requested (canonical strings).
    #[error("approved but not requested by the manifest: {}", .0.join(", "))]
    NotRequested(Vec<String>),
    /// The image argument is not `name@sha256:<hex>` or `sha256:<hex>`.
    #[error("{0}")]
    ImageNotPinned(String),
    /// The jail spec refused the planned spec.
    #[error("the planned jail spec is invalid:\n{0}")]
    Spec(#[from] SpecErrors),
}

impl PlanError {
    /// What kind of failure it is.
    pub fn kind(&self) -> PlanErrorKind {
        match self {
            PlanError::NotRequested(_) => PlanErrorKind::NotRequested,
            PlanError::ImageNotPinned(_) => PlanErrorKind::ImageNotPinned,
            PlanError::Spec(_) => PlanErrorKind::Spec,
        }
    }
}

/// Whether `image` names one immutable image: a reference pinned by digest
/// (`name[:tag]@sha256:<64 hex>`) or a bare image id (`sha256:<64 hex>`, how
/// a locally built image is named).
pub fn is_pinned(image: &str) -> bool {
    let hex64 = |h: &str| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if let Some(id) = image.strip_prefix("sha256:") {
        return hex64(id);
    }
    image.contains("@sha256:") && check_image_ref(image).is_ok()
}

/// The jail spec JSON for `manifest` run from `image` under `approved`
/// (before the jail spec parses it).
pub fn jail_spec_value(
    manifest: &Manifest,
    image: &str,
    approved: &PermissionSet,
    confinement: Confinement,
) -> Value {
    let mut egress = Vec::new();
    let mut openai = false;
    let mut anthropic = false;
    let mut writable = Vec::new();
    let mut limits = Map::new();
    for permission in approved {
        match permission {
            Permission::Llm(LlmProvider::OpenAi) => openai = true,
            Permission::Llm(LlmProvider::Anthropic) => anthropic = true,
            Permission::NetworkEgress(endpoint) => egress.push(endpoint.to_string()),
            Permission::FsWrite(glob) => writable.push(glob.clone()),
            Permission::JailLimit(limit) => {
                limits.insert(limit.key().into(), limit.spec_value());
            }
            Permission::MessagesSend => {}
        }
    }
    if confinement == Confinement::Quarantined {
        egress.clear();
        openai = false;
        anthropic = false;
    }
    let upstream = match (openai, anthropic) {
        (true, true) => Some("all"),
        (true, false) => Some("openai"),
        (false, true) => Some("anthropic"),
        (false, false) => None,
    };
    let network = match (egress.is_empty(), upstream.is_some()) {
        (true, false) => json!("none"),
        (true, true) => json!("llm-only"),
        (false, _) => json!({ "allow": egress }),
    };
    let mut spec = Map::new();
    spec.insert("image".into(), json!(image));
    spec.insert("command".into(), json!(manifest.entrypoint));
    spec.insert("limits".into(), Value::Object(limits));
    spec.insert("network".into(), network);
    if let Some(upstream) = upstream {
        spec.insert(
            "llm".into(),
            json!({ "create": { "mode": "record", "upstream": upstream } }),
        );
    }
    spec.insert(
        "diff_policy".into(),
        json!({ "writable": writable, "allow_setuid": false }),
    );
    Value::Object(spec)
}

/// Plans the jail of `manifest`: `image` is the installed, digest-pinned
/// reference, `approved` what the operator approved (a subset of the
/// manifest's permissions, checked again here).
pub fn jail_spec(
    manifest: &Manifest,
    image: &str,
    approved: &PermissionSet,
    confinement: Confinement,
) -> Result<JailSpec, PlanError> {
    let extra = approved.difference(&manifest.permissions);
    if !extra.is_empty() {
        return Err(PlanError::NotRequested(extra.to_strings()));
    }
    if !is_pinned(image) {
        return Err(PlanError::ImageNotPinned(format!(
            "{image:?} is not pinned by digest (name@sha256:<64 hex> or sha256:<64 hex>)"
        )));
    }
    let value = jail_spec_value(manifest, image, approved, confinement);
    Ok(JailSpec::from_value(&value)?)
}
