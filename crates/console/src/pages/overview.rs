//! `/`: counts of identities, events and streams, and links to the pages.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use amai_bus::proto;
use amai_bus::query::IDENTITY_STATS;
use amai_bus::subjects::AggregateKind;

use crate::layout::{page, role_problem};
use crate::roles::{ask, Role};
use crate::session::PageSession;
use crate::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/", get(overview))
}

/// Last sequence of each Amai stream (`None` when it cannot be read).
pub(crate) async fn stream_positions(state: &AppState) -> Vec<(&'static str, Option<u64>)> {
    let mut out = Vec::new();
    for kind in AggregateKind::ALL {
        let name = kind.stream();
        let last = match state.store.jetstream().get_stream(name).await {
            Ok(mut s) => s.info().await.ok().map(|i| i.state.last_sequence),
            Err(_) => None,
        };
        out.push((name, last));
    }
    out
}

async fn overview(State(state): State<Arc<AppState>>, PageSession(session): PageSession) -> Markup {
    let stats = ask::<_, proto::Stats>(
        &state,
        Role::Identity,
        IDENTITY_STATS,
        &proto::GetStatsRequest { min_position: None },
    )
    .await;
    let streams = stream_positions(&state).await;
    let flash = state.sessions.take_flash(&session);
    let body = html! {
        p { "Acting as operator " code { (state.operator_id) } "." }
        section {
            h2 { "Identities" }
            @match &stats {
                Ok(s) => {
                    table {
                        tr { th { "identities" } td.num { (s.identities) } }
                        @for (kind, n) in &s.per_kind {
                            tr { th { (kind) } td.num { (n) } }
                        }
                        tr { th { "revoked" } td.num { (s.revoked) } }
                        tr { th { "events" } td.num { (s.events) } }
                        tr { th { "messages" } td.num { (s.messages) } }
                        tr { th { "integrity violations" } td.num { (s.integrity_violations) } }
                    }
                }
                Err(e) => (role_problem(e)),
            }
            p { a href="/agents" { "Agents, trust scores and alerts →" } }
        }
        section {
            h2 { "Streams" }
            table {
                tr { th { "stream" } th { "last sequence" } th {} }
                @for (name, last) in &streams {
                    tr {
                        td { code { (name) } }
                        td.num { @match last { Some(n) => (n), None => "unavailable" } }
                        td { a href={ "/events?stream=" (name) } { "live" } }
                    }
                }
            }
        }
        section {
            h2 { "More" }
            ul {
                li { a href="/jails" { "Jail runs" } }
                li { a href="/llm" { "LLM sessions and recordings" } }
                li { a href="/audit" { "Audit checkpoints" } }
            }
        }
    };
    page("Overview", "/", &session, flash, body)
}
