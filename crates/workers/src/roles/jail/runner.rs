//! The run reactor: runs a created jail once, recording `jail.run_started`
//! before the container starts and `jail.run_finished` (or
//! `jail.run_failed`) when everything was collected; for a reproduction, then
//! `jail.reproducibility_checked`.
//!
//! Inputs are `jail.created` with `run` set and `jail.run_queued`, on the jail
//! stream. Up to [`JailConfig::parallel`] run at once per instance; the rest
//! wait in the stream (a work queue). While a run goes on, its input is
//! reported in progress, so JetStream hands it to another instance only when
//! this one died. That instance finds `jail.run_started` caused by the same
//! input without an end, removes what is left on its engine, and records the
//! run as failed (`ORPHANED`): a run is never started twice.
//!
//! Deletion of a running jail is asked on the core subject
//! `amai.jail.cancel.<jail_id>` (not stored); the instance running it stops
//! the container and records the run as failed (`CANCELLED`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::blob::BlobStore;
use amai_bus::consumer::WorkConsumerConfig;
use amai_bus::proto::{self, payload::Kind, JailFailureKind as F};
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventStore, VerifiedEvent};
use amai_jail::{JailLimits, RunOutcome, RunRequest};
use amai_jail_spec::JailSpec;
use futures::StreamExt;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::config::JailConfig;
use super::create::{jail_events, on_verified_chain, spec_bytes};
use super::engine::{run_failure, EngineSlot, Failure};
use crate::reactor::{
    append_caused, output_id, ReactError, ReactFuture, Reactor, ReactorOptions, ServiceSigner,
};

/// The core NATS subject asking the instance running `jail_id` to stop it.
pub fn cancel_subject(jail_id: &str) -> String {
    format!("amai.jail.cancel.{jail_id}")
}

/// Output indexes of a run's events (ids derived from the input).
const STARTED: u32 = 1;
const ENDED: u32 = 2;
const CHECKED: u32 = 3;

/// Runs created jails.
#[derive(Clone)]
pub struct JailRuns {
    engine: EngineSlot,
    signer: Arc<OnceSigner>,
    config: JailConfig,
    running: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    /// The busybox image id, resolved once (its recipe does not change
    /// while the process runs).
    keeper_image: Arc<tokio::sync::OnceCell<String>>,
}

/// The service signer, set when the runtime starts the reactor's role.
pub(crate) type OnceSigner = std::sync::OnceLock<ServiceSigner>;

impl JailRuns {
    /// The reactor; `signer` is filled before the first input arrives.
    pub(crate) fn new(engine: EngineSlot, signer: Arc<OnceSigner>, config: JailConfig) -> Self {
        Self {
            engine,
            signer,
            config,
            running: Arc::default(),
            keeper_image: Arc::default(),
        }
    }

    /// Listens for cancellations of the jails this instance runs, until the
    /// client closes.
    pub(crate) async fn listen_for_cancellations(&self, client: async_nats::Client) {
        let mut sub = match client.subscribe(cancel_subject("*")).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to jail cancellations");
                return;
            }
        };
        while let Some(msg) = sub.next().await {
            let Some(jail_id) = msg.subject.as_str().strip_prefix("amai.jail.cancel.") else {
                continue;
            };
            if let Some(tx) = self.lock_running().get(jail_id) {
                tracing::info!(jail_id, "cancelling the run of a deleted jail");
                let _ = tx.send(true);
            }
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<bool>>> {
        // A poisoned map only means a run task panicked; its entries are still valid.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Deregisters a running jail on drop.
struct Running<'a> {
    runs: &'a JailRuns,
    jail_id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.runs.lock_running().remove(&self.jail_id);
    }
}

/// What a jail's chain says about its run.
#[derive(Default)]
struct RunHistory {
    created: Option<proto::JailCreated>,
    started_by: Option<String>,
    ended: bool,
    deleted: bool,
}

fn history(events: &[VerifiedEvent]) -> RunHistory {
    let mut h = RunHistory::default();
    for e in events {
        match &e.payload {
            Kind::JailCreated(c) => h.created = Some(c.clone()),
            Kind::JailRunStarted(_) => h.started_by = Some(e.body.causation_id.clone()),
            Kind::JailRunFinished(_) | Kind::JailRunFailed(_) => h.ended = true,
            Kind::JailDeleted(_) => h.deleted = true,
            _ => {}
        }
    }
    h
}

