//! `/jails`: jail runs from the jail role (`amai.query.jail.list`): state,
//! exit, usage, diff summary and network log counts.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use amai_bus::proto;
use amai_bus::query::JAIL_LIST;

use crate::layout::{page, role_problem};
use crate::render::{timestamp, truncate};
use crate::roles::{ask, Role};
use crate::session::PageSession;
use crate::AppState;

/// Jails listed.
pub const LISTED: u32 = 100;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/jails", get(jails))
}

fn state_name(s: proto::JailState) -> &'static str {
    match s {
        proto::JailState::Unspecified => "unknown",
        proto::JailState::Queued => "queued",
        proto::JailState::Created => "created",
        proto::JailState::Running => "running",
        proto::JailState::Finished => "finished",
        proto::JailState::Failed => "failed",
        proto::JailState::Deleted => "deleted",
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn jails(State(state): State<Arc<AppState>>, PageSession(session): PageSession) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let list = ask::<_, proto::ListJailsResponse>(
        &state,
        Role::Jail,
        JAIL_LIST,
        &proto::ListJailsRequest {
            owner: String::new(),
            after: String::new(),
            limit: LISTED,
            include_deleted: true,
        },
    )
    .await;
    let body = html! {
        @match &list {
            Err(e) => (role_problem(e)),
            Ok(l) if l.jails.is_empty() => p { "No jails yet." },
            Ok(l) => {
                table.jails {
                    tr {
                        th { "jail" } th { "owner" } th { "state" } th { "requested" }
                        th { "exit" } th { "usage" } th { "diff" } th { "network" }
                    }
                    @for j in &l.jails {
                        tr {
                            td { a href={ "/events?aggregate=jail/" (j.jail_id) "&start=1" } { code { (j.jail_id) } } }
                            td { code { (j.owner) } }
                            td { (state_name(j.state())) }
                            td { (timestamp(j.requested_at.as_ref())) }
                            @if let Some(f) = &j.finished {
                                td {
                                    (f.exit_code)
                                    @if f.oom_killed { " " span.flag { "OOM" } }
                                    @if f.timed_out { " " span.flag { "timed out" } }
                                    " in " (f.duration_ms) " ms"
                                }
                                td {
                                    @if let Some(u) = &f.usage {
                                        (format!("{:.2}", u.cpu_seconds)) " s CPU, " (mib(u.peak_memory_bytes)) ", "
                                        (u.pids_peak) " pids, " (u.llm_calls) " LLM calls"
                                    } @else { "-" }
                                }
                                td {
                                    "+" (f.paths_added) " ~" (f.paths_modified) " −" (f.paths_deleted)
                                    @if !f.violations.is_empty() { " " span.flag { (f.violations.len()) " policy violations" } }
                                }
                                td { (f.connections_allowed) " allowed, " (f.connections_denied) " denied" }
                            } @else if let Some(f) = &j.failed {
                                td colspan="4" { span.problem { (f.kind().as_str_name()) ": " (truncate(&f.detail, 300)) } }
                            } @else {
                                td colspan="4" { "-" }
                            }
                        }
                    }
                }
                @if !l.next_after.is_empty() { p { "Only the first " (LISTED) " jails are listed." } }
            }
        }
    };
    page("Jails", "/jails", &session, flash, body)
}
