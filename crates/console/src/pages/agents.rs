//! `/agents`: the identities of the deployment (from the subjects of
//! `AMAI_AGENTS`, described by the identity role), each agent's live trust
//! score with its last explained deltas (trust role), and the latest alerts.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use maud::{html, Markup};

use amai_bus::proto::{self, get_identity_request::Selector, trust_delta, IdentityKind};
use amai_bus::query::{IDENTITY_GET, TRUST_ALERTS, TRUST_GET};

use crate::layout::{page, role_problem};
use crate::render::{time_ms, truncate};
use crate::roles::{ask, Role, RoleError};
use crate::session::PageSession;
use crate::AppState;

/// Most identities listed.
pub const MAX_LISTED: usize = 200;
/// Latest deltas shown per agent.
pub const LAST_DELTAS: u32 = 3;
/// Latest alerts shown.
pub const ALERTS: u32 = 50;
/// Metadata entries shown per identity.
pub const METADATA_SHOWN: usize = 5;
/// Queries in flight at once while building the page.
const CONCURRENCY: usize = 8;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/agents", get(agents))
}

/// Identity ids with a chain in `AMAI_AGENTS`, and their chain lengths.
async fn identity_ids(state: &AppState) -> Result<Vec<(String, usize)>, String> {
    let stream = state
        .store
        .jetstream()
        .get_stream("AMAI_AGENTS")
        .await
        .map_err(|e| format!("cannot open AMAI_AGENTS: {e}"))?;
    let subjects = stream
        .info_with_subjects("amai.agent.*")
        .await
        .map_err(|e| format!("cannot list AMAI_AGENTS subjects: {e}"))?;
    let mut ids: Vec<(String, usize)> = subjects
        .take(MAX_LISTED)
        .map_ok(|(subject, n)| {
            (
                subject
                    .strip_prefix("amai.agent.")
                    .unwrap_or(&subject)
                    .to_string(),
                n,
            )
        })
        .try_collect()
        .await
        .map_err(|e| format!("cannot list AMAI_AGENTS subjects: {e}"))?;
    ids.sort();
    Ok(ids)
}

struct Row {
    id: String,
    events: usize,
    identity: Result<proto::Identity, RoleError>,
    trust: Option<Result<proto::TrustSummary, RoleError>>,
}

fn delta_text(d: &proto::TrustDelta) -> String {
    match &d.kind {
        Some(trust_delta::Kind::Adjusted(a)) => format!(
            "{} {:+.3} → {:.3}: {}",
            a.signal,
            (a.score_after_milli - a.score_before_milli) as f64 / 1000.0,
            a.score_after_milli as f64 / 1000.0,
            truncate(&a.reason, 200)
        ),
        Some(trust_delta::Kind::Alert(a)) => format!(
            "alert {} ({}): {}",
            a.kind,
            a.severity().as_str_name(),
            truncate(&a.reason, 200)
        ),
        None => "(empty delta)".into(),
    }
}

fn kind_name(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Agent => "agent",
        IdentityKind::Operator => "operator",
        IdentityKind::Service => "service",
        IdentityKind::Unspecified => "unspecified",
    }
}

async fn row(state: &AppState, id: String, events: usize) -> Row {
    let identity = ask::<_, proto::Identity>(
        state,
        Role::Identity,
        IDENTITY_GET,
        &proto::GetIdentityRequest {
            selector: Some(Selector::Id(id.clone())),
            min_position: None,
        },
    )
    .await;
    let is_agent = matches!(&identity, Ok(i) if i.kind() == IdentityKind::Agent);
    let trust = if is_agent {
        Some(
            ask::<_, proto::TrustSummary>(
                state,
                Role::Trust,
                TRUST_GET,
                &proto::GetTrustRequest {
                    agent_id: id.clone(),
                    last: LAST_DELTAS,
                    min_position: None,
                },
            )
            .await,
        )
    } else {
        None
    };
    Row {
        id,
        events,
        identity,
        trust,
    }
}

async fn agents(State(state): State<Arc<AppState>>, PageSession(session): PageSession) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let ids = identity_ids(&state).await;
    let rows: Vec<Row> = match &ids {
        Ok(ids) => {
            futures::stream::iter(ids.iter().cloned())
                .map(|(id, n)| row(&state, id, n))
                .buffered(CONCURRENCY)
                .collect()
                .await
        }
        Err(_) => Vec::new(),
    };
    let alerts = ask::<_, proto::TrustAlertList>(
        &state,
        Role::Trust,
        TRUST_ALERTS,
        &proto::ListTrustAlertsRequest {
            agent_id: String::new(),
            limit: ALERTS,
            ..Default::default()
        },
    )
    .await;
    // One message per absent role, not one per row.
    let identity_down = rows
        .iter()
        .find_map(|r| r.identity.as_ref().err().filter(|e| e.is_unavailable()));
    let trust_down = alerts.as_ref().err().filter(|e| e.is_unavailable());
    let body = html! {
        @if let Err(e) = &ids { p.problem { (e) } }
        @if let Some(e) = identity_down { (role_problem(e)) }
        @if let Some(e) = trust_down { (role_problem(e)) }
        section {
            h2 { "Identities" }
            @if rows.is_empty() { p { "No identities yet." } }
            @else {
                table.agents {
                    tr { th { "name" } th { "kind" } th { "id" } th { "metadata" } th { "events" } th { "trust" } th { "last explained deltas" } }
                    @for r in &rows {
                        tr {
                            @match &r.identity {
                                Ok(i) => {
                                    td { (i.name) @if i.revoked { " " span.flag { "revoked" } } }
                                    td { (kind_name(i.kind())) }
                                }
                                Err(e) if e.is_unavailable() => { td { "?" } td { "?" } }
                                Err(e) => { td colspan="2" { span.problem { (e.to_string()) } } }
                            }
                            td { code { (r.id) } }
                            td.metadata {
                                @if let Ok(i) = &r.identity {
                                    @for (k, v) in i.metadata.iter().take(METADATA_SHOWN) {
                                        div { (truncate(k, 40)) "=" (truncate(v, 120)) }
                                    }
                                }
                            }
                            td.num { a href={ "/events?aggregate=agent/" (r.id) "&start=1" } { (r.events) } }
                            @match &r.trust {
                                None => { td { "-" } td {} }
                                Some(Ok(t)) => {
                                    td.num { (format!("{:.3}", t.score)) }
                                    td {
                                        ul.deltas {
                                            @for d in &t.last_deltas {
                                                li { (time_ms(d.event_time_ms)) " " (delta_text(d)) }
                                            }
                                        }
                                    }
                                }
                                Some(Err(e)) if e.is_unavailable() => { td { "?" } td {} }
                                Some(Err(e)) => { td colspan="2" { span.problem { (e.to_string()) } } }
                            }
                        }
                    }
                }
                @if rows.len() >= MAX_LISTED { p { "Only the first " (MAX_LISTED) " identities are listed." } }
            }
        }
        section {
            h2 { "Alerts" }
            @match &alerts {
                Ok(list) if list.alerts.is_empty() => p { "No alerts." },
                Ok(list) => {
                    ul.alerts {
                        @for a in &list.alerts {
                            li { (time_ms(a.event_time_ms)) " " (delta_text(a)) }
                        }
                    }
                }
                Err(e) if e.is_unavailable() => {}
                Err(e) => (role_problem(e)),
            }
        }
    };
    page("Agents", "/agents", &session, flash, body)
}
