//! An identity's state folded from its own chain (`agent/<id>`): kind, name, key
//! history and revocation. The rules of what may be appended to which aggregate
//! live here too ([`check_event`]), so the store, the chain verifier and the
//! projections all apply the same ones.
//!
//! Checks are two-phase because some need another identity's state (an operator
//! revoking an agent, a service signing a trust result): the checks return a
//! [`SignerRequirement`] the caller resolves, then [`IdentityState::apply`] folds
//! the event in. [`crate::verify`] drives both phases; nothing else should.
//!
//! Foreign signers are checked causally: an event signed by another identity
//! names (`signer_seq`) the position of the signer's own chain at which its key
//! was current. History is judged at that position ([`SignerCheck::AtPosition`]);
//! an append additionally needs the key current and the signer unrevoked at the
//! signer's head as read fresh from JetStream ([`SignerCheck::Current`]). No
//! clock of any stream is ever compared with another's.

use ed25519_dalek::VerifyingKey;

use crate::envelope::{EventHash, VerifiedEvent};
use crate::keys::{self, IdentityId};
use crate::proto::{self, payload::Kind, IdentityKind};
use crate::subjects::{validate_name, AggregateKind};

/// Unix milliseconds (JetStream's publish time of an event).
pub type Millis = i64;

/// One signing key of an identity and when it was current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The Ed25519 key.
    pub signing_key: VerifyingKey,
    /// The X25519 key published with it.
    pub x25519_key: [u8; 32],
    /// First aggregate sequence signed by this key.
    pub from_seq: u64,
    /// Last aggregate sequence signed by this key (the rotation event), if rotated.
    pub until_seq: Option<u64>,
    /// Publish time of the event that introduced the key.
    pub valid_from: Millis,
    /// Publish time of the event that retired the key.
    pub valid_until: Option<Millis>,
}

/// An identity as folded from its chain.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityState {
    /// Its id.
    pub id: IdentityId,
    /// Its registered name.
    pub name: String,
    /// agent, operator or service.
    pub kind: IdentityKind,
    /// Metadata from the genesis.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Every key it has had, oldest first; the last is current.
    pub keys: Vec<KeyRecord>,
    /// Revocation: aggregate sequence, publish time and reason.
    pub revoked: Option<(u64, Millis, String)>,
    /// For services: the aggregate kinds the operator's endorsement lets it write.
    pub scopes: Vec<String>,
    /// Aggregate sequence of the last folded event.
    pub head_seq: u64,
    /// Hash of the last folded event.
    pub head_hash: EventHash,
    /// Publish time of the genesis.
    pub registered_at: Millis,
    /// Hash of the genesis event.
    pub genesis_hash: EventHash,
}

/// Why an event may not be appended where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The genesis or a payload breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The signing key is not the key the actor may sign with here.
    #[error("unknown key: {0}")]
    UnknownKey(String),
    /// The identity (or the signer) is revoked.
    #[error("revoked: {0}")]
    Revoked(String),
    /// The actor may not write to this aggregate.
    #[error("not permitted: {0}")]
    NotPermitted(String),
}

/// What the caller must check about a signer whose state lives in another chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerRequirement {
    /// Nothing: the event is fully checked.
    None,
    /// `actor` must be an identity of one of `kinds`, unrevoked at `at_seq` of its
    /// own chain, where `key` was its current key; a service must hold `scope`.
    Identity {
        /// The foreign signer.
        actor: IdentityId,
        /// The key it signed with.
        key: VerifyingKey,
        /// The kinds it must be.
        kinds: Vec<IdentityKind>,
        /// The position of the signer's chain the event cites (`signer_seq`).
        at_seq: u64,
        /// For services: the aggregate kind written, which must be in its scopes.
        scope: Option<AggregateKind>,
    },
    /// An operator identity (not the trust root) with `key` endorsed this genesis
    /// at `at_seq` of its chain.
    Endorser {
        /// The endorsing operator.
        operator_id: IdentityId,
        /// The key it endorsed with.
        key: VerifyingKey,
        /// The position of the operator's chain the endorsement cites.
        at_seq: u64,
    },
    /// A name claim for `agent_id`: its chain must be empty (the registration is
    /// in progress) or start with the genesis `genesis_hash` and be unrevoked.
    NameOwner {
        /// The identity the name is for.
        agent_id: IdentityId,
        /// Hash of its genesis.
        genesis_hash: EventHash,
    },
}

impl SignerRequirement {
    /// The identity whose state resolves this requirement, if any.
    pub fn identity(&self) -> Option<&str> {
        match self {
            SignerRequirement::None => None,
            SignerRequirement::Identity { actor, .. } => Some(actor),
            SignerRequirement::Endorser { operator_id, .. } => Some(operator_id),
            SignerRequirement::NameOwner { agent_id, .. } => Some(agent_id),
        }
    }
}

