//! Bodies and recorded streams in events: inline up to the blob threshold, in
//! the blob store (by SHA-256, verified on read) above it, so an event stays
//! far below the event size limit whatever the model answered.

use amai_bus::blob::BlobStore;
use amai_bus::proto;
use bytes::Bytes;
use prost::Message;

/// `data` as an event body: inline, or a blob reference when larger than
/// `threshold`.
pub(crate) async fn to_llm_body(
    blobs: &BlobStore,
    data: &[u8],
    threshold: usize,
) -> Result<proto::LlmBody, String> {
    if data.len() <= threshold {
        return Ok(proto::LlmBody {
            inline: data.to_vec(),
            blob: None,
        });
    }
    let r = blobs.put(data).await.map_err(|e| e.to_string())?;
    Ok(proto::LlmBody {
        inline: Vec::new(),
        blob: Some(proto::BlobRef {
            sha256: r.sha256.to_vec(),
            size: r.size,
        }),
    })
}

/// A recorded stream as event fields: inline events, or (when their encoding
/// is larger than `threshold`) an encoded `LlmSseEvents` in the blob store.
pub(crate) async fn to_llm_events(
    blobs: &BlobStore,
    events: Vec<proto::LlmSseEvent>,
    threshold: usize,
) -> Result<(Vec<proto::LlmSseEvent>, Option<proto::BlobRef>), String> {
    let encoded = proto::LlmSseEvents { events };
    if encoded.encoded_len() <= threshold {
        return Ok((encoded.events, None));
    }
    let r = blobs
        .put(&encoded.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        Vec::new(),
        Some(proto::BlobRef {
            sha256: r.sha256.to_vec(),
            size: r.size,
        }),
    ))
}

fn digest(r: &proto::BlobRef) -> Result<[u8; 32], String> {
    r.sha256
        .as_slice()
        .try_into()
        .map_err(|_| "a blob reference is not a SHA-256".to_string())
}

/// The bytes of an event body.
pub(crate) async fn read_llm_body(
    blobs: &BlobStore,
    body: Option<&proto::LlmBody>,
) -> Result<Bytes, String> {
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    match &body.blob {
        None => Ok(Bytes::from(body.inline.clone())),
        Some(r) => blobs
            .get(&digest(r)?)
            .await
            .map(Bytes::from)
            .map_err(|e| e.to_string()),
    }
}

/// The events of a recorded stream.
pub(crate) async fn read_llm_events(
    blobs: &BlobStore,
    rec: &proto::LlmInteractionRecorded,
) -> Result<Vec<proto::LlmSseEvent>, String> {
    match &rec.events_blob {
        None => Ok(rec.events.clone()),
        Some(r) => {
            let data = blobs.get(&digest(r)?).await.map_err(|e| e.to_string())?;
            proto::LlmSseEvents::decode(data.as_slice())
                .map(|e| e.events)
                .map_err(|e| format!("recorded stream blob does not decode: {e}"))
        }
    }
}
