//! [`EventStore`]: the one way events are appended to and read from JetStream.
//!
//! `append` verifies the signature, checks the signer's key and permissions,
//! checks `aggregate_seq`/`prev_hash` against the chain head and publishes with
//! `Nats-Expected-Last-Subject-Sequence` (optimistic concurrency) and
//! `Nats-Msg-Id` (deduplication). The chain head comes from JetStream itself
//! (`STREAM.MSG.GET` last-by-subject, routed to the stream leader, never Direct
//! Get). Chains are folded through THE verification step of `amai-core`
//! ([`crate::fold`]): the write path accepts exactly what an auditor accepts. A
//! bounded cache of folded chains saves round trips; it is only ever a shortcut:
//! every rejection that a stale cache could cause is re-checked against a fresh
//! read, a publish conflict refreshes it, and foreign signers are always read up
//! to their head before their key is accepted. Reads live in [`crate::reads`].

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use prost::Message;

use crate::envelope::{EnvelopeError, EventHash, VerifiedEvent, ZERO_HASH};
use crate::fold::CachedChain;
use crate::identity::RuleError;
use crate::proto::{self, payload::Kind, SignedEvent};
use crate::subjects::{Aggregate, AggregateKind};
use crate::verify::{self, Failure, Pending};
use crate::Position;

pub use amai_core::stored::{aggregate_seq_of, millis};
pub use amai_core::StoredEvent;

/// Header carrying the event type (lets consumers filter without decoding).
pub const HEADER_TYPE: &str = "Amai-Type";
/// Header carrying the aggregate sequence.
pub const HEADER_AGGREGATE_SEQ: &str = "Amai-Aggregate-Seq";
/// Header carrying the signer's identity id.
pub const HEADER_ACTOR: &str = "Amai-Actor";
/// Header an import (`amai import`) sets on a republished message: the times
/// the exporting deployment's streams stored it, as space-separated
/// `<STREAM>=<RFC 3339>` pairs in one value (the message's own stream, and
/// the trust feed for a message the feed sources: sourcing copies headers).
/// Readers of a stream take the earlier of its time and JetStream's own
/// ([`crate::reads::published_time`]).
pub const HEADER_PUBLISHED_AT: &str = "Amai-Published-At";

/// Default largest encoded event accepted by `append`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;

/// Configuration of an [`EventStore`] (builder style).
#[derive(Clone, Debug)]
pub struct EventStoreConfig {
    max_event_bytes: usize,
    trust_root: Option<VerifyingKey>,
    publish_timeout: Duration,
    max_cached_chains: usize,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            trust_root: None,
            publish_timeout: Duration::from_secs(5),
            max_cached_chains: 100_000,
        }
    }
}

impl EventStoreConfig {
    /// Largest encoded `SignedEvent` accepted (default 256 KiB). Larger payloads
    /// belong in the blob store.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// The deployment's trust root: the first operator key. Operator and service
    /// identities must be endorsed by it or by an operator it endorsed.
    pub fn trust_root(mut self, key: VerifyingKey) -> Self {
        self.trust_root = Some(key);
        self
    }

    /// How many folded chains the store keeps cached (default 100,000; the
    /// coldest are evicted first).
    pub fn max_cached_chains(mut self, n: usize) -> Self {
        self.max_cached_chains = n.max(1);
        self
    }

    /// The configured trust root.
    pub fn get_trust_root(&self) -> Option<&VerifyingKey> {
        self.trust_root.as_ref()
    }

    /// The configured event size limit.
    pub fn get_max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }
}

/// The head of an aggregate's chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHeadInfo {
    /// The aggregate.
    pub aggregate: Aggregate,
    /// Aggregate sequence of the last event (0 when empty).
    pub aggregate_seq: u64,
    /// Hash of the last event (zero when empty).
    pub hash: EventHash,
    /// Stream sequence of the last event (0 when empty).
    pub stream_seq: u64,
}

impl ChainHeadInfo {
    pub(crate) fn empty(aggregate: Aggregate) -> Self {
        Self {
            aggregate,
            aggregate_seq: 0,
            hash: ZERO_HASH,
            stream_seq: 0,
        }
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> proto::ChainHead {
        proto::ChainHead {
            aggregate: self.aggregate.to_string(),
            aggregate_seq: self.aggregate_seq,
            hash: self.hash.to_vec(),
            position: Some(Position::new(self.aggregate.stream(), self.stream_seq).into()),
        }
    }
}

/// What a successful append returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where the event is (the consistency token).
    pub position: Position,
    /// The event hash.
    pub hash: EventHash,
    /// Its aggregate sequence.
    pub aggregate_seq: u64,
    /// True when this exact event was already appended (nothing new was written).
    pub duplicate: bool,
}