/// How a foreign signer is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerCheck {
    /// History (auditors, projections): at the cited position only.
    AtPosition,
    /// Appending: at the cited position, and the key still current and the
    /// signer unrevoked at the signer's head (read fresh).
    Current,
}

/// Human name of an identity kind.
pub fn kind_name(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Agent => "agent",
        IdentityKind::Operator => "operator",
        IdentityKind::Service => "service",
        IdentityKind::Unspecified => "unspecified",
    }
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], RuleError> {
    bytes
        .try_into()
        .map_err(|_| RuleError::Invalid(format!("{what} must be 32 bytes")))
}

impl IdentityState {
    /// The current key record.
    pub fn current_key(&self) -> &KeyRecord {
        // Invariant: a state is only built from a genesis, which pushes one key.
        &self.keys[self.keys.len() - 1]
    }

    /// The key record of `key` if it was the current key once the chain was
    /// folded up to and including aggregate sequence `seq`.
    pub fn key_at_seq(&self, key: &VerifyingKey, seq: u64) -> Option<&KeyRecord> {
        if seq == 0 || seq > self.head_seq {
            return None;
        }
        self.keys.iter().find(|k| {
            &k.signing_key == key
                && k.from_seq.saturating_sub(1) <= seq
                && k.until_seq.is_none_or(|u| seq < u)
        })
    }

    /// The key record that signed (or would sign) the event at aggregate
    /// sequence `seq` of this chain: current once events up to `seq - 1` are folded.
    pub fn key_signing_at(&self, seq: u64) -> Option<&KeyRecord> {
        self.keys
            .iter()
            .find(|k| k.from_seq <= seq && k.until_seq.is_none_or(|u| seq <= u))
    }

    /// Whether the identity was revoked at or before aggregate sequence `seq`.
    pub fn revoked_at(&self, seq: u64) -> bool {
        self.revoked.as_ref().is_some_and(|(s, _, _)| *s <= seq)
    }

    /// Builds the state from a genesis event (`agent.registered` at seq 1).
    /// Returns the endorsement requirement for operators and services.
    pub fn from_genesis(
        ev: &VerifiedEvent,
        published: Millis,
        trust_root: Option<&VerifyingKey>,
    ) -> Result<(Self, SignerRequirement), RuleError> {
        let Kind::AgentRegistered(reg) = &ev.payload else {
            return Err(RuleError::Invalid(format!(
                "the first event of an agent chain must be agent.registered, not {}",
                ev.event_type()
            )));
        };
        if ev.aggregate_seq() != 1 {
            return Err(RuleError::Invalid(
                "agent.registered is only valid as the first event of a chain".into(),
            ));
        }
        let signing = keys::verifying_key(&reg.signing_key)
            .ok_or_else(|| RuleError::Invalid("signing_key is not an Ed25519 public key".into()))?;
        if signing != ev.signer {
            return Err(RuleError::UnknownKey(
                "the genesis must be signed by the key it registers".into(),
            ));
        }
        if ev.body.signer_seq != 0 {
            return Err(RuleError::Invalid("a genesis carries no signer_seq".into()));
        }
        let id = keys::identity_id(&signing);
        if ev.aggregate.id != id || ev.actor() != id {
            return Err(RuleError::Invalid(format!(
                "the identity id of this key is {id}; aggregate and actor must be agent/{id}"
            )));
        }
        validate_name(&reg.name).map_err(|e| RuleError::Invalid(e.to_string()))?;
        let x25519 = key32(&reg.x25519_key, "x25519_key")?;
        let kind = IdentityKind::try_from(reg.kind).unwrap_or(IdentityKind::Unspecified);
        let requirement = match kind {
            IdentityKind::Agent => SignerRequirement::None,
            IdentityKind::Operator if trust_root == Some(&signing) => SignerRequirement::None,
            IdentityKind::Operator | IdentityKind::Service => {
                let e = reg.endorsement.as_ref().ok_or_else(|| {
                    RuleError::NotPermitted(format!(
                        "a {} identity needs an operator endorsement",
                        kind_name(kind)
                    ))
                })?;
                let op_key = keys::verifying_key(&e.operator_key).ok_or_else(|| {
                    RuleError::Invalid("endorsement operator_key is not an Ed25519 key".into())
                })?;
                let sig: [u8; 64] = e.signature.as_slice().try_into().map_err(|_| {
                    RuleError::Invalid("endorsement signature must be 64 bytes".into())
                })?;
                if kind == IdentityKind::Operator && !e.scopes.is_empty() {
                    return Err(RuleError::Invalid(
                        "an operator endorsement carries no scopes".into(),
                    ));
                }
                for scope in &e.scopes {
                    match AggregateKind::parse(scope) {
                        Some(AggregateKind::Agent | AggregateKind::Name) | None => {
                            return Err(RuleError::Invalid(format!(
                                "scope {scope:?} is not a domain aggregate kind a service may write"
                            )))
                        }
                        Some(_) => {}
                    }
                }
                let body = crate::pae::pae(
                    crate::pae::ENDORSEMENT_DOMAIN,
                    &keys::endorsement_body(&signing, kind_name(kind), &e.scopes),
                );
                op_key
                    .verify_strict(&body, &ed25519_dalek::Signature::from_bytes(&sig))
                    .map_err(|_| {
                        RuleError::NotPermitted("the endorsement signature does not verify".into())
                    })?;
                if trust_root == Some(&op_key) {
                    SignerRequirement::None
                } else {
                    SignerRequirement::Endorser {
                        operator_id: e.operator_id.clone(),
                        key: op_key,
                        at_seq: e.operator_seq,
                    }
                }
            }
            IdentityKind::Unspecified => {
                return Err(RuleError::Invalid(
                    "kind must be agent, operator or service".into(),
                ))
            }
        };
        let state = IdentityState {
            id,
            name: reg.name.clone(),
            kind,
            metadata: reg.metadata.clone(),
            keys: vec![KeyRecord {
                signing_key: signing,
                x25519_key: x25519,
                from_seq: 1,
                until_seq: None,
                valid_from: published,
                valid_until: None,
            }],
            revoked: None,
            scopes: reg
                .endorsement
                .as_ref()
                .map(|e| e.scopes.clone())
                .unwrap_or_default(),
            head_seq: 1,
            head_hash: ev.hash,
            registered_at: published,
            genesis_hash: ev.hash,
        };
        Ok((state, requirement))
    }

