//! `TrustService` from the attacker's side: endorsements are validated
//! completely before anything is appended (every refusal leaves every stream
//! as it was), re-sent endorsements are idempotent, and trust data is read by
//! the agent itself and operators only. Asserts codes and `ErrorInfo` kinds,
//! never message text.
//!
//! Most tests stand in for the trust role's query service with [`FakeTrust`],
//! a NATS responder on `amai.query.trust.>` with fixed answers: they check
//! what the gateway decides (access, ordering, refusals), not what the role
//! computes. The last ones run the real trust role.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind};
use amai_bus::query::{
    QueryCode, QueryError, TRUST_ALERTS, TRUST_ENDORSEMENT, TRUST_EXPLAIN, TRUST_GET,
    TRUST_HISTORY, TRUST_REPORT,
};
use amai_bus::IdentityKeys;
use amai_client::{Agent, AmaiClient, ClientError, ErrorKind};
use futures::StreamExt;
use prost::Message;
use tonic::Code;

use crate::common::{agg, Env};

/// What the stand-in trust role answers.
#[derive(Default)]
struct TrustData {
    /// (endorser, endorsee) -> the endorsement's event id.
    endorsed: HashMap<(String, String), String>,
    /// Explanations by delta id.
    deltas: HashMap<String, proto::TrustExplanation>,
    /// The score `GetTrust` answers.
    score: f64,
    /// Every request received: (subject, encoded request).
    seen: Vec<(String, Vec<u8>)>,
}

/// A stand-in for the trust role's query service.
struct FakeTrust {
    data: Arc<Mutex<TrustData>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTrust {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn not_found(what: &str) -> QueryError {
    QueryError::new(QueryCode::NotFound, format!("no {what}"))
        .with_reason(amai_bus::query::reason::NOT_FOUND)
}

fn answer(data: &Mutex<TrustData>, subject: &str, payload: &[u8]) -> Result<Vec<u8>, QueryError> {
    let mut data = data.lock().expect("lock");
    data.seen.push((subject.to_string(), payload.to_vec()));
    let bad = |e: prost::DecodeError| QueryError::new(QueryCode::InvalidArgument, e.to_string());
    Ok(match subject {
        TRUST_GET => {
            let req = proto::GetTrustRequest::decode(payload).map_err(bad)?;
            proto::TrustSummary {
                agent_id: req.agent_id,
                score: data.score,
                score_milli: (data.score * 1000.0) as i64,
                ..Default::default()
            }
            .encode_to_vec()
        }
        TRUST_HISTORY => proto::TrustHistoryPage::default().encode_to_vec(),
        TRUST_ALERTS => proto::TrustAlertList::default().encode_to_vec(),
        TRUST_REPORT => {
            let req = proto::GetTrustReportRequest::decode(payload).map_err(bad)?;
            proto::TrustReport {
                agent_id: req.agent_id,
                markdown: "# report".into(),
                source: "model".into(),
            }
            .encode_to_vec()
        }
        TRUST_EXPLAIN => {
            let req = proto::ExplainTrustRequest::decode(payload).map_err(bad)?;
            data.deltas
                .get(&req.event_id)
                .ok_or_else(|| not_found("trust delta"))?
                .encode_to_vec()
        }
        TRUST_ENDORSEMENT => {
            let req = proto::TrustEndorsementQuery::decode(payload).map_err(bad)?;
            let event_id = data.endorsed.get(&(req.endorser, req.endorsee)).cloned();
            proto::TrustEndorsementAnswer {
                endorsed: event_id.is_some(),
                event_id: event_id.unwrap_or_default(),
            }
            .encode_to_vec()
        }
        other => return Err(not_found(other)),
    })
}

impl FakeTrust {
    async fn start(env: &Env, score: f64) -> FakeTrust {
        let nc = env.js.client();
        let mut sub = nc.subscribe("amai.query.trust.>").await.expect("subscribe");
        nc.flush().await.expect("flush");
        let data = Arc::new(Mutex::new(TrustData {
            score,
            ..Default::default()
        }));
        let shared = data.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                let _ = match answer(&shared, msg.subject.as_str(), &msg.payload) {
                    Ok(bytes) => nc.publish(reply, bytes.into()).await,
                    Err(e) => {
                        let mut headers = e.to_headers();
                        headers.insert(
                            async_nats::service::NATS_SERVICE_ERROR_CODE,
                            (e.code as u16).to_string().as_str(),
                        );
                        headers.insert(async_nats::service::NATS_SERVICE_ERROR, e.message.as_str());
                        nc.publish_with_headers(reply, headers, bytes::Bytes::new())
                            .await
                    }
                };
            }
        });
        FakeTrust { data, task }
    }

    fn mark_endorsed(&self, endorser: &str, endorsee: &str, event_id: &str) {
        self.data.lock().expect("lock").endorsed.insert(
            (endorser.to_string(), endorsee.to_string()),
            event_id.to_string(),
        );
    }

    fn add_delta(&self, explanation: proto::TrustExplanation) {
        let id = explanation
            .delta
            .as_ref()
            .map(|d| d.event_id.clone())
            .unwrap_or_default();
        self.data
            .lock()
            .expect("lock")
            .deltas
            .insert(id, explanation);
    }

    /// The last request received on `subject`.
    fn last<M: Message + Default>(&self, subject: &str) -> Option<M> {
        let data = self.data.lock().expect("lock");
        data.seen
            .iter()
            .rev()
            .find(|(s, _)| s == subject)
            .and_then(|(_, b)| M::decode(b.as_slice()).ok())
    }

    fn count(&self, subject: &str) -> usize {
        let data = self.data.lock().expect("lock");
        data.seen.iter().filter(|(s, _)| s == subject).count()
    }
}

