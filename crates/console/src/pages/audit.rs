//! `/audit`: the audit role's status (`amai.query.audit.status`), the latest
//! checkpoint of each audited stream with its witnesses' cosignatures, and
//! the operator action "request checkpoint".
//!
//! `POST /audit/checkpoint` (same origin, CSRF token, a session) asks the
//! audit role to checkpoint a stream now (`amai.query.audit.request_checkpoint`),
//! exactly what the gateway's `RequestCheckpoint` forwards once it has
//! authenticated an unrevoked operator: here the console's own operator
//! authority is re-checked with the session (see [`crate::session`]). The
//! audit role signs and appends the `audit.checkpointed` event with its
//! service key.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use amai_bus::proto;
use amai_bus::query::{AUDIT_CHECKPOINT, AUDIT_REQUEST_CHECKPOINT, AUDIT_STATUS};
use amai_bus::subjects::AggregateKind;

use crate::layout::{page, role_problem};
use crate::render::short_hex;
use crate::roles::{ask, ask_within, Role, RoleError};
use crate::security::{check_post, Refusal};
use crate::session::{ApiSession, PageSession};
use crate::AppState;

/// How long a requested checkpoint may take.
pub const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/audit", get(audit))
        .route("/audit/checkpoint", post(request_checkpoint))
}

/// The signers of a checkpoint note: the names on its signature lines
/// (`— <name> <signature>`), the log's own first.
fn note_signers(note: &str) -> Vec<String> {
    note.lines()
        .filter_map(|l| l.strip_prefix("— "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

async fn audit(State(state): State<Arc<AppState>>, PageSession(session): PageSession) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let status = ask::<_, proto::AuditStatus>(
        &state,
        Role::Audit,
        AUDIT_STATUS,
        &proto::GetAuditStatusRequest {},
    )
    .await;
    let mut latest: Vec<Option<Result<proto::Checkpoint, RoleError>>> = Vec::new();
    if let Ok(s) = &status {
        for st in &s.streams {
            let cp = if st.checkpoint_size == 0 {
                None
            } else {
                Some(
                    ask::<_, proto::Checkpoint>(
                        &state,
                        Role::Audit,
                        AUDIT_CHECKPOINT,
                        &proto::GetCheckpointRequest {
                            stream: st.stream.clone(),
                            tree_size: 0,
                        },
                    )
                    .await,
                )
            };
            latest.push(cp);
        }
    }
    let body = html! {
        @match &status {
            Err(e) => (role_problem(e)),
            Ok(s) => {
                p { "Log key " code { (short_hex(&s.log_key)) "…" } ", " (s.audit_stream_last_seq) " events in AMAI_AUDIT." }
                table.audit #audit-status {
                    tr {
                        th { "stream" } th { "stream last seq" } th { "tree size" } th { "checkpoint size" }
                        th { "latest checkpoint" } th { "signers" } th { "state" } th {}
                    }
                    @for (st, cp) in s.streams.iter().zip(latest.iter()) {
                        tr data-stream=(st.stream) {
                            td { code { (st.stream) } }
                            td.num { (st.stream_last_seq) }
                            td.num { (st.tree_size) }
                            td.num.checkpoint-size { (st.checkpoint_size) }
                            @match cp {
                                None => { td { "none yet" } td {} }
                                Some(Ok(c)) => {
                                    td {
                                        @if let Some(a) = &c.checkpoint {
                                            "size " (a.tree_size) ", root " code { (short_hex(&a.root_hash)) "…" }
                                            @if let Some(ev) = &c.event {
                                                @if let Some(pos) = &ev.position { " (AMAI_AUDIT #" (pos.seq) ")" }
                                            }
                                        }
                                    }
                                    td {
                                        @let signers = note_signers(if c.cosigned_note.is_empty() {
                                            c.checkpoint.as_ref().map(|a| a.note.as_str()).unwrap_or_default()
                                        } else { &c.cosigned_note });
                                        (signers.len()) ": " (signers.join(", "))
                                    }
                                }
                                Some(Err(e)) => { td colspan="2" { span.problem { (e.to_string()) } } }
                            }
                            td {
                                @if st.diverged { span.flag { "DIVERGED" } }
                                @else if st.gaps > 0 { span.flag { (st.gaps) " gaps" } }
                                @else { "ok" }
                            }
                            td {
                                form method="post" action="/audit/checkpoint" {
                                    input type="hidden" name="csrf" value=(session.csrf);
                                    input type="hidden" name="stream" value=(st.stream);
                                    button type="submit" name="request" value="1" { "request checkpoint" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Audit", "/audit", &session, flash, body)
}

#[derive(Deserialize)]
struct CheckpointForm {
    csrf: Option<String>,
    #[serde(default)]
    stream: String,
}

async fn request_checkpoint(
    State(state): State<Arc<AppState>>,
    ApiSession(session): ApiSession,
    headers: HeaderMap,
    Form(form): Form<CheckpointForm>,
) -> Response {
    if let Err(refusal) = check_post(&state.site, &headers, &session.csrf, form.csrf.as_deref()) {
        return refusal.into_response();
    }
    let known = AggregateKind::for_stream(&form.stream).is_some()
        || form.stream == amai_bus::streams::TRUST_FEED_STREAM;
    if !known {
        return Refusal {
            status: axum::http::StatusCode::BAD_REQUEST,
            reason: format!("{:?} is not an Amai stream", form.stream),
        }
        .into_response();
    }
    let req = proto::RequestCheckpointRequest {
        stream: form.stream.clone(),
    };
    let message = match ask_within::<_, proto::Checkpoint>(
        &state,
        Role::Audit,
        AUDIT_REQUEST_CHECKPOINT,
        &req,
        CHECKPOINT_TIMEOUT,
    )
    .await
    {
        Ok(cp) => {
            let size = cp.checkpoint.as_ref().map_or(0, |c| c.tree_size);
            tracing::info!(stream = %form.stream, size, operator = %state.operator_id, "checkpoint requested from the console");
            format!(
                "checkpoint of {} requested: signed at tree size {size}",
                form.stream
            )
        }
        Err(e) => format!("checkpoint of {} failed: {e}", form.stream),
    };
    state.sessions.set_flash(&session, message);
    Redirect::to("/audit").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signers_are_read_from_the_signature_lines() {
        let note = "origin\n3\nabc=\n\n— log.example AAAA\n— witness.example BBBB\n";
        assert_eq!(note_signers(note), vec!["log.example", "witness.example"]);
    }
}