/// The kinds of append failure. Match on these, not on messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendErrorKind {
    /// Not a decodable or well-formed event.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// The key is not the actor's (current) key.
    UnknownKey,
    /// The key was rotated out or the identity is revoked.
    RevokedKey,
    /// The actor may not append this to this aggregate.
    NotPermitted,
    /// The payload breaks a domain rule (bad name, bad key, ...).
    Invalid,
    /// The chain moved on: `current_head` is where it is now. Re-read, re-sign, retry.
    Conflict,
    /// `prev_hash` does not match the event at `aggregate_seq - 1`.
    ChainBroken,
    /// `aggregate_seq` skips ahead of the head.
    Gap,
    /// Another event with the same id but different content exists.
    Duplicate,
    /// The name is already claimed.
    NameTaken,
    /// The identity is already registered.
    AlreadyRegistered,
    /// The encoded event exceeds the size limit.
    TooLarge,
    /// NATS did not answer in time or the connection broke; safe to retry.
    Unavailable,
    /// The chain holds an event that fails verification (published around the
    /// store); nothing can be appended after it.
    Corrupted,
    /// Anything else the server said.
    Other,
}

/// How far in the future an event's `occurred_at` may be when it is appended.
/// Event time drives trust decay: an identity must not be able to age its own
/// evidence by dating its actions ahead.
pub const MAX_FUTURE_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

fn check_not_future(ev: &VerifiedEvent) -> Result<(), AppendError> {
    let occurred = ev.body.occurred_at.unwrap_or_default();
    let occurred_ms = occurred.seconds.saturating_mul(1000) + i64::from(occurred.nanos / 1_000_000);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let ahead_ms = occurred_ms.saturating_sub(now_ms);
    if ahead_ms > MAX_FUTURE_SKEW.as_millis() as i64 {
        return Err(AppendError::new(
            AppendErrorKind::Invalid,
            format!(
                "occurred_at is {} s ahead of the server's clock (at most {} s allowed); fix the signer's clock (NTP) and sign again",
                ahead_ms / 1000,
                MAX_FUTURE_SKEW.as_secs()
            ),
        ));
    }
    Ok(())
}

/// An append failure.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct AppendError {
    kind: AppendErrorKind,
    message: String,
    current_head: Option<ChainHeadInfo>,
}

impl AppendError {
    pub(crate) fn new(kind: AppendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            current_head: None,
        }
    }

    fn conflict(head: ChainHeadInfo, message: impl Into<String>) -> Self {
        Self {
            kind: AppendErrorKind::Conflict,
            message: message.into(),
            current_head: Some(head),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> AppendErrorKind {
        self.kind.clone()
    }

    /// For `Conflict`: the head the event must follow now.
    pub fn current_head(&self) -> Option<&ChainHeadInfo> {
        self.current_head.as_ref()
    }

    /// Whether retrying the same call may succeed (for `Conflict`, after re-signing).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            AppendErrorKind::Conflict | AppendErrorKind::Unavailable
        )
    }
}

impl From<EnvelopeError> for AppendError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::BadSignature => {
                AppendError::new(AppendErrorKind::BadSignature, e.to_string())
            }
            EnvelopeError::Malformed(_) => {
                AppendError::new(AppendErrorKind::Malformed, e.to_string())
            }
        }
    }
}

impl From<Failure> for AppendError {
    fn from(f: Failure) -> Self {
        use crate::verify::FailureKind as F;
        let kind = match f.kind {
            F::Malformed => AppendErrorKind::Malformed,
            F::BadSignature => AppendErrorKind::BadSignature,
            F::WrongAggregate | F::Invalid => AppendErrorKind::Invalid,
            F::Gap => AppendErrorKind::Gap,
            F::ChainBroken => AppendErrorKind::ChainBroken,
            F::UnknownKey => AppendErrorKind::UnknownKey,
            F::RevokedKey => AppendErrorKind::RevokedKey,
            F::NotPermitted => AppendErrorKind::NotPermitted,
        };
        AppendError::new(kind, f.detail)
    }
}

impl From<RuleError> for AppendError {
    fn from(e: RuleError) -> Self {
        let kind = match &e {
            RuleError::Invalid(_) => AppendErrorKind::Invalid,
            RuleError::UnknownKey(_) => AppendErrorKind::UnknownKey,
            RuleError::Revoked(_) => AppendErrorKind::RevokedKey,
            RuleError::NotPermitted(_) => AppendErrorKind::NotPermitted,
        };
        AppendError::new(kind, e.to_string())
    }
}

