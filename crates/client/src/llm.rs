//! LLM recording sessions: an [`Agent`] commands its own sessions with signed
//! `llm.*` actions on its chain (`LlmService`), and any signer reads the
//! sessions it may read (its own; an operator's client every session).
//!
//! Session keys are generated here ([`SessionKey`]); events carry only their
//! SHA-256, so the key is shown once to the caller and never leaves it.

use std::collections::BTreeMap;

use sha2::Digest;

use amai_bus::envelope::EventDraft;
use amai_bus::llm::session_id;
use amai_bus::proto::{self, payload::Kind, SignedEvent};

use crate::{
    Agent, AmaiClient, ClientError, EXPORT_LLM_SESSION_METHOD, GET_LLM_RECORDING_METHOD,
    GET_LLM_SESSION_METHOD, LIST_LLM_RECORDINGS_METHOD, LIST_LLM_SESSIONS_METHOD,
};

pub use amai_bus::llm::SessionKey;

/// A whole session as `Export` streams it: each event's stated hash checked
/// against its stored bytes, blobs against their digests. (Signatures are
/// checked by verifying `llm/<session>`, e.g. [`AmaiClient::verify_chain`].)
#[derive(Clone, Debug, Default)]
pub struct LlmExport {
    /// The session.
    pub session: proto::LlmSession,
    /// Every event of `llm/<session>`, in order.
    pub events: Vec<proto::StoredEvent>,
    /// The blobs the events reference, by SHA-256.
    pub blobs: BTreeMap<[u8; 32], Vec<u8>>,
}

/// Which `LlmService` command RPC carries an event.
#[derive(Clone, Copy, Debug)]
enum LlmRpc {
    Create,
    Import,
    SetMode,
    IssueKey,
    RevokeKey,
    Delete,
}

impl Agent {
    async fn llm_call(
        &self,
        rpc: LlmRpc,
        event: SignedEvent,
    ) -> Result<proto::LlmSession, tonic::Status> {
        let mut svc = self.client().llm_service();
        let req = proto::LlmCommand { event: Some(event) };
        let resp = match rpc {
            LlmRpc::Create => svc.create_session(req).await,
            LlmRpc::Import => svc.import(req).await,
            LlmRpc::SetMode => svc.set_mode(req).await,
            LlmRpc::IssueKey => svc.issue_key(req).await,
            LlmRpc::RevokeKey => svc.revoke_key(req).await,
            LlmRpc::Delete => svc.delete_session(req).await,
        };
        resp.map(tonic::Response::into_inner)
    }

