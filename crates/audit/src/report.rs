//! The audit report: what [`crate::Auditor::finish`] returns and what
//! `amai audit verify` prints. This module owns the report's shape (it
//! serializes to `schemas/audit-report.schema.json`), the closed lists of
//! failure kinds ([`FailureKind`]) and partial reasons ([`PartialKind`]), the
//! evidence classes ([`Evidence`]) and their exit codes, and the human
//! summary.

use std::fmt::Write as _;

use serde::Serialize;

use crate::input::Scope;

/// Exit code of an authoritative report.
pub const EXIT_AUTHORITATIVE: u8 = 0;
/// Exit code of a report with at least one failure.
pub const EXIT_INVALID: u8 = 1;
/// Exit code the CLI uses for unusable input (never produced by a report).
pub const EXIT_UNUSABLE_INPUT: u8 = 2;
/// Exit code of a report that is valid but not authoritative.
pub const EXIT_PARTIAL: u8 = 3;

/// The version of the report format (`version` in the JSON).
pub const REPORT_VERSION: u32 = 1;

/// How much the evidence proves. Ordered from best to worst, so the class of
/// a whole is the maximum of its parts' classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Complete, every check passed, every event covered by a verified
    /// checkpoint signed by an endorsed key (and witnessed, if required).
    Authoritative,
    /// Nothing failed, but something could not be established: a selection,
    /// context outside the input, events not (yet) covered, documented gaps.
    Partial,
    /// At least one failure.
    Invalid,
}

impl Evidence {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Authoritative => "authoritative",
            Evidence::Partial => "partial",
            Evidence::Invalid => "invalid",
        }
    }

    /// The exit code of `amai audit verify` for this class.
    pub fn exit_code(self) -> u8 {
        match self {
            Evidence::Authoritative => EXIT_AUTHORITATIVE,
            Evidence::Invalid => EXIT_INVALID,
            Evidence::Partial => EXIT_PARTIAL,
        }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What failed. Each failure names the stream and sequence where it is
/// reported, and the event where it is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A stream sequence inside the range given holds no message (deleted),
    /// and no verified checkpoint documents it as a gap.
    MissingEvent,
    /// A message's stream sequence repeats or goes backwards.
    OutOfOrder,
    /// Not a decodable, canonically encoded, well-formed event.
    Malformed,
    /// The signature does not verify against the carried key.
    BadSignature,
    /// The event is stored on another subject or stream than its aggregate's.
    WrongAggregate,
    /// The event's `aggregate_seq` is not the next one of its aggregate.
    SequenceGap,
    /// The event's `prev_hash` is not the hash of the previous event.
    ChainBroken,
    /// The signing key is not the signer's key at that position (or the
    /// foreign signer is not a registered identity).
    UnknownKey,
    /// The signer (or the identity) was revoked at or before that position.
    RevokedKey,
    /// The identity signed with a key it had rotated out.
    RotatedKey,
    /// The signer may not append this event there (kind, scope, endorsement).
    NotPermitted,
    /// The payload breaks a domain rule of the core.
    RuleViolation,
    /// Two events of one stream carry the same id.
    DuplicateEventId,
    /// The event's `causation_id` names no event, and the input is complete.
    DanglingCausation,
    /// A checkpoint's note is not a well-formed C2SP checkpoint note.
    CheckpointMalformed,
    /// A checkpoint's note is not signed by the key that signed its event.
    CheckpointBadSignature,
    /// A checkpoint's origin is not `amai/<deployment>/<stream>`.
    CheckpointOriginMismatch,
    /// A checkpoint event's fields differ from its signed note.
    CheckpointFieldMismatch,
    /// A checkpoint's size does not grow past the previous one of its chain.
    CheckpointShrank,
    /// The root recomputed from the stream differs from the signed root.
    CheckpointRootMismatch,
    /// A checkpoint lists as a gap a sequence whose message is present.
    CheckpointGapMismatch,
    /// A checkpoint covers more messages than the complete stream holds.
    TruncatedStream,
}

