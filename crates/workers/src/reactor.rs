//! The reactor runtime: a role's reaction to events, on a **shared durable pull
//! consumer** so every instance of the role takes a share of the work.
//!
//! Rules (design contract §5), and how they are kept:
//! - Outputs get ids derived from the input (UUIDv5 of the input id and the
//!   output index), carry `causation_id` = the input id, and have byte-identical
//!   content on every instance (the input's `occurred_at` and correlation), so a
//!   redelivery after a crash, or two instances racing, are deduplicated by
//!   JetStream within its dedup window.
//! - Beyond that window, a redelivered input would be decided again on a head
//!   that has moved on: before appending an output on a non-empty head, the
//!   reactor looks in the target aggregate for the output this input already
//!   caused (same id, same causation) and skips it.
//! - The input is acknowledged only after every output is stored.
//! - Poison is decided by the error's kind ([`ReactError::Poison`]), never by
//!   the delivery count. Transient failures are nak'ed and retried on the
//!   consumer's redelivery schedule ([`DEFAULT_REDELIVERY`]), forever:
//!   reactor consumers have no `max_deliver` cap (an existing capped durable is
//!   uncapped at start), because JetStream silently stops redelivering past it.
//! - A poison input is terminated only after its `reactor.failed` record on
//!   `failure/<role>` is stored; if storing it fails, the input is nak'ed and
//!   comes back. No input is ever dropped without that record.
//! - Decisions that depend on state are re-made on a fresh head after any
//!   conflict, so N instances never double-apply.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::{self, WorkConsumerConfig};
use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::AppendErrorKind;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventHash, EventStore, IdentityKeys, VerifiedEvent};
use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
use prost::Message as _;
use tracing::Instrument;

/// Namespace of deterministic output ids.
const OUTPUT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1b_7c8e_93d4_4f0a_b5e2_0c3d_9e8f_7a61);

/// The id of output `index` of the reaction to `input_id`.
pub fn output_id(input_id: &str, index: u32) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &OUTPUT_ID_NAMESPACE,
        format!("{input_id}/{index}").as_bytes(),
    )
}

/// An event a reactor decided to append, positioned after the head it looked at.
#[derive(Clone, Debug)]
pub struct PlannedOutput {
    /// Target aggregate (a domain aggregate the role's service key may write).
    pub aggregate: Aggregate,
    /// The payload.
    pub payload: Kind,
    /// Aggregate sequence of the head the decision was based on.
    pub head_seq: u64,
    /// Hash of that head.
    pub head_hash: EventHash,
    /// Positioned right after the previous output of the same reaction
    /// (`head_seq`/`head_hash` are ignored): a reaction appending several
    /// events to one aggregate (an import) chains them, since it cannot know
    /// the hashes of outputs not signed yet.
    pub after_previous: bool,
    /// The exact aggregate seq this output must take (`head_seq`/`head_hash`
    /// are ignored): for outputs whose positions were planned
    /// deterministically ahead (the trust role's). Appended once the slot
    /// before it is filled (a reaction that finds an earlier slot still empty
    /// is retried later); a slot already holding this output counts as
    /// applied; a slot holding anything else is poison.
    pub slot: Option<u64>,
}

impl PlannedOutput {
    /// An output positioned after the head the decision was based on.
    pub fn at(aggregate: Aggregate, payload: Kind, head_seq: u64, head_hash: EventHash) -> Self {
        Self {
            aggregate,
            payload,
            head_seq,
            head_hash,
            after_previous: false,
            slot: None,
        }
    }

    /// An output positioned right after the previous output of the reaction.
    pub fn after_previous(aggregate: Aggregate, payload: Kind) -> Self {
        Self {
            aggregate,
            payload,
            head_seq: 0,
            head_hash: amai_bus::ZERO_HASH,
            after_previous: true,
            slot: None,
        }
    }