/// The limits of `spec` for the engine.
pub fn limits(spec: &JailSpec) -> JailLimits {
    let l = &spec.limits;
    JailLimits::builder()
        .cpus(l.cpus())
        .memory_bytes(l.memory_bytes)
        .pids(i64::from(l.pids))
        .wall_clock(l.timeout())
        .output_bytes(l.output_bytes)
        .tmpfs_bytes(l.disk_bytes)
        .build()
}

fn proto_limits(spec: &JailSpec) -> proto::JailLimits {
    let l = &spec.limits;
    proto::JailLimits {
        millicpus: l.millicpus,
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        disk_bytes: l.disk_bytes,
        timeout_ms: l.timeout_secs * 1000,
        output_bytes: l.output_bytes,
    }
}

/// The container run of `spec` in jail `jail_id` from image `image`.
pub fn run_request(jail_id: &str, image: &str, spec: &JailSpec) -> RunRequest {
    let mut request = RunRequest::new(jail_id, image, spec.command.clone())
        .working_dir(spec.workdir.clone())
        .limits(limits(spec))
        .files(spec.files.clone());
    for (name, value) in &spec.env {
        request = request.env(name.clone(), value.clone());
    }
    request
}

fn blob_ref(r: &amai_bus::blob::BlobRef) -> proto::BlobRef {
    proto::BlobRef {
        sha256: r.sha256.to_vec(),
        size: r.size,
    }
}

impl JailRuns {
    fn signer(&self) -> Result<&ServiceSigner, ReactError> {
        self.signer
            .get()
            .ok_or_else(|| ReactError::Transient("the jail service signer is not set yet".into()))
    }

    fn engine(&self) -> Result<&amai_jail::Engine, ReactError> {
        self.connected().map(|c| &c.engine)
    }

    fn connected(&self) -> Result<&super::engine::Connected, ReactError> {
        self.engine
            .get()
            .ok_or_else(|| ReactError::Transient("the Docker Engine is not connected yet".into()))
    }

    async fn record(
        &self,
        store: &EventStore,
        input: &VerifiedEvent,
        index: u32,
        jail_id: &str,
        payload: Kind,
    ) -> Result<(), ReactError> {
        let aggregate = Aggregate::new(AggregateKind::Jail, jail_id)
            .map_err(|e| ReactError::Poison(e.to_string()))?;
        append_caused(
            store,
            self.signer()?,
            input,
            output_id(&input.body.id, index),
            &aggregate,
            payload,
        )
        .await
        .map(|_| ())
    }

    async fn fail(
        &self,
        store: &EventStore,
        input: &VerifiedEvent,
        jail_id: &str,
        failure: Failure,
    ) -> Result<(), ReactError> {
        tracing::warn!(jail_id, kind = ?failure.kind, detail = %failure.detail, "jail run failed");
        self.record(
            store,
            input,
            ENDED,
            jail_id,
            Kind::JailRunFailed(proto::JailRunFailed {
                jail_id: jail_id.to_string(),
                kind: failure.kind as i32,
                detail: failure.detail,
            }),
        )
        .await
    }

