//! The audit role's settings: when checkpoints are made, and which streams
//! are audited.

use std::time::Duration;

use amai_bus::subjects::AggregateKind;

use crate::duration::parse_duration;

/// Settings of the audit role (builder style).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRoleConfig {
    /// A checkpoint once the tree has grown by this many events since the
    /// latest one.
    pub every_events: u64,
    /// A checkpoint this long after the latest one, when the tree grew.
    pub interval: Duration,
    /// Streams audited; `None`: every Amai stream but AMAI_AUDIT itself
    /// (checkpoints are chained and signed; witnesses cosign them).
    pub streams: Option<Vec<String>>,
    /// Leaves appended per sled batch at most.
    pub max_batch: usize,
}

impl Default for AuditRoleConfig {
    fn default() -> Self {
        Self {
            every_events: 1000,
            interval: Duration::from_secs(10),
            streams: None,
            max_batch: 4096,
        }
    }
}

impl AuditRoleConfig {
    /// The defaults, overridden by `AMAI_AUDIT_CHECKPOINT_EVERY` (events) and
    /// `AMAI_AUDIT_CHECKPOINT_INTERVAL` (a duration such as `10s`, `500ms`). Unparseable values are reported and ignored.
    pub fn from_env() -> Self {
        let mut c = Self::default();
        if let Ok(v) = std::env::var("AMAI_AUDIT_CHECKPOINT_EVERY") {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => c.every_events = n,
                _ => {
                    tracing::warn!(value = %v, "AMAI_AUDIT_CHECKPOINT_EVERY is not a positive number; ignored")
                }
            }
        }
        if let Ok(v) = std::env::var("AMAI_AUDIT_CHECKPOINT_INTERVAL") {
            match parse_duration(&v) {
                Some(d) => c.interval = d,
                None => {
                    tracing::warn!(value = %v, "AMAI_AUDIT_CHECKPOINT_INTERVAL is not a duration (e.g. 10s, 500ms); ignored")
                }
            }
        }
        c
    }

    /// Checkpoint every `n` events (at least 1).
    pub fn every_events(mut self, n: u64) -> Self {
        self.every_events = n.max(1);
        self
    }

    /// Checkpoint `d` after the latest checkpoint when the tree grew.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Audit only these streams.
    pub fn only_streams(mut self, streams: Vec<String>) -> Self {
        self.streams = Some(streams);
        self
    }

    /// The streams audited.
    pub fn streams(&self) -> Vec<String> {
        match &self.streams {
            Some(s) => s.clone(),
            None => audited_streams(),
        }
    }
}

/// Every Amai stream but AMAI_AUDIT: the aggregate streams and the trust feed.
pub fn audited_streams() -> Vec<String> {
    let mut out: Vec<String> = AggregateKind::ALL
        .into_iter()
        .filter(|k| *k != AggregateKind::Audit)
        .map(|k| k.stream().to_string())
        .collect();
    out.push(amai_bus::streams::TRUST_FEED_STREAM.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_but_the_audit_stream_is_audited() {
        let s = audited_streams();
        assert!(!s.iter().any(|s| s == "AMAI_AUDIT"));
        assert!(s.iter().any(|s| s == "AMAI_AGENTS"));
        assert!(s.iter().any(|s| s == "AMAI_TRUST_FEED"));
    }
}