fn endorsement(endorsee: &str, statement: &str) -> Kind {
    Kind::AgentEndorsed(proto::AgentEndorsed {
        endorsee: endorsee.to_string(),
        statement: statement.to_string(),
    })
}

/// `payload` on `agent`'s chain after its head, signed with `keys` as `actor`.
async fn signed_as(
    env: &Env,
    agent: &Agent,
    keys: &IdentityKeys,
    actor: &str,
    payload: Kind,
) -> proto::SignedEvent {
    let head = env.client.chain_head(&agg(agent)).await.expect("head");
    EventDraft::new(agg(agent), payload)
        .after(head.aggregate_seq, head.hash)
        .sign(keys, actor)
}

async fn signed(env: &Env, agent: &Agent, payload: Kind) -> proto::SignedEvent {
    signed_as(env, agent, agent.keys(), agent.id(), payload).await
}

/// Waits (bounded by the projection's own wait) until the identity
/// projection has applied `agent`'s chain up to its head.
async fn wait_visible(env: &Env, agent: &Agent) -> proto::Identity {
    let head = env.client.chain_head(&agg(agent)).await.expect("head");
    let mut req = amai_client::selector(agent.id());
    req.min_position = Some(proto::Position {
        stream: "AMAI_AGENTS".into(),
        seq: head.stream_seq,
    });
    env.client
        .identity_service()
        .get_identity(req)
        .await
        .expect("the identity projection reached the agent's head")
        .into_inner()
}

async fn endorse(
    env: &Env,
    event: proto::SignedEvent,
) -> Result<proto::AppendResponse, tonic::Status> {
    env.client
        .trust_service()
        .endorse(proto::EndorseCommand { event: Some(event) })
        .await
        .map(tonic::Response::into_inner)
}

