//! The per-agent model: what the trust role knows about one agent, updated
//! one [`Observation`] at a time, and the [`Output`]s each observation
//! produces (score adjustments and anomaly alerts).
//!
//! [`AgentModel`] owns the decayed evidence per signal (the score), the
//! behavioural fingerprint (action mix, per-bucket rates, peers,
//! endorsements) and the state of the three anomaly detectors. Everything
//! is integer arithmetic over event time, kept in `BTreeMap`s, and bounded
//! in size whatever the agent does (see [`MAX_PEERS`] and friends).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::TrustConfig;
use crate::event_ref::EventRef;
use crate::fixed::{decay, decay_factor_q32, div_round, format_milli, format_signed_milli, Milli};

/// The full scale of a score: 100_000 milli-points is 100.0.
pub const SCORE_MAX_MILLI: Milli = 100_000;

/// At most this many peers are remembered by id; further first-time peers
/// are only counted in [`Fingerprint::peer_count`] (and, not being
/// remembered, count as first-time peers again when addressed again).
pub const MAX_PEERS: usize = 4096;

/// At most this many event ids are kept for a window or carried as an
/// alert's evidence.
pub const MAX_WINDOW_IDS: usize = 64;

/// At most this many distinct action types are counted by name; further
/// types are counted under [`OTHER_ACTION_TYPE`].
pub const MAX_ACTION_TYPES: usize = 256;

/// The action-type key that counts every type beyond [`MAX_ACTION_TYPES`].
pub const OTHER_ACTION_TYPE: &str = "~other";

/// At most this many endorsers are remembered; an endorsement from a new
/// endorser beyond that is reported with no effect.
pub const MAX_ENDORSERS: usize = 4096;

/// At most this many first-time peer contacts are kept for the `new_peers`
/// window (the count saturates there, far above any sensible threshold).
pub const MAX_NEW_PEER_EVENTS: usize = 4096;

/// At most this many peers are listed in [`Fingerprint::top_peers`].
pub const MAX_TOP_PEERS: usize = 20;

/// The action type of an endorsement on the endorser's own chain.
pub const ENDORSED_ACTION_TYPE: &str = "agent.endorsed";

/// Every signal name, in the order of [`Components::signals`] (sorted).
pub const SIGNAL_NAMES: [&str; 11] = [
    "burst",
    "crash",
    "endorsed",
    "fan_out",
    "jail_clean",
    "jail_limit_hit",
    "jail_network_denied",
    "jail_not_reproducible",
    "jail_policy_violation",
    "llm_replay_miss",
    "llm_truncated",
];

/// Stored evidence sums are thousandths shifted left by this much (about a
/// millionth of a thousandth), so that decaying them at every event does not
/// lose or keep noticeable amounts to rounding.
const EVIDENCE_SHIFT: u32 = 20;

/// One thing the trust role saw about an agent, at an event time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The id of the event this observation comes from (the cause).
    pub event_id: String,
    /// Its event time, unix milliseconds.
    pub at_ms: i64,
    /// What was observed.
    pub kind: ObservationKind,
    /// Further evidence ids after the cause (carried into the
    /// [`Adjustment::evidence`] of evidence and endorsements).
    pub cites: Vec<String>,
}

/// What an [`Observation`] says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservationKind {
    /// Any action on the agent's own chain; `peers` are the identities it
    /// addressed (message recipient, endorsee).
    Action {
        /// The action's type (`agent.message_sent`, `agent.endorsed`, ...).
        action_type: String,
        /// The identities the action addressed.
        peers: Vec<String>,
    },
    /// Another identity messaged this agent: `by` becomes a known peer (so
    /// answering it is not fan-out). Not an action of this agent.
    Contacted {
        /// The identity that wrote to this agent.
        by: String,
    },
    /// Scored evidence about this agent.
    Evidence(Signal),
    /// Another identity endorsed this agent.
    Endorsed {
        /// The endorser's id.
        endorser: String,
        /// The endorser's credibility in [0, 1000], computed by the caller
        /// with [`AgentModel::endorsing_credibility_milli`] on the
        /// endorser's model (operators pass 1000).
        credibility_milli: Milli,
    },
}

/// Scored evidence about an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// A jail run finished clean (`jail_clean`, positive).
    JailClean,
    /// A jail run violated its diff policy (`jail_policy_violation`).
    JailPolicyViolation {
        /// How many policy violations the run had (0 counts as 1).
        violations: u32,
    },
    /// A jail run tried to reach the network and was denied
    /// (`jail_network_denied`; weighs the same whatever the attempts).
    JailNetworkDenied {
        /// How many attempts were denied (reported in the reason).
        attempts: u64,
    },
    /// A jail run hit a resource limit (`jail_limit_hit`).
    JailLimitHit {
        /// Which limit.
        limit: LimitKind,
    },
    /// A jail run could not be reproduced (`jail_not_reproducible`).
    JailNotReproducible,
    /// An LLM call missed on replay (`llm_replay_miss`).
    LlmReplayMiss,
    /// An LLM response was truncated (`llm_truncated`).
    LlmTruncated,
    /// The agent crashed (`crash`).
    Crash,
}

