//! The projection runner: verified, checkpointed, exactly-once application of
//! stream events to a sled tree.
//!
//! For every stream a projection consumes, [`ProjectionRunner::spawn`] starts a
//! task that opens an ordered replay at `checkpoint + 1` and reads it in
//! batches: the next message (awaited), then whatever further messages the
//! replay already holds, without waiting, up to 64 and stopping once the replay
//! reports nothing pending. Live traffic therefore makes batches of one; a
//! catch-up replay makes large ones. For every event of the batch, in order:
//!
//! 1. decodes it and checks the signature (phase 1 of THE verification step,
//!    `amai_bus::verify::verify_stored`, run for the whole batch on all cores
//!    ahead of the sequential fold: module `verify`);
//! 2. runs phase 2 of that step (`amai_bus::verify::step`): the event names the
//!    aggregate of its subject, `aggregate_seq` is the previous valid one + 1,
//!    `prev_hash` is the previous valid hash and the key is valid — identity
//!    chains (`agent/*`) are folded into an `IdentityState` kept in the tree
//!    (per-aggregate state, overlaid with the states left by the batch's earlier
//!    events, which are not written yet);
//! 3. resolves what the step requires of a signer from another chain (services,
//!    endorsing or revoking operators) at the position of that chain the event
//!    cites, against that identity's state read from JetStream (cached in memory);
//! 4. valid: the event is to be applied with [`Projection::apply`] and the
//!    aggregate's new state stored; invalid: it is never applied, an
//!    [`IntegrityViolation`] is to be recorded and a warning logged.
//!
//! The whole batch (new aggregate states, effects, violations and the
//! checkpoint, the batch's last sequence) is then written **in one sled
//! transaction**, and only then is the stream's position published. If a
//! projection's `apply` aborts, that transaction writes nothing and the batch is
//! written again one transaction per event, where the refused event is recorded
//! as a [`ViolationKind::Rejected`] violation (its chain state still advances).
//!
//! ## Durability
//!
//! sled is flushed by a background task every 200 ms when something changed
//! (and on shutdown), not per event. A crash can lose the un-flushed tail of
//! sled, but effects and checkpoints are written in the same transactions, so they
//! are lost *together*: the lost events are simply replayed and re-applied on the
//! next start. The effect of every event is therefore applied exactly once.
//!
//! One runner per projection per sled database: the stream tasks are the only
//! writers of the tree's reserved keys.
//!
//! ## Reserved keys
//!
//! The runner keeps its state in the projection's tree under keys starting with
//! [`RESERVED_PREFIX`]: `\0meta/version`, `\0meta/violations` (count),
//! `\0ckpt/<stream>` (last handled stream sequence), `\0chain/<aggregate>`
//! (verification state) and `\0viol/<stream>/<seq>` (violations).
//!
//! ## Modules
//!
//! - `keys`: the reserved keys and checkpoint reads;
//! - `digest`: [`ProjectionDigest`], one SHA-256 over a projection's tree;
//! - `violation`: [`IntegrityViolation`], [`ViolationKind`], recording, listing;
//! - `handle`: [`ProjectionHandle`] and its `min_position` waits;
//! - `batch`: batches, the overlay of in-flight chain states, steps;
//! - `verify`: signatures on all cores, then THE verification step in order;
//! - `commit`: the sled transactions;
//! - this module: [`ProjectionRunner::spawn`], the stream and flush loops.

mod batch;
mod commit;
mod digest;
mod handle;
mod keys;
mod verify;
mod violation;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::consumer::{self, StartAt};
use amai_bus::EventStore;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::projection::Projection;
use batch::Batch;
use handle::{Shared, StreamState};
use keys::META_VERSION;

pub use digest::{digest, digest_projection, digest_tree, ProjectionDigest};
pub use handle::{ProjectionHandle, WaitError};
pub use keys::{checkpoint, RESERVED_PREFIX};
pub use violation::{violation_count, violations, IntegrityViolation, ViolationKind};

/// How often unflushed changes are flushed to disk.
const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Reconnect backoff bounds after a transient failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Failures of the runner and its offline helpers.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// sled failed (I/O, corruption).
    #[error("projection storage: {0}")]
    Storage(#[from] sled::Error),
    /// The runner's own state in the tree could not be decoded.
    #[error("corrupt projection state: {0}")]
    Corrupt(String),
}

/// Clears a projection's tree (effects, checkpoints, violations, version), so the
/// next start rebuilds it from sequence 1. Meant to run offline
/// (`amai projections rebuild`), with no runner of this projection active.
pub fn rebuild_projection(db: &sled::Db, name: &str) -> Result<(), ProjectionError> {
    let tree = db.open_tree(name)?;
    tree.clear()?;
    tree.flush()?;
    info!(
        projection = name,
        "projection cleared; it rebuilds from sequence 1 on next start"
    );
    Ok(())
}

