//! The catalogue: every manifest published to the deployment, folded from
//! the `catalog.published` actions on identity chains (`AMAI_AGENTS`).
//!
//! [`CatalogProjection`] (name `catalog`) writes; [`CatalogReadModel`]
//! answers the query service with plain reads. Keys:
//!
//! - `e/<manifest_id>/<version>`: the entry of that version (`CatalogEntry`);
//! - `l/<manifest_id>`: the entry of the highest version (semver order),
//!   carrying every version in `versions`;
//! - `o/<manifest_id>`: the identity that owns the id.
//!
//! Rules, the same the gateway checks before appending (a publication that
//! skipped the gateway is judged here all the same, and refused as an
//! integrity violation of kind `Rejected` that changes nothing):
//! - the manifest parses and is the id, version and digest the event names
//!   ([`amai_manifest::check_publication`]); registry-derived fields it
//!   declares are stripped, never indexed;
//! - the first identity to publish an id owns it: nobody else publishes
//!   versions of it (no hijacking of a known agent's id);
//! - a published version is immutable: the same version with other bytes is
//!   refused, the same bytes again change nothing.

use amai_bus::proto::{self, payload::Kind};
use amai_bus::subjects::AggregateKind;
use amai_manifest::{check_publication, Manifest};
use amai_projections::{AppliedEvent, ApplyError, ApplyResult, Projection};
use prost::Message;
use sled::transaction::TransactionalTree;

/// Name of the catalogue projection (and of its sled tree).
pub const CATALOG_PROJECTION: &str = "catalog";
/// Version of the projection's schema.
pub const CATALOG_PROJECTION_VERSION: u32 = 1;
/// Largest page of a search.
pub const MAX_SEARCH_PAGE: usize = 500;
/// A search's page when the request names none.
pub const DEFAULT_SEARCH_PAGE: usize = 50;

fn entry_key(id: &str, version: &str) -> Vec<u8> {
    format!("e/{id}/{version}").into_bytes()
}

fn latest_key(id: &str) -> Vec<u8> {
    format!("l/{id}").into_bytes()
}

fn owner_key(id: &str) -> Vec<u8> {
    format!("o/{id}").into_bytes()
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The catalogue projection.
#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogProjection;

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        CATALOG_PROJECTION
    }

    fn version(&self) -> u32 {
        CATALOG_PROJECTION_VERSION
    }

    fn streams(&self) -> &'static [&'static str] {
        &["AMAI_AGENTS"]
    }

    fn apply(&self, tx: &TransactionalTree, ev: &AppliedEvent) -> ApplyResult<()> {
        if ev.event.aggregate.kind != AggregateKind::Agent {
            return Ok(());
        }
        let Kind::CatalogPublished(published) = &ev.event.payload else {
            return Ok(());
        };
        apply_published(tx, ev, published)
    }
}

/// The entry a publication makes, once its manifest checks out.
pub fn entry_of(
    published: &proto::CatalogPublished,
    signer: &str,
) -> Result<proto::CatalogEntry, amai_manifest::PublicationError> {
    let parsed = check_publication(
        &published.manifest_json,
        &published.manifest_id,
        &published.version,
        &published.manifest_sha256,
    )?;
    let m: &Manifest = &parsed.manifest;
    let normal = serde_json::to_vec(&m.to_json_value()).unwrap_or_default();
    Ok(proto::CatalogEntry {
        manifest_id: m.id.clone(),
        version: m.version.to_string(),
        name: m.name.clone(),
        description: m.description.clone(),
        publisher_name: m.publisher.name.clone(),
        publisher_verified: published.source == proto::CatalogSource::Publish as i32,
        source: published.source,
        origin: published.origin.clone(),
        manifest_json: normal,
        manifest_sha256: published.manifest_sha256.clone(),
        capabilities: m.capabilities.clone(),
        keywords: m.keywords.clone(),
        permissions: m.permissions.to_strings(),
        published_by: signer.to_string(),
        tools: m.tools.iter().map(|t| t.name.clone()).collect(),
        build_context: published.build_context.clone(),
        card_verdict: published.card_verdict.clone(),
        ..Default::default()
    })
}

fn load(tx: &TransactionalTree, key: Vec<u8>) -> ApplyResult<Option<proto::CatalogEntry>> {
    match tx.get(key)? {
        None => Ok(None),
        Some(b) => proto::CatalogEntry::decode(b.as_ref())
            .map(Some)
            .map_err(ApplyError::corrupt),
    }
}

fn semver_of(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v).ok()
}

