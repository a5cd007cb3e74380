//! Checkpoints, judged once every stream is folded: each `audit.checkpointed`
//! event that its chain accepted (so signed by an operator-endorsed audit
//! service key, valid at the position it cites) must carry a C2SP note that
//! opens against that key under the name `amai/<deployment>/<stream>`, say
//! what the event says, grow past the previous checkpoint of its chain, and
//! have the root that the input's messages give at its size. Witness
//! cosignatures recorded in AMAI_AGENTS are checked against the trusted
//! witness keys. What checkpoints cover ([`Coverage`]) decides which events
//! are authoritative.

use std::collections::{BTreeSet, HashMap, HashSet};

use amai_checkpoint::{
    CosignatureLine, OpenErrorKind, SignedCheckpoint, VerifiedCosignature, VerifierKey,
};

use crate::engine::{CheckpointRecord, Class, Engine};
use crate::input::{Scope, Witnesses};
use crate::report::{CheckpointFinding, Failure, FailureKind};

/// The origin (C2SP origin line and log key name) of a stream's checkpoints
/// in a deployment: `amai/<deployment>/<stream>`, as the audit role signs them.
pub fn origin(deployment: &str, stream: &str) -> String {
    format!("amai/{deployment}/{stream}")
}

/// The deployment id of a trust root: lowercase hex of the first 8 bytes of
/// SHA-256 of the key.
pub fn deployment_id(trust_root: &ed25519_dalek::VerifyingKey) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(trust_root.as_bytes())[..8])
}

/// What the checkpoints of one stream establish.
#[derive(Debug, Default, Clone)]
pub(crate) struct Coverage {
    /// Largest size of a verified (and witnessed, if required) checkpoint.
    pub(crate) full: u64,
    /// Largest size of a verified checkpoint, witnessed or not.
    pub(crate) verified_size: u64,
    /// Largest size of a checkpoint that could not be fully checked.
    pub(crate) unchecked: u64,
    /// Sequences that checkpoints without failure list as gaps.
    pub(crate) documented: BTreeSet<u64>,
    pub(crate) checkpoints: u64,
    pub(crate) verified: u64,
}

/// What the checkpoints established, per checkpointed stream name.
#[derive(Debug, Default)]
pub(crate) struct CheckpointOutcome {
    pub(crate) coverage: HashMap<String, Coverage>,
    pub(crate) checkpoints: u64,
    pub(crate) verified: u64,
    pub(crate) witnessed: u64,
    pub(crate) cosignatures: u64,
    pub(crate) witnesses: HashSet<[u8; 32]>,
}

/// Per checkpointed stream, along its checkpoint chain.
#[derive(Debug, Default)]
struct ChainProgress {
    last_size: Option<u64>,
    matching: u64,
}

/// How far one checkpoint got.
enum Grade {
    Failed,
    /// Root recomputed and equal; whether the witness quorum is met.
    Verified {
        witnessed: bool,
    },
    Unchecked,
}

