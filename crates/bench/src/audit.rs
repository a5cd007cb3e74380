//! The audit phase of `amai bench`: what the audit role's verifiable history
//! costs, against raw JetStream baselines of the same run.
//!
//! 1. **Fill.** `N` messages (`--audit-events`, default [`AUDIT_EVENTS`],
//!    [`AUDIT_EVENTS_QUICK`] with `--quick`) of the size of a signed event go
//!    into AMAI_FAILURES by raw JetStream async publish, [`PUBLISH_WINDOW`]
//!    acks in flight, exactly as the raw publish baseline: `audit_fill_per_s`.
//!    The tree commits to a stream's bytes whatever they hold, so raw bytes
//!    cost the role what events do. AMAI_FAILURES is the one Amai stream no
//!    projection or reactor of the bench reads and the trust feed does not
//!    source: the junk disturbs nothing else (AMAI_* streams deny purges, so
//!    the phase is skipped against a deployment's NATS, `--nats-url`). Message
//!    `i` carries `i` in its first 8 bytes, so the bench knows every leaf.
//! 2. **Tree build.** The audit role then starts (auditing AMAI_FAILURES
//!    only, automatic checkpoints off so that they are measured apart, in 4)
//!    and builds the tree from the stream as it would after a restart or for a
//!    new instance: `audit_tree_per_s` is `N` over the time from the role's
//!    start until its stored tree (read from its sled) holds every message.
//! 3. **Proofs.** Once the role's sled is flushed (untimed), an operator's `amai.query.audit.request_checkpoint` signs
//!    the tree of `N`. Inclusion proofs of random leaves, and consistency
//!    proofs from random old sizes to `N`, are asked at [`AUDIT_PROOF_RPS`]
//!    on a fixed schedule (open loop, counted from each request's scheduled
//!    send time), first straight over NATS to the query service, then through
//!    the gateway's `AuditService` with the SDK (what clients see: the worse
//!    gateway p99 is `proof_p99_ms`, goal under [`GOAL_PROOF_P99_MS`] ms at a
//!    million events). The raw baseline, at the same rate on the same NATS
//!    connection the role answers on: a core NATS request/reply to an echo
//!    responder in the bench replying [`ECHO_REPLY_BYTES`] (about a proof's
//!    size), the hop and the machine's tail with no work behind them. Requests name the checkpoint's size, as a verifier
//!    holding a checkpoint does (size 0, "the latest", costs the query two
//!    more JetStream reads to find it). Every timed answer is kept and checked
//!    after the runs against the bench's own tree: the checkpoint's signed
//!    note must open with the log key the deployment publishes and its root
//!    must be the root of the messages the bench wrote (computed in one pass,
//!    [`roots_at`]); each proof must lead from the right leaf or old root to
//!    that root ([`check_inclusion`], [`check_consistency`]). A single wrong
//!    answer fails the run: the bench never reports the latency of a lie.
//! 4. **Checkpoint cost per 1k events.** [`CHECKPOINT_EVERY`] more messages
//!    are published, the tree catches up, and `request_checkpoint` signs the
//!    grown tree; repeated `checkpoint_rounds` times on the large tree. The
//!    request's latency (p50 `checkpoint_per_1k_ms`, and p99) is the cost of
//!    one checkpoint, which a role configured to checkpoint every 1,000 events
//!    pays once per 1,000 events. It is timed directly, not as the difference
//!    of two fills with checkpoints on and off: a checkpoint never blocks the
//!    ingest path (the checkpointer runs beside the builder), so that
//!    difference would be CPU contention under the VM's ±20% noise, not the
//!    checkpoint's work. The figure is an upper bound by one NATS request hop
//!    (the automatic checkpointer calls the same `checkpoint_now` in-process);
//!    the consistency-proof query p50 above is about that hop. Baselines,
//!    interleaved round by round: one raw publish of one message awaited
//!    (`raw_publish_one_*`), and the raw publish of the round's 1,000
//!    messages (`raw_publish_1k_ms`, what the checkpoint is amortised over).
//!
//! Last, `amai audit verify`'s engine (`amai-audit`) over every signed event
//! the run appended ([`offline_verify`]): `audit_verify_per_s`, set against
//! single-core raw verify measured right beside it (goal 1.5x). Three fresh
//! audits of the same input alternate with three one-second raw verify loops
//! (raw, audit, raw, audit, raw, audit); each figure is the median of its
//! three, so both sides see the same machine.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amai_bus::proto;
use amai_bus::query;
use amai_bus::subjects::AggregateKind;
use amai_bus::Position;
use amai_merkle::{empty_root, leaf_hash, node_hash, Hash};
use async_nats::jetstream;
use futures::StreamExt as _;
use prost::bytes::Bytes;

use crate::error::{Context as _, Fail};
use crate::load::{open_loop, Latency, XorShift};
use crate::platform::Platform;
use crate::report::fmt_int;
use crate::{Sizes, PUBLISH_WINDOW, WAIT};

