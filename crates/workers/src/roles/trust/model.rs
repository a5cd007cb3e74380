//! The trust projection: a deterministic fold of the trust feed
//! (`AMAI_TRUST_FEED`) into one [`amai_trust::AgentModel`] per identity, and
//! the trust events the fold decides, each planned at its exact slot of
//! `trust/<agent_id>`.
//!
//! The feed gives all evidence one order, so every instance (and a fresh
//! deployment replaying the same feed) plans byte-identical events at the same
//! slots: ids are derived from the causing feed event and the output's index,
//! times are event times, numbers are fixed point. The publisher
//! ([`super::publisher`]) only appends what this fold planned.
//!
//! Event time: the deployment's clock when the feed reaches the event, the
//! latest `occurred_at` so far (monotone). An event's own `occurred_at` counts
//! at most [`MAX_FUTURE_SKEW_MS`] past the time JetStream stored it, so an
//! event published around the store with a date far ahead cannot age anyone's
//! evidence (the store already refuses such dates); and since observations
//! happen at the clock, dating an event back changes nothing either (no
//! evidence enters pre-decayed, no burst hides in the past).
//!
//! Keys (tree `trust`):
//! - `r/<agent>`: the agent's record ([`AgentRecord`]: kind, name, revoked,
//!   next trust slot, model), postcard;
//! - `j/<jail_id>`, `s/<session_id>`: who requested a jail, who owns a session;
//! - `q/j/<jail_id>`, `q/s/<session_id>`: evidence that reached the feed
//!   before the event saying whose it is (the feed sources each stream on its
//!   own, so a jail's records can overtake the request); it is observed, in
//!   feed order, by the fold of that event, which is then its trust events' cause;
//! - `e/<endorser>/<endorsee>`: the endorsement event id (counted ones only);
//! - `p/<event_id>`: the feed sequence of every event that can be cited;
//! - `o/<feed_seq>`: where the trust events planned for that feed event go
//!   ([`Planned`]: agent and slot; the content is the delta below);
//! - `d/<agent>/<trust_seq>`: each planned trust event as a `TrustDelta`;
//! - `x/<trust_event_id>`: its agent and slot;
//! - `al/<window_end>/<trust_event_id>`: every alert, by event time;
//! - `g/clock`: the deployment's event-time clock (the latest event time).

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::subjects::AggregateKind;
use amai_projections::{AppliedEvent, ApplyError, ApplyResult, Projection};
use amai_trust::{AgentModel, Observation, ObservationKind, Output, Severity, TrustConfig};
use prost::Message;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::TransactionalTree;

use super::evidence::{self, JailOwner, SessionOwner};
use crate::reactor::output_id;

/// Name of the trust projection (and of its sled tree).
pub const TRUST_PROJECTION: &str = "trust";
/// Version of the projection's schema.
pub const TRUST_PROJECTION_VERSION: u32 = 2;
/// How far past its storage time an event's date is believed.
pub const MAX_FUTURE_SKEW_MS: i64 = 300_000;
/// The first slot of `trust/<agent>` the trust role writes: slot 1 is the
/// identity role's `trust.initialized`.
pub const FIRST_TRUST_SLOT: u64 = 2;
/// Most ids an alert's evidence lists.
const MAX_ALERT_EVIDENCE: usize = 64;

/// What the projection keeps per identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// `IdentityKind` as its proto number.
    pub kind: i32,
    /// The registered name.
    pub name: String,
    /// Revoked identities' endorsements are void.
    pub revoked: bool,
    /// The next slot of `trust/<agent>` a planned event takes.
    pub next_seq: u64,
    /// The behavioural model.
    pub model: AgentModel,
}

impl AgentRecord {
    /// Whether the identity is an agent (not an operator or a service).
    pub fn is_agent(&self) -> bool {
        self.kind == IdentityKind::Agent as i32
    }
}

/// One trust event planned for a feed event, in output order: where it goes.
/// Its content is the delta stored at `d/<agent>/<seq>` (see
/// [`delta_payload`]), not a second copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// The agent whose chain it goes on.
    pub agent: String,
    /// Its slot on `trust/<agent>`.
    pub seq: u64,
}

