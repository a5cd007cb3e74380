//! BlobService: signed uploads, verified reads, and actions that reference blobs.

use amai_bus::proto::{self, payload::Kind};
use amai_client::error::status_kind;
use amai_client::{ErrorKind, PUT_BLOB_METHOD};
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::common::{agg, Env, MAX_BLOB_BYTES};

#[tokio::test]
async fn blobs_round_trip_and_actions_reference_them() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let content = vec![42u8; 100 * 1024]; // far over the 8 KiB event limit
    let (blob, appended) = alice
        .append_action_with_blob("app.response", r#"{"model":"x"}"#, content.clone())
        .await
        .expect("put + append");
    assert_eq!(blob.sha256, Sha256::digest(&content).to_vec());
    assert_eq!(blob.size, content.len() as u64);
    let digest: [u8; 32] = blob.sha256.as_slice().try_into().expect("32 bytes");
    assert_eq!(env.client.get_blob(&digest).await.expect("get"), content);

    // The action on the chain carries the reference, not the content.
    let page = env
        .client
        .read_chain(&agg(&alice), appended.aggregate_seq, 1)
        .await
        .expect("read");
    let signed = page.events[0].event.clone().expect("event");
    let body = <proto::EventBody as prost::Message>::decode(signed.body.as_slice()).expect("body");
    let Some(Kind::AgentAction(action)) = body.payload.and_then(|p| p.kind) else {
        panic!("not an action")
    };
    assert_eq!(action.blob, Some(blob));

    // The same content again is the same blob.
    let again = alice.put_blob(content).await.expect("idempotent");
    assert_eq!(again.sha256, digest.to_vec());
    env.stop().await;
}

#[tokio::test]
async fn bad_blob_requests_get_precise_errors() {
    let env = Env::start().await;
    let alice = env.agent("alice").await;
    let mut svc = env.client.blob_service();

    // Unsigned upload.
    let err = svc
        .put_blob(proto::PutBlobRequest {
            data: vec![1, 2, 3],
        })
        .await
        .expect_err("unsigned");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert_eq!(status_kind(&err), ErrorKind::SignatureMissing);

    // Signed over other content.
    let sig = alice
        .sign_request(PUT_BLOB_METHOD, &proto::PutBlobRequest { data: vec![1] })
        .await
        .expect("sign");
    let mut r = tonic::Request::new(proto::PutBlobRequest { data: vec![2] });
    amai_client::request_auth::apply(&sig, r.metadata_mut());
    let err = svc.put_blob(r).await.expect_err("tampered");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(status_kind(&err), ErrorKind::BadRequestSignature);

    // Over the limit.
    let err = alice
        .put_blob(vec![0u8; MAX_BLOB_BYTES + 1])
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    assert_eq!(err.kind(), ErrorKind::TooLarge, "{err}");

    // Unknown digest, malformed digest.
    let err = env.client.get_blob(&[7u8; 32]).await.expect_err("unknown");
    assert_eq!(err.code(), Some(Code::NotFound));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let req = env
        .client
        .signed_request(
            amai_client::GET_BLOB_METHOD,
            proto::GetBlobRequest { sha256: vec![1, 2] },
        )
        .await
        .expect("sign");
    let err = svc.get_blob(req).await.expect_err("short digest");
    assert_eq!(err.code(), Code::InvalidArgument);
    env.stop().await;
}
