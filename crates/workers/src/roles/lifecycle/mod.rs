//! The lifecycle role: agents as products. This first part is the
//! catalogue: manifests published, scanned, synced from registry indexes or
//! imported from A2A Agent Cards, all as `catalog.published` actions of the
//! identity that signed them, indexed without running anything.
//!
//! Declared for the [`crate::runtime::RoleRuntime`]:
//! - the catalogue projection ([`catalog`]);
//! - the query service `amai.query.lifecycle.*` ([`queries`]).
//!
//! Writes `lifecycle/<agent_id>` only (install, enable, run, health and
//! governance records: docs/lifecycle.md, docs/governance.md).

pub mod catalog;
mod queries;

use std::sync::Arc;

use amai_bus::query;
use amai_bus::subjects::AggregateKind;
use amai_projections::Projection;

use crate::role::{QueryService, Role, RoleContext, RoleError};

pub use catalog::{CatalogProjection, CatalogReadModel, CATALOG_PROJECTION};

/// The role's name.
pub const NAME: &str = "lifecycle";

/// The lifecycle role, declared.
#[derive(Clone, Debug, Default)]
pub struct LifecycleRole;

impl Role for LifecycleRole {
    fn name(&self) -> &'static str {
        NAME
    }

    fn summary(&self) -> &'static str {
        "keeps the catalogue of agent manifests and steers managed agents"
    }

    fn writes(&self) -> &'static [AggregateKind] {
        &[AggregateKind::Lifecycle]
    }

    fn projections(&self) -> Vec<Arc<dyn Projection>> {
        vec![Arc::new(CatalogProjection)]
    }

    fn queries(&self, ctx: &RoleContext) -> Result<Option<QueryService>, RoleError> {
        let state = queries::QueryState {
            catalog: ctx.projection(CATALOG_PROJECTION)?,
            model: CatalogReadModel::open(&ctx.db).map_err(|e| RoleError::Component {
                role: NAME.to_string(),
                component: "catalogue read model".to_string(),
                detail: e.to_string(),
            })?,
            timeout: ctx.min_position_timeout,
        };
        Ok(Some(QueryService {
            name: query::LIFECYCLE_SERVICE,
            description: "amai lifecycle queries (catalogue)",
            endpoints: queries::endpoints(state),
        }))
    }
}
