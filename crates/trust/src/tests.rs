//! Behaviour tests of the model as a whole: scoring, decay, endorsement
//! dampening, the anomaly detectors, determinism, bounds, the report and the
//! worked example of `docs/trust-model.md`.

use crate::model::{MAX_ACTION_TYPES, MAX_PEERS, OTHER_ACTION_TYPE};
use crate::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn obs(id: &str, at_ms: i64, kind: ObservationKind) -> Observation {
    Observation {
        event_id: id.to_owned(),
        at_ms,
        kind,
        cites: Vec::new(),
    }
}

fn evidence(id: &str, at_ms: i64, signal: Signal) -> Observation {
    obs(id, at_ms, ObservationKind::Evidence(signal))
}

fn action(id: &str, at_ms: i64, action_type: &str, peers: &[&str]) -> Observation {
    obs(
        id,
        at_ms,
        ObservationKind::Action {
            action_type: action_type.to_owned(),
            peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        },
    )
}

fn endorsed(id: &str, at_ms: i64, endorser: &str, credibility_milli: Milli) -> Observation {
    obs(
        id,
        at_ms,
        ObservationKind::Endorsed {
            endorser: endorser.to_owned(),
            credibility_milli,
        },
    )
}

fn only_adjustment(outputs: Vec<Output>) -> Adjustment {
    match <[Output; 1]>::try_from(outputs) {
        Ok([Output::Adjusted(a)]) => a,
        other => panic!("expected one adjustment, got {other:?}"),
    }
}

fn alerts_of(outputs: &[Output]) -> Vec<&Alert> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a),
            Output::Adjusted(_) => None,
        })
        .collect()
}

#[test]
fn a_well_behaved_agent_rises() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("good", T0);
    let mut previous = model.score_milli(&cfg, T0);
    assert_eq!(previous, 60_000);
    for i in 0..10 {
        let at = T0 + (i + 1) * HOUR;
        // The score before, decayed to the new event time.
        let before = model.score_milli(&cfg, at);
        assert!(before <= previous);
        let a = only_adjustment(
            model.observe(&cfg, &evidence(&format!("run-{i}"), at, Signal::JailClean)),
        );
        assert_eq!(a.signal, "jail_clean");
        assert_eq!((a.positive_milli, a.negative_milli), (1_000, 0));
        assert_eq!(a.reason, "jail run finished clean: +1.000 evidence");
        assert_eq!(a.score_before_milli, before);
        assert!(a.score_after_milli > previous, "step {i}");
        assert_eq!(a.event_time_ms, at);
        assert_eq!(model.score_milli(&cfg, at), a.score_after_milli);
        previous = a.score_after_milli;
    }
    assert!(previous > 79_000, "{previous}");
    assert_eq!(model.fingerprint(&cfg).jail_runs, 10);
}

#[test]
fn each_negative_signal_lowers_the_score_with_its_name_and_reason() {
    let cfg = TrustConfig::default();
    let cases: Vec<(Signal, &str, Milli, &str)> = vec![
        (
            Signal::JailPolicyViolation { violations: 1 },
            "jail_policy_violation",
            3_000,
            "jail run violated its diff policy (1 violation): -3.000 evidence",
        ),
        (
            Signal::JailPolicyViolation { violations: 2 },
            "jail_policy_violation",
            4_000,
            "jail run violated its diff policy (2 violations): -4.000 evidence",
        ),
        (
            Signal::JailPolicyViolation { violations: 40 },
            "jail_policy_violation",
            6_000,
            "jail run violated its diff policy (40 violations): -6.000 evidence",
        ),
        (
            Signal::JailNetworkDenied { attempts: 7 },
            "jail_network_denied",
            2_000,
            "jail run tried to reach the network and was denied (7 attempts, weighed once per run): -2.000 evidence",
        ),
        (
            Signal::JailLimitHit { limit: LimitKind::Memory },
            "jail_limit_hit",
            1_000,
            "jail run hit its memory limit: -1.000 evidence",
        ),
        (
            Signal::JailLimitHit { limit: LimitKind::Timeout },
            "jail_limit_hit",
            1_000,
            "jail run hit its time limit: -1.000 evidence",
        ),
        (
            Signal::JailLimitHit { limit: LimitKind::Output },
            "jail_limit_hit",
            1_000,
            "jail run hit its output limit: -1.000 evidence",
        ),
        (
            Signal::JailNotReproducible,
            "jail_not_reproducible",
            2_000,
            "jail run could not be reproduced (a rerun from the same inputs differed): -2.000 evidence",
        ),
        (
            Signal::LlmReplayMiss,
            "llm_replay_miss",
            1_000,
            "LLM call missed on replay (no recorded answer matched the request): -1.000 evidence",
        ),
        (
            Signal::LlmTruncated,
            "llm_truncated",
            500,
            "LLM response was truncated: -0.500 evidence",
        ),
        (Signal::Crash, "crash", 1_000, "agent crashed: -1.000 evidence"),
    ];
    for (signal, name, weight, reason) in cases {
        assert_eq!(signal.name(), name);
        let mut model = AgentModel::new("a", T0);
        let mut o = evidence("ev", T0 + MINUTE, signal.clone());
        o.cites = vec!["run".to_owned(), "spec".to_owned()];
        let a = only_adjustment(model.observe(&cfg, &o));
        assert_eq!(a.signal, name, "{signal:?}");
        assert_eq!(
            (a.positive_milli, a.negative_milli),
            (0, weight),
            "{signal:?}"
        );
        assert_eq!(a.reason, reason);
        assert_eq!(a.evidence, ["ev", "run", "spec"]);
        assert_eq!(a.score_before_milli, 60_000);
        assert!(a.score_after_milli < 60_000, "{signal:?}");
        // 100_000 · 6 / (10 + w): the exact beta score.
        let expected = (600_000_000 + (10_000 + weight) / 2) / (10_000 + weight);
        assert_eq!(a.score_after_milli, expected, "{signal:?}");
    }
}

