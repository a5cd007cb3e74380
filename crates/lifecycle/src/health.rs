//! Health: when a crashed agent restarts ([`RestartPolicy`], exponential
//! backoff without jitter), when crashes become a crash loop that disables
//! it, and when missing heartbeats make a running agent unhealthy
//! ([`HeartbeatPolicy`]).
//!
//! Everything here is a pure function of its inputs: the times are unix
//! milliseconds passed in by the caller, never read from a clock, so the
//! same crashes folded in the same order give the same decisions on replay.
//!
//! Counting rules (documented in `docs/lifecycle.md`):
//!
//! - the crash window is half-open, `(now - window, now]`: a crash exactly
//!   `window_ms` old no longer counts;
//! - the attempt number is the number of crashes in the window since the
//!   last healthy run (a run that stayed up `healthy_after_ms` or longer
//!   clears the history), and is at least 1;
//! - the crash that brings the count to `crash_loop_limit` disables the
//!   agent instead of restarting it (with the default limit of 5, four
//!   restarts are attempted);
//! - the delay before attempt `n` is `base_ms * 2^(n-1)`, capped at
//!   `max_ms`. There is no jitter: restarts are per agent and one at a time,
//!   and a deterministic delay keeps replays byte-identical.

use serde::{Deserialize, Serialize};

/// Default first restart delay: 1 s.
pub const DEFAULT_BASE_MS: u64 = 1_000;
/// Default cap on the restart delay: 60 s.
pub const DEFAULT_MAX_MS: u64 = 60_000;
/// Default number of crashes in the window that is a crash loop.
pub const DEFAULT_CRASH_LOOP_LIMIT: u32 = 5;
/// Default crash-loop window: 10 minutes.
pub const DEFAULT_CRASH_LOOP_WINDOW_MS: u64 = 10 * 60 * 1_000;
/// Default time a run must stay up to count as healthy: 60 s.
pub const DEFAULT_HEALTHY_AFTER_MS: u64 = 60_000;
/// Default heartbeat interval: 10 s.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
/// Default number of heartbeats that may be missed: 3.
pub const DEFAULT_MISSED_LIMIT: u32 = 3;

/// How a crashed agent is restarted, and when crashes are a crash loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    base_ms: u64,
    max_ms: u64,
    crash_loop_limit: u32,
    crash_loop_window_ms: u64,
    healthy_after_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base_ms: DEFAULT_BASE_MS,
            max_ms: DEFAULT_MAX_MS,
            crash_loop_limit: DEFAULT_CRASH_LOOP_LIMIT,
            crash_loop_window_ms: DEFAULT_CRASH_LOOP_WINDOW_MS,
            healthy_after_ms: DEFAULT_HEALTHY_AFTER_MS,
        }
    }
}

/// What is wrong with a [`RestartPolicyBuilder`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartPolicyError {
    /// `base_ms` is 0.
    #[error("base_ms must be at least 1")]
    ZeroBase,
    /// `max_ms` is below `base_ms`.
    #[error("max_ms ({max_ms}) must be at least base_ms ({base_ms})")]
    MaxBelowBase {
        /// The first delay.
        base_ms: u64,
        /// The cap.
        max_ms: u64,
    },
    /// `crash_loop_limit` is 0.
    #[error("crash_loop_limit must be at least 1")]
    ZeroCrashLoopLimit,
    /// `crash_loop_window_ms` is 0.
    #[error("crash_loop_window_ms must be at least 1")]
    ZeroWindow,
}

/// The kind of a [`RestartPolicyError`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicyErrorKind {
    /// [`RestartPolicyError::ZeroBase`].
    ZeroBase,
    /// [`RestartPolicyError::MaxBelowBase`].
    MaxBelowBase,
    /// [`RestartPolicyError::ZeroCrashLoopLimit`].
    ZeroCrashLoopLimit,
    /// [`RestartPolicyError::ZeroWindow`].
    ZeroWindow,
}

