//! `LlmService` against the real llm role: commands are validated completely
//! before anything is appended (every refusal leaves every stream as it was),
//! sessions are read by their owner and operators only, and a key hash bound to
//! one session can never be bound to another. Asserts codes and `ErrorInfo`
//! kinds, never message text.

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind, LlmMode, LlmUpstream};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_client::llm::SessionKey;
use amai_client::{Agent, ClientError, ErrorKind};
use tonic::Code;

use crate::common::{agg, Env};

/// Which command RPC a hand-made event goes to.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Create,
    Import,
    SetMode,
    IssueKey,
    RevokeKey,
    Delete,
}

async fn send(
    env: &Env,
    rpc: Rpc,
    event: proto::SignedEvent,
) -> Result<proto::LlmSession, tonic::Status> {
    let mut svc = env.client.llm_service();
    let req = proto::LlmCommand { event: Some(event) };
    let resp = match rpc {
        Rpc::Create => svc.create_session(req).await,
        Rpc::Import => svc.import(req).await,
        Rpc::SetMode => svc.set_mode(req).await,
        Rpc::IssueKey => svc.issue_key(req).await,
        Rpc::RevokeKey => svc.revoke_key(req).await,
        Rpc::Delete => svc.delete_session(req).await,
    };
    resp.map(tonic::Response::into_inner)
}

/// `payload(event id)` signed by `agent` after its chain head.
async fn signed(env: &Env, agent: &Agent, payload: impl Fn(&str) -> Kind) -> proto::SignedEvent {
    let head = env.client.chain_head(&agg(agent)).await.expect("head");
    let id = uuid::Uuid::now_v7();
    EventDraft::new(agg(agent), payload(&id.to_string()))
        .id(id)
        .after(head.aggregate_seq, head.hash)
        .sign(agent.keys(), agent.id())
}

fn open(owner: &str, event_id: &str, key: &[u8]) -> Kind {
    Kind::LlmSessionOpened(proto::LlmSessionOpened {
        session_id: amai_bus::llm::session_id(owner, event_id),
        mode: LlmMode::Record as i32,
        key_sha256: key.to_vec(),
        ..Default::default()
    })
}

/// Sends `event` to `rpc` and asserts the refusal, and that no stream moved.
async fn refused(env: &Env, rpc: Rpc, event: proto::SignedEvent, code: Code, kind: ErrorKind) {
    let before = env.stream_positions().await;
    let err = send(env, rpc, event).await.expect_err("refused");
    assert_eq!(err.code(), code, "{rpc:?}: {}", err.message());
    assert_eq!(
        amai_client::error::status_kind(&err),
        kind,
        "{rpc:?}: {}",
        err.message()
    );
    assert_eq!(
        env.stream_positions().await,
        before,
        "{rpc:?} appended something"
    );
}

fn read_denied(err: ClientError) {
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert_eq!(err.kind(), ErrorKind::ReadNotPermitted, "{err}");
}

async fn create(agent: &Agent) -> (proto::LlmSession, SessionKey) {
    agent
        .create_llm_session(
            LlmMode::Record,
            vec![LlmUpstream::Openai],
            proto::LlmMatchOptions {
                ignore_fields: vec!["temperature".into()],
                ..Default::default()
            },
        )
        .await
        .expect("create session")
}

