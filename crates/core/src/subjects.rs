//! Aggregates and their NATS subjects and streams, plus the rules for ids and
//! names that make them safe subject tokens.
//!
//! An aggregate is written `<kind>/<id>` (e.g. `agent/3f2a…`) and lives on exactly
//! one subject (`amai.agent.3f2a…`) of exactly one stream (`AMAI_AGENTS`).

use std::fmt;
use std::str::FromStr;

/// The kinds of aggregate, one per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateKind {
    /// An identity's own chain (the soulchain): `amai.agent.<id>`.
    Agent,
    /// A unique name claim: `amai.name.<name>`.
    Name,
    /// Trust results for an agent: `amai.trust.<agent_id>`.
    Trust,
    /// An LLM session: `amai.llm.<session_id>`.
    Llm,
    /// A jail run: `amai.jail.<jail_id>`.
    Jail,
    /// An agent's lifecycle: `amai.lifecycle.<agent_id>`.
    Lifecycle,
    /// Audit checkpoints of a stream: `amai.audit.<stream>`.
    Audit,
    /// Reactor failures of a worker role: `amai.failure.<role>`.
    Failure,
}

/// The trust feed: a stream with no subjects of its own that *sources* every
/// stream whose events are evidence about agents, so that evidence has one
/// total order, fixed once by JetStream. It holds copies of the original
/// signed events on their original subjects.
pub const TRUST_FEED_STREAM: &str = "AMAI_TRUST_FEED";

/// The aggregate kinds the trust feed sources.
pub const TRUST_FEED_SOURCES: [AggregateKind; 4] = [
    AggregateKind::Agent,
    AggregateKind::Llm,
    AggregateKind::Jail,
    AggregateKind::Lifecycle,
];

impl AggregateKind {
    /// Every kind.
    pub const ALL: [AggregateKind; 8] = [
        AggregateKind::Agent,
        AggregateKind::Name,
        AggregateKind::Trust,
        AggregateKind::Llm,
        AggregateKind::Jail,
        AggregateKind::Lifecycle,
        AggregateKind::Audit,
        AggregateKind::Failure,
    ];

    /// The word used in aggregates and subjects.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateKind::Agent => "agent",
            AggregateKind::Name => "name",
            AggregateKind::Trust => "trust",
            AggregateKind::Llm => "llm",
            AggregateKind::Jail => "jail",
            AggregateKind::Lifecycle => "lifecycle",
            AggregateKind::Audit => "audit",
            AggregateKind::Failure => "failure",
        }
    }

    /// The stream holding aggregates of this kind.
    pub fn stream(self) -> &'static str {
        match self {
            AggregateKind::Agent => "AMAI_AGENTS",
            AggregateKind::Name => "AMAI_NAMES",
            AggregateKind::Trust => "AMAI_TRUST",
            AggregateKind::Llm => "AMAI_LLM",
            AggregateKind::Jail => "AMAI_JAILS",
            AggregateKind::Lifecycle => "AMAI_LIFECYCLE",
            AggregateKind::Audit => "AMAI_AUDIT",
            AggregateKind::Failure => "AMAI_FAILURES",
        }
    }

    /// Whether events of this kind may be stored in `stream`: their own
    /// stream, or the trust feed when it sources them.
    pub fn may_be_stored_in(self, stream: &str) -> bool {
        stream == self.stream()
            || (stream == TRUST_FEED_STREAM && TRUST_FEED_SOURCES.contains(&self))
    }

    /// The wildcard subject of the stream (`amai.agent.*`).
    pub fn stream_subject(self) -> String {
        format!("amai.{}.*", self.as_str())
    }

    /// Parses the word used in aggregates.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind whose stream is `stream`.
    pub fn for_stream(stream: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.stream() == stream)
    }
}

