//! # amai-gateway
//!
//! Amai's stateless gRPC gateway. Command RPCs validate signed events and append
//! them through [`amai_bus::EventStore`]; query RPCs ask the worker roles over NATS
//! ([`amai_bus::query`]); `Subscribe` streams events with flow control. Requests
//! that read private data carry a request signature ([`amai_bus::request`])
//! checked against the signer's current key, a freshness window and a replay cache
//! shared by every gateway instance (the JetStream KV bucket `AMAI_NONCES`).
//! Serves `grpc.health.v1` and server reflection (`grpc.reflection.v1` and
//! `v1alpha`) next to the services.
//!
//! - [`status`] — the one mapping of domain errors to gRPC codes;
//! - [`auth`] — request-signature checks and the nonce cache;
//! - [`access`] — the read access rule (who reads which events and blobs);
//! - [`identity`] — `IdentityService`;
//! - [`events`] — `EventService`;
//! - [`blobs`] — `BlobService`;
//! - [`llm`] — `LlmService` (LLM recording sessions);
//! - [`jail`] — `JailService` (jails);
//! - [`trust`] — `TrustService` (endorsements, scores, alerts, explanations).
#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod auth;
pub mod blobs;
pub mod catalog;
pub mod events;
pub mod identity;
pub mod jail;
pub mod llm;
pub mod metrics;
pub mod status;
pub mod trust;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::agent_service_server::AgentServiceServer;
use amai_bus::proto::audit_service_server::AuditServiceServer;
use amai_bus::proto::blob_service_server::BlobServiceServer;
use amai_bus::proto::event_service_server::EventServiceServer;
use amai_bus::proto::identity_service_server::IdentityServiceServer;
use amai_bus::proto::jail_service_server::JailServiceServer;
use amai_bus::proto::llm_service_server::LlmServiceServer;
use amai_bus::proto::trust_service_server::TrustServiceServer;
use amai_bus::EventStore;

pub use audit::AuditSvc;
pub use catalog::CatalogSvc;
pub use events::EventSvc;
pub use identity::IdentitySvc;
pub use jail::JailSvc;
pub use llm::LlmSvc;
pub use status::{to_status, ApiError};
pub use trust::TrustSvc;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default freshness window of request signatures.
pub const DEFAULT_FRESHNESS_WINDOW: Duration = Duration::from_secs(30);
/// Default timeout of queries to worker roles.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Headroom above the largest event for the rest of a gRPC request message.
const DECODING_HEADROOM: usize = 16 * 1024;
/// Default largest blob accepted by `PutBlob`.
pub const DEFAULT_MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The reflection service could not be built from the descriptor set.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The replay-cache bucket could not be created.
    #[error("cannot create the nonce replay cache (JetStream KV bucket {bucket}): {detail}; is JetStream enabled?")]
    Nonces {
        /// The bucket.
        bucket: String,
        /// The server's answer.
        detail: String,
    },
    /// The blob bucket could not be opened or created.
    #[error("cannot open the blob store: {0}; is JetStream enabled?")]
    Blobs(#[from] amai_bus::blob::BlobError),
    /// The blob uploader bucket could not be opened or created.
    #[error(
        "cannot open the blob uploader bucket (AMAI_BLOB_UPLOADERS): {0}; is JetStream enabled?"
    )]
    Uploaders(String),
    /// The event store has no trust root: request signatures cover the
    /// deployment id, which is derived from it.
    #[error("the event store has no trust root; configure the deployment's trust root (--trust-root / AMAI_TRUST_ROOT)")]
    NoTrustRoot,
    /// The server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Gateway settings (builder style).
#[derive(Clone)]
pub struct GatewayConfig {
    listen: SocketAddr,
    nats: async_nats::Client,
    store: EventStore,
    query_timeout: Duration,
    freshness_window: Duration,
    max_event_bytes: usize,
    metrics: Arc<metrics::GatewayMetrics>,
    replicas: usize,
    max_blob_bytes: usize,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("listen", &self.listen)
            .field("query_timeout", &self.query_timeout)
            .field("freshness_window", &self.freshness_window)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish_non_exhaustive()
    }
}

