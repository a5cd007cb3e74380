//! Jail rules shared by the SDK, the gateway and the jail role: how a jail id
//! is derived from the `jail.requested` action that creates it.

use sha2::{Digest, Sha256};

/// The jail id of the `jail.requested` event `event_id` on `owner`'s chain: 32
/// lowercase hex characters of SHA-256 over `"amai.jail.v1\n" owner "\n"
/// event_id`. Derived, so nobody can create a jail under an id of someone
/// else's choosing, and it is a subject token (`amai.jail.<jail_id>`).
pub fn jail_id(owner: &str, event_id: &str) -> String {
    let digest = Sha256::digest(format!("amai.jail.v1\n{owner}\n{event_id}").as_bytes());
    hex::encode(&digest[..16])
}

/// Whether `id` has the shape of a jail id (32 lowercase hex characters).
pub fn is_jail_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_ids_depend_on_owner_and_event() {
        let a = jail_id("owner-a", "e1");
        assert!(is_jail_id(&a), "{a}");
        assert_ne!(a, jail_id("owner-b", "e1"));
        assert_ne!(a, jail_id("owner-a", "e2"));
        assert_eq!(a, jail_id("owner-a", "e1"));
    }

    #[test]
    fn jail_ids_are_not_llm_session_ids() {
        assert_ne!(jail_id("o", "e"), crate::llm::session_id("o", "e"));
    }

    #[test]
    fn jail_id_is_sha256_of_the_domain_owner_and_event() {
        let expected = hex::encode(&Sha256::digest(b"amai.jail.v1\nowner\nevent")[..16]);
        assert_eq!(jail_id("owner", "event"), expected);
        assert!(!is_jail_id("ABCDEF0123456789abcdef0123456789"));
        assert!(!is_jail_id("abc"));
    }
}
