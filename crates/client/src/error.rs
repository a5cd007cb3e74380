//! [`ClientError`]: gRPC failures by kind (the [`tonic::Status`] kept inside),
//! plus local failures (bad input caught before sending, integrity failures of
//! what the server returned).
//!
//! Every error status the gateway returns carries a `google.rpc.ErrorInfo`
//! (domain [`ERROR_DOMAIN`]) whose reason names the failure precisely;
//! [`ClientError::kind`] parses it into an [`ErrorKind`]. The gateway builds its
//! reasons from the same enum, so the two cannot drift apart.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::StatusExt;

pub use amai_proto::wire::{error_details, status_kind, ErrorKind, ERROR_DOMAIN};

/// A failed SDK call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached.
    #[error("cannot connect to the amai gateway at {url}: {source}")]
    Connect {
        /// The gateway URL.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// `INVALID_ARGUMENT`: the request or event is malformed; fix it, do not retry.
    #[error("invalid argument: {}", .0.message())]
    InvalidArgument(Status),
    /// `NOT_FOUND`.
    #[error("not found: {}", .0.message())]
    NotFound(Status),
    /// `ALREADY_EXISTS`: a name taken, an identity registered, an event id reused.
    #[error("already exists: {}", .0.message())]
    AlreadyExists(Status),
    /// `UNAUTHENTICATED`: bad or missing event/request signature, unknown key.
    #[error("unauthenticated: {}", .0.message())]
    Unauthenticated(Status),
    /// `PERMISSION_DENIED`: revoked key, not allowed to act here.
    #[error("permission denied: {}", .0.message())]
    PermissionDenied(Status),
    /// `FAILED_PRECONDITION`: typically a stale chain head (re-read, re-sign, retry).
    #[error("failed precondition: {}", .0.message())]
    FailedPrecondition(Status),
    /// `RESOURCE_EXHAUSTED`: the event is too large.
    #[error("resource exhausted: {}", .0.message())]
    ResourceExhausted(Status),
    /// `UNAVAILABLE`: NATS or a worker role is not answering; retry later.
    #[error("unavailable: {}", .0.message())]
    Unavailable(Status),
    /// `DEADLINE_EXCEEDED`.
    #[error("deadline exceeded: {}", .0.message())]
    DeadlineExceeded(Status),
    /// Any other status.
    #[error("{}: {}", .0.code(), .0.message())]
    Other(Status),
    /// Refused locally before anything was sent.
    #[error("invalid input: {0}")]
    Input(String),
    /// What the server returned does not check out (bad signature, undecodable
    /// event, a message that cannot be opened).
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// `append_with_retry` ran out of attempts under contention.
    #[error("gave up after {attempts} attempts: the chain kept moving ({last})")]
    Contention {
        /// Attempts made.
        attempts: u32,
        /// The last conflict.
        last: Box<ClientError>,
    },
}

impl From<Status> for ClientError {
    fn from(s: Status) -> Self {
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ClientError::InvalidArgument(s),
            Code::NotFound => ClientError::NotFound(s),
            Code::AlreadyExists => ClientError::AlreadyExists(s),
            Code::Unauthenticated => ClientError::Unauthenticated(s),
            Code::PermissionDenied => ClientError::PermissionDenied(s),
            Code::FailedPrecondition => ClientError::FailedPrecondition(s),
            Code::ResourceExhausted => ClientError::ResourceExhausted(s),
            Code::Unavailable => ClientError::Unavailable(s),
            Code::DeadlineExceeded => ClientError::DeadlineExceeded(s),
            _ => ClientError::Other(s),
        }
    }
}

impl ClientError {
    /// The gRPC status, when the failure came from the gateway.
    pub fn status(&self) -> Option<&Status> {
        match self {
            ClientError::InvalidArgument(s)
            | ClientError::NotFound(s)
            | ClientError::AlreadyExists(s)
            | ClientError::Unauthenticated(s)
            | ClientError::PermissionDenied(s)
            | ClientError::FailedPrecondition(s)
            | ClientError::ResourceExhausted(s)
            | ClientError::Unavailable(s)
            | ClientError::DeadlineExceeded(s)
            | ClientError::Other(s) => Some(s),
            ClientError::Contention { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The gRPC code, when the failure came from the gateway.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// The precise kind of a gateway failure, from the status's `ErrorInfo`
    /// (`Unknown` when absent, and for failures that did not come from the gateway).
    pub fn kind(&self) -> ErrorKind {
        self.status().map(status_kind).unwrap_or(ErrorKind::Unknown)
    }

    /// The `ErrorInfo` metadata of a gateway failure (e.g. the current head of a
    /// conflict, the last sequence of a stream); empty when absent.
    pub fn error_metadata(&self) -> HashMap<String, String> {
        self.status()
            .and_then(|s| s.get_details_error_info())
            .filter(|i| i.domain == ERROR_DOMAIN)
            .map(|i| i.metadata)
            .unwrap_or_default()
    }

    /// Whether the same call may succeed if retried (for a stale head: after
    /// re-reading it and re-signing, which `append_with_retry` does).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Unavailable(_)
                | ClientError::DeadlineExceeded(_)
                | ClientError::FailedPrecondition(_)
                | ClientError::Contention { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn statuses_map_to_kinds_and_retryability() {
        let e = ClientError::from(Status::failed_precondition("stale"));
        assert!(matches!(e, ClientError::FailedPrecondition(_)));
        assert!(e.is_retryable());
        let e = ClientError::from(Status::already_exists("taken"));
        assert_eq!(e.code(), Some(Code::AlreadyExists));
        assert!(!e.is_retryable());
        assert!(ClientError::from(Status::unavailable("x")).is_retryable());
    }

    #[test]
    fn kinds_round_trip_through_error_info() {
        for &kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_reason(kind.as_str()), kind);
            let mut md = HashMap::new();
            md.insert("k".to_string(), "v".to_string());
            let status =
                Status::with_error_details(Code::Aborted, "m", error_details(kind, md.clone()));
            let err = ClientError::from(status);
            assert_eq!(err.kind(), kind);
            assert_eq!(err.error_metadata(), md);
        }
        assert_eq!(
            ClientError::from(Status::internal("x")).kind(),
            ErrorKind::Unknown
        );
        assert_eq!(ErrorKind::from_reason("SOMETHING_NEW"), ErrorKind::Unknown);
        for reason in amai_bus::query::reason::ALL {
            assert_ne!(
                ErrorKind::from_reason(reason),
                ErrorKind::Unknown,
                "{reason}"
            );
        }
        assert_eq!(
            ErrorKind::UndecodableMessage.as_str(),
            amai_proto::codec::UNDECODABLE_MESSAGE_REASON
        );
        let foreign = Status::with_error_details(
            Code::Aborted,
            "m",
            ErrorDetails::with_error_info("CONFLICT", "example.com", HashMap::new()),
        );
        assert_eq!(ClientError::from(foreign).kind(), ErrorKind::Unknown);
    }
}
