//! # amai-bench
//!
//! `amai bench`: the hot paths measured against raw baselines in one run, on
//! one machine, in one process. The `amai` binary starts (or is given) a NATS
//! and calls [`run`]; everything else is here.
//!
//! The bench wires the platform as `amai up` does (`amai_workers::deploy`:
//! streams and store, the registry's identity role run by `RoleRuntime` with a
//! service identity endorsed for what the role declares), plus the gateway on
//! `127.0.0.1:0`, then measures:
//!
//! 1. raw JetStream async publish (window of [`PUBLISH_WINDOW`] acks in flight) of
//!    payloads the size of a signed event, to a bench stream (`AMAI_BENCH`): the
//!    baseline of (2) and (3);
//! 2. signed appends through [`EventStore::append`]: [`AGENTS`] agents, each
//!    appending its own chain sequentially, all concurrently; the events are
//!    signed beforehand (client work, like the baseline's pre-built payloads);
//! 3. the same through the gateway with the SDK (direct `Append` with the known head);
//! 4. a fresh identity projection (new sled, cold store) replaying every stream it consumes;
//! 5. raw Ed25519 `verify_strict` in a tight loop on one core: the baseline of
//!    (4) and, for a second ratio, of (2) (both verify every signature, on
//!    every core);
//! 6. `GetIdentity` latency through the gateway under an open-loop load;
//! 7. append-to-visible latency (append until the identity role's projection has
//!    the event) under an open-loop load;
//! 8. the llm role's recording/replay proxy against a fake OpenAI upstream
//!    started by the bench (see the `llm` module): direct baseline, record and
//!    replay latencies (non-streamed and streamed) under an open-loop load, and
//!    replay throughput with [`LLM_CONCURRENCY`] requests in flight;
//! 9. the trust role (see the `trust` module): a fresh fold of the trust feed
//!    (every event appended above) against the identity projection's fresh
//!    replay rate of (4), and `GetTrust` latency through the gateway under an
//!    open-loop load;
//! 10. the audit role (see the `audit` module): a stream filled with
//!     `--audit-events` messages (default [`AUDIT_EVENTS`]) by raw publish, the
//!     tree a fresh audit role builds from it, inclusion and consistency proof
//!     latency over NATS and through the gateway under an open-loop load
//!     (every timed answer checked against the bench's own tree), and the cost
//!     of a checkpoint per 1,000 events against a raw publish (skipped against
//!     a deployment's NATS: it writes junk into AMAI_FAILURES);
//! 11. the jail role on the local Docker Engine (see the `jail` module): a
//!     trivial command (`busybox`, `true`) run in a jail through the gateway,
//!     request to finished, against `docker run --rm` of the same image and
//!     command interleaved with it, and jail runs writing 0, 1 and 16 MiB to
//!     show the diff step's cost as the size of what changed grows (skipped,
//!     with the reason in the report, when no engine answers).
//!
//! The identity role starts after (3), so (2) and (3) measure the append path
//! alone; it then catches up before (4) and runs for (6) and (7), as under
//! `amai up`.
//! Latencies of (6), (7) and (8) count from each request's *scheduled* send time, so
//! a stalled system cannot hide its queueing (no coordinated omission).
//! Progress lines go to the caller's [`BenchConfig::progress`]; the result is a
//! [`Report`] (a table or one JSON object).
#![warn(missing_docs)]

mod audit;
mod error;
mod jail;
mod llm;
mod load;
mod platform;
mod report;
mod trust;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amai_bus::proto::IdentityKind;
use amai_bus::{Aggregate, EventDraft, EventHash, EventStore, IdentityKeys, Position};
use amai_client::AmaiClient;
use amai_projections::{IdentityProjection, ProjectionHandle, ProjectionRunner};
use amai_workers::deploy::StoreSettings;
use async_nats::jetstream;
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use serde_json::json;
use std::collections::VecDeque;

use error::{Context as _, Fail};
use load::{open_loop, XorShift};
use platform::Platform;
use report::fmt_int;

pub use audit::{AUDIT_EVENTS, AUDIT_EVENTS_QUICK, AUDIT_PROOF_RPS, CHECKPOINT_EVERY};
pub use error::BenchError;
pub use llm::{LLM_CONCURRENCY, LLM_RPS};
pub use report::Report;
pub use trust::GET_TRUST_RPS;

