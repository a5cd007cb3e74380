//! The llm role against a real nats-server and the fake upstream: record then
//! replay for every endpoint, streaming fidelity, occurrences, misses, recorded
//! upstream errors, concurrency, two instances, key misuse, restarts, truncated
//! streams, imports and secrets.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, IdentityKeys, VerifiedEvent};
use amai_llm::sse::SseSplitter;
use amai_llm_fake_upstream::FakeUpstream;
use amai_workers::bootstrap::{ensure_identity, ensure_service};
use amai_workers::reactor::ServiceSigner;
use amai_workers::roles::llm::{LlmConfig, LlmRole};
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use common::{deploy, wait_until, Deployment};
use serde_json::{json, Value};

const UPSTREAM_OPENAI_KEY: &str = "sk-upstream-openai-SECRET-0001";
const UPSTREAM_ANTHROPIC_KEY: &str = "sk-upstream-anthropic-SECRET-0002";

struct Env {
    dep: Deployment,
    llm: ServiceSigner,
    upstream: FakeUpstream,
    state: tempfile::TempDir,
    proxies: Vec<(RoleRuntime, String)>,
    http: reqwest::Client,
}

struct Owner {
    id: String,
    keys: IdentityKeys,
}

struct Session {
    id: String,
    key: String,
}

fn config(upstream: &FakeUpstream) -> LlmConfig {
    LlmConfig::default()
        .openai_url(upstream.openai_base_url())
        .anthropic_url(upstream.anthropic_base_url())
        .openai_api_key(UPSTREAM_OPENAI_KEY)
        .anthropic_api_key(UPSTREAM_ANTHROPIC_KEY)
}

impl Env {
    async fn start() -> Env {
        Self::start_with(|c| c).await
    }

    async fn start_with(tune: impl Fn(LlmConfig) -> LlmConfig) -> Env {
        let dep = deploy().await;
        let keys = IdentityKeys::generate();
        let id = ensure_service(
            &dep.store,
            &dep.operator,
            &keys,
            "svc-llm",
            &[AggregateKind::Llm, AggregateKind::Failure],
            amai_bus::envelope::now_timestamp(),
        )
        .await
        .expect("llm service");
        let upstream = FakeUpstream::builder()
            .openai_key(UPSTREAM_OPENAI_KEY)
            .anthropic_key(UPSTREAM_ANTHROPIC_KEY)
            .start()
            .await
            .expect("fake upstream");
        let mut env = Env {
            dep,
            llm: ServiceSigner { keys, id },
            upstream,
            state: tempfile::tempdir().expect("tmp"),
            proxies: Vec::new(),
            http: reqwest::Client::new(),
        };
        let cfg = tune(config(&env.upstream));
        env.add_proxy("a", cfg).await;
        env
    }

    async fn add_proxy(&mut self, instance: &str, cfg: LlmConfig) {
        let runtime = RoleRuntime::start(
            Arc::new(LlmRole::with_config(cfg)),
            RoleRuntimeConfig::new(
                self.dep.client.clone(),
                self.dep.store.clone(),
                self.state.path(),
                self.llm.clone(),
            )
            .instance(instance)
            .listen_addr(
                amai_workers::roles::llm::LISTENER,
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ),
        )
        .await
        .expect("llm role");
        let addr = runtime
            .listener_addr(amai_workers::roles::llm::LISTENER)
            .expect("listener");
        self.proxies.push((runtime, format!("http://{addr}")));
    }

    fn base(&self, i: usize) -> &str {
        &self.proxies[i].1
    }

    fn store(&self) -> &EventStore {
        &self.dep.store
    }

    async fn owner(&self, name: &str) -> Owner {
        let keys = IdentityKeys::generate();
        let id = ensure_identity(
            self.store(),
            &keys,
            name,
            IdentityKind::Agent,
            None,
            amai_bus::envelope::now_timestamp(),
        )
        .await
        .expect("register");
        Owner { id, keys }
    }

    /// Appends an owner action; returns its event id.
    async fn act(&self, owner: &Owner, id: uuid::Uuid, payload: Kind) -> amai_bus::Position {
        let agg = Aggregate::agent(&owner.id).expect("agg");
        let head = self.store().chain_head(&agg).await.expect("head");
        let signed = EventDraft::new(agg, payload)
            .after(head.aggregate_seq, head.hash)
            .id(id)
            .sign(&owner.keys, &owner.id);
        self.store()
            .append(signed)
            .await
            .expect("owner action")
            .position
    }

    async fn open(
        &self,
        owner: &Owner,
        mode: proto::LlmMode,
        options: proto::LlmMatchOptions,
    ) -> Session {
        self.open_with(owner, mode, options, Vec::new()).await
    }

    async fn open_with(
        &self,
        owner: &Owner,
        mode: proto::LlmMode,
        options: proto::LlmMatchOptions,
        upstreams: Vec<i32>,
    ) -> Session {
        let event_id = uuid::Uuid::now_v7();
        let session_id = amai_bus::llm::session_id(&owner.id, &event_id.to_string());
        let key = format!("amai-sk-{}", uuid::Uuid::new_v4().simple());
        self.act(
            owner,
            event_id,
            Kind::LlmSessionOpened(proto::LlmSessionOpened {
                session_id: session_id.clone(),
                mode: mode as i32,
                upstreams,
                options: Some(options),
                key_sha256: amai_bus::llm::key_sha256(&key).to_vec(),
                ..Default::default()
            }),
        )
        .await;
        Session {
            id: session_id,
            key,
        }
    }