/// Judges every checkpoint record of `engine`.
pub(crate) fn check_all(
    engine: &mut Engine,
    deployment: &str,
    witnesses: &Witnesses,
) -> CheckpointOutcome {
    let mut out = CheckpointOutcome::default();
    let mut progress: HashMap<String, ChainProgress> = HashMap::new();
    let mut invalid_seqs: HashMap<usize, Vec<u64>> = HashMap::new();
    let records = std::mem::take(&mut engine.checkpoints);
    for r in &records {
        let target = r.payload.stream.clone();
        let prog = progress.entry(target.clone()).or_default();
        out.checkpoints += 1;
        let t = engine.stream_index(&target);
        let mut finding = CheckpointFinding {
            stream: target.clone(),
            tree_size: r.payload.tree_size,
            matching_size: prog.matching,
            first_suspect_seq: None,
            missing_messages: None,
        };
        let expected = origin(deployment, &target);
        let grade = match open(r, &expected) {
            Err((kind, detail)) => {
                fail(engine, r, None, kind, detail, finding);
                Grade::Failed
            }
            Ok(_)
                if prog
                    .last_size
                    .is_some_and(|last| r.payload.tree_size <= last) =>
            {
                let last = prog.last_size.unwrap_or(0);
                fail(
                    engine,
                    r,
                    None,
                    FailureKind::CheckpointShrank,
                    format!(
                        "the checkpoint of {target} has size {}, not more than the previous checkpoint's {last}: a log only grows",
                        r.payload.tree_size
                    ),
                    finding,
                );
                Grade::Failed
            }
            Ok(signed) => {
                prog.last_size = Some(r.payload.tree_size);
                let size = r.payload.tree_size;
                match t {
                    None => Grade::Unchecked,
                    Some(t) => {
                        let implicated = (!r.provisional).then_some(t);
                        let ts = &engine.streams[t];
                        let present: Vec<u64> = r
                            .payload
                            .gaps
                            .iter()
                            .copied()
                            .filter(|g| ts.has_message(*g))
                            .collect();
                        if !present.is_empty() {
                            let shown: Vec<String> =
                                present.iter().take(5).map(u64::to_string).collect();
                            finding.first_suspect_seq = present.first().copied();
                            fail(
                                engine,
                                r,
                                implicated,
                                FailureKind::CheckpointGapMismatch,
                                format!(
                                    "the checkpoint lists {} sequence(s) of {target} as gaps whose message is present (seq {})",
                                    present.len(),
                                    shown.join(", ")
                                ),
                                finding,
                            );
                            Grade::Failed
                        } else if ts.scope == Scope::Complete && size > ts.last_seq {
                            let missing = size - ts.last_seq;
                            finding.missing_messages = Some(missing);
                            finding.first_suspect_seq = Some(ts.last_seq + 1);
                            fail(
                                engine,
                                r,
                                implicated,
                                FailureKind::TruncatedStream,
                                format!(
                                    "the checkpoint covers {size} messages of {target}, but the complete stream ends at seq {}: its last {missing} message(s) were cut",
                                    ts.last_seq
                                ),
                                finding,
                            );
                            Grade::Failed
                        } else if let Some(root) = ts.tree.root(size) {
                            if root.as_slice() == r.payload.root_hash.as_slice() {
                                prog.matching = prog.matching.max(size);
                                // Cosignatures count on checkpoints whose
                                // signer is established only.
                                let witnessed = !r.provisional
                                    && witness(engine, &signed, r, witnesses, &mut out);
                                Grade::Verified { witnessed }
                            } else {
                                let gaps: HashSet<u64> = r.payload.gaps.iter().copied().collect();
                                let invalid = invalid_seqs.entry(t).or_insert_with(|| {
                                    engine.streams[t]
                                        .marks
                                        .iter()
                                        .filter(|m| m.class == Class::Invalid)
                                        .map(|m| m.seq)
                                        .collect()
                                });
                                finding.first_suspect_seq = first_suspect(
                                    &engine.streams[t].absent,
                                    invalid,
                                    &gaps,
                                    finding.matching_size,
                                    size,
                                );
                                let suspect = match finding.first_suspect_seq {
                                    Some(s) => format!("; the first message known to differ is seq {s}"),
                                    None => "; every message there verifies, so the stream was rewritten with valid signatures (a stolen key) or the checkpoint was forged".to_string(),
                                };
                                fail(
                                    engine,
                                    r,
                                    implicated,
                                    FailureKind::CheckpointRootMismatch,
                                    format!(
                                        "the root of the first {size} messages of {target} is {}, the checkpoint signed {}: the stream differs somewhere in seqs {}..={size}{suspect}",
                                        hex::encode(root),
                                        hex::encode(&r.payload.root_hash),
                                        finding.matching_size + 1,
                                    ),
                                    finding,
                                );
                                Grade::Failed
                            }
                        } else if ts.scope == Scope::Complete {
                            // The tree stopped at a run of missing sequences
                            // too long to fill: the stream lacks them.
                            finding.first_suspect_seq = ts
                                .absent
                                .iter()
                                .find(|(_, b)| *b > ts.tree.len())
                                .map(|(a, _)| *a);
                            fail(
                                engine,
                                r,
                                implicated,
                                FailureKind::CheckpointRootMismatch,
                                format!(
                                    "the checkpoint covers {size} messages of {target}, but more than {} consecutive sequences below it hold no message",
                                    crate::tree::MAX_HOLE
                                ),
                                finding,
                            );
                            Grade::Failed
                        } else {
                            Grade::Unchecked
                        }
                    }
                }
            }
        };
        let cov = out.coverage.entry(target).or_default();
        cov.checkpoints += 1;
        let size = r.payload.tree_size;
        match grade {
            Grade::Failed => {}
            Grade::Verified { witnessed } if !r.provisional => {
                cov.verified += 1;
                out.verified += 1;
                cov.verified_size = cov.verified_size.max(size);
                if witnessed {
                    out.witnessed += 1;
                }
                if witnessed || witnesses.required == 0 {
                    cov.full = cov.full.max(size);
                }
                cov.documented.extend(r.payload.gaps.iter().copied());
            }
            Grade::Verified { .. } | Grade::Unchecked => {
                cov.unchecked = cov.unchecked.max(size);
                cov.documented.extend(r.payload.gaps.iter().copied());
            }
        }
    }
    engine.checkpoints = records;
    out
}

