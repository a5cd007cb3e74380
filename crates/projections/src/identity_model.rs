//! The identity read model: identities (current and historical keys, metadata,
//! revocation, chain head, trust score), names, inboxes and stats.
//!
//! [`IdentityProjection`] (name `identity`) folds `AMAI_AGENTS`, `AMAI_NAMES` and
//! `AMAI_TRUST`; [`IdentityReadModel`] answers queries from the same tree with
//! plain reads (no transaction), returning protobuf types.
//!
//! Keys (all outside the runner's `0x00` prefix):
//!
//! - `id/<id>`: the identity record (folded state + genesis hash), JSON;
//! - `claim/<name>`: a `name.claimed` (agent id + genesis hash), JSON;
//! - `name/<name>`: the resolved identity id. A name resolves only once both the
//!   claim and the genesis are applied and agree: the claim's `agent_id` is the
//!   identity, its `genesis_hash` is the identity's genesis hash, and the genesis
//!   registered that name. Streams are consumed independently, so either may come
//!   first; whichever comes second resolves the name;
//! - `trust/<agent_id>`: the trust score (f64, big-endian bits), joined at query
//!   time so it does not matter whether it arrives before the genesis;
//! - `inbox/<recipient>/<AMAI_AGENTS seq>`: the encoded `proto::StoredEvent` of an
//!   `agent.message_sent` (the whole signed event, so the recipient can verify
//!   the sender's signature itself);
//! - `stat/...`: counters (big-endian u64).

use amai_bus::identity::{kind_name, IdentityState};
use amai_bus::keys::did_key;
use amai_bus::proto::{self, get_identity_request::Selector, payload::Kind, GetIdentityRequest};
use amai_bus::subjects::AggregateKind;
use amai_proto::prost_types;
use prost::Message;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::codec::{self, StoredIdentity};
use crate::projection::{AppliedEvent, ApplyError, Projection};
use crate::runner;

/// Name of the identity projection (and of its sled tree).
pub const IDENTITY_PROJECTION: &str = "identity";
/// Version of the identity projection's schema.
pub const IDENTITY_PROJECTION_VERSION: u32 = 1;
/// Default page size of [`IdentityReadModel::list_inbox`].
pub const DEFAULT_INBOX_LIMIT: u32 = 100;
/// Largest page size of [`IdentityReadModel::list_inbox`].
pub const MAX_INBOX_LIMIT: u32 = 1000;

/// The page size a requested inbox `limit` means: 0 is [`DEFAULT_INBOX_LIMIT`],
/// anything is capped at [`MAX_INBOX_LIMIT`].
pub fn inbox_limit(limit: u32) -> usize {
    let n = match limit {
        0 => DEFAULT_INBOX_LIMIT,
        n => n.min(MAX_INBOX_LIMIT),
    };
    n as usize
}

const STAT_IDENTITIES: &[u8] = b"stat/identities";
const STAT_EVENTS: &[u8] = b"stat/events";
const STAT_MESSAGES: &[u8] = b"stat/messages";
const STAT_REVOKED: &[u8] = b"stat/revoked";
const STAT_KIND_PREFIX: &[u8] = b"stat/kind/";

fn id_key(id: &str) -> Vec<u8> {
    codec::key(&[b"id/", id.as_bytes()])
}
fn claim_key(name: &str) -> Vec<u8> {
    codec::key(&[b"claim/", name.as_bytes()])
}
fn name_key(name: &str) -> Vec<u8> {
    codec::key(&[b"name/", name.as_bytes()])
}
fn trust_key(id: &str) -> Vec<u8> {
    codec::key(&[b"trust/", id.as_bytes()])
}
fn inbox_prefix(id: &str) -> Vec<u8> {
    codec::key(&[b"inbox/", id.as_bytes(), b"/"])
}
fn inbox_key(id: &str, seq: u64) -> Vec<u8> {
    codec::key(&[&inbox_prefix(id), &codec::u64_bytes(seq)])
}

