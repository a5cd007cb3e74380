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
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::config::JailConfig;
use super::create::{jail_events, spec_bytes};
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
        .limits(limits(spec));
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
        let request = run_request(jail_id, &created.image_id, &spec);
        self.record(
            store,
            input,
            STARTED,
            jail_id,
            Kind::JailRunStarted(proto::JailRunStarted {
                jail_id: jail_id.to_string(),
                container_id: String::new(),
                limits: Some(proto_limits(&spec)),
                before_sha256: Vec::new(),
            }),
        )
        .await?;
        let outcome = tokio::select! {
            r = amai_jail::run(&engine, request) => Some(r),
            _ = cancel_rx.wait_for(|c| *c) => None,
        };
        let outcome = match outcome {
            None => {
                // The run future was dropped: its container is removed in the background.
                let _ = amai_jail::remove_managed(&engine, Some(jail_id)).await;
                return self
                    .fail(
                        store,
                        input,
                        jail_id,
                        Failure::new(F::Cancelled, "the jail was deleted while it ran"),
                    )
                    .await;
            }
            Some(Err(e)) => return self.fail(store, input, jail_id, run_failure(&e)).await,
            Some(Ok(outcome)) => outcome,
        };
        let finished = match self.finished(store, jail_id, &outcome).await {
            Ok(f) => f,
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
            let checked = compare(store, &created.reproduces, jail_id, &finished).await?;
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

    /// The `jail.run_finished` of `outcome`, its outputs stored as blobs.
    async fn finished(
        &self,
        store: &EventStore,
        jail_id: &str,
        outcome: &RunOutcome,
    ) -> Result<proto::JailRunFinished, String> {
        let blobs = BlobStore::open(store.jetstream(), 1, usize::MAX)
            .await
            .map_err(|e| format!("cannot open the blob store: {e}"))?;
        let stdout = blobs
            .put(&outcome.stdout)
            .await
            .map_err(|e| format!("cannot store stdout: {e}"))?;
        let stderr = blobs
            .put(&outcome.stderr)
            .await
            .map_err(|e| format!("cannot store stderr: {e}"))?;
        Ok(proto::JailRunFinished {
            jail_id: jail_id.to_string(),
            exit_code: i32::try_from(outcome.exit_code).unwrap_or(-1),
            duration_ms: outcome.duration.as_millis() as u64,
            oom_killed: outcome.oom_killed,
            timed_out: outcome.timed_out,
            usage: Some(proto::JailUsage::default()),
            stdout_sha256: Sha256::digest(&outcome.stdout).to_vec(),
            stdout: Some(blob_ref(&stdout)),
            stderr_sha256: Sha256::digest(&outcome.stderr).to_vec(),
            stderr: Some(blob_ref(&stderr)),
            output_truncated: outcome.output_truncated,
            ..Default::default()
        })
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