/// Starts projections.
#[derive(Debug)]
pub struct ProjectionRunner;

struct Ctx {
    shared: Arc<Shared>,
    /// Point-in-time replays: the last stream sequence to apply, per stream
    /// (`None`: follow the streams for ever).
    bounds: Option<Arc<HashMap<String, u64>>>,
    db: sled::Db,
    store: EventStore,
    projection: Arc<dyn Projection>,
    signers: quick_cache::sync::Cache<String, amai_bus::identity::IdentityState>,
    dirty: AtomicBool,
}

/// A failure that is retried by reconnecting from the checkpoint.
#[derive(Debug)]
struct Transient(String);

impl ProjectionRunner {
    /// Opens the projection's tree (clearing it when its stored version differs
    /// from [`Projection::version`]) and starts one task per consumed stream plus
    /// a flusher. Everything stops (after a final flush) when `shutdown`
    /// resolves or [`ProjectionHandle::shutdown`] is called; await
    /// [`ProjectionHandle::stopped`] to know it has. With a
    /// `tokio::sync::watch::Receiver<bool>`, pass
    /// `async move { let _ = rx.wait_for(|s| *s).await; }`.
    ///
    /// Must be called inside a tokio runtime.
    pub async fn spawn<S>(
        db: sled::Db,
        store: EventStore,
        projection: Arc<dyn Projection>,
        shutdown: S,
    ) -> Result<ProjectionHandle, ProjectionError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        Self::spawn_inner(db, store, projection, None, shutdown).await
    }

    /// [`ProjectionRunner::spawn`] for a point-in-time replay: each stream is
    /// applied up to and including its sequence in `bounds` (a stream missing
    /// from `bounds` is not applied at all), then its task idles until
    /// shutdown. Wait with [`ProjectionHandle::wait_for`] on each bound.
    /// Meant for a scratch sled: the tree then holds the projection exactly
    /// as of those positions.
    pub async fn spawn_bounded<S>(
        db: sled::Db,
        store: EventStore,
        projection: Arc<dyn Projection>,
        bounds: HashMap<String, u64>,
        shutdown: S,
    ) -> Result<ProjectionHandle, ProjectionError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        Self::spawn_inner(db, store, projection, Some(Arc::new(bounds)), shutdown).await
    }

    async fn spawn_inner<S>(
        db: sled::Db,
        store: EventStore,
        projection: Arc<dyn Projection>,
        bounds: Option<Arc<HashMap<String, u64>>>,
        shutdown: S,
    ) -> Result<ProjectionHandle, ProjectionError>
    where
        S: Future<Output = ()> + Send + 'static,
    {
        let name = projection.name();
        let tree = db.open_tree(name)?;
        let version = projection.version();
        let stored_version = tree
            .get(META_VERSION)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
            .map(u32::from_be_bytes);
        if stored_version != Some(version) {
            if stored_version.is_some() || !tree.is_empty() {
                info!(projection = name, from = ?stored_version, to = version, "projection version changed: rebuilding from sequence 1");
                tree.clear()?;
            }
            tree.insert(META_VERSION, &version.to_be_bytes())?;
            tree.flush()?;
        }
        let mut streams = HashMap::new();
        for stream in projection.streams() {
            let ckpt = checkpoint(&tree, stream)?;
            streams.insert(
                *stream,
                StreamState {
                    position: watch::channel(ckpt).0,
                    caught_up: watch::channel(false).0,
                },
            );
        }
        let shared = Arc::new(Shared {
            name,
            tree,
            streams,
            jetstream: store.jetstream().clone(),
        });
        let ctx = Arc::new(Ctx {
            shared: shared.clone(),
            bounds,
            db,
            store,
            projection: projection.clone(),
            signers: quick_cache::sync::Cache::new(verify::MAX_CACHED_SIGNERS),
            dirty: AtomicBool::new(false),
        });
        let (stop, stop_rx) = watch::channel(false);
        let stop = Arc::new(stop);
        let mut tasks = Vec::new();
        {
            // Turns the caller's shutdown future into the internal signal; ends
            // as soon as either fires (it holds no projection state).
            let (stop, mut internal) = (stop.clone(), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown => { stop.send_replace(true); }
                    _ = shutdown_requested(&mut internal) => {}
                }
            }));
        }
        let shutdown = stop_rx;
        for stream in projection.streams() {
            let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
            tasks.push(tokio::spawn(async move {
                ctx.run_stream(stream, shutdown).await
            }));
        }
        let flusher = ctx.clone();
        tasks.push(tokio::spawn(
            async move { flusher.run_flusher(shutdown).await },
        ));
        Ok(ProjectionHandle {
            shared,
            stop,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }
}