impl GatewayConfig {
    /// Settings over a NATS client (for queries) and an event store (for appends
    /// and reads; streams must exist). The event size limit defaults to the store's.
    pub fn new(nats: async_nats::Client, store: EventStore) -> Self {
        let max_event_bytes = store.config().get_max_event_bytes();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            nats,
            store,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            freshness_window: DEFAULT_FRESHNESS_WINDOW,
            max_event_bytes,
            metrics: Arc::default(),
            replicas: 1,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
        }
    }

    /// Largest blob `PutBlob` accepts (default 16 MiB).
    pub fn max_blob_bytes(mut self, bytes: usize) -> Self {
        self.max_blob_bytes = bytes;
        self
    }

    /// Replicas of the gateway's own JetStream state (the nonce bucket); use the
    /// streams' replica count (default 1).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Where request counts and latencies are recorded (default: a fresh set,
    /// readable through [`GatewayConfig::get_metrics`]).
    pub fn metrics(mut self, metrics: Arc<metrics::GatewayMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The request metrics this gateway records.
    pub fn get_metrics(&self) -> Arc<metrics::GatewayMetrics> {
        self.metrics.clone()
    }

    /// Address [`GatewayConfig::bind`] listens on (default `127.0.0.1:50051`).
    pub fn listen_addr(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// How long a query waits for a worker role (default 5 s).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How far a request signature's timestamp may be from the gateway clock
    /// (default ±30 s). Nonces are remembered for twice this long.
    pub fn freshness_window(mut self, window: Duration) -> Self {
        self.freshness_window = window;
        self
    }

    /// Largest encoded event accepted (default: the store's limit). gRPC messages
    /// a little larger than this are refused before they are decoded.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// The configured listen address.
    pub fn get_listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Binds the configured listen address.
    pub async fn bind(&self) -> Result<tokio::net::TcpListener, GatewayError> {
        tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: self.listen,
                source,
            })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) nats: async_nats::Client,
    pub(crate) store: EventStore,
    pub(crate) query_timeout: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) auth: auth::RequestAuthenticator,
    /// Flips to `true` when the gateway shuts down: open subscriptions end so the
    /// graceful shutdown does not wait for clients that never hang up.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// Refuses an event over the gateway's size limit.
    pub(crate) fn check_size(&self, event: &amai_bus::proto::SignedEvent) -> Result<(), ApiError> {
        let size = prost::Message::encoded_len(event);
        if size > self.max_event_bytes {
            return Err(ApiError::TooLarge(format!(
                "event is {size} bytes, over the {} byte limit; put large content in the blob store and reference its digest",
                self.max_event_bytes
            )));
        }
        Ok(())
    }

    /// Decides a read of `aggregate` by `reader` before anything is read (see
    /// [`access`]): someone else's agent chain is readable whole only when its
    /// owner is an operator or service identity (one cached fold of the owner's
    /// chain), else only its key events (`key_events_only`).
    pub(crate) async fn check_aggregate(
        &self,
        reader: &access::Reader,
        aggregate: &amai_bus::Aggregate,
        key_events_only: bool,
    ) -> Result<(), ApiError> {
        let denied = || ApiError::ReadNotPermitted {
            actor: reader.id.clone(),
            what: aggregate.to_string(),
        };
        match reader.aggregate_access(aggregate) {
            access::AggregateAccess::All => Ok(()),
            access::AggregateAccess::Denied => Err(denied()),
            access::AggregateAccess::ForeignAgent if key_events_only => Ok(()),
            access::AggregateAccess::ForeignAgent => {
                if self.is_infrastructure(&aggregate.id).await? {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
            access::AggregateAccess::RecordedOwner => {
                if self.recorded_owner(aggregate).await?.as_deref() == Some(reader.id.as_str()) {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
        }
    }

    /// The owner a role records for `aggregate` (one query): the owner of an
    /// LLM session (`llm/<session>`); `None` when unknown or not recorded.
    pub(crate) async fn recorded_owner(
        &self,
        aggregate: &amai_bus::Aggregate,
    ) -> Result<Option<String>, ApiError> {
        if aggregate.kind != amai_bus::subjects::AggregateKind::Llm {
            return Ok(None);
        }
        let req = amai_bus::proto::GetLlmSessionRequest {
            session_id: aggregate.id.clone(),
            min_position: None,
            wait_recordings: false,
        };
        match self
            .query::<_, amai_bus::proto::LlmSession>(amai_bus::query::LLM_SESSION, &req)
            .await
        {
            Ok(session) => Ok(Some(session.owner)),
            Err(ApiError::Query(e)) if e.code == amai_bus::query::QueryCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `id` is an operator or service identity (whose chains everyone
    /// authenticated reads).
    pub(crate) async fn is_infrastructure(&self, id: &str) -> Result<bool, ApiError> {
        use amai_bus::proto::IdentityKind;
        match self.store.identity_state(id).await {
            Ok(s) => Ok(matches!(
                s.kind,
                IdentityKind::Operator | IdentityKind::Service
            )),
            Err(amai_bus::store::ReadError::Unavailable(m)) => Err(ApiError::Unavailable(format!(
                "cannot read {id}'s chain: {m}"
            ))),
            Err(_) => Ok(false),
        }
    }

    /// Sends a query to a worker role.
    pub(crate) async fn query<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        subject: &str,
        req: &Req,
    ) -> Result<Resp, ApiError> {
        self.query_within(subject, req, self.query_timeout).await
    }

    /// [`Shared::query`] with its own bound (queries that do slow work: a
    /// trust report narrated by an LLM).
    pub(crate) async fn query_within<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        subject: &str,
        req: &Req,
        timeout: std::time::Duration,
    ) -> Result<Resp, ApiError> {
        Ok(amai_bus::query::request(&self.nats, subject, req, timeout).await?)
    }
}

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn serve(
    config: GatewayConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let auth = auth::RequestAuthenticator::new(
        config.store.clone(),
        config.freshness_window,
        config.replicas,
    )
    .await?;
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let shared = Arc::new(Shared {
        nats: config.nats,
        store: config.store,
        query_timeout: config.query_timeout,
        max_event_bytes: config.max_event_bytes,
        auth,
        stopping,
    });
    let max_message = config.max_event_bytes + DECODING_HEADROOM;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IdentityServiceServer<IdentitySvc>>()
        .await;
    health.set_serving::<EventServiceServer<EventSvc>>().await;
    health
        .set_serving::<BlobServiceServer<blobs::BlobSvc>>()
        .await;
    health.set_serving::<LlmServiceServer<LlmSvc>>().await;
    health.set_serving::<JailServiceServer<JailSvc>>().await;
    health.set_serving::<TrustServiceServer<TrustSvc>>().await;
    health.set_serving::<AuditServiceServer<AuditSvc>>().await;
    health.set_serving::<AgentServiceServer<CatalogSvc>>().await;
    // Both reflection versions: grpcurl and current tools speak v1, many stock
    // tools (older grpcurl, Postman, grpc_cli builds) only v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(amai_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(amai_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let identity = IdentityServiceServer::new(IdentitySvc::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let events = EventServiceServer::new(EventSvc::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let blob_store = amai_bus::blob::BlobStore::open(
        shared.store.jetstream(),
        config.replicas,
        config.max_event_bytes,
    )
    .await?;
    let uploaders = blobs::open_uploaders(shared.store.jetstream(), config.replicas).await?;
    let llm = LlmServiceServer::new(LlmSvc::new(
        shared.clone(),
        blob_store.clone(),
        uploaders.clone(),
    ))
    .max_decoding_message_size(max_message);
    let jail = JailServiceServer::new(JailSvc::new(
        shared.clone(),
        blob_store.clone(),
        uploaders.clone(),
    ))
    .max_decoding_message_size(max_message);
    let trust = TrustServiceServer::new(TrustSvc::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let audit = AuditServiceServer::new(AuditSvc::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let catalog = AgentServiceServer::new(CatalogSvc::new(shared.clone()))
        .max_decoding_message_size(max_message);
    let blob_service = BlobServiceServer::new(blobs::BlobSvc::new(
        shared,
        blob_store,
        uploaders,
        config.max_blob_bytes,
    ))
    .max_decoding_message_size(config.max_blob_bytes + DECODING_HEADROOM);
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "gateway listening");
    tonic::transport::Server::builder()
        .layer(metrics::MetricsLayer(config.metrics))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(identity)
        .add_service(events)
        .add_service(blob_service)
        .add_service(llm)
        .add_service(jail)
        .add_service(trust)
        .add_service(audit)
        .add_service(catalog)
        .serve_with_incoming_shutdown(
            // Small request/response frames must not wait for Nagle's algorithm.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    tracing::info!("gateway stopped");
    Ok(())
}