    /// An output that must take aggregate seq `seq` (see [`PlannedOutput::slot`]).
    pub fn in_slot(aggregate: Aggregate, payload: Kind, seq: u64) -> Self {
        Self {
            aggregate,
            payload,
            head_seq: 0,
            head_hash: amai_bus::ZERO_HASH,
            after_previous: false,
            slot: Some(seq),
        }
    }
}

/// Why a reaction failed.
#[derive(Debug, thiserror::Error)]
pub enum ReactError {
    /// Try again later (NATS unavailable, ...).
    #[error("transient: {0}")]
    Transient(String),
    /// The input can never be processed.
    #[error("poison: {0}")]
    Poison(String),
}

/// Boxed future returned by reactors.
pub type ReactFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PlannedOutput>, ReactError>> + Send + 'a>>;

/// A role's reaction to input events.
pub trait Reactor: Send + Sync + 'static {
    /// The role name (`identity`, `trust`, ...), used for the durable consumer and
    /// failure aggregate.
    fn role(&self) -> &'static str;
    /// The stream (and optional subject filter) the reactor consumes.
    fn subscription(&self) -> WorkConsumerConfig;
    /// Decides the outputs for `input`, reading whatever state it needs fresh
    /// (chain heads come from JetStream through `store`).
    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a>;
    /// [`Reactor::react`], told where the input is stored (its sequence in the
    /// subscribed stream): for reactors whose decisions were prepared by a
    /// projection of the same stream (the trust role). Default: `react`.
    fn react_at<'a>(
        &'a self,
        store: &'a EventStore,
        input: &'a VerifiedEvent,
        stream_seq: u64,
    ) -> ReactFuture<'a> {
        let _ = stream_seq;
        self.react(store, input)
    }
    /// Adjusts the runtime's options for this reactor (concurrency, redelivery,
    /// heartbeat). Default: unchanged.
    fn options(&self, base: ReactorOptions) -> ReactorOptions {
        base
    }
}

/// The identity that signs a role's outputs.
#[derive(Clone)]
pub struct ServiceSigner {
    /// The service key (shared by all instances of the role).
    pub keys: IdentityKeys,
    /// Its identity id.
    pub id: String,
}

/// The service's own chain head: the position its outputs cite as `signer_seq`
/// (its key's validity is judged there, causally). Identical for every
/// instance, so outputs stay byte-identical.
pub(crate) async fn signer_seq(store: &EventStore, signer: &ServiceSigner) -> Result<u64, String> {
    let state = store
        .identity_state(&signer.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(stable_signer_seq(&state))
}

/// The position of the signer's chain an output cites (`signer_seq`): the
/// first event its current key signed, so outputs do not change with the
/// service's later unrelated actions (a trust report's LLM session): a
/// replay of the same inputs signs the same bytes. Before the current key
/// signed anything (right after a rotation), the head.
fn stable_signer_seq(state: &amai_bus::identity::IdentityState) -> u64 {
    state
        .keys
        .last()
        .map(|k| k.from_seq)
        .filter(|&from| from >= 1 && from <= state.head_seq)
        .unwrap_or(state.head_seq)
}

/// Counters of a running reactor.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Inputs acknowledged.
    pub acked: std::sync::atomic::AtomicU64,
    /// Outputs appended (new, not duplicates).
    pub appended: std::sync::atomic::AtomicU64,
    /// Outputs found already applied (by causation id) and not appended again.
    pub already_applied: std::sync::atomic::AtomicU64,
    /// Inputs terminated as poison (each after its `reactor.failed` was stored).
    pub poisoned: std::sync::atomic::AtomicU64,
    /// Deliveries nak'ed for a later retry (transient failures, or a poison
    /// input whose failure record could not be stored yet).
    pub retried: std::sync::atomic::AtomicU64,
}

/// Why the reactor loop stopped.
#[derive(Debug, thiserror::Error)]
#[error("reactor {role}: {detail}")]
pub struct ReactorError {
    /// The role.
    pub role: String,
    /// What failed.
    pub detail: String,
}

