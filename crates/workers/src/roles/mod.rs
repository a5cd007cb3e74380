//! The registry of worker roles: `amai worker --role <name>` looks roles up
//! here and `amai up` runs every one of them. Adding a role is a folder under
//! `roles/` and one line in [`registry`] (plus its `#[cfg(feature = ...)]` when
//! the role has heavy dependencies; see the crate docs).

use std::sync::Arc;

use crate::role::{Role, UnknownRole};

#[cfg(feature = "audit")]
pub mod audit;
#[cfg(feature = "identity")]
pub mod identity;
#[cfg(feature = "jail")]
pub mod jail;
#[cfg(feature = "lifecycle")]
pub mod lifecycle;
#[cfg(feature = "llm")]
pub mod llm;
#[cfg(feature = "trust")]
pub mod trust;

/// Every role compiled into this build, in start order.
// One `push` per role, each behind its feature: clearer than a `vec![]` of cfg'ed items.
#[allow(clippy::vec_init_then_push)]
pub fn registry() -> Vec<Arc<dyn Role>> {
    #[allow(unused_mut)]
    let mut roles: Vec<Arc<dyn Role>> = Vec::new();
    #[cfg(feature = "identity")]
    roles.push(Arc::new(identity::IdentityRole));
    #[cfg(feature = "llm")]
    roles.push(Arc::new(llm::LlmRole::default()));
    #[cfg(feature = "jail")]
    roles.push(Arc::new(jail::JailRole::default()));
    #[cfg(feature = "trust")]
    roles.push(Arc::new(trust::TrustRole::default()));
    #[cfg(feature = "audit")]
    roles.push(Arc::new(audit::AuditRole::default()));
    #[cfg(feature = "lifecycle")]
    roles.push(Arc::new(lifecycle::LifecycleRole));
    roles
}

/// The registered role `name`.
pub fn find(name: &str) -> Result<Arc<dyn Role>, UnknownRole> {
    let roles = registry();
    match roles.iter().find(|r| r.name() == name) {
        Some(r) => Ok(r.clone()),
        None => Err(UnknownRole {
            name: name.to_string(),
            known: roles.iter().map(|r| r.name()).collect(),
        }),
    }
}

/// Service key names of every registered role.
pub fn service_keys() -> Vec<&'static str> {
    registry().iter().map(|r| r.service_key()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_service_keys_are_unique_subject_tokens() {
        let roles = registry();
        let mut names: Vec<_> = roles.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), roles.len(), "duplicate role names");
        let mut keys = service_keys();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), roles.len(), "duplicate service keys");
        for name in names.iter().chain(keys.iter()) {
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name:?} must be a lowercase subject token"
            );
        }
    }

    #[test]
    fn unknown_names_list_the_registry() {
        let err = find("no-such-role").err().expect("unknown");
        assert_eq!(err.name, "no-such-role");
        assert_eq!(
            err.known,
            registry().iter().map(|r| r.name()).collect::<Vec<_>>()
        );
        #[cfg(feature = "identity")]
        assert!(err.to_string().contains("identity"), "{err}");
    }

    #[cfg(feature = "identity")]
    #[test]
    fn the_identity_role_is_registered() {
        let role = find("identity").expect("identity");
        assert_eq!(role.service_key(), "identity");
        assert_eq!(role.writes(), &[amai_bus::subjects::AggregateKind::Trust]);
    }
}
