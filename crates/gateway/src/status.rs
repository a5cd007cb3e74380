//! The one place domain errors become gRPC statuses.
//!
//! Every status carries a `google.rpc.ErrorInfo` (domain `amai.dev`) whose
//! reason is the failure's kind in SCREAMING_SNAKE ([`amai_proto::wire::ErrorKind`],
//! which the SDK parses back); the message says what to fix.
//!
//! | failure | code | reason (metadata) |
//! |---|---|---|
//! | undecodable request message (the codec, before any handler) | `INVALID_ARGUMENT` | `UNDECODABLE_MESSAGE` (`message_type`) |
//! | malformed event, invalid payload, gap, broken `prev_hash` | `INVALID_ARGUMENT` | `MALFORMED`, `INVALID`, `GAP`, `CHAIN_BROKEN` |
//! | bad request field | `INVALID_ARGUMENT` | `INVALID_ARGUMENT` |
//! | event signature does not verify, key not the actor's (unknown key) | `UNAUTHENTICATED` | `BAD_SIGNATURE`, `UNKNOWN_KEY` |
//! | key rotated out / identity revoked, actor not permitted here | `PERMISSION_DENIED` | `REVOKED_KEY`, `NOT_PERMITTED` |
//! | stale chain head (conflict) | `FAILED_PRECONDITION` + head in `amai-chain-head-bin` | `CONFLICT` (`aggregate`, `aggregate_seq`, `hash` hex, `stream_seq`) |
//! | name taken, identity registered, event id reused | `ALREADY_EXISTS` | `NAME_TAKEN`, `ALREADY_REGISTERED`, `DUPLICATE`, `ALREADY_EXISTS` |
//! | event or blob too large | `RESOURCE_EXHAUSTED` | `TOO_LARGE` |
//! | one inbox message larger than a query reply may be | `RESOURCE_EXHAUSTED` | `ITEM_TOO_LARGE` (`seq`, `size`, `max`) |
//! | a whole query reply larger than NATS carries | `RESOURCE_EXHAUSTED` | `REPLY_TOO_LARGE` (`size`, `max`) |
//! | NATS unavailable | `UNAVAILABLE` | `UNAVAILABLE` |
//! | no worker of the role answers | `UNAVAILABLE` | `WORKER_UNAVAILABLE` |
//! | stored blob does not match its digest | `DATA_LOSS` | `DIGEST_MISMATCH` |
//! | the chain holds an event that fails verification (published around the store) | `DATA_LOSS` | `CORRUPTED` |
//! | no such event / aggregate / identity / blob | `NOT_FOUND` | `NOT_FOUND` |
//! | `min_position` not reached within the wait bound | `DEADLINE_EXCEEDED` | `STALE_POSITION` (`stream`, `reached`, `wanted`) |
//! | `min_position` on a stream the projection does not consume | `INVALID_ARGUMENT` | `STREAM_NOT_CONSUMED` (`stream`, `consumed`) |
//! | `min_position` beyond the stream's last sequence | `OUT_OF_RANGE` | `POSITION_BEYOND_END` (`stream`, `wanted`, `last_seq`) |
//! | request signature missing / bad / expired / replayed | `UNAUTHENTICATED` | `SIGNATURE_MISSING`, `BAD_REQUEST_SIGNATURE`, `REQUEST_EXPIRED`, `REQUEST_REPLAYED` |
//! | request signer unknown | `UNAUTHENTICATED` | `UNKNOWN_SIGNER` |
//! | request signer revoked / not the data's owner | `PERMISSION_DENIED` | `REVOKED_SIGNER`, `NOT_OWNER` |
//! | request signed with the key the signer rotated out last | `PERMISSION_DENIED` | `REVOKED_KEY` |
//! | authenticated, but the read access rule does not allow this read (`access`) | `PERMISSION_DENIED` | `READ_NOT_PERMITTED` (`what`) |
//! | LLM command on the wrong RPC (payload kind, open with/without a cassette) | `INVALID_ARGUMENT` | `WRONG_COMMAND` |
//! | `llm.session_opened` whose session id is not derived from its actor and event id | `INVALID_ARGUMENT` | `SESSION_ID_MISMATCH` |
//! | no such LLM session | `NOT_FOUND` | `SESSION_NOT_FOUND` (`session_id`) |
//! | LLM command by someone other than the session's owner | `PERMISSION_DENIED` | `NOT_SESSION_OWNER` (`session_id`) |
//! | LLM command on a deleted session | `FAILED_PRECONDITION` | `SESSION_DELETED` (`session_id`) |
//! | session key hash already bound to a session | `ALREADY_EXISTS` | `KEY_IN_USE` |
//! | revoking a key that is not the session's / already revoked | `NOT_FOUND` / `FAILED_PRECONDITION` | `KEY_NOT_FOUND` / `KEY_REVOKED` |
//! | `agent.endorsed` naming its own actor | `INVALID_ARGUMENT` | `SELF_ENDORSEMENT` |
//! | endorsee not registered | `NOT_FOUND` | `ENDORSEE_NOT_FOUND` (`endorsee`) |
//! | endorsee an operator or service identity | `INVALID_ARGUMENT` | `ENDORSEE_NOT_AN_AGENT` (`endorsee`, `kind`) |
//! | endorsee revoked | `FAILED_PRECONDITION` | `ENDORSEE_REVOKED` (`endorsee`) |
//! | endorser already endorsed the endorsee | `ALREADY_EXISTS` | `ALREADY_ENDORSED` (`endorsee`, `event_id`) |
//! | no trust delta or alert with this id (or not the caller's) | `NOT_FOUND` | `NOT_FOUND` |
//! | an endorsement cannot be checked: the trust worker does not answer | `UNAVAILABLE` | `WORKER_UNAVAILABLE` |
//! | anything unexpected | `INTERNAL` | `INTERNAL` |
//!
//! Unauthenticated means "we cannot tell who you are" (the signature or key does
//! not prove the claimed actor); permission denied means "we know who you are and
//! you may not do this" (a revoked key, a foreign chain, someone else's inbox).
//! Query failures keep the worker's reason; a worker that gave none gets the
//! reason of its code (`NOT_FOUND`, `INVALID_ARGUMENT`, ...). Statuses tonic
//! produces by itself (an unknown method, a message over the size limit) carry
//! no `ErrorInfo`.