/// A write the reactor is about to make, for [`FaultHook`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Appending output `index` of the reaction to an input.
    AppendOutput {
        /// The output index.
        index: u32,
    },
    /// Appending the `reactor.failed` record of a poison input.
    RecordFailure,
    /// Acknowledging a processed input: an error loses the ack, as a crash
    /// between storing the outputs and acking would (JetStream redelivers the
    /// input after the consumer's ack wait).
    Ack,
}

/// Fault injection (tests and failure drills): called with the write about to be
/// made and the input event's id; an `Err(reason)` makes that write fail as if
/// the store were unavailable. Production code passes none.
pub type FaultHook = Arc<dyn Fn(FaultPoint, &str) -> Result<(), String> + Send + Sync>;

/// Exponential delay asked for with each nak: `base * 2^(delivery-1)`, at
/// most `max`. When the consumer has a redelivery schedule
/// ([`ReactorOptions::redelivery`]), JetStream spaces redeliveries by that
/// schedule instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed delivery.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before redelivering an input delivered `delivered` times.
    pub fn delay(&self, delivered: i64) -> Duration {
        let exp = delivered.saturating_sub(1).clamp(0, 16) as u32;
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// How a reactor runs (builder style).
#[derive(Clone)]
pub struct ReactorOptions {
    backoff: Backoff,
    redelivery: Vec<Duration>,
    writes: Option<&'static [AggregateKind]>,
    faults: Option<FaultHook>,
    concurrency: usize,
    heartbeat: Option<Duration>,
}

impl Default for ReactorOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            redelivery: DEFAULT_REDELIVERY.to_vec(),
            writes: None,
            faults: None,
            concurrency: 1,
            heartbeat: None,
        }
    }
}

/// When JetStream redelivers an input nobody acknowledged (an instance crashed
/// or hung): after the first delay, then the next, ...; the last one repeats.
pub const DEFAULT_REDELIVERY: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
];

impl std::fmt::Debug for ReactorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorOptions")
            .field("backoff", &self.backoff)
            .field("redelivery", &self.redelivery)
            .field("writes", &self.writes)
            .field("faults", &self.faults.is_some())
            .field("concurrency", &self.concurrency)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

impl ReactorOptions {
    /// Delays of transient retries (default 200 ms doubling up to 10 s).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// When unacknowledged inputs are redelivered (the consumer's backoff; the
    /// first delay is its ack wait). Empty: the subscription's ack wait.
    pub fn redelivery(mut self, delays: Vec<Duration>) -> Self {
        self.redelivery = delays;
        self
    }

    /// The aggregate kinds outputs may target (the role's declaration); an
    /// output elsewhere is refused and the input recorded as poison. Unset: any.
    /// `reactor.failed` records on `failure/<role>` are always allowed.
    pub fn writes(mut self, kinds: &'static [AggregateKind]) -> Self {
        self.writes = Some(kinds);
        self
    }

    /// How many inputs are decided at once (default 1: strictly in order). The
    /// consumer then hands out at most that many unacknowledged inputs: the
    /// rest wait in the stream, in order.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// While an input is being decided, tell JetStream it is still in progress
    /// this often (a long reaction, e.g. a jail run, is then not redelivered
    /// after the ack wait; a crashed instance's input still is).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = Some(every);
        self
    }

    /// Installs a fault-injection hook (tests and failure drills only).
    pub fn fault_hook(mut self, hook: FaultHook) -> Self {
        self.faults = Some(hook);
        self
    }

    fn inject(&self, point: FaultPoint, input_id: &str) -> Result<(), String> {
        match &self.faults {
            Some(hook) => hook(point, input_id),
            None => Ok(()),
        }
    }
}

const MAX_DECISION_ATTEMPTS: u32 = 8;

