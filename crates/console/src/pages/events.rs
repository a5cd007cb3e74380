//! `/events`: a live view of one stream (or one aggregate) with filters, and
//! `/events/stream`: the server-sent events feeding it.
//!
//! `GET /events/stream?stream=AMAI_AGENTS&aggregate=agent/<id>&type=<t>&actor=<id>&start=new`
//! opens an ordered JetStream consumer (`start` = `new` (default), `all`, or
//! a stream sequence; a reconnecting `EventSource`'s `Last-Event-ID` resumes
//! after the last event it saw). It sends one `ready` event once the consumer
//! exists, then one `amai` event per matching stored event, its `id` the
//! stream sequence and its `data` HTML-safe JSON (`<`, `>` and `&` escaped)
//! with the fields of [`EventView`].
//!
//! Every event is checked with the core's verification step
//! ([`amai_bus::verify::verify_stored`]: decodes, signature valid, stored on
//! its aggregate's subject) and its signing key must be one of the actor's
//! keys (the actor's chain folded by the event store). An event failing either
//! is sent with `verified: false` and the reason, and the page shows it
//! flagged; its claimed fields are never shown as trusted. Chain position and
//! links are what `amai audit` checks; this view does not fold chains.
//!
//! Filters: `type` (comma-separated, matched against the verified type or,
//! for an unverifiable event, its `Amai-Type` header) and `actor` (matched
//! against the verified actor only: an event whose actor cannot be verified
//! never matches an actor filter).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ed25519_dalek::VerifyingKey;
use futures::StreamExt;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use amai_bus::consumer::{self, StartAt};
use amai_bus::proto::payload::Kind;
use amai_bus::store::StoredEvent;
use amai_bus::subjects::AggregateKind;
use amai_bus::Aggregate;

use crate::layout::page;
use crate::render::{html_safe_json, time_ms, truncate, url_encode};
use crate::session::{ApiSession, PageSession};
use crate::AppState;

/// Events buffered per live stream before the consumer waits for the browser.
const BUFFER: usize = 64;
/// How often an open live stream re-checks its session and the console's
/// authority (a signed-out or expired session's streams end).
const RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// Actors whose keys a live stream remembers.
const MAX_CACHED_SIGNERS: usize = 1024;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/events", get(events_page))
        .route("/events/stream", get(events_stream))
}

/// The filters of a live view (query string of both `/events` and
/// `/events/stream`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EventFilter {
    /// Stream name (`AMAI_AGENTS`, ...); implied by `aggregate`.
    #[serde(default)]
    pub stream: String,
    /// One aggregate (`agent/<id>`).
    #[serde(default)]
    pub aggregate: String,
    /// Event types, comma-separated.
    #[serde(default, rename = "type")]
    pub types: String,
    /// The actor's identity id.
    #[serde(default)]
    pub actor: String,
    /// `new` (default), `all`, or a stream sequence.
    #[serde(default)]
    pub start: String,
}

/// A filter checked against the streams.
struct Checked {
    stream: String,
    aggregate: Option<Aggregate>,
    types: Vec<String>,
    actor: Option<String>,
    start: StartAt,
}

impl EventFilter {
    fn check(&self) -> Result<Checked, String> {
        let aggregate = match self.aggregate.trim() {
            "" => None,
            a => Some(
                a.parse::<Aggregate>()
                    .map_err(|e| format!("aggregate {a:?}: {e}"))?,
            ),
        };
        let stream = match (&aggregate, self.stream.trim()) {
            (Some(a), "") => a.stream().to_string(),
            (Some(a), s) if a.stream() != s => {
                return Err(format!("{a} lives on stream {}, not {s}", a.stream()))
            }
            (None, "") => "AMAI_AGENTS".to_string(),
            (_, s) => s.to_string(),
        };
        if AggregateKind::for_stream(&stream).is_none() {
            return Err(format!(
                "unknown stream {stream:?}; Amai streams are {}",
                stream_names().join(", ")
            ));
        }
        let start = match self.start.trim() {
            "" | "new" => StartAt::New,
            "all" => StartAt::All,
            n => StartAt::Sequence(
                n.parse::<u64>()
                    .map_err(|_| format!("start {n:?} is not `new`, `all` or a stream sequence"))?,
            ),
        };
        Ok(Checked {
            stream,
            aggregate,
            types: self
                .types
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            actor: Some(self.actor.trim().to_string()).filter(|a| !a.is_empty()),
            start,
        })
    }

    /// The query string of this filter.
    fn query(&self) -> String {
        format!(
            "stream={}&aggregate={}&type={}&actor={}&start={}",
            url_encode(&self.stream),
            url_encode(&self.aggregate),
            url_encode(&self.types),
            url_encode(&self.actor),
            url_encode(&self.start)
        )
    }
}

fn stream_names() -> Vec<&'static str> {
    AggregateKind::ALL.iter().map(|k| k.stream()).collect()
}

