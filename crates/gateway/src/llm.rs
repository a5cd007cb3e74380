//! `LlmService`: LLM recording sessions, as commands and reads over the llm
//! role's projection (`amai.query.llm.*`) and the session streams.
//!
//! A command carries the owner's signed `llm.*` action for its own chain. It is
//! validated completely before anything is appended (nothing partial is ever
//! written):
//!
//! 1. the payload is the one the RPC appends (`WRONG_COMMAND`), its fields are
//!    well-formed, and an open names the session id derived from its actor and
//!    event id (`SESSION_ID_MISMATCH`);
//! 2. every append check of [`amai_bus::EventStore::validate`] (the actor's
//!    current key, its own chain, the position), so strangers learn nothing
//!    about sessions from forged events;
//! 3. the session rules, asked of the llm role: the session exists
//!    (`SESSION_NOT_FOUND`), is the actor's (`NOT_SESSION_OWNER`) and is not
//!    deleted (`SESSION_DELETED`); a key hash already bound to any session is
//!    refused (`KEY_IN_USE`: a key belongs to the first session that issued it,
//!    so nobody can bind someone else's key and record its traffic); a revoked
//!    key must be the session's (`KEY_NOT_FOUND`, `KEY_REVOKED`); an import's
//!    cassette must have been uploaded by the actor (`READ_NOT_PERMITTED`).
//!
//! Then the event is appended like `EventService.Append` (same errors), and the
//! session is answered from the projection once it has applied the append
//! (`min_position`; after a switch to replay also every recording).
//!
//! Reads are signed requests (like every read) and allowed to the session's
//! owner, operators and readers granted `AMAI_LLM` (`READ_NOT_PERMITTED`).

use std::collections::HashSet;
use std::sync::Arc;

use async_nats::jetstream::kv;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use amai_bus::blob::BlobStore;
use amai_bus::envelope::VerifiedEvent;
use amai_bus::proto::{self, llm_service_server::LlmService, payload::Kind};
use amai_bus::query::{QueryCode, LLM_KEY, LLM_SESSION, LLM_SESSIONS};
use amai_bus::store::{AppendError, ReadError, StoredEvent};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_proto::wire::{
    EXPORT_LLM_SESSION_METHOD, GET_LLM_RECORDING_METHOD, GET_LLM_SESSION_METHOD,
    LIST_LLM_RECORDINGS_METHOD, LIST_LLM_SESSIONS_METHOD,
};

use crate::access::Reader;
use crate::blobs::is_uploader;
use crate::status::ApiError;
use crate::Shared;

/// The stream of session recordings.
pub const LLM_STREAM: &str = "AMAI_LLM";
/// Default `ListRecordings` page size.
pub const DEFAULT_RECORDINGS_PAGE: u32 = 100;
/// Largest `ListRecordings` page.
pub const MAX_RECORDINGS_PAGE: u32 = 1000;
/// Export items buffered before the reads pause (flow control).
pub const EXPORT_BUFFER: usize = 16;

/// The `LlmService` implementation.
pub struct LlmSvc {
    shared: Arc<Shared>,
    blobs: BlobStore,
    uploaders: kv::Store,
}

/// The command RPCs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Create,
    Import,
    SetMode,
    IssueKey,
    RevokeKey,
    Delete,
}

impl Command {
    fn rpc(self) -> &'static str {
        match self {
            Command::Create => "CreateSession",
            Command::Import => "Import",
            Command::SetMode => "SetMode",
            Command::IssueKey => "IssueKey",
            Command::RevokeKey => "RevokeKey",
            Command::Delete => "DeleteSession",
        }
    }

    fn takes(self) -> &'static str {
        match self {
            Command::Create => "an llm.session_opened event without a cassette",
            Command::Import => "an llm.session_opened event naming a cassette blob",
            Command::SetMode => "an llm.session_mode_set event",
            Command::IssueKey => "an llm.session_key_issued event",
            Command::RevokeKey => "an llm.session_key_revoked event",
            Command::Delete => "an llm.session_deleted event",
        }
    }
}

