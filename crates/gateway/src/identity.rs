//! `IdentityService`: registration, key rotation, revocation and messages as
//! appends; identity, keys, inbox and stats as queries to the identity role;
//! server-side chain verification.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use amai_bus::envelope::VerifiedEvent;
use amai_bus::proto::{self, identity_service_server::IdentityService, payload::Kind};
use amai_bus::query::{
    IDENTITY_GET, IDENTITY_INBOX, IDENTITY_KEYS, IDENTITY_STATS, IDENTITY_VIOLATIONS,
};
use amai_bus::store::AppendError;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_proto::wire::{LIST_INBOX_METHOD, VERIFY_CHAIN_METHOD};

use crate::status::ApiError;
use crate::Shared;

/// The `IdentityService` implementation.
#[derive(Clone)]
pub struct IdentitySvc {
    shared: Arc<Shared>,
}

impl IdentitySvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    async fn register_inner(
        &self,
        req: proto::RegisterRequest,
    ) -> Result<proto::RegisterResponse, ApiError> {
        let genesis = req.genesis.ok_or_else(|| {
            ApiError::InvalidArgument(
                "genesis is required: the self-signed agent.registered event".into(),
            )
        })?;
        let claim = req.name_claim.ok_or_else(|| {
            ApiError::InvalidArgument(
                "name_claim is required: the name.claimed event signed by the new key".into(),
            )
        })?;
        self.shared.check_size(&genesis)?;
        self.shared.check_size(&claim)?;
        let g = VerifiedEvent::from_signed(genesis.clone()).map_err(AppendError::from)?;
        let c = VerifiedEvent::from_signed(claim.clone()).map_err(AppendError::from)?;
        tracing::Span::current().record("agent_id", g.aggregate.id.as_str());

        // Refuse mismatches before anything is written.
        let Kind::AgentRegistered(reg) = &g.payload else {
            return Err(ApiError::InvalidArgument(format!(
                "genesis must be an agent.registered event, not {}",
                g.event_type()
            )));
        };
        if g.aggregate.kind != AggregateKind::Agent || g.aggregate_seq() != 1 {
            return Err(ApiError::InvalidArgument(
                "genesis must be seq 1 of agent/<id>".into(),
            ));
        }
        let Kind::NameClaimed(nc) = &c.payload else {
            return Err(ApiError::InvalidArgument(format!(
                "name_claim must be a name.claimed event, not {}",
                c.event_type()
            )));
        };
        tracing::Span::current().record("name", nc.name.as_str());
        if c.aggregate.kind != AggregateKind::Name
            || c.aggregate.id != reg.name
            || nc.name != reg.name
        {
            return Err(ApiError::InvalidArgument(format!("name_claim claims {:?} (on {}) but the genesis registers {:?}; claim the same name", nc.name, c.aggregate, reg.name)));
        }
        if nc.agent_id != g.aggregate.id {
            return Err(ApiError::InvalidArgument(format!(
                "name_claim is for {} but the genesis registers {}",
                nc.agent_id, g.aggregate.id
            )));
        }
        if nc.genesis_hash.as_slice() != g.hash.as_slice() {
            return Err(ApiError::InvalidArgument(
                "name_claim.genesis_hash must be the SHA-256 of the encoded genesis SignedEvent"
                    .into(),
            ));
        }
        if c.signer != g.signer {
            return Err(ApiError::InvalidArgument(
                "name_claim must be signed by the genesis key".into(),
            ));
        }
        // Every rule of the genesis (including endorsements by operators other
        // than the trust root, and an identity already registered with another
        // genesis) is checked before the claim is written: bad input leaves
        // nothing behind.
        self.shared.store.validate(&g).await?;

        // Name first (expected-seq-0), then the genesis; both idempotent, so a
        // retry of the same Register completes a half-done one.
        self.shared.store.append(claim).await?;
        let out = self.shared.store.append(genesis).await?;
        Ok(proto::RegisterResponse {
            agent_id: g.aggregate.id.clone(),
            did: amai_bus::keys::did_key(&g.signer),
            position: Some(out.position.into()),
        })
    }

    async fn append_typed(
        &self,
        req: proto::AppendRequest,
        rpc: &str,
        expected: &str,
    ) -> Result<proto::AppendResponse, ApiError> {
        let event = req
            .event
            .ok_or_else(|| ApiError::InvalidArgument("event is required".into()))?;
        self.shared.check_size(&event)?;
        let ty = event_type_of(&event);
        if let Some(ty) = ty.as_deref() {
            tracing::Span::current().record("event_type", ty);
            if ty != expected {
                return Err(ApiError::InvalidArgument(format!("{rpc} appends {expected} events, this is {ty}; use EventService.Append for other actions")));
            }
        }
        let out = self.shared.store.append(event).await?;
        Ok(append_response(out))
    }
}

