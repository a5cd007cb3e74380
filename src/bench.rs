//! `amai bench`: the hot paths measured against raw baselines in one run, on
//! one machine, in one process.
//!
//! The bench starts its own nats-server (free port, temporary store) unless
//! `--nats-url` is given, creates the streams, runs the identity role (temporary
//! state dir) and the gateway on `127.0.0.1:0`, then measures:
//!
//! 1. raw JetStream async publish (window of [`PUBLISH_WINDOW`] acks in flight) of
//!    payloads the size of a signed event, to a bench stream (`AMAI_BENCH`): the
//!    baseline of (2) and (3);
//! 2. signed appends through [`EventStore::append`]: [`AGENTS`] agents, each
//!    appending its own chain sequentially, all concurrently; the events are
//!    signed beforehand (client work, like the baseline's pre-built payloads);
//! 3. the same through the gateway with the SDK (direct `Append` with the known head);
//! 4. a fresh identity projection (new sled, cold store) replaying every stream it consumes;
//! 5. raw Ed25519 `verify_strict` in a tight loop: the baseline of (4);
//! 6. `GetIdentity` latency through the gateway under an open-loop load;
//! 7. append-to-visible latency (append until the identity role's projection has
//!    the event) under an open-loop load.
//!
//! The identity role starts after (3), so (2) and (3) measure the append path
//! alone; it then catches up before (4) and runs for (6) and (7), as under
//! `amai up`.
//! Latencies of (6) and (7) count from each request's *scheduled* send time, so
//! a stalled system cannot hide its queueing (no coordinated omission). Progress
//! goes to stderr; the table (or with `--json` one JSON object) to stdout.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amai_bus::proto::IdentityKind;
use amai_bus::{
    Aggregate, EventDraft, EventHash, EventStore, EventStoreConfig, IdentityKeys, Position,
};
use amai_client::AmaiClient;
use amai_projections::{IdentityProjection, ProjectionHandle, ProjectionRunner};
use amai_workers::reactor::ServiceSigner;
use amai_workers::roles::identity::IdentityRole;
use amai_workers::runtime::{RoleRuntime, RoleRuntimeConfig};
use anyhow::Context as _;
use async_nats::jetstream;
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use serde_json::json;

use crate::config::Settings;
use crate::nats_supervisor::{ManagedNats, ManagedNatsConfig};
use crate::server::open_store;

/// `amai bench` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Print one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Smaller sizes and 1 s latency windows (~10 s instead of ~30 s).
    #[arg(long)]
    quick: bool,
}

/// Stream of the raw publish baseline.
const BENCH_STREAM: &str = "AMAI_BENCH";
/// Acks in flight during the raw publish.
const PUBLISH_WINDOW: usize = 256;
/// Concurrent agents (and concurrent writers) of the append benchmarks.
const AGENTS: usize = 256;
/// Event type of the benchmark's actions.
const TICK: &str = "bench.tick";
/// Open-loop rate of the GetIdentity latency test.
const GET_IDENTITY_RPS: u32 = 2_000;
/// Open-loop rate of the append-to-visible latency test.
const APPEND_VISIBLE_RPS: u32 = 1_000;
/// Bound on any single wait (a request, a projection catching up).
const WAIT: Duration = Duration::from_secs(30);

/// Goals on a 2-core machine (reported, never asserted).
const GOAL_BUS_VS_RAW: f64 = 0.3;
const GOAL_GET_IDENTITY_P99_MS: f64 = 2.0;
const GOAL_APPEND_VISIBLE_P99_MS: f64 = 20.0;

/// How much work each phase does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    raw_messages: usize,
    bus_per_agent: usize,
    gateway_per_agent: usize,
    verify_for: Duration,
    latency_for: Duration,
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
            }
        } else {
            Sizes {
                raw_messages: 100_000,
                bus_per_agent: 75,
                gateway_per_agent: 38,
                verify_for: Duration::from_secs(1),
                latency_for: Duration::from_secs(3),
            }
        }
    }
}

