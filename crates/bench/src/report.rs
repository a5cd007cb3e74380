//! What one run measured ([`Report`]) and its two renderings: a table for
//! people and one JSON object for scripts.

use serde_json::json;

use crate::audit::{AuditFigures, AUDIT_PROOF_RPS, CHECKPOINT_EVERY, GOAL_PROOF_P99_MS};
use crate::jail::{JailFigures, Samples, DIFF_SIZES};
use crate::llm::{LlmFigures, LLM_CONCURRENCY, LLM_RPS};
use crate::load::Latency;
use crate::trust::{TrustFigures, GET_TRUST_RPS};
use crate::{Sizes, AGENTS, APPEND_VISIBLE_RPS, GET_IDENTITY_RPS, PUBLISH_WINDOW};

// Goals on a 2-core machine (reported, never asserted).
/// Bus append rate / raw publish rate.
const GOAL_BUS_VS_RAW: f64 = 0.3;
/// Fresh projection replay rate / single-core raw `verify_strict` rate: the
/// runner checks signatures on all cores ahead of its sequential fold.
const GOAL_PROJECTION_VS_VERIFY: f64 = 1.5;
/// Bus append rate ([`amai_bus::EventStore::append`]) / single-core raw
/// `verify_strict` rate: appends verify on every core.
const GOAL_BUS_VS_VERIFY: f64 = 1.4;
const GOAL_GET_IDENTITY_P99_MS: f64 = 2.0;
const GOAL_APPEND_VISIBLE_P99_MS: f64 = 20.0;
/// Latency the llm proxy adds to a replayed call (proxy minus direct upstream).
const GOAL_LLM_REPLAY_OVERHEAD_P50_MS: f64 = 0.5;
const GOAL_LLM_REPLAY_OVERHEAD_P99_MS: f64 = 2.0;
/// Latency the llm proxy adds to a recorded call, the durable append included.
const GOAL_LLM_RECORD_OVERHEAD_P50_MS: f64 = 2.0;
/// Median jail run of a trivial command (request to finished, through the
/// gateway) / median `docker run --rm` of the same image and command.
const GOAL_JAIL_VS_DOCKER_RUN: f64 = 1.5;
/// Trust analysis rate (a fresh fold of the trust feed) / the identity
/// projection's fresh replay rate: the analysis must not be the bottleneck.
const GOAL_TRUST_VS_PROJECTION: f64 = 0.8;
const GOAL_GET_TRUST_P99_MS: f64 = 2.0;
/// Offline audit verification rate / single-core raw `verify_strict` rate
/// (not measured until the offline verifier lands).
const GOAL_AUDIT_VERIFY_VS_RAW_VERIFY: f64 = 1.5;

/// Everything one run measured, with the sizes it ran at. Render it with
/// [`Report::table`] or [`Report::to_json`].
#[derive(Debug, Default)]
pub struct Report {
    pub(crate) sizes: Sizes,
    pub(crate) payload_bytes: usize,
    pub(crate) raw_publish_per_s: f64,
    pub(crate) bus_append_per_s: f64,
    pub(crate) bus_events: usize,
    pub(crate) gateway_append_per_s: f64,
    pub(crate) gateway_events: usize,
    pub(crate) projection_apply_per_s: f64,
    pub(crate) projection_events: u64,
    pub(crate) projection_secs: f64,
    pub(crate) raw_verify_per_s: f64,
    pub(crate) raw_sign_per_s: f64,
    pub(crate) nats_restarts: Option<u64>,
    pub(crate) get_identity: Latency,
    pub(crate) identity_query_nats: Latency,
    pub(crate) append_visible: Latency,
    pub(crate) llm: LlmFigures,
    pub(crate) jail: JailFigures,
    pub(crate) trust: TrustFigures,
    pub(crate) audit: AuditFigures,
}