    /// Checks a non-genesis event of this identity's own chain against the state
    /// folded up to the event before it: the signer must hold the key current at
    /// that position (so old signatures stay valid for the events they signed).
    pub fn check(&self, ev: &VerifiedEvent) -> Result<SignerRequirement, RuleError> {
        if matches!(ev.payload, Kind::AgentRegistered(_)) {
            return Err(RuleError::Invalid(
                "agent.registered is only valid as the first event of a chain".into(),
            ));
        }
        if !belongs_on_agent_chain(&ev.payload) {
            return Err(RuleError::NotPermitted(format!(
                "{} events do not belong on an agent chain",
                ev.event_type()
            )));
        }
        if let Some((seq, _, reason)) = &self.revoked {
            return Err(RuleError::Revoked(format!(
                "identity {} was revoked at seq {seq} ({reason}); nothing more can be appended",
                self.id
            )));
        }
        if ev.actor() == self.id && ev.body.signer_seq != 0 {
            return Err(RuleError::Invalid(
                "signer_seq is only set by foreign signers; it must be 0 on one's own chain".into(),
            ));
        }
        if ev.actor() != self.id {
            // Only an operator may act on someone else's chain, and only to revoke it.
            if matches!(ev.payload, Kind::AgentRevoked(_)) {
                return Ok(SignerRequirement::Identity {
                    actor: ev.actor().to_string(),
                    key: ev.signer,
                    kinds: vec![IdentityKind::Operator],
                    at_seq: ev.body.signer_seq,
                    scope: None,
                });
            }
            return Err(RuleError::NotPermitted(format!(
                "only {} may append to its own chain (actor was {})",
                self.id,
                ev.actor()
            )));
        }
        let current = self.current_key();
        if ev.signer != current.signing_key {
            let old = self.keys.iter().any(|k| k.signing_key == ev.signer);
            return Err(if old {
                RuleError::Revoked(format!(
                    "key {} of {} was rotated out; sign with the current key",
                    hex::encode(ev.signer.as_bytes()),
                    self.id
                ))
            } else {
                RuleError::UnknownKey(format!(
                    "key {} is not a key of {}",
                    hex::encode(ev.signer.as_bytes()),
                    self.id
                ))
            });
        }
        if let Kind::AgentKeyRotated(rot) = &ev.payload {
            let new = keys::verifying_key(&rot.new_signing_key).ok_or_else(|| {
                RuleError::Invalid("new_signing_key is not an Ed25519 public key".into())
            })?;
            key32(&rot.new_x25519_key, "new_x25519_key")?;
            if self.keys.iter().any(|k| k.signing_key == new) {
                return Err(RuleError::Invalid(
                    "new_signing_key was already used by this identity".into(),
                ));
            }
            let proof: [u8; 64] = rot.new_key_proof.as_slice().try_into().map_err(|_| {
                RuleError::Invalid(
                    "a key rotation carries new_key_proof: a 64-byte signature by the new key (proof of possession)".into(),
                )
            })?;
            let body = crate::pae::pae(
                crate::pae::ROTATION_DOMAIN,
                &keys::rotation_body(
                    &ev.aggregate.to_string(),
                    ev.aggregate_seq(),
                    &current.signing_key,
                    &new,
                    &rot.new_x25519_key,
                ),
            );
            new.verify_strict(&body, &ed25519_dalek::Signature::from_bytes(&proof))
                .map_err(|_| {
                    RuleError::Invalid(
                        "new_key_proof does not verify: the new key must sign the rotation (proof of possession)".into(),
                    )
                })?;
        }
        if let Kind::AgentMessageSent(m) = &ev.payload {
            crate::subjects::validate_id(&m.to).map_err(|e| RuleError::Invalid(e.to_string()))?;
            if m.sealed.is_empty() {
                return Err(RuleError::Invalid(
                    "a message must carry sealed content".into(),
                ));
            }
        }
        if let Kind::AgentEndorsed(e) = &ev.payload {
            check_endorsement(e, &self.id)?;
        }
        if operator_only(&ev.payload) && self.kind != IdentityKind::Operator {
            return Err(RuleError::NotPermitted(format!(
                "only an operator may append {} (this identity is {})",
                ev.event_type(),
                kind_name(self.kind)
            )));
        }
        if let Kind::AuditCheckpointCosigned(c) = &ev.payload {
            if c.root_hash.len() != 32 || c.origin.is_empty() || c.witness_name.is_empty() {
                return Err(RuleError::Invalid(
                    "a cosignature record names the origin, the witness and a 32-byte root_hash"
                        .into(),
                ));
            }
        }
        Ok(SignerRequirement::None)
    }

