//! The event envelope: drafting, signing, decoding, hashing and signature checks.
//!
//! An [`EventDraft`] is encoded once into `EventBody` bytes and signed; those bytes
//! travel verbatim inside `SignedEvent.body`. The event hash is the SHA-256 of the
//! encoded `SignedEvent` as stored on the stream. [`VerifiedEvent::decode`] is the
//! single entry point for bytes coming from outside: it checks structure and the
//! Ed25519 signature against the carried key (whether that key *belongs* to the
//! actor is the store's and the chain verifier's job).

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::keys::{self, IdentityKeys};
use crate::pae;
use crate::proto::{self, payload::Kind, EventBody, Payload, SignedEvent};
use crate::subjects::{Aggregate, AggregateKind};

/// SHA-256 of an encoded `SignedEvent`.
pub type EventHash = [u8; 32];

/// The `prev_hash` of the first event of every aggregate.
pub const ZERO_HASH: EventHash = [0u8; 32];

/// Hashes an encoded `SignedEvent`.
pub fn hash_bytes(encoded_signed_event: &[u8]) -> EventHash {
    Sha256::digest(encoded_signed_event).into()
}

/// Why bytes are not an acceptable event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not a decodable `SignedEvent` / `EventBody`, or a field is out of shape.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// The signature does not verify against the carried key.
    #[error("signature does not verify against the signer key carried by the event")]
    BadSignature,
}

/// The event type a payload variant must be recorded under, or `None` for free-form
/// agent actions (whose type is chosen by the agent).
pub fn payload_event_type(kind: &Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::AgentRegistered(_) => "agent.registered",
        Kind::AgentKeyRotated(_) => "agent.key_rotated",
        Kind::AgentRevoked(_) => "agent.revoked",
        Kind::AgentMessageSent(_) => "agent.message_sent",
        Kind::NameClaimed(_) => "name.claimed",
        Kind::AgentEndorsed(_) => "agent.endorsed",
        Kind::TrustInitialized(_) => "trust.initialized",
        Kind::TrustAdjusted(_) => "trust.adjusted",
        Kind::TrustAlertRaised(_) => "trust.alert_raised",
        Kind::ReactorFailed(_) => "reactor.failed",
        Kind::LlmSessionOpened(_) => "llm.session_opened",
        Kind::LlmSessionModeSet(_) => "llm.session_mode_set",
        Kind::LlmSessionKeyIssued(_) => "llm.session_key_issued",
        Kind::LlmSessionKeyRevoked(_) => "llm.session_key_revoked",
        Kind::LlmSessionDeleted(_) => "llm.session_deleted",
        Kind::LlmInteractionRecorded(_) => "llm.interaction_recorded",
        Kind::LlmReplayMissed(_) => "llm.replay_missed",
        Kind::JailRequested(_) => "jail.requested",
        Kind::JailCreated(_) => "jail.created",
        Kind::JailRunStarted(_) => "jail.run_started",
        Kind::JailRunFinished(_) => "jail.run_finished",
        Kind::JailRunFailed(_) => "jail.run_failed",
        Kind::JailReproducibilityChecked(_) => "jail.reproducibility_checked",
        Kind::JailDeleted(_) => "jail.deleted",
        Kind::JailRunQueued(_) => "jail.run_queued",
        Kind::AuditCheckpointed(_) => "audit.checkpointed",
        Kind::AuditCheckpointCosigned(_) => "audit.checkpoint_cosigned",
        Kind::AuditSplitViewDetected(_) => "audit.split_view_detected",
        Kind::CatalogPublished(_) => "catalog.published",
        Kind::LifecycleRequested(_) => "lifecycle.requested",
        Kind::PolicySet(_) => "governance.policy_set",
        Kind::AppealFiled(_) => "governance.appeal_filed",
        Kind::AppealResolved(_) => "governance.appeal_resolved",
        Kind::LifecycleChanged(_) => "lifecycle.changed",
        Kind::LifecycleRefused(_) => "lifecycle.refused",
        Kind::SanctionImposed(_) => "governance.sanction_imposed",
        Kind::SanctionLifted(_) => "governance.sanction_lifted",
        Kind::AgentAction(_) => return None,
    })
}

/// Type prefixes of Amai's own events: free-form actions may not use them, so no
/// agent can mint an event that reads like a role's (`llm.session_opened`, ...).
const RESERVED_PREFIXES: [&str; 11] = [
    "agent.",
    "catalog.",
    "governance.",
    "name.",
    "trust.",
    "reactor.",
    "amai.",
    "llm.",
    "jail.",
    "lifecycle.",
    "audit.",
];

