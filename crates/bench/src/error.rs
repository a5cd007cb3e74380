//! The bench's one error: a phase failed. Inside the crate, [`Fail`] collects
//! any error with `?` and [`Context`] says what was being done, so the
//! measuring code reads like a script; [`crate::run`] turns it into a
//! [`BenchError`].

use std::fmt::Display;

/// A benchmark could not run to its end (the figures of a partial run are
/// not reported).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

impl From<Fail> for BenchError {
    fn from(f: Fail) -> Self {
        BenchError(f.0)
    }
}

/// A failure inside the bench, its context chain flattened into one message.
#[derive(Debug)]
pub(crate) struct Fail(String);

impl Fail {
    pub(crate) fn msg(m: impl Display) -> Self {
        Fail(m.to_string())
    }
}

impl Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// `.context(..)` / `.with_context(..)` on results and options.
pub(crate) trait Context<T> {
    fn context(self, what: impl Display) -> Result<T, Fail>;
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, Fail>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, Fail> {
        self.map_err(|e| Fail(format!("{what}: {e}")))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, Fail> {
        self.map_err(|e| Fail(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Display) -> Result<T, Fail> {
        self.ok_or_else(|| Fail(what.to_string()))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T, Fail> {
        self.ok_or_else(|| Fail(what().to_string()))
    }
}