impl Signal {
    /// The stable snake_case signal name.
    pub fn name(&self) -> &'static str {
        match self {
            Signal::JailClean => "jail_clean",
            Signal::JailPolicyViolation { .. } => "jail_policy_violation",
            Signal::JailNetworkDenied { .. } => "jail_network_denied",
            Signal::JailLimitHit { .. } => "jail_limit_hit",
            Signal::JailNotReproducible => "jail_not_reproducible",
            Signal::LlmReplayMiss => "llm_replay_miss",
            Signal::LlmTruncated => "llm_truncated",
            Signal::Crash => "crash",
        }
    }

    fn is_jail(&self) -> bool {
        matches!(
            self,
            Signal::JailClean
                | Signal::JailPolicyViolation { .. }
                | Signal::JailNetworkDenied { .. }
                | Signal::JailLimitHit { .. }
                | Signal::JailNotReproducible
        )
    }

    /// (positive, negative, what happened in words) for this signal.
    fn weigh(&self, cfg: &TrustConfig) -> (Milli, Milli, String) {
        let w = &cfg.weights;
        let (positive, negative, what) = match self {
            Signal::JailClean => (w.jail_clean, 0, "jail run finished clean".to_owned()),
            Signal::JailPolicyViolation { violations } => {
                let n = (*violations).max(1);
                let extra = w
                    .jail_policy_violation_extra
                    .max(0)
                    .saturating_mul(i64::from(n - 1));
                let weight = w
                    .jail_policy_violation
                    .saturating_add(extra)
                    .min(w.jail_policy_violation_max.max(w.jail_policy_violation));
                let plural = if n == 1 { "" } else { "s" };
                (
                    0,
                    weight,
                    format!("jail run violated its diff policy ({n} violation{plural})"),
                )
            }
            Signal::JailNetworkDenied { attempts } => {
                let plural = if *attempts == 1 { "" } else { "s" };
                (
                    0,
                    w.jail_network_denied,
                    format!(
                        "jail run tried to reach the network and was denied \
                         ({attempts} attempt{plural}, weighed once per run)"
                    ),
                )
            }
            Signal::JailLimitHit { limit } => (
                0,
                w.jail_limit_hit,
                format!("jail run hit its {} limit", limit.as_str()),
            ),
            Signal::JailNotReproducible => (
                0,
                w.jail_not_reproducible,
                "jail run could not be reproduced (a rerun from the same inputs differed)"
                    .to_owned(),
            ),
            Signal::LlmReplayMiss => (
                0,
                w.llm_replay_miss,
                "LLM call missed on replay (no recorded answer matched the request)".to_owned(),
            ),
            Signal::LlmTruncated => (0, w.llm_truncated, "LLM response was truncated".to_owned()),
            Signal::Crash => (0, w.crash, "agent crashed".to_owned()),
        };
        (positive.max(0), negative.max(0), what)
    }
}

/// The resource limit a jail run hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// The memory limit.
    Memory,
    /// The wall-time limit.
    Timeout,
    /// The output-size limit.
    Output,
}

impl LimitKind {
    /// `memory`, `time` or `output`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Timeout => "time",
            LimitKind::Output => "output",
        }
    }
}

/// What an observation produced, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// The score moved (or was explicitly left alone) because of evidence:
    /// a `trust.adjusted` event.
    Adjusted(Adjustment),
    /// Behaviour left the agent's own baseline: a `trust.alert_raised`
    /// event. An alert with a score effect is followed by its `Adjusted`.
    Alert(Alert),
}

/// A score adjustment and its explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// The signal name (see [`SIGNAL_NAMES`]).
    pub signal: String,
    /// Positive evidence added, thousandths, before decay.
    pub positive_milli: Milli,
    /// Negative evidence added, thousandths, before decay.
    pub negative_milli: Milli,
    /// The score at the model's clock before, milli-points.
    pub score_before_milli: Milli,
    /// The score at the model's clock after, milli-points.
    pub score_after_milli: Milli,
    /// What happened, in words.
    pub reason: String,
    /// The ids of the events that caused it, the cause first.
    pub evidence: Vec<String>,
    /// The model's event-time clock the scores are computed at (unix ms).
    pub event_time_ms: i64,
}

/// The anomaly detector that raised an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertKind {
    /// Too many actions in one bucket for this agent (`rate_spike`).
    RateSpike,
    /// The recent action types differ from the agent's habit (`mix_shift`).
    MixShift,
    /// Many first-time peers in a short window (`new_peers`).
    NewPeers,
}

impl AlertKind {
    /// `rate_spike`, `mix_shift` or `new_peers`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RateSpike => "rate_spike",
            AlertKind::MixShift => "mix_shift",
            AlertKind::NewPeers => "new_peers",
        }
    }
}

/// How serious an alert is (ordered: `Info < Warning < Critical`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// For information (not raised by the detectors here).
    Info,
    /// Worth a look.
    Warning,
    /// Act on it.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The events an alert covers, in event time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The earliest event time in the window.
    pub from_ms: i64,
    /// The latest event time in the window.
    pub to_ms: i64,
    /// The id of the window's first event (first observed).
    pub first_event: String,
    /// The id of the window's last event (last observed).
    pub last_event: String,
    /// How many events (or, for `new_peers`, first-time peers) it covers.
    pub count: u64,
}

/// An anomaly alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Which detector.
    pub kind: AlertKind,
    /// How serious.
    pub severity: Severity,
    /// The statistic (robust z, total variation distance, first-time peer
    /// count), thousandths.
    pub statistic_milli: Milli,
    /// The threshold it reached, thousandths.
    pub threshold_milli: Milli,
    /// The events it covers.
    pub window: Window,
    /// What happened, in words.
    pub reason: String,
    /// Ids of the window's events (at most [`MAX_WINDOW_IDS`];
    /// `window.count` has the total).
    pub evidence: Vec<String>,
}

