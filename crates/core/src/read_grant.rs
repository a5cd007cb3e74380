//! Read grants: how an operator lets a reader identity (an auditor, an analytics
//! consumer) read whole streams.
//!
//! A grant is three entries of the reader's genesis metadata (so it is signed by
//! the reader, fixed at registration and folded with its chain):
//!
//! - [`META_STREAMS`]: the stream names, comma-separated (`AMAI_AGENTS,AMAI_TRUST`;
//!   `AMAI_BLOBS` for blobs);
//! - [`META_OPERATOR`]: the granting operator's identity id;
//! - [`META_SIGNATURE`]: hex Ed25519 by that operator over
//!   `PAE("amai.read-grant.v1", reader signing key (32 bytes) || streams joined by ",")`.
//!
//! The gateway honours a grant while the signature verifies under a key the
//! operator has held, the operator is an unrevoked `operator` identity, and the
//! reader is unrevoked. Revoking the reader or the operator ends the grant;
//! a different set of streams is a new reader identity. Both sides use this
//! module, so they cannot drift.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::identity::IdentityState;
use crate::keys::IdentityKeys;
use crate::pae;
use crate::proto::IdentityKind;

/// Domain separation tag of grant signatures.
pub const READ_GRANT_DOMAIN: &str = "amai.read-grant.v1";
/// Genesis metadata key: granted stream names, comma-separated.
pub const META_STREAMS: &str = "amai.read_grant.streams";
/// Genesis metadata key: the granting operator's identity id.
pub const META_OPERATOR: &str = "amai.read_grant.operator";
/// Genesis metadata key: hex of the operator's signature.
pub const META_SIGNATURE: &str = "amai.read_grant.signature";

fn body(reader_key: &VerifyingKey, streams: &[String]) -> Vec<u8> {
    let mut b = reader_key.as_bytes().to_vec();
    b.extend_from_slice(streams.join(",").as_bytes());
    b
}

/// The operator's side: the genesis metadata entries granting `streams` to the
/// reader whose genesis key is `reader_key`. Add them to the reader's
/// registration metadata.
pub fn grant(
    operator: &IdentityKeys,
    operator_id: &str,
    reader_key: &VerifyingKey,
    streams: &[String],
) -> BTreeMap<String, String> {
    let sig = operator.sign(READ_GRANT_DOMAIN, &body(reader_key, streams));
    BTreeMap::from([
        (META_STREAMS.to_string(), streams.join(",")),
        (META_OPERATOR.to_string(), operator_id.to_string()),
        (META_SIGNATURE.to_string(), hex::encode(sig)),
    ])
}

/// A grant as read from a reader's genesis metadata, not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The granted streams.
    pub streams: Vec<String>,
    /// The operator that signed it.
    pub operator_id: String,
    signature: [u8; 64],
}

impl Grant {
    /// The grant in `reader`'s genesis metadata, if it has a well-formed one.
    pub fn of(reader: &IdentityState) -> Option<Grant> {
        let m = &reader.metadata;
        let streams: Vec<String> = m
            .get(META_STREAMS)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let signature = hex::decode(m.get(META_SIGNATURE)?).ok()?.try_into().ok()?;
        Some(Grant {
            streams,
            operator_id: m.get(META_OPERATOR)?.clone(),
            signature,
        })
    }

    /// Whether the grant holds for `reader` given the granting operator's state:
    /// an unrevoked operator, the signature by one of its keys over the reader's
    /// genesis key and the streams.
    pub fn holds(&self, reader: &IdentityState, operator: &IdentityState) -> bool {
        if operator.id != self.operator_id
            || operator.kind != IdentityKind::Operator
            || operator.revoked.is_some()
            || reader.revoked.is_some()
        {
            return false;
        }
        let Some(genesis_key) = reader.keys.first() else {
            return false;
        };
        let msg = pae::pae(
            READ_GRANT_DOMAIN,
            &body(&genesis_key.signing_key, &self.streams),
        );
        let sig = Signature::from_bytes(&self.signature);
        operator
            .keys
            .iter()
            .any(|k| k.signing_key.verify_strict(&msg, &sig).is_ok())
    }
}
