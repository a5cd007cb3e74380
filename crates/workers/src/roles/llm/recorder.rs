//! Appending to a session stream (`llm/<session_id>`) with the occurrence index
//! assigned under the chain's optimistic concurrency.
//!
//! The occurrence of a recording is the number of recordings with the same
//! request hash before it **in the session chain**. Each proxy instance keeps,
//! per session, the chain head it knows and the count per request hash; an
//! append goes at `head + 1` with `Nats-Expected-Last-Subject-Sequence`, and a
//! conflict (another instance appended first) reads the events it missed,
//! recounts and re-signs. So any number of instances agree on every
//! occurrence, and none is lost or merged. Within one instance, appends to a
//! session are serialised (one lock per session) so they do not race each
//! other.

use std::collections::HashMap;
use std::sync::Arc;

use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::{AppendErrorKind, AppendOutcome};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventHash, EventStore, VerifiedEvent};
use tokio::sync::Mutex;

use crate::reactor::ServiceSigner;

/// How many times an append is retried after conflicts before giving up.
const MAX_ATTEMPTS: usize = 64;
/// Sessions whose chain state an instance keeps.
const CACHED_SESSIONS: usize = 10_000;

/// Why a record could not be appended.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The store refused the event (a bug, or the service key is not allowed).
    #[error("the store refused the llm record: {0}")]
    Refused(String),
    /// NATS is unavailable or the chain kept moving; the record is not stored.
    #[error("the llm record could not be stored: {0}")]
    Unavailable(String),
}

#[derive(Default)]
struct SessionChain {
    loaded: bool,
    head_seq: u64,
    head_hash: EventHash,
    counts: HashMap<Vec<u8>, u32>,
}

impl SessionChain {
    fn fold(&mut self, seq: u64, hash: EventHash, payload: &Kind) {
        if let Kind::LlmInteractionRecorded(r) = payload {
            *self.counts.entry(r.request_hash.clone()).or_default() += 1;
        }
        self.head_seq = seq;
        self.head_hash = hash;
    }
}

/// What an append stored.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Where it is.
    pub outcome: AppendOutcome,
    /// The occurrence it was given (recordings only).
    pub occurrence: u32,
}

/// Writes the records of every session this instance serves.
#[derive(Clone)]
pub struct SessionWriter {
    store: EventStore,
    signer: ServiceSigner,
    chains: Arc<quick_cache::sync::Cache<String, Arc<Mutex<SessionChain>>>>,
    /// The service chain's head, read once: a position at which the service
    /// key was current stays such a position (the store still checks the key
    /// is current at the head on every append). Cleared when the store
    /// refuses a record, so a rotation is picked up.
    signer_seq: Arc<std::sync::atomic::AtomicU64>,
}

impl SessionWriter {
    /// A writer signing with the llm service's key.
    pub fn new(store: EventStore, signer: ServiceSigner) -> Self {
        Self {
            store,
            signer,
            chains: Arc::new(quick_cache::sync::Cache::new(CACHED_SESSIONS)),
            signer_seq: Arc::default(),
        }
    }

    fn chain(&self, session: &str) -> Arc<Mutex<SessionChain>> {
        match self.chains.get_or_insert_with(session, || {
            Ok::<_, std::convert::Infallible>(Arc::default())
        }) {
            Ok(c) => c,
            Err(never) => match never {},
        }
    }

    /// Appends a recording of `session`: `build(occurrence)` makes the payload
    /// for the occurrence the chain gives its `request_hash`. `cause` is the
    /// owner action the session's mode comes from; `correlation` groups calls.
    pub async fn append_recording(
        &self,
        session: &str,
        request_hash: &[u8],
        cause: &str,
        correlation: &str,
        build: impl Fn(u32) -> proto::LlmInteractionRecorded,
    ) -> Result<Recorded, RecordError> {
        self.append_with(session, cause, correlation, |chain| {
            let occurrence = chain.counts.get(request_hash).copied().unwrap_or(0);
            (Kind::LlmInteractionRecorded(build(occurrence)), occurrence)
        })
        .await
    }

    /// Appends a replay miss of `session`.
    pub async fn append_miss(
        &self,
        session: &str,
        cause: &str,
        correlation: &str,
        miss: proto::LlmReplayMissed,
    ) -> Result<Recorded, RecordError> {
        self.append_with(session, cause, correlation, |_| {
            (Kind::LlmReplayMissed(miss.clone()), 0)
        })
        .await
    }

