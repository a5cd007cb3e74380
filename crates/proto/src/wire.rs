//! The gRPC wire contract shared by the gateway and the SDK (neither links the
//! other): method paths that request signatures cover, metadata keys, and the
//! machine-readable error kinds carried as `google.rpc.ErrorInfo` reasons.

use std::collections::HashMap;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

pub use crate::codec::ERROR_DOMAIN;

/// Binary metadata key of a `FAILED_PRECONDITION` conflict: the encoded
/// `amai.v1.ChainHead` the event must follow now, so a retry needs no extra read.
pub const CHAIN_HEAD_METADATA: &str = "amai-chain-head-bin";

/// gRPC method path of `IdentityService.ListInbox` (what its request signature covers).
pub const LIST_INBOX_METHOD: &str = "/amai.v1.IdentityService/ListInbox";

/// Full gRPC method name of `PutBlob` (what its request signature covers).
pub const PUT_BLOB_METHOD: &str = "/amai.v1.BlobService/PutBlob";

/// gRPC method path of `EventService.GetChainHead` (signed read).
pub const GET_CHAIN_HEAD_METHOD: &str = "/amai.v1.EventService/GetChainHead";
/// gRPC method path of `EventService.GetEvent` (signed read).
pub const GET_EVENT_METHOD: &str = "/amai.v1.EventService/GetEvent";
/// gRPC method path of `EventService.ReadChain` (signed read).
pub const READ_CHAIN_METHOD: &str = "/amai.v1.EventService/ReadChain";
/// gRPC method path of `EventService.Subscribe` (signed read).
pub const SUBSCRIBE_METHOD: &str = "/amai.v1.EventService/Subscribe";
/// gRPC method path of `BlobService.GetBlob` (signed read).
pub const GET_BLOB_METHOD: &str = "/amai.v1.BlobService/GetBlob";
/// gRPC method path of `IdentityService.VerifyChain` (signed read).
pub const VERIFY_CHAIN_METHOD: &str = "/amai.v1.IdentityService/VerifyChain";

/// gRPC method path of `LlmService.CreateSession` (a command: the event is signed).
pub const CREATE_LLM_SESSION_METHOD: &str = "/amai.v1.LlmService/CreateSession";
/// gRPC method path of `LlmService.SetMode` (a command).
pub const SET_LLM_MODE_METHOD: &str = "/amai.v1.LlmService/SetMode";
/// gRPC method path of `LlmService.IssueKey` (a command).
pub const ISSUE_LLM_KEY_METHOD: &str = "/amai.v1.LlmService/IssueKey";
/// gRPC method path of `LlmService.RevokeKey` (a command).
pub const REVOKE_LLM_KEY_METHOD: &str = "/amai.v1.LlmService/RevokeKey";
/// gRPC method path of `LlmService.DeleteSession` (a command).
pub const DELETE_LLM_SESSION_METHOD: &str = "/amai.v1.LlmService/DeleteSession";
/// gRPC method path of `LlmService.Import` (a command).
pub const IMPORT_LLM_SESSION_METHOD: &str = "/amai.v1.LlmService/Import";
/// gRPC method path of `LlmService.GetSession` (signed read).
pub const GET_LLM_SESSION_METHOD: &str = "/amai.v1.LlmService/GetSession";
/// gRPC method path of `LlmService.ListSessions` (signed read).
pub const LIST_LLM_SESSIONS_METHOD: &str = "/amai.v1.LlmService/ListSessions";
/// gRPC method path of `LlmService.ListRecordings` (signed read).
pub const LIST_LLM_RECORDINGS_METHOD: &str = "/amai.v1.LlmService/ListRecordings";
/// gRPC method path of `LlmService.GetRecording` (signed read).
pub const GET_LLM_RECORDING_METHOD: &str = "/amai.v1.LlmService/GetRecording";
/// gRPC method path of `LlmService.Export` (signed read).
pub const EXPORT_LLM_SESSION_METHOD: &str = "/amai.v1.LlmService/Export";

