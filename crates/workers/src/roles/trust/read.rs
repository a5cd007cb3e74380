//! Plain reads of the trust projection's tree, for the publisher and the
//! query service (see [`super::model`] for the keys).

use amai_bus::proto;
use prost::Message;

use super::model::{
    alert_window_end, decode, delta_index_key, delta_key, delta_prefix, endorsement_key,
    planned_key, position_key, record_key, AgentRecord, Planned, ALERT_PREFIX, CLOCK_KEY,
};

/// Why a read failed: the tree is unreadable or holds what it cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("trust projection: {0}")]
pub struct ReadError(String);

fn corrupt(e: impl std::fmt::Display) -> ReadError {
    ReadError(e.to_string())
}

/// Alerts wanted by a listing.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// Only this agent's (`None`: every agent's).
    pub agent: Option<String>,
    /// At least this severe.
    pub min_severity: i32,
    /// Window end in `[since_ms, until_ms]` (0: unbounded).
    pub since_ms: i64,
    /// See `since_ms`.
    pub until_ms: i64,
    /// At most this many.
    pub limit: usize,
}

/// Reads of the trust projection.
#[derive(Clone, Debug)]
pub struct TrustReadModel {
    tree: sled::Tree,
}

impl TrustReadModel {
    /// Reads of `tree` (the projection's).
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, ReadError> {
        self.tree.get(key).map_err(corrupt)
    }

    /// The identity's record, if the feed registered it.
    pub fn record(&self, agent: &str) -> Result<Option<AgentRecord>, ReadError> {
        self.get(&record_key(agent))?
            .map(|b| decode(&b).map_err(corrupt))
            .transpose()
    }

    /// The trust events planned for a feed event (empty if none).
    pub fn planned(&self, feed_seq: u64) -> Result<Vec<Planned>, ReadError> {
        Ok(self
            .get(&planned_key(feed_seq))?
            .map(|b| decode(&b).map_err(corrupt))
            .transpose()?
            .unwrap_or_default())
    }

    /// The delta at `seq` of `agent`'s trust chain, as planned.
    pub fn delta_at(&self, agent: &str, seq: u64) -> Result<Option<proto::TrustDelta>, ReadError> {
        self.get(&delta_key(agent, seq))?
            .map(|v| proto::TrustDelta::decode(v.as_ref()).map_err(corrupt))
            .transpose()
    }

    /// The deployment's event-time clock (`i64::MIN` before any event).
    pub fn clock(&self) -> Result<i64, ReadError> {
        Ok(self
            .get(CLOCK_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(i64::MIN))
    }

    /// The agent's deltas with a slot after `after_seq`, oldest first; and
    /// whether more follow.
    pub fn history(
        &self,
        agent: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<(Vec<proto::TrustDelta>, bool), ReadError> {
        let start = delta_key(agent, after_seq.saturating_add(1));
        let prefix = delta_prefix(agent);
        let mut out = Vec::new();
        for item in self.tree.range(start..) {
            let (k, v) = item.map_err(corrupt)?;
            if !k.starts_with(&prefix) {
                break;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(proto::TrustDelta::decode(v.as_ref()).map_err(corrupt)?);
        }
        Ok((out, false))
    }

    /// The agent's latest `n` deltas, newest first.
    pub fn last_deltas(&self, agent: &str, n: usize) -> Result<Vec<proto::TrustDelta>, ReadError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(delta_prefix(agent)).rev() {
            if out.len() == n {
                break;
            }
            let (_, v) = item.map_err(corrupt)?;
            out.push(proto::TrustDelta::decode(v.as_ref()).map_err(corrupt)?);
        }
        Ok(out)
    }

    /// The delta or alert with this trust event id.
    pub fn delta(&self, event_id: &str) -> Result<Option<proto::TrustDelta>, ReadError> {
        let Some(key) = self.get(&delta_index_key(event_id))? else {
            return Ok(None);
        };
        self.get(&key)?
            .map(|v| proto::TrustDelta::decode(v.as_ref()).map_err(corrupt))
            .transpose()
    }

    /// Alerts matching `filter`, newest window end first.
    pub fn alerts(&self, filter: &AlertFilter) -> Result<Vec<proto::TrustDelta>, ReadError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(ALERT_PREFIX).rev() {
            if out.len() >= filter.limit {
                break;
            }
            let (k, v) = item.map_err(corrupt)?;
            let end = alert_window_end(&k).unwrap_or(0);
            if filter.until_ms != 0 && end > filter.until_ms {
                continue;
            }
            if filter.since_ms != 0 && end < filter.since_ms {
                break;
            }
            let Some(delta) = self.get(&v)? else { continue };
            let delta = proto::TrustDelta::decode(delta.as_ref()).map_err(corrupt)?;
            let Some(proto::trust_delta::Kind::Alert(alert)) = &delta.kind else {
                continue;
            };
            if filter.agent.as_deref().is_some_and(|a| a != alert.agent_id) {
                continue;
            }
            if alert.severity < filter.min_severity {
                continue;
            }
            out.push(delta);
        }
        Ok(out)
    }

    /// The alerts of one agent, oldest first.
    pub fn agent_alerts(&self, agent: &str) -> Result<Vec<proto::TrustAlertRaised>, ReadError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(delta_prefix(agent)) {
            let (_, v) = item.map_err(corrupt)?;
            if let Some(proto::trust_delta::Kind::Alert(a)) =
                proto::TrustDelta::decode(v.as_ref()).map_err(corrupt)?.kind
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The counted endorsement of `endorsee` by `endorser`, if any.
    pub fn endorsement(&self, endorser: &str, endorsee: &str) -> Result<Option<String>, ReadError> {
        Ok(self
            .get(&endorsement_key(endorser, endorsee))?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The feed sequence of a citable event.
    pub fn position_of(&self, event_id: &str) -> Result<Option<u64>, ReadError> {
        Ok(self
            .get(&position_key(event_id))?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map(u64::from_be_bytes))
    }
}
