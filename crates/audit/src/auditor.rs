//! [`Auditor`]: the public face of an audit. It takes messages in stream
//! order, checks their signatures a batch at a time on all cores (rayon,
//! as `amai_core::verify::verify_all` does) while the previous batch is
//! folded, and at [`Auditor::finish`] judges checkpoints, gaps, causation
//! references and coverage, and classifies the evidence into an
//! [`AuditReport`].

use std::collections::{HashMap, HashSet};

use amai_checkpoint::VerifierKey;
use amai_core::envelope::{hash_bytes, ZERO_HASH};
use amai_core::stored::{Position, StoredEvent};
use amai_core::subjects::AggregateKind;
use amai_core::verify;
use amai_merkle::leaf_hash;
use amai_proto::v1::ExportedMessage;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use rayon::prelude::*;

use crate::checkpoints::{self, CheckpointOutcome, Coverage};
use crate::engine::{Checked, Class, Engine, AUDIT};
use crate::input::{self, InputError, Scope, Witnesses};
use crate::report::{
    AuditReport, Counts, Evidence, Failure, FailureKind, PartialFinding, PartialKind, StreamReport,
    WitnessPolicy, REPORT_VERSION,
};

/// Messages checked per parallel batch by default.
pub const DEFAULT_BATCH: usize = 1024;

/// Failures listed in a report by default (more are counted).
pub const DEFAULT_MAX_FAILURES: usize = 10_000;

/// A message admitted, waiting for its batch.
struct Incoming {
    stream: usize,
    seq: u64,
    subject: String,
    published_ms: i64,
    data: Vec<u8>,
}

/// The callback told how many messages were verified so far.
type ProgressFn = Box<dyn FnMut(u64) + Send>;

/// An offline audit of a deployment's history.
///
/// Declare each stream with its [`Scope`], give its messages in stream order
/// ([`Auditor::push`], or [`Auditor::add_stream`] for all three steps), end
/// it, and [`finish`](Auditor::finish). Streams may come in any order and
/// the verdicts are the same, but give AMAI_AGENTS first: foreign signers
/// are resolved against its identity chains, and an aggregate whose event
/// cites a signer's position not folded yet waits, with the events after it,
/// in memory until the signer's chain gets there, AMAI_AGENTS ends, or the
/// audit finishes. With AMAI_AGENTS first nothing waits on an honest
/// deployment, and memory is bounded by what the report needs: per message
/// its Merkle nodes (about 64 bytes), its id and a mark; per aggregate its
/// chain state.
pub struct Auditor {
    engine: Engine,
    names: Vec<String>,
    index: HashMap<String, usize>,
    deployment: String,
    witnesses: Witnesses,
    batch: usize,
    incoming: Vec<Incoming>,
    ready: Vec<Checked>,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("deployment", &self.deployment)
            .field("streams", &self.names)
            .field("folded", &self.engine.folded)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// An audit of the deployment whose trust root (first operator key) is
    /// `trust_root`.
    pub fn new(trust_root: VerifyingKey) -> Self {
        let mut engine = Engine::new(trust_root);
        engine.max_failures = DEFAULT_MAX_FAILURES;
        Self {
            engine,
            names: Vec::new(),
            index: HashMap::new(),
            deployment: checkpoints::deployment_id(&trust_root),
            witnesses: Witnesses::default(),
            batch: DEFAULT_BATCH,
            incoming: Vec::new(),
            ready: Vec::new(),
            progress: None,
        }
    }

    /// Trusts the witnesses `keys` (C2SP cosignature verifier keys) and
    /// requires `required` distinct ones of them to have cosigned a
    /// checkpoint for it to make events authoritative.
    pub fn witnesses(
        mut self,
        keys: Vec<VerifierKey>,
        required: usize,
    ) -> Result<Self, InputError> {
        self.witnesses = Witnesses::new(keys, required)?;
        Ok(self)
    }

    /// Lists at most `max` failures in the report (the rest are counted).
    pub fn max_failures(mut self, max: usize) -> Self {
        self.engine.max_failures = max;
        self
    }

