//! Point-in-time replay: a role's projections rebuilt into a scratch sled as
//! of given stream positions, and its query service answered from them, in
//! process (no NATS subscription: the live deployment's services are not
//! disturbed). `amai replay --as-of` and the `--as-of` of `amai agent show` /
//! `amai trust show` use it.
//!
//! A point is a time (the last message of each stream stored at or before it)
//! or explicit positions (`AMAI_AGENTS:120`): [`AsOfPoint`]. Every projection
//! of the role is replayed up to and including its streams' bounds (a stream
//! without a bound is not applied), verified exactly as live projections are;
//! no reactor runs and nothing is appended.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use amai_bus::{EventStore, Position};
use amai_projections::{ProjectionHandle, ProjectionRunner};
use bytes::Bytes;

use crate::query_service::QueryHandler;
use crate::reactor::ServiceSigner;
use crate::role::{Role, RoleContext};

/// Why a point-in-time replay failed.
#[derive(Debug, thiserror::Error)]
pub enum AsOfError {
    /// The point does not parse.
    #[error("{0:?} is not a point in time: give an RFC 3339 time (2026-12-03T10:00:00Z) or stream positions (AMAI_AGENTS:120,AMAI_TRUST:40)")]
    BadPoint(String),
    /// NATS failed.
    #[error("cannot read the streams: {0}")]
    Unavailable(String),
    /// The scratch store failed.
    #[error("scratch projection store: {0}")]
    Storage(String),
    /// The role has no query service.
    #[error("role {0} answers no queries")]
    NoQueries(String),
    /// The replay did not reach its bounds in time.
    #[error("the replay of {projection} did not reach {position} within {secs} s")]
    Timeout {
        /// The projection.
        projection: String,
        /// The position not reached.
        position: Position,
        /// The wait.
        secs: u64,
    },
}

/// A point in the deployment's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsOfPoint {
    /// Everything stored at or before this time (unix milliseconds).
    Time(i64),
    /// Each named stream up to and including its sequence.
    Positions(HashMap<String, u64>),
}

impl std::str::FromStr for AsOfPoint {
    type Err = AsOfError;

    fn from_str(s: &str) -> Result<Self, AsOfError> {
        let bad = || AsOfError::BadPoint(s.to_string());
        if let Ok(t) =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        {
            return i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                .map(AsOfPoint::Time)
                .map_err(|_| bad());
        }
        let mut positions = HashMap::new();
        for part in s.split(',') {
            let (stream, seq) = part.trim().split_once(':').ok_or_else(bad)?;
            let seq: u64 = seq.parse().map_err(|_| bad())?;
            if stream.is_empty() {
                return Err(bad());
            }
            positions.insert(stream.to_string(), seq);
        }
        Ok(AsOfPoint::Positions(positions))
    }
}

/// The stream's last sequence now.
async fn last_seq(store: &EventStore, stream: &str) -> Result<u64, AsOfError> {
    let mut s = store
        .jetstream()
        .get_stream(stream)
        .await
        .map_err(|e| AsOfError::Unavailable(e.to_string()))?;
    Ok(s.info()
        .await
        .map_err(|e| AsOfError::Unavailable(e.to_string()))?
        .state
        .last_sequence)
}

/// The last sequence of `stream` stored at or before `at_ms` (0: none).
async fn last_seq_at(store: &EventStore, stream: &str, at_ms: i64) -> Result<u64, AsOfError> {
    let js = store.jetstream();
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| AsOfError::Unavailable(e.to_string()))?;
    let state = s
        .info()
        .await
        .map_err(|e| AsOfError::Unavailable(e.to_string()))?
        .state
        .clone();
    let (mut lo, mut hi) = (state.first_sequence, state.last_sequence);
    if state.messages == 0 {
        return Ok(0);
    }
    // Publish times grow with sequences: binary search the last one <= at.
    let mut found = lo.saturating_sub(1);
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let published = match s.get_raw_message(mid).await {
            Ok(m) => (m.time.unix_timestamp_nanos() / 1_000_000) as i64,
            // A deleted message: look left of it.
            Err(_) => i64::MAX,
        };
        if published <= at_ms {
            found = mid;
            lo = mid + 1;
        } else {
            if mid == 0 {
                break;
            }
            hi = mid - 1;
        }
    }
    Ok(found)
}