use std::collections::HashMap;

use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use amai_bus::query::{QueryCode, QueryError};
use amai_bus::request::RequestAuthError;
use amai_bus::store::{AppendError, AppendErrorKind, ReadError};
use amai_proto::wire::error_details;
use amai_proto::wire::{ErrorKind, CHAIN_HEAD_METADATA};
use tonic_types::StatusExt;

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
    #[error("request signer {0} was revoked: a revoked identity can no longer sign requests")]
    RevokedSigner(String),
    /// The request was signed with a key the signer rotated out.
    #[error("the request is signed with a key of {0} that was rotated out; sign with its current key (and pass the identity id, e.g. --id)")]
    RotatedOutSigner(String),
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
    /// An authenticated caller may not read this (see [`crate::access`]).
    #[error("{actor} may not read {what}: an identity reads its own aggregates, messages addressed to it and the key events of agent chains; operators read everything; other streams need a read grant from an operator (docs/architecture.md, \"Read access\")")]
    ReadNotPermitted {
        /// Who signed.
        actor: String,
        /// What it asked for (an aggregate, a stream, a position, a blob).
        what: String,
    },
    /// The request itself is not valid.
    #[error("{0}")]
    InvalidArgument(String),
    /// An LLM command sent to the RPC that does not append it.
    #[error("{0}")]
    WrongCommand(String),
    /// An `llm.session_opened` names a session id not derived from its actor
    /// and event id.
    #[error("session_id {got} is not derived from the actor and the event id (want {want}: amai_core::llm::session_id(actor, event id)); sign the open with the derived id")]
    SessionIdMismatch {
        /// The id the event names.
        got: String,
        /// The derived id.
        want: String,
    },
    /// No such LLM session.
    #[error("no LLM session {0}; list yours with `amai llm session ls`")]
    SessionNotFound(String),
    /// The event's actor does not own the session.
    #[error("{actor} does not own LLM session {session_id}; only its owner may command it")]
    NotSessionOwner {
        /// Who signed.
        actor: String,
        /// The session.
        session_id: String,
    },
    /// The session was deleted.
    #[error("LLM session {0} was deleted; it takes no more commands (create a new one)")]
    SessionDeleted(String),
    /// The key hash is bound to a session already.
    #[error("this session key is already bound to a session (a key belongs to the first session that issued it, for ever); generate a new key")]
    KeyInUse,
    /// Revoking a key the session does not have.
    #[error("the key is not a key of LLM session {0}")]
    KeyNotFound(String),
    /// Revoking a key twice.
    #[error("the key of LLM session {0} is already revoked")]
    KeyRevoked(String),
    /// A `jail.requested` names a jail id not derived from its actor and event id.
    #[error("jail_id {got} is not derived from the actor and the event id (want {want}: amai_core::jail::jail_id(actor, event id)); sign the request with the derived id")]
    JailIdMismatch {
        /// The id the event names.
        got: String,
        /// The derived id.
        want: String,
    },
    /// The jail spec is invalid.
    #[error("the jail spec is invalid: {detail} (schemas/jail-spec.schema.json)")]
    InvalidSpec {
        /// Every error.
        detail: String,
        /// The JSON path of every error.
        paths: Vec<String>,
    },
    /// The spec's digest is not the one the request claims.
    #[error(
        "spec_sha256 {got} is not the digest of the spec (want {want}: JailSpec::canonical_digest)"
    )]
    SpecDigestMismatch {
        /// The claimed digest.
        got: String,
        /// The spec's digest.
        want: String,
    },
    /// The manifest of a `catalog.published` is invalid.
    #[error("the manifest is invalid (schemas/agent-manifest.schema.json):\n{detail}")]
    InvalidManifest {
        /// Every error.
        detail: String,
        /// The JSON path of every error.
        paths: Vec<String>,
    },
    /// The event's manifest id, version or digest is not the manifest's.
    #[error("{0}; sign the event with the manifest's own id, version and canonical digest (Manifest::canonical_digest)")]
    ManifestDigestMismatch(String),
    /// Another identity owns the manifest id.
    #[error("manifest id {manifest_id} belongs to {owner}: only its owner publishes versions of it; choose another id")]
    ManifestIdOwned {
        /// The id.
        manifest_id: String,
        /// The owning identity.
        owner: String,
    },
    /// The version was published before with other bytes.
    #[error("{manifest_id}@{version} was already published with other bytes; a published version never changes: bump the version")]
    ManifestVersionExists {
        /// The id.
        manifest_id: String,
        /// The version.
        version: String,
    },
    /// No such catalogue entry.
    #[error("no catalogue entry {0}; search with `amai catalog search`")]
    CatalogEntryNotFound(String),
    /// No such jail, or not the caller's.
    #[error("no jail {0} of yours; list yours with `amai jail ls`")]
    JailNotFound(String),
    /// The jail is not in a state that allows the call.
    #[error("jail {jail_id}: {detail}")]
    JailState {
        /// The jail.
        jail_id: String,
        /// Its state, when known.
        state: String,
        /// What is wrong.
        detail: String,
    },
    /// An `agent.endorsed` names its own actor.
    #[error("{0} cannot endorse itself; endorse another agent")]
    SelfEndorsement(String),
    /// The endorsee is not a registered identity.
    #[error("no identity {0} to endorse; check the id (`amai agent show <id>`), or retry if it registered a moment ago")]
    EndorseeNotFound(String),
    /// The endorsee is an operator or service identity.
    #[error("{endorsee} is a {kind} identity, not an agent; only agents are endorsed")]
    EndorseeNotAnAgent {
        /// The endorsee.
        endorsee: String,
        /// Its kind (`operator`, `service`).
        kind: String,
    },
    /// The endorsee is revoked.
    #[error("{0} is revoked; a revoked identity cannot be endorsed")]
    EndorseeRevoked(String),
    /// The endorser already endorsed this endorsee.
    #[error(
        "{endorser} already endorsed {endorsee} (event {event_id}); an endorsement counts once"
    )]
    AlreadyEndorsed {
        /// The endorser.
        endorser: String,
        /// The endorsee.
        endorsee: String,
        /// The earlier `agent.endorsed` event.
        event_id: String,
    },
    /// No trust delta or alert with this id that the caller may read (the
    /// same answer whether it does not exist or is someone else's).
    #[error("no trust delta or alert {0} of yours; list them with `amai trust history`")]
    TrustDeltaNotFound(String),
    /// The trust worker does not answer, so a command that depends on its
    /// answer is refused (nothing was appended).
    #[error("the trust worker is not running or not answering ({0}); start it (`amai worker --role trust`, or `amai up`) and retry; nothing was appended")]
    TrustWorkerUnavailable(String),
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