/// Stream of the raw publish baseline.
const BENCH_STREAM: &str = "AMAI_BENCH";
/// Acks in flight during the raw publish.
pub const PUBLISH_WINDOW: usize = 256;
/// Concurrent agents (and concurrent writers) of the append benchmarks.
pub const AGENTS: usize = 256;
/// Event type of the benchmark's actions.
const TICK: &str = "bench.tick";
/// Open-loop rate of the GetIdentity latency test.
const GET_IDENTITY_RPS: u32 = 2_000;
/// Open-loop rate of the append-to-visible latency test.
const APPEND_VISIBLE_RPS: u32 = 1_000;
/// Bound on any single wait (a request, a projection catching up).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Where progress lines go (stderr in the binary).
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(&str) + Send + Sync>);

impl Progress {
    /// Progress lines are handed to `f`.
    pub fn new(f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Progress(Arc::new(f))
    }

    /// No progress lines.
    pub fn silent() -> Self {
        Progress::new(|_| {})
    }

    fn say(&self, line: &str) {
        (self.0)(line)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// What to run against and how.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The NATS to use (the caller starts one, or names a deployment's).
    pub nats_url: String,
    /// Smaller sizes, shorter latency windows and fewer jail runs.
    pub quick: bool,
    /// Streams and store, as the deployment configures them.
    pub store: StoreSettings,
    /// Gateway → role query timeout, and the `min_position` wait bound.
    pub query_timeout: Duration,
    /// The gateway's request-signature freshness window.
    pub request_freshness: Duration,
    /// Events in the audited stream of the proof figures (`None`:
    /// [`AUDIT_EVENTS`], or [`AUDIT_EVENTS_QUICK`] when `quick`; at least 2).
    pub audit_events: Option<u64>,
    /// The NATS belongs to a deployment (`--nats-url`): the audit phase, which
    /// writes junk into a stream that denies purges, is skipped.
    pub shared_nats: bool,
    /// Progress lines.
    pub progress: Progress,
}

/// How much work each phase does.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sizes {
    raw_messages: usize,
    bus_per_agent: usize,
    gateway_per_agent: usize,
    verify_for: Duration,
    latency_for: Duration,
    /// Each llm latency window (at `LLM_RPS`: 200 requests a second).
    llm_latency_for: Duration,
    /// Each llm throughput window.
    llm_throughput_for: Duration,
    /// Jail runs (and as many `docker run`s) of the trivial command.
    jail_runs: usize,
    /// Jail runs per diff size.
    jail_diff_runs: usize,
    /// Messages in the audited stream of the proof figures.
    audit_events: u64,
    /// Checkpoints timed, one per [`CHECKPOINT_EVERY`] new events.
    checkpoint_rounds: usize,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Sizes {
                raw_messages: 20_000,
                bus_per_agent: 15,
                gateway_per_agent: 8,
                verify_for: Duration::from_millis(300),
                latency_for: Duration::from_secs(1),
                llm_latency_for: Duration::from_secs(3),
                llm_throughput_for: Duration::from_secs(2),
                jail_runs: 5,
                jail_diff_runs: 3,
                audit_events: AUDIT_EVENTS_QUICK,
                checkpoint_rounds: 50,
            }
        } else {
            Sizes {
                raw_messages: 100_000,
                bus_per_agent: 75,
                gateway_per_agent: 38,
                verify_for: Duration::from_secs(1),
                latency_for: Duration::from_secs(3),
                llm_latency_for: Duration::from_secs(5),
                llm_throughput_for: Duration::from_secs(3),
                jail_runs: 10,
                jail_diff_runs: 3,
                audit_events: AUDIT_EVENTS,
                checkpoint_rounds: 200,
            }
        }
    }
}

/// Runs the benchmark against `config.nats_url` (state in a temporary
/// directory, removed at the end) and returns what it measured.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    Ok(run_inner(config).await?)
}

