//! OpenAI endpoints: chat completions, responses, embeddings, models.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::common::{
    answer_text, base64, content_text, estimate_tokens, fake_arguments, is_anthropic_client,
    obfuscation, prelude, split_deltas, split_json, sse_body, sse_event, text_tokens, unix_now,
    Api, Behaviour, Ctx,
};
use crate::Shared;

const SYSTEM_FINGERPRINT: &str = "fp_fake0001";

/// Models listed by `GET /v1/models`.
const MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-5",
    "gpt-5-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "fake-429",
    "fake-529",
    "fake-500",
    "fake-404",
    "fake-cut",
    "fake-cut-clean",
    "fake-midstream-error",
    "fake-slow",
];

/// Claude models listed by `GET /v1/models` for Anthropic clients.
const CLAUDE_MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    (
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
];

/// The tool to call, if the request offers tools and does not answer one already.
struct ToolCall {
    name: String,
    arguments: String,
}

/// Picks the tool a request should call: the forced one, else the first function.
fn pick_tool(
    req: &Value,
    tools: Option<&Vec<Value>>,
    last_is_tool_result: bool,
) -> Option<ToolCall> {
    let tools = tools?;
    if last_is_tool_result {
        return None;
    }
    let choice = req.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    // Chat: {"type":"function","function":{"name":..}}; responses: {"type":"function","name":..}.
    let forced = choice.and_then(|c| {
        c.pointer("/function/name")
            .or_else(|| c.get("name"))
            .and_then(Value::as_str)
    });
    let functions = tools.iter().filter_map(|tool| {
        let function = tool.get("function").unwrap_or(tool);
        let is_function = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function")
            == "function";
        let name = function.get("name").and_then(Value::as_str)?;
        is_function.then_some((name, function.get("parameters")))
    });
    let mut functions = functions.collect::<Vec<_>>();
    if let Some(forced) = forced {
        functions.retain(|(name, _)| *name == forced);
    }
    let (name, schema) = functions.into_iter().next()?;
    Some(ToolCall {
        name: name.to_owned(),
        arguments: fake_arguments(schema).to_string(),
    })
}

/// The API's 400 for a missing required parameter.
fn missing(ctx: &Ctx, param: &str) -> Response {
    let body = json!({"error": {
        "message": format!("Missing required parameter: '{param}'."),
        "type": "invalid_request_error",
        "param": param,
        "code": "missing_required_parameter",
    }});
    ctx.json(StatusCode::BAD_REQUEST, &body)
}

/// `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&shared, Api::OpenAi, &headers, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(messages) = p.req.get("messages").and_then(Value::as_array) else {
        return missing(&p.ctx, "messages");
    };
    let n = shared.next_answer();
    let id = format!("chatcmpl-Fk{:012x}{:015}", shared.nonce, n);
    let created = unix_now();
    let last = messages.last();
    let last_is_tool_result =
        last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool");
    let user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default();
    let tool = pick_tool(
        &p.req,
        p.req.get("tools").and_then(Value::as_array),
        last_is_tool_result,
    );
    let text = answer_text(n, &user_text);
    let prompt_tokens =
        estimate_tokens(&p.req["messages"]) + p.req.get("tools").map(estimate_tokens).unwrap_or(0);
    let completion_tokens = match &tool {
        Some(tool) => text_tokens(&tool.arguments) + 5,
        None => text_tokens(&text),
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    });
    let call_id = format!("call_Fk{:012x}{:010}", shared.nonce, n);
    let finish_reason = if tool.is_some() { "tool_calls" } else { "stop" };

    if !p.stream {
        let message = match &tool {
            Some(tool) => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool.name, "arguments": tool.arguments},
                }],
                "refusal": null,
                "annotations": [],
            }),
            None => {
                json!({"role": "assistant", "content": text, "refusal": null, "annotations": []})
            }
        };
        let answer = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": p.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        return p.ctx.json_body(&answer, p.behaviour);
    }

    let include_usage = p
        .req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let obfuscate = p
        .req
        .pointer("/stream_options/include_obfuscation")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut seq = 0u64;
    let mut chunk = |choices: Value, usage: Option<&Value>| -> Bytes {
        seq += 1;
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": p.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        });
        if include_usage {
            c["usage"] = usage.cloned().unwrap_or(Value::Null);
        }
        if obfuscate {
            c["obfuscation"] = json!(obfuscation(n * 1000 + seq, 1 + (seq as usize * 7) % 14));
        }
        sse_event(None, &c)
    };
    let delta = |delta: Value, finish: Option<&str>| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    let mut events = Vec::new();
    match &tool {
        Some(tool) => {
            events.push(chunk(
                delta(
                    json!({
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{
                            "index": 0,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": tool.name, "arguments": ""},
                        }],
                        "refusal": null,
                    }),
                    None,
                ),
                None,
            ));
            for part in split_json(&tool.arguments) {
                events.push(chunk(
                    delta(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                        None,
                    ),
                    None,
                ));
            }
        }
        None => {
            events.push(chunk(
                delta(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                ),
                None,
            ));
            for part in split_deltas(&text) {
                events.push(chunk(delta(json!({"content": part}), None), None));
            }
        }
    }
    events.push(chunk(delta(json!({}), Some(finish_reason)), None));
    if include_usage {
        events.push(chunk(json!([]), Some(&usage)));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let error = sse_event(
        None,
        &json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": null,
            "code": null,
        }}),
    );
    p.ctx
        .sse(sse_body(events, p.behaviour, error, p.gate.clone()))
}

