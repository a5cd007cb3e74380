//! The [`Manifest`]: the first record of an export file, UTF-8 JSON described
//! by `schemas/export.schema.json`. It names the format and its version, when
//! and from which deployment the file was written, what was asked for (the
//! [`Selection`]), and per stream the range of messages the file holds
//! ([`StreamRange`]), plus how many blobs follow.
//!
//! Parsing checks, in this order, `format` ([`ExportErrorKind::UnknownFormat`]),
//! `version` ([`ExportErrorKind::UnsupportedVersion`], so a newer file with new
//! fields is reported as newer, not as malformed), then the whole shape with
//! unknown fields refused and every rule of [`Manifest::validate`]
//! ([`ExportErrorKind::InvalidManifest`]).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{ExportError, ExportErrorKind};

/// The manifest's `format`.
pub const FORMAT: &str = "amai-export";
/// The manifest's `version` this crate writes and reads.
pub const VERSION: u32 = 1;

/// The first record of an export file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// When the export was written (RFC 3339).
    pub created_at: String,
    /// The deployment the streams come from.
    pub deployment: Deployment,
    /// What was asked for.
    pub selection: Selection,
    /// Per stream, the messages the file holds, in the order the streams
    /// were exported. Every stream a message names is listed, once.
    pub streams: Vec<StreamRange>,
    /// How many blobs the file holds (after the messages).
    pub blobs: u64,
    /// Blobs (lowercase hex SHA-256, ascending) that exported events
    /// reference but the deployment's blob store did not hold.
    pub missing_blobs: Vec<String>,
}

/// Which deployment an export comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The trust root (the first operator's Ed25519 public key), 64 lowercase hex.
    pub trust_root: String,
    /// 16 lowercase hex: the first 8 bytes of SHA-256(trust root), the name
    /// the deployment goes by elsewhere ([`deployment_id`]).
    pub id: String,
}

impl Deployment {
    /// The deployment of a trust root.
    pub fn from_trust_root(trust_root: &[u8; 32]) -> Self {
        Self {
            trust_root: hex::encode(trust_root),
            id: deployment_id(trust_root),
        }
    }
}

/// 16 lowercase hex characters naming a deployment: the first 8 bytes of
/// SHA-256 of its trust root (as the worker runtime's
/// `PreflightContext::deployment` computes it).
pub fn deployment_id(trust_root: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(trust_root)[..8])
}

/// What `amai export` was asked for. Empty lists and `None` mean "no such
/// restriction".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Whole streams asked for (empty with no aggregates: every stream).
    pub streams: Vec<String>,
    /// Aggregates asked for (`kind/id`), each within its own stream.
    pub aggregates: Vec<String>,
    /// Lowest stream sequence (inclusive), in every selected stream.
    #[serde(deserialize_with = "Option::deserialize")]
    pub from_seq: Option<u64>,
    /// Highest stream sequence (inclusive), in every selected stream.
    #[serde(deserialize_with = "Option::deserialize")]
    pub to_seq: Option<u64>,
    /// Earliest publish time (inclusive, RFC 3339).
    #[serde(deserialize_with = "Option::deserialize")]
    pub since: Option<String>,
    /// Latest publish time (inclusive, RFC 3339).
    #[serde(deserialize_with = "Option::deserialize")]
    pub until: Option<String>,
}

/// The messages of one stream in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRange {
    /// The JetStream stream, e.g. `AMAI_AGENTS`.
    pub stream: String,
    /// Sequence of its first message in the file (0 when it has none).
    pub first_seq: u64,
    /// Sequence of its last message in the file (0 when it has none).
    pub last_seq: u64,
    /// How many of its messages the file holds.
    pub messages: u64,
    /// Whether the file holds the whole stream as it was at export time:
    /// every message from sequence 1 to the stream's last sequence. An
    /// auditor reports anything else as partial.
    pub complete: bool,
}