    /// Folds a checked event into the state.
    pub fn apply(&mut self, ev: &VerifiedEvent, published: Millis) {
        match &ev.payload {
            Kind::AgentKeyRotated(rot) => {
                if let (Some(new), Ok(x)) = (
                    keys::verifying_key(&rot.new_signing_key),
                    key32(&rot.new_x25519_key, "x"),
                ) {
                    let seq = ev.aggregate_seq();
                    let last = self.keys.len() - 1;
                    self.keys[last].until_seq = Some(seq);
                    self.keys[last].valid_until = Some(published);
                    self.keys.push(KeyRecord {
                        signing_key: new,
                        x25519_key: x,
                        from_seq: seq + 1,
                        until_seq: None,
                        valid_from: published,
                        valid_until: None,
                    });
                }
            }
            Kind::AgentRevoked(r) => {
                self.revoked = Some((ev.aggregate_seq(), published, r.reason.clone()))
            }
            _ => {}
        }
        self.head_seq = ev.aggregate_seq();
        self.head_hash = ev.hash;
    }
}

/// Longest endorsement statement, in bytes.
pub const MAX_ENDORSEMENT_STATEMENT_BYTES: usize = 512;

/// The rules an `agent.endorsed` action keeps on its own (whether the endorsee
/// exists and is not revoked is checked where identities can be looked up: the
/// gateway, and the trust role, which ignores what it cannot attribute).
fn check_endorsement(e: &proto::AgentEndorsed, endorser: &str) -> Result<(), RuleError> {
    crate::subjects::validate_id(&e.endorsee)
        .map_err(|err| RuleError::Invalid(format!("endorsee is not an identity id: {err}")))?;
    if e.endorsee == endorser {
        return Err(RuleError::Invalid(
            "an identity cannot endorse itself; endorse another agent".into(),
        ));
    }
    if e.statement.len() > MAX_ENDORSEMENT_STATEMENT_BYTES {
        return Err(RuleError::Invalid(format!(
            "the endorsement statement is {} bytes; at most {MAX_ENDORSEMENT_STATEMENT_BYTES} are allowed",
            e.statement.len()
        )));
    }
    Ok(())
}

/// The rules an `audit.checkpointed` keeps on its own (sizes growing along
/// the chain and the note's signature are checked by auditors and witnesses,
/// which hold the previous checkpoint and the log key).
fn check_checkpoint_shape(c: &proto::AuditCheckpointed, stream: &str) -> Result<(), RuleError> {
    if c.stream != stream {
        return Err(RuleError::Invalid(format!(
            "a checkpoint of {} cannot be stored on audit/{stream}",
            c.stream
        )));
    }
    if c.tree_size == 0 || c.root_hash.len() != 32 || c.log_signature.len() != 64 {
        return Err(RuleError::Invalid(
            "a checkpoint has tree_size >= 1, a 32-byte root_hash and a 64-byte log_signature"
                .into(),
        ));
    }
    if c.note.is_empty() || c.origin.is_empty() {
        return Err(RuleError::Invalid(
            "a checkpoint carries its origin and its signed note".into(),
        ));
    }
    if c.gaps.iter().any(|g| *g == 0 || *g > c.tree_size) {
        return Err(RuleError::Invalid(
            "checkpoint gaps are stream sequences within the tree".into(),
        ));
    }
    Ok(())
}