#[test]
fn decay_returns_toward_the_baseline_and_never_crosses_it() {
    let cfg = TrustConfig::default();
    let mut good = AgentModel::new("good", T0);
    let mut bad = AgentModel::new("bad", T0);
    for i in 0..5 {
        good.observe(&cfg, &evidence(&format!("g{i}"), T0, Signal::JailClean));
        bad.observe(&cfg, &evidence(&format!("b{i}"), T0, Signal::Crash));
    }
    // 5 clean runs: (6 + 5) / 15; after one half-life P = 2.5: 8.5 / 12.5.
    assert_eq!(good.score_milli(&cfg, T0), 73_333);
    assert_eq!(good.score_milli(&cfg, T0 + 7 * DAY), 68_000);
    assert_eq!(bad.score_milli(&cfg, T0), 40_000);
    assert_eq!(bad.score_milli(&cfg, T0 + 7 * DAY), 48_000);
    let (mut last_good, mut last_bad) = (good.score_milli(&cfg, T0), bad.score_milli(&cfg, T0));
    for day in 1..=400 {
        let at = T0 + day * DAY;
        // Move the clock too, so the stored sums are decayed step by step.
        let contact = obs(
            &format!("c{day}"),
            at,
            ObservationKind::Contacted { by: "x".into() },
        );
        good.observe(&cfg, &contact);
        bad.observe(&cfg, &contact);
        let (g, b) = (good.score_milli(&cfg, at), bad.score_milli(&cfg, at));
        assert!((60_000..=last_good).contains(&g), "day {day}: {g}");
        assert!((last_bad..=60_000).contains(&b), "day {day}: {b}");
        (last_good, last_bad) = (g, b);
    }
    assert_eq!(last_good, 60_000);
    assert_eq!(last_bad, 60_000);
    // Reading the score at a later time does not change the model.
    let before = good.clone();
    assert_eq!(good.score_milli(&cfg, T0 + 10_000 * DAY), 60_000);
    assert_eq!(good, before);
}

