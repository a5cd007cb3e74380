//! The jail role: runs untrusted agents' commands in hardened Docker
//! containers (through `amai-jail`) and records what each run did as signed
//! events on `jail/<jail_id>`.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]:
//! - a preflight ([`Role::preflight`]): the Docker Engine must answer and
//!   enforce the limits (else the role is unavailable, and says why), and what
//!   a killed instance left on it is removed (orphan reconciliation);
//! - the jail projection ([`model`]);
//! - the request reactor ([`create`]): `jail.requested` → `jail.created`;
//! - the run reactor ([`runner`]): runs created jails, up to
//!   [`JailConfig::parallel`] at once, the rest queued in the stream;
//! - the query service `amai.query.jail.*` ([`queries`]).
//!
//! Writes `jail/<jail_id>` only. One jail instance per Docker Engine: at start
//! an instance removes every container Amai manages on its engine.

pub mod config;
pub mod create;
pub mod engine;
pub mod model;
pub mod queries;
pub mod runner;

use std::sync::{Arc, OnceLock};

use amai_bus::query;
use amai_bus::subjects::AggregateKind;
use amai_projections::Projection;

use crate::reactor::Reactor;
use crate::role::{PreflightContext, PreflightFuture, QueryService, Role, RoleContext, RoleError};

pub use config::JailConfig;
pub use engine::EngineSlot;
pub use model::{JailProjection, JailReadModel, JAIL_PROJECTION};

/// The role's name.
pub const NAME: &str = "jail";

/// The jail role, declared.
#[derive(Clone)]
pub struct JailRole {
    engine: EngineSlot,
    signer: Arc<runner::OnceSigner>,
    runs: runner::JailRuns,
}

impl Default for JailRole {
    /// The role with settings from the environment ([`JailConfig::from_env`]).
    fn default() -> Self {
        Self::with_config(JailConfig::from_env())
    }
}

impl std::fmt::Debug for JailRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailRole")
            .field("engine_connected", &self.engine.get().is_some())
            .finish_non_exhaustive()
    }
}

impl JailRole {
    /// The role with explicit settings (tests, embedding).
    pub fn with_config(config: JailConfig) -> Self {
        let engine: EngineSlot = Arc::new(OnceLock::new());
        let signer = Arc::new(OnceLock::new());
        let runs = runner::JailRuns::new(engine.clone(), signer.clone(), config);
        Self {
            engine,
            signer,
            runs,
        }
    }
}

fn component(what: &str, e: impl std::fmt::Display) -> RoleError {
    RoleError::Component {
        role: NAME.to_string(),
        component: what.to_string(),
        detail: e.to_string(),
    }
}

impl Role for JailRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "runs agents in hardened Docker containers and records what they did"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Jail]
    }

    fn preflight<'a>(&'a self, ctx: &'a PreflightContext) -> PreflightFuture<'a> {
        Box::pin(async move {
            let unavailable = |reason: String| RoleError::Unavailable {
                role: NAME.to_string(),
                reason,
            };
            let engine = amai_jail::Engine::connect()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let scope = amai_jail::Scope::new(ctx.deployment())
                .map_err(|e| unavailable(format!("the deployment's scope: {e}")))?;
            // Orphan reconciliation: what an earlier instance of this
            // deployment left (containers, volumes, networks, host rules).
            // Other deployments' jails on the same engine are not touched.
            let removed = amai_jail::remove_scope(&engine, &scope)
                .await
                .map_err(|e| {
                    unavailable(format!("cannot remove what an earlier instance left: {e}"))
                })?;
            if !removed.containers.is_empty() || !removed.networks.is_empty() {
                tracing::warn!(
                    containers = removed.containers.len(),
                    volumes = removed.volumes.len(),
                    networks = removed.networks.len(),
                    rules = removed.tables.len(),
                    "removed what an earlier jail instance left behind"
                );
            }
            tracing::info!(
                engine = %engine.version().server_version,
                api = %engine.version().negotiated_api_version,
                scope = %scope,
                "jail role: Docker Engine ready"
            );
            // A second start of the same role value keeps the first engine.
            let _ = self.engine.set(engine::Connected { engine, scope });
            Ok(())
        })
    }

    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(JailProjection)]
    }

    fn reactors(&self) -> Vec<Arc<dyn Reactor>> {
        vec![
            Arc::new(create::JailRequests::new(self.engine.clone())),
            Arc::new(self.runs.clone()),
        ]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let _ = self.signer.set(ctx.signer.clone());
        let runs = self.runs.clone();
        let client = ctx.client.clone();
        tokio::spawn(async move { runs.listen_for_cancellations(client).await });
        let state = queries::QueryState {
            projection: ctx.projection(JAIL_PROJECTION)?,
            model: JailReadModel::open(&ctx.db).map_err(|e| component("read model", e))?,
            store: ctx.store.clone(),
            client: ctx.client.clone(),
            signer: ctx.signer.clone(),
            engine: self.engine.clone(),
            timeout: ctx.min_position_timeout,
        };
        Ok(Some(QueryService {
            name: query::JAIL_SERVICE,
            description: "amai jail queries and commands",
            endpoints: queries::endpoints(state),
        }))
    }
}
