//! [`EventStore`]: the one way events are appended to and read from JetStream.
//!
//! `append` verifies the signature, checks the signer's key and permissions,
//! checks `aggregate_seq`/`prev_hash` against the chain head and publishes with
//! `Nats-Expected-Last-Subject-Sequence` (optimistic concurrency) and
//! `Nats-Msg-Id` (deduplication). The chain head comes from JetStream itself
//! (`STREAM.MSG.GET` last-by-subject, routed to the stream leader, never Direct
//! Get). A per-process cache of heads and identity states saves round trips; it
//! is only ever a shortcut: every rejection that a stale cache could cause is
//! re-checked against a fresh read, and a publish conflict refreshes it.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use prost::Message;

use crate::envelope::{hash_bytes, EnvelopeError, EventHash, VerifiedEvent, ZERO_HASH};
use crate::identity::{self, IdentityState, Millis, RuleError, SignerRequirement};
use crate::proto::{self, SignedEvent};
use crate::subjects::{Aggregate, AggregateKind};
use crate::Position;

/// Header carrying the event type (lets consumers filter without decoding).
pub const HEADER_TYPE: &str = "Amai-Type";
/// Header carrying the aggregate sequence.
pub const HEADER_AGGREGATE_SEQ: &str = "Amai-Aggregate-Seq";
/// Header carrying the signer's identity id.
pub const HEADER_ACTOR: &str = "Amai-Actor";

/// Default largest encoded event accepted by `append`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;

/// Configuration of an [`EventStore`] (builder style).
#[derive(Clone, Debug)]
pub struct EventStoreConfig {
    max_event_bytes: usize,
    trust_root: Option<VerifyingKey>,
    signer_cache_ttl: Duration,
    publish_timeout: Duration,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            trust_root: None,
            signer_cache_ttl: Duration::from_secs(2),
            publish_timeout: Duration::from_secs(5),
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

