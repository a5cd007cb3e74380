//! # amai-lifecycle
//!
//! The pure domain of agent lifecycle and governance: what an agent's
//! lifecycle may do next, when a crashed agent restarts, what a policy
//! decides when a trust score drops or an agent crashes, what a sanction
//! restricts and how an agent appeals it.
//!
//! - [`state`]: the lifecycle state machine of one catalogued agent
//!   (`Catalogued` -> `Installed` -> `Enabled` -> `Starting` -> `Running`
//!   ..., `Disabled` as the kill switch); `docs/lifecycle.md` has the
//!   diagram and the transition table.
//! - [`health`]: restart backoff, crash loops and heartbeats.
//! - [`policy`]: the governance rule format (`docs/governance.md`,
//!   `schemas/policy.schema.json`), its parsing and evaluation.
//! - [`sanction`]: sanctions, the restrictions they fold into, lifting and
//!   the gateway's check.
//! - [`appeal`]: appeals of sanctions.
//! - [`governance`]: the per-agent ledger of sanctions and appeals.
//!
//! The crate does no I/O and reads no clock: every time is unix
//! milliseconds passed in. Each aggregate splits deciding from applying
//! ([`Aggregate`]): `decide(state, command, now)` returns the facts to
//! record (or a refusal with a `kind()`), `apply(state, fact)` folds a fact
//! without deciding anything. Folding the same facts gives the same state,
//! and the same state, command and time give the same facts, so a worker
//! replaying its events reaches byte-identical decisions.
//!
//! ```
//! use amai_lifecycle::health::RestartPolicy;
//! use amai_lifecycle::state::{Agent, Command, Fact, State};
//! use amai_lifecycle::Aggregate;
//!
//! let mut agent = Agent::catalogued("scout", ["net:http".to_owned()], RestartPolicy::default());
//! let digest = format!("sha256:{}", "ab".repeat(32));
//! for command in [
//!     Command::Install { image_digest: digest },
//!     Command::Enable { approved: vec!["net:http".into()] },
//!     Command::Run,
//! ] {
//!     for fact in agent.decide(&command, 1_000).unwrap() {
//!         agent.apply(&fact);
//!     }
//! }
//! assert_eq!(agent.state(), State::Starting);
//! assert_eq!(
//!     agent.decide(&Command::Disable { reason: "incident 42".into() }, 2_000).unwrap()[1],
//!     Fact::Disabled { reason: "incident 42".into(), awaiting_exit: true },
//! );
//! ```

#![deny(missing_docs)]

pub mod appeal;
pub mod governance;
pub mod health;
pub mod policy;
pub mod sanction;
pub mod state;

/// An event-sourced aggregate: deciding produces facts, applying folds
/// them.
pub trait Aggregate {
    /// What may be asked of it.
    type Command;
    /// What happened to it (the events).
    type Fact;
    /// Why a command was refused.
    type Refusal: std::error::Error;

    /// The facts a command produces at `now_ms` (unix ms), or why it is
    /// refused. Pure: reads nothing but its arguments.
    fn decide(
        &self,
        command: &Self::Command,
        now_ms: i64,
    ) -> Result<Vec<Self::Fact>, Self::Refusal>;

    /// Folds one fact in. Holds no business logic.
    fn apply(&mut self, fact: &Self::Fact);

    /// Folds facts in, in order.
    fn apply_all<'a>(&mut self, facts: impl IntoIterator<Item = &'a Self::Fact>)
    where
        Self::Fact: 'a,
    {
        for fact in facts {
            self.apply(fact);
        }
    }
}

#[cfg(test)]
mod tests;
