//! The jail query service (`amai.query.jail.*`), answered from the jail read
//! model: `get` (with `min_position`), `list` (paged by id), and the two
//! commands the gateway forwards with the verified caller: `run` (records
//! `jail.run_queued` for a created jail) and `delete` (stops the run, removes
//! what the jail left on the engine, records `jail.deleted`). The gateway
//! decides who may ask what (owner or operator); these answer facts and keep
//! the state rules.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::{self, payload::Kind, JailState};
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{AppendErrorKind, EventDraft, EventStore};
use amai_projections::ProjectionHandle;
use bytes::Bytes;
use prost::Message;

use super::engine::EngineSlot;
use super::model::JailReadModel;
use super::runner::{cancel_subject, CANCEL_WAIT};
use crate::query_service::{typed_endpoint, QueryHandler};
use crate::reactor::ServiceSigner;

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string()).with_reason(query::reason::INTERNAL)
}

fn unavailable(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Unavailable, e.to_string())
        .with_reason(query::reason::WORKER_UNAVAILABLE)
}

fn not_found(id: &str) -> QueryError {
    QueryError::new(
        QueryCode::NotFound,
        format!("no jail {id:?}; check the id, or pass min_position from the call that created it"),
    )
    .with_reason(query::reason::NOT_FOUND)
}

fn wrong_state(jail: &proto::Jail, what: &str) -> QueryError {
    let state = JailState::try_from(jail.state)
        .map(|s| s.as_str_name())
        .unwrap_or("JAIL_STATE_UNSPECIFIED");
    QueryError::new(
        QueryCode::FailedPrecondition,
        format!("jail {} is {state}: {what}", jail.jail_id),
    )
    .with_reason(query::reason::JAIL_STATE)
}

/// Everything the handlers share.
#[derive(Clone)]
pub(crate) struct QueryState {
    pub(crate) projection: ProjectionHandle,
    pub(crate) model: JailReadModel,
    pub(crate) store: EventStore,
    pub(crate) client: async_nats::Client,
    pub(crate) signer: ServiceSigner,
    pub(crate) engine: EngineSlot,
    pub(crate) timeout: Duration,
}

impl QueryState {
    async fn get(&self, req: proto::GetJailRequest) -> Result<Bytes, QueryError> {
        self.projection
            .wait_for_min_position(req.min_position.as_ref(), self.timeout)
            .await
            .map_err(QueryError::from)?;
        let jail = self.jail(&req.jail_id)?;
        Ok(Bytes::from(jail.encode_to_vec()))
    }

    fn jail(&self, id: &str) -> Result<proto::Jail, QueryError> {
        self.model
            .jail(id)
            .map_err(internal)?
            .ok_or_else(|| not_found(id))
    }