/// Runs `reactor` with default [`ReactorOptions`] until `shutdown` resolves.
pub async fn run_reactor<R: Reactor + ?Sized>(
    reactor: Arc<R>,
    store: EventStore,
    signer: ServiceSigner,
    stats: Arc<ReactorStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ReactorError> {
    run_reactor_with(
        reactor,
        store,
        signer,
        stats,
        ReactorOptions::default(),
        shutdown,
    )
    .await
}

/// Runs `reactor` until `shutdown` resolves. In-flight work finishes before return.
///
/// What happens to each delivery:
/// - processed (outputs stored, or found already applied): ack;
/// - transient failure: nak with [`Backoff`] delay, whatever the delivery count
///   (the consumer has no delivery cap, so retrying never drops the input);
/// - poison (decided by the error's kind, never by the delivery count): the
///   `reactor.failed` record is stored first, then the input is terminated; if
///   the record cannot be stored the input is nak'ed and comes back.
pub async fn run_reactor_with<R: Reactor + ?Sized>(
    reactor: Arc<R>,
    store: EventStore,
    signer: ServiceSigner,
    stats: Arc<ReactorStats>,
    options: ReactorOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ReactorError> {
    let role = reactor.role();
    let err = |d: String| ReactorError {
        role: role.to_string(),
        detail: d,
    };
    // No delivery cap: JetStream would silently stop redelivering past it.
    let cfg = reactor.subscription().max_deliver(-1);
    let cfg = if options.concurrency > 1 {
        cfg.max_ack_pending(options.concurrency as i64)
    } else {
        cfg
    };
    let consumer = consumer::work_consumer(store.jetstream(), &cfg)
        .await
        .map_err(|e| err(e.to_string()))?;
    let consumer = configure_consumer(store.jetstream(), &cfg, consumer, &options)
        .await
        .map_err(err)?;
    let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
    // One permit per reaction in flight: taken before the next delivery is
    // pulled, so with one permit inputs are decided strictly in order.
    let permits = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut in_flight = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished reactions (their panics are logged, not propagated).
        while let Some(done) = in_flight.try_join_next() {
            if let Err(e) = done {
                tracing::error!(role, error = %e, "a reaction task panicked; its input will be redelivered");
            }
        }
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.map_err(|e| err(e.to_string()))?,
        };
        let msg = tokio::select! {
            _ = &mut shutdown => break,
            m = messages.next() => m,
        };
        let Some(msg) = msg else {
            return Err(err("the consumer's message stream ended".into()));
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(role, error = %e, "consumer error; continuing");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (reactor, store, signer, options, stats) = (
            reactor.clone(),
            store.clone(),
            signer.clone(),
            options.clone(),
            stats.clone(),
        );
        in_flight.spawn(async move {
            handle_delivery(reactor.as_ref(), &store, &signer, &options, &stats, msg).await;
            drop(permit);
        });
    }
    // In-flight reactions finish (their inputs are acknowledged) before return.
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

/// Decides, appends and acknowledges one delivery; sends progress
/// acknowledgements every [`ReactorOptions::heartbeat`] while deciding.
async fn handle_delivery<R: Reactor + ?Sized>(
    reactor: &R,
    store: &EventStore,
    signer: &ServiceSigner,
    options: &ReactorOptions,
    stats: &ReactorStats,
    msg: async_nats::jetstream::Message,
) {
    let role = reactor.role();
    let (stream_seq, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered),
        Err(e) => {
            tracing::warn!(role, error = %e, "message without jetstream info");
            return;
        }
    };
    let span = tracing::info_span!("react", role, stream_seq, delivered);
    amai_bus::trace::set_parent_from(&span, msg.headers.as_ref());
    let subject = msg.subject.to_string();
    let input = Input {
        payload: &msg.payload,
        subject: &subject,
        stream_seq,
    };
    let processing =
        process(reactor, store, signer, options, &input, stats).instrument(span.clone());
    let result = match options.heartbeat {
        None => processing.await,
        Some(every) => {
            tokio::pin!(processing);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    r = &mut processing => break r,
                    _ = ticks.tick() => {
                        if let Err(e) = msg.ack_with(AckKind::Progress).await {
                            tracing::warn!(parent: &span, error = %e, "progress ack failed");
                        }
                    }
                }
            }
        }
    };
    let ack = match result {
        Ok(()) => AckKind::Ack,
        Err(ReactError::Transient(reason)) => {
            tracing::warn!(parent: &span, %reason, "transient failure; will retry");
            stats.retried.fetch_add(1, Ordering::Relaxed);
            AckKind::Nak(Some(options.backoff.delay(delivered)))
        }
        Err(ReactError::Poison(reason)) => {
            tracing::error!(parent: &span, %reason, "poison input; recording reactor.failed");
            match record_failure(
                role,
                store,
                signer,
                options,
                &input,
                delivered.max(0) as u64,
                &reason,
            )
            .await
            {
                Ok(()) => {
                    stats.poisoned.fetch_add(1, Ordering::Relaxed);
                    AckKind::Term
                }
                Err(e) => {
                    // Never terminate an input whose failure is not on record.
                    tracing::warn!(parent: &span, error = %e, "could not record the failure; the input will be redelivered");
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    AckKind::Nak(Some(options.backoff.delay(delivered)))
                }
            }
        }
    };
    if matches!(ack, AckKind::Ack) {
        if let Err(reason) = options.inject(FaultPoint::Ack, &input_id_of(&input)) {
            tracing::warn!(parent: &span, %reason, "ack lost (injected); the input will be redelivered");
            return;
        }
    }
    let acked = matches!(ack, AckKind::Ack | AckKind::Term);
    if let Err(e) = msg.double_ack_with(ack).await {
        // Not acknowledged: the input will be redelivered, and its outputs deduplicated.
        tracing::warn!(role, stream_seq, error = %e, "ack failed; the input will be redelivered");
    } else if acked {
        stats.acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Makes the reactor's durable uncapped (`max_deliver` -1: JetStream silently
/// stops redelivering past a cap) with the redelivery schedule of `options`
/// (after a crash, unacked inputs come back after these delays), updating a
/// durable created otherwise (e.g. capped, before this release).
async fn configure_consumer(
    js: &async_nats::jetstream::Context,
    cfg: &WorkConsumerConfig,
    consumer: PullConsumer,
    options: &ReactorOptions,
) -> Result<PullConsumer, String> {
    let current = consumer.cached_info().config.clone();
    let backoff = options.redelivery.clone();
    let max_ack_pending = cfg.get_max_ack_pending();
    if current.max_deliver == -1
        && current.backoff == backoff
        && current.max_ack_pending == max_ack_pending
    {
        return Ok(consumer);
    }
    tracing::info!(
        stream = cfg.stream(),
        consumer = current.durable_name.as_deref().unwrap_or_default(),
        max_deliver = current.max_deliver,
        "setting the reactor consumer's redelivery: no delivery cap, backoff schedule"
    );
    let stream = js
        .get_stream_no_info(cfg.stream())
        .await
        .map_err(|e| e.to_string())?;
    let config = pull::Config {
        durable_name: current.durable_name.clone(),
        name: current.name.clone(),
        description: current.description.clone(),
        filter_subject: current.filter_subject.clone(),
        filter_subjects: current.filter_subjects.clone(),
        ack_policy: current.ack_policy,
        ack_wait: backoff.first().copied().unwrap_or(current.ack_wait),
        max_ack_pending,
        deliver_policy: current.deliver_policy,
        max_deliver: -1,
        backoff,
        ..Default::default()
    };
    stream
        .update_consumer(config)
        .await
        .map_err(|e| format!("cannot configure the reactor consumer's redelivery: {e}"))
}

/// The delivery being processed.
struct Input<'a> {
    payload: &'a [u8],
    subject: &'a str,
    stream_seq: u64,
}

