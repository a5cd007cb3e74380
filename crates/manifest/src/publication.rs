//! A publication: a manifest as a `catalog.published` event carries it (its
//! JSON bytes plus the id, version and digest the event claims). The gateway
//! checks a publication before appending it and the catalogue checks it again
//! before indexing it, with this one function, so a publication that skipped
//! the gateway (a rogue NATS publisher) is judged by the same rules.

use crate::manifest::{Manifest, ManifestErrors, Parsed};

/// Why a publication is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicationError {
    /// The manifest does not parse: every error with its JSON path.
    #[error("the manifest is invalid:\n{0}")]
    Invalid(ManifestErrors),
    /// The id or version the event names is not the manifest's.
    #[error("the event names {claimed} but the manifest is {actual}")]
    Mismatch {
        /// `<id>@<version>` as the event names it.
        claimed: String,
        /// `<id>@<version>` of the manifest.
        actual: String,
    },
    /// The digest the event carries is not the manifest's canonical digest.
    #[error(
        "the event's manifest_sha256 is {claimed}, the manifest's canonical digest is {actual}"
    )]
    DigestMismatch {
        /// Hex of the claimed digest.
        claimed: String,
        /// Hex of the computed digest.
        actual: String,
    },
}

/// What went wrong with a publication, to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicationErrorKind {
    /// [`PublicationError::Invalid`].
    Invalid,
    /// [`PublicationError::Mismatch`].
    Mismatch,
    /// [`PublicationError::DigestMismatch`].
    DigestMismatch,
}

impl PublicationError {
    /// The kind of error.
    pub fn kind(&self) -> PublicationErrorKind {
        match self {
            PublicationError::Invalid(_) => PublicationErrorKind::Invalid,
            PublicationError::Mismatch { .. } => PublicationErrorKind::Mismatch,
            PublicationError::DigestMismatch { .. } => PublicationErrorKind::DigestMismatch,
        }
    }

    /// The JSON paths of the manifest's errors (empty for the other kinds).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            PublicationError::Invalid(errors) => errors.paths(),
            _ => Vec::new(),
        }
    }
}

/// Checks a publication: `manifest_json` parses, and `id`, `version` and
/// `sha256` are its id, version and canonical digest. Registry-derived
/// fields in the JSON are stripped (listed in [`Parsed::ignored`]): the
/// catalogue never carries them.
pub fn check_publication(
    manifest_json: &[u8],
    id: &str,
    version: &str,
    sha256: &[u8],
) -> Result<Parsed, PublicationError> {
    let parsed = Manifest::from_json(manifest_json).map_err(PublicationError::Invalid)?;
    let m = &parsed.manifest;
    let actual_version = m.version.to_string();
    if m.id != id || actual_version != version {
        return Err(PublicationError::Mismatch {
            claimed: format!("{id}@{version}"),
            actual: format!("{}@{actual_version}", m.id),
        });
    }
    let digest = m.canonical_digest();
    if digest.as_slice() != sha256 {
        return Err(PublicationError::DigestMismatch {
            claimed: hex_of(sha256),
            actual: hex_of(&digest),
        });
    }
    Ok(parsed)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> serde_json::Value {
        serde_json::json!({
            "manifest_version": 1,
            "id": "com.example.scout",
            "name": "Scout",
            "version": "1.2.0",
            "publisher": {"name": "Example"},
            "source": {"image": "busybox"},
            "entrypoint": ["sh", "-c", "true"],
            "trust_score": 100
        })
    }

    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("json")
    }

    #[test]
    fn a_matching_publication_is_accepted_without_its_registry_fields() {
        let json = bytes(&manifest());
        let digest = Manifest::from_json(&json)
            .expect("valid")
            .manifest
            .canonical_digest();
        let parsed =
            check_publication(&json, "com.example.scout", "1.2.0", &digest).expect("accepted");
        assert_eq!(parsed.ignored.len(), 1, "trust_score is stripped");
        assert!(parsed.manifest.to_json_value().get("trust_score").is_none());
    }

    #[test]
    fn a_publication_naming_another_id_version_or_digest_is_refused() {
        let json = bytes(&manifest());
        let digest = Manifest::from_json(&json)
            .expect("valid")
            .manifest
            .canonical_digest();
        let other_id = check_publication(&json, "com.example.other", "1.2.0", &digest);
        assert_eq!(
            other_id.map(|_| ()).expect_err("refused").kind(),
            PublicationErrorKind::Mismatch
        );
        let other_version = check_publication(&json, "com.example.scout", "1.2.1", &digest);
        assert_eq!(
            other_version.map(|_| ()).expect_err("refused").kind(),
            PublicationErrorKind::Mismatch
        );
        let other_digest = check_publication(&json, "com.example.scout", "1.2.0", &[0u8; 32]);
        assert_eq!(
            other_digest.map(|_| ()).expect_err("refused").kind(),
            PublicationErrorKind::DigestMismatch
        );
    }

    #[test]
    fn an_invalid_manifest_is_refused_with_its_paths() {
        let mut m = manifest();
        m["permissions"] = serde_json::json!(["network:egress:*"]);
        m["version"] = serde_json::json!("one");
        let err = check_publication(&bytes(&m), "com.example.scout", "1.2.0", &[0u8; 32])
            .map(|_| ())
            .expect_err("refused");
        assert_eq!(err.kind(), PublicationErrorKind::Invalid);
        let paths = err.paths();
        assert!(paths.contains(&"version"), "{paths:?}");
        assert!(paths.contains(&"permissions[0]"), "{paths:?}");
    }
}
