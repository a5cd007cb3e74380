//! The sequential part of an audit: every message, in stream order, after
//! its signature was checked on all cores ([`Checked`]). This module owns the
//! per-stream bookkeeping (sequences, the rebuilt Merkle tree, event ids,
//! one [`Mark`] per message), the per-aggregate chain folds through THE
//! core step (`amai_core::verify::{step, check_position, resolve}`), and the
//! resolution of foreign signers against the identity chains of AMAI_AGENTS
//! as the input holds them.
//!
//! ## Foreign signers, causally and in any input order
//!
//! A foreign signer (a service writing a result, an operator revoking or
//! endorsing) is judged at the position of its own chain that the event
//! cites. Key history only grows, so the signer's chain folded up to that
//! position decides exactly what the whole chain would decide: an event is
//! resolved as soon as its signer's chain is folded that far. When it is not
//! (yet), the event's aggregate *stalls*: the event and those after it wait,
//! unapplied, until the signer's chain gets there, fails, or the input ends.
//! So the core's rule that an event which fails never changes state holds
//! exactly, whatever order the streams come in; given AMAI_AGENTS first
//! (causal order within it), nothing stalls on an honest deployment.
//!
//! A chain stops at its first failure, as `amai_core::chain::ChainVerifier`
//! does: the events after it are counted as unchecked.

use std::collections::{BTreeMap, HashMap, VecDeque};

use amai_core::envelope::VerifiedEvent;
use amai_core::identity::{SignerCheck, SignerRequirement};
use amai_core::proto::{self, payload::Kind};
use amai_core::subjects::{Aggregate, AggregateKind};
use amai_core::verify::{self, ChainState, Pending};
use amai_merkle::Hash;
use ed25519_dalek::VerifyingKey;
use uuid::Uuid;

use crate::input::Scope;
use crate::report::{Failure, FailureKind, PartialKind};
use crate::tree::{gap_leaf, StreamTree, MAX_HOLE};

/// The stream of identity chains.
pub(crate) const AGENTS: &str = "AMAI_AGENTS";
/// The stream of checkpoints.
pub(crate) const AUDIT: &str = "AMAI_AUDIT";

/// A message after phase 1 (decode, signature, placement), ready to fold.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) stream: usize,
    pub(crate) seq: u64,
    pub(crate) subject: String,
    pub(crate) published_ms: i64,
    /// `leaf_hash(event hash)`: the message's leaf in the stream's tree.
    pub(crate) leaf: Hash,
    pub(crate) result: Result<VerifiedEvent, verify::Failure>,
    /// For a message that failed phase 1: the id and aggregate sequence its
    /// bytes claim, when they decode (unauthenticated, to locate it).
    pub(crate) claimed: Option<(String, u64)>,
}

/// What became of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Waiting behind a stalled event of its aggregate.
    Pending,
    /// Every check passed (coverage is decided at the end).
    Valid,
    /// Every check made passed; some could not be made.
    Partial,
    /// A failure of its own.
    Invalid,
    /// After an earlier failure of its aggregate.
    Unchecked,
}

/// One message of a stream, in stream order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark {
    pub(crate) seq: u64,
    pub(crate) class: Class,
}

/// One stream's state.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) name: String,
    pub(crate) scope: Scope,
    pub(crate) ended: bool,
    pub(crate) first_seq: Option<u64>,
    pub(crate) last_seq: u64,
    /// Runs of sequences inside the range with no message (deleted, or
    /// documented gaps), inclusive, ascending.
    pub(crate) absent: Vec<(u64, u64)>,
    pub(crate) messages: u64,
    pub(crate) out_of_order: u64,
    /// Sequences found deleted (inside the range, not documented).
    pub(crate) missing: u64,
    pub(crate) tree: StreamTree,
    /// One per message admitted, ascending sequences.
    pub(crate) marks: Vec<Mark>,
    /// Event ids of the stream's verified events and their sequences.
    pub(crate) ids: HashMap<Uuid, u64>,
    /// Ids that messages which failed verification claim (a cause may name
    /// one: a reactor records its poison inputs by the id they claim).
    pub(crate) claimed_ids: std::collections::HashSet<Uuid>,
    /// Chain index of each subject.
    pub(crate) chains: HashMap<String, usize>,
    /// Failures concerning the stream.
    pub(crate) failures: u64,
}