/// Whether a payload is an action of an identity on its own chain (genesis
/// excepted: it is only valid at seq 1).
fn belongs_on_agent_chain(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::AgentKeyRotated(_)
            | Kind::AgentRevoked(_)
            | Kind::AgentMessageSent(_)
            | Kind::AgentAction(_)
            | Kind::AgentEndorsed(_)
            | Kind::LlmSessionOpened(_)
            | Kind::LlmSessionModeSet(_)
            | Kind::LlmSessionKeyIssued(_)
            | Kind::LlmSessionKeyRevoked(_)
            | Kind::LlmSessionDeleted(_)
            | Kind::JailRequested(_)
            | Kind::AuditCheckpointCosigned(_)
            | Kind::AuditSplitViewDetected(_)
            | Kind::CatalogPublished(_)
            | Kind::LifecycleRequested(_)
            | Kind::PolicySet(_)
            | Kind::AppealFiled(_)
            | Kind::AppealResolved(_)
    )
}

/// Actions only an operator may take on its own chain: steering managed
/// agents, setting policies and resolving appeals.
fn operator_only(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::LifecycleRequested(_) | Kind::PolicySet(_) | Kind::AppealResolved(_)
    )
}

/// The aggregate kind a service result belongs on; `None` for payloads that
/// are not service results (identity actions, name claims).
fn service_result_home(kind: &Kind) -> Option<AggregateKind> {
    match kind {
        Kind::TrustInitialized(_) | Kind::TrustAdjusted(_) | Kind::TrustAlertRaised(_) => {
            Some(AggregateKind::Trust)
        }
        Kind::ReactorFailed(_) => Some(AggregateKind::Failure),
        Kind::LifecycleChanged(_)
        | Kind::LifecycleRefused(_)
        | Kind::SanctionImposed(_)
        | Kind::SanctionLifted(_) => Some(AggregateKind::Lifecycle),
        Kind::AuditCheckpointed(_) => Some(AggregateKind::Audit),
        Kind::LlmInteractionRecorded(_) | Kind::LlmReplayMissed(_) => Some(AggregateKind::Llm),
        Kind::JailCreated(_)
        | Kind::JailRunStarted(_)
        | Kind::JailRunFinished(_)
        | Kind::JailRunFailed(_)
        | Kind::JailReproducibilityChecked(_)
        | Kind::JailDeleted(_)
        | Kind::JailRunQueued(_) => Some(AggregateKind::Jail),
        Kind::NameClaimed(_)
        | Kind::AgentRegistered(_)
        | Kind::AgentKeyRotated(_)
        | Kind::AgentRevoked(_)
        | Kind::AgentMessageSent(_)
        | Kind::AgentAction(_)
        | Kind::AgentEndorsed(_)
        | Kind::LlmSessionOpened(_)
        | Kind::LlmSessionModeSet(_)
        | Kind::LlmSessionKeyIssued(_)
        | Kind::LlmSessionKeyRevoked(_)
        | Kind::LlmSessionDeleted(_)
        | Kind::JailRequested(_)
        | Kind::AuditCheckpointCosigned(_)
        | Kind::AuditSplitViewDetected(_)
        | Kind::CatalogPublished(_)
        | Kind::LifecycleRequested(_)
        | Kind::PolicySet(_)
        | Kind::AppealFiled(_)
        | Kind::AppealResolved(_) => None,
    }
}

/// Checks an event appended to a non-agent aggregate (name claims, service results).
pub fn check_foreign_aggregate_event(
    ev: &VerifiedEvent,
    trust_root: Option<&VerifyingKey>,
) -> Result<SignerRequirement, RuleError> {
    match ev.aggregate.kind {
        AggregateKind::Agent => Err(RuleError::Invalid(
            "agent chains are checked against their identity state".into(),
        )),
        AggregateKind::Name => check_name_claim(ev, trust_root),
        _ => {
            match service_result_home(&ev.payload) {
                None => {
                    return Err(RuleError::NotPermitted(format!(
                        "{} belongs on an agent or name chain",
                        ev.event_type()
                    )))
                }
                Some(home) if home != ev.aggregate.kind => {
                    return Err(RuleError::NotPermitted(format!(
                        "{} events belong on {} aggregates",
                        ev.event_type(),
                        home.as_str()
                    )))
                }
                Some(_) => {}
            }
            if ev.body.signer_seq == 0 {
                return Err(RuleError::Invalid(
                    "a service result names signer_seq: the position of the service's own chain at which its key was current".into(),
                ));
            }
            if let Kind::AuditCheckpointed(c) = &ev.payload {
                check_checkpoint_shape(c, &ev.aggregate.id)?;
            }
            Ok(SignerRequirement::Identity {
                actor: ev.actor().to_string(),
                key: ev.signer,
                kinds: vec![IdentityKind::Service],
                at_seq: ev.body.signer_seq,
                scope: Some(ev.aggregate.kind),
            })
        }
    }
}