#[test]
fn an_endorsement_ring_of_fresh_agents_stays_at_the_baseline() {
    let cfg = TrustConfig::default();
    let ids: Vec<String> = (0..5).map(|i| format!("sybil-{i}")).collect();
    let mut models: Vec<AgentModel> = ids.iter().map(|id| AgentModel::new(id, T0)).collect();
    let mut at = T0;
    for round in 0..3 {
        for endorser in 0..ids.len() {
            for endorsee in 0..ids.len() {
                if endorser == endorsee {
                    continue;
                }
                at += 1_000;
                let credibility = models[endorser].endorsing_credibility_milli(&cfg, at);
                assert_eq!(credibility, 0);
                let outputs = models[endorsee].observe(
                    &cfg,
                    &endorsed(
                        &format!("e{round}-{endorser}-{endorsee}"),
                        at,
                        &ids[endorser],
                        credibility,
                    ),
                );
                if round == 0 {
                    let a = only_adjustment(outputs);
                    assert_eq!(a.signal, "endorsed");
                    assert_eq!(a.positive_milli, 0);
                    assert_eq!(a.score_after_milli, 60_000);
                    assert!(a.reason.contains("dampened"), "{}", a.reason);
                    assert!(
                        a.reason.contains("at or below the baseline"),
                        "{}",
                        a.reason
                    );
                } else {
                    assert!(outputs.is_empty(), "a repeat endorsement counted again");
                }
            }
        }
    }
    for model in &models {
        assert_eq!(model.score_milli(&cfg, at), 60_000);
        assert_eq!(model.fingerprint(&cfg).endorsements_received, 4);
    }
    // An operator (pre-trusted, credibility 1000) does raise the score.
    let a = only_adjustment(models[0].observe(&cfg, &endorsed("op", at, "operator", 1_000)));
    assert_eq!(a.positive_milli, 2_000);
    assert_eq!(a.score_after_milli, 66_667);
    assert_eq!(
        a.reason,
        "endorsed by operator with credibility 1.000: +2.000 evidence"
    );
    // But it gives sybil-0 no credibility to pass on: that comes from
    // behaviour only.
    assert_eq!(models[0].behaviour_score_milli(&cfg, at), 60_000);
    assert_eq!(models[0].endorsing_credibility_milli(&cfg, at), 0);
}

#[test]
fn credibility_comes_from_behaviour_above_the_baseline() {
    let cfg = TrustConfig::default();
    let mut endorser = AgentModel::new("veteran", T0);
    for i in 0..10 {
        endorser.observe(&cfg, &evidence(&format!("r{i}"), T0, Signal::JailClean));
    }
    // (6 + 10) / 20 = 80.0: halfway from the baseline to 100.
    assert_eq!(endorser.behaviour_score_milli(&cfg, T0), 80_000);
    let credibility = endorser.endorsing_credibility_milli(&cfg, T0);
    assert_eq!(credibility, 500);
    let mut endorsee = AgentModel::new("newcomer", T0);
    let a = only_adjustment(endorsee.observe(&cfg, &endorsed("e", T0, "veteran", credibility)));
    assert_eq!(a.positive_milli, 1_000);
    assert_eq!(
        a.reason,
        "endorsed by veteran with credibility 0.500: +1.000 evidence"
    );
    assert!(endorsee.has_endorsement_from("veteran"));
    assert!(!endorsee.has_endorsement_from("someone"));
    // A misbehaving agent has no credibility at all.
    let mut bad = AgentModel::new("bad", T0);
    bad.observe(&cfg, &evidence("c", T0, Signal::Crash));
    assert_eq!(bad.endorsing_credibility_milli(&cfg, T0), 0);
}

#[test]
fn a_repeat_endorsement_is_ignored() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", T0);
    let first = model.observe(&cfg, &endorsed("e1", T0 + 1, "operator", 1_000));
    assert_eq!(first.len(), 1);
    let score = model.score_milli(&cfg, T0 + 2);
    assert!(model
        .observe(&cfg, &endorsed("e2", T0 + 2, "operator", 1_000))
        .is_empty());
    assert_eq!(model.score_milli(&cfg, T0 + 2), score);
    assert_eq!(model.fingerprint(&cfg).endorsements_received, 1);
    // Self-endorsement never counts either.
    assert!(model
        .observe(&cfg, &endorsed("e3", T0 + 3, "a", 1_000))
        .is_empty());
}