    async fn run_jail(
        &self,
        store: &EventStore,
        input: &VerifiedEvent,
        jail_id: &str,
    ) -> Result<(), ReactError> {
        let events = jail_events(store, jail_id).await?;
        let h = history(&events);
        let Some(created) = h.created else {
            return Ok(());
        };
        if h.ended || h.deleted {
            return Ok(());
        }
        if let Some(started_by) = h.started_by {
            if started_by == input.body.id {
                // This input started the run and was never acknowledged: the
                // instance running it died.
                if let Ok(engine) = self.engine() {
                    if let Err(e) = amai_jail::remove_managed(engine, Some(jail_id)).await {
                        tracing::warn!(jail_id, error = %e, "removing an orphaned jail's containers failed");
                    }
                }
                return self
                    .fail(
                        store,
                        input,
                        jail_id,
                        Failure::new(
                            F::Orphaned,
                            "the worker running this jail stopped before the run ended; what it left was removed",
                        ),
                    )
                    .await;
            }
            // Another input started it; that one ends it.
            return Ok(());
        }
        let bytes = spec_bytes(store, &[], created.spec.as_ref())
            .await
            .map_err(ReactError::Transient)?;
        let spec = match JailSpec::from_json(&bytes) {
            Ok(spec) => spec,
            Err(e) => {
                return self
                    .fail(
                        store,
                        input,
                        jail_id,
                        Failure::new(F::InvalidSpec, e.to_string()),
                    )
                    .await
            }
        };
        let engine = self.engine()?.clone();
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        self.lock_running().insert(jail_id.to_string(), cancel_tx);
        let _running = Running {
            runs: self,
            jail_id: jail_id.to_string(),
        };
        // A deletion whose cancellation came before this run was registered
        // is on the chain by now: do not start a deleted jail.
        if history(&jail_events(store, jail_id).await?).deleted {
            return Ok(());
        }
        let network = match self.network(&engine, jail_id, &spec).await {
            Ok(network) => network,
            Err(failure) => return self.fail(store, input, jail_id, failure).await,
        };
        let llm_key = match self.llm_key(store, &created).await {
            Ok(key) => key,
            Err(failure) => {
                close_network(network).await;
                return self.fail(store, input, jail_id, failure).await;
            }
        };
        let scope = self.connected()?.scope.clone();
        let mut request = run_request(jail_id, &created.image_id, &spec).scope(scope);
        if let Some(key) = &llm_key {
            request = request
                .env("OPENAI_API_KEY", key.clone())
                .env("ANTHROPIC_API_KEY", key.clone());
        }
        if let Some(net) = &network {
            request = request
                .network(net.docker_network_name())
                .dns(net.dns_servers());
            if spec.llm.is_some() {
                let base = net.llm_base_url();
                request = request
                    .env("OPENAI_BASE_URL", format!("{base}/v1"))
                    .env("ANTHROPIC_BASE_URL", base);
            }
        }
        // The keeper holding /workspace and /tmp is always the busybox image:
        // the jail's own image may have no `sleep`.
        match self
            .keeper_image
            .get_or_try_init(|| async {
                amai_jail::build_busybox(&engine)
                    .await
                    .map(|busybox| busybox.image_id)
            })
            .await
        {
            Ok(image) => request = request.keeper_image(image.clone()),
            Err(e) => {
                close_network(network).await;
                return self
                    .fail(
                        store,
                        input,
                        jail_id,
                        Failure::new(F::ImageMissing, e.to_string()),
                    )
                    .await;
            }
        }
        let prepared = match amai_jail::prepare(&engine, request).await {
            Ok(prepared) => prepared,
            Err(e) => {
                close_network(network).await;
                return self.fail(store, input, jail_id, run_failure(&e)).await;
            }
        };
        let before = amai_jail::FsDiff::between(&amai_jail::Snapshot::new(), prepared.before());
        let started = self
            .record(
                store,
                input,
                STARTED,
                jail_id,
                Kind::JailRunStarted(proto::JailRunStarted {
                    jail_id: jail_id.to_string(),
                    container_id: prepared.container_id().to_string(),
                    limits: Some(proto_limits(&spec)),
                    before_sha256: hex::decode(before.sha256()).unwrap_or_default(),
                }),
            )
            .await;
        if let Err(e) = started {
            // Never started: the prepared containers go (dropping them removes them).
            drop(prepared);
            close_network(network).await;
            return Err(e);
        }
        let outcome = tokio::select! {
            r = prepared.start_with_background_cleanup() => Some(r),
            _ = cancel_rx.wait_for(|c| *c) => None,
        };
        let net_log = network.as_ref().map(|n| n.log());
        let (outcome, cleanup) = match outcome {
            None => {
                // The run future was dropped: its containers are removed in the background.
                let _ = amai_jail::remove_managed(&engine, Some(jail_id)).await;
                close_network(network).await;
                return self
                    .fail(
                        store,
                        input,
                        jail_id,
                        Failure::new(F::Cancelled, "the jail was deleted while it ran"),
                    )
                    .await;
            }
            Some(Err(e)) => {
                close_network(network).await;
                return self.fail(store, input, jail_id, run_failure(&e)).await;
            }
            Some(Ok(done)) => done,
        };
        // The keeper, the volumes and the network go while the run is
        // recorded; the input is acknowledged only once they are gone (a
        // graceful stop waits for it; a crash leaves them to the next start).
        let cleanup = tokio::spawn(async move {
            if let Err(e) = cleanup.wait().await {
                tracing::warn!(error = %e, "removing a finished jail's keeper and volumes failed; left for orphan reconciliation");
            }
            close_network(network).await;
        });
        let recorded = self
            .record_outcome(
                store,
                input,
                jail_id,
                &created,
                &spec,
                &outcome,
                net_log.as_ref(),
            )
            .await;
        if let Err(e) = cleanup.await {
            tracing::warn!(jail_id, error = %e, "the cleanup of a finished jail panicked");
        }
        recorded
    }

