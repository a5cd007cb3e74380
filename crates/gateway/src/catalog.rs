//! `AgentService`: the catalogue of agents, as commands and reads over the
//! lifecycle role's catalogue (`amai.query.lifecycle.catalog_*`).
//!
//! `Publish` carries the signer's `catalog.published` action for its own
//! chain. It is validated completely before anything is appended (nothing
//! partial is ever written), cheap checks first:
//!
//! 1. the payload is a `catalog.published` (`WRONG_COMMAND`) on the actor's
//!    own chain, with a source;
//! 2. the manifest parses (`INVALID_MANIFEST`, with the JSON path of every
//!    error in the `paths` metadata) and is the id, version and canonical
//!    digest the event names (`MANIFEST_DIGEST_MISMATCH`), by the same check
//!    the catalogue applies ([`amai_manifest::check_publication`]);
//! 3. every append check of [`amai_bus::EventStore::validate`] (signature,
//!    key, chain head);
//! 4. the id is not another identity's (`MANIFEST_ID_OWNED`) and the version
//!    was not published with other bytes (`MANIFEST_VERSION_EXISTS`); the
//!    same bytes again answer the existing entry and append nothing.
//!
//! `Search` and `Get` are public reads: the catalogue is discovery.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use amai_bus::envelope::VerifiedEvent;
use amai_bus::proto::{self, agent_service_server::AgentService, payload::Kind};
use amai_bus::query::{QueryCode, LIFECYCLE_CATALOG_GET, LIFECYCLE_CATALOG_SEARCH};
use amai_bus::store::AppendError;
use amai_bus::subjects::Aggregate;
use amai_manifest::{check_publication, PublicationError};

use crate::status::ApiError;
use crate::Shared;

/// The `AgentService` implementation.
pub struct CatalogSvc {
    shared: Arc<Shared>,
}