/// Default stream size of the proof figures.
pub const AUDIT_EVENTS: u64 = 1_000_000;
/// The same with `--quick`.
pub const AUDIT_EVENTS_QUICK: u64 = 50_000;
/// Open-loop rate of each proof latency run.
pub const AUDIT_PROOF_RPS: u32 = 1_000;
/// Reply size of the NATS echo baseline: about an inclusion proof's at a
/// million events (20 hashes, the leaf, the root, the stream).
pub(crate) const ECHO_REPLY_BYTES: usize = 800;
/// Events between two checkpoints in the checkpoint-cost rounds.
pub const CHECKPOINT_EVERY: u64 = 1_000;
/// The goal on `proof_p99_ms` (a stream of a million events).
pub(crate) const GOAL_PROOF_P99_MS: f64 = 5.0;
/// Subject of the one-message raw publish baseline (in the raw publish
/// baseline's stream, AMAI_BENCH, subjects `bench.>`).
const BENCH_AUDIT_SUBJECT: &str = "bench.audit";
/// Why `audit_verify_per_s` is null when the phase did not run.
pub(crate) const OFFLINE_VERIFY_PENDING: &str = "not measured: the audit phase did not run";

/// What the audit phase measured. Rates are NaN and latencies empty when it
/// was skipped.
#[derive(Debug)]
pub(crate) struct AuditFigures {
    /// Why the phase did not run.
    pub(crate) skipped: Option<String>,
    /// The tree size the proofs were asked against (the checkpoint's).
    pub(crate) events: u64,
    /// Raw publish rate of the fill.
    pub(crate) fill_per_s: f64,
    /// Tree build rate of a fresh role catching up with the filled stream.
    pub(crate) tree_per_s: f64,
    /// How long that took.
    pub(crate) tree_secs: f64,
    /// The first checkpoint, of the whole filled stream (one request).
    pub(crate) checkpoint_at_n_ms: f64,
    /// Core NATS request/reply to an echo responder (the proofs' baseline).
    pub(crate) echo: Latency,
    /// Inclusion proofs over NATS (the query service).
    pub(crate) inclusion_query: Latency,
    /// Consistency proofs over NATS.
    pub(crate) consistency_query: Latency,
    /// Inclusion proofs through the gateway (SDK).
    pub(crate) inclusion_gateway: Latency,
    /// Consistency proofs through the gateway (SDK).
    pub(crate) consistency_gateway: Latency,
    /// Timed answers checked against the bench's own tree.
    pub(crate) proofs_verified: usize,
    /// `request_checkpoint` after each [`CHECKPOINT_EVERY`] new events.
    pub(crate) checkpoint: Latency,
    /// One raw publish of one message, awaited (interleaved with the above).
    pub(crate) raw_publish_one: Latency,
    /// The raw publish of each round's [`CHECKPOINT_EVERY`] messages.
    pub(crate) raw_publish_1k: Latency,
    /// The offline verifier's rate, once there is one ([`offline_verify`]).
    pub(crate) verify_per_s: Option<f64>,
    /// Single-core raw `verify_strict` measured alternately with the offline
    /// verifier: the baseline of its ratio.
    pub(crate) verify_baseline_per_s: Option<f64>,
    /// Why `verify_per_s` is `None`.
    pub(crate) verify_skipped: Option<String>,
}

impl Default for AuditFigures {
    fn default() -> Self {
        AuditFigures {
            skipped: None,
            events: 0,
            fill_per_s: f64::NAN,
            tree_per_s: f64::NAN,
            tree_secs: f64::NAN,
            checkpoint_at_n_ms: f64::NAN,
            echo: Latency::default(),
            inclusion_query: Latency::default(),
            consistency_query: Latency::default(),
            inclusion_gateway: Latency::default(),
            consistency_gateway: Latency::default(),
            proofs_verified: 0,
            checkpoint: Latency::default(),
            raw_publish_one: Latency::default(),
            raw_publish_1k: Latency::default(),
            verify_per_s: None,
            verify_baseline_per_s: None,
            verify_skipped: Some(OFFLINE_VERIFY_PENDING.to_string()),
        }
    }
}

impl AuditFigures {
    /// The phase did not run, for `reason`.
    pub(crate) fn skipped(reason: impl Into<String>) -> Self {
        AuditFigures {
            skipped: Some(reason.into()),
            ..AuditFigures::default()
        }
    }

    /// The worse of the inclusion and consistency p99 through the gateway
    /// (NaN when either was not measured).
    pub(crate) fn proof_p99_ms(&self) -> f64 {
        let (a, b) = (self.inclusion_gateway.p99(), self.consistency_gateway.p99());
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    }

    /// Both gateway proof runs under the goal with no failed request
    /// (`None`: not measured).
    pub(crate) fn proof_goal_met(&self) -> Option<bool> {
        self.skipped.is_none().then(|| {
            self.inclusion_gateway.meets(GOAL_PROOF_P99_MS)
                && self.consistency_gateway.meets(GOAL_PROOF_P99_MS)
        })
    }

    /// Tree build rate / fill rate.
    pub(crate) fn tree_vs_fill(&self) -> f64 {
        self.tree_per_s / self.fill_per_s
    }

