//! Governance policies: the JSON rule format (version 1, described in
//! `docs/governance.md` and `schemas/policy.schema.json`), its parsing
//! ([`Policy::from_json`], every error with its JSON path) and its
//! evaluation ([`evaluate`]).
//!
//! A policy has one condition, or `all_of` a list of conditions, and one
//! action. It is evaluated when a [`Trigger`] happens (a trust score, a
//! trust alert, a crash), against what is known of the agent
//! ([`AgentFacts`], as it was before the trigger), and fires on an edge:
//! when its conditions hold after the trigger and did not all hold before
//! it. So a score that stays below a threshold fires once, when it
//! crosses, and not on every later score.
//!
//! Replays and redeliveries never fire twice:
//!
//! - a policy whose sanction from an earlier firing is still in force does
//!   not fire (nor a `disable` policy while the agent is disabled);
//! - a (policy, trigger event) pair already decided
//!   ([`AgentFacts::decided`]) does not fire;
//! - a trigger already folded into the facts (its score is the current
//!   score, its crash is already recorded) is no edge.
//!
//! Decisions come out sorted by policy id, and each cites its evidence:
//! the trigger's event id first, then, for a crash rule, the ids of the
//! crashes it counted.

pub(crate) mod parse;

use std::collections::BTreeSet;
use std::fmt;

use amai_trust::{format_milli, AlertKind, Milli, Severity};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::sanction::{Sanction, SanctionKind};

pub use parse::{PolicyError, PolicyErrorKind, PolicyErrors};

/// The policy format version this crate reads and writes.
pub const POLICY_VERSION: u64 = 1;
/// The largest policy document accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// The most conditions an `all_of` holds.
pub const MAX_ALL_OF: usize = 8;
/// The most crash records [`AgentFacts::observe`] keeps.
pub const MAX_RECENT_CRASHES: usize = 1_024;

/// A parsed governance policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `[a-z0-9][a-z0-9_-]{0,62}`; names the sanctions it issues.
    pub id: String,
    /// What it is for, in words (may be empty).
    pub description: String,
    /// When it fires.
    pub when: When,
    /// What it does.
    pub then: Action,
    /// Whether it is evaluated (default `true`).
    pub enabled: bool,
}

/// A policy's condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// One condition.
    One(Condition),
    /// Every one of these conditions (1 to [`MAX_ALL_OF`], none an
    /// `all_of`).
    AllOf(Vec<Condition>),
}

impl When {
    /// The conditions.
    pub fn conditions(&self) -> &[Condition] {
        match self {
            When::One(c) => std::slice::from_ref(c),
            When::AllOf(cs) => cs,
        }
    }
}

/// One condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The trust score is below `points` (1 to 100; scores are 0-100,
    /// compared in milli-points).
    TrustBelow {
        /// The threshold, in points.
        points: u8,
    },
    /// The trigger is a trust alert at least this severe, of this kind
    /// when given.
    TrustAlert {
        /// The least severity (`info` < `warning` < `critical`).
        min_severity: Severity,
        /// The detector (`rate_spike`, `mix_shift`, `new_peers`); any when
        /// `None`.
        kind: Option<AlertKind>,
    },
    /// At least `count` crashes within `within_ms`.
    Crashes {
        /// The crashes (1 to 1000).
        count: u32,
        /// The window, in ms (1 s to 7 days).
        within_ms: u64,
    },
}

/// What a policy does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Issue a sanction.
    Sanction {
        /// Its kind (a throttle carries its rate).
        kind: SanctionKind,
        /// How long until it expires; never when `None`.
        expires_after_ms: Option<u64>,
    },
    /// Change the agent's lifecycle.
    Lifecycle(LifecycleAction),
}

/// A lifecycle action of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// The kill switch ([`crate::state::Command::Disable`]).
    Disable,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Sanction { kind, .. } => write!(f, "sanction {kind}"),
            Action::Lifecycle(LifecycleAction::Disable) => f.write_str("disable"),
        }
    }
}

impl Policy {
    /// Parses one policy, collecting every error with its JSON path.
    pub fn from_json(bytes: &[u8]) -> Result<Policy, PolicyErrors> {
        parse::parse_policy(bytes)
    }

    /// Parses one policy that is already a JSON value.
    pub fn from_value(value: &Value) -> Result<Policy, PolicyErrors> {
        parse::policy_value(value)
    }

