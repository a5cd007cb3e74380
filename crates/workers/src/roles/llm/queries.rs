//! The llm query service (`amai.query.llm.*`), answered from the llm read
//! model: `session` (with `min_position` and `wait_recordings`), `sessions`
//! (paged by id) and `key` (which session a key hash is bound to). The gateway
//! decides who may ask what; these answer facts.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::EventStore;
use amai_projections::ProjectionHandle;
use bytes::Bytes;
use prost::Message;

use super::model::LlmReadModel;
use crate::query_service::{typed_endpoint, QueryHandler};

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string()).with_reason(query::reason::INTERNAL)
}

fn not_found(what: String) -> QueryError {
    QueryError::new(QueryCode::NotFound, what).with_reason(query::reason::NOT_FOUND)
}

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct QueryState {
    pub(crate) projection: ProjectionHandle,
    pub(crate) model: LlmReadModel,
    pub(crate) store: EventStore,
    pub(crate) timeout: Duration,
}

impl QueryState {
    /// Waits until every event of `llm/<session>` stored now is applied.
    pub(crate) async fn wait_recordings(&self, session: &str) -> Result<(), QueryError> {
        let aggregate = Aggregate::new(AggregateKind::Llm, session).map_err(|e| {
            QueryError::new(QueryCode::InvalidArgument, e.to_string())
                .with_reason(query::reason::INVALID_ARGUMENT)
        })?;
        let head = self.store.chain_head(&aggregate).await.map_err(|e| {
            QueryError::new(QueryCode::Unavailable, e.to_string())
                .with_reason(query::reason::WORKER_UNAVAILABLE)
        })?;
        if head.aggregate_seq == 0 {
            return Ok(());
        }
        let position = amai_bus::Position::new(aggregate.stream(), head.stream_seq);
        self.projection
            .wait_for_min_position(Some(&position.into()), self.timeout)
            .await
            .map_err(QueryError::from)
    }

    async fn session(&self, req: proto::GetLlmSessionRequest) -> Result<Bytes, QueryError> {
        self.projection
            .wait_for_min_position(req.min_position.as_ref(), self.timeout)
            .await
            .map_err(QueryError::from)?;
        if req.wait_recordings {
            self.wait_recordings(&req.session_id).await?;
        }
        let session = self
            .model
            .session(&req.session_id)
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no llm session {:?}; check the id, or pass min_position from the call that created it", req.session_id)))?;
        Ok(Bytes::from(session.encode_to_vec()))
    }

    fn sessions(&self, req: proto::ListLlmSessionsRequest) -> Result<Bytes, QueryError> {
        let owner = (!req.owner.is_empty()).then_some(req.owner.as_str());
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as usize
        };
        let (sessions, next) = self
            .model
            .list_sessions(owner, &req.after, limit)
            .map_err(internal)?;
        Ok(Bytes::from(
            proto::ListLlmSessionsResponse {
                sessions,
                next_after: next.unwrap_or_default(),
            }
            .encode_to_vec(),
        ))
    }

    fn key(&self, req: proto::LlmKeyLookup) -> Result<Bytes, QueryError> {
        let binding = self
            .model
            .key(&req.key_sha256)
            .map_err(internal)?
            .ok_or_else(|| not_found("the key hash is bound to no llm session".into()))?;
        Ok(Bytes::from(binding.encode_to_vec()))
    }
}

/// The endpoints of the llm query service.
pub(crate) fn endpoints(state: QueryState) -> Vec<(&'static str, QueryHandler)> {
    let state = Arc::new(state);
    vec![
        typed_endpoint(query::LLM_SESSION, state.clone(), |s, req| async move {
            s.session(req).await
        }),
        typed_endpoint(query::LLM_SESSIONS, state.clone(), |s, req| async move {
            s.projection.caught_up().await;
            s.sessions(req)
        }),
        typed_endpoint(query::LLM_KEY, state, |s, req| async move { s.key(req) }),
    ]
}