    /// Checkpoint p50 / one raw publish p50.
    pub(crate) fn checkpoint_vs_raw_publish_one(&self) -> f64 {
        self.checkpoint.p50() / self.raw_publish_one.p50()
    }

    /// Checkpoint p50 / raw publish of 1k messages p50: what a checkpoint
    /// every 1,000 events adds to their raw ingest time.
    pub(crate) fn checkpoint_share_of_raw_1k(&self) -> f64 {
        self.checkpoint.p50() / self.raw_publish_1k.p50()
    }
}

/// The stream the phase fills and audits.
fn audit_stream() -> &'static str {
    AggregateKind::Failure.stream()
}

/// Message `i` of the fill: `i` big-endian, then a constant filler, `len`
/// bytes in all (at least 8).
pub(crate) fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0xa5u8; len.max(8)];
    v[..8].copy_from_slice(&i.to_be_bytes());
    v
}

/// The RFC 9162 roots of the first `s` leaves for every `s` of `sizes`
/// (ascending), in one pass over `leaves`: a frontier of complete subtrees
/// (strictly decreasing heights, left to right) is kept as leaves arrive,
/// and the root of a size is that frontier folded from the right. Sizes
/// beyond the number of leaves get no root (the result is shorter).
pub(crate) fn roots_at(leaves: impl IntoIterator<Item = Hash>, sizes: &[u64]) -> Vec<Hash> {
    let fold = |frontier: &[(u32, Hash)]| {
        frontier
            .iter()
            .rev()
            .map(|(_, h)| *h)
            .reduce(|right, left| node_hash(&left, &right))
            .unwrap_or_else(empty_root)
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut wanted = sizes.iter().copied().peekable();
    while wanted.next_if_eq(&0).is_some() {
        out.push(empty_root());
    }
    let mut frontier: Vec<(u32, Hash)> = Vec::new();
    let mut n = 0u64;
    for leaf in leaves {
        if wanted.peek().is_none() {
            break;
        }
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = frontier.last() {
            if height != node.0 {
                break;
            }
            frontier.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        frontier.push(node);
        n += 1;
        while wanted.next_if_eq(&n).is_some() {
            out.push(fold(&frontier));
        }
    }
    out
}

/// Proto bytes as 32-byte hashes.
fn hashes(v: &[Vec<u8>]) -> Result<Vec<Hash>, String> {
    v.iter()
        .map(|h| Hash::try_from(h.as_slice()).map_err(|_| "a proof hash is not 32 bytes".into()))
        .collect()
}

/// Whether an inclusion answer is the proof of leaf `index` (whose leaf
/// hash the caller computed from the message's own bytes) in the tree of
/// `size` whose signed root is `root`.
pub(crate) fn check_inclusion(
    answer: &proto::InclusionProof,
    index: u64,
    size: u64,
    leaf: &Hash,
    root: &Hash,
) -> Result<(), String> {
    if answer.leaf_index != index || answer.tree_size != size {
        return Err(format!(
            "asked for leaf {index} of {size}, answered leaf {} of {}",
            answer.leaf_index, answer.tree_size
        ));
    }
    if answer.leaf_hash.as_slice() != leaf.as_slice() {
        return Err(format!(
            "leaf {index}: the answered leaf hash is not the message's"
        ));
    }
    if answer.root_hash.as_slice() != root.as_slice() {
        return Err(format!(
            "leaf {index}: the answered root is not the signed root"
        ));
    }
    amai_merkle::verify_inclusion(leaf, index, size, &hashes(&answer.proof)?, root)
        .map_err(|e| format!("leaf {index} of {size}: {e}"))
}

/// Whether a consistency answer proves that the tree of `old` (whose root
/// the caller computed) is a prefix of the tree of `new` (signed root).
pub(crate) fn check_consistency(
    answer: &proto::ConsistencyProof,
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), String> {
    if answer.old_size != old || answer.new_size != new {
        return Err(format!(
            "asked for {old} -> {new}, answered {} -> {}",
            answer.old_size, answer.new_size
        ));
    }
    if answer.old_root.as_slice() != old_root.as_slice() {
        return Err(format!(
            "{old} -> {new}: the answered old root is not the stream's"
        ));
    }
    if answer.new_root.as_slice() != new_root.as_slice() {
        return Err(format!(
            "{old} -> {new}: the answered new root is not the signed root"
        ));
    }
    amai_merkle::verify_consistency(old, new, old_root, new_root, &hashes(&answer.proof)?)
        .map_err(|e| format!("{old} -> {new}: {e}"))
}

/// The bench's own knowledge of the audited stream: the sequence of each
/// message it published (ascending) and the event hashes of the messages
/// others published in between (normally none).
struct Leaves {
    payload_len: usize,
    /// `ours[i]` is the stream sequence of fill message `i`.
    ours: Vec<u64>,
    foreign: HashMap<u64, Hash>,
}

impl Leaves {
    /// The leaf hash of leaf `index` (stream sequence `index + 1`).
    fn leaf(&self, index: u64) -> Option<Hash> {
        let seq = index + 1;
        let event = match self.ours.binary_search(&seq) {
            Ok(i) => amai_bus::envelope::hash_bytes(&payload(i as u64, self.payload_len)),
            Err(_) => *self.foreign.get(&seq)?,
        };
        Some(leaf_hash(&event))
    }

    /// Reads the messages up to `size` that the bench did not publish.
    async fn read_foreign(&mut self, p: &Platform, size: u64) -> Result<(), Fail> {
        let mut next_ours = self.ours.iter().copied().peekable();
        for seq in 1..=size {
            if next_ours.next_if_eq(&seq).is_some() {
                continue;
            }
            let stored = p
                .store
                .get_event(&Position::new(audit_stream(), seq))
                .await
                .with_context(|| format!("message {seq} of {}", audit_stream()))?;
            self.foreign.insert(seq, stored.hash);
        }
        Ok(())
    }
}

/// Publishes messages `first..first + count` to `subject`, [`PUBLISH_WINDOW`]
/// acks in flight; their stream sequences, in order.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    first: u64,
    count: u64,
    payload_len: usize,
) -> Result<Vec<u64>, Fail> {
    let mut seqs = Vec::with_capacity(count as usize);
    let mut in_flight = VecDeque::with_capacity(PUBLISH_WINDOW);
    for i in first..first + count {
        if in_flight.len() >= PUBLISH_WINDOW {
            if let Some(ack) = in_flight.pop_front() {
                seqs.push(acked(ack).await?);
            }
        }
        let bytes = Bytes::from(payload(i, payload_len));
        in_flight.push_back(js.publish(subject.to_string(), bytes).await?);
    }
    while let Some(ack) = in_flight.pop_front() {
        seqs.push(acked(ack).await?);
    }
    Ok(seqs)
}

async fn acked(ack: jetstream::context::PublishAckFuture) -> Result<u64, Fail> {
    Ok(ack.await.context("audit fill not acknowledged")?.sequence)
}

/// Waits (bounded) until the audit role's stored tree holds `size` leaves.
async fn tree_reaches(p: &Platform, size: u64, poll: Duration) -> Result<(), Fail> {
    let tree = p.audit_tree(audit_stream())?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let now = tree.size().context("the audit tree")?;
        if now >= size {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Fail::msg(format!(
                "the audit tree of {} holds {now} of {size} events after 10 minutes",
                audit_stream()
            )));
        }
        tokio::time::sleep(poll).await;
    }
}