fn check_type_matches(event_type: &str, kind: &Kind) -> Result<(), EnvelopeError> {
    match payload_event_type(kind) {
        Some(expected) if expected == event_type => Ok(()),
        Some(expected) => Err(EnvelopeError::Malformed(format!(
            "type {event_type:?} does not match its payload (expected {expected:?})"
        ))),
        None => {
            let shape_ok = !event_type.is_empty()
                && event_type.len() <= 128
                && event_type.as_bytes()[0].is_ascii_lowercase()
                && event_type
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !shape_ok {
                return Err(EnvelopeError::Malformed(format!("action type {event_type:?} must be lowercase [a-z0-9._-], at most 128 characters")));
            }
            if RESERVED_PREFIXES.iter().any(|p| event_type.starts_with(p)) {
                return Err(EnvelopeError::Malformed(format!(
                    "action type {event_type:?} uses a reserved prefix"
                )));
            }
            Ok(())
        }
    }
}

/// A new event, before it is signed.
#[derive(Clone, Debug)]
pub struct EventDraft {
    aggregate: Aggregate,
    event_type: String,
    payload: Kind,
    aggregate_seq: u64,
    prev_hash: EventHash,
    id: Option<uuid::Uuid>,
    causation_id: String,
    correlation_id: String,
    occurred_at: Option<prost_types::Timestamp>,
    signer_seq: u64,
}

impl EventDraft {
    /// A draft of the event `payload` on `aggregate`; the type is derived from the
    /// payload (use [`EventDraft::action`] for free-form agent actions).
    pub fn new(aggregate: Aggregate, payload: Kind) -> Self {
        let event_type = payload_event_type(&payload).unwrap_or("action").to_string();
        Self {
            aggregate,
            event_type,
            payload,
            aggregate_seq: 1,
            prev_hash: ZERO_HASH,
            id: None,
            causation_id: String::new(),
            correlation_id: String::new(),
            occurred_at: None,
            signer_seq: 0,
        }
    }

    /// A free-form action of type `event_type` on an agent's own chain.
    pub fn action(
        aggregate: Aggregate,
        event_type: impl Into<String>,
        json: impl Into<String>,
    ) -> Self {
        let mut d = Self::new(
            aggregate,
            Kind::AgentAction(proto::AgentAction {
                json: json.into(),
                blob: None,
            }),
        );
        d.event_type = event_type.into();
        d
    }

    /// Attaches a blob reference (digest and size of content in the blob store)
    /// to a free-form action; other payloads carry no blob and are unchanged.
    pub fn with_blob(mut self, blob: proto::BlobRef) -> Self {
        if let Kind::AgentAction(action) = &mut self.payload {
            action.blob = Some(blob);
        }
        self
    }

    /// Positions the event after `head` (`aggregate_seq = head_seq + 1`).
    pub fn after(mut self, head_seq: u64, head_hash: EventHash) -> Self {
        self.aggregate_seq = head_seq + 1;
        self.prev_hash = head_hash;
        self
    }

    /// Sets the event id (default: a fresh UUIDv7).
    pub fn id(mut self, id: uuid::Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the causation id.
    pub fn causation(mut self, id: impl Into<String>) -> Self {
        self.causation_id = id.into();
        self
    }

    /// Sets the correlation id.
    pub fn correlation(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = id.into();
        self
    }

    /// For a foreign signer (a service, an operator acting on another chain):
    /// the aggregate sequence of its own chain at which its key is current
    /// (its chain head when signing).
    pub fn signer_seq(mut self, seq: u64) -> Self {
        self.signer_seq = seq;
        self
    }

    /// Sets `occurred_at` (default: now).
    pub fn occurred_at(mut self, ts: prost_types::Timestamp) -> Self {
        self.occurred_at = Some(ts);
        self
    }

    /// The aggregate this draft targets.
    pub fn aggregate(&self) -> &Aggregate {
        &self.aggregate
    }

    /// Encodes the body and signs it as `actor` with `keys`.
    pub fn sign(self, keys: &IdentityKeys, actor: &str) -> SignedEvent {
        let id = self.id.unwrap_or_else(uuid::Uuid::now_v7);
        let body = EventBody {
            id: id.to_string(),
            r#type: self.event_type,
            aggregate: self.aggregate.to_string(),
            aggregate_seq: self.aggregate_seq,
            prev_hash: self.prev_hash.to_vec(),
            occurred_at: Some(self.occurred_at.unwrap_or_else(now_timestamp)),
            actor: actor.to_string(),
            causation_id: self.causation_id,
            correlation_id: if self.correlation_id.is_empty() {
                id.to_string()
            } else {
                self.correlation_id
            },
            payload: Some(Payload {
                kind: Some(self.payload),
            }),
            signer_seq: self.signer_seq,
        };
        sign_body(keys, body.encode_to_vec())
    }
}

/// Signs already encoded `EventBody` bytes.
pub fn sign_body(keys: &IdentityKeys, body: Vec<u8>) -> SignedEvent {
    let signature = keys.sign(pae::EVENT_DOMAIN, &body).to_vec();
    SignedEvent {
        body,
        signer_key: keys.public_key().as_bytes().to_vec(),
        signature,
    }
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    let now = time::OffsetDateTime::now_utc();
    prost_types::Timestamp {
        seconds: now.unix_timestamp(),
        nanos: now.nanosecond() as i32,
    }
}

/// An event whose structure and signature have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedEvent {
    /// The signed event as received.
    pub signed: SignedEvent,
    /// The decoded body.
    pub body: EventBody,
    /// The payload variant.
    pub payload: Kind,
    /// The aggregate named by the body.
    pub aggregate: Aggregate,
    /// The signer's key.
    pub signer: VerifyingKey,
    /// The id as a UUID.
    pub id: uuid::Uuid,
    /// The canonical encoding of `signed` (what is stored on the stream).
    pub encoded: bytes::Bytes,
    /// SHA-256 of `encoded`.
    pub hash: EventHash,
}

