//! `/catalog`: the catalogue of agent manifests from the lifecycle role
//! (`amai.query.lifecycle.catalog_search`), searchable by text and
//! capability: id, version, name, who published it (verified or only
//! declared), the permissions each manifest requests, its tools.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use amai_bus::proto;
use amai_bus::query::LIFECYCLE_CATALOG_SEARCH;

use crate::layout::{page, role_problem};
use crate::render::truncate;
use crate::roles::{ask, Role};
use crate::session::PageSession;
use crate::AppState;

/// Entries listed per page.
pub const LISTED: u32 = 100;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/catalog", get(catalog))
}

/// The search form's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CatalogFilter {
    #[serde(default)]
    q: String,
    #[serde(default)]
    capability: String,
}

async fn catalog(
    State(state): State<Arc<AppState>>,
    PageSession(session): PageSession,
    Query(filter): Query<CatalogFilter>,
) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let found = ask::<_, proto::CatalogPage>(
        &state,
        Role::Lifecycle,
        LIFECYCLE_CATALOG_SEARCH,
        &proto::SearchCatalogRequest {
            text: filter.q.clone(),
            capability: filter.capability.clone(),
            limit: LISTED,
            ..Default::default()
        },
    )
    .await;
    let body = html! {
        form method="get" action="/catalog" {
            input type="search" name="q" value=(filter.q) placeholder="words";
            " "
            input type="text" name="capability" value=(filter.capability) placeholder="capability";
            " "
            button type="submit" { "Search" }
        }
        @match &found {
            Err(e) => (role_problem(e)),
            Ok(p) if p.entries.is_empty() => p { "No catalogue entry matches." },
            Ok(p) => {
                table.catalog {
                    tr {
                        th { "manifest" } th { "name" } th { "publisher" }
                        th { "requested permissions" } th { "tools" } th { "source" }
                    }
                    @for e in &p.entries {
                        tr {
                            td { code { (e.manifest_id) "@" (e.version) } }
                            td { (e.name) br; small { (truncate(&e.description, 200)) } }
                            td {
                                (e.publisher_name)
                                @if e.publisher_verified { " " span.ok { "verified" } }
                                @else { " " span.flag { "declared" } }
                            }
                            td { @for perm in &e.permissions { code { (perm) } " " } }
                            td { @for t in &e.tools { code { (t) } " " } }
                            td {
                                (source_name(e.source))
                                @if !e.card_verdict.is_empty() { br; small { "card: " (e.card_verdict) } }
                            }
                        }
                    }
                }
                @if !p.next_after.is_empty() { p { "Only the first " (LISTED) " entries are listed." } }
            }
        }
    };
    page("Catalogue", "/catalog", &session, flash, body)
}

fn source_name(s: i32) -> &'static str {
    match proto::CatalogSource::try_from(s).unwrap_or_default() {
        proto::CatalogSource::Unspecified => "unspecified",
        proto::CatalogSource::Publish => "published",
        proto::CatalogSource::Scan => "scanned",
        proto::CatalogSource::Sync => "registry sync",
        proto::CatalogSource::Card => "A2A card",
    }
}