    async fn set_mode(&self, owner: &Owner, session: &Session, mode: proto::LlmMode) {
        self.act(
            owner,
            uuid::Uuid::now_v7(),
            Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
                session_id: session.id.clone(),
                mode: mode as i32,
                options: None,
            }),
        )
        .await;
        // The proxy serves the new mode once its projection has the action.
        let model = self.model();
        let id = session.id.clone();
        wait_until("mode applied", || {
            let ok = model
                .session(&id)
                .ok()
                .flatten()
                .is_some_and(|s| s.mode == mode as i32);
            async move { ok }
        })
        .await;
    }

    async fn call(
        &self,
        i: usize,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.base(i));
        let mut req = match method {
            "GET" => self.http.get(&url),
            _ => self.http.post(&url),
        };
        req = if path.starts_with("/v1/messages") {
            req.header("x-api-key", key)
                .header("anthropic-version", "2023-06-01")
        } else {
            req.bearer_auth(key)
        };
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Answer {
            status,
            headers,
            bytes,
        }
    }

    /// The read model of the first proxy instance.
    fn model(&self) -> amai_workers::roles::llm::LlmReadModel {
        amai_workers::roles::llm::LlmReadModel::open(self.proxies[0].0.db()).expect("model")
    }

    /// A chat completion asking `text`.
    async fn chat(&self, i: usize, key: &str, text: &str) -> Answer {
        self.call(i, key, "POST", "/v1/chat/completions", Some(chat(text)))
            .await
    }

    /// Every event on `llm/<session>`, decoded.
    async fn session_events(&self, session: &str) -> Vec<VerifiedEvent> {
        let agg = Aggregate::new(AggregateKind::Llm, session).expect("agg");
        self.store()
            .read_chain(&agg, 1, 10_000)
            .await
            .expect("read")
            .iter()
            .map(|s| VerifiedEvent::decode(&s.payload).expect("decode"))
            .collect()
    }

    /// The payloads of `llm/<session>` that `pick` selects, in order.
    async fn session_payloads<T>(&self, session: &str, pick: fn(Kind) -> Option<T>) -> Vec<T> {
        self.session_events(session)
            .await
            .into_iter()
            .filter_map(|e| pick(e.payload))
            .collect()
    }

    async fn recordings(&self, session: &str) -> Vec<proto::LlmInteractionRecorded> {
        self.session_payloads(session, |k| match k {
            Kind::LlmInteractionRecorded(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn misses(&self, session: &str) -> Vec<proto::LlmReplayMissed> {
        self.session_payloads(session, |k| match k {
            Kind::LlmReplayMissed(r) => Some(r),
            _ => None,
        })
        .await
    }

    async fn stop(mut self) {
        for (mut r, _) in self.proxies.drain(..) {
            r.stop().await;
        }
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The SSE events of a streamed answer, exactly as sent.
    fn events(&self) -> Vec<Vec<u8>> {
        let mut s = SseSplitter::new();
        let mut out: Vec<Vec<u8>> = s
            .push(&self.bytes)
            .into_iter()
            .map(|b| b.to_vec())
            .collect();
        if let Some(rest) = s.finish() {
            out.push(rest.to_vec());
        }
        out
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn record() -> proto::LlmMode {
    proto::LlmMode::Record
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

/// Requests shaped like the official SDKs send them, for every endpoint,
/// streaming and not, tool calls included.
fn every_endpoint() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let anthropic_tools = json!([{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    vec![
        ("POST", "/v1/chat/completions", Some(chat("hello"))),
        (
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "stream please"}], "stream": true, "stream_options": {"include_usage": true}}),
            ),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}], "tools": tools}),
            ),
        ),
        (
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather? stream"}], "tools": tools, "stream": true}),
            ),
        ),
        (
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "hi there"})),
        ),
        (
            "POST",
            "/v1/responses",
            Some(json!({"model": "gpt-4o-mini", "input": "stream it", "stream": true})),
        ),
        (
            "POST",
            "/v1/embeddings",
            Some(
                json!({"model": "text-embedding-3-small", "input": "embed me", "encoding_format": "float"}),
            ),
        ),
        ("GET", "/v1/models", None),
        (
            "POST",
            "/v1/messages",
            Some(
                json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "bonjour"}]}),
            ),
        ),
        (
            "POST",
            "/v1/messages",
            Some(
                json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "stream bonjour"}], "stream": true}),
            ),
        ),
        (
            "POST",
            "/v1/messages",
            Some(
                json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "tool?"}], "tools": anthropic_tools, "stream": true}),
            ),
        ),
        (
            "POST",
            "/v1/messages/count_tokens",
            Some(
                json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count me"}]}),
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn record_then_replay_every_endpoint_byte_for_byte() {
    let env = Env::start().await;
    let owner = env.owner("llm-owner").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let mut recorded = Vec::new();
    for (method, path, body) in every_endpoint() {
        let a = env.call(0, &s.key, method, path, body.clone()).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.text());
        recorded.push(a);
    }
    let hits = env.upstream.hits();
    assert_eq!(hits, every_endpoint().len() as u64);
    // The upstream got the server-side key, never the session key.
    for r in env.upstream.requests() {
        let all = format!("{:?}", r.headers);
        assert!(
            !all.contains(&s.key),
            "session key forwarded upstream: {all}"
        );
    }
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs.len(), recorded.len());
    assert!(recs
        .iter()
        .all(|r| r.outcome == proto::LlmOutcome::Completed as i32));
    assert!(recs.iter().filter(|r| r.streamed).count() >= 5);

    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    for ((method, path, body), rec) in every_endpoint().into_iter().zip(&recorded) {
        let a = env.call(0, &s.key, method, path, body).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.text());
        assert_eq!(
            a.bytes, rec.bytes,
            "{method} {path}: replay differs from the recording"
        );
        assert_eq!(
            a.events(),
            rec.events(),
            "{method} {path}: event boundaries differ"
        );
        assert_eq!(a.header("content-type"), rec.header("content-type"));
        assert_eq!(a.header("x-request-id"), rec.header("x-request-id"));
    }
    assert_eq!(env.upstream.hits(), hits, "replay went upstream");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_nth_identical_request_gets_the_nth_answer() {
    let env = Env::start().await;
    let owner = env.owner("llm-nth").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(env.chat(0, &s.key, "same").await.bytes);
    }
    assert_eq!(
        answers.iter().collect::<BTreeSet<_>>().len(),
        3,
        "the upstream answers differ per call"
    );
    let occ: Vec<u32> = env
        .recordings(&s.id)
        .await
        .iter()
        .map(|r| r.occurrence)
        .collect();
    assert_eq!(occ, vec![0, 1, 2]);
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    for expected in &answers {
        let a = env.chat(0, &s.key, "same").await;
        assert_eq!(&a.bytes, expected);
    }
    // A fourth has nothing recorded: a miss (repeats are not allowed by default).
    let a = env.chat(0, &s.key, "same").await;
    assert_eq!(a.status, 404, "{}", a.text());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_never_reaches_the_upstream_and_names_the_difference() {
    let env = Env::start().await;
    let owner = env.owner("llm-miss").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is the capital of France?"}]}]});
    assert_eq!(
        env.call(
            0,
            &s.key,
            "POST",
            "/v1/chat/completions",
            Some(body.clone())
        )
        .await
        .status,
        200
    );
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let hits = env.upstream.hits();
    let mut changed = body.clone();
    changed["messages"][1]["content"][0]["text"] = json!("what is the capital of Spain?");
    let a = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(changed))
        .await;
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(a.header("x-should-retry"), Some("false"));
    let message = a.json()["error"]["message"]
        .as_str()
        .expect("openai error format")
        .to_string();
    assert!(message.contains(&s.id), "{message}");
    assert!(message.contains("step 0"), "{message}");
    assert!(message.contains("seq 1"), "{message}");
    assert!(
        message.contains("messages[1].content[0].text: \"what is the capital of France?\" != \"what is the capital of Spain?\""),
        "{message}"
    );
    assert_eq!(env.upstream.hits(), hits, "a miss went upstream");
    // Anthropic misses come in Anthropic's format.
    let a = env
        .call(0, &s.key, "POST", "/v1/messages", Some(json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})))
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["type"], "error", "{}", a.text());
    assert_eq!(a.json()["error"]["type"], "not_found_error");
    let misses = env.misses(&s.id).await;
    assert_eq!(misses.len(), 2);
    assert_eq!(misses[0].nearest_seq, 1);
    assert!(
        misses[0]
            .diff
            .iter()
            .any(|d| d.starts_with("messages[1].content[0].text")),
        "{:?}",
        misses[0].diff
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_429_is_replayed_at_the_same_step() {
    let env = Env::start().await;
    let owner = env.owner("llm-429").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let ok = |t: &str| chat(t);
    let limited = json!({"model": "fake-429", "messages": [{"role": "user", "content": "again"}]});
    let steps = [ok("one"), limited.clone(), ok("two")];
    let mut recorded = Vec::new();
    for b in &steps {
        recorded.push(
            env.call(0, &s.key, "POST", "/v1/chat/completions", Some(b.clone()))
                .await,
        );
    }
    assert_eq!(
        recorded.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![200, 429, 200]
    );
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs[1].status, 429);
    assert_eq!(recs[1].outcome, proto::LlmOutcome::UpstreamError as i32);
    assert_eq!(
        recs[1].headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    for (b, r) in steps.iter().zip(&recorded) {
        let a = env
            .call(0, &s.key, "POST", "/v1/chat/completions", Some(b.clone()))
            .await;
        assert_eq!(a.status, r.status);
        assert_eq!(a.bytes, r.bytes);
        assert_eq!(a.header("retry-after"), r.header("retry-after"));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_stream_is_recorded_as_truncated_and_replayed_cut() {
    let env = Env::start().await;
    let owner = env.owner("llm-cut").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let body = json!({"model": "fake-cut-clean", "stream": true, "messages": [{"role": "user", "content": "cut me"}]});
    let a = env
        .call(
            0,
            &s.key,
            "POST",
            "/v1/chat/completions",
            Some(body.clone()),
        )
        .await;
    assert!(!a.text().contains("[DONE]"));
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(
        recs[0].outcome,
        proto::LlmOutcome::Truncated as i32,
        "{:?}",
        recs[0].detail
    );
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let b = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(body))
        .await;
    assert_eq!(b.events(), a.events());
    assert!(!b.text().contains("[DONE]"));
    // A mid-stream error event is an upstream error, replayed as it came.
    let s2 = env.open(&owner, record(), Default::default()).await;
    let body = json!({"model": "fake-midstream-error", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "err"}]});
    let a = env
        .call(0, &s2.key, "POST", "/v1/messages", Some(body.clone()))
        .await;
    assert!(a.text().contains("event: error"), "{}", a.text());
    assert_eq!(
        env.recordings(&s2.id).await[0].outcome,
        proto::LlmOutcome::UpstreamError as i32
    );
    env.set_mode(&owner, &s2, proto::LlmMode::Replay).await;
    let b = env
        .call(0, &s2.key, "POST", "/v1/messages", Some(body))
        .await;
    assert_eq!(b.bytes, a.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_are_each_recorded_exactly_once() {
    let env = Arc::new(Env::start().await);
    let owner = env.owner("llm-100").await;
    let s = Arc::new(env.open(&owner, record(), Default::default()).await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (env, s) = (env.clone(), s.clone());
        // Two request shapes, 50 identical requests each.
        let text = if i % 2 == 0 { "even" } else { "odd" };
        tasks.push(tokio::spawn(async move { env.chat(0, &s.key, text).await }));
    }
    let mut bodies = BTreeSet::new();
    for t in tasks {
        let a = t.await.expect("task");
        assert_eq!(a.status, 200, "{}", a.text());
        bodies.insert(a.bytes);
    }
    assert_eq!(bodies.len(), 100);
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs.len(), 100);
    for hash in recs
        .iter()
        .map(|r| r.request_hash.clone())
        .collect::<BTreeSet<_>>()
    {
        let occ: BTreeSet<u32> = recs
            .iter()
            .filter(|r| r.request_hash == hash)
            .map(|r| r.occurrence)
            .collect();
        assert_eq!(occ, (0..50).collect::<BTreeSet<u32>>());
    }
    let env = Arc::into_inner(env).expect("one owner");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_proxy_instances_record_one_session_without_losing_or_merging() {
    let mut env = Env::start().await;
    let cfg = config(&env.upstream);
    env.add_proxy("b", cfg).await;
    let env = Arc::new(env);
    let owner = env.owner("llm-two").await;
    let s = Arc::new(env.open(&owner, record(), Default::default()).await);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (env, s) = (env.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            env.call(
                i % 2,
                &s.key,
                "POST",
                "/v1/chat/completions",
                Some(chat("shared")),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").status, 200);
    }
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs.len(), 40);
    let occ: Vec<u32> = recs.iter().map(|r| r.occurrence).collect();
    assert_eq!(
        occ,
        (0..40).collect::<Vec<u32>>(),
        "occurrences follow the chain order"
    );
    let env = Arc::into_inner(env).expect("one owner");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_refused_in_the_apis_own_format() {
    let env = Env::start().await;
    let owner = env.owner("llm-keys").await;
    let s = env
        .open_with(
            &owner,
            record(),
            Default::default(),
            vec![proto::LlmUpstream::Openai as i32],
        )
        .await;
    let other = env.open(&owner, record(), Default::default()).await;
    let hits = env.upstream.hits();
    // Unknown key: 401, OpenAI and Anthropic formats.
    let a = env
        .call(
            0,
            "amai-sk-not-a-key",
            "POST",
            "/v1/chat/completions",
            Some(chat("x")),
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["code"], "invalid_api_key");
    assert_eq!(a.header("x-should-retry"), Some("false"));
    let a = env
        .call(
            0,
            "amai-sk-not-a-key",
            "POST",
            "/v1/messages",
            Some(json!({"model": "m", "max_tokens": 1, "messages": []})),
        )
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["type"], "authentication_error");
    // An upstream the session does not allow.
    let a = env
        .call(
            0,
            &s.key,
            "POST",
            "/v1/messages",
            Some(json!({"model": "m", "max_tokens": 1, "messages": []})),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text());
    // A key used against another session.
    let a = env
        .http
        .post(format!("{}/v1/chat/completions", env.base(0)))
        .bearer_auth(&s.key)
        .header("x-amai-session", &other.id)
        .body(chat("x").to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(a.status().as_u16(), 403);
    // Another owner binding the same key hash to its own session (to have the
    // key holder's traffic recorded there) is refused by the projection.
    let thief = env.owner("llm-thief").await;
    let event_id = uuid::Uuid::now_v7();
    let stolen = amai_bus::llm::session_id(&thief.id, &event_id.to_string());
    env.act(
        &thief,
        event_id,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: stolen.clone(),
            mode: record() as i32,
            key_sha256: amai_bus::llm::key_sha256(&s.key).to_vec(),
            ..Default::default()
        }),
    )
    .await;
    let a = env.chat(0, &s.key, "mine").await;
    assert_eq!(a.status, 200);
    assert_eq!(env.recordings(&s.id).await.len(), 1);
    assert!(env.recordings(&stolen).await.is_empty());
    let model = env.model();
    assert!(
        model.session(&stolen).expect("read").is_none(),
        "the thief's session was opened"
    );
    // A revoked key.
    env.act(
        &owner,
        uuid::Uuid::now_v7(),
        Kind::LlmSessionKeyRevoked(proto::LlmSessionKeyRevoked {
            session_id: s.id.clone(),
            key_sha256: amai_bus::llm::key_sha256(&s.key).to_vec(),
        }),
    )
    .await;
    let key = s.key.clone();
    wait_until("key revoked", || {
        let revoked = model
            .key(&amai_bus::llm::key_sha256(&key))
            .ok()
            .flatten()
            .is_some_and(|b| b.revoked);
        async move { revoked }
    })
    .await;
    let a = env.chat(0, &s.key, "x").await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("revoked"));
    // A deleted session.
    env.act(
        &owner,
        uuid::Uuid::now_v7(),
        Kind::LlmSessionDeleted(proto::LlmSessionDeleted {
            session_id: other.id.clone(),
            reason: "done".into(),
        }),
    )
    .await;
    let id = other.id.clone();
    wait_until("deleted", || {
        let d = model.session(&id).ok().flatten().is_some_and(|s| s.deleted);
        async move { d }
    })
    .await;
    let a = env.chat(0, &other.key, "x").await;
    assert_eq!(a.status, 403);
    // A revoked owner: every key stops.
    let third = env.open(&owner, record(), Default::default()).await;
    env.act(
        &owner,
        uuid::Uuid::now_v7(),
        Kind::AgentRevoked(proto::AgentRevoked {
            reason: "compromised".into(),
        }),
    )
    .await;
    let oid = owner.id.clone();
    wait_until("owner revoked", || {
        let r = model.owner_revoked(&oid).unwrap_or(false);
        async move { r }
    })
    .await;
    let a = env.chat(0, &third.key, "x").await;
    assert_eq!(a.status, 401);
    assert_eq!(
        env.upstream.hits(),
        hits + 1,
        "only the one valid call went upstream"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_survives_a_restart_and_a_rebuild_from_the_streams() {
    let mut env = Env::start().await;
    let owner = env.owner("llm-restart").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "persist"}]});
    let recorded = env
        .call(
            0,
            &s.key,
            "POST",
            "/v1/chat/completions",
            Some(body.clone()),
        )
        .await;
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    // Restart the instance (same state dir) ...
    let (mut r, _) = env.proxies.remove(0);
    r.stop().await;
    drop(r);
    let cfg = config(&env.upstream);
    env.add_proxy("a", cfg.clone()).await;
    let a = env
        .call(
            0,
            &s.key,
            "POST",
            "/v1/chat/completions",
            Some(body.clone()),
        )
        .await;
    assert_eq!(a.bytes, recorded.bytes);
    // ... and a fresh instance that rebuilds everything from the streams.
    env.add_proxy("fresh", cfg).await;
    let b = env
        .call(1, &s.key, "POST", "/v1/chat/completions", Some(body))
        .await;
    assert_eq!(b.bytes, recorded.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bodies_go_to_the_blob_store_and_replay_intact() {
    let env = Env::start_with(|c| c.blob_threshold(512)).await;
    let owner = env.owner("llm-blob").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let big = "x".repeat(4000);
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": big}]});
    let recorded = env
        .call(
            0,
            &s.key,
            "POST",
            "/v1/chat/completions",
            Some(body.clone()),
        )
        .await;
    let recs = env.recordings(&s.id).await;
    assert!(
        recs[0]
            .request
            .as_ref()
            .and_then(|b| b.blob.as_ref())
            .is_some(),
        "request not offloaded"
    );
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let a = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(body))
        .await;
    assert_eq!(a.bytes, recorded.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ignored_fields_do_not_change_the_match() {
    let env = Env::start().await;
    let owner = env.owner("llm-ignore").await;
    let options = proto::LlmMatchOptions {
        ignore_fields: vec!["temperature".into()],
        ..Default::default()
    };
    let s = env.open(&owner, record(), options).await;
    let recorded = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(json!({"model": "gpt-4o-mini", "user": "u1", "temperature": 0.1, "messages": [{"role": "user", "content": "q"}]})))
        .await;
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let a = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(json!({"messages": [{"content": "q", "role": "user"}], "temperature": 0.9, "user": "u2", "model": "gpt-4o-mini"})))
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.bytes, recorded.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_order_refuses_a_reordered_run_and_any_order_accepts_it() {
    let env = Env::start().await;
    let owner = env.owner("llm-order").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let first = env.chat(0, &s.key, "first").await;
    let second = env.chat(0, &s.key, "second").await;
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let a = env.chat(0, &s.key, "second").await;
    assert_eq!(a.status, 404, "strict order must refuse step 0 = second");
    assert!(
        a.text().contains("\\\"first\\\" != \\\"second\\\"") || a.text().contains("first"),
        "{}",
        a.text()
    );
    // Any order.
    env.act(
        &owner,
        uuid::Uuid::now_v7(),
        Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
            session_id: s.id.clone(),
            mode: proto::LlmMode::Replay as i32,
            options: Some(proto::LlmMatchOptions {
                order: proto::LlmReplayOrder::Any as i32,
                ..Default::default()
            }),
        }),
    )
    .await;
    let model = env.model();
    let id = s.id.clone();
    wait_until("any order applied", || {
        let ok = model
            .session(&id)
            .ok()
            .flatten()
            .and_then(|s| s.options)
            .is_some_and(|o| o.order == proto::LlmReplayOrder::Any as i32);
        async move { ok }
    })
    .await;
    let b = env.chat(0, &s.key, "second").await;
    assert_eq!(b.bytes, second.bytes);
    let c = env.chat(0, &s.key, "first").await;
    assert_eq!(c.bytes, first.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cassette_imports_into_a_new_session_that_replays_it() {
    let env = Env::start().await;
    let owner = env.owner("llm-export").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let answers = [
        env.chat(0, &s.key, "one").await,
        env.call(0, &s.key, "POST", "/v1/messages", Some(json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "two"}]}))).await,
    ];
    let cassette = cassette_of(&env, &s.id, &owner.id).await;
    let json = cassette.to_json_pretty().expect("json");
    let blobs = amai_bus::blob::BlobStore::open(env.store().jetstream(), 1, 1024)
        .await
        .expect("blobs");
    let blob = blobs.put(json.as_bytes()).await.expect("put");
    let importer = env.owner("llm-import").await;
    let event_id = uuid::Uuid::now_v7();
    let imported = amai_bus::llm::session_id(&importer.id, &event_id.to_string());
    let key = "amai-sk-imported-key-0001".to_string();
    env.act(
        &importer,
        event_id,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: imported.clone(),
            mode: proto::LlmMode::Replay as i32,
            key_sha256: amai_bus::llm::key_sha256(&key).to_vec(),
            cassette: Some(proto::BlobRef {
                sha256: blob.sha256.to_vec(),
                size: blob.size,
            }),
            ..Default::default()
        }),
    )
    .await;
    let model = env.model();
    let id = imported.clone();
    wait_until("imported", || {
        let n = model.counters(&id).map(|c| c.recordings).unwrap_or(0);
        async move { n == 2 }
    })
    .await;
    let imported_recs = env.recordings(&imported).await;
    assert_eq!(imported_recs[0].imported_from, "e0");
    let hits = env.upstream.hits();
    let a = env.chat(0, &key, "one").await;
    assert_eq!(a.bytes, answers[0].bytes);
    let b = env.call(0, &key, "POST", "/v1/messages", Some(json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "stream": true, "messages": [{"role": "user", "content": "two"}]}))).await;
    assert_eq!(b.bytes, answers[1].bytes);
    assert_eq!(env.upstream.hits(), hits);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_never_appear_in_any_event() {
    let env = Env::start().await;
    let owner = env.owner("llm-secrets").await;
    let s = env.open(&owner, record(), Default::default()).await;
    for (method, path, body) in every_endpoint() {
        env.call(0, &s.key, method, path, body).await;
    }
    env.call(
        0,
        &s.key,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "fake-429", "messages": []})),
    )
    .await;
    // Every message of every stream, raw.
    let js = env.store().jetstream();
    for stream in [
        "AMAI_AGENTS",
        "AMAI_LLM",
        "AMAI_FAILURES",
        "AMAI_NAMES",
        "AMAI_TRUST",
    ] {
        let mut st = js.get_stream(stream).await.expect("stream");
        let last = st.info().await.expect("info").state.last_sequence;
        for seq in 1..=last {
            let Ok(m) = st.get_raw_message(seq).await else {
                continue;
            };
            let bytes = m.payload.to_vec();
            for secret in [UPSTREAM_OPENAI_KEY, UPSTREAM_ANTHROPIC_KEY, s.key.as_str()] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{secret} found in {stream} #{seq}"
                );
            }
        }
    }
    // The upstream got the server-side keys.
    let headers = env.upstream.last_request_headers().expect("headers");
    assert!(format!("{headers:?}").contains(UPSTREAM_OPENAI_KEY));
    env.stop().await;
}

