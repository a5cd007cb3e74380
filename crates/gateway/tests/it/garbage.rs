//! The garbage run: every RPC of every service in `proto/amai/v1/gateway.proto`,
//! `llm_service.proto` and `trust_service.proto` (read from the descriptor set,
//! so a new RPC cannot be left out) gets
//!
//! (a) bytes that are no protobuf encoding at all (fixed malformed samples and
//!     seeded random ones, each checked to be undecodable),
//! (b) a real message of another type whose field 1 has a clashing wire type
//!     (`Stats` where field 1 is length-delimited, `VerifyChainRequest` where it
//!     is a varint),
//! (c) an empty message: all fields at their defaults, which is what a
//!     mismatched type whose fields happen not to clash decodes to at worst.
//!
//! (a) and (b) are `INVALID_ARGUMENT` / `UNDECODABLE_MESSAGE` for every RPC,
//! including the two that need a request signature (`ListInbox`, `PutBlob`):
//! the signature covers the digest of the decoded message, so decoding (cheap,
//! bounded by the message size limit) necessarily comes first. (c) is decided
//! per RPC in [`EMPTY_MESSAGE`]. Never `INTERNAL` or `UNKNOWN`, and nothing is
//! appended to any stream.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use amai_bus::proto;
use amai_client::ErrorKind;
use bytes::{Buf, BufMut};
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::common::Env;

/// A codec that sends and receives raw bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// What an empty message gets, per RPC (no identity worker runs in this test).
const EMPTY_MESSAGE: &[(&str, Code)] = &[
    // Both events are required.
    ("/amai.v1.IdentityService/Register", Code::InvalidArgument),
    // An id or a name is required (checked by the gateway before any query).
    (
        "/amai.v1.IdentityService/GetIdentity",
        Code::InvalidArgument,
    ),
    ("/amai.v1.IdentityService/GetKeys", Code::InvalidArgument),
    // The event is required.
    ("/amai.v1.IdentityService/RotateKey", Code::InvalidArgument),
    ("/amai.v1.IdentityService/Revoke", Code::InvalidArgument),
    (
        "/amai.v1.IdentityService/SendMessage",
        Code::InvalidArgument,
    ),
    ("/amai.v1.EventService/Append", Code::InvalidArgument),
    // The request signature is checked first (it also covers the fields):
    // the signed commands, and every read (access is decided after it).
    ("/amai.v1.IdentityService/ListInbox", Code::Unauthenticated),
    ("/amai.v1.BlobService/PutBlob", Code::Unauthenticated),
    (
        "/amai.v1.IdentityService/VerifyChain",
        Code::Unauthenticated,
    ),
    ("/amai.v1.EventService/GetChainHead", Code::Unauthenticated),
    ("/amai.v1.EventService/GetEvent", Code::Unauthenticated),
    ("/amai.v1.EventService/ReadChain", Code::Unauthenticated),
    ("/amai.v1.EventService/Subscribe", Code::Unauthenticated),
    ("/amai.v1.BlobService/GetBlob", Code::Unauthenticated),
    // A valid request: the query runs (no worker here, so UNAVAILABLE).
    ("/amai.v1.IdentityService/GetStats", Code::Unavailable),
    (
        "/amai.v1.IdentityService/ListIntegrityViolations",
        Code::Unavailable,
    ),
    // LlmService: a command needs its signed event; reads are signed.
    ("/amai.v1.LlmService/CreateSession", Code::InvalidArgument),
    ("/amai.v1.LlmService/SetMode", Code::InvalidArgument),
    ("/amai.v1.LlmService/IssueKey", Code::InvalidArgument),
    ("/amai.v1.LlmService/RevokeKey", Code::InvalidArgument),
    ("/amai.v1.LlmService/DeleteSession", Code::InvalidArgument),
    ("/amai.v1.LlmService/Import", Code::InvalidArgument),
    ("/amai.v1.LlmService/GetSession", Code::Unauthenticated),
    ("/amai.v1.LlmService/ListSessions", Code::Unauthenticated),
    ("/amai.v1.LlmService/ListRecordings", Code::Unauthenticated),
    ("/amai.v1.LlmService/GetRecording", Code::Unauthenticated),
    ("/amai.v1.LlmService/Export", Code::Unauthenticated),
    // TrustService: Endorse needs its signed event, GetTrust an agent id
    // (checked before any query); the other reads are signed.
    ("/amai.v1.TrustService/Endorse", Code::InvalidArgument),
    ("/amai.v1.TrustService/GetTrust", Code::InvalidArgument),
    ("/amai.v1.TrustService/GetHistory", Code::Unauthenticated),
    ("/amai.v1.TrustService/ListAlerts", Code::Unauthenticated),
    ("/amai.v1.TrustService/GetReport", Code::Unauthenticated),
    ("/amai.v1.TrustService/Explain", Code::Unauthenticated),
    // Has no fields: an empty message is the valid request (OK = it succeeds).
    ("/amai.v1.EventService/GetDeployment", Code::Ok),
];