impl StreamState {
    pub(crate) fn new(name: &str, scope: Scope) -> Self {
        Self {
            name: name.to_string(),
            scope,
            ended: false,
            first_seq: None,
            last_seq: 0,
            absent: Vec::new(),
            messages: 0,
            out_of_order: 0,
            missing: 0,
            tree: StreamTree::default(),
            marks: Vec::new(),
            ids: HashMap::new(),
            claimed_ids: std::collections::HashSet::new(),
            chains: HashMap::new(),
            failures: 0,
        }
    }

    /// Whether the input holds a message at `seq`.
    pub(crate) fn has_message(&self, seq: u64) -> bool {
        self.marks.binary_search_by_key(&seq, |m| m.seq).is_ok()
    }

    /// Appends the message at `seq` to the tree, after gap leaves for the
    /// sequences before it that hold no message; stops the tree where the
    /// input does not say what the stream held.
    fn grow_tree(&mut self, seq: u64, leaf: Hash) {
        if self.tree.stopped() {
            return;
        }
        let next = self.tree.len() + 1;
        if seq > next {
            let hole = seq - next;
            let unknown = match self.scope {
                Scope::Complete => false,
                // The run may start after 1: what came before is unknown.
                Scope::Range => self.tree.len() == 0,
                Scope::Selection => true,
            };
            if unknown || hole > MAX_HOLE {
                self.tree.stop();
                return;
            }
            let gap = gap_leaf();
            for _ in 0..hole {
                self.tree.push(gap);
            }
        }
        self.tree.push(leaf);
    }
}

/// A message waiting for its aggregate's turn.
#[derive(Debug)]
pub(crate) struct Item {
    seq: u64,
    mark: usize,
    published_ms: i64,
    result: Result<VerifiedEvent, verify::Failure>,
    claimed: Option<(String, u64)>,
}

/// An event past [`verify::step`], waiting for its foreign signer.
#[derive(Debug)]
pub(crate) struct Decision {
    seq: u64,
    mark: usize,
    ev: VerifiedEvent,
    pending: Pending,
    reasons: Vec<(PartialKind, String)>,
}

/// One aggregate (one subject of one stream) being folded.
#[derive(Debug)]
pub(crate) struct Chain {
    pub(crate) stream: usize,
    pub(crate) aggregate: Aggregate,
    pub(crate) state: ChainState,
    started: bool,
    /// An identity chain that starts before the selection: only positions
    /// and links are checked (its keys are not known).
    pub(crate) positions_only: bool,
    pub(crate) failed: bool,
    /// The aggregate sequence where it failed.
    pub(crate) failed_at: u64,
    stalled: Option<Box<Decision>>,
    queue: VecDeque<Item>,
}

/// A verified checkpoint event, kept for the checks at the end.
#[derive(Debug)]
pub(crate) struct CheckpointRecord {
    pub(crate) seq: u64,
    pub(crate) mark: usize,
    pub(crate) audit_stream: usize,
    pub(crate) event_id: String,
    pub(crate) aggregate: String,
    pub(crate) aggregate_seq: u64,
    pub(crate) payload: proto::AuditCheckpointed,
    pub(crate) signer: VerifyingKey,
    /// Its event is valid only provisionally (its signer is not in the input).
    pub(crate) provisional: bool,
}

/// A witness's cosignature record, from its own chain.
#[derive(Debug)]
pub(crate) struct CosignatureRecord {
    pub(crate) root: Vec<u8>,
    pub(crate) line: String,
}

/// An event naming its cause, checked at the end.
#[derive(Debug)]
pub(crate) struct CauseRef {
    pub(crate) stream: usize,
    pub(crate) mark: usize,
    pub(crate) chain: usize,
    pub(crate) seq: u64,
    pub(crate) aggregate_seq: u64,
    pub(crate) event_id: Uuid,
    pub(crate) cause: String,
}

/// A group of events partial for one reason.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) events: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) example: Option<String>,
}

/// How a foreign signer's requirement stands.
enum Resolution {
    Ok,
    Fail(verify::Failure),
    Partial(String),
    Wait(String),
}

