//! The human-readable trust report: one deterministic markdown document per
//! agent ([`render_report`]) and the recommendation rule it ends with
//! ([`recommend`]).
//!
//! Numbers are formatted from thousandths with integer arithmetic only
//! (scores with three decimals, the baseline and rates with one), and every
//! list comes from a `BTreeMap` or a stable sort, so the same inputs give
//! the same bytes on every platform.

use crate::config::TrustConfig;
use crate::fixed::{format_milli, format_signed_milli, Milli};
use crate::model::{format_duration, Adjustment, AgentModel, Alert, Severity};

/// A score at or above this (75.0) with no critical alert is trusted for
/// autonomous runs.
pub const TRUSTED_FROM_MILLI: Milli = 75_000;

/// A score below this (45.0), or any critical alert, restricts the agent.
pub const RESTRICT_BELOW_MILLI: Milli = 45_000;

/// What the report recommends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recommendation {
    /// Score ≥ 75.0 and no critical alert.
    Trusted,
    /// Neither trusted nor restricted.
    Supervise,
    /// Score < 45.0 or any critical alert.
    Restrict,
}

impl Recommendation {
    /// The recommendation in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Recommendation::Trusted => "trusted for autonomous runs",
            Recommendation::Supervise => "supervise",
            Recommendation::Restrict => "restrict: run with network none and review",
        }
    }
}

/// The rule: any critical alert in `alerts` or a score below 45.0 →
/// [`Recommendation::Restrict`]; otherwise a score of at least 75.0 →
/// [`Recommendation::Trusted`]; otherwise [`Recommendation::Supervise`].
pub fn recommend(score_milli: Milli, alerts: &[Alert]) -> Recommendation {
    let critical = alerts.iter().any(|a| a.severity == Severity::Critical);
    if critical || score_milli < RESTRICT_BELOW_MILLI {
        Recommendation::Restrict
    } else if score_milli >= TRUSTED_FROM_MILLI {
        Recommendation::Trusted
    } else {
        Recommendation::Supervise
    }
}

/// What a report is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct ReportInput<'a> {
    /// The agent's id.
    pub agent_id: &'a str,
    /// Its registered name, if any.
    pub name: Option<&'a str>,
    /// Its model.
    pub model: &'a AgentModel,
    /// The configuration the model was built with.
    pub cfg: &'a TrustConfig,
    /// The event time to report at (the model's clock if earlier).
    pub at_ms: i64,
    /// Recent adjustments to list, in the order given.
    pub recent: &'a [Adjustment],
    /// Alerts to list (and to judge the recommendation by), in the order
    /// given.
    pub alerts: &'a [Alert],
}