    /// Signs `payload(session)` after the chain head and sends it with `rpc`,
    /// retrying like [`Agent::append_with_retry`].
    async fn llm_command<P>(
        &self,
        rpc: LlmRpc,
        payload: P,
    ) -> Result<proto::LlmSession, ClientError>
    where
        P: Fn(&str) -> Kind,
    {
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys().clone(), self.id().to_string());
        self.retry_signed(
            |seq, hash| {
                // The event id comes first: an open's session id is derived from it.
                let event_id = uuid::Uuid::now_v7();
                let session = session_id(&id, &event_id.to_string());
                EventDraft::new(aggregate.clone(), payload(&session))
                    .id(event_id)
                    .after(seq, hash)
                    .sign(&keys, &id)
            },
            |event| self.llm_call(rpc, event),
        )
        .await
    }

    /// Opens a session (mode, upstreams: empty = every upstream, options) with
    /// a new key; returns the session and the key (shown once, never sent).
    pub async fn create_llm_session(
        &self,
        mode: proto::LlmMode,
        upstreams: Vec<proto::LlmUpstream>,
        options: proto::LlmMatchOptions,
    ) -> Result<(proto::LlmSession, SessionKey), ClientError> {
        self.create_llm_session_from(mode, upstreams, options, "")
            .await
    }

    /// [`Agent::create_llm_session`] replaying the recordings of another
    /// session of this agent (`replay_from`, empty: its own).
    pub async fn create_llm_session_from(
        &self,
        mode: proto::LlmMode,
        upstreams: Vec<proto::LlmUpstream>,
        options: proto::LlmMatchOptions,
        replay_from: &str,
    ) -> Result<(proto::LlmSession, SessionKey), ClientError> {
        let key = SessionKey::generate();
        let key_sha256 = key.sha256().to_vec();
        let upstreams: Vec<i32> = upstreams.into_iter().map(|u| u as i32).collect();
        let session = self
            .llm_command(LlmRpc::Create, |session| {
                Kind::LlmSessionOpened(proto::LlmSessionOpened {
                    session_id: session.to_string(),
                    mode: mode as i32,
                    upstreams: upstreams.clone(),
                    options: Some(options.clone()),
                    key_sha256: key_sha256.clone(),
                    replay_from: replay_from.to_string(),
                    cassette: None,
                })
            })
            .await?;
        Ok((session, key))
    }

    /// Uploads a cassette and opens a replay session from it (the llm role
    /// appends its recordings); returns the session and its key.
    pub async fn import_llm_cassette(
        &self,
        cassette: Vec<u8>,
    ) -> Result<(proto::LlmSession, SessionKey), ClientError> {
        let blob = self.put_blob(cassette).await?;
        let key = SessionKey::generate();
        let key_sha256 = key.sha256().to_vec();
        let session = self
            .llm_command(LlmRpc::Import, |session| {
                Kind::LlmSessionOpened(proto::LlmSessionOpened {
                    session_id: session.to_string(),
                    mode: proto::LlmMode::Replay as i32,
                    upstreams: Vec::new(),
                    options: None,
                    key_sha256: key_sha256.clone(),
                    replay_from: String::new(),
                    cassette: Some(blob.clone()),
                })
            })
            .await?;
        Ok((session, key))
    }

    /// Switches a session's mode (and replaces its options when given). After
    /// a switch to replay the answer comes once every recording is applied.
    pub async fn set_llm_mode(
        &self,
        session_id: &str,
        mode: proto::LlmMode,
        options: Option<proto::LlmMatchOptions>,
    ) -> Result<proto::LlmSession, ClientError> {
        self.llm_command(LlmRpc::SetMode, |_| {
            Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
                session_id: session_id.to_string(),
                mode: mode as i32,
                options: options.clone(),
            })
        })
        .await
    }

    /// Issues another key for a session; returns the session and the key.
    pub async fn issue_llm_key(
        &self,
        session_id: &str,
    ) -> Result<(proto::LlmSession, SessionKey), ClientError> {
        let key = SessionKey::generate();
        let key_sha256 = key.sha256().to_vec();
        let session = self
            .llm_command(LlmRpc::IssueKey, |_| {
                Kind::LlmSessionKeyIssued(proto::LlmSessionKeyIssued {
                    session_id: session_id.to_string(),
                    key_sha256: key_sha256.clone(),
                })
            })
            .await?;
        Ok((session, key))
    }

    /// Revokes a session key by its SHA-256.
    pub async fn revoke_llm_key(
        &self,
        session_id: &str,
        key_sha256: [u8; 32],
    ) -> Result<proto::LlmSession, ClientError> {
        self.llm_command(LlmRpc::RevokeKey, |_| {
            Kind::LlmSessionKeyRevoked(proto::LlmSessionKeyRevoked {
                session_id: session_id.to_string(),
                key_sha256: key_sha256.to_vec(),
            })
        })
        .await
    }

    /// Deletes a session (a tombstone: its recordings stay, verifiable).
    pub async fn delete_llm_session(
        &self,
        session_id: &str,
        reason: &str,
    ) -> Result<proto::LlmSession, ClientError> {
        self.llm_command(LlmRpc::Delete, |_| {
            Kind::LlmSessionDeleted(proto::LlmSessionDeleted {
                session_id: session_id.to_string(),
                reason: reason.to_string(),
            })
        })
        .await
    }

    /// A session (signed read as this agent).
    pub async fn llm_session(&self, session_id: &str) -> Result<proto::LlmSession, ClientError> {
        self.client().llm_session(session_id).await
    }

    /// This agent's sessions, one page.
    pub async fn llm_sessions(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<proto::ListLlmSessionsResponse, ClientError> {
        self.client().llm_sessions("", after, limit).await
    }

    /// A page of a session's recordings.
    pub async fn llm_recordings_page(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<proto::ListLlmRecordingsResponse, ClientError> {
        self.client()
            .llm_recordings_page(session_id, after_seq, limit)
            .await
    }

    /// One recording by its seq on `llm/<session>`.
    pub async fn llm_recording(
        &self,
        session_id: &str,
        seq: u64,
    ) -> Result<proto::StoredEvent, ClientError> {
        self.client().llm_recording(session_id, seq).await
    }

    /// The whole session, collected from the `Export` stream.
    pub async fn export_llm_session(&self, session_id: &str) -> Result<LlmExport, ClientError> {
        self.client().export_llm_session(session_id).await
    }
}

impl AmaiClient {
    /// A session (signed read: its owner, an operator or a reader granted `AMAI_LLM`).
    pub async fn llm_session(&self, session_id: &str) -> Result<proto::LlmSession, ClientError> {
        let req = self
            .signed_request(
                GET_LLM_SESSION_METHOD,
                proto::GetLlmSessionRequest {
                    session_id: session_id.to_string(),
                    min_position: None,
                    wait_recordings: false,
                },
            )
            .await?;
        Ok(self.llm.clone().get_session(req).await?.into_inner())
    }

    /// One page of sessions: `owner` empty = the signer's own (every session
    /// for an operator); another owner's needs an operator.
    pub async fn llm_sessions(
        &self,
        owner: &str,
        after: &str,
        limit: u32,
    ) -> Result<proto::ListLlmSessionsResponse, ClientError> {
        let req = self
            .signed_request(
                LIST_LLM_SESSIONS_METHOD,
                proto::ListLlmSessionsRequest {
                    owner: owner.to_string(),
                    after: after.to_string(),
                    limit,
                },
            )
            .await?;
        Ok(self.llm.clone().list_sessions(req).await?.into_inner())
    }

    /// A page of a session's stream (recordings and misses) after `after_seq`.
    pub async fn llm_recordings_page(
        &self,
        session_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<proto::ListLlmRecordingsResponse, ClientError> {
        let req = self
            .signed_request(
                LIST_LLM_RECORDINGS_METHOD,
                proto::ListLlmRecordingsRequest {
                    session_id: session_id.to_string(),
                    after_seq,
                    limit,
                },
            )
            .await?;
        Ok(self.llm.clone().list_recordings(req).await?.into_inner())
    }

    /// One event of `llm/<session>` by aggregate seq.
    pub async fn llm_recording(
        &self,
        session_id: &str,
        seq: u64,
    ) -> Result<proto::StoredEvent, ClientError> {
        let req = self
            .signed_request(
                GET_LLM_RECORDING_METHOD,
                proto::GetLlmRecordingRequest {
                    session_id: session_id.to_string(),
                    seq,
                },
            )
            .await?;
        Ok(self.llm.clone().get_recording(req).await?.into_inner())
    }

    /// The whole session (`Export`), each blob checked against its digest.
    pub async fn export_llm_session(&self, session_id: &str) -> Result<LlmExport, ClientError> {
        use proto::llm_export_item::Item;
        let req = self
            .signed_request(
                EXPORT_LLM_SESSION_METHOD,
                proto::ExportLlmSessionRequest {
                    session_id: session_id.to_string(),
                },
            )
            .await?;
        let mut stream = self.llm.clone().export(req).await?.into_inner();
        let mut export = LlmExport::default();
        let mut first = true;
        while let Some(item) = stream.message().await? {
            match item.item {
                Some(Item::Session(s)) if first => export.session = s,
                Some(Item::Event(e)) if !first => {
                    let digest: [u8; 32] = sha2::Sha256::digest(&e.raw).into();
                    if e.hash.as_slice() != digest {
                        return Err(ClientError::Integrity(format!(
                            "exported event at seq {} does not hash to its stated hash",
                            e.position.as_ref().map_or(0, |p| p.seq)
                        )));
                    }
                    export.events.push(e)
                }
                Some(Item::Blob(b)) if !first => {
                    let digest: [u8; 32] = sha2::Sha256::digest(&b.data).into();
                    if b.sha256.as_slice() != digest {
                        return Err(ClientError::Integrity(format!(
                            "exported blob {} has digest {}",
                            hex::encode(&b.sha256),
                            hex::encode(digest)
                        )));
                    }
                    export.blobs.insert(digest, b.data);
                }
                _ => {
                    return Err(ClientError::Integrity(
                        "an export must start with the session, then events and blobs".into(),
                    ))
                }
            }
            first = false;
        }
        if first {
            return Err(ClientError::Integrity("the export stream was empty".into()));
        }
        Ok(export)
    }
}
