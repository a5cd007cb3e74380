//! The policy format (parsing with JSON paths, the schema) and evaluation
//! (edges, idempotence, evidence, order).

use std::collections::BTreeSet;

use amai_trust::{AlertKind, Severity};
use serde_json::{json, Value};

use super::harness::{given, NOW};
use crate::governance::{Governance, GovernanceCommand, GovernanceFact};
use crate::policy::parse::{
    ALERT_KINDS, CONDITION_FIELDS, CRASHES_FIELDS, POLICY_FIELDS, SANCTIONS, SEVERITIES,
    THEN_FIELDS, TRUST_ALERT_FIELDS,
};
use crate::policy::*;
use crate::sanction::{Sanction, SanctionKind};

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../../schemas/policy.schema.json")).expect("schema")
}

fn parse(value: Value) -> Result<Policy, PolicyErrors> {
    Policy::from_json(value.to_string().as_bytes())
}

#[track_caller]
fn ok(value: Value) -> Policy {
    match parse(value) {
        Ok(p) => p,
        Err(e) => panic!("refused:\n{e}"),
    }
}

/// (path, kind) of every error.
#[track_caller]
fn errors(value: Value) -> Vec<(String, PolicyErrorKind)> {
    match parse(value) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e
            .kinds()
            .into_iter()
            .map(|(p, k)| (p.to_owned(), k))
            .collect(),
    }
}

fn errs(list: &[(&str, PolicyErrorKind)]) -> Vec<(String, PolicyErrorKind)> {
    list.iter().map(|(p, k)| ((*p).to_owned(), *k)).collect()
}

/// A valid policy with `when` and `then` replaced.
fn rule(when: Value, then: Value) -> Value {
    json!({ "policy_version": 1, "id": "p", "when": when, "then": then })
}

#[test]
fn the_schema_examples_parse_and_round_trip() {
    let examples = schema()["examples"].as_array().expect("examples").clone();
    assert_eq!(examples.len(), 4);
    for example in examples {
        let policy = ok(example.clone());
        let normal = policy.to_json_value();
        assert_eq!(serde_json::to_value(&policy).expect("serialize"), normal);
        assert_eq!(Policy::from_value(&normal), Ok(policy.clone()), "{normal}");
        // Every field the example gives is in the normal form, unchanged.
        for (key, value) in example.as_object().expect("object") {
            assert_eq!(&normal[key], value, "{key}");
        }
    }
    let p = ok(schema()["examples"][0].clone());
    assert_eq!(
        p,
        Policy {
            id: "low-trust-quarantine".into(),
            description: "Quarantine an agent whose trust falls below 30.".into(),
            when: When::One(Condition::TrustBelow { points: 30 }),
            then: Action::Sanction {
                kind: SanctionKind::Quarantine,
                expires_after_ms: None,
            },
            enabled: true,
        }
    );
}

#[test]
fn defaults_and_durations() {
    let p = ok(rule(
        json!({ "crashes": { "count": 3, "within": "90s" } }),
        json!({ "sanction": "throttle", "rate_per_minute": 6, "expires_after": "7d" }),
    ));
    assert_eq!(p.description, "");
    assert!(p.enabled);
    assert_eq!(
        p.when,
        When::One(Condition::Crashes {
            count: 3,
            within_ms: 90_000
        })
    );
    assert_eq!(
        p.then,
        Action::Sanction {
            kind: SanctionKind::Throttle { per_minute: 6 },
            expires_after_ms: Some(7 * 86_400_000),
        }
    );
    assert_eq!(p.to_json_value()["when"]["crashes"]["within"], "90s");
    for (text, ms) in [
        ("500ms", 500),
        ("30s", 30_000),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
    ] {
        assert_eq!(parse_duration_ms(text), Ok(ms));
        assert_eq!(format_duration_ms(ms), text);
    }
    for bad in [
        "10",
        "m",
        "1.5h",
        "10 m",
        "-1s",
        "1w",
        "",
        "99999999999999999999d",
    ] {
        assert!(parse_duration_ms(bad).is_err(), "{bad}");
    }
    assert_eq!(format_duration_ms(1_500), "1500ms");
}

