//! The trust model's tunables: the prior, the half-life, the anomaly
//! thresholds and the evidence weights ([`TrustConfig`], [`Weights`]), with
//! their defaults and a builder.
//!
//! One configuration must be used for the whole life of a model: the bucket
//! ring is aligned to `bucket_ms` and the stored evidence is decayed with
//! `half_life_ms`, so changing either mid-stream changes what the stored
//! state means. Serialized configurations accept missing fields (they take
//! the default) and reject unknown ones.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fixed::Milli;

/// Seven days in milliseconds, the default half-life.
const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// How much one observation of each kind weighs, in evidence thousandths
/// before decay (1_000 is one observation's worth). Negative weights are
/// treated as zero: the sign of each signal is fixed (see the signal names
/// in the crate docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// A jail run that finished clean: positive, default 1_000.
    pub jail_clean: Milli,
    /// A jail run that violated its diff policy, for the first violation:
    /// negative, default 3_000.
    pub jail_policy_violation: Milli,
    /// Added for each violation of the same run beyond the first: default
    /// 1_000.
    pub jail_policy_violation_extra: Milli,
    /// Cap on one run's policy-violation evidence: default 6_000.
    pub jail_policy_violation_max: Milli,
    /// A jail run whose network access was denied (once per run, whatever
    /// the number of attempts): negative, default 2_000.
    pub jail_network_denied: Milli,
    /// A jail run that hit a memory, time or output limit: negative,
    /// default 1_000.
    pub jail_limit_hit: Milli,
    /// A jail run that could not be reproduced: negative, default 2_000.
    pub jail_not_reproducible: Milli,
    /// An LLM replay miss: negative, default 1_000.
    pub llm_replay_miss: Milli,
    /// A truncated LLM response: negative, default 500.
    pub llm_truncated: Milli,
    /// A crash: negative, default 1_000.
    pub crash: Milli,
    /// An endorsement, multiplied by the endorser's credibility (0 to 1):
    /// positive, default 2_000.
    pub endorsed: Milli,
    /// A `rate_spike` alert (twice for a critical one): negative, default
    /// 2_000.
    pub burst: Milli,
    /// A `new_peers` alert (twice for a critical one): negative, default
    /// 1_000.
    pub fan_out: Milli,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            jail_clean: 1_000,
            jail_policy_violation: 3_000,
            jail_policy_violation_extra: 1_000,
            jail_policy_violation_max: 6_000,
            jail_network_denied: 2_000,
            jail_limit_hit: 1_000,
            jail_not_reproducible: 2_000,
            llm_replay_miss: 1_000,
            llm_truncated: 500,
            crash: 1_000,
            endorsed: 2_000,
            burst: 2_000,
            fan_out: 1_000,
        }
    }
}