/// A name claim: seq 1 of `name/<name>`, signed by the genesis key of the
/// identity it names and carrying that genesis, which must be a valid
/// registration of this very name. Nobody claims a name without registering it.
fn check_name_claim(
    ev: &VerifiedEvent,
    trust_root: Option<&VerifyingKey>,
) -> Result<SignerRequirement, RuleError> {
    let Kind::NameClaimed(claim) = &ev.payload else {
        return Err(RuleError::NotPermitted(format!(
            "only name.claimed may be appended to a name, not {}",
            ev.event_type()
        )));
    };
    if ev.aggregate_seq() != 1 {
        return Err(RuleError::NotPermitted(
            "a name is claimed once, by its first event".into(),
        ));
    }
    if claim.name != ev.aggregate.id {
        return Err(RuleError::Invalid(
            "name.claimed must name its own aggregate".into(),
        ));
    }
    if claim.agent_id != ev.actor() || keys::identity_id(&ev.signer) != claim.agent_id {
        return Err(RuleError::UnknownKey(
            "a name must be claimed by the genesis key of the identity that gets it".into(),
        ));
    }
    if ev.body.signer_seq != 0 {
        return Err(RuleError::Invalid(
            "a name claim carries no signer_seq".into(),
        ));
    }
    let genesis_hash: EventHash = claim
        .genesis_hash
        .as_slice()
        .try_into()
        .map_err(|_| RuleError::Invalid("genesis_hash must be 32 bytes".into()))?;
    if claim.genesis.is_empty() {
        return Err(RuleError::NotPermitted(
            "a name is only claimed as part of a registration: the claim must carry the genesis it names (register with IdentityService.Register)".into(),
        ));
    }
    let genesis = VerifiedEvent::decode(&claim.genesis)
        .map_err(|e| RuleError::Invalid(format!("the claim's genesis: {e}")))?;
    if genesis.hash != genesis_hash {
        return Err(RuleError::Invalid(
            "genesis_hash is not the hash of the claim's genesis".into(),
        ));
    }
    let (state, _) = IdentityState::from_genesis(&genesis, 0, trust_root)?;
    if state.id != claim.agent_id || state.name != claim.name {
        return Err(RuleError::Invalid(format!(
            "the claim's genesis registers {:?} for {}, not {:?} for {}",
            state.name, state.id, claim.name, claim.agent_id
        )));
    }
    if state.current_key().signing_key != ev.signer {
        return Err(RuleError::UnknownKey(
            "a name must be claimed by the genesis key of the identity that gets it".into(),
        ));
    }
    Ok(SignerRequirement::NameOwner {
        agent_id: claim.agent_id.clone(),
        genesis_hash,
    })
}

/// Checks a foreign signer's state against a requirement. `state` is the
/// signer's state folded as far as is known (for [`SignerCheck::Current`]: up to
/// its head read fresh); `None` when the signer has no chain.
pub fn check_requirement(
    req: &SignerRequirement,
    state: Option<&IdentityState>,
    mode: SignerCheck,
) -> Result<(), RuleError> {
    match req {
        SignerRequirement::None => Ok(()),
        SignerRequirement::Identity {
            actor,
            key,
            kinds,
            at_seq,
            scope,
        } => {
            let state = state.ok_or_else(|| {
                RuleError::UnknownKey(format!("signer {actor} is not a registered identity"))
            })?;
            check_signer(state, key, kinds, *at_seq, mode)?;
            if let Some(scope) = scope {
                if state.kind == IdentityKind::Service
                    && !state.scopes.iter().any(|s| s == scope.as_str())
                {
                    return Err(RuleError::NotPermitted(format!(
                        "service {} may write {}, not {} aggregates",
                        state.id,
                        if state.scopes.is_empty() {
                            "nothing".to_string()
                        } else {
                            state.scopes.join(", ")
                        },
                        scope.as_str()
                    )));
                }
            }
            Ok(())
        }
        SignerRequirement::Endorser {
            operator_id,
            key,
            at_seq,
        } => {
            let state = state.ok_or_else(|| {
                RuleError::UnknownKey(format!(
                    "endorser {operator_id} is not a registered identity"
                ))
            })?;
            check_signer(state, key, &[IdentityKind::Operator], *at_seq, mode)
        }
        SignerRequirement::NameOwner {
            agent_id,
            genesis_hash,
        } => match state {
            None => Ok(()),
            Some(s) if s.genesis_hash != *genesis_hash => Err(RuleError::NotPermitted(format!(
                "{agent_id} is registered with another genesis; the claim must carry it"
            ))),
            Some(s) if mode == SignerCheck::Current && s.revoked.is_some() => Err(
                RuleError::Revoked(format!("identity {agent_id} is revoked; it claims no name")),
            ),
            Some(_) => Ok(()),
        },
    }
}