/// `12345.6` -> `12,346`.
pub(crate) fn fmt_int(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

/// Rounds for JSON (NaN becomes null through serde_json).
fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

impl Report {
    /// Records how often the managed nats-server restarted during the run
    /// (`None`: the bench used a NATS it does not manage).
    pub fn set_nats_restarts(&mut self, restarts: Option<u64>) {
        self.nats_restarts = restarts;
    }

    /// How often the managed nats-server restarted during the run.
    pub fn nats_restarts(&self) -> Option<u64> {
        self.nats_restarts
    }

    fn bus_vs_raw(&self) -> f64 {
        self.bus_append_per_s / self.raw_publish_per_s
    }

    /// Fresh projection replay rate / single-core raw verify rate.
    pub fn projection_vs_raw_verify(&self) -> f64 {
        self.projection_apply_per_s / self.raw_verify_per_s
    }

    /// Bus append rate / single-core raw verify rate.
    pub fn bus_vs_raw_verify(&self) -> f64 {
        self.bus_append_per_s / self.raw_verify_per_s
    }

    /// Replay added latency under its p50 goal, with no failed request.
    fn llm_replay_p50_met(&self) -> bool {
        let l = &self.llm;
        l.replay.errors == 0
            && l.direct.errors == 0
            && l.replay_overhead_p50() < GOAL_LLM_REPLAY_OVERHEAD_P50_MS
    }

    fn llm_replay_p99_met(&self) -> bool {
        let l = &self.llm;
        l.replay.errors == 0
            && l.direct.errors == 0
            && l.replay_overhead_p99() < GOAL_LLM_REPLAY_OVERHEAD_P99_MS
    }

    fn llm_record_p50_met(&self) -> bool {
        let l = &self.llm;
        l.record.errors == 0
            && l.direct.errors == 0
            && l.record_overhead_p50() < GOAL_LLM_RECORD_OVERHEAD_P50_MS
    }

    /// The jail run within its goal (never when the phase was skipped).
    fn jail_met(&self) -> bool {
        self.jail.skipped.is_none() && self.jail.jail_vs_docker_run() <= GOAL_JAIL_VS_DOCKER_RUN
    }

    fn trust_vs_projection(&self) -> f64 {
        self.trust.vs_projection(self.projection_apply_per_s)
    }

    /// The trust phase's JSON fields.
    fn trust_json(&self) -> Vec<(String, serde_json::Value)> {
        let t = &self.trust;
        [
            ("trust_events", json!(t.events)),
            ("trust_events_per_s", json!(round(t.events_per_s, 1))),
            (
                "trust_vs_projection",
                json!(round(self.trust_vs_projection(), 3)),
            ),
            ("get_trust_target_rps", json!(GET_TRUST_RPS)),
            ("get_trust_p50_ms", json!(round(t.get_trust.p50(), 3))),
            ("get_trust_p99_ms", json!(round(t.get_trust.p99(), 3))),
            ("get_trust_errors", json!(t.get_trust.errors)),
            (
                "goal_trust_vs_projection_min",
                json!(GOAL_TRUST_VS_PROJECTION),
            ),
            (
                "goal_trust_vs_projection_met",
                json!(self.trust_vs_projection() >= GOAL_TRUST_VS_PROJECTION),
            ),
            ("goal_get_trust_p99_ms_max", json!(GOAL_GET_TRUST_P99_MS)),
            (
                "goal_get_trust_p99_met",
                json!(t.get_trust.meets(GOAL_GET_TRUST_P99_MS)),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn trust_rows(&self) -> Vec<[String; 5]> {
        let t = &self.trust;
        let rps = fmt_int(f64::from(GET_TRUST_RPS));
        vec![
            [
                format!(
                    "trust analysis ({} feed events, fresh)",
                    fmt_int(t.events as f64)
                ),
                format!("{}/s", fmt_int(t.events_per_s)),
                format!("{:.2}x projection apply", self.trust_vs_projection()),
                format!(">= {GOAL_TRUST_VS_PROJECTION:.2}x"),
                met(self.trust_vs_projection() >= GOAL_TRUST_VS_PROJECTION).into(),
            ],
            [
                format!("get_trust p50 @ {rps} rps"),
                format!("{:.2} ms", t.get_trust.p50()),
                String::new(),
                String::new(),
                String::new(),
            ],
            [
                format!("get_trust p99 @ {rps} rps"),
                format!("{:.2} ms", t.get_trust.p99()),
                String::new(),
                format!("< {GOAL_GET_TRUST_P99_MS} ms"),
                met(t.get_trust.meets(GOAL_GET_TRUST_P99_MS)).into(),
            ],
        ]
    }

    /// Offline audit verification rate / single-core raw verify rate
    /// measured beside it (the run's raw verify figure when there is none).
    fn audit_verify_vs_raw_verify(&self) -> Option<f64> {
        let raw = self
            .audit
            .verify_baseline_per_s
            .unwrap_or(self.raw_verify_per_s);
        self.audit.verify_per_s.map(|v| v / raw)
    }

    /// The audit phase's JSON fields (`null` figures when it was skipped).
    fn audit_json(&self) -> Vec<(String, serde_json::Value)> {
        let a = &self.audit;
        let ms = |v: f64| json!(round(v, 3));
        [
            ("audit_skipped", json!(a.skipped)),
            ("audit_events", json!(a.events)),
            ("audit_fill_per_s", json!(round(a.fill_per_s, 1))),
            (
                "audit_fill_vs_raw_publish",
                json!(round(a.fill_per_s / self.raw_publish_per_s, 3)),
            ),
            ("audit_tree_per_s", json!(round(a.tree_per_s, 1))),
            ("audit_tree_seconds", json!(round(a.tree_secs, 3))),
            ("audit_tree_vs_fill", json!(round(a.tree_vs_fill(), 3))),
            ("audit_checkpoint_at_n_ms", ms(a.checkpoint_at_n_ms)),
            ("audit_proof_target_rps", json!(AUDIT_PROOF_RPS)),
            ("proof_p99_ms", ms(a.proof_p99_ms())),
            ("nats_echo_p50_ms", ms(a.echo.p50())),
            ("nats_echo_p99_ms", ms(a.echo.p99())),
            ("inclusion_p50_ms", ms(a.inclusion_gateway.p50())),
            ("inclusion_p99_ms", ms(a.inclusion_gateway.p99())),
            ("consistency_p50_ms", ms(a.consistency_gateway.p50())),
            ("consistency_p99_ms", ms(a.consistency_gateway.p99())),
            ("inclusion_query_p50_ms", ms(a.inclusion_query.p50())),
            ("inclusion_query_p99_ms", ms(a.inclusion_query.p99())),
            ("consistency_query_p50_ms", ms(a.consistency_query.p50())),
            ("consistency_query_p99_ms", ms(a.consistency_query.p99())),
            (
                "audit_proof_requests",
                json!(
                    a.inclusion_gateway.sent
                        + a.consistency_gateway.sent
                        + a.inclusion_query.sent
                        + a.consistency_query.sent
                ),
            ),
            (
                "audit_proof_errors",
                json!(
                    a.inclusion_gateway.errors
                        + a.consistency_gateway.errors
                        + a.inclusion_query.errors
                        + a.consistency_query.errors
                ),
            ),
            ("audit_proofs_verified", json!(a.proofs_verified)),
            ("checkpoint_every_events", json!(CHECKPOINT_EVERY)),
            ("checkpoint_per_1k_ms", ms(a.checkpoint.p50())),
            ("checkpoint_per_1k_p99_ms", ms(a.checkpoint.p99())),
            ("checkpoint_rounds", json!(a.checkpoint.sent)),
            ("raw_publish_one_p50_ms", ms(a.raw_publish_one.p50())),
            ("raw_publish_one_p99_ms", ms(a.raw_publish_one.p99())),
            ("raw_publish_1k_ms", ms(a.raw_publish_1k.p50())),
            (
                "checkpoint_vs_raw_publish_one",
                json!(round(a.checkpoint_vs_raw_publish_one(), 3)),
            ),
            (
                "checkpoint_share_of_raw_1k",
                json!(round(a.checkpoint_share_of_raw_1k(), 3)),
            ),
            (
                "audit_verify_per_s",
                json!(a.verify_per_s.map(|v| round(v, 1))),
            ),
            (
                "audit_verify_raw_baseline_per_s",
                json!(a.verify_baseline_per_s.map(|v| round(v, 1))),
            ),
            (
                "audit_verify_vs_raw_verify",
                json!(self.audit_verify_vs_raw_verify().map(|v| round(v, 3))),
            ),
            ("audit_verify_skipped", json!(a.verify_skipped)),
            ("goal_proof_p99_ms_max", json!(GOAL_PROOF_P99_MS)),
            ("goal_proof_p99_met", json!(a.proof_goal_met())),
            (
                "goal_audit_verify_vs_raw_verify_min",
                json!(GOAL_AUDIT_VERIFY_VS_RAW_VERIFY),
            ),
            (
                "goal_audit_verify_vs_raw_verify_met",
                json!(self
                    .audit_verify_vs_raw_verify()
                    .map(|r| r >= GOAL_AUDIT_VERIFY_VS_RAW_VERIFY)),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The audit phase's table rows.
    fn audit_rows(&self) -> Vec<[String; 5]> {
        let a = &self.audit;
        let none = String::new;
        let verify = [
            "audit verify, offline (amai-audit)".into(),
            a.verify_per_s
                .map_or_else(|| "n/a".into(), |v| format!("{}/s", fmt_int(v))),
            self.audit_verify_vs_raw_verify().map_or_else(
                || "not measured yet (see below)".into(),
                |r| format!("{r:.2}x raw verify"),
            ),
            format!(">= {GOAL_AUDIT_VERIFY_VS_RAW_VERIFY:.2}x"),
            self.audit_verify_vs_raw_verify().map_or_else(
                || "n/a".into(),
                |r| met(r >= GOAL_AUDIT_VERIFY_VS_RAW_VERIFY).into(),
            ),
        ];
        if a.skipped.is_some() {
            return vec![
                [
                    "audit proofs p99 (gateway)".into(),
                    "skipped".into(),
                    "--nats-url (see below)".into(),
                    format!("< {GOAL_PROOF_P99_MS} ms"),
                    "n/a".into(),
                ],
                verify,
            ];
        }
        let rps = fmt_int(f64::from(AUDIT_PROOF_RPS));
        let events = fmt_int(a.events as f64);
        let p50_p99 = |l: &Latency| format!("{:.2}/{:.2} ms", l.p50(), l.p99());
        let vs_echo = |l: &Latency| {
            format!(
                "{:+.2}/{:+.2} ms vs echo",
                l.p50() - a.echo.p50(),
                l.p99() - a.echo.p99()
            )
        };
        let proof_met = |l: &Latency| met(l.meets(GOAL_PROOF_P99_MS)).to_string();
        vec![
            [
                format!("audit fill, raw publish ({events} msgs)"),
                format!("{}/s", fmt_int(a.fill_per_s)),
                format!("{:.2}x raw publish", a.fill_per_s / self.raw_publish_per_s),
                none(),
                none(),
            ],
            [
                format!("audit tree build ({events} events, fresh)"),
                format!("{}/s", fmt_int(a.tree_per_s)),
                format!("{:.2}x audit fill", a.tree_vs_fill()),
                none(),
                none(),
            ],
            [
                format!("NATS request/reply echo p50/p99 @ {rps} rps"),
                p50_p99(&a.echo),
                "baseline".into(),
                none(),
                none(),
            ],
            [
                format!("inclusion p50/p99 @ {rps} rps, NATS"),
                p50_p99(&a.inclusion_query),
                vs_echo(&a.inclusion_query),
                none(),
                none(),
            ],
            [
                format!("consistency p50/p99 @ {rps} rps, NATS"),
                p50_p99(&a.consistency_query),
                vs_echo(&a.consistency_query),
                none(),
                none(),
            ],
            [
                format!("inclusion p50/p99 @ {rps} rps, gateway"),
                p50_p99(&a.inclusion_gateway),
                vs_echo(&a.inclusion_gateway),
                format!("p99 < {GOAL_PROOF_P99_MS} ms"),
                proof_met(&a.inclusion_gateway),
            ],
            [
                format!("consistency p50/p99 @ {rps} rps, gateway"),
                p50_p99(&a.consistency_gateway),
                vs_echo(&a.consistency_gateway),
                format!("p99 < {GOAL_PROOF_P99_MS} ms"),
                proof_met(&a.consistency_gateway),
            ],
            [
                "raw publish of 1 msg, awaited, p50/p99".into(),
                p50_p99(&a.raw_publish_one),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!(
                    "checkpoint per {} events, p50/p99",
                    fmt_int(CHECKPOINT_EVERY as f64)
                ),
                p50_p99(&a.checkpoint),
                format!(
                    "{:.2}x raw publish of 1 msg",
                    a.checkpoint_vs_raw_publish_one()
                ),
                none(),
                none(),
            ],
            [
                format!(
                    "  raw publish of those {} msgs, p50",
                    fmt_int(CHECKPOINT_EVERY as f64)
                ),
                format!("{:.2} ms", a.raw_publish_1k.p50()),
                format!(
                    "checkpoint = {:.1}% of it",
                    100.0 * a.checkpoint_share_of_raw_1k()
                ),
                none(),
                none(),
            ],
            verify,
        ]
    }

    /// The jail phase's JSON fields (`null` figures when it was skipped).
    fn jail_json(&self) -> Vec<(String, serde_json::Value)> {
        let j = &self.jail;
        let b = &j.breakdown;
        let mut out: Vec<(String, serde_json::Value)> = [
            ("jail_skipped", json!(j.skipped)),
            ("jail_run_ms", json!(round(j.jail_run.median(), 2))),
            ("jail_run_p90_ms", json!(round(j.jail_run.p90(), 2))),
            ("docker_run_ms", json!(round(j.docker_run.median(), 2))),
            ("docker_run_p90_ms", json!(round(j.docker_run.p90(), 2))),
            (
                "jail_vs_docker_run",
                json!(round(j.jail_vs_docker_run(), 3)),
            ),
            ("jail_runs", json!(j.jail_run.len())),
            (
                "jail_request_to_started_ms",
                json!(round(b.to_started.median(), 2)),
            ),
            ("jail_container_ms", json!(round(b.container.median(), 2))),
            ("jail_after_exit_ms", json!(round(b.after_exit.median(), 2))),
            (
                "jail_finished_to_client_ms",
                json!(round(b.to_client.median(), 2)),
            ),
            ("jail_engine_version", json!(j.engine_version)),
            ("jail_image_id", json!(j.image_id)),
            (
                "goal_jail_vs_docker_run_max",
                json!(GOAL_JAIL_VS_DOCKER_RUN),
            ),
            (
                "goal_jail_vs_docker_run_met",
                // Not measured: neither met nor missed.
                match j.skipped {
                    Some(_) => serde_json::Value::Null,
                    None => json!(self.jail_met()),
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (name, _) in DIFF_SIZES {
            let found = j.diff.iter().find(|(n, _, _)| *n == name);
            let median = |s: Option<&Samples>| json!(round(s.map_or(f64::NAN, Samples::median), 2));
            out.push((
                format!("jail_diff_{name}_ms"),
                median(found.map(|(_, ms, _)| ms)),
            ));
            out.push((
                format!("jail_diff_{name}_after_exit_ms"),
                median(found.map(|(_, _, after)| after)),
            ));
        }
        out
    }

    /// The jail phase's table rows.
    fn jail_rows(&self) -> Vec<[String; 5]> {
        let j = &self.jail;
        if j.skipped.is_some() {
            return vec![[
                "jail run (busybox true)".into(),
                "skipped".into(),
                "no Docker Engine (see below)".into(),
                format!("<= {GOAL_JAIL_VS_DOCKER_RUN:.2}x"),
                "n/a".into(),
            ]];
        }
        let b = &j.breakdown;
        let mut rows = vec![
            [
                "docker run --rm busybox true, median/p90".into(),
                format!("{:.1}/{:.1} ms", j.docker_run.median(), j.docker_run.p90()),
                "1.00x (baseline)".into(),
                String::new(),
                String::new(),
            ],
            [
                "jail run busybox true (gateway), median/p90".into(),
                format!("{:.1}/{:.1} ms", j.jail_run.median(), j.jail_run.p90()),
                format!("{:.2}x docker run", j.jail_vs_docker_run()),
                format!("<= {GOAL_JAIL_VS_DOCKER_RUN:.2}x"),
                met(self.jail_met()).into(),
            ],
            [
                "  request->started/container/after exit/->client".into(),
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0} ms",
                    b.to_started.median(),
                    b.container.median(),
                    b.after_exit.median(),
                    b.to_client.median()
                ),
                String::new(),
                String::new(),
                String::new(),
            ],
        ];
        for (name, ms, after) in &j.diff {
            rows.push([
                format!("jail writing {name} (after exit), median"),
                format!("{:.1} ms ({:.1} ms)", ms.median(), after.median()),
                format!("{:.2}x docker run", ms.median() / j.docker_run.median()),
                String::new(),
                String::new(),
            ]);
        }
        rows
    }

    /// One JSON object with every figure, ratio and goal.
    pub fn to_json(&self) -> serde_json::Value {
        let sizes = &self.sizes;
        let fields = [
            ("raw_publish_per_s", json!(round(self.raw_publish_per_s, 1))),
            ("bus_append_per_s", json!(round(self.bus_append_per_s, 1))),
            (
                "gateway_append_per_s",
                json!(round(self.gateway_append_per_s, 1)),
            ),
            (
                "projection_apply_per_s",
                json!(round(self.projection_apply_per_s, 1)),
            ),
            ("raw_verify_per_s", json!(round(self.raw_verify_per_s, 1))),
            (
                "get_identity_p50_ms",
                json!(round(self.get_identity.p50(), 3)),
            ),
            (
                "identity_query_nats_p50_ms",
                json!(round(self.identity_query_nats.p50(), 3)),
            ),
            (
                "identity_query_nats_p99_ms",
                json!(round(self.identity_query_nats.p99(), 3)),
            ),
            (
                "get_identity_p99_ms",
                json!(round(self.get_identity.p99(), 3)),
            ),
            (
                "append_visible_p50_ms",
                json!(round(self.append_visible.p50(), 3)),
            ),
            (
                "append_visible_p99_ms",
                json!(round(self.append_visible.p99(), 3)),
            ),
            ("bus_vs_raw_publish", json!(round(self.bus_vs_raw(), 3))),
            (
                "gateway_vs_raw_publish",
                json!(round(self.gateway_append_per_s / self.raw_publish_per_s, 3)),
            ),
            (
                "gateway_vs_bus",
                json!(round(self.gateway_append_per_s / self.bus_append_per_s, 3)),
            ),
            (
                "projection_vs_raw_verify",
                json!(round(self.projection_vs_raw_verify(), 3)),
            ),
            (
                "bus_vs_raw_verify",
                json!(round(self.bus_vs_raw_verify(), 3)),
            ),
            ("raw_sign_per_s", json!(round(self.raw_sign_per_s, 1))),
            ("payload_bytes", json!(self.payload_bytes)),
            ("concurrency", json!(AGENTS)),
            ("publish_window", json!(PUBLISH_WINDOW)),
            ("raw_publish_messages", json!(sizes.raw_messages)),
            ("bus_append_events", json!(self.bus_events)),
            ("gateway_append_events", json!(self.gateway_events)),
            ("projection_events", json!(self.projection_events)),
            ("projection_seconds", json!(round(self.projection_secs, 3))),
            ("get_identity_target_rps", json!(GET_IDENTITY_RPS)),
            (
                "get_identity_achieved_rps",
                json!(round(self.get_identity.rate, 1)),
            ),
            ("get_identity_requests", json!(self.get_identity.sent)),
            ("get_identity_errors", json!(self.get_identity.errors)),
            (
                "get_identity_max_ms",
                json!(round(self.get_identity.max(), 3)),
            ),
            ("append_visible_target_rps", json!(APPEND_VISIBLE_RPS)),
            (
                "append_visible_achieved_rps",
                json!(round(self.append_visible.rate, 1)),
            ),
            ("append_visible_events", json!(self.append_visible.sent)),
            ("append_visible_errors", json!(self.append_visible.errors)),
            (
                "append_visible_max_ms",
                json!(round(self.append_visible.max(), 3)),
            ),
            (
                "llm_replay_overhead_p50_ms",
                json!(round(self.llm.replay_overhead_p50(), 3)),
            ),
            (
                "llm_replay_overhead_p99_ms",
                json!(round(self.llm.replay_overhead_p99(), 3)),
            ),
            (
                "llm_replay_stream_overhead_p50_ms",
                json!(round(self.llm.replay_stream_overhead_p50(), 3)),
            ),
            (
                "llm_replay_stream_overhead_p99_ms",
                json!(round(self.llm.replay_stream_overhead_p99(), 3)),
            ),
            (
                "llm_record_overhead_p50_ms",
                json!(round(self.llm.record_overhead_p50(), 3)),
            ),
            (
                "llm_record_overhead_p99_ms",
                json!(round(self.llm.record_overhead_p99(), 3)),
            ),
            (
                "llm_replay_per_s",
                json!(round(self.llm.replay_tput.per_s, 1)),
            ),
            (
                "llm_direct_per_s",
                json!(round(self.llm.direct_tput.per_s, 1)),
            ),
            (
                "llm_replay_vs_direct",
                json!(round(self.llm.replay_vs_direct(), 3)),
            ),
            ("llm_direct_p50_ms", json!(round(self.llm.direct.p50(), 3))),
            ("llm_direct_p99_ms", json!(round(self.llm.direct.p99(), 3))),
            (
                "llm_direct_stream_p50_ms",
                json!(round(self.llm.direct_stream.p50(), 3)),
            ),
            (
                "llm_direct_stream_p99_ms",
                json!(round(self.llm.direct_stream.p99(), 3)),
            ),
            ("llm_replay_p50_ms", json!(round(self.llm.replay.p50(), 3))),
            ("llm_replay_p99_ms", json!(round(self.llm.replay.p99(), 3))),
            (
                "llm_replay_stream_p50_ms",
                json!(round(self.llm.replay_stream.p50(), 3)),
            ),
            (
                "llm_replay_stream_p99_ms",
                json!(round(self.llm.replay_stream.p99(), 3)),
            ),
            ("llm_record_p50_ms", json!(round(self.llm.record.p50(), 3))),
            ("llm_record_p99_ms", json!(round(self.llm.record.p99(), 3))),
            ("llm_append_p50_ms", json!(round(self.llm.append.p50(), 3))),
            ("llm_append_p99_ms", json!(round(self.llm.append.p99(), 3))),
            ("llm_record_event_bytes", json!(self.llm.record_bytes)),
            ("llm_latency_target_rps", json!(LLM_RPS)),
            (
                "llm_latency_window_s",
                json!(sizes.llm_latency_for.as_secs_f64()),
            ),
            (
                "llm_throughput_window_s",
                json!(sizes.llm_throughput_for.as_secs_f64()),
            ),
            ("llm_concurrency", json!(LLM_CONCURRENCY)),
            ("llm_recordings", json!(self.llm.recordings)),
            (
                "llm_errors",
                json!(
                    self.llm.direct.errors
                        + self.llm.direct_stream.errors
                        + self.llm.record.errors
                        + self.llm.replay.errors
                        + self.llm.replay_stream.errors
                        + self.llm.replay_tput.errors as usize
                        + self.llm.direct_tput.errors as usize
                ),
            ),
            (
                "llm_replay_upstream_hits",
                json!(self.llm.replay_upstream_hits),
            ),
            ("latency_window_s", json!(sizes.latency_for.as_secs_f64())),
            ("nats_server_restarts", json!(self.nats_restarts)),
            (
                "cpus",
                json!(std::thread::available_parallelism()
                    .map(usize::from)
                    .unwrap_or(1)),
            ),
            (
                "goal_projection_vs_raw_verify_min",
                json!(GOAL_PROJECTION_VS_VERIFY),
            ),
            (
                "goal_projection_vs_raw_verify_met",
                json!(self.projection_vs_raw_verify() >= GOAL_PROJECTION_VS_VERIFY),
            ),
            ("goal_bus_vs_raw_verify_min", json!(GOAL_BUS_VS_VERIFY)),
            (
                "goal_bus_vs_raw_verify_met",
                json!(self.bus_vs_raw_verify() >= GOAL_BUS_VS_VERIFY),
            ),
            ("goal_bus_vs_raw_publish_min", json!(GOAL_BUS_VS_RAW)),
            (
                "goal_bus_vs_raw_publish_met",
                json!(self.bus_vs_raw() >= GOAL_BUS_VS_RAW),
            ),
            (
                "goal_get_identity_p99_ms_max",
                json!(GOAL_GET_IDENTITY_P99_MS),
            ),
            (
                "goal_get_identity_p99_met",
                json!(self.get_identity.meets(GOAL_GET_IDENTITY_P99_MS)),
            ),
            (
                "goal_append_visible_p99_ms_max",
                json!(GOAL_APPEND_VISIBLE_P99_MS),
            ),
            (
                "goal_append_visible_p99_met",
                json!(self.append_visible.meets(GOAL_APPEND_VISIBLE_P99_MS)),
            ),
            (
                "goal_llm_replay_overhead_p50_ms_max",
                json!(GOAL_LLM_REPLAY_OVERHEAD_P50_MS),
            ),
            (
                "goal_llm_replay_overhead_p50_met",
                json!(self.llm_replay_p50_met()),
            ),
            (
                "goal_llm_replay_overhead_p99_ms_max",
                json!(GOAL_LLM_REPLAY_OVERHEAD_P99_MS),
            ),
            (
                "goal_llm_replay_overhead_p99_met",
                json!(self.llm_replay_p99_met()),
            ),
            (
                "goal_llm_record_overhead_p50_ms_max",
                json!(GOAL_LLM_RECORD_OVERHEAD_P50_MS),
            ),
            (
                "goal_llm_record_overhead_p50_met",
                json!(self.llm_record_p50_met()),
            ),
        ];
        serde_json::Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(self.trust_json())
                .chain(self.audit_json())
                .chain(self.jail_json())
                .collect(),
        )
    }

    /// The human-readable table (and a footnote on the conditions).
    pub fn table(&self) -> String {
        let sizes = &self.sizes;
        let none = String::new;
        let get_rps = fmt_int(f64::from(GET_IDENTITY_RPS));
        let vis_rps = fmt_int(f64::from(APPEND_VISIBLE_RPS));
        let llm_rps = fmt_int(f64::from(LLM_RPS));
        let l = &self.llm;
        let mut rows: Vec<[String; 5]> = vec![
            [
                format!(
                    "raw publish ({} msgs, window {PUBLISH_WINDOW})",
                    fmt_int(sizes.raw_messages as f64)
                ),
                format!("{}/s", fmt_int(self.raw_publish_per_s)),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!(
                    "bus append ({} events, {AGENTS} agents)",
                    fmt_int(self.bus_events as f64)
                ),
                format!("{}/s", fmt_int(self.bus_append_per_s)),
                format!("{:.2}x raw publish", self.bus_vs_raw()),
                format!(">= {GOAL_BUS_VS_RAW:.2}x"),
                met(self.bus_vs_raw() >= GOAL_BUS_VS_RAW).into(),
            ],
            [
                format!(
                    "gateway append ({} events, {AGENTS} conc.)",
                    fmt_int(self.gateway_events as f64)
                ),
                format!("{}/s", fmt_int(self.gateway_append_per_s)),
                format!(
                    "{:.2}x raw publish",
                    self.gateway_append_per_s / self.raw_publish_per_s
                ),
                none(),
                none(),
            ],
            [
                "raw ed25519 verify_strict (1 core)".into(),
                format!("{}/s", fmt_int(self.raw_verify_per_s)),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!(
                    "projection apply ({} events, fresh)",
                    fmt_int(self.projection_events as f64)
                ),
                format!("{}/s", fmt_int(self.projection_apply_per_s)),
                format!("{:.2}x raw verify", self.projection_vs_raw_verify()),
                format!(">= {GOAL_PROJECTION_VS_VERIFY:.2}x"),
                met(self.projection_vs_raw_verify() >= GOAL_PROJECTION_VS_VERIFY).into(),
            ],
            [
                "bus append (above), vs raw verify".into(),
                format!("{}/s", fmt_int(self.bus_append_per_s)),
                format!("{:.2}x raw verify", self.bus_vs_raw_verify()),
                format!(">= {GOAL_BUS_VS_VERIFY:.2}x"),
                met(self.bus_vs_raw_verify() >= GOAL_BUS_VS_VERIFY).into(),
            ],
            [
                format!("get_identity p50 @ {get_rps} rps"),
                format!("{:.2} ms", self.get_identity.p50()),
                none(),
                none(),
                none(),
            ],
            [
                format!("get_identity p99 @ {get_rps} rps"),
                format!("{:.2} ms", self.get_identity.p99()),
                none(),
                format!("< {GOAL_GET_IDENTITY_P99_MS} ms"),
                met(self.get_identity.meets(GOAL_GET_IDENTITY_P99_MS)).into(),
            ],
            [
                "  same query over NATS only, p50/p99".to_string(),
                format!(
                    "{:.2}/{:.2} ms",
                    self.identity_query_nats.p50(),
                    self.identity_query_nats.p99()
                ),
                none(),
                none(),
                none(),
            ],
            [
                format!("append->visible p50 @ {vis_rps} ev/s"),
                format!("{:.2} ms", self.append_visible.p50()),
                none(),
                none(),
                none(),
            ],
            [
                format!("append->visible p99 @ {vis_rps} ev/s"),
                format!("{:.2} ms", self.append_visible.p99()),
                none(),
                format!("< {GOAL_APPEND_VISIBLE_P99_MS} ms"),
                met(self.append_visible.meets(GOAL_APPEND_VISIBLE_P99_MS)).into(),
            ],
            [
                format!("llm direct upstream p50/p99 @ {llm_rps} rps"),
                format!("{:.2}/{:.2} ms", l.direct.p50(), l.direct.p99()),
                "baseline".into(),
                none(),
                none(),
            ],
            [
                format!("llm replay p50 @ {llm_rps} rps"),
                format!("{:.2} ms", l.replay.p50()),
                format!("{:+.3} ms vs direct", l.replay_overhead_p50()),
                format!("< +{GOAL_LLM_REPLAY_OVERHEAD_P50_MS} ms"),
                met(self.llm_replay_p50_met()).into(),
            ],
            [
                format!("llm replay p99 @ {llm_rps} rps"),
                format!("{:.2} ms", l.replay.p99()),
                format!("{:+.3} ms vs direct", l.replay_overhead_p99()),
                format!("< +{GOAL_LLM_REPLAY_OVERHEAD_P99_MS} ms"),
                met(self.llm_replay_p99_met()).into(),
            ],
            [
                "llm direct SSE p50/p99 (read to end)".into(),
                format!(
                    "{:.2}/{:.2} ms",
                    l.direct_stream.p50(),
                    l.direct_stream.p99()
                ),
                "baseline".into(),
                none(),
                none(),
            ],
            [
                "llm replay SSE p50/p99".into(),
                format!(
                    "{:.2}/{:.2} ms",
                    l.replay_stream.p50(),
                    l.replay_stream.p99()
                ),
                format!(
                    "{:+.3}/{:+.3} ms vs direct",
                    l.replay_stream_overhead_p50(),
                    l.replay_stream_overhead_p99()
                ),
                none(),
                none(),
            ],
            [
                format!("llm record p50 @ {llm_rps} rps (durable)"),
                format!("{:.2} ms", l.record.p50()),
                format!("{:+.3} ms vs direct", l.record_overhead_p50()),
                format!("< +{GOAL_LLM_RECORD_OVERHEAD_P50_MS} ms"),
                met(self.llm_record_p50_met()).into(),
            ],
            [
                "llm record p99".into(),
                format!("{:.2} ms", l.record.p99()),
                format!("{:+.3} ms vs direct", l.record_overhead_p99()),
                none(),
                none(),
            ],
            [
                format!("  bus append alone, {} B events, p50/p99", l.record_bytes),
                format!("{:.2}/{:.2} ms", l.append.p50(), l.append.p99()),
                none(),
                none(),
                none(),
            ],
            [
                format!("llm direct upstream ({LLM_CONCURRENCY} in flight)"),
                format!("{}/s", fmt_int(l.direct_tput.per_s)),
                "1.00x (baseline)".into(),
                none(),
                none(),
            ],
            [
                format!("llm replay ({LLM_CONCURRENCY} in flight)"),
                format!("{}/s", fmt_int(l.replay_tput.per_s)),
                format!("{:.2}x direct", l.replay_vs_direct()),
                none(),
                none(),
            ],
        ];
        rows.extend(self.trust_rows());
        rows.extend(self.audit_rows());
        rows.extend(self.jail_rows());
        let header = ["measurement", "result", "ratio vs baseline", "goal", "met"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = format!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            );
            s.truncate(s.trim_end().len());
            s.push('\n');
            s
        };
        let mut out = line(header);
        out.push_str(&line(
            widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
        ));
        for row in &rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
        out.push_str(&format!(
            "\n{} bytes per signed event; {} cpus; appends measured before the identity role starts; latencies from each request's scheduled send time (open loop, {} s each): achieved {} and {} rps, {} and {} errors; nats-server restarts: {}\n",
            self.payload_bytes,
            std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            sizes.latency_for.as_secs_f64(),
            fmt_int(self.get_identity.rate),
            fmt_int(self.append_visible.rate),
            self.get_identity.errors,
            self.append_visible.errors,
            self.nats_restarts.map(|n| n.to_string()).unwrap_or_else(|| "n/a (--nats-url)".into()),
        ));
        out.push_str(&format!(
            "llm: one session against a fake OpenAI upstream started by the bench, same HTTP client (keep-alive, TCP_NODELAY) and bodies for direct and proxied calls; open loop {} s each, throughput {} s each; {} recordings; replay order any + repeats; errors: direct {}/{}, record {}, append {}, replay {}/{}, throughput {}/{}; upstream calls during replay: {}\n",
            sizes.llm_latency_for.as_secs_f64(),
            sizes.llm_throughput_for.as_secs_f64(),
            l.recordings,
            l.direct.errors,
            l.direct_stream.errors,
            l.record.errors,
            l.append.errors,
            l.replay.errors,
            l.replay_stream.errors,
            l.direct_tput.errors,
            l.replay_tput.errors,
            l.replay_upstream_hits,
        ));
        let a = &self.audit;
        match &a.skipped {
            Some(reason) => out.push_str(&format!("audit: {reason}\n")),
            None => out.push_str(&format!(
                "audit: AMAI_FAILURES filled by raw publish ({} B messages); the tree built by a fresh audit role (automatic checkpoints off); proofs against the checkpoint of {} events asked at its size, open loop {} s each, {} requests, {} errors, every answer ({}) verified against the bench's own tree; checkpoint: {} rounds of {} raw messages then request_checkpoint over NATS (one NATS hop included); first checkpoint of the whole stream {:.2} ms\n",
                self.payload_bytes,
                fmt_int(a.events as f64),
                sizes.latency_for.as_secs_f64(),
                a.inclusion_query.sent + a.consistency_query.sent + a.inclusion_gateway.sent + a.consistency_gateway.sent,
                a.inclusion_query.errors + a.consistency_query.errors + a.inclusion_gateway.errors + a.consistency_gateway.errors,
                fmt_int(a.proofs_verified as f64),
                a.checkpoint.sent,
                fmt_int(CHECKPOINT_EVERY as f64),
                a.checkpoint_at_n_ms,
            )),
        }
        if let Some(reason) = &a.verify_skipped {
            out.push_str(&format!("audit verify: {reason}\n"));
        }
        match &self.jail.skipped {
            Some(reason) => out.push_str(&format!("jail: skipped: {reason}\n")),
            None => out.push_str(&format!(
                "jail: Docker Engine {}, image {}; {} jail runs interleaved with as many `docker run --rm <image> true` (docker CLI, default network), after one warm-up each; a jail run is timed from create_jail(run) until wait_jail returns it finished; the split uses the jail events' JetStream publish times; {} runs per diff size (`head -c N /dev/zero > /workspace/f`)\n",
                self.jail.engine_version,
                self.jail.image_id,
                self.jail.jail_run.len(),
                self.jail.diff.first().map_or(0, |(_, ms, _)| ms.len()),
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_carries_both_verify_ratios_and_their_goals() {
        let report = Report {
            bus_append_per_s: 30.0,
            projection_apply_per_s: 40.0,
            raw_verify_per_s: 20.0,
            raw_publish_per_s: 100.0,
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["bus_vs_raw_verify"], 1.5);
        assert_eq!(json["projection_vs_raw_verify"], 2.0);
        assert_eq!(json["goal_bus_vs_raw_verify_min"], GOAL_BUS_VS_VERIFY);
        assert_eq!(json["goal_bus_vs_raw_verify_met"], true);
        assert_eq!(
            json["goal_projection_vs_raw_verify_min"],
            GOAL_PROJECTION_VS_VERIFY
        );
        assert_eq!(json["goal_projection_vs_raw_verify_met"], true);
        let table = report.table();
        assert!(table.contains("1.50x raw verify"), "{table}");
        assert!(table.contains("2.00x raw verify"), "{table}");
    }

    #[test]
    fn the_json_carries_the_trust_figures_and_their_goals() {
        let report = Report {
            projection_apply_per_s: 40.0,
            trust: TrustFigures {
                events: 100,
                secs: 2.0,
                events_per_s: 50.0,
                ..TrustFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["trust_events_per_s"], 50.0);
        assert_eq!(json["trust_vs_projection"], 1.25);
        assert_eq!(json["goal_trust_vs_projection_met"], true);
        assert!(json.get("get_trust_p99_ms").is_some());
        assert!(report.table().contains("1.25x projection apply"));
    }

    #[test]
    fn the_json_carries_the_llm_overheads_and_their_goals() {
        let json = Report::default().to_json();
        for key in [
            "llm_replay_overhead_p50_ms",
            "llm_replay_overhead_p99_ms",
            "llm_record_overhead_p50_ms",
            "llm_replay_per_s",
            "llm_replay_stream_overhead_p50_ms",
            "llm_replay_stream_overhead_p99_ms",
        ] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        assert_eq!(json["goal_llm_replay_overhead_p50_ms_max"], 0.5);
        assert_eq!(json["goal_llm_replay_overhead_p99_ms_max"], 2.0);
        assert_eq!(json["goal_llm_record_overhead_p50_ms_max"], 2.0);
        // Nothing measured: no goal is met.
        assert_eq!(json["goal_llm_replay_overhead_p50_met"], false);
        assert!(Report::default().table().contains("llm replay p50"));
    }

    #[test]
    fn the_audit_verify_rate_is_set_against_raw_verify_and_its_goal() {
        let report = Report {
            raw_verify_per_s: 10_000.0,
            audit: AuditFigures {
                verify_per_s: Some(16_000.0),
                verify_skipped: None,
                ..AuditFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["audit_verify_per_s"], 16_000.0);
        assert_eq!(json["audit_verify_vs_raw_verify"], 1.6);
        assert_eq!(json["goal_audit_verify_vs_raw_verify_met"], true);
        assert!(json["audit_verify_skipped"].is_null());
    }

    #[test]
    fn the_audit_verify_ratio_uses_the_raw_verify_measured_beside_it() {
        let report = Report {
            raw_verify_per_s: 10_000.0,
            audit: AuditFigures {
                verify_per_s: Some(16_000.0),
                verify_baseline_per_s: Some(8_000.0),
                verify_skipped: None,
                ..AuditFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["audit_verify_raw_baseline_per_s"], 8_000.0);
        assert_eq!(json["audit_verify_vs_raw_verify"], 2.0);
        // The run's own raw figure stays in the report as measured.
        assert_eq!(json["raw_verify_per_s"], 10_000.0);
    }

    #[test]
    fn the_json_carries_the_audit_figures_and_says_why_a_figure_is_missing() {
        let report = Report {
            raw_verify_per_s: 20.0,
            raw_publish_per_s: 100.0,
            audit: AuditFigures {
                events: 1_000,
                fill_per_s: 50.0,
                tree_per_s: 25.0,
                inclusion_gateway: Latency::from_ms(vec![1.0, 2.0, 4.0]),
                consistency_gateway: Latency::from_ms(vec![1.0, 6.0]),
                checkpoint: Latency::from_ms(vec![3.0]),
                raw_publish_one: Latency::from_ms(vec![0.5]),
                raw_publish_1k: Latency::from_ms(vec![10.0]),
                ..AuditFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["audit_events"], 1_000);
        assert_eq!(json["audit_fill_per_s"], 50.0);
        assert_eq!(json["audit_tree_per_s"], 25.0);
        assert_eq!(json["audit_tree_vs_fill"], 0.5);
        // The worse of the two gateway p99s.
        assert_eq!(json["proof_p99_ms"], 6.0);
        assert_eq!(json["inclusion_p99_ms"], 4.0);
        assert_eq!(json["consistency_p99_ms"], 6.0);
        assert!(json.get("nats_echo_p99_ms").is_some());
        assert_eq!(json["goal_proof_p99_ms_max"], 5.0);
        assert_eq!(json["goal_proof_p99_met"], false);
        assert_eq!(json["checkpoint_per_1k_ms"], 3.0);
        assert_eq!(json["checkpoint_vs_raw_publish_one"], 6.0);
        assert_eq!(json["checkpoint_share_of_raw_1k"], 0.3);
        // No audit verify figure: present, null, with the reason.
        assert!(json["audit_verify_per_s"].is_null());
        assert!(json["audit_verify_vs_raw_verify"].is_null());
        assert!(json["goal_audit_verify_vs_raw_verify_met"].is_null());
        assert_eq!(json["goal_audit_verify_vs_raw_verify_min"], 1.5);
        assert_eq!(
            json["audit_verify_skipped"].as_str(),
            Some(crate::audit::OFFLINE_VERIFY_PENDING)
        );
        let table = report.table();
        assert!(table.contains("6.00x raw publish of 1 msg"), "{table}");
        assert!(
            table.contains("audit verify, offline (amai-audit)"),
            "{table}"
        );
        assert!(table.contains("0.50x audit fill"), "{table}");
    }

    #[test]
    fn a_skipped_audit_phase_reports_nulls_and_no_goal() {
        let report = Report {
            audit: AuditFigures::skipped("skipped: --nats-url"),
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["audit_skipped"], "skipped: --nats-url");
        for key in [
            "proof_p99_ms",
            "audit_fill_per_s",
            "audit_tree_per_s",
            "checkpoint_per_1k_ms",
        ] {
            assert!(json[key].is_null(), "{key}: {}", json[key]);
        }
        assert!(json["goal_proof_p99_met"].is_null());
        assert!(report.table().contains("audit: skipped: --nats-url"));
    }

    #[test]
    fn a_skipped_jail_phase_says_why_in_the_json_and_the_table() {
        let report = Report {
            jail: JailFigures {
                skipped: Some("no Docker Engine answers on test".into()),
                ..JailFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert_eq!(json["jail_skipped"], "no Docker Engine answers on test");
        for key in [
            "jail_run_ms",
            "docker_run_ms",
            "jail_vs_docker_run",
            "jail_diff_0_ms",
            "jail_diff_1mib_ms",
            "jail_diff_16mib_ms",
        ] {
            assert!(json[key].is_null(), "{key}: {}", json[key]);
        }
        assert_eq!(json["goal_jail_vs_docker_run_max"], 1.5);
        assert!(json["goal_jail_vs_docker_run_met"].is_null());
        let table = report.table();
        assert!(
            table.contains("jail: skipped: no Docker Engine answers on test"),
            "{table}"
        );
    }

    #[test]
    fn a_measured_jail_phase_reports_the_ratio_of_the_medians() {
        let report = Report {
            jail: JailFigures {
                jail_run: Samples::from_ms(vec![300.0, 100.0, 200.0]),
                docker_run: Samples::from_ms(vec![150.0, 100.0, 50.0]),
                diff: vec![(
                    "1mib",
                    Samples::from_ms(vec![250.0]),
                    Samples::from_ms(vec![20.0]),
                )],
                ..JailFigures::default()
            },
            ..Report::default()
        };
        let json = report.to_json();
        assert!(json["jail_skipped"].is_null());
        assert_eq!(json["jail_run_ms"], 200.0);
        assert_eq!(json["docker_run_ms"], 100.0);
        assert_eq!(json["jail_vs_docker_run"], 2.0);
        assert_eq!(json["goal_jail_vs_docker_run_met"], false);
        assert_eq!(json["jail_diff_1mib_ms"], 250.0);
        assert_eq!(json["jail_diff_1mib_after_exit_ms"], 20.0);
        assert!(json["jail_diff_16mib_ms"].is_null());
        assert!(report.table().contains("2.00x docker run"));
    }
}
