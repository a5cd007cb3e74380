//! The query protocol between the gateway (or any client) and worker roles:
//! NATS request/reply on the services API, in a queue group, so every instance of
//! a role answers a share and `$SRV.PING` / `$SRV.INFO` discover them.
//!
//! Requests and replies are protobuf messages from `amai.v1` (the same ones the
//! gateway's RPCs use). Errors travel in the `Nats-Service-Error` and
//! `Nats-Service-Error-Code` headers; the code is the gRPC status code number, so
//! the gateway maps them back without guessing. A machine-readable reason (one of
//! [`reason`], the gateway's `google.rpc.ErrorInfo.reason`) travels in
//! [`ERROR_REASON_HEADER`], and its metadata in `Amai-Error-Meta-<key>` headers,
//! so a query failure's kind survives worker -> gateway -> SDK.

use std::collections::BTreeMap;
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

/// The llm role's query service name.
pub const LLM_SERVICE: &str = "amai-llm";
/// `GetLlmSessionRequest` → `LlmSession` (NOT_FOUND for an unknown session).
pub const LLM_SESSION: &str = "amai.query.llm.session";
/// `ListLlmSessionsRequest` → `ListLlmSessionsResponse`.
pub const LLM_SESSIONS: &str = "amai.query.llm.sessions";
/// `LlmKeyLookup` → `LlmKeyBinding` (NOT_FOUND when the hash is bound to no session).
pub const LLM_KEY: &str = "amai.query.llm.key";

/// The jail role's query service name.
pub const JAIL_SERVICE: &str = "amai-jail";
/// `GetJailRequest` → `Jail` (NOT_FOUND for an unknown jail).
pub const JAIL_GET: &str = "amai.query.jail.get";
/// `ListJailsRequest` → `ListJailsResponse`.
pub const JAIL_LIST: &str = "amai.query.jail.list";
/// `RunJailRequest` (with `requested_by` set by the gateway) → `Jail`: queues
/// the run of a created jail (`jail.run_queued`).
pub const JAIL_RUN: &str = "amai.query.jail.run";
/// `DeleteJailRequest` (with `requested_by` set by the gateway) → `Jail`:
/// stops the run if any, removes what the jail left on the engine, records
/// `jail.deleted`.
pub const JAIL_DELETE: &str = "amai.query.jail.delete";

/// The trust role's query service name.
pub const TRUST_SERVICE: &str = "amai-trust";
/// `GetTrustRequest` → `TrustSummary` (NOT_FOUND for an agent the trust
/// projection has not seen registered).
pub const TRUST_GET: &str = "amai.query.trust.get";
/// `GetTrustHistoryRequest` → `TrustHistoryPage`.
pub const TRUST_HISTORY: &str = "amai.query.trust.history";
/// `ListTrustAlertsRequest` → `TrustAlertList`.
pub const TRUST_ALERTS: &str = "amai.query.trust.alerts";
/// `GetTrustReportRequest` → `TrustReport`.
pub const TRUST_REPORT: &str = "amai.query.trust.report";
/// `ExplainTrustRequest` → `TrustExplanation` (NOT_FOUND for an id that is no
/// trust delta or alert).
pub const TRUST_EXPLAIN: &str = "amai.query.trust.explain";
/// `TrustEndorsementQuery` → `TrustEndorsementAnswer`.
pub const TRUST_ENDORSEMENT: &str = "amai.query.trust.endorsement";

/// The audit role's query service name.
pub const AUDIT_SERVICE: &str = "amai-audit";
/// `GetCheckpointRequest` → `Checkpoint` (NOT_FOUND: no checkpoint of that
/// stream, or of that size).
pub const AUDIT_CHECKPOINT: &str = "amai.query.audit.checkpoint";
/// `GetInclusionProofRequest` → `InclusionProof`.
pub const AUDIT_INCLUSION: &str = "amai.query.audit.inclusion";
/// `GetConsistencyProofRequest` → `ConsistencyProof`.
pub const AUDIT_CONSISTENCY: &str = "amai.query.audit.consistency";
/// `RequestCheckpointRequest` (the gateway checked the operator) →
/// `Checkpoint`: checkpoints the stream now.
pub const AUDIT_REQUEST_CHECKPOINT: &str = "amai.query.audit.request_checkpoint";
/// `GetAuditStatusRequest` → `AuditStatus`.
pub const AUDIT_STATUS: &str = "amai.query.audit.status";

/// The lifecycle role's NATS service name.
pub const LIFECYCLE_SERVICE: &str = "amai-lifecycle";
/// One catalogue entry (`GetCatalogEntryRequest` -> `CatalogEntry`).
pub const LIFECYCLE_CATALOG_GET: &str = "amai.query.lifecycle.catalog_get";
/// A catalogue search (`SearchCatalogRequest` -> `CatalogPage`).
pub const LIFECYCLE_CATALOG_SEARCH: &str = "amai.query.lifecycle.catalog_search";

/// Header carrying a query error's reason.
pub const ERROR_REASON_HEADER: &str = "Amai-Error-Reason";
/// Prefix of the headers carrying a query error's metadata.
pub const ERROR_META_HEADER_PREFIX: &str = "Amai-Error-Meta-";