#[tokio::test]
async fn sessions_are_created_commanded_read_and_listed() {
    let env = Env::with_llm().await;
    let alice = env.agent("alice").await;
    let (session, key) = create(&alice).await;
    assert_eq!(session.owner, alice.id());
    assert_eq!(session.mode, LlmMode::Record as i32);
    assert_eq!(session.upstreams, vec![LlmUpstream::Openai as i32]);
    assert_eq!(session.keys.len(), 1);
    assert_eq!(session.keys[0].key_sha256, key.sha256().to_vec());
    let id = session.session_id.clone();

    assert_eq!(alice.llm_session(&id).await.expect("get"), session);
    let mine = alice.llm_sessions("", 0).await.expect("list");
    assert_eq!(mine.sessions.len(), 1);
    assert_eq!(mine.sessions[0].session_id, id);

    let replay = alice
        .set_llm_mode(&id, LlmMode::Replay, None)
        .await
        .expect("replay");
    assert_eq!(replay.mode, LlmMode::Replay as i32);
    let (issued, second) = alice.issue_llm_key(&id).await.expect("issue");
    assert_eq!(issued.keys.len(), 2);
    let revoked = alice
        .revoke_llm_key(&id, second.sha256())
        .await
        .expect("revoke");
    assert!(revoked
        .keys
        .iter()
        .any(|k| k.key_sha256 == second.sha256().to_vec() && k.revoked));
    let err = alice
        .revoke_llm_key(&id, second.sha256())
        .await
        .expect_err("twice");
    assert_eq!(err.kind(), ErrorKind::KeyRevoked, "{err}");

    // The session's stream (empty so far) is readable by its owner.
    let page = alice
        .llm_recordings_page(&id, 0, 10)
        .await
        .expect("recordings");
    assert!(page.events.is_empty());
    assert_eq!(page.next_after_seq, 0);
    let llm_agg = Aggregate::new(AggregateKind::Llm, &id).expect("aggregate");
    alice
        .client()
        .read_chain(&llm_agg, 1, 10)
        .await
        .expect("owner reads llm/<session> through EventService");

    let export = alice.export_llm_session(&id).await.expect("export");
    assert_eq!(export.session.session_id, id);
    assert!(export.events.is_empty());

    let deleted = alice.delete_llm_session(&id, "done").await.expect("delete");
    assert!(deleted.deleted);
    let err = alice
        .set_llm_mode(&id, LlmMode::Record, None)
        .await
        .expect_err("deleted");
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert_eq!(err.kind(), ErrorKind::SessionDeleted, "{err}");
    env.stop().await;
}

#[tokio::test]
async fn strangers_neither_read_nor_command_a_session_and_operators_read() {
    let env = Env::with_llm().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let (session, _key) = create(&alice).await;
    let id = session.session_id.clone();

    read_denied(bob.llm_session(&id).await.expect_err("get"));
    read_denied(bob.llm_recordings_page(&id, 0, 10).await.expect_err("list"));
    read_denied(bob.llm_recording(&id, 1).await.expect_err("one"));
    read_denied(bob.export_llm_session(&id).await.expect_err("export"));
    read_denied(
        bob.client()
            .llm_sessions(alice.id(), "", 0)
            .await
            .expect_err("another owner's sessions"),
    );
    let llm_agg = Aggregate::new(AggregateKind::Llm, &id).expect("aggregate");
    read_denied(
        bob.client()
            .read_chain(&llm_agg, 1, 10)
            .await
            .expect_err("chain"),
    );
    // Bob's own list does not show alice's session.
    assert!(bob
        .llm_sessions("", 0)
        .await
        .expect("own list")
        .sessions
        .is_empty());

    // Commands on alice's session, signed by bob on bob's chain.
    let sid = id.clone();
    let mode = signed(&env, &bob, |_| {
        Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
            session_id: sid.clone(),
            mode: LlmMode::Replay as i32,
            options: None,
        })
    })
    .await;
    refused(
        &env,
        Rpc::SetMode,
        mode,
        Code::PermissionDenied,
        ErrorKind::NotSessionOwner,
    )
    .await;
    let delete = signed(&env, &bob, |_| {
        Kind::LlmSessionDeleted(proto::LlmSessionDeleted {
            session_id: sid.clone(),
            reason: "mine now".into(),
        })
    })
    .await;
    refused(
        &env,
        Rpc::Delete,
        delete,
        Code::PermissionDenied,
        ErrorKind::NotSessionOwner,
    )
    .await;

    // The operator reads every session.
    assert_eq!(
        env.client.llm_session(&id).await.expect("operator get"),
        alice.llm_session(&id).await.expect("owner get")
    );
    let all = env.client.llm_sessions("", "", 0).await.expect("all");
    assert!(all.sessions.iter().any(|s| s.session_id == id));
    env.client
        .llm_recordings_page(&id, 0, 10)
        .await
        .expect("operator recordings");
    env.stop().await;
}