#[test]
fn a_burst_after_a_steady_history_raises_rate_spike_with_its_window() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", T0);
    let start = T0 - T0 % MINUTE;
    // Ten steady minutes of five actions: nothing to report.
    for bucket in 0..10 {
        for i in 0..5 {
            let at = start + bucket * MINUTE + i * 1_000;
            let out = model.observe(
                &cfg,
                &action(&format!("s{bucket}-{i}"), at, "agent.message_sent", &[]),
            );
            assert!(out.is_empty(), "steady part raised {out:?}");
        }
    }
    // Then 30 actions in one minute.
    let spike = start + 10 * MINUTE;
    let mut raised = Vec::new();
    for i in 0..30 {
        let out = model.observe(
            &cfg,
            &action(&format!("x{i}"), spike + i * 100, "agent.message_sent", &[]),
        );
        if !out.is_empty() {
            raised.push((i, out));
        }
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    let (i, out) = &raised[0];
    assert_eq!(*i, 19, "raised at the 20th action (min_burst_count)");
    let [Output::Alert(alert), Output::Adjusted(adjustment)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(alert.kind, AlertKind::RateSpike);
    assert_eq!(alert.kind.as_str(), "rate_spike");
    // Median 5, MAD 0 floored to 1: z = 15 / 1.4826 = 10.117.
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.statistic_milli, 10_117);
    assert_eq!(alert.threshold_milli, 7_000);
    assert_eq!(
        alert.window,
        Window {
            from_ms: spike,
            to_ms: spike + 1_900,
            first_event: "x0".into(),
            last_event: "x19".into(),
            count: 20,
        }
    );
    let ids: Vec<String> = (0..20).map(|i| format!("x{i}")).collect();
    assert_eq!(alert.evidence, ids);
    assert_eq!(adjustment.signal, "burst");
    assert_eq!(adjustment.negative_milli, 4_000, "critical weighs twice");
    assert_eq!(adjustment.evidence, ids);
    assert!(adjustment.score_after_milli < adjustment.score_before_milli);
    assert!(
        adjustment
            .reason
            .starts_with("action burst (critical rate_spike)"),
        "{}",
        adjustment.reason
    );
    let fp = model.fingerprint(&cfg);
    assert_eq!(fp.alerts.get("rate_spike"), Some(&1));
    assert_eq!(fp.current_bucket_count, 30);
    assert_eq!(fp.rate_median_milli, 5_000);
    assert_eq!(fp.actions, 80);
}

#[test]
fn rate_spike_warns_then_upgrades_once_to_critical() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    for bucket in 0..10_i64 {
        let n = if bucket % 2 == 0 { 2 } else { 12 };
        for i in 0..n {
            let out = model.observe(
                &cfg,
                &action(&format!("s{bucket}-{i}"), bucket * MINUTE + i, "t", &[]),
            );
            assert!(out.is_empty());
        }
    }
    // Median 7, MAD 5: warning from 33 actions (z 3.507), critical from 59.
    let mut raised = Vec::new();
    for i in 0..80 {
        let out = model.observe(&cfg, &action(&format!("x{i}"), 10 * MINUTE + i, "t", &[]));
        if !out.is_empty() {
            raised.push((i + 1, out));
        }
    }
    assert_eq!(raised.len(), 2, "{raised:?}");
    let (count, out) = &raised[0];
    assert_eq!(*count, 33);
    let alert = alerts_of(out)[0];
    assert_eq!(
        (alert.severity, alert.statistic_milli, alert.threshold_milli),
        (Severity::Warning, 3_507, 3_500)
    );
    let Output::Adjusted(a) = &out[1] else {
        panic!()
    };
    assert_eq!(a.negative_milli, 2_000);
    let (count, out) = &raised[1];
    assert_eq!(*count, 59);
    let alert = alerts_of(out)[0];
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.window.count, 59);
    assert_eq!(alert.evidence.len(), 59);
    assert!(
        alert.reason.contains("upgraded from warning"),
        "{}",
        alert.reason
    );
    let Output::Adjusted(a) = &out[1] else {
        panic!()
    };
    assert_eq!(a.negative_milli, 2_000, "the upgrade adds the second half");
    assert_eq!(model.fingerprint(&cfg).alerts.get("rate_spike"), Some(&2));
}

#[test]
fn window_evidence_is_capped_at_64_ids() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    for bucket in 0..5_i64 {
        model.observe(
            &cfg,
            &action(&format!("s{bucket}"), bucket * MINUTE, "t", &[]),
        );
    }
    let cfg_late = TrustConfig::builder().min_burst_count(100).build();
    let mut last = Vec::new();
    for i in 0..100 {
        last = model.observe(
            &cfg_late,
            &action(&format!("x{i}"), 5 * MINUTE + i, "t", &[]),
        );
    }
    let alert = alerts_of(&last)[0];
    assert_eq!(alert.window.count, 100);
    assert_eq!(alert.window.last_event, "x99");
    assert_eq!(alert.evidence.len(), 64);
    assert_eq!(alert.evidence[63], "x63");
}

