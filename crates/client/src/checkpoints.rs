//! Checkpoints and proofs through the gateway's `AuditService`, checked on
//! the client: a checkpoint is trusted only once its C2SP note verifies
//! against a log key the caller trusts (from a previous audit, a witness, or
//! the deployment's status), and an event only once its inclusion proof leads
//! to that checkpoint's root. Nothing the gateway says is taken on faith.
//!
//! Reads are public; [`AmaiClient::request_checkpoint`] is an operator's
//! signed request.

use amai_bus::envelope::hash_bytes;
use amai_bus::proto;
use amai_checkpoint::{SignedCheckpoint, VerifierKey};
use amai_proto::wire::REQUEST_CHECKPOINT_METHOD;

use crate::{AmaiClient, ClientError};

/// A checkpoint whose note verified against the trusted log key (with the
/// witness cosignatures the log serves with it: check them with
/// [`SignedCheckpoint::require_witnesses`] on [`VerifiedCheckpoint::note`]).
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    /// The stream.
    pub stream: String,
    /// The opened note.
    pub note: SignedCheckpoint,
    /// The event that carried it.
    pub event: Option<proto::StoredEvent>,
}

/// What the gateway answered does not hold up (a forged or broken
/// checkpoint or proof).
fn invalid(msg: String) -> ClientError {
    ClientError::Integrity(msg)
}

impl AmaiClient {
    /// The latest checkpoint of `stream` (`tree_size` 0), or the one of that
    /// exact size, as the gateway stores it (not verified: see
    /// [`AmaiClient::verified_checkpoint`]).
    pub async fn checkpoint(
        &self,
        stream: &str,
        tree_size: u64,
    ) -> Result<proto::Checkpoint, ClientError> {
        Ok(self
            .audit_service()
            .get_checkpoint(proto::GetCheckpointRequest {
                stream: stream.to_string(),
                tree_size,
            })
            .await?
            .into_inner())
    }

    /// [`AmaiClient::checkpoint`], with its note verified against `log`
    /// (the stream's C2SP verifier key) and its fields checked against the
    /// note.
    pub async fn verified_checkpoint(
        &self,
        stream: &str,
        tree_size: u64,
        log: &VerifierKey,
    ) -> Result<VerifiedCheckpoint, ClientError> {
        let c = self.checkpoint(stream, tree_size).await?;
        let payload = c.checkpoint.ok_or_else(|| {
            invalid("the gateway answered a checkpoint without its payload".into())
        })?;
        // The cosigned note carries the same signed text plus witness lines.
        let text = if c.cosigned_note.is_empty() {
            &payload.note
        } else {
            &c.cosigned_note
        };
        let note = SignedCheckpoint::open(text, log).map_err(|e| {
            invalid(format!(
                "the checkpoint note of {stream} does not verify: {e}"
            ))
        })?;
        let body = note.checkpoint();
        if body.size != payload.tree_size || body.root.as_slice() != payload.root_hash.as_slice() {
            return Err(invalid(format!(
                "the checkpoint event of {stream} says size {} but its signed note says {}",
                payload.tree_size, body.size
            )));
        }
        Ok(VerifiedCheckpoint {
            stream: stream.to_string(),
            note,
            event: c.event,
        })
    }

    /// The inclusion proof of the event at `leaf_index` (stream sequence
    /// `leaf_index + 1`) in the tree of `tree_size` (0: the latest checkpoint's).
    pub async fn inclusion_proof(
        &self,
        stream: &str,
        leaf_index: u64,
        tree_size: u64,
    ) -> Result<proto::InclusionProof, ClientError> {
        Ok(self
            .audit_service()
            .get_inclusion_proof(proto::GetInclusionProofRequest {
                stream: stream.to_string(),
                leaf_index,
                tree_size,
            })
            .await?
            .into_inner())
    }

    /// The consistency proof from `old_size` to `new_size` (0: the latest
    /// checkpoint's size).
    pub async fn consistency_proof(
        &self,
        stream: &str,
        old_size: u64,
        new_size: u64,
    ) -> Result<proto::ConsistencyProof, ClientError> {
        Ok(self
            .audit_service()
            .get_consistency_proof(proto::GetConsistencyProofRequest {
                stream: stream.to_string(),
                old_size,
                new_size,
            })
            .await?
            .into_inner())
    }

    /// Proves that `event` (as stored: its raw bytes) is in the verified
    /// checkpoint: its leaf hash is recomputed from the bytes, and the proof
    /// the gateway gives must lead to the signed root.
    pub async fn prove_included(
        &self,
        event: &proto::StoredEvent,
        checkpoint: &VerifiedCheckpoint,
    ) -> Result<(), ClientError> {
        let position = event
            .position
            .as_ref()
            .ok_or_else(|| invalid("the event has no position".into()))?;
        if position.stream != checkpoint.stream || position.seq == 0 {
            return Err(invalid(format!(
                "the event is stored in {} and cannot be in a checkpoint of {}",
                position.stream, checkpoint.stream
            )));
        }
        let size = checkpoint.note.checkpoint().size;
        let index = position.seq - 1;
        let proof = self
            .inclusion_proof(&checkpoint.stream, index, size)
            .await?;
        let leaf = amai_merkle::leaf_hash(&hash_bytes(&event.raw));
        let hashes = proof
            .proof
            .iter()
            .map(|h| <[u8; 32]>::try_from(h.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("a proof hash is not 32 bytes".into()))?;
        amai_merkle::verify_inclusion(
            &leaf,
            index,
            size,
            &hashes,
            &checkpoint.note.checkpoint().root,
        )
        .map_err(|e| {
            invalid(format!(
                "event {} of {} is not in the checkpoint of size {size}: {e}",
                position.seq, checkpoint.stream
            ))
        })
    }

    /// Makes the audit service checkpoint `stream` now (an operator's signed
    /// request); answers the new checkpoint, or the latest when nothing new
    /// was appended since.
    pub async fn request_checkpoint(&self, stream: &str) -> Result<proto::Checkpoint, ClientError> {
        let req = self
            .signed_request(
                REQUEST_CHECKPOINT_METHOD,
                proto::RequestCheckpointRequest {
                    stream: stream.to_string(),
                },
            )
            .await?;
        Ok(self
            .audit_service()
            .request_checkpoint(req)
            .await?
            .into_inner())
    }

    /// Every audited stream's tree size and latest checkpoint.
    pub async fn audit_status(&self) -> Result<proto::AuditStatus, ClientError> {
        Ok(self
            .audit_service()
            .get_status(proto::GetAuditStatusRequest {})
            .await?
            .into_inner())
    }
}

/// The C2SP verifier key of a stream's checkpoints, from the audit status.
pub fn log_vkey(status: &proto::AuditStatus, stream: &str) -> Result<VerifierKey, ClientError> {
    let s = status
        .streams
        .iter()
        .find(|s| s.stream == stream)
        .ok_or_else(|| invalid(format!("{stream} is not audited")))?;
    let key: [u8; 32] = status
        .log_key
        .as_slice()
        .try_into()
        .map_err(|_| invalid("the audit status carries no 32-byte log key".into()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| invalid("the audit log key is not an Ed25519 key".into()))?;
    VerifierKey::ed25519(&s.origin, &key)
        .map_err(|e| invalid(format!("the origin {:?} is no key name: {e}", s.origin)))
}