/// The trust model's configuration. [`TrustConfig::default`] holds the
/// documented defaults; [`TrustConfig::builder`] changes some of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// The score of an agent without evidence, milli-points: default 60_000
    /// (60.0). Clamped to [0, 100_000] when used.
    pub baseline_milli: Milli,
    /// How many observations the prior counts as, thousandths: default
    /// 10_000 (ten observations). Negative values count as 0.
    pub prior_strength_milli: Milli,
    /// Evidence half-life in event time: default seven days.
    pub half_life_ms: i64,
    /// Width of a rate bucket in event time, aligned to multiples of it:
    /// default 60_000 (one minute). Values below 1 count as 1.
    pub bucket_ms: i64,
    /// How many previous buckets the rate history holds: default 60.
    pub history_buckets: u32,
    /// How many previous buckets (since the first action) `rate_spike`
    /// needs before it judges: default 5.
    pub min_history_buckets: u32,
    /// Robust z-score for a `rate_spike` warning, thousandths: default 3_500.
    pub z_warning_milli: Milli,
    /// Robust z-score for a critical `rate_spike`, thousandths: default 7_000.
    pub z_critical_milli: Milli,
    /// Fewest actions in a bucket that can be a burst: default 20.
    pub min_burst_count: u64,
    /// How many recent actions `mix_shift` compares: default 50.
    pub mix_window: u32,
    /// Fewest earlier actions `mix_shift` needs as its baseline: default 100.
    pub mix_min_baseline: u64,
    /// Total variation distance for a `mix_shift` warning, thousandths:
    /// default 500.
    pub mix_warning_milli: Milli,
    /// Total variation distance for a critical `mix_shift`, thousandths:
    /// default 800.
    pub mix_critical_milli: Milli,
    /// The sliding window `new_peers` counts first-time peers in: default
    /// 600_000 (ten minutes).
    pub new_peers_window_ms: i64,
    /// First-time peers in the window for a `new_peers` warning: default 10.
    pub new_peers_warning: u64,
    /// First-time peers in the window for a critical `new_peers`: default 50.
    pub new_peers_critical: u64,
    /// Evidence weights.
    pub weights: Weights,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            baseline_milli: 60_000,
            prior_strength_milli: 10_000,
            half_life_ms: SEVEN_DAYS_MS,
            bucket_ms: 60_000,
            history_buckets: 60,
            min_history_buckets: 5,
            z_warning_milli: 3_500,
            z_critical_milli: 7_000,
            min_burst_count: 20,
            mix_window: 50,
            mix_min_baseline: 100,
            mix_warning_milli: 500,
            mix_critical_milli: 800,
            new_peers_window_ms: 600_000,
            new_peers_warning: 10,
            new_peers_critical: 50,
            weights: Weights::default(),
        }
    }
}

impl TrustConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> TrustConfigBuilder {
        TrustConfigBuilder {
            cfg: TrustConfig::default(),
        }
    }

    /// The baseline clamped to [0, 100_000].
    pub(crate) fn baseline(&self) -> Milli {
        self.baseline_milli.clamp(0, 100_000)
    }

    /// The prior strength, at least 0.
    pub(crate) fn prior_strength(&self) -> Milli {
        self.prior_strength_milli.max(0)
    }

    /// The bucket width, at least 1 ms.
    pub(crate) fn bucket(&self) -> i64 {
        self.bucket_ms.max(1)
    }
}

/// Builds a [`TrustConfig`] from the defaults, one setter per field.
///
/// ```
/// use std::time::Duration;
/// use amai_trust::TrustConfig;
///
/// let cfg = TrustConfig::builder()
///     .half_life(Duration::from_secs(24 * 3600))
///     .min_burst_count(50)
///     .build();
/// assert_eq!(cfg.half_life_ms, 86_400_000);
/// assert_eq!(cfg.baseline_milli, 60_000);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct TrustConfigBuilder {
    cfg: TrustConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.cfg.$field = value;
                self
            }
        )*
    };
}

impl TrustConfigBuilder {
    setters! {
        /// Sets [`TrustConfig::baseline_milli`].
        baseline_milli: Milli,
        /// Sets [`TrustConfig::prior_strength_milli`].
        prior_strength_milli: Milli,
        /// Sets [`TrustConfig::half_life_ms`].
        half_life_ms: i64,
        /// Sets [`TrustConfig::bucket_ms`].
        bucket_ms: i64,
        /// Sets [`TrustConfig::history_buckets`].
        history_buckets: u32,
        /// Sets [`TrustConfig::min_history_buckets`].
        min_history_buckets: u32,
        /// Sets [`TrustConfig::z_warning_milli`].
        z_warning_milli: Milli,
        /// Sets [`TrustConfig::z_critical_milli`].
        z_critical_milli: Milli,
        /// Sets [`TrustConfig::min_burst_count`].
        min_burst_count: u64,
        /// Sets [`TrustConfig::mix_window`].
        mix_window: u32,
        /// Sets [`TrustConfig::mix_min_baseline`].
        mix_min_baseline: u64,
        /// Sets [`TrustConfig::mix_warning_milli`].
        mix_warning_milli: Milli,
        /// Sets [`TrustConfig::mix_critical_milli`].
        mix_critical_milli: Milli,
        /// Sets [`TrustConfig::new_peers_window_ms`].
        new_peers_window_ms: i64,
        /// Sets [`TrustConfig::new_peers_warning`].
        new_peers_warning: u64,
        /// Sets [`TrustConfig::new_peers_critical`].
        new_peers_critical: u64,
        /// Sets [`TrustConfig::weights`].
        weights: Weights,
    }

