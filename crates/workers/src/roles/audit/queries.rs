//! The audit query service (`amai.query.audit.*`): checkpoints (latest or of
//! an exact size), inclusion and consistency proofs computed from the stored
//! nodes of a stream's tree, checkpoints on demand, and the status of every
//! audited stream. The gateway decides who may ask what (proofs and
//! checkpoints are public; requesting a checkpoint is for operators).

use std::sync::Arc;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::subjects::AggregateKind;
use amai_bus::Position;
use bytes::Bytes;
use prost::Message;

use amai_checkpoint::{CosignatureLine, SignedCheckpoint, VerifierKey};

use super::checkpointer::{decode_checkpoint, AuditLog, CheckpointError, LatestCheckpoint};
use super::tree::TreeError;
use crate::query_service::{typed_endpoint, QueryHandler};

fn reply(m: impl Message) -> Result<Bytes, QueryError> {
    Ok(Bytes::from(m.encode_to_vec()))
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string()).with_reason(query::reason::INTERNAL)
}

fn no_checkpoint(stream: &str, what: String) -> QueryError {
    QueryError::new(QueryCode::NotFound, what)
        .with_reason(query::reason::NO_CHECKPOINT)
        .with_meta("stream", stream)
}

fn checkpoint_error(stream: &str, e: CheckpointError) -> QueryError {
    match e {
        CheckpointError::UnknownStream(_) => QueryError::new(QueryCode::NotFound, e.to_string())
            .with_reason(query::reason::NOT_FOUND)
            .with_meta("stream", stream),
        CheckpointError::Empty(_) => no_checkpoint(stream, e.to_string()),
        CheckpointError::Diverged { .. } => {
            QueryError::new(QueryCode::FailedPrecondition, e.to_string())
                .with_reason(query::reason::LOG_DIVERGED)
                .with_meta("stream", stream)
        }
        CheckpointError::Unavailable(_) => QueryError::new(QueryCode::Unavailable, e.to_string())
            .with_reason(query::reason::WORKER_UNAVAILABLE),
        CheckpointError::Tree(_) | CheckpointError::Refused(_) => internal(e),
    }
}

fn tree_error(stream: &str, e: TreeError) -> QueryError {
    use amai_merkle::StoredTreeErrorKind as K;
    match &e {
        TreeError::Proof(p) => match p.kind() {
            K::SizeBeyondStored { tree_size, stored } => {
                QueryError::new(QueryCode::OutOfRange, format!("the audit tree of {stream} holds {stored} events so far; size {tree_size} is not reached yet (retry later, or ask for a smaller size)"))
                    .with_reason(query::reason::TREE_SIZE_BEYOND_END)
                    .with_meta("stream", stream)
                    .with_meta("tree_size", tree_size)
                    .with_meta("stored", stored)
            }
            K::MissingNode(_) | K::Storage { .. } => internal(e),
            _ => QueryError::new(QueryCode::InvalidArgument, e.to_string())
                .with_reason(query::reason::INVALID_ARGUMENT),
        },
        _ => internal(e),
    }
}

/// Everything the answers need of a checkpoint event.
async fn answer_checkpoint(log: &AuditLog, latest: LatestCheckpoint) -> Result<Bytes, QueryError> {
    let stored = log
        .store
        .get_event(&latest.position)
        .await
        .map_err(internal)?;
    let vkey = log.log_vkey(&latest.checkpoint.origin).map_err(internal)?;
    let cosigned_note = cosigned_note(log, &latest.checkpoint, &vkey)?;
    reply(proto::Checkpoint {
        checkpoint: Some(latest.checkpoint),
        event: Some(stored.to_proto()),
        log_vkey: vkey.to_string(),
        cosigned_note,
    })
}

/// The checkpoint's note with every witness cosignature that verifies
/// against the witness key recorded with it.
fn cosigned_note(
    log: &AuditLog,
    c: &proto::AuditCheckpointed,
    vkey: &VerifierKey,
) -> Result<String, QueryError> {
    let mut note = SignedCheckpoint::open(&c.note, vkey)
        .map_err(|e| internal(format!("a stored checkpoint does not verify: {e}")))?;
    let Some(agents) = log.streams.get(AggregateKind::Agent.stream()) else {
        return Ok(note.text().to_string());
    };
    for found in agents
        .tree
        .cosignatures(&c.origin, c.tree_size)
        .map_err(internal)?
    {
        let (Ok(witness), Ok(line)) = (
            found.vkey.parse::<VerifierKey>(),
            found.line.parse::<CosignatureLine>(),
        ) else {
            continue;
        };
        if let Ok(with) = note.with_cosignature(&line) {
            if !with.cosignatures(std::slice::from_ref(&witness)).is_empty() {
                note = with;
            }
        }
    }
    Ok(note.text().to_string())
}

/// The checkpoint of `stream` at `size` (0: the latest).
async fn find_checkpoint(
    log: &AuditLog,
    stream: &str,
    size: u64,
) -> Result<LatestCheckpoint, QueryError> {
    if size == 0 {
        return log
            .latest(stream)
            .await
            .map_err(|e| checkpoint_error(stream, e))?
            .ok_or_else(|| {
                no_checkpoint(
                    stream,
                    format!("{stream} has no checkpoint yet; an operator can request one (`amai audit checkpoint`)"),
                )
            });
    }
    log.stream(stream)
        .map_err(|e| checkpoint_error(stream, e))?;
    let seq = log.index.find(stream, size).map_err(internal)?.ok_or_else(|| {
        no_checkpoint(
            stream,
            format!("{stream} has no checkpoint of size {size}; proofs can still be asked for any size the tree reached"),
        )
    })?;
    let position = Position {
        stream: AggregateKind::Audit.stream().to_string(),
        seq,
    };
    let stored = log.store.get_event(&position).await.map_err(internal)?;
    let checkpoint = decode_checkpoint(&stored.payload).ok_or_else(|| {
        internal(format!(
            "the index points at {position}, which holds no checkpoint"
        ))
    })?;
    Ok(LatestCheckpoint {
        checkpoint,
        position,
    })
}

