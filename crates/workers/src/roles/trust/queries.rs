//! The trust query service (`amai.query.trust.*`), answered from the trust
//! projection: `get` (live score, components, last deltas, fingerprint; with
//! `min_position`), `history` (paged by trust slot), `alerts` (filtered,
//! newest first), `report` (deterministic markdown, narrated by an LLM when
//! configured: [`super::narrative`]), `explain` (the stored
//! evidence events behind a delta) and `endorsement` (for the gateway's
//! double-endorsement check). The gateway decides who may ask what.

use std::sync::Arc;
use std::time::Duration;

use amai_bus::proto;
use amai_bus::query::{self, QueryCode, QueryError};
use amai_bus::streams::TRUST_FEED_STREAM;
use amai_bus::{EventStore, Position};
use amai_projections::ProjectionHandle;
use amai_trust::{
    render_report, Adjustment, Alert, AlertKind, ReportInput, Severity, TrustConfig, Window,
};
use bytes::Bytes;
use prost::Message;

use super::model::AgentRecord;
use super::narrative::{Narrated, Narrator};
use super::read::{AlertFilter, TrustReadModel};
use crate::query_service::{typed_endpoint, QueryHandler};

/// Largest history or alert page.
pub const MAX_PAGE: usize = 500;
/// Largest number of last deltas in a summary.
pub const MAX_LAST_DELTAS: usize = 100;
/// Deltas and alerts a report covers.
const REPORT_RECENT: usize = 20;

fn internal(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Internal, e.to_string()).with_reason(query::reason::INTERNAL)
}

fn unavailable(e: impl std::fmt::Display) -> QueryError {
    QueryError::new(QueryCode::Unavailable, e.to_string())
        .with_reason(query::reason::WORKER_UNAVAILABLE)
}

fn not_found(what: String) -> QueryError {
    QueryError::new(QueryCode::NotFound, what).with_reason(query::reason::NOT_FOUND)
}

fn page(limit: u32, default: usize) -> usize {
    match limit {
        0 => default,
        n => (n as usize).min(MAX_PAGE),
    }
}

/// Everything the handlers share.
pub(crate) struct QueryState {
    pub(crate) projection: ProjectionHandle,
    pub(crate) model: TrustReadModel,
    pub(crate) store: EventStore,
    pub(crate) cfg: TrustConfig,
    pub(crate) timeout: Duration,
    /// Narrates reports, when configured.
    pub(crate) narrator: Option<Narrator>,
}

impl QueryState {
    fn record(&self, agent: &str) -> Result<AgentRecord, QueryError> {
        self.model.record(agent).map_err(internal)?.ok_or_else(|| {
            not_found(format!(
                "no identity {agent:?} in the trust projection; check the id, or pass min_position from its registration"
            ))
        })
    }

    /// The event-time clock a live score is computed at.
    fn clock(&self, record: &AgentRecord) -> Result<i64, QueryError> {
        Ok(self
            .model
            .clock()
            .map_err(internal)?
            .max(record.model.clock_ms()))
    }

