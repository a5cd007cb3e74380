//! A nats-server, the streams and a gateway on 127.0.0.1:0, plus an SDK client.

use std::collections::BTreeMap;
use std::time::Duration;

use amai_bus::proto::{self, IdentityKind};
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::{Aggregate, EventStore, EventStoreConfig, IdentityKeys};
use amai_client::{Agent, AmaiClient};
use amai_gateway::{serve, GatewayConfig};
use amai_testkit::NatsServer;

/// Event size limit used by the tests (small, to test the limit cheaply).
pub(crate) const MAX_EVENT_BYTES: usize = 8 * 1024;

/// Blob size limit used by the tests.
pub(crate) const MAX_BLOB_BYTES: usize = 256 * 1024;

pub(crate) struct Env {
    pub(crate) client: AmaiClient,
    /// The deployment's trust root.
    #[allow(dead_code)]
    pub(crate) operator: IdentityKeys,
    pub(crate) url: String,
    pub(crate) metrics: std::sync::Arc<amai_gateway::metrics::GatewayMetrics>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), amai_gateway::GatewayError>>>,
    _nats: NatsServer,
}

impl Env {
    pub(crate) async fn start() -> Env {
        let nats = NatsServer::start();
        let nc = async_nats::connect(nats.url()).await.expect("connect nats");
        let js = async_nats::jetstream::new(nc.clone());
        ensure_streams(&js, &StreamSettings::default())
            .await
            .expect("streams");
        let operator = IdentityKeys::generate();
        let store = EventStore::new(
            js,
            EventStoreConfig::default()
                .max_event_bytes(MAX_EVENT_BYTES)
                .trust_root(operator.public_key()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = GatewayConfig::new(nc, store)
            .query_timeout(Duration::from_millis(500))
            .max_blob_bytes(MAX_BLOB_BYTES);
        let metrics = config.get_metrics();
        let server = tokio::spawn(serve(config, listener, async move {
            let _ = rx.await;
        }));
        let url = format!("http://{addr}");
        let client = AmaiClient::connect(url.clone())
            .await
            .expect("connect gateway");
        Env {
            client,
            operator,
            url,
            metrics,
            shutdown: Some(tx),
            server: Some(server),
            _nats: nats,
        }
    }

    /// A new agent registered under `name`.
    pub(crate) async fn agent(&self, name: &str) -> Agent {
        let agent = self.client.agent(IdentityKeys::generate());
        agent
            .register(name, IdentityKind::Agent, BTreeMap::new())
            .await
            .expect("register");
        agent
    }

    pub(crate) async fn head_seq(&self, aggregate: &Aggregate) -> u64 {
        self.client
            .chain_head(aggregate)
            .await
            .expect("head")
            .aggregate_seq
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("shutdown in time")
                .expect("join")
                .expect("serve ok");
        }
    }
}

pub(crate) fn agg(agent: &Agent) -> Aggregate {
    agent.aggregate().expect("aggregate")
}

/// The raw `EventService` client for hand-made requests.
pub(crate) fn events(
    env: &Env,
) -> proto::event_service_client::EventServiceClient<tonic::transport::Channel> {
    env.client.event_service()
}