/// Runs the benchmark.
pub(crate) async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let sizes = Sizes::new(args.quick);
    let scratch = Scratch::create()?;
    let managed = match &settings.nats_url {
        Some(url) => {
            progress(&format!("using the NATS at {url}: the bench's identity role joins that deployment's identity consumers and query service while it runs"));
            None
        }
        None => {
            let mut cfg = ManagedNatsConfig::new(scratch.path());
            cfg.port = 0;
            cfg.binary = settings.nats_server.clone();
            cfg.server_name = "amai-bench".to_string();
            let nats = ManagedNats::start(cfg).await?;
            progress(&format!(
                "nats-server pid {} on port {}",
                nats.pid()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "?".into()),
                nats.port()
            ));
            Some(nats)
        }
    };
    let url = settings
        .nats_url
        .clone()
        .or_else(|| managed.as_ref().map(|m| m.url().to_string()))
        .context("no NATS url")?;
    let result = match Platform::start(settings, &url, scratch.path()).await {
        Ok(mut platform) => {
            let report = measure(&mut platform, &sizes, scratch.path()).await;
            platform.stop().await;
            report
        }
        Err(e) => Err(e),
    };
    // A restart in the middle would make the figures meaningless: report it.
    let nats_restarts = managed.as_ref().map(ManagedNats::restarts);
    if let Some(m) = managed {
        m.stop().await;
    }
    drop(scratch);
    let mut report = result?;
    report.nats_restarts = nats_restarts;
    if let Some(n) = nats_restarts.filter(|n| *n > 0) {
        progress(&format!("WARNING: nats-server restarted {n} times during the run; the figures are not representative"));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json(&sizes))?);
    } else {
        print!("{}", report.table(&sizes));
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// A temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("amai-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running platform: NATS client, store, identity role, gateway.
struct Platform {
    client: async_nats::Client,
    js: jetstream::Context,
    store: EventStore,
    store_config: EventStoreConfig,
    /// Started after the append throughput phases, so they measure the append
    /// path alone (see [`Platform::start_role`]).
    role: Option<RoleRuntime>,
    role_config: RoleRuntimeConfig,
    gateway_url: String,
    stop_gateway: Option<tokio::sync::oneshot::Sender<()>>,
    gateway: tokio::task::JoinHandle<Result<(), amai_gateway::GatewayError>>,
    run_id: String,
    replicas: usize,
}

impl Platform {
    async fn start(settings: &Settings, url: &str, scratch: &Path) -> anyhow::Result<Platform> {
        let operator = IdentityKeys::generate();
        let (client, store) =
            open_store(settings, url, "amai-bench", operator.public_key()).await?;
        let js = store.jetstream().clone();
        let store_config = store.config().clone();
        let dir_name = scratch
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("run");
        let run_id = dir_name[dir_name.len().saturating_sub(8)..].to_string();
        let now = amai_bus::envelope::now_timestamp();
        amai_workers::bootstrap::ensure_operator(
            &store,
            &operator,
            &format!("bench-op-{run_id}"),
            now,
        )
        .await?;
        let service = IdentityKeys::generate();
        amai_workers::bootstrap::ensure_service(
            &store,
            &operator,
            &service,
            &format!("bench-svc-{run_id}"),
            &[
                amai_bus::subjects::AggregateKind::Trust,
                amai_bus::subjects::AggregateKind::Failure,
            ],
            now,
        )
        .await?;
        let signer = ServiceSigner {
            id: service.identity_id(),
            keys: service,
        };
        let role_config =
            RoleRuntimeConfig::new(client.clone(), store.clone(), scratch.join("state"), signer)
                .min_position_timeout(settings.query_timeout());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let cfg = amai_gateway::GatewayConfig::new(client.clone(), store.clone())
            .listen_addr(addr)
            .query_timeout(settings.query_timeout())
            .freshness_window(settings.request_freshness())
            .max_event_bytes(settings.max_event_bytes);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let gateway = tokio::spawn(amai_gateway::serve(cfg, listener, async move {
            let _ = stop_rx.await;
        }));
        progress(&format!(
            "platform up: nats {url}, gateway {addr}, state in {}",
            scratch.display()
        ));
        Ok(Platform {
            client,
            js,
            store,
            store_config,
            role: None,
            role_config,
            gateway_url: format!("http://{addr}"),
            stop_gateway: Some(stop_tx),
            gateway,
            run_id,
            replicas: settings.stream_replicas,
        })
    }

    /// Starts the identity role (projection, reactor, queries) and waits until it
    /// has caught up with everything appended so far.
    async fn start_role(&mut self) -> anyhow::Result<&RoleRuntime> {
        let role = RoleRuntime::start(Arc::new(IdentityRole), self.role_config.clone())
            .await
            .context("cannot start the identity role")?;
        let ends = stream_ends(&self.js).await?;
        let projection = role
            .projection("identity")
            .context("the identity role has no identity projection")?;
        wait_positions(projection, &ends)
            .await
            .context("the identity role did not catch up")?;
        Ok(self.role.insert(role))
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop_gateway.take() {
            let _ = tx.send(());
        }
        match (&mut self.gateway).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => progress(&format!("gateway stopped with an error: {e}")),
            Err(e) => progress(&format!("gateway task failed: {e}")),
        }
        if let Some(role) = self.role.as_mut() {
            role.stop().await;
        }
        let _ = self.js.delete_stream(BENCH_STREAM).await;
        let _ = self.client.flush().await;
    }
}

