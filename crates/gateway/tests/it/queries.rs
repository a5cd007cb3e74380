//! Queries answered by a real identity worker through the gateway:
//! `min_position` tokens that cannot be honoured, inbox pages bounded by bytes,
//! and query failure kinds surviving worker -> gateway -> SDK.

use std::collections::BTreeMap;

use amai_bus::proto::{self, get_identity_request::Selector, IdentityKind};
use amai_bus::IdentityKeys;
use amai_client::{Agent, ClientError, ErrorKind};
use tonic::Code;

use crate::common::{Env, MAX_EVENT_BYTES};

/// Event size limit of the inbox test: a message this close to NATS's default
/// 1 MiB `max_payload` can be appended but fits no query reply.
const NEAR_MAX_PAYLOAD: usize = 1_046_000;

/// Registers `name` and returns it with the position of its genesis.
async fn register(env: &Env, name: &str) -> (Agent, proto::Position) {
    let agent = env.client.agent(IdentityKeys::generate());
    let resp = agent
        .register(name, IdentityKind::Agent, BTreeMap::new())
        .await
        .expect("register");
    (agent, resp.position.expect("position"))
}

/// Waits (bounded, by the worker) until the projection has reached `position`.
async fn visible(env: &Env, position: &proto::Position) {
    env.client
        .identity_service()
        .get_stats(proto::GetStatsRequest {
            min_position: Some(position.clone()),
        })
        .await
        .expect("projection reaches the position");
}

/// Every query RPC carrying `min_position`, asked with `min`.
async fn ask_all(env: &Env, min: &proto::Position) -> Vec<(&'static str, ClientError)> {
    let mut svc = env.client.identity_service();
    let by_name = proto::GetIdentityRequest {
        selector: Some(Selector::Name("alice".into())),
        min_position: Some(min.clone()),
    };
    vec![
        (
            "GetIdentity",
            svc.get_identity(by_name.clone())
                .await
                .expect_err("GetIdentity")
                .into(),
        ),
        (
            "GetKeys",
            svc.get_keys(by_name).await.expect_err("GetKeys").into(),
        ),
        (
            "GetStats",
            svc.get_stats(proto::GetStatsRequest {
                min_position: Some(min.clone()),
            })
            .await
            .expect_err("GetStats")
            .into(),
        ),
        (
            "ListIntegrityViolations",
            svc.list_integrity_violations(proto::ListIntegrityViolationsRequest {
                limit: 0,
                min_position: Some(min.clone()),
            })
            .await
            .expect_err("ListIntegrityViolations")
            .into(),
        ),
    ]
}

#[tokio::test]
async fn min_position_tokens_that_cannot_be_honoured_fail_at_once_with_their_kind() {
    let env = Env::with_worker(MAX_EVENT_BYTES).await;
    let (alice, _) = register(&env, "alice").await;
    let position = alice
        .append_action("task.started", "{}")
        .await
        .expect("append")
        .position
        .expect("position");

    // A token from an append: read-your-write.
    let got = env
        .client
        .identity_service()
        .get_identity(proto::GetIdentityRequest {
            selector: Some(Selector::Name("alice".into())),
            min_position: Some(position.clone()),
        })
        .await
        .expect("read your write")
        .into_inner();
    assert_eq!(got.id, alice.id());

    // A stream the identity projection does not consume.
    let foreign = proto::Position {
        stream: "AMAI_LLM".into(),
        seq: 1,
    };
    for (rpc, err) in ask_all(&env, &foreign).await {
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{rpc}: {err}");
        assert_eq!(err.kind(), ErrorKind::StreamNotConsumed, "{rpc}: {err}");
        assert_eq!(
            err.error_metadata().get("stream").map(String::as_str),
            Some("AMAI_LLM"),
            "{rpc}"
        );
    }

    // Beyond the stream's last sequence: no append returned this.
    let last = env.stream_positions().await["AMAI_AGENTS"];
    let beyond = proto::Position {
        stream: "AMAI_AGENTS".into(),
        seq: last + 1000,
    };
    for (rpc, err) in ask_all(&env, &beyond).await {
        assert_eq!(err.code(), Some(Code::OutOfRange), "{rpc}: {err}");
        assert_eq!(err.kind(), ErrorKind::PositionBeyondEnd, "{rpc}: {err}");
        assert!(!err.is_retryable(), "{rpc}");
        assert_eq!(
            err.error_metadata().get("last_seq"),
            Some(&last.to_string()),
            "{rpc}: the answer names the stream's last sequence"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn query_failure_kinds_survive_worker_gateway_and_sdk() {
    let env = Env::with_worker(MAX_EVENT_BYTES).await;
    let err = env
        .client
        .get_identity("nobody")
        .await
        .expect_err("no such identity");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    env.stop().await;
}

#[tokio::test]
async fn inbox_pages_are_bounded_by_bytes_and_an_item_too_large_for_any_page_is_resource_exhausted()
{
    let env = Env::with_worker(NEAR_MAX_PAYLOAD).await;
    let (alice, _) = register(&env, "alice").await;
    let (bob, bob_at) = register(&env, "bob").await;
    visible(&env, &bob_at).await;

    // Six messages of 200 kB: 1.2 MB, more than one NATS message (1 MiB) holds.
    let contents: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 200_000]).collect();
    let mut sent_at = None;
    for c in &contents {
        sent_at = alice.send_message("bob", c).await.expect("send").position;
    }
    visible(&env, sent_at.as_ref().expect("position")).await;

    // The first page holds what fits, not an error or a timeout.
    let first = bob.inbox(0, 100).await.expect("a page that fits");
    assert!(
        !first.is_empty() && first.len() < contents.len(),
        "one page cannot hold all six ({} messages)",
        first.len()
    );
    let mut got = first;
    let mut after = got.last().expect("one").position.seq;
    loop {
        let page = bob.inbox_page(after, 100).await.expect("next page");
        got.extend(page.messages);
        match page.next_after_seq {
            Some(next) => after = next,
            None => break,
        }
        assert!(got.len() <= contents.len(), "pages must make progress");
    }
    let plaintexts: Vec<_> = got.iter().map(|m| m.plaintext.clone()).collect();
    assert_eq!(plaintexts, contents, "every message once, in order");
    let last_small = got.last().expect("six").position.seq;

    // One message too large for any reply (it fits the stream, not a reply with
    // its envelope): RESOURCE_EXHAUSTED naming its sequence, which skips it.
    let big = alice
        .send_message("bob", &vec![7u8; 1_041_000])
        .await
        .expect("a near-max_payload message is stored")
        .position
        .expect("position");
    visible(&env, &big).await;
    let err = bob
        .inbox_page(last_small, 100)
        .await
        .expect_err("item too large");
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    assert_eq!(err.kind(), ErrorKind::ItemTooLarge, "{err}");
    assert_eq!(
        err.error_metadata().get("seq"),
        Some(&big.seq.to_string()),
        "{err}"
    );
    let rest = bob
        .inbox_page(big.seq, 100)
        .await
        .expect("after the big one");
    assert!(rest.messages.is_empty() && rest.next_after_seq.is_none());
    env.stop().await;
}
