//! Anthropic endpoints: messages (JSON and SSE) and count_tokens.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{
    answer_text, content_text, estimate_tokens, fake_arguments, prelude, split_deltas, split_json,
    sse_body, sse_event, text_tokens, Api, ErrorKind, Prelude,
};
use crate::Shared;

/// A content block of the answer.
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
}

/// Checks `messages` (and `max_tokens` when `need_max_tokens`) like the API does.
fn validate(p: &Prelude, need_max_tokens: bool) -> Result<&Vec<Value>, Response> {
    let invalid = |message: &str| {
        p.ctx
            .error(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, message)
    };
    if need_max_tokens && p.req.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err(invalid("max_tokens: Field required"));
    }
    match p.req.get("messages").and_then(Value::as_array) {
        Some(messages) if !messages.is_empty() => Ok(messages),
        Some(_) => Err(invalid("messages: at least one message is required")),
        None => Err(invalid("messages: Field required")),
    }
}

/// Input tokens of a messages request (system, messages, tools).
fn input_tokens(req: &Value) -> u64 {
    ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| req.get(*k))
        .map(estimate_tokens)
        .sum()
}

/// The tool to call: the forced one, else the first custom tool; none when the last
/// user turn carries a tool result or `tool_choice` is `none`.
fn pick_tool(req: &Value, messages: &[Value]) -> Option<(String, Value)> {
    let tools = req.get("tools").and_then(Value::as_array)?;
    let choice = req.get("tool_choice");
    if choice.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none") {
        return None;
    }
    let answers_tool = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    if answers_tool {
        return None;
    }
    let forced = choice
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("tool"))
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str);
    tools
        .iter()
        .filter(|t| matches!(t.get("type").and_then(Value::as_str), None | Some("custom")))
        .filter_map(|t| Some((t.get("name")?.as_str()?, t.get("input_schema"))))
        .find(|(name, _)| forced.is_none_or(|f| f == *name))
        .map(|(name, schema)| (name.to_owned(), fake_arguments(schema)))
}

/// `POST /v1/messages`.
pub(crate) async fn messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&shared, Api::Anthropic, &headers, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let messages = match validate(&p, true) {
        Ok(messages) => messages,
        Err(response) => return response,
    };
    let n = shared.next_answer();
    let id = format!("msg_01Fk{:012x}{:010}", shared.nonce, n);
    let user_text = messages
        .iter()
        .rev()
        .find(|m| {
            m.get("role").and_then(Value::as_str) == Some("user")
                && !content_text(m.get("content").unwrap_or(&Value::Null)).is_empty()
        })
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let text = answer_text(n, &user_text);
    let mut blocks = vec![Block::Text(text.clone())];
    let mut output_tokens = text_tokens(&text);
    let stop_reason = match pick_tool(&p.req, messages) {
        Some((name, input)) => {
            output_tokens += text_tokens(&input.to_string()) + 10;
            blocks.push(Block::ToolUse {
                id: format!("toolu_01Fk{:012x}{:010}", shared.nonce, n),
                name,
                input,
            });
            "tool_use"
        }
        None => "end_turn",
    };
    let input_tokens = input_tokens(&p.req);
    let usage = |output_tokens: u64| {
        json!({
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    };
    let message = |content: Value, stop_reason: Value, output_tokens: u64| {
        json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": p.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage(output_tokens),
        })
    };

    if !p.stream {
        let content: Vec<Value> = blocks
            .iter()
            .map(|block| match block {
                Block::Text(text) => json!({"type": "text", "text": text}),
                Block::ToolUse { id, name, input } => {
                    json!({"type": "tool_use", "id": id, "name": name, "input": input})
                }
            })
            .collect();
        let answer = message(json!(content), json!(stop_reason), output_tokens);
        return p.ctx.json_body(&answer, p.behaviour);
    }

    let event = |name: &str, data: Value| sse_event(Some(name), &data);
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
    )];
    for (index, block) in blocks.iter().enumerate() {
        let (start, deltas) = match block {
            Block::Text(text) => (
                json!({"type": "text", "text": ""}),
                split_deltas(text)
                    .into_iter()
                    .map(|t| json!({"type": "text_delta", "text": t}))
                    .collect::<Vec<_>>(),
            ),
            Block::ToolUse { id, name, input } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                // The API opens tool input with an empty partial_json.
                std::iter::once(String::new())
                    .chain(split_json(&input.to_string()))
                    .map(|j| json!({"type": "input_json_delta", "partial_json": j}))
                    .collect(),
            ),
        };
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        if index == 0 {
            events.push(event("ping", json!({"type": "ping"})));
        }
        for delta in deltas {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(event(
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens},
        }),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    let error = event(
        "error",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    p.ctx
        .sse(sse_body(events, p.behaviour, error, p.gate.clone()))
}

/// `POST /v1/messages/count_tokens`.
pub(crate) async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&shared, Api::Anthropic, &headers, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if let Err(response) = validate(&p, false) {
        return response;
    }
    let tokens = input_tokens(&p.req);
    p.ctx
        .json_body(&json!({"input_tokens": tokens}), p.behaviour)
}
