//! The llm phases: the recording/replay proxy against the raw upstream it
//! fronts, in the same run, with the same HTTP client and the same request
//! bodies.
//!
//! A fake OpenAI upstream ([`FakeUpstream`], `127.0.0.1:0`) and the llm role
//! (its HTTP API on `127.0.0.1:0`) start after the identity phases. Then:
//!
//! 1. direct baseline: chat completions straight to the fake upstream under an
//!    open-loop load, non-streamed and streamed (read to the end);
//! 2. record: the non-streamed requests through a session in RECORD mode (each
//!    answer waits for its durable `llm.interaction_recorded`), at the same rate;
//! 3. replay: the session switched to REPLAY (`order: any` + `allow_repeats`,
//!    so every request hits), the same requests at the same rate, non-streamed
//!    and streamed;
//! 4. the durable append alone: owner actions the size of a recording appended
//!    to one chain through the store at the same rate (what a record adds
//!    beyond the proxy hop);
//! 5. throughput: [`LLM_CONCURRENCY`] requests in flight for a fixed time,
//!    replayed through the proxy and straight to the upstream.
//!
//! Added latency = proxy minus direct at the same percentile.

use std::sync::Arc;

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::{Aggregate, EventDraft, IdentityKeys, Position};
use amai_llm_fake_upstream::FakeUpstream;
use amai_projections::ProjectionHandle;
use amai_workers::roles::llm::LlmConfig;
use prost::bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use serde_json::json;

use crate::error::{Context as _, Fail};
use crate::load::{closed_loop, open_loop, Latency, Throughput};
use crate::platform::Platform;
use crate::{Sizes, WAIT};

/// Open-loop rate of every llm latency phase (direct, record, replay).
pub const LLM_RPS: u32 = 200;
/// Requests in flight during the throughput phases.
pub const LLM_CONCURRENCY: usize = 32;
/// Distinct request bodies (of each kind) the phases cycle through.
const DISTINCT_REQUESTS: usize = 64;
/// The fake upstream's OpenAI key (the proxy adds it server-side).
const UPSTREAM_KEY: &str = "sk-amai-bench-upstream";

/// What the llm phases measured.
#[derive(Debug, Default)]
pub(crate) struct LlmFigures {
    pub(crate) direct: Latency,
    pub(crate) direct_stream: Latency,
    pub(crate) record: Latency,
    pub(crate) replay: Latency,
    pub(crate) replay_stream: Latency,
    /// Store appends of events the size of a recording, one chain.
    pub(crate) append: Latency,
    /// Encoded size of the last recording (a signed event).
    pub(crate) record_bytes: usize,
    pub(crate) direct_tput: Throughput,
    pub(crate) replay_tput: Throughput,
    /// Interactions recorded (the timed ones and the streamed ones).
    pub(crate) recordings: usize,
    /// Upstream requests while the session replayed (should be 0).
    pub(crate) replay_upstream_hits: u64,
}

impl LlmFigures {
    pub(crate) fn replay_overhead_p50(&self) -> f64 {
        self.replay.p50() - self.direct.p50()
    }
    pub(crate) fn replay_overhead_p99(&self) -> f64 {
        self.replay.p99() - self.direct.p99()
    }
    pub(crate) fn replay_stream_overhead_p50(&self) -> f64 {
        self.replay_stream.p50() - self.direct_stream.p50()
    }
    pub(crate) fn replay_stream_overhead_p99(&self) -> f64 {
        self.replay_stream.p99() - self.direct_stream.p99()
    }
    pub(crate) fn record_overhead_p50(&self) -> f64 {
        self.record.p50() - self.direct.p50()
    }
    pub(crate) fn record_overhead_p99(&self) -> f64 {
        self.record.p99() - self.direct.p99()
    }
    pub(crate) fn replay_vs_direct(&self) -> f64 {
        self.replay_tput.per_s / self.direct_tput.per_s
    }
}

/// Where requests go: a chat completions URL and its `Authorization` value.
struct Target {
    url: String,
    auth: HeaderValue,
}

impl Target {
    fn new(url: String, key: &str) -> Result<Arc<Target>, Fail> {
        let auth = HeaderValue::from_str(&format!("Bearer {key}")).context("bad bearer key")?;
        Ok(Arc::new(Target { url, auth }))
    }
}

