//! The audit role: makes Amai's history verifiable the way
//! certificate-transparency logs are. For every stream it keeps an RFC 9162
//! Merkle tree (leaf `i` = the event hash of the message at stream sequence
//! `i + 1`), and appends signed checkpoints of it on `audit/<stream>`
//! (`amai.audit.<stream>`, AMAI_AUDIT): every N events, every T seconds when
//! the tree grew, and on demand. A checkpoint is a C2SP signed note
//! (tlog-checkpoint) that transparency-log tooling and witnesses read as it
//! is; the note's signature is also in the event.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]:
//! - background tasks ([`Role::tasks`]): one tree builder per stream
//!   ([`builder`]), one checkpointer per stream ([`checkpointer`]) and the
//!   checkpoint index ([`index`], a replay of AMAI_AUDIT);
//! - the query service `amai.query.audit.*` ([`queries`]): checkpoints,
//!   inclusion and consistency proofs from stored nodes, status.
//!
//! Every instance builds the same trees from the same streams; any instance
//! may append the next checkpoint (the chain's optimistic concurrency orders
//! them, sizes only grow). An instance never signs a checkpoint inconsistent
//! with the latest one on the chain: if its tree disagrees (the stream was
//! rewritten under it), it refuses, logs an error and reports the stream as
//! diverged in `status`.

pub mod builder;
pub mod checkpointer;
pub mod config;
pub mod index;
pub mod queries;
pub mod tree;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use amai_bus::query;
use amai_bus::subjects::AggregateKind;

use crate::role::{QueryService, Role, RoleContext, RoleError, Task};

pub use config::AuditRoleConfig;
pub use tree::{StreamTree, TreeError};

/// The role's name.
pub const NAME: &str = "audit";

/// The audit role, declared.
#[derive(Debug)]
pub struct AuditRole {
    config: AuditRoleConfig,
    /// The state built by [`Role::queries`] for [`Role::tasks`] (the runtime
    /// calls them in that order during one start).
    starting: Mutex<Option<Arc<checkpointer::AuditLog>>>,
}

impl Default for AuditRole {
    /// The role with settings from the environment ([`AuditRoleConfig::from_env`]).
    fn default() -> Self {
        Self::with_config(AuditRoleConfig::from_env())
    }
}

impl AuditRole {
    /// The role with explicit settings (tests, embedding).
    pub fn with_config(config: AuditRoleConfig) -> Self {
        Self {
            config,
            starting: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn config(&self) -> &AuditRoleConfig {
        &self.config
    }
}

/// The origin (C2SP origin line and log key name) of a stream's checkpoints
/// in a deployment: `amai/<deployment>/<stream>`.
pub fn origin(deployment: &str, stream: &str) -> String {
    format!("amai/{deployment}/{stream}")
}

impl Role for AuditRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "Merkle trees of every stream, signed C2SP checkpoints, inclusion and consistency proofs"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Audit]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let storage = |e: &dyn std::fmt::Display| RoleError::Storage {
            role: NAME.to_string(),
            path: "sled".to_string(),
            detail: e.to_string(),
        };
        let deployment = crate::role::PreflightContext {
            trust_root: ctx.store.config().get_trust_root().copied(),
        }
        .deployment();
        let mut streams = BTreeMap::new();
        for stream in self.config.streams() {
            let tree = StreamTree::open(&ctx.db, &stream).map_err(|e| storage(&e))?;
            let log = checkpointer::StreamLog::new(tree, origin(&deployment, &stream))
                .map_err(|e| storage(&e))?;
            streams.insert(stream, log);
        }
        let index = index::CheckpointIndex::open(&ctx.db).map_err(|e| storage(&e))?;
        let log = Arc::new(checkpointer::AuditLog {
            store: ctx.store.clone(),
            signer: ctx.signer.clone(),
            streams,
            index,
            config: self.config.clone(),
        });
        if let Ok(mut starting) = self.starting.lock() {
            *starting = Some(log.clone());
        }
        Ok(Some(QueryService {
            name: query::AUDIT_SERVICE,
            description: "amai audit checkpoints and RFC 9162 proofs",
            endpoints: queries::endpoints(log),
        }))
    }

    fn tasks(&self, ctx: &RoleContext) -> Result<Vec<Task>, RoleError> {
        let log = self
            .starting
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| RoleError::Declaration {
                role: NAME.to_string(),
                detail: "tasks were asked for before the query service was built".into(),
            })?;
        let mut tasks = Vec::new();
        for stream in log.streams.keys() {
            tasks.push(builder::task(
                log.clone(),
                stream.clone(),
                ctx.store.clone(),
            ));
            tasks.push(checkpointer::task(log.clone(), stream.clone()));
        }
        tasks.push(index::task(log.clone(), ctx.store.clone()));
        Ok(tasks)
    }
}