    /// Checks signatures `size` messages at a time (at least 1).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch = size.max(1);
        self
    }

    /// Calls `f` with the number of messages verified so far, after each batch.
    pub fn on_progress(mut self, f: impl FnMut(u64) + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// The deployment id (hex of the first 8 bytes of SHA-256 of the trust root).
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// Messages verified and folded so far.
    pub fn messages_verified(&self) -> u64 {
        self.engine.folded
    }

    /// Declares a stream and how its messages cover it. Each stream once,
    /// before its messages.
    pub fn declare_stream(&mut self, stream: &str, scope: Scope) -> Result<(), InputError> {
        if !input::valid_stream_name(stream) {
            return Err(InputError::BadStreamName {
                stream: stream.to_string(),
            });
        }
        if self.index.contains_key(stream) {
            return Err(InputError::DeclaredTwice {
                stream: stream.to_string(),
            });
        }
        let i = self.engine.add_stream(stream, scope);
        self.names.push(stream.to_string());
        self.index.insert(stream.to_string(), i);
        Ok(())
    }

    /// Gives the next message of its stream (declared, not ended), in stream
    /// order. A message whose sequence repeats or goes backwards is reported
    /// (`out_of_order`) and otherwise ignored.
    pub fn push(&mut self, message: ExportedMessage) -> Result<(), InputError> {
        let Some(&stream) = self.index.get(&message.stream) else {
            return Err(InputError::UndeclaredStream {
                stream: message.stream,
            });
        };
        if self.engine.streams[stream].ended {
            return Err(InputError::StreamEnded {
                stream: message.stream,
            });
        }
        if !self.engine.admit(stream, message.seq, &message.subject) {
            return Ok(());
        }
        self.incoming.push(Incoming {
            stream,
            seq: message.seq,
            published_ms: input::published_ms(message.published_at.as_ref()),
            subject: message.subject,
            data: message.data,
        });
        if self.incoming.len() >= self.batch {
            self.step();
        }
        Ok(())
    }

    /// Ends a stream: all its messages were given.
    pub fn end_stream(&mut self, stream: &str) -> Result<(), InputError> {
        let Some(&i) = self.index.get(stream) else {
            return Err(InputError::UndeclaredStream {
                stream: stream.to_string(),
            });
        };
        // Everything given before the end is folded before the end is known.
        self.flush();
        self.engine.end_stream(i);
        Ok(())
    }

    /// Declares `stream`, gives all its `messages` in stream order, and ends it.
    pub fn add_stream(
        &mut self,
        stream: &str,
        scope: Scope,
        messages: impl IntoIterator<Item = ExportedMessage>,
    ) -> Result<(), InputError> {
        self.declare_stream(stream, scope)?;
        for m in messages {
            if m.stream != stream {
                return Err(InputError::MessageOfAnotherStream {
                    stream: stream.to_string(),
                    message: m.stream,
                });
            }
            self.push(m)?;
        }
        self.end_stream(stream)
    }

    /// Checks the buffered batch on all cores while the previous one is folded.
    fn step(&mut self) {
        let batch = std::mem::take(&mut self.incoming);
        let ready = std::mem::take(&mut self.ready);
        let names = &self.names;
        let engine = &mut self.engine;
        let (checked, ()) = rayon::join(
            || {
                batch
                    .into_par_iter()
                    .map(|m| check(m, names))
                    .collect::<Vec<_>>()
            },
            || {
                for c in ready {
                    engine.fold(c);
                }
            },
        );
        self.ready = checked;
        self.report_progress();
    }

    /// Checks and folds everything given so far.
    fn flush(&mut self) {
        self.step();
        for c in std::mem::take(&mut self.ready) {
            self.engine.fold(c);
        }
        self.report_progress();
    }

    fn report_progress(&mut self) {
        let n = self.engine.folded;
        if let Some(f) = self.progress.as_mut() {
            f(n);
        }
    }

    /// Judges everything given and returns the report.
    pub fn finish(mut self) -> AuditReport {
        self.flush();
        for i in 0..self.engine.streams.len() {
            if !self.engine.streams[i].ended {
                self.engine.end_stream(i);
            }
        }
        self.engine.settle();
        let outcome = checkpoints::check_all(&mut self.engine, &self.deployment, &self.witnesses);
        let mut engine = self.engine;
        classify_absent(&mut engine, &outcome);
        let input_complete = deployment_streams().iter().all(|name| {
            engine
                .stream_index(name)
                .is_some_and(|i| engine.streams[i].scope == Scope::Complete)
        });
        check_causes(&mut engine, input_complete);
        cover(&mut engine, &outcome, &self.witnesses);
        build_report(
            engine,
            &outcome,
            &self.deployment,
            &self.witnesses,
            input_complete,
        )
    }
}