impl FailureKind {
    /// Every kind, in the order of the schema's enum.
    pub const ALL: [FailureKind; 22] = [
        FailureKind::MissingEvent,
        FailureKind::OutOfOrder,
        FailureKind::Malformed,
        FailureKind::BadSignature,
        FailureKind::WrongAggregate,
        FailureKind::SequenceGap,
        FailureKind::ChainBroken,
        FailureKind::UnknownKey,
        FailureKind::RevokedKey,
        FailureKind::RotatedKey,
        FailureKind::NotPermitted,
        FailureKind::RuleViolation,
        FailureKind::DuplicateEventId,
        FailureKind::DanglingCausation,
        FailureKind::CheckpointMalformed,
        FailureKind::CheckpointBadSignature,
        FailureKind::CheckpointOriginMismatch,
        FailureKind::CheckpointFieldMismatch,
        FailureKind::CheckpointShrank,
        FailureKind::CheckpointRootMismatch,
        FailureKind::CheckpointGapMismatch,
        FailureKind::TruncatedStream,
    ];

    /// The stable snake_case name (the JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::MissingEvent => "missing_event",
            FailureKind::OutOfOrder => "out_of_order",
            FailureKind::Malformed => "malformed",
            FailureKind::BadSignature => "bad_signature",
            FailureKind::WrongAggregate => "wrong_aggregate",
            FailureKind::SequenceGap => "sequence_gap",
            FailureKind::ChainBroken => "chain_broken",
            FailureKind::UnknownKey => "unknown_key",
            FailureKind::RevokedKey => "revoked_key",
            FailureKind::RotatedKey => "rotated_key",
            FailureKind::NotPermitted => "not_permitted",
            FailureKind::RuleViolation => "rule_violation",
            FailureKind::DuplicateEventId => "duplicate_event_id",
            FailureKind::DanglingCausation => "dangling_causation",
            FailureKind::CheckpointMalformed => "checkpoint_malformed",
            FailureKind::CheckpointBadSignature => "checkpoint_bad_signature",
            FailureKind::CheckpointOriginMismatch => "checkpoint_origin_mismatch",
            FailureKind::CheckpointFieldMismatch => "checkpoint_field_mismatch",
            FailureKind::CheckpointShrank => "checkpoint_shrank",
            FailureKind::CheckpointRootMismatch => "checkpoint_root_mismatch",
            FailureKind::CheckpointGapMismatch => "checkpoint_gap_mismatch",
            FailureKind::TruncatedStream => "truncated_stream",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind of the core's verification failure (`amai_core::verify`).
    /// The core's `RevokedKey` covers both a rotated-out key and a revoked
    /// identity; [`FailureKind::RotatedKey`] is told apart by the caller.
    pub fn from_core(kind: amai_core::verify::FailureKind) -> Self {
        use amai_core::verify::FailureKind as Core;
        match kind {
            Core::Malformed => FailureKind::Malformed,
            Core::BadSignature => FailureKind::BadSignature,
            Core::WrongAggregate => FailureKind::WrongAggregate,
            Core::Gap => FailureKind::SequenceGap,
            Core::ChainBroken => FailureKind::ChainBroken,
            Core::UnknownKey => FailureKind::UnknownKey,
            Core::RevokedKey => FailureKind::RevokedKey,
            Core::NotPermitted => FailureKind::NotPermitted,
            Core::Invalid => FailureKind::RuleViolation,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why something is partial rather than authoritative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialKind {
    /// The stream was given as a range or a selection, not complete: absent
    /// messages outside it say nothing.
    IncompleteRange,
    /// One of the deployment's streams is not in the input.
    StreamNotInInput,
    /// The aggregate's chain starts before the selection: its link to the
    /// events before, and for identities their keys, are not checked.
    ChainStartOutsideSelection,
    /// A foreign signer's chain (service, operator, endorser, name owner) is
    /// not in the input, or not far enough.
    SignerNotInInput,
    /// The event's `causation_id` names no event of the input, which is not
    /// complete.
    CausationOutsideInput,
    /// The event is after the largest verified checkpoint of its stream.
    NotCovered,
    /// The event is covered only by checkpoints without the required
    /// witness cosignatures.
    NotWitnessed,
    /// The event is covered only by checkpoints whose root could not be
    /// recomputed (the input lacks messages below their size) or whose
    /// signer could not be established.
    CheckpointUnchecked,
    /// A stream sequence with no message that a verified checkpoint lists
    /// as a gap (the message was gone when the audit role read the stream).
    DocumentedGap,
}

impl PartialKind {
    /// Every reason, in the order of the schema's enum.
    pub const ALL: [PartialKind; 9] = [
        PartialKind::IncompleteRange,
        PartialKind::StreamNotInInput,
        PartialKind::ChainStartOutsideSelection,
        PartialKind::SignerNotInInput,
        PartialKind::CausationOutsideInput,
        PartialKind::NotCovered,
        PartialKind::NotWitnessed,
        PartialKind::CheckpointUnchecked,
        PartialKind::DocumentedGap,
    ];

    /// The stable snake_case name (the JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            PartialKind::IncompleteRange => "incomplete_range",
            PartialKind::StreamNotInInput => "stream_not_in_input",
            PartialKind::ChainStartOutsideSelection => "chain_start_outside_selection",
            PartialKind::SignerNotInInput => "signer_not_in_input",
            PartialKind::CausationOutsideInput => "causation_outside_input",
            PartialKind::NotCovered => "not_covered",
            PartialKind::NotWitnessed => "not_witnessed",
            PartialKind::CheckpointUnchecked => "checkpoint_unchecked",
            PartialKind::DocumentedGap => "documented_gap",
        }
    }

    /// The reason named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for PartialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a failing checkpoint says about the stream it checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointFinding {
    /// The stream the checkpoint is of.
    pub stream: String,
    /// Its tree size.
    pub tree_size: u64,
    /// The largest size of an earlier checkpoint of the stream whose root
    /// the input still matches (0: none): the stream diverges in
    /// `matching_size + 1 ..= tree_size`.
    pub matching_size: u64,
    /// The first message of that range known to differ (an invalid event or
    /// a missing sequence), when the input shows one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_suspect_seq: Option<u64>,
    /// For `truncated_stream`: how many messages the stream lacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_messages: Option<u64>,
}

/// One failure: where, what, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The stream where it is reported (for checkpoint failures: AMAI_AUDIT).
    pub stream: String,
    /// The stream sequence where it is reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For a range of sequences (missing events): the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// The event's id, when the message decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The aggregate (from the event, else from the subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<String>,
    /// The event's position in its aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_seq: Option<u64>,
    /// What exactly is wrong.
    pub detail: String,
    /// For checkpoint failures: what they say about the checkpointed stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointFinding>,
}