/// The score broken down: the prior and the decayed evidence per signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Components {
    /// α0 = prior_strength · baseline / 100_000 (rounded half up).
    pub prior_positive_milli: Milli,
    /// β0 = prior_strength − α0.
    pub prior_negative_milli: Milli,
    /// P: the sum of the signals' decayed positive evidence.
    pub positive_milli: Milli,
    /// N: the sum of the signals' decayed negative evidence.
    pub negative_milli: Milli,
    /// Every signal observed at least once, sorted by name.
    pub signals: Vec<SignalComponent>,
}

/// One signal's decayed evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalComponent {
    /// The signal name.
    pub signal: String,
    /// Decayed positive evidence, thousandths.
    pub positive_milli: Milli,
    /// Decayed negative evidence, thousandths.
    pub negative_milli: Milli,
    /// How many times it was observed (not decayed).
    pub count: u64,
}

/// The agent's behavioural fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Actions by type (beyond [`MAX_ACTION_TYPES`] types, the rest under
    /// [`OTHER_ACTION_TYPE`]).
    pub action_counts: BTreeMap<String, u64>,
    /// All actions.
    pub actions: u64,
    /// Median actions per bucket over the rate history, thousandths (0
    /// without history).
    pub rate_median_milli: Milli,
    /// Actions in the latest bucket.
    pub current_bucket_count: u64,
    /// The bucket width, ms.
    pub bucket_ms: i64,
    /// The most frequent peers (at most [`MAX_TOP_PEERS`]), by interactions
    /// descending then id.
    pub top_peers: Vec<PeerStat>,
    /// Distinct peers ever (exact up to [`MAX_PEERS`], an upper bound
    /// beyond).
    pub peer_count: u64,
    /// Jail verdicts observed (one per `jail_*` signal).
    pub jail_runs: u64,
    /// LLM replay misses observed.
    pub llm_replay_misses: u64,
    /// Endorsements received and counted (once per endorser).
    pub endorsements_received: u64,
    /// `agent.endorsed` actions by this agent.
    pub endorsements_given: u64,
    /// Alerts raised, by kind (`rate_spike`, ...; upgrades count).
    pub alerts: BTreeMap<String, u64>,
}

/// One peer of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStat {
    /// The peer's id.
    pub peer: String,
    /// Interactions in either direction (actions addressing it, messages
    /// from it).
    pub interactions: u64,
    /// The event time of the first interaction.
    pub first_ms: i64,
}

/// The decayed evidence of one signal, thousandths shifted left by
/// `EVIDENCE_SHIFT`, as of the model's clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SignalSum {
    positive: i64,
    negative: i64,
    count: u64,
}

/// A peer as remembered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Peer {
    interactions: u64,
    first_ms: i64,
}

/// The latest rate bucket and its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Bucket {
    index: i64,
    count: u64,
    from_ms: i64,
    to_ms: i64,
    first_event: EventRef,
    last_event: EventRef,
    /// The first `MAX_WINDOW_IDS` event ids.
    ids: Vec<EventRef>,
}

impl Bucket {
    fn start(index: i64, obs: &Observation) -> Self {
        Self {
            index,
            count: 1,
            from_ms: obs.at_ms,
            to_ms: obs.at_ms,
            first_event: EventRef::new(&obs.event_id),
            last_event: EventRef::new(&obs.event_id),
            ids: vec![EventRef::new(&obs.event_id)],
        }
    }

    fn push(&mut self, obs: &Observation) {
        self.count += 1;
        self.from_ms = self.from_ms.min(obs.at_ms);
        self.to_ms = self.to_ms.max(obs.at_ms);
        self.last_event = EventRef::new(&obs.event_id);
        if self.ids.len() < MAX_WINDOW_IDS {
            self.ids.push(EventRef::new(&obs.event_id));
        }
    }
}

/// One of the last `mix_window` actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MixEntry {
    action_type: String,
    at_ms: i64,
    event_id: EventRef,
}

/// A first-time peer addressed by an action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct NewPeerEvent {
    at_ms: i64,
    event_id: EventRef,
}

/// The `new_peers` detector's quiet period after an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Quiet {
    until_ms: i64,
    severity: Severity,
}

/// What the trust role knows about one agent.
///
/// Bounded: whatever the agent does, the model holds at most
/// [`MAX_PEERS`] peers, [`MAX_ACTION_TYPES`] + 1 action types,
/// [`MAX_ENDORSERS`] endorsers, [`MAX_NEW_PEER_EVENTS`] first-time peer
/// contacts, `history_buckets` rate buckets, `mix_window` recent actions and
/// [`MAX_WINDOW_IDS`] ids per window, plus one entry per signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentModel {
    agent_id: String,
    registered_at_ms: i64,
    clock_ms: i64,
    /// Decayed evidence by signal name, as of `clock_ms`.
    evidence: BTreeMap<String, SignalSum>,
    endorsers: BTreeSet<String>,
    action_counts: BTreeMap<String, u64>,
    actions: u64,
    first_bucket: Option<i64>,
    /// Action counts of the buckets before `current` (bucket index → count).
    history: BTreeMap<i64, u64>,
    current: Option<Bucket>,
    /// The bucket that raised the last `rate_spike`, and its severity.
    rate_alerted: Option<(i64, Severity)>,
    recent: VecDeque<MixEntry>,
    /// No `mix_shift` before `actions` reaches this.
    mix_quiet_until: u64,
    peers: BTreeMap<String, Peer>,
    peer_count: u64,
    /// First-time peer contacts inside the `new_peers` window, by time.
    new_peer_events: VecDeque<NewPeerEvent>,
    new_peers_quiet: Option<Quiet>,
    jail_runs: u64,
    llm_replay_misses: u64,
    endorsements_received: u64,
    endorsements_given: u64,
    alerts: BTreeMap<String, u64>,
}