    async fn get(&self, req: proto::GetTrustRequest) -> Result<Bytes, QueryError> {
        self.projection
            .wait_for_min_position(req.min_position.as_ref(), self.timeout)
            .await
            .map_err(QueryError::from)?;
        let record = self.record(&req.agent_id)?;
        let clock = self.clock(&record)?;
        let model = &record.model;
        let score_milli = model.score_milli(&self.cfg, clock);
        let components = model.components(&self.cfg, clock);
        let fp = model.fingerprint(&self.cfg);
        let last = match req.last {
            0 => 10,
            n => (n as usize).min(MAX_LAST_DELTAS),
        };
        let summary = proto::TrustSummary {
            agent_id: req.agent_id.clone(),
            score: score_milli as f64 / 1000.0,
            score_milli,
            prior_positive_milli: components.prior_positive_milli,
            prior_negative_milli: components.prior_negative_milli,
            positive_milli: components.positive_milli,
            negative_milli: components.negative_milli,
            components: components
                .signals
                .into_iter()
                .map(|c| proto::TrustComponent {
                    signal: c.signal,
                    positive_milli: c.positive_milli,
                    negative_milli: c.negative_milli,
                    count: c.count,
                })
                .collect(),
            last_deltas: self
                .model
                .last_deltas(&req.agent_id, last)
                .map_err(internal)?,
            clock_ms: clock,
            alert_count: fp.alerts.values().sum(),
            fingerprint: Some(proto::TrustFingerprint {
                action_counts: fp.action_counts.clone(),
                actions: fp.actions,
                rate_median_milli: fp.rate_median_milli,
                current_bucket_count: fp.current_bucket_count,
                bucket_ms: fp.bucket_ms,
                top_peers: fp
                    .top_peers
                    .iter()
                    .map(|p| proto::TrustPeer {
                        peer: p.peer.clone(),
                        interactions: p.interactions,
                        first_ms: p.first_ms,
                    })
                    .collect(),
                peer_count: fp.peer_count,
                jail_runs: fp.jail_runs,
                llm_replay_misses: fp.llm_replay_misses,
            }),
            position: Some(proto::Position {
                stream: TRUST_FEED_STREAM.to_string(),
                seq: self.projection.position(TRUST_FEED_STREAM),
            }),
        };
        Ok(Bytes::from(summary.encode_to_vec()))
    }

    fn history(&self, req: proto::GetTrustHistoryRequest) -> Result<Bytes, QueryError> {
        self.record(&req.agent_id)?;
        let (deltas, more) = self
            .model
            .history(&req.agent_id, req.after_seq, page(req.limit, 50))
            .map_err(internal)?;
        let next_after_seq = deltas.last().map(|d| d.trust_seq).unwrap_or(req.after_seq);
        Ok(Bytes::from(
            proto::TrustHistoryPage {
                deltas,
                next_after_seq,
                more,
            }
            .encode_to_vec(),
        ))
    }

    fn alerts(&self, req: proto::ListTrustAlertsRequest) -> Result<Bytes, QueryError> {
        let filter = AlertFilter {
            agent: (!req.agent_id.is_empty()).then(|| req.agent_id.clone()),
            min_severity: req.min_severity,
            since_ms: req.since_ms,
            until_ms: req.until_ms,
            limit: page(req.limit, 50),
        };
        let alerts = self.model.alerts(&filter).map_err(internal)?;
        Ok(Bytes::from(
            proto::TrustAlertList { alerts }.encode_to_vec(),
        ))
    }

    async fn report(&self, req: proto::GetTrustReportRequest) -> Result<Bytes, QueryError> {
        let record = self.record(&req.agent_id)?;
        let clock = self.clock(&record)?;
        let deltas = self
            .model
            .last_deltas(&req.agent_id, REPORT_RECENT)
            .map_err(internal)?;
        let mut recent = Vec::new();
        let mut alerts = Vec::new();
        // Oldest first, as the report reads.
        for delta in deltas.into_iter().rev() {
            match delta.kind {
                Some(proto::trust_delta::Kind::Adjusted(a)) => recent.push(adjustment(a)),
                Some(proto::trust_delta::Kind::Alert(a)) => alerts.push(alert(a)),
                None => {}
            }
        }
        let markdown = render_report(&ReportInput {
            agent_id: &req.agent_id,
            name: (!record.name.is_empty()).then_some(record.name.as_str()),
            model: &record.model,
            cfg: &self.cfg,
            at_ms: clock,
            recent: &recent,
            alerts: &alerts,
        });
        let Narrated { markdown, source } = match &self.narrator {
            Some(narrator) => narrator.report(&req.agent_id, markdown).await,
            None => Narrated {
                markdown,
                source: "model".to_string(),
            },
        };
        Ok(Bytes::from(
            proto::TrustReport {
                agent_id: req.agent_id,
                markdown,
                source,
            }
            .encode_to_vec(),
        ))
    }