impl StreamRange {
    /// Whether the messages are contiguous and start at sequence 1 (or the
    /// range is empty): what an import can reproduce sequence for sequence.
    pub fn starts_at_one_without_gaps(&self) -> bool {
        self.messages == 0 || (self.first_seq == 1 && self.messages == self.last_seq)
    }
}

fn invalid(msg: impl Into<String>) -> ExportError {
    ExportError::new(ExportErrorKind::InvalidManifest, msg)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

impl Manifest {
    /// A manifest of format [`FORMAT`] version [`VERSION`] created at `created_at`.
    pub fn new(
        created_at: OffsetDateTime,
        deployment: Deployment,
        selection: Selection,
        streams: Vec<StreamRange>,
        blobs: u64,
        missing_blobs: Vec<String>,
    ) -> Self {
        Self {
            format: FORMAT.to_string(),
            version: VERSION,
            // Formatting a valid OffsetDateTime as RFC 3339 fails only for
            // years outside 0..=9999, which `now` never is.
            created_at: created_at.format(&Rfc3339).unwrap_or_default(),
            deployment,
            selection,
            streams,
            blobs,
            missing_blobs,
        }
    }

    /// The stream range of `stream`.
    pub fn stream(&self, stream: &str) -> Option<&StreamRange> {
        self.streams.iter().find(|s| s.stream == stream)
    }

    /// Total messages over every stream.
    pub fn messages(&self) -> u64 {
        self.streams.iter().map(|s| s.messages).sum()
    }

    /// The JSON bytes of the manifest record.
    pub fn to_json(&self) -> Result<Vec<u8>, ExportError> {
        self.validate()?;
        serde_json::to_vec(self).map_err(|e| invalid(format!("manifest does not serialize: {e}")))
    }

    /// Parses and validates the manifest record.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ExportError> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
        let format = value.get("format").and_then(|f| f.as_str());
        if format != Some(FORMAT) {
            return Err(ExportError::new(
                ExportErrorKind::UnknownFormat,
                format!(
                    "the manifest's format is {}, not {FORMAT:?}: this is not an amai export file",
                    format.map_or("missing".to_string(), |f| format!("{f:?}"))
                ),
            ));
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION) => {}
            other => {
                return Err(ExportError::new(
                    ExportErrorKind::UnsupportedVersion,
                    format!(
                    "export format version {} is not supported: this build reads version {VERSION}",
                    other.map_or("missing".to_string(), |v| v.to_string())
                ),
                ))
            }
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
            invalid(format!(
                "the manifest does not have the documented shape: {e}"
            ))
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule the schema cannot say: times, hex, the deployment id
    /// against its trust root, unique streams, consistent ranges.
    pub fn validate(&self) -> Result<(), ExportError> {
        if self.format != FORMAT {
            return Err(ExportError::new(
                ExportErrorKind::UnknownFormat,
                format!("format must be {FORMAT:?}"),
            ));
        }
        if self.version != VERSION {
            return Err(ExportError::new(
                ExportErrorKind::UnsupportedVersion,
                format!("version must be {VERSION}"),
            ));
        }
        if parse_rfc3339(&self.created_at).is_none() {
            return Err(invalid(format!(
                "created_at {:?} is not RFC 3339",
                self.created_at
            )));
        }
        let d = &self.deployment;
        let root: [u8; 32] = hex::decode(&d.trust_root)
            .ok()
            .filter(|_| is_lower_hex(&d.trust_root, 64))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| invalid("deployment.trust_root must be 64 lowercase hex characters"))?;
        if d.id != deployment_id(&root) {
            return Err(invalid(format!(
                "deployment.id {:?} is not the id of its trust root ({})",
                d.id,
                deployment_id(&root)
            )));
        }
        for (name, t) in [
            ("since", &self.selection.since),
            ("until", &self.selection.until),
        ] {
            if let Some(t) = t {
                if parse_rfc3339(t).is_none() {
                    return Err(invalid(format!("selection.{name} {t:?} is not RFC 3339")));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for s in &self.streams {
            if s.stream.is_empty() {
                return Err(invalid("a stream range has an empty stream name"));
            }
            if !seen.insert(s.stream.as_str()) {
                return Err(invalid(format!("stream {} is listed twice", s.stream)));
            }
            let consistent = if s.messages == 0 {
                s.first_seq == 0 && s.last_seq == 0
            } else {
                s.first_seq >= 1
                    && s.first_seq <= s.last_seq
                    && s.messages <= s.last_seq - s.first_seq + 1
            };
            if !consistent {
                return Err(invalid(format!(
                    "stream {}: {} messages cannot lie in sequences {}..={}",
                    s.stream, s.messages, s.first_seq, s.last_seq
                )));
            }
            if s.complete && !s.starts_at_one_without_gaps() {
                return Err(invalid(format!(
                    "stream {} is marked complete but its {} messages are not sequences 1..={}",
                    s.stream, s.messages, s.last_seq
                )));
            }
        }
        let mut previous: Option<&str> = None;
        for m in &self.missing_blobs {
            if !is_lower_hex(m, 64) {
                return Err(invalid(format!(
                    "missing_blobs entry {m:?} is not a lowercase hex SHA-256"
                )));
            }
            if previous.is_some_and(|p| p >= m.as_str()) {
                return Err(invalid("missing_blobs must be ascending and unique"));
            }
            previous = Some(m);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    pub(crate) fn sample() -> Manifest {
        Manifest::new(
            OffsetDateTime::UNIX_EPOCH,
            Deployment::from_trust_root(&[7u8; 32]),
            Selection {
                streams: vec!["AMAI_AGENTS".into()],
                aggregates: vec!["agent/abc".into()],
                from_seq: Some(1),
                to_seq: Some(9),
                since: Some("2026-12-01T00:00:00Z".into()),
                until: None,
            },
            vec![
                StreamRange {
                    stream: "AMAI_AGENTS".into(),
                    first_seq: 1,
                    last_seq: 3,
                    messages: 3,
                    complete: true,
                },
                StreamRange {
                    stream: "AMAI_AUDIT".into(),
                    first_seq: 2,
                    last_seq: 5,
                    messages: 2,
                    complete: false,
                },
            ],
            1,
            vec!["ab".repeat(32)],
        )
    }

    #[test]
    fn round_trips_through_json() {
        let m = sample();
        let json = m.to_json().expect("json");
        assert_eq!(Manifest::from_json(&json).expect("parse"), m);
    }

    #[test]
    fn the_deployment_id_is_the_first_eight_bytes_of_the_trust_roots_sha256() {
        let root = [1u8; 32];
        let d = Deployment::from_trust_root(&root);
        assert_eq!(d.id.len(), 16);
        assert_eq!(d.id, hex::encode(&Sha256::digest(root)[..8]));
        assert_eq!(d.trust_root, hex::encode(root));
    }

    fn with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = serde_json::to_value(sample()).expect("value");
        f(&mut v);
        serde_json::to_vec(&v).expect("bytes")
    }

    fn kind_of(bytes: &[u8]) -> ExportErrorKind {
        Manifest::from_json(bytes).expect_err("refused").kind()
    }

    #[test]
    fn format_version_and_shape_are_checked_in_that_order() {
        assert_eq!(
            kind_of(&with(|v| v["format"] = "tarball".into())),
            ExportErrorKind::UnknownFormat
        );
        assert_eq!(
            kind_of(&with(|v| {
                v["version"] = 2.into();
                v["a_field_of_version_2"] = 1.into();
            })),
            ExportErrorKind::UnsupportedVersion
        );
        assert_eq!(
            kind_of(&with(|v| v["extra"] = 1.into())),
            ExportErrorKind::InvalidManifest
        );
        assert_eq!(kind_of(b"{not json"), ExportErrorKind::InvalidManifest);
    }

    #[test]
    fn rules_beyond_the_shape_are_checked() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("time", with(|v| v["created_at"] = "yesterday".into())),
            (
                "root",
                with(|v| v["deployment"]["trust_root"] = "AB".into()),
            ),
            (
                "id",
                with(|v| v["deployment"]["id"] = "0000000000000000".into()),
            ),
            ("range", with(|v| v["streams"][0]["messages"] = 4.into())),
            (
                "complete",
                with(|v| v["streams"][1]["complete"] = true.into()),
            ),
            (
                "twice",
                with(|v| v["streams"][1]["stream"] = "AMAI_AGENTS".into()),
            ),
            ("missing", with(|v| v["missing_blobs"][0] = "xyz".into())),
            ("since", with(|v| v["selection"]["since"] = "soon".into())),
        ];
        for (what, bytes) in cases {
            assert_eq!(kind_of(&bytes), ExportErrorKind::InvalidManifest, "{what}");
        }
    }

    /// The schema's `required` and `properties` of an object, resolving `$ref`.
    fn object_schema<'a>(schema: &'a Value, node: &'a Value) -> (&'a Value, Vec<String>) {
        let node = match node.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                &schema["$defs"][name]
            }
            None => node,
        };
        let required = node["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        (node, required)
    }

    /// Checks that `value`'s keys are exactly the schema's properties, every
    /// required one present, recursively for nested objects and arrays of
    /// objects.
    fn check_against(schema: &Value, node: &Value, value: &Value, path: &str) {
        let (node, required) = object_schema(schema, node);
        let props = node["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{path}: schema has no properties"));
        assert_eq!(
            node["additionalProperties"],
            Value::Bool(false),
            "{path}: the schema must refuse unknown fields like the parser"
        );
        let obj = value.as_object().expect("an object");
        let keys: BTreeSet<&String> = obj.keys().collect();
        let schema_keys: BTreeSet<&String> = props.keys().collect();
        assert_eq!(keys, schema_keys, "{path}: fields vs schema properties");
        for r in &required {
            assert!(obj.contains_key(r), "{path}: required {r} missing");
        }
        for (k, v) in obj {
            let sub = &props[k];
            if v.is_object() {
                check_against(schema, sub, v, &format!("{path}.{k}"));
            } else if let Some(items) = v.as_array() {
                let item_schema = &object_schema(schema, sub).0["items"];
                for item in items.iter().filter(|i| i.is_object()) {
                    check_against(schema, item_schema, item, &format!("{path}.{k}[]"));
                }
            }
        }
    }

    /// No JSON-schema validator is in the workspace: the written manifest's
    /// field set is checked against the schema's `required`/`properties`
    /// (and its `format`/`version` constants).
    #[test]
    fn a_written_manifest_has_exactly_the_fields_of_the_schema() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../schemas/export.schema.json"))
                .expect("the schema is JSON");
        let written: Value =
            serde_json::from_slice(&sample().to_json().expect("json")).expect("manifest JSON");
        check_against(&schema, &schema, &written, "manifest");
        assert_eq!(schema["properties"]["format"]["const"], FORMAT);
        assert_eq!(schema["properties"]["version"]["const"], VERSION);
        // Every required field of the schema is required by the parser too.
        let (_, required) = object_schema(&schema, &schema);
        for r in required {
            let bytes = with(|v| {
                v.as_object_mut().expect("object").remove(&r);
            });
            assert!(Manifest::from_json(&bytes).is_err(), "{r} is required");
        }
        for (object, node) in [
            ("deployment", &schema["$defs"]["deployment"]),
            ("selection", &schema["$defs"]["selection"]),
        ] {
            let (_, required) = object_schema(&schema, node);
            for r in required {
                let bytes = with(|v| {
                    v[object].as_object_mut().expect("object").remove(&r);
                });
                assert!(
                    Manifest::from_json(&bytes).is_err(),
                    "{object}.{r} is required"
                );
            }
        }
    }
}