async fn process<R: Reactor + ?Sized>(
    reactor: &R,
    store: &EventStore,
    signer: &ServiceSigner,
    options: &ReactorOptions,
    delivery: &Input<'_>,
    stats: &ReactorStats,
) -> Result<(), ReactError> {
    let input = VerifiedEvent::decode(delivery.payload).map_err(|e| {
        ReactError::Poison(format!(
            "input {}#{} is not a valid event: {e}",
            delivery.subject, delivery.stream_seq
        ))
    })?;
    for attempt in 0..MAX_DECISION_ATTEMPTS {
        let outputs = reactor.react_at(store, &input, delivery.stream_seq).await?;
        match append_outputs(
            reactor.role(),
            store,
            signer,
            options,
            &input,
            outputs,
            stats,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(OutputError::Redecide(reason)) => {
                tracing::debug!(attempt, %reason, "state moved under the decision; deciding again");
                tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1))).await;
            }
            Err(OutputError::Fail(e)) => return Err(e),
        }
    }
    Err(ReactError::Transient(format!(
        "state kept moving under {MAX_DECISION_ATTEMPTS} decisions"
    )))
}

enum OutputError {
    /// The state moved: decide again on fresh heads.
    Redecide(String),
    /// Give up on this delivery.
    Fail(ReactError),
}