/// Failures of reads.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such event or aggregate.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was not valid.
    #[error("{0}")]
    Invalid(String),
    /// NATS failed; retry later.
    #[error("nats: {0}")]
    Unavailable(String),
}

/// A page of a chain and where to continue.
#[derive(Clone, Debug)]
pub struct ChainPage {
    /// The events, in chain order.
    pub events: Vec<StoredEvent>,
    /// Aggregate sequence to ask for next; 0 when the chain is exhausted.
    pub next_aggregate_seq: u64,
    /// Stream sequence to continue scanning from; 0 when the chain is exhausted.
    pub next_stream_seq: u64,
}

/// The outcome of the pre-publish checks.
enum Admission {
    /// Append after this chain state; `Pending` is what the step decided.
    Append(Box<(CachedChain, Pending)>),
    /// This exact event is already in the chain.
    AlreadyThere(AppendOutcome),
}

/// Appends and reads events on JetStream. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) js: jetstream::Context,
    config: Arc<EventStoreConfig>,
    pub(crate) chains: Arc<quick_cache::sync::Cache<String, CachedChain>>,
}

impl EventStore {
    /// A store over a JetStream context. Streams must exist ([`crate::streams::ensure_streams`]).
    pub fn new(js: jetstream::Context, config: EventStoreConfig) -> Self {
        let chains = Arc::new(quick_cache::sync::Cache::new(config.max_cached_chains));
        Self {
            js,
            config: Arc::new(config),
            chains,
        }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The configuration.
    pub fn config(&self) -> &EventStoreConfig {
        &self.config
    }

    /// Appends a signed event. See the module docs for the checks.
    #[tracing::instrument(skip_all, fields(aggregate, seq, event_type))]
    pub async fn append(&self, signed: SignedEvent) -> Result<AppendOutcome, AppendError> {
        let size = signed.encoded_len();
        if size > self.config.max_event_bytes {
            return Err(AppendError::new(
                AppendErrorKind::TooLarge,
                format!("event is {size} bytes, over the {} byte limit; put large content in the blob store (BlobService.PutBlob) and reference its digest in the event", self.config.max_event_bytes),
            ));
        }
        let ev = VerifiedEvent::from_signed(signed)?;
        check_not_future(&ev)?;
        let span = tracing::Span::current();
        span.record("aggregate", ev.aggregate.to_string());
        span.record("seq", ev.aggregate_seq());
        span.record("event_type", ev.event_type());
        self.append_verified(ev).await
    }

    /// Appends an already verified event.
    pub async fn append_verified(&self, ev: VerifiedEvent) -> Result<AppendOutcome, AppendError> {
        let outcome = self.append_one(&ev).await?;
        // Also on a re-sent claim: a crash between claim and genesis is
        // completed by sending either again.
        self.complete_registration(&ev).await?;
        Ok(outcome)
    }

    async fn append_one(&self, ev: &VerifiedEvent) -> Result<AppendOutcome, AppendError> {
        let subject = ev.aggregate.subject();
        let (chain, pending) = match self.admit(ev).await? {
            Admission::Append(admitted) => *admitted,
            Admission::AlreadyThere(outcome) => return Ok(outcome),
        };

        // Publish with optimistic concurrency and dedup.
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, ev.body.id.as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            chain.head.stream_seq.to_string().as_str(),
        );
        headers.insert(HEADER_TYPE, ev.event_type());
        headers.insert(
            HEADER_AGGREGATE_SEQ,
            ev.aggregate_seq().to_string().as_str(),
        );
        headers.insert(HEADER_ACTOR, ev.actor());
        crate::trace::inject_current(&mut headers);
        let ack = self
            .publish(subject.clone(), headers, ev.encoded.clone())
            .await;
        let ack = match ack {
            Ok(ack) => ack,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                let fresh = self.fresh_chain(&ev.aggregate).await.map_err(unavailable)?;
                return self.dedup_or_reject(ev, &fresh).await;
            }
            Err(e) => return Err(publish_error(e)),
        };
        if ack.duplicate {
            // The id exists: same event (idempotent) or a different one reusing the id.
            let stored = self
                .get_event(&Position::new(ack.stream.clone(), ack.sequence))
                .await
                .map_err(|e| AppendError::new(AppendErrorKind::Unavailable, e.to_string()))?;
            if stored.hash == ev.hash {
                return Ok(AppendOutcome {
                    position: stored.position,
                    hash: ev.hash,
                    aggregate_seq: ev.aggregate_seq(),
                    duplicate: true,
                });
            }
            return Err(AppendError::new(AppendErrorKind::Duplicate, format!("event id {} is already used by another event (at {}); every event needs a fresh UUIDv7", ev.body.id, stored.position)));
        }
        if chain.folded_to == chain.head.stream_seq {
            self.remember(
                &ev.aggregate,
                CachedChain {
                    head: ChainHeadInfo {
                        aggregate: ev.aggregate.clone(),
                        aggregate_seq: ev.aggregate_seq(),
                        hash: ev.hash,
                        stream_seq: ack.sequence,
                    },
                    state: pending.next,
                    folded_to: ack.sequence,
                    corrupted: None,
                },
            );
        }
        drop(subject);
        let outcome = AppendOutcome {
            position: Position::new(ack.stream, ack.sequence),
            hash: ev.hash,
            aggregate_seq: ev.aggregate_seq(),
            duplicate: false,
        };
        Ok(outcome)
    }

    /// A name claim carries the genesis it names: once the claim is in, the
    /// genesis follows (idempotently), so a claim never stands without the
    /// registration it belongs to, whoever appended it.
    async fn complete_registration(&self, ev: &VerifiedEvent) -> Result<(), AppendError> {
        let Kind::NameClaimed(claim) = &ev.payload else {
            return Ok(());
        };
        let genesis = SignedEvent::decode(claim.genesis.as_slice())
            .map_err(|e| AppendError::new(AppendErrorKind::Malformed, e.to_string()))?;
        let genesis = VerifiedEvent::from_signed(genesis)?;
        match Box::pin(self.append_verified(genesis)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let fut = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await?;
        match tokio::time::timeout(self.config.publish_timeout, fut.into_future()).await {
            Ok(r) => r,
            Err(_) => Err(jetstream::context::PublishError::new(
                PublishErrorKind::TimedOut,
            )),
        }
    }

    /// Every check `append` makes (position against a fresh head when needed,
    /// domain rules, key validity, foreign signers), without writing anything.
    /// `Ok(Some(outcome))` when this exact event is already in the chain. Lets a
    /// caller that must append several events refuse bad input before writing
    /// the first (the gateway's Register).
    pub async fn validate(&self, ev: &VerifiedEvent) -> Result<Option<AppendOutcome>, AppendError> {
        match self.admit(ev).await? {
            Admission::Append(_) => Ok(None),
            Admission::AlreadyThere(outcome) => Ok(Some(outcome)),
        }
    }

    /// Position, rules and keys through THE verification step, against the
    /// cached fold first and, before any rejection a stale cache could cause,
    /// against a fresh one.
    async fn admit(&self, ev: &VerifiedEvent) -> Result<Admission, AppendError> {
        let (mut chain, mut refreshed) = match self.cached_fold(&ev.aggregate) {
            Some(c) => (c, false),
            None => (
                self.fresh_chain(&ev.aggregate).await.map_err(unavailable)?,
                true,
            ),
        };
        loop {
            match self.check_against(ev, &chain).await {
                Ok(pending) => {
                    self.check_claimed_genesis(ev).await?;
                    return Ok(Admission::Append(Box::new((chain, pending))));
                }
                Err(_) if !refreshed => {
                    chain = self.fresh_chain(&ev.aggregate).await.map_err(unavailable)?;
                    refreshed = true;
                }
                Err(Refusal::Position) => {
                    return self
                        .dedup_or_reject(ev, &chain)
                        .await
                        .map(Admission::AlreadyThere)
                }
                Err(Refusal::Rule(e)) => return Err(e),
            }
        }
    }

    /// A name claim is only admitted if the genesis it carries would itself be
    /// admitted (or is already the identity's genesis): every check, foreign
    /// endorsers included, so a claim never stands for a registration that
    /// cannot complete.
    async fn check_claimed_genesis(&self, ev: &VerifiedEvent) -> Result<(), AppendError> {
        let Kind::NameClaimed(claim) = &ev.payload else {
            return Ok(());
        };
        let genesis = VerifiedEvent::decode(&claim.genesis)?;
        Box::pin(self.validate(&genesis)).await.map(|_| ())
    }

    async fn check_against(
        &self,
        ev: &VerifiedEvent,
        chain: &CachedChain,
    ) -> Result<Pending, Refusal> {
        if chain.corrupted.is_some()
            || chain.folded_to != chain.head.stream_seq
            || verify::check_position(&chain.state, ev).is_err()
        {
            return Err(Refusal::Position);
        }
        let now = millis(time::OffsetDateTime::now_utc());
        let pending = verify::step(&chain.state, ev, now, self.config.trust_root.as_ref())
            .map_err(|f| Refusal::Rule(f.into()))?;
        self.resolve_current(&pending.requirement)
            .await
            .map_err(Refusal::Rule)?;
        Ok(pending)
    }

    /// `ev` does not follow `head` (freshly read): either it is already in the
    /// chain (a re-send, answered idempotently with its original position) or it
    /// is rejected with the precise reason.
    async fn dedup_or_reject(
        &self,
        ev: &VerifiedEvent,
        chain: &CachedChain,
    ) -> Result<AppendOutcome, AppendError> {
        let head = &chain.head;
        let seq = ev.aggregate_seq();
        if seq <= head.aggregate_seq {
            match self.find_by_aggregate_seq(&ev.aggregate, seq, head).await {
                Ok(Some(existing)) if existing.hash == ev.hash => {
                    return Ok(AppendOutcome {
                        position: existing.position,
                        hash: ev.hash,
                        aggregate_seq: seq,
                        duplicate: true,
                    });
                }
                Err(e) => {
                    return Err(AppendError::new(
                        AppendErrorKind::Unavailable,
                        e.to_string(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(c) = &chain.corrupted {
            return Err(AppendError {
                kind: AppendErrorKind::Corrupted,
                message: format!(
                    "{} is corrupted: the event at {} fails verification ({}); it was published around the store, and nothing can be appended after it until an operator repairs the stream (see amai chain verify)",
                    ev.aggregate, c.position, c.failure
                ),
                current_head: Some(head.clone()),
            });
        }
        Err(Self::position_error(ev, head))
    }

    /// Explains why `ev` does not follow `head`.
    fn position_error(ev: &VerifiedEvent, head: &ChainHeadInfo) -> AppendError {
        let seq = ev.aggregate_seq();
        if seq <= head.aggregate_seq {
            if ev.aggregate.kind == AggregateKind::Name {
                return AppendError {
                    kind: AppendErrorKind::NameTaken,
                    message: format!(
                        "name {:?} is already taken; choose another",
                        ev.aggregate.id
                    ),
                    current_head: Some(head.clone()),
                };
            }
            if ev.aggregate.kind == AggregateKind::Agent && seq == 1 {
                return AppendError {
                    kind: AppendErrorKind::AlreadyRegistered,
                    message: format!("identity {} is already registered", ev.aggregate.id),
                    current_head: Some(head.clone()),
                };
            }
            return AppendError::conflict(
                head.clone(),
                format!("stale chain head: {} is at seq {} (hash {}), the event claims seq {seq}; re-read the head, re-sign and retry", ev.aggregate, head.aggregate_seq, hex::encode(head.hash)),
            );
        }
        if seq > head.aggregate_seq + 1 {
            return AppendError { kind: AppendErrorKind::Gap, message: format!("aggregate_seq {seq} skips ahead: {} is at seq {}, so the next event must be seq {}", ev.aggregate, head.aggregate_seq, head.aggregate_seq + 1), current_head: Some(head.clone()) };
        }
        AppendError {
            kind: AppendErrorKind::ChainBroken,
            message: format!(
                "prev_hash {} does not match the hash {} of {} seq {}",
                hex::encode(ev.prev_hash()),
                hex::encode(head.hash),
                ev.aggregate,
                head.aggregate_seq
            ),
            current_head: Some(head.clone()),
        }
    }

    /// Forgets cached heads and identity states (tests, and after operator action).
    pub fn clear_cache(&self) {
        self.chains.clear();
    }
}

/// Why an event was refused during admission.
enum Refusal {
    /// It does not follow the chain's valid head (or the chain is corrupted).
    Position,
    /// It breaks a rule or its signer's key is not valid.
    Rule(AppendError),
}

fn unavailable(e: ReadError) -> AppendError {
    match e {
        ReadError::Unavailable(m) => AppendError::new(AppendErrorKind::Unavailable, m),
        other => AppendError::new(AppendErrorKind::Invalid, other.to_string()),
    }
}

fn publish_error(e: jetstream::context::PublishError) -> AppendError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => AppendError::new(
            AppendErrorKind::TooLarge,
            format!("the server refused the event as too large: {e}"),
        ),
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::MaxAckPending => AppendError::new(
            AppendErrorKind::Unavailable,
            format!("nats did not acknowledge the append ({e}); retrying the same event is safe"),
        ),
        PublishErrorKind::StreamNotFound => AppendError::new(
            AppendErrorKind::Unavailable,
            format!("no stream for this subject ({e}); were the streams created?"),
        ),
        _ => AppendError::new(AppendErrorKind::Other, e.to_string()),
    }
}
