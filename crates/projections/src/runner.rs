//! The projection runner: verified, checkpointed, exactly-once application of
//! stream events to a sled tree.
//!
//! For every stream a projection consumes, [`ProjectionRunner::spawn`] starts a
//! task that opens an ordered replay at `checkpoint + 1` and reads it in
//! batches: the next message (awaited), then whatever further messages the
//! replay already holds, without waiting, up to 64 and stopping once the replay
//! reports nothing pending. Live traffic therefore makes batches of one; a
//! catch-up replay makes large ones. For every event of the batch, in order:
//!
//! 1. decodes it and checks the signature ([`StoredEvent::verify`]);
//! 2. checks that it names the aggregate of its subject, that `aggregate_seq` is
//!    the previous valid one + 1 and that `prev_hash` is the previous valid hash
//!    (per-aggregate state kept in the tree, overlaid with the states left by the
//!    batch's earlier events, which are not written yet);
//! 3. checks key validity exactly like [`amai_bus::chain::verify_events`]: identity
//!    chains (`agent/*`) are folded into an [`IdentityState`] kept in the tree
//!    (and the overlay);
//!    events signed by another identity (services, endorsing or revoking
//!    operators) are checked with [`check_signer`] at the event's publish time
//!    against that identity's state read from JetStream (cached in memory);
//! 4. valid: the event is to be applied with [`Projection::apply`] and the
//!    aggregate's new state stored; invalid: it is never applied, an
//!    [`IntegrityViolation`] is to be recorded and a warning logged.
//!
//! The whole batch (new aggregate states, effects, violations and the
//! checkpoint, the batch's last sequence) is then written **in one sled
//! transaction**, and only then is the stream's position published. If a
//! projection's `apply` aborts, that transaction writes nothing and the batch is
//! written again one transaction per event, where the refused event is recorded
//! as a [`ViolationKind::Rejected`] violation (its chain state still advances).
//!
//! ## Durability
//!
//! sled is flushed by a background task every 200 ms when something changed
//! (and on shutdown), not per event. A crash can lose the un-flushed tail of
//! sled, but effects and checkpoints are written in the same transactions, so they
//! are lost *together*: the lost events are simply replayed and re-applied on the
//! next start. The effect of every event is therefore applied exactly once.
//!
//! One runner per projection per sled database: the stream tasks are the only
//! writers of the tree's reserved keys.
//!
//! ## Reserved keys
//!
//! The runner keeps its state in the projection's tree under keys starting with
//! [`RESERVED_PREFIX`]: `\0meta/version`, `\0meta/violations` (count),
//! `\0ckpt/<stream>` (last handled stream sequence), `\0chain/<aggregate>`
//! (verification state) and `\0viol/<stream>/<seq>` (violations).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::consumer::{self, StartAt};
use amai_bus::identity::{IdentityState, Millis, SignerCheck, SignerRequirement};
use amai_bus::proto::{self, ChainFailureKind};
use amai_bus::store::{ReadError, StoredEvent};
use amai_bus::subjects::Aggregate;
use amai_bus::verify::{self, Failure, FailureKind};
use amai_bus::{EventStore, Position, VerifiedEvent};
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::codec::{self, ChainState, StoredIdentity};
use crate::projection::{AppliedEvent, ApplyError, Projection};

/// First byte of every key the runner owns in a projection's tree.
pub const RESERVED_PREFIX: u8 = 0x00;

const META_VERSION: &[u8] = b"\0meta/version";
const META_VIOLATIONS: &[u8] = b"\0meta/violations";
const CKPT_PREFIX: &[u8] = b"\0ckpt/";
const CHAIN_PREFIX: &[u8] = b"\0chain/";
const VIOL_PREFIX: &[u8] = b"\0viol/";

/// How often unflushed changes are flushed to disk.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Reconnect backoff bounds after a transient failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Foreign signer states kept in memory (cleared when full).
const MAX_CACHED_SIGNERS: usize = 10_000;
/// At most this many events are verified and written in one transaction.
const MAX_BATCH: usize = 64;

fn ckpt_key(stream: &str) -> Vec<u8> {
    codec::key(&[CKPT_PREFIX, stream.as_bytes()])
}

fn chain_key(aggregate: &str) -> Vec<u8> {
    codec::key(&[CHAIN_PREFIX, aggregate.as_bytes()])
}

fn viol_key(stream: &str, seq: u64) -> Vec<u8> {
    codec::key(&[VIOL_PREFIX, stream.as_bytes(), b"/", &codec::u64_bytes(seq)])
}

/// Failures of the runner and its offline helpers.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// sled failed (I/O, corruption).
    #[error("projection storage: {0}")]
    Storage(#[from] sled::Error),
    /// The runner's own state in the tree could not be decoded.
    #[error("corrupt projection state: {0}")]
    Corrupt(String),
}