/// Everything the sequential part keeps.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) trust_root: VerifyingKey,
    pub(crate) streams: Vec<StreamState>,
    pub(crate) chains: Vec<Chain>,
    /// Identity id -> its chain in AMAI_AGENTS.
    identities: HashMap<String, usize>,
    agents_stream: Option<usize>,
    waiting: HashMap<String, Vec<usize>>,
    wake: VecDeque<usize>,
    /// The input is over: absent signers will not come.
    settling: bool,
    /// Cycles of stalled chains are broken by judging on what is known.
    forcing: bool,
    resolved: u64,
    pub(crate) failures: Vec<Failure>,
    pub(crate) failures_omitted: u64,
    pub(crate) max_failures: usize,
    pub(crate) partials: BTreeMap<(usize, PartialKind, String), Group>,
    pub(crate) checkpoints: Vec<CheckpointRecord>,
    pub(crate) cosignatures: HashMap<(String, u64), Vec<CosignatureRecord>>,
    /// (stream, mark, witness key) of every cosignature record.
    pub(crate) cosignature_marks: Vec<(usize, usize, [u8; 32])>,
    pub(crate) causes: Vec<CauseRef>,
    /// Messages through phase 1 with a valid signature.
    pub(crate) verified: u64,
    /// Messages folded.
    pub(crate) folded: u64,
}

fn core_resolve(
    req: &SignerRequirement,
    state: Option<&amai_core::identity::IdentityState>,
    note: &str,
) -> Resolution {
    match verify::resolve(req, state, SignerCheck::AtPosition) {
        Ok(()) => Resolution::Ok,
        Err(mut f) => {
            f.detail.push_str(note);
            Resolution::Fail(f)
        }
    }
}

const CHAIN_START: &str =
    "the chain starts before the selection: its link to the event before is not checked";
const IDENTITY_START: &str = "the identity's chain starts before the selection: its keys, and so its signatures' authority, are not checked";

impl Engine {
    pub(crate) fn new(trust_root: VerifyingKey) -> Self {
        Self {
            trust_root,
            streams: Vec::new(),
            chains: Vec::new(),
            identities: HashMap::new(),
            agents_stream: None,
            waiting: HashMap::new(),
            wake: VecDeque::new(),
            settling: false,
            forcing: false,
            resolved: 0,
            failures: Vec::new(),
            failures_omitted: 0,
            max_failures: 10_000,
            partials: BTreeMap::new(),
            checkpoints: Vec::new(),
            cosignatures: HashMap::new(),
            cosignature_marks: Vec::new(),
            causes: Vec::new(),
            verified: 0,
            folded: 0,
        }
    }

    /// Adds a stream; returns its index.
    pub(crate) fn add_stream(&mut self, name: &str, scope: Scope) -> usize {
        let index = self.streams.len();
        self.streams.push(StreamState::new(name, scope));
        if name == AGENTS {
            self.agents_stream = Some(index);
        }
        index
    }

    /// The stream is over: nothing more of it will be folded.
    pub(crate) fn end_stream(&mut self, stream: usize) {
        self.streams[stream].ended = true;
        if Some(stream) == self.agents_stream {
            // Absent or short signer chains are final now.
            let stalled: Vec<usize> = (0..self.chains.len())
                .filter(|&c| self.chains[c].stalled.is_some())
                .collect();
            self.wake.extend(stalled);
            self.drain_wakes();
        }
    }

    /// Records a failure concerning `streams` (the first is where it is
    /// reported).
    pub(crate) fn record(&mut self, streams: &[usize], failure: Failure) {
        for &s in streams {
            self.streams[s].failures += 1;
        }
        if self.failures.len() < self.max_failures {
            self.failures.push(failure);
        } else {
            self.failures_omitted += 1;
        }
    }

    /// Records that the event at `seq` of `stream` is partial for `reason`.
    pub(crate) fn partial(
        &mut self,
        stream: usize,
        reason: PartialKind,
        detail: String,
        seq: u64,
        event_id: Option<String>,
    ) {
        let g = self
            .partials
            .entry((stream, reason, detail))
            .or_insert(Group {
                events: 0,
                first_seq: seq,
                last_seq: seq,
                example: None,
            });
        g.events += 1;
        g.first_seq = g.first_seq.min(seq);
        g.last_seq = g.last_seq.max(seq);
        if g.example.is_none() {
            g.example = event_id;
        }
    }