/// Phase 1 for one message: decode, canonical bytes, signature, placement
/// (THE core's `verify_stored`); the message's leaf from its hash.
fn check(m: Incoming, names: &[String]) -> Checked {
    let stored = StoredEvent {
        position: Position::new(names[m.stream].clone(), m.seq),
        subject: m.subject,
        published_ms: m.published_ms,
        payload: Bytes::from(m.data),
        // `verify_stored` does not read it: the hash is taken once, below,
        // from the verified event (the hash of exactly these bytes, which it
        // requires canonical) or, for a message that fails, from the bytes.
        hash: ZERO_HASH,
        event_type: None,
    };
    let result = verify::verify_stored(&stored);
    let (hash, claimed) = match &result {
        Ok(ev) => (ev.hash, None),
        Err(_) => (hash_bytes(&stored.payload), claimed(&stored.payload)),
    };
    Checked {
        stream: m.stream,
        seq: m.seq,
        subject: stored.subject,
        published_ms: m.published_ms,
        leaf: leaf_hash(&hash),
        result,
        claimed,
    }
}

/// The id and aggregate sequence a message that failed verification claims,
/// when its bytes decode at all (unauthenticated: only to locate it).
fn claimed(bytes: &[u8]) -> Option<(String, u64)> {
    use prost::Message as _;
    let signed = amai_proto::v1::SignedEvent::decode(bytes).ok()?;
    let body = amai_proto::v1::EventBody::decode(signed.body.as_slice()).ok()?;
    let id = uuid::Uuid::parse_str(&body.id).ok()?;
    Some((id.hyphenated().to_string(), body.aggregate_seq))
}

/// The streams of a deployment: one per aggregate kind.
pub fn deployment_streams() -> Vec<&'static str> {
    AggregateKind::ALL.iter().map(|k| k.stream()).collect()
}

/// Sequences with no message inside a stream's range: documented gaps of
/// verified checkpoints are partial, the others were deleted.
fn classify_absent(engine: &mut Engine, outcome: &CheckpointOutcome) {
    let empty = Coverage::default();
    for s in 0..engine.streams.len() {
        let name = engine.streams[s].name.clone();
        let documented = &outcome.coverage.get(&name).unwrap_or(&empty).documented;
        let absent = engine.streams[s].absent.clone();
        for (a, b) in absent {
            let mut next = a;
            for &g in documented.range(a..=b) {
                if g > next {
                    missing(engine, s, next, g - 1);
                }
                engine.partial(
                    s,
                    PartialKind::DocumentedGap,
                    "no message at this sequence; a verified checkpoint documents it as a gap (gone before the audit role read it)".into(),
                    g,
                    None,
                );
                next = g + 1;
            }
            if next <= b {
                missing(engine, s, next, b);
            }
        }
    }
}

fn missing(engine: &mut Engine, stream: usize, from: u64, to: u64) {
    let n = to - from + 1;
    engine.streams[stream].missing += n;
    let detail = if n == 1 {
        format!("stream sequence {from} holds no message: it was deleted")
    } else {
        format!("stream sequences {from}..={to} hold no message: {n} messages were deleted")
    };
    let mut f = Failure::new(
        FailureKind::MissingEvent,
        &engine.streams[stream].name,
        detail,
    );
    f.seq = Some(from);
    f.last_seq = (to > from).then_some(to);
    engine.record(&[stream], f);
}

/// Whether `cause` names a message of the input: a verified event's id, the
/// id a message that failed verification claims, or `<subject>#<stream seq>`
/// (how a reactor names a poison input that does not decode).
fn cause_in_input(engine: &Engine, cause: &str) -> bool {
    if let Ok(id) = uuid::Uuid::parse_str(cause) {
        return engine
            .streams
            .iter()
            .any(|s| s.ids.contains_key(&id) || s.claimed_ids.contains(&id));
    }
    let Some((subject, seq)) = cause.rsplit_once('#') else {
        return false;
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return false;
    };
    engine
        .streams
        .iter()
        .any(|s| s.chains.contains_key(subject) && s.has_message(seq))
}

/// Every cause must be an event of the input: dangling when the input is
/// the deployment's whole history, outside the input otherwise.
fn check_causes(engine: &mut Engine, input_complete: bool) {
    let causes = std::mem::take(&mut engine.causes);
    for c in &causes {
        let known = cause_in_input(engine, &c.cause);
        if known {
            continue;
        }
        let class = engine.streams[c.stream].marks[c.mark].class;
        if !matches!(class, Class::Valid | Class::Partial) {
            continue;
        }
        if input_complete {
            let mut f = Failure::new(
                FailureKind::DanglingCausation,
                &engine.streams[c.stream].name,
                format!(
                    "causation_id {:?} names no event of the deployment's complete history",
                    c.cause
                ),
            );
            f.seq = Some(c.seq);
            f.event_id = Some(c.event_id.to_string());
            f.aggregate = Some(engine.chains[c.chain].aggregate.to_string());
            f.aggregate_seq = Some(c.aggregate_seq);
            engine.streams[c.stream].marks[c.mark].class = Class::Invalid;
            engine.record(&[c.stream], f);
        } else {
            engine.streams[c.stream].marks[c.mark].class = Class::Partial;
            engine.partial(
                c.stream,
                PartialKind::CausationOutsideInput,
                "its causation_id names no event of the input, which is not the deployment's complete history".into(),
                c.seq,
                Some(c.event_id.to_string()),
            );
        }
    }
    engine.causes = causes;
}