/// An operator's on-demand checkpoint, over NATS (the gateway forwards
/// `RequestCheckpoint` here).
async fn request_checkpoint(p: &Platform) -> Result<proto::AuditCheckpointed, Fail> {
    let answer: proto::Checkpoint = query::request(
        &p.client,
        query::AUDIT_REQUEST_CHECKPOINT,
        &proto::RequestCheckpointRequest {
            stream: audit_stream().to_string(),
        },
        WAIT,
    )
    .await?;
    answer
        .checkpoint
        .context("request_checkpoint answered no checkpoint")
}

/// The proofs' raw baseline: core NATS request/reply at [`AUDIT_PROOF_RPS`]
/// to a responder in the bench that answers [`ECHO_REPLY_BYTES`] at once.
async fn echo(p: &Platform, latency_for: Duration) -> Result<Latency, Fail> {
    let subject = format!("bench.echo.{}", p.run_id);
    let mut sub = p.client.subscribe(subject.clone()).await?;
    let client = p.client.clone();
    let reply = Bytes::from(vec![0x5a_u8; ECHO_REPLY_BYTES]);
    let responder = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(to) = m.reply {
                let _ = client.publish(to, reply.clone()).await;
            }
        }
    });
    p.client.flush().await?;
    let latency = open_loop(AUDIT_PROOF_RPS, latency_for, |_| {
        let (client, subject) = (p.client.clone(), subject.clone());
        async move {
            client
                .request(subject, Bytes::new())
                .await
                .map(|_| ())
                .map_err(Fail::from)
        }
    })
    .await;
    responder.abort();
    Ok(latency)
}

/// One open-loop proof run: `param` picks each request's parameter up front,
/// `ask` makes the request; every answer is kept with its parameter.
async fn proof_run<A, P, F, Fut>(
    latency_for: Duration,
    mut param: P,
    ask: F,
) -> (Latency, Vec<(u64, A)>)
where
    A: Send + 'static,
    P: FnMut() -> u64,
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<A, Fail>> + Send + 'static,
{
    let answers: Arc<Mutex<Vec<(u64, A)>>> = Arc::default();
    let latency = open_loop(AUDIT_PROOF_RPS, latency_for, |_| {
        let x = param();
        let (request, answers) = (ask(x), answers.clone());
        async move {
            let answer = request.await?;
            // The lock is held for a push; a poisoned one only loses the
            // answer for the later check (counted in `proofs_verified`).
            if let Ok(mut v) = answers.lock() {
                v.push((x, answer));
            }
            Ok(())
        }
    })
    .await;
    let answers = answers
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    (latency, answers)
}

