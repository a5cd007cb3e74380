//! REPLAY: answer from the recording, byte for byte; a miss never goes upstream.
//!
//! A replay *run* starts with each switch of a session to replay (its id is the
//! id of that owner action, `LlmSession.mode_event_id`). Before the first
//! answer of a run, this instance waits until every event stored on the
//! session stream is in its projection. Within a run:
//!
//! - **strict order** (default): the k-th request must be the k-th recording;
//! - **any order**: a request takes the recording with its request hash and the
//!   next unserved occurrence of that hash;
//! - **allow repeats**: a request matching the recording served just before
//!   (strict) or a hash whose occurrences are used up (any order) gets that
//!   recording again instead of a miss.
//!
//! Run cursors live in the instance that serves the run (see
//! docs/architecture.md: a replay run is served by one proxy instance).
//!
//! A recorded stream is written event by event with its original boundaries,
//! instantly or at its recorded offsets (`x-amai-replay-timing: recorded`, or
//! the session's timing option). A miss appends `llm.replay_missed` and answers
//! 404 in the API's format with `x-should-retry: false`, naming the session,
//! the step, the nearest recorded request and the field-level differences.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amai_bus::proto;
use amai_llm::canonical::{self, IgnoredFields};
use amai_llm::errors::ErrorKind;
use axum::body::{Body, Bytes};
use axum::response::Response;
use http::StatusCode;

use super::model::Recording;
use super::proxy::{refuse, Call, Proxy, REPLAY_TIMING_HEADER};
use super::record::{build_response, headers_of};

/// Most differences listed in a miss.
const MAX_DIFF_LINES: usize = 20;

/// Strict order: (seq, request hash) of every recording, in order.
type RecordingOrder = Arc<Vec<(u64, Vec<u8>)>>;

#[derive(Default)]
struct RunState {
    run_id: String,
    ready: bool,
    step: u64,
    cursor: usize,
    served: HashMap<Vec<u8>, u32>,
    order: Option<RecordingOrder>,
}

/// Replay cursors of the sessions this instance serves.
#[derive(Clone, Default)]
pub(crate) struct ReplayRuns {
    runs: Arc<Mutex<HashMap<String, RunState>>>,
}

enum Decision {
    Serve(Box<Recording>),
    Miss {
        step: u64,
        occurrence: u32,
        nearest: Option<Box<Recording>>,
        reason: String,
    },
}

/// Answers `call` from the recording.
pub(crate) async fn replay(proxy: &Proxy, call: Call) -> Response {
    let api = call.api();
    let source = if call.session.replay_from.is_empty() {
        call.session.session_id.clone()
    } else {
        call.session.replay_from.clone()
    };
    if let Err(resp) = ensure_ready(proxy, &call, &source).await {
        return resp;
    }
    let decision = match decide(proxy, &call, &source) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(session = %call.session_id(), error = %e, "llm replay");
            return refuse(
                api,
                ErrorKind::Internal,
                "the llm read model failed; see the role's log",
            );
        }
    };
    match decision {
        Decision::Serve(rec) => serve(proxy, &call, *rec).await,
        Decision::Miss {
            step,
            occurrence,
            nearest,
            reason,
        } => miss(proxy, &call, &source, step, occurrence, nearest, reason).await,
    }
}