#[tokio::test]
async fn another_owners_key_cannot_be_bound_to_an_attackers_session() {
    let env = Env::with_llm().await;
    let alice = env.agent("alice").await;
    let mallory = env.agent("mallory").await;
    let (_victim, key) = create(&alice).await;
    let (own, _) = create(&mallory).await;
    let victim_hash = key.sha256();

    // Issuing alice's key hash to mallory's own session: traffic sent with
    // alice's key would be recorded where mallory reads it.
    let sid = own.session_id.clone();
    let issue = signed(&env, &mallory, |_| {
        Kind::LlmSessionKeyIssued(proto::LlmSessionKeyIssued {
            session_id: sid.clone(),
            key_sha256: victim_hash.to_vec(),
        })
    })
    .await;
    refused(
        &env,
        Rpc::IssueKey,
        issue,
        Code::AlreadyExists,
        ErrorKind::KeyInUse,
    )
    .await;
    // Nor by opening a new session with it.
    let mallory_id = mallory.id().to_string();
    let reopen = signed(&env, &mallory, |eid| open(&mallory_id, eid, &victim_hash)).await;
    refused(
        &env,
        Rpc::Create,
        reopen,
        Code::AlreadyExists,
        ErrorKind::KeyInUse,
    )
    .await;
    // Nor revoke it from a session it does not belong to.
    let revoke = signed(&env, &mallory, |_| {
        Kind::LlmSessionKeyRevoked(proto::LlmSessionKeyRevoked {
            session_id: sid.clone(),
            key_sha256: victim_hash.to_vec(),
        })
    })
    .await;
    refused(
        &env,
        Rpc::RevokeKey,
        revoke,
        Code::NotFound,
        ErrorKind::KeyNotFound,
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn malformed_commands_are_refused_before_anything_is_appended() {
    let env = Env::with_llm().await;
    let alice = env.agent("alice").await;
    let (session, _) = create(&alice).await;
    let id = alice.id().to_string();
    let fresh = SessionKey::generate().sha256();

    // A session id that is not derived from the actor and the event id.
    let forged = signed(&env, &alice, |_| {
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: session.session_id.clone(),
            mode: LlmMode::Record as i32,
            key_sha256: fresh.to_vec(),
            ..Default::default()
        })
    })
    .await;
    refused(
        &env,
        Rpc::Create,
        forged,
        Code::InvalidArgument,
        ErrorKind::SessionIdMismatch,
    )
    .await;

    // The payload of another RPC.
    let good_open = signed(&env, &alice, |eid| open(&id, eid, &fresh)).await;
    for rpc in [Rpc::Import, Rpc::SetMode, Rpc::IssueKey, Rpc::Delete] {
        refused(
            &env,
            rpc,
            good_open.clone(),
            Code::InvalidArgument,
            ErrorKind::WrongCommand,
        )
        .await;
    }

    // No mode; a key hash that is not 32 bytes.
    let no_mode = signed(&env, &alice, |eid| {
        let Kind::LlmSessionOpened(mut o) = open(&id, eid, &fresh) else {
            unreachable!()
        };
        o.mode = LlmMode::Unspecified as i32;
        Kind::LlmSessionOpened(o)
    })
    .await;
    refused(
        &env,
        Rpc::Create,
        no_mode,
        Code::InvalidArgument,
        ErrorKind::InvalidArgument,
    )
    .await;
    let short = signed(&env, &alice, |eid| open(&id, eid, &fresh[..16])).await;
    refused(
        &env,
        Rpc::Create,
        short,
        Code::InvalidArgument,
        ErrorKind::InvalidArgument,
    )
    .await;

    // An unknown session.
    let unknown = signed(&env, &alice, |_| {
        Kind::LlmSessionDeleted(proto::LlmSessionDeleted {
            session_id: "0".repeat(32),
            reason: String::new(),
        })
    })
    .await;
    refused(
        &env,
        Rpc::Delete,
        unknown,
        Code::NotFound,
        ErrorKind::SessionNotFound,
    )
    .await;

    // A cassette the actor never uploaded (someone else's recordings).
    let bob = env.agent("bob").await;
    let blob = bob.put_blob(b"{}".to_vec()).await.expect("bob uploads");
    let import = signed(&env, &alice, |eid| {
        let Kind::LlmSessionOpened(mut o) = open(&id, eid, &fresh) else {
            unreachable!()
        };
        o.mode = LlmMode::Replay as i32;
        o.cassette = Some(blob.clone());
        Kind::LlmSessionOpened(o)
    })
    .await;
    refused(
        &env,
        Rpc::Import,
        import,
        Code::PermissionDenied,
        ErrorKind::ReadNotPermitted,
    )
    .await;

    // The good open still works afterwards (nothing was half-written).
    let created = send(&env, Rpc::Create, good_open).await.expect("create");
    assert_eq!(created.owner, id);
    env.stop().await;
}