    /// Records how a run that ended went: `jail.run_finished` (or
    /// `jail.run_failed` when collecting failed) and, for a reproduction,
    /// `jail.reproducibility_checked`.
    #[allow(clippy::too_many_arguments)]
    async fn record_outcome(
        &self,
        store: &EventStore,
        input: &VerifiedEvent,
        jail_id: &str,
        created: &proto::JailCreated,
        spec: &JailSpec,
        outcome: &RunOutcome,
        net_log: Option<&amai_jail::NetworkLog>,
    ) -> Result<(), ReactError> {
        let finished = match self.finished(store, jail_id, spec, outcome, net_log).await {
            Ok(mut f) => {
                if !created.llm_session_id.is_empty() {
                    let llm = llm_session_usage(store, &created.llm_session_id).await?;
                    if let Some(usage) = f.usage.as_mut() {
                        usage.llm_calls = llm.calls;
                        usage.llm_input_tokens = llm.input_tokens;
                        usage.llm_output_tokens = llm.output_tokens;
                    }
                }
                f
            }
            Err(detail) => {
                return self
                    .fail(store, input, jail_id, Failure::new(F::Collection, detail))
                    .await
            }
        };
        self.record(
            store,
            input,
            ENDED,
            jail_id,
            Kind::JailRunFinished(finished.clone()),
        )
        .await?;
        if !created.reproduces.is_empty() {
            let mut checked = compare(store, &created.reproduces, jail_id, &finished).await?;
            if !created.llm_session_id.is_empty() {
                checked.llm_divergence = llm_session_usage(store, &created.llm_session_id)
                    .await?
                    .first_miss;
            }
            self.record(
                store,
                input,
                CHECKED,
                jail_id,
                Kind::JailReproducibilityChecked(checked),
            )
            .await?;
        }
        Ok(())
    }

    /// The LLM session key the requester sealed to the jail service, opened
    /// (`None` when the jail has no session). The box is bound to the request
    /// event and sealed with the requester's X25519 key of that time.
    async fn llm_key(
        &self,
        store: &EventStore,
        created: &proto::JailCreated,
    ) -> Result<Option<String>, Failure> {
        if created.llm_session_id.is_empty() {
            return Ok(None);
        }
        let signer = self
            .signer()
            .map_err(|e| Failure::new(F::Internal, e.to_string()))?;
        let owner = store.identity_state(&created.owner).await.map_err(|e| {
            Failure::new(
                F::LlmSession,
                format!("cannot read the requester's keys: {e}"),
            )
        })?;
        let seq = created.request_seq;
        let sender = owner
            .keys
            .iter()
            .find(|k| k.from_seq <= seq && k.until_seq.is_none_or(|until| seq <= until))
            .ok_or_else(|| {
                Failure::new(F::LlmSession, "no key of the requester covers the request")
            })?;
        let key = amai_bus::seal::open(
            &signer.keys.x25519_secret_bytes(),
            &sender.x25519_key,
            amai_bus::seal::MessageBinding {
                sender: &created.owner,
                recipient: &signer.id,
                event_id: &created.request_event_id,
            },
            &created.sealed_llm_key,
        )
        .map_err(|e| Failure::new(F::LlmSession, format!("the sealed LLM key: {e}")))?;
        String::from_utf8(key)
            .map(Some)
            .map_err(|_| Failure::new(F::LlmSession, "the sealed LLM key is not text"))
    }