pub(crate) async fn measure(
    p: &mut Platform,
    sizes: &Sizes,
    payload_len: usize,
    raw_publish_per_s: f64,
) -> Result<AuditFigures, Fail> {
    let mut figures = AuditFigures::default();
    let stream = audit_stream();
    let subject = format!("amai.failure.bench-{}", p.run_id);
    let n = sizes.audit_events;

    // 1. Fill.
    let started = Instant::now();
    let ours = publish(&p.js, &subject, 0, n, payload_len).await?;
    figures.fill_per_s = n as f64 / started.elapsed().as_secs_f64();
    let last = ours.last().copied().unwrap_or(0);
    p.say(&format!(
        "audit fill      {:>8} msgs   {:>10}/s  ({:.2}x raw publish; raw JetStream publish into {stream})",
        fmt_int(n as f64),
        fmt_int(figures.fill_per_s),
        figures.fill_per_s / raw_publish_per_s
    ));

    // 2. Tree build by a fresh role.
    let started = p.start_audit_role(stream).await?;
    tree_reaches(p, last, Duration::from_millis(5)).await?;
    figures.tree_secs = started.elapsed().as_secs_f64();
    figures.tree_per_s = last as f64 / figures.tree_secs;
    p.say(&format!(
        "audit tree      {:>8} events {:>10}/s  (fresh role catching up, {:.2} s; {:.2}x the fill rate)",
        fmt_int(last as f64),
        fmt_int(figures.tree_per_s),
        figures.tree_secs,
        figures.tree_vs_fill()
    ));

    // 3. Proofs against a checkpoint of the whole stream, once the tree is
    // on disk (so the runs do not compete with sled writing it).
    p.flush_audit_state().await?;
    let started = Instant::now();
    let signed = request_checkpoint(p).await?;
    figures.checkpoint_at_n_ms = started.elapsed().as_secs_f64() * 1e3;
    let size = signed.tree_size;
    if size < last {
        return Err(Fail::msg(format!(
            "the checkpoint covers {size} events, the tree held {last}"
        )));
    }
    figures.events = size;
    let sdk = amai_client::AmaiClient::connect(p.gateway_url.clone()).await?;
    let status = sdk.audit_status().await.context("GetStatus")?;
    let vkey = amai_client::checkpoints::log_vkey(&status, stream)?;
    let note = sdk
        .verified_checkpoint(stream, 0, &vkey)
        .await
        .context("the latest checkpoint, through the gateway")?;
    let root = note.note.checkpoint().root;
    if note.note.checkpoint().size != size || root.as_slice() != signed.root_hash.as_slice() {
        return Err(Fail::msg(format!(
            "the gateway's latest checkpoint of {stream} is not the one just requested (size {} vs {size})",
            note.note.checkpoint().size
        )));
    }
    p.say(&format!(
        "audit checkpoint of {} events: {:.2} ms (its note verifies with the deployment's log key)",
        fmt_int(size as f64),
        figures.checkpoint_at_n_ms
    ));

    let mut rng = XorShift::seeded();
    let mut pick_leaf = || rng.pick(size as usize) as u64;
    let mut rng = XorShift::seeded();
    // Old sizes 1..size (size itself gives the empty proof).
    let mut pick_old = || 1 + rng.pick((size as usize).saturating_sub(1).max(1)) as u64;
    let client = p.client.clone();
    let inclusion = |index: u64| {
        let client = client.clone();
        async move {
            let req = proto::GetInclusionProofRequest {
                stream: stream.to_string(),
                leaf_index: index,
                tree_size: size,
            };
            Ok::<proto::InclusionProof, Fail>(
                query::request(&client, query::AUDIT_INCLUSION, &req, WAIT).await?,
            )
        }
    };
    let consistency = |old: u64| {
        let client = client.clone();
        async move {
            let req = proto::GetConsistencyProofRequest {
                stream: stream.to_string(),
                old_size: old,
                new_size: size,
            };
            Ok::<proto::ConsistencyProof, Fail>(
                query::request(&client, query::AUDIT_CONSISTENCY, &req, WAIT).await?,
            )
        }
    };
    let inclusion_sdk = |index: u64| {
        let sdk = sdk.clone();
        async move { Ok::<_, Fail>(sdk.inclusion_proof(stream, index, size).await?) }
    };
    let consistency_sdk = |old: u64| {
        let sdk = sdk.clone();
        async move { Ok::<_, Fail>(sdk.consistency_proof(stream, old, size).await?) }
    };
    // Warm-up: connections, and the role's sled pages of random leaves.
    for _ in 0..100 {
        inclusion(pick_leaf()).await.context("inclusion warm-up")?;
        consistency(pick_old())
            .await
            .context("consistency warm-up")?;
        inclusion_sdk(pick_leaf())
            .await
            .context("inclusion warm-up")?;
        consistency_sdk(pick_old())
            .await
            .context("consistency warm-up")?;
    }
    let rps = fmt_int(f64::from(AUDIT_PROOF_RPS));
    figures.echo = echo(p, sizes.latency_for).await?;
    p.say(&format!(
        "NATS echo              at {rps} rps: {}",
        figures.echo.summary()
    ));
    let (latency, mut included) = proof_run(sizes.latency_for, &mut pick_leaf, inclusion).await;
    p.say(&format!(
        "inclusion (NATS)       at {rps} rps: {}",
        latency.summary()
    ));
    figures.inclusion_query = latency;
    let (latency, mut consistent) = proof_run(sizes.latency_for, &mut pick_old, consistency).await;
    p.say(&format!(
        "consistency (NATS)     at {rps} rps: {}",
        latency.summary()
    ));
    figures.consistency_query = latency;
    let (latency, more) = proof_run(sizes.latency_for, &mut pick_leaf, inclusion_sdk).await;
    included.extend(more);
    p.say(&format!(
        "inclusion (gateway)    at {rps} rps: {}",
        latency.summary()
    ));
    figures.inclusion_gateway = latency;
    let (latency, more) = proof_run(sizes.latency_for, &mut pick_old, consistency_sdk).await;
    consistent.extend(more);
    p.say(&format!(
        "consistency (gateway)  at {rps} rps: {}",
        latency.summary()
    ));
    figures.consistency_gateway = latency;

    // 4. Checkpoint cost per 1k events, on the large tree.
    let mut next = n;
    let (mut checkpoint, mut one, mut thousand) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.checkpoint_rounds {
        let started = Instant::now();
        p.js.publish(BENCH_AUDIT_SUBJECT, Bytes::from(payload(next, payload_len)))
            .await?
            .await
            .context("raw publish not acknowledged")?;
        one.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let seqs = publish(&p.js, &subject, next, CHECKPOINT_EVERY, payload_len).await?;
        thousand.push(started.elapsed().as_secs_f64() * 1e3);
        next += CHECKPOINT_EVERY;
        let last = seqs.last().copied().unwrap_or(0);
        tree_reaches(p, last, Duration::from_millis(1)).await?;
        let started = Instant::now();
        let c = request_checkpoint(p).await?;
        checkpoint.push(started.elapsed().as_secs_f64() * 1e3);
        if c.tree_size < last {
            return Err(Fail::msg(format!(
                "request_checkpoint signed {} events, the tree held {last}",
                c.tree_size
            )));
        }
    }
    figures.checkpoint = Latency::from_ms(checkpoint);
    figures.raw_publish_one = Latency::from_ms(one);
    figures.raw_publish_1k = Latency::from_ms(thousand);
    p.say(&format!(
        "checkpoint per {} events: {} ({:.2}x one raw publish, {:.1}% of the raw publish of the {} events)",
        fmt_int(CHECKPOINT_EVERY as f64),
        figures.checkpoint.summary(),
        figures.checkpoint_vs_raw_publish_one(),
        100.0 * figures.checkpoint_share_of_raw_1k(),
        fmt_int(CHECKPOINT_EVERY as f64),
    ));
    p.say(&format!(
        "  raw publish of 1 msg {}; of {} msgs p50 {:.2} ms",
        figures.raw_publish_one.summary(),
        fmt_int(CHECKPOINT_EVERY as f64),
        figures.raw_publish_1k.p50()
    ));

    // Every timed answer against the bench's own tree (untimed).
    let mut leaves = Leaves {
        payload_len,
        ours,
        foreign: HashMap::new(),
    };
    leaves.read_foreign(p, size).await?;
    let leaves = Arc::new(leaves);
    figures.proofs_verified = included.len() + consistent.len();
    tokio::task::spawn_blocking(move || {
        verify_answers(&leaves, size, &root, &included, &consistent)
    })
    .await?
    .map_err(|e| Fail::msg(format!("the audit role answered a wrong proof: {e}")))?;
    p.say(&format!(
        "audit: {} timed proofs verified against the bench's own tree of {} events and the signed root",
        fmt_int(figures.proofs_verified as f64),
        fmt_int(size as f64)
    ));

    (
        figures.verify_per_s,
        figures.verify_baseline_per_s,
        figures.verify_skipped,
    ) = match offline_verify(p).await {
        Ok(v) => {
            p.say(&format!(
                    "audit verify: {} signed events of the run's streams at {}/s (median of {VERIFY_PASSES}); raw verify beside it {}/s",
                    fmt_int(v.messages as f64),
                    fmt_int(v.rate),
                    fmt_int(v.raw_rate)
                ));
            (Some(v.rate), Some(v.raw_rate), None)
        }
        Err(reason) => (None, None, Some(reason)),
    };
    if let Some(reason) = &figures.verify_skipped {
        p.say(&format!("audit verify: {reason}"));
    }
    Ok(figures)
}