/// Whether `message` encodes to exactly `bytes` (the canonical-form check),
/// encoding into a buffer reused by the thread rather than a new one per
/// event: the auditor and projections run this for every event.
fn encodes_to(message: &impl Message, bytes: &[u8]) -> bool {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        // Encoding into a Vec only fails for lack of capacity, which a Vec grows.
        message.encode(&mut *buffer).is_ok() && buffer.as_slice() == bytes
    })
}

impl VerifiedEvent {
    /// Decodes and checks encoded `SignedEvent` bytes (as stored). The bytes must
    /// be the canonical encoding (no unknown fields, no reordering), so the event
    /// hash, the SHA-256 of exactly these bytes, has one meaning.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let signed = SignedEvent::decode(bytes)
            .map_err(|e| EnvelopeError::Malformed(format!("not a SignedEvent: {e}")))?;
        if signed.encoded_len() != bytes.len() || !encodes_to(&signed, bytes) {
            return Err(EnvelopeError::Malformed(
                "the SignedEvent is not canonically encoded (unknown fields or non-canonical layout)"
                    .into(),
            ));
        }
        // The bytes are the canonical encoding (checked above): they are the
        // event's encoding and what its hash is taken over.
        Self::check(signed, bytes::Bytes::copy_from_slice(bytes))
    }

    /// Checks a decoded `SignedEvent`.
    pub fn from_signed(signed: SignedEvent) -> Result<Self, EnvelopeError> {
        let encoded = bytes::Bytes::from(signed.encode_to_vec());
        Self::check(signed, encoded)
    }

    /// Checks `signed`, whose canonical encoding is `encoded`.
    fn check(signed: SignedEvent, encoded: bytes::Bytes) -> Result<Self, EnvelopeError> {
        let malformed = |s: String| EnvelopeError::Malformed(s);
        let signer = keys::verifying_key(&signed.signer_key)
            .ok_or_else(|| malformed("signer_key is not a 32-byte Ed25519 public key".into()))?;
        let sig_bytes: [u8; 64] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| malformed("signature must be 64 bytes".into()))?;
        let body = EventBody::decode(signed.body.as_slice())
            .map_err(|e| malformed(format!("body is not an EventBody: {e}")))?;
        // Unknown fields would be signed but invisible to this version; a future
        // schema must not be able to give them meaning. Canonical bytes only.
        if body.encoded_len() != signed.body.len() || !encodes_to(&body, &signed.body) {
            return Err(malformed(
                "the signed body carries unknown fields or is not canonically encoded".into(),
            ));
        }
        let id = uuid::Uuid::parse_str(&body.id)
            .map_err(|_| malformed(format!("id {:?} is not a UUID", body.id)))?;
        if body.id.as_bytes()
            != id
                .hyphenated()
                .encode_lower(&mut uuid::Uuid::encode_buffer())
                .as_bytes()
        {
            return Err(malformed("id must be a lowercase hyphenated UUID".into()));
        }
        let aggregate: Aggregate = body
            .aggregate
            .parse()
            .map_err(|e| malformed(format!("{e}")))?;
        if body.aggregate_seq == 0 {
            return Err(malformed("aggregate_seq is 1-based".into()));
        }
        if body.prev_hash.len() != 32 {
            return Err(malformed("prev_hash must be 32 bytes".into()));
        }
        if body.aggregate_seq == 1 && body.prev_hash != ZERO_HASH {
            return Err(malformed(
                "the first event of an aggregate must have a zero prev_hash".into(),
            ));
        }
        if body.occurred_at.is_none() {
            return Err(malformed("occurred_at is required".into()));
        }
        crate::subjects::validate_id(&body.actor)
            .map_err(|_| malformed(format!("actor {:?} is not an identity id", body.actor)))?;
        let payload = body
            .payload
            .clone()
            .and_then(|p| p.kind)
            .ok_or_else(|| malformed("payload is missing".into()))?;
        check_type_matches(&body.r#type, &payload)?;
        if matches!(payload, Kind::AgentAction(_)) && aggregate.kind != AggregateKind::Agent {
            return Err(malformed(
                "free-form actions belong on the actor's own agent chain".into(),
            ));
        }
        signer
            .verify_strict(
                &pae::pae(pae::EVENT_DOMAIN, &signed.body),
                &Signature::from_bytes(&sig_bytes),
            )
            .map_err(|_| EnvelopeError::BadSignature)?;
        let hash = hash_bytes(&encoded);
        Ok(Self {
            signed,
            body,
            payload,
            aggregate,
            signer,
            id,
            encoded,
            hash,
        })
    }

    /// The event's `prev_hash` as an array.
    pub fn prev_hash(&self) -> EventHash {
        let mut h = ZERO_HASH;
        h.copy_from_slice(&self.body.prev_hash);
        h
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.body.r#type
    }

    /// The 1-based position in the aggregate.
    pub fn aggregate_seq(&self) -> u64 {
        self.body.aggregate_seq
    }

    /// The signer's identity id.
    pub fn actor(&self) -> &str {
        &self.body.actor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(keys: &IdentityKeys) -> SignedEvent {
        let id = keys.identity_id();
        EventDraft::new(
            Aggregate::agent(&id).expect("agg"),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: "alice".into(),
                kind: proto::IdentityKind::Agent as i32,
                signing_key: keys.public_key().as_bytes().to_vec(),
                x25519_key: keys.x25519_public().to_vec(),
                ..Default::default()
            }),
        )
        .sign(keys, &id)
    }

    #[test]
    fn a_signed_draft_verifies_and_hashes_its_stored_encoding() {
        let keys = IdentityKeys::generate();
        let signed = registered(&keys);
        let v = VerifiedEvent::decode(&signed.encode_to_vec()).expect("verify");
        assert_eq!(v.event_type(), "agent.registered");
        assert_eq!(v.aggregate_seq(), 1);
        assert_eq!(v.hash, hash_bytes(&signed.encode_to_vec()));
        assert_eq!(v.body.correlation_id, v.body.id);
    }

    #[test]
    fn a_tampered_body_fails_the_signature() {
        let keys = IdentityKeys::generate();
        let mut signed = registered(&keys);
        let last = signed.body.len() - 1;
        signed.body[last] ^= 1;
        assert!(VerifiedEvent::from_signed(signed).is_err());
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let keys = IdentityKeys::generate();
        let other = IdentityKeys::generate();
        let mut signed = registered(&keys);
        signed.signature = other.sign(pae::EVENT_DOMAIN, &signed.body).to_vec();
        assert_eq!(
            VerifiedEvent::from_signed(signed).expect_err("bad"),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn a_signature_from_another_domain_is_refused() {
        let keys = IdentityKeys::generate();
        let mut signed = registered(&keys);
        signed.signature = keys.sign(pae::REQUEST_DOMAIN, &signed.body).to_vec();
        assert_eq!(
            VerifiedEvent::from_signed(signed).expect_err("bad"),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            VerifiedEvent::decode(b"\xff\xff\xff"),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn type_must_match_payload() {
        let keys = IdentityKeys::generate();
        let id = keys.identity_id();
        let mut d = EventDraft::new(
            Aggregate::agent(&id).expect("agg"),
            Kind::AgentRevoked(proto::AgentRevoked { reason: "x".into() }),
        );
        d.event_type = "agent.registered".into();
        assert!(matches!(
            VerifiedEvent::from_signed(d.sign(&keys, &id)),
            Err(EnvelopeError::Malformed(_))
        ));
        let a = EventDraft::action(Aggregate::agent(&id).expect("agg"), "agent.sneaky", "{}")
            .sign(&keys, &id);
        assert!(matches!(
            VerifiedEvent::from_signed(a),
            Err(EnvelopeError::Malformed(_))
        ));
        let ok = EventDraft::action(Aggregate::agent(&id).expect("agg"), "task.completed", "{}")
            .sign(&keys, &id);
        assert!(VerifiedEvent::from_signed(ok).is_ok());
    }
}