async fn ensure_ready(proxy: &Proxy, call: &Call, source: &str) -> Result<(), Response> {
    let ready = {
        let runs = lock(&proxy.replay.runs);
        runs.get(call.session_id())
            .is_some_and(|r| r.run_id == call.cause() && r.ready)
    };
    if ready {
        return Ok(());
    }
    proxy.queries.wait_recordings(source).await.map_err(|e| {
        refuse(
            call.api(),
            ErrorKind::Internal,
            format!("the recordings of llm session {source} are not all loaded yet ({e}); retry"),
        )
    })?;
    let mut runs = lock(&proxy.replay.runs);
    let state = runs.entry(call.session_id().to_string()).or_default();
    if state.run_id != call.cause() {
        *state = RunState {
            run_id: call.cause().to_string(),
            ..Default::default()
        };
    }
    state.ready = true;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves cursors that are still consistent
    // (every update is a single assignment), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn decide(
    proxy: &Proxy,
    call: &Call,
    source: &str,
) -> Result<Decision, super::model::ReadModelError> {
    let options = call.options();
    let any_order = options.order == proto::LlmReplayOrder::Any as i32;
    let hash = call.request_hash.to_vec();
    let mut runs = lock(&proxy.replay.runs);
    let state = runs.entry(call.session_id().to_string()).or_default();
    if state.run_id != call.cause() {
        *state = RunState {
            run_id: call.cause().to_string(),
            ready: true,
            ..Default::default()
        };
    }
    let step = state.step;
    if any_order {
        let occurrence = state.served.get(&hash).copied().unwrap_or(0);
        if let Some(rec) = proxy.model.recording_for(source, &hash, occurrence)? {
            *state.served.entry(hash).or_default() += 1;
            state.step += 1;
            return Ok(Decision::Serve(Box::new(rec)));
        }
        if options.allow_repeats && occurrence > 0 {
            if let Some(rec) = proxy.model.recording_for(source, &hash, occurrence - 1)? {
                state.step += 1;
                return Ok(Decision::Serve(Box::new(rec)));
            }
        }
        let reason = if occurrence > 0 {
            format!("the request was recorded {occurrence} time(s) and every occurrence was served")
        } else {
            "no recording has this request".to_string()
        };
        return Ok(Decision::Miss {
            step,
            occurrence,
            nearest: None,
            reason,
        });
    }
    // The order is loaded once per run, and again whenever the projection holds
    // more recordings than the loaded order (an import still being applied,
    // a recording stored just after the switch): a request must never miss for
    // want of a recording the projection already has.
    let applied = proxy.model.counters(source)?.recordings as usize;
    let order = match &state.order {
        Some(o) if o.len() == applied => o.clone(),
        _ => {
            let list = Arc::new(proxy.model.recording_order(source)?);
            state.order = Some(list.clone());
            list
        }
    };
    if let Some((seq, expected)) = order.get(state.cursor) {
        if *expected == hash {
            let seq = *seq;
            state.cursor += 1;
            state.step += 1;
            *state.served.entry(hash).or_default() += 1;
            drop(runs);
            return match proxy.model.recording(source, seq)? {
                Some(rec) => Ok(Decision::Serve(Box::new(rec))),
                None => Ok(Decision::Miss {
                    step,
                    occurrence: 0,
                    nearest: None,
                    reason: "the recording disappeared from the read model".into(),
                }),
            };
        }
    }
    if options.allow_repeats && state.cursor > 0 {
        if let Some((seq, previous)) = order.get(state.cursor - 1) {
            if *previous == hash {
                let seq = *seq;
                state.step += 1;
                drop(runs);
                if let Some(rec) = proxy.model.recording(source, seq)? {
                    return Ok(Decision::Serve(Box::new(rec)));
                }
                return Ok(Decision::Miss {
                    step,
                    occurrence: 0,
                    nearest: None,
                    reason: "the recording disappeared from the read model".into(),
                });
            }
        }
    }
    let occurrence = state.served.get(&hash).copied().unwrap_or(0);
    let cursor = state.cursor;
    let expected = order.get(cursor).map(|(seq, _)| *seq);
    drop(runs);
    let (nearest, reason) = match expected {
        Some(seq) => (
            proxy.model.recording(source, seq)?.map(Box::new),
            format!("strict order: step {step} expects recording {}", cursor + 1),
        ),
        None => (
            None,
            format!(
                "strict order: every one of the {} recordings was served",
                order.len()
            ),
        ),
    };
    Ok(Decision::Miss {
        step,
        occurrence,
        nearest,
        reason,
    })
}

