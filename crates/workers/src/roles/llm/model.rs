//! The llm read model: sessions, key bindings and recordings, folded from the
//! owners' session actions (`AMAI_AGENTS`) and the llm service's records
//! (`AMAI_LLM`).
//!
//! [`LlmProjection`] (name `llm`) writes; [`LlmReadModel`] answers the proxy and
//! the query service with plain reads. Keys (none starts with the runner's `0x00`):
//!
//! - `s/<session_id>`: the session (`proto::LlmSession`, without the counters and
//!   `owner_revoked`, which are joined at read time);
//! - `o/<owner>/<session_id>`: empty; lists an owner's sessions;
//! - `k/<sha256>`: the key binding (`proto::LlmKeyBinding`). A key hash binds to
//!   the first session that issued it, for ever: a second owner issuing the same
//!   hash (to have the key holder's traffic recorded in its own session) is
//!   refused;
//! - `v/<owner>`: the owner was revoked (its sessions stop answering);
//! - `c/<session_id>`: counters of the session stream (recordings, misses, last
//!   applied aggregate seq), kept apart from `s/` because the two streams are
//!   consumed independently: a recording may be applied before the action that
//!   opened its session;
//! - `r/<session_id>/<seq>`: a recording (the stored event's id + payload);
//! - `h/<session_id>/<request hash>/<occurrence>`: the seq of that recording;
//! - `m/<session_id>/<seq>`: a replay miss.
//!
//! Owner actions are judged here: the session id must be the one derived from
//! the owner and the opening event, commands must come from the session's owner
//! (they are on its own chain, signed by it), nothing happens to a deleted
//! session, and a key hash binds once. An action that breaks a rule is refused
//! (an integrity violation of kind `Rejected`) and changes nothing.

use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::AggregateKind;
use amai_projections::{AppliedEvent, ApplyError, ApplyResult, Projection};
use prost::Message;
use sled::transaction::TransactionalTree;

/// Name of the llm projection (and of its sled tree).
pub const LLM_PROJECTION: &str = "llm";
/// Version of the projection's schema.
pub const LLM_PROJECTION_VERSION: u32 = 1;
/// Largest page of [`LlmReadModel::list_sessions`].
pub const MAX_SESSIONS_PAGE: usize = 500;

type TxResult<T> = ApplyResult<T>;

fn session_key(id: &str) -> Vec<u8> {
    format!("s/{id}").into_bytes()
}
fn owner_key(owner: &str, id: &str) -> Vec<u8> {
    format!("o/{owner}/{id}").into_bytes()
}
fn binding_key(sha: &[u8]) -> Vec<u8> {
    let mut k = b"k/".to_vec();
    k.extend_from_slice(sha);
    k
}
fn revoked_owner_key(owner: &str) -> Vec<u8> {
    format!("v/{owner}").into_bytes()
}
fn counters_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}
fn recording_key(id: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("r/{id}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
fn hash_key(id: &str, hash: &[u8], occurrence: u32) -> Vec<u8> {
    let mut k = format!("h/{id}/").into_bytes();
    k.extend_from_slice(hash);
    k.extend_from_slice(&occurrence.to_be_bytes());
    k
}
fn miss_key(id: &str, seq: u64) -> Vec<u8> {
    let mut k = format!("m/{id}/").into_bytes();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Counters of a session stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Recordings applied.
    pub recordings: u64,
    /// Replay misses applied.
    pub misses: u64,
    /// The session stream's last applied aggregate seq.
    pub head_seq: u64,
}

impl SessionCounters {
    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.recordings.to_be_bytes());
        b[8..16].copy_from_slice(&self.misses.to_be_bytes());
        b[16..].copy_from_slice(&self.head_seq.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let num = |r: std::ops::Range<usize>| -> Option<u64> {
            Some(u64::from_be_bytes(b.get(r)?.try_into().ok()?))
        };
        Some(Self {
            recordings: num(0..8)?,
            misses: num(8..16)?,
            head_seq: num(16..24)?,
        })
    }
}

/// A recording as the read model keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// The session stream's aggregate seq.
    pub seq: u64,
    /// The recording event's id.
    pub event_id: String,
    /// The payload.
    pub interaction: proto::LlmInteractionRecorded,
}

/// Stored form of a [`Recording`]: the event id and the payload.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRecording {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(message, optional, tag = "2")]
    interaction: Option<proto::LlmInteractionRecorded>,
}

/// The llm projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct LlmProjection;