impl AgentModel {
    /// A model with no evidence: its score is the baseline and its clock
    /// is the registration time.
    pub fn new(agent_id: &str, registered_at_ms: i64) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            registered_at_ms,
            clock_ms: registered_at_ms,
            evidence: BTreeMap::new(),
            endorsers: BTreeSet::new(),
            action_counts: BTreeMap::new(),
            actions: 0,
            first_bucket: None,
            history: BTreeMap::new(),
            current: None,
            rate_alerted: None,
            recent: VecDeque::new(),
            mix_quiet_until: 0,
            peers: BTreeMap::new(),
            peer_count: 0,
            new_peer_events: VecDeque::new(),
            new_peers_quiet: None,
            jail_runs: 0,
            llm_replay_misses: 0,
            endorsements_received: 0,
            endorsements_given: 0,
            alerts: BTreeMap::new(),
        }
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The registration time the model started at (unix ms).
    pub fn registered_at_ms(&self) -> i64 {
        self.registered_at_ms
    }

    /// Takes one observation into account and returns what it produced, in
    /// order: one `Adjusted` for evidence and first endorsements, and for
    /// actions each alert followed by its `Adjusted` when it has a score
    /// effect. `cfg` must be the same for the whole life of the model.
    pub fn observe(&mut self, cfg: &TrustConfig, obs: &Observation) -> Vec<Output> {
        self.advance(cfg, obs.at_ms);
        match &obs.kind {
            ObservationKind::Evidence(signal) => {
                vec![Output::Adjusted(self.evidence_observed(cfg, obs, signal))]
            }
            ObservationKind::Endorsed {
                endorser,
                credibility_milli,
            } => self
                .endorsed(cfg, obs, endorser, *credibility_milli)
                .map(Output::Adjusted)
                .into_iter()
                .collect(),
            ObservationKind::Contacted { by } => {
                self.contacted(by, obs.at_ms);
                Vec::new()
            }
            ObservationKind::Action { action_type, peers } => {
                self.action(cfg, obs, action_type, peers)
            }
        }
    }

    /// The largest event time observed (the registration time before any):
    /// monotone, an observation with an earlier time never moves it back.
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// The score in milli-points at `max(clock, at_ms)`, decaying the
    /// evidence to that time without changing the model.
    pub fn score_milli(&self, cfg: &TrustConfig, at_ms: i64) -> Milli {
        let (p, n) = self.totals(cfg, at_ms, false);
        score_from_evidence(cfg, p, n)
    }

    /// The score without the `endorsed` signal: the agent's own behaviour
    /// only.
    pub fn behaviour_score_milli(&self, cfg: &TrustConfig, at_ms: i64) -> Milli {
        let (p, n) = self.totals(cfg, at_ms, true);
        score_from_evidence(cfg, p, n)
    }

    /// How much this agent's endorsements count, in [0, 1000]:
    /// `clamp((behaviour − baseline) · 1000 / (100_000 − baseline), 0, 1000)`
    /// (rounded down; 0 when the baseline is 100_000). Only behaviour above
    /// the baseline gives credibility, and endorsements received never do,
    /// so identities that only endorse each other stay at 0.
    pub fn endorsing_credibility_milli(&self, cfg: &TrustConfig, at_ms: i64) -> Milli {
        let baseline = cfg.baseline();
        let room = SCORE_MAX_MILLI - baseline;
        if room <= 0 {
            return 0;
        }
        let above = self.behaviour_score_milli(cfg, at_ms) - baseline;
        (above.max(0) * 1000 / room).clamp(0, 1000)
    }

    /// The score broken down at `max(clock, at_ms)`.
    pub fn components(&self, cfg: &TrustConfig, at_ms: i64) -> Components {
        let factor = self.factor_to(cfg, at_ms);
        let signals: Vec<SignalComponent> = self
            .evidence
            .iter()
            .map(|(name, sum)| SignalComponent {
                signal: name.clone(),
                positive_milli: to_milli(decay(sum.positive, factor)),
                negative_milli: to_milli(decay(sum.negative, factor)),
                count: sum.count,
            })
            .collect();
        let prior = cfg.prior_strength();
        let alpha = prior_alpha(cfg);
        Components {
            prior_positive_milli: alpha,
            prior_negative_milli: prior - alpha,
            positive_milli: signals.iter().map(|s| s.positive_milli).sum(),
            negative_milli: signals.iter().map(|s| s.negative_milli).sum(),
            signals,
        }
    }

    /// The behavioural fingerprint.
    pub fn fingerprint(&self, cfg: &TrustConfig) -> Fingerprint {
        let (rate_median_milli, current_bucket_count) = match &self.current {
            Some(bucket) => {
                let history = self.rate_history(cfg, bucket.index);
                let median = if history.is_empty() {
                    0
                } else {
                    median_milli(history)
                };
                (median, bucket.count)
            }
            None => (0, 0),
        };
        let mut top_peers: Vec<PeerStat> = self
            .peers
            .iter()
            .map(|(peer, p)| PeerStat {
                peer: peer.clone(),
                interactions: p.interactions,
                first_ms: p.first_ms,
            })
            .collect();
        // BTreeMap order is by id; the stable sort keeps it among equals.
        top_peers.sort_by_key(|p| std::cmp::Reverse(p.interactions));
        top_peers.truncate(MAX_TOP_PEERS);
        Fingerprint {
            action_counts: self.action_counts.clone(),
            actions: self.actions,
            rate_median_milli,
            current_bucket_count,
            bucket_ms: cfg.bucket(),
            top_peers,
            peer_count: self.peer_count,
            jail_runs: self.jail_runs,
            llm_replay_misses: self.llm_replay_misses,
            endorsements_received: self.endorsements_received,
            endorsements_given: self.endorsements_given,
            alerts: self.alerts.clone(),
        }
    }

    /// Whether `endorser` has already endorsed this agent.
    pub fn has_endorsement_from(&self, endorser: &str) -> bool {
        self.endorsers.contains(endorser)
    }

    // ---- evidence ----

    /// Moves the clock to `at_ms` if later, decaying the stored sums.
    fn advance(&mut self, cfg: &TrustConfig, at_ms: i64) {
        if at_ms <= self.clock_ms {
            return;
        }
        let factor = decay_factor_q32(at_ms.saturating_sub(self.clock_ms), cfg.half_life_ms);
        for sum in self.evidence.values_mut() {
            sum.positive = decay(sum.positive, factor);
            sum.negative = decay(sum.negative, factor);
        }
        self.clock_ms = at_ms;
    }

    fn factor_to(&self, cfg: &TrustConfig, at_ms: i64) -> u64 {
        decay_factor_q32(at_ms.saturating_sub(self.clock_ms), cfg.half_life_ms)
    }

    /// (P, N) in thousandths at `max(clock, at_ms)`, optionally without
    /// the `endorsed` signal.
    fn totals(&self, cfg: &TrustConfig, at_ms: i64, behaviour_only: bool) -> (Milli, Milli) {
        let factor = self.factor_to(cfg, at_ms);
        self.evidence
            .iter()
            .filter(|(name, _)| !(behaviour_only && name.as_str() == "endorsed"))
            .fold((0, 0), |(p, n), (_, sum)| {
                (
                    p + to_milli(decay(sum.positive, factor)),
                    n + to_milli(decay(sum.negative, factor)),
                )
            })
    }

    /// Adds evidence observed at `at_ms` (decayed by its age if it is
    /// older than the clock) and returns the explained adjustment.
    #[allow(clippy::too_many_arguments)]
    fn adjust(
        &mut self,
        cfg: &TrustConfig,
        signal: &str,
        at_ms: i64,
        positive: Milli,
        negative: Milli,
        reason: String,
        evidence: Vec<String>,
    ) -> Adjustment {
        let score_before_milli = self.score_milli(cfg, self.clock_ms);
        let age = decay_factor_q32(self.clock_ms.saturating_sub(at_ms), cfg.half_life_ms);
        let sum = self.evidence.entry(signal.to_owned()).or_default();
        sum.positive = sum
            .positive
            .saturating_add(decay(positive.saturating_mul(1 << EVIDENCE_SHIFT), age));
        sum.negative = sum
            .negative
            .saturating_add(decay(negative.saturating_mul(1 << EVIDENCE_SHIFT), age));
        sum.count += 1;
        Adjustment {
            signal: signal.to_owned(),
            positive_milli: positive,
            negative_milli: negative,
            score_before_milli,
            score_after_milli: self.score_milli(cfg, self.clock_ms),
            reason,
            evidence,
            event_time_ms: self.clock_ms,
        }
    }

    fn evidence_observed(
        &mut self,
        cfg: &TrustConfig,
        obs: &Observation,
        signal: &Signal,
    ) -> Adjustment {
        if signal.is_jail() {
            self.jail_runs += 1;
        }
        if *signal == Signal::LlmReplayMiss {
            self.llm_replay_misses += 1;
        }
        let (positive, negative, what) = signal.weigh(cfg);
        let reason = format!(
            "{what}: {} evidence",
            format_signed_milli(if negative > 0 { -negative } else { positive })
        );
        self.adjust(
            cfg,
            signal.name(),
            obs.at_ms,
            positive,
            negative,
            reason,
            cause_and_cites(obs),
        )
    }

    fn endorsed(
        &mut self,
        cfg: &TrustConfig,
        obs: &Observation,
        endorser: &str,
        credibility_milli: Milli,
    ) -> Option<Adjustment> {
        if endorser == self.agent_id || self.endorsers.contains(endorser) {
            return None;
        }
        if self.endorsers.len() >= MAX_ENDORSERS {
            let reason = format!(
                "endorsement by {endorser} not counted: the model already remembers \
                 {MAX_ENDORSERS} endorsers, its bound: +0.000 evidence"
            );
            return Some(self.adjust(
                cfg,
                "endorsed",
                obs.at_ms,
                0,
                0,
                reason,
                cause_and_cites(obs),
            ));
        }
        self.endorsers.insert(endorser.to_owned());
        self.endorsements_received += 1;
        let credibility = credibility_milli.clamp(0, 1000);
        let positive = cfg.weights.endorsed.max(0).saturating_mul(credibility) / 1000;
        let reason = if credibility == 0 {
            format!(
                "endorsed by {endorser}, dampened to nothing: the endorser's own behavioural \
                 trust is at or below the baseline (credibility 0.000): +0.000 evidence"
            )
        } else {
            format!(
                "endorsed by {endorser} with credibility {}: {} evidence",
                format_milli(credibility, 3),
                format_signed_milli(positive)
            )
        };
        Some(self.adjust(
            cfg,
            "endorsed",
            obs.at_ms,
            positive,
            0,
            reason,
            cause_and_cites(obs),
        ))
    }

    // ---- fingerprint and detectors ----

    fn contacted(&mut self, by: &str, at_ms: i64) {
        if by == self.agent_id {
            return;
        }
        if let Some(peer) = self.peers.get_mut(by) {
            peer.interactions += 1;
            peer.first_ms = peer.first_ms.min(at_ms);
        } else {
            self.peer_count += 1;
            if self.peers.len() < MAX_PEERS {
                self.peers.insert(
                    by.to_owned(),
                    Peer {
                        interactions: 1,
                        first_ms: at_ms,
                    },
                );
            }
        }
    }

    fn action(
        &mut self,
        cfg: &TrustConfig,
        obs: &Observation,
        action_type: &str,
        peers: &[String],
    ) -> Vec<Output> {
        self.actions += 1;
        let key = if self.action_counts.contains_key(action_type)
            || self.action_counts.len() < MAX_ACTION_TYPES
        {
            action_type
        } else {
            OTHER_ACTION_TYPE
        };
        *self.action_counts.entry(key.to_owned()).or_insert(0) += 1;
        if action_type == ENDORSED_ACTION_TYPE {
            self.endorsements_given += 1;
        }
        let mut out = Vec::new();
        self.rate_spike(cfg, obs, &mut out);
        self.mix_shift(cfg, obs, key, &mut out);
        self.new_peers(cfg, obs, peers, &mut out);
        for output in &out {
            if let Output::Alert(alert) = output {
                *self
                    .alerts
                    .entry(alert.kind.as_str().to_owned())
                    .or_insert(0) += 1;
            }
        }
        out
    }

    /// The counts of the buckets before `index` since the first action
    /// (missing ones are 0), at most `history_buckets`, in thousandths.
    fn rate_history(&self, cfg: &TrustConfig, index: i64) -> Vec<Milli> {
        let Some(first) = self.first_bucket else {
            return Vec::new();
        };
        let n = index
            .saturating_sub(first)
            .clamp(0, i64::from(cfg.history_buckets));
        (1..=n)
            .map(|back| {
                let count = self.history.get(&(index - back)).copied().unwrap_or(0);
                i64::try_from(count).unwrap_or(i64::MAX / 1000) * 1000
            })
            .collect()
    }

    fn rate_spike(&mut self, cfg: &TrustConfig, obs: &Observation, out: &mut Vec<Output>) {
        let width = cfg.bucket();
        let index = obs.at_ms.div_euclid(width);
        self.first_bucket = Some(self.first_bucket.map_or(index, |f| f.min(index)));
        let keep = i64::from(cfg.history_buckets);
        let current_index = match &mut self.current {
            None => {
                self.current = Some(Bucket::start(index, obs));
                index
            }
            Some(bucket) if index == bucket.index => {
                bucket.push(obs);
                index
            }
            Some(bucket) if index > bucket.index => {
                self.history.insert(bucket.index, bucket.count);
                *bucket = Bucket::start(index, obs);
                index
            }
            Some(bucket) => {
                // A late action in an earlier bucket: counted in the history
                // if the ring still holds it; it cannot be a burst now.
                if index >= bucket.index.saturating_sub(keep) {
                    *self.history.entry(index).or_insert(0) += 1;
                }
                bucket.index
            }
        };
        self.history = self.history.split_off(&current_index.saturating_sub(keep));
        if index != current_index {
            return;
        }
        let Some(count) = self.current.as_ref().map(|b| b.count) else {
            return;
        };
        let history = self.rate_history(cfg, index);
        if history.len() < cfg.min_history_buckets as usize
            || history.is_empty()
            || count < cfg.min_burst_count
        {
            return;
        }
        let n = history.len();
        let x = i128::from(count) * 1000;
        let median = median_milli(history.clone());
        let mad = median_milli(history.iter().map(|c| (c - median).abs()).collect()).max(1000);
        // z = (x − median) / (1.4826 · MAD), in thousandths, rounded down.
        let z = ((x - i128::from(median)) * 1000 * 10_000).div_euclid(14_826 * i128::from(mad));
        let z = i64::try_from(z).unwrap_or(i64::MAX);
        let severity = if z >= cfg.z_critical_milli {
            Severity::Critical
        } else if z >= cfg.z_warning_milli {
            Severity::Warning
        } else {
            return;
        };
        let (upgrade, times) = match self.rate_alerted {
            Some((alerted, _)) if alerted != index => (false, if_critical(severity)),
            None => (false, if_critical(severity)),
            Some((_, Severity::Warning)) if severity == Severity::Critical => (true, 1),
            Some(_) => return,
        };
        self.rate_alerted = Some((index, severity));
        let threshold = if severity == Severity::Critical {
            cfg.z_critical_milli
        } else {
            cfg.z_warning_milli
        };
        let Some(bucket) = &self.current else {
            return;
        };
        let window = Window {
            from_ms: bucket.from_ms,
            to_ms: bucket.to_ms,
            first_event: bucket.first_event.to_string(),
            last_event: bucket.last_event.to_string(),
            count,
        };
        let evidence: Vec<String> = bucket.ids.iter().map(ToString::to_string).collect();
        let detail = format!(
            "{count} actions in one {} bucket against a median of {} over the previous {n} \
             buckets (MAD {}): robust z {}",
            format_duration(width),
            format_milli(median, 1),
            format_milli(mad, 1),
            format_milli(z, 3),
        );
        let upgraded = if upgrade {
            ", upgraded from warning"
        } else {
            ""
        };
        out.push(Output::Alert(Alert {
            kind: AlertKind::RateSpike,
            severity,
            statistic_milli: z,
            threshold_milli: threshold,
            window,
            reason: format!(
                "{detail} >= {} ({}{upgraded})",
                format_milli(threshold, 3),
                severity.as_str()
            ),
            evidence: evidence.clone(),
        }));
        let negative = cfg.weights.burst.max(0).saturating_mul(times);
        let reason = format!(
            "action burst ({} rate_spike{upgraded}): {detail}: {} evidence",
            severity.as_str(),
            format_signed_milli(-negative)
        );
        let at = self.clock_ms;
        let adjustment = self.adjust(cfg, "burst", at, 0, negative, reason, evidence);
        out.push(Output::Adjusted(adjustment));
    }

    fn mix_shift(
        &mut self,
        cfg: &TrustConfig,
        obs: &Observation,
        key: &str,
        out: &mut Vec<Output>,
    ) {
        let window_len = cfg.mix_window as usize;
        self.recent.push_back(MixEntry {
            action_type: key.to_owned(),
            at_ms: obs.at_ms,
            event_id: EventRef::new(&obs.event_id),
        });
        while self.recent.len() > window_len {
            self.recent.pop_front();
        }
        let recent_len = self.recent.len() as u64;
        let baseline_len = self.actions - recent_len;
        if window_len == 0
            || self.recent.len() < window_len
            || baseline_len < cfg.mix_min_baseline.max(1)
            || self.actions < self.mix_quiet_until
        {
            return;
        }
        let mut recent_counts: BTreeMap<&str, u64> = BTreeMap::new();
        for entry in &self.recent {
            *recent_counts.entry(entry.action_type.as_str()).or_insert(0) += 1;
        }
        let (w_total, b_total) = (i128::from(recent_len), i128::from(baseline_len));
        let mut distance: i128 = 0;
        let mut baseline_top: (&str, u64) = ("", 0);
        for (action_type, &all) in &self.action_counts {
            let w = recent_counts
                .get(action_type.as_str())
                .copied()
                .unwrap_or(0);
            let b = all.saturating_sub(w);
            if b > baseline_top.1 {
                baseline_top = (action_type.as_str(), b);
            }
            distance += (i128::from(w) * b_total - i128::from(b) * w_total).abs();
        }
        // TVD = ½ Σ |w/W − b/B|, in thousandths, rounded down.
        let tvd = i64::try_from(distance * 1000 / (2 * w_total * b_total)).unwrap_or(i64::MAX);
        let severity = if tvd >= cfg.mix_critical_milli {
            Severity::Critical
        } else if tvd >= cfg.mix_warning_milli {
            Severity::Warning
        } else {
            return;
        };
        self.mix_quiet_until = self.actions + recent_len;
        let recent_top = recent_counts.iter().fold(
            ("", 0),
            |top, (t, &c)| if c > top.1 { (*t, c) } else { top },
        );
        let threshold = if severity == Severity::Critical {
            cfg.mix_critical_milli
        } else {
            cfg.mix_warning_milli
        };
        let (mut from_ms, mut to_ms) = (i64::MAX, i64::MIN);
        for entry in &self.recent {
            from_ms = from_ms.min(entry.at_ms);
            to_ms = to_ms.max(entry.at_ms);
        }
        let first_event = self
            .recent
            .front()
            .map(|e| e.event_id.to_string())
            .unwrap_or_default();
        let last_event = self
            .recent
            .back()
            .map(|e| e.event_id.to_string())
            .unwrap_or_default();
        out.push(Output::Alert(Alert {
            kind: AlertKind::MixShift,
            severity,
            statistic_milli: tvd,
            threshold_milli: threshold,
            window: Window {
                from_ms,
                to_ms,
                first_event,
                last_event,
                count: recent_len,
            },
            reason: format!(
                "the last {recent_len} actions (mostly {}, {} of {recent_len}) differ from the \
                 {baseline_len} earlier ones (mostly {}, {} of {baseline_len}): total variation \
                 distance {} >= {} ({})",
                recent_top.0,
                recent_top.1,
                baseline_top.0,
                baseline_top.1,
                format_milli(tvd, 3),
                format_milli(threshold, 3),
                severity.as_str()
            ),
            evidence: self
                .recent
                .iter()
                .take(MAX_WINDOW_IDS)
                .map(|e| e.event_id.to_string())
                .collect(),
        }));
    }

    fn new_peers(
        &mut self,
        cfg: &TrustConfig,
        obs: &Observation,
        peers: &[String],
        out: &mut Vec<Output>,
    ) {
        let window_ms = cfg.new_peers_window_ms.max(0);
        let horizon = self.clock_ms.saturating_sub(window_ms);
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut any_new = false;
        for peer in peers {
            if *peer == self.agent_id || !seen.insert(peer.as_str()) {
                continue;
            }
            if let Some(known) = self.peers.get_mut(peer) {
                known.interactions += 1;
                known.first_ms = known.first_ms.min(obs.at_ms);
                continue;
            }
            self.peer_count += 1;
            if self.peers.len() < MAX_PEERS {
                self.peers.insert(
                    peer.clone(),
                    Peer {
                        interactions: 1,
                        first_ms: obs.at_ms,
                    },
                );
            }
            if obs.at_ms > horizon {
                let at = self
                    .new_peer_events
                    .partition_point(|e| e.at_ms <= obs.at_ms);
                self.new_peer_events.insert(
                    at,
                    NewPeerEvent {
                        at_ms: obs.at_ms,
                        event_id: EventRef::new(&obs.event_id),
                    },
                );
                any_new = true;
            }
        }
        while self
            .new_peer_events
            .front()
            .is_some_and(|e| e.at_ms <= horizon)
        {
            self.new_peer_events.pop_front();
        }
        while self.new_peer_events.len() > MAX_NEW_PEER_EVENTS {
            self.new_peer_events.pop_front();
        }
        if self
            .new_peers_quiet
            .as_ref()
            .is_some_and(|q| self.clock_ms >= q.until_ms)
        {
            self.new_peers_quiet = None;
        }
        if !any_new {
            return;
        }
        let count = self.new_peer_events.len() as u64;
        let severity = if count >= cfg.new_peers_critical.max(1) {
            Severity::Critical
        } else if count >= cfg.new_peers_warning.max(1) {
            Severity::Warning
        } else {
            return;
        };
        let (upgrade, times) = match &self.new_peers_quiet {
            None => (false, if_critical(severity)),
            Some(q) if q.severity == Severity::Warning && severity == Severity::Critical => {
                (true, 1)
            }
            Some(_) => return,
        };
        self.new_peers_quiet = Some(Quiet {
            until_ms: if upgrade {
                self.new_peers_quiet
                    .as_ref()
                    .map_or(self.clock_ms, |q| q.until_ms)
            } else {
                self.clock_ms.saturating_add(window_ms)
            },
            severity,
        });
        let threshold = if severity == Severity::Critical {
            cfg.new_peers_critical.max(1)
        } else {
            cfg.new_peers_warning.max(1)
        };
        let (Some(first), Some(last)) = (self.new_peer_events.front(), self.new_peer_events.back())
        else {
            return;
        };
        let window = Window {
            from_ms: first.at_ms,
            to_ms: last.at_ms,
            first_event: first.event_id.to_string(),
            last_event: last.event_id.to_string(),
            count,
        };
        let mut evidence: Vec<String> = Vec::new();
        for event in &self.new_peer_events {
            if evidence.len() == MAX_WINDOW_IDS {
                break;
            }
            if !evidence.iter().any(|id| event.event_id.is(id)) {
                evidence.push(event.event_id.to_string());
            }
        }
        let upgraded = if upgrade {
            ", upgraded from warning"
        } else {
            ""
        };
        let detail = format!(
            "{count} peers addressed for the first time within {}",
            format_duration(window_ms)
        );
        out.push(Output::Alert(Alert {
            kind: AlertKind::NewPeers,
            severity,
            statistic_milli: milli_count(count),
            threshold_milli: milli_count(threshold),
            window,
            reason: format!("{detail} >= {threshold} ({}{upgraded})", severity.as_str()),
            evidence: evidence.clone(),
        }));
        let negative = cfg.weights.fan_out.max(0).saturating_mul(times);
        let reason = format!(
            "fan-out ({} new_peers{upgraded}): {detail}: {} evidence",
            severity.as_str(),
            format_signed_milli(-negative)
        );
        let at = self.clock_ms;
        let adjustment = self.adjust(cfg, "fan_out", at, 0, negative, reason, evidence);
        out.push(Output::Adjusted(adjustment));
    }
}