/// A registered benchmark agent.
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

/// Everything measured.
#[derive(Debug, Default)]
struct Report {
    payload_bytes: usize,
    raw_publish_per_s: f64,
    bus_append_per_s: f64,
    bus_events: usize,
    gateway_append_per_s: f64,
    gateway_events: usize,
    projection_apply_per_s: f64,
    projection_events: u64,
    projection_secs: f64,
    raw_verify_per_s: f64,
    raw_sign_per_s: f64,
    nats_restarts: Option<u64>,
    get_identity: Latency,
    identity_query_nats: Latency,
    append_visible: Latency,
}

async fn measure(p: &mut Platform, sizes: &Sizes, scratch: &Path) -> anyhow::Result<Report> {
    let mut report = Report::default();

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
    progress(&format!(
        "{AGENTS} agents registered; signed events are {} bytes",
        report.payload_bytes
    ));

    // 1. Raw publish baseline.
    report.raw_publish_per_s = raw_publish(p, sizes.raw_messages, report.payload_bytes).await?;
    progress(&format!(
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
    progress(&format!(
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
    progress(&format!(
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
    progress("identity role started and caught up");
    let ends = stream_ends(&p.js).await?;
    let (events, secs) = fresh_projection(p, &ends, &scratch.join("fresh-projection")).await?;
    report.projection_events = events;
    report.projection_secs = secs;
    report.projection_apply_per_s = events as f64 / secs;
    progress(&format!(
        "projection      {:>8} events {:>10}/s  (fresh replay, {secs:.2} s)",
        fmt_int(events as f64),
        fmt_int(report.projection_apply_per_s)
    ));

    // 5. Raw verification baseline (blocking loop off the async workers), and
    // signing for context.
    let verify_for = sizes.verify_for;
    (report.raw_verify_per_s, report.raw_sign_per_s) =
        tokio::task::spawn_blocking(move || raw_crypto(verify_for)).await??;
    progress(&format!(
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
                .map_err(anyhow::Error::from)
        }
    })
    .await;
    progress(&format!(
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
            .map_err(anyhow::Error::from)
        }
    })
    .await;
    progress(&format!(
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
    progress(&format!(
        "append_visible  at {} rps: {}",
        fmt_int(f64::from(APPEND_VISIBLE_RPS)),
        report.append_visible.summary()
    ));
    Ok(report)
}

/// Runs one task per agent, each from its head, returning the new heads.
async fn run_agents<F, Fut>(
    agents: &Arc<Vec<BenchAgent>>,
    heads: Vec<Head>,
    mut task: F,
) -> anyhow::Result<Vec<Head>>
where
    F: FnMut(ArcAgent, Head) -> Fut,
    Fut: Future<Output = anyhow::Result<Head>> + Send + 'static,
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

async fn raw_publish(p: &Platform, messages: usize, payload_bytes: usize) -> anyhow::Result<f64> {
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

async fn await_ack(ack: jetstream::context::PublishAckFuture) -> anyhow::Result<()> {
    ack.await.context("raw publish not acknowledged")?;
    Ok(())
}

/// The last sequence of every stream the identity projection consumes.
async fn stream_ends(js: &jetstream::Context) -> anyhow::Result<Vec<Position>> {
    let mut out = Vec::new();
    for name in amai_projections::Projection::streams(&IdentityProjection) {
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

async fn wait_positions(projection: &ProjectionHandle, ends: &[Position]) -> anyhow::Result<()> {
    for end in ends {
        projection.wait_for(end, WAIT).await?;
    }
    Ok(())
}

/// Replays the identity streams into a new sled with a new (cold) store:
/// (events, seconds until every stream's end is applied).
async fn fresh_projection(
    p: &Platform,
    ends: &[Position],
    dir: &Path,
) -> anyhow::Result<(u64, f64)> {
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
        progress(&format!(
            "the fresh projection recorded {violations} integrity violations"
        ));
    }
    drop(db);
    Ok((events, secs))
}

/// Ed25519 on a 64-byte message in tight loops: (`verify_strict`/s for
/// `duration`, sign/s for half of it).
fn raw_crypto(duration: Duration) -> anyhow::Result<(f64, f64)> {
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
    let verify_rate = verified as f64 / started.elapsed().as_secs_f64();
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

/// Latencies of one open-loop run.
#[derive(Debug, Default)]
struct Latency {
    /// Sorted, in milliseconds, of the successful requests.
    ms: Vec<f64>,
    sent: usize,
    errors: usize,
    first_error: Option<String>,
    /// Achieved send rate.
    rate: f64,
}

impl Latency {
    fn percentile(&self, p: f64) -> f64 {
        if self.ms.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.ms.len() as f64).ceil() as usize;
        self.ms[rank.clamp(1, self.ms.len()) - 1]
    }

    fn p50(&self) -> f64 {
        self.percentile(50.0)
    }

    fn p99(&self) -> f64 {
        self.percentile(99.0)
    }

    fn max(&self) -> f64 {
        self.ms.last().copied().unwrap_or(f64::NAN)
    }

    /// Whether the p99 is under `goal_ms` with no failed request.
    fn meets(&self, goal_ms: f64) -> bool {
        self.errors == 0 && self.p99() < goal_ms
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests, {} errors)",
            self.p50(),
            self.p99(),
            self.max(),
            self.sent,
            self.errors
        );
        if let Some(e) = &self.first_error {
            s.push_str(&format!("; first error: {e}"));
        }
        s
    }
}

/// Sends `rate` requests a second for `duration` on a fixed schedule, each in
/// its own task, and measures each from its scheduled send time.
async fn open_loop<F, Fut>(rate: u32, duration: Duration, mut request: F) -> Latency
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs(1) / rate;
    // Requests are built up front (futures are lazy) and released by a dedicated
    // OS thread at their scheduled times: tokio's timer has a 1 ms granularity,
    // which at 2,000 req/s would add up to a millisecond of the generator's own
    // lateness to every measurement, and a generator on the runtime under test
    // would be slowed by the very queueing it must expose.
    let requests: Vec<Fut> = (0..total).map(&mut request).collect();
    let handle = tokio::runtime::Handle::current();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let start = std::time::Instant::now() + Duration::from_millis(5);
        let mut tasks = Vec::with_capacity(requests.len());
        for (i, fut) in requests.into_iter().enumerate() {
            let scheduled = start + period.mul_f64(i as f64);
            if let Some(wait) = scheduled.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            tasks.push(handle.spawn(async move {
                let result = tokio::time::timeout(WAIT, fut)
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {WAIT:?}")));
                (
                    std::time::Instant::now().saturating_duration_since(scheduled),
                    result,
                )
            }));
        }
        let _ = release_tx.send((tasks, start.elapsed()));
    });
    let Ok((tasks, elapsed)) = release_rx.await else {
        return Latency {
            first_error: Some("the load generator thread died".into()),
            ..Latency::default()
        };
    };
    let mut out = Latency {
        ms: Vec::with_capacity(tasks.len()),
        sent: tasks.len(),
        rate: total as f64 / elapsed.as_secs_f64(),
        ..Latency::default()
    };
    for t in tasks {
        match t.await {
            Ok((elapsed, Ok(()))) => out.ms.push(elapsed.as_secs_f64() * 1e3),
            Ok((_, Err(e))) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out.ms.sort_by(f64::total_cmp);
    out
}

/// A small PRNG for picking agents (no dependency needed).
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        XorShift(u64::from(nanos) | 1)
    }

    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `12345.6` -> `12,346`.
fn fmt_int(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

/// Rounds for JSON (NaN becomes null through serde_json).
fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

impl Report {
    fn bus_vs_raw(&self) -> f64 {
        self.bus_append_per_s / self.raw_publish_per_s
    }

    fn to_json(&self, sizes: &Sizes) -> serde_json::Value {
        let fields = [
            ("raw_publish_per_s", json!(round(self.raw_publish_per_s, 1))),
            ("bus_append_per_s", json!(round(self.bus_append_per_s, 1))),
            (
                "gateway_append_per_s",
                json!(round(self.gateway_append_per_s, 1)),
            ),
            (
                "projection_apply_per_s",
                json!(round(self.projection_apply_per_s, 1)),
            ),
            ("raw_verify_per_s", json!(round(self.raw_verify_per_s, 1))),
            (
                "get_identity_p50_ms",
                json!(round(self.get_identity.p50(), 3)),
            ),
            (
                "identity_query_nats_p50_ms",
                json!(round(self.identity_query_nats.p50(), 3)),
            ),
            (
                "identity_query_nats_p99_ms",
                json!(round(self.identity_query_nats.p99(), 3)),
            ),
            (
                "get_identity_p99_ms",
                json!(round(self.get_identity.p99(), 3)),
            ),
            (
                "append_visible_p50_ms",
                json!(round(self.append_visible.p50(), 3)),
            ),
            (
                "append_visible_p99_ms",
                json!(round(self.append_visible.p99(), 3)),
            ),
            ("bus_vs_raw_publish", json!(round(self.bus_vs_raw(), 3))),
            (
                "gateway_vs_raw_publish",
                json!(round(self.gateway_append_per_s / self.raw_publish_per_s, 3)),
            ),
            (
                "gateway_vs_bus",
                json!(round(self.gateway_append_per_s / self.bus_append_per_s, 3)),
            ),
            (
                "projection_vs_raw_verify",
                json!(round(
                    self.projection_apply_per_s / self.raw_verify_per_s,
                    3
                )),
            ),
            (
                "bus_vs_raw_verify",
                json!(round(self.bus_append_per_s / self.raw_verify_per_s, 3)),
            ),
            ("raw_sign_per_s", json!(round(self.raw_sign_per_s, 1))),
            ("payload_bytes", json!(self.payload_bytes)),
            ("concurrency", json!(AGENTS)),
            ("publish_window", json!(PUBLISH_WINDOW)),
            ("raw_publish_messages", json!(sizes.raw_messages)),
            ("bus_append_events", json!(self.bus_events)),
            ("gateway_append_events", json!(self.gateway_events)),
            ("projection_events", json!(self.projection_events)),
            ("projection_seconds", json!(round(self.projection_secs, 3))),
            ("get_identity_target_rps", json!(GET_IDENTITY_RPS)),
            (
                "get_identity_achieved_rps",
                json!(round(self.get_identity.rate, 1)),
            ),
            ("get_identity_requests", json!(self.get_identity.sent)),
            ("get_identity_errors", json!(self.get_identity.errors)),
            (
                "get_identity_max_ms",
                json!(round(self.get_identity.max(), 3)),
            ),
            ("append_visible_target_rps", json!(APPEND_VISIBLE_RPS)),
            (
                "append_visible_achieved_rps",
                json!(round(self.append_visible.rate, 1)),
            ),
            ("append_visible_events", json!(self.append_visible.sent)),
            ("append_visible_errors", json!(self.append_visible.errors)),
            (
                "append_visible_max_ms",
                json!(round(self.append_visible.max(), 3)),
            ),
            ("latency_window_s", json!(sizes.latency_for.as_secs_f64())),
            ("nats_server_restarts", json!(self.nats_restarts)),
            (
                "cpus",
                json!(std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1)),
            ),
            ("goal_bus_vs_raw_publish_min", json!(GOAL_BUS_VS_RAW)),
            (
                "goal_bus_vs_raw_publish_met",
                json!(self.bus_vs_raw() >= GOAL_BUS_VS_RAW),
            ),
            (
                "goal_get_identity_p99_ms_max",
                json!(GOAL_GET_IDENTITY_P99_MS),
            ),
            (
                "goal_get_identity_p99_met",
                json!(self.get_identity.meets(GOAL_GET_IDENTITY_P99_MS)),
            ),
            (
                "goal_append_visible_p99_ms_max",
                json!(GOAL_APPEND_VISIBLE_P99_MS),
            ),
            (
                "goal_append_visible_p99_met",
                json!(self.append_visible.meets(GOAL_APPEND_VISIBLE_P99_MS)),
            ),
        ];
        serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn table(&self, sizes: &Sizes) -> String {
        let none = String::new;
        let get_rps = fmt_int(f64::from(GET_IDENTITY_RPS));
        let vis_rps = fmt_int(f64::from(APPEND_VISIBLE_RPS));
        let rows: Vec<[String; 5]> = vec![
            [
                format!(
                    "raw publish ({} msgs, window {PUBLISH_WINDOW})",
                    fmt_int(sizes.raw_messages as f64)
                ),
                format!("{}/s", fmt_int(self.raw_publish_per_s)),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!(
                    "bus append ({} events, {AGENTS} agents)",
                    fmt_int(self.bus_events as f64)
                ),
                format!("{}/s", fmt_int(self.bus_append_per_s)),
                format!("{:.2}x raw publish", self.bus_vs_raw()),
                format!(">= {GOAL_BUS_VS_RAW:.2}x"),
                met(self.bus_vs_raw() >= GOAL_BUS_VS_RAW).into(),
            ],
            [
                format!(
                    "gateway append ({} events, {AGENTS} conc.)",
                    fmt_int(self.gateway_events as f64)
                ),
                format!("{}/s", fmt_int(self.gateway_append_per_s)),
                format!(
                    "{:.2}x raw publish",
                    self.gateway_append_per_s / self.raw_publish_per_s
                ),
                none(),
                none(),
            ],
            [
                "raw ed25519 verify_strict".into(),
                format!("{}/s", fmt_int(self.raw_verify_per_s)),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!(
                    "projection apply ({} events, fresh)",
                    fmt_int(self.projection_events as f64)
                ),
                format!("{}/s", fmt_int(self.projection_apply_per_s)),
                format!(
                    "{:.2}x raw verify",
                    self.projection_apply_per_s / self.raw_verify_per_s
                ),
                none(),
                none(),
            ],
            [
                format!("get_identity p50 @ {get_rps} rps"),
                format!("{:.2} ms", self.get_identity.p50()),
                none(),
                none(),
                none(),
            ],
            [
                format!("get_identity p99 @ {get_rps} rps"),
                format!("{:.2} ms", self.get_identity.p99()),
                none(),
                format!("< {GOAL_GET_IDENTITY_P99_MS} ms"),
                met(self.get_identity.meets(GOAL_GET_IDENTITY_P99_MS)).into(),
            ],
            [
                "  same query over NATS only, p50/p99".to_string(),
                format!(
                    "{:.2}/{:.2} ms",
                    self.identity_query_nats.p50(),
                    self.identity_query_nats.p99()
                ),
                none(),
                none(),
                none(),
            ],
            [
                format!("append->visible p50 @ {vis_rps} ev/s"),
                format!("{:.2} ms", self.append_visible.p50()),
                none(),
                none(),
                none(),
            ],
            [
                format!("append->visible p99 @ {vis_rps} ev/s"),
                format!("{:.2} ms", self.append_visible.p99()),
                none(),
                format!("< {GOAL_APPEND_VISIBLE_P99_MS} ms"),
                met(self.append_visible.meets(GOAL_APPEND_VISIBLE_P99_MS)).into(),
            ],
        ];
        let header = ["measurement", "result", "ratio vs baseline", "goal", "met"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = format!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
            s.truncate(s.trim_end().len());
            s.push('\n');
            s
        };
        let mut out = line(header);
        out.push_str(&line(
            widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
        ));
        for row in &rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
        out.push_str(&format!(
            "\n{} bytes per signed event; {} cpus; appends measured before the identity role starts; latencies from each request's scheduled send time (open loop, {} s each): achieved {} and {} rps, {} and {} errors; nats-server restarts: {}\n",
            self.payload_bytes,
            std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            sizes.latency_for.as_secs_f64(),
            fmt_int(self.get_identity.rate),
            fmt_int(self.append_visible.rate),
            self.get_identity.errors,
            self.append_visible.errors,
            self.nats_restarts.map(|n| n.to_string()).unwrap_or_else(|| "n/a (--nats-url)".into()),
        ));
        out
    }
}