#[test]
fn a_change_of_action_mix_raises_mix_shift_without_a_score_effect() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    let mut n = 0_i64;
    let mut next = |model: &mut AgentModel, action_type: &str| {
        n += 1;
        // One action per minute: never a burst.
        model.observe(
            &cfg,
            &action(&format!("a{n}"), n * MINUTE, action_type, &[]),
        )
    };
    for i in 0..200 {
        let t = if i % 2 == 0 {
            "agent.message_sent"
        } else {
            "llm.called"
        };
        assert!(next(&mut model, t).is_empty(), "habitual mix raised at {i}");
    }
    let score = model.score_milli(&cfg, 0);
    let mut raised = Vec::new();
    for k in 1..=120 {
        let out = next(&mut model, "jail.run");
        if !out.is_empty() {
            raised.push((k, out));
        }
    }
    assert_eq!(raised.len(), 2, "{raised:?}");
    let (k, out) = &raised[0];
    assert_eq!(*k, 25, "half the window changed");
    assert_eq!(out.len(), 1, "no score effect: {out:?}");
    let alert = alerts_of(out)[0];
    assert_eq!(alert.kind, AlertKind::MixShift);
    assert_eq!(alert.severity, Severity::Warning);
    assert_eq!((alert.statistic_milli, alert.threshold_milli), (500, 500));
    assert_eq!(alert.window.count, 50);
    assert_eq!(alert.window.first_event, "a176");
    assert_eq!(alert.window.last_event, "a225");
    assert_eq!(
        (alert.window.from_ms, alert.window.to_ms),
        (176 * MINUTE, 225 * MINUTE)
    );
    assert_eq!(alert.evidence.len(), 50);
    assert!(
        alert.reason.contains("mostly jail.run, 25 of 50"),
        "{}",
        alert.reason
    );
    // Quiet for a full window, then the whole window is new: critical.
    let (k, out) = &raised[1];
    assert_eq!(*k, 75);
    let alert = alerts_of(out)[0];
    assert_eq!(alert.severity, Severity::Critical);
    // Window: 50 of 50 jail.run; baseline: 25 of 225. TVD = 200/225.
    assert_eq!(alert.statistic_milli, 888);
    assert_eq!(model.score_milli(&cfg, 0), score);
    assert_eq!(model.fingerprint(&cfg).alerts.get("mix_shift"), Some(&2));
}

#[test]
fn fanning_out_to_new_peers_raises_new_peers() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    let mut raised = Vec::new();
    for i in 0..70_i64 {
        let peer = format!("peer-{i}");
        let out = model.observe(
            &cfg,
            &action(&format!("m{i}"), 1_000 * i, "agent.message_sent", &[&peer]),
        );
        if !out.is_empty() {
            raised.push((i + 1, out));
        }
    }
    assert_eq!(raised.len(), 2, "{raised:?}");
    let (count, out) = &raised[0];
    assert_eq!(*count, 10);
    let [Output::Alert(alert), Output::Adjusted(a)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(alert.kind, AlertKind::NewPeers);
    assert_eq!(alert.severity, Severity::Warning);
    assert_eq!(
        (alert.statistic_milli, alert.threshold_milli),
        (10_000, 10_000)
    );
    assert_eq!(
        alert.window,
        Window {
            from_ms: 0,
            to_ms: 9_000,
            first_event: "m0".into(),
            last_event: "m9".into(),
            count: 10
        }
    );
    let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(alert.evidence, ids);
    assert_eq!((a.signal.as_str(), a.negative_milli), ("fan_out", 1_000));
    assert_eq!(a.evidence, ids);
    let (count, out) = &raised[1];
    assert_eq!(*count, 50);
    let [Output::Alert(alert), Output::Adjusted(a)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.window.count, 50);
    assert_eq!(a.negative_milli, 1_000, "the upgrade adds the second half");
    // Quiet until the window has passed, then it raises again.
    let later = 20 * MINUTE;
    let mut again = Vec::new();
    for i in 0..10_i64 {
        let peer = format!("later-{i}");
        again.extend(model.observe(
            &cfg,
            &action(&format!("l{i}"), later + i, "agent.message_sent", &[&peer]),
        ));
    }
    let alerts = alerts_of(&again);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].window.first_event, "l0");
    assert_eq!(model.fingerprint(&cfg).peer_count, 80);
}

#[test]
fn answering_peers_that_wrote_first_is_not_fan_out() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    for i in 0..30_i64 {
        let out = model.observe(
            &cfg,
            &obs(
                &format!("c{i}"),
                i,
                ObservationKind::Contacted {
                    by: format!("p{i}"),
                },
            ),
        );
        assert!(out.is_empty());
    }
    for i in 0..30_i64 {
        let peer = format!("p{i}");
        let out = model.observe(
            &cfg,
            &action(
                &format!("r{i}"),
                100 + i,
                "agent.message_sent",
                &[&peer, &peer, "a"],
            ),
        );
        assert!(out.is_empty(), "{out:?}");
    }
    let fp = model.fingerprint(&cfg);
    assert_eq!(fp.peer_count, 30);
    assert_eq!(fp.top_peers.len(), 20);
    assert_eq!(
        fp.top_peers[0],
        PeerStat {
            peer: "p0".into(),
            interactions: 2,
            first_ms: 0
        }
    );
    assert_eq!(fp.top_peers[1].peer, "p1");
    assert!(fp.alerts.is_empty());
}