    async fn append_with(
        &self,
        session: &str,
        cause: &str,
        correlation: &str,
        payload: impl Fn(&SessionChain) -> (Kind, u32),
    ) -> Result<Recorded, RecordError> {
        let aggregate = Aggregate::new(AggregateKind::Llm, session)
            .map_err(|e| RecordError::Refused(e.to_string()))?;
        let chain = self.chain(session);
        let mut chain = chain.lock().await;
        if !chain.loaded {
            self.catch_up(&aggregate, &mut chain).await?;
            chain.loaded = true;
        }
        let signer_seq = self.signer_seq().await?;
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let (kind, occurrence) = payload(&chain);
            let signed = EventDraft::new(aggregate.clone(), kind.clone())
                .after(chain.head_seq, chain.head_hash)
                .signer_seq(signer_seq)
                .causation(cause.to_string())
                .correlation(correlation.to_string())
                .sign(&self.signer.keys, &self.signer.id);
            match self.store.append(signed).await {
                Ok(outcome) => {
                    chain.fold(outcome.aggregate_seq, outcome.hash, &kind);
                    return Ok(Recorded {
                        outcome,
                        occurrence,
                    });
                }
                Err(e) => match e.kind() {
                    AppendErrorKind::Conflict
                    | AppendErrorKind::Gap
                    | AppendErrorKind::ChainBroken => {
                        last = e.to_string();
                        self.catch_up(&aggregate, &mut chain).await?;
                    }
                    AppendErrorKind::Unavailable | AppendErrorKind::Other => {
                        // The append may have landed: re-read before deciding again.
                        last = e.to_string();
                        self.catch_up(&aggregate, &mut chain).await?;
                    }
                    _ => {
                        self.signer_seq
                            .store(0, std::sync::atomic::Ordering::Relaxed);
                        return Err(RecordError::Refused(e.to_string()));
                    }
                },
            }
        }
        Err(RecordError::Unavailable(format!(
            "llm/{session} kept moving under {MAX_ATTEMPTS} attempts: {last}"
        )))
    }

    /// The service's own chain head (the position its records cite).
    async fn signer_seq(&self) -> Result<u64, RecordError> {
        let cached = self.signer_seq.load(std::sync::atomic::Ordering::Relaxed);
        if cached > 0 {
            return Ok(cached);
        }
        let agg =
            Aggregate::agent(&self.signer.id).map_err(|e| RecordError::Refused(e.to_string()))?;
        let head = self
            .store
            .chain_head(&agg)
            .await
            .map_err(|e| RecordError::Unavailable(e.to_string()))?;
        self.signer_seq
            .store(head.aggregate_seq, std::sync::atomic::Ordering::Relaxed);
        Ok(head.aggregate_seq)
    }

    /// Folds the events of the session chain after the known head.
    async fn catch_up(
        &self,
        aggregate: &Aggregate,
        chain: &mut SessionChain,
    ) -> Result<(), RecordError> {
        loop {
            let page = self
                .store
                .read_chain(aggregate, chain.head_seq + 1, 512)
                .await
                .map_err(|e| RecordError::Unavailable(e.to_string()))?;
            if page.is_empty() {
                return Ok(());
            }
            for stored in page {
                // The store verified these events when it appended them; only
                // the payload and position are needed here.
                let ev = VerifiedEvent::decode(&stored.payload)
                    .map_err(|e| RecordError::Unavailable(format!("undecodable record: {e}")))?;
                if ev.aggregate_seq() != chain.head_seq + 1 {
                    return Err(RecordError::Unavailable(format!(
                        "{aggregate} is not contiguous at seq {}",
                        ev.aggregate_seq()
                    )));
                }
                chain.fold(ev.aggregate_seq(), stored.hash, &ev.payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_counts_recordings_per_request_hash() {
        let mut chain = SessionChain::default();
        let rec = |h: u8| {
            Kind::LlmInteractionRecorded(proto::LlmInteractionRecorded {
                request_hash: vec![h; 32],
                ..Default::default()
            })
        };
        chain.fold(1, [1; 32], &rec(7));
        chain.fold(2, [2; 32], &rec(7));
        chain.fold(3, [3; 32], &Kind::LlmReplayMissed(Default::default()));
        chain.fold(4, [4; 32], &rec(8));
        assert_eq!(chain.counts.get(&vec![7; 32]), Some(&2));
        assert_eq!(chain.counts.get(&vec![8; 32]), Some(&1));
        assert_eq!((chain.head_seq, chain.head_hash), (4, [4; 32]));
    }
}
