//! Raw-HTTP checks of the fake upstream's answers: JSON shapes, SSE framing and
//! event order, errors, behaviour switches and the request log.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use amai_llm_fake_upstream::FakeUpstream;
use serde_json::{json, Value};

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// SSE events as (event name, data) pairs.
    fn events(&self) -> Vec<(Option<String>, String)> {
        assert!(
            self.body.ends_with("\n\n"),
            "SSE body must end with a blank line: {:?}",
            self.body
        );
        self.body
            .trim_end()
            .split("\n\n")
            .map(|frame| {
                let mut name = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(v.to_owned());
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                (name, data.expect("an SSE event without data"))
            })
            .collect()
    }
}

async fn post(url: String, headers: &[(&str, &str)], body: Value) -> Reply {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn openai(fake: &FakeUpstream, path: &str, body: Value) -> Reply {
    let auth = format!("Bearer {}", fake.openai_key());
    post(
        format!("{}{path}", fake.openai_base_url()),
        &[("authorization", &auth)],
        body,
    )
    .await
}

async fn anthropic(fake: &FakeUpstream, path: &str, body: Value) -> Reply {
    post(
        format!("{}{path}", fake.anthropic_base_url()),
        &[
            ("x-api-key", fake.anthropic_key()),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    )
    .await
}

fn weather_tool_openai() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test]
async fn chat_completion_json_and_answers_differ() {
    let fake = FakeUpstream::start().await.unwrap();
    let request = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]});
    let first = openai(&fake, "/chat/completions", request.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.header("x-request-id").starts_with("req_"));
    first.header("openai-processing-ms").parse::<u64>().unwrap();
    let a = first.json();
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "gpt-4o-mini");
    assert!(a["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        a["choices"][0]["message"]["content"],
        "fake answer #1 to: hello there"
    );
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    let usage = &a["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let b = openai(&fake, "/chat/completions", request).await.json();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(
        b["choices"][0]["message"]["content"],
        "fake answer #2 to: hello there"
    );

    // A second fake never repeats the first one's ids.
    let other = FakeUpstream::start().await.unwrap();
    let c = openai(
        &other,
        "/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await
    .json();
    assert_ne!(a["id"], c["id"]);
    assert_eq!(fake.hits_for("/v1/chat/completions"), 2);
    assert_eq!(fake.answers(), 2);
}

#[tokio::test]
async fn chat_completion_stream_with_usage_and_tool_calls() {
    let fake = FakeUpstream::start().await.unwrap();
    let reply = openai(
        &fake,
        "/chat/completions",
        json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": "stream please"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .starts_with("text/event-stream"));
    let events = reply.events();
    assert_eq!(events.last().unwrap(), &(None, "[DONE]".to_owned()));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert!(name.is_none(), "chat chunks have no event name");
            serde_json::from_str(data).unwrap()
        })
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == chunks[0]["id"]
        && c["obfuscation"].is_string()));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "fake answer #1 to: stream please");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["usage"].is_null());

    // Tool call, streamed: the arguments deltas rebuild a JSON object.
    let reply = openai(
        &fake,
        "/chat/completions",
        json!({"model": "gpt-4o", "stream": true, "tools": [weather_tool_openai()],
               "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let events = reply.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let first_call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first_call["function"]["name"], "get_weather");
    assert!(first_call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // After the tool result, a text answer.
    let a = openai(
        &fake,
        "/chat/completions",
        json!({"model": "gpt-4o", "tools": [weather_tool_openai()], "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
    )
    .await
    .json();
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        a["choices"][0]["message"]["content"],
        "fake answer #3 to: weather?"
    );
}

#[tokio::test]
async fn responses_stream_event_sequence() {
    let fake = FakeUpstream::start().await.unwrap();
    let reply = openai(
        &fake,
        "/responses",
        json!({"model": "gpt-5", "input": "hi responses", "stream": true}),
    )
    .await;
    let events = reply.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        &names[..4],
        &[
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        &names[names.len() - 4..],
        &[
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (i, (d, name)) in data.iter().zip(&names).enumerate() {
        assert_eq!(d["type"], *name);
        assert_eq!(d["sequence_number"], i);
    }
    let deltas: String = data
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    let done = &data.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    assert!(done["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(done["output"][0]["content"][0]["text"], deltas);
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Function call, not streamed.
    let r = openai(
        &fake,
        "/responses",
        json!({"model": "gpt-5", "input": [{"role": "user", "content": "weather?"}],
               "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}),
    )
    .await
    .json();
    assert_eq!(r["object"], "response");
    assert_eq!(r["output"][0]["type"], "function_call");
    assert_eq!(r["output"][0]["name"], "get_weather");
    assert!(r["output"][0]["call_id"]
        .as_str()
        .unwrap()
        .starts_with("call_"));
}

#[tokio::test]
async fn embeddings_and_models() {
    let fake = FakeUpstream::start().await.unwrap();
    let e = openai(
        &fake,
        "/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8}),
    )
    .await
    .json();
    assert_eq!(e["object"], "list");
    assert_eq!(e["data"][1]["index"], 1);
    assert_eq!(e["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let b = openai(
        &fake,
        "/embeddings",
        json!({"model": "m", "input": "a", "dimensions": 8, "encoding_format": "base64"}),
    )
    .await
    .json();
    // 8 little-endian f32 = 32 bytes = 44 base64 characters.
    assert_eq!(b["data"][0]["embedding"].as_str().unwrap().len(), 44);

    let auth = format!("Bearer {}", fake.openai_key());
    let models: Value = reqwest::Client::new()
        .get(format!("{}/models", fake.openai_base_url()))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(models["object"], "list");
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gpt-4o-mini"));
}

#[tokio::test]
async fn anthropic_messages_json_stream_and_tools() {
    let fake = FakeUpstream::start().await.unwrap();
    let m = anthropic(
        &fake,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief",
               "messages": [{"role": "user", "content": "hello claude"}]}),
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.header("request-id").starts_with("req_"));
    let m = m.json();
    assert!(m["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(m["content"][0]["text"], "fake answer #1 to: hello claude");
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let reply = anthropic(
        &fake,
        "/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
               "tools": [{"name": "get_weather", "input_schema": {"type": "object",
                   "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
               "messages": [{"role": "user", "content": "weather?"}]}),
    )
    .await;
    let events = reply.events();
    for (name, data) in &events {
        let data: Value = serde_json::from_str(data).unwrap();
        assert_eq!(
            data["type"],
            name.as_deref().unwrap(),
            "event name = data.type"
        );
    }
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        &names[..3],
        &["message_start", "content_block_start", "ping"]
    );
    assert_eq!(
        &names[names.len() - 3..],
        &["content_block_stop", "message_delta", "message_stop"]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let tool_start = data
        .iter()
        .find(|d| d["type"] == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool_start["index"], 1);
    assert_eq!(tool_start["content_block"]["name"], "get_weather");
    let partial: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"city": "Paris"})
    );
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let count = anthropic(
        &fake,
        "/v1/messages/count_tokens",
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count"}]}),
    )
    .await
    .json();
    assert!(count["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn auth_validation_and_error_formats() {
    let fake = FakeUpstream::builder()
        .openai_key("sk-o")
        .anthropic_key("sk-a")
        .start()
        .await
        .unwrap();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]});
    let url = format!("{}/chat/completions", fake.openai_base_url());
    let wrong = post(
        url.clone(),
        &[("authorization", "Bearer sk-wrong")],
        body.clone(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    let none = post(url.clone(), &[], body.clone()).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["type"], "invalid_request_error");

    let no_model = openai(&fake, "/chat/completions", json!({"messages": []})).await;
    assert_eq!(no_model.status, 400);
    assert!(no_model.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model"));

    let messages = format!("{}/v1/messages", fake.anthropic_base_url());
    let anthropic_body =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    let wrong = post(
        messages.clone(),
        &[("x-api-key", "sk-o"), ("anthropic-version", "2023-06-01")],
        anthropic_body.clone(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    let e = wrong.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");
    // The key as Authorization: Bearer (anthropic SDK 2.x) is accepted.
    let bearer = post(
        messages.clone(),
        &[
            ("authorization", "Bearer sk-a"),
            ("anthropic-version", "2023-06-01"),
        ],
        anthropic_body.clone(),
    )
    .await;
    assert_eq!(bearer.status, 200, "{}", bearer.body);
    let no_version = post(messages.clone(), &[("x-api-key", "sk-a")], anthropic_body).await;
    assert_eq!(no_version.status, 400);
    let no_max = post(
        messages,
        &[("x-api-key", "sk-a"), ("anthropic-version", "2023-06-01")],
        json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(no_max.status, 400);
    assert_eq!(no_max.json()["error"]["type"], "invalid_request_error");

    // The request log: what arrived, headers included.
    let last = fake.last_request().unwrap();
    assert_eq!(last.path, "/v1/messages");
    assert_eq!(fake.last_request_headers().unwrap()["x-api-key"], "sk-a");
    assert_eq!(last.json().unwrap()["model"], "c");
    assert_eq!(fake.hits(), 7);
    assert_eq!(fake.hits_for("/v1/messages"), 4);
    assert_eq!(fake.requests().len(), 7);
}

#[tokio::test]
async fn behaviour_switches() {
    let fake = FakeUpstream::start().await.unwrap();
    let chat = |model: &str, stream: bool| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "x"}]});
    let msg = |model: &str, stream: bool| json!({"model": model, "stream": stream, "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]});

    let r = openai(&fake, "/chat/completions", chat("fake-429", false)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let r = anthropic(&fake, "/v1/messages", msg("fake-429", false)).await;
    assert_eq!((r.status, r.header("retry-after")), (429, "1"));
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = anthropic(&fake, "/v1/messages", msg("fake-529", true)).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    let r = openai(
        &fake,
        "/responses",
        json!({"model": "fake-500", "input": "x"}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let r = openai(&fake, "/chat/completions", chat("fake-404", false)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");

    // -once: first request fails, the next one answers.
    let r = openai(&fake, "/chat/completions", chat("fake-500-once", false)).await;
    assert_eq!(r.status, 500);
    let r = openai(&fake, "/chat/completions", chat("fake-500-once", false)).await;
    assert_eq!(r.status, 200);

    // Mid-stream errors.
    let r = anthropic(&fake, "/v1/messages", msg("fake-midstream-error", true)).await;
    assert_eq!(r.status, 200);
    let events = r.events();
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["error"]["type"],
        "overloaded_error"
    );
    assert!(!events
        .iter()
        .any(|(n, _)| n.as_deref() == Some("message_stop")));
    let r = openai(
        &fake,
        "/chat/completions",
        chat("fake-midstream-error", true),
    )
    .await;
    let events = r.events();
    assert!(events.len() >= 3);
    assert!(serde_json::from_str::<Value>(&events.last().unwrap().1).unwrap()["error"].is_object());
    assert!(!events.iter().any(|(_, d)| d == "[DONE]"));
    let r = openai(
        &fake,
        "/responses",
        json!({"model": "fake-midstream-error", "input": "x", "stream": true}),
    )
    .await;
    assert_eq!(r.events().last().unwrap().0.as_deref(), Some("error"));

    // fake-cut-clean: the body ends without the terminal event.
    let r = anthropic(&fake, "/v1/messages", msg("fake-cut-clean", true)).await;
    let events = r.events();
    assert!(events.len() >= 2);
    assert!(!events
        .iter()
        .any(|(n, _)| n.as_deref() == Some("message_stop")));

    // fake-cut: some events arrive, then the connection breaks (a body error).
    let auth = format!("Bearer {}", fake.openai_key());
    let mut response = reqwest::Client::new()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .header("authorization", auth)
        .body(chat("fake-cut", true).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("fake-cut ended cleanly"),
            Err(e) => break e,
        }
    };
    let received = String::from_utf8(received).unwrap();
    assert!(received.starts_with("data: {"), "{received:?} / {error}");
    assert!(!received.contains("[DONE]"));

    // fake-slow: 20 ms between events.
    let started = Instant::now();
    let r = anthropic(&fake, "/v1/messages", msg("fake-slow", true)).await;
    let n = r.events().len() as u32;
    assert!(started.elapsed() >= Duration::from_millis(20) * n);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let fake = FakeUpstream::start().await.unwrap();
    let url = format!("{}/models", fake.openai_base_url());
    fake.shutdown().await;
    assert!(reqwest::Client::new().get(url).send().await.is_err());
}