impl Projection for LlmProjection {
    fn name(&self) -> &'static str {
        LLM_PROJECTION
    }

    fn version(&self) -> u32 {
        LLM_PROJECTION_VERSION
    }

    fn streams(&self) -> &'static [&'static str] {
        &["AMAI_AGENTS", "AMAI_LLM"]
    }

    fn apply(&self, tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
        let event = &ev.event;
        match event.aggregate.kind {
            AggregateKind::Agent => apply_owner_action(tx, ev),
            AggregateKind::Llm => apply_session_record(tx, ev),
            _ => Ok(()),
        }
    }
}

fn load_session(tx: &TransactionalTree, id: &str) -> TxResult<Option<proto::LlmSession>> {
    match tx.get(session_key(id))? {
        None => Ok(None),
        Some(b) => proto::LlmSession::decode(b.as_ref())
            .map(Some)
            .map_err(ApplyError::corrupt),
    }
}

fn store_session(tx: &TransactionalTree, s: &proto::LlmSession) -> TxResult<()> {
    tx.insert(session_key(&s.session_id), s.encode_to_vec())?;
    Ok(())
}

/// The session `id`, which must exist, be owned by `owner` and not be deleted.
fn owned_session(tx: &TransactionalTree, id: &str, owner: &str) -> TxResult<proto::LlmSession> {
    let s = load_session(tx, id)?
        .ok_or_else(|| ApplyError::rejected(format!("no llm session {id}")))?;
    if s.owner != owner {
        return Err(ApplyError::rejected(format!(
            "llm session {id} belongs to {}, not {owner}",
            s.owner
        )));
    }
    if s.deleted {
        return Err(ApplyError::rejected(format!("llm session {id} is deleted")));
    }
    Ok(s)
}

fn bind_key(tx: &TransactionalTree, sha: &[u8], session: &str) -> TxResult<()> {
    if sha.len() != 32 {
        return Err(ApplyError::rejected(
            "a session key hash is 32 bytes (SHA-256)",
        ));
    }
    if let Some(b) = tx.get(binding_key(sha))? {
        let existing = proto::LlmKeyBinding::decode(b.as_ref()).map_err(ApplyError::corrupt)?;
        return Err(ApplyError::rejected(format!(
            "key {} is already bound to llm session {}",
            hex::encode(sha),
            existing.session_id
        )));
    }
    let binding = proto::LlmKeyBinding {
        session_id: session.to_string(),
        revoked: false,
    };
    tx.insert(binding_key(sha), binding.encode_to_vec())?;
    Ok(())
}

fn valid_mode(mode: i32) -> TxResult<()> {
    match proto::LlmMode::try_from(mode) {
        Ok(proto::LlmMode::Record | proto::LlmMode::Replay) => Ok(()),
        _ => Err(ApplyError::rejected("mode must be record or replay")),
    }
}

fn apply_owner_action(tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
    let event = &ev.event;
    let owner = event.aggregate.id.as_str();
    match &event.payload {
        Kind::AgentRevoked(_) => {
            tx.insert(revoked_owner_key(owner), &[][..])?;
        }
        Kind::LlmSessionOpened(open) => {
            let expected = amai_bus::llm::session_id(owner, &event.body.id);
            if open.session_id != expected {
                return Err(ApplyError::rejected(format!(
                    "session id {:?} is not the one derived from the owner and the event ({expected})",
                    open.session_id
                )));
            }
            if load_session(tx, &open.session_id)?.is_some() {
                return Err(ApplyError::rejected(format!(
                    "llm session {} is already open",
                    open.session_id
                )));
            }
            valid_mode(open.mode)?;
            if !open.replay_from.is_empty() {
                let source = load_session(tx, &open.replay_from)?.ok_or_else(|| {
                    ApplyError::rejected(format!("no llm session {} to replay", open.replay_from))
                })?;
                if source.owner != owner {
                    return Err(ApplyError::rejected(
                        "a session replays only sessions of the same owner",
                    ));
                }
            }
            bind_key(tx, &open.key_sha256, &open.session_id)?;
            let session = proto::LlmSession {
                session_id: open.session_id.clone(),
                owner: owner.to_string(),
                mode: open.mode,
                upstreams: open.upstreams.clone(),
                options: open.options.clone(),
                keys: vec![proto::LlmSessionKey {
                    key_sha256: open.key_sha256.clone(),
                    revoked: false,
                }],
                opened_event_id: event.body.id.clone(),
                mode_event_id: event.body.id.clone(),
                replay_from: open.replay_from.clone(),
                import: open.cassette.as_ref().map(|c| proto::LlmImport {
                    cassette: Some(c.clone()),
                    ..Default::default()
                }),
                opened_at: event.body.occurred_at,
                ..Default::default()
            };
            store_session(tx, &session)?;
            tx.insert(owner_key(owner, &session.session_id), &[][..])?;
        }
        Kind::LlmSessionModeSet(set) => {
            let mut s = owned_session(tx, &set.session_id, owner)?;
            valid_mode(set.mode)?;
            s.mode = set.mode;
            s.mode_event_id = event.body.id.clone();
            if set.options.is_some() {
                s.options = set.options.clone();
            }
            store_session(tx, &s)?;
        }
        Kind::LlmSessionKeyIssued(k) => {
            let mut s = owned_session(tx, &k.session_id, owner)?;
            bind_key(tx, &k.key_sha256, &k.session_id)?;
            s.keys.push(proto::LlmSessionKey {
                key_sha256: k.key_sha256.clone(),
                revoked: false,
            });
            store_session(tx, &s)?;
        }
        Kind::LlmSessionKeyRevoked(k) => {
            let mut s = owned_session(tx, &k.session_id, owner)?;
            let Some(entry) = s.keys.iter_mut().find(|e| e.key_sha256 == k.key_sha256) else {
                return Err(ApplyError::rejected(format!(
                    "key {} is not a key of llm session {}",
                    hex::encode(&k.key_sha256),
                    k.session_id
                )));
            };
            entry.revoked = true;
            let binding = proto::LlmKeyBinding {
                session_id: k.session_id.clone(),
                revoked: true,
            };
            tx.insert(binding_key(&k.key_sha256), binding.encode_to_vec())?;
            store_session(tx, &s)?;
        }
        Kind::LlmSessionDeleted(d) => {
            let mut s = owned_session(tx, &d.session_id, owner)?;
            s.deleted = true;
            s.deleted_reason = d.reason.clone();
            store_session(tx, &s)?;
        }
        _ => {}
    }
    Ok(())
}

