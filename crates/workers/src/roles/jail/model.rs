//! The jail read model: every jail, folded from the requesters' `jail.requested`
//! actions (`AMAI_AGENTS`) and the jail service's records (`AMAI_JAILS`).
//!
//! [`JailProjection`] (name `jail`) writes; [`JailReadModel`] answers the query
//! service and the runner with plain reads. Keys:
//!
//! - `j/<jail_id>`: the jail (`proto::Jail`);
//! - `o/<owner>/<jail_id>`: empty; lists an owner's jails.
//!
//! States: QUEUED from the request until the run starts when the run follows
//! creation (the request, then a free run slot, are awaited), or from a
//! `jail.run_queued`; CREATED for a jail created without a run; RUNNING,
//! FINISHED, FAILED; DELETED whatever comes after.
//!
//! A `jail.requested` whose jail id is not the one derived from the requester
//! and the event ([`amai_bus::jail::jail_id`]) is refused (an integrity
//! violation of kind `Rejected`) and changes nothing, so nobody can create a
//! jail under an id of someone else's choosing. Service records for a jail
//! nobody requested are refused the same way.

use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::AggregateKind;
use amai_projections::{AppliedEvent, ApplyError, ApplyResult, Projection};
use prost::Message;
use sled::transaction::TransactionalTree;

/// Name of the jail projection (and of its sled tree).
pub const JAIL_PROJECTION: &str = "jail";
/// Version of the projection's schema.
pub const JAIL_PROJECTION_VERSION: u32 = 1;
/// Largest page of [`JailReadModel::list`].
pub const MAX_JAILS_PAGE: usize = 500;

type TxResult<T> = ApplyResult<T>;

fn jail_key(id: &str) -> Vec<u8> {
    format!("j/{id}").into_bytes()
}

fn owner_key(owner: &str, id: &str) -> Vec<u8> {
    format!("o/{owner}/{id}").into_bytes()
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The jail projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct JailProjection;

impl Projection for JailProjection {
    fn name(&self) -> &'static str {
        JAIL_PROJECTION
    }

    fn version(&self) -> u32 {
        JAIL_PROJECTION_VERSION
    }

    fn streams(&self) -> &'static [&'static str] {
        &["AMAI_AGENTS", "AMAI_JAILS"]
    }

    fn apply(&self, tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
        match ev.event.aggregate.kind {
            AggregateKind::Agent => apply_request(tx, ev),
            AggregateKind::Jail => apply_record(tx, ev),
            _ => Ok(()),
        }
    }
}

fn load(tx: &TransactionalTree, id: &str) -> TxResult<Option<proto::Jail>> {
    match tx.get(jail_key(id))? {
        None => Ok(None),
        Some(b) => proto::Jail::decode(b.as_ref())
            .map(Some)
            .map_err(ApplyError::corrupt),
    }
}

fn store(tx: &TransactionalTree, jail: &proto::Jail) -> TxResult<()> {
    tx.insert(jail_key(&jail.jail_id), jail.encode_to_vec())?;
    Ok(())
}

fn apply_request(tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
    let event = &ev.event;
    let Kind::JailRequested(request) = &event.payload else {
        return Ok(());
    };
    let owner = event.aggregate.id.as_str();
    let expected = amai_bus::jail::jail_id(owner, &event.body.id);
    if request.jail_id != expected {
        return Err(ApplyError::rejected(format!(
            "jail id {:?} is not the one derived from the requester and the event ({expected})",
            request.jail_id
        )));
    }
    if load(tx, &request.jail_id)?.is_some() {
        return Err(ApplyError::rejected(format!(
            "jail {} already exists",
            request.jail_id
        )));
    }
    let jail = proto::Jail {
        jail_id: request.jail_id.clone(),
        owner: owner.to_string(),
        state: proto::JailState::Queued as i32,
        spec_json: request.spec_json.clone(),
        spec_sha256: request.spec_sha256.clone(),
        llm_session_id: request.llm_session_id.clone(),
        reproduces: request.reproduces.clone(),
        requested_event_id: event.body.id.clone(),
        requested_at: Some(timestamp(ev.published_ms())),
        ..Default::default()
    };
    store(tx, &jail)?;
    tx.insert(owner_key(owner, &jail.jail_id), &[][..])?;
    Ok(())
}