/// The payload of the trust event a stored delta records.
pub fn delta_payload(delta: &proto::TrustDelta) -> Option<Kind> {
    match delta.kind.clone()? {
        proto::trust_delta::Kind::Adjusted(a) => Some(Kind::TrustAdjusted(a)),
        proto::trust_delta::Kind::Alert(a) => Some(Kind::TrustAlertRaised(a)),
    }
}

pub(crate) fn record_key(agent: &str) -> Vec<u8> {
    format!("r/{agent}").into_bytes()
}
pub(crate) fn planned_key(feed_seq: u64) -> Vec<u8> {
    let mut k = b"o/".to_vec();
    k.extend_from_slice(&feed_seq.to_be_bytes());
    k
}
pub(crate) fn delta_prefix(agent: &str) -> Vec<u8> {
    format!("d/{agent}/").into_bytes()
}
pub(crate) fn delta_key(agent: &str, seq: u64) -> Vec<u8> {
    let mut k = delta_prefix(agent);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
pub(crate) fn delta_index_key(event_id: &str) -> Vec<u8> {
    format!("x/{event_id}").into_bytes()
}
pub(crate) fn position_key(event_id: &str) -> Vec<u8> {
    format!("p/{event_id}").into_bytes()
}
pub(crate) fn endorsement_key(endorser: &str, endorsee: &str) -> Vec<u8> {
    format!("e/{endorser}/{endorsee}").into_bytes()
}
pub(crate) const ALERT_PREFIX: &[u8] = b"al/";
fn alert_key(window_end_ms: i64, event_id: &str) -> Vec<u8> {
    let mut k = ALERT_PREFIX.to_vec();
    // Order-preserving for negative times too.
    k.extend_from_slice(&((window_end_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(event_id.as_bytes());
    k
}
pub(crate) fn alert_window_end(key: &[u8]) -> Option<i64> {
    let b: [u8; 8] = key
        .get(ALERT_PREFIX.len()..ALERT_PREFIX.len() + 8)?
        .try_into()
        .ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}
pub(crate) const CLOCK_KEY: &[u8] = b"g/clock";
fn jail_owner_key(jail_id: &str) -> Vec<u8> {
    format!("j/{jail_id}").into_bytes()
}
fn session_owner_key(session_id: &str) -> Vec<u8> {
    format!("s/{session_id}").into_bytes()
}
fn pending_jail_key(jail_id: &str) -> Vec<u8> {
    format!("q/j/{jail_id}").into_bytes()
}
fn pending_session_key(session_id: &str) -> Vec<u8> {
    format!("q/s/{session_id}").into_bytes()
}

/// Most pieces of evidence kept for one jail or session whose owner is not
/// known yet (a rogue publisher cannot grow this without bound).
const MAX_PENDING: usize = 256;

/// Evidence that reached the feed before what attributes it (the feed sources
/// each stream on its own, so a jail's records can overtake its request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PendingEvidence {
    event_id: String,
    at_ms: i64,
    /// The encoded `proto::Payload`.
    payload: Vec<u8>,
}

fn decode_payload(b: &[u8]) -> ApplyResult<Kind> {
    proto::Payload::decode(b)
        .map_err(ApplyError::corrupt)?
        .kind
        .ok_or_else(|| ApplyError::corrupt("pending evidence without a payload"))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(v).map_err(|e| e.to_string())
}
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| e.to_string())
}

fn get<T: DeserializeOwned>(tx: &TransactionalTree, key: &[u8]) -> ApplyResult<Option<T>> {
    match tx.get(key)? {
        None => Ok(None),
        Some(b) => decode(&b).map(Some).map_err(ApplyError::corrupt),
    }
}
fn put<T: Serialize>(tx: &TransactionalTree, key: Vec<u8>, v: &T) -> ApplyResult<()> {
    tx.insert(key, encode(v).map_err(ApplyError::corrupt)?)?;
    Ok(())
}

/// Unix milliseconds of a timestamp.
pub(crate) fn ts_ms(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000))
        .unwrap_or(0)
}

