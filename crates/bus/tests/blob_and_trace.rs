//! The blob store on a real JetStream object store, and W3C trace context
//! crossing NATS headers.

use amai_bus::blob::{BlobError, BlobStore, BLOB_BUCKET};
use amai_testkit::NatsServer;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn blobs_are_content_addressed_and_verified_on_read() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    let blobs = BlobStore::open(&js, 1, 64 * 1024).await.expect("open");
    assert!(blobs.should_offload(64 * 1024 + 1));
    assert!(!blobs.should_offload(100));
    let data = vec![7u8; 300_000];
    let r = blobs.put(&data).await.expect("put");
    assert_eq!(r.size, 300_000);
    assert_eq!(r.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(blobs.put(&data).await.expect("idempotent"), r);
    assert_eq!(blobs.get(&r.sha256).await.expect("get"), data);
    assert!(matches!(
        blobs.get(&[1u8; 32]).await,
        Err(BlobError::NotFound(_))
    ));

    // Content stored under a key that is not its digest is refused on read.
    let store = js.get_object_store(BLOB_BUCKET).await.expect("bucket");
    let claimed = <[u8; 32]>::from(Sha256::digest(b"what the key promises"));
    store
        .put(hex::encode(claimed).as_str(), &mut &b"something else"[..])
        .await
        .expect("raw put");
    assert!(matches!(
        blobs.get(&claimed).await,
        Err(BlobError::DigestMismatch(_))
    ));
}

#[test]
fn trace_context_is_injected_into_and_extracted_from_headers() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let mut headers = async_nats::HeaderMap::new();
        let sent = tracing::info_span!("gateway.append");
        let trace_id = {
            let _g = sent.enter();
            amai_bus::trace::inject_current(&mut headers);
            sent.context().span().span_context().trace_id()
        };
        let traceparent = amai_bus::trace::traceparent(Some(&headers)).expect("traceparent header");
        assert!(traceparent.starts_with("00-"), "{traceparent}");
        assert!(
            traceparent.contains(&trace_id.to_string()),
            "{traceparent} carries {trace_id}"
        );

        let received = tracing::info_span!("worker.react");
        amai_bus::trace::set_parent_from(&received, Some(&headers));
        assert_eq!(
            received.context().span().span_context().trace_id(),
            trace_id,
            "the worker's span joins the gateway's trace"
        );
    });
}
