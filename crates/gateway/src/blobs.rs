//! `BlobService`: content-addressed uploads and verified reads over the bus's
//! blob store. An upload needs a request signature by a registered, unrevoked
//! identity (storage is not anonymous); the key is the SHA-256 of the content, so
//! the same content is stored once.
//!
//! Every uploader of a blob is recorded in the JetStream KV bucket
//! [`UPLOADERS_BUCKET`] (key `<sha256 hex>.<identity id>`), since the same
//! content may be uploaded by several identities. A read needs a request
//! signature by a recorded uploader, an operator or a reader granted
//! [`crate::access::BLOBS`]; the uploader check is one KV get, before the blob
//! is read.

use std::sync::Arc;

use amai_bus::blob::BlobStore;
use amai_bus::proto;
use amai_proto::v1::blob_service_server::BlobService;
use tonic::{Request, Response, Status};

use amai_proto::wire::{GET_BLOB_METHOD, PUT_BLOB_METHOD};
use async_nats::jetstream::kv;

use crate::access::BLOBS;
use crate::status::ApiError;
use crate::{GatewayError, Shared};

/// The KV bucket recording who uploaded which blob.
pub const UPLOADERS_BUCKET: &str = "AMAI_BLOB_UPLOADERS";

/// The blob service.
pub struct BlobSvc {
    shared: Arc<Shared>,
    blobs: BlobStore,
    uploaders: kv::Store,
    max_blob_bytes: usize,
}

/// Opens (creating if needed) the uploader bucket with `replicas` copies.
pub(crate) async fn open_uploaders(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, GatewayError> {
    js.create_or_update_key_value(kv::Config {
        bucket: UPLOADERS_BUCKET.to_string(),
        description: "amai blob uploaders (who may read a blob)".to_string(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| GatewayError::Uploaders(e.to_string()))
}

/// The uploader record of `actor` for the blob `sha256`.
pub(crate) fn uploader_key(sha256: &[u8], actor: &str) -> String {
    format!("{}.{actor}", hex::encode(sha256))
}

/// Whether `actor` uploaded the blob `sha256` (one KV get).
pub(crate) async fn is_uploader(
    uploaders: &kv::Store,
    sha256: &[u8],
    actor: &str,
) -> Result<bool, ApiError> {
    uploaders
        .get(uploader_key(sha256, actor))
        .await
        .map(|v| v.is_some())
        .map_err(|e| ApiError::Unavailable(format!("cannot read the blob uploaders ({e}); retry")))
}

impl BlobSvc {
    pub(crate) fn new(
        shared: Arc<Shared>,
        blobs: BlobStore,
        uploaders: kv::Store,
        max_blob_bytes: usize,
    ) -> Self {
        Self {
            shared,
            blobs,
            uploaders,
            max_blob_bytes,
        }
    }

    async fn put(
        &self,
        request: Request<proto::PutBlobRequest>,
    ) -> Result<proto::BlobRef, ApiError> {
        let (metadata, _, req) = request.into_parts();
        let actor = self
            .shared
            .auth
            .authenticate(PUT_BLOB_METHOD, &metadata, &req)
            .await?;
        if req.data.len() > self.max_blob_bytes {
            return Err(ApiError::TooLarge(format!(
                "blob is {} bytes, over the {} byte limit",
                req.data.len(),
                self.max_blob_bytes
            )));
        }
        let r = self.blobs.put(&req.data).await?;
        // Recorded after the content is stored; a failure here is retryable
        // (both writes are idempotent).
        self.uploaders
            .put(
                uploader_key(&r.sha256, &actor),
                bytes::Bytes::from(amai_bus::request::now_ms().to_string()),
            )
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "blob stored but its uploader could not be recorded ({e}); upload it again"
                ))
            })?;
        tracing::debug!(%actor, size = r.size, sha256 = %r.key(), "blob stored");
        Ok(proto::BlobRef {
            sha256: r.sha256.to_vec(),
            size: r.size,
        })
    }

    async fn get(
        &self,
        request: Request<proto::GetBlobRequest>,
    ) -> Result<proto::GetBlobResponse, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(GET_BLOB_METHOD, request.metadata(), request.get_ref())
            .await?;
        let req = request.into_inner();
        let digest: [u8; 32] = req
            .sha256
            .as_slice()
            .try_into()
            .map_err(|_| ApiError::InvalidArgument("sha256 must be 32 bytes".into()))?;
        if !reader.reads_all_of(BLOBS) && !is_uploader(&self.uploaders, &digest, &reader.id).await?
        {
            // The same answer whether the blob exists or not.
            return Err(ApiError::ReadNotPermitted {
                actor: reader.id,
                what: format!("blob {}", hex::encode(digest)),
            });
        }
        Ok(proto::GetBlobResponse {
            data: self.blobs.get(&digest).await?,
        })
    }
}

#[tonic::async_trait]
impl BlobService for BlobSvc {
    #[tracing::instrument(skip_all)]
    async fn put_blob(
        &self,
        request: Request<proto::PutBlobRequest>,
    ) -> Result<Response<proto::BlobRef>, Status> {
        Ok(Response::new(self.put(request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_blob(
        &self,
        request: Request<proto::GetBlobRequest>,
    ) -> Result<Response<proto::GetBlobResponse>, Status> {
        Ok(Response::new(self.get(request).await?))
    }
}