impl Failure {
    /// A failure of `kind` at `stream`, without position yet.
    pub(crate) fn new(kind: FailureKind, stream: &str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            stream: stream.to_string(),
            seq: None,
            last_seq: None,
            event_id: None,
            aggregate: None,
            aggregate_seq: None,
            detail: detail.into(),
            checkpoint: None,
        }
    }

    /// One line: `<stream>:<seq> <aggregate>#<aggregate_seq> <kind>: <detail>`.
    pub fn line(&self) -> String {
        let mut s = self.stream.clone();
        if let Some(seq) = self.seq {
            let _ = write!(s, ":{seq}");
        }
        if let Some(last) = self.last_seq {
            let _ = write!(s, "..={last}");
        }
        if let Some(agg) = &self.aggregate {
            let _ = write!(s, " {agg}");
            if let Some(n) = self.aggregate_seq {
                let _ = write!(s, "#{n}");
            }
        }
        if let Some(id) = &self.event_id {
            let _ = write!(s, " event {id}");
        }
        let _ = write!(s, " {}: {}", self.kind, self.detail);
        s
    }
}

/// One reason something is partial, for a group of events of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartialFinding {
    /// The reason.
    pub reason: PartialKind,
    /// The stream concerned.
    pub stream: String,
    /// How many events it applies to (0 for reasons about the stream as a
    /// whole, such as `incomplete_range` or `stream_not_in_input`; stream
    /// sequences for `documented_gap`).
    pub events: u64,
    /// The first stream sequence it applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// The last stream sequence it applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// One event it applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub example_event_id: Option<String>,
    /// What could not be established.
    pub detail: String,
}