    /// Push-time sequence check: whether the message at `seq` is in order.
    /// Out-of-order messages are reported here and never folded.
    pub(crate) fn admit(&mut self, stream: usize, seq: u64, subject: &str) -> bool {
        let st = &mut self.streams[stream];
        st.messages += 1;
        if seq == 0 || seq <= st.last_seq {
            st.out_of_order += 1;
            let detail = if seq == st.last_seq {
                format!("stream sequence {seq} appears twice")
            } else {
                format!(
                    "stream sequence {seq} comes after {}: sequences must strictly increase (a reordered or replayed message)",
                    st.last_seq
                )
            };
            let mut f = Failure::new(FailureKind::OutOfOrder, &st.name, detail);
            f.seq = Some(seq);
            f.aggregate = Aggregate::from_subject(subject).ok().map(|a| a.to_string());
            self.record(&[stream], f);
            return false;
        }
        let expected = match (st.last_seq, st.scope) {
            (0, Scope::Complete) => 1,
            (0, _) => seq,
            (last, _) => last + 1,
        };
        if seq > expected && st.scope != Scope::Selection {
            st.absent.push((expected, seq - 1));
        }
        st.first_seq.get_or_insert(seq);
        st.last_seq = seq;
        true
    }

    /// Folds one checked message.
    pub(crate) fn fold(&mut self, c: Checked) {
        let Checked {
            stream,
            seq,
            subject,
            published_ms,
            leaf,
            result,
            claimed,
        } = c;
        self.folded += 1;
        let st = &mut self.streams[stream];
        st.grow_tree(seq, leaf);
        let mark = st.marks.len();
        st.marks.push(Mark {
            seq,
            class: Class::Pending,
        });
        if let Some(id) = claimed
            .as_ref()
            .and_then(|(id, _)| Uuid::parse_str(id).ok())
        {
            st.claimed_ids.insert(id);
        }
        if let Ok(ev) = &result {
            self.verified += 1;
            if let Some(first) = st.ids.get(&ev.id).copied() {
                let f = self.event_failure(
                    stream,
                    seq,
                    ev,
                    FailureKind::DuplicateEventId,
                    format!(
                        "event id {} is already the id of the event at seq {first}",
                        ev.id
                    ),
                );
                self.streams[stream].marks[mark].class = Class::Invalid;
                self.record(&[stream], f);
                return;
            }
            st.ids.insert(ev.id, seq);
        }
        let item = Item {
            seq,
            mark,
            published_ms,
            result,
            claimed,
        };
        match self.chain_for(stream, subject) {
            Some(chain) => self.feed(chain, item),
            None => {
                // Only a message that failed phase 1 can be on a subject
                // that names no aggregate (phase 1 checks the subject).
                let (kind, detail) = match item.result {
                    Err(f) => (FailureKind::from_core(f.kind), f.detail),
                    Ok(_) => (
                        FailureKind::WrongAggregate,
                        "the subject names no aggregate".to_string(),
                    ),
                };
                let mut f = Failure::new(kind, &self.streams[stream].name, detail);
                f.seq = Some(seq);
                if let Some((id, _)) = item.claimed {
                    f.event_id = Some(id);
                }
                self.streams[stream].marks[mark].class = Class::Invalid;
                self.record(&[stream], f);
            }
        }
        self.drain_wakes();
    }

    /// The chain of `subject` in `stream`, created on first sight; `None`
    /// for a subject that names no aggregate.
    fn chain_for(&mut self, stream: usize, subject: String) -> Option<usize> {
        if let Some(&c) = self.streams[stream].chains.get(&subject) {
            return Some(c);
        }
        let aggregate = Aggregate::from_subject(&subject).ok()?;
        let index = self.chains.len();
        if Some(stream) == self.agents_stream && aggregate.kind == AggregateKind::Agent {
            self.identities.insert(aggregate.id.clone(), index);
        }
        self.chains.push(Chain {
            stream,
            aggregate,
            state: ChainState::EMPTY,
            started: false,
            positions_only: false,
            failed: false,
            failed_at: 0,
            stalled: None,
            queue: VecDeque::new(),
        });
        self.streams[stream].chains.insert(subject, index);
        Some(index)
    }