    async fn explain(&self, req: proto::ExplainTrustRequest) -> Result<Bytes, QueryError> {
        let delta = self
            .model
            .delta(&req.event_id)
            .map_err(internal)?
            .ok_or_else(|| {
                not_found(format!(
                    "no trust delta or alert {:?}; ids come from GetTrust, GetHistory or ListAlerts",
                    req.event_id
                ))
            })?;
        let ids: Vec<String> = match &delta.kind {
            Some(proto::trust_delta::Kind::Adjusted(a)) => a.evidence.clone(),
            Some(proto::trust_delta::Kind::Alert(a)) => a.evidence.clone(),
            None => Vec::new(),
        };
        let mut evidence = Vec::new();
        for id in ids {
            let Some(seq) = self.model.position_of(&id).map_err(internal)? else {
                continue;
            };
            let stored = self
                .store
                .get_event(&Position::new(TRUST_FEED_STREAM.to_string(), seq))
                .await
                .map_err(unavailable)?;
            evidence.push(stored.to_proto());
        }
        Ok(Bytes::from(
            proto::TrustExplanation {
                delta: Some(delta),
                evidence,
            }
            .encode_to_vec(),
        ))
    }

    fn endorsement(&self, req: proto::TrustEndorsementQuery) -> Result<Bytes, QueryError> {
        let event_id = self
            .model
            .endorsement(&req.endorser, &req.endorsee)
            .map_err(internal)?;
        Ok(Bytes::from(
            proto::TrustEndorsementAnswer {
                endorsed: event_id.is_some(),
                event_id: event_id.unwrap_or_default(),
            }
            .encode_to_vec(),
        ))
    }
}

fn adjustment(a: proto::TrustAdjusted) -> Adjustment {
    Adjustment {
        signal: a.signal,
        positive_milli: a.positive_milli,
        negative_milli: a.negative_milli,
        score_before_milli: a.score_before_milli,
        score_after_milli: a.score_after_milli,
        reason: a.reason,
        evidence: a.evidence,
        event_time_ms: a.event_time_ms,
    }
}

fn alert(a: proto::TrustAlertRaised) -> Alert {
    let kind = match a.kind.as_str() {
        "mix_shift" => AlertKind::MixShift,
        "new_peers" => AlertKind::NewPeers,
        _ => AlertKind::RateSpike,
    };
    let severity = match proto::TrustSeverity::try_from(a.severity) {
        Ok(proto::TrustSeverity::Critical) => Severity::Critical,
        Ok(proto::TrustSeverity::Warning) => Severity::Warning,
        _ => Severity::Info,
    };
    let w = a.window.unwrap_or_default();
    Alert {
        kind,
        severity,
        statistic_milli: a.statistic_milli,
        threshold_milli: a.threshold_milli,
        window: Window {
            from_ms: w.from_ms,
            to_ms: w.to_ms,
            first_event: w.first_event,
            last_event: w.last_event,
            count: w.count,
        },
        reason: a.reason,
        evidence: a.evidence,
    }
}

/// The query endpoints.
pub(crate) fn endpoints(state: Arc<QueryState>) -> Vec<(&'static str, QueryHandler)> {
    vec![
        typed_endpoint(query::TRUST_GET, state.clone(), |s, req| async move {
            s.get(req).await
        }),
        typed_endpoint(query::TRUST_HISTORY, state.clone(), |s, req| async move {
            s.history(req)
        }),
        typed_endpoint(query::TRUST_ALERTS, state.clone(), |s, req| async move {
            s.alerts(req)
        }),
        typed_endpoint(query::TRUST_REPORT, state.clone(), |s, req| async move {
            s.report(req).await
        }),
        typed_endpoint(query::TRUST_EXPLAIN, state.clone(), |s, req| async move {
            s.explain(req).await
        }),
        typed_endpoint(query::TRUST_ENDORSEMENT, state, |s, req| async move {
            s.endorsement(req)
        }),
    ]
}