fn apply_record(tx: &TransactionalTree, ev: &AppliedEvent) -> TxResult<()> {
    let event = &ev.event;
    let id = event.aggregate.id.as_str();
    let Some(mut jail) = load(tx, id)? else {
        return Err(ApplyError::rejected(format!(
            "jail {id} was never requested; its records are ignored"
        )));
    };
    let now = Some(timestamp(ev.published_ms()));
    let state = |s: proto::JailState| s as i32;
    match &event.payload {
        Kind::JailCreated(created) => {
            jail.image_id = created.image_id.clone();
            if !created.llm_session_id.is_empty() {
                jail.llm_session_id = created.llm_session_id.clone();
            }
            // Waiting for a run slot (the run follows creation), or created.
            if jail.state == state(proto::JailState::Queued) && !created.run {
                jail.state = state(proto::JailState::Created);
            }
        }
        Kind::JailRunQueued(_) if jail.state == state(proto::JailState::Created) => {
            jail.state = state(proto::JailState::Queued);
        }
        Kind::JailRunStarted(started) => {
            jail.started_at = now;
            jail.limits = started.limits;
            jail.container_id = started.container_id.clone();
            if jail.state != state(proto::JailState::Deleted) {
                jail.state = state(proto::JailState::Running);
            }
        }
        Kind::JailRunFinished(finished) => {
            jail.finished_at = now;
            jail.finished = Some(finished.clone());
            if jail.state != state(proto::JailState::Deleted) {
                jail.state = state(proto::JailState::Finished);
            }
        }
        Kind::JailRunFailed(failed) => {
            jail.finished_at = now;
            jail.failed = Some(failed.clone());
            if jail.state != state(proto::JailState::Deleted) {
                jail.state = state(proto::JailState::Failed);
            }
        }
        Kind::JailReproducibilityChecked(checked) => {
            jail.reproducibility = Some(checked.clone());
        }
        Kind::JailDeleted(deleted) => {
            jail.state = state(proto::JailState::Deleted);
            jail.deleted_reason = deleted.reason.clone();
        }
        _ => {}
    }
    jail.head_seq = event.body.aggregate_seq;
    store(tx, &jail)
}

/// Why the read model could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// sled failed.
    #[error("jail read model: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value did not decode.
    #[error("jail read model is corrupt: {0}")]
    Corrupt(String),
}

/// Plain reads of the jail projection's tree.
#[derive(Clone, Debug)]
pub struct JailReadModel {
    tree: sled::Tree,
}

impl JailReadModel {
    /// The read model over the projection's tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, ReadModelError> {
        Ok(Self {
            tree: db.open_tree(JAIL_PROJECTION)?,
        })
    }

    /// The jail `id`.
    pub fn jail(&self, id: &str) -> Result<Option<proto::Jail>, ReadModelError> {
        self.tree
            .get(jail_key(id))?
            .map(|b| {
                proto::Jail::decode(b.as_ref()).map_err(|e| ReadModelError::Corrupt(e.to_string()))
            })
            .transpose()
    }

    /// Jails of `owner` (every jail when `None`) with ids after `after`, at
    /// most `limit` (capped at [`MAX_JAILS_PAGE`]), deleted ones only when
    /// asked; plus the id to pass as `after` for the next page.
    pub fn list(
        &self,
        owner: Option<&str>,
        after: &str,
        limit: usize,
        include_deleted: bool,
    ) -> Result<(Vec<proto::Jail>, Option<String>), ReadModelError> {
        let limit = limit.clamp(1, MAX_JAILS_PAGE);
        let prefix = match owner {
            Some(o) => format!("o/{o}/"),
            None => "j/".to_string(),
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
            let Some(jail) = self.jail(&id)? else {
                continue;
            };
            if !include_deleted && jail.state == proto::JailState::Deleted as i32 {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|j: &proto::Jail| j.jail_id.clone());
                break;
            }
            out.push(jail);
        }
        Ok((out, next))
    }
}