#[derive(Serialize, Deserialize)]
struct IdentityRecord {
    identity: StoredIdentity,
    genesis_hash: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct ClaimRecord {
    agent_id: String,
    genesis_hash: Vec<u8>,
}

fn incr(
    tx: &TransactionalTree,
    key: &[u8],
) -> Result<(), ConflictableTransactionError<ApplyError>> {
    let n = codec::read_u64(tx.get(key)?.as_deref());
    tx.insert(key, &codec::u64_bytes(n + 1))?;
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Invariant: the records are plain data (strings, integers, byte arrays,
    // string-keyed maps) and always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The identity projection. Stateless: everything lives in its tree.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityProjection;

impl IdentityProjection {
    /// Sets `name/<name>` when the claim and the genesis agree.
    fn resolve_name(
        tx: &TransactionalTree,
        name: &str,
    ) -> Result<(), ConflictableTransactionError<ApplyError>> {
        let Some(claim) = tx.get(claim_key(name))? else {
            return Ok(());
        };
        let claim: ClaimRecord = serde_json::from_slice(&claim).map_err(ApplyError::corrupt)?;
        let Some(rec) = tx.get(id_key(&claim.agent_id))? else {
            return Ok(());
        };
        let rec: IdentityRecord = serde_json::from_slice(&rec).map_err(ApplyError::corrupt)?;
        let state = rec.identity.to_state().map_err(ApplyError::corrupt)?;
        if claim.genesis_hash == rec.genesis_hash && state.name == name {
            tx.insert(name_key(name), claim.agent_id.as_bytes())?;
        }
        Ok(())
    }
}

impl Projection for IdentityProjection {
    fn name(&self) -> &'static str {
        IDENTITY_PROJECTION
    }

    fn version(&self) -> u32 {
        IDENTITY_PROJECTION_VERSION
    }

    fn streams(&self) -> &'static [&'static str] {
        &["AMAI_AGENTS", "AMAI_NAMES", "AMAI_TRUST"]
    }

    fn apply(
        &self,
        tx: &TransactionalTree,
        ev: &AppliedEvent,
    ) -> Result<(), ConflictableTransactionError<ApplyError>> {
        let event = &ev.event;
        if event.aggregate.kind == AggregateKind::Agent {
            let Some(state) = &ev.identity else {
                return Err(ConflictableTransactionError::Abort(ApplyError::Rejected(
                    format!("{} carries no identity state", event.aggregate),
                )));
            };
            let id = &event.aggregate.id;
            let genesis_hash = if event.aggregate_seq() == 1 {
                event.hash
            } else {
                let rec = tx.get(id_key(id))?.ok_or_else(|| {
                    ApplyError::corrupt(format!("identity {id} has events but no record"))
                })?;
                serde_json::from_slice::<IdentityRecord>(&rec)
                    .map_err(ApplyError::corrupt)?
                    .genesis_hash
            };
            tx.insert(
                id_key(id),
                to_json(&IdentityRecord {
                    identity: StoredIdentity::from_state(state),
                    genesis_hash,
                }),
            )?;
            match &event.payload {
                Kind::AgentRegistered(reg) => {
                    incr(tx, STAT_IDENTITIES)?;
                    incr(
                        tx,
                        &codec::key(&[STAT_KIND_PREFIX, kind_name(state.kind).as_bytes()]),
                    )?;
                    Self::resolve_name(tx, &reg.name)?;
                }
                Kind::AgentRevoked(_) => incr(tx, STAT_REVOKED)?,
                Kind::AgentMessageSent(m) => {
                    tx.insert(
                        inbox_key(&m.to, ev.stored.position.seq),
                        ev.stored.to_proto().encode_to_vec(),
                    )?;
                    incr(tx, STAT_MESSAGES)?;
                }
                _ => {}
            }
        } else {
            match &event.payload {
                Kind::NameClaimed(c) => {
                    tx.insert(
                        claim_key(&c.name),
                        to_json(&ClaimRecord {
                            agent_id: c.agent_id.clone(),
                            genesis_hash: c.genesis_hash.clone(),
                        }),
                    )?;
                    Self::resolve_name(tx, &c.name)?;
                }
                Kind::TrustInitialized(t) => {
                    if t.agent_id != event.aggregate.id {
                        return Err(ConflictableTransactionError::Abort(ApplyError::Rejected(
                            format!(
                                "trust.initialized for {} on {}",
                                t.agent_id, event.aggregate
                            ),
                        )));
                    }
                    tx.insert(trust_key(&t.agent_id), &t.score.to_bits().to_be_bytes())?;
                }
                _ => {}
            }
        }
        incr(tx, STAT_EVENTS)
    }
}

/// Failures of read-model queries.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// sled failed.
    #[error("read model storage: {0}")]
    Storage(#[from] sled::Error),
    /// Stored data could not be decoded.
    #[error("corrupt read model: {0}")]
    Corrupt(String),
}

impl From<runner::ProjectionError> for ReadModelError {
    fn from(e: runner::ProjectionError) -> Self {
        match e {
            runner::ProjectionError::Storage(e) => ReadModelError::Storage(e),
            runner::ProjectionError::Corrupt(m) => ReadModelError::Corrupt(m),
        }
    }
}

/// Queries over the identity projection's tree. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IdentityReadModel {
    tree: sled::Tree,
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

impl IdentityReadModel {
    /// A read model over the `identity` tree of `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ReadModelError> {
        Ok(Self {
            tree: db.open_tree(IDENTITY_PROJECTION)?,
        })
    }

