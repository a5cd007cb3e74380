//! The lifecycle query service (`amai.query.lifecycle.*`), answered from the
//! catalogue read model: `catalog_get` (one entry, a version or the highest;
//! with `min_position`) and `catalog_search` (text and filters, paged by id).
//! The catalogue is discovery: both are public reads.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_projections::ProjectionHandle;
use bytes::Bytes;
use prost::Message;

use super::catalog::{CatalogQuery, CatalogReadModel};
use crate::query_service::{typed_endpoint, QueryHandler};

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string()).with_reason(query::reason::INTERNAL)
}

/// Everything the handlers share.
pub(crate) struct QueryState {
    pub(crate) catalog: ProjectionHandle,
    pub(crate) model: CatalogReadModel,
    pub(crate) timeout: Duration,
}

impl QueryState {
    async fn get(&self, req: proto::GetCatalogEntryRequest) -> Result<Bytes, QueryError> {
        self.catalog
            .wait_for_min_position(req.min_position.as_ref(), self.timeout)
            .await
            .map_err(QueryError::from)?;
        let entry = self
            .model
            .get(&req.manifest_id, &req.version)
            .map_err(internal)?
            .ok_or_else(|| {
                let what = if req.version.is_empty() {
                    req.manifest_id.clone()
                } else {
                    format!("{}@{}", req.manifest_id, req.version)
                };
                QueryError::new(
                    QueryCode::NotFound,
                    format!("no catalogue entry {what}; search with `amai catalog search`"),
                )
                .with_reason(query::reason::NOT_FOUND)
            })?;
        Ok(Bytes::from(entry.encode_to_vec()))
    }

    async fn search(&self, req: proto::SearchCatalogRequest) -> Result<Bytes, QueryError> {
        self.catalog
            .wait_for_min_position(req.min_position.as_ref(), self.timeout)
            .await
            .map_err(QueryError::from)?;
        let page = self
            .model
            .search(&CatalogQuery::from_request(&req))
            .map_err(internal)?;
        Ok(Bytes::from(page.encode_to_vec()))
    }
}

/// The service's endpoints.
pub(crate) fn endpoints(state: QueryState) -> Vec<(&'static str, QueryHandler)> {
    let state = Arc::new(state);
    vec![
        typed_endpoint(
            query::LIFECYCLE_CATALOG_GET,
            state.clone(),
            |s, req: proto::GetCatalogEntryRequest| async move { s.get(req).await },
        ),
        typed_endpoint(
            query::LIFECYCLE_CATALOG_SEARCH,
            state,
            |s, req: proto::SearchCatalogRequest| async move { s.search(req).await },
        ),
    ]
}
