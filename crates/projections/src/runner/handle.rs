//! [`ProjectionHandle`]: what a running projection offers its owner — stream
//! positions, `min_position` consistency waits ([`WaitError`]), violations and
//! stop/abort — over the state it shares with the runner's tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amai_bus::proto;
use amai_bus::Position;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, error};

use super::violation::{violation_count, violations, IntegrityViolation};
use super::ProjectionError;

/// Why [`ProjectionHandle::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The position was not reached in time.
    #[error("projection {projection} reached {stream}:{reached}, not {wanted}, within {timeout:?}; retry or drop min_position")]
    Timeout {
        /// The projection.
        projection: &'static str,
        /// The stream of the awaited position.
        stream: String,
        /// Last sequence handled when the wait ended.
        reached: u64,
        /// The awaited sequence.
        wanted: u64,
        /// How long it waited.
        timeout: Duration,
    },
    /// The projection does not consume the position's stream.
    #[error("projection {projection} does not consume stream {stream:?} (it consumes {consumed}); this min_position cannot be honoured here")]
    UnknownStream {
        /// The projection.
        projection: &'static str,
        /// The stream asked for.
        stream: String,
        /// The streams it consumes, comma separated.
        consumed: String,
    },
    /// The position is beyond the stream's last sequence: no append to this
    /// deployment returned it, so waiting cannot help.
    #[error("min_position {stream}:{wanted} is beyond the last sequence of {stream} ({last_seq}); pass the position an append to this deployment returned")]
    BeyondEnd {
        /// The projection.
        projection: &'static str,
        /// The stream of the position.
        stream: String,
        /// The sequence asked for.
        wanted: u64,
        /// The stream's last sequence when asked.
        last_seq: u64,
    },
}

/// A failed wait as a query error: a stream not consumed is `INVALID_ARGUMENT`
/// (`STREAM_NOT_CONSUMED`), a position beyond the stream's end `OUT_OF_RANGE`
/// (`POSITION_BEYOND_END`, with `last_seq`), a timeout `DEADLINE_EXCEEDED`
/// (`STALE_POSITION`).
impl From<WaitError> for amai_bus::query::QueryError {
    fn from(e: WaitError) -> Self {
        use amai_bus::query::{reason, QueryCode, QueryError};
        let message = e.to_string();
        match e {
            WaitError::Timeout {
                stream,
                reached,
                wanted,
                ..
            } => QueryError::new(QueryCode::DeadlineExceeded, message)
                .with_reason(reason::STALE_POSITION)
                .with_meta("stream", stream)
                .with_meta("reached", reached)
                .with_meta("wanted", wanted),
            WaitError::UnknownStream {
                stream, consumed, ..
            } => QueryError::new(QueryCode::InvalidArgument, message)
                .with_reason(reason::STREAM_NOT_CONSUMED)
                .with_meta("stream", stream)
                .with_meta("consumed", consumed),
            WaitError::BeyondEnd {
                stream,
                wanted,
                last_seq,
                ..
            } => QueryError::new(QueryCode::OutOfRange, message)
                .with_reason(reason::POSITION_BEYOND_END)
                .with_meta("stream", stream)
                .with_meta("wanted", wanted)
                .with_meta("last_seq", last_seq),
        }
    }
}

pub(super) struct StreamState {
    pub(super) position: watch::Sender<u64>,
    pub(super) caught_up: watch::Sender<bool>,
}

pub(super) struct Shared {
    pub(super) name: &'static str,
    pub(super) tree: sled::Tree,
    pub(super) streams: HashMap<&'static str, StreamState>,
    /// For `wait_for`: the last sequence of a stream.
    pub(super) jetstream: async_nats::jetstream::Context,
}