    /// A read model over an already opened tree (e.g. [`crate::ProjectionHandle::tree`]).
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    /// The identity id a selector names, if known (a name only once resolved).
    pub fn resolve(&self, req: &GetIdentityRequest) -> Result<Option<String>, ReadModelError> {
        match &req.selector {
            Some(Selector::Id(id)) if !id.is_empty() => Ok(Some(id.clone())),
            Some(Selector::Name(name)) if !name.is_empty() => self.resolve_name(name),
            _ => Err(ReadModelError::Invalid(
                "GetIdentityRequest needs a non-empty id or name".into(),
            )),
        }
    }

    /// The identity a name resolves to.
    pub fn resolve_name(&self, name: &str) -> Result<Option<String>, ReadModelError> {
        self.tree
            .get(name_key(name))?
            .map(|v| {
                String::from_utf8(v.to_vec()).map_err(|e| ReadModelError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    fn record(&self, id: &str) -> Result<Option<(IdentityState, [u8; 32])>, ReadModelError> {
        let Some(bytes) = self.tree.get(id_key(id))? else {
            return Ok(None);
        };
        let rec: IdentityRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ReadModelError::Corrupt(format!("identity {id}: {e}")))?;
        let state = rec.identity.to_state().map_err(ReadModelError::Corrupt)?;
        Ok(Some((state, rec.genesis_hash)))
    }

    /// The folded, verified state of an identity (key history with publish times).
    pub fn identity_state(&self, id: &str) -> Result<Option<IdentityState>, ReadModelError> {
        Ok(self.record(id)?.map(|(s, _)| s))
    }

    /// The hash of an identity's genesis event.
    pub fn genesis_hash(&self, id: &str) -> Result<Option<[u8; 32]>, ReadModelError> {
        Ok(self.record(id)?.map(|(_, h)| h))
    }

    /// The trust score of an agent, once the trust service initialised it.
    pub fn trust_score(&self, id: &str) -> Result<Option<f64>, ReadModelError> {
        Ok(self
            .tree
            .get(trust_key(id))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(|b| f64::from_bits(u64::from_be_bytes(b))))
    }

    /// An identity by id or name. `did` is the `did:key` of the genesis key (the
    /// key the id is derived from; stable across rotations).
    pub fn get_identity(
        &self,
        req: &GetIdentityRequest,
    ) -> Result<Option<proto::Identity>, ReadModelError> {
        let Some(id) = self.resolve(req)? else {
            return Ok(None);
        };
        let Some((s, _)) = self.record(&id)? else {
            return Ok(None);
        };
        let current = s.current_key();
        // Invariant: a decoded state has at least one key (`to_state` checks it).
        Ok(Some(proto::Identity {
            id: s.id.clone(),
            name: s.name.clone(),
            kind: s.kind as i32,
            signing_key: current.signing_key.to_bytes().to_vec(),
            x25519_key: current.x25519_key.to_vec(),
            did: did_key(&s.keys[0].signing_key),
            metadata: s.metadata.clone(),
            revoked: s.revoked.is_some(),
            revoked_reason: s
                .revoked
                .as_ref()
                .map(|(_, _, r)| r.clone())
                .unwrap_or_default(),
            chain_length: s.head_seq,
            trust_score: self.trust_score(&s.id)?,
            registered_at: Some(timestamp(s.registered_at)),
            head_hash: s.head_hash.to_vec(),
        }))
    }

    /// An identity's current keys and full key history.
    pub fn get_keys(
        &self,
        req: &GetIdentityRequest,
    ) -> Result<Option<proto::Keys>, ReadModelError> {
        let Some(id) = self.resolve(req)? else {
            return Ok(None);
        };
        let Some((s, _)) = self.record(&id)? else {
            return Ok(None);
        };
        let current = s.current_key();
        Ok(Some(proto::Keys {
            id: s.id.clone(),
            signing_key: current.signing_key.to_bytes().to_vec(),
            x25519_key: current.x25519_key.to_vec(),
            did: did_key(&s.keys[0].signing_key),
            revoked: s.revoked.is_some(),
            history: s
                .keys
                .iter()
                .map(|k| proto::KeyRecord {
                    signing_key: k.signing_key.to_bytes().to_vec(),
                    x25519_key: k.x25519_key.to_vec(),
                    from_aggregate_seq: k.from_seq,
                    until_aggregate_seq: k.until_seq.unwrap_or(0),
                })
                .collect(),
        }))
    }

    /// Messages sent to `agent_id` with AMAI_AGENTS sequence `> after_seq`, oldest
    /// first; `limit` 0 means [`DEFAULT_INBOX_LIMIT`], capped at [`MAX_INBOX_LIMIT`].
    /// Callers must authenticate the recipient first.
    pub fn list_inbox(
        &self,
        agent_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<proto::StoredEvent>, ReadModelError> {
        self.inbox_after(agent_id, after_seq)
            .take(inbox_limit(limit))
            .collect()
    }

    /// Every message addressed to `agent_id` after stream sequence `after_seq`,
    /// oldest first, read lazily (callers bound the page by count and bytes).
    /// Callers must authenticate the recipient first.
    pub fn inbox_after<'a>(
        &'a self,
        agent_id: &str,
        after_seq: u64,
    ) -> impl Iterator<Item = Result<proto::StoredEvent, ReadModelError>> + 'a {
        let prefix = inbox_prefix(agent_id);
        let start = inbox_key(agent_id, after_seq.saturating_add(1));
        self.tree
            .range(start..)
            .take_while(move |item| match item {
                Ok((k, _)) => k.starts_with(&prefix),
                Err(_) => true,
            })
            .map(|item| {
                let (_, v) = item?;
                proto::StoredEvent::decode(v.as_ref())
                    .map_err(|e| ReadModelError::Corrupt(format!("inbox entry: {e}")))
            })
    }

    /// Counters: identities, applied events, messages, identities per kind,
    /// revoked identities, integrity violations.
    pub fn stats(&self) -> Result<proto::Stats, ReadModelError> {
        let get = |k: &[u8]| -> Result<u64, ReadModelError> {
            Ok(codec::read_u64(self.tree.get(k)?.as_deref()))
        };
        let mut per_kind = std::collections::BTreeMap::new();
        for kind in ["agent", "operator", "service"] {
            per_kind.insert(
                kind.to_string(),
                get(&codec::key(&[STAT_KIND_PREFIX, kind.as_bytes()]))?,
            );
        }
        Ok(proto::Stats {
            identities: get(STAT_IDENTITIES)?,
            events: get(STAT_EVENTS)?,
            messages: get(STAT_MESSAGES)?,
            per_kind,
            revoked: get(STAT_REVOKED)?,
            integrity_violations: runner::violation_count(&self.tree)?,
        })
    }
}