/// The trust projection.
#[derive(Clone, Debug)]
pub struct TrustProjection {
    cfg: TrustConfig,
}

impl TrustProjection {
    /// The projection with the model's parameters.
    pub fn new(cfg: TrustConfig) -> Self {
        Self { cfg }
    }
}

impl Projection for TrustProjection {
    fn name(&self) -> &'static str {
        TRUST_PROJECTION
    }

    fn version(&self) -> u32 {
        TRUST_PROJECTION_VERSION
    }

    fn streams(&self) -> &'static [&'static str] {
        &[amai_bus::streams::TRUST_FEED_STREAM]
    }

    fn apply(&self, tx: &TransactionalTree, ev: &AppliedEvent) -> ApplyResult<()> {
        Fold {
            cfg: &self.cfg,
            tx,
            ev,
        }
        .run()
    }
}

/// One feed event being folded.
struct Fold<'a> {
    cfg: &'a TrustConfig,
    tx: &'a TransactionalTree,
    ev: &'a AppliedEvent,
}

impl Fold<'_> {
    fn run(&self) -> ApplyResult<()> {
        let event = &self.ev.event;
        let at_ms = ts_ms(event.body.occurred_at.as_ref())
            .min(self.ev.published_ms().saturating_add(MAX_FUTURE_SKEW_MS));
        let clock = self.clock()?.max(at_ms);
        self.tx.insert(CLOCK_KEY, &clock.to_be_bytes())?;
        // Every observation happens at the clock: dating an event back
        // (evidence that would enter already decayed, a burst spread over the
        // past) changes nothing.
        let observations = match event.aggregate.kind {
            AggregateKind::Agent => self.agent_event(clock, clock)?,
            AggregateKind::Jail => self.jail_event(clock)?,
            AggregateKind::Llm => self.llm_event(clock)?,
            AggregateKind::Lifecycle => self.lifecycle_event(clock)?,
            _ => Vec::new(),
        };
        let mut planned = Vec::new();
        for (agent, obs) in observations {
            self.observe(&agent, &obs, &mut planned)?;
        }
        if !planned.is_empty() {
            put(self.tx, planned_key(self.ev.position().seq), &planned)?;
        }
        Ok(())
    }

    fn clock(&self) -> ApplyResult<i64> {
        Ok(self
            .tx
            .get(CLOCK_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(i64::MIN))
    }

    fn cite(&self) -> ApplyResult<()> {
        self.tx.insert(
            position_key(&self.ev.event.body.id),
            &self.ev.position().seq.to_be_bytes(),
        )?;
        Ok(())
    }

    /// The folded event as evidence (kept while its owner is unknown).
    fn as_evidence(&self, at_ms: i64) -> PendingEvidence {
        PendingEvidence {
            event_id: self.ev.event.body.id.clone(),
            at_ms,
            payload: proto::Payload {
                kind: Some(self.ev.event.payload.clone()),
            }
            .encode_to_vec(),
        }
    }

    fn observation(&self, at_ms: i64, kind: ObservationKind, cites: Vec<String>) -> Observation {
        Observation {
            event_id: self.ev.event.body.id.clone(),
            at_ms,
            kind,
            cites,
        }
    }

    fn agent_event(&self, at_ms: i64, clock: i64) -> ApplyResult<Vec<(String, Observation)>> {
        let event = &self.ev.event;
        let actor = event.aggregate.id.clone();
        if let Kind::AgentRegistered(reg) = &event.payload {
            if get::<AgentRecord>(self.tx, &record_key(&actor))?.is_none() {
                let record = AgentRecord {
                    kind: reg.kind,
                    name: reg.name.clone(),
                    revoked: false,
                    next_seq: FIRST_TRUST_SLOT,
                    model: AgentModel::new(&actor, at_ms),
                };
                put(self.tx, record_key(&actor), &record)?;
            }
            return Ok(Vec::new());
        }
        self.cite()?;
        let mut out = vec![(
            actor.clone(),
            self.observation(
                at_ms,
                ObservationKind::Action {
                    action_type: event.event_type().to_string(),
                    peers: evidence::peers_of(&event.payload),
                },
                Vec::new(),
            ),
        )];
        match &event.payload {
            Kind::AgentRevoked(_) => {
                if let Some(mut record) = get::<AgentRecord>(self.tx, &record_key(&actor))? {
                    record.revoked = true;
                    put(self.tx, record_key(&actor), &record)?;
                }
            }
            Kind::AgentMessageSent(m) => {
                let recipient_known = get::<AgentRecord>(self.tx, &record_key(&m.to))?.is_some();
                if recipient_known {
                    out.push((
                        m.to.clone(),
                        self.observation(
                            at_ms,
                            ObservationKind::Contacted { by: actor.clone() },
                            Vec::new(),
                        ),
                    ));
                }
            }
            Kind::AgentEndorsed(e) => {
                if let Some(obs) = self.endorsement(&actor, e, at_ms, clock)? {
                    out.push((e.endorsee.clone(), obs));
                }
            }
            // Only the id derived from the requester and the event is theirs
            // (the jail role refuses any other).
            Kind::JailRequested(r)
                if r.jail_id == amai_bus::jail::jail_id(&actor, &event.body.id) =>
            {
                let owner = JailOwner {
                    owner: actor.clone(),
                    request_id: event.body.id.clone(),
                    reproduces: r.reproduces.clone(),
                };
                put(self.tx, jail_owner_key(&r.jail_id), &owner)?;
                for mut p in self.take_pending(pending_jail_key(&r.jail_id))? {
                    p.at_ms = at_ms;
                    out.extend(self.jail_observations(&p)?);
                }
            }
            Kind::LlmSessionOpened(s) => {
                let key = session_owner_key(&s.session_id);
                if get::<SessionOwner>(self.tx, &key)?.is_none() {
                    let owner = SessionOwner {
                        owner: actor.clone(),
                    };
                    put(self.tx, key, &owner)?;
                    for mut p in self.take_pending(pending_session_key(&s.session_id))? {
                        p.at_ms = at_ms;
                        out.extend(self.llm_observations(&owner, &p)?);
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// The `Endorsed` observation for a valid, first endorsement; `None` (no
    /// effect) for an endorsee that is unknown, not an agent or revoked, or
    /// already endorsed by this endorser.
    fn endorsement(
        &self,
        endorser: &str,
        e: &proto::AgentEndorsed,
        at_ms: i64,
        clock: i64,
    ) -> ApplyResult<Option<Observation>> {
        let Some(endorsee) = get::<AgentRecord>(self.tx, &record_key(&e.endorsee))? else {
            return Ok(None);
        };
        if !endorsee.is_agent() || endorsee.revoked || e.endorsee == endorser {
            return Ok(None);
        }
        if endorsee.model.has_endorsement_from(endorser) {
            return Ok(None);
        }
        let Some(by) = get::<AgentRecord>(self.tx, &record_key(endorser))? else {
            return Ok(None);
        };
        let credibility_milli = if by.revoked {
            0
        } else if by.kind == IdentityKind::Operator as i32 {
            1000
        } else if by.is_agent() {
            by.model.endorsing_credibility_milli(self.cfg, clock)
        } else {
            0
        };
        self.tx.insert(
            endorsement_key(endorser, &e.endorsee),
            self.ev.event.body.id.as_bytes(),
        )?;
        Ok(Some(self.observation(
            at_ms,
            ObservationKind::Endorsed {
                endorser: endorser.to_string(),
                credibility_milli,
            },
            Vec::new(),
        )))
    }

    fn jail_event(&self, at_ms: i64) -> ApplyResult<Vec<(String, Observation)>> {
        let event = &self.ev.event;
        let jail_id = match &event.payload {
            Kind::JailRunFinished(run) => &run.jail_id,
            Kind::JailReproducibilityChecked(check) if evidence::not_reproducible(check) => {
                &check.jail_id
            }
            _ => return Ok(Vec::new()),
        };
        self.cite()?;
        let pending = self.as_evidence(at_ms);
        if get::<JailOwner>(self.tx, &jail_owner_key(jail_id))?.is_none() {
            // The feed sources each stream on its own: a jail's records can
            // reach it before the request that says whose jail it is.
            return self.defer(pending_jail_key(jail_id), pending);
        }
        self.jail_observations(&pending)
    }

    /// The observations a jail record makes, its owner being known.
    fn jail_observations(&self, p: &PendingEvidence) -> ApplyResult<Vec<(String, Observation)>> {
        let kind = decode_payload(&p.payload)?;
        let owner_of = |jail_id: &str| get::<JailOwner>(self.tx, &jail_owner_key(jail_id));
        let observe = |kind: ObservationKind, cites: Vec<String>| Observation {
            event_id: p.event_id.clone(),
            at_ms: p.at_ms,
            kind,
            cites,
        };
        let mut out = Vec::new();
        match &kind {
            Kind::JailRunFinished(run) => {
                let Some(owner) = owner_of(&run.jail_id)? else {
                    return Ok(out);
                };
                for signal in evidence::jail_run_signals(run) {
                    out.push((
                        owner.owner.clone(),
                        observe(
                            ObservationKind::Evidence(signal),
                            vec![owner.request_id.clone()],
                        ),
                    ));
                }
            }
            Kind::JailReproducibilityChecked(check) => {
                let Some(repro) = owner_of(&check.jail_id)? else {
                    return Ok(out);
                };
                // The run that did not reproduce is the original's.
                let original = owner_of(&check.original_jail_id)?.unwrap_or(repro.clone());
                let mut cites = vec![original.request_id.clone(), repro.request_id.clone()];
                if let Some(miss) = check
                    .llm_divergence
                    .as_ref()
                    .map(|d| d.miss_event_id.clone())
                    .filter(|id| !id.is_empty())
                {
                    cites.push(miss);
                }
                out.push((
                    original.owner,
                    observe(
                        ObservationKind::Evidence(amai_trust::Signal::JailNotReproducible),
                        cites,
                    ),
                ));
            }
            _ => {}
        }
        Ok(out)
    }

    /// A lifecycle record is about the agent its aggregate names.
    fn lifecycle_event(&self, at_ms: i64) -> ApplyResult<Vec<(String, Observation)>> {
        let event = &self.ev.event;
        let Some(signal) = evidence::lifecycle_signal(&event.payload) else {
            return Ok(Vec::new());
        };
        self.cite()?;
        Ok(vec![(
            event.aggregate.id.clone(),
            self.observation(at_ms, ObservationKind::Evidence(signal), Vec::new()),
        )])
    }

    fn llm_event(&self, at_ms: i64) -> ApplyResult<Vec<(String, Observation)>> {
        let event = &self.ev.event;
        if evidence::llm_signal(&event.payload).is_none() {
            return Ok(Vec::new());
        }
        self.cite()?;
        let pending = self.as_evidence(at_ms);
        let session = &event.aggregate.id;
        match get::<SessionOwner>(self.tx, &session_owner_key(session))? {
            None => self.defer(pending_session_key(session), pending),
            Some(owner) => self.llm_observations(&owner, &pending),
        }
    }

    fn llm_observations(
        &self,
        owner: &SessionOwner,
        p: &PendingEvidence,
    ) -> ApplyResult<Vec<(String, Observation)>> {
        let kind = decode_payload(&p.payload)?;
        Ok(evidence::llm_signal(&kind)
            .map(|signal| {
                (
                    owner.owner.clone(),
                    Observation {
                        event_id: p.event_id.clone(),
                        at_ms: p.at_ms,
                        kind: ObservationKind::Evidence(signal),
                        cites: Vec::new(),
                    },
                )
            })
            .into_iter()
            .collect())
    }

    /// Keeps evidence whose owner the feed has not told yet.
    fn defer(
        &self,
        key: Vec<u8>,
        pending: PendingEvidence,
    ) -> ApplyResult<Vec<(String, Observation)>> {
        let mut all: Vec<PendingEvidence> = get(self.tx, &key)?.unwrap_or_default();
        if all.len() < MAX_PENDING {
            all.push(pending);
            put(self.tx, key, &all)?;
        }
        Ok(Vec::new())
    }

    /// Evidence that waited for the owner `key` now names.
    fn take_pending(&self, key: Vec<u8>) -> ApplyResult<Vec<PendingEvidence>> {
        let all: Vec<PendingEvidence> = get(self.tx, &key)?.unwrap_or_default();
        if !all.is_empty() {
            self.tx.remove(key)?;
        }
        Ok(all)
    }

    /// Feeds one observation to its agent's model and plans what it outputs.
    fn observe(
        &self,
        agent: &str,
        obs: &Observation,
        planned: &mut Vec<Planned>,
    ) -> ApplyResult<()> {
        let Some(mut record) = get::<AgentRecord>(self.tx, &record_key(agent))? else {
            // Nobody to attribute it to (an identity this feed never saw registered).
            return Ok(());
        };
        let outputs = record.model.observe(self.cfg, obs);
        let event = &self.ev.event;
        for output in outputs {
            let index = u32::try_from(planned.len()).map_err(ApplyError::corrupt)?;
            let event_id = output_id(&event.body.id, index).to_string();
            let seq = record.next_seq;
            record.next_seq += 1;
            let (delta_kind, event_time_ms) = match output {
                Output::Adjusted(a) => {
                    let payload = proto::TrustAdjusted {
                        agent_id: agent.to_string(),
                        signal: a.signal,
                        positive_milli: a.positive_milli,
                        negative_milli: a.negative_milli,
                        score_before_milli: a.score_before_milli,
                        score_after_milli: a.score_after_milli,
                        reason: a.reason,
                        evidence: a.evidence,
                        event_time_ms: a.event_time_ms,
                    };
                    (proto::trust_delta::Kind::Adjusted(payload), a.event_time_ms)
                }
                Output::Alert(a) => {
                    let mut evidence = a.evidence;
                    evidence.truncate(MAX_ALERT_EVIDENCE);
                    let payload = proto::TrustAlertRaised {
                        agent_id: agent.to_string(),
                        kind: a.kind.as_str().to_string(),
                        severity: severity(a.severity) as i32,
                        statistic_milli: a.statistic_milli,
                        threshold_milli: a.threshold_milli,
                        window: Some(proto::TrustWindow {
                            from_ms: a.window.from_ms,
                            to_ms: a.window.to_ms,
                            first_event: a.window.first_event,
                            last_event: a.window.last_event,
                            count: a.window.count,
                        }),
                        reason: a.reason,
                        evidence,
                    };
                    let end = a.window.to_ms;
                    self.tx
                        .insert(alert_key(end, &event_id), delta_key(agent, seq))?;
                    (proto::trust_delta::Kind::Alert(payload), end)
                }
            };
            let delta = proto::TrustDelta {
                event_id: event_id.clone(),
                trust_seq: seq,
                cause_id: event.body.id.clone(),
                cause_type: event.event_type().to_string(),
                event_time_ms,
                kind: Some(delta_kind),
            };
            self.tx
                .insert(delta_key(agent, seq), delta.encode_to_vec())?;
            self.tx
                .insert(delta_index_key(&event_id), delta_key(agent, seq))?;
            planned.push(Planned {
                agent: agent.to_string(),
                seq,
            });
        }
        put(self.tx, record_key(agent), &record)
    }
}

/// The proto severity of a model severity.
pub(crate) fn severity(s: Severity) -> proto::TrustSeverity {
    match s {
        Severity::Info => proto::TrustSeverity::Info,
        Severity::Warning => proto::TrustSeverity::Warning,
        Severity::Critical => proto::TrustSeverity::Critical,
    }
}