/// A running projection: positions, consistency waits, violations, stop.
/// Cheap to clone.
#[derive(Clone)]
pub struct ProjectionHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) stop: Arc<watch::Sender<bool>>,
    pub(super) tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for ProjectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl ProjectionHandle {
    /// The projection's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The projection's tree (read models query it directly).
    pub fn tree(&self) -> &sled::Tree {
        &self.shared.tree
    }

    /// Last handled (applied or recorded as a violation) sequence of `stream`;
    /// 0 for a stream the projection does not consume.
    pub fn position(&self, stream: &str) -> u64 {
        self.shared
            .streams
            .get(stream)
            .map(|s| *s.position.borrow())
            .unwrap_or(0)
    }

    /// Every consumed stream's position.
    pub fn positions(&self) -> Vec<Position> {
        let mut out: Vec<_> = self
            .shared
            .streams
            .iter()
            .map(|(s, st)| Position::new(*s, *st.position.borrow()))
            .collect();
        out.sort();
        out
    }

    /// Waits until the projection has handled `position` (returns at once if it
    /// has), at most `timeout`; the position may still be in the future. Fails
    /// at once for a stream the projection does not consume.
    pub async fn wait_for(&self, position: &Position, timeout: Duration) -> Result<(), WaitError> {
        self.wait(position, timeout, false).await
    }

    async fn wait(
        &self,
        position: &Position,
        timeout: Duration,
        must_exist: bool,
    ) -> Result<(), WaitError> {
        let Some(st) = self.shared.streams.get(position.stream.as_str()) else {
            let mut consumed: Vec<_> = self.shared.streams.keys().copied().collect();
            consumed.sort();
            return Err(WaitError::UnknownStream {
                projection: self.shared.name,
                stream: position.stream.clone(),
                consumed: consumed.join(", "),
            });
        };
        let mut rx = st.position.subscribe();
        let wanted = position.seq;
        if *st.position.borrow() >= wanted {
            return Ok(());
        }
        // Consistency tokens only come from appends, which are stored before
        // they are returned: one beyond the stream's end will never be reached.
        if must_exist {
            if let Some(last_seq) = self.last_seq(&position.stream, timeout).await {
                if wanted > last_seq {
                    return Err(WaitError::BeyondEnd {
                        projection: self.shared.name,
                        stream: position.stream.clone(),
                        wanted,
                        last_seq,
                    });
                }
            }
        }
        let reached = tokio::time::timeout(timeout, async {
            // The sender lives in `Shared`, which we hold: `wait_for` cannot see it closed.
            let _ = rx.wait_for(|p| *p >= wanted).await;
        })
        .await;
        match reached {
            Ok(()) => Ok(()),
            Err(_) => Err(WaitError::Timeout {
                projection: self.shared.name,
                stream: position.stream.clone(),
                reached: *st.position.borrow(),
                wanted,
                timeout,
            }),
        }
    }

    /// The stream's last sequence from JetStream stream info; `None` when NATS
    /// does not answer within `timeout` (the wait then simply runs its course).
    async fn last_seq(&self, stream: &str, timeout: Duration) -> Option<u64> {
        match tokio::time::timeout(timeout, self.shared.jetstream.get_stream(stream)).await {
            Ok(Ok(s)) => Some(s.cached_info().state.last_sequence),
            Ok(Err(e)) => {
                debug!(projection = self.shared.name, stream, error = %e, "cannot read stream info for a min_position wait");
                None
            }
            Err(_) => None,
        }
    }

    /// Waits for an optional protobuf consistency token (`min_position`); `None`
    /// or an empty stream name returns at once. Unlike [`Self::wait_for`], a
    /// token beyond its stream's last sequence fails at once
    /// ([`WaitError::BeyondEnd`]): tokens are positions appends returned, so it
    /// can never be reached (the last sequence is read from JetStream only
    /// when the token is not reached yet).
    pub async fn wait_for_min_position(
        &self,
        min_position: Option<&proto::Position>,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        match min_position {
            Some(p) if !p.stream.is_empty() => {
                self.wait(&Position::new(p.stream.clone(), p.seq), timeout, true)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Whether every stream has been caught up with (no pending events) at least once.
    pub fn is_caught_up(&self) -> bool {
        self.shared.streams.values().all(|s| *s.caught_up.borrow())
    }

    /// Resolves once every stream has been caught up with at least once.
    pub async fn caught_up(&self) {
        for st in self.shared.streams.values() {
            let mut rx = st.caught_up.subscribe();
            // The sender lives in `Shared`, which we hold.
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// The digest of the projection's tree (see [`super::ProjectionDigest`]
    /// for what it covers). Meaningful once the projection has stopped or its
    /// streams do not move: events applied while the tree is read may or may
    /// not be in it.
    pub fn digest(&self) -> Result<super::ProjectionDigest, ProjectionError> {
        let mut streams: Vec<&str> = self.shared.streams.keys().copied().collect();
        streams.sort_unstable();
        super::digest::digest_of(&self.shared.tree, self.shared.name, &streams)
    }

    /// The recorded integrity violations, in (stream, sequence) order.
    pub fn violations(&self) -> Result<Vec<IntegrityViolation>, ProjectionError> {
        violations(&self.shared.tree)
    }

    /// How many integrity violations were recorded.
    pub fn violation_count(&self) -> u64 {
        violation_count(&self.shared.tree).unwrap_or(0)
    }

    /// Asks every task to stop (after a final flush); see [`Self::stopped`].
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until every task has ended (after the shutdown signal or
    /// [`Self::shutdown`]); the final flush is done when it returns.
    pub async fn stopped(&self) {
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in tasks {
            if let Err(e) = t.await {
                if e.is_panic() {
                    error!(
                        projection = self.shared.name,
                        "projection task panicked: {e}"
                    );
                }
            }
        }
    }

    /// Stops the tasks at once, wherever they are, without a final flush (what a
    /// crash does; committed transactions stay consistent), and waits for them.
    pub async fn abort(&self) {
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        // A poisoned list of join handles is still a valid list.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}