/// gRPC method path of `JailService.CreateJail` (a command: the `jail.requested` event is signed).
pub const CREATE_JAIL_METHOD: &str = "/amai.v1.JailService/CreateJail";
/// gRPC method path of `JailService.Run` (signed: owner or operator).
pub const RUN_JAIL_METHOD: &str = "/amai.v1.JailService/Run";
/// gRPC method path of `JailService.GetStatus` (signed read).
pub const GET_JAIL_STATUS_METHOD: &str = "/amai.v1.JailService/GetStatus";
/// gRPC method path of `JailService.GetDiff` (signed read).
pub const GET_JAIL_DIFF_METHOD: &str = "/amai.v1.JailService/GetDiff";
/// gRPC method path of `JailService.GetLogs` (signed read).
pub const GET_JAIL_LOGS_METHOD: &str = "/amai.v1.JailService/GetLogs";
/// gRPC method path of `JailService.GetNetworkLog` (signed read).
pub const GET_JAIL_NETWORK_LOG_METHOD: &str = "/amai.v1.JailService/GetNetworkLog";
/// gRPC method path of `JailService.GetUsage` (signed read).
pub const GET_JAIL_USAGE_METHOD: &str = "/amai.v1.JailService/GetUsage";
/// gRPC method path of `JailService.Reproduce` (a command: the `jail.requested` event is signed).
pub const REPRODUCE_JAIL_METHOD: &str = "/amai.v1.JailService/Reproduce";
/// gRPC method path of `JailService.Delete` (signed: owner or operator).
pub const DELETE_JAIL_METHOD: &str = "/amai.v1.JailService/Delete";
/// gRPC method path of `JailService.List` (signed read).
pub const LIST_JAILS_METHOD: &str = "/amai.v1.JailService/List";

/// gRPC method path of `TrustService.Endorse` (a command: the `agent.endorsed` event is signed).
pub const ENDORSE_METHOD: &str = "/amai.v1.TrustService/Endorse";
/// gRPC method path of `TrustService.GetTrust` (public).
pub const GET_TRUST_METHOD: &str = "/amai.v1.TrustService/GetTrust";
/// gRPC method path of `TrustService.GetHistory` (signed read: the agent or an operator).
pub const GET_TRUST_HISTORY_METHOD: &str = "/amai.v1.TrustService/GetHistory";
/// gRPC method path of `TrustService.ListAlerts` (signed read).
pub const LIST_TRUST_ALERTS_METHOD: &str = "/amai.v1.TrustService/ListAlerts";
/// gRPC method path of `TrustService.GetReport` (signed read: the agent or an operator).
pub const GET_TRUST_REPORT_METHOD: &str = "/amai.v1.TrustService/GetReport";
/// gRPC method path of `TrustService.Explain` (signed read: the agent or an operator).
pub const EXPLAIN_TRUST_METHOD: &str = "/amai.v1.TrustService/Explain";

/// gRPC method path of `AuditService.RequestCheckpoint` (signed: operators only).
pub const REQUEST_CHECKPOINT_METHOD: &str = "/amai.v1.AuditService/RequestCheckpoint";

macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident => $reason:literal, )*) => {
        /// The machine-readable reason of a failure (`google.rpc.ErrorInfo.reason`
        /// in the [`ERROR_DOMAIN`] domain). Match on this, never on messages.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
            /// No `ErrorInfo` (or one from another domain, or a reason this SDK
            /// does not know, e.g. from a newer gateway).
            Unknown,
        }

        impl ErrorKind {
            /// Every known kind (without `Unknown`).
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The reason string (SCREAMING_SNAKE), `UNKNOWN` for `Unknown`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorKind::$variant => $reason, )*
                    ErrorKind::Unknown => "UNKNOWN",
                }
            }

            /// Parses a reason; `Unknown` for anything else.
            pub fn from_reason(reason: &str) -> ErrorKind {
                match reason {
                    $( $reason => ErrorKind::$variant, )*
                    _ => ErrorKind::Unknown,
                }
            }
        }
    };
}