/// One stored event as the console shows it. Only `verified` events' fields
/// come from a checked signature; the others are what the bytes claim.
#[derive(Clone, Debug, Serialize)]
pub struct EventView {
    /// Whether the event verified and its key is one of the actor's.
    pub verified: bool,
    /// Why not, when it did not.
    pub problem: String,
    /// Stream.
    pub stream: String,
    /// Stream sequence.
    pub seq: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Aggregate.
    pub aggregate: String,
    /// Position in the aggregate.
    pub aggregate_seq: u64,
    /// Signer's identity id.
    pub actor: String,
    /// JetStream publish time (RFC 3339).
    pub published: String,
    /// SHA-256 of the stored event, hex.
    pub hash: String,
    /// A short, truncated summary of the payload.
    pub summary: String,
}

/// The signing keys of the actors seen by one view.
#[derive(Default)]
pub(crate) struct SignerKeys {
    keys: HashMap<String, Result<Vec<VerifyingKey>, String>>,
}

impl SignerKeys {
    async fn load(state: &AppState, actor: &str) -> Result<Vec<VerifyingKey>, String> {
        match state.store.identity_state(actor).await {
            Ok(s) => Ok(s.keys.iter().map(|k| k.signing_key).collect()),
            Err(amai_bus::store::ReadError::NotFound(_)) => {
                Err(format!("the actor {actor} is not a registered identity"))
            }
            Err(e) => Err(format!("cannot read the actor {actor}'s keys: {e}")),
        }
    }

    /// `Ok` when `key` is one of `actor`'s keys (re-read once when unknown:
    /// the actor may have rotated since).
    async fn check(
        &mut self,
        state: &AppState,
        actor: &str,
        key: &VerifyingKey,
    ) -> Result<(), String> {
        let holds =
            |r: &Result<Vec<VerifyingKey>, String>| matches!(r, Ok(keys) if keys.contains(key));
        if self.keys.get(actor).is_some_and(holds) {
            return Ok(());
        }
        if self.keys.len() >= MAX_CACHED_SIGNERS {
            self.keys.clear();
        }
        let loaded = Self::load(state, actor).await;
        let result = match &loaded {
            Ok(keys) if keys.contains(key) => Ok(()),
            Ok(_) => Err(format!(
                "signed with a key that is not one of {actor}'s keys"
            )),
            Err(e) => Err(e.clone()),
        };
        self.keys.insert(actor.to_string(), loaded);
        result
    }
}

fn summary(kind: &Kind) -> String {
    match kind {
        Kind::AgentAction(a) => truncate(&a.json, 300),
        other => truncate(&format!("{other:?}"), 200),
    }
}

/// Verifies and describes `stored`.
pub(crate) async fn describe(
    state: &AppState,
    keys: &mut SignerKeys,
    stored: &StoredEvent,
) -> EventView {
    let mut view = EventView {
        verified: false,
        problem: String::new(),
        stream: stored.position.stream.clone(),
        seq: stored.position.seq,
        event_type: stored.event_type.clone().unwrap_or_default(),
        aggregate: String::new(),
        aggregate_seq: 0,
        actor: String::new(),
        published: time_ms(stored.published_ms),
        hash: hex::encode(stored.hash),
        summary: String::new(),
    };
    match amai_bus::verify::verify_stored(stored) {
        Ok(ev) => {
            view.event_type = ev.event_type().to_string();
            view.aggregate = ev.aggregate.to_string();
            view.aggregate_seq = ev.aggregate_seq();
            view.actor = ev.actor().to_string();
            view.summary = summary(&ev.payload);
            match keys.check(state, ev.actor(), &ev.signer).await {
                Ok(()) => view.verified = true,
                Err(e) => view.problem = e,
            }
        }
        Err(failure) => {
            view.problem = format!(
                "{}: {}",
                failure.kind.as_str(),
                truncate(&failure.detail, 300)
            );
            view.aggregate = stored.subject.clone();
        }
    }
    view
}

impl Checked {
    fn matches(&self, view: &EventView) -> bool {
        if !self.types.is_empty() && !self.types.contains(&view.event_type) {
            return false;
        }
        match &self.actor {
            Some(actor) => view.verified && view.actor == *actor,
            None => true,
        }
    }
}

/// The table of events (newest first), the same columns the script fills.
pub(crate) fn table(events: &[EventView]) -> Markup {
    html! {
        table.events {
            thead { (header_row()) }
            tbody {
                @for e in events.iter().rev() { (row(e)) }
            }
        }
    }
}

fn header_row() -> Markup {
    html! {
        tr { th { "check" } th { "published" } th { "stream #seq" } th { "type" } th { "aggregate @seq" } th { "actor" } th { "hash" } th { "payload" } }
    }
}

