//! Request signatures, SDK side: the format lives in `amai-core`
//! ([`amai_core::request`]); this module moves it in and out of gRPC metadata.

use tonic::metadata::{MetadataMap, MetadataValue};

pub use amai_bus::request::*;

/// Writes the four headers of `sig` into `metadata`.
pub fn apply(sig: &RequestSignature, metadata: &mut MetadataMap) {
    // Ids, decimal numbers and hex are always valid ASCII metadata values;
    // anything else (an invalid actor id) is simply not sent and the server
    // answers that the signature is missing.
    for (k, v) in sig.headers() {
        if let Ok(v) = MetadataValue::try_from(v.as_str()) {
            metadata.insert(k, v);
        }
    }
}

/// Reads the four headers from `metadata`.
pub fn from_metadata(metadata: &MetadataMap) -> Result<RequestSignature, RequestAuthError> {
    RequestSignature::from_headers(|k| {
        metadata
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amai_bus::keys::IdentityKeys;
    use amai_bus::proto::ListInboxRequest;

    #[test]
    fn a_signature_round_trips_through_metadata() {
        let keys = IdentityKeys::generate();
        let req = ListInboxRequest::default();
        let sig = sign_request(&keys, &keys.identity_id(), "d", "/m", &req);
        let mut md = MetadataMap::new();
        apply(&sig, &mut md);
        assert_eq!(from_metadata(&md).expect("headers"), sig);
        assert!(matches!(
            from_metadata(&MetadataMap::new()),
            Err(RequestAuthError::Missing(_))
        ));
    }
}