/// Sends `event` to `Endorse`, asserts the refusal and that no stream moved.
async fn refused(env: &Env, event: proto::SignedEvent, code: Code, kind: ErrorKind) {
    let before = env.stream_positions().await;
    let err = endorse(env, event).await.expect_err("refused");
    assert_eq!(err.code(), code, "{kind}: {}", err.message());
    assert_eq!(
        amai_client::error::status_kind(&err),
        kind,
        "{}",
        err.message()
    );
    assert_eq!(
        env.stream_positions().await,
        before,
        "a refused endorsement appended something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endorsements_are_refused_before_anything_is_appended() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let trust = FakeTrust::start(&env, 60.0).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let mallory = env.agent("mallory").await;

    // Self-endorsement: the gateway's own reason, nothing appended.
    let ev = signed(&env, &alice, endorsement(alice.id(), "I am great")).await;
    refused(&env, ev, Code::InvalidArgument, ErrorKind::SelfEndorsement).await;
    // Not an endorsement, a malformed endorsee, an oversized statement.
    let ev = signed(
        &env,
        &alice,
        Kind::AgentAction(proto::AgentAction::default()),
    )
    .await;
    refused(&env, ev, Code::InvalidArgument, ErrorKind::WrongCommand).await;
    let ev = signed(&env, &alice, endorsement("not/an id", "")).await;
    refused(&env, ev, Code::InvalidArgument, ErrorKind::InvalidArgument).await;
    let ev = signed(&env, &alice, endorsement(bob.id(), &"x".repeat(513))).await;
    refused(&env, ev, Code::InvalidArgument, ErrorKind::InvalidArgument).await;

    // An endorsee nobody registered.
    let nobody = IdentityKeys::generate().identity_id();
    let ev = signed(&env, &alice, endorsement(&nobody, "")).await;
    refused(&env, ev, Code::NotFound, ErrorKind::EndorseeNotFound).await;

    // Operators and services are not agents.
    let ev = signed(&env, &alice, endorsement(&env.operator.identity_id(), "")).await;
    refused(
        &env,
        ev,
        Code::InvalidArgument,
        ErrorKind::EndorseeNotAnAgent,
    )
    .await;
    let service = env
        .client
        .get_identity("svc-identity")
        .await
        .expect("service identity");
    let ev = signed(&env, &alice, endorsement(&service.id, "")).await;
    refused(
        &env,
        ev,
        Code::InvalidArgument,
        ErrorKind::EndorseeNotAnAgent,
    )
    .await;

    // A revoked endorsee.
    let carol = env.agent("carol").await;
    let revoked = carol.revoke("gone").await.expect("revoke");
    let mut req = amai_client::selector(carol.id());
    req.min_position = revoked.position.clone();
    let seen = env
        .client
        .identity_service()
        .get_identity(req)
        .await
        .expect("the projection reached the revocation")
        .into_inner();
    assert!(seen.revoked);
    let ev = signed(&env, &alice, endorsement(carol.id(), "")).await;
    refused(
        &env,
        ev,
        Code::FailedPrecondition,
        ErrorKind::EndorseeRevoked,
    )
    .await;

    // Mallory signs an endorsement of herself onto alice's chain, with her
    // own key, as alice and as herself.
    let ev = signed_as(
        &env,
        &alice,
        mallory.keys(),
        alice.id(),
        endorsement(mallory.id(), ""),
    )
    .await;
    refused(&env, ev, Code::Unauthenticated, ErrorKind::UnknownKey).await;
    let ev = signed_as(
        &env,
        &alice,
        mallory.keys(),
        mallory.id(),
        endorsement(bob.id(), ""),
    )
    .await;
    refused(&env, ev, Code::InvalidArgument, ErrorKind::InvalidArgument).await;

    // A revoked endorser: the store refuses, as for any append.
    let dave = env.agent("dave").await;
    dave.revoke("compromised").await.expect("revoke");
    let ev = signed(&env, &dave, endorsement(bob.id(), "")).await;
    let before = env.stream_positions().await;
    let err = endorse(&env, ev).await.expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_eq!(
        amai_client::error::status_kind(&err),
        ErrorKind::RevokedKey,
        "{}",
        err.message()
    );
    assert_eq!(env.stream_positions().await, before);

    // None of these reached the trust role's endorsement query.
    assert_eq!(trust.count(TRUST_ENDORSEMENT), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endorsement_is_appended_once_resent_idempotently_and_never_twice() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let trust = FakeTrust::start(&env, 60.0).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;

    let ev = signed(&env, &alice, endorsement(bob.id(), "reliable")).await;
    let first = endorse(&env, ev.clone()).await.expect("endorsed");
    assert!(!first.duplicate);
    let asked: proto::TrustEndorsementQuery = trust.last(TRUST_ENDORSEMENT).expect("asked");
    assert_eq!(
        (asked.endorser.as_str(), asked.endorsee.as_str()),
        (alice.id(), bob.id())
    );
    let event_id = proto::EventBody::decode(ev.body.as_slice())
        .expect("body")
        .id;
    trust.mark_endorsed(alice.id(), bob.id(), &event_id);

    // The very same event again: the same position, marked duplicate, even
    // though the role now knows the endorsement.
    let head = env.head_seq(&agg(&alice)).await;
    let again = endorse(&env, ev).await.expect("idempotent");
    assert!(again.duplicate);
    assert_eq!(again.aggregate_seq, first.aggregate_seq);
    assert_eq!(again.hash, first.hash);
    assert_eq!(env.head_seq(&agg(&alice)).await, head);

    // A second endorsement of the same endorsee (a new event).
    let ev = signed(&env, &alice, endorsement(bob.id(), "really reliable")).await;
    refused(&env, ev, Code::AlreadyExists, ErrorKind::AlreadyEndorsed).await;
    let err = alice
        .endorse(bob.id(), "once more")
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::AlreadyEndorsed, "{err}");
    assert_eq!(
        err.error_metadata().get("event_id").map(String::as_str),
        Some(event_id.as_str())
    );

    // An agent registered a moment ago is endorsed (its chain decides when
    // the identity projection has not applied it yet).
    let carol = env.agent("carol").await;
    alice.endorse(carol.id(), "").await.expect("endorsed");
    // The SDK resolves names (through the identity projection).
    let dave = env.agent("dave").await;
    wait_visible(&env, &dave).await;
    let r = alice.endorse("dave", "").await.expect("endorsed by name");
    assert!(!r.duplicate);
    let asked: proto::TrustEndorsementQuery = trust.last(TRUST_ENDORSEMENT).expect("asked");
    assert_eq!(asked.endorsee, dave.id());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trust_worker_an_endorsement_is_refused_not_appended_blindly() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let ev = signed(&env, &alice, endorsement(bob.id(), "")).await;
    refused(&env, ev, Code::Unavailable, ErrorKind::WorkerUnavailable).await;
    env.stop().await;
}

/// Asserts a read refused with `code` and `kind`.
fn read_refused<T: std::fmt::Debug>(result: Result<T, ClientError>, code: Code, kind: ErrorKind) {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Some(code), "{err}");
    assert_eq!(err.kind(), kind, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_data_is_read_by_the_agent_and_operators_only() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let trust = FakeTrust::start(&env, 60.0).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let (a, b, op) = (alice.client(), bob.client(), &env.client);
    let anonymous: &AmaiClient = &env.anonymous;

    // GetTrust is public.
    let summary = anonymous.trust(alice.id()).await.expect("public");
    assert_eq!(summary.agent_id, alice.id());
    assert_eq!(summary.score, 60.0);
    let asked: proto::GetTrustRequest = trust.last(TRUST_GET).expect("asked");
    assert_eq!(asked.last, amai_gateway::trust::DEFAULT_LAST);
    read_refused(
        anonymous.trust("").await,
        Code::InvalidArgument,
        ErrorKind::InvalidArgument,
    );

    // History and report: the agent and operators; strangers are refused
    // before the role is asked; unsigned callers are not authenticated.
    a.trust_history(alice.id(), 0, 10_000)
        .await
        .expect("own history");
    let asked: proto::GetTrustHistoryRequest = trust.last(TRUST_HISTORY).expect("asked");
    assert_eq!(asked.limit, amai_gateway::trust::MAX_PAGE);
    op.trust_history(alice.id(), 0, 0).await.expect("operator");
    let asked_before = trust.count(TRUST_HISTORY);
    read_refused(
        b.trust_history(alice.id(), 0, 0).await,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    );
    assert_eq!(trust.count(TRUST_HISTORY), asked_before);
    read_refused(
        anonymous.trust_history(alice.id(), 0, 0).await,
        Code::Unauthenticated,
        ErrorKind::SignatureMissing,
    );
    let report = a.trust_report(alice.id()).await.expect("own report");
    assert_eq!(report.agent_id, alice.id());
    op.trust_report(alice.id()).await.expect("operator");
    read_refused(
        b.trust_report(alice.id()).await,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    );
    read_refused(
        anonymous.trust_report(alice.id()).await,
        Code::Unauthenticated,
        ErrorKind::SignatureMissing,
    );

    // Alerts: an agent lists its own (empty = its own), operators anyone's or
    // everyone's.
    let all = proto::ListTrustAlertsRequest::default();
    a.trust_alerts(all.clone()).await.expect("own alerts");
    let asked: proto::ListTrustAlertsRequest = trust.last(TRUST_ALERTS).expect("asked");
    assert_eq!(asked.agent_id, alice.id());
    let alices = proto::ListTrustAlertsRequest {
        agent_id: alice.id().to_string(),
        ..Default::default()
    };
    a.trust_alerts(alices.clone())
        .await
        .expect("own alerts by id");
    read_refused(
        b.trust_alerts(alices.clone()).await,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    );
    op.trust_alerts(all.clone()).await.expect("operator: all");
    let asked: proto::ListTrustAlertsRequest = trust.last(TRUST_ALERTS).expect("asked");
    assert_eq!(asked.agent_id, "");
    op.trust_alerts(alices).await.expect("operator: alice's");
    read_refused(
        anonymous.trust_alerts(all).await,
        Code::Unauthenticated,
        ErrorKind::SignatureMissing,
    );
    read_refused(
        a.trust_alerts(proto::ListTrustAlertsRequest {
            min_severity: 99,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        ErrorKind::InvalidArgument,
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explanation_is_its_agents_and_strangers_learn_nothing_from_it() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let trust = FakeTrust::start(&env, 60.0).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let carol = env.agent("carol").await;

    // Evidence: alice's own action, bob's endorsement of alice (addressed to
    // her), and a private action of bob's.
    let own = alice
        .append_action("work.done", "{}")
        .await
        .expect("alice's action");
    let endorsed = bob.endorse(alice.id(), "solid").await.expect("endorsed");
    let private = bob
        .append_action("secret.plan", "{}")
        .await
        .expect("bob's action");
    let mut evidence = Vec::new();
    for r in [&own, &endorsed, &private] {
        let position = r.position.clone().expect("position");
        evidence.push(
            env.client
                .get_event(position.into())
                .await
                .expect("operator reads it"),
        );
    }
    let delta_id = uuid::Uuid::now_v7().to_string();
    trust.add_delta(proto::TrustExplanation {
        delta: Some(proto::TrustDelta {
            event_id: delta_id.clone(),
            trust_seq: 2,
            kind: Some(proto::trust_delta::Kind::Adjusted(proto::TrustAdjusted {
                agent_id: alice.id().to_string(),
                signal: "endorsed".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
        evidence: evidence.clone(),
    });

    // The agent: its delta, with the evidence it may read.
    let mine = alice.client().explain_trust(&delta_id).await.expect("own");
    let hashes = |e: &proto::TrustExplanation| -> Vec<Vec<u8>> {
        e.evidence.iter().map(|s| s.hash.clone()).collect()
    };
    assert_eq!(
        hashes(&mine),
        vec![evidence[0].hash.clone(), evidence[1].hash.clone()]
    );
    // An operator: all of it.
    let all = env.client.explain_trust(&delta_id).await.expect("operator");
    assert_eq!(
        hashes(&all),
        evidence.iter().map(|s| s.hash.clone()).collect::<Vec<_>>()
    );

    // A stranger gets exactly what an unknown id gets.
    let stranger = carol
        .client()
        .explain_trust(&delta_id)
        .await
        .expect_err("refused");
    let unknown = carol
        .client()
        .explain_trust(&uuid::Uuid::now_v7().to_string())
        .await
        .expect_err("unknown");
    assert_eq!(stranger.code(), Some(Code::NotFound), "{stranger}");
    assert_eq!(stranger.kind(), ErrorKind::NotFound);
    assert_eq!(
        (stranger.code(), stranger.kind(), stranger.error_metadata()),
        (unknown.code(), unknown.kind(), unknown.error_metadata())
    );
    // Bob, whose endorsement is cited, is a stranger to alice's delta too.
    read_refused(
        bob.client().explain_trust(&delta_id).await,
        Code::NotFound,
        ErrorKind::NotFound,
    );
    read_refused(
        env.anonymous.explain_trust(&delta_id).await,
        Code::Unauthenticated,
        ErrorKind::SignatureMissing,
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_identity_shows_the_live_score_when_the_trust_role_answers() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let alice = env.agent("alice").await;
    wait_visible(&env, &alice).await;
    // The identity role initialises the score (trust.initialized), which its
    // projection then shows.
    let mut before = env.client.get_identity(alice.id()).await.expect("identity");
    for _ in 0..100 {
        if before.trust_score.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        before = env.client.get_identity(alice.id()).await.expect("identity");
    }
    assert!(
        before.trust_score.is_some(),
        "the projection never showed a score"
    );

    let trust = FakeTrust::start(&env, 72.5).await;
    let by_id = env.client.get_identity(alice.id()).await.expect("identity");
    assert_eq!(by_id.trust_score, Some(72.5));
    let by_name = env.client.get_identity("alice").await.expect("identity");
    assert_eq!(by_name.trust_score, Some(72.5));
    assert!(trust.count(TRUST_GET) >= 2);

    // Without the role: the identity projection's value, as before.
    drop(trust);
    let after = env.client.get_identity(alice.id()).await.expect("identity");
    assert_eq!(after.trust_score, before.trust_score);
    env.stop().await;
}

/// Last sequences of the event streams (the SDK's signed reads of the chain
/// head record nonces in `KV_AMAI_NONCES`).
async fn event_streams(env: &Env) -> std::collections::BTreeMap<String, u64> {
    let mut positions = env.stream_positions().await;
    positions.remove("KV_AMAI_NONCES");
    positions
}

/// Polls `f` (every 100 ms, at most 30 s) until it returns `Some`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen");
}

/// The trust summary of `agent` once the trust role knows it and shows
/// `deltas` deltas after its initialisation.
async fn settled(env: &Env, agent: &str, deltas: usize) -> proto::TrustSummary {
    eventually("the trust role's summary", || async {
        match env.anonymous.trust(agent).await {
            Ok(s) => Some(s).filter(|s| s.last_deltas.len() >= deltas),
            Err(e) => {
                eprintln!("GetTrust {agent}: {e}");
                None
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_trust_role_an_endorsement_counts_once_and_is_explained_to_its_agent() {
    let env = Env::with_trust().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let carol = env.agent("carol").await;

    // A fresh agent: 60.0, public.
    let fresh = settled(&env, alice.id(), 0).await;
    assert_eq!(fresh.score, 60.0);
    assert_eq!(fresh.score_milli, 60_000);

    // An operator (a pre-trusted peer) endorses alice: her score rises.
    let operator = env.client.agent(env.operator.clone());
    let first = operator
        .endorse(alice.id(), "operated it for a week")
        .await
        .expect("endorsed");
    let summary = settled(&env, alice.id(), 1).await;
    let delta = summary.last_deltas[0].clone();
    let Some(proto::trust_delta::Kind::Adjusted(adjusted)) = &delta.kind else {
        panic!("not an adjustment: {delta:?}");
    };
    assert_eq!(adjusted.signal, "endorsed");
    assert!(summary.score > 60.0, "{summary:?}");
    // GetIdentity shows the live score.
    let identity = env.client.get_identity(alice.id()).await.expect("identity");
    assert_eq!(identity.trust_score, Some(summary.score));

    // The same endorsement again: idempotent. A second one: refused, and
    // nothing appended.
    let head = env
        .client
        .chain_head(&operator.aggregate().expect("agg"))
        .await
        .expect("head");
    let page = env
        .client
        .read_chain(&operator.aggregate().expect("agg"), head.aggregate_seq, 1)
        .await
        .expect("read");
    let event = page.events[0].event.clone().expect("event");
    let again = endorse(&env, event).await.expect("idempotent");
    assert!(again.duplicate);
    assert_eq!(again.aggregate_seq, first.aggregate_seq);
    let before = event_streams(&env).await;
    let err = operator
        .endorse(alice.id(), "and again")
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::AlreadyEndorsed, "{err}");
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert_eq!(event_streams(&env).await, before);

    // The delta is explained to alice and operators; bob and carol learn
    // nothing, exactly as for an unknown id.
    let mine = alice
        .client()
        .explain_trust(&delta.event_id)
        .await
        .expect("alice's delta");
    assert_eq!(
        mine.delta.as_ref().map(|d| &d.event_id),
        Some(&delta.event_id)
    );
    assert!(
        !mine.evidence.is_empty(),
        "alice reads the endorsement of her: {mine:?}"
    );
    env.client
        .explain_trust(&delta.event_id)
        .await
        .expect("operator");
    for stranger in [&bob, &carol] {
        read_refused(
            stranger.client().explain_trust(&delta.event_id).await,
            Code::NotFound,
            ErrorKind::NotFound,
        );
    }
    read_refused(
        bob.client()
            .explain_trust(&uuid::Uuid::now_v7().to_string())
            .await,
        Code::NotFound,
        ErrorKind::NotFound,
    );

    // History and report: alice's own, and the operator's; not bob's.
    let history = alice
        .client()
        .trust_history(alice.id(), 0, 0)
        .await
        .expect("own history");
    assert!(history.deltas.iter().any(|d| d.event_id == delta.event_id));
    env.client
        .trust_history(alice.id(), 0, 0)
        .await
        .expect("operator");
    read_refused(
        bob.client().trust_history(alice.id(), 0, 0).await,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    );
    let report = alice
        .client()
        .trust_report(alice.id())
        .await
        .expect("report");
    assert!(!report.markdown.is_empty());
    read_refused(
        bob.client().trust_report(alice.id()).await,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    );
    alice
        .client()
        .trust_alerts(proto::ListTrustAlertsRequest::default())
        .await
        .expect("own alerts");

    // An agent endorses another once; the second is refused once the trust
    // role has seen the first.
    bob.endorse(carol.id(), "").await.expect("endorsed");
    settled(&env, carol.id(), 1).await;
    let err = bob.endorse(carol.id(), "").await.expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::AlreadyEndorsed, "{err}");
    env.stop().await;
}

/// `EventService.Append` is no way around `Endorse`: an endorsement sent there
/// gets the same checks and the same precise refusals, and a valid one is
/// appended as through `Endorse`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endorsement_through_the_generic_append_gets_the_same_checks() {
    let env = Env::with_worker(crate::common::MAX_EVENT_BYTES).await;
    let _trust = FakeTrust::start(&env, 60.0).await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let append = |event: proto::SignedEvent| {
        let client = env.client.clone();
        async move {
            client
                .event_service()
                .append(proto::AppendRequest { event: Some(event) })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let nobody = IdentityKeys::generate().identity_id();
    let to_nobody = signed(&env, &alice, endorsement(&nobody, "")).await;
    let to_operator = signed(&env, &alice, endorsement(&env.operator.identity_id(), "")).await;
    let before = env.stream_positions().await;
    let err = append(to_nobody).await.expect_err("unknown endorsee");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert_eq!(
        amai_client::error::status_kind(&err),
        ErrorKind::EndorseeNotFound
    );
    let err = append(to_operator).await.expect_err("an operator");
    assert_eq!(
        amai_client::error::status_kind(&err),
        ErrorKind::EndorseeNotAnAgent
    );
    assert_eq!(env.stream_positions().await, before, "nothing appended");
    wait_visible(&env, &bob).await;
    let out = append(signed(&env, &alice, endorsement(bob.id(), "fine")).await)
        .await
        .expect("a valid endorsement");
    assert!(!out.duplicate);
}

/// Real jail runs on the local Docker Engine move the requester's trust: a run
/// that writes where its diff policy forbids falls, citing the stored
/// `jail.run_finished` and the request; a clean run rises. The agent gets the
/// evidence through `Explain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_jail_runs_move_the_requesters_trust_with_the_runs_as_evidence() {
    let env = Env::with_jail_trust(amai_workers::roles::jail::JailConfig::default()).await;
    let alice = env.agent("alice").await;
    let run = |script: &str| {
        serde_json::to_vec(&serde_json::json!({
            "image": "busybox",
            "command": ["sh", "-c", script],
            "network": "none",
            "diff_policy": {"writable": ["/workspace/**"]},
            "limits": {"timeout": 60},
        }))
        .expect("json")
    };
    let wait = std::time::Duration::from_secs(60);
    let bad = alice
        .create_jail(&run("echo x > /tmp/not-allowed"), true)
        .await
        .expect("create");
    let bad = alice
        .client()
        .wait_jail(&bad.jail_id, wait)
        .await
        .expect("wait");
    let finished = bad.finished.clone().unwrap_or_else(|| panic!("{bad:?}"));
    assert!(!finished.violations.is_empty(), "{finished:?}");
    let summary = settled(&env, alice.id(), 1).await;
    let delta = &summary.last_deltas[0];
    let Some(proto::trust_delta::Kind::Adjusted(a)) = &delta.kind else {
        panic!("{delta:?}")
    };
    assert_eq!(a.signal, "jail_policy_violation");
    assert!(a.score_after_milli < 60_000);
    assert_eq!(a.evidence.get(1), Some(&bad.requested_event_id));
    let why = alice
        .client()
        .clone()
        .with_signer(alice.id().to_string(), alice.keys().clone())
        .explain_trust(&delta.event_id)
        .await
        .expect("explain");
    let types: Vec<String> = why
        .evidence
        .iter()
        .map(|s| {
            let signed = s.event.clone().expect("event");
            proto::EventBody::decode(signed.body.as_slice())
                .expect("body")
                .r#type
        })
        .collect();
    assert_eq!(types, ["jail.run_finished", "jail.requested"]);

    let good = alice
        .create_jail(&run("echo ok > /workspace/out"), true)
        .await
        .expect("create");
    alice
        .client()
        .wait_jail(&good.jail_id, wait)
        .await
        .expect("wait");
    let summary = settled(&env, alice.id(), 2).await;
    let Some(proto::trust_delta::Kind::Adjusted(a)) = &summary.last_deltas[0].kind else {
        panic!("{summary:?}")
    };
    assert_eq!(a.signal, "jail_clean");
    assert!(a.score_after_milli > a.score_before_milli);
}
