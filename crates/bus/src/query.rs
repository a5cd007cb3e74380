//! The query protocol between the gateway (or any client) and worker roles:
//! NATS request/reply on the services API, in a queue group, so every instance of
//! a role answers a share and `$SRV.PING` / `$SRV.INFO` discover them.
//!
//! Requests and replies are protobuf messages from `amai.v1` (the same ones the
//! gateway's RPCs use). Errors travel in the `Nats-Service-Error` and
//! `Nats-Service-Error-Code` headers; the code is the gRPC status code number, so
//! the gateway maps them back without guessing.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

/// Service name of the identity role's queries.
pub const IDENTITY_SERVICE: &str = "amai-identity";
/// Subject prefix of the identity role's query endpoints.
pub const IDENTITY_QUERY_PREFIX: &str = "amai.query.identity";
/// `GetIdentityRequest` -> `Identity`.
pub const IDENTITY_GET: &str = "amai.query.identity.get";
/// `GetIdentityRequest` -> `Keys`.
pub const IDENTITY_KEYS: &str = "amai.query.identity.keys";
/// `ListInboxRequest` -> `ListInboxResponse` (callers authenticate the recipient first).
pub const IDENTITY_INBOX: &str = "amai.query.identity.inbox";
/// `GetStatsRequest` -> `Stats`.
pub const IDENTITY_STATS: &str = "amai.query.identity.stats";
/// `ListIntegrityViolationsRequest` -> `ListIntegrityViolationsResponse`.
pub const IDENTITY_VIOLATIONS: &str = "amai.query.identity.violations";

/// Status codes of query errors; the numbers are gRPC's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum QueryCode {
    /// The request is malformed.
    InvalidArgument = 3,
    /// `min_position` was not reached in time.
    DeadlineExceeded = 4,
    /// No such identity / name.
    NotFound = 5,
    /// The caller is not allowed.
    PermissionDenied = 7,
    /// The projection is not in a state to answer.
    FailedPrecondition = 9,
    /// Something broke inside the worker.
    Internal = 13,
    /// No instance answered; retry.
    Unavailable = 14,
}

impl QueryCode {
    /// Parses a numeric code.
    pub fn from_u16(c: u16) -> QueryCode {
        match c {
            3 => QueryCode::InvalidArgument,
            4 => QueryCode::DeadlineExceeded,
            5 => QueryCode::NotFound,
            7 => QueryCode::PermissionDenied,
            9 => QueryCode::FailedPrecondition,
            14 => QueryCode::Unavailable,
            _ => QueryCode::Internal,
        }
    }
}

/// A failed query.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    /// The status code.
    pub code: QueryCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl QueryError {
    /// Builds an error.
    pub fn new(code: QueryCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The services-API error to respond with.
    pub fn to_service_error(&self) -> async_nats::service::error::Error {
        async_nats::service::error::Error {
            status: self.message.clone(),
            code: self.code as usize,
        }
    }
}

/// Sends a query and decodes the reply.
pub async fn request<Req: Message, Resp: Message + Default>(
    client: &async_nats::Client,
    subject: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Resp, QueryError> {
    let fut = client.request(subject.to_string(), Bytes::from(req.encode_to_vec()));
    let msg = match tokio::time::timeout(timeout, fut).await {
        Err(_) => {
            return Err(QueryError::new(
                QueryCode::Unavailable,
                format!(
                    "no answer on {subject} within {timeout:?}; is a worker of this role running?"
                ),
            ))
        }
        Ok(Err(e)) => {
            return Err(QueryError::new(
                QueryCode::Unavailable,
                format!("query {subject} failed: {e}; is a worker of this role running?"),
            ));
        }
        Ok(Ok(m)) => m,
    };
    if let Some(h) = &msg.headers {
        if let Some(code) = h.get(async_nats::service::NATS_SERVICE_ERROR_CODE) {
            let code = code
                .as_str()
                .parse::<u16>()
                .map(QueryCode::from_u16)
                .unwrap_or(QueryCode::Internal);
            let message = h
                .get(async_nats::service::NATS_SERVICE_ERROR)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            return Err(QueryError::new(code, message));
        }
    }
    Resp::decode(msg.payload.as_ref()).map_err(|e| {
        QueryError::new(
            QueryCode::Internal,
            format!("undecodable reply on {subject}: {e}"),
        )
    })
}