impl RestartPolicyError {
    /// The kind, to match on.
    pub fn kind(&self) -> RestartPolicyErrorKind {
        match self {
            RestartPolicyError::ZeroBase => RestartPolicyErrorKind::ZeroBase,
            RestartPolicyError::MaxBelowBase { .. } => RestartPolicyErrorKind::MaxBelowBase,
            RestartPolicyError::ZeroCrashLoopLimit => RestartPolicyErrorKind::ZeroCrashLoopLimit,
            RestartPolicyError::ZeroWindow => RestartPolicyErrorKind::ZeroWindow,
        }
    }
}

/// Builds a [`RestartPolicy`], starting from the defaults.
#[derive(Debug, Clone, Default)]
pub struct RestartPolicyBuilder {
    policy: RestartPolicy,
}

impl RestartPolicyBuilder {
    /// The delay before the first restart (default 1 s).
    pub fn base_ms(mut self, base_ms: u64) -> Self {
        self.policy.base_ms = base_ms;
        self
    }

    /// The cap on the delay (default 60 s).
    pub fn max_ms(mut self, max_ms: u64) -> Self {
        self.policy.max_ms = max_ms;
        self
    }

    /// How many crashes in the window are a crash loop (default 5).
    pub fn crash_loop_limit(mut self, limit: u32) -> Self {
        self.policy.crash_loop_limit = limit;
        self
    }

    /// The crash-loop window (default 10 minutes).
    pub fn crash_loop_window_ms(mut self, window_ms: u64) -> Self {
        self.policy.crash_loop_window_ms = window_ms;
        self
    }

    /// How long a run must stay up to clear the crash history (default
    /// 60 s).
    pub fn healthy_after_ms(mut self, healthy_after_ms: u64) -> Self {
        self.policy.healthy_after_ms = healthy_after_ms;
        self
    }

    /// The policy, or what is wrong with it.
    pub fn build(self) -> Result<RestartPolicy, RestartPolicyError> {
        let p = self.policy;
        if p.base_ms == 0 {
            return Err(RestartPolicyError::ZeroBase);
        }
        if p.max_ms < p.base_ms {
            return Err(RestartPolicyError::MaxBelowBase {
                base_ms: p.base_ms,
                max_ms: p.max_ms,
            });
        }
        if p.crash_loop_limit == 0 {
            return Err(RestartPolicyError::ZeroCrashLoopLimit);
        }
        if p.crash_loop_window_ms == 0 {
            return Err(RestartPolicyError::ZeroWindow);
        }
        Ok(p)
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CrashDecision {
    /// Restart after `delay_ms`; this is restart attempt `attempt` (1 for
    /// the first crash in the window).
    RestartAfter {
        /// The backoff delay.
        delay_ms: u64,
        /// The attempt number (crashes in the window since the last healthy
        /// run).
        attempt: u32,
    },
    /// `crashes` crashes within `window_ms`: a crash loop; disable the
    /// agent.
    DisableCrashLoop {
        /// The crashes counted.
        crashes: u32,
        /// The window they fell in.
        window_ms: u64,
    },
}

impl RestartPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> RestartPolicyBuilder {
        RestartPolicyBuilder::default()
    }

    /// The delay before the first restart.
    pub fn base_ms(&self) -> u64 {
        self.base_ms
    }

    /// The cap on the delay.
    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    /// How many crashes in the window are a crash loop.
    pub fn crash_loop_limit(&self) -> u32 {
        self.crash_loop_limit
    }

    /// The crash-loop window.
    pub fn crash_loop_window_ms(&self) -> u64 {
        self.crash_loop_window_ms
    }

    /// How long a run must stay up to clear the crash history.
    pub fn healthy_after_ms(&self) -> u64 {
        self.healthy_after_ms
    }

    /// The delay before restart attempt `attempt` (1-based):
    /// `base_ms * 2^(attempt-1)`, capped at `max_ms` (attempt 0 is treated
    /// as 1). Never overflows.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.max(1) - 1;
        if exponent >= 63 {
            return self.max_ms;
        }
        self.base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_ms)
    }

    /// Whether a run that started at `started_at_ms` and ended at
    /// `ended_at_ms` was healthy (stayed up at least `healthy_after_ms`).
    pub fn was_healthy(&self, started_at_ms: i64, ended_at_ms: i64) -> bool {
        let up = ended_at_ms.saturating_sub(started_at_ms);
        up >= 0 && up.unsigned_abs() >= self.healthy_after_ms
    }

    /// What to do after a crash, given the history that already records
    /// it: restart after a backoff, or disable when the crashes in the
    /// window reach the crash-loop limit.
    pub fn after_crash(&self, history: &CrashHistory, now_ms: i64) -> CrashDecision {
        let counted = history.count_within(self.crash_loop_window_ms, now_ms);
        let attempt = u32::try_from(counted).unwrap_or(u32::MAX).max(1);
        if attempt >= self.crash_loop_limit {
            CrashDecision::DisableCrashLoop {
                crashes: attempt,
                window_ms: self.crash_loop_window_ms,
            }
        } else {
            CrashDecision::RestartAfter {
                delay_ms: self.delay_ms(attempt),
                attempt,
            }
        }
    }
}

