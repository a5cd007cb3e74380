//! Given/when/then over any [`Aggregate`]: `given(state, facts)` folds the
//! history, `.when(command)` decides at the scenario's time, and
//! `.then(facts)` / `.then_refused()` check the outcome.

use std::fmt::Debug;

use crate::Aggregate;

/// The time scenarios decide at unless told otherwise.
pub(crate) const NOW: i64 = 10_000;

/// A state with its history folded in.
pub(crate) struct Given<A> {
    state: A,
    now_ms: i64,
}

/// The outcome of a command.
pub(crate) struct When<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Fact>, A::Refusal>,
}

/// `initial` with `facts` applied in order.
pub(crate) fn given<A: Aggregate>(
    initial: A,
    facts: impl IntoIterator<Item = A::Fact>,
) -> Given<A> {
    let mut state = initial;
    for fact in facts {
        state.apply(&fact);
    }
    Given { state, now_ms: NOW }
}

impl<A: Aggregate> Given<A> {
    /// Decide at `now_ms`.
    pub(crate) fn at(mut self, now_ms: i64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// The state, for checks before a command.
    pub(crate) fn state(&self) -> &A {
        &self.state
    }

    /// Decide `command`.
    pub(crate) fn when(self, command: A::Command) -> When<A> {
        let result = self.state.decide(&command, self.now_ms);
        When {
            state: self.state,
            result,
        }
    }
}

impl<A: Aggregate> When<A>
where
    A::Fact: Debug + PartialEq,
    A::Refusal: Debug,
{
    /// The command produced exactly `expected`; returns the state with them
    /// applied.
    #[track_caller]
    pub(crate) fn then(self, expected: Vec<A::Fact>) -> A {
        match self.result {
            Ok(facts) => {
                assert_eq!(facts, expected, "facts");
                let mut state = self.state;
                state.apply_all(&facts);
                state
            }
            Err(refusal) => panic!("refused: {refusal:?}, expected facts {expected:?}"),
        }
    }

    /// The command was refused; returns the refusal.
    #[track_caller]
    pub(crate) fn then_refused(self) -> A::Refusal {
        match self.result {
            Ok(facts) => panic!("expected a refusal, got facts {facts:?}"),
            Err(refusal) => refusal,
        }
    }

    /// The raw outcome.
    pub(crate) fn result(self) -> (A, Result<Vec<A::Fact>, A::Refusal>) {
        (self.state, self.result)
    }
}
