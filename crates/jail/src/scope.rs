//! The scope of a deployment: an opaque short name (label `amai.scope`) on
//! everything one deployment creates on the engine, so two deployments sharing
//! an engine clean up only their own leftovers ([`crate::remove_scope`]).
//!
//! A scope is 1 to [`MAX_SCOPE_LEN`] characters of `[a-z0-9-]` (e.g. 16 hex
//! digits of the deployment's trust root fingerprint); [`Scope::new`] refuses
//! anything else, so a scope is always safe in a label filter and in an nft
//! comment.

use std::fmt;
use std::str::FromStr;

/// The longest scope accepted.
pub const MAX_SCOPE_LEN: usize = 32;

/// A validated deployment scope. Build with [`Scope::new`] (or `str::parse`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

/// Why [`Scope::new`] refused a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {scope:?} is invalid: use 1 to {MAX_SCOPE_LEN} characters of [a-z0-9-]")]
pub struct InvalidScope {
    /// The string given.
    pub scope: String,
}

impl Scope {
    /// `scope` when it is 1 to [`MAX_SCOPE_LEN`] characters of `[a-z0-9-]`.
    pub fn new(scope: impl Into<String>) -> Result<Self, InvalidScope> {
        let scope = scope.into();
        let valid = (1..=MAX_SCOPE_LEN).contains(&scope.len())
            && scope
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(scope))
        } else {
            Err(InvalidScope { scope })
        }
    }

    /// The scope as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;

    fn from_str(scope: &str) -> Result<Self, Self::Err> {
        Self::new(scope)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_digits_and_dashes_are_accepted() {
        for scope in ["a", "0123456789abcdef", "dep-1", &"x".repeat(MAX_SCOPE_LEN)] {
            assert_eq!(
                Scope::new(scope).map(|s| s.to_string()),
                Ok(scope.to_owned())
            );
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let too_long = "x".repeat(MAX_SCOPE_LEN + 1);
        for scope in [
            "", "A", "a_b", "a.b", "a b", "a=b", "a\"b", "é", "a,b", &too_long,
        ] {
            assert_eq!(
                Scope::new(scope),
                Err(InvalidScope {
                    scope: scope.to_owned()
                }),
                "{scope:?}"
            );
        }
        assert!("Bad!".parse::<Scope>().is_err());
    }
}