impl CatalogSvc {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The entry of `id` (at `version`, or the highest), `None` when the
    /// catalogue has none.
    async fn entry(
        &self,
        id: &str,
        version: &str,
        min_position: Option<proto::Position>,
    ) -> Result<Option<proto::CatalogEntry>, ApiError> {
        let req = proto::GetCatalogEntryRequest {
            manifest_id: id.to_string(),
            version: version.to_string(),
            min_position,
        };
        match self.shared.query(LIFECYCLE_CATALOG_GET, &req).await {
            Ok(e) => Ok(Some(e)),
            Err(ApiError::Query(e)) if e.code == QueryCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks a `catalog.published` completely (steps 1 to 4 of the module
    /// docs). `Some(entry)` when the catalogue already holds this very
    /// version with the same bytes (nothing needs appending).
    pub(crate) async fn validate(
        &self,
        ev: &VerifiedEvent,
    ) -> Result<Option<proto::CatalogEntry>, ApiError> {
        let Kind::CatalogPublished(published) = &ev.payload else {
            return Err(ApiError::WrongCommand(format!(
                "Publish takes a catalog.published event, this is {}",
                ev.event_type()
            )));
        };
        let span = tracing::Span::current();
        span.record("manifest_id", published.manifest_id.as_str());
        span.record("actor", ev.actor());
        if Aggregate::agent(ev.actor()).ok().as_ref() != Some(&ev.aggregate) {
            return Err(ApiError::InvalidArgument(format!(
                "catalog.published goes on the signer's own chain agent/{}, not {}",
                ev.actor(),
                ev.aggregate
            )));
        }
        if published.source == proto::CatalogSource::Unspecified as i32
            || proto::CatalogSource::try_from(published.source).is_err()
        {
            return Err(ApiError::InvalidArgument(
                "source must say how the manifest was found: publish, scan, sync or card".into(),
            ));
        }
        check_publication(
            &published.manifest_json,
            &published.manifest_id,
            &published.version,
            &published.manifest_sha256,
        )
        .map_err(|e| match e {
            PublicationError::Invalid(errors) => ApiError::InvalidManifest {
                detail: errors.to_string(),
                paths: errors.paths().iter().map(|p| p.to_string()).collect(),
            },
            other => ApiError::ManifestDigestMismatch(other.to_string()),
        })?;
        // The append checks before the catalogue is asked anything: whoever
        // did not sign with the actor's current key learns nothing.
        if self.shared.store.validate(ev).await?.is_some() {
            // This very event is stored already: an idempotent re-send.
            return Ok(None);
        }
        let id = &published.manifest_id;
        let Some(latest) = self.entry(id, "", None).await? else {
            return Ok(None);
        };
        if latest.owner_id != ev.actor() {
            return Err(ApiError::ManifestIdOwned {
                manifest_id: id.clone(),
                owner: latest.owner_id,
            });
        }
        match self.entry(id, &published.version, None).await? {
            Some(same) if same.manifest_sha256 == published.manifest_sha256 => Ok(Some(same)),
            Some(_) => Err(ApiError::ManifestVersionExists {
                manifest_id: id.clone(),
                version: published.version.clone(),
            }),
            None => Ok(None),
        }
    }

    /// Validates a publication, appends it unless the catalogue holds the
    /// same version with the same bytes, and answers the entry.
    async fn publish(
        &self,
        command: proto::PublishManifestCommand,
    ) -> Result<proto::CatalogEntry, ApiError> {
        let event = command.event.ok_or_else(|| {
            ApiError::InvalidArgument(
                "event is required: the signer's signed catalog.published action".into(),
            )
        })?;
        self.shared.check_size(&event)?;
        let ev = VerifiedEvent::from_signed(event.clone()).map_err(AppendError::from)?;
        if let Some(existing) = self.validate(&ev).await? {
            return Ok(existing);
        }
        let Kind::CatalogPublished(published) = &ev.payload else {
            return Err(ApiError::WrongCommand("not a catalog.published".into()));
        };
        let out = self.shared.store.append(event).await?;
        let position = Some(out.position.into());
        let id = &published.manifest_id;
        if let Some(entry) = self.entry(id, &published.version, position).await? {
            if entry.manifest_sha256 == published.manifest_sha256 {
                return Ok(entry);
            }
        }
        // Appended, but a concurrent publication won the id or the version:
        // the catalogue refused this one (its integrity violations say so).
        match self.entry(id, "", None).await? {
            Some(latest) if latest.owner_id != ev.actor() => Err(ApiError::ManifestIdOwned {
                manifest_id: id.clone(),
                owner: latest.owner_id,
            }),
            _ => Err(ApiError::ManifestVersionExists {
                manifest_id: id.clone(),
                version: published.version.clone(),
            }),
        }
    }
}

#[tonic::async_trait]
impl AgentService for CatalogSvc {
    #[tracing::instrument(skip_all, fields(manifest_id, actor))]
    async fn publish(
        &self,
        request: Request<proto::PublishManifestCommand>,
    ) -> Result<Response<proto::CatalogEntry>, Status> {
        Ok(Response::new(self.publish(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(text = %request.get_ref().text))]
    async fn search(
        &self,
        request: Request<proto::SearchCatalogRequest>,
    ) -> Result<Response<proto::CatalogPage>, Status> {
        let req = request.into_inner();
        Ok(Response::new(
            self.shared.query(LIFECYCLE_CATALOG_SEARCH, &req).await?,
        ))
    }

    #[tracing::instrument(skip_all, fields(manifest_id = %request.get_ref().manifest_id))]
    async fn get(
        &self,
        request: Request<proto::GetCatalogEntryRequest>,
    ) -> Result<Response<proto::CatalogEntry>, Status> {
        let req = request.into_inner();
        match self
            .entry(&req.manifest_id, &req.version, req.min_position)
            .await?
        {
            Some(e) => Ok(Response::new(e)),
            None => Err(ApiError::CatalogEntryNotFound(if req.version.is_empty() {
                req.manifest_id
            } else {
                format!("{}@{}", req.manifest_id, req.version)
            })
            .into()),
        }
    }
}