#[test]
fn unknown_fields_are_reported_at_every_level() {
    use PolicyErrorKind::*;
    assert_eq!(
        errors(json!({
            "policy_version": 1, "id": "p", "extra": 1,
            "when": { "trust_alert": { "severity": "critical", "colour": "red" } },
            "then": { "sanction": "warn", "bogus": true }
        })),
        errs(&[
            ("extra", UnknownField),
            ("when.trust_alert.colour", UnknownField),
            ("then.bogus", UnknownField),
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "crashes": { "count": 2, "within": "1m", "per": "agent" }, "weather": 1 }),
            json!({ "lifecycle": "disable" })
        )),
        errs(&[
            ("when.weather", UnknownField),
            ("when.crashes.per", UnknownField)
        ])
    );
}

#[test]
fn wrong_types_are_reported_with_their_paths() {
    use PolicyErrorKind::*;
    assert_eq!(
        errors(json!({
            "policy_version": "1", "id": 7, "description": 5,
            "when": { "trust_below": "30" },
            "then": { "sanction": 3 },
            "enabled": "yes"
        })),
        errs(&[
            ("policy_version", WrongType),
            ("id", WrongType),
            ("description", WrongType),
            ("when.trust_below", WrongType),
            ("then.sanction", WrongType),
            ("enabled", WrongType),
        ])
    );
    assert_eq!(errors(json!([1])), errs(&[("", WrongType)]));
    assert_eq!(
        errors(rule(
            json!({ "trust_below": 30.5 }),
            json!({ "sanction": "ban" })
        )),
        errs(&[("when.trust_below", WrongType)])
    );
    assert_eq!(
        errors(rule(
            json!({ "crashes": { "count": "3", "within": 600 } }),
            json!({ "sanction": "ban", "expires_after": 60 })
        )),
        errs(&[
            ("when.crashes.count", WrongType),
            ("when.crashes.within", WrongType),
            ("then.expires_after", WrongType),
        ])
    );
}

#[test]
fn out_of_range_numbers_are_reported_with_their_paths() {
    use PolicyErrorKind::*;
    for bad in [json!(0), json!(101), json!(-5), json!(1e300)] {
        assert_eq!(
            errors(rule(
                json!({ "trust_below": bad }),
                json!({ "sanction": "warn" })
            )),
            errs(&[("when.trust_below", OutOfRange)]),
            "{bad}"
        );
    }
    assert_eq!(
        errors(rule(
            json!({ "crashes": { "count": 0, "within": "8d" } }),
            json!({ "sanction": "throttle", "rate_per_minute": 0, "expires_after": "400d" })
        )),
        errs(&[
            ("when.crashes.count", OutOfRange),
            ("when.crashes.within", OutOfRange),
            ("then.expires_after", OutOfRange),
            ("then.rate_per_minute", OutOfRange),
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "crashes": { "count": 1001, "within": "999ms" } }),
            json!({ "sanction": "warn" })
        )),
        errs(&[
            ("when.crashes.count", OutOfRange),
            ("when.crashes.within", OutOfRange)
        ])
    );
    assert_eq!(
        errors(rule(json!({ "all_of": [] }), json!({ "sanction": "warn" }))),
        errs(&[("when.all_of", OutOfRange)])
    );
    let nine: Vec<Value> = (1..=9).map(|i| json!({ "trust_below": i })).collect();
    assert_eq!(
        errors(rule(
            json!({ "all_of": nine }),
            json!({ "sanction": "warn" })
        )),
        errs(&[("when.all_of", OutOfRange)])
    );
}

