//! Subscribe filters and starting points; health.

use std::time::Duration;

use amai_bus::proto::{self, subscribe_request::Start};
use futures::StreamExt;
use prost::Message;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::common::{agg, Env};

#[tokio::test]
async fn subscribe_filters_by_type_and_starts_at_a_sequence() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let bob = env.agent("bob").await;
    alice.append_action("task.started", "{}").await.expect("a");
    let from = alice
        .append_action("task.done", r#"{"n":1}"#)
        .await
        .expect("b")
        .position
        .expect("pos")
        .seq;
    bob.append_action("task.done", r#"{"bob":true}"#)
        .await
        .expect("c");
    alice.append_action("task.started", "{}").await.expect("d");
    alice
        .append_action("task.done", r#"{"n":2}"#)
        .await
        .expect("e");

    // Whole stream, type filter, from `from`: alice n=1, bob, alice n=2.
    let req = proto::SubscribeRequest {
        stream: "AMAI_AGENTS".into(),
        types: vec!["task.done".into()],
        start: Some(Start::StartSeq(from)),
        ..Default::default()
    };
    let mut sub = env.client.subscribe(req).await.expect("subscribe");
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        got.push(ev);
    }
    for ev in &got {
        assert!(ev.position.as_ref().expect("pos").seq >= from);
        let body =
            proto::EventBody::decode(ev.event.as_ref().expect("e").body.as_slice()).expect("body");
        assert_eq!(body.r#type, "task.done");
    }
    // Nothing else matches until a new event arrives.
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next())
        .await
        .is_err());
    drop(sub);

    // A bounded subscription (`end_seq`) ends after that sequence: an
    // auditor reads a stream to a known end.
    let req = proto::SubscribeRequest {
        stream: "AMAI_AGENTS".into(),
        start: Some(Start::StartSeq(from)),
        end_seq: from + 1,
        ..Default::default()
    };
    let mut sub = env.client.subscribe(req).await.expect("subscribe");
    let mut seqs = Vec::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the bounded subscription ends by itself")
    {
        seqs.push(ev.expect("ok").position.expect("pos").seq);
    }
    assert_eq!(seqs, vec![from, from + 1]);

    // One aggregate + actor filter, from the start.
    let req = proto::SubscribeRequest {
        aggregate: agg(&alice).to_string(),
        types: vec!["task.done".into()],
        actor: alice.id().to_string(),
        ..Default::default()
    };
    let mut sub = env.client.subscribe(req).await.expect("subscribe");
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        assert_eq!(ev.subject, agg(&alice).subject());
    }
    // Live: a new matching event is delivered.
    alice
        .append_action("task.done", r#"{"n":3}"#)
        .await
        .expect("live");
    let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("ok");
    let body =
        proto::EventBody::decode(ev.event.as_ref().expect("e").body.as_slice()).expect("body");
    assert_eq!(body.aggregate_seq, 6);

    // Bad requests.
    let err = env
        .client
        .subscribe(proto::SubscribeRequest::default())
        .await
        .expect_err("no stream");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    env.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let env = Env::start().await;
    let channel = tonic::transport::Endpoint::from_shared(env.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "amai.v1.IdentityService",
        "amai.v1.EventService",
        "amai.v1.BlobService",
        "amai.v1.LlmService",
    ] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "{service}");
    }
    env.stop().await;
}

/// A reflection client of one protocol version lists every Amai service.
macro_rules! reflection_lists_the_services {
    ($test:ident, $pb:path) => {
        #[tokio::test]
        async fn $test() {
            use $pb::{
                server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse, ServerReflectionRequest,
            };
            let env = Env::start().await;
            let channel = tonic::transport::Endpoint::from_shared(env.url.clone())
                .expect("url")
                .connect()
                .await
                .expect("connect");
            let mut client = ServerReflectionClient::new(channel);
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut resp = client
                .server_reflection_info(futures::stream::iter(vec![req]))
                .await
                .expect("reflection is served in this version")
                .into_inner();
            let msg = resp.next().await.expect("one answer").expect("ok");
            let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
                panic!("unexpected answer {msg:?}")
            };
            let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
            for service in [
                "amai.v1.IdentityService",
                "amai.v1.EventService",
                "amai.v1.BlobService",
                "amai.v1.LlmService",
            ] {
                assert!(names.contains(&service.to_string()), "{names:?}");
            }
            drop(resp);
            env.stop().await;
        }
    };
}

reflection_lists_the_services!(reflection_lists_the_services, tonic_reflection::pb::v1);
// Stock tools that only speak v1alpha (Python's grpcio-reflection among them).
reflection_lists_the_services!(
    reflection_v1alpha_lists_the_services_for_older_tools,
    tonic_reflection::pb::v1alpha
);