/// One stream's part of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// The JetStream stream.
    pub stream: String,
    /// How the input covers it.
    pub scope: Scope,
    /// The first stream sequence given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// The last stream sequence given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// Messages given.
    pub messages: u64,
    /// Events that passed every check and are covered (authoritative).
    pub events_valid: u64,
    /// Events that passed every check made but not all could be made.
    pub events_partial: u64,
    /// Messages with a failure of their own.
    pub events_invalid: u64,
    /// Events after an earlier failure of their aggregate, not checked
    /// against their chain.
    pub events_unchecked: u64,
    /// Stream sequences inside the range with no message and no documented gap.
    pub missing: u64,
    /// Stream sequences with no message that a verified checkpoint documents.
    pub documented_gaps: u64,
    /// Aggregates (subjects) seen.
    pub aggregates: u64,
    /// Checkpoints of this stream found in AMAI_AUDIT.
    pub checkpoints: u64,
    /// Of those, how many passed every check (root recomputed and equal).
    pub checkpoints_verified: u64,
    /// The largest size of a verified checkpoint (0: none).
    pub checkpointed_size: u64,
    /// The largest size of a verified checkpoint that also has the required
    /// witness cosignatures (equal to `checkpointed_size` when none are required).
    pub witnessed_size: u64,
    /// Failures concerning this stream (located in it, or checkpoints of it
    /// that the stream contradicts).
    pub failures: u64,
    /// The stream's class.
    pub evidence: Evidence,
}

/// The counts of the whole audit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Messages given.
    pub messages: u64,
    /// Messages that decoded and whose signature verified (on all cores).
    pub events_verified: u64,
    /// Events that passed every check and are covered.
    pub events_valid: u64,
    /// Events that passed the checks that could be made.
    pub events_partial: u64,
    /// Messages with a failure of their own.
    pub events_invalid: u64,
    /// Events after an earlier failure of their aggregate.
    pub events_unchecked: u64,
    /// Aggregates seen.
    pub aggregates: u64,
    /// Checkpoint events found.
    pub checkpoints: u64,
    /// Checkpoints that passed every check.
    pub checkpoints_verified: u64,
    /// Verified checkpoints cosigned by the required number of witnesses
    /// (by at least one trusted witness when none are required).
    pub checkpoints_witnessed: u64,
    /// Valid cosignatures of trusted witnesses on verified checkpoints.
    pub cosignatures: u64,
    /// Distinct trusted witnesses with at least one valid cosignature.
    pub witnesses: u64,
}

/// The witness policy the audit applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WitnessPolicy {
    /// Cosignatures required per checkpoint (0: none).
    pub required: u64,
    /// The trusted witnesses' C2SP verifier keys.
    pub trusted: Vec<String>,
}

/// The result of an audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// The report format's version.
    pub version: u32,
    /// The class of the whole evidence.
    pub evidence: Evidence,
    /// The exit code of `amai audit verify` for it.
    pub exit_code: u8,
    /// The deployment's trust root (hex Ed25519 public key).
    pub trust_root: String,
    /// The deployment id: hex of the first 8 bytes of SHA-256(trust root).
    pub deployment: String,
    /// Whether every stream of the deployment was given complete.
    pub input_complete: bool,
    /// Streams of the deployment that are not in the input.
    pub streams_absent: Vec<String>,
    /// The witness policy.
    pub witnesses: WitnessPolicy,
    /// The counts.
    pub counts: Counts,
    /// One report per stream given, in the order given.
    pub streams: Vec<StreamReport>,
    /// Every failure (up to the configured maximum), by stream and sequence.
    pub failures: Vec<Failure>,
    /// Failures beyond the maximum, counted but not listed.
    pub failures_omitted: u64,
    /// Why the evidence is partial, grouped.
    pub partial: Vec<PartialFinding>,
}

impl AuditReport {
    /// The exit code for scripts: 0 authoritative, 1 invalid, 3 partial (2 is
    /// the CLI's, for unusable input).
    pub fn exit_code(&self) -> u8 {
        self.evidence.exit_code()
    }