/// Why an aggregate, id or name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not of the form `<kind>/<id>`.
    #[error("aggregate {0:?} is not of the form <kind>/<id> (e.g. agent/<id>)")]
    Malformed(String),
    /// Unknown kind.
    #[error("unknown aggregate kind {0:?}: expected one of agent, name, trust, llm, jail, lifecycle, audit, failure")]
    UnknownKind(String),
    /// The id is not a safe subject token.
    #[error("id {0:?} must be 1-128 characters of [A-Za-z0-9_-]")]
    BadId(String),
    /// The name breaks the naming rule.
    #[error("name {0:?} is invalid: names are 2-63 characters, lowercase letters, digits, '-' or '_', starting with a letter or digit")]
    BadName(String),
    /// The subject is not an Amai aggregate subject.
    #[error("subject {0:?} is not an amai aggregate subject")]
    BadSubject(String),
}

/// Checks an aggregate id is a safe NATS subject token.
pub fn validate_id(id: &str) -> Result<(), SubjectError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SubjectError::BadId(id.to_string()))
    }
}

/// The naming rule: 2-63 characters of `[a-z0-9_-]`, starting with `[a-z0-9]`.
pub fn validate_name(name: &str) -> Result<(), SubjectError> {
    let bytes = name.as_bytes();
    let ok = (2..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SubjectError::BadName(name.to_string()))
    }
}

/// One aggregate: a hash chain of events on one subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aggregate {
    /// Its kind.
    pub kind: AggregateKind,
    /// Its id (a safe subject token).
    pub id: String,
}

impl Aggregate {
    /// Builds an aggregate, validating the id.
    pub fn new(kind: AggregateKind, id: impl Into<String>) -> Result<Self, SubjectError> {
        let id = id.into();
        if kind == AggregateKind::Name {
            validate_name(&id)?;
        } else {
            validate_id(&id)?;
        }
        Ok(Self { kind, id })
    }

    /// `agent/<id>`.
    pub fn agent(id: impl Into<String>) -> Result<Self, SubjectError> {
        Self::new(AggregateKind::Agent, id)
    }

    /// The NATS subject, `amai.<kind>.<id>`.
    pub fn subject(&self) -> String {
        format!("amai.{}.{}", self.kind.as_str(), self.id)
    }

    /// The stream holding this aggregate.
    pub fn stream(&self) -> &'static str {
        self.kind.stream()
    }

    /// Parses a subject `amai.<kind>.<id>`.
    pub fn from_subject(subject: &str) -> Result<Self, SubjectError> {
        let mut parts = subject.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("amai"), Some(kind), Some(id)) => {
                let kind = AggregateKind::parse(kind)
                    .ok_or_else(|| SubjectError::BadSubject(subject.to_string()))?;
                Self::new(kind, id)
            }
            _ => Err(SubjectError::BadSubject(subject.to_string())),
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.id)
    }
}

impl FromStr for Aggregate {
    type Err = SubjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s
            .split_once('/')
            .ok_or_else(|| SubjectError::Malformed(s.to_string()))?;
        let kind = AggregateKind::parse(kind)
            .ok_or_else(|| SubjectError::UnknownKind(kind.to_string()))?;
        Self::new(kind, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_round_trip_through_text_and_subjects() {
        let a: Aggregate = "agent/abc123".parse().expect("parse");
        assert_eq!(a.subject(), "amai.agent.abc123");
        assert_eq!(a.stream(), "AMAI_AGENTS");
        assert_eq!(
            Aggregate::from_subject("amai.agent.abc123").expect("subject"),
            a
        );
        assert_eq!(a.to_string(), "agent/abc123");
    }

    #[test]
    fn ids_that_would_break_subjects_are_refused() {
        for bad in ["", "a.b", "a*", "a>", "a b", &"x".repeat(129)] {
            assert!(Aggregate::agent(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            "nope/x".parse::<Aggregate>(),
            Err(SubjectError::UnknownKind(_))
        ));
        assert!(matches!(
            "agentx".parse::<Aggregate>(),
            Err(SubjectError::Malformed(_))
        ));
    }

    #[test]
    fn the_naming_rule() {
        for good in ["ab", "alice", "bob-2", "a_b", "9lives"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "a",
            "Alice",
            "-x",
            "_x",
            "a.b",
            "a b",
            "é1",
            &"a".repeat(64),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