/// Why [`ProjectionHandle::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The position was not reached in time.
    #[error("projection {projection} reached {stream}:{reached}, not {wanted}, within {timeout:?}; retry or drop min_position")]
    Timeout {
        /// The projection.
        projection: &'static str,
        /// The stream of the awaited position.
        stream: String,
        /// Last sequence handled when the wait ended.
        reached: u64,
        /// The awaited sequence.
        wanted: u64,
        /// How long it waited.
        timeout: Duration,
    },
    /// The projection does not consume the position's stream.
    #[error("projection {projection} does not consume stream {stream:?} (it consumes {consumed}); this min_position cannot be honoured here")]
    UnknownStream {
        /// The projection.
        projection: &'static str,
        /// The stream asked for.
        stream: String,
        /// The streams it consumes, comma separated.
        consumed: String,
    },
    /// The position is beyond the stream's last sequence: no append to this
    /// deployment returned it, so waiting cannot help.
    #[error("min_position {stream}:{wanted} is beyond the last sequence of {stream} ({last_seq}); pass the position an append to this deployment returned")]
    BeyondEnd {
        /// The projection.
        projection: &'static str,
        /// The stream of the position.
        stream: String,
        /// The sequence asked for.
        wanted: u64,
        /// The stream's last sequence when asked.
        last_seq: u64,
    },
}

/// A failed wait as a query error: a stream not consumed is `INVALID_ARGUMENT`
/// (`STREAM_NOT_CONSUMED`), a position beyond the stream's end `OUT_OF_RANGE`
/// (`POSITION_BEYOND_END`, with `last_seq`), a timeout `DEADLINE_EXCEEDED`
/// (`STALE_POSITION`).
impl From<WaitError> for amai_bus::query::QueryError {
    fn from(e: WaitError) -> Self {
        use amai_bus::query::{reason, QueryCode, QueryError};
        let message = e.to_string();
        match e {
            WaitError::Timeout {
                stream,
                reached,
                wanted,
                ..
            } => QueryError::new(QueryCode::DeadlineExceeded, message)
                .with_reason(reason::STALE_POSITION)
                .with_meta("stream", stream)
                .with_meta("reached", reached)
                .with_meta("wanted", wanted),
            WaitError::UnknownStream {
                stream, consumed, ..
            } => QueryError::new(QueryCode::InvalidArgument, message)
                .with_reason(reason::STREAM_NOT_CONSUMED)
                .with_meta("stream", stream)
                .with_meta("consumed", consumed),
            WaitError::BeyondEnd {
                stream,
                wanted,
                last_seq,
                ..
            } => QueryError::new(QueryCode::OutOfRange, message)
                .with_reason(reason::POSITION_BEYOND_END)
                .with_meta("stream", stream)
                .with_meta("wanted", wanted)
                .with_meta("last_seq", last_seq),
        }
    }
}

/// What is wrong with an event that was not applied: a verification failure
/// (exactly the kinds of [`FailureKind`], the one failure enum, converted with
/// `From`), or [`ViolationKind::Rejected`] by the projection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// The payload breaks a domain rule.
    Invalid,
    /// Not decodable, or breaks a structural or domain rule.
    Malformed,
    /// The signature does not verify against the carried key.
    BadSignature,
    /// Signed by a key that is not (or was not then) the actor's key.
    UnknownKey,
    /// Signed by a rotated-out key, or by / on a revoked identity.
    RevokedKey,
    /// The actor may not write this to this aggregate.
    NotPermitted,
    /// `prev_hash` does not match the previous valid event of the aggregate.
    ChainBroken,
    /// `aggregate_seq` is not the previous valid one + 1.
    Gap,
    /// The event names another aggregate than the subject it is stored on.
    WrongAggregate,
    /// Valid on its chain, but the projection refused it ([`ApplyError`]).
    Rejected,
}

impl ViolationKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::Malformed => "malformed",
            ViolationKind::BadSignature => "bad_signature",
            ViolationKind::UnknownKey => "unknown_key",
            ViolationKind::RevokedKey => "revoked_key",
            ViolationKind::NotPermitted => "not_permitted",
            ViolationKind::ChainBroken => "chain_broken",
            ViolationKind::Gap => "gap",
            ViolationKind::WrongAggregate => "wrong_aggregate",
            ViolationKind::Rejected => "rejected",
            ViolationKind::Invalid => "invalid",
        }
    }

    /// The chain-report failure kind (a projection's own refusal reports as invalid).
    pub fn to_proto(self) -> ChainFailureKind {
        match self {
            ViolationKind::Malformed => ChainFailureKind::Malformed,
            ViolationKind::Invalid | ViolationKind::Rejected => ChainFailureKind::Invalid,
            ViolationKind::NotPermitted => ChainFailureKind::NotPermitted,
            ViolationKind::BadSignature => ChainFailureKind::BadSignature,
            ViolationKind::UnknownKey => ChainFailureKind::UnknownKey,
            ViolationKind::RevokedKey => ChainFailureKind::RevokedKey,
            ViolationKind::ChainBroken => ChainFailureKind::ChainBroken,
            ViolationKind::Gap => ChainFailureKind::Gap,
            ViolationKind::WrongAggregate => ChainFailureKind::WrongAggregate,
        }
    }
}