    /// Parses a JSON array of policies (paths `[2].when.trust_below`);
    /// policy ids must be unique.
    pub fn set_from_json(bytes: &[u8]) -> Result<Vec<Policy>, PolicyErrors> {
        parse::parse_set(bytes)
    }

    /// The policy in the rule format, every default explicit and every
    /// duration in its largest exact unit; it parses back to `self`.
    pub fn to_json_value(&self) -> Value {
        let condition = |c: &Condition| -> Value {
            match c {
                Condition::TrustBelow { points } => json!({ "trust_below": points }),
                Condition::TrustAlert { min_severity, kind } => {
                    let mut alert = Map::new();
                    alert.insert("severity".into(), json!(min_severity.as_str()));
                    if let Some(kind) = kind {
                        alert.insert("kind".into(), json!(kind.as_str()));
                    }
                    json!({ "trust_alert": alert })
                }
                Condition::Crashes { count, within_ms } => json!({
                    "crashes": { "count": count, "within": format_duration_ms(*within_ms) }
                }),
            }
        };
        let when = match &self.when {
            When::One(c) => condition(c),
            When::AllOf(cs) => json!({ "all_of": cs.iter().map(condition).collect::<Vec<_>>() }),
        };
        let mut then = Map::new();
        match self.then {
            Action::Sanction {
                kind,
                expires_after_ms,
            } => {
                then.insert("sanction".into(), json!(kind.name()));
                if let SanctionKind::Throttle { per_minute } = kind {
                    then.insert("rate_per_minute".into(), json!(per_minute));
                }
                if let Some(ms) = expires_after_ms {
                    then.insert("expires_after".into(), json!(format_duration_ms(ms)));
                }
            }
            Action::Lifecycle(LifecycleAction::Disable) => {
                then.insert("lifecycle".into(), json!("disable"));
            }
        }
        json!({
            "policy_version": POLICY_VERSION,
            "id": self.id,
            "description": self.description,
            "when": when,
            "then": then,
            "enabled": self.enabled,
        })
    }
}

impl Serialize for Policy {
    /// Serializes the normal form ([`Policy::to_json_value`]), which is how
    /// a policy is stored as an event.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json_value().serialize(serializer)
    }
}

/// Formats milliseconds in the largest unit that divides them exactly
/// (`600000` -> `10m`), as the rule format reads durations: `d`, `h`, `m`,
/// `s`, or `ms`.
pub fn format_duration_ms(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a duration of the rule format: digits and a unit, `ms`, `s`,
/// `m`, `h` or `d` (`30s`, `10m`, `1h`), into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    parse::duration_ms(text)
}

/// The event that just happened to an agent, which policies are evaluated
/// against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A new trust score (`trust.adjusted`).
    TrustScored {
        /// The score after the adjustment, in milli-points (0 to 100_000,
        /// as `amai_trust` computes it).
        score_milli: Milli,
        /// The event's id.
        evidence_event_id: String,
    },
    /// A trust alert (`trust.alert_raised`).
    TrustAlerted {
        /// Its severity.
        severity: Severity,
        /// Its detector.
        kind: AlertKind,
        /// The event's id.
        evidence_event_id: String,
    },
    /// A crash of the agent.
    Crashed {
        /// When it crashed (unix ms).
        at_ms: i64,
        /// The event's id.
        evidence_event_id: String,
    },
}

impl Trigger {
    /// The id of the trigger's event.
    pub fn evidence_event_id(&self) -> &str {
        match self {
            Trigger::TrustScored {
                evidence_event_id, ..
            }
            | Trigger::TrustAlerted {
                evidence_event_id, ..
            }
            | Trigger::Crashed {
                evidence_event_id, ..
            } => evidence_event_id,
        }
    }
}

/// A crash known to the policies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CrashRecord {
    /// When it crashed (unix ms).
    pub at_ms: i64,
    /// The crash event's id.
    pub event_id: String,
}

/// What is known of an agent when a trigger is evaluated: the state
/// before the trigger (fold the trigger in with [`AgentFacts::observe`]
/// and the decisions with [`AgentFacts::record`] after evaluating).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFacts {
    /// The last trust score, in milli-points; `None` before the first.
    pub score_milli: Option<Milli>,
    /// The sanctions not lifted (expired ones are told apart by `now`).
    pub sanctions: Vec<Sanction>,
    /// Recent crashes, sorted by time then id, unique by id.
    pub crashes: Vec<CrashRecord>,
    /// Whether the agent is disabled.
    pub disabled: bool,
    /// (policy id, trigger event id) pairs already decided.
    pub decided: BTreeSet<(String, String)>,
}

