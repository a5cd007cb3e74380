//! Sanctions and what they restrict: a [`Sanction`] is issued by an
//! operator or by a policy ([`crate::policy::Decision`]), may expire, and
//! may be lifted. [`Restrictions`] is the fold of the sanctions in force at
//! a time, and [`check`] is what the gateway asks before letting an agent
//! act, run or appeal.
//!
//! | kind         | actions | runs | network      | rate limit       |
//! |--------------|---------|------|--------------|------------------|
//! | `warn`       | allowed | allowed | as approved | none            |
//! | `throttle`   | allowed | allowed | as approved | `per_minute` (the strictest throttle wins) |
//! | `quarantine` | allowed | allowed | none, no LLM | none            |
//! | `suspend`    | refused | refused | -           | -                |
//! | `ban`        | refused | refused | -           | -                |
//!
//! Appeals are never restricted by a sanction: an appeal is the one thing
//! a sanctioned agent may still do, a ban included (the appeal rules are in
//! [`crate::appeal`]). [`Restrictions::appeal_allowed`] is false only when
//! no sanction is in force, since there is then nothing to appeal.
//!
//! The fold does not depend on the order of the sanctions, and when several
//! sanctions impose the same restriction the one named by a refusal is
//! chosen deterministically: the most severe kind, then the earliest
//! issued, then the smallest id. Lifting one sanction ([`lift`]) and
//! folding the rest therefore restores exactly what that sanction took
//! away and nothing another sanction in force still takes away.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a sanction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanctionKind {
    /// A recorded warning; restricts nothing.
    Warn,
    /// At most `per_minute` actions a minute.
    Throttle {
        /// Actions allowed per minute (at least 1).
        per_minute: u32,
    },
    /// Runs only with network `none` and no LLM.
    Quarantine,
    /// No actions and no runs, for a while.
    Suspend,
    /// No actions and no runs.
    Ban,
}

impl SanctionKind {
    /// The policy format's name: `warn`, `throttle`, `quarantine`,
    /// `suspend` or `ban`.
    pub fn name(self) -> &'static str {
        match self {
            SanctionKind::Warn => "warn",
            SanctionKind::Throttle { .. } => "throttle",
            SanctionKind::Quarantine => "quarantine",
            SanctionKind::Suspend => "suspend",
            SanctionKind::Ban => "ban",
        }
    }

    /// How severe, from 0 (`warn`) to 4 (`ban`).
    pub fn severity(self) -> u8 {
        match self {
            SanctionKind::Warn => 0,
            SanctionKind::Throttle { .. } => 1,
            SanctionKind::Quarantine => 2,
            SanctionKind::Suspend => 3,
            SanctionKind::Ban => 4,
        }
    }

    /// Whether it refuses the agent's actions and runs (`suspend`, `ban`).
    pub fn blocks(self) -> bool {
        matches!(self, SanctionKind::Suspend | SanctionKind::Ban)
    }
}

impl fmt::Display for SanctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanctionKind::Throttle { per_minute } => write!(f, "throttle ({per_minute}/min)"),
            other => f.write_str(other.name()),
        }
    }
}

/// A sanction against one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sanction {
    /// Unique within the agent's sanctions (a policy's sanctions are named
    /// `<policy id>:<trigger event id>`).
    pub id: String,
    /// The sanctioned agent (the only one that may appeal it).
    pub agent_id: String,
    /// What it does.
    pub kind: SanctionKind,
    /// Why, in words.
    pub reason: String,
    /// The ids of the events it cites, the cause first.
    pub evidence: Vec<String>,
    /// The policy that issued it; `None` for an operator's sanction.
    pub policy_id: Option<String>,
    /// When it was issued (unix ms).
    pub issued_at_ms: i64,
    /// When it expires (unix ms, exclusive); `None` for never.
    pub expires_at_ms: Option<i64>,
}

