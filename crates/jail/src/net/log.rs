//! The network log of one jail: every TCP connection attempt and every DNS query
//! that reached the jail's gateway, and every TCP, UDP and ICMP attempt the jail's
//! nft table refused (read from its NFLOG group), with its time, destination and
//! verdict, and its JSON-lines encoding.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What the jail attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A TCP connection (the destination is `host:port`).
    Tcp,
    /// A DNS query over UDP (the destination is the queried name).
    Dns,
    /// A UDP datagram other than DNS (the destination is `host:port`); always
    /// denied.
    Udp,
    /// An ICMP message (the destination is the address); always denied.
    Icmp,
}

/// Whether the policy let the attempt through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Forwarded (TCP) or answered (DNS).
    Allowed,
    /// Refused at the SYN (TCP: the client sees "connection refused"), reset
    /// after the handshake (TCP allowed by the nft table but refused by the
    /// listener, e.g. a name resolving onto the host), refused (DNS), or rejected
    /// (UDP, ICMP).
    Denied,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLogEntry {
    /// When the attempt reached the gateway, in milliseconds since the Unix epoch
    /// in JSON (`at_unix_ms`).
    #[serde(rename = "at_unix_ms", with = "unix_ms")]
    pub at: SystemTime,
    /// TCP connection or DNS query.
    pub protocol: Protocol,
    /// Where the jail sent it, as `ip:port` of the original destination (for a
    /// synthetic address of an allowlisted name: `name:port`), or the queried name.
    pub destination: String,
    /// The policy's decision.
    pub verdict: Verdict,
    /// Why, and what happened (e.g. `not in the allowlist`, `forwarded to
    /// 127.0.0.1:8088`, `query type AAAA`).
    pub detail: String,
}

/// The most entries one jail's log keeps; later attempts are only counted
/// ([`NetworkLog::dropped`]), so a jail flooding connections cannot grow the
/// worker's memory without bound.
pub const MAX_LOG_ENTRIES: usize = 100_000;

/// A snapshot of a jail's network log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkLog {
    /// The attempts in the order they were decided (at most [`MAX_LOG_ENTRIES`]).
    pub entries: Vec<NetworkLogEntry>,
    /// Attempts decided (and enforced) after the log was full, not kept.
    pub dropped: u64,
}

/// Why [`NetworkLog::from_json_lines`] failed.
#[derive(Debug, thiserror::Error)]
#[error("line {line} of the network log is not a network log entry: {source}")]
pub struct ParseLogError {
    /// The 1-based line number.
    pub line: usize,
    /// What serde_json said.
    #[source]
    pub source: serde_json::Error,
}

impl NetworkLog {
    /// How many attempts were allowed.
    pub fn allowed(&self) -> usize {
        self.count(Verdict::Allowed)
    }

    /// How many attempts were denied.
    pub fn denied(&self) -> usize {
        self.count(Verdict::Denied)
    }

    fn count(&self, verdict: Verdict) -> usize {
        self.entries.iter().filter(|e| e.verdict == verdict).count()
    }

    /// The entries matching `protocol`, `destination` and `verdict`.
    pub fn find<'a>(
        &'a self,
        protocol: Protocol,
        destination: &'a str,
        verdict: Verdict,
    ) -> impl Iterator<Item = &'a NetworkLogEntry> + 'a {
        self.entries.iter().filter(move |e| {
            e.protocol == protocol && e.destination == destination && e.verdict == verdict
        })
    }

    /// One JSON object per line, each line ending with `\n` ([`NetworkLog::dropped`]
    /// is not part of it).
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            // A struct of strings, an enum and an integer always serializes.
            if let Ok(line) = serde_json::to_string(entry) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Parses what [`NetworkLog::to_json_lines`] wrote (blank lines are skipped).
    pub fn from_json_lines(text: &str) -> Result<Self, ParseLogError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(line).map_err(|source| ParseLogError {
                line: index + 1,
                source,
            })?;
            entries.push(entry);
        }
        Ok(Self {
            entries,
            dropped: 0,
        })
    }
}

/// The log shared by the listeners of one jail.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedLog(Arc<Mutex<NetworkLog>>);

impl SharedLog {
    /// Records an attempt (and emits a tracing event for it).
    pub(crate) fn record(
        &self,
        jail_id: &str,
        protocol: Protocol,
        destination: String,
        verdict: Verdict,
        detail: String,
    ) {
        tracing::debug!(jail = jail_id, ?protocol, %destination, ?verdict, %detail, "jail network attempt");
        let entry = NetworkLogEntry {
            at: SystemTime::now(),
            protocol,
            destination,
            verdict,
            detail,
        };
        // A panic elsewhere while holding the lock leaves a consistent log.
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.entries.len() < MAX_LOG_ENTRIES {
            log.entries.push(entry);
        } else {
            log.dropped += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> NetworkLog {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

mod unix_ms {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        s.serialize_u64(ms)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(UNIX_EPOCH + std::time::Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip_and_counts() {
        let log = SharedLog::default();
        log.record(
            "j",
            Protocol::Tcp,
            "10.0.0.1:80".into(),
            Verdict::Denied,
            "not in the allowlist".into(),
        );
        log.record(
            "j",
            Protocol::Dns,
            "example.test".into(),
            Verdict::Allowed,
            "A".into(),
        );
        let snapshot = log.snapshot();
        assert_eq!((snapshot.allowed(), snapshot.denied()), (1, 1));
        let text = snapshot.to_json_lines();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("\"protocol\":\"tcp\""), "{text}");
        assert!(text.contains("\"verdict\":\"denied\""), "{text}");
        let parsed = NetworkLog::from_json_lines(&text).expect("parses");
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.entries[1].destination, "example.test");
        assert_eq!(
            parsed
                .find(Protocol::Tcp, "10.0.0.1:80", Verdict::Denied)
                .count(),
            1
        );
    }

    #[test]
    fn a_full_log_counts_what_it_drops() {
        let log = SharedLog::default();
        for _ in 0..MAX_LOG_ENTRIES + 2 {
            log.record(
                "j",
                Protocol::Tcp,
                "x:1".into(),
                Verdict::Denied,
                String::new(),
            );
        }
        let snapshot = log.snapshot();
        assert_eq!(snapshot.entries.len(), MAX_LOG_ENTRIES);
        assert_eq!(snapshot.dropped, 2);
    }

    #[test]
    fn a_bad_line_is_named() {
        let error = NetworkLog::from_json_lines("\n{}\n").expect_err("not an entry");
        assert_eq!(error.line, 2);
    }
}
