//! Request signatures on ListInbox, and queries without a worker (codes and
//! `ErrorInfo` kinds, never message text).

use amai_bus::proto;
use amai_client::error::status_kind;
use amai_client::request_auth::{new_nonce, now_ms, sign_request_at};
use amai_client::{ErrorKind, LIST_INBOX_METHOD};
use tonic::Code;

use crate::common::Env;

fn inbox_request(agent_id: &str) -> proto::ListInboxRequest {
    proto::ListInboxRequest {
        agent_id: agent_id.to_string(),
        after_seq: 0,
        limit: 10,
        min_position: None,
    }
}

#[tokio::test]
async fn list_inbox_demands_a_fresh_unreplayed_signature_by_the_recipient() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    let mut svc = env.client.identity_service();

    // No signature at all.
    let err = svc
        .list_inbox(inbox_request(alice.id()))
        .await
        .expect_err("unsigned");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::SignatureMissing);

    // Expired.
    let req = inbox_request(alice.id());
    let deployment = env.client.deployment_id().await.expect("deployment");
    let sig = sign_request_at(
        alice.keys(),
        alice.id(),
        &deployment,
        LIST_INBOX_METHOD,
        &req,
        now_ms() - 120_000,
        new_nonce(),
    );
    let mut r = tonic::Request::new(req.clone());
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("expired");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::RequestExpired);

    // Signed over another body (tampered request).
    let sig = alice
        .sign_request(LIST_INBOX_METHOD, &req)
        .await
        .expect("sign");
    let mut r = tonic::Request::new(proto::ListInboxRequest {
        after_seq: 5,
        ..req.clone()
    });
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("tampered");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::BadRequestSignature);

    // A valid signature passes authentication (no identity worker runs here, so
    // the query itself is Unavailable)...
    let sig = alice
        .sign_request(LIST_INBOX_METHOD, &req)
        .await
        .expect("sign");
    let mut r = tonic::Request::new(req.clone());
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("no worker");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(status_kind(&err), ErrorKind::WorkerUnavailable);
    // ...and replaying it is refused.
    let mut r = tonic::Request::new(req.clone());
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("replayed");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::RequestReplayed);

    // Bob, validly signed, asking for alice's inbox.
    let sig = bob
        .sign_request(LIST_INBOX_METHOD, &req)
        .await
        .expect("sign");
    let mut r = tonic::Request::new(req.clone());
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("not the recipient");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(status_kind(&err), ErrorKind::NotOwner);

    // An unregistered signer.
    let stranger = env.client.agent(amai_bus::IdentityKeys::generate());
    let sig = stranger
        .sign_request(LIST_INBOX_METHOD, &req)
        .await
        .expect("sign");
    let mut r = tonic::Request::new(req);
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.list_inbox(r).await.expect_err("stranger");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::UnknownSigner);
    env.stop().await;
}

#[tokio::test]
async fn a_revoked_identity_can_no_longer_sign_requests() {
    let env = Env::start().await;
    let carol = env.agent("carol").await;
    carol.revoke("lost laptop").await.expect("revoke");
    let req = inbox_request(carol.id());
    let sig = carol
        .sign_request(LIST_INBOX_METHOD, &req)
        .await
        .expect("sign");
    let mut r = tonic::Request::new(req);
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = env
        .client
        .identity_service()
        .list_inbox(r)
        .await
        .expect_err("revoked signer");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_eq!(status_kind(&err), ErrorKind::RevokedSigner);
    // The metrics layer saw the refused request, by method and status code.
    let method = "/amai.v1.IdentityService/ListInbox";
    assert_eq!(env.metrics.requests(method), 1);
    assert_eq!(
        env.metrics.failures(method, Code::PermissionDenied as i32),
        1
    );
    assert!(env.metrics.render().contains(
        "amai_gateway_request_seconds_count{method=\"/amai.v1.IdentityService/ListInbox\"} 1"
    ));
    env.stop().await;
}

#[tokio::test]
async fn queries_without_a_worker_are_unavailable_with_a_clear_message() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    for err in [
        env.client
            .get_identity(alice.id())
            .await
            .expect_err("identity"),
        env.client.get_keys("alice").await.expect_err("keys"),
        env.client.stats().await.expect_err("stats"),
        alice
            .send_message("alice", b"hi")
            .await
            .expect_err("send needs keys"),
    ] {
        assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
        assert_eq!(err.kind(), ErrorKind::WorkerUnavailable, "{err}");
    }
    env.stop().await;
}