struct Rpc {
    path: String,
    server_streaming: bool,
    /// Wire type of the request's field 1 is length-delimited (`None`: the
    /// request has no fields, so no message type can clash with it).
    field1_length_delimited: Option<bool>,
    /// Fully qualified request type, e.g. `.amai.v1.GetIdentityRequest`.
    input: String,
}

fn rpcs() -> Vec<Rpc> {
    let fds = prost_types::FileDescriptorSet::decode(amai_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set");
    let messages: BTreeMap<String, &prost_types::DescriptorProto> = fds
        .file
        .iter()
        .filter(|f| f.package() == "amai.v1")
        .flat_map(|f| f.message_type.iter())
        .map(|m| (format!(".amai.v1.{}", m.name()), m))
        .collect();
    let services = [
        "amai/v1/gateway.proto",
        "amai/v1/llm_service.proto",
        "amai/v1/trust_service.proto",
    ]
    .into_iter()
    .flat_map(|name| {
        fds.file
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{name} in the descriptor set"))
            .service
            .iter()
    });
    let mut out = Vec::new();
    for service in services {
        for method in &service.method {
            let input = messages
                .get(method.input_type())
                .unwrap_or_else(|| panic!("request type {} not found", method.input_type()));
            let field1 = input.field.iter().find(|f| f.number() == 1);
            assert!(
                field1.is_some() || input.field.is_empty(),
                "{} has no field 1: pick a mismatch for it",
                input.name()
            );
            let field1_length_delimited = field1.map(|field1| {
                matches!(field1.r#type(), Type::String | Type::Bytes | Type::Message)
                    || field1.label() == prost_types::field_descriptor_proto::Label::Repeated
            });
            out.push(Rpc {
                path: format!("/amai.v1.{}/{}", service.name(), method.name()),
                server_streaming: method.server_streaming(),
                field1_length_delimited,
                input: method.input_type().to_string(),
            });
        }
    }
    out
}

/// Whether `bytes` decode as the request type `input` (checked with the
/// generated types, so a "garbage" sample that happens to decode is caught).
fn decodes_as(input: &str, bytes: &[u8]) -> bool {
    macro_rules! try_types {
        ($($t:ident),*) => {
            match input {
                $( concat!(".amai.v1.", stringify!($t)) => proto::$t::decode(bytes).is_ok(), )*
                other => panic!("request type {other} missing from the garbage test's list"),
            }
        };
    }
    try_types!(
        RegisterRequest,
        GetIdentityRequest,
        AppendRequest,
        ListInboxRequest,
        GetStatsRequest,
        VerifyChainRequest,
        ListIntegrityViolationsRequest,
        GetChainHeadRequest,
        GetEventRequest,
        ReadChainRequest,
        SubscribeRequest,
        PutBlobRequest,
        GetBlobRequest,
        GetDeploymentRequest,
        LlmCommand,
        GetLlmSessionRequest,
        ListLlmSessionsRequest,
        ListLlmRecordingsRequest,
        GetLlmRecordingRequest,
        ExportLlmSessionRequest,
        EndorseCommand,
        GetTrustRequest,
        GetTrustHistoryRequest,
        ListTrustAlertsRequest,
        GetTrustReportRequest,
        ExplainTrustRequest
    )
}

/// Fixed malformed encodings plus seeded pseudo-random bytes (xorshift).
fn garbage_samples() -> Vec<Vec<u8>> {
    let mut samples = vec![
        // A varint tag that never ends.
        vec![0xff; 11],
        // Field 1 with wire type 7 (no such wire type).
        vec![0x0f, 0x01],
        // Field 1, length-delimited, longer than the message.
        vec![0x0a, 0x7f, 0x01],
        // Field number 0.
        vec![0x00, 0x01],
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [7usize, 64, 1000] {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push((x >> 24) as u8);
        }
        samples.push(v);
    }
    samples
}

async fn call(channel: &tonic::transport::Channel, rpc: &Rpc, body: Vec<u8>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_str(&rpc.path).expect("path");
    if rpc.server_streaming {
        let mut stream = grpc
            .server_streaming(tonic::Request::new(body), path, RawCodec)
            .await?
            .into_inner();
        // An error may come with the headers or as the first stream item.
        stream.message().await.map(|_| ())
    } else {
        grpc.unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(|_| ())
    }
}

fn assert_undecodable(rpc: &Rpc, what: &str, result: Result<(), Status>) {
    let status = result.expect_err(&format!("{} accepted {what}", rpc.path));
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{} answered {what} with {status:?}",
        rpc.path
    );
    assert_eq!(
        amai_client::error::status_kind(&status),
        ErrorKind::UndecodableMessage,
        "{} {what}",
        rpc.path
    );
}

#[tokio::test]
async fn garbage_and_mismatched_messages_are_invalid_argument_on_every_rpc() {
    let env = Env::start().await;
    let channel = tonic::transport::Endpoint::from_shared(env.url.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let rpcs = rpcs();
    let covered: BTreeSet<&str> = rpcs.iter().map(|r| r.path.as_str()).collect();
    let decided: BTreeSet<&str> = EMPTY_MESSAGE.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        covered, decided,
        "every RPC needs a decision in EMPTY_MESSAGE (and only those)"
    );
    let before = env.stream_positions().await;

    let garbage = garbage_samples();
    let stats = proto::Stats {
        identities: 7,
        ..Default::default()
    }
    .encode_to_vec();
    let verify = proto::VerifyChainRequest {
        aggregate: "agent/00".into(),
    }
    .encode_to_vec();
    let mut random_checked = 0;
    for rpc in &rpcs {
        // (a) garbage.
        for sample in &garbage {
            assert!(
                !decodes_as(&rpc.input, sample),
                "sample {sample:02x?} decodes as {}; pick another",
                rpc.input
            );
            assert_undecodable(rpc, "garbage", call(&channel, rpc, sample.clone()).await);
            random_checked += 1;
        }
        // (b) a real message of another type, clashing in field 1's wire type.
        if let Some(length_delimited) = rpc.field1_length_delimited {
            let mismatched = if length_delimited {
                stats.clone()
            } else {
                verify.clone()
            };
            assert!(!decodes_as(&rpc.input, &mismatched), "{}", rpc.path);
            assert_undecodable(
                rpc,
                "a mismatched message type",
                call(&channel, rpc, mismatched).await,
            );
        }
        // (c) an empty message.
        let expected = EMPTY_MESSAGE
            .iter()
            .find(|(p, _)| *p == rpc.path)
            .map(|(_, c)| *c)
            .expect("decided");
        if expected == Code::Ok {
            call(&channel, rpc, Vec::new())
                .await
                .unwrap_or_else(|s| panic!("{} refused an empty message: {s:?}", rpc.path));
            continue;
        }
        let status = call(&channel, rpc, Vec::new())
            .await
            .expect_err(&format!("{} accepted an empty message", rpc.path));
        assert_eq!(status.code(), expected, "{}: {status:?}", rpc.path);
        assert_ne!(
            amai_client::error::status_kind(&status),
            ErrorKind::Unknown,
            "{}: every status carries an ErrorInfo",
            rpc.path
        );
    }
    assert_eq!(random_checked, rpcs.len() * garbage.len());
    assert_eq!(
        env.stream_positions().await,
        before,
        "garbage must not append anything"
    );
    env.stop().await;
}