async fn serve(proxy: &Proxy, call: &Call, rec: Recording) -> Response {
    let api = call.api();
    let started = Instant::now();
    let r = rec.interaction;
    let status = u16::try_from(r.status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let pairs: Vec<(String, String)> = r.headers.clone().into_iter().collect();
    let headers = headers_of(&pairs);
    if !r.streamed {
        return match super::body::read_llm_body(&proxy.blobs, r.response.as_ref()).await {
            Ok(body) => build_response(status, &headers, Body::from(body)),
            Err(e) => refuse(
                api,
                ErrorKind::Internal,
                format!("recorded body unreadable: {e}"),
            ),
        };
    }
    let events = match super::body::read_llm_events(&proxy.blobs, &r).await {
        Ok(e) => e,
        Err(e) => {
            return refuse(
                api,
                ErrorKind::Internal,
                format!("recorded stream unreadable: {e}"),
            )
        }
    };
    let recorded_timing = match call
        .headers
        .get(REPLAY_TIMING_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some("recorded") => true,
        Some("instant") => false,
        _ => call.options().timing == proto::LlmReplayTiming::Recorded as i32,
    };
    let stream = futures::stream::iter(events).then(move |e| async move {
        if recorded_timing {
            let at = started + Duration::from_micros(e.offset_us);
            tokio::time::sleep_until(at.into()).await;
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(e.raw))
    });
    build_response(status, &headers, Body::from_stream(stream))
}

async fn miss(
    proxy: &Proxy,
    call: &Call,
    source: &str,
    step: u64,
    occurrence: u32,
    nearest: Option<Box<Recording>>,
    reason: String,
) -> Response {
    let api = call.api();
    let ignored = IgnoredFields::from_options(&call.options());
    let actual = call
        .json
        .as_ref()
        .map(|v| canonical::canonical_body(v, &ignored))
        .unwrap_or(serde_json::Value::Null);
    let nearest = match nearest {
        Some(n) => Some(*n),
        None => nearest_by_content(proxy, call, source, &actual, &ignored).await,
    };
    let (nearest_seq, diff) = match &nearest {
        Some(n) => {
            let body = super::body::read_llm_body(&proxy.blobs, n.interaction.request.as_ref())
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .map(|v| canonical::canonical_body(&v, &ignored))
                .unwrap_or(serde_json::Value::Null);
            let mut lines: Vec<String> = Vec::new();
            if n.interaction.path != call.path || n.interaction.method != call.method.as_str() {
                lines.push(format!(
                    "request: {} {} != {} {}",
                    n.interaction.method, n.interaction.path, call.method, call.path
                ));
            }
            lines.extend(
                amai_llm::diff::field_diff(&body, &actual)
                    .iter()
                    .map(|d| d.to_string()),
            );
            lines.truncate(MAX_DIFF_LINES);
            (n.seq, lines)
        }
        None => (0, Vec::new()),
    };
    let record = proto::LlmReplayMissed {
        session_id: call.session_id().to_string(),
        request_hash: call.request_hash.to_vec(),
        occurrence,
        method: call.method.to_string(),
        path: call.path.clone(),
        run_id: call.cause().to_string(),
        step,
        nearest_seq,
        diff: diff.clone(),
        reason: reason.clone(),
    };
    if let Err(e) = proxy
        .writer
        .append_miss(call.session_id(), call.cause(), &call.correlation, record)
        .await
    {
        tracing::error!(session = %call.session_id(), error = %e, "llm.replay_missed not stored");
    }
    let mut message = format!(
        "replay miss in llm session {} at step {step} (occurrence {occurrence} of this request): {reason}",
        call.session_id()
    );
    match nearest_seq {
        0 => message.push_str("; nothing recorded is near it"),
        seq => {
            message.push_str(&format!(
                "; nearest recorded request: seq {seq} of llm/{source}"
            ));
            if diff.is_empty() {
                message.push_str(" (identical once ignored fields are removed)");
            } else {
                message.push_str("; differences (recorded != this request): ");
                message.push_str(&diff.join("; "));
            }
        }
    }
    refuse(api, ErrorKind::ReplayMiss, message)
}

/// The recording of `source` nearest to the request, among those of the same
/// endpoint.
async fn nearest_by_content(
    proxy: &Proxy,
    call: &Call,
    source: &str,
    actual: &serde_json::Value,
    ignored: &IgnoredFields,
) -> Option<Recording> {
    let candidates: Vec<Recording> = proxy
        .model
        .recordings(source)
        .ok()?
        .into_iter()
        .filter(|r| r.interaction.path == call.path)
        .collect();
    let mut bodies = Vec::with_capacity(candidates.len());
    for c in &candidates {
        let body = super::body::read_llm_body(&proxy.blobs, c.interaction.request.as_ref())
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| canonical::canonical_body(&v, ignored))
            .unwrap_or(serde_json::Value::Null);
        bodies.push(body);
    }
    let refs: Vec<&serde_json::Value> = bodies.iter().collect();
    let index = amai_llm::diff::nearest(actual, &refs)?;
    candidates.into_iter().nth(index)
}

use futures::StreamExt as _;