impl IdentitySvc {
    /// The identity from the identity role, its `trust_score` the live score
    /// when the trust role answers within [`crate::trust::LIVE_SCORE_TIMEOUT`]
    /// (else the identity projection's value). Asked side by side when the
    /// request names an id.
    async fn get_identity_inner(
        &self,
        req: &proto::GetIdentityRequest,
    ) -> Result<proto::Identity, ApiError> {
        use proto::get_identity_request::Selector;
        let (identity, live) = match &req.selector {
            Some(Selector::Id(id)) => {
                let (identity, live) = tokio::join!(
                    self.shared.query::<_, proto::Identity>(IDENTITY_GET, req),
                    crate::trust::live_score(&self.shared, id)
                );
                (identity?, live)
            }
            _ => {
                let identity: proto::Identity = self.shared.query(IDENTITY_GET, req).await?;
                let live = crate::trust::live_score(&self.shared, &identity.id).await;
                (identity, live)
            }
        };
        Ok(match live {
            Some(score) => proto::Identity {
                trust_score: Some(score),
                ..identity
            },
            None => identity,
        })
    }
}

/// An identity query names an id or a name (refused here, before any query).
fn check_selector(req: &proto::GetIdentityRequest) -> Result<(), ApiError> {
    use proto::get_identity_request::Selector;
    match &req.selector {
        Some(Selector::Id(s) | Selector::Name(s)) if !s.is_empty() => Ok(()),
        _ => Err(ApiError::InvalidArgument(
            "give the identity's id or name (selector.id or selector.name)".into(),
        )),
    }
}

/// The `type` of an event, when its body decodes (otherwise the store reports it).
pub(crate) fn event_type_of(event: &proto::SignedEvent) -> Option<String> {
    proto::EventBody::decode(event.body.as_slice())
        .ok()
        .map(|b| b.r#type)
}

pub(crate) fn append_response(out: amai_bus::AppendOutcome) -> proto::AppendResponse {
    proto::AppendResponse {
        position: Some(out.position.into()),
        hash: out.hash.to_vec(),
        aggregate_seq: out.aggregate_seq,
        duplicate: out.duplicate,
    }
}

#[tonic::async_trait]
impl IdentityService for IdentitySvc {
    #[tracing::instrument(skip_all, fields(agent_id, name))]
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        Ok(Response::new(
            self.register_inner(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(selector = ?request.get_ref().selector))]
    async fn get_identity(
        &self,
        request: Request<proto::GetIdentityRequest>,
    ) -> Result<Response<proto::Identity>, Status> {
        check_selector(request.get_ref())?;
        Ok(Response::new(
            self.get_identity_inner(request.get_ref()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(selector = ?request.get_ref().selector))]
    async fn get_keys(
        &self,
        request: Request<proto::GetIdentityRequest>,
    ) -> Result<Response<proto::Keys>, Status> {
        check_selector(request.get_ref())?;
        Ok(Response::new(
            self.shared.query(IDENTITY_KEYS, request.get_ref()).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(event_type))]
    async fn rotate_key(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Ok(Response::new(
            self.append_typed(request.into_inner(), "RotateKey", "agent.key_rotated")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(event_type))]
    async fn revoke(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Ok(Response::new(
            self.append_typed(request.into_inner(), "Revoke", "agent.revoked")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(event_type))]
    async fn send_message(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Ok(Response::new(
            self.append_typed(request.into_inner(), "SendMessage", "agent.message_sent")
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(agent_id = %request.get_ref().agent_id))]
    async fn list_inbox(
        &self,
        request: Request<proto::ListInboxRequest>,
    ) -> Result<Response<proto::ListInboxResponse>, Status> {
        let actor = self
            .shared
            .auth
            .authenticate(LIST_INBOX_METHOD, request.metadata(), request.get_ref())
            .await?;
        let req = request.into_inner();
        if actor != req.agent_id {
            return Err(ApiError::NotOwner {
                actor,
                owner: req.agent_id,
            }
            .into());
        }
        Ok(Response::new(
            self.shared.query(IDENTITY_INBOX, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_stats(
        &self,
        request: Request<proto::GetStatsRequest>,
    ) -> Result<Response<proto::Stats>, Status> {
        Ok(Response::new(
            self.shared.query(IDENTITY_STATS, request.get_ref()).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_integrity_violations(
        &self,
        request: Request<proto::ListIntegrityViolationsRequest>,
    ) -> Result<Response<proto::ListIntegrityViolationsResponse>, Status> {
        Ok(Response::new(
            self.shared
                .query(IDENTITY_VIOLATIONS, request.get_ref())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(aggregate = %request.get_ref().aggregate))]
    async fn verify_chain(
        &self,
        request: Request<proto::VerifyChainRequest>,
    ) -> Result<Response<proto::ChainReport>, Status> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(VERIFY_CHAIN_METHOD, request.metadata(), request.get_ref())
            .await?;
        let aggregate: Aggregate = request
            .get_ref()
            .aggregate
            .parse()
            .map_err(|e| ApiError::InvalidArgument(format!("{e}")))?;
        self.shared
            .check_aggregate(&reader, &aggregate, false)
            .await?;
        let report = amai_bus::chain::verify_chain(&self.shared.store, &aggregate)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(report.to_proto()))
    }
}