    /// The jail's network, for a policy other than `none`, with its host
    /// rules checked in place.
    async fn network(
        &self,
        engine: &amai_jail::Engine,
        jail_id: &str,
        spec: &JailSpec,
    ) -> Result<Option<amai_jail::JailNetwork>, Failure> {
        if spec.network == amai_jail_spec::NetworkPolicy::None {
            return Ok(None);
        }
        // The proxy is the one endpoint `llm-only` reaches; without a session
        // of the jail it answers 401.
        let scope = self
            .connected()
            .map_err(|e| Failure::new(F::EngineUnavailable, e.to_string()))?
            .scope
            .clone();
        let plan = amai_jail::NetworkPlan::new(jail_id, spec.network.clone())
            .llm_proxy(self.config.llm_proxy)
            .scope(scope);
        let network = amai_jail::JailNetwork::create(engine, plan)
            .await
            .map_err(|e| Failure::new(F::NetworkSetup, e.to_string()))?;
        if let Err(e) = network.check_rules().await {
            close_network(Some(network)).await;
            return Err(Failure::new(F::NetworkSetup, e.to_string()));
        }
        Ok(Some(network))
    }

    /// The `jail.run_finished` of `outcome`, its outputs stored as blobs.
    async fn finished(
        &self,
        store: &EventStore,
        jail_id: &str,
        spec: &JailSpec,
        outcome: &RunOutcome,
        net_log: Option<&amai_jail::NetworkLog>,
    ) -> Result<proto::JailRunFinished, String> {
        let blobs = BlobStore::open(store.jetstream(), 1, usize::MAX)
            .await
            .map_err(|e| format!("cannot open the blob store: {e}"))?;
        let put = |what: &'static str, data: Vec<u8>| {
            let blobs = blobs.clone();
            async move {
                blobs
                    .put(&data)
                    .await
                    .map(|r| blob_ref(&r))
                    .map_err(|e| format!("cannot store the {what}: {e}"))
            }
        };
        let diff = &outcome.diff;
        let archive = diff.archive();
        let diff_sha256 = Sha256::digest(&archive).to_vec();
        let entries = proto::JailDiff {
            entries: diff.entries().iter().map(diff_entry).collect(),
            ..Default::default()
        };
        let count =
            |c: amai_jail::Change| diff.entries().iter().filter(|e| e.change == c).count() as u64;
        let violations = amai_jail::check_policy(diff, &spec.diff_policy)
            .into_iter()
            .map(|v| proto::JailPolicyViolation {
                rule: v.rule.to_string(),
                path: v.path,
                detail: v.detail,
            })
            .collect();
        let (network_log, allowed, denied) = match net_log {
            None => (None, 0, 0),
            Some(log) => {
                let entries: Vec<_> = log.entries.iter().map(net_entry).collect();
                let allowed = entries
                    .iter()
                    .filter(|e| e.verdict == proto::JailNetVerdict::Allowed as i32)
                    .count() as u64;
                let denied = entries.len() as u64 - allowed;
                let encoded = proto::JailNetworkLog {
                    entries,
                    blob: None,
                }
                .encode_to_vec();
                (Some(put("network log", encoded).await?), allowed, denied)
            }
        };
        Ok(proto::JailRunFinished {
            jail_id: jail_id.to_string(),
            exit_code: i32::try_from(outcome.exit_code).unwrap_or(-1),
            duration_ms: outcome.duration.as_millis() as u64,
            oom_killed: outcome.oom_killed,
            timed_out: outcome.timed_out,
            usage: Some(proto::JailUsage {
                cpu_seconds: outcome.usage.cpu_seconds,
                peak_memory_bytes: outcome.usage.peak_memory_bytes,
                pids_peak: u32::try_from(outcome.usage.peak_pids).unwrap_or(u32::MAX),
                bytes_written: diff.bytes_written(),
                ..Default::default()
            }),
            stdout_sha256: Sha256::digest(&outcome.stdout).to_vec(),
            stdout: Some(put("stdout", outcome.stdout.clone()).await?),
            stderr_sha256: Sha256::digest(&outcome.stderr).to_vec(),
            stderr: Some(put("stderr", outcome.stderr.clone()).await?),
            output_truncated: outcome.output_truncated,
            diff_sha256,
            diff: Some(put("diff archive", archive).await?),
            paths_added: count(amai_jail::Change::Added),
            paths_modified: count(amai_jail::Change::Modified),
            paths_deleted: count(amai_jail::Change::Deleted),
            violations,
            network_log,
            connections_allowed: allowed,
            connections_denied: denied,
            diff_entries: Some(put("diff entries", entries.encode_to_vec()).await?),
        })
    }
}