/// Opens the checkpoint's note against its event's signer under the
/// expected origin and checks the event's fields against it.
fn open(r: &CheckpointRecord, expected: &str) -> Result<SignedCheckpoint, (FailureKind, String)> {
    let c = &r.payload;
    if c.origin != expected {
        return Err((
            FailureKind::CheckpointOriginMismatch,
            format!(
                "the checkpoint's origin is {:?}; checkpoints of {} in this deployment have origin {expected:?}",
                c.origin, c.stream
            ),
        ));
    }
    let key = VerifierKey::ed25519(expected, &r.signer).map_err(|e| {
        (
            FailureKind::CheckpointMalformed,
            format!("{expected:?} cannot name a log key: {e}"),
        )
    })?;
    let signed = SignedCheckpoint::open(&c.note, &key).map_err(|e| {
        let kind = match e.kind() {
            OpenErrorKind::NotSignedByLog | OpenErrorKind::BadSignature => {
                FailureKind::CheckpointBadSignature
            }
            OpenErrorKind::OriginMismatch => FailureKind::CheckpointOriginMismatch,
            _ => FailureKind::CheckpointMalformed,
        };
        (
            kind,
            format!(
                "the checkpoint's note does not open with the key that signed its event ({}): {e}",
                hex::encode(r.signer.as_bytes())
            ),
        )
    })?;
    let body = signed.checkpoint();
    let mut differs = Vec::new();
    if body.size != c.tree_size {
        differs.push(format!(
            "tree_size {} vs the note's {}",
            c.tree_size, body.size
        ));
    }
    if body.root.as_slice() != c.root_hash.as_slice() {
        differs.push("root_hash".to_string());
    }
    if signed.log_signature().as_slice() != c.log_signature.as_slice() {
        differs.push("log_signature".to_string());
    }
    if !differs.is_empty() {
        return Err((
            FailureKind::CheckpointFieldMismatch,
            format!(
                "the checkpoint event's fields differ from its signed note: {}",
                differs.join(", ")
            ),
        ));
    }
    Ok(signed)
}