/// Events not covered by a verified (and witnessed, if required) checkpoint
/// are partial. AMAI_AUDIT itself is never checkpointed: its events are
/// the checkpoints, chained and signed by the audit service. A trusted
/// witness's own cosignature records need a verified checkpoint but no
/// cosignature: a record cannot be inside the checkpoint it cosigns, so
/// requiring one would leave every complete AMAI_AGENTS partial forever.
/// For the same reason a cosignature record after the largest checkpoint is
/// not uncovered.
fn cover(engine: &mut Engine, outcome: &CheckpointOutcome, witnesses: &Witnesses) {
    let required = witnesses.required;
    let trusted: HashSet<[u8; 32]> = witnesses
        .keys
        .iter()
        .map(|k| k.verifying_key().to_bytes())
        .collect();
    let exempt: HashSet<(usize, usize)> = engine
        .cosignature_marks
        .iter()
        .filter(|(_, _, key)| trusted.contains(key))
        .map(|(s, m, _)| (*s, *m))
        .collect();
    // Every witness's cosignature record: one that follows the largest
    // checkpoint is a statement about it and cannot be inside it, and the
    // audit role does not checkpoint growth made of such records alone (that
    // would loop with a witness); it is not counted as uncovered. Removing
    // such a record can only weaken the evidence (a cosignature fewer).
    let cosignature_records: HashSet<(usize, usize)> = engine
        .cosignature_marks
        .iter()
        .map(|(s, m, _)| (*s, *m))
        .collect();
    let empty = Coverage::default();
    for s in 0..engine.streams.len() {
        if engine.streams[s].name == AUDIT {
            continue;
        }
        let cov = outcome
            .coverage
            .get(&engine.streams[s].name)
            .unwrap_or(&empty)
            .clone();
        let not_covered = if cov.verified_size.max(cov.unchecked) == 0 {
            format!(
                "no verified checkpoint of {} in the input covers it",
                engine.streams[s].name
            )
        } else {
            format!(
                "after the largest checkpoint of {} (size {})",
                engine.streams[s].name,
                cov.verified_size.max(cov.unchecked)
            )
        };
        let not_witnessed = format!(
            "covered only by checkpoints without {required} cosignatures of trusted witnesses"
        );
        let unchecked = "covered only by checkpoints whose root the input cannot recompute (messages below their size are outside it) or whose signer is not in it".to_string();
        for m in 0..engine.streams[s].marks.len() {
            let mark = engine.streams[s].marks[m];
            if !matches!(mark.class, Class::Valid | Class::Partial) {
                continue;
            }
            let (reason, detail) = if mark.seq <= cov.full {
                continue;
            } else if mark.seq <= cov.verified_size {
                if exempt.contains(&(s, m)) {
                    continue;
                }
                (PartialKind::NotWitnessed, not_witnessed.clone())
            } else if mark.seq <= cov.unchecked {
                (PartialKind::CheckpointUnchecked, unchecked.clone())
            } else if cosignature_records.contains(&(s, m)) {
                continue;
            } else {
                (PartialKind::NotCovered, not_covered.clone())
            };
            engine.streams[s].marks[m].class = Class::Partial;
            engine.partial(s, reason, detail, mark.seq, None);
        }
    }
}