impl From<FailureKind> for ViolationKind {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Malformed => ViolationKind::Malformed,
            FailureKind::BadSignature => ViolationKind::BadSignature,
            FailureKind::WrongAggregate => ViolationKind::WrongAggregate,
            FailureKind::Gap => ViolationKind::Gap,
            FailureKind::ChainBroken => ViolationKind::ChainBroken,
            FailureKind::UnknownKey => ViolationKind::UnknownKey,
            FailureKind::RevokedKey => ViolationKind::RevokedKey,
            FailureKind::NotPermitted => ViolationKind::NotPermitted,
            FailureKind::Invalid => ViolationKind::Invalid,
        }
    }
}

impl std::fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event a projection refused to apply, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrityViolation {
    /// The stream.
    pub stream: String,
    /// Its stream sequence.
    pub seq: u64,
    /// The aggregate the event named (or the one of its subject if undecodable).
    pub aggregate: String,
    /// The aggregate sequence the event claimed (0 if undecodable).
    pub aggregate_seq: u64,
    /// The event type (empty if undecodable).
    pub event_type: String,
    /// What is wrong.
    pub kind: ViolationKind,
    /// Human detail.
    pub detail: String,
    /// JetStream publish time, unix milliseconds.
    pub published_ms: Millis,
}

impl IntegrityViolation {
    /// The protobuf form.
    pub fn to_proto(&self) -> amai_bus::proto::IntegrityViolation {
        amai_bus::proto::IntegrityViolation {
            position: Some(self.position().into()),
            aggregate: self.aggregate.clone(),
            aggregate_seq: self.aggregate_seq,
            event_type: self.event_type.clone(),
            kind: self.kind.to_proto() as i32,
            detail: self.detail.clone(),
            published_at: Some(prost_types::Timestamp {
                seconds: self.published_ms.div_euclid(1000),
                nanos: (self.published_ms.rem_euclid(1000) * 1_000_000) as i32,
            }),
        }
    }

    /// The stream position of the offending event.
    pub fn position(&self) -> Position {
        Position::new(self.stream.clone(), self.seq)
    }
}

/// Clears a projection's tree (effects, checkpoints, violations, version), so the
/// next start rebuilds it from sequence 1. Meant to run offline
/// (`amai projections rebuild`), with no runner of this projection active.
pub fn rebuild_projection(db: &sled::Db, name: &str) -> Result<(), ProjectionError> {
    let tree = db.open_tree(name)?;
    tree.clear()?;
    tree.flush()?;
    info!(
        projection = name,
        "projection cleared; it rebuilds from sequence 1 on next start"
    );
    Ok(())
}

/// Reads a projection tree's violation count (for read models' stats).
pub fn violation_count(tree: &sled::Tree) -> Result<u64, ProjectionError> {
    Ok(codec::read_u64(tree.get(META_VIOLATIONS)?.as_deref()))
}

/// Reads a projection tree's integrity violations, in (stream, sequence) order.
pub fn violations(tree: &sled::Tree) -> Result<Vec<IntegrityViolation>, ProjectionError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(VIOL_PREFIX) {
        let (_, v) = item?;
        out.push(
            serde_json::from_slice(&v)
                .map_err(|e| ProjectionError::Corrupt(format!("undecodable violation: {e}")))?,
        );
    }
    Ok(out)
}

/// Reads the checkpoint (last handled stream sequence) of `stream` in a tree.
pub fn checkpoint(tree: &sled::Tree, stream: &str) -> Result<u64, ProjectionError> {
    Ok(codec::read_u64(tree.get(ckpt_key(stream))?.as_deref()))
}

struct StreamState {
    position: watch::Sender<u64>,
    caught_up: watch::Sender<bool>,
}

struct Shared {
    name: &'static str,
    tree: sled::Tree,
    streams: HashMap<&'static str, StreamState>,
    /// For `wait_for`: the last sequence of a stream.
    jetstream: async_nats::jetstream::Context,
}

/// A running projection: positions, consistency waits, violations, stop.
/// Cheap to clone.
#[derive(Clone)]
pub struct ProjectionHandle {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for ProjectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl ProjectionHandle {
    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The projection's tree (read models query it directly).
    pub fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Last handled (applied or recorded as a violation) sequence of `stream`;
    /// 0 for a stream the projection does not consume.
    pub fn position(&self, stream: &str) -> u64 {
        self.shared
            .streams
            .get(stream)
            .map(|s| *s.position.borrow())
            .unwrap_or(0)
    }

    /// Every consumed stream's position.
    pub fn positions(&self) -> Vec<Position> {
        let mut out: Vec<_> = self
            .shared
            .streams
            .iter()
            .map(|(s, st)| Position::new(*s, *st.position.borrow()))
            .collect();
        out.sort();
        out
    }

    /// Waits until the projection has handled `position` (returns at once if it
    /// has), at most `timeout`; the position may still be in the future. Fails
    /// at once for a stream the projection does not consume.
    pub async fn wait_for(&self, position: &Position, timeout: Duration) -> Result<(), WaitError> {
        self.wait(position, timeout, false).await
    }