async fn run_inner(config: BenchConfig) -> Result<Report, Fail> {
    let mut sizes = Sizes::new(config.quick);
    if let Some(n) = config.audit_events {
        if n < 2 {
            return Err(Fail::msg(format!(
                "--audit-events {n}: a consistency proof needs a stream of at least 2 events"
            )));
        }
        sizes.audit_events = n;
    }
    let scratch = tempfile::Builder::new()
        .prefix("amai-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let mut platform = Platform::start(&config, scratch.path(), config.progress.clone()).await?;
    let report = measure(&mut platform, &sizes, scratch.path()).await;
    platform.stop().await;
    report
}

struct BenchAgent {
    id: String,
    keys: IdentityKeys,
    aggregate: Aggregate,
}

/// An agent chain's head: (aggregate_seq, hash).
type Head = (u64, EventHash);

/// A fixed-size action document (the tick number zero-padded).
fn tick_json(n: u64) -> String {
    json!({ "tick": format!("{n:010}"), "note": "amai bench: a small free-form action of a typical size" }).to_string()
}

fn sign_tick(agent: &BenchAgent, head: Head, n: u64) -> amai_bus::proto::SignedEvent {
    EventDraft::action(agent.aggregate.clone(), TICK, tick_json(n))
        .after(head.0, head.1)
        .sign(&agent.keys, &agent.id)
}

/// Signs `count` consecutive events of every agent's chain in advance (the client's
/// work, not the bus's: the raw baseline publishes pre-built payloads too). Each
/// event links to the hash of the one before, exactly as the store will compute it.
fn presign(
    agents: &[BenchAgent],
    heads: &[Head],
    first_tick: u64,
    count: usize,
) -> Vec<Vec<amai_bus::proto::SignedEvent>> {
    agents
        .iter()
        .zip(heads)
        .map(|(agent, head)| {
            let mut head = *head;
            (0..count as u64)
                .map(|n| {
                    let ev = sign_tick(agent, head, first_tick + n);
                    head = (
                        head.0 + 1,
                        amai_bus::envelope::hash_bytes(&prost::Message::encode_to_vec(&ev)),
                    );
                    ev
                })
                .collect()
        })
        .collect()
}

async fn measure(p: &mut Platform, sizes: &Sizes, scratch: &Path) -> Result<Report, Fail> {
    let mut report = Report {
        sizes: *sizes,
        ..Report::default()
    };

    // Agents, registered through the store (not timed).
    let mut agents = Vec::with_capacity(AGENTS);
    let mut heads = Vec::with_capacity(AGENTS);
    let now = amai_bus::envelope::now_timestamp();
    for i in 0..AGENTS {
        let keys = IdentityKeys::generate();
        let id = amai_workers::bootstrap::ensure_identity(
            &p.store,
            &keys,
            &format!("bench-{}-{i}", p.run_id),
            IdentityKind::Agent,
            None,
            now,
        )
        .await?;
        let aggregate = Aggregate::agent(&id)?;
        let head = p.store.chain_head(&aggregate).await?;
        heads.push((head.aggregate_seq, head.hash));
        agents.push(BenchAgent {
            id,
            keys,
            aggregate,
        });
    }
    let agents = Arc::new(agents);
    report.payload_bytes = sign_tick(&agents[0], heads[0], 0).encoded_len();
    p.say(&format!(
        "{AGENTS} agents registered; signed events are {} bytes",
        report.payload_bytes
    ));

    // 1. Raw publish baseline.
    report.raw_publish_per_s = raw_publish(p, sizes.raw_messages, report.payload_bytes).await?;
    p.say(&format!(
        "raw publish     {:>8} msgs   {:>10}/s",
        fmt_int(sizes.raw_messages as f64),
        fmt_int(report.raw_publish_per_s)
    ));

    // 2. Signed appends through the store (events signed beforehand, untimed).
    let mut next_tick = 1u64;
    let mut chains = presign(&agents, &heads, next_tick, sizes.bus_per_agent).into_iter();
    let started = Instant::now();
    heads = run_agents(&agents, heads, |_agent, mut head| {
        let store = p.store.clone();
        let events = chains.next().unwrap_or_default();
        async move {
            for ev in events {
                let out = store.append(ev).await?;
                head = (out.aggregate_seq, out.hash);
            }
            Ok(head)
        }
    })
    .await?;
    next_tick += sizes.bus_per_agent as u64;
    report.bus_events = AGENTS * sizes.bus_per_agent;
    report.bus_append_per_s = report.bus_events as f64 / started.elapsed().as_secs_f64();
    p.say(&format!(
        "bus append      {:>8} events {:>10}/s  ({:.2}x raw publish)",
        fmt_int(report.bus_events as f64),
        fmt_int(report.bus_append_per_s),
        report.bus_append_per_s / report.raw_publish_per_s
    ));

    // 3. The same through the gateway.
    let sdk = AmaiClient::connect(p.gateway_url.clone()).await?;
    let mut chains = presign(&agents, &heads, next_tick, sizes.gateway_per_agent).into_iter();
    let started = Instant::now();
    heads = run_agents(&agents, heads, |_agent, mut head| {
        let sdk = sdk.clone();
        let events = chains.next().unwrap_or_default();
        async move {
            for ev in events {
                let out = sdk.append(ev).await?;
                let hash: EventHash = out
                    .hash
                    .as_slice()
                    .try_into()
                    .context("the gateway returned a hash that is not 32 bytes")?;
                head = (out.aggregate_seq, hash);
            }
            Ok(head)
        }
    })
    .await?;
    next_tick += sizes.gateway_per_agent as u64;
    report.gateway_events = AGENTS * sizes.gateway_per_agent;
    report.gateway_append_per_s = report.gateway_events as f64 / started.elapsed().as_secs_f64();
    p.say(&format!(
        "gateway append  {:>8} events {:>10}/s  ({:.2}x raw publish)",
        fmt_int(report.gateway_events as f64),
        fmt_int(report.gateway_append_per_s),
        report.gateway_append_per_s / report.raw_publish_per_s
    ));

    // 4. A fresh projection replaying everything (after the role has caught up,
    // so the two do not compete).
    let projection = p
        .start_role()
        .await?
        .projection("identity")
        .context("the identity role has no identity projection")?
        .clone();
    p.say("identity role started and caught up");
    let ends = stream_ends(&p.js).await?;
    let (events, secs) = fresh_projection(p, &ends, &scratch.join("fresh-projection")).await?;
    report.projection_events = events;
    report.projection_secs = secs;
    report.projection_apply_per_s = events as f64 / secs;
    p.say(&format!(
        "projection      {:>8} events {:>10}/s  (fresh replay, {secs:.2} s)",
        fmt_int(events as f64),
        fmt_int(report.projection_apply_per_s)
    ));

    // 5. Raw verification baseline (blocking loop off the async workers), and
    // signing for context.
    let verify_for = sizes.verify_for;
    (report.raw_verify_per_s, report.raw_sign_per_s) =
        tokio::task::spawn_blocking(move || raw_crypto(verify_for)).await??;
    p.say(&format!(
        "raw verify                       {:>10}/s  (sign {}/s)",
        fmt_int(report.raw_verify_per_s),
        fmt_int(report.raw_sign_per_s)
    ));

    // 6. GetIdentity latency under an open-loop load.
    let ids: Arc<Vec<String>> = Arc::new(agents.iter().map(|a| a.id.clone()).collect());
    for id in ids.iter() {
        sdk.get_identity(id).await.context("GetIdentity warm-up")?;
    }
    let mut rng = XorShift::seeded();
    report.get_identity = open_loop(GET_IDENTITY_RPS, sizes.latency_for, |_| {
        let (sdk, ids) = (sdk.clone(), ids.clone());
        let id = rng.pick(ids.len());
        async move {
            sdk.get_identity(&ids[id])
                .await
                .map(|_| ())
                .map_err(Fail::from)
        }
    })
    .await;
    p.say(&format!(
        "get_identity    at {} rps: {}",
        fmt_int(f64::from(GET_IDENTITY_RPS)),
        report.get_identity.summary()
    ));
    // The same query straight over NATS (no gRPC hop), to split the latency.
    report.identity_query_nats = open_loop(GET_IDENTITY_RPS, sizes.latency_for, |_| {
        let (client, ids) = (p.client.clone(), ids.clone());
        let id = rng.pick(ids.len());
        async move {
            let req = amai_bus::proto::GetIdentityRequest {
                selector: Some(amai_bus::proto::get_identity_request::Selector::Id(
                    ids[id].clone(),
                )),
                min_position: None,
            };
            amai_bus::query::request::<_, amai_bus::proto::Identity>(
                &client,
                amai_bus::query::IDENTITY_GET,
                &req,
                WAIT,
            )
            .await
            .map(|_| ())
            .map_err(Fail::from)
        }
    })
    .await;
    p.say(&format!(
        "identity query over NATS only at {} rps: {}",
        fmt_int(f64::from(GET_IDENTITY_RPS)),
        report.identity_query_nats.summary()
    ));

    // 7. Append-to-visible latency under an open-loop load, round-robin over the
    // agents (each chain's appends serialised by its own lock).
    let chains: Arc<Vec<tokio::sync::Mutex<Head>>> =
        Arc::new(heads.into_iter().map(tokio::sync::Mutex::new).collect());
    report.append_visible = open_loop(APPEND_VISIBLE_RPS, sizes.latency_for, |i| {
        let (store, agents, chains, projection) = (
            p.store.clone(),
            agents.clone(),
            chains.clone(),
            projection.clone(),
        );
        let a = i as usize % AGENTS;
        let tick = next_tick + i;
        async move {
            let position = {
                let mut head = chains[a].lock().await;
                let out = store.append(sign_tick(&agents[a], *head, tick)).await?;
                *head = (out.aggregate_seq, out.hash);
                out.position
            };
            projection.wait_for(&position, WAIT).await?;
            Ok(())
        }
    })
    .await;
    p.say(&format!(
        "append_visible  at {} rps: {}",
        fmt_int(f64::from(APPEND_VISIBLE_RPS)),
        report.append_visible.summary()
    ));

    // 8. The llm proxy against its upstream (after everything above, so the
    // identity phases are unaffected).
    report.llm = llm::measure(p, sizes).await?;

    // 9. The trust role: a fresh fold of the trust feed (everything above)
    // against the identity projection's replay rate (4), and GetTrust latency.
    report.trust = trust::measure(p, sizes, scratch, ids.clone()).await?;

    // 10. The audit role: fill, tree build, proofs, checkpoints (after the
    // phases that read the streams, before the jails' churn).
    report.audit = if p.shared_nats {
        let reason = "skipped: the NATS belongs to a deployment (--nats-url), and the phase writes --audit-events junk messages into its AMAI_FAILURES, which denies purges";
        p.say(&format!("audit: {reason}"));
        audit::AuditFigures::skipped(reason)
    } else {
        audit::measure(p, sizes, report.payload_bytes, report.raw_publish_per_s).await?
    };

    // 11. Jails against docker run (last: the containers' churn would disturb
    // every phase above).
    report.jail = jail::measure(p, sizes).await?;
    Ok(report)
}

/// Runs one task per agent, each from its head, returning the new heads.
async fn run_agents<F, Fut>(
    agents: &Arc<Vec<BenchAgent>>,
    heads: Vec<Head>,
    mut task: F,
) -> Result<Vec<Head>, Fail>
where
    F: FnMut(ArcAgent, Head) -> Fut,
    Fut: Future<Output = Result<Head, Fail>> + Send + 'static,
{
    let handles: Vec<_> = heads
        .into_iter()
        .enumerate()
        .map(|(i, head)| tokio::spawn(task(ArcAgent(agents.clone(), i), head)))
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// One agent of a shared list (cheap to move into a task).
struct ArcAgent(Arc<Vec<BenchAgent>>, usize);

impl std::ops::Deref for ArcAgent {
    type Target = BenchAgent;
    fn deref(&self) -> &BenchAgent {
        &self.0[self.1]
    }
}

async fn raw_publish(p: &Platform, messages: usize, payload_bytes: usize) -> Result<f64, Fail> {
    let _ = p.js.delete_stream(BENCH_STREAM).await;
    p.js.create_stream(jetstream::stream::Config {
        name: BENCH_STREAM.to_string(),
        subjects: vec!["bench.>".to_string()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: p.replicas,
        ..Default::default()
    })
    .await
    .context("cannot create the bench stream")?;
    let payload = prost::bytes::Bytes::from(vec![0x5a_u8; payload_bytes]);
    let subjects: Vec<String> = (0..AGENTS).map(|i| format!("bench.agent{i}")).collect();
    let started = Instant::now();
    let mut in_flight = VecDeque::with_capacity(PUBLISH_WINDOW);
    for i in 0..messages {
        if in_flight.len() >= PUBLISH_WINDOW {
            if let Some(ack) = in_flight.pop_front() {
                await_ack(ack).await?;
            }
        }
        in_flight.push_back(
            p.js.publish(subjects[i % AGENTS].clone(), payload.clone())
                .await?,
        );
    }
    while let Some(ack) = in_flight.pop_front() {
        await_ack(ack).await?;
    }
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

async fn await_ack(ack: jetstream::context::PublishAckFuture) -> Result<(), Fail> {
    ack.await.context("raw publish not acknowledged")?;
    Ok(())
}

/// The last sequence of every stream the identity projection consumes.
pub(crate) async fn stream_ends(js: &jetstream::Context) -> Result<Vec<Position>, Fail> {
    projection_stream_ends(js, &IdentityProjection).await
}

/// The last sequence of every stream `projection` consumes.
pub(crate) async fn projection_stream_ends(
    js: &jetstream::Context,
    projection: &dyn amai_projections::Projection,
) -> Result<Vec<Position>, Fail> {
    let mut out = Vec::new();
    for name in projection.streams() {
        let mut stream = js
            .get_stream(name)
            .await
            .with_context(|| format!("stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("stream {name}"))?;
        out.push(Position::new(*name, info.state.last_sequence));
    }
    Ok(out)
}

pub(crate) async fn wait_positions(
    projection: &ProjectionHandle,
    ends: &[Position],
) -> Result<(), Fail> {
    for end in ends {
        projection.wait_for(end, WAIT).await?;
    }
    Ok(())
}

/// Replays the identity streams into a new sled with a new (cold) store:
/// (events, seconds until every stream's end is applied).
async fn fresh_projection(p: &Platform, ends: &[Position], dir: &Path) -> Result<(u64, f64), Fail> {
    let mut events = 0;
    for end in ends {
        let mut stream = p.js.get_stream(&end.stream).await?;
        events += stream.info().await?.state.messages;
    }
    let db = sled::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let store = EventStore::new(p.js.clone(), p.store_config.clone());
    let started = Instant::now();
    let handle = ProjectionRunner::spawn(
        db.clone(),
        store,
        Arc::new(IdentityProjection),
        std::future::pending(),
    )
    .await?;
    handle.caught_up().await;
    wait_positions(&handle, ends).await?;
    let secs = started.elapsed().as_secs_f64();
    handle.shutdown();
    handle.stopped().await;
    let violations = handle.violation_count();
    if violations > 0 {
        p.say(&format!(
            "the fresh projection recorded {violations} integrity violations"
        ));
    }
    drop(db);
    Ok((events, secs))
}

/// Raw Ed25519 `verify_strict` of a 64-byte message in a tight loop on the
/// calling thread for `duration`: verifications per second.
pub(crate) fn raw_verify_rate(duration: Duration) -> Result<f64, Fail> {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let verifying = key.verifying_key();
    let message = [0x42u8; 64];
    let signature = key.sign(&message);
    let started = Instant::now();
    let mut verified = 0u64;
    while started.elapsed() < duration {
        for _ in 0..64 {
            verifying.verify_strict(
                std::hint::black_box(&message),
                std::hint::black_box(&signature),
            )?;
        }
        verified += 64;
    }
    Ok(verified as f64 / started.elapsed().as_secs_f64())
}

/// Ed25519 on a 64-byte message in tight loops: (`verify_strict`/s for
/// `duration`, sign/s for half of it).
fn raw_crypto(duration: Duration) -> Result<(f64, f64), Fail> {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let message = [0x42u8; 64];
    let verify_rate = raw_verify_rate(duration)?;
    let started = Instant::now();
    let mut signed = 0u64;
    while started.elapsed() < duration / 2 {
        for _ in 0..64 {
            std::hint::black_box(key.sign(std::hint::black_box(&message)));
        }
        signed += 64;
    }
    Ok((verify_rate, signed as f64 / started.elapsed().as_secs_f64()))
}
