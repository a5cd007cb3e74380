//! Checkpoints: the shared state of the audit role ([`AuditLog`], one
//! [`StreamLog`] per stream) and the append of `audit.checkpointed` events.
//!
//! A stream's checkpointer task wakes when its tree has grown by the
//! configured number of events since the latest checkpoint, or when the
//! configured interval has passed and the tree grew, and appends a checkpoint
//! of the whole tree ([`AuditLog::checkpoint_now`]; the query service calls
//! the same for on-demand checkpoints). The latest checkpoint is read from the
//! chain head itself (JetStream), never from a projection, and the append
//! names that head: instances racing for the same slot are ordered by
//! optimistic concurrency, and a checkpoint id derived from (origin, size)
//! makes a retried append idempotent.
//!
//! Before signing, the instance checks that its tree has the latest
//! checkpoint's root at that checkpoint's size. If not, the stream was
//! rewritten under it (or its state was rebuilt from a rewritten stream): it
//! signs nothing, logs an error and marks the stream diverged.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::{self, payload::Kind};
use amai_bus::store::AppendErrorKind;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, Position};
use amai_checkpoint::{Checkpoint, LogKey, VerifierKey};
use amai_merkle::Hash;
use prost::Message;
use tokio::sync::watch;

use super::config::AuditRoleConfig;
use super::index::CheckpointIndex;
use super::tree::{StreamTree, TreeError};
use crate::reactor::{signer_seq, ServiceSigner};
use crate::role::Task;

/// Namespace of checkpoint event ids: UUIDv5 of `<origin> <size>`.
const CHECKPOINT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a3e_41d2_9c0b_4f57_8e1d_a0c3_77b9_2f14);

/// Attempts of an append that keeps losing the race for the chain's head.
const MAX_ATTEMPTS: u32 = 8;

/// Why a checkpoint was not appended.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The stream is not audited.
    #[error("stream {0} is not audited; `amai audit status` lists the audited streams")]
    UnknownStream(String),
    /// The tree holds no event yet.
    #[error("{0} holds no event yet: nothing to checkpoint")]
    Empty(String),
    /// The tree disagrees with the latest checkpoint on the chain.
    #[error("the audit tree of {stream} has root {ours} at size {size}, but the latest checkpoint signed {signed}: the stream was rewritten; no checkpoint is signed over it")]
    Diverged {
        /// The stream.
        stream: String,
        /// The checkpointed size.
        size: u64,
        /// This instance's root at that size (hex).
        ours: String,
        /// The signed root (hex).
        signed: String,
    },
    /// The stored tree failed.
    #[error("{0}")]
    Tree(#[from] TreeError),
    /// NATS or the store failed; retrying may help.
    #[error("cannot append the checkpoint: {0}")]
    Unavailable(String),
    /// The store refused the checkpoint.
    #[error("the store refused the checkpoint: {0}")]
    Refused(String),
}

/// One audited stream.
#[derive(Debug)]
pub struct StreamLog {
    pub(crate) tree: StreamTree,
    pub(crate) origin: String,
    size: watch::Sender<u64>,
    /// The tree size through the last message that is not a witness's
    /// cosignature record: interval checkpoints follow it, so that a witness
    /// cosigning every checkpoint does not make a new one every interval.
    significant: std::sync::atomic::AtomicU64,
    /// One checkpoint append at a time per instance.
    appending: tokio::sync::Mutex<()>,
    diverged: AtomicBool,
}

impl StreamLog {
    pub(crate) fn new(tree: StreamTree, origin: String) -> Result<Self, TreeError> {
        let stored = tree.size()?;
        let (size, _) = watch::channel(stored);
        Ok(Self {
            tree,
            origin,
            size,
            significant: std::sync::atomic::AtomicU64::new(stored),
            appending: tokio::sync::Mutex::new(()),
            diverged: AtomicBool::new(false),
        })
    }

    /// The tree reached `size` leaves; `significant` is the size through
    /// its last message that is no cosignature record (if the batch had one).
    pub(crate) fn grew(&self, size: u64, significant: Option<u64>) {
        if let Some(s) = significant {
            self.significant.fetch_max(s, Ordering::AcqRel);
        }
        self.size.send_replace(size);
    }

    /// Whether this instance refused to sign over a rewritten stream.
    pub fn diverged(&self) -> bool {
        self.diverged.load(Ordering::Acquire)
    }
}

