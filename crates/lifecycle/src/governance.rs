//! The governance ledger of one agent ([`Governance`]): every sanction it
//! received (in force, expired or lifted) and every appeal it filed.
//! [`decide`] turns a [`GovernanceCommand`] into [`GovernanceFact`]s or a
//! [`GovernanceRefusal`]; [`apply`] folds the facts.
//!
//! Imposing is idempotent: a sanction with an id the ledger already holds
//! and the same content (a policy decision redelivered: its id is derived
//! from the policy and the trigger) produces no fact; the same id with
//! different content is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::appeal::{self, AppealEntry, AppealResolution, FileAppeal, Resolution, ResolveAppeal};
use crate::sanction::{Restrictions, Sanction, SanctionKind};
use crate::Aggregate;

/// The longest operator note or sanction reason, in bytes.
pub const MAX_NOTE_BYTES: usize = 2_048;

/// Where a sanction stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanctionStatus {
    /// In force.
    Active,
    /// Past its expiry.
    Expired,
    /// Lifted by an operator (directly or by an appeal).
    Lifted,
}

/// How a sanction was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifted {
    /// The operator.
    pub by: String,
    /// The operator's note.
    pub note: String,
    /// The appeal that lifted it, if any.
    pub appeal_id: Option<String>,
    /// When (unix ms).
    pub at_ms: i64,
}

/// A sanction and, once lifted, how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SanctionEntry {
    /// The sanction.
    pub sanction: Sanction,
    /// How it was lifted, once lifted.
    pub lifted: Option<Lifted>,
}

impl SanctionEntry {
    /// Where it stands at `now_ms` (lifted wins over expired).
    pub fn status(&self, now_ms: i64) -> SanctionStatus {
        if self.lifted.is_some() {
            SanctionStatus::Lifted
        } else if self.sanction.is_active(now_ms) {
            SanctionStatus::Active
        } else {
            SanctionStatus::Expired
        }
    }
}

/// One agent's sanctions and appeals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Governance {
    agent_id: String,
    sanctions: BTreeMap<String, SanctionEntry>,
    appeals: BTreeMap<String, AppealEntry>,
}

impl Governance {
    /// An empty ledger for `agent_id`.
    pub fn new(agent_id: impl Into<String>) -> Governance {
        Governance {
            agent_id: agent_id.into(),
            sanctions: BTreeMap::new(),
            appeals: BTreeMap::new(),
        }
    }

    /// The agent.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// A sanction by id.
    pub fn sanction(&self, id: &str) -> Option<&SanctionEntry> {
        self.sanctions.get(id)
    }

    /// Every sanction, by id.
    pub fn sanctions(&self) -> impl Iterator<Item = &SanctionEntry> {
        self.sanctions.values()
    }

    /// The sanctions in force at `now_ms`, by id.
    pub fn in_force(&self, now_ms: i64) -> Vec<&Sanction> {
        self.sanctions
            .values()
            .filter(|e| e.status(now_ms) == SanctionStatus::Active)
            .map(|e| &e.sanction)
            .collect()
    }

    /// The restrictions at `now_ms`: the fold of the sanctions in force.
    pub fn restrictions(&self, now_ms: i64) -> Restrictions {
        Restrictions::fold(self.in_force(now_ms), now_ms)
    }

    /// An appeal by id.
    pub fn appeal(&self, id: &str) -> Option<&AppealEntry> {
        self.appeals.get(id)
    }

    /// Every appeal, by id.
    pub fn appeals(&self) -> impl Iterator<Item = &AppealEntry> {
        self.appeals.values()
    }

    /// The appeals of one sanction, by appeal id.
    pub fn appeals_of<'a>(&'a self, sanction_id: &'a str) -> impl Iterator<Item = &'a AppealEntry> {
        self.appeals
            .values()
            .filter(move |a| a.appeal.sanction_id == sanction_id)
    }
}

/// A request to change an agent's governance ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GovernanceCommand {
    /// Impose a sanction (an operator's, or a policy decision's:
    /// [`crate::policy::Decision::to_sanction`]).
    Impose(Sanction),
    /// Lift a sanction in force (operator).
    Lift {
        /// The sanction.
        sanction_id: String,
        /// The operator.
        by: String,
        /// Why (1 to [`MAX_NOTE_BYTES`] bytes).
        note: String,
    },
    /// File an appeal (the sanctioned agent).
    FileAppeal(FileAppeal),
    /// Resolve an appeal (operator).
    ResolveAppeal(ResolveAppeal),
}

