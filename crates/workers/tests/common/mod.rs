//! Shared helpers of the workers' integration tests: a deployment on a real
//! nats-server (streams, operator, the identity service key), registrations and
//! bounded waits on conditions.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use amai_bus::proto::IdentityKind;
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, EventStoreConfig, IdentityKeys, Position};
use amai_testkit::NatsServer;
use amai_workers::bootstrap::{ensure_identity, ensure_operator, ensure_service};
use amai_workers::reactor::ServiceSigner;

pub struct Deployment {
    pub server: NatsServer,
    pub client: async_nats::Client,
    pub store: EventStore,
    pub operator: IdentityKeys,
    pub signer: ServiceSigner,
}

pub async fn deploy() -> Deployment {
    deploy_with(StreamSettings::default()).await
}

pub async fn deploy_with(settings: StreamSettings) -> Deployment {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let (store, operator, signer) = bootstrap(&client, &settings).await;
    Deployment {
        server,
        client,
        store,
        operator,
        signer,
    }
}

/// Streams, the operator and the identity role's service identity.
pub async fn bootstrap(
    client: &async_nats::Client,
    settings: &StreamSettings,
) -> (EventStore, IdentityKeys, ServiceSigner) {
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(&js, settings).await.expect("streams");
    let operator = IdentityKeys::generate();
    let store = EventStore::new(
        js,
        EventStoreConfig::default().trust_root(operator.public_key()),
    );
    let now = amai_bus::envelope::now_timestamp();
    ensure_operator(&store, &operator, "operator", now)
        .await
        .expect("operator");
    let service = IdentityKeys::generate();
    let id = ensure_service(
        &store,
        &operator,
        &service,
        "svc-identity",
        &[
            amai_bus::subjects::AggregateKind::Trust,
            amai_bus::subjects::AggregateKind::Failure,
        ],
        now,
    )
    .await
    .expect("service");
    (store, operator, ServiceSigner { keys: service, id })
}

/// Registers a fresh service identity `name`, endorsed by `operator` to
/// write `kinds`; returns its signer.
pub async fn service(
    store: &EventStore,
    operator: &IdentityKeys,
    name: &str,
    kinds: &[AggregateKind],
) -> ServiceSigner {
    let keys = IdentityKeys::generate();
    let id = ensure_service(
        store,
        operator,
        &keys,
        name,
        kinds,
        amai_bus::envelope::now_timestamp(),
    )
    .await
    .expect("service");
    ServiceSigner { keys, id }
}

/// Registers a fresh agent `name`; returns its id and the genesis position.
pub async fn register(store: &EventStore, name: &str) -> (String, Position) {
    let keys = IdentityKeys::generate();
    let id = ensure_identity(
        store,
        &keys,
        name,
        IdentityKind::Agent,
        None,
        amai_bus::envelope::now_timestamp(),
    )
    .await
    .expect("register");
    let head = store
        .chain_head(&Aggregate::agent(&id).expect("agg"))
        .await
        .expect("head");
    (id, Position::new("AMAI_AGENTS", head.stream_seq))
}

/// The event id of the genesis `register` appended for `agent_id`.
pub fn genesis_id(agent_id: &str) -> String {
    amai_workers::reactor::output_id(agent_id, 0).to_string()
}

pub async fn trust_seq(store: &EventStore, id: &str) -> u64 {
    store
        .chain_head(&Aggregate::new(AggregateKind::Trust, id).expect("agg"))
        .await
        .expect("head")
        .aggregate_seq
}

/// Polls `f` until it holds; fails the test after 20 s.
pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the durable `name` on `stream` has nothing pending or unacked.
pub async fn consumer_drained(store: &EventStore, stream: &str, name: &str) -> bool {
    let Ok(s) = store.jetstream().get_stream(stream).await else {
        return false;
    };
    let Ok(mut c) = s
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(name)
        .await
    else {
        return false;
    };
    match c.info().await {
        Ok(info) => info.num_ack_pending == 0 && info.num_pending == 0,
        Err(_) => false,
    }
}
