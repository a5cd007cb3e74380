//! `JailService`: jails, as commands and reads over the jail role's projection
//! (`amai.query.jail.*`) and the blob store.
//!
//! `CreateJail` and `Reproduce` carry the owner's signed `jail.requested`
//! action for its own chain. It is validated completely before anything is
//! appended (nothing partial is ever written):
//!
//! 1. the payload is a `jail.requested` (`WRONG_COMMAND`; a reproduction goes to
//!    `Reproduce`, a first run to `CreateJail`), on the actor's own chain, naming
//!    the jail id derived from the actor and the event id (`JAIL_ID_MISMATCH`);
//! 2. the spec (inline, or a blob the actor uploaded: `READ_NOT_PERMITTED`)
//!    parses (`INVALID_SPEC`, with the JSON path of every error in the
//!    `paths` metadata) and its digest is the one the event claims
//!    (`SPEC_DIGEST_MISMATCH`); a spec with `llm` names a session and a sealed
//!    key, one without does not;
//! 3. every append check of [`amai_bus::EventStore::validate`];
//! 4. a reproduction names a jail of the actor (`JAIL_NOT_FOUND`) with the
//!    same spec (`INVALID_SPEC`).
//!
//! Every other call is a signed request (as every read) by the jail's owner or
//! an operator (`Run`, `Delete`) or a reader of `AMAI_JAILS` (the reads);
//! anyone else gets `JAIL_NOT_FOUND`, never another owner's jail.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use amai_bus::blob::BlobStore;
use amai_bus::envelope::VerifiedEvent;
use amai_bus::proto::{self, jail_service_server::JailService, payload::Kind, JailState};
use amai_bus::query::{QueryCode, JAIL_DELETE, JAIL_GET, JAIL_LIST, JAIL_RUN, LLM_SESSION};
use amai_bus::store::AppendError;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_jail_spec::JailSpec;
use amai_proto::wire::{
    DELETE_JAIL_METHOD, GET_JAIL_DIFF_METHOD, GET_JAIL_LOGS_METHOD, GET_JAIL_NETWORK_LOG_METHOD,
    GET_JAIL_STATUS_METHOD, GET_JAIL_USAGE_METHOD, LIST_JAILS_METHOD, RUN_JAIL_METHOD,
};
use futures::StreamExt;
use prost::Message;

use crate::access::Reader;
use crate::blobs::is_uploader;
use crate::status::ApiError;
use crate::Shared;

/// The stream of jail records.
pub const JAIL_STREAM: &str = "AMAI_JAILS";
/// Size of a `GetLogs` chunk.
pub const LOG_CHUNK: usize = 64 * 1024;
/// How often a waiting call looks at the jail again when no event woke it.
const POLL: Duration = Duration::from_secs(1);
/// The longest a `wait` call waits when the client set no deadline.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The `JailService` implementation.
pub struct JailSvc {
    shared: Arc<Shared>,
    blobs: BlobStore,
    uploaders: kv::Store,
}

fn is_done(jail: &proto::Jail) -> bool {
    matches!(
        JailState::try_from(jail.state),
        Ok(JailState::Finished | JailState::Failed | JailState::Deleted)
    )
}

/// How long a call may wait: a little less than the client's `grpc-timeout`
/// (so the answer, the state as it is then, arrives before the deadline), else
/// [`MAX_WAIT`].
fn wait_bound<T>(request: &Request<T>) -> Duration {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|deadline| {
            deadline.saturating_sub((deadline / 10).clamp(ANSWER_MARGIN, Duration::from_secs(5)))
        })
        .unwrap_or(MAX_WAIT)
}

/// The least time kept, before the client's deadline, to answer a wait.
const ANSWER_MARGIN: Duration = Duration::from_millis(100);

fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl JailSvc {
    pub(crate) fn new(shared: Arc<Shared>, blobs: BlobStore, uploaders: kv::Store) -> Self {
        Self {
            shared,
            blobs,
            uploaders,
        }
    }

    /// Validates and appends a `jail.requested`; answers the jail once the
    /// role's projection holds it.
    async fn request(
        &self,
        command: proto::JailCommand,
        reproduction: bool,
    ) -> Result<proto::Jail, ApiError> {
        let rpc = if reproduction {
            "Reproduce"
        } else {
            "CreateJail"
        };
        let event = command.event.ok_or_else(|| {
            ApiError::InvalidArgument(
                "event is required: the owner's signed jail.requested action".into(),
            )
        })?;
        self.shared.check_size(&event)?;
        let ev = VerifiedEvent::from_signed(event.clone()).map_err(AppendError::from)?;
        let Kind::JailRequested(request) = &ev.payload else {
            return Err(ApiError::WrongCommand(format!(
                "{rpc} takes a jail.requested event, this is {}",
                ev.event_type()
            )));
        };
        if reproduction == request.reproduces.is_empty() {
            return Err(ApiError::WrongCommand(if reproduction {
                "Reproduce takes a jail.requested naming the jail it reproduces (reproduces); use CreateJail for a new jail".into()
            } else {
                "CreateJail takes a jail.requested without `reproduces`; use Reproduce to reproduce a jail".into()
            }));
        }
        let span = tracing::Span::current();
        span.record("jail_id", request.jail_id.as_str());
        span.record("actor", ev.actor());
        let own_chain = Aggregate::agent(ev.actor()).ok();
        if own_chain.as_ref() != Some(&ev.aggregate) {
            return Err(ApiError::InvalidArgument(format!(
                "jail.requested goes on the requester's own chain agent/{}, not {}",
                ev.actor(),
                ev.aggregate
            )));
        }
        let want = amai_bus::jail::jail_id(ev.actor(), &ev.body.id);
        if request.jail_id != want {
            return Err(ApiError::JailIdMismatch {
                got: request.jail_id.clone(),
                want,
            });
        }
        // The append checks first: whoever did not sign with the actor's
        // current key learns nothing about jails or blobs.
        let already = self.shared.store.validate(&ev).await?;
        if already.is_none() {
            let spec = self.spec(ev.actor(), request).await?;
            check_llm(&spec, request)?;
            let original = if reproduction {
                Some(self.jail(&request.reproduces, None).await?)
            } else {
                None
            };
            if !request.llm_session_id.is_empty() {
                self.check_llm_session(ev.actor(), &spec, request, original.as_ref())
                    .await?;
            }
            if let Some(original) = original {
                if original.owner != ev.actor() {
                    return Err(ApiError::JailNotFound(request.reproduces.clone()));
                }
                if original.spec_sha256 != request.spec_sha256 {
                    return Err(ApiError::InvalidSpec {
                        detail: format!(
                            "a reproduction runs the same spec as jail {}: its digest is {}",
                            request.reproduces,
                            hex::encode(&original.spec_sha256)
                        ),
                        paths: Vec::new(),
                    });
                }
            }
        }
        let out = self.shared.store.append(event).await?;
        self.jail(&request.jail_id, Some(out.position.into())).await
    }

    /// The jail's LLM session must be the actor's, live, and in the mode the
    /// spec (or a reproduction: replay of the original's session) asks for.
    async fn check_llm_session(
        &self,
        actor: &str,
        spec: &JailSpec,
        request: &proto::JailRequested,
        original: Option<&proto::Jail>,
    ) -> Result<(), ApiError> {
        let req = proto::GetLlmSessionRequest {
            session_id: request.llm_session_id.clone(),
            min_position: None,
            wait_recordings: false,
        };
        let session: proto::LlmSession = match self.shared.query(LLM_SESSION, &req).await {
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => {
                return Err(ApiError::SessionNotFound(request.llm_session_id.clone()))
            }
            other => other?,
        };
        if session.owner != actor {
            return Err(ApiError::NotSessionOwner {
                actor: actor.to_string(),
                session_id: session.session_id,
            });
        }
        if session.deleted {
            return Err(ApiError::SessionDeleted(session.session_id));
        }
        let replay = session.mode == proto::LlmMode::Replay as i32;
        let wrong = match (original, &spec.llm) {
            (Some(original), _) => (!replay || session.replay_from != original.llm_session_id)
                .then(|| {
                    format!(
                        "a reproduction replays the original's session {}",
                        original.llm_session_id
                    )
                }),
            (None, Some(amai_jail_spec::LlmSpec::Create(create))) => {
                let want_replay = create.mode == amai_jail_spec::LlmMode::Replay;
                (want_replay != replay).then(|| {
                    format!(
                        "the spec creates a {} session",
                        if want_replay { "replay" } else { "record" }
                    )
                })
            }
            _ => None,
        };
        match wrong {
            Some(want) => Err(ApiError::InvalidArgument(format!(
                "llm session {} does not fit the jail: {want}",
                request.llm_session_id
            ))),
            None => Ok(()),
        }
    }

    /// The request's spec, parsed and its digest checked.
    async fn spec(
        &self,
        actor: &str,
        request: &proto::JailRequested,
    ) -> Result<JailSpec, ApiError> {
        let bytes = match (&request.spec_json[..], &request.spec_blob) {
            (inline, None) if !inline.is_empty() => inline.to_vec(),
            ([], Some(blob)) => {
                let digest: [u8; 32] = blob.sha256.as_slice().try_into().map_err(|_| {
                    ApiError::InvalidArgument(
                        "spec_blob.sha256 must be the 32-byte SHA-256 of the uploaded spec".into(),
                    )
                })?;
                if !is_uploader(&self.uploaders, &digest, actor).await? {
                    return Err(ApiError::ReadNotPermitted {
                        actor: actor.to_string(),
                        what: format!("blob {}", hex::encode(digest)),
                    });
                }
                self.blobs
                    .get(&digest)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("cannot read the spec blob: {e}")))?
            }
            _ => {
                return Err(ApiError::InvalidSpec {
                    detail: "exactly one of spec_json and spec_blob must be set".into(),
                    paths: Vec::new(),
                })
            }
        };
        let spec = JailSpec::from_json(&bytes).map_err(|errors| ApiError::InvalidSpec {
            detail: errors.to_string(),
            paths: errors.paths().into_iter().map(str::to_string).collect(),
        })?;
        let digest = spec.canonical_digest();
        if request.spec_sha256 != digest {
            return Err(ApiError::SpecDigestMismatch {
                got: hex::encode(&request.spec_sha256),
                want: hex::encode(digest),
            });
        }
        Ok(spec)
    }

    /// The jail from the role, once it has applied `min_position`.
    async fn jail(
        &self,
        jail_id: &str,
        min_position: Option<proto::Position>,
    ) -> Result<proto::Jail, ApiError> {
        jail_aggregate(jail_id)?;
        let req = proto::GetJailRequest {
            jail_id: jail_id.to_string(),
            min_position,
            wait_done: false,
        };
        match self.shared.query(JAIL_GET, &req).await {
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => {
                Err(ApiError::JailNotFound(jail_id.to_string()))
            }
            other => other,
        }
    }

    /// The jail, readable by `reader` (else not found: a stranger learns nothing).
    async fn readable(&self, reader: &Reader, jail_id: &str) -> Result<proto::Jail, ApiError> {
        let jail = self.jail(jail_id, None).await?;
        if jail.owner == reader.id || reader.reads_all_of(JAIL_STREAM) {
            Ok(jail)
        } else {
            Err(ApiError::JailNotFound(jail_id.to_string()))
        }
    }

    /// The jail, which `reader` may command (its owner or an operator).
    async fn commandable(&self, reader: &Reader, jail_id: &str) -> Result<proto::Jail, ApiError> {
        let jail = self.jail(jail_id, None).await?;
        if jail.owner == reader.id || reader.operator {
            Ok(jail)
        } else {
            Err(ApiError::JailNotFound(jail_id.to_string()))
        }
    }

    /// Waits until `done(jail)` or `bound` elapsed; answers the last state.
    /// Woken by every event stored on `jail/<id>` (a core subscription to its
    /// subject), then asks the role at the jail's new head (`min_position`),
    /// so no state is missed and nothing is polled in a tight loop; a slow
    /// poll covers a missed message.
    async fn wait_until(
        &self,
        jail_id: &str,
        bound: Duration,
        done: impl Fn(&proto::Jail) -> bool,
    ) -> Result<proto::Jail, ApiError> {
        let aggregate = jail_aggregate(jail_id)?;
        let deadline = tokio::time::Instant::now() + bound;
        let mut stored = self
            .shared
            .nats
            .subscribe(aggregate.subject())
            .await
            .map_err(|e| ApiError::Unavailable(format!("cannot watch jail {jail_id}: {e}")))?;
        let mut at = None;
        loop {
            let jail = self.jail(jail_id, at.take()).await?;
            if done(&jail) {
                return Ok(jail);
            }
            let wake = tokio::time::Instant::now() + POLL;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(jail),
                _ = stored.next() => {
                    let head = self.shared.store.chain_head(&aggregate).await.map_err(|e| {
                        ApiError::Unavailable(format!("cannot read jail {jail_id}: {e}"))
                    })?;
                    at = Some(amai_bus::Position::new(aggregate.stream(), head.stream_seq).into());
                }
                _ = tokio::time::sleep_until(wake.min(deadline)) => {}
            }
        }
    }

    async fn blob(&self, r: Option<&proto::BlobRef>) -> Result<Vec<u8>, ApiError> {
        let Some(r) = r else {
            return Ok(Vec::new());
        };
        let digest: [u8; 32] =
            r.sha256.as_slice().try_into().map_err(|_| {
                ApiError::Unavailable("a jail record names a malformed blob".into())
            })?;
        self.blobs.get(&digest).await.map_err(|e| {
            ApiError::Unavailable(format!("cannot read blob {}: {e}", hex::encode(digest)))
        })
    }

    async fn reader<T: Message>(
        &self,
        method: &str,
        request: &Request<T>,
    ) -> Result<Reader, ApiError> {
        self.shared
            .auth
            .authenticate_reader(method, request.metadata(), request.get_ref())
            .await
    }

    async fn get_status_inner(
        &self,
        request: Request<proto::GetJailRequest>,
    ) -> Result<proto::Jail, ApiError> {
        let reader = self.reader(GET_JAIL_STATUS_METHOD, &request).await?;
        let bound = wait_bound(&request);
        let req = request.into_inner();
        jail_aggregate(&req.jail_id)?;
        let jail = match self.shared.query::<_, proto::Jail>(JAIL_GET, &req).await {
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => {
                return Err(ApiError::JailNotFound(req.jail_id))
            }
            other => other?,
        };
        if jail.owner != reader.id && !reader.reads_all_of(JAIL_STREAM) {
            return Err(ApiError::JailNotFound(req.jail_id));
        }
        if req.wait_done && !is_done(&jail) {
            return self.wait_until(&req.jail_id, bound, is_done).await;
        }
        Ok(jail)
    }

    async fn finished(&self, jail: &proto::Jail) -> Result<proto::JailRunFinished, ApiError> {
        jail.finished.clone().ok_or_else(|| ApiError::JailState {
            jail_id: jail.jail_id.clone(),
            state: state_name(jail.state),
            detail: "the jail has no finished run".into(),
        })
    }

    async fn get_diff_inner(
        &self,
        request: Request<proto::GetJailDiffRequest>,
    ) -> Result<proto::JailDiff, ApiError> {
        let reader = self.reader(GET_JAIL_DIFF_METHOD, &request).await?;
        let jail = self.readable(&reader, &request.get_ref().jail_id).await?;
        let finished = self.finished(&jail).await?;
        let mut diff = if finished.diff_entries.is_some() {
            let bytes = self.blob(finished.diff_entries.as_ref()).await?;
            proto::JailDiff::decode(bytes.as_slice()).map_err(|e| {
                ApiError::Unavailable(format!("the diff entries blob does not decode: {e}"))
            })?
        } else {
            proto::JailDiff::default()
        };
        diff.diff_sha256 = finished.diff_sha256.clone();
        diff.violations = finished.violations.clone();
        diff.archive = finished.diff.clone();
        Ok(diff)
    }

    async fn get_network_log_inner(
        &self,
        request: Request<proto::GetJailNetworkLogRequest>,
    ) -> Result<proto::JailNetworkLog, ApiError> {
        let reader = self.reader(GET_JAIL_NETWORK_LOG_METHOD, &request).await?;
        let jail = self.readable(&reader, &request.get_ref().jail_id).await?;
        let finished = self.finished(&jail).await?;
        let bytes = self.blob(finished.network_log.as_ref()).await?;
        let log = if bytes.is_empty() {
            proto::JailNetworkLog::default()
        } else {
            proto::JailNetworkLog::decode(bytes.as_slice()).map_err(|e| {
                ApiError::Unavailable(format!("the network log blob does not decode: {e}"))
            })?
        };
        Ok(proto::JailNetworkLog {
            entries: log.entries,
            blob: finished.network_log,
        })
    }

    async fn get_usage_inner(
        &self,
        request: Request<proto::GetJailUsageRequest>,
    ) -> Result<proto::JailUsageReport, ApiError> {
        let reader = self.reader(GET_JAIL_USAGE_METHOD, &request).await?;
        let jail = self.readable(&reader, &request.get_ref().jail_id).await?;
        let finished = self.finished(&jail).await?;
        Ok(proto::JailUsageReport {
            limits: jail.limits,
            usage: finished.usage,
            duration_ms: finished.duration_ms,
        })
    }

    async fn list_inner(
        &self,
        request: Request<proto::ListJailsRequest>,
    ) -> Result<proto::ListJailsResponse, ApiError> {
        let reader = self.reader(LIST_JAILS_METHOD, &request).await?;
        let mut req = request.into_inner();
        req.owner = reader.listing_owner(JAIL_STREAM, &req.owner, "jails")?;
        self.shared.query(JAIL_LIST, &req).await
    }

    async fn run_inner(
        &self,
        request: Request<proto::RunJailRequest>,
    ) -> Result<proto::Jail, ApiError> {
        let reader = self.reader(RUN_JAIL_METHOD, &request).await?;
        let mut req = request.into_inner();
        self.commandable(&reader, &req.jail_id).await?;
        req.requested_by = reader.id;
        self.state_query(JAIL_RUN, &req.jail_id.clone(), &req).await
    }

    async fn delete_inner(
        &self,
        request: Request<proto::DeleteJailRequest>,
    ) -> Result<proto::Jail, ApiError> {
        let reader = self.reader(DELETE_JAIL_METHOD, &request).await?;
        let mut req = request.into_inner();
        self.commandable(&reader, &req.jail_id).await?;
        req.requested_by = reader.id;
        self.state_query(JAIL_DELETE, &req.jail_id.clone(), &req)
            .await
    }

    /// A command query whose FAILED_PRECONDITION is a jail state error.
    async fn state_query<Req: Message>(
        &self,
        subject: &str,
        jail_id: &str,
        req: &Req,
    ) -> Result<proto::Jail, ApiError> {
        match self.shared.query(subject, req).await {
            Err(ApiError::Query(e)) if e.code == QueryCode::FailedPrecondition => {
                Err(ApiError::JailState {
                    jail_id: jail_id.to_string(),
                    state: String::new(),
                    detail: e.message,
                })
            }
            other => other,
        }
    }
}

