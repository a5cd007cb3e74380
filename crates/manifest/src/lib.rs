//! # amai-manifest
//!
//! Agent manifests (version 1) and everything that reads them without
//! running anything:
//!
//! - [`manifest`]: the manifest format, parsed with every error reported at
//!   its JSON path; registry-derived fields stripped and listed; a normal
//!   form and its canonical digest.
//! - [`permission`]: the permission taxonomy (`llm:`, `network:egress:`,
//!   `fs:write:`, `messages:send`, `jail:limits:`), sets, and approval that
//!   can only narrow a request.
//! - [`jail`]: approved permissions to an `amai_jail_spec::JailSpec`,
//!   exactly and nothing more.
//! - [`tools`]: MCP tool definitions, as `tools/list` shows them.
//! - [`scan`]: discovery of `amai-manifest.json` files in a tree, bounded,
//!   without following symbolic links or executing anything.
//! - [`registry`]: registry indexes, entry by entry, untrusted.
//! - [`card`]: A2A v1.0 Agent Cards: export, JWS (EdDSA, `did:key`)
//!   signing and verification, import as a manifest draft.
//! - [`did`]: `did:key` for Ed25519 keys.
//! - [`publication`]: the check of a manifest as a `catalog.published`
//!   event carries it, shared by the gateway and the catalogue.
//!
//! The crate is pure: no NATS, no tokio, no Docker, no network. The format
//! is documented in `docs/manifest.md` and `schemas/agent-manifest.schema.json`.

#![deny(missing_docs)]

pub mod card;
pub mod did;
pub mod jail;
mod json;
pub mod manifest;
pub mod permission;
pub mod publication;
pub mod registry;
pub mod scan;
pub mod tools;

pub use card::{
    agent_card, card_to_manifest, sign_card, verify_card, AgentCard, CardError, CardErrorKind,
    CardVerdict, ImportedCard,
};
pub use jail::{jail_spec, Confinement, PlanError, PlanErrorKind};
pub use manifest::{
    IgnoredField, Manifest, ManifestError, ManifestErrors, Parsed, Publisher, Resources, Source,
};
pub use permission::{
    approve, ApprovalError, ApprovalErrorKind, LlmProvider, Permission, PermissionError,
    PermissionErrorKind, PermissionSet,
};
pub use publication::{check_publication, PublicationError, PublicationErrorKind};
pub use registry::{read_index, IndexError, IndexErrorKind, IndexReport};
pub use scan::{scan, ScanReport};
pub use tools::Tool;