fn load_counters(tx: &TransactionalTree, id: &str) -> TxResult<SessionCounters> {
    match tx.get(counters_key(id))? {
        None => Ok(SessionCounters::default()),
        Some(b) => {
            SessionCounters::decode(&b).ok_or_else(|| ApplyError::corrupt("bad session counters"))
        }
    }
}

fn apply_session_record(tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
    let event = &ev.event;
    let session = event.aggregate.id.as_str();
    let seq = event.aggregate_seq();
    let mut counters = load_counters(tx, session)?;
    match &event.payload {
        Kind::LlmInteractionRecorded(rec) => {
            if rec.session_id != session {
                return Err(ApplyError::rejected(format!(
                    "a recording of session {:?} on llm/{session}",
                    rec.session_id
                )));
            }
            let hk = hash_key(session, &rec.request_hash, rec.occurrence);
            if tx.get(&hk)?.is_some() {
                return Err(ApplyError::rejected(format!(
                    "llm/{session} already holds occurrence {} of request {}",
                    rec.occurrence,
                    hex::encode(&rec.request_hash)
                )));
            }
            tx.insert(hk, &seq.to_be_bytes()[..])?;
            let stored = StoredRecording {
                event_id: event.body.id.clone(),
                interaction: Some(rec.clone()),
            };
            tx.insert(recording_key(session, seq), stored.encode_to_vec())?;
            counters.recordings += 1;
        }
        Kind::LlmReplayMissed(miss) => {
            if miss.session_id != session {
                return Err(ApplyError::rejected(format!(
                    "a miss of session {:?} on llm/{session}",
                    miss.session_id
                )));
            }
            tx.insert(miss_key(session, seq), miss.encode_to_vec())?;
            counters.misses += 1;
        }
        _ => {}
    }
    counters.head_seq = seq;
    tx.insert(counters_key(session), &counters.encode()[..])?;
    Ok(())
}

/// Why the read model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// sled failed.
    #[error("llm read model: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value did not decode.
    #[error("llm read model is corrupt: {0}")]
    Corrupt(String),
}

/// Plain reads of the llm projection's tree.
#[derive(Clone, Debug)]
pub struct LlmReadModel {
    tree: sled::Tree,
}