    /// Sets [`TrustConfig::half_life_ms`] from a duration (saturating at
    /// `i64::MAX` milliseconds).
    pub fn half_life(self, half_life: Duration) -> Self {
        self.half_life_ms(duration_ms(half_life))
    }

    /// Sets [`TrustConfig::bucket_ms`] from a duration (saturating at
    /// `i64::MAX` milliseconds).
    pub fn bucket(self, bucket: Duration) -> Self {
        self.bucket_ms(duration_ms(bucket))
    }

    /// Sets [`TrustConfig::new_peers_window_ms`] from a duration
    /// (saturating at `i64::MAX` milliseconds).
    pub fn new_peers_window(self, window: Duration) -> Self {
        self.new_peers_window_ms(duration_ms(window))
    }

    /// The configuration.
    pub fn build(self) -> TrustConfig {
        self.cfg
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let cfg = TrustConfig::default();
        assert_eq!(cfg.baseline_milli, 60_000);
        assert_eq!(cfg.prior_strength_milli, 10_000);
        assert_eq!(cfg.half_life_ms, 604_800_000);
        assert_eq!(cfg.bucket_ms, 60_000);
        assert_eq!(cfg.history_buckets, 60);
        assert_eq!(cfg.min_history_buckets, 5);
        assert_eq!((cfg.z_warning_milli, cfg.z_critical_milli), (3_500, 7_000));
        assert_eq!(cfg.min_burst_count, 20);
        assert_eq!((cfg.mix_window, cfg.mix_min_baseline), (50, 100));
        assert_eq!((cfg.mix_warning_milli, cfg.mix_critical_milli), (500, 800));
        assert_eq!(cfg.new_peers_window_ms, 600_000);
        assert_eq!((cfg.new_peers_warning, cfg.new_peers_critical), (10, 50));
        assert_eq!(cfg.weights.jail_policy_violation, 3_000);
        assert_eq!(cfg.weights.llm_truncated, 500);
        assert_eq!(TrustConfig::builder().build(), cfg);
    }

    #[test]
    fn builder_sets_fields_and_durations() {
        let cfg = TrustConfig::builder()
            .half_life(Duration::from_secs(3600))
            .bucket(Duration::from_secs(10))
            .new_peers_window(Duration::from_secs(60))
            .baseline_milli(50_000)
            .weights(Weights {
                burst: 5_000,
                ..Weights::default()
            })
            .build();
        assert_eq!(cfg.half_life_ms, 3_600_000);
        assert_eq!(cfg.bucket_ms, 10_000);
        assert_eq!(cfg.new_peers_window_ms, 60_000);
        assert_eq!(cfg.baseline_milli, 50_000);
        assert_eq!(cfg.weights.burst, 5_000);
        assert_eq!(cfg.weights.crash, 1_000);
    }

    #[test]
    fn serde_fills_defaults_and_rejects_unknown_fields() {
        let cfg: TrustConfig =
            serde_json::from_str(r#"{"baseline_milli": 50000, "weights": {"crash": 7}}"#)
                .expect("partial config");
        assert_eq!(cfg.baseline_milli, 50_000);
        assert_eq!(cfg.weights.crash, 7);
        assert_eq!(cfg.weights.burst, 2_000);
        assert_eq!(cfg.half_life_ms, 604_800_000);
        assert!(serde_json::from_str::<TrustConfig>(r#"{"baseline": 1}"#).is_err());
        let json = serde_json::to_string(&TrustConfig::default()).expect("serialize");
        let back: TrustConfig = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, TrustConfig::default());
    }
}