impl AgentFacts {
    /// Folds a trigger in: the score becomes the current score, a crash is
    /// recorded (once per event id; the oldest dropped beyond
    /// [`MAX_RECENT_CRASHES`]). Alerts leave no state.
    pub fn observe(&mut self, trigger: &Trigger) {
        match trigger {
            Trigger::TrustScored { score_milli, .. } => self.score_milli = Some(*score_milli),
            Trigger::TrustAlerted { .. } => {}
            Trigger::Crashed {
                at_ms,
                evidence_event_id,
            } => {
                if self
                    .crashes
                    .iter()
                    .any(|c| c.event_id == *evidence_event_id)
                {
                    return;
                }
                let record = CrashRecord {
                    at_ms: *at_ms,
                    event_id: evidence_event_id.clone(),
                };
                let index = self.crashes.partition_point(|c| *c < record);
                self.crashes.insert(index, record);
                if self.crashes.len() > MAX_RECENT_CRASHES {
                    self.crashes.remove(0);
                }
            }
        }
    }

    /// Records a decision, so that its (policy, trigger) pair never fires
    /// again.
    pub fn record(&mut self, decision: &Decision) {
        if let Some(trigger) = decision.evidence.first() {
            self.decided
                .insert((decision.policy_id.clone(), trigger.clone()));
        }
    }
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The policy.
    pub policy_id: String,
    /// What it does.
    pub action: Action,
    /// The ids of the events it cites: the trigger's first, then the
    /// crashes a crash rule counted (by time).
    pub evidence: Vec<String>,
    /// Why, in words.
    pub reason: String,
    /// When it was decided (the evaluation's `now`).
    pub decided_at_ms: i64,
}

impl Decision {
    /// The id of the sanction it issues: `<policy id>:<trigger event id>`,
    /// the same on every replay.
    pub fn sanction_id(&self) -> String {
        format!(
            "{}:{}",
            self.policy_id,
            self.evidence.first().map_or("", String::as_str)
        )
    }

    /// The sanction it issues against `agent_id`, if its action is a
    /// sanction.
    pub fn to_sanction(&self, agent_id: &str) -> Option<Sanction> {
        let Action::Sanction {
            kind,
            expires_after_ms,
        } = self.action
        else {
            return None;
        };
        Some(Sanction {
            id: self.sanction_id(),
            agent_id: agent_id.to_owned(),
            kind,
            reason: self.reason.clone(),
            evidence: self.evidence.clone(),
            policy_id: Some(self.policy_id.clone()),
            issued_at_ms: self.decided_at_ms,
            expires_at_ms: expires_after_ms.map(|ms| {
                self.decided_at_ms
                    .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
            }),
        })
    }
}

/// How one condition stands around the trigger.
struct Standing {
    before: bool,
    after: bool,
    evidence: Vec<String>,
    why: String,
}

/// Evaluates the policies against a trigger at `now_ms`: the decisions of
/// the enabled policies that fire, sorted by policy id (a policy id given
/// twice is evaluated once, the first given).
pub fn evaluate(
    policies: &[Policy],
    facts: &AgentFacts,
    trigger: &Trigger,
    now_ms: i64,
) -> Vec<Decision> {
    let mut ordered: Vec<&Policy> = policies.iter().filter(|p| p.enabled).collect();
    ordered.sort_by(|a, b| a.id.cmp(&b.id));
    ordered.dedup_by(|a, b| a.id == b.id);
    let trigger_id = trigger.evidence_event_id();
    let mut decisions = Vec::new();
    for policy in ordered {
        if facts
            .decided
            .contains(&(policy.id.clone(), trigger_id.to_owned()))
        {
            continue;
        }
        let already = match policy.then {
            Action::Sanction { .. } => facts
                .sanctions
                .iter()
                .any(|s| s.policy_id.as_deref() == Some(&policy.id) && s.is_active(now_ms)),
            Action::Lifecycle(LifecycleAction::Disable) => facts.disabled,
        };
        if already {
            continue;
        }
        let standings: Vec<Standing> = policy
            .when
            .conditions()
            .iter()
            .map(|c| stand(c, facts, trigger, now_ms))
            .collect();
        let after = standings.iter().all(|s| s.after);
        let before = standings.iter().all(|s| s.before);
        if !after || before {
            continue;
        }
        let mut evidence = vec![trigger_id.to_owned()];
        for id in standings.iter().flat_map(|s| s.evidence.iter()) {
            if !evidence.contains(id) {
                evidence.push(id.clone());
            }
        }
        let why: Vec<&str> = standings.iter().map(|s| s.why.as_str()).collect();
        decisions.push(Decision {
            policy_id: policy.id.clone(),
            action: policy.then,
            evidence,
            reason: format!("policy {}: {}", policy.id, why.join(" and ")),
            decided_at_ms: now_ms,
        });
    }
    decisions
}