/// `0` means the latest checkpoint's size.
async fn resolve_size(log: &AuditLog, stream: &str, size: u64) -> Result<u64, QueryError> {
    if size != 0 {
        return Ok(size);
    }
    Ok(find_checkpoint(log, stream, 0).await?.checkpoint.tree_size)
}

/// The stream's last sequence (0 when it cannot be read).
async fn stream_last_seq(log: &AuditLog, stream: &str) -> u64 {
    match log.store.jetstream().get_stream(stream).await {
        Ok(mut s) => s.info().await.map_or(0, |i| i.state.last_sequence),
        Err(_) => 0,
    }
}

/// The service's endpoints.
pub(crate) fn endpoints(log: Arc<AuditLog>) -> Vec<(&'static str, QueryHandler)> {
    vec![
        typed_endpoint(
            query::AUDIT_CHECKPOINT,
            log.clone(),
            |log, req: proto::GetCheckpointRequest| async move {
                let latest = find_checkpoint(&log, &req.stream, req.tree_size).await?;
                answer_checkpoint(&log, latest).await
            },
        ),
        typed_endpoint(
            query::AUDIT_INCLUSION,
            log.clone(),
            |log, req: proto::GetInclusionProofRequest| async move {
                let stream = req.stream.as_str();
                let slog = log
                    .stream(stream)
                    .map_err(|e| checkpoint_error(stream, e))?;
                let size = resolve_size(&log, stream, req.tree_size).await?;
                let proof = slog
                    .tree
                    .inclusion_proof(req.leaf_index, size)
                    .map_err(|e| tree_error(stream, e))?;
                let leaf = slog
                    .tree
                    .leaf(req.leaf_index)
                    .map_err(|e| tree_error(stream, e))?
                    .ok_or_else(|| {
                        internal(format!(
                            "leaf {} of {stream} is missing from the store",
                            req.leaf_index
                        ))
                    })?;
                let root = slog.tree.root_at(size).map_err(|e| tree_error(stream, e))?;
                reply(proto::InclusionProof {
                    stream: req.stream.clone(),
                    leaf_index: req.leaf_index,
                    tree_size: size,
                    leaf_hash: leaf.to_vec(),
                    proof: proof.iter().map(|h| h.to_vec()).collect(),
                    root_hash: root.to_vec(),
                })
            },
        ),
        typed_endpoint(
            query::AUDIT_CONSISTENCY,
            log.clone(),
            |log, req: proto::GetConsistencyProofRequest| async move {
                let stream = req.stream.as_str();
                let slog = log
                    .stream(stream)
                    .map_err(|e| checkpoint_error(stream, e))?;
                let new_size = resolve_size(&log, stream, req.new_size).await?;
                let proof = slog
                    .tree
                    .consistency_proof(req.old_size, new_size)
                    .map_err(|e| tree_error(stream, e))?;
                let old_root = slog
                    .tree
                    .root_at(req.old_size)
                    .map_err(|e| tree_error(stream, e))?;
                let new_root = slog
                    .tree
                    .root_at(new_size)
                    .map_err(|e| tree_error(stream, e))?;
                reply(proto::ConsistencyProof {
                    stream: req.stream.clone(),
                    old_size: req.old_size,
                    new_size,
                    proof: proof.iter().map(|h| h.to_vec()).collect(),
                    old_root: old_root.to_vec(),
                    new_root: new_root.to_vec(),
                })
            },
        ),
        typed_endpoint(
            query::AUDIT_REQUEST_CHECKPOINT,
            log.clone(),
            |log, req: proto::RequestCheckpointRequest| async move {
                let latest = log
                    .checkpoint_now(&req.stream)
                    .await
                    .map_err(|e| checkpoint_error(&req.stream, e))?;
                answer_checkpoint(&log, latest).await
            },
        ),
        typed_endpoint(
            query::AUDIT_STATUS,
            log,
            |log, _req: proto::GetAuditStatusRequest| async move {
                let mut streams = Vec::new();
                for (name, slog) in &log.streams {
                    let latest = log
                        .latest(name)
                        .await
                        .map_err(|e| checkpoint_error(name, e))?;
                    streams.push(proto::AuditedStream {
                        stream: name.clone(),
                        origin: slog.origin.clone(),
                        tree_size: slog.tree.size().map_err(internal)?,
                        checkpoint_size: latest.map_or(0, |l| l.checkpoint.tree_size),
                        gaps: slog.tree.gap_count().map_err(internal)?,
                        diverged: slog.diverged(),
                        stream_last_seq: stream_last_seq(&log, name).await,
                    });
                }
                reply(proto::AuditStatus {
                    streams,
                    log_key: log.signer.keys.public_key().as_bytes().to_vec(),
                    audit_stream_last_seq: stream_last_seq(&log, AggregateKind::Audit.stream())
                        .await,
                })
            },
        ),
    ]
}