    async fn wait(
        &self,
        position: &Position,
        timeout: Duration,
        must_exist: bool,
    ) -> Result<(), WaitError> {
        let Some(st) = self.shared.streams.get(position.stream.as_str()) else {
            let mut consumed: Vec<_> = self.shared.streams.keys().copied().collect();
            consumed.sort();
            return Err(WaitError::UnknownStream {
                projection: self.shared.name,
                stream: position.stream.clone(),
                consumed: consumed.join(", "),
            });
        };
        let mut rx = st.position.subscribe();
        let wanted = position.seq;
        if *st.position.borrow() >= wanted {
            return Ok(());
        }
        // Consistency tokens only come from appends, which are stored before
        // they are returned: one beyond the stream's end will never be reached.
        if must_exist {
            if let Some(last_seq) = self.last_seq(&position.stream, timeout).await {
                if wanted > last_seq {
                    return Err(WaitError::BeyondEnd {
                        projection: self.shared.name,
                        stream: position.stream.clone(),
                        wanted,
                        last_seq,
                    });
                }
            }
        }
        let reached = tokio::time::timeout(timeout, async {
            // The sender lives in `Shared`, which we hold: `wait_for` cannot see it closed.
            let _ = rx.wait_for(|p| *p >= wanted).await;
        })
        .await;
        match reached {
            Ok(()) => Ok(()),
            Err(_) => Err(WaitError::Timeout {
                projection: self.shared.name,
                stream: position.stream.clone(),
                reached: *st.position.borrow(),
                wanted,
                timeout,
            }),
        }
    }