/// The audit role's shared state.
pub struct AuditLog {
    pub(crate) store: EventStore,
    pub(crate) signer: ServiceSigner,
    pub(crate) streams: BTreeMap<String, StreamLog>,
    pub(crate) index: CheckpointIndex,
    pub(crate) config: AuditRoleConfig,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("signer", &self.signer.id)
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The latest checkpoint of a stream, as read from its chain.
#[derive(Clone, Debug)]
pub struct LatestCheckpoint {
    /// Its payload.
    pub checkpoint: proto::AuditCheckpointed,
    /// Where the event is stored.
    pub position: Position,
}

impl AuditLog {
    /// The stream's log.
    pub fn stream(&self, stream: &str) -> Result<&StreamLog, CheckpointError> {
        self.streams
            .get(stream)
            .ok_or_else(|| CheckpointError::UnknownStream(stream.to_string()))
    }

    /// The C2SP verifier key of a stream's checkpoints.
    pub fn log_vkey(&self, origin: &str) -> Result<VerifierKey, amai_checkpoint::KeyNameError> {
        VerifierKey::ed25519(origin, &self.signer.keys.public_key())
    }

    /// Head of `audit/<stream>` and the checkpoint it holds.
    async fn chain_head(
        &self,
        aggregate: &Aggregate,
    ) -> Result<(amai_bus::store::ChainHeadInfo, Option<LatestCheckpoint>), CheckpointError> {
        let unavailable = |e: &dyn std::fmt::Display| CheckpointError::Unavailable(e.to_string());
        let head = self
            .store
            .chain_head(aggregate)
            .await
            .map_err(|e| unavailable(&e))?;
        if head.aggregate_seq == 0 {
            return Ok((head, None));
        }
        let position = Position {
            stream: AggregateKind::Audit.stream().to_string(),
            seq: head.stream_seq,
        };
        let stored = self
            .store
            .get_event(&position)
            .await
            .map_err(|e| unavailable(&e))?;
        let latest = decode_checkpoint(&stored.payload).map(|checkpoint| LatestCheckpoint {
            checkpoint,
            position,
        });
        Ok((head, latest))
    }

    /// Appends a checkpoint of the whole tree of `stream`, unless the latest
    /// one already covers it; returns the latest checkpoint either way.
    pub async fn checkpoint_now(&self, stream: &str) -> Result<LatestCheckpoint, CheckpointError> {
        let slog = self.stream(stream)?;
        let _one = slog.appending.lock().await;
        let aggregate = Aggregate::new(AggregateKind::Audit, stream)
            .map_err(|e| CheckpointError::UnknownStream(e.to_string()))?;
        for attempt in 0..MAX_ATTEMPTS {
            let size = slog.tree.size()?;
            let (head, latest) = self.chain_head(&aggregate).await?;
            if let Some(latest) = &latest {
                let c = &latest.checkpoint;
                if c.tree_size >= size {
                    return Ok(latest.clone());
                }
                let ours = slog.tree.root_at(c.tree_size)?;
                if ours.as_slice() != c.root_hash.as_slice() {
                    slog.diverged.store(true, Ordering::Release);
                    let err = CheckpointError::Diverged {
                        stream: stream.to_string(),
                        size: c.tree_size,
                        ours: hex::encode(ours),
                        signed: hex::encode(&c.root_hash),
                    };
                    tracing::error!(stream, error = %err, "audit: refusing to checkpoint");
                    return Err(err);
                }
            } else if size == 0 {
                return Err(CheckpointError::Empty(stream.to_string()));
            }
            let root = slog.tree.root_at(size)?;
            let payload = self.sign_checkpoint(slog, stream, size, root)?;
            let signer_seq = signer_seq(&self.store, &self.signer)
                .await
                .map_err(CheckpointError::Unavailable)?;
            let id = uuid::Uuid::new_v5(
                &CHECKPOINT_ID_NAMESPACE,
                format!("{} {size}", slog.origin).as_bytes(),
            );
            let signed =
                EventDraft::new(aggregate.clone(), Kind::AuditCheckpointed(payload.clone()))
                    .after(head.aggregate_seq, head.hash)
                    .signer_seq(signer_seq)
                    .id(id)
                    .sign(&self.signer.keys, &self.signer.id);
            match self.store.append(signed).await {
                Ok(outcome) => {
                    tracing::info!(stream, size, root = %hex::encode(root), "audit: checkpoint appended");
                    return Ok(LatestCheckpoint {
                        checkpoint: payload,
                        position: outcome.position,
                    });
                }
                Err(e) => match e.kind() {
                    AppendErrorKind::Conflict
                    | AppendErrorKind::Duplicate
                    | AppendErrorKind::Gap
                    | AppendErrorKind::ChainBroken => {
                        tracing::debug!(stream, attempt, error = %e, "audit: lost the race for the checkpoint slot; re-reading");
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt + 1)))
                            .await;
                    }
                    AppendErrorKind::Unavailable | AppendErrorKind::Other => {
                        return Err(CheckpointError::Unavailable(e.to_string()))
                    }
                    _ => return Err(CheckpointError::Refused(e.to_string())),
                },
            }
        }
        Err(CheckpointError::Unavailable(format!(
            "audit/{stream} kept moving"
        )))
    }

    fn sign_checkpoint(
        &self,
        slog: &StreamLog,
        stream: &str,
        size: u64,
        root: Hash,
    ) -> Result<proto::AuditCheckpointed, CheckpointError> {
        let key = LogKey::new(&slog.origin, self.signer.keys.signing_key().clone())
            .map_err(|e| CheckpointError::Refused(e.to_string()))?;
        let signed = key
            .sign(&Checkpoint {
                origin: slog.origin.clone(),
                size,
                root,
                extensions: Vec::new(),
            })
            .map_err(|e| CheckpointError::Refused(e.to_string()))?;
        Ok(proto::AuditCheckpointed {
            stream: stream.to_string(),
            origin: slog.origin.clone(),
            tree_size: size,
            root_hash: root.to_vec(),
            note: signed.text().to_string(),
            log_signature: signed.log_signature().to_vec(),
            gaps: slog.tree.gaps_within(size)?,
        })
    }

    /// The latest checkpoint of `stream` on its chain.
    pub async fn latest(&self, stream: &str) -> Result<Option<LatestCheckpoint>, CheckpointError> {
        self.stream(stream)?;
        let aggregate = Aggregate::new(AggregateKind::Audit, stream)
            .map_err(|e| CheckpointError::UnknownStream(e.to_string()))?;
        Ok(self.chain_head(&aggregate).await?.1)
    }
}

