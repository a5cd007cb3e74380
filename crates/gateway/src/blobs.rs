//! `BlobService`: content-addressed uploads and verified reads over the bus's
//! blob store. An upload needs a request signature by a registered, unrevoked
//! identity (storage is not anonymous); the key is the SHA-256 of the content, so
//! the same content is stored once.

use std::sync::Arc;

use amai_bus::blob::BlobStore;
use amai_bus::proto;
use amai_proto::v1::blob_service_server::BlobService;
use tonic::{Request, Response, Status};

use amai_client::PUT_BLOB_METHOD;

use crate::status::ApiError;
use crate::Shared;

/// The blob service.
pub struct BlobSvc {
    shared: Arc<Shared>,
    blobs: BlobStore,
    max_blob_bytes: usize,
}

impl BlobSvc {
    pub(crate) fn new(shared: Arc<Shared>, blobs: BlobStore, max_blob_bytes: usize) -> Self {
        Self {
            shared,
            blobs,
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
        tracing::debug!(%actor, size = r.size, sha256 = %r.key(), "blob stored");
        Ok(proto::BlobRef {
            sha256: r.sha256.to_vec(),
            size: r.size,
        })
    }

    async fn get(&self, req: proto::GetBlobRequest) -> Result<proto::GetBlobResponse, ApiError> {
        let digest: [u8; 32] = req
            .sha256
            .as_slice()
            .try_into()
            .map_err(|_| ApiError::InvalidArgument("sha256 must be 32 bytes".into()))?;
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
        Ok(Response::new(self.get(request.into_inner()).await?))
    }
}