error_kinds! {
    // Events (append checks; `amai_bus::store::AppendErrorKind`).
    /// Not a decodable or well-formed event.
    Malformed => "MALFORMED",
    /// The event signature does not verify.
    BadSignature => "BAD_SIGNATURE",
    /// The event's key is not the actor's current key.
    UnknownKey => "UNKNOWN_KEY",
    /// The key was rotated out or the identity revoked.
    RevokedKey => "REVOKED_KEY",
    /// The actor may not append this to this aggregate.
    NotPermitted => "NOT_PERMITTED",
    /// The payload breaks a domain rule.
    Invalid => "INVALID",
    /// The chain holds an event that fails verification (published around the
    /// store); nothing can be appended after it.
    Corrupted => "CORRUPTED",
    /// The chain moved on (metadata: `aggregate`, `aggregate_seq`, `hash`, `stream_seq` of the current head).
    Conflict => "CONFLICT",
    /// `prev_hash` does not match the previous event.
    ChainBroken => "CHAIN_BROKEN",
    /// `aggregate_seq` skips ahead of the head.
    Gap => "GAP",
    /// Another event with the same id but different content exists.
    Duplicate => "DUPLICATE",
    /// The name is already claimed.
    NameTaken => "NAME_TAKEN",
    /// The identity is already registered.
    AlreadyRegistered => "ALREADY_REGISTERED",
    /// The event (or blob) is over the size limit.
    TooLarge => "TOO_LARGE",
    // Requests.
    /// The request message is not a valid protobuf encoding of its type.
    UndecodableMessage => "UNDECODABLE_MESSAGE",
    /// A request field is missing or invalid.
    InvalidArgument => "INVALID_ARGUMENT",
    /// Something already exists.
    AlreadyExists => "ALREADY_EXISTS",
    /// No such event, aggregate, identity or blob.
    NotFound => "NOT_FOUND",
    /// A request signature header is missing or unreadable.
    SignatureMissing => "SIGNATURE_MISSING",
    /// The request signature does not verify.
    BadRequestSignature => "BAD_REQUEST_SIGNATURE",
    /// The request timestamp is outside the freshness window.
    RequestExpired => "REQUEST_EXPIRED",
    /// The request nonce was already used.
    RequestReplayed => "REQUEST_REPLAYED",
    /// The request signer is not a registered identity.
    UnknownSigner => "UNKNOWN_SIGNER",
    /// The request signer is revoked.
    RevokedSigner => "REVOKED_SIGNER",
    /// The signer may not act on someone else's data.
    NotOwner => "NOT_OWNER",
    /// The signer is authenticated but may not read this (someone else's
    /// aggregate, a stream it was not granted, a blob it did not upload); see
    /// docs/architecture.md, "Read access" (metadata: `what`).
    ReadNotPermitted => "READ_NOT_PERMITTED",
    /// A stored blob does not match its digest.
    DigestMismatch => "DIGEST_MISMATCH",
    // LLM sessions (`LlmService`, the llm role's queries).
    /// A command went to the wrong `LlmService` RPC (its payload is not the
    /// one the RPC appends, or an open with/without a cassette).
    WrongCommand => "WRONG_COMMAND",
    /// An `llm.session_opened` names a session id that is not
    /// `amai_core::llm::session_id(actor, event id)`.
    SessionIdMismatch => "SESSION_ID_MISMATCH",
    /// No such LLM session.
    SessionNotFound => "SESSION_NOT_FOUND",
    /// The session was deleted; it takes no more commands.
    SessionDeleted => "SESSION_DELETED",
    /// The event's actor does not own the session (metadata: `session_id`).
    NotSessionOwner => "NOT_SESSION_OWNER",
    /// The session key hash is already bound to a session (for ever).
    KeyInUse => "KEY_IN_USE",
    /// The key hash is bound to no session, or not to this one.
    KeyNotFound => "KEY_NOT_FOUND",
    /// The session key is already revoked.
    KeyRevoked => "KEY_REVOKED",
    // Jails (`JailService`, the jail role's queries).
    /// A `jail.requested` names a jail id that is not
    /// `amai_core::jail::jail_id(actor, event id)`.
    JailIdMismatch => "JAIL_ID_MISMATCH",
    /// The jail spec is invalid (metadata: `paths`, the JSON paths of the errors).
    InvalidSpec => "INVALID_SPEC",
    /// The spec's digest is not the one the request claims.
    SpecDigestMismatch => "SPEC_DIGEST_MISMATCH",
    /// No such jail (or not the caller's).
    JailNotFound => "JAIL_NOT_FOUND",
    /// The jail is not in a state that allows the call (metadata: `state`).
    JailState => "JAIL_STATE",
    // Trust (`TrustService`, the trust role's queries).
    /// An `agent.endorsed` names its own actor as the endorsee.
    SelfEndorsement => "SELF_ENDORSEMENT",
    /// The endorsee is not a registered identity (metadata: `endorsee`).
    EndorseeNotFound => "ENDORSEE_NOT_FOUND",
    /// The endorsee is an operator or service identity, not an agent (metadata: `endorsee`, `kind`).
    EndorseeNotAnAgent => "ENDORSEE_NOT_AN_AGENT",
    /// The endorsee is revoked (metadata: `endorsee`).
    EndorseeRevoked => "ENDORSEE_REVOKED",
    /// The endorser already endorsed this endorsee (metadata: `endorsee`, `event_id` of the endorsement).
    AlreadyEndorsed => "ALREADY_ENDORSED",
    // Audit (`AuditService`, the audit role's queries).
    /// No checkpoint of the stream yet, or none of that size (metadata: `stream`).
    NoCheckpoint => "NO_CHECKPOINT",
    /// The audit tree has not reached the requested size yet (metadata: `stream`, `tree_size`, `stored`).
    TreeSizeBeyondEnd => "TREE_SIZE_BEYOND_END",
    /// The audit role's tree disagrees with the latest signed checkpoint: the
    /// stream was rewritten; nothing is signed over it (metadata: `stream`).
    LogDiverged => "LOG_DIVERGED",
    // Catalogue (`AgentService`, the lifecycle role's queries).
    /// The manifest is invalid (metadata: `paths`, the JSON paths of the errors).
    InvalidManifest => "INVALID_MANIFEST",
    /// The event's manifest id, version or digest is not the manifest's.
    ManifestDigestMismatch => "MANIFEST_DIGEST_MISMATCH",
    /// Another identity owns the manifest id (metadata: `manifest_id`, `owner`).
    ManifestIdOwned => "MANIFEST_ID_OWNED",
    /// The version was already published with other bytes (metadata: `manifest_id`, `version`).
    ManifestVersionExists => "MANIFEST_VERSION_EXISTS",
    /// No such catalogue entry (metadata: `manifest_id`).
    CatalogEntryNotFound => "CATALOG_ENTRY_NOT_FOUND",
    // Queries (`min_position` and pages).
    /// The projection has not reached `min_position` within the wait bound; retry (metadata: `stream`, `reached`, `wanted`).
    StalePosition => "STALE_POSITION",
    /// `min_position` names a stream the answering projection does not consume (metadata: `stream`, `consumed`).
    StreamNotConsumed => "STREAM_NOT_CONSUMED",
    /// `min_position` is beyond the stream's last sequence (metadata: `stream`, `wanted`, `last_seq`).
    PositionBeyondEnd => "POSITION_BEYOND_END",
    /// One item of a page is larger than a reply may be (metadata: `seq`, `size`, `max`).
    ItemTooLarge => "ITEM_TOO_LARGE",
    /// A query's whole reply is larger than NATS carries (metadata: `size`, `max`).
    ReplyTooLarge => "REPLY_TOO_LARGE",
    // Infrastructure.
    /// No worker of the role answered (retry; start one).
    WorkerUnavailable => "WORKER_UNAVAILABLE",
    /// NATS or another dependency is unavailable; retry.
    Unavailable => "UNAVAILABLE",
    /// A server-side bug or unexpected failure.
    Internal => "INTERNAL",
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds the `ErrorInfo` details of a status (what the gateway attaches).
pub fn error_details(kind: ErrorKind, metadata: HashMap<String, String>) -> ErrorDetails {
    ErrorDetails::with_error_info(kind.as_str(), ERROR_DOMAIN, metadata)
}

/// The kind a status carries (`Unknown` without an Amai `ErrorInfo`).
pub fn status_kind(status: &Status) -> ErrorKind {
    match status.get_details_error_info() {
        Some(info) if info.domain == ERROR_DOMAIN => ErrorKind::from_reason(&info.reason),
        _ => ErrorKind::Unknown,
    }
}

#[cfg(test)]
mod jail_method_tests {
    use prost::Message;

    /// The method paths of the compiled service `name`, sorted.
    fn compiled_methods(name: &str) -> Vec<String> {
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let service = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .find(|s| s.name() == name)
            .expect("service");
        let mut compiled: Vec<String> = service
            .method
            .iter()
            .map(|m| format!("/amai.v1.{name}/{}", m.name()))
            .collect();
        compiled.sort();
        compiled
    }

    /// Every `TrustService` method path names a method of the compiled
    /// service, and every method of the service has a path here.
    #[test]
    fn trust_method_paths_name_the_services_methods() {
        let mut paths = vec![
            super::ENDORSE_METHOD,
            super::GET_TRUST_METHOD,
            super::GET_TRUST_HISTORY_METHOD,
            super::LIST_TRUST_ALERTS_METHOD,
            super::GET_TRUST_REPORT_METHOD,
            super::EXPLAIN_TRUST_METHOD,
        ];
        paths.sort();
        assert_eq!(compiled_methods("TrustService"), paths);
    }

    /// Every `JailService` method path names a method of the compiled service,
    /// and every method of the service has a path here.
    #[test]
    fn jail_method_paths_name_the_services_methods() {
        let compiled = compiled_methods("JailService");
        let mut paths = vec![
            super::CREATE_JAIL_METHOD,
            super::RUN_JAIL_METHOD,
            super::GET_JAIL_STATUS_METHOD,
            super::GET_JAIL_DIFF_METHOD,
            super::GET_JAIL_LOGS_METHOD,
            super::GET_JAIL_NETWORK_LOG_METHOD,
            super::GET_JAIL_USAGE_METHOD,
            super::REPRODUCE_JAIL_METHOD,
            super::DELETE_JAIL_METHOD,
            super::LIST_JAILS_METHOD,
        ];
        paths.sort();
        assert_eq!(compiled, paths);
    }
}