/// Checks a foreign signer: kind, then key validity at `at_seq` of its chain (and,
/// for [`SignerCheck::Current`], at its head).
pub fn check_signer(
    state: &IdentityState,
    key: &VerifyingKey,
    kinds: &[IdentityKind],
    at_seq: u64,
    mode: SignerCheck,
) -> Result<(), RuleError> {
    if !kinds.contains(&state.kind) {
        let want: Vec<_> = kinds.iter().map(|k| kind_name(*k)).collect();
        return Err(RuleError::NotPermitted(format!(
            "{} is a {}, but this needs a {}",
            state.id,
            kind_name(state.kind),
            want.join(" or ")
        )));
    }
    if at_seq == 0 || at_seq > state.head_seq {
        return Err(RuleError::UnknownKey(format!(
            "the event cites position {at_seq} of {}'s chain, which is at {}; cite the signer's current head",
            state.id, state.head_seq
        )));
    }
    if state.revoked_at(at_seq) {
        return Err(RuleError::Revoked(format!(
            "signer {} was revoked at or before position {at_seq} of its chain",
            state.id
        )));
    }
    if state.key_at_seq(key, at_seq).is_none() {
        return Err(RuleError::UnknownKey(format!(
            "key {} was not the current key of {} at position {at_seq} of its chain",
            hex::encode(key.as_bytes()),
            state.id
        )));
    }
    if mode == SignerCheck::Current {
        if let Some((seq, _, reason)) = &state.revoked {
            return Err(RuleError::Revoked(format!(
                "signer {} was revoked at seq {seq} ({reason})",
                state.id
            )));
        }
        if &state.current_key().signing_key != key {
            return Err(RuleError::Revoked(format!(
                "key {} of {} was rotated out; sign with its current key",
                hex::encode(key.as_bytes()),
                state.id
            )));
        }
    }
    Ok(())
}