    fn feed(&mut self, chain: usize, item: Item) {
        let ch = &mut self.chains[chain];
        if ch.failed {
            let s = ch.stream;
            self.streams[s].marks[item.mark].class = Class::Unchecked;
        } else if ch.stalled.is_some() {
            ch.queue.push_back(item);
        } else {
            self.process(chain, item);
        }
    }

    /// THE step for one event of a chain that is neither failed nor stalled.
    fn process(&mut self, chain: usize, item: Item) {
        let Item {
            seq,
            mark,
            published_ms,
            result,
            claimed,
        } = item;
        let ev = match result {
            Ok(ev) => ev,
            Err(f) => {
                let kind = FailureKind::from_core(f.kind);
                self.fail_chain(chain, seq, mark, Err(claimed), kind, f.detail);
                return;
            }
        };
        let scope = self.streams[self.chains[chain].stream].scope;
        let ch = &mut self.chains[chain];
        let mut reasons = Vec::new();
        if !ch.started {
            ch.started = true;
            if scope != Scope::Complete && ev.aggregate_seq() > 1 {
                // Chains may start before a range or selection: take the
                // first event's position as given.
                ch.state = ChainState {
                    seq: ev.aggregate_seq() - 1,
                    hash: ev.prev_hash(),
                    identity: None,
                };
                if ch.aggregate.kind == AggregateKind::Agent {
                    ch.positions_only = true;
                } else {
                    reasons.push((
                        PartialKind::ChainStartOutsideSelection,
                        CHAIN_START.to_string(),
                    ));
                }
            }
        }
        if ch.positions_only {
            if let Err(f) = verify::check_position(&ch.state, &ev) {
                let kind = FailureKind::from_core(f.kind);
                self.fail_chain(chain, seq, mark, Ok(&ev), kind, f.detail);
                return;
            }
            ch.state = ChainState {
                seq: ev.aggregate_seq(),
                hash: ev.hash,
                identity: None,
            };
            reasons.push((
                PartialKind::ChainStartOutsideSelection,
                IDENTITY_START.to_string(),
            ));
            self.accepted(chain, seq, mark, &ev, reasons);
            return;
        }
        match verify::step(&ch.state, &ev, published_ms, Some(&self.trust_root)) {
            Ok(pending) => self.decide(
                chain,
                Decision {
                    seq,
                    mark,
                    ev,
                    pending,
                    reasons,
                },
            ),
            Err(f) => {
                let kind = self.kind_of(chain, &ev, f.kind);
                self.fail_chain(chain, seq, mark, Ok(&ev), kind, f.detail);
            }
        }
    }

    /// Resolves a stepped event's foreign signer, or stalls its chain.
    fn decide(&mut self, chain: usize, mut d: Decision) {
        match self.resolution(&d.pending.requirement) {
            Resolution::Ok => self.accept(chain, d),
            Resolution::Partial(detail) => {
                d.reasons.push((PartialKind::SignerNotInInput, detail));
                self.accept(chain, d);
            }
            Resolution::Fail(f) => {
                let kind = self.kind_of(chain, &d.ev, f.kind);
                self.fail_chain(chain, d.seq, d.mark, Ok(&d.ev), kind, f.detail);
            }
            Resolution::Wait(signer) => {
                self.waiting.entry(signer).or_default().push(chain);
                self.chains[chain].stalled = Some(Box::new(d));
            }
        }
    }