fn build_report(
    engine: Engine,
    outcome: &CheckpointOutcome,
    deployment: &str,
    witnesses: &Witnesses,
    input_complete: bool,
) -> AuditReport {
    let mut counts = Counts {
        events_verified: engine.verified,
        aggregates: engine.chains.len() as u64,
        checkpoints: outcome.checkpoints,
        checkpoints_verified: outcome.verified,
        checkpoints_witnessed: outcome.witnessed,
        cosignatures: outcome.cosignatures,
        witnesses: outcome.witnesses.len() as u64,
        ..Counts::default()
    };
    let mut partial: Vec<PartialFinding> = Vec::new();
    let mut partial_streams = vec![false; engine.streams.len()];
    for ((s, reason, detail), g) in &engine.partials {
        partial_streams[*s] = true;
        partial.push(PartialFinding {
            reason: *reason,
            stream: engine.streams[*s].name.clone(),
            events: g.events,
            first_seq: Some(g.first_seq),
            last_seq: Some(g.last_seq),
            example_event_id: g.example.clone(),
            detail: detail.clone(),
        });
    }
    let mut aggregates = vec![0u64; engine.streams.len()];
    for ch in &engine.chains {
        aggregates[ch.stream] += 1;
    }
    let empty = Coverage::default();
    let mut streams = Vec::with_capacity(engine.streams.len());
    for (i, st) in engine.streams.iter().enumerate() {
        let cov = outcome.coverage.get(&st.name).unwrap_or(&empty);
        let (mut valid, mut part, mut invalid, mut unchecked) = (0, 0, 0, 0);
        for m in &st.marks {
            match m.class {
                Class::Valid => valid += 1,
                Class::Partial => part += 1,
                Class::Invalid => invalid += 1,
                // Every stall is settled before the end; count defensively.
                Class::Unchecked | Class::Pending => unchecked += 1,
            }
        }
        invalid += st.out_of_order;
        let documented_gaps = engine
            .partials
            .iter()
            .filter(|((s, r, _), _)| *s == i && *r == PartialKind::DocumentedGap)
            .map(|(_, g)| g.events)
            .sum();
        let missing = st.missing;
        if st.scope != Scope::Complete {
            partial.push(PartialFinding {
                reason: PartialKind::IncompleteRange,
                stream: st.name.clone(),
                events: 0,
                first_seq: st.first_seq,
                last_seq: st.first_seq.map(|_| st.last_seq),
                example_event_id: None,
                detail: format!(
                    "given as a {}: what the stream holds outside it is not known",
                    st.scope.as_str()
                ),
            });
        }
        let evidence = if st.failures > 0 {
            Evidence::Invalid
        } else if st.scope != Scope::Complete || partial_streams[i] || part > 0 {
            Evidence::Partial
        } else {
            Evidence::Authoritative
        };
        counts.messages += st.messages;
        counts.events_valid += valid;
        counts.events_partial += part;
        counts.events_invalid += invalid;
        counts.events_unchecked += unchecked;
        streams.push(StreamReport {
            stream: st.name.clone(),
            scope: st.scope,
            first_seq: st.first_seq,
            last_seq: st.first_seq.map(|_| st.last_seq),
            messages: st.messages,
            events_valid: valid,
            events_partial: part,
            events_invalid: invalid,
            events_unchecked: unchecked,
            missing,
            documented_gaps,
            aggregates: aggregates[i],
            checkpoints: cov.checkpoints,
            checkpoints_verified: cov.verified,
            checkpointed_size: cov.verified_size,
            witnessed_size: cov.full,
            failures: st.failures,
            evidence,
        });
    }
    let streams_absent: Vec<String> = deployment_streams()
        .into_iter()
        .filter(|name| engine.stream_index(name).is_none())
        .map(str::to_string)
        .collect();
    for name in &streams_absent {
        partial.push(PartialFinding {
            reason: PartialKind::StreamNotInInput,
            stream: name.clone(),
            events: 0,
            first_seq: None,
            last_seq: None,
            example_event_id: None,
            detail: "the deployment's stream is not in the input".into(),
        });
    }
    let mut evidence = streams
        .iter()
        .map(|s| s.evidence)
        .max()
        .unwrap_or(Evidence::Partial);
    if !streams_absent.is_empty() {
        evidence = evidence.max(Evidence::Partial);
    }
    let order: HashMap<&str, usize> = engine
        .streams
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut failures = engine.failures;
    failures.sort_by_key(|f| (order.get(f.stream.as_str()).copied(), f.seq));
    partial.sort_by(|a, b| {
        (order.get(a.stream.as_str()), a.first_seq, a.reason).cmp(&(
            order.get(b.stream.as_str()),
            b.first_seq,
            b.reason,
        ))
    });
    AuditReport {
        version: REPORT_VERSION,
        evidence,
        exit_code: evidence.exit_code(),
        trust_root: hex::encode(engine.trust_root.as_bytes()),
        deployment: deployment.to_string(),
        input_complete,
        streams_absent,
        witnesses: WitnessPolicy {
            required: witnesses.required as u64,
            trusted: witnesses.keys.iter().map(|k| k.to_string()).collect(),
        },
        counts,
        streams,
        failures,
        failures_omitted: engine.failures_omitted,
        partial,
    }
}
