//! The projection runner and the identity read model against a real nats-server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto::{
    self, get_identity_request::Selector, payload::Kind, GetIdentityRequest, IdentityKind,
};
use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::subjects::AggregateKind;
use amai_bus::verify::FailureKind;
use amai_bus::{
    Aggregate, AppendOutcome, EventDraft, EventStore, EventStoreConfig, IdentityKeys, Position,
};
use amai_projections::{
    rebuild_projection, AppliedEvent, ApplyError, IdentityProjection, IdentityReadModel,
    Projection, ProjectionHandle, ProjectionRunner, ViolationKind, WaitError,
};
use amai_testkit::NatsServer;
use prost::Message;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    _nats: NatsServer,
    store: EventStore,
    operator: IdentityKeys,
    service: IdentityKeys,
    last_position: Position,
}

/// An identity and the head of its chain.
struct Agent {
    keys: IdentityKeys,
    id: String,
    head: AppendOutcome,
    /// Where its name claim is.
    name_position: Position,
}

impl Env {
    async fn start() -> Env {
        let nats = NatsServer::start();
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        ensure_streams(&js, &StreamSettings::default())
            .await
            .unwrap();
        let operator = IdentityKeys::generate();
        let store = EventStore::new(
            js,
            EventStoreConfig::default().trust_root(operator.public_key()),
        );
        let mut env = Env {
            _nats: nats,
            store,
            operator,
            service: IdentityKeys::generate(),
            last_position: Position::new("AMAI_AGENTS", 0),
        };
        let op = env.operator.clone();
        env.register(&op, "root-operator", IdentityKind::Operator, None)
            .await;
        let svc = env.service.clone();
        let endorsement = proto::Endorsement {
            operator_id: env.operator.identity_id(),
            operator_key: env.operator.public_key().as_bytes().to_vec(),
            signature: env
                .operator
                .endorse(&svc.public_key(), "service", &["trust".to_string()])
                .to_vec(),
            operator_seq: 0,
            scopes: vec!["trust".into()],
        };
        env.register(
            &svc,
            "trust-service",
            IdentityKind::Service,
            Some(endorsement),
        )
        .await;
        env
    }

    async fn append(&mut self, signed: proto::SignedEvent) -> AppendOutcome {
        let out = self.store.append(signed).await.unwrap();
        self.last_position = out.position.clone();
        out
    }

    async fn register(
        &mut self,
        keys: &IdentityKeys,
        name: &str,
        kind: IdentityKind,
        endorsement: Option<proto::Endorsement>,
    ) -> Agent {
        let id = keys.identity_id();
        let genesis = EventDraft::new(
            Aggregate::agent(&id).unwrap(),
            Kind::AgentRegistered(proto::AgentRegistered {
                name: name.into(),
                kind: kind as i32,
                signing_key: keys.public_key().as_bytes().to_vec(),
                x25519_key: keys.x25519_public().to_vec(),
                metadata: [("role".to_string(), name.to_string())]
                    .into_iter()
                    .collect(),
                endorsement,
            }),
        )
        .sign(keys, &id);
        let genesis_bytes = genesis.encode_to_vec();
        let head = self.append(genesis).await;
        let claim = EventDraft::new(
            Aggregate::new(AggregateKind::Name, name).unwrap(),
            Kind::NameClaimed(proto::NameClaimed {
                name: name.into(),
                agent_id: id.clone(),
                genesis_hash: head.hash.to_vec(),
                genesis: genesis_bytes,
            }),
        )
        .sign(keys, &id);
        let name_position = self.append(claim).await.position;
        Agent {
            keys: keys.clone(),
            id,
            head,
            name_position,
        }
    }

    async fn agent(&mut self, name: &str) -> Agent {
        let keys = IdentityKeys::generate();
        self.register(&keys, name, IdentityKind::Agent, None).await
    }

    async fn act(&mut self, agent: &mut Agent, payload: Kind) -> AppendOutcome {
        let signed = EventDraft::new(Aggregate::agent(&agent.id).unwrap(), payload)
            .after(agent.head.aggregate_seq, agent.head.hash)
            .sign(&agent.keys, &agent.id);
        let out = self.append(signed).await;
        agent.head = out.clone();
        out
    }