/// The crash times of an agent since its last healthy run, sorted
/// ascending whatever order they were recorded in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashHistory {
    crashes_ms: Vec<i64>,
}

/// The most crash times a history keeps (the oldest are dropped first).
pub const MAX_CRASH_HISTORY: usize = 1_024;

impl CrashHistory {
    /// An empty history.
    pub fn new() -> Self {
        CrashHistory::default()
    }

    /// Records a crash at `at_ms`, keeping the times sorted (crash reports
    /// may arrive out of order). At most [`MAX_CRASH_HISTORY`] times are
    /// kept.
    pub fn record(&mut self, at_ms: i64) {
        let index = self.crashes_ms.partition_point(|&t| t <= at_ms);
        self.crashes_ms.insert(index, at_ms);
        if self.crashes_ms.len() > MAX_CRASH_HISTORY {
            self.crashes_ms.remove(0);
        }
    }

    /// Forgets every crash (after a healthy run, or when re-enabled).
    pub fn clear(&mut self) {
        self.crashes_ms.clear();
    }

    /// The crash times, ascending.
    pub fn crashes_ms(&self) -> &[i64] {
        &self.crashes_ms
    }

    /// How many crashes fall in `(now_ms - window_ms, now_ms]`.
    pub fn count_within(&self, window_ms: u64, now_ms: i64) -> usize {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        let from = now_ms.saturating_sub(window);
        self.crashes_ms
            .iter()
            .filter(|&&t| t > from && t <= now_ms)
            .count()
    }
}

/// When a running agent that stopped sending heartbeats is unhealthy.
///
/// Heartbeats are not events: they arrive on an ephemeral subject and only
/// the transition they cause (a `Crashed` command without an exit code,
/// issued by the worker that watches them) is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatPolicy {
    /// How often the agent sends a heartbeat.
    pub interval_ms: u64,
    /// How many consecutive heartbeats may be missed.
    pub missed_limit: u32,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            missed_limit: DEFAULT_MISSED_LIMIT,
        }
    }
}

impl HeartbeatPolicy {
    /// The silence after which the agent is unhealthy:
    /// `interval_ms * missed_limit`.
    pub fn deadline_ms(&self) -> u64 {
        self.interval_ms
            .saturating_mul(u64::from(self.missed_limit.max(1)))
    }

    /// Whether an agent whose last heartbeat was at `last_heartbeat_ms`
    /// (or, before the first one, the time it started) is unhealthy at
    /// `now_ms`: more than [`HeartbeatPolicy::deadline_ms`] of silence. A
    /// heartbeat from the future counts as silence of zero.
    pub fn is_unhealthy(&self, last_heartbeat_ms: i64, now_ms: i64) -> bool {
        let silence = now_ms.saturating_sub(last_heartbeat_ms);
        silence > 0 && silence.unsigned_abs() > self.deadline_ms()
    }
}