    /// How long another identity's state (a service signing results, an operator
    /// endorsing) may be served from cache before it is re-read (default 2 s).
    pub fn signer_cache_ttl(mut self, ttl: Duration) -> Self {
        self.signer_cache_ttl = ttl;
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
    fn empty(aggregate: Aggregate) -> Self {
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
    /// Anything else the server said.
    Other,
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
    fn new(kind: AppendErrorKind, message: impl Into<String>) -> Self {
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
    /// Builds a stored event from a stream message.
    pub fn new(
        stream: &str,
        seq: u64,
        subject: String,
        published: time::OffsetDateTime,
        payload: Bytes,
        headers: Option<&HeaderMap>,
    ) -> Self {
        let hash = hash_bytes(&payload);
        let event_type = headers
            .and_then(|h| h.get(HEADER_TYPE))
            .map(|v| v.as_str().to_string());
        Self {
            position: Position::new(stream, seq),
            subject,
            published_ms: millis(published),
            payload,
            hash,
            event_type,
        }
    }

    /// Builds a stored event from a message read with `STREAM.MSG.GET`.
    pub fn from_stream_message(
        stream: &str,
        msg: async_nats::jetstream::message::StreamMessage,
    ) -> Self {
        Self::new(
            stream,
            msg.sequence,
            msg.subject.to_string(),
            msg.time,
            msg.payload,
            Some(&msg.headers),
        )
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
        }
    }
}

/// Unix milliseconds of a time.
pub fn millis(t: time::OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// The outcome of the pre-publish checks.
enum Admission {
    /// Append after this chain state.
    Append(Box<CachedChain>),
    /// This exact event is already in the chain.
    AlreadyThere(AppendOutcome),
}

#[derive(Clone)]
struct CachedChain {
    head: ChainHeadInfo,
    identity: Option<IdentityState>,
}

struct CachedSigner {
    state: IdentityState,
    fetched: Instant,
}

#[derive(Default)]
struct Caches {
    chains: HashMap<String, CachedChain>,
    signers: HashMap<String, CachedSigner>,
}

/// Appends and reads events on JetStream. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    js: jetstream::Context,
    config: Arc<EventStoreConfig>,
    caches: Arc<Mutex<Caches>>,
}

const MAX_CACHED_CHAINS: usize = 100_000;

impl EventStore {
    /// A store over a JetStream context. Streams must exist ([`crate::streams::ensure_streams`]).
    pub fn new(js: jetstream::Context, config: EventStoreConfig) -> Self {
        Self {
            js,
            config: Arc::new(config),
            caches: Arc::default(),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        // A poisoned cache is still a valid cache: entries are replaced whole.
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
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
        let span = tracing::Span::current();
        span.record("aggregate", ev.aggregate.to_string());
        span.record("seq", ev.aggregate_seq());
        span.record("event_type", ev.event_type());
        self.append_verified(ev).await
    }

    /// Appends an already verified event.
    pub async fn append_verified(&self, ev: VerifiedEvent) -> Result<AppendOutcome, AppendError> {
        let subject = ev.aggregate.subject();
        let chain = match self.admit(&ev).await? {
            Admission::Append(chain) => *chain,
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
                let fresh = self.refresh_chain(&ev.aggregate, None).await?;
                return self.dedup_or_reject(&ev, &fresh.head).await;
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
        let now = millis(time::OffsetDateTime::now_utc());
        let mut next = chain;
        next.head = ChainHeadInfo {
            aggregate: ev.aggregate.clone(),
            aggregate_seq: ev.aggregate_seq(),
            hash: ev.hash,
            stream_seq: ack.sequence,
        };
        if ev.aggregate.kind == AggregateKind::Agent {
            next.identity = match next.identity {
                Some(mut s) => {
                    s.apply(&ev, now);
                    Some(s)
                }
                None => IdentityState::from_genesis(&ev, now, self.config.trust_root.as_ref())
                    .ok()
                    .map(|(s, _)| s),
            };
        }
        self.store_chain(&subject, next);
        Ok(AppendOutcome {
            position: Position::new(ack.stream, ack.sequence),
            hash: ev.hash,
            aggregate_seq: ev.aggregate_seq(),
            duplicate: false,
        })
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

    /// Position checks (with a fresh read before any rejection a stale cache
    /// could cause), then rules and keys.
    async fn admit(&self, ev: &VerifiedEvent) -> Result<Admission, AppendError> {
        let mut chain = self.cached_chain(&ev.aggregate).await?;
        let mut refreshed = false;
        loop {
            let head = &chain.head;
            if ev.aggregate_seq() == head.aggregate_seq + 1 && ev.prev_hash() == head.hash {
                break;
            }
            if !refreshed {
                chain = self.refresh_chain(&ev.aggregate, Some(chain)).await?;
                refreshed = true;
                continue;
            }
            let head = head.clone();
            return self
                .dedup_or_reject(ev, &head)
                .await
                .map(Admission::AlreadyThere);
        }
        let requirement = self.check_rules(ev, &chain)?;
        self.check_requirement(&requirement).await?;
        Ok(Admission::Append(Box::new(chain)))
    }

    /// `ev` does not follow `head` (freshly read): either it is already in the
    /// chain (a re-send, answered idempotently with its original position) or it
    /// is rejected with the precise reason.
    async fn dedup_or_reject(
        &self,
        ev: &VerifiedEvent,
        head: &ChainHeadInfo,
    ) -> Result<AppendOutcome, AppendError> {
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

    fn check_rules(
        &self,
        ev: &VerifiedEvent,
        chain: &CachedChain,
    ) -> Result<SignerRequirement, AppendError> {
        if ev.aggregate.kind != AggregateKind::Agent {
            return Ok(identity::check_foreign_aggregate_event(ev)?);
        }
        if ev.aggregate_seq() == 1 {
            let (_, req) = IdentityState::from_genesis(ev, 0, self.config.trust_root.as_ref())?;
            return Ok(req);
        }
        let state = chain.identity.as_ref().ok_or_else(|| {
            AppendError::new(
                AppendErrorKind::Invalid,
                format!("{} has events but no valid genesis", ev.aggregate),
            )
        })?;
        Ok(state.check(ev)?)
    }

    async fn check_requirement(&self, req: &SignerRequirement) -> Result<(), AppendError> {
        match req {
            SignerRequirement::None => Ok(()),
            SignerRequirement::Identity { actor, key, kinds } => {
                let state = self.signer_state(actor, key).await?;
                Ok(identity::check_signer(&state, key, kinds, None)?)
            }
            SignerRequirement::Endorser { operator_id, key } => {
                let state = self.signer_state(operator_id, key).await?;
                Ok(identity::check_signer(
                    &state,
                    key,
                    &[proto::IdentityKind::Operator],
                    None,
                )?)
            }
        }
    }

    /// Another identity's state, from a short-lived cache or JetStream. A cached
    /// state whose current key is not `key` is re-read (it may have rotated).
    async fn signer_state(
        &self,
        actor: &str,
        key: &VerifyingKey,
    ) -> Result<IdentityState, AppendError> {
        {
            let caches = self.lock();
            if let Some(c) = caches.signers.get(actor) {
                if c.fetched.elapsed() < self.config.signer_cache_ttl
                    && &c.state.current_key().signing_key == key
                {
                    return Ok(c.state.clone());
                }
            }
        }
        let state = self.identity_state(actor).await.map_err(|e| match e {
            ReadError::NotFound(_) => AppendError::new(
                AppendErrorKind::UnknownKey,
                format!("signer {actor} is not a registered identity"),
            ),
            ReadError::Invalid(m) => AppendError::new(AppendErrorKind::UnknownKey, m),
            ReadError::Unavailable(m) => AppendError::new(AppendErrorKind::Unavailable, m),
        })?;
        self.lock().signers.insert(
            actor.to_string(),
            CachedSigner {
                state: state.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(state)
    }

    async fn cached_chain(&self, aggregate: &Aggregate) -> Result<CachedChain, AppendError> {
        if let Some(c) = self.lock().chains.get(&aggregate.subject()) {
            return Ok(c.clone());
        }
        self.refresh_chain(aggregate, None).await
    }

    fn store_chain(&self, subject: &str, chain: CachedChain) {
        let mut caches = self.lock();
        if caches.chains.len() >= MAX_CACHED_CHAINS && !caches.chains.contains_key(subject) {
            caches.chains.clear();
        }
        caches.chains.insert(subject.to_string(), chain);
    }

    /// Re-reads the head (and for agents, catches the identity state up).
    async fn refresh_chain(
        &self,
        aggregate: &Aggregate,
        previous: Option<CachedChain>,
    ) -> Result<CachedChain, AppendError> {
        let unavailable =
            |e: ReadError| AppendError::new(AppendErrorKind::Unavailable, e.to_string());
        let head = self.chain_head(aggregate).await.map_err(unavailable)?;
        let mut chain = match previous {
            Some(p) if p.head.stream_seq <= head.stream_seq => p,
            _ => CachedChain {
                head: ChainHeadInfo::empty(aggregate.clone()),
                identity: None,
            },
        };
        if aggregate.kind == AggregateKind::Agent && chain.head.stream_seq < head.stream_seq {
            let events = self
                .read_subject(aggregate, chain.head.stream_seq + 1, head.stream_seq)
                .await
                .map_err(unavailable)?;
            for stored in events {
                let Ok(ev) = stored.verify() else { break };
                match chain.identity.as_mut() {
                    None => {
                        chain.identity = IdentityState::from_genesis(
                            &ev,
                            stored.published_ms,
                            self.config.trust_root.as_ref(),
                        )
                        .ok()
                        .map(|(s, _)| s)
                    }
                    Some(s) => s.apply(&ev, stored.published_ms),
                }
            }
        }
        chain.head = head;
        self.store_chain(&aggregate.subject(), chain.clone());
        Ok(chain)
    }

    /// The head of an aggregate, read from the stream leader.
    pub async fn chain_head(&self, aggregate: &Aggregate) -> Result<ChainHeadInfo, ReadError> {
        let stream = self
            .js
            .get_stream_no_info(aggregate.stream())
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        match stream
            .get_last_raw_message_by_subject(&aggregate.subject())
            .await
        {
            Ok(msg) => {
                let stored = StoredEvent::from_stream_message(aggregate.stream(), msg);
                let seq = aggregate_seq_of(&stored).ok_or_else(|| {
                    ReadError::Invalid(format!("the head of {aggregate} is not a valid event"))
                })?;
                Ok(ChainHeadInfo {
                    aggregate: aggregate.clone(),
                    aggregate_seq: seq,
                    hash: stored.hash,
                    stream_seq: stored.position.seq,
                })
            }
            Err(e) if no_message(&e) => Ok(ChainHeadInfo::empty(aggregate.clone())),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// One event by position.
    pub async fn get_event(&self, position: &Position) -> Result<StoredEvent, ReadError> {
        if AggregateKind::for_stream(&position.stream).is_none() {
            return Err(ReadError::Invalid(format!(
                "unknown stream {:?}",
                position.stream
            )));
        }
        let stream = self
            .js
            .get_stream_no_info(&position.stream)
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        match stream.get_raw_message(position.seq).await {
            Ok(msg) => Ok(StoredEvent::from_stream_message(&position.stream, msg)),
            Err(e) if no_message(&e) => Err(ReadError::NotFound(format!("no event at {position}"))),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// Events of one aggregate with stream sequence in `from..=to`, read with
    /// leader-routed `STREAM.MSG.GET` next-by-subject requests (no consumer is
    /// created, so any number of readers can run at once).
    pub async fn read_subject(
        &self,
        aggregate: &Aggregate,
        from_stream_seq: u64,
        to_stream_seq: u64,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let mut out = Vec::new();
        let mut next = from_stream_seq.max(1);
        while next <= to_stream_seq {
            match self.next_on_subject(aggregate, next).await? {
                Some(stored) if stored.position.seq <= to_stream_seq => {
                    next = stored.position.seq + 1;
                    out.push(stored);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The first event of `aggregate` at or after stream sequence `seq`.
    async fn next_on_subject(
        &self,
        aggregate: &Aggregate,
        seq: u64,
    ) -> Result<Option<StoredEvent>, ReadError> {
        let stream = self
            .js
            .get_stream_no_info(aggregate.stream())
            .await
            .map_err(|e| ReadError::Unavailable(e.to_string()))?;
        match stream
            .raw_message_builder()
            .sequence(seq)
            .next_by_subject(aggregate.subject())
            .send()
            .await
        {
            Ok(msg) => Ok(Some(StoredEvent::from_stream_message(
                aggregate.stream(),
                msg,
            ))),
            Err(e) if no_message(&e) => Ok(None),
            Err(e) => Err(ReadError::Unavailable(e.to_string())),
        }
    }

    /// A page of an aggregate's chain starting at `from_aggregate_seq` (1-based).
    pub async fn read_chain(
        &self,
        aggregate: &Aggregate,
        from_aggregate_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        Ok(self
            .read_chain_page(aggregate, from_aggregate_seq, limit, 1)
            .await?
            .events)
    }

    /// A page of an aggregate's chain: at most `limit` events from
    /// `from_aggregate_seq` on, scanning the subject from stream sequence
    /// `scan_from_stream_seq` (1, or a previous page's `next_stream_seq`).
    /// Undecodable events are included where they sit, so verifiers see them.
    pub async fn read_chain_page(
        &self,
        aggregate: &Aggregate,
        from_aggregate_seq: u64,
        limit: usize,
        scan_from_stream_seq: u64,
    ) -> Result<ChainPage, ReadError> {
        let head = self.chain_head(aggregate).await?;
        let from = from_aggregate_seq.max(1);
        let mut page = ChainPage {
            events: Vec::new(),
            next_aggregate_seq: 0,
            next_stream_seq: 0,
        };
        if head.aggregate_seq == 0 || from > head.aggregate_seq || limit == 0 {
            return Ok(page);
        }
        let mut next = scan_from_stream_seq.max(1);
        // Aggregate sequence of the last decodable event seen.
        let mut last_seq = 0u64;
        while next <= head.stream_seq && page.events.len() < limit {
            let Some(stored) = self.next_on_subject(aggregate, next).await? else {
                break;
            };
            if stored.position.seq > head.stream_seq {
                break;
            }
            next = stored.position.seq + 1;
            let include = match aggregate_seq_of(&stored) {
                Some(seq) => {
                    last_seq = seq;
                    seq >= from
                }
                None => last_seq + 1 >= from,
            };
            if include {
                page.events.push(stored);
            }
        }
        if page.events.len() == limit && next <= head.stream_seq {
            page.next_stream_seq = next;
            page.next_aggregate_seq = (last_seq + 1).max(from);
        }
        Ok(page)
    }

    async fn find_by_aggregate_seq(
        &self,
        aggregate: &Aggregate,
        seq: u64,
        head: &ChainHeadInfo,
    ) -> Result<Option<StoredEvent>, ReadError> {
        if seq == head.aggregate_seq {
            return Ok(Some(StoredEvent {
                position: Position::new(aggregate.stream(), head.stream_seq),
                subject: aggregate.subject(),
                published_ms: 0,
                payload: Bytes::new(),
                hash: head.hash,
                event_type: None,
            }));
        }
        Ok(self.read_chain(aggregate, seq, 1).await?.into_iter().next())
    }

    /// An identity's state, folded from its whole chain (fresh from JetStream).
    pub async fn identity_state(&self, id: &str) -> Result<IdentityState, ReadError> {
        let aggregate = Aggregate::agent(id).map_err(|e| ReadError::Invalid(e.to_string()))?;
        let head = self.chain_head(&aggregate).await?;
        if head.aggregate_seq == 0 {
            return Err(ReadError::NotFound(format!(
                "identity {id} is not registered"
            )));
        }
        let mut state: Option<IdentityState> = None;
        for stored in self.read_subject(&aggregate, 1, head.stream_seq).await? {
            // An event that bypassed the store (only possible without publish
            // permissions on `amai.>`) never changes key state; auditors see it
            // in the chain report.
            let Ok(ev) = stored.verify() else {
                tracing::warn!(
                    identity = id,
                    seq = stored.position.seq,
                    "skipping an invalid event in an identity chain"
                );
                continue;
            };
            match state.as_mut() {
                None => {
                    state = Some(
                        IdentityState::from_genesis(
                            &ev,
                            stored.published_ms,
                            self.config.trust_root.as_ref(),
                        )
                        .map_err(|e| ReadError::Invalid(e.to_string()))?
                        .0,
                    )
                }
                Some(s) => s.apply(&ev, stored.published_ms),
            }
        }
        state.ok_or_else(|| ReadError::NotFound(format!("identity {id} is not registered")))
    }

    /// Forgets cached heads and identity states (tests, and after operator action).
    pub fn clear_cache(&self) {
        let mut c = self.lock();
        c.chains.clear();
        c.signers.clear();
    }
}

/// Whether a `STREAM.MSG.GET` failed only because there is no such message.
fn no_message(e: &jetstream::stream::LastRawMessageError) -> bool {
    match e.kind() {
        LastRawMessageErrorKind::NoMessageFound => true,
        LastRawMessageErrorKind::JetStream(js) => {
            js.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND
        }
        _ => false,
    }
}

/// The aggregate sequence of a stored event: from the header when present, else
/// from the decoded body.
pub fn aggregate_seq_of(stored: &StoredEvent) -> Option<u64> {
    let signed = SignedEvent::decode(stored.payload.as_ref()).ok()?;
    let body = proto::EventBody::decode(signed.body.as_slice()).ok()?;
    Some(body.aggregate_seq)
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