fn apply_published(
    tx: &TransactionalTree,
    ev: &AppliedEvent,
    published: &proto::CatalogPublished,
) -> ApplyResult<()> {
    let signer = ev.event.actor();
    let mut entry = entry_of(published, signer).map_err(|e| {
        ApplyError::rejected(format!(
            "catalog.published {}@{}: {e}",
            published.manifest_id, published.version
        ))
    })?;
    let id = entry.manifest_id.clone();
    match tx.get(owner_key(&id))? {
        Some(owner) if owner.as_ref() != signer.as_bytes() => {
            return Err(ApplyError::rejected(format!(
                "manifest id {id} belongs to {}; {signer} cannot publish it",
                String::from_utf8_lossy(&owner)
            )));
        }
        Some(_) => {}
        None => {
            tx.insert(owner_key(&id), signer.as_bytes())?;
        }
    }
    if let Some(existing) = load(tx, entry_key(&id, &entry.version))? {
        if existing.manifest_sha256 == entry.manifest_sha256 {
            // The same bytes again (a re-scan, a retried publish): nothing new.
            return Ok(());
        }
        return Err(ApplyError::rejected(format!(
            "{id}@{} was already published with other bytes (event {}); a published version never changes: publish a new version",
            entry.version, existing.event_id
        )));
    }
    entry.owner_id = String::from_utf8_lossy(&tx.get(owner_key(&id))?.unwrap_or_default()).into();
    entry.event_id = ev.event.body.id.clone();
    entry.position = Some(ev.position().clone().into());
    entry.published_at = Some(timestamp(ev.published_ms()));
    let previous = load(tx, latest_key(&id))?;
    let mut versions: Vec<String> = previous
        .as_ref()
        .map(|p| p.versions.clone())
        .unwrap_or_default();
    versions.push(entry.version.clone());
    versions.sort_by_key(|v| std::cmp::Reverse(semver_of(v)));
    versions.dedup();
    entry.versions = versions.clone();
    tx.insert(entry_key(&id, &entry.version), entry.encode_to_vec())?;
    let highest = versions.first().cloned().unwrap_or_default();
    let mut latest = if highest == entry.version {
        entry
    } else {
        load(tx, entry_key(&id, &highest))?.ok_or_else(|| {
            ApplyError::corrupt(format!("{id}@{highest} is listed but not stored"))
        })?
    };
    latest.versions = versions;
    tx.insert(latest_key(&id), latest.encode_to_vec())?;
    Ok(())
}

/// What a search asks for (see `SearchCatalogRequest`).
#[derive(Debug, Clone, Default)]
pub struct CatalogQuery {
    /// Lowercase words that must all appear.
    pub words: Vec<String>,
    /// Exact capability.
    pub capability: String,
    /// Exact keyword (case-insensitive).
    pub keyword: String,
    /// Owner id or declared publisher name (case-insensitive).
    pub publisher: String,
    /// Entries after this id.
    pub after: String,
    /// Page size.
    pub limit: usize,
}

impl CatalogQuery {
    /// The query of a request, with the page size bounded.
    pub fn from_request(req: &proto::SearchCatalogRequest) -> Self {
        let limit = match req.limit as usize {
            0 => DEFAULT_SEARCH_PAGE,
            n => n.min(MAX_SEARCH_PAGE),
        };
        CatalogQuery {
            words: req.text.split_whitespace().map(str::to_lowercase).collect(),
            capability: req.capability.clone(),
            keyword: req.keyword.to_lowercase(),
            publisher: req.publisher.to_lowercase(),
            after: req.after.clone(),
            limit,
        }
    }

    /// Whether `e` matches.
    pub fn matches(&self, e: &proto::CatalogEntry) -> bool {
        if !self.capability.is_empty() && !e.capabilities.contains(&self.capability) {
            return false;
        }
        if !self.keyword.is_empty() && !e.keywords.iter().any(|k| k.to_lowercase() == self.keyword)
        {
            return false;
        }
        if !self.publisher.is_empty()
            && e.owner_id.to_lowercase() != self.publisher
            && e.publisher_name.to_lowercase() != self.publisher
        {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        let haystack = [
            e.manifest_id.as_str(),
            e.name.as_str(),
            e.description.as_str(),
        ]
        .into_iter()
        .chain(e.keywords.iter().map(String::as_str))
        .chain(e.capabilities.iter().map(String::as_str))
        .chain(e.tools.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
        self.words.iter().all(|w| haystack.contains(w.as_str()))
    }
}

/// Reads of the catalogue.
#[derive(Clone)]
pub struct CatalogReadModel {
    tree: sled::Tree,
}

impl CatalogReadModel {
    /// Opens the catalogue's tree in `db`.
    pub fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        Ok(Self {
            tree: db.open_tree(CATALOG_PROJECTION)?,
        })
    }

    fn decode(b: &[u8]) -> Result<proto::CatalogEntry, sled::Error> {
        proto::CatalogEntry::decode(b)
            .map_err(|e| sled::Error::Unsupported(format!("corrupt catalogue entry: {e}")))
    }

    /// The entry of `id` at `version` (the highest when empty).
    pub fn get(&self, id: &str, version: &str) -> Result<Option<proto::CatalogEntry>, sled::Error> {
        if version.is_empty() {
            return self
                .tree
                .get(latest_key(id))?
                .map(|b| Self::decode(&b))
                .transpose();
        }
        let Some(mut entry) = self
            .tree
            .get(entry_key(id, version))?
            .map(|b| Self::decode(&b))
            .transpose()?
        else {
            return Ok(None);
        };
        if let Some(latest) = self.get(id, "")? {
            entry.versions = latest.versions;
        }
        Ok(Some(entry))
    }

    /// The identity that owns `id`.
    pub fn owner(&self, id: &str) -> Result<Option<String>, sled::Error> {
        Ok(self
            .tree
            .get(owner_key(id))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// A page of the highest versions matching `q`, by id.
    pub fn search(&self, q: &CatalogQuery) -> Result<proto::CatalogPage, sled::Error> {
        let start = if q.after.is_empty() {
            latest_key("")
        } else {
            // The first key after `l/<after>`: `l/<after>` plus a zero byte.
            let mut k = latest_key(&q.after);
            k.push(0);
            k
        };
        let mut entries = Vec::new();
        let mut next_after = String::new();
        for item in self.tree.range(start..) {
            let (k, v) = item?;
            if !k.starts_with(b"l/") {
                break;
            }
            let e = Self::decode(&v)?;
            if !q.matches(&e) {
                continue;
            }
            if entries.len() == q.limit {
                next_after = entries
                    .last()
                    .map(|l: &proto::CatalogEntry| l.manifest_id.clone())
                    .unwrap_or_default();
                break;
            }
            entries.push(e);
        }
        Ok(proto::CatalogPage {
            entries,
            next_after,
        })
    }
}
