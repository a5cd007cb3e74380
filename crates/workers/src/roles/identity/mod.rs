//! The identity role: registration, keys, the soulchain, messaging.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]: the [`TrustInitializer`]
//! reactor (writes `trust/<agent_id>` only), the identity projection in each
//! instance's sled, and the identity query service (`amai.query.identity.*`)
//! answered from it. Queries carrying `min_position` wait, bounded, until the
//! projection has reached it.

pub mod trust_init;

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::subjects::AggregateKind;
use amai_projections::{IdentityProjection, IdentityReadModel, Projection, ProjectionHandle};
use bytes::Bytes;
use prost::Message;

use crate::query_service::QueryHandler;
use crate::reactor::Reactor;
use crate::role::{QueryService, Role, RoleContext, RoleError};
pub use trust_init::{TrustInitializer, INITIAL_TRUST_SCORE};

/// The role's name.
pub const NAME: &str = "identity";

/// The identity role, declared.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityRole;

impl Role for IdentityRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "registration, keys, soulchains, messaging, trust initialisation"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Trust]
    }

    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(IdentityProjection)]
    }

    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        vec![Arc::new(TrustInitializer)]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let projection = ctx.projection(IdentityProjection.name())?;
        let model = IdentityReadModel::open(&ctx.db).map_err(|e| RoleError::Component {
            role: NAME.to_string(),
            component: "queries".to_string(),
            detail: e.to_string(),
        })?;
        Ok(Some(QueryService {
            name: query::IDENTITY_SERVICE,
            description: "amai identity queries",
            endpoints: query_endpoints(
                projection,
                model,
                ctx.min_position_timeout,
                crate::query_service::reply_budget(&ctx.client),
            ),
        }))
    }
}

/// The identity read model of a running identity role instance.
pub fn read_model(runtime: &crate::runtime::RoleRuntime) -> Result<IdentityReadModel, RoleError> {
    IdentityReadModel::open(runtime.db()).map_err(|e| RoleError::Component {
        role: NAME.to_string(),
        component: "read model".to_string(),
        detail: e.to_string(),
    })
}

fn bad_request(e: prost::DecodeError) -> QueryError {
    QueryError::new(
        QueryCode::InvalidArgument,
        format!("undecodable request: {e}"),
    )
}

async fn wait_min(
    projection: &ProjectionHandle,
    min: Option<proto::Position>,
    timeout: Duration,
) -> Result<(), QueryError> {
    projection
        .wait_for_min_position(min.as_ref(), timeout)
        .await
        .map_err(QueryError::from)
}

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string())
}

fn not_found(req: &proto::GetIdentityRequest) -> QueryError {
    let what = match &req.selector {
        Some(proto::get_identity_request::Selector::Id(id)) => format!("no identity with id {id}"),
        Some(proto::get_identity_request::Selector::Name(n)) => format!("no identity named {n:?}"),
        None => return QueryError::new(QueryCode::InvalidArgument, "give an id or a name"),
    };
    QueryError::new(QueryCode::NotFound, format!("{what}; check the spelling, or pass min_position from the register call to wait for it"))
}

/// One endpoint: decode `Req`, wait for its `min_position`, answer with `answer`.
fn endpoint<Req, F>(
    projection: &ProjectionHandle,
    timeout: Duration,
    min_position: fn(&Req) -> Option<proto::Position>,
    answer: F,
) -> QueryHandler
where
    Req: Message + Default + Send + 'static,
    F: Fn(Req) -> Result<Bytes, QueryError> + Send + Sync + 'static,
{
    let projection = projection.clone();
    let answer = Arc::new(answer);
    Arc::new(move |b: Bytes| {
        let (projection, answer) = (projection.clone(), answer.clone());
        Box::pin(async move {
            let req = Req::decode(b).map_err(bad_request)?;
            wait_min(&projection, min_position(&req), timeout).await?;
            answer(req)
        })
    })
}

fn query_endpoints(
    projection: ProjectionHandle,
    model: IdentityReadModel,
    timeout: Duration,
    reply_budget: usize,
) -> Vec<(&'static str, QueryHandler)> {
    let (m1, m2, m3, m4) = (model.clone(), model.clone(), model.clone(), model);
    let violations_of = projection.clone();
    vec![
        (
            query::IDENTITY_GET,
            endpoint(
                &projection,
                timeout,
                |r: &proto::GetIdentityRequest| r.min_position.clone(),
                move |req| {
                    m1.get_identity(&req)
                        .map_err(internal)?
                        .map(|i| Bytes::from(i.encode_to_vec()))
                        .ok_or_else(|| not_found(&req))
                },
            ),
        ),
        (
            query::IDENTITY_KEYS,
            endpoint(
                &projection,
                timeout,
                |r: &proto::GetIdentityRequest| r.min_position.clone(),
                move |req| {
                    m2.get_keys(&req)
                        .map_err(internal)?
                        .map(|k| Bytes::from(k.encode_to_vec()))
                        .ok_or_else(|| not_found(&req))
                },
            ),
        ),
        (
            query::IDENTITY_INBOX,
            endpoint(
                &projection,
                timeout,
                |r: &proto::ListInboxRequest| r.min_position.clone(),
                move |req| crate::inbox::inbox_page(&m3, &req, reply_budget),
            ),
        ),
        (
            query::IDENTITY_STATS,
            endpoint(
                &projection,
                timeout,
                |r: &proto::GetStatsRequest| r.min_position.clone(),
                move |_req| Ok(Bytes::from(m4.stats().map_err(internal)?.encode_to_vec())),
            ),
        ),
        (
            query::IDENTITY_VIOLATIONS,
            endpoint(
                &projection,
                timeout,
                |r: &proto::ListIntegrityViolationsRequest| r.min_position.clone(),
                move |req| {
                    let all = violations_of.violations().map_err(internal)?;
                    let limit = match req.limit {
                        0 => 100,
                        n => n.min(1000) as usize,
                    };
                    Ok(Bytes::from(
                        proto::ListIntegrityViolationsResponse {
                            total: all.len() as u64,
                            violations: all.iter().take(limit).map(|v| v.to_proto()).collect(),
                        }
                        .encode_to_vec(),
                    ))
                },
            ),
        ),
    ]
}