    async fn message(&mut self, from: &mut Agent, to: &Agent) -> AppendOutcome {
        self.act(
            from,
            Kind::AgentMessageSent(proto::AgentMessageSent {
                to: to.id.clone(),
                sealed: vec![1, 2, 3],
                recipient_x25519_key: to.keys.x25519_public().to_vec(),
            }),
        )
        .await
    }

    async fn trust(&mut self, agent_id: &str, score: f64) -> AppendOutcome {
        let sid = self.service.identity_id();
        let signed = EventDraft::new(
            Aggregate::new(AggregateKind::Trust, agent_id).unwrap(),
            Kind::TrustInitialized(proto::TrustInitialized {
                agent_id: agent_id.into(),
                score,
            }),
        )
        .signer_seq(1)
        .sign(&self.service, &sid);
        self.append(signed).await
    }

    async fn spawn(
        &self,
        db: &sled::Db,
        projection: Arc<dyn Projection>,
    ) -> (ProjectionHandle, watch::Sender<bool>) {
        let (tx, mut rx) = watch::channel(false);
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let handle = ProjectionRunner::spawn(db.clone(), self.store.clone(), projection, shutdown)
            .await
            .unwrap();
        (handle, tx)
    }
}

/// Opens sled, waiting for a just-aborted runner's background flush (sled's own
/// thread) to release the lock, as a restarted process would.
async fn open_db(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reopen sled: {e}"),
        }
    }
}

fn by_id(id: &str) -> GetIdentityRequest {
    GetIdentityRequest {
        selector: Some(Selector::Id(id.into())),
        min_position: None,
    }
}

fn by_name(name: &str) -> GetIdentityRequest {
    GetIdentityRequest {
        selector: Some(Selector::Name(name.into())),
        min_position: None,
    }
}

async fn wait(handle: &ProjectionHandle, pos: &Position) {
    handle.wait_for(pos, WAIT).await.unwrap();
}

async fn stop(handle: ProjectionHandle, shutdown: watch::Sender<bool>) {
    shutdown.send_replace(true);
    handle.stopped().await;
}