#[test]
fn missing_conflicting_and_invalid_values_are_reported() {
    use PolicyErrorKind::*;
    assert_eq!(
        errors(json!({})),
        errs(&[
            ("policy_version", Required),
            ("id", Required),
            ("when", Required),
            ("then", Required)
        ])
    );
    assert_eq!(
        errors(rule(json!({}), json!({}))),
        errs(&[("when", Required), ("then", Required)])
    );
    assert_eq!(
        errors(rule(
            json!({ "trust_below": 30, "crashes": { "count": 1, "within": "1m" } }),
            json!({ "sanction": "warn", "lifecycle": "disable" })
        )),
        errs(&[("when", Conflict), ("then", Conflict)])
    );
    assert_eq!(
        errors(rule(
            json!({ "all_of": [{ "all_of": [] }, { "trust_below": 3, "trust_alert": { "severity": "info" } }, {}] }),
            json!({ "sanction": "throttle" })
        )),
        errs(&[
            ("when.all_of[0].all_of", Conflict),
            ("when.all_of[1]", Conflict),
            ("when.all_of[2]", Required),
            ("then.rate_per_minute", Required),
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "trust_alert": { "severity": "high", "kind": "spike" } }),
            json!({ "sanction": "warn", "rate_per_minute": 5 })
        )),
        errs(&[
            ("when.trust_alert.severity", Invalid),
            ("when.trust_alert.kind", Invalid),
            ("then.rate_per_minute", Conflict),
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "trust_alert": {} }),
            json!({ "sanction": "jail" })
        )),
        errs(&[
            ("when.trust_alert.severity", Required),
            ("then.sanction", Invalid)
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "trust_below": 10 }),
            json!({ "lifecycle": "disable", "expires_after": "1h", "rate_per_minute": 1 })
        )),
        errs(&[
            ("then.rate_per_minute", Conflict),
            ("then.expires_after", Conflict)
        ])
    );
    assert_eq!(
        errors(rule(
            json!({ "trust_below": 10 }),
            json!({ "lifecycle": "pause" })
        )),
        errs(&[("then.lifecycle", Invalid)])
    );
    let mut v = rule(json!({ "trust_below": 10 }), json!({ "sanction": "warn" }));
    v["policy_version"] = json!(2);
    v["id"] = json!("Bad ID");
    assert_eq!(
        errors(v),
        errs(&[("policy_version", UnsupportedVersion), ("id", Invalid)])
    );
    let mut v = rule(json!({ "trust_below": 10 }), json!({ "sanction": "warn" }));
    v["description"] = json!("x".repeat(4_097));
    assert_eq!(errors(v), errs(&[("description", OutOfRange)]));
}

#[test]
fn duplicate_keys_and_bad_json_are_refused() {
    use PolicyErrorKind::*;
    let text = r#"{"policy_version":1,"id":"a","id":"b","when":{"trust_below":1},"then":{"sanction":"warn","sanction":"ban"}}"#;
    let e = Policy::from_json(text.as_bytes()).expect_err("duplicates");
    assert_eq!(
        e.kinds(),
        [("id", DuplicateKey), ("then.sanction", DuplicateKey)]
    );
    let e = Policy::from_json(b"{\"policy_version\": 1,").expect_err("truncated");
    assert_eq!(e.kinds(), [("", NotJson)]);
    let e = Policy::from_json(&vec![b' '; MAX_POLICY_BYTES + 1]).expect_err("too large");
    assert_eq!(e.kinds(), [("", NotJson)]);
    assert!(e.to_string().contains("limit"));
}

