//! The identity role: registration, keys, the soulchain, messaging.
//!
//! One instance = the [`TrustInitializer`] reactor on the shared durable
//! consumer, the identity projection in this instance's own sled, and the
//! identity query service (`amai.query.identity.*`) answered from it. Queries
//! carrying `min_position` wait, bounded, until the projection has reached it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::EventStore;
use amai_projections::{IdentityProjection, IdentityReadModel, ProjectionHandle, ProjectionRunner};
use bytes::Bytes;
use prost::Message;

use crate::query_service::{start_queries, QueryHandler};
use crate::reactor::{run_reactor, ReactorStats, ServiceSigner};
use crate::trust_init::TrustInitializer;

/// Configuration of an identity role instance (builder style).
#[derive(Clone)]
pub struct IdentityRoleConfig {
    client: async_nats::Client,
    store: EventStore,
    data_dir: PathBuf,
    signer: ServiceSigner,
    min_position_timeout: Duration,
}

impl IdentityRoleConfig {
    /// An instance keeping its projections under `data_dir`, signing with `signer`.
    pub fn new(
        client: async_nats::Client,
        store: EventStore,
        data_dir: impl Into<PathBuf>,
        signer: ServiceSigner,
    ) -> Self {
        Self {
            client,
            store,
            data_dir: data_dir.into(),
            signer,
            min_position_timeout: Duration::from_secs(2),
        }
    }

    /// How long a query waits for its `min_position` (default 2 s).
    pub fn min_position_timeout(mut self, d: Duration) -> Self {
        self.min_position_timeout = d;
        self
    }
}

/// Why the role stopped.
#[derive(Debug, thiserror::Error)]
pub enum IdentityRoleError {
    /// The sled store could not be opened.
    #[error("cannot open the projection store at {path}: {detail}")]
    Storage {
        /// The path.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A component failed.
    #[error("{0}")]
    Component(String),
}

/// A running identity role.
pub struct IdentityRole {
    /// The identity projection's handle (positions, waits, violations).
    pub projection: ProjectionHandle,
    /// The read model.
    pub read_model: IdentityReadModel,
    /// Reactor counters.
    pub reactor_stats: Arc<ReactorStats>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<Result<(), String>>,
    db: sled::Db,
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl IdentityRole {
    /// Starts the role's projection, reactor and query service.
    pub async fn start(config: IdentityRoleConfig) -> Result<IdentityRole, IdentityRoleError> {
        let path = config.data_dir.join("identity.sled");
        let db = sled::open(&path).map_err(|e| IdentityRoleError::Storage {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let projection = ProjectionRunner::spawn(
            db.clone(),
            config.store.clone(),
            Arc::new(IdentityProjection),
            stopped(stop_rx.clone()),
        )
        .await
        .map_err(|e| IdentityRoleError::Component(e.to_string()))?;
        let read_model = IdentityReadModel::open(&db)
            .map_err(|e| IdentityRoleError::Component(e.to_string()))?;
        let reactor_stats = Arc::new(ReactorStats::default());
        let mut tasks = tokio::task::JoinSet::new();
        {
            let (store, signer, stats, shutdown) = (
                config.store.clone(),
                config.signer.clone(),
                reactor_stats.clone(),
                stopped(stop_rx.clone()),
            );
            tasks.spawn(async move {
                run_reactor(Arc::new(TrustInitializer), store, signer, stats, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        let queries = start_queries(
            config.client.clone(),
            query::IDENTITY_SERVICE,
            env!("CARGO_PKG_VERSION"),
            "amai identity queries",
            query_endpoints(
                projection.clone(),
                read_model.clone(),
                config.min_position_timeout,
                crate::query_service::reply_budget(&config.client),
            ),
        )
        .await
        .map_err(|e| IdentityRoleError::Component(e.to_string()))?;
        tasks.spawn(async move {
            queries.run_until(stopped(stop_rx)).await;
            Ok(())
        });
        Ok(IdentityRole {
            projection,
            read_model,
            reactor_stats,
            stop,
            tasks,
            db,
        })
    }

    /// Runs until `shutdown`, then stops every component and flushes sled.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), IdentityRoleError> {
        tokio::select! {
            _ = shutdown => {}
            Some(done) = self.tasks.join_next() => {
                let detail = match done {
                    Ok(Ok(())) => "a component stopped unexpectedly".to_string(),
                    Ok(Err(e)) => e,
                    Err(e) => e.to_string(),
                };
                self.stop().await;
                return Err(IdentityRoleError::Component(detail));
            }
        }
        self.stop().await;
        Ok(())
    }

    /// Stops every component (in-flight work finishes) and flushes sled.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.projection.stopped().await;
        let _ = self.db.flush_async().await;
    }
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