/// The request bodies: `DISTINCT_REQUESTS` chat completions, non-streamed and
/// streamed (the same conversations with `"stream": true`).
struct Bodies {
    plain: Vec<Bytes>,
    stream: Vec<Bytes>,
}

impl Bodies {
    fn new() -> Self {
        let body = |i: usize, stream: bool| {
            let mut v = json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are a terse assistant used by an autonomous agent."},
                    {"role": "user", "content": format!("amai bench question {i:03}: summarise the last step of the plan in one sentence.")}
                ],
                "temperature": 0
            });
            if stream {
                v["stream"] = json!(true);
                v["stream_options"] = json!({"include_usage": true});
            }
            Bytes::from(v.to_string())
        };
        Bodies {
            plain: (0..DISTINCT_REQUESTS).map(|i| body(i, false)).collect(),
            stream: (0..DISTINCT_REQUESTS).map(|i| body(i, true)).collect(),
        }
    }
}

/// One keep-alive HTTP/1.1 client for every phase (direct and proxied alike).
fn http_client() -> Result<reqwest::Client, Fail> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .http1_only()
        .pool_max_idle_per_host(4 * LLM_CONCURRENCY)
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")
}

/// POSTs `body` to `target` and reads the answer to its end; a non-2xx
/// answer is an error.
async fn call(http: reqwest::Client, target: Arc<Target>, body: Bytes) -> Result<(), Fail> {
    let resp = http
        .post(&target.url)
        .header(AUTHORIZATION, target.auth.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body)
        .send()
        .await
        .context("llm request")?;
    let status = resp.status();
    let bytes = resp.bytes().await.context("llm answer")?;
    if !status.is_success() {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
        return Err(Fail::msg(format!("HTTP {status}: {shown}")));
    }
    Ok(())
}

/// `rate` requests/s for `duration` to `target`, cycling through `bodies`.
async fn latency(
    http: &reqwest::Client,
    target: &Arc<Target>,
    bodies: &[Bytes],
    duration: std::time::Duration,
) -> Latency {
    open_loop(LLM_RPS, duration, |i| {
        call(
            http.clone(),
            target.clone(),
            bodies[i as usize % bodies.len()].clone(),
        )
    })
    .await
}

/// [`LLM_CONCURRENCY`] requests in flight for `duration` to `target`.
async fn throughput(
    http: &reqwest::Client,
    target: &Arc<Target>,
    bodies: &[Bytes],
    duration: std::time::Duration,
) -> Throughput {
    let (http, target, bodies) = (http.clone(), target.clone(), Arc::new(bodies.to_vec()));
    closed_loop(LLM_CONCURRENCY, duration, move |i| {
        call(
            http.clone(),
            target.clone(),
            bodies[i as usize % bodies.len()].clone(),
        )
    })
    .await
}

/// Sends every body once (connections, caches, the replay run's first wait).
async fn warm_up(
    http: &reqwest::Client,
    target: &Arc<Target>,
    bodies: &[Bytes],
) -> Result<(), Fail> {
    for b in bodies {
        call(http.clone(), target.clone(), b.clone()).await?;
    }
    Ok(())
}

/// An owner agent and its chain, for the session's actions.
struct Owner {
    id: String,
    keys: IdentityKeys,
    aggregate: Aggregate,
}

impl Owner {
    /// Appends an owner action with the given event id; returns its position.
    async fn act(&self, p: &Platform, id: uuid::Uuid, payload: Kind) -> Result<Position, Fail> {
        let head = p.store.chain_head(&self.aggregate).await?;
        let signed = EventDraft::new(self.aggregate.clone(), payload)
            .after(head.aggregate_seq, head.hash)
            .id(id)
            .sign(&self.keys, &self.id);
        Ok(p.store.append(signed).await?.position)
    }
}