/// What a jail's LLM session stream holds after the run.
#[derive(Debug, Default)]
struct LlmSessionUsage {
    calls: u64,
    input_tokens: u64,
    output_tokens: u64,
    first_miss: Option<proto::JailLlmDivergence>,
}

/// Reads `llm/<session>`: recorded interactions (calls and tokens) and the
/// first replay miss (where a reproduction diverged). Replay hits are not
/// events, so a replayed run counts only its misses as calls.
async fn llm_session_usage(
    store: &EventStore,
    session: &str,
) -> Result<LlmSessionUsage, ReactError> {
    let aggregate = Aggregate::new(AggregateKind::Llm, session)
        .map_err(|e| ReactError::Poison(e.to_string()))?;
    let stored = store
        .read_chain(&aggregate, 1, 100_000)
        .await
        .map_err(|e| ReactError::Transient(e.to_string()))?;
    let mut usage = LlmSessionUsage::default();
    for e in stored
        .iter()
        .filter_map(|s| VerifiedEvent::decode(&s.payload).ok())
    {
        match &e.payload {
            Kind::LlmInteractionRecorded(r) => {
                usage.calls += 1;
                if let Some(u) = &r.usage {
                    usage.input_tokens += u.input_tokens;
                    usage.output_tokens += u.output_tokens;
                }
            }
            Kind::LlmReplayMissed(m) => {
                usage.calls += 1;
                if usage.first_miss.is_none() {
                    usage.first_miss = Some(proto::JailLlmDivergence {
                        session_id: m.session_id.clone(),
                        step: m.step,
                        method: m.method.clone(),
                        path: m.path.clone(),
                        diff: m.diff.clone(),
                        miss_event_id: e.body.id.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(usage)
}

/// Closes a jail's network (after its containers are gone), logging failures:
/// what stays is removed by orphan reconciliation.
async fn close_network(network: Option<amai_jail::JailNetwork>) {
    if let Some(network) = network {
        if let Err(e) = network.close().await {
            tracing::warn!(error = %e, "closing a jail network failed; left for orphan reconciliation");
        }
    }
}

fn diff_entry(e: &amai_jail::DiffEntry) -> proto::JailDiffEntry {
    let change = match e.change {
        amai_jail::Change::Added => proto::JailChange::Added,
        amai_jail::Change::Modified => proto::JailChange::Modified,
        amai_jail::Change::Deleted => proto::JailChange::Deleted,
    };
    proto::JailDiffEntry {
        path: e.path.clone(),
        change: change as i32,
        mode: e.entry.mode,
        size: e.entry.size,
        sha256: e.entry.sha256.map(|d| d.to_vec()).unwrap_or_default(),
        link_target: e.entry.link_target.clone().unwrap_or_default(),
    }
}

fn net_entry(e: &amai_jail::NetworkLogEntry) -> proto::JailNetworkEntry {
    let at =
        e.at.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    proto::JailNetworkEntry {
        at: Some(prost_types::Timestamp {
            seconds: at.as_secs() as i64,
            nanos: at.subsec_nanos() as i32,
        }),
        protocol: match e.protocol {
            amai_jail::net::Protocol::Tcp => "tcp",
            amai_jail::net::Protocol::Dns => "dns",
            amai_jail::net::Protocol::Udp => "udp",
            amai_jail::net::Protocol::Icmp => "icmp",
        }
        .to_string(),
        destination: e.destination.clone(),
        verdict: match e.verdict {
            amai_jail::net::Verdict::Allowed => proto::JailNetVerdict::Allowed,
            amai_jail::net::Verdict::Denied => proto::JailNetVerdict::Denied,
        } as i32,
        detail: e.detail.clone(),
    }
}

/// Compares a reproduction's run with its original's, field by field in
/// comparison order (exit code, stdout, stderr, diff).
async fn compare(
    store: &EventStore,
    original_id: &str,
    jail_id: &str,
    run: &proto::JailRunFinished,
) -> Result<proto::JailReproducibilityChecked, ReactError> {
    let original = jail_events(store, original_id).await?;
    let original = original.iter().find_map(|e| match &e.payload {
        Kind::JailRunFinished(f) => Some(f.clone()),
        _ => None,
    });
    let mut checked = proto::JailReproducibilityChecked {
        jail_id: jail_id.to_string(),
        original_jail_id: original_id.to_string(),
        ..Default::default()
    };
    let Some(original) = original else {
        checked.verdict = proto::JailVerdict::Failed as i32;
        checked.detail = format!("jail {original_id} has no finished run to compare with");
        return Ok(checked);
    };
    checked.differences = differences(&original, run);
    checked.verdict = if checked.differences.is_empty() {
        proto::JailVerdict::Identical
    } else {
        proto::JailVerdict::Different
    } as i32;
    Ok(checked)
}

/// The differences between two runs, in comparison order.
pub fn differences(
    original: &proto::JailRunFinished,
    reproduction: &proto::JailRunFinished,
) -> Vec<proto::JailDifference> {
    let mut out = Vec::new();
    let mut differ = |field: &str, a: String, b: String| {
        if a != b {
            out.push(proto::JailDifference {
                field: field.to_string(),
                original: a,
                reproduction: b,
            });
        }
    };
    differ(
        "exit_code",
        original.exit_code.to_string(),
        reproduction.exit_code.to_string(),
    );
    differ(
        "stdout",
        hex::encode(&original.stdout_sha256),
        hex::encode(&reproduction.stdout_sha256),
    );
    differ(
        "stderr",
        hex::encode(&original.stderr_sha256),
        hex::encode(&reproduction.stderr_sha256),
    );
    differ(
        "diff",
        hex::encode(&original.diff_sha256),
        hex::encode(&reproduction.diff_sha256),
    );
    out
}

impl Reactor for JailRuns {
    fn role(&self) -> &'static str {
        super::NAME
    }

    fn subscription(&self) -> WorkConsumerConfig {
        WorkConsumerConfig::new(AggregateKind::Jail.stream(), "jail-runs")
            .filter_subject(AggregateKind::Jail.stream_subject())
    }

    fn options(&self, base: ReactorOptions) -> ReactorOptions {
        base.concurrency(self.config.parallel)
            .heartbeat(self.config.heartbeat)
            .redelivery(vec![self.config.ack_wait])
    }

    fn react<'a>(&'a self, store: &'a EventStore, input: &'a VerifiedEvent) -> ReactFuture<'a> {
        Box::pin(async move {
            let jail_id = match &input.payload {
                Kind::JailCreated(c) if c.run => c.jail_id.clone(),
                Kind::JailRunQueued(q) => q.jail_id.clone(),
                _ => return Ok(Vec::new()),
            };
            if !on_verified_chain(store, input).await? {
                tracing::warn!(event = %input.body.id, "a jail record that is not on the jail's verified chain is ignored");
                return Ok(Vec::new());
            }
            if jail_id != input.aggregate.id {
                return Err(ReactError::Poison(format!(
                    "a record for jail {jail_id} on jail/{}",
                    input.aggregate.id
                )));
            }
            self.run_jail(store, input, &jail_id).await?;
            Ok(Vec::new())
        })
    }
}

/// How long a deletion waits for a running jail to stop.
pub const CANCEL_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(exit: i32, out: &[u8], diff: &[u8]) -> proto::JailRunFinished {
        proto::JailRunFinished {
            exit_code: exit,
            stdout_sha256: Sha256::digest(out).to_vec(),
            stderr_sha256: Sha256::digest(b"").to_vec(),
            diff_sha256: Sha256::digest(diff).to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn identical_runs_have_no_difference() {
        assert!(differences(&finished(0, b"a", b"d"), &finished(0, b"a", b"d")).is_empty());
    }

    #[test]
    fn differences_come_in_comparison_order() {
        let d = differences(&finished(0, b"a", b"d"), &finished(1, b"b", b"e"));
        let fields: Vec<_> = d.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["exit_code", "stdout", "diff"]);
        assert_eq!(d[0].original, "0");
        assert_eq!(d[0].reproduction, "1");
    }
}