fn state_name(state: i32) -> String {
    JailState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_default()
}

/// `jail/<jail_id>`.
fn jail_aggregate(jail_id: &str) -> Result<Aggregate, ApiError> {
    if !amai_bus::jail::is_jail_id(jail_id) {
        return Err(ApiError::InvalidArgument(format!(
            "jail_id {jail_id:?} is not a jail id (32 lowercase hex characters)"
        )));
    }
    Aggregate::new(AggregateKind::Jail, jail_id)
        .map_err(|e| ApiError::InvalidArgument(format!("jail_id: {e}")))
}

/// A spec with `llm` runs with a session of the requester and a key sealed to
/// the jail service; a spec without it names neither.
fn check_llm(spec: &JailSpec, request: &proto::JailRequested) -> Result<(), ApiError> {
    match (&spec.llm, request.llm_session_id.is_empty()) {
        (Some(_), true) => Err(ApiError::InvalidArgument(
            "the spec has `llm`: the request must name the LLM session (llm_session_id) and carry its key sealed to the jail service (sealed_llm_key); `amai jail run` does both".into(),
        )),
        (Some(_), false) if request.sealed_llm_key.is_empty() => Err(ApiError::InvalidArgument(
            "sealed_llm_key is required with llm_session_id".into(),
        )),
        (None, false) => Err(ApiError::InvalidArgument(
            "the spec has no `llm`: llm_session_id must be empty".into(),
        )),
        _ => Ok(()),
    }
}