fn stand(condition: &Condition, facts: &AgentFacts, trigger: &Trigger, now_ms: i64) -> Standing {
    match *condition {
        Condition::TrustBelow { points } => {
            let threshold = Milli::from(points) * 1_000;
            let below = |score: Option<Milli>| score.is_some_and(|s| s < threshold);
            let before = below(facts.score_milli);
            let current = match trigger {
                Trigger::TrustScored { score_milli, .. } => Some(*score_milli),
                _ => facts.score_milli,
            };
            Standing {
                before,
                after: below(current),
                evidence: Vec::new(),
                why: format!(
                    "trust score {} is below {points}",
                    current.map_or_else(|| "unknown".to_owned(), |s| format_milli(s, 1))
                ),
            }
        }
        Condition::TrustAlert { min_severity, kind } => {
            let (after, what) = match trigger {
                Trigger::TrustAlerted {
                    severity, kind: k, ..
                } => (
                    *severity >= min_severity && kind.is_none_or(|want| want == *k),
                    format!("{} {} alert", severity.as_str(), k.as_str()),
                ),
                _ => (false, String::new()),
            };
            Standing {
                before: false,
                after,
                evidence: Vec::new(),
                why: what,
            }
        }
        Condition::Crashes { count, within_ms } => {
            let n = usize::try_from(count).unwrap_or(usize::MAX).max(1);
            let window = i128::from(within_ms);
            let why = format!("{count} crashes within {}", format_duration_ms(within_ms));
            match trigger {
                Trigger::Crashed {
                    at_ms,
                    evidence_event_id,
                } => {
                    let known = facts
                        .crashes
                        .iter()
                        .any(|c| c.event_id == *evidence_event_id);
                    let others: Vec<&CrashRecord> = facts
                        .crashes
                        .iter()
                        .filter(|c| c.event_id != *evidence_event_id)
                        .collect();
                    let trigger_record = CrashRecord {
                        at_ms: *at_ms,
                        event_id: evidence_event_id.clone(),
                    };
                    let mut all = others.clone();
                    all.push(&trigger_record);
                    all.sort();
                    let after = crash_run(&all, *at_ms, Some(&trigger_record), n, window);
                    let before = crash_run(&others, *at_ms, None, n, window).is_some();
                    Standing {
                        before: before || (known && after.is_some()),
                        after: after.is_some(),
                        evidence: after.unwrap_or_default(),
                        why,
                    }
                }
                _ => {
                    let all: Vec<&CrashRecord> = facts.crashes.iter().collect();
                    let run = crash_run(&all, now_ms, None, n, window);
                    Standing {
                        before: run.is_some(),
                        after: run.is_some(),
                        evidence: run.unwrap_or_default(),
                        why,
                    }
                }
            }
        }
    }
}

/// The ids of the earliest run of `n` consecutive crashes (sorted) that
/// fits, together with time `t`, in a window shorter than `window` ms, and
/// that contains `must` when given.
fn crash_run(
    sorted: &[&CrashRecord],
    t: i64,
    must: Option<&CrashRecord>,
    n: usize,
    window: i128,
) -> Option<Vec<String>> {
    if sorted.len() < n {
        return None;
    }
    sorted.windows(n).find_map(|run| {
        let first = run.first()?.at_ms.min(t);
        let last = run.last()?.at_ms.max(t);
        let fits = i128::from(last) - i128::from(first) < window;
        let contains = must.is_none_or(|m| run.contains(&m));
        (fits && contains).then(|| run.iter().map(|c| c.event_id.clone()).collect())
    })
}