/// A role's projections as of a point, and its query service over them.
pub struct AsOf {
    projections: Vec<ProjectionHandle>,
    endpoints: Vec<(&'static str, QueryHandler)>,
    bounds: HashMap<String, u64>,
}

impl std::fmt::Debug for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsOf")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl AsOf {
    /// Replays `role`'s projections into a sled at `scratch` as of `point`
    /// (waiting at most `wait` for each projection to reach its bounds), and
    /// builds its query service over them.
    pub async fn build(
        role: Arc<dyn Role>,
        client: async_nats::Client,
        store: EventStore,
        point: &AsOfPoint,
        scratch: &Path,
        wait: Duration,
    ) -> Result<AsOf, AsOfError> {
        let db = sled::open(scratch.join("as-of.sled"))
            .map_err(|e| AsOfError::Storage(e.to_string()))?;
        let mut projections = Vec::new();
        let mut all_bounds = HashMap::new();
        for projection in role.projections() {
            let mut bounds = HashMap::new();
            for stream in projection.streams() {
                let seq = match point {
                    AsOfPoint::Time(t) => last_seq_at(&store, stream, *t).await?,
                    // A position beyond the stream's end means "all of it".
                    AsOfPoint::Positions(p) => match p.get(*stream) {
                        Some(seq) => (*seq).min(last_seq(&store, stream).await?),
                        None => 0,
                    },
                };
                bounds.insert(stream.to_string(), seq);
            }
            let name = projection.name();
            let handle = ProjectionRunner::spawn_bounded(
                db.clone(),
                store.clone(),
                projection,
                bounds.clone(),
                futures::future::pending(),
            )
            .await
            .map_err(|e| AsOfError::Storage(e.to_string()))?;
            for (stream, seq) in &bounds {
                if *seq == 0 {
                    continue;
                }
                let position = Position::new(stream.as_str(), *seq);
                handle
                    .wait_for(&position, wait)
                    .await
                    .map_err(|_| AsOfError::Timeout {
                        projection: name.to_string(),
                        position: position.clone(),
                        secs: wait.as_secs(),
                    })?;
            }
            all_bounds.extend(bounds);
            projections.push(handle);
        }
        let signer = ServiceSigner {
            keys: amai_bus::IdentityKeys::generate(),
            id: "as-of".to_string(),
        };
        let ctx = RoleContext {
            role: role.name(),
            client,
            store,
            db,
            signer,
            min_position_timeout: wait,
            projections: projections.clone(),
        };
        let service = role
            .queries(&ctx)
            .map_err(|e| AsOfError::Storage(e.to_string()))?
            .ok_or_else(|| AsOfError::NoQueries(role.name().to_string()))?;
        Ok(AsOf {
            projections,
            endpoints: service.endpoints,
            bounds: all_bounds,
        })
    }

    /// The stream positions the projections were replayed to.
    pub fn bounds(&self) -> &HashMap<String, u64> {
        &self.bounds
    }

    /// The replayed projections.
    pub fn projections(&self) -> &[ProjectionHandle] {
        &self.projections
    }

    /// Asks the role's query `subject` (e.g. `amai.query.identity.get`) as of
    /// the point.
    pub async fn ask<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        subject: &str,
        req: &Req,
    ) -> Result<Resp, amai_bus::query::QueryError> {
        use amai_bus::query::{QueryCode, QueryError};
        let handler = self
            .endpoints
            .iter()
            .find(|(s, _)| *s == subject)
            .map(|(_, h)| h.clone())
            .ok_or_else(|| {
                QueryError::new(
                    QueryCode::InvalidArgument,
                    format!("the role answers no query {subject}"),
                )
            })?;
        let answer = handler(Bytes::from(req.encode_to_vec())).await?;
        Resp::decode(answer)
            .map_err(|e| QueryError::new(QueryCode::Internal, format!("undecodable answer: {e}")))
    }

    /// Stops the replayed projections.
    pub async fn close(self) {
        for p in &self.projections {
            p.shutdown();
        }
        for p in &self.projections {
            p.stopped().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_as_times_or_positions_and_nothing_else() {
        assert_eq!(
            "2026-12-03T10:00:00Z".parse::<AsOfPoint>().expect("time"),
            AsOfPoint::Time(1_796_292_000_000)
        );
        let p = "AMAI_AGENTS:120,AMAI_TRUST:4"
            .parse::<AsOfPoint>()
            .expect("positions");
        assert_eq!(
            p,
            AsOfPoint::Positions(HashMap::from([
                ("AMAI_AGENTS".to_string(), 120),
                ("AMAI_TRUST".to_string(), 4)
            ]))
        );
        for bad in ["", "yesterday", "AMAI_AGENTS", "AMAI_AGENTS:x", ":3"] {
            assert!(bad.parse::<AsOfPoint>().is_err(), "{bad:?}");
        }
    }
}