/// The checkpoint an encoded event carries, if it is one.
pub(crate) fn decode_checkpoint(bytes: &[u8]) -> Option<proto::AuditCheckpointed> {
    let signed = proto::SignedEvent::decode(bytes).ok()?;
    let body = proto::EventBody::decode(signed.body.as_slice()).ok()?;
    match body.payload?.kind? {
        Kind::AuditCheckpointed(c) => Some(c),
        _ => None,
    }
}

/// The checkpointer task of `stream`.
pub(crate) fn task(log: Arc<AuditLog>, stream: String) -> Task {
    Task {
        name: format!("audit checkpoints {stream}"),
        run: Box::new(move |shutdown| {
            Box::pin(async move {
                tokio::select! {
                    r = run(&log, &stream) => r,
                    _ = shutdown => Ok(()),
                }
            })
        }),
    }
}

async fn run(log: &AuditLog, stream: &str) -> Result<(), String> {
    let slog = log.stream(stream).map_err(|e| e.to_string())?;
    let mut size_rx = slog.size.subscribe();
    // The size the latest checkpoint this instance knows of covers.
    let mut covered = match log.latest(stream).await {
        Ok(Some(l)) => l.checkpoint.tree_size,
        _ => 0,
    };
    let mut deadline = tokio::time::Instant::now() + log.config.interval;
    loop {
        let due = tokio::select! {
            changed = size_rx.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                *size_rx.borrow() >= covered.saturating_add(log.config.every_events)
            }
            _ = tokio::time::sleep_until(deadline) => true,
        };
        if !due {
            continue;
        }
        deadline = tokio::time::Instant::now() + log.config.interval;
        let grew_by_count = *size_rx.borrow() >= covered.saturating_add(log.config.every_events);
        let grew = slog.significant.load(Ordering::Acquire) > covered;
        if !(grew || grew_by_count) || slog.diverged() {
            continue;
        }
        match log.checkpoint_now(stream).await {
            Ok(latest) => covered = latest.checkpoint.tree_size,
            Err(CheckpointError::Empty(_)) => {}
            Err(e) => {
                tracing::warn!(stream, error = %e, "audit: checkpoint not appended; retrying at the next interval")
            }
        }
    }
}
