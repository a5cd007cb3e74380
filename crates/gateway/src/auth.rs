//! Request authentication: a valid request signature by the identity's current
//! key, a timestamp within the freshness window, and a nonce never seen before by
//! any gateway instance (JetStream KV bucket [`NONCE_BUCKET`], where `create`
//! fails if the key exists).

use std::time::Duration;

use async_nats::jetstream::kv;
use prost::Message;
use tonic::metadata::MetadataMap;

use amai_bus::request::{self as request_auth, RequestSignature};
use amai_bus::EventStore;

use amai_bus::identity::IdentityState;
use amai_bus::read_grant::Grant;

use crate::access::Reader;
use crate::status::ApiError;
use crate::GatewayError;

/// The KV bucket of used nonces.
pub const NONCE_BUCKET: &str = "AMAI_NONCES";

/// Checks request signatures. Cheap to clone.
#[derive(Clone)]
pub struct RequestAuthenticator {
    store: EventStore,
    nonces: kv::Store,
    window: Duration,
    deployment: String,
}

impl RequestAuthenticator {
    /// Creates (or reuses) the nonce bucket, stored with `replicas` copies (like
    /// the streams: 1 dev, 3 on a cluster). A timestamp is accepted within
    /// ±window of a gateway's clock, so a nonce must be remembered for 2 x window;
    /// one more window covers clock skew between gateways sharing the bucket.
    pub async fn new(
        store: EventStore,
        window: Duration,
        replicas: usize,
    ) -> Result<Self, GatewayError> {
        let config = kv::Config {
            bucket: NONCE_BUCKET.to_string(),
            description: "amai gateway request nonces (replay cache)".to_string(),
            history: 1,
            max_age: window * 3,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        let nonces = store
            .jetstream()
            .create_or_update_key_value(config)
            .await
            .map_err(|e| GatewayError::Nonces {
                bucket: NONCE_BUCKET.to_string(),
                detail: e.to_string(),
            })?;
        let deployment = store
            .config()
            .get_trust_root()
            .map(|k| hex::encode(k.as_bytes()))
            .ok_or(GatewayError::NoTrustRoot)?;
        Ok(Self {
            store,
            nonces,
            window,
            deployment,
        })
    }

    /// The deployment id request signatures must cover (hex of the trust root).
    pub fn deployment_id(&self) -> &str {
        &self.deployment
    }

    /// Authenticates `message` sent to `method` with `metadata`; returns the
    /// signer's identity id. The nonce is only recorded once the signature holds,
    /// so unauthenticated callers cannot burn nonces.
    pub async fn authenticate<M: Message>(
        &self,
        method: &str,
        metadata: &MetadataMap,
        message: &M,
    ) -> Result<String, ApiError> {
        Ok(self.authenticate_state(method, metadata, message).await?.id)
    }

    /// Authenticates a read and returns who reads ([`Reader`]): the signer,
    /// whether it is an operator, and the streams granted to it by an operator
    /// (a grant in its genesis metadata, checked against the granting
    /// operator's chain; see [`amai_bus::read_grant`]).
    pub async fn authenticate_reader<M: Message>(
        &self,
        method: &str,
        metadata: &MetadataMap,
        message: &M,
    ) -> Result<Reader, ApiError> {
        let state = self.authenticate_state(method, metadata, message).await?;
        let mut granted = std::collections::BTreeSet::new();
        if let Some(grant) = Grant::of(&state) {
            match self.store.identity_state(&grant.operator_id).await {
                Ok(operator) if grant.holds(&state, &operator) => {
                    granted.extend(grant.streams.iter().cloned())
                }
                Ok(_) | Err(amai_bus::store::ReadError::NotFound(_)) => {
                    tracing::debug!(reader = %state.id, "read grant does not hold; ignored")
                }
                Err(e) => {
                    return Err(ApiError::Unavailable(format!(
                        "cannot read the granting operator's chain: {e}; retry shortly"
                    )))
                }
            }
        }
        Ok(Reader::new(&state, granted))
    }

    /// Authenticates and returns the signer's folded state.
    async fn authenticate_state<M: Message>(
        &self,
        method: &str,
        metadata: &MetadataMap,
        message: &M,
    ) -> Result<IdentityState, ApiError> {
        // Cheap checks first: shape and freshness, then one bounded read of the
        // signer's folded chain (cached, brought up to its head), then the
        // signature, and only then the replay cache write.
        let sig = RequestSignature::from_headers(|k| {
            metadata
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })?;
        request_auth::check_freshness(
            &sig,
            request_auth::now_ms(),
            self.window.as_millis() as i64,
        )?;
        let state = match self.store.identity_state(&sig.actor).await {
            Ok(s) => s,
            Err(amai_bus::store::ReadError::Unavailable(m)) => {
                return Err(ApiError::Unavailable(format!(
                    "cannot read the signer's keys: {m}; retry shortly"
                )))
            }
            Err(_) => return Err(ApiError::UnknownSigner(sig.actor.clone())),
        };
        if let Err(e) = request_auth::verify_request(
            &sig,
            &self.deployment,
            method,
            message,
            &state.current_key().signing_key,
        ) {
            // Say so when the signer used the key it rotated out last (one more
            // verification, bounded: never the whole key history).
            let previous = state.keys.len().checked_sub(2).map(|i| &state.keys[i]);
            if previous.is_some_and(|k| {
                request_auth::verify_request(
                    &sig,
                    &self.deployment,
                    method,
                    message,
                    &k.signing_key,
                )
                .is_ok()
            }) {
                return Err(ApiError::RotatedOutSigner(sig.actor.clone()));
            }
            return Err(e.into());
        }
        if state.revoked.is_some() {
            return Err(ApiError::RevokedSigner(sig.actor.clone()));
        }
        let key = format!("{}.{}", sig.actor, sig.nonce);
        match self
            .nonces
            .create(&key, bytes::Bytes::from(sig.timestamp_ms.to_string()))
            .await
        {
            Ok(_) => Ok(state),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(ApiError::Replayed(sig.nonce))
            }
            Err(e) => Err(ApiError::Unavailable(format!(
                "replay cache unavailable ({e}); retry with a fresh nonce"
            ))),
        }
    }
}