async fn append_outputs(
    role: &str,
    store: &EventStore,
    signer: &ServiceSigner,
    options: &ReactorOptions,
    input: &VerifiedEvent,
    outputs: Vec<PlannedOutput>,
    stats: &ReactorStats,
) -> Result<(), OutputError> {
    let signer_seq = signer_seq(store, signer)
        .await
        .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
    let mut previous: Option<(Aggregate, u64, EventHash)> = None;
    for (index, out) in outputs.into_iter().enumerate() {
        let index = index as u32;
        let (head_seq, head_hash) = if out.after_previous {
            match &previous {
                Some((agg, seq, hash)) if *agg == out.aggregate => (*seq, *hash),
                _ => {
                    return Err(OutputError::Fail(ReactError::Poison(format!(
                        "output {index} follows a previous output on {} that does not exist",
                        out.aggregate
                    ))))
                }
            }
        } else {
            (out.head_seq, out.head_hash)
        };
        if let Some(kinds) = options.writes {
            if !kinds.contains(&out.aggregate.kind) {
                return Err(OutputError::Fail(ReactError::Poison(format!(
                    "role {role} may not write {} aggregates (it declares {})",
                    out.aggregate.kind.as_str(),
                    kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))));
            }
        }
        let id = output_id(&input.body.id, index);
        let (head_seq, head_hash) = match out.slot {
            None => (head_seq, head_hash),
            Some(slot) => {
                let head = store
                    .chain_head(&out.aggregate)
                    .await
                    .map_err(|e| OutputError::Fail(ReactError::Transient(e.to_string())))?;
                if head.aggregate_seq + 1 < slot {
                    return Err(OutputError::Fail(ReactError::Transient(format!(
                        "{} is at seq {}: output {index} waits for slot {} to be filled",
                        out.aggregate,
                        head.aggregate_seq,
                        slot - 1
                    ))));
                }
                if head.aggregate_seq >= slot {
                    let held = slot_holds(store, &out.aggregate, slot, &id)
                        .await
                        .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
                    match held {
                        Some(hash) => {
                            stats.already_applied.fetch_add(1, Ordering::Relaxed);
                            previous = Some((out.aggregate, slot, hash));
                            continue;
                        }
                        None => {
                            return Err(OutputError::Fail(ReactError::Poison(format!(
                            "slot {slot} of {} holds another event than the planned output {id}",
                            out.aggregate
                        ))))
                        }
                    }
                }
                (head.aggregate_seq, head.hash)
            }
        };
        // Beyond JetStream's dedup window a redelivered input would be decided
        // again on a head that has moved on: look for the output it caused.
        // An empty head cannot hold it.
        if !out.after_previous && out.slot.is_none() && head_seq > 0 {
            let found = already_caused(store, &out.aggregate, &input.body.id, &id)
                .await
                .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
            if found {
                tracing::debug!(aggregate = %out.aggregate, %id, "output already applied; not appending it again");
                stats.already_applied.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        options
            .inject(FaultPoint::AppendOutput { index }, &input.body.id)
            .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
        let aggregate = out.aggregate.clone();
        let signed = EventDraft::new(out.aggregate, out.payload)
            .after(head_seq, head_hash)
            .signer_seq(signer_seq)
            .id(id)
            .causation(input.body.id.clone())
            .correlation(input.body.correlation_id.clone())
            .occurred_at(input.body.occurred_at.unwrap_or_default())
            .sign(&signer.keys, &signer.id);
        match store.append(signed).await {
            Ok(o) => {
                if !o.duplicate {
                    stats.appended.fetch_add(1, Ordering::Relaxed);
                }
                previous = Some((aggregate, o.aggregate_seq, o.hash));
            }
            Err(e) => match e.kind() {
                AppendErrorKind::Conflict
                | AppendErrorKind::Duplicate
                | AppendErrorKind::Gap
                | AppendErrorKind::ChainBroken => {
                    // The slot may already hold exactly this output (another
                    // instance, or a delivery before a crash, appended it).
                    let held = slot_holds(store, &aggregate, head_seq + 1, &id)
                        .await
                        .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
                    match held {
                        Some(hash) => {
                            stats.already_applied.fetch_add(1, Ordering::Relaxed);
                            previous = Some((aggregate, head_seq + 1, hash));
                        }
                        None => return Err(OutputError::Redecide(e.to_string())),
                    }
                }
                AppendErrorKind::Unavailable | AppendErrorKind::Other => {
                    return Err(OutputError::Fail(ReactError::Transient(e.to_string())))
                }
                _ => {
                    return Err(OutputError::Fail(ReactError::Poison(format!(
                        "output rejected by the store: {e}"
                    ))))
                }
            },
        }
    }
    Ok(())
}

/// Appends `payload` to `aggregate` **during** a reaction, for reactors whose
/// effects take long (a jail run): the event is stored before the reaction
/// goes on, with the id `id` (derive it from the input, e.g. with
/// [`output_id`]) and caused by `input`. Conflicts are retried on the fresh
/// head; an event with that id and causation already on the aggregate (a
/// redelivery) is not appended again. Returns the aggregate seq it holds.
pub async fn append_caused(
    store: &EventStore,
    signer: &ServiceSigner,
    input: &VerifiedEvent,
    id: uuid::Uuid,
    aggregate: &Aggregate,
    payload: Kind,
) -> Result<u64, ReactError> {
    let transient = ReactError::Transient;
    for attempt in 0..MAX_DECISION_ATTEMPTS {
        if already_caused(store, aggregate, &input.body.id, &id)
            .await
            .map_err(transient)?
        {
            return store
                .chain_head(aggregate)
                .await
                .map(|h| h.aggregate_seq)
                .map_err(|e| transient(e.to_string()));
        }
        let head = store
            .chain_head(aggregate)
            .await
            .map_err(|e| transient(e.to_string()))?;
        let signed = EventDraft::new(aggregate.clone(), payload.clone())
            .after(head.aggregate_seq, head.hash)
            .signer_seq(signer_seq(store, signer).await.map_err(transient)?)
            .id(id)
            .causation(input.body.id.clone())
            .correlation(input.body.correlation_id.clone())
            .sign(&signer.keys, &signer.id);
        match store.append(signed).await {
            Ok(o) => return Ok(o.aggregate_seq),
            Err(e) => match e.kind() {
                AppendErrorKind::Conflict
                | AppendErrorKind::Duplicate
                | AppendErrorKind::Gap
                | AppendErrorKind::ChainBroken => {
                    tracing::debug!(attempt, %aggregate, error = %e, "append during a reaction raced; retrying on the fresh head");
                    tokio::time::sleep(Duration::from_millis(5 * (attempt as u64 + 1))).await;
                }
                AppendErrorKind::Unavailable | AppendErrorKind::Other => {
                    return Err(transient(e.to_string()))
                }
                _ => return Err(ReactError::Poison(format!("rejected by the store: {e}"))),
            },
        }
    }
    Err(transient(format!("{aggregate} kept moving")))
}

/// The hash of the event at `seq` of `aggregate` when it is the event `id`.
async fn slot_holds(
    store: &EventStore,
    aggregate: &Aggregate,
    seq: u64,
    id: &uuid::Uuid,
) -> Result<Option<EventHash>, String> {
    let page = store
        .read_chain(aggregate, seq, 1)
        .await
        .map_err(|e| e.to_string())?;
    let id = id.to_string();
    Ok(page.first().and_then(|stored| {
        let body = proto::SignedEvent::decode(stored.payload.as_ref())
            .ok()
            .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())?;
        (body.aggregate_seq == seq && body.id == id).then_some(stored.hash)
    }))
}

/// Whether `aggregate` already holds the event `id` caused by `input_id`.
///
/// Reads the aggregate's events (a linear scan of its subject, without
/// verifying signatures: only ids are compared, and the store verified every
/// event it appended). Runs only when the planned head is not empty.
async fn already_caused(
    store: &EventStore,
    aggregate: &Aggregate,
    input_id: &str,
    id: &uuid::Uuid,
) -> Result<bool, String> {
    let head = store
        .chain_head(aggregate)
        .await
        .map_err(|e| e.to_string())?;
    if head.aggregate_seq == 0 {
        return Ok(false);
    }
    let id = id.to_string();
    let events = store
        .read_subject(aggregate, 1, head.stream_seq)
        .await
        .map_err(|e| e.to_string())?;
    Ok(events.iter().any(|stored| {
        proto::SignedEvent::decode(stored.payload.as_ref())
            .ok()
            .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())
            .is_some_and(|b| b.id == id && b.causation_id == input_id)
    }))
}