/// What happened to an agent's governance ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fact")]
pub enum GovernanceFact {
    /// A sanction was imposed.
    SanctionImposed(Sanction),
    /// A sanction was lifted.
    SanctionLifted {
        /// The sanction.
        sanction_id: String,
        /// The operator.
        by: String,
        /// The operator's note.
        note: String,
        /// The appeal that lifted it, if any.
        appeal_id: Option<String>,
        /// When.
        at_ms: i64,
    },
    /// An appeal was filed.
    AppealFiled(appeal::Appeal),
    /// An appeal was resolved.
    AppealResolved {
        /// The appeal.
        appeal_id: String,
        /// Lift or uphold.
        resolution: Resolution,
        /// The operator.
        operator: String,
        /// The operator's note.
        note: String,
        /// When.
        at_ms: i64,
    },
}

/// Why a governance command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceRefusal {
    /// The sanction is for another agent than the ledger's.
    #[error("sanction {sanction_id} is for agent {sanction_agent}, not {ledger_agent}: impose it on that agent's ledger")]
    WrongAgent {
        /// The sanction.
        sanction_id: String,
        /// Its agent.
        sanction_agent: String,
        /// The ledger's agent.
        ledger_agent: String,
    },
    /// A different sanction already has this id.
    #[error("a different sanction already has id {sanction_id}: choose a new id")]
    DuplicateSanction {
        /// The id.
        sanction_id: String,
    },
    /// The sanction is malformed (empty id or reason, throttle of 0, expiry
    /// not after issue).
    #[error("sanction {sanction_id} is malformed: {problem}")]
    InvalidSanction {
        /// The sanction.
        sanction_id: String,
        /// What is wrong.
        problem: String,
    },
    /// No sanction with this id.
    #[error("no sanction {sanction_id}: check the id with amai sanction list")]
    UnknownSanction {
        /// The id.
        sanction_id: String,
    },
    /// The sanction was already lifted.
    #[error("sanction {sanction_id} was already lifted: nothing to do")]
    SanctionLifted {
        /// The sanction.
        sanction_id: String,
    },
    /// The sanction expired.
    #[error("sanction {sanction_id} has expired: it no longer restricts anything")]
    SanctionExpired {
        /// The sanction.
        sanction_id: String,
    },
    /// The appellant is not the sanctioned agent.
    #[error("agent {agent_id} may not appeal sanction {sanction_id}: an agent appeals only its own sanctions")]
    NotYourSanction {
        /// The appellant.
        agent_id: String,
        /// The sanction.
        sanction_id: String,
    },
    /// The statement is blank.
    #[error(
        "the appeal needs a statement (1 to {} bytes)",
        appeal::MAX_STATEMENT_BYTES
    )]
    EmptyStatement,
    /// The statement is too long.
    #[error(
        "the statement is {bytes} bytes, more than {}: shorten it",
        appeal::MAX_STATEMENT_BYTES
    )]
    StatementTooLong {
        /// Its length.
        bytes: usize,
    },
    /// An appeal with this id exists.
    #[error("appeal {appeal_id} already exists: choose a new id")]
    DuplicateAppeal {
        /// The id.
        appeal_id: String,
    },
    /// The sanction already has an open appeal.
    #[error("sanction {sanction_id} already has an open appeal ({appeal_id}): wait for an operator to resolve it")]
    AppealAlreadyOpen {
        /// The sanction.
        sanction_id: String,
        /// The open appeal.
        appeal_id: String,
    },
    /// An appeal of the sanction was upheld.
    #[error(
        "an appeal of sanction {sanction_id} was upheld ({appeal_id}): it cannot be appealed again"
    )]
    AlreadyUpheld {
        /// The sanction.
        sanction_id: String,
        /// The upheld appeal.
        appeal_id: String,
    },
    /// No appeal with this id.
    #[error("no appeal {appeal_id}: check the id with amai appeal list")]
    UnknownAppeal {
        /// The id.
        appeal_id: String,
    },
    /// The appeal was already resolved.
    #[error(
        "appeal {appeal_id} was already resolved ({resolution:?}): an appeal is resolved once"
    )]
    AlreadyResolved {
        /// The appeal.
        appeal_id: String,
        /// Its resolution.
        resolution: Resolution,
    },
    /// The operator's note is blank or too long.
    #[error("a note is required (1 to {MAX_NOTE_BYTES} bytes, not blank)")]
    InvalidNote,
}