/// Reasons of query errors (`ErrorInfo.reason` at the gateway; the SDK's
/// `ErrorKind` parses them).
pub mod reason {
    /// The request did not decode.
    pub const UNDECODABLE_MESSAGE: &str = "UNDECODABLE_MESSAGE";
    /// A request field is missing or invalid.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// No such identity / name.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// `min_position` not reached within the wait bound.
    pub const STALE_POSITION: &str = "STALE_POSITION";
    /// `min_position` names a stream the projection does not consume.
    pub const STREAM_NOT_CONSUMED: &str = "STREAM_NOT_CONSUMED";
    /// `min_position` is beyond the stream's last sequence.
    pub const POSITION_BEYOND_END: &str = "POSITION_BEYOND_END";
    /// One item of a page is too large for a reply.
    pub const ITEM_TOO_LARGE: &str = "ITEM_TOO_LARGE";
    /// A whole reply is larger than the connection's `max_payload`.
    pub const REPLY_TOO_LARGE: &str = "REPLY_TOO_LARGE";
    /// No worker of the role answered.
    pub const WORKER_UNAVAILABLE: &str = "WORKER_UNAVAILABLE";
    /// Something broke inside the worker.
    pub const INTERNAL: &str = "INTERNAL";
    /// The jail is not in a state that allows the call (run a jail that is
    /// not freshly created, ...).
    pub const JAIL_STATE: &str = "JAIL_STATE";
    /// No checkpoint of the stream yet, or none of that size.
    pub const NO_CHECKPOINT: &str = "NO_CHECKPOINT";
    /// The audit tree has not reached the requested size yet.
    pub const TREE_SIZE_BEYOND_END: &str = "TREE_SIZE_BEYOND_END";
    /// The audit tree disagrees with the latest signed checkpoint.
    pub const LOG_DIVERGED: &str = "LOG_DIVERGED";

    /// Every reason above.
    pub const ALL: &[&str] = &[
        UNDECODABLE_MESSAGE,
        INVALID_ARGUMENT,
        NOT_FOUND,
        STALE_POSITION,
        STREAM_NOT_CONSUMED,
        POSITION_BEYOND_END,
        ITEM_TOO_LARGE,
        REPLY_TOO_LARGE,
        WORKER_UNAVAILABLE,
        INTERNAL,
        JAIL_STATE,
        NO_CHECKPOINT,
        TREE_SIZE_BEYOND_END,
        LOG_DIVERGED,
    ];
}

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
    /// A reply would be too large (one item of a page exceeds the limit).
    ResourceExhausted = 8,
    /// The projection is not in a state to answer.
    FailedPrecondition = 9,
    /// `min_position` is beyond the end of its stream.
    OutOfRange = 11,
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
            8 => QueryCode::ResourceExhausted,
            9 => QueryCode::FailedPrecondition,
            11 => QueryCode::OutOfRange,
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
    /// The machine-readable reason (one of [`reason`]), when the worker gave one.
    pub reason: Option<String>,
    /// Facts about the failure (e.g. a stream's last sequence), keyed in snake_case.
    pub metadata: BTreeMap<String, String>,
}

impl QueryError {
    /// Builds an error without a reason.
    pub fn new(code: QueryCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the reason (one of [`reason`]).
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// Adds a metadata entry (`key` in snake_case).
    pub fn with_meta(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// The services-API error to respond with.
    pub fn to_service_error(&self) -> async_nats::service::error::Error {
        async_nats::service::error::Error {
            status: self.message.clone(),
            code: self.code as usize,
        }
    }

    /// The headers carrying the reason and metadata (sent next to the
    /// services-API error headers).
    pub fn to_headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(reason) = &self.reason {
            headers.insert(ERROR_REASON_HEADER, reason.as_str());
        }
        for (k, v) in &self.metadata {
            // Keys are snake_case constants; a key that is no valid header name is dropped.
            if let Ok(name) =
                format!("{ERROR_META_HEADER_PREFIX}{k}").parse::<async_nats::HeaderName>()
            {
                headers.insert(name, v.replace(['\r', '\n'], " ").as_str());
            }
        }
        headers
    }

    /// Reads the reason and metadata back from reply headers.
    fn read_headers(mut self, headers: &async_nats::HeaderMap) -> Self {
        self.reason = headers
            .get(ERROR_REASON_HEADER)
            .map(|v| v.as_str().to_string());
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if let (Some(key), Some(value)) =
                (name.strip_prefix(ERROR_META_HEADER_PREFIX), values.first())
            {
                self.metadata
                    .insert(key.to_string(), value.as_str().to_string());
            }
        }
        self
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
            )
            .with_reason(reason::WORKER_UNAVAILABLE))
        }
        Ok(Err(e)) => {
            return Err(QueryError::new(
                QueryCode::Unavailable,
                format!("query {subject} failed: {e}; is a worker of this role running?"),
            )
            .with_reason(reason::WORKER_UNAVAILABLE));
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
            return Err(QueryError::new(code, message).read_headers(h));
        }
    }
    Resp::decode(msg.payload.as_ref()).map_err(|e| {
        QueryError::new(
            QueryCode::Internal,
            format!("undecodable reply on {subject}: {e}"),
        )
        .with_reason(reason::INTERNAL)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_and_metadata_round_trip_through_headers() {
        let err = QueryError::new(QueryCode::OutOfRange, "beyond")
            .with_reason(reason::POSITION_BEYOND_END)
            .with_meta("last_seq", 7)
            .with_meta("stream", "AMAI_AGENTS");
        let mut headers = err.to_headers();
        let service = err.to_service_error();
        headers.insert(
            async_nats::service::NATS_SERVICE_ERROR,
            service.status.as_str(),
        );
        let back = QueryError::new(
            QueryCode::from_u16(service.code as u16),
            err.message.clone(),
        )
        .read_headers(&headers);
        assert_eq!(back, err);
        for code in [QueryCode::OutOfRange, QueryCode::ResourceExhausted] {
            assert_eq!(QueryCode::from_u16(code as u16), code);
        }
    }
}