    fn list(&self, req: proto::ListJailsRequest) -> Result<Bytes, QueryError> {
        let owner = (!req.owner.is_empty()).then_some(req.owner.as_str());
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit as usize
        };
        let (jails, next) = self
            .model
            .list(owner, &req.after, limit, req.include_deleted)
            .map_err(internal)?;
        Ok(Bytes::from(
            proto::ListJailsResponse {
                jails,
                next_after: next.unwrap_or_default(),
            }
            .encode_to_vec(),
        ))
    }

    /// Appends a service record on `jail/<id>` with a deterministic id (a
    /// retried call appends nothing twice).
    async fn append(&self, jail_id: &str, id_seed: &str, payload: Kind) -> Result<(), QueryError> {
        let aggregate = Aggregate::new(AggregateKind::Jail, jail_id).map_err(|e| {
            QueryError::new(QueryCode::InvalidArgument, e.to_string())
                .with_reason(query::reason::INVALID_ARGUMENT)
        })?;
        let id = uuid::Uuid::new_v5(
            &JAIL_COMMAND_NAMESPACE,
            format!("{id_seed}/{jail_id}").as_bytes(),
        );
        for _ in 0..8 {
            let head = self
                .store
                .chain_head(&aggregate)
                .await
                .map_err(unavailable)?;
            let signer_head = self
                .store
                .chain_head(&Aggregate::agent(&self.signer.id).map_err(internal)?)
                .await
                .map_err(unavailable)?;
            let signed = EventDraft::new(aggregate.clone(), payload.clone())
                .after(head.aggregate_seq, head.hash)
                .signer_seq(signer_head.aggregate_seq)
                .id(id)
                .sign(&self.signer.keys, &self.signer.id);
            match self.store.append(signed).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == AppendErrorKind::Duplicate => return Ok(()),
                Err(e) if e.kind() == AppendErrorKind::Conflict => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(unavailable(format!("jail {jail_id} kept moving")))
    }

    /// Waits until the projection holds everything stored on `jail/<id>`.
    async fn caught_up_with(&self, jail_id: &str) -> Result<(), QueryError> {
        let aggregate = Aggregate::new(AggregateKind::Jail, jail_id).map_err(internal)?;
        let head = self
            .store
            .chain_head(&aggregate)
            .await
            .map_err(unavailable)?;
        if head.aggregate_seq == 0 {
            return Ok(());
        }
        let position = amai_bus::Position::new(aggregate.stream(), head.stream_seq);
        self.projection
            .wait_for_min_position(Some(&position.into()), self.timeout)
            .await
            .map_err(QueryError::from)
    }

    async fn run(&self, req: proto::RunJailRequest) -> Result<Bytes, QueryError> {
        self.projection.caught_up().await;
        self.caught_up_with(&req.jail_id).await?;
        let jail = self.jail(&req.jail_id)?;
        if jail.state != JailState::Created as i32 || jail.started_at.is_some() {
            return Err(wrong_state(
                &jail,
                "only a created jail that never ran can be run",
            ));
        }
        self.append(
            &jail.jail_id,
            "run_queued",
            Kind::JailRunQueued(proto::JailRunQueued {
                jail_id: jail.jail_id.clone(),
                requested_by: req.requested_by.clone(),
            }),
        )
        .await?;
        self.caught_up_with(&jail.jail_id).await?;
        Ok(Bytes::from(self.jail(&jail.jail_id)?.encode_to_vec()))
    }

    async fn delete(&self, req: proto::DeleteJailRequest) -> Result<Bytes, QueryError> {
        self.projection.caught_up().await;
        self.caught_up_with(&req.jail_id).await?;
        let mut jail = self.jail(&req.jail_id)?;
        if jail.state == JailState::Deleted as i32 {
            return Ok(Bytes::from(jail.encode_to_vec()));
        }
        // Stop a run in progress, or about to start (the instance preparing
        // or running it records the failure), asking again while it runs.
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        self.client
            .publish(cancel_subject(&jail.jail_id), Bytes::new())
            .await
            .map_err(unavailable)?;
        while jail.state == JailState::Running as i32 {
            self.client
                .publish(cancel_subject(&jail.jail_id), Bytes::new())
                .await
                .map_err(unavailable)?;
            if tokio::time::Instant::now() > deadline {
                return Err(unavailable(format!(
                    "jail {} did not stop within {CANCEL_WAIT:?}; retry the delete",
                    jail.jail_id
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.caught_up_with(&jail.jail_id).await?;
            jail = self.jail(&jail.jail_id)?;
        }
        if let Some(connected) = self.engine.get() {
            amai_jail::remove_managed(&connected.engine, Some(&jail.jail_id))
                .await
                .map_err(|e| unavailable(format!("removing the jail's containers failed: {e}")))?;
        }
        let reason = if req.reason.is_empty() {
            format!("deleted by {}", req.requested_by)
        } else {
            req.reason.clone()
        };
        self.append(
            &jail.jail_id,
            "deleted",
            Kind::JailDeleted(proto::JailDeleted {
                jail_id: jail.jail_id.clone(),
                reason,
            }),
        )
        .await?;
        self.caught_up_with(&jail.jail_id).await?;
        Ok(Bytes::from(self.jail(&jail.jail_id)?.encode_to_vec()))
    }
}

/// Namespace of the ids of records the query service appends.
const JAIL_COMMAND_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3c1f_52a0_7d4e_4b8a_9e61_5f0a_2b7c_d813);

/// The endpoints of the jail query service.
pub(crate) fn endpoints(state: QueryState) -> Vec<(&'static str, QueryHandler)> {
    let state = Arc::new(state);
    vec![
        typed_endpoint(query::JAIL_GET, state.clone(), |s, req| async move {
            s.get(req).await
        }),
        typed_endpoint(query::JAIL_LIST, state.clone(), |s, req| async move {
            s.projection.caught_up().await;
            s.list(req)
        }),
        typed_endpoint(query::JAIL_RUN, state.clone(), |s, req| async move {
            s.run(req).await
        }),
        typed_endpoint(query::JAIL_DELETE, state, |s, req| async move {
            s.delete(req).await
        }),
    ]
}