/// Maps any gateway failure to its gRPC status with its `ErrorInfo` (see the
/// module docs).
pub fn to_status(err: ApiError) -> Status {
    let mut message = err.to_string();
    if matches!(
        err,
        ApiError::Blob(amai_bus::blob::BlobError::Nats(_))
            | ApiError::Read(ReadError::Unavailable(_))
    ) {
        message.push_str("; retry shortly");
    }
    let (code, kind, metadata, extra) = classify(err);
    let mut md = MetadataMap::new();
    if let Some(head) = extra {
        md.insert_bin(CHAIN_HEAD_METADATA, MetadataValue::from_bytes(&head));
    }
    Status::with_error_details_and_metadata(code, message, error_details(kind, metadata), md)
}

type Classified = (Code, ErrorKind, HashMap<String, String>, Option<Vec<u8>>);

/// Code, kind, `ErrorInfo` metadata and (for conflicts) the encoded chain head.
fn classify(err: ApiError) -> Classified {
    let plain = |code, kind| (code, kind, HashMap::new(), None);
    match err {
        ApiError::Append(e) => {
            let (code, kind) = match e.kind() {
                AppendErrorKind::Malformed => (Code::InvalidArgument, ErrorKind::Malformed),
                AppendErrorKind::Invalid => (Code::InvalidArgument, ErrorKind::Invalid),
                AppendErrorKind::Gap => (Code::InvalidArgument, ErrorKind::Gap),
                AppendErrorKind::ChainBroken => (Code::InvalidArgument, ErrorKind::ChainBroken),
                AppendErrorKind::BadSignature => (Code::Unauthenticated, ErrorKind::BadSignature),
                AppendErrorKind::UnknownKey => (Code::Unauthenticated, ErrorKind::UnknownKey),
                AppendErrorKind::RevokedKey => (Code::PermissionDenied, ErrorKind::RevokedKey),
                AppendErrorKind::NotPermitted => (Code::PermissionDenied, ErrorKind::NotPermitted),
                AppendErrorKind::Conflict => (Code::FailedPrecondition, ErrorKind::Conflict),
                AppendErrorKind::Duplicate => (Code::AlreadyExists, ErrorKind::Duplicate),
                AppendErrorKind::NameTaken => (Code::AlreadyExists, ErrorKind::NameTaken),
                AppendErrorKind::AlreadyRegistered => {
                    (Code::AlreadyExists, ErrorKind::AlreadyRegistered)
                }
                AppendErrorKind::TooLarge => (Code::ResourceExhausted, ErrorKind::TooLarge),
                AppendErrorKind::Unavailable => (Code::Unavailable, ErrorKind::Unavailable),
                AppendErrorKind::Corrupted => (Code::DataLoss, ErrorKind::Corrupted),
                AppendErrorKind::Other => (Code::Internal, ErrorKind::Internal),
            };
            match e.current_head() {
                Some(head) if code == Code::FailedPrecondition => {
                    let metadata = HashMap::from([
                        ("aggregate".to_string(), head.aggregate.to_string()),
                        ("aggregate_seq".to_string(), head.aggregate_seq.to_string()),
                        ("hash".to_string(), hex::encode(head.hash)),
                        ("stream_seq".to_string(), head.stream_seq.to_string()),
                    ]);
                    (code, kind, metadata, Some(head.to_proto().encode_to_vec()))
                }
                _ => plain(code, kind),
            }
        }
        ApiError::Blob(e) => match e {
            amai_bus::blob::BlobError::NotFound(_) => plain(Code::NotFound, ErrorKind::NotFound),
            amai_bus::blob::BlobError::DigestMismatch(_) => {
                plain(Code::DataLoss, ErrorKind::DigestMismatch)
            }
            amai_bus::blob::BlobError::Nats(_) => plain(Code::Unavailable, ErrorKind::Unavailable),
        },
        ApiError::Read(e) => match e {
            ReadError::NotFound(_) => plain(Code::NotFound, ErrorKind::NotFound),
            ReadError::Invalid(_) => plain(Code::InvalidArgument, ErrorKind::InvalidArgument),
            ReadError::Unavailable(_) => plain(Code::Unavailable, ErrorKind::Unavailable),
        },
        ApiError::Query(e) => {
            let (code, default_kind) = match e.code {
                QueryCode::InvalidArgument => (Code::InvalidArgument, ErrorKind::InvalidArgument),
                QueryCode::DeadlineExceeded => (Code::DeadlineExceeded, ErrorKind::StalePosition),
                QueryCode::NotFound => (Code::NotFound, ErrorKind::NotFound),
                QueryCode::PermissionDenied => (Code::PermissionDenied, ErrorKind::NotOwner),
                QueryCode::ResourceExhausted => (Code::ResourceExhausted, ErrorKind::ReplyTooLarge),
                QueryCode::FailedPrecondition => (Code::FailedPrecondition, ErrorKind::Unknown),
                QueryCode::OutOfRange => (Code::OutOfRange, ErrorKind::PositionBeyondEnd),
                QueryCode::Internal => (Code::Internal, ErrorKind::Internal),
                QueryCode::Unavailable => (Code::Unavailable, ErrorKind::WorkerUnavailable),
            };
            let kind = match e.reason.as_deref().map(ErrorKind::from_reason) {
                Some(kind) if kind != ErrorKind::Unknown => kind,
                _ => default_kind,
            };
            (code, kind, e.metadata.into_iter().collect(), None)
        }
        ApiError::Auth(e) => match e {
            RequestAuthError::Missing(_) => {
                plain(Code::Unauthenticated, ErrorKind::SignatureMissing)
            }
            RequestAuthError::BadSignature(_) => {
                plain(Code::Unauthenticated, ErrorKind::BadRequestSignature)
            }
            RequestAuthError::Expired { .. } => {
                plain(Code::Unauthenticated, ErrorKind::RequestExpired)
            }
        },
        ApiError::Replayed(_) => plain(Code::Unauthenticated, ErrorKind::RequestReplayed),
        ApiError::UnknownSigner(_) => plain(Code::Unauthenticated, ErrorKind::UnknownSigner),
        ApiError::RevokedSigner(_) => plain(Code::PermissionDenied, ErrorKind::RevokedSigner),
        ApiError::RotatedOutSigner(_) => plain(Code::PermissionDenied, ErrorKind::RevokedKey),
        ApiError::NotOwner { .. } => plain(Code::PermissionDenied, ErrorKind::NotOwner),
        ApiError::ReadNotPermitted { what, .. } => (
            Code::PermissionDenied,
            ErrorKind::ReadNotPermitted,
            HashMap::from([("what".to_string(), what)]),
            None,
        ),
        ApiError::InvalidArgument(_) => plain(Code::InvalidArgument, ErrorKind::InvalidArgument),
        ApiError::WrongCommand(_) => plain(Code::InvalidArgument, ErrorKind::WrongCommand),
        ApiError::SessionIdMismatch { .. } => {
            plain(Code::InvalidArgument, ErrorKind::SessionIdMismatch)
        }
        ApiError::SessionNotFound(session_id) => (
            Code::NotFound,
            ErrorKind::SessionNotFound,
            HashMap::from([("session_id".to_string(), session_id)]),
            None,
        ),
        ApiError::NotSessionOwner { session_id, .. } => (
            Code::PermissionDenied,
            ErrorKind::NotSessionOwner,
            HashMap::from([("session_id".to_string(), session_id)]),
            None,
        ),
        ApiError::SessionDeleted(session_id) => (
            Code::FailedPrecondition,
            ErrorKind::SessionDeleted,
            HashMap::from([("session_id".to_string(), session_id)]),
            None,
        ),
        ApiError::KeyInUse => plain(Code::AlreadyExists, ErrorKind::KeyInUse),
        ApiError::KeyNotFound(_) => plain(Code::NotFound, ErrorKind::KeyNotFound),
        ApiError::KeyRevoked(_) => plain(Code::FailedPrecondition, ErrorKind::KeyRevoked),
        ApiError::JailIdMismatch { .. } => plain(Code::InvalidArgument, ErrorKind::JailIdMismatch),
        ApiError::InvalidSpec { paths, .. } => (
            Code::InvalidArgument,
            ErrorKind::InvalidSpec,
            HashMap::from([("paths".to_string(), paths.join(","))]),
            None,
        ),
        ApiError::SpecDigestMismatch { .. } => {
            plain(Code::InvalidArgument, ErrorKind::SpecDigestMismatch)
        }
        ApiError::InvalidManifest { paths, .. } => (
            Code::InvalidArgument,
            ErrorKind::InvalidManifest,
            HashMap::from([("paths".to_string(), paths.join(","))]),
            None,
        ),
        ApiError::ManifestDigestMismatch(_) => {
            plain(Code::InvalidArgument, ErrorKind::ManifestDigestMismatch)
        }
        ApiError::ManifestIdOwned { manifest_id, owner } => (
            Code::PermissionDenied,
            ErrorKind::ManifestIdOwned,
            HashMap::from([
                ("manifest_id".to_string(), manifest_id),
                ("owner".to_string(), owner),
            ]),
            None,
        ),
        ApiError::ManifestVersionExists {
            manifest_id,
            version,
        } => (
            Code::AlreadyExists,
            ErrorKind::ManifestVersionExists,
            HashMap::from([
                ("manifest_id".to_string(), manifest_id),
                ("version".to_string(), version),
            ]),
            None,
        ),
        ApiError::CatalogEntryNotFound(manifest_id) => (
            Code::NotFound,
            ErrorKind::CatalogEntryNotFound,
            HashMap::from([("manifest_id".to_string(), manifest_id)]),
            None,
        ),
        ApiError::JailNotFound(jail_id) => (
            Code::NotFound,
            ErrorKind::JailNotFound,
            HashMap::from([("jail_id".to_string(), jail_id)]),
            None,
        ),
        ApiError::JailState { state, .. } => (
            Code::FailedPrecondition,
            ErrorKind::JailState,
            HashMap::from([("state".to_string(), state)]),
            None,
        ),
        ApiError::SelfEndorsement(_) => plain(Code::InvalidArgument, ErrorKind::SelfEndorsement),
        ApiError::EndorseeNotFound(endorsee) => (
            Code::NotFound,
            ErrorKind::EndorseeNotFound,
            HashMap::from([("endorsee".to_string(), endorsee)]),
            None,
        ),
        ApiError::EndorseeNotAnAgent { endorsee, kind } => (
            Code::InvalidArgument,
            ErrorKind::EndorseeNotAnAgent,
            HashMap::from([
                ("endorsee".to_string(), endorsee),
                ("kind".to_string(), kind),
            ]),
            None,
        ),
        ApiError::EndorseeRevoked(endorsee) => (
            Code::FailedPrecondition,
            ErrorKind::EndorseeRevoked,
            HashMap::from([("endorsee".to_string(), endorsee)]),
            None,
        ),
        ApiError::AlreadyEndorsed {
            endorsee, event_id, ..
        } => (
            Code::AlreadyExists,
            ErrorKind::AlreadyEndorsed,
            HashMap::from([
                ("endorsee".to_string(), endorsee),
                ("event_id".to_string(), event_id),
            ]),
            None,
        ),
        ApiError::TrustDeltaNotFound(_) => plain(Code::NotFound, ErrorKind::NotFound),
        ApiError::TrustWorkerUnavailable(_) => {
            plain(Code::Unavailable, ErrorKind::WorkerUnavailable)
        }
        ApiError::AlreadyExists(_) => plain(Code::AlreadyExists, ErrorKind::AlreadyExists),
        ApiError::TooLarge(_) => plain(Code::ResourceExhausted, ErrorKind::TooLarge),
        ApiError::Unavailable(_) => plain(Code::Unavailable, ErrorKind::Unavailable),
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
    use amai_bus::query::reason;
    use amai_client::ClientError;

    fn kind_of(status: Status) -> (Code, ErrorKind) {
        let code = status.code();
        let info = status
            .get_details_error_info()
            .expect("every status has an ErrorInfo");
        assert_eq!(info.domain, "amai.dev");
        (code, ClientError::from(status).kind())
    }

    #[test]
    fn query_and_auth_failures_map_to_precise_codes_and_reasons() {
        assert_eq!(
            kind_of(to_status(ApiError::Query(QueryError::new(
                QueryCode::Unavailable,
                "no worker"
            )))),
            (Code::Unavailable, ErrorKind::WorkerUnavailable)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Query(
                QueryError::new(QueryCode::OutOfRange, "beyond")
                    .with_reason(reason::POSITION_BEYOND_END)
                    .with_meta("last_seq", 9)
            ))),
            (Code::OutOfRange, ErrorKind::PositionBeyondEnd)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Query(QueryError::new(
                QueryCode::NotFound,
                "nobody"
            )))),
            (Code::NotFound, ErrorKind::NotFound)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Replayed("n".into()))),
            (Code::Unauthenticated, ErrorKind::RequestReplayed)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Auth(RequestAuthError::Missing(
                "x".into()
            )))),
            (Code::Unauthenticated, ErrorKind::SignatureMissing)
        );
        assert_eq!(
            kind_of(to_status(ApiError::NotOwner {
                actor: "a".into(),
                owner: "b".into()
            })),
            (Code::PermissionDenied, ErrorKind::NotOwner)
        );
        assert_eq!(
            kind_of(to_status(ApiError::ReadNotPermitted {
                actor: "a".into(),
                what: "agent/b".into()
            })),
            (Code::PermissionDenied, ErrorKind::ReadNotPermitted)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Read(ReadError::NotFound("x".into())))),
            (Code::NotFound, ErrorKind::NotFound)
        );
        assert_eq!(
            kind_of(to_status(ApiError::Blob(
                amai_bus::blob::BlobError::DigestMismatch("d".into())
            ))),
            (Code::DataLoss, ErrorKind::DigestMismatch)
        );
    }

    #[test]
    fn llm_refusals_map_to_their_codes_and_reasons() {
        let table = [
            (
                ApiError::WrongCommand("w".into()),
                Code::InvalidArgument,
                ErrorKind::WrongCommand,
            ),
            (
                ApiError::SessionIdMismatch {
                    got: "a".into(),
                    want: "b".into(),
                },
                Code::InvalidArgument,
                ErrorKind::SessionIdMismatch,
            ),
            (
                ApiError::SessionNotFound("s".into()),
                Code::NotFound,
                ErrorKind::SessionNotFound,
            ),
            (
                ApiError::NotSessionOwner {
                    actor: "a".into(),
                    session_id: "s".into(),
                },
                Code::PermissionDenied,
                ErrorKind::NotSessionOwner,
            ),
            (
                ApiError::SessionDeleted("s".into()),
                Code::FailedPrecondition,
                ErrorKind::SessionDeleted,
            ),
            (ApiError::KeyInUse, Code::AlreadyExists, ErrorKind::KeyInUse),
            (
                ApiError::KeyNotFound("s".into()),
                Code::NotFound,
                ErrorKind::KeyNotFound,
            ),
            (
                ApiError::KeyRevoked("s".into()),
                Code::FailedPrecondition,
                ErrorKind::KeyRevoked,
            ),
        ];
        for (err, code, kind) in table {
            assert_eq!(kind_of(to_status(err)), (code, kind));
        }
        let err = ClientError::from(to_status(ApiError::SessionNotFound("s1".into())));
        assert_eq!(
            err.error_metadata().get("session_id").map(String::as_str),
            Some("s1")
        );
    }

    #[test]
    fn trust_refusals_map_to_their_codes_and_reasons() {
        let table = [
            (
                ApiError::SelfEndorsement("a".into()),
                Code::InvalidArgument,
                ErrorKind::SelfEndorsement,
            ),
            (
                ApiError::EndorseeNotFound("b".into()),
                Code::NotFound,
                ErrorKind::EndorseeNotFound,
            ),
            (
                ApiError::EndorseeNotAnAgent {
                    endorsee: "b".into(),
                    kind: "operator".into(),
                },
                Code::InvalidArgument,
                ErrorKind::EndorseeNotAnAgent,
            ),
            (
                ApiError::EndorseeRevoked("b".into()),
                Code::FailedPrecondition,
                ErrorKind::EndorseeRevoked,
            ),
            (
                ApiError::AlreadyEndorsed {
                    endorser: "a".into(),
                    endorsee: "b".into(),
                    event_id: "e".into(),
                },
                Code::AlreadyExists,
                ErrorKind::AlreadyEndorsed,
            ),
            (
                ApiError::TrustDeltaNotFound("d".into()),
                Code::NotFound,
                ErrorKind::NotFound,
            ),
            (
                ApiError::TrustWorkerUnavailable("no responders".into()),
                Code::Unavailable,
                ErrorKind::WorkerUnavailable,
            ),
        ];
        for (err, code, kind) in table {
            assert_eq!(kind_of(to_status(err)), (code, kind));
        }
        let err = ClientError::from(to_status(ApiError::AlreadyEndorsed {
            endorser: "a".into(),
            endorsee: "b".into(),
            event_id: "e1".into(),
        }));
        assert_eq!(
            err.error_metadata().get("event_id").map(String::as_str),
            Some("e1")
        );
    }

    #[test]
    fn query_metadata_reaches_the_error_info() {
        let status = to_status(ApiError::Query(
            QueryError::new(QueryCode::OutOfRange, "beyond")
                .with_reason(reason::POSITION_BEYOND_END)
                .with_meta("last_seq", 9),
        ));
        let err = ClientError::from(status);
        assert_eq!(
            err.error_metadata().get("last_seq").map(String::as_str),
            Some("9")
        );
    }
}
