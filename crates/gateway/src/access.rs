//! Read access: who may read which events. The one place the rule lives; every
//! read RPC (`GetChainHead`, `GetEvent`, `ReadChain`, `Subscribe`, `VerifyChain`,
//! `GetBlob`) authenticates the request signature first, builds a [`Reader`],
//! and asks it before touching a stream.
//!
//! The rule (docs/architecture.md, "Read access"):
//!
//! - **operators** (identity kind `operator`, unrevoked) read everything;
//! - **granted readers** read the streams an operator granted them
//!   ([`amai_bus::read_grant`]: signed grant in the reader's genesis metadata),
//!   and nothing else beyond what any identity reads;
//! - **every identity** reads, per stream ([`RULES`]): its own aggregates
//!   (`agent/<self>`, `trust/<self>`, `lifecycle/<self>`), the messages
//!   addressed to it (`agent.message_sent` with `to = self`) and the
//!   endorsements of it (`agent.endorsed` with `endorsee = self`), the key events of
//!   any agent chain (`agent.registered`, `agent.key_rotated`, `agent.revoked`:
//!   public key material, needed to seal to and verify others), the whole chains
//!   of operator and service identities (infrastructure: needed to verify
//!   endorsements and results), and the name claims (the public directory);
//! - streams whose owner is recorded by the role that writes them: an LLM
//!   session `llm/<session>` is read whole by the session's owner (recorded by
//!   the llm role, asked once after authentication); `AMAI_JAILS`, whose role
//!   does not record owners yet, and the infrastructure records (`AMAI_AUDIT`,
//!   `AMAI_FAILURES`) are read by operators and granted readers only;
//! - blobs ([`BLOBS`]) are read by whoever uploaded them, operators and readers
//!   granted `AMAI_BLOBS`.

use std::collections::BTreeSet;

use amai_bus::identity::IdentityState;
use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::store::StoredEvent;
use amai_bus::subjects::{Aggregate, AggregateKind};
use prost::Message;

/// The grantable name of the blob store (`GetBlob`).
pub const BLOBS: &str = "AMAI_BLOBS";

/// Who owns the aggregates of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// `<kind>/<id>` belongs to identity `<id>`.
    AggregateId,
    /// Every authenticated identity reads it.
    Everyone,
    /// The owner is recorded by the role that writes the stream (the identity
    /// whose action opened the LLM session or jail). Until that role records
    /// owners, fail closed: operators and granted readers only.
    Recorded,
    /// Operators and granted readers only.
    Privileged,
}

/// The rule of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamRule {
    /// The stream.
    pub stream: &'static str,
    /// Who owns its aggregates.
    pub owner: Owner,
}

/// The read rule of every stream. A stream missing here is read by operators
/// and granted readers only.
pub const RULES: &[StreamRule] = &[
    StreamRule {
        stream: "AMAI_AGENTS",
        owner: Owner::AggregateId,
    },
    StreamRule {
        stream: "AMAI_NAMES",
        owner: Owner::Everyone,
    },
    StreamRule {
        stream: "AMAI_TRUST",
        owner: Owner::AggregateId,
    },
    StreamRule {
        stream: "AMAI_LIFECYCLE",
        owner: Owner::AggregateId,
    },
    StreamRule {
        stream: "AMAI_LLM",
        owner: Owner::Recorded,
    },
    StreamRule {
        stream: "AMAI_JAILS",
        owner: Owner::Recorded,
    },
    StreamRule {
        stream: "AMAI_AUDIT",
        owner: Owner::Privileged,
    },
    StreamRule {
        stream: "AMAI_FAILURES",
        owner: Owner::Privileged,
    },
    StreamRule {
        stream: BLOBS,
        owner: Owner::Recorded,
    },
];

/// The owner rule of `stream` ([`Owner::Privileged`] when unlisted).
pub fn owner_of(stream: &str) -> Owner {
    RULES
        .iter()
        .find(|r| r.stream == stream)
        .map_or(Owner::Privileged, |r| r.owner)
}

/// The event types of an agent chain that carry key material.
pub const KEY_EVENT_TYPES: &[&str] = &["agent.registered", "agent.key_rotated", "agent.revoked"];