/// The input's event id, or `<subject>#<stream seq>` for an undecodable input.
fn input_id_of(delivery: &Input<'_>) -> String {
    proto::SignedEvent::decode(delivery.payload)
        .ok()
        .and_then(|s| proto::EventBody::decode(s.body.as_slice()).ok())
        .map(|b| b.id)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("{}#{}", delivery.subject, delivery.stream_seq))
}

/// Stores the `reactor.failed` record of a poison input on `failure/<role>`.
/// Idempotent: the record's id is derived from the input, it is caused by the
/// input, and a record already present (also beyond the dedup window) is found.
async fn record_failure(
    role: &str,
    store: &EventStore,
    signer: &ServiceSigner,
    options: &ReactorOptions,
    delivery: &Input<'_>,
    deliveries: u64,
    reason: &str,
) -> Result<(), String> {
    let aggregate = Aggregate::new(AggregateKind::Failure, role).map_err(|e| e.to_string())?;
    let input_id = input_id_of(delivery);
    let id = output_id(&input_id, u32::MAX);
    if already_caused(store, &aggregate, &input_id, &id).await? {
        return Ok(());
    }
    options.inject(FaultPoint::RecordFailure, &input_id)?;
    for _ in 0..MAX_DECISION_ATTEMPTS {
        let head = store
            .chain_head(&aggregate)
            .await
            .map_err(|e| e.to_string())?;
        let signed = EventDraft::new(
            aggregate.clone(),
            Kind::ReactorFailed(proto::ReactorFailed {
                role: role.to_string(),
                input_event_id: input_id.clone(),
                input_subject: delivery.subject.to_string(),
                input_stream_seq: delivery.stream_seq,
                reason: reason.to_string(),
                deliveries,
            }),
        )
        .after(head.aggregate_seq, head.hash)
        .signer_seq(signer_seq(store, signer).await?)
        .id(id)
        .causation(input_id.clone())
        .sign(&signer.keys, &signer.id);
        match store.append(signed).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == AppendErrorKind::Conflict => continue,
            // The same failure was already recorded by another delivery.
            Err(e) if e.kind() == AppendErrorKind::Duplicate => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("failure aggregate kept moving".into())
}