    /// The report as JSON (`schemas/audit-report.schema.json`).
    pub fn to_json(&self) -> serde_json::Value {
        // Invariant: every field serializes (strings, integers, enums, lists).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The failures of `kind`.
    pub fn failures_of(&self, kind: FailureKind) -> impl Iterator<Item = &Failure> {
        self.failures.iter().filter(move |f| f.kind == kind)
    }

    /// The partial findings for `reason`.
    pub fn partial_of(&self, reason: PartialKind) -> impl Iterator<Item = &PartialFinding> {
        self.partial.iter().filter(move |p| p.reason == reason)
    }

    /// The report of `stream`, if it was given.
    pub fn stream(&self, stream: &str) -> Option<&StreamReport> {
        self.streams.iter().find(|s| s.stream == stream)
    }

    /// A human summary: the verdict, one line per stream, the counts, every
    /// failure listed and every partial reason.
    pub fn human_summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "amai audit: {} (exit {})",
            self.evidence.as_str().to_uppercase(),
            self.exit_code
        );
        let _ = writeln!(
            out,
            "deployment {}  trust root {}",
            self.deployment, self.trust_root
        );
        if self.witnesses.required > 0 {
            let _ = writeln!(
                out,
                "witnesses: {} of {} trusted required per checkpoint",
                self.witnesses.required,
                self.witnesses.trusted.len()
            );
        }
        if !self.streams_absent.is_empty() {
            let _ = writeln!(out, "not in the input: {}", self.streams_absent.join(", "));
        }
        for s in &self.streams {
            let range = match (s.first_seq, s.last_seq) {
                (Some(a), Some(b)) => format!("{a}..={b}"),
                _ => "empty".to_string(),
            };
            let witnessed = if self.witnesses.required > 0 {
                format!(" (witnessed {})", s.witnessed_size)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<16} {:<9} {:<14} {:>8} messages  checkpointed {}{}  {}",
                s.stream,
                s.scope.as_str(),
                range,
                s.messages,
                s.checkpointed_size,
                witnessed,
                s.evidence.as_str().to_uppercase()
            );
        }
        let c = &self.counts;
        let _ = writeln!(
            out,
            "events: {} messages, {} verified; {} valid, {} partial, {} invalid, {} unchecked; {} aggregates",
            c.messages,
            c.events_verified,
            c.events_valid,
            c.events_partial,
            c.events_invalid,
            c.events_unchecked,
            c.aggregates
        );
        let _ = writeln!(
            out,
            "checkpoints: {} found, {} verified, {} witnessed; {} cosignatures by {} witnesses",
            c.checkpoints,
            c.checkpoints_verified,
            c.checkpoints_witnessed,
            c.cosignatures,
            c.witnesses
        );
        if !self.failures.is_empty() {
            let _ = writeln!(
                out,
                "failures ({}{}):",
                self.failures.len(),
                if self.failures_omitted > 0 {
                    format!(", {} more not listed", self.failures_omitted)
                } else {
                    String::new()
                }
            );
            for f in &self.failures {
                let _ = writeln!(out, "  {}", f.line());
                match (&f.checkpoint, f.kind) {
                    (Some(c), FailureKind::CheckpointRootMismatch) => {
                        let suspect = c
                            .first_suspect_seq
                            .map(|s| format!(", first suspect {}:{s}", c.stream))
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "    {} diverges in {}..={}{}",
                            c.stream,
                            c.matching_size + 1,
                            c.tree_size,
                            suspect
                        );
                    }
                    (Some(c), FailureKind::TruncatedStream) => {
                        let missing = c.missing_messages.unwrap_or(0);
                        let _ = writeln!(
                            out,
                            "    {} lacks {missing} message(s): {}..={}",
                            c.stream,
                            c.tree_size - missing + 1,
                            c.tree_size
                        );
                    }
                    _ => {}
                }
            }
        }
        if !self.partial.is_empty() {
            let _ = writeln!(out, "partial ({}):", self.partial.len());
            for p in &self.partial {
                let range = match (p.first_seq, p.last_seq) {
                    (Some(a), Some(b)) if a == b => format!(" seq {a}"),
                    (Some(a), Some(b)) => format!(" seqs {a}..={b}"),
                    _ => String::new(),
                };
                let events = if p.events > 0 {
                    format!(" {} events", p.events)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {} {}:{}{}: {}",
                    p.stream, p.reason, events, range, p.detail
                );
            }
        }
        out
    }
}
