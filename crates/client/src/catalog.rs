//! The catalogue through the gateway's `AgentService`: [`Agent::publish_manifest`]
//! signs a `catalog.published` on the signer's own chain (retried on a moved
//! chain head like every action); [`AmaiClient::catalog_search`] and
//! [`AmaiClient::catalog_entry`] are public reads.
//!
//! Manifests are checked here first with the same parser the gateway and
//! the catalogue use ([`amai_manifest::Manifest::from_json`]), so a bad
//! manifest never leaves the machine; the gateway still checks everything.
//! Refusals carry their kind ([`crate::ErrorKind`]): `InvalidManifest`
//! (metadata `paths`), `ManifestDigestMismatch`, `ManifestIdOwned`,
//! `ManifestVersionExists`, `CatalogEntryNotFound`; `WorkerUnavailable` when
//! no lifecycle worker answers (nothing was appended).

use amai_bus::envelope::EventDraft;
use amai_bus::proto::{self, payload::Kind, CatalogSource, SignedEvent};
use amai_manifest::{Manifest, ManifestErrors};

use crate::{Agent, AmaiClient, ClientError};

/// A manifest ready to publish: its checked, normalised form.
#[derive(Debug, Clone)]
pub struct Publication {
    payload: proto::CatalogPublished,
}

impl Publication {
    /// Parses `manifest_json` (every error with its JSON path) and builds the
    /// `catalog.published` payload: the normal form, its canonical digest,
    /// and how it was found.
    pub fn new(manifest_json: &[u8], source: CatalogSource) -> Result<Self, ManifestErrors> {
        let parsed = Manifest::from_json(manifest_json)?;
        Ok(Self::of(&parsed.manifest, source))
    }

    /// The payload for an already parsed manifest.
    pub fn of(manifest: &Manifest, source: CatalogSource) -> Self {
        let normal = serde_json::to_vec(&manifest.to_json_value())
            // A `serde_json::Value` always serialises.
            .unwrap_or_default();
        Self {
            payload: proto::CatalogPublished {
                manifest_id: manifest.id.clone(),
                version: manifest.version.to_string(),
                manifest_json: normal,
                manifest_sha256: manifest.canonical_digest().to_vec(),
                source: source as i32,
                ..Default::default()
            },
        }
    }

    /// Where it came from (a path, an index, a card URL).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.payload.origin = origin.into();
        self
    }

    /// The absolute build context on the machine that scanned it.
    pub fn build_context(mut self, dir: impl Into<String>) -> Self {
        self.payload.build_context = dir.into();
        self
    }

    /// The signature verdict of an imported Agent Card.
    pub fn card_verdict(mut self, verdict: impl Into<String>) -> Self {
        self.payload.card_verdict = verdict.into();
        self
    }

    /// The payload.
    pub fn payload(&self) -> &proto::CatalogPublished {
        &self.payload
    }
}

impl Agent {
    /// Publishes a manifest to the catalogue: appends a signed
    /// `catalog.published` to this identity's chain through
    /// `AgentService.Publish`, and answers the catalogue entry. Publishing the
    /// same bytes again answers the existing entry.
    pub async fn publish_manifest(
        &self,
        publication: &Publication,
    ) -> Result<proto::CatalogEntry, ClientError> {
        let aggregate = self.aggregate()?;
        let (keys, id) = (self.keys().clone(), self.id().to_string());
        let payload = publication.payload.clone();
        self.retry_signed(
            |seq, hash| {
                EventDraft::new(aggregate.clone(), Kind::CatalogPublished(payload.clone()))
                    .after(seq, hash)
                    .sign(&keys, &id)
            },
            |event| self.publish_call(event),
        )
        .await
    }

    async fn publish_call(&self, event: SignedEvent) -> Result<proto::CatalogEntry, tonic::Status> {
        self.client()
            .agent_service()
            .publish(proto::PublishManifestCommand { event: Some(event) })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl AmaiClient {
    /// Searches the catalogue (public).
    pub async fn catalog_search(
        &self,
        request: proto::SearchCatalogRequest,
    ) -> Result<proto::CatalogPage, ClientError> {
        Ok(self
            .agent_service()
            .search(request)
            .await
            .map_err(ClientError::from)?
            .into_inner())
    }

    /// One catalogue entry: `version`, or the highest when empty (public).
    pub async fn catalog_entry(
        &self,
        manifest_id: &str,
        version: &str,
    ) -> Result<proto::CatalogEntry, ClientError> {
        Ok(self
            .agent_service()
            .get(proto::GetCatalogEntryRequest {
                manifest_id: manifest_id.to_string(),
                version: version.to_string(),
                min_position: None,
            })
            .await
            .map_err(ClientError::from)?
            .into_inner())
    }
}
