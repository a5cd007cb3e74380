//! DSSE-style pre-authentication encoding (PAE) and Amai's signing domains.
//!
//! `PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body`, lengths in
//! ASCII decimal. Each kind of signed thing uses its own `type`, so a signature made
//! for one domain can never be replayed as another.

/// Domain tag of event signatures.
pub const EVENT_DOMAIN: &str = "amai.event.v1";
/// Domain tag of gateway request signatures.
pub const REQUEST_DOMAIN: &str = "amai.request.v1";
/// Domain tag of audit checkpoint signatures.
pub const CHECKPOINT_DOMAIN: &str = "amai.checkpoint.v1";
/// Domain tag of operator endorsements of operator and service keys.
pub const ENDORSEMENT_DOMAIN: &str = "amai.endorsement.v1";
/// Domain tag of the new key's proof of possession in a key rotation.
pub const ROTATION_DOMAIN: &str = "amai.rotation.v1";
/// Domain tag of the associated data of sealed messages.
pub const MESSAGE_DOMAIN: &str = "amai.message.v1";

/// Encodes `body` for signing under the domain `payload_type`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// The body signed for a gateway request: method, actor, deployment, timestamp,
/// nonce and the hex SHA-256 digest of the request message, newline separated.
pub fn request_signing_body(
    method: &str,
    actor: &str,
    deployment: &str,
    timestamp_ms: i64,
    nonce: &str,
    body_digest: &[u8; 32],
) -> Vec<u8> {
    format!(
        "{method}\n{actor}\n{deployment}\n{timestamp_ms}\n{nonce}\n{}",
        hex::encode(body_digest)
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_reference_layout() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn domains_produce_different_encodings() {
        assert_ne!(pae(EVENT_DOMAIN, b"x"), pae(REQUEST_DOMAIN, b"x"));
    }
}
