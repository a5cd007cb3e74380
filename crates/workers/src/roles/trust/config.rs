//! The trust role's settings: the model's parameters (`amai_trust::TrustConfig`:
//! weights, half-life, anomaly thresholds) and how many feed events the
//! publisher works on at once, and the optional LLM narrative of reports
//! ([`NarrativeConfig`]).
//!
//! Every instance of a deployment must run with the same model parameters:
//! the trust chain is a deterministic function of the feed *and* of these
//! numbers. Instances with different settings plan different events for the
//! same slot; the publisher then records a `reactor.failed` instead of
//! appending a second version.

use std::net::SocketAddr;
use std::time::Duration;

use amai_trust::TrustConfig;

use crate::duration::parse_duration;

pub use super::narrative::NarrativeConfig;

/// The publisher's default number of feed events in flight.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Settings of the trust role.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustRoleConfig {
    /// The model's parameters.
    pub model: TrustConfig,
    /// Feed events the publisher handles at once (across the instance).
    pub concurrency: usize,
    /// How long the publisher waits for its own projection to reach a feed
    /// event before handing it back for redelivery.
    pub projection_wait: Duration,
    /// The LLM narrative of reports, when configured (`None`: reports are the
    /// deterministic markdown alone). Scores never depend on it.
    pub narrative: Option<NarrativeConfig>,
}

impl Default for TrustRoleConfig {
    fn default() -> Self {
        Self {
            model: TrustConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            projection_wait: Duration::from_secs(10),
            narrative: None,
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl TrustRoleConfig {
    /// The defaults, overridden by `AMAI_TRUST_HALF_LIFE` and
    /// `AMAI_TRUST_BUCKET` (durations such as `7d`, `1m`, `500ms`) and
    /// `AMAI_TRUST_CONCURRENCY`; with `AMAI_TRUST_NARRATIVE_MODEL` set, reports
    /// get an LLM narrative from that model through the llm role's proxy at
    /// `AMAI_LLM_ADDR` (default `127.0.0.1:8088`), waiting at most
    /// `AMAI_TRUST_NARRATIVE_TIMEOUT` (default 30s). Unparseable values are
    /// reported and ignored.
    pub fn from_env() -> Self {
        let mut config = Self::default();
        let duration = |name: &str| {
            let v = std::env::var(name).ok()?;
            let d = parse_duration(&v);
            if d.is_none() {
                tracing::warn!(%name, value = %v, "not a duration (e.g. 7d, 12h, 30s, 250ms); using the default");
            }
            d
        };
        if let Some(d) = duration("AMAI_TRUST_HALF_LIFE") {
            config.model.half_life_ms = millis(d);
        }
        if let Some(d) = duration("AMAI_TRUST_BUCKET") {
            config.model.bucket_ms = millis(d);
        }
        if let Some(n) = std::env::var("AMAI_TRUST_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config = config.concurrency(n);
        }
        if let Some(model) = std::env::var("AMAI_TRUST_NARRATIVE_MODEL")
            .ok()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
        {
            let mut narrative = NarrativeConfig::new(model);
            if let Ok(v) = std::env::var("AMAI_LLM_ADDR") {
                match v.parse::<SocketAddr>() {
                    Ok(addr) => narrative = narrative.proxy(addr),
                    Err(_) => {
                        tracing::warn!(value = %v, "AMAI_LLM_ADDR is not an address (host:port); using the default")
                    }
                }
            }
            if let Some(d) = duration("AMAI_TRUST_NARRATIVE_TIMEOUT") {
                narrative = narrative.timeout(d);
            }
            config = config.narrative(narrative);
        }
        config
    }

    /// Asks an LLM for a narrative with every report (see [`NarrativeConfig`]).
    pub fn narrative(mut self, narrative: NarrativeConfig) -> Self {
        self.narrative = Some(narrative);
        self
    }

    /// Sets the model's parameters.
    pub fn model(mut self, model: TrustConfig) -> Self {
        self.model = model;
        self
    }

    /// Sets the publisher's concurrency (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_at_least_one() {
        assert_eq!(TrustRoleConfig::default().concurrency(0).concurrency, 1);
    }
}