/// Checks the signed root and every answer against the leaves.
fn verify_answers(
    leaves: &Leaves,
    size: u64,
    root: &Hash,
    included: &[(u64, proto::InclusionProof)],
    consistent: &[(u64, proto::ConsistencyProof)],
) -> Result<(), String> {
    let mut olds: Vec<u64> = consistent.iter().map(|(old, _)| *old).collect();
    olds.push(size);
    olds.sort_unstable();
    olds.dedup();
    let mut missing = None;
    let all = (0..size).map(|i| {
        leaves.leaf(i).unwrap_or_else(|| {
            missing.get_or_insert(i);
            [0; 32]
        })
    });
    let roots = roots_at(all, &olds);
    if let Some(i) = missing {
        return Err(format!("the bench does not know leaf {i}"));
    }
    let roots: HashMap<u64, Hash> = olds.into_iter().zip(roots).collect();
    if roots.get(&size) != Some(root) {
        return Err(format!(
            "the signed root of {size} events is not the root of the messages in the stream"
        ));
    }
    for (index, answer) in included {
        let leaf = leaves
            .leaf(*index)
            .ok_or_else(|| format!("the bench does not know leaf {index}"))?;
        check_inclusion(answer, *index, size, &leaf, root)?;
    }
    for (old, answer) in consistent {
        let old_root = roots
            .get(old)
            .ok_or_else(|| format!("no root computed for {old}"))?;
        check_consistency(answer, *old, size, old_root, root)?;
    }
    Ok(())
}