fn row(e: &EventView) -> Markup {
    html! {
        tr class=(if e.verified { "verified" } else { "flagged" }) data-seq=(e.seq) {
            td { @if e.verified { "✓" } @else { "⚠ " (e.problem) } }
            td { (e.published) }
            td { (e.stream) " #" (e.seq) }
            td { (e.event_type) }
            td { (e.aggregate) @if e.aggregate_seq > 0 { " @" (e.aggregate_seq) } }
            td { (e.actor) }
            td title=(e.hash) { (e.hash.get(..12).unwrap_or(&e.hash)) }
            td { (e.summary) }
        }
    }
}

async fn events_page(
    State(state): State<Arc<AppState>>,
    PageSession(session): PageSession,
    Query(filter): Query<EventFilter>,
) -> Markup {
    let flash = state.sessions.take_flash(&session);
    let checked = filter.check();
    let body = html! {
        form.filters method="get" action="/events" {
            label { "stream " select name="stream" {
                option value="" { "(from aggregate, else AMAI_AGENTS)" }
                @for s in stream_names() {
                    @if s == filter.stream { option value=(s) selected { (s) } } @else { option value=(s) { (s) } }
                }
            } }
            label { "aggregate " input name="aggregate" value=(filter.aggregate) placeholder="agent/<id>"; }
            label { "type " input name="type" value=(filter.types) placeholder="agent.registered,…"; }
            label { "actor " input name="actor" value=(filter.actor) placeholder="identity id"; }
            label { "start " input name="start" value=(filter.start) placeholder="new | all | sequence"; }
            button type="submit" { "Apply" }
        }
        @match &checked {
            Err(e) => p.problem { (e) },
            Ok(c) => {
                p {
                    "Live: " code { (c.stream) }
                    @if let Some(a) = &c.aggregate { " / " code { (a.to_string()) } }
                    " · " span #live-status { "connecting…" }
                }
                table #live-events .events data-src={ "/events/stream?" (filter.query()) } data-state="connecting" {
                    thead { (header_row()) }
                    tbody {}
                }
                p.note { "✓ = signature verified by the core's verification step and signed with one of the actor's keys; ⚠ = failed, shown as untrusted bytes." }
            }
        }
        script src="/static/console.js" {}
    };
    page("Events", "/events", &session, flash, body)
}

fn sse_event(view: &EventView) -> Event {
    let json = serde_json::to_value(view).unwrap_or_default();
    Event::default()
        .event("amai")
        .id(view.seq.to_string())
        .data(html_safe_json(&json))
}

async fn events_stream(
    State(state): State<Arc<AppState>>,
    ApiSession(session): ApiSession,
    headers: HeaderMap,
    Query(filter): Query<EventFilter>,
) -> Response {
    let mut checked = match filter.check() {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    // A reconnecting EventSource resumes right after the last event it saw.
    if let Some(last) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        checked.start = StartAt::Sequence(last + 1);
    }
    let Ok(permit) = state.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live event streams are open: close some console tabs",
        )
            .into_response();
    };
    let replay = match consumer::replay(
        state.store.jetstream(),
        &checked.stream,
        checked.aggregate.as_ref().map(Aggregate::subject),
        checked.start.clone(),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "cannot open a replay of {}: {e}; retry shortly",
                    checked.stream
                ),
            )
                .into_response()
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(BUFFER);
    tokio::spawn(forward(state.clone(), session, checked, replay, tx, permit));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Sends verified, filtered events until the browser leaves, the replay
/// fails, or the console stops.
async fn forward(
    state: Arc<AppState>,
    session: crate::session::Session,
    filter: Checked,
    mut replay: consumer::Replay,
    tx: tokio::sync::mpsc::Sender<Event>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut stopping = state.stopping.clone();
    let ready = serde_json::json!({ "stream": filter.stream });
    if tx
        .send(Event::default().event("ready").data(html_safe_json(&ready)))
        .await
        .is_err()
    {
        return;
    }
    let mut keys = SignerKeys::default();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stopping.borrow() {
            break;
        }
        let item = tokio::select! {
            _ = tx.closed() => break,
            _ = stopping.changed() => break,
            _ = recheck.tick() => {
                let authority = state.authority.check(&state).await;
                if !state.sessions.is_live(&session) || authority.is_err() {
                    let msg = serde_json::json!({ "problem": "the session ended: sign in again" });
                    let _ = tx
                        .send(Event::default().event("interrupted").data(html_safe_json(&msg)))
                        .await;
                    break;
                }
                continue;
            }
            item = replay.next() => item,
        };
        match item {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "console event stream interrupted");
                let msg =
                    serde_json::json!({ "problem": format!("event stream interrupted: {e}") });
                let _ = tx
                    .send(
                        Event::default()
                            .event("interrupted")
                            .data(html_safe_json(&msg)),
                    )
                    .await;
                break;
            }
            Some(Ok((stored, _pending))) => {
                let view = describe(&state, &mut keys, &stored).await;
                if filter.matches(&view) && tx.send(sse_event(&view)).await.is_err() {
                    break;
                }
            }
        }
    }
}