/// Owner actions of about `bytes` (encoded) appended at [`LLM_RPS`] to the
/// owner's chain, one at a time in chain order.
async fn append_latency(
    p: &Platform,
    owner: &Owner,
    bytes: usize,
    duration: std::time::Duration,
) -> Result<Latency, Fail> {
    let head = p.store.chain_head(&owner.aggregate).await?;
    let note = |n: u64, pad: usize| {
        json!({ "tick": format!("{n:010}"), "note": "x".repeat(pad) }).to_string()
    };
    let draft = |head: (u64, amai_bus::EventHash), n: u64, pad: usize| {
        EventDraft::action(owner.aggregate.clone(), "bench.llm_sized", note(n, pad))
            .after(head.0, head.1)
            .sign(&owner.keys, &owner.id)
    };
    let probe = prost::Message::encoded_len(&draft((head.aggregate_seq, head.hash), 0, 0));
    let pad = bytes.saturating_sub(probe);
    let chain = Arc::new(tokio::sync::Mutex::new((head.aggregate_seq, head.hash)));
    let (aggregate, keys, id) = (
        owner.aggregate.clone(),
        Arc::new(owner.keys.clone()),
        owner.id.clone(),
    );
    Ok(open_loop(LLM_RPS, duration, |i| {
        let (store, chain, aggregate, keys, id) = (
            p.store.clone(),
            chain.clone(),
            aggregate.clone(),
            keys.clone(),
            id.clone(),
        );
        async move {
            let mut head = chain.lock().await;
            let signed = EventDraft::action(aggregate, "bench.llm_sized", note(i + 1, pad))
                .after(head.0, head.1)
                .sign(&keys, &id);
            let out = store.append(signed).await?;
            *head = (out.aggregate_seq, out.hash);
            Ok(())
        }
    })
    .await)
}

/// Runs the llm phases (see the module docs).
pub(crate) async fn measure(p: &mut Platform, sizes: &Sizes) -> Result<LlmFigures, Fail> {
    let mut out = LlmFigures::default();
    let upstream = FakeUpstream::builder()
        .openai_key(UPSTREAM_KEY)
        .start()
        .await
        .context("cannot start the fake LLM upstream")?;
    let config = LlmConfig::default()
        .openai_url(upstream.openai_base_url())
        .openai_api_key(UPSTREAM_KEY);
    let (proxy_url, projection) = p.start_llm_role(config).await?;
    p.say(&format!(
        "llm role up: proxy {proxy_url}, fake upstream {}",
        upstream.openai_base_url()
    ));
    let result = phases(p, sizes, &upstream, &proxy_url, &projection, &mut out).await;
    upstream.shutdown().await;
    result.map(|()| out)
}

