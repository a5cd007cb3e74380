//! The trust role: Amai's analyst. It folds every piece of evidence about
//! agents (their own actions, their jail runs, their LLM sessions, who
//! endorses them) into one deterministic behavioural model per identity
//! (`amai-trust`), and records each score change and anomaly as a signed
//! `trust.adjusted` / `trust.alert_raised` on `trust/<agent_id>`, citing the
//! events that caused it.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]:
//! - the trust projection ([`model`]) over the trust feed
//!   (`AMAI_TRUST_FEED`, one JetStream stream sourcing the agent, LLM, jail
//!   and lifecycle streams, so all evidence has a single order): it folds the
//!   models and plans every trust event at its exact slot;
//! - the publisher ([`publisher`]): a reactor on a shared durable consumer of
//!   the feed that appends what the fold planned;
//! - the query service `amai.query.trust.*` ([`queries`]); with a
//!   [`NarrativeConfig`], reports get an LLM narrative ([`narrative`]) from a
//!   session the trust service records through the llm role's proxy.
//!
//! Writes `trust/<agent_id>` from slot 2 on (slot 1 is the identity role's
//! `trust.initialized`). Given the same feed (and the same service key and
//! settings), any instance, or a fresh deployment, writes byte-identical
//! trust chains.

pub mod config;
pub mod evidence;
pub mod model;
pub mod narrative;
pub mod publisher;
pub mod queries;
pub mod read;

use std::sync::{Arc, Mutex, OnceLock};

use amai_bus::query;
use amai_bus::subjects::AggregateKind;
use amai_projections::Projection;

use crate::reactor::Reactor;
use crate::role::{QueryService, Role, RoleContext, RoleError};

pub use config::TrustRoleConfig;
pub use model::{AgentRecord, TrustProjection, TRUST_PROJECTION};
pub use narrative::{NarrativeConfig, NarrativeError};
pub use publisher::{TrustPublisher, PUBLISHER_DURABLE};
pub use read::TrustReadModel;

/// The role's name.
pub const NAME: &str = "trust";

/// The trust role, declared.
#[derive(Debug)]
pub struct TrustRole {
    config: TrustRoleConfig,
    /// The projection slot of the start in progress: [`Role::reactors`]
    /// creates it, [`Role::queries`] (called next by the runtime, once the
    /// projection runs) fills it.
    starting: Mutex<Option<publisher::ProjectionSlot>>,
}

impl Default for TrustRole {
    /// The role with settings from the environment ([`TrustRoleConfig::from_env`]).
    fn default() -> Self {
        Self::with_config(TrustRoleConfig::from_env())
    }
}

impl TrustRole {
    /// The role with explicit settings (tests, embedding).
    pub fn with_config(config: TrustRoleConfig) -> Self {
        Self {
            config,
            starting: Mutex::new(None),
        }
    }

    /// The settings.
    pub fn config(&self) -> &TrustRoleConfig {
        &self.config
    }
}

impl Role for TrustRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "deterministic, explainable trust scores and anomaly alerts from every stream"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Trust]
    }

    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(TrustProjection::new(self.config.model.clone()))]
    }

    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        let slot: publisher::ProjectionSlot = Arc::new(OnceLock::new());
        if let Ok(mut starting) = self.starting.lock() {
            *starting = Some(slot.clone());
        }
        vec![Arc::new(TrustPublisher {
            projection: slot,
            concurrency: self.config.concurrency,
            projection_wait: self.config.projection_wait,
        })]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let projection = ctx.projection(TRUST_PROJECTION)?;
        if let Some(slot) = self.starting.lock().ok().and_then(|mut s| s.take()) {
            let _ = slot.set(projection.clone());
        }
        let state = queries::QueryState {
            model: TrustReadModel::new(projection.tree().clone()),
            projection,
            store: ctx.store.clone(),
            cfg: self.config.model.clone(),
            timeout: ctx.min_position_timeout,
            narrator: self
                .config
                .narrative
                .clone()
                .map(|n| narrative::Narrator::new(n, ctx.store.clone(), ctx.signer.clone())),
        };
        Ok(Some(QueryService {
            name: query::TRUST_SERVICE,
            description: "amai trust scores, history, alerts, reports and explanations",
            endpoints: queries::endpoints(Arc::new(state)),
        }))
    }
}