/// The score for decayed evidence `positive` (P) and `negative` (N):
/// `100_000 · (α0 + P) / (α0 + β0 + P + N)` with `α0 + β0 =
/// prior_strength` and `α0 = prior_strength · baseline / 100_000`,
/// computed exactly as `(prior_strength · baseline + 100_000 · P) /
/// (prior_strength + P + N)` in `i128` (so α0 is never rounded), rounded
/// to the nearest milli-point (half up) and clamped to [0, 100_000].
/// Without evidence it is exactly the baseline.
pub fn score_from_evidence(cfg: &TrustConfig, positive: Milli, negative: Milli) -> Milli {
    let prior = i128::from(cfg.prior_strength());
    let baseline = i128::from(cfg.baseline());
    let (p, n) = (i128::from(positive.max(0)), i128::from(negative.max(0)));
    let numerator = prior * baseline + i128::from(SCORE_MAX_MILLI) * p;
    let denominator = prior + p + n;
    if denominator == 0 {
        return cfg.baseline();
    }
    let score = div_round(numerator, denominator).clamp(0, i128::from(SCORE_MAX_MILLI));
    i64::try_from(score).unwrap_or(cfg.baseline())
}

/// α0 = prior_strength · baseline / 100_000, rounded half up.
fn prior_alpha(cfg: &TrustConfig) -> Milli {
    let alpha = div_round(
        i128::from(cfg.prior_strength()) * i128::from(cfg.baseline()),
        i128::from(SCORE_MAX_MILLI),
    );
    i64::try_from(alpha).unwrap_or(0)
}

