//! The one place domain errors become gRPC statuses.
//!
//! | failure | code |
//! |---|---|
//! | malformed event, invalid payload, gap, broken `prev_hash`, bad request | `INVALID_ARGUMENT` |
//! | event signature does not verify, key not the actor's (unknown key) | `UNAUTHENTICATED` |
//! | key rotated out / identity revoked, actor not permitted here | `PERMISSION_DENIED` |
//! | stale chain head (conflict) | `FAILED_PRECONDITION` + head in `amai-chain-head-bin` |
//! | name taken, identity registered, event id reused | `ALREADY_EXISTS` |
//! | event too large | `RESOURCE_EXHAUSTED` |
//! | NATS or a worker role not answering | `UNAVAILABLE` |
//! | stored blob does not match its digest; chain holds an event failing verification | `DATA_LOSS` |
//! | no such event / aggregate / identity | `NOT_FOUND` |
//! | query consistency wait timed out | `DEADLINE_EXCEEDED` |
//! | request signature missing, bad, expired or replayed | `UNAUTHENTICATED` |
//! | request signed by someone other than the data's owner | `PERMISSION_DENIED` |
//!
//! Unauthenticated means "we cannot tell who you are" (the signature or key does
//! not prove the claimed actor); permission denied means "we know who you are and
//! you may not do this" (a revoked key, a foreign chain, someone else's inbox).

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use amai_bus::query::{QueryCode, QueryError};
use amai_bus::store::{AppendError, AppendErrorKind, ReadError};
use amai_bus::request::RequestAuthError;
use amai_client::CHAIN_HEAD_METADATA;

/// Everything a gateway handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An append was refused.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// A read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A blob could not be stored or read.
    #[error(transparent)]
    Blob(#[from] amai_bus::blob::BlobError),
    /// A query to a worker role failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A request signature is missing, bad or expired.
    #[error(transparent)]
    Auth(#[from] RequestAuthError),
    /// The request signature's nonce was already used.
    #[error("replayed request: nonce {0} was already used; sign every request with a fresh nonce")]
    Replayed(String),
    /// The signer of a request is not a registered identity.
    #[error("request signer {0} is not a registered identity; register it first")]
    UnknownSigner(String),
    /// The signer is revoked.
    #[error("request signer {0} is revoked")]
    RevokedSigner(String),
    /// An authenticated caller acted for someone else.
    #[error(
        "{actor} may not do this for {owner}; only {owner} may (sign the request with its key)"
    )]
    NotOwner {
        /// Who signed.
        actor: String,
        /// Whose data it is.
        owner: String,
    },
    /// The request itself is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something already exists (an identity registered with another genesis).
    #[error("{0}")]
    AlreadyExists(String),
    /// The event is larger than the gateway accepts.
    #[error("{0}")]
    TooLarge(String),
    /// A dependency is unavailable.
    #[error("{0}")]
    Unavailable(String),
}

/// Maps any gateway failure to its gRPC status (see the module docs).
pub fn to_status(err: ApiError) -> Status {
    let message = err.to_string();
    match err {
        ApiError::Append(e) => {
            let code = match e.kind() {
                AppendErrorKind::Malformed
                | AppendErrorKind::Invalid
                | AppendErrorKind::Gap
                | AppendErrorKind::ChainBroken => Code::InvalidArgument,
                AppendErrorKind::BadSignature | AppendErrorKind::UnknownKey => {
                    Code::Unauthenticated
                }
                AppendErrorKind::RevokedKey | AppendErrorKind::NotPermitted => {
                    Code::PermissionDenied
                }
                AppendErrorKind::Conflict => Code::FailedPrecondition,
                AppendErrorKind::Duplicate
                | AppendErrorKind::NameTaken
                | AppendErrorKind::AlreadyRegistered => Code::AlreadyExists,
                AppendErrorKind::TooLarge => Code::ResourceExhausted,
                AppendErrorKind::Unavailable => Code::Unavailable,
                AppendErrorKind::Corrupted => Code::DataLoss,
                AppendErrorKind::Other => Code::Internal,
            };
            match (code, e.current_head()) {
                (Code::FailedPrecondition, Some(head)) => {
                    let mut md = MetadataMap::new();
                    md.insert_bin(
                        CHAIN_HEAD_METADATA,
                        MetadataValue::from_bytes(&head.to_proto().encode_to_vec()),
                    );
                    Status::with_metadata(code, message, md)
                }
                _ => Status::new(code, message),
            }
        }
        ApiError::Blob(e) => match e {
            amai_bus::blob::BlobError::NotFound(_) => Status::not_found(message),
            amai_bus::blob::BlobError::DigestMismatch(_) => Status::data_loss(message),
            amai_bus::blob::BlobError::Nats(_) => {
                Status::unavailable(format!("{message}; retry shortly"))
            }
        },
        ApiError::Read(e) => match e {
            ReadError::NotFound(_) => Status::not_found(message),
            ReadError::Invalid(_) => Status::invalid_argument(message),
            ReadError::Unavailable(_) => Status::unavailable(format!("{message}; retry shortly")),
        },
        ApiError::Query(e) => {
            let code = match e.code {
                QueryCode::InvalidArgument => Code::InvalidArgument,
                QueryCode::DeadlineExceeded => Code::DeadlineExceeded,
                QueryCode::NotFound => Code::NotFound,
                QueryCode::PermissionDenied => Code::PermissionDenied,
                QueryCode::FailedPrecondition => Code::FailedPrecondition,
                QueryCode::Internal => Code::Internal,
                QueryCode::Unavailable => Code::Unavailable,
            };
            Status::new(code, message)
        }
        ApiError::Auth(_) | ApiError::Replayed(_) | ApiError::UnknownSigner(_) => {
            Status::unauthenticated(message)
        }
        ApiError::RevokedSigner(_) | ApiError::NotOwner { .. } => {
            Status::permission_denied(message)
        }
        ApiError::InvalidArgument(_) => Status::invalid_argument(message),
        ApiError::AlreadyExists(_) => Status::already_exists(message),
        ApiError::TooLarge(_) => Status::resource_exhausted(message),
        ApiError::Unavailable(_) => Status::unavailable(message),
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_auth_failures_map_to_precise_codes() {
        assert_eq!(
            to_status(ApiError::Query(QueryError::new(
                QueryCode::Unavailable,
                "no worker"
            )))
            .code(),
            Code::Unavailable
        );
        assert_eq!(
            to_status(ApiError::Query(QueryError::new(
                QueryCode::DeadlineExceeded,
                "slow"
            )))
            .code(),
            Code::DeadlineExceeded
        );
        assert_eq!(
            to_status(ApiError::Replayed("n".into())).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            to_status(ApiError::NotOwner {
                actor: "a".into(),
                owner: "b".into()
            })
            .code(),
            Code::PermissionDenied
        );
        assert_eq!(
            to_status(ApiError::Read(ReadError::NotFound("x".into()))).code(),
            Code::NotFound
        );
    }
}