/// A fixed scenario: 2 infrastructure identities, alice and bob, messages, a
/// rotation, trust, a self-revocation (carol) and an operator revocation (dave).
/// Returns the last position of each stream touched.
async fn scenario(env: &mut Env) -> (Agent, Agent, Vec<Position>) {
    let mut alice = env.agent("alice").await;
    let mut bob = env.agent("bob").await;
    env.message(&mut alice, &bob).await;
    env.message(&mut alice, &bob).await;
    env.message(&mut bob, &alice).await;
    // Alice rotates, then signs with the new key.
    let new_keys = IdentityKeys::generate();
    let proof = new_keys
        .rotation_proof(
            &Aggregate::agent(&alice.id).unwrap().to_string(),
            alice.head.aggregate_seq + 1,
            &alice.keys.public_key(),
        )
        .to_vec();
    env.act(
        &mut alice,
        Kind::AgentKeyRotated(proto::AgentKeyRotated {
            new_signing_key: new_keys.public_key().as_bytes().to_vec(),
            new_x25519_key: new_keys.x25519_public().to_vec(),
            reason: "scheduled".into(),
            new_key_proof: proof,
        }),
    )
    .await;
    alice.keys = new_keys;
    env.message(&mut alice, &bob).await;
    let trust = env.trust(&alice.id, 0.75).await;
    let mut carol = env.agent("carol").await;
    env.act(
        &mut carol,
        Kind::AgentRevoked(proto::AgentRevoked {
            reason: "retired".into(),
        }),
    )
    .await;
    let dave = env.agent("dave").await;
    let op_id = env.operator.identity_id();
    let revoke = EventDraft::new(
        Aggregate::agent(&dave.id).unwrap(),
        Kind::AgentRevoked(proto::AgentRevoked {
            reason: "compromised".into(),
        }),
    )
    .after(dave.head.aggregate_seq, dave.head.hash)
    .signer_seq(1)
    .sign(&env.operator, &op_id);
    let agents = env.append(revoke).await.position;
    let names = env
        .store
        .chain_head(&Aggregate::new(AggregateKind::Name, "dave").unwrap())
        .await
        .unwrap()
        .to_proto()
        .position
        .unwrap()
        .into();
    (alice, bob, vec![agents, names, trust.position])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_registrations_messages_rotation_revocation_and_trust() {
    let mut env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).await;
    let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
    let (alice, bob, positions) = scenario(&mut env).await;
    for p in &positions {
        wait(&handle, p).await;
    }
    tokio::time::timeout(WAIT, handle.caught_up())
        .await
        .unwrap();
    assert!(handle.is_caught_up());
    let model = IdentityReadModel::new(handle.tree().clone());

    // Identity by id and by name, current (rotated) keys, trust, did of the genesis key.
    let a = model.get_identity(&by_id(&alice.id)).unwrap().unwrap();
    assert_eq!(a.name, "alice");
    assert_eq!(a.kind, IdentityKind::Agent as i32);
    assert_eq!(a.signing_key, alice.keys.public_key().as_bytes().to_vec());
    assert_eq!(a.x25519_key, alice.keys.x25519_public().to_vec());
    assert_eq!(a.chain_length, 5);
    assert_eq!(a.head_hash, alice.head.hash.to_vec());
    assert_eq!(a.trust_score, Some(0.75));
    assert_eq!(a.metadata.get("role").map(String::as_str), Some("alice"));
    assert!(a.did.starts_with("did:key:z"));
    assert!(!a.revoked);
    assert!(a.registered_at.is_some());
    assert_eq!(
        model.get_identity(&by_name("alice")).unwrap().unwrap().id,
        alice.id
    );
    assert!(model.get_identity(&by_name("nobody")).unwrap().is_none());
    assert!(model
        .get_identity(&by_id("0123456789abcdef0123456789abcdef"))
        .unwrap()
        .is_none());
    assert!(model.get_identity(&GetIdentityRequest::default()).is_err());

    // Key history.
    let keys = model.get_keys(&by_name("alice")).unwrap().unwrap();
    assert_eq!(keys.history.len(), 2);
    assert_eq!(
        (
            keys.history[0].from_aggregate_seq,
            keys.history[0].until_aggregate_seq
        ),
        (1, 4)
    );
    assert_eq!(
        (
            keys.history[1].from_aggregate_seq,
            keys.history[1].until_aggregate_seq
        ),
        (5, 0)
    );
    assert_eq!(
        keys.signing_key,
        alice.keys.public_key().as_bytes().to_vec()
    );
    assert_eq!(keys.did, a.did);

    // Revocations: self and by an operator.
    let carol = model.get_identity(&by_name("carol")).unwrap().unwrap();
    assert!(carol.revoked);
    assert_eq!(carol.revoked_reason, "retired");
    let dave = model.get_identity(&by_name("dave")).unwrap().unwrap();
    assert!(dave.revoked);
    assert_eq!(dave.revoked_reason, "compromised");
    assert!(model
        .get_identity(&by_name("trust-service"))
        .unwrap()
        .unwrap()
        .trust_score
        .is_none());

    // Inbox: three messages to bob, whole signed events, paging by stream seq.
    let inbox = model.list_inbox(&bob.id, 0, 0).unwrap();
    assert_eq!(inbox.len(), 3);
    for m in &inbox {
        let ev =
            amai_bus::VerifiedEvent::decode(&m.event.clone().unwrap().encode_to_vec()).unwrap();
        assert_eq!(ev.actor(), alice.id);
        let Kind::AgentMessageSent(sent) = &ev.payload else {
            panic!("not a message")
        };
        assert_eq!(sent.to, bob.id);
    }
    let first_seq = inbox[0].position.as_ref().unwrap().seq;
    assert_eq!(model.list_inbox(&bob.id, first_seq, 0).unwrap().len(), 2);
    assert_eq!(model.list_inbox(&bob.id, 0, 1).unwrap().len(), 1);
    assert_eq!(model.list_inbox(&alice.id, 0, 0).unwrap().len(), 1);

    // Stats: 6 identities (operator, service, alice, bob, carol, dave).
    let stats = model.stats().unwrap();
    assert_eq!(stats.identities, 6);
    assert_eq!(stats.messages, 4);
    assert_eq!(stats.revoked, 2);
    assert_eq!(stats.per_kind.get("agent"), Some(&4));
    assert_eq!(stats.per_kind.get("operator"), Some(&1));
    assert_eq!(stats.per_kind.get("service"), Some(&1));
    // AMAI_AGENTS: 6 geneses + 4 messages + rotation + 2 revocations; 6 names; 1 trust.
    assert_eq!(stats.events, 13 + 6 + 1);
    assert_eq!(stats.integrity_violations, 0);
    assert_eq!(handle.positions().iter().map(|p| p.seq).sum::<u64>(), 20);
    stop(handle, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_exactly_without_double_counting() {
    let mut env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, _, positions) = scenario(&mut env).await;
    let before = {
        let db = open_db(dir.path()).await;
        let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
        for p in &positions {
            wait(&handle, p).await;
        }
        let stats = IdentityReadModel::new(handle.tree().clone())
            .stats()
            .unwrap();
        stop(handle, shutdown).await;
        stats
    };
    // Reopen: nothing new, nothing re-applied.
    let db = open_db(dir.path()).await;
    let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
    for p in &positions {
        assert_eq!(
            handle.position(&p.stream),
            p.seq,
            "checkpoint of {} survives the restart",
            p.stream
        );
    }
    tokio::time::timeout(WAIT, handle.caught_up())
        .await
        .unwrap();
    let model = IdentityReadModel::new(handle.tree().clone());
    assert_eq!(model.stats().unwrap(), before);
    // New events after the restart are applied once.
    let mut erin = env.agent("erin").await;
    let frank = env.agent("frank").await;
    let last = env.message(&mut erin, &frank).await;
    wait(&handle, &last.position).await;
    wait(&handle, &frank.name_position).await;
    let after = model.stats().unwrap();
    assert_eq!(after.identities, before.identities + 2);
    assert_eq!(after.messages, before.messages + 1);
    assert_eq!(after.events, before.events + 5);
    stop(handle, shutdown).await;
}

/// The identity projection under another version number.
/// The identity projection with test knobs: another schema version, a slow
/// `apply` (to crash mid-stream), or refusing messages with given content.
#[derive(Default)]
struct Tweaked {
    version: Option<u32>,
    apply_delay: Option<Duration>,
    refuse_content: Option<Vec<u8>>,
}

impl Tweaked {
    fn version(v: u32) -> Arc<dyn Projection> {
        Arc::new(Tweaked {
            version: Some(v),
            ..Tweaked::default()
        })
    }
}

impl Projection for Tweaked {
    fn name(&self) -> &'static str {
        "identity"
    }
    fn version(&self) -> u32 {
        self.version.unwrap_or_else(|| IdentityProjection.version())
    }
    fn streams(&self) -> &'static [&'static str] {
        IdentityProjection.streams()
    }
    fn apply(
        &self,
        tx: &TransactionalTree,
        event: &AppliedEvent,
    ) -> Result<(), ConflictableTransactionError<ApplyError>> {
        if let Some(d) = self.apply_delay {
            std::thread::sleep(d);
        }
        if let (Some(refused), Kind::AgentMessageSent(m)) =
            (&self.refuse_content, &event.event.payload)
        {
            if &m.sealed == refused {
                return Err(ConflictableTransactionError::Abort(ApplyError::Rejected(
                    "refused by the test".into(),
                )));
            }
        }
        IdentityProjection.apply(tx, event)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_rebuilds_to_the_same_state_as_a_live_projection() {
    let mut env = Env::start().await;
    let (_, _, positions) = scenario(&mut env).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_db(dir.path()).await;
        let (handle, shutdown) = env.spawn(&db, Tweaked::version(1)).await;
        for p in &positions {
            wait(&handle, p).await;
        }
        // Damage the v1 state: a rebuild must not keep anything of it.
        handle
            .tree()
            .insert(b"stat/events", &999u64.to_be_bytes())
            .unwrap();
        handle.tree().insert(b"junk", b"x").unwrap();
        stop(handle, shutdown).await;
    }
    let db = open_db(dir.path()).await;
    let (rebuilt, s1) = env.spawn(&db, Tweaked::version(2)).await;
    let live_dir = tempfile::tempdir().unwrap();
    let live_db = sled::open(live_dir.path()).unwrap();
    let (live, s2) = env.spawn(&live_db, Tweaked::version(2)).await;
    for p in &positions {
        wait(&rebuilt, p).await;
        wait(&live, p).await;
    }
    assert!(rebuilt.tree().get(b"junk").unwrap().is_none());
    let a = IdentityReadModel::new(rebuilt.tree().clone());
    let b = IdentityReadModel::new(live.tree().clone());
    assert_eq!(a.stats().unwrap(), b.stats().unwrap());
    assert_eq!(a.stats().unwrap().events, 20);
    let user_data = |h: &ProjectionHandle| -> Vec<(Vec<u8>, Vec<u8>)> {
        h.tree()
            .iter()
            .map(|kv| kv.unwrap())
            .filter(|(k, _)| k[0] != 0)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    };
    assert_eq!(user_data(&rebuilt), user_data(&live));
    // The whole trees, reserved keys included, are equal: so are the digests.
    let digest = live.digest().unwrap();
    assert_eq!(rebuilt.digest().unwrap(), digest);
    assert_eq!(digest.version, 2);
    assert_eq!(digest.entries as usize, live.tree().len());
    stop(rebuilt, s1).await;
    stop(live, s2).await;
    drop((a, b));
    // Read offline from the stopped store, the digest is the same.
    assert_eq!(
        amai_projections::runner::digest_projection(&live_db, Tweaked::version(2).as_ref())
            .unwrap(),
        digest
    );

    // The offline rebuild helper clears everything; the next start rebuilds.
    drop(db);
    let db = open_db(dir.path()).await;
    rebuild_projection(&db, "identity").unwrap();
    assert!(db.open_tree("identity").unwrap().is_empty());
    let (again, s3) = env.spawn(&db, Tweaked::version(2)).await;
    for p in &positions {
        wait(&again, p).await;
    }
    assert_eq!(
        IdentityReadModel::new(again.tree().clone())
            .stats()
            .unwrap()
            .events,
        20
    );
    stop(again, s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_returns_once_reached_and_times_out_otherwise() {
    let mut env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).await;
    let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
    // Waiting for a position appended after the wait starts.
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .wait_for(&Position::new("AMAI_AGENTS", 4), WAIT)
                .await
        })
    };
    let mut alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let out = env.message(&mut alice, &bob).await;
    assert_eq!(out.position, Position::new("AMAI_AGENTS", 5));
    waiter.await.unwrap().unwrap();
    wait(&handle, &out.position).await;
    // Already reached: immediate.
    let started = std::time::Instant::now();
    handle
        .wait_for(&Position::new("AMAI_AGENTS", 1), Duration::from_millis(1))
        .await
        .unwrap();
    handle
        .wait_for(&Position::new("AMAI_AGENTS", 0), Duration::ZERO)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    // Never reached: a bounded wait and an actionable error.
    let err = handle
        .wait_for(
            &Position::new("AMAI_AGENTS", 1000),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WaitError::Timeout {
                reached: 5,
                wanted: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "projection identity reached AMAI_AGENTS:5, not 1000, within 200ms; retry or drop min_position");
    // A consistency token beyond the stream's end fails at once (no append
    // returned it); the plain wait above waits for it.
    let err = handle
        .wait_for_min_position(
            Some(&proto::Position {
                stream: "AMAI_AGENTS".into(),
                seq: 1000,
            }),
            WAIT,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WaitError::BeyondEnd {
                wanted: 1000,
                last_seq: 5,
                ..
            }
        ),
        "{err:?}"
    );
    let err = handle
        .wait_for(&Position::new("AMAI_LLM", 1), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(matches!(err, WaitError::UnknownStream { .. }), "{err:?}");
    handle
        .wait_for_min_position(None, Duration::ZERO)
        .await
        .unwrap();
    handle
        .wait_for_min_position(
            Some(&proto::Position {
                stream: "AMAI_AGENTS".into(),
                seq: 5,
            }),
            Duration::ZERO,
        )
        .await
        .unwrap();
    // Stopping from the handle (the caller's signal never fires here).
    handle.shutdown();
    tokio::time::timeout(WAIT, handle.stopped()).await.unwrap();
    drop(shutdown);
}

