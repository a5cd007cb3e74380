//! The reactor runtime: a role's reaction to events, on a **shared durable pull
//! consumer** so every instance of the role takes a share of the work.
//!
//! Rules (design contract §5): outputs get ids derived from the input (UUIDv5 of
//! the input id and the output index) and byte-identical content on every
//! instance (they carry the input's `occurred_at` and correlation), so a
//! redelivery after a crash, or two instances racing, are deduplicated by
//! JetStream; the input is acknowledged only after every output is stored;
//! transient failures are nak'ed with backoff; poison inputs are terminated after
//! a `reactor.failed` event on `failure/<role>` says why. Decisions that depend on
//! state are re-made on a fresh head after any conflict, so N instances never
//! double-apply.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::consumer::{self, WorkConsumerConfig};
use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::AppendErrorKind;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventHash, EventStore, IdentityKeys, VerifiedEvent};
use async_nats::jetstream::AckKind;
use futures::StreamExt;
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
async fn signer_seq(store: &EventStore, signer: &ServiceSigner) -> Result<u64, String> {
    let agg = amai_bus::Aggregate::agent(&signer.id).map_err(|e| e.to_string())?;
    let head = store.chain_head(&agg).await.map_err(|e| e.to_string())?;
    Ok(head.aggregate_seq)
}

/// Counters of a running reactor.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Inputs acknowledged.
    pub acked: std::sync::atomic::AtomicU64,
    /// Outputs appended (new, not duplicates).
    pub appended: std::sync::atomic::AtomicU64,
    /// Inputs terminated as poison.
    pub poisoned: std::sync::atomic::AtomicU64,
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

const MAX_DECISION_ATTEMPTS: u32 = 8;

/// Runs `reactor` until `shutdown` resolves. In-flight work finishes before return.
pub async fn run_reactor<R: Reactor>(
    reactor: Arc<R>,
    store: EventStore,
    signer: ServiceSigner,
    stats: Arc<ReactorStats>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ReactorError> {
    let role = reactor.role();
    let err = |d: String| ReactorError {
        role: role.to_string(),
        detail: d,
    };
    let cfg = reactor.subscription();
    let max_deliver = cfg.get_max_deliver();
    let consumer = consumer::work_consumer(store.jetstream(), &cfg)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
    tokio::pin!(shutdown);
    loop {
        let msg = tokio::select! {
            _ = &mut shutdown => return Ok(()),
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
        let (stream_seq, delivered) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.delivered),
            Err(e) => {
                tracing::warn!(role, error = %e, "message without jetstream info");
                continue;
            }
        };
        let span = tracing::info_span!("react", role, stream_seq, delivered);
        amai_bus::trace::set_parent_from(&span, msg.headers.as_ref());
        let subject = msg.subject.to_string();
        let result = process(
            reactor.as_ref(),
            &store,
            &signer,
            &msg.payload,
            &subject,
            stream_seq,
            &stats,
        )
        .instrument(span)
        .await;
        let ack = match result {
            Ok(()) => AckKind::Ack,
            Err(ReactError::Transient(reason)) if delivered < max_deliver => {
                tracing::warn!(role, stream_seq, delivered, %reason, "transient failure; will retry");
                AckKind::Nak(Some(backoff(delivered)))
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(role, stream_seq, delivered, %reason, "poison input; recording reactor.failed");
                match record_failure(
                    reactor.as_ref(),
                    &store,
                    &signer,
                    &msg.payload,
                    &subject,
                    stream_seq,
                    delivered as u64,
                    &reason,
                )
                .await
                {
                    Ok(()) => {
                        stats
                            .poisoned
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        AckKind::Term
                    }
                    Err(e) => {
                        tracing::warn!(role, error = %e, "could not record the failure; will retry");
                        AckKind::Nak(Some(backoff(delivered)))
                    }
                }
            }
        };
        let acked = matches!(ack, AckKind::Ack | AckKind::Term);
        if let Err(e) = msg.double_ack_with(ack).await {
            // Not acknowledged: the input will be redelivered, and its outputs deduplicated.
            tracing::warn!(role, stream_seq, error = %e, "ack failed; the input will be redelivered");
        } else if acked {
            stats
                .acked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn backoff(delivered: i64) -> Duration {
    Duration::from_millis((100u64 << delivered.clamp(0, 7) as u32).min(10_000))
}

async fn process<R: Reactor + ?Sized>(
    reactor: &R,
    store: &EventStore,
    signer: &ServiceSigner,
    payload: &[u8],
    subject: &str,
    stream_seq: u64,
    stats: &ReactorStats,
) -> Result<(), ReactError> {
    let input = VerifiedEvent::decode(payload).map_err(|e| {
        ReactError::Poison(format!(
            "input {subject}#{stream_seq} is not a valid event: {e}"
        ))
    })?;
    for attempt in 0..MAX_DECISION_ATTEMPTS {
        let outputs = reactor.react(store, &input).await?;
        match append_outputs(store, signer, &input, outputs, stats).await {
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
    store: &EventStore,
    signer: &ServiceSigner,
    input: &VerifiedEvent,
    outputs: Vec<PlannedOutput>,
    stats: &ReactorStats,
) -> Result<(), OutputError> {
    let signer_seq = signer_seq(store, signer)
        .await
        .map_err(|e| OutputError::Fail(ReactError::Transient(e)))?;
    for (index, out) in outputs.into_iter().enumerate() {
        let signed = EventDraft::new(out.aggregate, out.payload)
            .after(out.head_seq, out.head_hash)
            .signer_seq(signer_seq)
            .id(output_id(&input.body.id, index as u32))
            .causation(input.body.id.clone())
            .correlation(input.body.correlation_id.clone())
            .occurred_at(input.body.occurred_at.unwrap_or_default())
            .sign(&signer.keys, &signer.id);
        match store.append(signed).await {
            Ok(o) => {
                if !o.duplicate {
                    stats
                        .appended
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => match e.kind() {
                AppendErrorKind::Conflict
                | AppendErrorKind::Duplicate
                | AppendErrorKind::Gap
                | AppendErrorKind::ChainBroken => return Err(OutputError::Redecide(e.to_string())),
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

#[allow(clippy::too_many_arguments)]
async fn record_failure<R: Reactor + ?Sized>(
    reactor: &R,
    store: &EventStore,
    signer: &ServiceSigner,
    payload: &[u8],
    subject: &str,
    stream_seq: u64,
    deliveries: u64,
    reason: &str,
) -> Result<(), String> {
    let role = reactor.role();
    let aggregate = Aggregate::new(AggregateKind::Failure, role).map_err(|e| e.to_string())?;
    let input_id = VerifiedEvent::decode(payload)
        .map(|e| e.body.id)
        .unwrap_or_else(|_| format!("{subject}#{stream_seq}"));
    let id = output_id(&input_id, u32::MAX);
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
                input_subject: subject.to_string(),
                input_stream_seq: stream_seq,
                reason: reason.to_string(),
                deliveries,
            }),
        )
        .after(head.aggregate_seq, head.hash)
        .signer_seq(signer_seq(store, signer).await?)
        .id(id)
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
