//! Asking the worker roles over NATS request/reply ([`amai_bus::query`]), the
//! way the gateway does, and saying precisely what went wrong: a role with no
//! running worker is named with the command that starts one, never a 500.

use amai_bus::query::{reason, QueryCode, QueryError};

use crate::AppState;

/// A worker role the console asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `amai worker --role identity`.
    Identity,
    /// `amai worker --role trust`.
    Trust,
    /// `amai worker --role jail`.
    Jail,
    /// `amai worker --role llm`.
    Llm,
    /// `amai worker --role audit`.
    Audit,
    /// `amai worker --role lifecycle`.
    Lifecycle,
}

impl Role {
    /// The role's name (`amai worker --role <name>`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Identity => "identity",
            Role::Trust => "trust",
            Role::Jail => "jail",
            Role::Llm => "llm",
            Role::Audit => "audit",
            Role::Lifecycle => "lifecycle",
        }
    }
}

/// A query that failed, with the role it was for.
#[derive(Clone, Debug, thiserror::Error)]
pub struct RoleError {
    /// The role asked.
    pub role: Role,
    /// What the query returned.
    pub error: QueryError,
}

impl RoleError {
    /// Whether no worker of the role answered.
    pub fn is_unavailable(&self) -> bool {
        self.error.code == QueryCode::Unavailable
            || self.error.reason.as_deref() == Some(reason::WORKER_UNAVAILABLE)
    }

    /// Whether the role answered "not found".
    pub fn is_not_found(&self) -> bool {
        self.error.code == QueryCode::NotFound
    }
}

impl std::fmt::Display for RoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = self.role.name();
        if self.is_unavailable() {
            write!(
                f,
                "no {role} worker answered: start one with `amai worker --role {role}`"
            )
        } else {
            write!(
                f,
                "the {role} worker refused ({:?}): {}",
                self.error.code, self.error.message
            )
        }
    }
}

/// Asks `role` on `subject`.
pub(crate) async fn ask<Req: prost::Message, Resp: prost::Message + Default>(
    state: &AppState,
    role: Role,
    subject: &str,
    req: &Req,
) -> Result<Resp, RoleError> {
    ask_within(state, role, subject, req, state.query_timeout).await
}

/// [`ask`] with its own bound (actions that do work: a checkpoint).
pub(crate) async fn ask_within<Req: prost::Message, Resp: prost::Message + Default>(
    state: &AppState,
    role: Role,
    subject: &str,
    req: &Req,
    timeout: std::time::Duration,
) -> Result<Resp, RoleError> {
    amai_bus::query::request(&state.nats, subject, req, timeout)
        .await
        .map_err(|error| RoleError { role, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_role_is_named_with_the_command_that_starts_it() {
        let e = RoleError {
            role: Role::Trust,
            error: QueryError::new(QueryCode::Unavailable, "no answer")
                .with_reason(reason::WORKER_UNAVAILABLE),
        };
        assert_eq!(
            e.to_string(),
            "no trust worker answered: start one with `amai worker --role trust`"
        );
    }
}