#[test]
fn a_set_needs_unique_ids_and_reports_errors_by_index() {
    use PolicyErrorKind::*;
    let p = |id: &str| json!({ "policy_version": 1, "id": id, "when": { "trust_below": 20 }, "then": { "sanction": "warn" } });
    let set = json!([p("a"), p("b"), p("a")]);
    let e = Policy::set_from_json(set.to_string().as_bytes()).expect_err("duplicate");
    assert_eq!(e.kinds(), [("[2].id", DuplicateId)]);
    let mut bad = p("c");
    bad["when"]["trust_below"] = json!(0);
    let set = json!([p("a"), bad]);
    let e = Policy::set_from_json(set.to_string().as_bytes()).expect_err("range");
    assert_eq!(e.kinds(), [("[1].when.trust_below", OutOfRange)]);
    assert!(e
        .to_string()
        .starts_with("[1].when.trust_below: 0 is out of range (1 to 100)"));
    let set = json!([p("a"), p("b")]);
    assert_eq!(
        Policy::set_from_json(set.to_string().as_bytes()).map(|s| s.len()),
        Ok(2)
    );
}

/// The schema names exactly the parser's fields and values.
#[test]
fn the_json_schema_states_the_parsers_fields_and_enums() {
    let schema = schema();
    let keys = |pointer: &str| -> BTreeSet<String> {
        schema
            .pointer(pointer)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{pointer}"))
            .keys()
            .cloned()
            .collect()
    };
    let set =
        |fields: &[&str]| -> BTreeSet<String> { fields.iter().map(|s| (*s).to_owned()).collect() };
    let strings = |pointer: &str| -> BTreeSet<String> {
        schema
            .pointer(pointer)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{pointer}"))
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    assert_eq!(keys("/$defs/policy/properties"), set(&POLICY_FIELDS));
    let mut condition = keys("/$defs/condition/properties");
    condition.extend(keys("/$defs/policy/properties/when/oneOf/1/properties"));
    assert_eq!(condition, set(&CONDITION_FIELDS));
    assert_eq!(
        keys("/$defs/condition/properties/trust_alert/properties"),
        set(&TRUST_ALERT_FIELDS)
    );
    assert_eq!(
        keys("/$defs/condition/properties/crashes/properties"),
        set(&CRASHES_FIELDS)
    );
    let mut then = keys("/$defs/action/oneOf/0/properties");
    then.extend(keys("/$defs/action/oneOf/1/properties"));
    assert_eq!(then, set(&THEN_FIELDS));
    assert_eq!(
        strings("/$defs/condition/properties/trust_alert/properties/severity/enum"),
        set(&SEVERITIES)
    );
    assert_eq!(
        strings("/$defs/condition/properties/trust_alert/properties/kind/enum"),
        set(&ALERT_KINDS)
    );
    assert_eq!(
        strings("/$defs/action/oneOf/0/properties/sanction/enum"),
        set(&SANCTIONS)
    );
    // The severity and alert kind names are the trust crate's.
    let trust_severities: BTreeSet<String> =
        [Severity::Info, Severity::Warning, Severity::Critical]
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
    assert_eq!(trust_severities, set(&SEVERITIES));
    let trust_kinds: BTreeSet<String> = [
        AlertKind::RateSpike,
        AlertKind::MixShift,
        AlertKind::NewPeers,
    ]
    .iter()
    .map(|k| k.as_str().to_owned())
    .collect();
    assert_eq!(trust_kinds, set(&ALERT_KINDS));
    assert_eq!(
        schema["$defs"]["policy"]["properties"]["policy_version"]["const"],
        json!(POLICY_VERSION)
    );
}

// ---- evaluation ----

fn policy(id: &str, when: When, then: Action) -> Policy {
    Policy {
        id: id.into(),
        description: String::new(),
        when,
        then,
        enabled: true,
    }
}

fn quarantine_below(points: u8) -> Policy {
    policy(
        "low-trust",
        When::One(Condition::TrustBelow { points }),
        Action::Sanction {
            kind: SanctionKind::Quarantine,
            expires_after_ms: None,
        },
    )
}

fn scored(score_milli: i64, id: &str) -> Trigger {
    Trigger::TrustScored {
        score_milli,
        evidence_event_id: id.into(),
    }
}

fn alerted(severity: Severity, kind: AlertKind, id: &str) -> Trigger {
    Trigger::TrustAlerted {
        severity,
        kind,
        evidence_event_id: id.into(),
    }
}

fn crashed(at_ms: i64, id: &str) -> Trigger {
    Trigger::Crashed {
        at_ms,
        evidence_event_id: id.into(),
    }
}

fn with_score(score: Option<i64>) -> AgentFacts {
    AgentFacts {
        score_milli: score,
        ..AgentFacts::default()
    }
}

fn fired(policies: &[Policy], facts: &AgentFacts, trigger: &Trigger) -> Vec<String> {
    evaluate(policies, facts, trigger, NOW)
        .into_iter()
        .map(|d| d.policy_id)
        .collect()
}

#[test]
fn trust_below_fires_on_the_crossing_only() {
    let p = [quarantine_below(30)];
    let d = evaluate(&p, &with_score(Some(45_000)), &scored(25_000, "ev-1"), NOW);
    assert_eq!(
        d,
        [Decision {
            policy_id: "low-trust".into(),
            action: Action::Sanction {
                kind: SanctionKind::Quarantine,
                expires_after_ms: None,
            },
            evidence: vec!["ev-1".into()],
            reason: "policy low-trust: trust score 25.0 is below 30".into(),
            decided_at_ms: NOW,
        }]
    );
    // Already below: no edge.
    assert!(fired(&p, &with_score(Some(25_000)), &scored(20_000, "ev-2")).is_empty());
    // Exactly at the threshold is not below.
    assert!(fired(&p, &with_score(Some(45_000)), &scored(30_000, "ev-3")).is_empty());
    assert_eq!(
        fired(&p, &with_score(Some(30_000)), &scored(29_999, "ev-4")),
        ["low-trust"]
    );
    // Going up: nothing.
    assert!(fired(&p, &with_score(Some(25_000)), &scored(35_000, "ev-5")).is_empty());
    // The first score ever, already below: a crossing from unknown.
    assert_eq!(
        fired(&p, &with_score(None), &scored(10_000, "ev-6")),
        ["low-trust"]
    );
    // Other triggers do not move the score.
    assert!(fired(&p, &with_score(Some(10_000)), &crashed(1, "c")).is_empty());
}

/// Attacker case (or just a redelivery): the same trust event evaluated
/// again after its decision was recorded issues no second sanction.
#[test]
fn a_replayed_trust_event_does_not_sanction_twice() {
    let p = [quarantine_below(30)];
    let trigger = scored(25_000, "ev-1");
    let mut facts = with_score(Some(45_000));
    let mut ledger = Governance::new("agent-a");

    let decisions = evaluate(&p, &facts, &trigger, NOW);
    assert_eq!(decisions.len(), 1);
    let sanction = decisions[0].to_sanction("agent-a").expect("a sanction");
    assert_eq!(sanction.id, "low-trust:ev-1");
    ledger = given(ledger, [])
        .when(GovernanceCommand::Impose(sanction.clone()))
        .then(vec![GovernanceFact::SanctionImposed(sanction.clone())]);
    facts.observe(&trigger);
    facts.record(&decisions[0]);
    facts.sanctions = ledger.in_force(NOW).into_iter().cloned().collect();

    // Redelivered: no decision...
    assert!(evaluate(&p, &facts, &trigger, NOW + 1).is_empty());
    // ...and replaying the old decision into the ledger adds nothing.
    given(ledger, [])
        .when(GovernanceCommand::Impose(sanction))
        .then(vec![]);
    // Even with stale facts (the score not yet folded, the sanction since
    // lifted), the recorded pair stops it.
    let stale = AgentFacts {
        score_milli: Some(45_000),
        decided: facts.decided.clone(),
        ..AgentFacts::default()
    };
    assert!(evaluate(&p, &stale, &trigger, NOW).is_empty());
    // A different event crossing again, once the sanction is gone, fires.
    assert_eq!(
        fired(&p, &with_score(Some(45_000)), &scored(25_000, "ev-9")),
        ["low-trust"]
    );
}

#[test]
fn a_policy_whose_sanction_is_in_force_does_not_fire_again() {
    let p = [quarantine_below(30)];
    let active = Sanction {
        id: "low-trust:ev-0".into(),
        agent_id: "agent-a".into(),
        kind: SanctionKind::Quarantine,
        reason: "r".into(),
        evidence: vec!["ev-0".into()],
        policy_id: Some("low-trust".into()),
        issued_at_ms: 0,
        expires_at_ms: Some(NOW + 1),
    };
    let mut facts = with_score(Some(45_000));
    facts.sanctions = vec![active.clone()];
    assert!(fired(&p, &facts, &scored(1_000, "ev-1")).is_empty());
    // Expired: it fires again.
    facts.sanctions[0].expires_at_ms = Some(NOW);
    assert_eq!(fired(&p, &facts, &scored(1_000, "ev-1")), ["low-trust"]);
    // Another policy's sanction does not count.
    let mut other = active;
    other.policy_id = Some("other".into());
    facts.sanctions = vec![other];
    assert_eq!(fired(&p, &facts, &scored(1_000, "ev-1")), ["low-trust"]);
}

#[test]
fn trust_alert_matches_at_least_the_severity_and_the_kind_when_given() {
    let any = policy(
        "warn-any",
        When::One(Condition::TrustAlert {
            min_severity: Severity::Warning,
            kind: None,
        }),
        Action::Sanction {
            kind: SanctionKind::Warn,
            expires_after_ms: None,
        },
    );
    let spikes = policy(
        "spike",
        When::One(Condition::TrustAlert {
            min_severity: Severity::Critical,
            kind: Some(AlertKind::RateSpike),
        }),
        Action::Sanction {
            kind: SanctionKind::Throttle { per_minute: 10 },
            expires_after_ms: Some(3_600_000),
        },
    );
    let p = [spikes, any];
    let f = AgentFacts::default();
    assert!(fired(&p, &f, &alerted(Severity::Info, AlertKind::RateSpike, "a")).is_empty());
    assert_eq!(
        fired(
            &p,
            &f,
            &alerted(Severity::Warning, AlertKind::RateSpike, "a")
        ),
        ["warn-any"]
    );
    assert_eq!(
        fired(
            &p,
            &f,
            &alerted(Severity::Critical, AlertKind::MixShift, "a")
        ),
        ["warn-any"]
    );
    let d = evaluate(
        &p,
        &f,
        &alerted(Severity::Critical, AlertKind::RateSpike, "a"),
        NOW,
    );
    assert_eq!(
        d.iter().map(|d| d.policy_id.as_str()).collect::<Vec<_>>(),
        ["spike", "warn-any"],
        "sorted by policy id"
    );
    assert_eq!(d[0].reason, "policy spike: critical rate_spike alert");
    let s = d[0].to_sanction("agent-a").expect("sanction");
    assert_eq!(s.expires_at_ms, Some(NOW + 3_600_000));
    assert_eq!(s.kind, SanctionKind::Throttle { per_minute: 10 });
    assert_eq!(s.policy_id.as_deref(), Some("spike"));
    assert_eq!(s.evidence, ["a"]);
}

fn crash_rule(count: u32, within_ms: u64) -> Policy {
    policy(
        "crash-storm",
        When::One(Condition::Crashes { count, within_ms }),
        Action::Lifecycle(LifecycleAction::Disable),
    )
}

fn with_crashes(crashes: &[(i64, &str)]) -> AgentFacts {
    let mut facts = AgentFacts::default();
    for (at, id) in crashes {
        facts.observe(&crashed(*at, id));
    }
    facts
}

#[test]
fn a_crash_rule_cites_the_trigger_then_the_crashes_it_counted() {
    let p = [crash_rule(3, 600_000)];
    let facts = with_crashes(&[(0, "c1"), (60_000, "c2")]);
    let d = evaluate(&p, &facts, &crashed(120_000, "c3"), NOW);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].evidence, ["c3", "c1", "c2"]);
    assert_eq!(d[0].action, Action::Lifecycle(LifecycleAction::Disable));
    assert_eq!(d[0].to_sanction("agent-a"), None);
    assert_eq!(d[0].reason, "policy crash-storm: 3 crashes within 10m");
    // Spread over more than the window: nothing.
    assert!(fired(&p, &facts, &crashed(600_000, "c3")).is_empty());
    // A disabled agent is not disabled again.
    let mut disabled = facts.clone();
    disabled.disabled = true;
    assert!(fired(&p, &disabled, &crashed(120_000, "c3")).is_empty());
}