/// A cassette of one non-streamed interaction whose request body is `content`
/// inside a chat request (see schemas/llm-cassette.schema.json).
fn cassette(content: &str) -> Vec<u8> {
    let request =
        format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{content}"}}]}}"#)
            .replace('"', "\\\"");
    let zeros = "0".repeat(64);
    format!(
        r#"{{"format":"amai.llm.cassette","version":1,"exported_at":"2026-12-03T00:00:00Z",
"session":{{"session_id":"s","owner":"o","mode":"record","upstreams":["openai"],
 "options":{{"ignore_fields":[],"keep_default_fields":false,"order":"strict","allow_repeats":false,"timing":"instant"}}}},
"interactions":[{{"seq":1,"event_id":"e1","event_hash":"{zeros}","request_hash":"{zeros}","occurrence":0,
 "upstream":"openai","method":"POST","path":"/v1/chat/completions","request":{{"text":"{request}"}},
 "status":200,"headers":{{}},"streamed":false,"response":{{"text":"{{}}"}},"events":null,"outcome":"completed",
 "usage":{{"input_tokens":1,"output_tokens":1}},"latency_us":5,"upstream_model":"m","detail":"","event_b64":""}}],
"misses":[]}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn an_import_is_exported_with_its_events_and_blobs() {
    let env = Env::with_llm().await;
    let alice = env.agent("alice").await;
    // Over the role's blob threshold: the request body goes to the blob store.
    let content = "x".repeat(6000);
    let (session, _key) = alice
        .import_llm_cassette(cassette(&content))
        .await
        .expect("import");
    assert_eq!(session.mode, LlmMode::Replay as i32);
    let id = session.session_id.clone();
    let mut recorded = session;
    for _ in 0..100 {
        if recorded.recordings >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        recorded = alice.llm_session(&id).await.expect("session");
    }
    assert_eq!(recorded.recordings, 1, "{recorded:?}");

    let page = alice
        .llm_recordings_page(&id, 0, 10)
        .await
        .expect("recordings");
    assert_eq!(page.events.len(), 1);
    let one = alice.llm_recording(&id, 1).await.expect("recording 1");
    assert_eq!(one, page.events[0]);
    let err = alice.llm_recording(&id, 2).await.expect_err("no seq 2");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    let export = alice.export_llm_session(&id).await.expect("export");
    assert_eq!(export.session.session_id, id);
    assert_eq!(export.events, page.events);
    assert_eq!(export.blobs.len(), 1, "the request body blob");
    let blob = export.blobs.values().next().expect("blob");
    assert!(String::from_utf8_lossy(blob).contains(&content));

    // The owner verifies the session stream client-side (the service's
    // signatures, hash links and keys).
    let llm_agg = Aggregate::new(AggregateKind::Llm, &id).expect("aggregate");
    let report = alice.client().verify_chain(&llm_agg).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 1);

    // The stranger's view: nothing.
    let bob = env.agent("bob").await;
    read_denied(bob.export_llm_session(&id).await.expect_err("export"));
    env.stop().await;
}