#[test]
fn endorsement_actions_count_as_given_and_address_the_endorsee() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    model.observe(&cfg, &action("e1", 1, "agent.endorsed", &["b"]));
    model.observe(&cfg, &action("e2", 2, "agent.endorsed", &["b"]));
    let fp = model.fingerprint(&cfg);
    assert_eq!(fp.endorsements_given, 2);
    assert_eq!(fp.top_peers[0].interactions, 2);
    assert_eq!(fp.action_counts.get("agent.endorsed"), Some(&2));
}

/// A pseudo-random but fixed mix of every kind of observation.
fn scripted_observations(n: u64) -> Vec<Observation> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut at = T0;
    (0..n)
        .map(|i| {
            let r = next();
            at += i64::try_from(r % 5_000).unwrap_or(0);
            // Now and then an event from the past.
            let when = if r % 17 == 0 { at - 90_000 } else { at };
            let id = format!("ev-{i}");
            let kind = match r % 20 {
                0 => ObservationKind::Evidence(Signal::JailClean),
                1 => ObservationKind::Evidence(Signal::JailPolicyViolation {
                    violations: (r % 4) as u32,
                }),
                2 => ObservationKind::Evidence(Signal::LlmReplayMiss),
                3 => ObservationKind::Endorsed {
                    endorser: format!("e{}", r % 7),
                    credibility_milli: (r % 1_001) as i64,
                },
                4 => ObservationKind::Contacted {
                    by: format!("p{}", r % 40),
                },
                _ => ObservationKind::Action {
                    action_type: ["agent.message_sent", "llm.called", "jail.run"][(r % 3) as usize]
                        .to_owned(),
                    peers: vec![format!("p{}", r % 97)],
                },
            };
            Observation {
                event_id: id,
                at_ms: when,
                kind,
                cites: vec![],
            }
        })
        .collect()
}

#[test]
fn the_same_observations_give_identical_outputs_and_models() {
    let cfg = TrustConfig::default();
    let script = scripted_observations(3_000);
    let run = || {
        let mut model = AgentModel::new("a", T0);
        let outputs: Vec<Output> = script.iter().flat_map(|o| model.observe(&cfg, o)).collect();
        (outputs, serde_json::to_string(&model).expect("serialize"))
    };
    let (outputs_a, model_a) = run();
    let (outputs_b, model_b) = run();
    assert_eq!(outputs_a, outputs_b);
    assert_eq!(model_a, model_b);
    assert!(
        !alerts_of(&outputs_a).is_empty(),
        "the script should exercise the detectors"
    );

    // Serializing and deserializing midway changes nothing.
    let mut model = AgentModel::new("a", T0);
    let (first, second) = script.split_at(1_234);
    let mut outputs: Vec<Output> = first.iter().flat_map(|o| model.observe(&cfg, o)).collect();
    let json = serde_json::to_string(&model).expect("serialize");
    let mut restored: AgentModel = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, model);
    outputs.extend(second.iter().flat_map(|o| restored.observe(&cfg, o)));
    assert_eq!(outputs, outputs_a);
    assert_eq!(
        serde_json::to_string(&restored).expect("serialize"),
        model_a
    );
}

#[test]
fn the_model_stays_bounded_under_100k_actions_to_distinct_peers() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("flood", 0);
    let mut size_at_10k = 0;
    for i in 0..100_000_i64 {
        let peer = format!("peer-{i:06}");
        let action_type = format!("type-{}", i % 1_000);
        model.observe(
            &cfg,
            &action(&format!("ev-{i:06}"), i * 10, &action_type, &[&peer]),
        );
        if i == 9_999 {
            size_at_10k = serde_json::to_string(&model).expect("serialize").len();
        }
    }
    let size = serde_json::to_string(&model).expect("serialize").len();
    // Only the digits of counters and times grow.
    assert!(
        size <= size_at_10k + size_at_10k / 50,
        "grew from {size_at_10k} to {size}"
    );
    assert!(size < 2_000_000, "{size}");
    let fp = model.fingerprint(&cfg);
    assert_eq!(fp.actions, 100_000);
    assert_eq!(fp.peer_count, 100_000);
    assert_eq!(fp.top_peers.len(), 20);
    assert_eq!(fp.action_counts.len(), MAX_ACTION_TYPES + 1);
    assert!(fp.action_counts.contains_key(OTHER_ACTION_TYPE));
    let listed: u64 = fp.action_counts.values().sum();
    assert_eq!(listed, 100_000);
    // Only the first MAX_PEERS peers are remembered by name.
    let json = serde_json::to_string(&model).expect("serialize");
    assert_eq!(json.matches("\"peer-").count(), MAX_PEERS);
}