/// The identity kind of a proto enum value.
pub fn identity_kind(v: i32) -> IdentityKind {
    proto::IdentityKind::try_from(v).unwrap_or(IdentityKind::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::EventDraft;
    use crate::keys::IdentityKeys;
    use crate::subjects::Aggregate;

    fn jail_results() -> Vec<Kind> {
        vec![
            Kind::JailCreated(Default::default()),
            Kind::JailRunStarted(Default::default()),
            Kind::JailRunFinished(Default::default()),
            Kind::JailRunFailed(Default::default()),
            Kind::JailReproducibilityChecked(Default::default()),
            Kind::JailDeleted(Default::default()),
            Kind::JailRunQueued(Default::default()),
        ]
    }

    #[test]
    fn jail_requests_belong_on_the_requesters_chain_and_results_on_the_jail() {
        assert!(belongs_on_agent_chain(&Kind::JailRequested(
            Default::default()
        )));
        assert_eq!(
            service_result_home(&Kind::JailRequested(Default::default())),
            None
        );
        for kind in jail_results() {
            assert!(!belongs_on_agent_chain(&kind), "{kind:?}");
            assert_eq!(
                service_result_home(&kind),
                Some(AggregateKind::Jail),
                "{kind:?}"
            );
        }
    }

    fn signed(aggregate: Aggregate, kind: Kind, signer_seq: u64) -> VerifiedEvent {
        let keys = IdentityKeys::generate();
        let actor = keys.identity_id();
        let signed = EventDraft::new(aggregate, kind)
            .signer_seq(signer_seq)
            .sign(&keys, &actor);
        VerifiedEvent::from_signed(signed).expect("verified")
    }

    #[test]
    fn jail_results_are_service_results_on_jail_aggregates_only() {
        let jail = Aggregate::new(AggregateKind::Jail, crate::jail::jail_id("o", "e"))
            .expect("jail aggregate");
        let llm = Aggregate::new(AggregateKind::Llm, crate::llm::session_id("o", "e"))
            .expect("llm aggregate");
        for kind in jail_results() {
            let on_jail = signed(jail.clone(), kind.clone(), 1);
            match check_foreign_aggregate_event(&on_jail, None) {
                Ok(SignerRequirement::Identity { kinds, scope, .. }) => {
                    assert_eq!(kinds, vec![IdentityKind::Service]);
                    assert_eq!(scope, Some(AggregateKind::Jail));
                }
                other => panic!("{kind:?} on a jail: {other:?}"),
            }
            let on_llm = signed(llm.clone(), kind.clone(), 1);
            assert!(matches!(
                check_foreign_aggregate_event(&on_llm, None),
                Err(RuleError::NotPermitted(_))
            ));
        }
        let request = signed(jail, Kind::JailRequested(Default::default()), 1);
        assert!(matches!(
            check_foreign_aggregate_event(&request, None),
            Err(RuleError::NotPermitted(_))
        ));
    }

    fn lifecycle_actions() -> Vec<Kind> {
        vec![
            Kind::CatalogPublished(Default::default()),
            Kind::LifecycleRequested(Default::default()),
            Kind::PolicySet(Default::default()),
            Kind::AppealFiled(Default::default()),
            Kind::AppealResolved(Default::default()),
        ]
    }

    fn lifecycle_results() -> Vec<Kind> {
        vec![
            Kind::LifecycleChanged(Default::default()),
            Kind::LifecycleRefused(Default::default()),
            Kind::SanctionImposed(Default::default()),
            Kind::SanctionLifted(Default::default()),
        ]
    }

    #[test]
    fn lifecycle_actions_go_on_the_actors_chain_and_results_on_lifecycle_aggregates_only() {
        for kind in lifecycle_actions() {
            assert!(belongs_on_agent_chain(&kind), "{kind:?}");
            assert_eq!(service_result_home(&kind), None, "{kind:?}");
        }
        let lifecycle = Aggregate::new(AggregateKind::Lifecycle, "someone").expect("aggregate");
        let jail = Aggregate::new(AggregateKind::Jail, crate::jail::jail_id("o", "e"))
            .expect("jail aggregate");
        for kind in lifecycle_results() {
            assert!(!belongs_on_agent_chain(&kind), "{kind:?}");
            match check_foreign_aggregate_event(&signed(lifecycle.clone(), kind.clone(), 1), None) {
                Ok(SignerRequirement::Identity { kinds, scope, .. }) => {
                    assert_eq!(kinds, vec![IdentityKind::Service]);
                    assert_eq!(scope, Some(AggregateKind::Lifecycle));
                }
                other => panic!("{kind:?} on a lifecycle aggregate: {other:?}"),
            }
            // A jail service (or anyone) cannot put a sanction on a jail.
            assert!(matches!(
                check_foreign_aggregate_event(&signed(jail.clone(), kind.clone(), 1), None),
                Err(RuleError::NotPermitted(_))
            ));
        }
        // A request is never a service result, even on a lifecycle aggregate.
        let request = signed(lifecycle, Kind::LifecycleRequested(Default::default()), 1);
        assert!(matches!(
            check_foreign_aggregate_event(&request, None),
            Err(RuleError::NotPermitted(_))
        ));
    }

    /// A registered identity of `kind` (operators as the trust root).
    fn identity(kind: IdentityKind) -> (IdentityKeys, IdentityState, VerifyingKey) {
        let keys = IdentityKeys::generate();
        let id = keys.identity_id();
        let genesis = EventDraft::new(
            Aggregate::agent(&id).expect("agg"),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: "someone".into(),
                kind: kind as i32,
                signing_key: keys.public_key().as_bytes().to_vec(),
                x25519_key: keys.x25519_public().to_vec(),
                ..Default::default()
            }),
        )
        .sign(&keys, &id);
        let genesis = VerifiedEvent::from_signed(genesis).expect("genesis");
        let root = keys.public_key();
        let (mut state, _) = IdentityState::from_genesis(&genesis, 0, Some(&root)).expect("state");
        state.apply(&genesis, 0);
        (keys, state, root)
    }

    fn own_action(keys: &IdentityKeys, state: &IdentityState, kind: Kind) -> VerifiedEvent {
        let signed = EventDraft::new(Aggregate::agent(&state.id).expect("agg"), kind)
            .after(state.head_seq, state.head_hash)
            .sign(keys, &state.id);
        VerifiedEvent::from_signed(signed).expect("verified")
    }

    #[test]
    fn only_operators_steer_agents_set_policies_and_resolve_appeals() {
        let (agent_keys, agent, _) = identity(IdentityKind::Agent);
        let (op_keys, operator, _) = identity(IdentityKind::Operator);
        for kind in [
            Kind::LifecycleRequested(Default::default()),
            Kind::PolicySet(Default::default()),
            Kind::AppealResolved(Default::default()),
        ] {
            let by_agent = own_action(&agent_keys, &agent, kind.clone());
            match agent.check(&by_agent) {
                Err(RuleError::NotPermitted(m)) => assert!(m.contains("only an operator"), "{m}"),
                other => panic!("{kind:?} by an agent: {other:?}"),
            }
            let by_operator = own_action(&op_keys, &operator, kind.clone());
            assert!(
                operator.check(&by_operator).is_ok(),
                "{kind:?} by an operator"
            );
        }
        // Publishing to the catalogue and appealing are open to any identity.
        for kind in [
            Kind::CatalogPublished(Default::default()),
            Kind::AppealFiled(Default::default()),
        ] {
            let by_agent = own_action(&agent_keys, &agent, kind.clone());
            assert!(agent.check(&by_agent).is_ok(), "{kind:?} by an agent");
        }
    }
}