/// The `GetLogs` response stream.
pub type LogStream = ReceiverStream<Result<proto::JailLogChunk, Status>>;

#[tonic::async_trait]
impl JailService for JailSvc {
    #[tracing::instrument(skip_all, fields(jail_id, actor))]
    async fn create_jail(
        &self,
        request: Request<proto::JailCommand>,
    ) -> Result<Response<proto::Jail>, Status> {
        Ok(Response::new(
            self.request(request.into_inner(), false).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn run(
        &self,
        request: Request<proto::RunJailRequest>,
    ) -> Result<Response<proto::Jail>, Status> {
        Ok(Response::new(self.run_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn get_status(
        &self,
        request: Request<proto::GetJailRequest>,
    ) -> Result<Response<proto::Jail>, Status> {
        Ok(Response::new(self.get_status_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn get_diff(
        &self,
        request: Request<proto::GetJailDiffRequest>,
    ) -> Result<Response<proto::JailDiff>, Status> {
        Ok(Response::new(self.get_diff_inner(request).await?))
    }

    type GetLogsStream = LogStream;

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn get_logs(
        &self,
        request: Request<proto::GetJailLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        let reader = self.reader(GET_JAIL_LOGS_METHOD, &request).await?;
        let bound = wait_bound(&request);
        let req = request.into_inner();
        let mut jail = self.readable(&reader, &req.jail_id).await?;
        if req.follow && !is_done(&jail) {
            jail = self.wait_until(&req.jail_id, bound, is_done).await?;
        }
        let finished = self.finished(&jail).await?;
        let wanted = proto::JailLogStream::try_from(req.stream).unwrap_or_default();
        let mut parts = Vec::new();
        if wanted != proto::JailLogStream::Stderr {
            parts.push((
                proto::JailLogStream::Stdout,
                self.blob(finished.stdout.as_ref()).await?,
            ));
        }
        if wanted != proto::JailLogStream::Stdout {
            parts.push((
                proto::JailLogStream::Stderr,
                self.blob(finished.stderr.as_ref()).await?,
            ));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for (stream, data) in parts {
                for chunk in data.chunks(LOG_CHUNK) {
                    let item = proto::JailLogChunk {
                        stream: stream as i32,
                        data: chunk.to_vec(),
                    };
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn get_network_log(
        &self,
        request: Request<proto::GetJailNetworkLogRequest>,
    ) -> Result<Response<proto::JailNetworkLog>, Status> {
        Ok(Response::new(self.get_network_log_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn get_usage(
        &self,
        request: Request<proto::GetJailUsageRequest>,
    ) -> Result<Response<proto::JailUsageReport>, Status> {
        Ok(Response::new(self.get_usage_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(jail_id, actor))]
    async fn reproduce(
        &self,
        request: Request<proto::ReproduceJailRequest>,
    ) -> Result<Response<proto::Jail>, Status> {
        let bound = wait_bound(&request);
        let req = request.into_inner();
        let command = req.command.unwrap_or_default();
        let jail = self.request(command, true).await?;
        if !req.wait {
            return Ok(Response::new(jail));
        }
        let jail = self
            .wait_until(&jail.jail_id, bound, |j| {
                j.reproducibility.is_some()
                    || j.failed.is_some()
                    || j.state == JailState::Deleted as i32
            })
            .await?;
        Ok(Response::new(jail))
    }

    #[tracing::instrument(skip_all, fields(jail_id = %request.get_ref().jail_id))]
    async fn delete(
        &self,
        request: Request<proto::DeleteJailRequest>,
    ) -> Result<Response<proto::Jail>, Status> {
        Ok(Response::new(self.delete_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(owner = %request.get_ref().owner))]
    async fn list(
        &self,
        request: Request<proto::ListJailsRequest>,
    ) -> Result<Response<proto::ListJailsResponse>, Status> {
        Ok(Response::new(self.list_inner(request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("5Q"), None);
    }
}