    /// Where a foreign signer's requirement stands against the identity
    /// chains folded so far.
    fn resolution(&self, req: &SignerRequirement) -> Resolution {
        let Some(signer) = req.identity() else {
            return core_resolve(req, None, "");
        };
        let agents = self.agents_stream.map(|i| &self.streams[i]);
        let agents_final = self.settling || agents.is_some_and(|s| s.ended);
        let agents_complete = agents.is_some_and(|s| s.scope == Scope::Complete);
        let Some(&c) = self.identities.get(signer) else {
            return if !agents_final {
                Resolution::Wait(signer.to_string())
            } else if agents_complete {
                core_resolve(req, None, "")
            } else {
                Resolution::Partial(format!("the chain of signer {signer} is not in the input"))
            };
        };
        let ch = &self.chains[c];
        if ch.positions_only {
            return Resolution::Partial(format!(
                "the chain of signer {signer} starts before the selection"
            ));
        }
        let state = ch.state.identity.as_ref();
        let far_enough = match req {
            SignerRequirement::Identity { at_seq, .. }
            | SignerRequirement::Endorser { at_seq, .. } => {
                state.is_some_and(|s| s.head_seq >= *at_seq)
            }
            SignerRequirement::NameOwner { .. } => state.is_some(),
            SignerRequirement::None => true,
        };
        let settled = ch.failed || (agents_final && (ch.stalled.is_none() || self.forcing));
        if !far_enough && !settled {
            return Resolution::Wait(signer.to_string());
        }
        if !far_enough && !ch.failed && !agents_complete {
            return Resolution::Partial(format!(
                "the input holds the chain of signer {signer} up to its seq {} only",
                ch.state.seq
            ));
        }
        let note = if ch.failed && !far_enough {
            format!(
                " (the chain of {signer} is invalid from its seq {}: see that failure)",
                ch.failed_at
            )
        } else {
            String::new()
        };
        core_resolve(req, state, &note)
    }

    /// The report's kind for a core failure of `ev` on `chain`: the core's
    /// `RevokedKey` on an identity's own event, by a key it had rotated out
    /// while unrevoked, is [`FailureKind::RotatedKey`].
    fn kind_of(
        &self,
        chain: usize,
        ev: &VerifiedEvent,
        kind: amai_core::verify::FailureKind,
    ) -> FailureKind {
        let ch = &self.chains[chain];
        if kind == amai_core::verify::FailureKind::RevokedKey
            && ch.aggregate.kind == AggregateKind::Agent
            && ev.actor() == ch.aggregate.id
        {
            if let Some(id) = &ch.state.identity {
                if id.revoked.is_none() && id.keys.iter().any(|k| k.signing_key == ev.signer) {
                    return FailureKind::RotatedKey;
                }
            }
        }
        FailureKind::from_core(kind)
    }

    fn accept(&mut self, chain: usize, d: Decision) {
        let Decision {
            seq,
            mark,
            ev,
            pending,
            reasons,
        } = d;
        self.chains[chain].state = pending.next;
        self.accepted(chain, seq, mark, &ev, reasons);
    }

    /// The chain state already includes `ev`: mark it, keep what the end
    /// needs, wake what waited for this identity.
    fn accepted(
        &mut self,
        chain: usize,
        seq: u64,
        mark: usize,
        ev: &VerifiedEvent,
        reasons: Vec<(PartialKind, String)>,
    ) {
        let stream = self.chains[chain].stream;
        let provisional = !reasons.is_empty();
        self.streams[stream].marks[mark].class = if provisional {
            Class::Partial
        } else {
            Class::Valid
        };
        for (reason, detail) in reasons {
            self.partial(stream, reason, detail, seq, Some(ev.id.to_string()));
        }
        let stream_name = self.streams[stream].name.as_str();
        match &ev.payload {
            Kind::AuditCheckpointed(c) if stream_name == AUDIT => {
                self.checkpoints.push(CheckpointRecord {
                    seq,
                    mark,
                    audit_stream: stream,
                    event_id: ev.id.to_string(),
                    aggregate: ev.aggregate.to_string(),
                    aggregate_seq: ev.aggregate_seq(),
                    payload: c.clone(),
                    signer: ev.signer,
                    provisional,
                });
            }
            Kind::AuditCheckpointCosigned(c) if stream_name == AGENTS => {
                // A witness records its own cosignatures: the key it names
                // must be the key that signed the record.
                let own = c
                    .witness_vkey
                    .parse::<amai_checkpoint::VerifierKey>()
                    .is_ok_and(|v| v.verifying_key() == &ev.signer);
                if own {
                    self.cosignature_marks
                        .push((stream, mark, ev.signer.to_bytes()));
                    self.cosignatures
                        .entry((c.origin.clone(), c.tree_size))
                        .or_default()
                        .push(CosignatureRecord {
                            root: c.root_hash.clone(),
                            line: c.cosignature.clone(),
                        });
                }
            }
            _ => {}
        }
        if !ev.body.causation_id.is_empty() {
            self.causes.push(CauseRef {
                stream,
                mark,
                chain,
                seq,
                aggregate_seq: ev.aggregate_seq(),
                event_id: ev.id,
                cause: ev.body.causation_id.clone(),
            });
        }
        self.wake_identity(chain);
    }

