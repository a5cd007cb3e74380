//! Appeals: a sanctioned agent asks an operator to lift one of its
//! sanctions, and the operator lifts or upholds it with a note.
//!
//! The rules, decided by [`decide_file`] and [`decide_resolve`] over the
//! agent's [`Governance`] ledger:
//!
//! - only the sanctioned agent appeals, and only its own sanction;
//! - the statement is 1 to [`MAX_STATEMENT_BYTES`] bytes, not blank;
//! - an unknown, lifted or expired sanction cannot be appealed, each
//!   refused with its own kind;
//! - one open appeal per sanction, and an upheld sanction is not appealed
//!   again (the operator has answered; an operator may still lift it);
//! - an appeal is resolved once; lifting resolves the sanction's open
//!   appeal too;
//! - resolving with `Lift` lifts the sanction (unless it expired in the
//!   meantime: then only the resolution is recorded).
//!
//! Every sanction, a ban included, can be appealed.

use serde::{Deserialize, Serialize};

use crate::governance::{
    Governance, GovernanceFact, GovernanceRefusal, SanctionStatus, MAX_NOTE_BYTES,
};

/// The longest appeal statement, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 2_048;

/// An appeal filed by an agent against one of its sanctions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appeal {
    /// Unique within the agent's appeals.
    pub id: String,
    /// The sanction appealed.
    pub sanction_id: String,
    /// The appellant (the sanctioned agent).
    pub agent_id: String,
    /// What the agent says (at most [`MAX_STATEMENT_BYTES`] bytes).
    pub statement: String,
    /// When it was filed (unix ms).
    pub filed_at_ms: i64,
}

/// An operator's answer to an appeal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Lift the sanction.
    Lift,
    /// Keep the sanction.
    Uphold,
}

/// How an appeal was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppealResolution {
    /// Lift or uphold.
    pub resolution: Resolution,
    /// The operator who resolved it.
    pub operator: String,
    /// The operator's note.
    pub note: String,
    /// When (unix ms).
    pub at_ms: i64,
}

/// An appeal and, once resolved, its resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppealEntry {
    /// The appeal.
    pub appeal: Appeal,
    /// Its resolution, once resolved.
    pub resolved: Option<AppealResolution>,
}

impl AppealEntry {
    /// Whether it awaits an operator.
    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }
}

/// `FileAppeal`: the appeal to file (its time is the decision's `now`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAppeal {
    /// The new appeal's id.
    pub id: String,
    /// The sanction appealed.
    pub sanction_id: String,
    /// The authenticated identity of the appellant.
    pub agent_id: String,
    /// What the agent says.
    pub statement: String,
}

/// `ResolveAppeal`: an operator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveAppeal {
    /// The appeal.
    pub appeal_id: String,
    /// Lift or uphold.
    pub resolution: Resolution,
    /// The operator.
    pub operator: String,
    /// The operator's note (1 to [`MAX_NOTE_BYTES`] bytes).
    pub note: String,
}

/// Decides a `FileAppeal` over the ledger at `now_ms`.
pub fn decide_file(
    ledger: &Governance,
    command: &FileAppeal,
    now_ms: i64,
) -> Result<Vec<GovernanceFact>, GovernanceRefusal> {
    if command.agent_id != ledger.agent_id() {
        return Err(GovernanceRefusal::NotYourSanction {
            agent_id: command.agent_id.clone(),
            sanction_id: command.sanction_id.clone(),
        });
    }
    if command.statement.trim().is_empty() {
        return Err(GovernanceRefusal::EmptyStatement);
    }
    if command.statement.len() > MAX_STATEMENT_BYTES {
        return Err(GovernanceRefusal::StatementTooLong {
            bytes: command.statement.len(),
        });
    }
    if ledger.appeal(&command.id).is_some() {
        return Err(GovernanceRefusal::DuplicateAppeal {
            appeal_id: command.id.clone(),
        });
    }
    let Some(entry) = ledger.sanction(&command.sanction_id) else {
        return Err(GovernanceRefusal::UnknownSanction {
            sanction_id: command.sanction_id.clone(),
        });
    };
    if entry.sanction.agent_id != command.agent_id {
        return Err(GovernanceRefusal::NotYourSanction {
            agent_id: command.agent_id.clone(),
            sanction_id: command.sanction_id.clone(),
        });
    }
    match entry.status(now_ms) {
        SanctionStatus::Lifted => {
            return Err(GovernanceRefusal::SanctionLifted {
                sanction_id: command.sanction_id.clone(),
            })
        }
        SanctionStatus::Expired => {
            return Err(GovernanceRefusal::SanctionExpired {
                sanction_id: command.sanction_id.clone(),
            })
        }
        SanctionStatus::Active => {}
    }
    for other in ledger.appeals_of(&command.sanction_id) {
        match &other.resolved {
            None => {
                return Err(GovernanceRefusal::AppealAlreadyOpen {
                    sanction_id: command.sanction_id.clone(),
                    appeal_id: other.appeal.id.clone(),
                })
            }
            Some(r) if r.resolution == Resolution::Uphold => {
                return Err(GovernanceRefusal::AlreadyUpheld {
                    sanction_id: command.sanction_id.clone(),
                    appeal_id: other.appeal.id.clone(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(vec![GovernanceFact::AppealFiled(Appeal {
        id: command.id.clone(),
        sanction_id: command.sanction_id.clone(),
        agent_id: command.agent_id.clone(),
        statement: command.statement.clone(),
        filed_at_ms: now_ms,
    })])
}

/// Decides a `ResolveAppeal` over the ledger at `now_ms`.
pub fn decide_resolve(
    ledger: &Governance,
    command: &ResolveAppeal,
    now_ms: i64,
) -> Result<Vec<GovernanceFact>, GovernanceRefusal> {
    let Some(entry) = ledger.appeal(&command.appeal_id) else {
        return Err(GovernanceRefusal::UnknownAppeal {
            appeal_id: command.appeal_id.clone(),
        });
    };
    if let Some(resolved) = &entry.resolved {
        return Err(GovernanceRefusal::AlreadyResolved {
            appeal_id: command.appeal_id.clone(),
            resolution: resolved.resolution,
        });
    }
    if command.note.trim().is_empty() || command.note.len() > MAX_NOTE_BYTES {
        return Err(GovernanceRefusal::InvalidNote);
    }
    let mut facts = vec![GovernanceFact::AppealResolved {
        appeal_id: command.appeal_id.clone(),
        resolution: command.resolution,
        operator: command.operator.clone(),
        note: command.note.clone(),
        at_ms: now_ms,
    }];
    let sanction_id = &entry.appeal.sanction_id;
    let active = ledger
        .sanction(sanction_id)
        .is_some_and(|s| s.status(now_ms) == SanctionStatus::Active);
    if command.resolution == Resolution::Lift && active {
        facts.push(GovernanceFact::SanctionLifted {
            sanction_id: sanction_id.clone(),
            by: command.operator.clone(),
            note: command.note.clone(),
            appeal_id: Some(command.appeal_id.clone()),
            at_ms: now_ms,
        });
    }
    Ok(facts)
}