impl Sanction {
    /// Whether it has not expired at `now_ms` (lifting is tracked by the
    /// ledger, [`crate::governance::Governance`]).
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_none_or(|expires| now_ms < expires)
    }

    /// A short reference for refusals.
    pub fn reference(&self) -> SanctionRef {
        SanctionRef {
            id: self.id.clone(),
            kind: self.kind,
            reason: self.reason.clone(),
        }
    }

    /// The order in which sanctions name a restriction: most severe first,
    /// then earliest issued, then smallest id.
    fn precedence(&self, other: &Sanction) -> Ordering {
        other
            .kind
            .severity()
            .cmp(&self.kind.severity())
            .then(self.issued_at_ms.cmp(&other.issued_at_ms))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// The sanction behind a restriction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanctionRef {
    /// The sanction's id.
    pub id: String,
    /// Its kind.
    pub kind: SanctionKind,
    /// Its reason.
    pub reason: String,
}

/// What the sanctions in force restrict, and which sanction imposes each
/// restriction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restrictions {
    /// Whether the gateway accepts the agent's actions (refused under
    /// `suspend` and `ban`).
    pub actions_allowed: bool,
    /// Whether the agent may be run (refused under `suspend` and `ban`).
    pub runs_allowed: bool,
    /// Whether runs get network `none` and no LLM (`quarantine`).
    pub network_none: bool,
    /// The strictest `throttle`, in actions per minute.
    pub rate_limit_per_minute: Option<u32>,
    /// Whether the agent has a sanction to appeal.
    pub appeal_allowed: bool,
    /// The sanction that refuses actions and runs, if any.
    pub blocked_by: Option<SanctionRef>,
    /// The sanction that quarantines, if any.
    pub quarantined_by: Option<SanctionRef>,
    /// The sanction whose throttle is the rate limit, if any.
    pub throttled_by: Option<SanctionRef>,
}

impl Default for Restrictions {
    fn default() -> Self {
        Restrictions::none()
    }
}

impl Restrictions {
    /// No sanction in force: everything allowed.
    pub fn none() -> Restrictions {
        Restrictions {
            actions_allowed: true,
            runs_allowed: true,
            network_none: false,
            rate_limit_per_minute: None,
            appeal_allowed: false,
            blocked_by: None,
            quarantined_by: None,
            throttled_by: None,
        }
    }

    /// The fold of the sanctions in force at `now_ms` (expired ones are
    /// skipped; lifted ones must not be passed). The result does not depend
    /// on the order of `sanctions`.
    pub fn fold<'a>(
        sanctions: impl IntoIterator<Item = &'a Sanction>,
        now_ms: i64,
    ) -> Restrictions {
        let mut blocker: Option<&Sanction> = None;
        let mut quarantine: Option<&Sanction> = None;
        let mut throttle: Option<(&Sanction, u32)> = None;
        let mut any = false;
        for s in sanctions.into_iter().filter(|s| s.is_active(now_ms)) {
            any = true;
            let first = |current: Option<&'a Sanction>| match current {
                Some(c) if c.precedence(s) != Ordering::Greater => Some(c),
                _ => Some(s),
            };
            match s.kind {
                SanctionKind::Warn => {}
                SanctionKind::Throttle { per_minute } => {
                    let stricter = match throttle {
                        None => true,
                        Some((c, rate)) => {
                            per_minute < rate || (per_minute == rate && s.precedence(c).is_lt())
                        }
                    };
                    if stricter {
                        throttle = Some((s, per_minute));
                    }
                }
                SanctionKind::Quarantine => quarantine = first(quarantine),
                SanctionKind::Suspend | SanctionKind::Ban => blocker = first(blocker),
            }
        }
        Restrictions {
            actions_allowed: blocker.is_none(),
            runs_allowed: blocker.is_none(),
            network_none: quarantine.is_some(),
            rate_limit_per_minute: throttle.map(|(_, rate)| rate),
            appeal_allowed: any,
            blocked_by: blocker.map(Sanction::reference),
            quarantined_by: quarantine.map(Sanction::reference),
            throttled_by: throttle.map(|(s, _)| s.reference()),
        }
    }
}

