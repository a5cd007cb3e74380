//! [`StoredEvent`]: an event exactly as a stream stores it, and [`Position`], the
//! consistency token every append returns. The event hash is always the SHA-256 of
//! the stored bytes; nothing re-encodes them.

use bytes::Bytes;
use prost::Message;

use crate::envelope::{hash_bytes, EnvelopeError, EventHash, VerifiedEvent};
use crate::identity::Millis;
use crate::proto::{self, SignedEvent};

/// A position in a JetStream stream: the consistency token every append returns.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    /// Stream name, e.g. `AMAI_AGENTS`.
    pub stream: String,
    /// Stream sequence (1-based).
    pub seq: u64,
}

impl Position {
    /// Builds a position.
    pub fn new(stream: impl Into<String>, seq: u64) -> Self {
        Self {
            stream: stream.into(),
            seq,
        }
    }
}

impl From<Position> for proto::Position {
    fn from(p: Position) -> Self {
        proto::Position {
            stream: p.stream,
            seq: p.seq,
        }
    }
}

impl From<proto::Position> for Position {
    fn from(p: proto::Position) -> Self {
        Position {
            stream: p.stream,
            seq: p.seq,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.seq)
    }
}

/// An event as stored on a stream.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Stream and sequence.
    pub position: Position,
    /// The subject it is on.
    pub subject: String,
    /// JetStream's publish time, unix milliseconds.
    pub published_ms: Millis,
    /// The encoded `SignedEvent`.
    pub payload: Bytes,
    /// SHA-256 of `payload`.
    pub hash: EventHash,
    /// `Amai-Type` header, when present.
    pub event_type: Option<String>,
}

impl StoredEvent {
    /// Builds a stored event from what a stream message carries; the hash is
    /// computed here from the bytes exactly as stored.
    pub fn new(
        position: Position,
        subject: String,
        published_ms: Millis,
        payload: Bytes,
        event_type: Option<String>,
    ) -> Self {
        Self {
            position,
            subject,
            published_ms,
            hash: hash_bytes(&payload),
            payload,
            event_type,
        }
    }

    /// Decodes and checks the signature.
    pub fn verify(&self) -> Result<VerifiedEvent, EnvelopeError> {
        VerifiedEvent::decode(&self.payload)
    }

    /// The protobuf form (the `SignedEvent` decoded leniently; undecodable bytes
    /// become an empty event, which verification then reports).
    pub fn to_proto(&self) -> proto::StoredEvent {
        proto::StoredEvent {
            position: Some(self.position.clone().into()),
            subject: self.subject.clone(),
            published_at: Some(prost_types::Timestamp {
                seconds: self.published_ms.div_euclid(1000),
                nanos: (self.published_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
            event: SignedEvent::decode(self.payload.as_ref()).ok(),
            hash: self.hash.to_vec(),
            raw: self.payload.to_vec(),
        }
    }
}

/// Unix milliseconds of a time.
pub fn millis(t: time::OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// The aggregate sequence of a stored event: from the header when present, else
/// from the decoded body.
pub fn aggregate_seq_of(stored: &StoredEvent) -> Option<u64> {
    let signed = SignedEvent::decode(stored.payload.as_ref()).ok()?;
    let body = proto::EventBody::decode(signed.body.as_slice()).ok()?;
    Some(body.aggregate_seq)
}