/// Renders the markdown report: a title, then `## Score`,
/// `## Fingerprint`, `## Consistency`, `## Interactions`, `## Anomalies`
/// and `## Recommendation` (see [`recommend`]).
pub fn render_report(input: &ReportInput) -> String {
    let ReportInput {
        agent_id,
        name,
        model,
        cfg,
        at_ms,
        recent,
        alerts,
    } = *input;
    let at = at_ms.max(model.clock_ms());
    let score = model.score_milli(cfg, at);
    let components = model.components(cfg, at);
    let fingerprint = model.fingerprint(cfg);
    let count_of = |signal: &str| {
        components
            .signals
            .iter()
            .find(|s| s.signal == signal)
            .map_or(0, |s| s.count)
    };
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };

    match name {
        Some(name) => line(format!("# Trust report: {}", cell(name))),
        None => line(format!("# Trust report: {}", cell(agent_id))),
    }
    line(String::new());
    line(format!(
        "Agent `{}`, at event time {at} (unix ms).",
        cell(agent_id)
    ));

    line(String::new());
    line("## Score".to_owned());
    line(String::new());
    line(format!(
        "**{}** of 100.000 (baseline {}).",
        format_milli(score, 3),
        format_milli(cfg.baseline(), 1)
    ));
    line(String::new());
    line("| measure | value |".to_owned());
    line("|---|---:|".to_owned());
    line(format!("| score | {} |", format_milli(score, 3)));
    line(format!(
        "| behaviour only (without endorsements) | {} |",
        format_milli(model.behaviour_score_milli(cfg, at), 3)
    ));
    line(format!(
        "| endorsing credibility (0 to 1) | {} |",
        format_milli(model.endorsing_credibility_milli(cfg, at), 3)
    ));
    line(format!(
        "| prior (positive / negative) | {} / {} |",
        format_milli(components.prior_positive_milli, 3),
        format_milli(components.prior_negative_milli, 3)
    ));
    line(format!(
        "| decayed evidence (positive / negative) | {} / {} |",
        format_milli(components.positive_milli, 3),
        format_milli(components.negative_milli, 3)
    ));
    line(String::new());
    if components.signals.is_empty() {
        line("No evidence yet.".to_owned());
    } else {
        line("| signal | observed | positive | negative |".to_owned());
        line("|---|---:|---:|---:|".to_owned());
        for s in &components.signals {
            line(format!(
                "| {} | {} | {} | {} |",
                s.signal,
                s.count,
                format_milli(s.positive_milli, 3),
                format_milli(s.negative_milli, 3)
            ));
        }
    }
    if !recent.is_empty() {
        line(String::new());
        line("Recent adjustments:".to_owned());
        line(String::new());
        line("| event time | signal | evidence | score | reason |".to_owned());
        line("|---:|---|---:|---|---|".to_owned());
        for a in recent {
            line(format!(
                "| {} | {} | {} | {} → {} | {} |",
                a.event_time_ms,
                cell(&a.signal),
                format_signed_milli(a.positive_milli - a.negative_milli),
                format_milli(a.score_before_milli, 3),
                format_milli(a.score_after_milli, 3),
                cell(&a.reason)
            ));
        }
    }

    line(String::new());
    line("## Fingerprint".to_owned());
    line(String::new());
    line(format!(
        "- actions: {} of {} types",
        fingerprint.actions,
        fingerprint.action_counts.len()
    ));
    line(format!(
        "- rate: median {} per {} bucket, {} in the latest bucket",
        format_milli(fingerprint.rate_median_milli, 1),
        format_duration(fingerprint.bucket_ms),
        fingerprint.current_bucket_count
    ));
    let raised: Vec<String> = fingerprint
        .alerts
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    line(format!(
        "- alerts raised so far: {}",
        if raised.is_empty() {
            "none".to_owned()
        } else {
            raised.join(", ")
        }
    ));
    if !fingerprint.action_counts.is_empty() {
        line(String::new());
        line("| action type | count |".to_owned());
        line("|---|---:|".to_owned());
        let mut types: Vec<(&String, &u64)> = fingerprint.action_counts.iter().collect();
        types.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        for (action_type, n) in types {
            line(format!("| {} | {n} |", cell(action_type)));
        }
    }

    line(String::new());
    line("## Consistency".to_owned());
    line(String::new());
    line(format!("- jail verdicts: {}", fingerprint.jail_runs));
    line(format!("- clean runs: {}", count_of("jail_clean")));
    line(format!(
        "- non-reproducible runs: {}",
        count_of("jail_not_reproducible")
    ));
    line(format!(
        "- policy violations: {}, network denied: {}, limits hit: {}",
        count_of("jail_policy_violation"),
        count_of("jail_network_denied"),
        count_of("jail_limit_hit")
    ));
    line(format!(
        "- LLM replay misses: {}, truncated responses: {}",
        fingerprint.llm_replay_misses,
        count_of("llm_truncated")
    ));
    line(format!("- crashes: {}", count_of("crash")));

    line(String::new());
    line("## Interactions".to_owned());
    line(String::new());
    line(format!("- peers: {}", fingerprint.peer_count));
    line(format!(
        "- endorsements received: {}, given: {}",
        fingerprint.endorsements_received, fingerprint.endorsements_given
    ));
    if !fingerprint.top_peers.is_empty() {
        line(String::new());
        line("| peer | interactions | first (unix ms) |".to_owned());
        line("|---|---:|---:|".to_owned());
        for p in &fingerprint.top_peers {
            line(format!(
                "| {} | {} | {} |",
                cell(&p.peer),
                p.interactions,
                p.first_ms
            ));
        }
    }

    line(String::new());
    line("## Anomalies".to_owned());
    line(String::new());
    if alerts.is_empty() {
        line("None.".to_owned());
    } else {
        line(
            "| kind | severity | statistic | threshold | window (unix ms) | events | reason |"
                .to_owned(),
        );
        line("|---|---|---:|---:|---|---:|---|".to_owned());
        for a in alerts {
            line(format!(
                "| {} | {} | {} | {} | {}..{} | {} | {} |",
                a.kind.as_str(),
                a.severity.as_str(),
                format_milli(a.statistic_milli, 3),
                format_milli(a.threshold_milli, 3),
                a.window.from_ms,
                a.window.to_ms,
                a.window.count,
                cell(&a.reason)
            ));
        }
    }

    line(String::new());
    line("## Recommendation".to_owned());
    line(String::new());
    let recommendation = recommend(score, alerts);
    line(format!("**{}**.", recommendation.as_str()));
    line(String::new());
    line(format!(
        "Rule: any critical alert or a score below {} restricts; a score of at least {} \
         without a critical alert is trusted for autonomous runs; anything else is supervised.",
        format_milli(RESTRICT_BELOW_MILLI, 1),
        format_milli(TRUSTED_FROM_MILLI, 1)
    ));
    out
}

/// Text made safe for a markdown table cell or heading: pipes escaped,
/// line breaks turned into spaces, backticks dropped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('`', "'")
}