#[test]
fn earlier_event_times_do_not_move_the_clock_back() {
    let cfg = TrustConfig::builder().half_life_ms(1_000).build();
    let mut model = AgentModel::new("a", 0);
    model.observe(
        &cfg,
        &obs("c", 10_000, ObservationKind::Contacted { by: "p".into() }),
    );
    assert_eq!(model.clock_ms(), 10_000);
    let a = only_adjustment(model.observe(&cfg, &evidence("late", 9_000, Signal::JailClean)));
    assert_eq!(model.clock_ms(), 10_000);
    assert_eq!(a.event_time_ms, 10_000);
    assert_eq!(a.positive_milli, 1_000);
    // One half-life old on arrival: it counts half. (6 + 0.5) / 10.5.
    assert_eq!(a.score_after_milli, 61_905);
    model.observe(&cfg, &action("old", 1, "t", &[]));
    assert_eq!(model.clock_ms(), 10_000);
    // Reading at an earlier time reads at the clock.
    assert_eq!(model.score_milli(&cfg, 0), 61_905);
}

#[test]
fn components_explain_the_score() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", T0);
    model.observe(&cfg, &evidence("1", T0, Signal::JailClean));
    model.observe(&cfg, &evidence("2", T0, Signal::Crash));
    model.observe(&cfg, &endorsed("3", T0, "operator", 1_000));
    let c = model.components(&cfg, T0);
    assert_eq!(
        (c.prior_positive_milli, c.prior_negative_milli),
        (6_000, 4_000)
    );
    assert_eq!((c.positive_milli, c.negative_milli), (3_000, 1_000));
    let names: Vec<&str> = c.signals.iter().map(|s| s.signal.as_str()).collect();
    assert_eq!(names, ["crash", "endorsed", "jail_clean"]);
    assert_eq!(
        model.score_milli(&cfg, T0),
        score_from_evidence(&cfg, c.positive_milli, c.negative_milli)
    );
    // One half-life later every component has halved.
    let c = model.components(&cfg, T0 + 7 * DAY);
    assert_eq!((c.positive_milli, c.negative_milli), (1_500, 500));
    assert_eq!(
        c.signals[2],
        SignalComponent {
            signal: "jail_clean".into(),
            positive_milli: 500,
            negative_milli: 0,
            count: 1
        }
    );
}

#[test]
fn the_report_has_every_section_and_the_documented_recommendation() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("agent-7", T0);
    let mut recent = Vec::new();
    for i in 0..3 {
        recent.push(only_adjustment(model.observe(
            &cfg,
            &evidence(&format!("r{i}"), T0 + i, Signal::JailClean),
        )));
    }
    model.observe(
        &cfg,
        &action("m", T0 + 10, "agent.message_sent", &["peer|x"]),
    );
    let input = ReportInput {
        agent_id: "agent-7",
        name: Some("builder"),
        model: &model,
        cfg: &cfg,
        at_ms: T0,
        recent: &recent,
        alerts: &[],
    };
    let report = render_report(&input);
    assert_eq!(report, render_report(&input), "deterministic");
    let mut at = 0;
    for section in [
        "## Score",
        "## Fingerprint",
        "## Consistency",
        "## Interactions",
        "## Anomalies",
        "## Recommendation",
    ] {
        let found = report[at..].find(section).map(|i| i + at);
        assert!(
            found.is_some(),
            "{section} missing or out of order:\n{report}"
        );
        at = found.unwrap_or(0);
    }
    assert!(report.starts_with("# Trust report: builder\n"));
    assert!(
        report.contains("**69.231** of 100.000 (baseline 60.0)."),
        "{report}"
    );
    assert!(report.contains("- clean runs: 3\n"));
    assert!(report.contains("| peer\\|x | 1 |"), "{report}");
    assert!(report.contains("**supervise**."), "{report}");

    assert_eq!(recommend(75_000, &[]), Recommendation::Trusted);
    assert_eq!(recommend(74_999, &[]), Recommendation::Supervise);
    assert_eq!(recommend(45_000, &[]), Recommendation::Supervise);
    assert_eq!(recommend(44_999, &[]), Recommendation::Restrict);
    let critical = Alert {
        kind: AlertKind::NewPeers,
        severity: Severity::Critical,
        statistic_milli: 50_000,
        threshold_milli: 50_000,
        window: Window {
            from_ms: 0,
            to_ms: 1,
            first_event: "a".into(),
            last_event: "b".into(),
            count: 50,
        },
        reason: "r".into(),
        evidence: vec![],
    };
    assert_eq!(
        recommend(99_000, std::slice::from_ref(&critical)),
        Recommendation::Restrict
    );
    let report = render_report(&ReportInput {
        alerts: std::slice::from_ref(&critical),
        ..input
    });
    assert!(
        report.contains("| new_peers | critical | 50.000 | 50.000 | 0..1 | 50 | r |"),
        "{report}"
    );
    assert!(report.contains("**restrict: run with network none and review**."));
}