/// The interpreter with the official SDKs (`scripts/ensure-deps.sh python-sdks`).
fn python_with_sdks() -> std::path::PathBuf {
    let path = std::env::var_os("AMAI_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/amai/pyenv/bin/python")
        });
    assert!(
        path.exists(),
        "{} does not exist: run scripts/ensure-deps.sh python-sdks (make test does) to install the official openai and anthropic SDKs",
        path.display()
    );
    path
}

fn run_sdks(env: &Env, key: &str, args: &[&str]) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/llm_sdks.py");
    let out = std::process::Command::new(python_with_sdks())
        .arg(script)
        .args(["--openai-base-url", &format!("{}/v1", env.base(0))])
        .args(["--anthropic-base-url", env.base(0)])
        .args(["--key", key])
        .args(args)
        .output()
        .expect("run the SDK script");
    assert!(
        out.status.success(),
        "SDK script failed ({:?}): {}\n{}",
        args,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_python_sdks_record_and_replay_unchanged() {
    let env = Env::start().await;
    let owner = env.owner("llm-sdks").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let key = s.key.clone();
    let recorded = {
        let env = &env;
        tokio::task::block_in_place(|| run_sdks(env, &key, &["--phase", "record"]))
    };
    let calls = recorded["results"].as_array().expect("results").len();
    assert!(calls >= 14, "{recorded}");
    let hits = env.upstream.hits();
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let replayed = tokio::task::block_in_place(|| run_sdks(&env, &key, &["--phase", "replay"]));
    assert_eq!(
        replayed["results"], recorded["results"],
        "the SDKs saw other answers in replay"
    );
    assert_eq!(env.upstream.hits(), hits, "replay went upstream");
    // A miss: one HTTP request, no SDK retry, an SDK error naming the session.
    let miss = tokio::task::block_in_place(|| run_sdks(&env, &key, &["--expect-miss"]));
    assert_eq!(miss["miss"]["requests"], 1, "{miss}");
    assert!(miss.to_string().contains(&s.id), "{miss}");
    assert_eq!(env.upstream.hits(), hits);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_repeats_serves_the_last_occurrence_again() {
    let env = Env::start().await;
    let owner = env.owner("llm-repeat").await;
    let options = proto::LlmMatchOptions {
        allow_repeats: true,
        ..Default::default()
    };
    let s = env.open(&owner, record(), options).await;
    let first = env.chat(0, &s.key, "poll").await;
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    for _ in 0..3 {
        let a = env.chat(0, &s.key, "poll").await;
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.bytes, first.bytes);
    }
    // Something else is still a miss.
    let a = env.chat(0, &s.key, "other").await;
    assert_eq!(a.status, 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_cannot_steer_or_replay_someone_elses_session() {
    let env = Env::start().await;
    let victim = env.owner("llm-victim").await;
    let s = env.open(&victim, record(), Default::default()).await;
    let recorded = env.chat(0, &s.key, "private").await;
    assert_eq!(recorded.status, 200);
    let stranger = env.owner("llm-stranger").await;
    // Actions on the stranger's own chain naming the victim's session, appended
    // straight to the store (around the gateway's checks).
    let stranger_key = "amai-sk-stranger-key-000001".to_string();
    for payload in [
        Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
            session_id: s.id.clone(),
            mode: proto::LlmMode::Replay as i32,
            options: None,
        }),
        Kind::LlmSessionKeyIssued(proto::LlmSessionKeyIssued {
            session_id: s.id.clone(),
            key_sha256: amai_bus::llm::key_sha256(&stranger_key).to_vec(),
        }),
        Kind::LlmSessionKeyRevoked(proto::LlmSessionKeyRevoked {
            session_id: s.id.clone(),
            key_sha256: amai_bus::llm::key_sha256(&s.key).to_vec(),
        }),
        Kind::LlmSessionDeleted(proto::LlmSessionDeleted {
            session_id: s.id.clone(),
            reason: "mine now".into(),
        }),
    ] {
        env.act(&stranger, uuid::Uuid::now_v7(), payload).await;
    }
    // A session of the stranger replaying the victim's recordings.
    let event_id = uuid::Uuid::now_v7();
    let copy = amai_bus::llm::session_id(&stranger.id, &event_id.to_string());
    let copy_key = "amai-sk-stranger-copy-00001".to_string();
    env.act(
        &stranger,
        event_id,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: copy.clone(),
            mode: proto::LlmMode::Replay as i32,
            key_sha256: amai_bus::llm::key_sha256(&copy_key).to_vec(),
            replay_from: s.id.clone(),
            ..Default::default()
        }),
    )
    .await;
    // Wait until the projection has seen all of it (the stranger's last action).
    let runtime = &env.proxies[0].0;
    let projection = runtime.projection("llm").expect("projection");
    let agents = env
        .store()
        .chain_head(&Aggregate::agent(&stranger.id).expect("agg"))
        .await
        .expect("head");
    projection
        .wait_for(
            &amai_bus::Position::new("AMAI_AGENTS", agents.stream_seq),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("applied");
    let model = amai_workers::roles::llm::LlmReadModel::open(runtime.db()).expect("model");
    let session = model.session(&s.id).expect("read").expect("session");
    assert_eq!(session.mode, proto::LlmMode::Record as i32);
    assert!(!session.deleted);
    assert_eq!(session.keys.len(), 1);
    assert!(!session.keys[0].revoked);
    assert!(model
        .key(&amai_bus::llm::key_sha256(&stranger_key))
        .expect("read")
        .is_none());
    assert!(
        model.session(&copy).expect("read").is_none(),
        "a session replaying another owner's was opened"
    );
    // Every one of them is an integrity violation (refused), none applied.
    assert!(
        projection.violation_count() >= 5,
        "{}",
        projection.violation_count()
    );
    // The victim's key still records into the victim's session.
    let a = env.chat(0, &s.key, "still mine").await;
    assert_eq!(a.status, 200);
    assert_eq!(env.recordings(&s.id).await.len(), 2);
    let a = env.chat(0, &copy_key, "private").await;
    assert_eq!(a.status, 401);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_recording_published_raw_is_never_replayed() {
    let env = Env::start().await;
    let owner = env.owner("llm-forged").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let real = env.chat(0, &s.key, "truth").await;
    let recs = env.recordings(&s.id).await;
    // A rogue publisher (raw NATS rights, no service key) appends a recording
    // of another request, signed by a key of its own, right after the real one.
    let rogue = IdentityKeys::generate();
    let agg = Aggregate::new(AggregateKind::Llm, &s.id).expect("agg");
    let head = env.store().chain_head(&agg).await.expect("head");
    let ignored = amai_llm::canonical::IgnoredFields::from_options(&Default::default());
    let lie = chat("lie");
    let hash =
        amai_llm::canonical::request_hash("POST", "/v1/chat/completions", Some(&lie), &ignored)
            .expect("hash");
    let forged = EventDraft::new(
        agg.clone(),
        Kind::LlmInteractionRecorded(proto::LlmInteractionRecorded {
            session_id: s.id.clone(),
            request_hash: hash.to_vec(),
            occurrence: 0,
            status: 200,
            response: Some(proto::LlmBody {
                inline: b"{\"forged\":true}".to_vec(),
                blob: None,
            }),
            ..recs[0].clone()
        }),
    )
    .after(head.aggregate_seq, head.hash)
    .signer_seq(1)
    .sign(&rogue, &env.llm.id);
    let js = env.store().jetstream();
    js.publish(
        format!("amai.llm.{}", s.id),
        prost::Message::encode_to_vec(&forged).into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let runtime = &env.proxies[0].0;
    let projection = runtime.projection("llm").expect("projection");
    let last = js
        .get_stream("AMAI_LLM")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .last_sequence;
    projection
        .wait_for(
            &amai_bus::Position::new("AMAI_LLM", last),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("applied");
    assert!(projection.violation_count() >= 1);
    let a = env.chat(0, &s.key, "truth").await;
    assert_eq!(a.bytes, real.bytes);
    let b = env
        .call(0, &s.key, "POST", "/v1/chat/completions", Some(lie))
        .await;
    assert_eq!(
        b.status,
        404,
        "the forged recording was served: {}",
        b.text()
    );
    env.stop().await;
}

/// The cassette of a session, built from its stored records the way an export
/// does (bodies inline).
async fn cassette_of(env: &Env, session_id: &str, owner_id: &str) -> amai_llm::cassette::Cassette {
    let recs = env.recordings(session_id).await;
    let session = amai_llm::cassette::CassetteSession {
        session_id: session_id.to_string(),
        owner: owner_id.to_string(),
        mode: amai_llm::cassette::CassetteMode::Record,
        upstreams: Vec::new(),
        options: (&proto::LlmMatchOptions::default()).into(),
    };
    let mut cassette = amai_llm::cassette::Cassette::new("2026-12-03T00:00:00Z".into(), session);
    for (i, r) in recs.iter().enumerate() {
        cassette
            .interactions
            .push(amai_llm::cassette::CassetteInteraction {
                seq: i as u64 + 1,
                event_id: format!("e{i}"),
                event_hash: amai_llm::cassette::Sha256Hex([0; 32]),
                request_hash: amai_llm::cassette::Sha256Hex(
                    r.request_hash.clone().try_into().expect("32"),
                ),
                occurrence: r.occurrence,
                upstream: amai_llm::cassette::CassetteUpstream::from_proto(r.upstream())
                    .expect("upstream"),
                method: r.method.clone(),
                path: r.path.clone(),
                request: amai_llm::cassette::Body(r.request.clone().expect("req").inline.into()),
                status: r.status as u16,
                headers: r.headers.clone(),
                streamed: r.streamed,
                response: r
                    .response
                    .clone()
                    .map(|b| amai_llm::cassette::Body(b.inline.into())),
                events: r.streamed.then(|| {
                    r.events
                        .iter()
                        .map(|e| amai_llm::cassette::CassetteSseEvent {
                            offset_us: e.offset_us,
                            data: amai_llm::cassette::Body(e.raw.clone().into()),
                        })
                        .collect()
                }),
                outcome: amai_llm::cassette::CassetteOutcome::from_proto(r.outcome())
                    .expect("outcome"),
                usage: Default::default(),
                latency_us: r.latency_us,
                upstream_model: r.upstream_model.clone(),
                detail: r.detail.clone(),
                event_b64: amai_llm::cassette::Base64Bytes(Default::default()),
            });
    }
    cassette
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_interrupted_midway_completes_without_duplicates() {
    let mut env = Env::start().await;
    let owner = env.owner("llm-crash-import").await;
    let s = env.open(&owner, record(), Default::default()).await;
    for t in ["a", "b", "c", "d"] {
        assert_eq!(env.chat(0, &s.key, t).await.status, 200);
    }
    let cassette = cassette_of(&env, &s.id, &owner.id).await;
    // A second instance whose importer fails output 2 of its first delivery
    // (as a crash between two appends would); the first instance is stopped so
    // the second one gets the input.
    let (mut first, _) = env.proxies.remove(0);
    first.stop().await;
    drop(first);
    let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = failed.clone();
    let hook: amai_workers::reactor::FaultHook = Arc::new(move |point, _input| match point {
        amai_workers::reactor::FaultPoint::AppendOutput { index: 2 }
            if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) =>
        {
            Err("injected: crash between outputs 1 and 2".into())
        }
        _ => Ok(()),
    });
    let runtime = RoleRuntime::start(
        Arc::new(LlmRole::with_config(config(&env.upstream))),
        RoleRuntimeConfig::new(
            env.dep.client.clone(),
            env.dep.store.clone(),
            env.state.path(),
            env.llm.clone(),
        )
        .instance("faulty")
        .listen_addr(
            amai_workers::roles::llm::LISTENER,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .reactor_options(amai_workers::reactor::ReactorOptions::default().fault_hook(hook)),
    )
    .await
    .expect("llm role");
    let blobs = amai_bus::blob::BlobStore::open(env.store().jetstream(), 1, 1024)
        .await
        .expect("blobs");
    let blob = blobs
        .put(cassette.to_json_pretty().expect("json").as_bytes())
        .await
        .expect("put");
    let event_id = uuid::Uuid::now_v7();
    let imported = amai_bus::llm::session_id(&owner.id, &event_id.to_string());
    env.act(
        &owner,
        event_id,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: imported.clone(),
            mode: proto::LlmMode::Replay as i32,
            key_sha256: amai_bus::llm::key_sha256("amai-sk-import-crash-0001").to_vec(),
            cassette: Some(proto::BlobRef {
                sha256: blob.sha256.to_vec(),
                size: blob.size,
            }),
            ..Default::default()
        }),
    )
    .await;
    let model = amai_workers::roles::llm::LlmReadModel::open(runtime.db()).expect("model");
    let id = imported.clone();
    wait_until("import completed after the injected failure", || {
        let n = model.counters(&id).map(|c| c.recordings).unwrap_or(0);
        async move { n == 4 }
    })
    .await;
    assert!(
        failed.load(std::sync::atomic::Ordering::SeqCst),
        "the fault was never hit"
    );
    let recs = env.recordings(&imported).await;
    assert_eq!(recs.len(), 4, "an interaction was imported twice or lost");
    let origins: Vec<&str> = recs.iter().map(|r| r.imported_from.as_str()).collect();
    assert_eq!(origins, vec!["e0", "e1", "e2", "e3"]);
    let mut runtime = runtime;
    runtime.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_run_sees_recordings_applied_after_it_started() {
    let env = Env::start().await;
    let owner = env.owner("llm-late").await;
    let source = env.open(&owner, record(), Default::default()).await;
    let first = env.chat(0, &source.key, "one").await;
    // A second session replays the first one's recordings while the first one
    // keeps recording.
    let event_id = uuid::Uuid::now_v7();
    let replayer = amai_bus::llm::session_id(&owner.id, &event_id.to_string());
    let key = "amai-sk-late-replayer-0001";
    env.act(
        &owner,
        event_id,
        Kind::LlmSessionOpened(proto::LlmSessionOpened {
            session_id: replayer.clone(),
            mode: proto::LlmMode::Replay as i32,
            key_sha256: amai_bus::llm::key_sha256(key).to_vec(),
            replay_from: source.id.clone(),
            ..Default::default()
        }),
    )
    .await;
    let a = env.chat(0, key, "one").await;
    assert_eq!(a.bytes, first.bytes, "{}", a.text());
    // The run's order was loaded with one recording; a second one lands.
    let second = env.chat(0, &source.key, "two").await;
    let model = env.model();
    let id = source.id.clone();
    wait_until("second recording applied", || {
        let n = model.counters(&id).map(|c| c.recordings).unwrap_or(0);
        async move { n == 2 }
    })
    .await;
    let b = env.chat(0, key, "two").await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.bytes, second.bytes);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recorded_stream_reaches_the_client_before_it_ends() {
    use futures::StreamExt as _;
    let env = Env::start().await;
    let owner = env.owner("llm-incremental").await;
    let s = env.open(&owner, record(), Default::default()).await;
    // fake-gated: the upstream sends its first event, then waits for the gate;
    // the recording is stored only once the upstream's stream has ended.
    let body = json!({"model": "fake-gated", "stream": true, "messages": [{"role": "user", "content": "slowly"}]});
    let resp = env
        .http
        .post(format!("{}/v1/chat/completions", env.base(0)))
        .bearer_auth(&s.key)
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let mut chunks = resp.bytes_stream();
    // A proxy that buffered the stream would never send anything while the
    // upstream waits: bounded, so that fails rather than hangs.
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), chunks.next())
        .await
        .expect("the proxy buffered the stream: no event reached the client")
        .expect("a first chunk")
        .expect("bytes");
    assert!(first.starts_with(b"data: "), "{first:?}");
    assert!(
        env.recordings(&s.id).await.is_empty(),
        "nothing can be recorded while the upstream's stream is still open"
    );
    env.upstream.open_gate();
    let mut rest = first.to_vec();
    while let Some(c) = chunks.next().await {
        rest.extend_from_slice(&c.expect("bytes"));
    }
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));
    let recs = env.recordings(&s.id).await;
    assert_eq!(
        recs.len(),
        1,
        "the terminal event came before the recording was durable"
    );
    assert_eq!(recs[0].outcome, proto::LlmOutcome::Completed as i32);

    // Replay at recorded speed takes at least the recorded span; instantly it
    // replays the same bytes.
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let last_offset =
        std::time::Duration::from_micros(recs[0].events.last().expect("events").offset_us);
    let first_offset = std::time::Duration::from_micros(recs[0].events[0].offset_us);
    let started = std::time::Instant::now();
    let replayed = env
        .http
        .post(format!("{}/v1/chat/completions", env.base(0)))
        .bearer_auth(&s.key)
        .header("x-amai-replay-timing", "recorded")
        .body(body.to_string())
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("body");
    assert!(
        started.elapsed() >= last_offset - first_offset,
        "replayed in {:?}, recorded span {:?}",
        started.elapsed(),
        last_offset - first_offset
    );
    assert_eq!(replayed.to_vec(), rest);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_upstream_is_recorded_and_replayed_as_a_502() {
    // A loopback port nobody listens on.
    let closed = format!("http://127.0.0.1:{}/v1", amai_testkit::free_port());
    let env = Env::start_with(move |c| c.openai_url(closed.clone())).await;
    let owner = env.owner("llm-unreachable").await;
    let s = env.open(&owner, record(), Default::default()).await;
    let a = env.chat(0, &s.key, "anyone there?").await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(a.json()["error"]["type"].as_str().is_some(), "{}", a.text());
    let recs = env.recordings(&s.id).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, proto::LlmOutcome::Unreachable as i32);
    assert!(recs[0].detail.contains("unreachable"), "{}", recs[0].detail);
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let b = env.chat(0, &s.key, "anyone there?").await;
    assert_eq!((b.status, &b.bytes), (a.status, &a.bytes));
    env.stop().await;
}

