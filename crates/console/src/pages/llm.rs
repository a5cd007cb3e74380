//! `/llm`: LLM recording sessions from the llm role
//! (`amai.query.llm.sessions`), and `/llm/{session}`: one session with its
//! recordings, read from its chain in `AMAI_LLM` and verified.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use amai_bus::proto;
use amai_bus::query::{LLM_SESSION, LLM_SESSIONS};
use amai_bus::Aggregate;

use crate::layout::{page, role_problem};
use crate::pages::events::{describe, EventView};
use crate::render::timestamp;
use crate::roles::{ask, Role};
use crate::session::PageSession;
use crate::AppState;

/// Sessions listed.
pub const LISTED: u32 = 100;
/// Recordings shown on a session's page.
pub const RECORDINGS: u32 = 200;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/llm", get(sessions))
        .route("/llm/{session}", get(session_page))
}

fn mode(m: proto::LlmMode) -> &'static str {
    match m {
        proto::LlmMode::Record => "record",
        proto::LlmMode::Replay => "replay",
        proto::LlmMode::Unspecified => "-",
    }
}

async fn sessions(State(state): State<Arc<AppState>>, PageSession(session): PageSession) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let list = ask::<_, proto::ListLlmSessionsResponse>(
        &state,
        Role::Llm,
        LLM_SESSIONS,
        &proto::ListLlmSessionsRequest {
            owner: String::new(),
            after: String::new(),
            limit: LISTED,
        },
    )
    .await;
    let body = html! {
        @match &list {
            Err(e) => (role_problem(e)),
            Ok(l) if l.sessions.is_empty() => p { "No LLM sessions yet." },
            Ok(l) => {
                table.llm {
                    tr { th { "session" } th { "owner" } th { "mode" } th { "opened" } th { "recordings" } th { "replay misses" } th { "keys" } }
                    @for s in &l.sessions {
                        tr {
                            td { a href={ "/llm/" (s.session_id) } { code { (s.session_id) } } @if s.deleted { " " span.flag { "deleted" } } }
                            td { code { (s.owner) } @if s.owner_revoked { " " span.flag { "revoked" } } }
                            td { (mode(s.mode())) }
                            td { (timestamp(s.opened_at.as_ref())) }
                            td.num { (s.recordings) }
                            td.num { (s.misses) }
                            td.num { (s.keys.iter().filter(|k| !k.revoked).count()) " active / " (s.keys.len()) }
                        }
                    }
                }
                @if !l.next_after.is_empty() { p { "Only the first " (LISTED) " sessions are listed." } }
            }
        }
    };
    page("LLM sessions", "/llm", &session, flash, body)
}

async fn session_page(
    State(state): State<Arc<AppState>>,
    PageSession(session): PageSession,
    Path(id): Path<String>,
) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let aggregate = format!("llm/{id}").parse::<Aggregate>();
    let info = match &aggregate {
        Ok(_) => Some(
            ask::<_, proto::LlmSession>(
                &state,
                Role::Llm,
                LLM_SESSION,
                &proto::GetLlmSessionRequest {
                    session_id: id.clone(),
                    min_position: None,
                    wait_recordings: false,
                },
            )
            .await,
        ),
        Err(_) => None,
    };
    let events: Result<Vec<EventView>, String> = match &aggregate {
        Ok(a) => match state
            .store
            .read_chain_page(a, 1, RECORDINGS as usize, 0)
            .await
        {
            Ok(page) => {
                let mut keys = crate::pages::events::SignerKeys::default();
                let mut out = Vec::new();
                for stored in &page.events {
                    out.push(describe(&state, &mut keys, stored).await);
                }
                Ok(out)
            }
            Err(e) => Err(format!("cannot read the session's chain: {e}")),
        },
        Err(e) => Err(format!("{id:?} is no session id: {e}")),
    };
    let body = html! {
        @match &info {
            Some(Err(e)) => (role_problem(e)),
            Some(Ok(s)) => p {
                "Owner " code { (s.owner) } ", mode " (mode(s.mode())) ", "
                (s.recordings) " recordings, " (s.misses) " replay misses."
            },
            None => {}
        }
        h2 { "Chain" }
        @match &events {
            Err(e) => p.problem { (e) },
            Ok(list) if list.is_empty() => p { "No events." },
            Ok(list) => (crate::pages::events::table(list)),
        }
    };
    page(&format!("LLM session {id}"), "/llm", &session, flash, body)
}
