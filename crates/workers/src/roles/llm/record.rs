//! RECORD: forward to the upstream, answer the client, record the interaction.
//!
//! A streamed answer reaches the client event by event as the upstream sends
//! it (each complete SSE event is written as soon as its blank line arrives,
//! byte for byte), while each event is captured with its offset from the start
//! of the call. The terminal event (`[DONE]`, `message_stop`,
//! `response.completed`), and a non-streamed answer, are held back until the
//! recording is durable on `llm/<session>`: every call a client saw complete is
//! replayable. If the recording cannot be stored, the stream ends without its
//! terminal event (the SDKs raise) and a non-streamed call answers 500. A
//! stream that ends without a terminal event is recorded as TRUNCATED; upstream
//! errors (429, 529, 5xx, error events) are recorded as they came, and an
//! unreachable upstream as a 502 the proxy wrote.

use std::time::Instant;

use amai_bus::proto;
use amai_llm::errors::{error_response, ErrorKind};
use amai_llm::sse::{SseEvent, SseSplitter};
use amai_llm::stream::{StreamEventClass, StreamOutcome};
use amai_llm::{usage, Api};
use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::proxy::{refuse, Call, Proxy};

/// Forwards `call` upstream and records it.
pub(crate) async fn record(proxy: &Proxy, call: Call) -> Response {
    let started = Instant::now();
    let api = call.api();
    let (base, key) = match api {
        Api::OpenAi => (&proxy.config.openai_url, &proxy.config.openai_api_key),
        Api::Anthropic => (&proxy.config.anthropic_url, &proxy.config.anthropic_api_key),
    };
    let url = format!(
        "{}{}",
        base.trim_end_matches('/'),
        call.endpoint.upstream_path()
    );
    let mut req = proxy
        .http
        .request(call.method.clone(), &url)
        .timeout(proxy.config.upstream_timeout);
    for (name, value) in call.headers.iter() {
        if amai_llm::headers::is_forwarded_request_header(name.as_str()) {
            req = req.header(name, value);
        }
    }
    if let Some(key) = key {
        req = match api {
            Api::OpenAi => req.bearer_auth(key),
            Api::Anthropic => req.header("x-api-key", key),
        };
    }
    if call.json.is_some() {
        req = req.body(call.body.clone());
    }
    let upstream = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            // Never echo the URL with credentials; reqwest's error names the URL only.
            let detail = format!("upstream {url} unreachable: {}", without_url(&e));
            tracing::warn!(session = %call.session_id(), %detail, "llm upstream unreachable");
            return store_then_answer(proxy, &call, unreachable(api, detail), started).await;
        }
    };
    let status = upstream.status();
    let headers = recorded_headers(upstream.headers());
    let is_sse = upstream
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        let body = match upstream.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let detail = format!("upstream body cut: {}", without_url(&e));
                return store_then_answer(proxy, &call, unreachable(api, detail), started).await;
            }
        };
        let (usage, model) = match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => usage::extract(call.endpoint, &v),
            Err(_) => (proto::LlmUsage::default(), None),
        };
        let outcome = if status.is_success() {
            proto::LlmOutcome::Completed
        } else {
            proto::LlmOutcome::UpstreamError
        };
        let answer = Answer {
            status,
            headers: headers.clone(),
            body: body.clone(),
            events: Vec::new(),
            streamed: false,
            outcome,
            detail: String::new(),
            upstream_model: model.unwrap_or_default(),
            usage,
        };
        return store_then_answer(proxy, &call, answer, started).await;
    }
    // A stream: forward event by event, hold the terminal event back.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let response = build_response(
        status,
        &headers_of(&headers),
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    let proxy = proxy.clone();
    tokio::spawn(async move {
        let mut chunks = upstream.bytes_stream();
        let mut splitter = SseSplitter::new();
        let mut outcome = StreamOutcome::new(call.endpoint);
        let mut usage = usage::UsageFromStream::new(call.endpoint);
        let mut events: Vec<proto::LlmSseEvent> = Vec::new();
        let mut held: Vec<Bytes> = Vec::new();
        let mut client_gone = false;
        let mut detail = String::new();
        let mut on_event = |raw: Bytes,
                            events: &mut Vec<proto::LlmSseEvent>,
                            held: &mut Vec<Bytes>|
         -> Option<Bytes> {
            let parsed = SseEvent::parse(&raw);
            let class = outcome.observe(&parsed);
            usage.observe(&parsed);
            events.push(proto::LlmSseEvent {
                offset_us: started.elapsed().as_micros() as u64,
                raw: raw.to_vec(),
            });
            if class == StreamEventClass::Terminal || !held.is_empty() {
                held.push(raw);
                None
            } else {
                Some(raw)
            }
        };
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    detail = format!("upstream stream cut: {}", without_url(&e));
                    break;
                }
            };
            for raw in splitter.push(&chunk) {
                if let Some(now) = on_event(raw, &mut events, &mut held) {
                    if !client_gone && tx.send(Ok(now)).await.is_err() {
                        // The client left; the interaction still happened and
                        // is recorded in full.
                        client_gone = true;
                    }
                }
            }
        }
        if let Some(rest) = splitter.finish() {
            if let Some(now) = on_event(rest, &mut events, &mut held) {
                if !client_gone {
                    let _ = tx.send(Ok(now)).await;
                }
            }
        }
        let outcome_kind = outcome.outcome();
        if outcome_kind == proto::LlmOutcome::Truncated && detail.is_empty() {
            detail = "the stream ended before its terminal event".to_string();
        }
        let (usage, model) = usage.finish();
        let answer = Answer {
            status,
            headers,
            body: Bytes::new(),
            events,
            streamed: true,
            outcome: outcome_kind,
            detail,
            upstream_model: model.unwrap_or_default(),
            usage,
        };
        match store(&proxy, &call, answer, started).await {
            Ok(()) => {
                for raw in held {
                    if client_gone || tx.send(Ok(raw)).await.is_err() {
                        break;
                    }
                }
            }
            Err(_) => {
                // Not durable: end the stream without its terminal event.
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "the recording could not be stored",
                    )))
                    .await;
            }
        }
    });
    response
}