/// Sends `body` with a client's own header set (the SDKs' `x-stainless-*`,
/// `user-agent`, idempotency keys, ...).
async fn call_with_headers(
    env: &Env,
    key: &str,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = env
        .http
        .post(format!("{}{path}", env.base(0)))
        .body(body.to_string());
    req = if path.starts_with("/v1/messages") {
        req.header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
    } else {
        req.bearer_auth(key)
    };
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.expect("send");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        bytes: resp.bytes().await.expect("body").to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_headers_never_count_so_a_js_client_replays_a_python_recording() {
    let env = Env::start().await;
    let owner = env.owner("llm-headers").await;
    let s = env.open(&owner, record(), Default::default()).await;
    // Recorded with the Python SDKs' headers ...
    let python = [
        ("user-agent", "OpenAI/Python 3.57.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-timeout", "600"),
        ("idempotency-key", "stainless-python-retry-1111"),
    ];
    // ... replayed with the JS SDKs' (and another idempotency key, a retry count).
    let js = [
        ("user-agent", "OpenAI/JS 6.9.0"),
        ("x-stainless-lang", "js"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-runtime-version", "v20.20.2"),
        ("x-stainless-retry-count", "1"),
        ("x-stainless-timeout", "600"),
        ("idempotency-key", "stainless-node-retry-2222"),
    ];
    let chat_body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let msg_body = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let a = call_with_headers(&env, &s.key, "/v1/chat/completions", &chat_body, &python).await;
    let b = call_with_headers(&env, &s.key, "/v1/messages", &msg_body, &python).await;
    assert_eq!((a.status, b.status), (200, 200));
    // The upstream saw none of the client's own identifiers beyond what the
    // forward allowlist passes.
    let forwarded = env.upstream.last_request_headers().expect("headers");
    assert!(forwarded.get("idempotency-key").is_none());
    env.set_mode(&owner, &s, proto::LlmMode::Replay).await;
    let a2 = call_with_headers(&env, &s.key, "/v1/chat/completions", &chat_body, &js).await;
    let b2 = call_with_headers(&env, &s.key, "/v1/messages", &msg_body, &js).await;
    assert_eq!(a2.bytes, a.bytes, "{}", a2.text());
    assert_eq!(b2.bytes, b.bytes, "{}", b2.text());
    env.stop().await;
}