async fn publish_raw(env: &Env, subject: String, signed: &proto::SignedEvent) -> Position {
    let ack = env
        .store
        .jetstream()
        .publish(subject, signed.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    Position::new(ack.stream, ack.sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_never_applied_and_are_recorded() {
    let mut env = Env::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path()).await;
    let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
    let alice = env.agent("alice").await;
    let mut bob = env.agent("bob").await;
    let good = env.message(&mut bob, &alice).await;
    wait(&handle, &good.position).await;
    wait(&handle, &bob.name_position).await;
    let model = IdentityReadModel::new(handle.tree().clone());
    let before = model.stats().unwrap();

    // 1. A forged signature on alice's chain, bypassing the EventStore.
    let mut forged = EventDraft::new(
        Aggregate::agent(&alice.id).unwrap(),
        Kind::AgentMessageSent(proto::AgentMessageSent {
            to: bob.id.clone(),
            sealed: vec![9],
            recipient_x25519_key: vec![],
        }),
    )
    .after(alice.head.aggregate_seq, alice.head.hash)
    .sign(&alice.keys, &alice.id);
    forged.signature = vec![7u8; 64];
    let p1 = publish_raw(&env, format!("amai.agent.{}", alice.id), &forged).await;
    // 2. Correctly signed, but by a key that is not alice's (an impostor).
    let impostor = IdentityKeys::generate();
    let stolen = EventDraft::new(
        Aggregate::agent(&alice.id).unwrap(),
        Kind::AgentMessageSent(proto::AgentMessageSent {
            to: bob.id.clone(),
            sealed: vec![9],
            recipient_x25519_key: vec![],
        }),
    )
    .after(alice.head.aggregate_seq, alice.head.hash)
    .sign(&impostor, &alice.id);
    let p2 = publish_raw(&env, format!("amai.agent.{}", alice.id), &stolen).await;
    // 3. A valid event of bob's chain replayed onto alice's subject.
    let bob_event = env.store.get_event(&good.position).await.unwrap();
    let replayed = proto::SignedEvent::decode(bob_event.payload.as_ref()).unwrap();
    let p3 = publish_raw(&env, format!("amai.agent.{}", alice.id), &replayed).await;
    // 4. A gap on bob's chain (seq head + 2).
    let gap = EventDraft::new(
        Aggregate::agent(&bob.id).unwrap(),
        Kind::AgentRevoked(proto::AgentRevoked { reason: "x".into() }),
    )
    .after(bob.head.aggregate_seq + 1, bob.head.hash)
    .sign(&bob.keys, &bob.id);
    let p4 = publish_raw(&env, format!("amai.agent.{}", bob.id), &gap).await;
    // 5. Trust signed by an agent instead of a service.
    let carol = env.agent("carol").await;
    let fake_trust = EventDraft::new(
        Aggregate::new(AggregateKind::Trust, &alice.id).unwrap(),
        Kind::TrustInitialized(proto::TrustInitialized {
            agent_id: alice.id.clone(),
            score: 1.0,
        }),
    )
    .signer_seq(1)
    .sign(&carol.keys, &carol.id);
    let p5 = publish_raw(&env, format!("amai.trust.{}", alice.id), &fake_trust).await;
    // 6. Garbage bytes.
    let ack = env
        .store
        .jetstream()
        .publish(
            format!("amai.agent.{}", bob.id),
            b"not an event".to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let p6 = Position::new(ack.stream, ack.sequence);

    for p in [&p1, &p2, &p3, &p4, &p5, &p6, &carol.name_position] {
        wait(&handle, p).await;
    }
    let violations = handle.violations().unwrap();
    let kinds: Vec<_> = violations.iter().map(|v| (v.seq, v.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (p1.seq, ViolationKind::Failed(FailureKind::BadSignature)),
            (p2.seq, ViolationKind::Failed(FailureKind::UnknownKey)),
            (p3.seq, ViolationKind::Failed(FailureKind::WrongAggregate)),
            (p4.seq, ViolationKind::Failed(FailureKind::Gap)),
            (p6.seq, ViolationKind::Failed(FailureKind::Malformed)),
            (p5.seq, ViolationKind::Failed(FailureKind::NotPermitted)),
        ],
        "{violations:#?}"
    );
    assert_eq!(violations[0].aggregate, format!("agent/{}", alice.id));
    assert_eq!(violations[0].stream, "AMAI_AGENTS");
    assert_eq!(handle.violation_count(), 6);
    let after = model.stats().unwrap();
    assert_eq!(after.integrity_violations, 6);
    assert_eq!(
        after.events,
        before.events + 2,
        "no invalid event is applied (only carol's genesis and name)"
    );
    assert_eq!(after.messages, before.messages);
    assert_eq!(model.list_inbox(&bob.id, 0, 0).unwrap().len(), 0);
    let a = model.get_identity(&by_id(&alice.id)).unwrap().unwrap();
    assert_eq!(a.chain_length, 1);
    assert!(a.trust_score.is_none());
    assert!(
        !model
            .get_identity(&by_id(&bob.id))
            .unwrap()
            .unwrap()
            .revoked
    );

    // Violations survive a restart and are not recorded twice.
    stop(handle, shutdown).await;
    drop(model);
    drop(db);
    let db = open_db(dir.path()).await;
    let (handle, shutdown) = env.spawn(&db, Arc::new(IdentityProjection)).await;
    tokio::time::timeout(WAIT, handle.caught_up())
        .await
        .unwrap();
    assert_eq!(handle.violation_count(), 6);
    assert_eq!(handle.violations().unwrap().len(), 6);
    stop(handle, shutdown).await;
}

/// The identity projection, slowed down so a crash lands mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_loses_nothing_and_applies_nothing_twice() {
    let mut env = Env::start().await;
    let mut alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    // Several batches (the runner commits up to 64 events per transaction), so
    // there are several points to crash at.
    const N: u64 = 400;
    let mut last = None;
    for _ in 0..N {
        last = Some(env.message(&mut alice, &bob).await);
    }
    let last = last.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Crash repeatedly part-way: abort the tasks (no final flush) as soon as some
    // progress is visible, then reopen the database and carry on.
    let mut crashes = 0;
    loop {
        let db = open_db(dir.path()).await;
        let (handle, _shutdown) = env
            .spawn(
                &db,
                Arc::new(Tweaked {
                    apply_delay: Some(Duration::from_millis(2)),
                    ..Tweaked::default()
                }),
            )
            .await;
        let start = handle.position("AMAI_AGENTS");
        if start >= last.position.seq {
            tokio::time::timeout(WAIT, handle.caught_up())
                .await
                .unwrap();
            let stats = IdentityReadModel::new(handle.tree().clone())
                .stats()
                .unwrap();
            assert_eq!(stats.messages, N);
            assert_eq!(stats.identities, 4);
            assert_eq!(stats.events, 4 + N + 4);
            assert_eq!(
                IdentityReadModel::new(handle.tree().clone())
                    .list_inbox(&bob.id, 0, 1000)
                    .unwrap()
                    .len() as u64,
                N
            );
            handle.abort().await;
            break;
        }
        let _ = handle
            .wait_for(
                &Position::new("AMAI_AGENTS", (start + 15).min(last.position.seq)),
                WAIT,
            )
            .await;
        handle.abort().await;
        crashes += 1;
        drop(handle);
        drop(db);
    }
    assert!(crashes >= 2, "the projection crashed {crashes} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_projection_refuses_mid_batch_is_recorded_and_the_rest_applied_once() {
    let mut env = Env::start().await;
    let mut alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let mut refused = None;
    for i in 0..60 {
        if i == 30 {
            let payload = Kind::AgentMessageSent(proto::AgentMessageSent {
                to: bob.id.clone(),
                sealed: vec![9, 9, 9],
                recipient_x25519_key: bob.keys.x25519_public().to_vec(),
            });
            refused = Some(env.act(&mut alice, payload).await);
        } else {
            env.message(&mut alice, &bob).await;
        }
    }
    let refused = refused.unwrap();
    let last = env.last_position.clone();
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        // The second round reopens the database: nothing is applied twice.
        let db = open_db(dir.path()).await;
        let (handle, shutdown) = env
            .spawn(
                &db,
                Arc::new(Tweaked {
                    refuse_content: Some(vec![9, 9, 9]),
                    ..Tweaked::default()
                }),
            )
            .await;
        wait(&handle, &last).await;
        let model = IdentityReadModel::new(handle.tree().clone());
        assert_eq!(model.stats().unwrap().messages, 59, "round {round}");
        assert_eq!(model.list_inbox(&bob.id, 0, 1000).unwrap().len(), 59);
        let violations = handle.violations().unwrap();
        assert_eq!(violations.len(), 1, "round {round}: {violations:?}");
        assert_eq!(violations[0].seq, refused.position.seq);
        assert_eq!(violations[0].kind, ViolationKind::Rejected);
        // The chain moved past the refused (valid) event: later ones applied.
        assert_eq!(
            model
                .get_identity(&by_id(&alice.id))
                .unwrap()
                .unwrap()
                .chain_length,
            61
        );
        stop(handle, shutdown).await;
        drop(db);
    }
}