/// Stored evidence (thousandths shifted by `EVIDENCE_SHIFT`) to
/// thousandths, rounded half up.
fn to_milli(stored: i64) -> Milli {
    ((i128::from(stored) + (1 << (EVIDENCE_SHIFT - 1))) >> EVIDENCE_SHIFT) as Milli
}

/// The median of thousandths values (the mean of the middle two for an even
/// count; exact, the values are whole actions). `values` must not be empty.
fn median_milli(mut values: Vec<Milli>) -> Milli {
    values.sort_unstable();
    let mid = values.len() / 2;
    match values.len() {
        0 => 0,
        len if len % 2 == 1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2,
    }
}

fn if_critical(severity: Severity) -> i64 {
    if severity == Severity::Critical {
        2
    } else {
        1
    }
}

fn milli_count(count: u64) -> Milli {
    i64::try_from(count)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

fn cause_and_cites(obs: &Observation) -> Vec<String> {
    std::iter::once(obs.event_id.clone())
        .chain(obs.cites.iter().cloned())
        .collect()
}

/// `60 s`, `10 min`, `250 ms`, `2 h`: the largest whole unit.
pub(crate) fn format_duration(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "min"),
        (1_000, "s"),
    ];
    for (unit, name) in UNITS {
        if ms != 0 && ms % unit == 0 {
            return format!("{} {name}", ms / unit);
        }
    }
    format!("{ms} ms")
}
