//! Request signatures: how an identity proves a gateway request is its own.
//!
//! A signed request carries four headers (gRPC metadata):
//!
//! - `amai-actor`: the signer's identity id;
//! - `amai-timestamp`: unix milliseconds when it was signed;
//! - `amai-nonce`: 16 random bytes, hex;
//! - `amai-signature`: hex of the Ed25519 signature over
//!   `PAE("amai.request.v1", method \n actor \n deployment \n timestamp \n nonce \n hex(sha256(request message)))`
//!   (see [`crate::pae::request_signing_body`]).
//!
//! The signature covers the actor (a signature cannot be presented as another
//! identity's) and the deployment (hex of its trust-root key: a request signed for
//! one deployment is refused by every other). The SDK signs with [`sign_request`];
//! the gateway checks with [`verify_request`] and [`check_freshness`] (and keeps its
//! own replay cache of nonces). Both sides use this module, so they cannot drift.

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use rand_core::RngCore;
use sha2::{Digest, Sha256};

use crate::keys::IdentityKeys;
use crate::pae;

/// Header: the signer's identity id.
pub const HEADER_ACTOR: &str = "amai-actor";
/// Header: unix milliseconds of signing.
pub const HEADER_TIMESTAMP: &str = "amai-timestamp";
/// Header: 16 random bytes, hex.
pub const HEADER_NONCE: &str = "amai-nonce";
/// Header: hex Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "amai-signature";

/// What is wrong with a request signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestAuthError {
    /// One or more of the four headers are absent or unreadable.
    #[error("sign the request: amai-actor, amai-timestamp, amai-nonce, amai-signature ({0})")]
    Missing(String),
    /// The signature does not verify against the key.
    #[error("request signature does not verify against the current key of {0}; sign with the identity's current key")]
    BadSignature(String),
    /// The timestamp is outside the freshness window.
    #[error("request timestamp {timestamp_ms} is {skew_ms} ms away from the server clock; requests are accepted within ±{window_ms} ms: re-sign with a fresh timestamp and check the clock")]
    Expired {
        /// The timestamp carried.
        timestamp_ms: i64,
        /// Distance to the server clock.
        skew_ms: i64,
        /// The allowed window.
        window_ms: i64,
    },
}

/// A request signature, as carried in the metadata headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSignature {
    /// The signer's identity id.
    pub actor: String,
    /// Unix milliseconds of signing.
    pub timestamp_ms: i64,
    /// Hex of 16 random bytes.
    pub nonce: String,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

/// SHA-256 of the encoded request message.
pub fn message_digest<M: Message>(message: &M) -> [u8; 32] {
    Sha256::digest(message.encode_to_vec()).into()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A fresh random nonce (16 bytes, hex).
pub fn new_nonce() -> String {
    let mut b = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// Signs `message` for `method` (e.g. `/amai.v1.IdentityService/ListInbox`) as
/// `actor`, now, with a fresh nonce.
pub fn sign_request<M: Message>(
    keys: &IdentityKeys,
    actor: &str,
    deployment: &str,
    method: &str,
    message: &M,
) -> RequestSignature {
    sign_request_at(
        keys,
        actor,
        deployment,
        method,
        message,
        now_ms(),
        new_nonce(),
    )
}

/// Signs with an explicit timestamp and nonce (tests, clock-skewed callers).
pub fn sign_request_at<M: Message>(
    keys: &IdentityKeys,
    actor: &str,
    deployment: &str,
    method: &str,
    message: &M,
    timestamp_ms: i64,
    nonce: String,
) -> RequestSignature {
    let body = pae::request_signing_body(
        method,
        actor,
        deployment,
        timestamp_ms,
        &nonce,
        &message_digest(message),
    );
    let signature = keys.sign(pae::REQUEST_DOMAIN, &body);
    RequestSignature {
        actor: actor.to_string(),
        timestamp_ms,
        nonce,
        signature,
    }
}

impl RequestSignature {
    /// The four headers, name and value.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_ACTOR, self.actor.clone()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, hex::encode(self.signature)),
        ]
    }

    /// Reads the four headers through `header` (name -> value when present).
    pub fn from_headers(header: impl Fn(&str) -> Option<String>) -> Result<Self, RequestAuthError> {
        let get = |k: &str| -> Result<String, RequestAuthError> {
            header(k).ok_or_else(|| RequestAuthError::Missing(format!("{k} is missing")))
        };
        let actor = get(HEADER_ACTOR)?;
        let timestamp_ms = get(HEADER_TIMESTAMP)?.parse::<i64>().map_err(|_| {
            RequestAuthError::Missing("amai-timestamp must be unix milliseconds".into())
        })?;
        let nonce = get(HEADER_NONCE)?;
        if nonce.len() != 32
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(RequestAuthError::Missing(
                "amai-nonce must be 16 random bytes as lowercase hex".into(),
            ));
        }
        let signature: [u8; 64] = hex::decode(get(HEADER_SIGNATURE)?)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| {
                RequestAuthError::Missing("amai-signature must be 64 bytes as hex".into())
            })?;
        Ok(Self {
            actor,
            timestamp_ms,
            nonce,
            signature,
        })
    }
}