    /// Fails `chain` at the message at `seq`: the event, or what its bytes
    /// claim when it failed phase 1.
    fn fail_chain(
        &mut self,
        chain: usize,
        seq: u64,
        mark: usize,
        ev: Result<&VerifiedEvent, Option<(String, u64)>>,
        kind: FailureKind,
        detail: String,
    ) {
        let ch = &mut self.chains[chain];
        ch.failed = true;
        ch.failed_at = ch.state.seq + 1;
        let stream = ch.stream;
        let aggregate = ch.aggregate.to_string();
        let f = match ev {
            Ok(ev) => self.event_failure(stream, seq, ev, kind, detail),
            Err(claimed) => {
                let mut f = Failure::new(kind, &self.streams[stream].name, detail);
                f.seq = Some(seq);
                f.aggregate = Some(aggregate);
                if let Some((id, aggregate_seq)) = claimed {
                    f.event_id = Some(id);
                    f.aggregate_seq = (aggregate_seq > 0).then_some(aggregate_seq);
                }
                f
            }
        };
        self.streams[stream].marks[mark].class = Class::Invalid;
        self.record(&[stream], f);
        self.wake_identity(chain);
    }

    /// A failure located at event `ev`.
    pub(crate) fn event_failure(
        &self,
        stream: usize,
        seq: u64,
        ev: &VerifiedEvent,
        kind: FailureKind,
        detail: String,
    ) -> Failure {
        let mut f = Failure::new(kind, &self.streams[stream].name, detail);
        f.seq = Some(seq);
        f.event_id = Some(ev.id.to_string());
        f.aggregate = Some(ev.aggregate.to_string());
        f.aggregate_seq = Some(ev.aggregate_seq());
        f
    }

    /// Wakes the chains waiting for the identity whose chain is `chain`.
    fn wake_identity(&mut self, chain: usize) {
        let ch = &self.chains[chain];
        if Some(ch.stream) != self.agents_stream || ch.aggregate.kind != AggregateKind::Agent {
            return;
        }
        if let Some(waiting) = self.waiting.remove(&ch.aggregate.id) {
            self.wake.extend(waiting);
        }
    }

    /// Retries stalled chains that were woken, and folds what queued behind
    /// them.
    fn drain_wakes(&mut self) {
        while let Some(chain) = self.wake.pop_front() {
            let Some(d) = self.chains[chain].stalled.take() else {
                continue;
            };
            self.decide(chain, *d);
            if self.chains[chain].stalled.is_none() {
                self.resolved += 1;
                self.drain_queue(chain);
            }
        }
    }

    fn drain_queue(&mut self, chain: usize) {
        while self.chains[chain].stalled.is_none() {
            let Some(item) = self.chains[chain].queue.pop_front() else {
                return;
            };
            if self.chains[chain].failed {
                let s = self.chains[chain].stream;
                self.streams[s].marks[item.mark].class = Class::Unchecked;
            } else {
                self.process(chain, item);
            }
        }
    }

    /// The input is over: every stalled event is judged on the chains as
    /// the input holds them (cycles of chains waiting for each other are
    /// broken by judging on what is known, as the core does for a position
    /// beyond a chain's head).
    pub(crate) fn settle(&mut self) {
        self.settling = true;
        loop {
            let stalled: Vec<usize> = (0..self.chains.len())
                .filter(|&c| self.chains[c].stalled.is_some())
                .collect();
            if stalled.is_empty() {
                return;
            }
            let before = self.resolved;
            self.wake.extend(stalled);
            self.drain_wakes();
            if self.resolved == before {
                self.forcing = true;
            }
        }
    }

    /// The index of stream `name`.
    pub(crate) fn stream_index(&self, name: &str) -> Option<usize> {
        self.streams.iter().position(|s| s.name == name)
    }
}