/// What a command asks, once its payload matched its RPC.
enum Action<'a> {
    Open(&'a proto::LlmSessionOpened),
    SetMode(&'a proto::LlmSessionModeSet),
    IssueKey(&'a proto::LlmSessionKeyIssued),
    RevokeKey(&'a proto::LlmSessionKeyRevoked),
    Delete(&'a proto::LlmSessionDeleted),
}

impl Action<'_> {
    fn session_id(&self) -> &str {
        match self {
            Action::Open(o) => &o.session_id,
            Action::SetMode(m) => &m.session_id,
            Action::IssueKey(k) => &k.session_id,
            Action::RevokeKey(k) => &k.session_id,
            Action::Delete(d) => &d.session_id,
        }
    }

    /// The session must then hold every recording before it is answered.
    fn switches_to_replay(&self) -> bool {
        matches!(self, Action::SetMode(m) if m.mode == proto::LlmMode::Replay as i32)
    }
}

/// The payload of `ev` as the action `cmd` appends, with its fields checked
/// (no I/O).
fn action(cmd: Command, ev: &VerifiedEvent) -> Result<Action<'_>, ApiError> {
    let action = match (cmd, &ev.payload) {
        (Command::Create, Kind::LlmSessionOpened(o)) if o.cassette.is_none() => Action::Open(o),
        (Command::Import, Kind::LlmSessionOpened(o)) if o.cassette.is_some() => Action::Open(o),
        (Command::SetMode, Kind::LlmSessionModeSet(m)) => Action::SetMode(m),
        (Command::IssueKey, Kind::LlmSessionKeyIssued(k)) => Action::IssueKey(k),
        (Command::RevokeKey, Kind::LlmSessionKeyRevoked(k)) => Action::RevokeKey(k),
        (Command::Delete, Kind::LlmSessionDeleted(d)) => Action::Delete(d),
        (_, payload) => {
            let hint = match (cmd, payload) {
                (Command::Create, Kind::LlmSessionOpened(_)) => "; use Import to open a session from a cassette",
                (Command::Import, Kind::LlmSessionOpened(_)) => "; an import names its uploaded cassette (cassette), use CreateSession otherwise",
                _ => "",
            };
            return Err(ApiError::WrongCommand(format!(
                "{} takes {}, this is {}{hint}",
                cmd.rpc(),
                cmd.takes(),
                ev.event_type()
            )));
        }
    };
    let own_chain = Aggregate::agent(ev.actor()).ok();
    if own_chain.as_ref() != Some(&ev.aggregate) {
        return Err(ApiError::InvalidArgument(format!(
            "llm session actions go on the owner's own chain agent/{}, not {}",
            ev.actor(),
            ev.aggregate
        )));
    }
    match &action {
        Action::Open(o) => {
            let want = amai_bus::llm::session_id(ev.actor(), &ev.body.id);
            if o.session_id != want {
                return Err(ApiError::SessionIdMismatch {
                    got: o.session_id.clone(),
                    want,
                });
            }
            check_mode(o.mode)?;
            check_key(&o.key_sha256)?;
            for u in &o.upstreams {
                match proto::LlmUpstream::try_from(*u) {
                    Ok(proto::LlmUpstream::Unspecified) | Err(_) => {
                        return Err(ApiError::InvalidArgument(format!(
                            "upstream {u} is not an upstream (OPENAI or ANTHROPIC; none = every upstream)"
                        )))
                    }
                    Ok(_) => {}
                }
            }
            if let Some(options) = &o.options {
                check_options(options)?;
            }
            if let Some(cassette) = &o.cassette {
                if cassette.sha256.len() != 32 {
                    return Err(ApiError::InvalidArgument(
                        "cassette.sha256 must be the 32-byte SHA-256 of the uploaded cassette"
                            .into(),
                    ));
                }
            }
        }
        Action::SetMode(m) => {
            check_mode(m.mode)?;
            if let Some(options) = &m.options {
                check_options(options)?;
            }
        }
        Action::IssueKey(k) => check_key(&k.key_sha256)?,
        Action::RevokeKey(k) => check_key(&k.key_sha256)?,
        Action::Delete(_) => {}
    }
    if action.session_id().is_empty() {
        return Err(ApiError::InvalidArgument("session_id is required".into()));
    }
    Ok(action)
}

fn check_mode(mode: i32) -> Result<(), ApiError> {
    match proto::LlmMode::try_from(mode) {
        Ok(proto::LlmMode::Record | proto::LlmMode::Replay) => Ok(()),
        _ => Err(ApiError::InvalidArgument(format!(
            "mode {mode} is not a mode: RECORD or REPLAY"
        ))),
    }
}

fn check_key(key_sha256: &[u8]) -> Result<(), ApiError> {
    if key_sha256.len() != 32 {
        return Err(ApiError::InvalidArgument(format!(
            "key_sha256 is {} bytes; it must be the 32-byte SHA-256 of the session key (the key itself never goes in an event)",
            key_sha256.len()
        )));
    }
    Ok(())
}

fn check_options(options: &proto::LlmMatchOptions) -> Result<(), ApiError> {
    if proto::LlmReplayOrder::try_from(options.order).is_err() {
        return Err(ApiError::InvalidArgument(format!(
            "options.order {} is not STRICT or ANY",
            options.order
        )));
    }
    if proto::LlmReplayTiming::try_from(options.timing).is_err() {
        return Err(ApiError::InvalidArgument(format!(
            "options.timing {} is not INSTANT or RECORDED",
            options.timing
        )));
    }
    Ok(())
}

/// `llm/<session_id>`.
fn session_aggregate(session_id: &str) -> Result<Aggregate, ApiError> {
    Aggregate::new(AggregateKind::Llm, session_id)
        .map_err(|e| ApiError::InvalidArgument(format!("session_id: {e}")))
}

/// The blobs a session event references (request/response bodies, streamed events).
fn referenced_blobs(stored: &StoredEvent) -> Vec<[u8; 32]> {
    let Some(body) = crate::access::body_of(stored) else {
        return Vec::new();
    };
    let Some(Kind::LlmInteractionRecorded(r)) = body.payload.and_then(|p| p.kind) else {
        return Vec::new();
    };
    [
        r.request.and_then(|b| b.blob),
        r.response.and_then(|b| b.blob),
        r.events_blob,
    ]
    .into_iter()
    .flatten()
    .filter_map(|b| <[u8; 32]>::try_from(b.sha256.as_slice()).ok())
    .collect()
}

fn aggregate_seq_of(stored: &StoredEvent) -> Option<u64> {
    crate::access::body_of(stored).map(|b| b.aggregate_seq)
}

impl LlmSvc {
    pub(crate) fn new(shared: Arc<Shared>, blobs: BlobStore, uploaders: kv::Store) -> Self {
        Self {
            shared,
            blobs,
            uploaders,
        }
    }

    async fn command(
        &self,
        req: proto::LlmCommand,
        cmd: Command,
    ) -> Result<proto::LlmSession, ApiError> {
        let event = req.event.ok_or_else(|| {
            ApiError::InvalidArgument("event is required: the owner's signed llm.* action".into())
        })?;
        self.shared.check_size(&event)?;
        let ev = VerifiedEvent::from_signed(event.clone()).map_err(AppendError::from)?;
        let action = action(cmd, &ev)?;
        let span = tracing::Span::current();
        span.record("session_id", action.session_id());
        span.record("actor", ev.actor());
        // The append checks first: whoever did not sign with the actor's
        // current key learns nothing about sessions.
        let already = self.shared.store.validate(&ev).await?;
        if already.is_none() {
            self.check_rules(&ev, &action).await?;
        }
        let out = self.shared.store.append(event).await?;
        self.session(
            action.session_id(),
            Some(out.position.into()),
            action.switches_to_replay(),
        )
        .await
    }

    /// The session rules (asked of the llm role) for an event not yet appended.
    async fn check_rules(&self, ev: &VerifiedEvent, action: &Action<'_>) -> Result<(), ApiError> {
        let actor = ev.actor();
        match action {
            Action::Open(o) => {
                if !o.replay_from.is_empty() {
                    let from = self.owned_session(actor, &o.replay_from).await?;
                    tracing::debug!(replay_from = %from.session_id, "replaying another session");
                }
                self.check_key_free(&o.key_sha256).await?;
                if let Some(cassette) = &o.cassette {
                    self.check_uploader(actor, &cassette.sha256).await?;
                }
            }
            Action::SetMode(m) => {
                self.live_session(actor, &m.session_id).await?;
            }
            Action::IssueKey(k) => {
                self.live_session(actor, &k.session_id).await?;
                self.check_key_free(&k.key_sha256).await?;
            }
            Action::RevokeKey(k) => {
                let session = self.live_session(actor, &k.session_id).await?;
                match session.keys.iter().find(|s| s.key_sha256 == k.key_sha256) {
                    None => return Err(ApiError::KeyNotFound(k.session_id.clone())),
                    Some(key) if key.revoked => {
                        return Err(ApiError::KeyRevoked(k.session_id.clone()))
                    }
                    Some(_) => {}
                }
            }
            Action::Delete(d) => {
                self.live_session(actor, &d.session_id).await?;
            }
        }
        Ok(())
    }

    /// The session, which `actor` must own.
    async fn owned_session(
        &self,
        actor: &str,
        session_id: &str,
    ) -> Result<proto::LlmSession, ApiError> {
        let session = self.session(session_id, None, false).await?;
        if session.owner != actor {
            return Err(ApiError::NotSessionOwner {
                actor: actor.to_string(),
                session_id: session_id.to_string(),
            });
        }
        Ok(session)
    }

    /// The session, which `actor` must own and which must not be deleted.
    async fn live_session(
        &self,
        actor: &str,
        session_id: &str,
    ) -> Result<proto::LlmSession, ApiError> {
        let session = self.owned_session(actor, session_id).await?;
        if session.deleted {
            return Err(ApiError::SessionDeleted(session_id.to_string()));
        }
        Ok(session)
    }

    /// Refuses a key hash already bound to any session.
    async fn check_key_free(&self, key_sha256: &[u8]) -> Result<(), ApiError> {
        let lookup = proto::LlmKeyLookup {
            key_sha256: key_sha256.to_vec(),
        };
        match self
            .shared
            .query::<_, proto::LlmKeyBinding>(LLM_KEY, &lookup)
            .await
        {
            Ok(_) => Err(ApiError::KeyInUse),
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// An import names a cassette its actor uploaded (else anyone knowing a
    /// digest could import, then read, someone else's recordings).
    async fn check_uploader(&self, actor: &str, sha256: &[u8]) -> Result<(), ApiError> {
        if !is_uploader(&self.uploaders, sha256, actor).await? {
            return Err(ApiError::ReadNotPermitted {
                actor: actor.to_string(),
                what: format!("blob {}", hex::encode(sha256)),
            });
        }
        Ok(())
    }

    /// The session from the llm role, once it has applied `min_position`.
    async fn session(
        &self,
        session_id: &str,
        min_position: Option<proto::Position>,
        wait_recordings: bool,
    ) -> Result<proto::LlmSession, ApiError> {
        self.query_session(&proto::GetLlmSessionRequest {
            session_id: session_id.to_string(),
            min_position,
            wait_recordings,
        })
        .await
    }

    async fn query_session(
        &self,
        req: &proto::GetLlmSessionRequest,
    ) -> Result<proto::LlmSession, ApiError> {
        match self.shared.query(LLM_SESSION, req).await {
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => {
                Err(ApiError::SessionNotFound(req.session_id.clone()))
            }
            other => other,
        }
    }

    /// Authorises a read of a session's data: operators and readers granted
    /// `AMAI_LLM` read every session, others their own.
    fn check_read(&self, reader: &Reader, session: &proto::LlmSession) -> Result<(), ApiError> {
        if reader.reads_all_of(LLM_STREAM) || session.owner == reader.id {
            return Ok(());
        }
        Err(ApiError::ReadNotPermitted {
            actor: reader.id.clone(),
            what: format!("llm/{}", session.session_id),
        })
    }

    /// The session, readable by `reader`.
    async fn readable_session(
        &self,
        reader: &Reader,
        session_id: &str,
    ) -> Result<proto::LlmSession, ApiError> {
        session_aggregate(session_id)?;
        let session = self.session(session_id, None, false).await?;
        self.check_read(reader, &session)?;
        Ok(session)
    }

    async fn get_session_inner(
        &self,
        request: Request<proto::GetLlmSessionRequest>,
    ) -> Result<proto::LlmSession, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                GET_LLM_SESSION_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        session_aggregate(&req.session_id)?;
        let session = self.query_session(&req).await?;
        self.check_read(&reader, &session)?;
        Ok(session)
    }

    async fn list_sessions_inner(
        &self,
        request: Request<proto::ListLlmSessionsRequest>,
    ) -> Result<proto::ListLlmSessionsResponse, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                LIST_LLM_SESSIONS_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let mut req = request.into_inner();
        req.owner = reader.listing_owner(LLM_STREAM, &req.owner, "llm sessions")?;
        self.shared.query(LLM_SESSIONS, &req).await
    }

    async fn list_recordings_inner(
        &self,
        request: Request<proto::ListLlmRecordingsRequest>,
    ) -> Result<proto::ListLlmRecordingsResponse, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                LIST_LLM_RECORDINGS_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        let aggregate = session_aggregate(&req.session_id)?;
        self.readable_session(&reader, &req.session_id).await?;
        let limit = if req.limit == 0 {
            DEFAULT_RECORDINGS_PAGE
        } else {
            req.limit.min(MAX_RECORDINGS_PAGE)
        };
        let page = self
            .shared
            .store
            .read_chain_page(&aggregate, req.after_seq + 1, limit as usize, 0)
            .await?;
        Ok(proto::ListLlmRecordingsResponse {
            events: page.events.iter().map(StoredEvent::to_proto).collect(),
            next_after_seq: page.next_aggregate_seq.saturating_sub(1),
        })
    }

    async fn get_recording_inner(
        &self,
        request: Request<proto::GetLlmRecordingRequest>,
    ) -> Result<proto::StoredEvent, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                GET_LLM_RECORDING_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        let aggregate = session_aggregate(&req.session_id)?;
        if req.seq == 0 {
            return Err(ApiError::InvalidArgument(
                "seq is required: the recording's aggregate seq on llm/<session> (from 1)".into(),
            ));
        }
        self.readable_session(&reader, &req.session_id).await?;
        let page = self
            .shared
            .store
            .read_chain_page(&aggregate, req.seq, 1, 0)
            .await?;
        page.events
            .into_iter()
            .find(|e| aggregate_seq_of(e) == Some(req.seq))
            .map(|e| e.to_proto())
            .ok_or_else(|| {
                ReadError::NotFound(format!("no recording at seq {} of {aggregate}", req.seq))
                    .into()
            })
    }

    async fn export_inner(
        &self,
        request: Request<proto::ExportLlmSessionRequest>,
    ) -> Result<ReceiverStream<Result<proto::LlmExportItem, Status>>, ApiError> {
        let reader = self
            .shared
            .auth
            .authenticate_reader(
                EXPORT_LLM_SESSION_METHOD,
                request.metadata(),
                request.get_ref(),
            )
            .await?;
        let req = request.into_inner();
        let aggregate = session_aggregate(&req.session_id)?;
        let session = self.readable_session(&reader, &req.session_id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let export = Export {
            shared: self.shared.clone(),
            blobs: self.blobs.clone(),
            aggregate,
            tx,
        };
        tokio::spawn(async move {
            if let Err(e) = export.run(session).await {
                tracing::debug!(error = %e, "export ended early");
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// One running export: the session, its events in order, then the blobs they
/// reference, each read when the client is ready for it.
struct Export {
    shared: Arc<Shared>,
    blobs: BlobStore,
    aggregate: Aggregate,
    tx: tokio::sync::mpsc::Sender<Result<proto::LlmExportItem, Status>>,
}

/// Why an export stopped early.
#[derive(Debug, thiserror::Error)]
enum ExportStop {
    #[error("the client went away or the gateway is stopping")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

impl Export {
    async fn send(&self, item: proto::llm_export_item::Item) -> Result<(), ExportStop> {
        if *self.shared.stopping.borrow() {
            return Err(ExportStop::Gone);
        }
        self.tx
            .send(Ok(proto::LlmExportItem { item: Some(item) }))
            .await
            .map_err(|_| ExportStop::Gone)
    }

    async fn run(self, session: proto::LlmSession) -> Result<(), ExportStop> {
        match self.items(session).await {
            Err(ExportStop::Failed(_)) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn items(&self, session: proto::LlmSession) -> Result<(), ExportStop> {
        use proto::llm_export_item::Item;
        self.send(Item::Session(session)).await?;
        let mut seen = HashSet::new();
        let mut blobs = Vec::new();
        let (mut from, mut scan) = (1u64, 0u64);
        loop {
            let page = match self
                .shared
                .store
                .read_chain_page(
                    &self.aggregate,
                    from,
                    DEFAULT_RECORDINGS_PAGE as usize,
                    scan,
                )
                .await
            {
                Ok(p) => p,
                Err(e) => return self.fail(e.into()).await,
            };
            for stored in &page.events {
                for digest in referenced_blobs(stored) {
                    if seen.insert(digest) {
                        blobs.push(digest);
                    }
                }
                self.send(Item::Event(stored.to_proto())).await?;
            }
            if page.next_aggregate_seq == 0 {
                break;
            }
            (from, scan) = (page.next_aggregate_seq, page.next_stream_seq);
        }
        for digest in blobs {
            // Read one at a time, digest verified by the store.
            let data = match self.blobs.get(&digest).await {
                Ok(d) => d,
                Err(e) => return self.fail(e.into()).await,
            };
            self.send(Item::Blob(proto::LlmBlob {
                sha256: digest.to_vec(),
                data,
            }))
            .await?;
        }
        Ok(())
    }

    async fn fail(&self, e: ApiError) -> Result<(), ExportStop> {
        let message = e.to_string();
        let _ = self.tx.send(Err(e.into())).await;
        Err(ExportStop::Failed(message))
    }
}

/// The response stream of `Export`.
pub type ExportStream = ReceiverStream<Result<proto::LlmExportItem, Status>>;

#[tonic::async_trait]
impl LlmService for LlmSvc {
    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn create_session(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::Create).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn set_mode(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::SetMode).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn issue_key(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::IssueKey)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn revoke_key(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::RevokeKey)
                .await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn delete_session(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::Delete).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id, actor))]
    async fn import(
        &self,
        request: Request<proto::LlmCommand>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(
            self.command(request.into_inner(), Command::Import).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(session_id = %request.get_ref().session_id))]
    async fn get_session(
        &self,
        request: Request<proto::GetLlmSessionRequest>,
    ) -> Result<Response<proto::LlmSession>, Status> {
        Ok(Response::new(self.get_session_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(owner = %request.get_ref().owner))]
    async fn list_sessions(
        &self,
        request: Request<proto::ListLlmSessionsRequest>,
    ) -> Result<Response<proto::ListLlmSessionsResponse>, Status> {
        Ok(Response::new(self.list_sessions_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(session_id = %request.get_ref().session_id, after = request.get_ref().after_seq))]
    async fn list_recordings(
        &self,
        request: Request<proto::ListLlmRecordingsRequest>,
    ) -> Result<Response<proto::ListLlmRecordingsResponse>, Status> {
        Ok(Response::new(self.list_recordings_inner(request).await?))
    }

    #[tracing::instrument(skip_all, fields(session_id = %request.get_ref().session_id, seq = request.get_ref().seq))]
    async fn get_recording(
        &self,
        request: Request<proto::GetLlmRecordingRequest>,
    ) -> Result<Response<proto::StoredEvent>, Status> {
        Ok(Response::new(self.get_recording_inner(request).await?))
    }

    type ExportStream = ExportStream;

    #[tracing::instrument(skip_all, fields(session_id = %request.get_ref().session_id))]
    async fn export(
        &self,
        request: Request<proto::ExportLlmSessionRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        Ok(Response::new(self.export_inner(request).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amai_bus::envelope::EventDraft;
    use amai_bus::IdentityKeys;

    fn signed(keys: &IdentityKeys, payload: Kind, id: uuid::Uuid) -> VerifiedEvent {
        let actor = keys.identity_id();
        let agg = Aggregate::agent(&actor).expect("aggregate");
        let ev = EventDraft::new(agg, payload).id(id).sign(keys, &actor);
        VerifiedEvent::from_signed(ev).expect("verified")
    }

    fn open(keys: &IdentityKeys, id: uuid::Uuid) -> proto::LlmSessionOpened {
        proto::LlmSessionOpened {
            session_id: amai_bus::llm::session_id(&keys.identity_id(), &id.to_string()),
            mode: proto::LlmMode::Record as i32,
            key_sha256: vec![7; 32],
            ..Default::default()
        }
    }

    fn refused(cmd: Command, ev: &VerifiedEvent) -> amai_proto::wire::ErrorKind {
        let err = match action(cmd, ev) {
            Ok(_) => panic!("{cmd:?} accepted"),
            Err(e) => e,
        };
        amai_proto::wire::status_kind(&crate::status::to_status(err))
    }

    #[test]
    fn payloads_must_match_their_rpc_and_be_well_formed() {
        use amai_proto::wire::ErrorKind;
        let keys = IdentityKeys::generate();
        let id = uuid::Uuid::now_v7();
        let ev = signed(&keys, Kind::LlmSessionOpened(open(&keys, id)), id);
        assert!(action(Command::Create, &ev).is_ok());
        assert_eq!(refused(Command::Import, &ev), ErrorKind::WrongCommand);
        assert_eq!(refused(Command::SetMode, &ev), ErrorKind::WrongCommand);

        let mut forged = open(&keys, id);
        forged.session_id = "0".repeat(32);
        let ev = signed(&keys, Kind::LlmSessionOpened(forged), id);
        assert_eq!(refused(Command::Create, &ev), ErrorKind::SessionIdMismatch);

        let mut no_mode = open(&keys, id);
        no_mode.mode = proto::LlmMode::Unspecified as i32;
        let ev = signed(&keys, Kind::LlmSessionOpened(no_mode), id);
        assert_eq!(refused(Command::Create, &ev), ErrorKind::InvalidArgument);

        let mut short_key = open(&keys, id);
        short_key.key_sha256 = vec![1; 31];
        let ev = signed(&keys, Kind::LlmSessionOpened(short_key), id);
        assert_eq!(refused(Command::Create, &ev), ErrorKind::InvalidArgument);

        let ev = signed(
            &keys,
            Kind::LlmSessionKeyIssued(proto::LlmSessionKeyIssued {
                session_id: "a".repeat(32),
                key_sha256: vec![1; 32],
            }),
            id,
        );
        assert!(action(Command::IssueKey, &ev).is_ok());
        assert_eq!(refused(Command::RevokeKey, &ev), ErrorKind::WrongCommand);
    }
}