/// The kind of a [`GovernanceRefusal`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GovernanceRefusalKind {
    /// [`GovernanceRefusal::WrongAgent`].
    WrongAgent,
    /// [`GovernanceRefusal::DuplicateSanction`].
    DuplicateSanction,
    /// [`GovernanceRefusal::InvalidSanction`].
    InvalidSanction,
    /// [`GovernanceRefusal::UnknownSanction`].
    UnknownSanction,
    /// [`GovernanceRefusal::SanctionLifted`].
    SanctionLifted,
    /// [`GovernanceRefusal::SanctionExpired`].
    SanctionExpired,
    /// [`GovernanceRefusal::NotYourSanction`].
    NotYourSanction,
    /// [`GovernanceRefusal::EmptyStatement`].
    EmptyStatement,
    /// [`GovernanceRefusal::StatementTooLong`].
    StatementTooLong,
    /// [`GovernanceRefusal::DuplicateAppeal`].
    DuplicateAppeal,
    /// [`GovernanceRefusal::AppealAlreadyOpen`].
    AppealAlreadyOpen,
    /// [`GovernanceRefusal::AlreadyUpheld`].
    AlreadyUpheld,
    /// [`GovernanceRefusal::UnknownAppeal`].
    UnknownAppeal,
    /// [`GovernanceRefusal::AlreadyResolved`].
    AlreadyResolved,
    /// [`GovernanceRefusal::InvalidNote`].
    InvalidNote,
}

impl GovernanceRefusal {
    /// The kind, to match on.
    pub fn kind(&self) -> GovernanceRefusalKind {
        use GovernanceRefusalKind as K;
        match self {
            GovernanceRefusal::WrongAgent { .. } => K::WrongAgent,
            GovernanceRefusal::DuplicateSanction { .. } => K::DuplicateSanction,
            GovernanceRefusal::InvalidSanction { .. } => K::InvalidSanction,
            GovernanceRefusal::UnknownSanction { .. } => K::UnknownSanction,
            GovernanceRefusal::SanctionLifted { .. } => K::SanctionLifted,
            GovernanceRefusal::SanctionExpired { .. } => K::SanctionExpired,
            GovernanceRefusal::NotYourSanction { .. } => K::NotYourSanction,
            GovernanceRefusal::EmptyStatement => K::EmptyStatement,
            GovernanceRefusal::StatementTooLong { .. } => K::StatementTooLong,
            GovernanceRefusal::DuplicateAppeal { .. } => K::DuplicateAppeal,
            GovernanceRefusal::AppealAlreadyOpen { .. } => K::AppealAlreadyOpen,
            GovernanceRefusal::AlreadyUpheld { .. } => K::AlreadyUpheld,
            GovernanceRefusal::UnknownAppeal { .. } => K::UnknownAppeal,
            GovernanceRefusal::AlreadyResolved { .. } => K::AlreadyResolved,
            GovernanceRefusal::InvalidNote => K::InvalidNote,
        }
    }
}

fn check_sanction(ledger: &Governance, s: &Sanction) -> Result<(), GovernanceRefusal> {
    let invalid = |problem: &str| GovernanceRefusal::InvalidSanction {
        sanction_id: s.id.clone(),
        problem: problem.to_owned(),
    };
    if s.agent_id != ledger.agent_id {
        return Err(GovernanceRefusal::WrongAgent {
            sanction_id: s.id.clone(),
            sanction_agent: s.agent_id.clone(),
            ledger_agent: ledger.agent_id.clone(),
        });
    }
    if s.id.trim().is_empty() {
        return Err(invalid("the id is empty"));
    }
    if s.reason.trim().is_empty() || s.reason.len() > MAX_NOTE_BYTES {
        return Err(invalid("the reason must be 1 to 2048 bytes, not blank"));
    }
    if s.kind == (SanctionKind::Throttle { per_minute: 0 }) {
        return Err(invalid("a throttle allows at least 1 action a minute"));
    }
    if s.expires_at_ms.is_some_and(|e| e <= s.issued_at_ms) {
        return Err(invalid("it expires before it is issued"));
    }
    Ok(())
}