    /// The stream's last sequence from JetStream stream info; `None` when NATS
    /// does not answer within `timeout` (the wait then simply runs its course).
    async fn last_seq(&self, stream: &str, timeout: Duration) -> Option<u64> {
        match tokio::time::timeout(timeout, self.shared.jetstream.get_stream(stream)).await {
            Ok(Ok(s)) => Some(s.cached_info().state.last_sequence),
            Ok(Err(e)) => {
                debug!(projection = self.shared.name, stream, error = %e, "cannot read stream info for a min_position wait");
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for an optional protobuf consistency token (`min_position`); `None`
    /// or an empty stream name returns at once. Unlike [`Self::wait_for`], a
    /// token beyond its stream's last sequence fails at once
    /// ([`WaitError::BeyondEnd`]): tokens are positions appends returned, so it
    /// can never be reached (the last sequence is read from JetStream only
    /// when the token is not reached yet).
    pub async fn wait_for_min_position(
        &self,
        min_position: Option<&proto::Position>,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        match min_position {
            Some(p) if !p.stream.is_empty() => {
                self.wait(&Position::new(p.stream.clone(), p.seq), timeout, true)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Whether every stream has been caught up with (no pending events) at least once.
    pub fn is_caught_up(&self) -> bool {
        self.shared.streams.values().all(|s| *s.caught_up.borrow())
    }

    /// Resolves once every stream has been caught up with at least once.
    pub async fn caught_up(&self) {
        for st in self.shared.streams.values() {
            let mut rx = st.caught_up.subscribe();
            // The sender lives in `Shared`, which we hold.
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// The recorded integrity violations, in (stream, sequence) order.
    pub fn violations(&self) -> Result<Vec<IntegrityViolation>, ProjectionError> {
        violations(&self.shared.tree)
    }

    /// How many integrity violations were recorded.
    pub fn violation_count(&self) -> u64 {
        violation_count(&self.shared.tree).unwrap_or(0)
    }

    /// Asks every task to stop (after a final flush); see [`Self::stopped`].
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every task has ended (after the shutdown signal or
    /// [`Self::shutdown`]); the final flush is done when it returns.
    pub async fn stopped(&self) {
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in tasks {
            if let Err(e) = t.await {
                if e.is_panic() {
                    error!(
                        projection = self.shared.name,
                        "projection task panicked: {e}"
                    );
                }
            }
        }
    }

    /// Stops the tasks at once, wherever they are, without a final flush (what a
    /// crash does; committed transactions stay consistent), and waits for them.
    pub async fn abort(&self) {
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // A poisoned list of join handles is still a valid list.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts projections.
#[derive(Debug)]
pub struct ProjectionRunner;

struct CachedSigner {
    state: IdentityState,
}

struct Ctx {
    shared: Arc<Shared>,
    db: sled::Db,
    store: EventStore,
    projection: Arc<dyn Projection>,
    signers: Mutex<HashMap<String, CachedSigner>>,
    dirty: AtomicBool,
}

/// The outcome of checking one event.
enum Verdict {
    Valid {
        event: Box<VerifiedEvent>,
        identity: Option<IdentityState>,
    },
    Invalid(IntegrityViolation),
}

/// One verified event, ready to be written: what [`Verdict`] means for the tree.
enum Step {
    /// Valid: store the aggregate's new chain state and apply the effect.
    Apply {
        /// `\0chain/<aggregate>`.
        chain_key: Vec<u8>,
        /// The encoded [`ChainState`] after this event.
        chain: Vec<u8>,
        applied: Box<AppliedEvent>,
    },
    /// Invalid: record the violation (the chain state does not move).
    Record(IntegrityViolation),
}

impl Step {
    fn new(stored: StoredEvent, verdict: Verdict) -> Self {
        match verdict {
            Verdict::Valid { event, identity } => Step::Apply {
                chain_key: chain_key(&event.aggregate.to_string()),
                chain: ChainState {
                    seq: event.aggregate_seq(),
                    hash: event.hash,
                    identity: identity.as_ref().map(StoredIdentity::from_state),
                }
                .encode(),
                applied: Box::new(AppliedEvent {
                    event: *event,
                    stored,
                    identity,
                }),
            },
            Verdict::Invalid(v) => Step::Record(v),
        }
    }

    fn position(&self) -> Position {
        match self {
            Step::Apply { applied, .. } => applied.stored.position.clone(),
            Step::Record(v) => v.position(),
        }
    }

    fn seq(&self) -> u64 {
        match self {
            Step::Apply { applied, .. } => applied.stored.position.seq,
            Step::Record(v) => v.seq,
        }
    }
}

/// Consecutive events of one stream that were available without waiting (the
/// first one awaited, then whatever the replay had buffered), with the replay's
/// `pending` count at each.
#[derive(Default)]
struct Batch {
    events: Vec<(StoredEvent, u64)>,
    /// The replay said nothing more was pending: do not read further.
    caught_up: bool,
}

impl Batch {
    /// Adds a replayed event, unless it was already handled (`seq <= handled`).
    fn push(&mut self, (stored, pending): (StoredEvent, u64), handled: u64) {
        self.caught_up = pending == 0;
        let after = self.last_seq().unwrap_or(handled);
        if stored.position.seq > after {
            self.events.push((stored, pending));
        }
    }

    /// Nothing more is read into this batch.
    fn is_complete(&self) -> bool {
        self.caught_up || self.events.len() >= MAX_BATCH
    }

    fn last_seq(&self) -> Option<u64> {
        self.events.last().map(|(s, _)| s.position.seq)
    }
}

/// Chain states (encoded, keyed by aggregate) written by the earlier events of
/// the batch being verified, which are not in the tree yet: event k+1 of an
/// aggregate is checked against event k's state, exactly as if k had been
/// committed on its own.
#[derive(Default)]
struct Overlay(HashMap<String, Vec<u8>>);

impl Overlay {
    fn record(&mut self, step: &Step) {
        if let Step::Apply { chain, applied, .. } = step {
            self.0
                .insert(applied.event.aggregate.to_string(), chain.clone());
        }
    }
}

/// A failure that is retried by reconnecting from the checkpoint.
#[derive(Debug)]
struct Transient(String);

impl ProjectionRunner {
    /// Opens the projection's tree (clearing it when its stored version differs
    /// from [`Projection::version`]) and starts one task per consumed stream plus
    /// a flusher. Everything stops (after a final flush) when `shutdown`
    /// resolves or [`ProjectionHandle::shutdown`] is called; await
    /// [`ProjectionHandle::stopped`] to know it has. With a
    /// `tokio::sync::watch::Receiver<bool>`, pass
    /// `async move { let _ = rx.wait_for(|s| *s).await; }`.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn spawn<S>(
        db: sled::Db,
        store: EventStore,
        projection: Arc<dyn Projection>,
        shutdown: S,
    ) -> Result<ProjectionHandle, ProjectionError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let name = projection.name();
        let tree = db.open_tree(name)?;
        let version = projection.version();
        let stored_version = tree
            .get(META_VERSION)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if stored_version != Some(version) {
            if stored_version.is_some() || !tree.is_empty() {
                info!(projection = name, from = ?stored_version, to = version, "projection version changed: rebuilding from sequence 1");
                tree.clear()?;
            }
            tree.insert(META_VERSION, &version.to_be_bytes())?;
            tree.flush()?;
        }
        let mut streams = HashMap::new();
        for stream in projection.streams() {
            let ckpt = checkpoint(&tree, stream)?;
            streams.insert(
                *stream,
                StreamState {
                    position: watch::channel(ckpt).0,
                    caught_up: watch::channel(false).0,
                },
            );
        }
        let shared = Arc::new(Shared {
            name,
            tree,
            streams,
            jetstream: store.jetstream().clone(),
        });
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            db,
            store,
            projection: projection.clone(),
            signers: Mutex::default(),
            dirty: AtomicBool::new(false),
        });
        let (stop, stop_rx) = watch::channel(false);
        let stop = Arc::new(stop);
        let mut tasks = Vec::new();
        {
            // Turns the caller's shutdown future into the internal signal; ends
            // as soon as either fires (it holds no projection state).
            let (stop, mut internal) = (stop.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => { stop.send_replace(true); }
                    _ = shutdown_requested(&mut internal) => {}
                }
            }));
        }
        let shutdown = stop_rx;
        for stream in projection.streams() {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                ctx.run_stream(stream, shutdown).await
            }));
        }
        let flusher = ctx.clone();
        tasks.push(tokio::spawn(
            async move { flusher.run_flusher(shutdown).await },
        ));
        Ok(ProjectionHandle {
            shared,
            stop,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }
}

/// Resolves when `rx` says `true`; never if its sender is dropped first.
/// (The internal sender lives in the handle and the supervisor task.)
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

impl Ctx {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    async fn run_flusher(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown_requested(&mut shutdown) => {
                    self.flush().await;
                    return;
                }
            }
            if self.dirty.swap(false, Ordering::AcqRel) {
                self.flush().await;
            }
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.db.flush_async().await {
            self.dirty.store(true, Ordering::Release);
            warn!(
                projection = self.name(),
                "flushing sled failed (retried): {e}"
            );
        }
    }

    async fn run_stream(&self, stream: &'static str, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let result = tokio::select! {
                r = self.consume(stream, &mut backoff) => r,
                _ = shutdown_requested(&mut shutdown) => return,
            };
            let detail = match result {
                Ok(()) => "replay ended".to_string(),
                Err(Transient(d)) => d,
            };
            warn!(projection = self.name(), stream, retry_in = ?backoff, "projection consumer interrupted: {detail}; resuming from the checkpoint");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown_requested(&mut shutdown) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Replays `stream` from the checkpoint until an error, a batch at a time.
    async fn consume(&self, stream: &'static str, backoff: &mut Duration) -> Result<(), Transient> {
        let st = self
            .shared
            .streams
            .get(stream)
            .ok_or_else(|| Transient(format!("stream {stream} not registered")))?;
        let ckpt = checkpoint(&self.shared.tree, stream).map_err(|e| Transient(e.to_string()))?;
        let js = self.store.jetstream();
        let info = js
            .get_stream(stream)
            .await
            .map_err(|e| Transient(format!("stream {stream}: {e}")))?;
        let last = info.cached_info().state.last_sequence;
        if ckpt >= last {
            st.caught_up.send_replace(true);
        }
        let mut replay = consumer::replay(js, stream, None, StartAt::Sequence(ckpt + 1))
            .await
            .map_err(|e| Transient(e.to_string()))?;
        debug!(
            projection = self.name(),
            stream,
            from = ckpt + 1,
            "projection replay opened"
        );
        let mut handled = ckpt;
        while let Some(item) = replay.next().await {
            let mut batch = Batch::default();
            batch.push(item.map_err(|e| Transient(e.to_string()))?, handled);
            // Whatever ends the replay while the batch is collected (an error,
            // its end) takes effect after the batch is written.
            let mut ended = None;
            while !batch.is_complete() {
                // Only what is already buffered: never wait for a batch to fill.
                match replay.next().now_or_never() {
                    Some(Some(Ok(item))) => batch.push(item, handled),
                    Some(Some(Err(e))) => {
                        ended = Some(Err(Transient(e.to_string())));
                        break;
                    }
                    Some(None) => {
                        ended = Some(Ok(()));
                        break;
                    }
                    None => break,
                }
            }
            if let Some(seq) = batch.last_seq() {
                self.handle_batch(stream, st, last, batch).await?;
                handled = seq;
                *backoff = BACKOFF_MIN;
            }
            if let Some(end) = ended {
                return end;
            }
            // A replay with buffered messages never returns Pending: yield so the
            // shutdown signal (and other tasks) get their turn between batches.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Verifies a batch in order (each event against the chain states left by
    /// the previous ones, see [`Overlay`]), writes it in one transaction
    /// ([`Self::commit_batch`]), then publishes the position. If a projection's
    /// `apply` aborts, nothing of the batch is written and its events are written
    /// one transaction each instead ([`Self::commit_one`], today's per-event
    /// path): the refused event becomes a `Rejected` violation, the others apply.
    ///
    /// If verifying an event fails transiently, the events verified before it
    /// are written (and published) and the error is returned.
    async fn handle_batch(
        &self,
        stream: &str,
        st: &StreamState,
        last: u64,
        batch: Batch,
    ) -> Result<(), Transient> {
        let mut overlay = Overlay::default();
        let mut steps = Vec::with_capacity(batch.events.len());
        let mut pending = u64::MAX;
        let mut failed = None;
        let checked = verify_signatures(&batch.events).await?;
        for ((stored, p), sig) in batch.events.into_iter().zip(checked) {
            match self.verify(&stored, sig, &overlay).await {
                Ok(verdict) => {
                    let step = Step::new(stored, verdict);
                    overlay.record(&step);
                    steps.push(step);
                    pending = p;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(seq) = steps.last().map(Step::seq) {
            if !self.commit_batch(stream, &steps)? {
                for step in &steps {
                    self.commit_one(stream, step)?;
                    st.position.send_replace(step.seq());
                }
            }
            st.position.send_replace(seq);
            if pending == 0 || seq >= last {
                st.caught_up.send_replace(true);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Writes verified events (chain states, effects, violations) and the
    /// checkpoint (the last event's sequence) in one sled transaction. Returns
    /// `false`, having written nothing, if a projection's `apply` aborted.
    fn commit_batch(&self, stream: &str, steps: &[Step]) -> Result<bool, Transient> {
        let Some(last) = steps.last() else {
            return Ok(true);
        };
        let ckpt = ckpt_key(stream);
        let seq_bytes = codec::u64_bytes(last.seq());
        let r = self.shared.tree.transaction(|tx| {
            for step in steps {
                self.write_step(tx, step)?;
            }
            tx.insert(ckpt.as_slice(), &seq_bytes)?;
            Ok(())
        });
        match r {
            Ok(()) => {
                self.dirty.store(true, Ordering::Release);
                for step in steps {
                    if let Step::Record(v) = step {
                        self.warn_violation(v);
                    }
                }
                Ok(true)
            }
            Err(TransactionError::Abort(_)) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(Transient(format!(
                "sled transaction failed at {}: {e}",
                last.position()
            ))),
        }
    }

    /// Writes one verified event's chain state and effect, or its violation.
    fn write_step(
        &self,
        tx: &TransactionalTree,
        step: &Step,
    ) -> Result<(), ConflictableTransactionError<ApplyError>> {
        match step {
            Step::Apply {
                chain_key,
                chain,
                applied,
            } => {
                tx.insert(chain_key.as_slice(), chain.as_slice())?;
                self.projection.apply(tx, applied)
            }
            Step::Record(v) => record_violation(tx, v),
        }
    }

    /// Writes (applies or records) one verified event with its checkpoint, in
    /// one transaction.
    fn commit_one(&self, stream: &str, step: &Step) -> Result<(), Transient> {
        let tree = &self.shared.tree;
        let ckpt = ckpt_key(stream);
        let seq_bytes = codec::u64_bytes(step.seq());
        let write = |tx: &TransactionalTree, step: &Step| {
            self.write_step(tx, step)?;
            tx.insert(ckpt.as_slice(), &seq_bytes)?;
            Ok(())
        };
        let result = match tree.transaction(|tx| write(tx, step)) {
            Err(TransactionError::Abort(e)) => match step {
                Step::Apply {
                    chain_key,
                    chain,
                    applied,
                } => {
                    // The projection refused a valid event: the chain moves on
                    // (the event is valid), the projection's effect does not.
                    let v = violation(
                        &applied.stored,
                        Some(&applied.event),
                        ViolationKind::Rejected,
                        e.to_string(),
                    );
                    tree.transaction(|tx| {
                        tx.insert(chain_key.as_slice(), chain.as_slice())?;
                        record_violation(tx, &v)?;
                        tx.insert(ckpt.as_slice(), &seq_bytes)?;
                        Ok::<_, ConflictableTransactionError<ApplyError>>(())
                    })
                    .map(|_| Some(v))
                }
                Step::Record(_) => Err(TransactionError::Abort(e)),
            },
            other => other.map(|_| match step {
                Step::Apply { .. } => None,
                Step::Record(v) => Some(v.clone()),
            }),
        };
        self.dirty.store(true, Ordering::Release);
        match result {
            Ok(None) => Ok(()),
            Ok(Some(v)) => {
                self.warn_violation(&v);
                Ok(())
            }
            Err(e) => Err(Transient(format!(
                "sled transaction failed at {}: {e}",
                step.position()
            ))),
        }
    }

    fn warn_violation(&self, v: &IntegrityViolation) {
        warn!(
            projection = self.name(), stream = %v.stream, seq = v.seq, aggregate = %v.aggregate, kind = %v.kind,
            "integrity violation: event not applied: {}", v.detail
        );
    }

    /// The chain state of `agg`: the batch's own if it wrote one, else the tree's.
    fn chain_state(&self, overlay: &Overlay, agg: &str) -> Result<Option<ChainState>, Transient> {
        let bytes = match overlay.0.get(agg) {
            Some(bytes) => Some(sled::IVec::from(bytes.as_slice())),
            None => self
                .shared
                .tree
                .get(chain_key(agg))
                .map_err(|e| Transient(format!("reading the chain state of {agg}: {e}")))?,
        };
        bytes
            .map(|b| ChainState::decode(&b).map_err(|e| Transient(format!("{agg}: {e}"))))
            .transpose()
    }
    /// Checks one stored event (whose signature phase already ran, in
    /// parallel, as `sig`) with THE verification step against its aggregate's
    /// state; `overlay` holds the chain states written by the earlier events of
    /// the batch (not yet in the tree).
    async fn verify(
        &self,
        stored: &StoredEvent,
        sig: Result<VerifiedEvent, Failure>,
        overlay: &Overlay,
    ) -> Result<Verdict, Transient> {
        let invalid = |ev: Option<&VerifiedEvent>, f: Failure| {
            Ok(Verdict::Invalid(violation(
                stored,
                ev,
                f.kind.into(),
                f.detail,
            )))
        };
        let ev = match sig {
            Ok(ev) => ev,
            Err(f) => return invalid(None, f),
        };
        let agg = ev.aggregate.to_string();
        let prior = self.chain_state(overlay, &agg)?;
        let state = match prior {
            None => verify::ChainState::EMPTY,
            Some(c) => verify::ChainState {
                seq: c.seq,
                hash: c.hash,
                identity: c
                    .identity
                    .map(|i| i.to_state())
                    .transpose()
                    .map_err(|e| Transient(format!("{agg}: {e}")))?,
            },
        };
        let pending = match verify::step(
            &state,
            &ev,
            stored.published_ms,
            self.store.config().get_trust_root(),
        ) {
            Ok(p) => p,
            Err(f) => return invalid(Some(&ev), f),
        };
        if let Err(f) = self.check_foreign_signer(&pending.requirement).await? {
            return invalid(Some(&ev), f);
        }
        Ok(Verdict::Valid {
            event: Box::new(ev),
            identity: pending.next.identity,
        })
    }

    /// Checks a requirement on a signer whose state lives on another chain, at
    /// the position of that chain the event cites. A cached state answers when
    /// it already covers that position (later events of the signer's chain
    /// cannot change what was true there); otherwise the signer is re-read.
    async fn check_foreign_signer(
        &self,
        req: &SignerRequirement,
    ) -> Result<Result<(), Failure>, Transient> {
        let Some(actor) = req.identity() else {
            return Ok(verify::resolve(req, None, SignerCheck::AtPosition));
        };
        let cited = match req {
            SignerRequirement::Identity { at_seq, .. }
            | SignerRequirement::Endorser { at_seq, .. } => *at_seq,
            _ => u64::MAX,
        };
        {
            let cache = self.lock_signers();
            if let Some(c) = cache.get(actor) {
                if cited <= c.state.head_seq {
                    return Ok(verify::resolve(
                        req,
                        Some(&c.state),
                        SignerCheck::AtPosition,
                    ));
                }
            }
        }
        match self.store.identity_state(actor).await {
            Ok(state) => {
                let r = verify::resolve(req, Some(&state), SignerCheck::AtPosition);
                let mut cache = self.lock_signers();
                if cache.len() >= MAX_CACHED_SIGNERS {
                    cache.clear();
                }
                cache.insert(actor.to_string(), CachedSigner { state });
                Ok(r)
            }
            Err(ReadError::NotFound(_)) | Err(ReadError::Invalid(_)) => {
                Ok(verify::resolve(req, None, SignerCheck::AtPosition))
            }
            Err(ReadError::Unavailable(m)) => {
                Err(Transient(format!("resolving signer {actor}: {m}")))
            }
        }
    }

    fn lock_signers(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedSigner>> {
        // A poisoned cache is still a valid cache: entries are replaced whole.
        self.signers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Phase 1 of THE verification step (decode + Ed25519) for a whole batch, on
/// all cores: it does not depend on any chain state, so it runs ahead of the
/// sequential fold.
async fn verify_signatures(
    events: &[(StoredEvent, u64)],
) -> Result<Vec<Result<VerifiedEvent, Failure>>, Transient> {
    let stored: Vec<StoredEvent> = events.iter().map(|(s, _)| s.clone()).collect();
    tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        stored.par_iter().map(verify::verify_stored).collect()
    })
    .await
    .map_err(|e| Transient(format!("signature verification task failed: {e}")))
}

fn violation(
    stored: &StoredEvent,
    ev: Option<&VerifiedEvent>,
    kind: ViolationKind,
    detail: String,
) -> IntegrityViolation {
    let (aggregate, aggregate_seq, event_type) = match ev {
        Some(ev) => (
            ev.aggregate.to_string(),
            ev.aggregate_seq(),
            ev.event_type().to_string(),
        ),
        None => {
            let aggregate = Aggregate::from_subject(&stored.subject)
                .map(|a| a.to_string())
                .unwrap_or_else(|_| stored.subject.clone());
            let seq = amai_bus::store::aggregate_seq_of(stored).unwrap_or(0);
            (
                aggregate,
                seq,
                stored.event_type.clone().unwrap_or_default(),
            )
        }
    };
    IntegrityViolation {
        stream: stored.position.stream.clone(),
        seq: stored.position.seq,
        aggregate,
        aggregate_seq,
        event_type,
        kind,
        detail,
        published_ms: stored.published_ms,
    }
}

fn record_violation(
    tx: &TransactionalTree,
    v: &IntegrityViolation,
) -> Result<(), ConflictableTransactionError<ApplyError>> {
    let k = viol_key(&v.stream, v.seq);
    if tx.get(&k)?.is_some() {
        return Ok(());
    }
    // Invariant: a violation is plain data and always serializes.
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    tx.insert(k, bytes)?;
    let count = codec::read_u64(tx.get(META_VIOLATIONS)?.as_deref());
    tx.insert(META_VIOLATIONS, &codec::u64_bytes(count + 1))?;
    Ok(())
}