/// Whether `stored` is a key event (by its `Amai-Type` header, else its body).
pub fn is_key_event(stored: &StoredEvent) -> bool {
    let ty = stored
        .event_type
        .clone()
        .or_else(|| body_of(stored).map(|b| b.r#type));
    ty.is_some_and(|t| KEY_EVENT_TYPES.contains(&t.as_str()))
}

pub(crate) fn body_of(stored: &StoredEvent) -> Option<proto::EventBody> {
    let signed = proto::SignedEvent::decode(stored.payload.as_ref()).ok()?;
    proto::EventBody::decode(signed.body.as_slice()).ok()
}

/// What a reader may read of one aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateAccess {
    /// All of it.
    All,
    /// Someone else's agent chain: its key events; all of it when its owner is
    /// an operator or service identity (the caller looks the owner up).
    ForeignAgent,
    /// An aggregate whose owner a role records (an LLM session): all of it
    /// when the recorded owner is the reader (the caller asks the role), else
    /// nothing.
    RecordedOwner,
    /// Nothing.
    Denied,
}

/// An authenticated caller, as far as reads are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    /// Its identity id.
    pub id: String,
    /// An unrevoked operator.
    pub operator: bool,
    /// Streams an operator granted it (verified).
    pub granted: BTreeSet<String>,
}

impl Reader {
    /// A reader from the signer's folded state and its verified grants.
    pub fn new(state: &IdentityState, granted: BTreeSet<String>) -> Self {
        Reader {
            id: state.id.clone(),
            operator: state.kind == IdentityKind::Operator && state.revoked.is_none(),
            granted,
        }
    }

    /// Whether it reads every event of `stream`.
    pub fn reads_all_of(&self, stream: &str) -> bool {
        self.operator || self.granted.contains(stream) || owner_of(stream) == Owner::Everyone
    }

    /// The owner a listing of `stream`'s things (`what`: "llm sessions",
    /// "jails") asks the role for: empty asks for everyone's, allowed only to
    /// those who read the whole stream (others get their own); another
    /// owner's needs the same.
    pub fn listing_owner(
        &self,
        stream: &str,
        requested: &str,
        what: &str,
    ) -> Result<String, crate::status::ApiError> {
        let everyone = self.reads_all_of(stream);
        if requested.is_empty() {
            return Ok(if everyone {
                String::new()
            } else {
                self.id.clone()
            });
        }
        if requested != self.id && !everyone {
            return Err(crate::status::ApiError::ReadNotPermitted {
                actor: self.id.clone(),
                what: format!("the {what} of {requested}"),
            });
        }
        Ok(requested.to_string())
    }

    /// Whether it may read anything at all of `stream` (decided before any read).
    pub fn reads_any_of(&self, stream: &str) -> bool {
        self.reads_all_of(stream) || owner_of(stream) == Owner::AggregateId
    }

    /// What it may read of `aggregate`.
    pub fn aggregate_access(&self, aggregate: &Aggregate) -> AggregateAccess {
        let stream = aggregate.stream();
        if self.reads_all_of(stream) {
            return AggregateAccess::All;
        }
        match owner_of(stream) {
            Owner::AggregateId if aggregate.id == self.id => AggregateAccess::All,
            Owner::AggregateId if aggregate.kind == AggregateKind::Agent => {
                AggregateAccess::ForeignAgent
            }
            Owner::Recorded => AggregateAccess::RecordedOwner,
            _ => AggregateAccess::Denied,
        }
    }