/// Resolves when `rx` says `true`; never if its sender is dropped first.
/// (The internal sender lives in the handle and the supervisor task.)
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

impl Ctx {
    fn name(&self) -> &'static str {
        self.shared.name
    }

    async fn run_flusher(&self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown_requested(&mut shutdown) => {
                    self.flush().await;
                    return;
                }
            }
            if self.dirty.swap(false, Ordering::AcqRel) {
                self.flush().await;
            }
        }
    }

    async fn flush(&self) {
        if let Err(e) = self.db.flush_async().await {
            self.dirty.store(true, Ordering::Release);
            warn!(
                projection = self.name(),
                "flushing sled failed (retried): {e}"
            );
        }
    }

    /// The last sequence of `stream` to apply (`u64::MAX`: no bound).
    fn bound(&self, stream: &str) -> u64 {
        match &self.bounds {
            None => u64::MAX,
            Some(b) => b.get(stream).copied().unwrap_or(0),
        }
    }

    async fn run_stream(&self, stream: &'static str, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let bound = self.bound(stream);
            let reached = checkpoint(&self.shared.tree, stream).is_ok_and(|c| c >= bound);
            if reached {
                if let Some(st) = self.shared.streams.get(stream) {
                    st.caught_up.send_replace(true);
                }
                // A point-in-time replay holds here: nothing after the bound.
                shutdown_requested(&mut shutdown).await;
                return;
            }
            let result = tokio::select! {
                r = self.consume(stream, &mut backoff) => r,
                _ = shutdown_requested(&mut shutdown) => return,
            };
            let detail = match result {
                // A point-in-time replay reached its bound: hold (loop top).
                Ok(()) if checkpoint(&self.shared.tree, stream).is_ok_and(|c| c >= bound) => {
                    continue
                }
                Ok(()) => "replay ended".to_string(),
                Err(Transient(d)) => d,
            };
            warn!(projection = self.name(), stream, retry_in = ?backoff, "projection consumer interrupted: {detail}; resuming from the checkpoint");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown_requested(&mut shutdown) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Replays `stream` from the checkpoint until an error, a batch at a time.
    async fn consume(&self, stream: &'static str, backoff: &mut Duration) -> Result<(), Transient> {
        let st = self
            .shared
            .streams
            .get(stream)
            .ok_or_else(|| Transient(format!("stream {stream} not registered")))?;
        let ckpt = checkpoint(&self.shared.tree, stream).map_err(|e| Transient(e.to_string()))?;
        let js = self.store.jetstream();
        let info = js
            .get_stream(stream)
            .await
            .map_err(|e| Transient(format!("stream {stream}: {e}")))?;
        let last = info.cached_info().state.last_sequence;
        if ckpt >= last {
            st.caught_up.send_replace(true);
        }
        let mut replay = consumer::replay(js, stream, None, StartAt::Sequence(ckpt + 1))
            .await
            .map_err(|e| Transient(e.to_string()))?;
        debug!(
            projection = self.name(),
            stream,
            from = ckpt + 1,
            "projection replay opened"
        );
        let mut handled = ckpt;
        let bound = self.bound(stream);
        let last = last.min(bound);
        while let Some(item) = replay.next().await {
            let mut batch = Batch::default();
            let item = item.map_err(|e| Transient(e.to_string()))?;
            if item.0.position.seq > bound {
                return Ok(());
            }
            batch.push(item, handled);
            // Whatever ends the replay while the batch is collected (an error,
            // its end) takes effect after the batch is written.
            let mut ended = None;
            while !batch.is_complete() {
                // Only what is already buffered: never wait for a batch to fill.
                match replay.next().now_or_never() {
                    Some(Some(Ok(item))) if item.0.position.seq > bound => {
                        ended = Some(Ok(()));
                        break;
                    }
                    Some(Some(Ok(item))) => batch.push(item, handled),
                    Some(Some(Err(e))) => {
                        ended = Some(Err(Transient(e.to_string())));
                        break;
                    }
                    Some(None) => {
                        ended = Some(Ok(()));
                        break;
                    }
                    None => break,
                }
            }
            if let Some(seq) = batch.last_seq() {
                self.handle_batch(stream, st, last, batch).await?;
                handled = seq;
                *backoff = BACKOFF_MIN;
            }
            if let Some(end) = ended {
                return end;
            }
            // A replay with buffered messages never returns Pending: yield so the
            // shutdown signal (and other tasks) get their turn between batches.
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}