/// Checks `sig` over `message` for `method` in `deployment` against `key`.
pub fn verify_request<M: Message>(
    sig: &RequestSignature,
    deployment: &str,
    method: &str,
    message: &M,
    key: &VerifyingKey,
) -> Result<(), RequestAuthError> {
    let body = pae::request_signing_body(
        method,
        &sig.actor,
        deployment,
        sig.timestamp_ms,
        &sig.nonce,
        &message_digest(message),
    );
    key.verify_strict(
        &pae::pae(pae::REQUEST_DOMAIN, &body),
        &Signature::from_bytes(&sig.signature),
    )
    .map_err(|_| RequestAuthError::BadSignature(sig.actor.clone()))
}

/// Checks the timestamp is within `window_ms` of `now_ms`.
pub fn check_freshness(
    sig: &RequestSignature,
    now_ms: i64,
    window_ms: i64,
) -> Result<(), RequestAuthError> {
    let skew_ms = sig.timestamp_ms.saturating_sub(now_ms).saturating_abs();
    if skew_ms > window_ms {
        return Err(RequestAuthError::Expired {
            timestamp_ms: sig.timestamp_ms,
            skew_ms,
            window_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ListInboxRequest;

    const METHOD: &str = "/amai.v1.IdentityService/ListInbox";
    const DEPLOYMENT: &str = "d1";

    fn req(keys: &IdentityKeys) -> ListInboxRequest {
        ListInboxRequest {
            agent_id: keys.identity_id(),
            after_seq: 3,
            limit: 10,
            ..Default::default()
        }
    }

    #[test]
    fn a_signature_round_trips_through_headers_and_verifies() {
        let keys = IdentityKeys::generate();
        let req = req(&keys);
        let sig = sign_request(&keys, &keys.identity_id(), DEPLOYMENT, METHOD, &req);
        let headers = sig.headers();
        let read = RequestSignature::from_headers(|k| {
            headers
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        })
        .expect("headers");
        assert_eq!(read, sig);
        verify_request(&read, DEPLOYMENT, METHOD, &req, &keys.public_key()).expect("verifies");
        check_freshness(&read, now_ms(), 30_000).expect("fresh");
    }

    #[test]
    fn another_method_body_key_actor_or_deployment_fails() {
        let keys = IdentityKeys::generate();
        let req = req(&keys);
        let sig = sign_request(&keys, &keys.identity_id(), DEPLOYMENT, METHOD, &req);
        let bad = |r: Result<(), RequestAuthError>| {
            assert!(matches!(r, Err(RequestAuthError::BadSignature(_))))
        };
        bad(verify_request(
            &sig,
            DEPLOYMENT,
            "/amai.v1.IdentityService/GetStats",
            &req,
            &keys.public_key(),
        ));
        let other = ListInboxRequest {
            after_seq: 1,
            ..req.clone()
        };
        bad(verify_request(
            &sig,
            DEPLOYMENT,
            METHOD,
            &other,
            &keys.public_key(),
        ));
        bad(verify_request(
            &sig,
            DEPLOYMENT,
            METHOD,
            &req,
            &IdentityKeys::generate().public_key(),
        ));
        // Another deployment refuses a request signed for this one.
        bad(verify_request(&sig, "d2", METHOD, &req, &keys.public_key()));
        // The actor is signed: presenting the signature as another identity fails.
        let relabelled = RequestSignature {
            actor: "someone-else".into(),
            ..sig.clone()
        };
        bad(verify_request(
            &relabelled,
            DEPLOYMENT,
            METHOD,
            &req,
            &keys.public_key(),
        ));
    }

    #[test]
    fn stale_and_missing_are_reported() {
        let keys = IdentityKeys::generate();
        let req = ListInboxRequest::default();
        let sig = sign_request_at(
            &keys,
            "a",
            DEPLOYMENT,
            METHOD,
            &req,
            now_ms() - 60_000,
            new_nonce(),
        );
        assert!(matches!(
            check_freshness(&sig, now_ms(), 30_000),
            Err(RequestAuthError::Expired { .. })
        ));
        assert!(matches!(
            RequestSignature::from_headers(|_| None),
            Err(RequestAuthError::Missing(_))
        ));
    }
}
