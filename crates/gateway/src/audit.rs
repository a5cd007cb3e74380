//! `AuditService`: the audit role's checkpoints and RFC 9162 proofs
//! (`amai.query.audit.*`). A thin adapter: the role answers from its stored
//! trees; this module checks the request's shape and who may ask.
//!
//! Checkpoints, proofs and the status are public, like a certificate
//! transparency log's: they reveal hashes, never content, and witnesses and
//! auditors must be able to fetch them without an identity here.
//! `RequestCheckpoint` makes the audit service sign and append a checkpoint
//! now: a signed request by an unrevoked operator (`NOT_OWNER` otherwise).

use tonic::{Request, Response, Status};

use amai_bus::proto::{self, audit_service_server::AuditService};
use amai_bus::query::{
    AUDIT_CHECKPOINT, AUDIT_CONSISTENCY, AUDIT_INCLUSION, AUDIT_REQUEST_CHECKPOINT, AUDIT_STATUS,
};
use amai_bus::subjects::AggregateKind;
use amai_proto::wire::REQUEST_CHECKPOINT_METHOD;

use crate::status::ApiError;
use crate::Shared;

/// The `AuditService` implementation.
#[derive(Clone)]
pub struct AuditSvc {
    shared: std::sync::Arc<Shared>,
}

impl AuditSvc {
    /// A service over the gateway's shared state.
    pub(crate) fn new(shared: std::sync::Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// A stream name the audit role may know: an Amai stream.
fn check_stream(stream: &str) -> Result<(), ApiError> {
    let known = AggregateKind::for_stream(stream).is_some()
        || stream == amai_bus::streams::TRUST_FEED_STREAM;
    if known {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "{stream:?} is not an Amai stream (AMAI_AGENTS, AMAI_JAILS, ...; `amai audit status` lists the audited ones)"
        )))
    }
}

#[tonic::async_trait]
impl AuditService for AuditSvc {
    #[tracing::instrument(skip_all, fields(stream = %request.get_ref().stream, size = request.get_ref().tree_size))]
    async fn get_checkpoint(
        &self,
        request: Request<proto::GetCheckpointRequest>,
    ) -> Result<Response<proto::Checkpoint>, Status> {
        let req = request.into_inner();
        check_stream(&req.stream)?;
        Ok(Response::new(
            self.shared.query(AUDIT_CHECKPOINT, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(stream = %request.get_ref().stream, index = request.get_ref().leaf_index))]
    async fn get_inclusion_proof(
        &self,
        request: Request<proto::GetInclusionProofRequest>,
    ) -> Result<Response<proto::InclusionProof>, Status> {
        let req = request.into_inner();
        check_stream(&req.stream)?;
        if req.tree_size != 0 && req.leaf_index >= req.tree_size {
            return Err(ApiError::InvalidArgument(format!(
                "leaf_index {} is not a leaf of a tree of size {} (leaf i is the event at stream sequence i + 1)",
                req.leaf_index, req.tree_size
            ))
            .into());
        }
        Ok(Response::new(
            self.shared.query(AUDIT_INCLUSION, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(stream = %request.get_ref().stream, old = request.get_ref().old_size, new = request.get_ref().new_size))]
    async fn get_consistency_proof(
        &self,
        request: Request<proto::GetConsistencyProofRequest>,
    ) -> Result<Response<proto::ConsistencyProof>, Status> {
        let req = request.into_inner();
        check_stream(&req.stream)?;
        if req.new_size != 0 && req.old_size > req.new_size {
            return Err(ApiError::InvalidArgument(format!(
                "old_size {} is larger than new_size {}",
                req.old_size, req.new_size
            ))
            .into());
        }
        Ok(Response::new(
            self.shared.query(AUDIT_CONSISTENCY, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(stream = %request.get_ref().stream))]
    async fn request_checkpoint(
        &self,
        request: Request<proto::RequestCheckpointRequest>,
    ) -> Result<Response<proto::Checkpoint>, Status> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                REQUEST_CHECKPOINT_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        check_stream(&req.stream)?;
        if !reader.operator {
            return Err(ApiError::NotOwner {
                actor: reader.id,
                owner: "the deployment's operators".to_string(),
            }
            .into());
        }
        Ok(Response::new(
            self.shared.query(AUDIT_REQUEST_CHECKPOINT, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_status(
        &self,
        request: Request<proto::GetAuditStatusRequest>,
    ) -> Result<Response<proto::AuditStatus>, Status> {
        Ok(Response::new(
            self.shared
                .query(AUDIT_STATUS, &request.into_inner())
                .await?,
        ))
    }
}