/// The sanctions of `sanctions` in force at `now_ms` (not expired).
pub fn in_force(sanctions: &[Sanction], now_ms: i64) -> Vec<&Sanction> {
    sanctions.iter().filter(|s| s.is_active(now_ms)).collect()
}

/// `lift` found no sanction with that id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no sanction {sanction_id} to lift: check the id with amai sanction list")]
pub struct UnknownSanction {
    /// The id asked for.
    pub sanction_id: String,
}

/// Removes exactly the sanction `sanction_id`: the remaining sanctions (in
/// their order) and the lifted one. Folding the remaining ones gives the
/// restrictions after the lift.
pub fn lift(
    sanctions: &[Sanction],
    sanction_id: &str,
) -> Result<(Vec<Sanction>, Sanction), UnknownSanction> {
    let index = sanctions
        .iter()
        .position(|s| s.id == sanction_id)
        .ok_or_else(|| UnknownSanction {
            sanction_id: sanction_id.to_owned(),
        })?;
    let mut remaining = sanctions.to_vec();
    let lifted = remaining.remove(index);
    Ok((remaining, lifted))
}

/// What an agent asks the gateway to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionClass {
    /// Any action (message, tool call, ...).
    Action,
    /// A run of the agent.
    Run,
    /// An appeal of one of its sanctions.
    Appeal,
}

impl ActionClass {
    /// `action`, `run` or `appeal`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionClass::Action => "action",
            ActionClass::Run => "run",
            ActionClass::Appeal => "appeal",
        }
    }
}

/// Why the gateway refuses what an agent asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SanctionRefusal {
    /// A sanction in force refuses it.
    #[error("{} refused: sanction {} ({}) is in force: {}; the agent may appeal it: amai appeal file {}", class.as_str(), sanction.id, sanction.kind, sanction.reason, sanction.id)]
    Sanctioned {
        /// What was asked.
        class: ActionClass,
        /// The sanction that refuses it.
        sanction: SanctionRef,
    },
    /// An appeal, while no sanction is in force.
    #[error("nothing to appeal: no sanction is in force")]
    NothingToAppeal,
}

/// The kind of a [`SanctionRefusal`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SanctionRefusalKind {
    /// [`SanctionRefusal::Sanctioned`].
    Sanctioned,
    /// [`SanctionRefusal::NothingToAppeal`].
    NothingToAppeal,
}

impl SanctionRefusal {
    /// The kind, to match on.
    pub fn kind(&self) -> SanctionRefusalKind {
        match self {
            SanctionRefusal::Sanctioned { .. } => SanctionRefusalKind::Sanctioned,
            SanctionRefusal::NothingToAppeal => SanctionRefusalKind::NothingToAppeal,
        }
    }
}

/// Whether the restrictions let the agent do `class`: actions and runs are
/// refused under `suspend` or `ban`, naming the sanction; appeals are
/// refused only when there is nothing to appeal. A quarantine or a
/// throttle does not refuse: the caller applies
/// [`Restrictions::network_none`] and
/// [`Restrictions::rate_limit_per_minute`].
pub fn check(restrictions: &Restrictions, class: ActionClass) -> Result<(), SanctionRefusal> {
    match class {
        ActionClass::Action | ActionClass::Run => match &restrictions.blocked_by {
            Some(sanction) => Err(SanctionRefusal::Sanctioned {
                class,
                sanction: sanction.clone(),
            }),
            None => Ok(()),
        },
        ActionClass::Appeal if restrictions.appeal_allowed => Ok(()),
        ActionClass::Appeal => Err(SanctionRefusal::NothingToAppeal),
    }
}
