//! Helpers shared by the bus's integration tests: a store on a real
//! nats-server, signed registrations and actions.
#![allow(dead_code, unreachable_pub)]

use amai_bus::proto::{self, payload::Kind, IdentityKind, SignedEvent};
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, EventStoreConfig, IdentityKeys};
use amai_testkit::NatsServer;
use prost::Message;

pub async fn setup(server: &NatsServer, config: EventStoreConfig) -> EventStore {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default())
        .await
        .expect("streams");
    EventStore::new(js, config)
}

pub fn genesis(
    keys: &IdentityKeys,
    name: &str,
    kind: IdentityKind,
    endorsement: Option<proto::Endorsement>,
) -> SignedEvent {
    let id = keys.identity_id();
    EventDraft::new(
        Aggregate::agent(&id).expect("agg"),
        Kind::AgentRegistered(proto::AgentRegistered {
            name: name.into(),
            kind: kind as i32,
            signing_key: keys.public_key().as_bytes().to_vec(),
            x25519_key: keys.x25519_public().to_vec(),
            metadata: Default::default(),
            endorsement,
        }),
    )
    .sign(keys, &id)
}

pub fn claim(keys: &IdentityKeys, name: &str, genesis: &SignedEvent) -> SignedEvent {
    let id = keys.identity_id();
    EventDraft::new(
        Aggregate::new(AggregateKind::Name, name).expect("name"),
        Kind::NameClaimed(proto::NameClaimed {
            name: name.into(),
            agent_id: id.clone(),
            genesis_hash: amai_bus::envelope::hash_bytes(&genesis.encode_to_vec()).to_vec(),
            genesis: genesis.encode_to_vec(),
        }),
    )
    .sign(keys, &id)
}

pub async fn register(store: &EventStore, keys: &IdentityKeys, name: &str) -> Aggregate {
    let g = genesis(keys, name, IdentityKind::Agent, None);
    store.append(claim(keys, name, &g)).await.expect("claim");
    store.append(g).await.expect("genesis");
    Aggregate::agent(keys.identity_id()).expect("agg")
}

pub async fn action(store: &EventStore, keys: &IdentityKeys, agg: &Aggregate) -> SignedEvent {
    let head = store.chain_head(agg).await.expect("head");
    EventDraft::action(agg.clone(), "task.done", "{}")
        .after(head.aggregate_seq, head.hash)
        .sign(keys, &agg.id)
}