/// Attacker case: crash reports out of order still count, and a crash
/// already known (redelivered) is no new edge.
#[test]
fn crash_timestamps_out_of_order_and_redelivered_crashes() {
    let p = [crash_rule(3, 600_000)];
    // The oldest crash arrives last.
    let facts = with_crashes(&[(300_000, "c3"), (200_000, "c2")]);
    assert_eq!(
        facts
            .crashes
            .iter()
            .map(|c| c.event_id.as_str())
            .collect::<Vec<_>>(),
        ["c2", "c3"]
    );
    let d = evaluate(&p, &facts, &crashed(100_000, "c1"), NOW);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].evidence, ["c1", "c2", "c3"]);
    // Redelivered after being folded in: no edge.
    let mut folded = facts.clone();
    folded.observe(&crashed(100_000, "c1"));
    folded.observe(&crashed(100_000, "c1"));
    assert_eq!(folded.crashes.len(), 3);
    assert!(evaluate(&p, &folded, &crashed(100_000, "c1"), NOW).is_empty());
    // A fourth crash in a window that already had three: no new edge.
    assert!(evaluate(&p, &folded, &crashed(310_000, "c4"), NOW).is_empty());
}

#[test]
fn all_of_fires_when_the_trigger_completes_the_conditions() {
    let p = [policy(
        "untrusted-alerting",
        When::AllOf(vec![
            Condition::TrustBelow { points: 50 },
            Condition::TrustAlert {
                min_severity: Severity::Warning,
                kind: None,
            },
        ]),
        Action::Sanction {
            kind: SanctionKind::Suspend,
            expires_after_ms: Some(86_400_000),
        },
    )];
    let alert = alerted(Severity::Warning, AlertKind::NewPeers, "al-1");
    let d = evaluate(&p, &with_score(Some(40_000)), &alert, NOW);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].evidence, ["al-1"]);
    assert_eq!(
        d[0].reason,
        "policy untrusted-alerting: trust score 40.0 is below 50 and warning new_peers alert"
    );
    assert!(evaluate(&p, &with_score(Some(60_000)), &alert, NOW).is_empty());
    // A score crossing without an alert is not enough.
    assert!(evaluate(&p, &with_score(Some(60_000)), &scored(40_000, "s"), NOW).is_empty());
}

#[test]
fn disabled_and_duplicate_policies_and_the_order_of_decisions() {
    let mut off = quarantine_below(90);
    off.id = "aa-off".into();
    off.enabled = false;
    let mut b = quarantine_below(90);
    b.id = "bb".into();
    let mut a = quarantine_below(90);
    a.id = "ab".into();
    let mut a_again = quarantine_below(10);
    a_again.id = "ab".into();
    let p = [b, off, a, a_again];
    let facts = with_score(Some(95_000));
    let trigger = scored(50_000, "e");
    assert_eq!(fired(&p, &facts, &trigger), ["ab", "bb"]);
    // Deterministic: the same inputs, the same decisions.
    assert_eq!(
        evaluate(&p, &facts, &trigger, NOW),
        evaluate(&p, &facts, &trigger, NOW)
    );
}