async fn phases(
    p: &Platform,
    sizes: &Sizes,
    upstream: &FakeUpstream,
    proxy_url: &str,
    projection: &ProjectionHandle,
    out: &mut LlmFigures,
) -> Result<(), Fail> {
    let http = http_client()?;
    let bodies = Bodies::new();
    let direct = Target::new(
        format!("{}/chat/completions", upstream.openai_base_url()),
        UPSTREAM_KEY,
    )?;

    // 1. Direct baseline.
    warm_up(&http, &direct, &bodies.plain).await?;
    warm_up(&http, &direct, &bodies.stream).await?;
    out.direct = latency(&http, &direct, &bodies.plain, sizes.llm_latency_for).await;
    p.say(&format!(
        "llm direct      at {LLM_RPS} rps: {}",
        out.direct.summary()
    ));
    out.direct_stream = latency(&http, &direct, &bodies.stream, sizes.llm_latency_for).await;
    p.say(&format!(
        "llm direct SSE  at {LLM_RPS} rps: {}",
        out.direct_stream.summary()
    ));

    // A session in RECORD mode, opened by its owner (any order, repeats
    // allowed: every replayed request hits).
    let keys = IdentityKeys::generate();
    let owner_id = amai_workers::bootstrap::ensure_identity(
        &p.store,
        &keys,
        &format!("bench-llm-owner-{}", p.run_id),
        IdentityKind::Agent,
        None,
        amai_bus::envelope::now_timestamp(),
    )
    .await?;
    let owner = Owner {
        aggregate: Aggregate::agent(&owner_id)?,
        id: owner_id,
        keys,
    };
    let event_id = uuid::Uuid::now_v7();
    let session_id = amai_bus::llm::session_id(&owner.id, &event_id.to_string());
    let session_key = format!("amai-sk-bench-{}", uuid::Uuid::new_v4().simple());
    let position = owner
        .act(
            p,
            event_id,
            Kind::LlmSessionOpened(proto::LlmSessionOpened {
                session_id: session_id.clone(),
                mode: proto::LlmMode::Record as i32,
                options: Some(proto::LlmMatchOptions {
                    order: proto::LlmReplayOrder::Any as i32,
                    allow_repeats: true,
                    ..Default::default()
                }),
                key_sha256: amai_bus::llm::key_sha256(&session_key).to_vec(),
                ..Default::default()
            }),
        )
        .await?;
    projection
        .wait_for(&position, WAIT)
        .await
        .context("the llm role did not see the session opened")?;
    let proxied = Target::new(format!("{proxy_url}/v1/chat/completions"), &session_key)?;

    // 2. Record (non-streamed; the streamed bodies are recorded untimed).
    warm_up(&http, &proxied, &bodies.stream).await?;
    warm_up(&http, &proxied, &bodies.plain).await?;
    out.record = latency(&http, &proxied, &bodies.plain, sizes.llm_latency_for).await;
    out.recordings = 2 * DISTINCT_REQUESTS + out.record.sent - out.record.errors;
    p.say(&format!(
        "llm record      at {LLM_RPS} rps: {}",
        out.record.summary()
    ));

    // 3. Replay.
    let position = owner
        .act(
            p,
            uuid::Uuid::now_v7(),
            Kind::LlmSessionModeSet(proto::LlmSessionModeSet {
                session_id: session_id.clone(),
                mode: proto::LlmMode::Replay as i32,
                options: None,
            }),
        )
        .await?;
    projection
        .wait_for(&position, WAIT)
        .await
        .context("the llm role did not see the switch to replay")?;
    let hits_before = upstream.hits();
    warm_up(&http, &proxied, &bodies.plain).await?;
    warm_up(&http, &proxied, &bodies.stream).await?;
    out.replay = latency(&http, &proxied, &bodies.plain, sizes.llm_latency_for).await;
    p.say(&format!(
        "llm replay      at {LLM_RPS} rps: {}  (+{:.3} ms p50, +{:.3} ms p99 over direct)",
        out.replay.summary(),
        out.replay_overhead_p50(),
        out.replay_overhead_p99()
    ));
    out.replay_stream = latency(&http, &proxied, &bodies.stream, sizes.llm_latency_for).await;
    p.say(&format!(
        "llm replay SSE  at {LLM_RPS} rps: {}  (+{:.3} ms p50, +{:.3} ms p99 over direct)",
        out.replay_stream.summary(),
        out.replay_stream_overhead_p50(),
        out.replay_stream_overhead_p99()
    ));

    // 4. The durable append alone, for the record's split.
    let session = Aggregate::new(amai_bus::subjects::AggregateKind::Llm, &session_id)?;
    let head = p.store.chain_head(&session).await?;
    out.record_bytes = p
        .store
        .get_event(&Position::new(session.stream(), head.stream_seq))
        .await?
        .payload
        .len();
    out.append = append_latency(p, &owner, out.record_bytes, sizes.llm_latency_for).await?;
    p.say(&format!(
        "llm-size append at {LLM_RPS} rps: {}  ({} byte events; a record is {:+.3} ms p50 over its append)",
        out.append.summary(),
        out.record_bytes,
        out.record.p50() - out.append.p50()
    ));

    // 5. Throughput, replayed then direct.
    out.replay_tput = throughput(&http, &proxied, &bodies.plain, sizes.llm_throughput_for).await;
    out.replay_upstream_hits = upstream.hits() - hits_before;
    p.say(&format!(
        "llm replay throughput: {}",
        out.replay_tput.summary()
    ));
    out.direct_tput = throughput(&http, &direct, &bodies.plain, sizes.llm_throughput_for).await;
    p.say(&format!(
        "llm direct throughput: {}  (replay {:.2}x direct)",
        out.direct_tput.summary(),
        out.replay_vs_direct()
    ));
    if out.replay_upstream_hits > 0 {
        p.say(&format!(
            "WARNING: {} requests went upstream while the session replayed",
            out.replay_upstream_hits
        ));
    }
    Ok(())
}