/// The worked example of docs/trust-model.md: computed here and looked up
/// verbatim in the document, so the two cannot drift apart.
#[test]
fn worked_example_matches_the_docs() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("agent-1", T0);
    let steps: Vec<(&str, i64, Option<ObservationKind>)> = vec![
        ("registered", T0, None),
        (
            "clean jail run",
            T0 + HOUR,
            Some(ObservationKind::Evidence(Signal::JailClean)),
        ),
        (
            "clean jail run",
            T0 + 2 * HOUR,
            Some(ObservationKind::Evidence(Signal::JailClean)),
        ),
        (
            "clean jail run",
            T0 + 3 * HOUR,
            Some(ObservationKind::Evidence(Signal::JailClean)),
        ),
        (
            "diff-policy violation (1)",
            T0 + 4 * HOUR,
            Some(ObservationKind::Evidence(Signal::JailPolicyViolation {
                violations: 1,
            })),
        ),
        (
            "operator endorsement",
            T0 + 5 * HOUR,
            Some(ObservationKind::Endorsed {
                endorser: "operator".into(),
                credibility_milli: 1_000,
            }),
        ),
        ("14 days pass", T0 + 5 * HOUR + 14 * DAY, None),
    ];
    let mut table =
        String::from("| step | event time | P | N | score |\n|---|---|---:|---:|---:|\n");
    let mut scores = Vec::new();
    for (i, (label, at, kind)) in steps.into_iter().enumerate() {
        if let Some(kind) = kind {
            model.observe(&cfg, &obs(&format!("ev-{i}"), at, kind));
        }
        let c = model.components(&cfg, at);
        let score = model.score_milli(&cfg, at);
        scores.push(score);
        let offset = at - T0;
        let when = if offset == 0 {
            "t0".to_owned()
        } else if offset % DAY == 0 {
            format!("t0 + {} d", offset / DAY)
        } else if offset > DAY {
            format!("t0 + {} d {} h", offset / DAY, (offset % DAY) / HOUR)
        } else {
            format!("t0 + {} h", offset / HOUR)
        };
        table.push_str(&format!(
            "| {label} | {when} | {} | {} | {} |\n",
            format_milli(c.positive_milli, 3),
            format_milli(c.negative_milli, 3),
            format_milli(score, 3)
        ));
    }
    let doc = include_str!("../../../docs/trust-model.md");
    assert!(
        doc.contains(&table),
        "docs/trust-model.md must contain:\n{table}"
    );
    assert_eq!(scores[0], 60_000);
    assert!(scores[1] > scores[0] && scores[3] > scores[2] && scores[4] < scores[3]);
    assert!(scores[5] > scores[4] && scores[6] < scores[5] && scores[6] > 60_000);
}

#[test]
fn one_action_to_many_new_peers_is_critical_at_once_and_weighs_twice() {
    let cfg = TrustConfig::default();
    let mut model = AgentModel::new("a", 0);
    let peers: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let out = model.observe(&cfg, &action("blast", 5, "agent.message_sent", &peers));
    let [Output::Alert(alert), Output::Adjusted(a)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.statistic_milli, 60_000);
    assert_eq!(alert.threshold_milli, 50_000);
    assert_eq!(alert.window.count, 60);
    assert_eq!(alert.evidence, ["blast"], "one action, one id");
    assert_eq!(a.signal, "fan_out");
    assert_eq!(a.negative_milli, 2_000);
    // Quiet afterwards, even for more new peers inside the window.
    assert!(model
        .observe(
            &cfg,
            &action("more", 6, "agent.message_sent", &["q1", "q2"])
        )
        .is_empty());
}