impl LlmReadModel {
    /// The read model over the projection's tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ReadModelError> {
        Ok(Self {
            tree: db.open_tree(LLM_PROJECTION)?,
        })
    }

    /// The session `id` with its counters and the owner's revocation joined.
    pub fn session(&self, id: &str) -> Result<Option<proto::LlmSession>, ReadModelError> {
        let Some(b) = self.tree.get(session_key(id))? else {
            return Ok(None);
        };
        let mut s = proto::LlmSession::decode(b.as_ref())
            .map_err(|e| ReadModelError::Corrupt(e.to_string()))?;
        let c = self.counters(id)?;
        s.recordings = c.recordings;
        s.misses = c.misses;
        s.head_seq = c.head_seq;
        s.owner_revoked = self.owner_revoked(&s.owner)?;
        if let Some(import) = s.import.as_mut() {
            import.imported = c.recordings;
        }
        Ok(Some(s))
    }

    /// The counters of the session stream `id`.
    pub fn counters(&self, id: &str) -> Result<SessionCounters, ReadModelError> {
        match self.tree.get(counters_key(id))? {
            None => Ok(SessionCounters::default()),
            Some(b) => SessionCounters::decode(&b)
                .ok_or_else(|| ReadModelError::Corrupt("bad session counters".into())),
        }
    }

    /// Whether `owner` was revoked.
    pub fn owner_revoked(&self, owner: &str) -> Result<bool, ReadModelError> {
        Ok(self.tree.contains_key(revoked_owner_key(owner))?)
    }

    /// The binding of a key hash.
    pub fn key(&self, sha: &[u8]) -> Result<Option<proto::LlmKeyBinding>, ReadModelError> {
        self.tree
            .get(binding_key(sha))?
            .map(|b| {
                proto::LlmKeyBinding::decode(b.as_ref())
                    .map_err(|e| ReadModelError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    /// Sessions of `owner` (every session when `None`) with ids after `after`,
    /// at most `limit` (capped at [`MAX_SESSIONS_PAGE`]); plus the id to pass
    /// as `after` for the next page.
    pub fn list_sessions(
        &self,
        owner: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<proto::LlmSession>, Option<String>), ReadModelError> {
        let limit = limit.clamp(1, MAX_SESSIONS_PAGE);
        let prefix = match owner {
            Some(o) => format!("o/{o}/"),
            None => "s/".to_string(),
        };
        let start = format!("{prefix}{after}");
        let mut out = Vec::new();
        let mut next = None;
        for item in self.tree.range(start.as_bytes().to_vec()..) {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_bytes()) else {
                break;
            };
            let id = String::from_utf8_lossy(rest).into_owned();
            if id.as_str() <= after {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|s: &proto::LlmSession| s.session_id.clone());
                break;
            }
            if let Some(s) = self.session(&id)? {
                out.push(s);
            }
        }
        Ok((out, next))
    }

    /// The recording of `session` for (`request_hash`, `occurrence`).
    pub fn recording_for(
        &self,
        session: &str,
        request_hash: &[u8],
        occurrence: u32,
    ) -> Result<Option<Recording>, ReadModelError> {
        let Some(seq) = self.tree.get(hash_key(session, request_hash, occurrence))? else {
            return Ok(None);
        };
        let seq = u64::from_be_bytes(
            seq.as_ref()
                .try_into()
                .map_err(|_| ReadModelError::Corrupt("bad recording seq".into()))?,
        );
        self.recording(session, seq)
    }

    /// (seq, request hash) of every recording of `session`, in session order,
    /// from the hash index alone (no recording is decoded).
    pub fn recording_order(&self, session: &str) -> Result<Vec<(u64, Vec<u8>)>, ReadModelError> {
        let prefix = format!("h/{session}/").into_bytes();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let hash = k
                .get(prefix.len()..prefix.len() + 32)
                .ok_or_else(|| ReadModelError::Corrupt("bad recording index key".into()))?;
            let seq = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| ReadModelError::Corrupt("bad recording seq".into()))?;
            out.push((seq, hash.to_vec()));
        }
        out.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    /// The recording at aggregate seq `seq` of `session` (`None` for a miss or
    /// nothing).
    pub fn recording(&self, session: &str, seq: u64) -> Result<Option<Recording>, ReadModelError> {
        let Some(b) = self.tree.get(recording_key(session, seq))? else {
            return Ok(None);
        };
        let stored = StoredRecording::decode(b.as_ref())
            .map_err(|e| ReadModelError::Corrupt(e.to_string()))?;
        Ok(Some(Recording {
            seq,
            event_id: stored.event_id,
            interaction: stored.interaction.unwrap_or_default(),
        }))
    }

    /// Every recording of `session`, in session order.
    pub fn recordings(&self, session: &str) -> Result<Vec<Recording>, ReadModelError> {
        let prefix = format!("r/{session}/").into_bytes();
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let seq = k
                .get(prefix.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| ReadModelError::Corrupt("bad recording key".into()))?;
            let stored = StoredRecording::decode(v.as_ref())
                .map_err(|e| ReadModelError::Corrupt(e.to_string()))?;
            out.push(Recording {
                seq,
                event_id: stored.event_id,
                interaction: stored.interaction.unwrap_or_default(),
            });
        }
        Ok(out)
    }
}