/// The streams of signed events the run appended (AMAI_FAILURES is left
/// out: the proof phase filled it with raw payloads that are no events).
const VERIFIED_STREAMS: [&str; 7] = [
    "AMAI_AGENTS",
    "AMAI_NAMES",
    "AMAI_TRUST",
    "AMAI_LLM",
    "AMAI_JAILS",
    "AMAI_LIFECYCLE",
    "AMAI_AUDIT",
];

/// Passes of the offline verifier (and of the raw loop beside it).
const VERIFY_PASSES: usize = 3;

/// The offline verifier's figures: medians of [`VERIFY_PASSES`] passes.
struct OfflineVerify {
    /// Events per second of a whole audit (fold, checkpoints, report).
    rate: f64,
    /// Single-core raw `verify_strict` per second, measured between passes.
    raw_rate: f64,
    /// Signed events in the input.
    messages: u64,
}

/// `amai audit verify`'s engine (`amai-audit`) on every signed event the run
/// appended: the messages are read into memory first (not timed), then
/// [`VERIFY_PASSES`] fresh auditors run over them as over an export file
/// (signatures on all cores, chains, keys, checkpoints), each after a
/// one-second raw `verify_strict` loop on one core. Every pass must find the
/// run's history valid.
async fn offline_verify(p: &Platform) -> Result<OfflineVerify, String> {
    use amai_bus::consumer::{self, StartAt};
    use futures::StreamExt;
    let root = *p
        .store_config
        .get_trust_root()
        .ok_or("the run has no trust root")?;
    let mut input = Vec::new();
    for stream in VERIFIED_STREAMS {
        let last =
            p.js.get_stream(stream)
                .await
                .map_err(|e| e.to_string())?
                .cached_info()
                .state
                .last_sequence;
        let mut messages = Vec::new();
        if last > 0 {
            let mut replay = consumer::replay(&p.js, stream, None, StartAt::All)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(item) = replay.next().await {
                let (ev, _) = item.map_err(|e| e.to_string())?;
                let seq = ev.position.seq;
                messages.push(proto::ExportedMessage {
                    stream: stream.to_string(),
                    seq,
                    subject: ev.subject.clone(),
                    published_at: Some(prost_types::Timestamp {
                        seconds: ev.published_ms.div_euclid(1000),
                        nanos: (ev.published_ms.rem_euclid(1000) * 1_000_000) as i32,
                    }),
                    data: ev.payload.to_vec(),
                    msg_id: String::new(),
                });
                if seq >= last {
                    break;
                }
            }
        }
        input.push((stream, messages));
    }
    let messages: u64 = input.iter().map(|(_, m)| m.len() as u64).sum();
    let (mut rates, mut raw_rates) = tokio::task::spawn_blocking(move || {
        let mut rates = Vec::new();
        let mut raw_rates = Vec::new();
        for _ in 0..VERIFY_PASSES {
            raw_rates
                .push(crate::raw_verify_rate(Duration::from_secs(1)).map_err(|e| e.to_string())?);
            let input = input.clone();
            let started = Instant::now();
            audit_once(root, input)?;
            rates.push(messages as f64 / started.elapsed().as_secs_f64().max(1e-9));
        }
        Ok::<_, String>((rates, raw_rates))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(OfflineVerify {
        rate: median(&mut rates),
        raw_rate: median(&mut raw_rates),
        messages,
    })
}

/// One fresh audit of `input`; an invalid history is an error.
fn audit_once(
    root: ed25519_dalek::VerifyingKey,
    input: Vec<(&str, Vec<proto::ExportedMessage>)>,
) -> Result<(), String> {
    let mut auditor = amai_audit::Auditor::new(root);
    for (stream, messages) in input {
        auditor
            .add_stream(stream, amai_audit::Scope::Complete, messages)
            .map_err(|e| e.to_string())?;
    }
    let report = auditor.finish();
    if report.evidence == amai_audit::Evidence::Invalid {
        return Err(format!(
            "the run's own history audits invalid: {}",
            report
                .failures
                .first()
                .map(|f| f.line())
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The median of `v` (not empty).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&amai_bus::envelope::hash_bytes(&payload(i, 40))))
            .collect()
    }

    #[test]
    fn roots_at_gives_the_rfc_root_of_every_prefix() {
        let all = leaves(70);
        let sizes: Vec<u64> = (0..=70).collect();
        let roots = roots_at(all.iter().copied(), &sizes);
        assert_eq!(roots.len(), sizes.len());
        for (s, r) in sizes.iter().zip(&roots) {
            assert_eq!(*r, amai_merkle::root(&all[..*s as usize]), "size {s}");
        }
    }

    #[test]
    fn roots_at_handles_repeats_and_sizes_beyond_the_leaves() {
        let all = leaves(9);
        let roots = roots_at(all.iter().copied(), &[3, 3, 9, 12]);
        assert_eq!(roots.len(), 3);
        assert_eq!(roots[0], roots[1]);
        assert_eq!(roots[2], amai_merkle::root(&all));
    }

    #[test]
    fn payloads_differ_by_index_and_keep_their_length() {
        assert_eq!(payload(7, 300).len(), 300);
        assert_eq!(payload(7, 3).len(), 8);
        assert_ne!(payload(1, 64), payload(2, 64));
    }

    fn inclusion_answer(all: &[Hash], index: u64) -> proto::InclusionProof {
        proto::InclusionProof {
            stream: "S".into(),
            leaf_index: index,
            tree_size: all.len() as u64,
            leaf_hash: all[index as usize].to_vec(),
            proof: amai_merkle::inclusion_proof(all, index)
                .expect("proof")
                .iter()
                .map(|h| h.to_vec())
                .collect(),
            root_hash: amai_merkle::root(all).to_vec(),
        }
    }

    #[test]
    fn a_right_inclusion_answer_passes_and_a_wrong_one_does_not() {
        let all = leaves(13);
        let root = amai_merkle::root(&all);
        let good = inclusion_answer(&all, 5);
        assert_eq!(check_inclusion(&good, 5, 13, &all[5], &root), Ok(()));
        // The proof of another leaf, relabelled.
        let mut other = inclusion_answer(&all, 6);
        other.leaf_index = 5;
        other.leaf_hash = all[5].to_vec();
        assert!(check_inclusion(&other, 5, 13, &all[5], &root).is_err());
        // A leaf that is not the message's.
        assert!(check_inclusion(&good, 5, 13, &all[4], &root).is_err());
        // Another root.
        let mut forged = good.clone();
        forged.root_hash = [1u8; 32].to_vec();
        assert!(check_inclusion(&forged, 5, 13, &all[5], &root).is_err());
        // A short hash.
        let mut short = good;
        short.proof[0].pop();
        assert!(check_inclusion(&short, 5, 13, &all[5], &root).is_err());
    }

    #[test]
    fn a_right_consistency_answer_passes_and_a_wrong_one_does_not() {
        let all = leaves(21);
        let (old_root, new_root) = (amai_merkle::root(&all[..8]), amai_merkle::root(&all));
        let good = proto::ConsistencyProof {
            stream: "S".into(),
            old_size: 8,
            new_size: 21,
            proof: amai_merkle::consistency_proof(&all, 8)
                .expect("proof")
                .iter()
                .map(|h| h.to_vec())
                .collect(),
            old_root: old_root.to_vec(),
            new_root: new_root.to_vec(),
        };
        assert_eq!(
            check_consistency(&good, 8, 21, &old_root, &new_root),
            Ok(())
        );
        // Asked for another old size.
        assert!(check_consistency(&good, 9, 21, &old_root, &new_root).is_err());
        // An old root the stream never had.
        let other_root = amai_merkle::root(&all[..9]);
        assert!(check_consistency(&good, 8, 21, &other_root, &new_root).is_err());
        // A tampered proof.
        let mut tampered = good;
        tampered.proof[0][0] ^= 1;
        assert!(check_consistency(&tampered, 8, 21, &old_root, &new_root).is_err());
    }

    #[test]
    fn the_leaves_come_from_our_payloads_or_the_foreign_messages() {
        let leaves = Leaves {
            payload_len: 40,
            ours: vec![2, 3, 5],
            foreign: HashMap::from([(1, [9u8; 32]), (4, [8u8; 32])]),
        };
        let ours = |i: u64| leaf_hash(&amai_bus::envelope::hash_bytes(&payload(i, 40)));
        assert_eq!(leaves.leaf(0), Some(leaf_hash(&[9u8; 32])));
        assert_eq!(leaves.leaf(1), Some(ours(0)));
        assert_eq!(leaves.leaf(2), Some(ours(1)));
        assert_eq!(leaves.leaf(3), Some(leaf_hash(&[8u8; 32])));
        assert_eq!(leaves.leaf(4), Some(ours(2)));
        assert_eq!(leaves.leaf(5), None);
    }
}