/// The proxy's own 502 for an upstream it could not reach (or whose body was
/// cut), recorded like an answer so a replay reproduces it.
fn unreachable(api: Api, detail: String) -> Answer {
    let (status, headers, body) = error_response(api, ErrorKind::UpstreamUnreachable, &detail);
    Answer {
        status,
        headers: recorded_headers(&headers),
        body,
        events: Vec::new(),
        streamed: false,
        outcome: proto::LlmOutcome::Unreachable,
        detail,
        upstream_model: String::new(),
        usage: proto::LlmUsage::default(),
    }
}

/// Records a non-streamed answer, then gives it to the client (or, when it
/// could not be stored, the refusal instead: a client never gets an answer
/// that is not replayable).
async fn store_then_answer(
    proxy: &Proxy,
    call: &Call,
    answer: Answer,
    started: Instant,
) -> Response {
    let (status, headers, body) = (
        answer.status,
        headers_of(&answer.headers),
        answer.body.clone(),
    );
    match store(proxy, call, answer, started).await {
        Ok(()) => build_response(status, &headers, Body::from(body)),
        Err(resp) => resp,
    }
}

/// What the upstream answered.
struct Answer {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Bytes,
    events: Vec<proto::LlmSseEvent>,
    streamed: bool,
    outcome: proto::LlmOutcome,
    detail: String,
    upstream_model: String,
    usage: proto::LlmUsage,
}

/// Stores the recording; on failure, the answer to give instead.
async fn store(
    proxy: &Proxy,
    call: &Call,
    answer: Answer,
    started: Instant,
) -> Result<(), Response> {
    let api = call.api();
    let fail = |e: String| {
        tracing::error!(session = %call.session_id(), error = %e, "llm recording not stored");
        refuse(
            api,
            ErrorKind::Internal,
            "the interaction could not be recorded durably; retry",
        )
    };
    let request = super::body::to_llm_body(&proxy.blobs, &call.body, proxy.config.blob_threshold)
        .await
        .map_err(fail)?;
    let response = if answer.streamed {
        None
    } else {
        Some(
            super::body::to_llm_body(&proxy.blobs, &answer.body, proxy.config.blob_threshold)
                .await
                .map_err(fail)?,
        )
    };
    let (events, events_blob) =
        super::body::to_llm_events(&proxy.blobs, answer.events, proxy.config.blob_threshold)
            .await
            .map_err(fail)?;
    let latency_us = started.elapsed().as_micros() as u64;
    let template = proto::LlmInteractionRecorded {
        session_id: call.session_id().to_string(),
        request_hash: call.request_hash.to_vec(),
        occurrence: 0,
        upstream: call.endpoint.upstream() as i32,
        method: call.method.to_string(),
        path: call.path.clone(),
        request: Some(request),
        status: u32::from(answer.status.as_u16()),
        headers: answer.headers.into_iter().collect(),
        streamed: answer.streamed,
        response,
        events,
        events_blob,
        outcome: answer.outcome as i32,
        usage: Some(answer.usage),
        latency_us,
        upstream_model: answer.upstream_model,
        detail: answer.detail,
        imported_from: String::new(),
    };
    proxy
        .writer
        .append_recording(
            call.session_id(),
            &call.request_hash,
            call.cause(),
            &call.correlation,
            |occurrence| proto::LlmInteractionRecorded {
                occurrence,
                ..template.clone()
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| fail(e.to_string()))
}

/// The response headers worth recording, lowercase names, in order.
pub(crate) fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| amai_llm::headers::is_recorded_response_header(n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Recorded headers back into a header map (only headers a recording may
/// hold; values that are not valid header values are dropped).
pub(crate) fn headers_of(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        if !amai_llm::headers::is_recorded_response_header(n) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.insert(name, value);
        }
    }
    map
}

pub(crate) fn build_response(status: StatusCode, headers: &HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers.clone();
    resp
}

/// A reqwest error without its URL (which never holds credentials here, but
/// logs and records name the upstream once, in the message around it).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<upstream>");
    }
    text
}