fn fail(
    engine: &mut Engine,
    r: &CheckpointRecord,
    implicated: Option<usize>,
    kind: FailureKind,
    detail: String,
    finding: CheckpointFinding,
) {
    let mut f = Failure::new(kind, &engine.streams[r.audit_stream].name, detail);
    f.seq = Some(r.seq);
    f.event_id = Some(r.event_id.clone());
    f.aggregate = Some(r.aggregate.clone());
    f.aggregate_seq = Some(r.aggregate_seq);
    f.checkpoint = Some(finding);
    engine.streams[r.audit_stream].marks[r.mark].class = Class::Invalid;
    let mut streams = vec![r.audit_stream];
    streams.extend(implicated.filter(|t| *t != r.audit_stream));
    engine.record(&streams, f);
}

/// The first sequence in `after + 1 ..= to` known to differ: a missing
/// sequence the checkpoint does not list as a gap, or an invalid message.
fn first_suspect(
    absent: &[(u64, u64)],
    invalid: &[u64],
    gaps: &HashSet<u64>,
    after: u64,
    to: u64,
) -> Option<u64> {
    let missing = absent
        .iter()
        .filter(|(a, b)| *b > after && *a <= to)
        .find_map(|(a, b)| {
            let from = (*a).max(after + 1);
            let until = (*b).min(to);
            // Gaps are few; a run longer than them has an undocumented member.
            (from..=until)
                .take(gaps.len() + 1)
                .find(|s| !gaps.contains(s))
        });
    let start = invalid.partition_point(|s| *s <= after);
    let bad = invalid.get(start).copied().filter(|s| *s <= to);
    match (missing, bad) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether the checkpoint has the required cosignatures of trusted
/// witnesses, from the records witnesses keep on their own chains; counts
/// them in `out`.
fn witness(
    engine: &Engine,
    signed: &SignedCheckpoint,
    r: &CheckpointRecord,
    witnesses: &Witnesses,
    out: &mut CheckpointOutcome,
) -> bool {
    let c = &r.payload;
    let mut note = signed.clone();
    let mut verified: Vec<VerifiedCosignature> = Vec::new();
    if let Some(records) = engine.cosignatures.get(&(c.origin.clone(), c.tree_size)) {
        for rec in records.iter().filter(|rec| rec.root == c.root_hash) {
            let Ok(line) = rec.line.parse::<CosignatureLine>() else {
                continue;
            };
            let Ok(with) = note.with_cosignature(&line) else {
                continue;
            };
            // Keep a line only if it adds a valid cosignature of a trusted
            // witness (a later line of one witness replaces its earlier one).
            let now = with.cosignatures(&witnesses.keys);
            if now.len() > verified.len() {
                note = with;
                verified = now;
            }
        }
    }
    for v in &verified {
        if let Some(key) = witnesses
            .keys
            .iter()
            .find(|k| k.name() == v.name && k.key_id() == v.key_id)
        {
            out.witnesses.insert(key.verifying_key().to_bytes());
        }
    }
    out.cosignatures += verified.len() as u64;
    if witnesses.required == 0 {
        !verified.is_empty()
    } else {
        note.require_witnesses(&witnesses.keys, witnesses.required)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_suspect_is_the_earliest_missing_or_invalid_message() {
        let none = HashSet::new();
        assert_eq!(first_suspect(&[(5, 6)], &[3, 9], &none, 0, 10), Some(3));
        assert_eq!(first_suspect(&[(5, 6)], &[3, 9], &none, 3, 10), Some(5));
        assert_eq!(
            first_suspect(&[(5, 6)], &[9], &HashSet::from([5, 6]), 3, 10),
            Some(9)
        );
        assert_eq!(first_suspect(&[], &[12], &none, 3, 10), None);
        assert_eq!(
            first_suspect(&[(1, 1_000_000)], &[], &HashSet::from([1]), 0, 10),
            Some(2)
        );
    }

    #[test]
    fn deployment_ids_are_sixteen_hex_characters() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let id = deployment_id(&key);
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(origin(&id, "AMAI_AGENTS"), format!("amai/{id}/AMAI_AGENTS"));
    }
}
