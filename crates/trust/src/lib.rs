//! # amai-trust
//!
//! A deterministic, explainable behavioural trust model for agents. The
//! trust role feeds every agent's [`AgentModel`] the observations it draws
//! from the event streams (actions, jail verdicts, LLM replay misses,
//! endorsements) and publishes what comes back: `trust.adjusted` for every
//! [`Adjustment`] and `trust.alert_raised` for every [`Alert`].
//!
//! - [`fixed`] owns the integer-only decay (`2^(-dt/half_life)` in Q32) and
//!   the formatting of thousandths.
//! - [`config`] owns the tunables ([`TrustConfig`], [`Weights`]).
//! - [`model`] owns the per-agent model: a beta reputation with a prior
//!   (the score), evidence decaying with a half-life in event time, the
//!   behavioural fingerprint and three anomaly detectors (`rate_spike`,
//!   `mix_shift`, `new_peers`).
//! - [`report`] owns the markdown report and its recommendation rule.
//!
//! The crate is pure: no I/O, no clock (times are event times carried by
//! the observations), no floats (every computed value is a fixed-point
//! integer), `BTreeMap`s and stable sorts only. The same observations in
//! the same order give the same outputs and the same serialized model on
//! every platform. `docs/trust-model.md` has the formulas, the defaults and
//! a worked example that a unit test recomputes.
//!
//! ```
//! use amai_trust::{AgentModel, Observation, ObservationKind, Output, Signal, TrustConfig};
//!
//! let cfg = TrustConfig::default();
//! let mut model = AgentModel::new("agent-1", 0);
//! assert_eq!(model.score_milli(&cfg, 0), 60_000);
//!
//! let outputs = model.observe(&cfg, &Observation {
//!     event_id: "ev-1".into(),
//!     at_ms: 1_000,
//!     kind: ObservationKind::Evidence(Signal::JailClean),
//!     cites: vec![],
//! });
//! let [Output::Adjusted(adjustment)] = outputs.as_slice() else { panic!() };
//! assert_eq!(adjustment.signal, "jail_clean");
//! assert_eq!(adjustment.score_after_milli, 63_636);
//! ```

#![warn(missing_docs)]

pub mod config;
mod event_ref;
pub mod fixed;
pub mod model;
pub mod report;

pub use config::{TrustConfig, TrustConfigBuilder, Weights};
pub use fixed::{decay, decay_factor_q32, format_milli, Milli};
pub use model::{
    score_from_evidence, Adjustment, AgentModel, Alert, AlertKind, Components, Fingerprint,
    LimitKind, Observation, ObservationKind, Output, PeerStat, Severity, Signal, SignalComponent,
    Window,
};
pub use report::{recommend, render_report, Recommendation, ReportInput};

#[cfg(test)]
mod tests;