/// `POST /v1/responses`.
pub(crate) async fn responses(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&shared, Api::OpenAi, &headers, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let Some(input) = p.req.get("input").filter(|i| !i.is_null()) else {
        return missing(&p.ctx, "input");
    };
    let n = shared.next_answer();
    let id = format!("resp_Fk{:012x}{:036}", shared.nonce, n);
    let created_at = unix_now();
    let (user_text, last_is_tool_result) = match input {
        Value::String(s) => (s.clone(), false),
        Value::Array(items) => {
            let text = items
                .iter()
                .rev()
                .find(|i| i.get("role").and_then(Value::as_str) == Some("user"))
                .and_then(|i| i.get("content"))
                .map(content_text)
                .unwrap_or_default();
            let last_type = items
                .last()
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str);
            (text, last_type == Some("function_call_output"))
        }
        _ => (String::new(), false),
    };
    let tool = pick_tool(
        &p.req,
        p.req.get("tools").and_then(Value::as_array),
        last_is_tool_result,
    );
    let text = answer_text(n, &user_text);
    let input_tokens = estimate_tokens(input)
        + p.req.get("instructions").map(estimate_tokens).unwrap_or(0)
        + p.req.get("tools").map(estimate_tokens).unwrap_or(0);
    let output_tokens = match &tool {
        Some(tool) => text_tokens(&tool.arguments) + 5,
        None => text_tokens(&text),
    };
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let item_id = match &tool {
        Some(_) => format!("fc_Fk{:012x}{:036}", shared.nonce, n),
        None => format!("msg_Fk{:012x}{:036}", shared.nonce, n),
    };
    let call_id = format!("call_Fk{:012x}{:010}", shared.nonce, n);
    let item = |status: &str, full: bool| match &tool {
        Some(tool) => json!({
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": if full { tool.arguments.as_str() } else { "" },
            "call_id": call_id,
            "name": tool.name,
        }),
        None => json!({
            "id": item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": if full {
                json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text}])
            } else {
                json!([])
            },
        }),
    };
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        let param = |name: &str, default: Value| p.req.get(name).cloned().unwrap_or(default);
        json!({
            "id": id,
            "object": "response",
            "created_at": created_at,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": param("instructions", Value::Null),
            "max_output_tokens": param("max_output_tokens", Value::Null),
            "max_tool_calls": null,
            "model": p.model,
            "output": output,
            "parallel_tool_calls": param("parallel_tool_calls", json!(true)),
            "previous_response_id": param("previous_response_id", Value::Null),
            "prompt_cache_key": null,
            "reasoning": {"effort": null, "summary": null},
            "safety_identifier": null,
            "service_tier": "default",
            "store": param("store", json!(true)),
            "temperature": param("temperature", json!(1.0)),
            "text": param("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
            "tool_choice": param("tool_choice", json!("auto")),
            "tools": param("tools", json!([])),
            "top_logprobs": 0,
            "top_p": param("top_p", json!(1.0)),
            "truncation": param("truncation", json!("disabled")),
            "usage": usage,
            "user": null,
            "metadata": param("metadata", json!({})),
        })
    };
    let completed = response("completed", vec![item("completed", true)], usage);

    if !p.stream {
        return p.ctx.json_body(&completed, p.behaviour);
    }

    let mut seq = 0u64;
    let mut event = |name: &str, mut data: Value| -> Bytes {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        sse_event(Some(name), &data)
    };
    let in_progress = response("in_progress", vec![], Value::Null);
    let mut events = vec![
        event("response.created", json!({"response": in_progress})),
        event("response.in_progress", json!({"response": in_progress})),
        event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", false)}),
        ),
    ];
    match &tool {
        Some(tool) => {
            for (k, part) in split_json(&tool.arguments).into_iter().enumerate() {
                events.push(event(
                    "response.function_call_arguments.delta",
                    json!({
                        "item_id": item_id,
                        "output_index": 0,
                        "delta": part,
                        "obfuscation": obfuscation(n * 1000 + k as u64, 1 + (k * 5) % 12),
                    }),
                ));
            }
            events.push(event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "name": tool.name, "arguments": tool.arguments}),
            ));
        }
        None => {
            let part = |t: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": t});
            events.push(event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part("")}),
            ));
            for (k, delta) in split_deltas(&text).into_iter().enumerate() {
                events.push(event(
                    "response.output_text.delta",
                    json!({
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": delta,
                        "logprobs": [],
                        "obfuscation": obfuscation(n * 1000 + k as u64, 1 + (k * 5) % 12),
                    }),
                ));
            }
            events.push(event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
            ));
            events.push(event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part(&text)}),
            ));
        }
    }
    events.push(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": item("completed", true)}),
    ));
    events.push(event("response.completed", json!({"response": completed})));
    let error = event(
        "error",
        json!({
            "code": "server_error",
            "message": "The server had an error while processing your request. Sorry about that!",
            "param": null,
        }),
    );
    p.ctx
        .sse(sse_body(events, p.behaviour, error, p.gate.clone()))
}

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match prelude(&shared, Api::OpenAi, &headers, &body).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let inputs: Vec<Value> = match p.req.get("input") {
        Some(Value::String(s)) => vec![json!(s)],
        // A list of token ids is one input; a list of strings or token lists is many.
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![Value::Array(items.clone())]
        }
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => return missing(&p.ctx, "input"),
    };
    let n = shared.next_answer();
    let dimensions = p
        .req
        .get("dimensions")
        .and_then(Value::as_u64)
        .filter(|d| (1..=8192).contains(d))
        .unwrap_or(1536) as usize;
    let base64_format = p.req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            tokens += estimate_tokens(input);
            let mut hasher = DefaultHasher::new();
            input.to_string().hash(&mut hasher);
            n.hash(&mut hasher);
            let vector = fake_vector(hasher.finish(), dimensions);
            let embedding = if base64_format {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64(&bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let answer = json!({
        "object": "list",
        "data": data,
        "model": p.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    p.ctx.json_body(&answer, p.behaviour)
}

/// A unit vector of `dimensions` pseudo-random components.
fn fake_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// `GET /v1/models` (OpenAI list, or Anthropic list for `x-api-key` callers).
pub(crate) async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let api = if is_anthropic_client(&headers) {
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    let ctx = Ctx::new(&shared, api);
    if let Some(response) = ctx.authenticate(&shared, &headers) {
        return response;
    }
    let body = match api {
        Api::OpenAi => json!({
            "object": "list",
            "data": MODELS.iter().map(|id| openai_model(id)).collect::<Vec<_>>(),
        }),
        Api::Anthropic => json!({
            "data": CLAUDE_MODELS.iter().map(|m| claude_model(*m)).collect::<Vec<_>>(),
            "has_more": false,
            "first_id": CLAUDE_MODELS.first().map(|m| m.0),
            "last_id": CLAUDE_MODELS.last().map(|m| m.0),
        }),
    };
    ctx.json(StatusCode::OK, &body)
}

/// `GET /v1/models/{model}`.
pub(crate) async fn get_model(
    State(shared): State<Arc<Shared>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    let api = if is_anthropic_client(&headers) {
        Api::Anthropic
    } else {
        Api::OpenAi
    };
    let ctx = Ctx::new(&shared, api);
    if let Some(response) = ctx.authenticate(&shared, &headers) {
        return response;
    }
    match api {
        Api::OpenAi if MODELS.contains(&model.as_str()) => {
            ctx.json(StatusCode::OK, &openai_model(&model))
        }
        Api::Anthropic => match CLAUDE_MODELS.iter().find(|m| m.0 == model) {
            Some(m) => ctx.json(StatusCode::OK, &claude_model(*m)),
            None => ctx
                .behaviour_error(Behaviour::NotFound, &model)
                .unwrap_or_else(|| ctx.json(StatusCode::NOT_FOUND, &json!({}))),
        },
        Api::OpenAi => ctx
            .behaviour_error(Behaviour::NotFound, &model)
            .unwrap_or_else(|| ctx.json(StatusCode::NOT_FOUND, &json!({}))),
    }
}

fn openai_model(id: &str) -> Value {
    let owned_by = if id.starts_with("fake-") {
        "amai"
    } else {
        "system"
    };
    json!({"id": id, "object": "model", "created": 1_715_367_049u64, "owned_by": owned_by})
}

fn claude_model((id, name, created): (&str, &str, &str)) -> Value {
    json!({"type": "model", "id": id, "display_name": name, "created_at": created})
}