/// Decides what a command does to the ledger at `now_ms`.
pub fn decide(
    ledger: &Governance,
    command: &GovernanceCommand,
    now_ms: i64,
) -> Result<Vec<GovernanceFact>, GovernanceRefusal> {
    match command {
        GovernanceCommand::Impose(sanction) => {
            check_sanction(ledger, sanction)?;
            match ledger.sanctions.get(&sanction.id) {
                Some(entry) if entry.sanction == *sanction => Ok(Vec::new()),
                Some(_) => Err(GovernanceRefusal::DuplicateSanction {
                    sanction_id: sanction.id.clone(),
                }),
                None => Ok(vec![GovernanceFact::SanctionImposed(sanction.clone())]),
            }
        }
        GovernanceCommand::Lift {
            sanction_id,
            by,
            note,
        } => {
            let entry = ledger.sanctions.get(sanction_id).ok_or_else(|| {
                GovernanceRefusal::UnknownSanction {
                    sanction_id: sanction_id.clone(),
                }
            })?;
            match entry.status(now_ms) {
                SanctionStatus::Lifted => {
                    return Err(GovernanceRefusal::SanctionLifted {
                        sanction_id: sanction_id.clone(),
                    })
                }
                SanctionStatus::Expired => {
                    return Err(GovernanceRefusal::SanctionExpired {
                        sanction_id: sanction_id.clone(),
                    })
                }
                SanctionStatus::Active => {}
            }
            if note.trim().is_empty() || note.len() > MAX_NOTE_BYTES {
                return Err(GovernanceRefusal::InvalidNote);
            }
            // Lifting answers the sanction's open appeal, if any.
            let mut facts: Vec<GovernanceFact> = ledger
                .appeals_of(sanction_id)
                .filter(|a| a.is_open())
                .map(|a| GovernanceFact::AppealResolved {
                    appeal_id: a.appeal.id.clone(),
                    resolution: Resolution::Lift,
                    operator: by.clone(),
                    note: note.clone(),
                    at_ms: now_ms,
                })
                .collect();
            let appeal_id = match facts.first() {
                Some(GovernanceFact::AppealResolved { appeal_id, .. }) => Some(appeal_id.clone()),
                _ => None,
            };
            facts.push(GovernanceFact::SanctionLifted {
                sanction_id: sanction_id.clone(),
                by: by.clone(),
                note: note.clone(),
                appeal_id,
                at_ms: now_ms,
            });
            Ok(facts)
        }
        GovernanceCommand::FileAppeal(file) => appeal::decide_file(ledger, file, now_ms),
        GovernanceCommand::ResolveAppeal(resolve) => {
            appeal::decide_resolve(ledger, resolve, now_ms)
        }
    }
}

/// Folds one fact into the ledger; holds no business logic.
pub fn apply(ledger: &mut Governance, fact: &GovernanceFact) {
    match fact {
        GovernanceFact::SanctionImposed(sanction) => {
            ledger.sanctions.insert(
                sanction.id.clone(),
                SanctionEntry {
                    sanction: sanction.clone(),
                    lifted: None,
                },
            );
        }
        GovernanceFact::SanctionLifted {
            sanction_id,
            by,
            note,
            appeal_id,
            at_ms,
        } => {
            if let Some(entry) = ledger.sanctions.get_mut(sanction_id) {
                entry.lifted = Some(Lifted {
                    by: by.clone(),
                    note: note.clone(),
                    appeal_id: appeal_id.clone(),
                    at_ms: *at_ms,
                });
            }
        }
        GovernanceFact::AppealFiled(appeal) => {
            ledger.appeals.insert(
                appeal.id.clone(),
                AppealEntry {
                    appeal: appeal.clone(),
                    resolved: None,
                },
            );
        }
        GovernanceFact::AppealResolved {
            appeal_id,
            resolution,
            operator,
            note,
            at_ms,
        } => {
            if let Some(entry) = ledger.appeals.get_mut(appeal_id) {
                entry.resolved = Some(AppealResolution {
                    resolution: *resolution,
                    operator: operator.clone(),
                    note: note.clone(),
                    at_ms: *at_ms,
                });
            }
        }
    }
}

impl Aggregate for Governance {
    type Command = GovernanceCommand;
    type Fact = GovernanceFact;
    type Refusal = GovernanceRefusal;

    fn decide(
        &self,
        command: &GovernanceCommand,
        now_ms: i64,
    ) -> Result<Vec<GovernanceFact>, GovernanceRefusal> {
        decide(self, command, now_ms)
    }

    fn apply(&mut self, fact: &GovernanceFact) {
        apply(self, fact);
    }
}