    /// Whether it sees `stored` in a stream it does not read all of: an event
    /// of its own aggregate, a message addressed to it, an endorsement of it,
    /// or a key event.
    pub fn sees(&self, stored: &StoredEvent) -> bool {
        let stream = stored.position.stream.as_str();
        if self.reads_all_of(stream) {
            return true;
        }
        if owner_of(stream) != Owner::AggregateId {
            return false;
        }
        let Ok(aggregate) = Aggregate::from_subject(&stored.subject) else {
            return false;
        };
        if aggregate.id == self.id {
            return true;
        }
        if aggregate.kind != AggregateKind::Agent {
            return false;
        }
        if is_key_event(stored) {
            return true;
        }
        let Some(body) = body_of(stored) else {
            return false;
        };
        match body.payload.and_then(|p| p.kind) {
            Some(Kind::AgentMessageSent(m)) => m.to == self.id,
            Some(Kind::AgentEndorsed(e)) => e.endorsee == self.id,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(id: &str, operator: bool, granted: &[&str]) -> Reader {
        Reader {
            id: id.into(),
            operator,
            granted: granted.iter().map(|s| s.to_string()).collect(),
        }
    }

    const ALICE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const BOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn every_stream_of_the_bus_has_a_rule() {
        for kind in AggregateKind::ALL {
            assert!(
                RULES.iter().any(|r| r.stream == kind.stream()),
                "{} has no read rule",
                kind.stream()
            );
        }
    }

    #[test]
    fn the_table_decides_per_stream() {
        let bob = reader(BOB, false, &[]);
        let op = reader("cccccccccccccccccccccccccccccccc", true, &[]);
        let auditor = reader(
            "dddddddddddddddddddddddddddddddd",
            false,
            &["AMAI_LLM", BLOBS],
        );
        // (stream, bob reads any, bob reads all, operator all, auditor all)
        let table = [
            ("AMAI_AGENTS", true, false, true, false),
            ("AMAI_NAMES", true, true, true, true),
            ("AMAI_TRUST", true, false, true, false),
            ("AMAI_LIFECYCLE", true, false, true, false),
            ("AMAI_LLM", false, false, true, true),
            ("AMAI_JAILS", false, false, true, false),
            ("AMAI_AUDIT", false, false, true, false),
            ("AMAI_FAILURES", false, false, true, false),
            (BLOBS, false, false, true, true),
            ("AMAI_SOMETHING_NEW", false, false, true, false),
        ];
        for (stream, any, all, op_all, auditor_all) in table {
            assert_eq!(bob.reads_any_of(stream), any, "{stream}");
            assert_eq!(bob.reads_all_of(stream), all, "{stream}");
            assert_eq!(op.reads_all_of(stream), op_all, "{stream}");
            assert_eq!(auditor.reads_all_of(stream), auditor_all, "{stream}");
        }
    }

    fn on_chain_of(keys: &amai_bus::IdentityKeys, payload: Kind) -> StoredEvent {
        let actor = keys.identity_id();
        let aggregate = Aggregate::agent(&actor).expect("aggregate");
        let ev = amai_bus::EventDraft::new(aggregate.clone(), payload).sign(keys, &actor);
        StoredEvent::new(
            amai_bus::Position::new("AMAI_AGENTS", 2),
            aggregate.subject(),
            0,
            ev.encode_to_vec().into(),
            None,
        )
    }

    #[test]
    fn an_agent_sees_the_messages_to_it_and_the_endorsements_of_it() {
        let alice = amai_bus::IdentityKeys::generate();
        let bob = reader(BOB, false, &[]);
        let carol = reader("cccccccccccccccccccccccccccccccc", false, &[]);
        let endorsed = on_chain_of(
            &alice,
            Kind::AgentEndorsed(proto::AgentEndorsed {
                endorsee: BOB.into(),
                statement: "good".into(),
            }),
        );
        assert!(bob.sees(&endorsed));
        assert!(!carol.sees(&endorsed));
        let action = on_chain_of(
            &alice,
            Kind::AgentAction(proto::AgentAction {
                ..Default::default()
            }),
        );
        assert!(!bob.sees(&action));
    }

    #[test]
    fn aggregates_belong_to_the_identity_they_name() {
        let bob = reader(BOB, false, &[]);
        let agg = |kind, id: &str| Aggregate::new(kind, id).expect("aggregate");
        use AggregateAccess::*;
        let table = [
            (agg(AggregateKind::Agent, BOB), All),
            (agg(AggregateKind::Trust, BOB), All),
            (agg(AggregateKind::Lifecycle, BOB), All),
            (agg(AggregateKind::Agent, ALICE), ForeignAgent),
            (agg(AggregateKind::Trust, ALICE), Denied),
            (agg(AggregateKind::Lifecycle, ALICE), Denied),
            (agg(AggregateKind::Name, "alice"), All),
            // An LLM session or jail named like bob's id is still not bob's:
            // its recorded owner decides.
            (agg(AggregateKind::Llm, BOB), RecordedOwner),
            (agg(AggregateKind::Jail, BOB), RecordedOwner),
            (agg(AggregateKind::Failure, "identity"), Denied),
        ];
        for (aggregate, want) in table {
            assert_eq!(bob.aggregate_access(&aggregate), want, "{aggregate}");
        }
        let granted = reader(BOB, false, &["AMAI_TRUST"]);
        assert_eq!(
            granted.aggregate_access(&agg(AggregateKind::Trust, ALICE)),
            All
        );
        assert_eq!(
            granted.aggregate_access(&agg(AggregateKind::Lifecycle, ALICE)),
            Denied
        );
    }
}
