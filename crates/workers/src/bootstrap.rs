//! Bootstrapping identities a deployment needs: the operator (trust root) and the
//! service identity of each worker role, endorsed by the operator. Idempotent:
//! several instances may run it at once. The events are deterministic (ids derived
//! from the identity id, `occurred_at` given by the caller, e.g. the key file's
//! creation time), so instances racing with the same keys write byte-identical
//! events and JetStream deduplicates them.

use amai_bus::proto::{self, payload::Kind, IdentityKind};
use amai_bus::store::AppendErrorKind;
use amai_bus::subjects::{Aggregate, AggregateKind};
use amai_bus::{EventDraft, EventStore, IdentityKeys};
use prost::Message;

/// Why an identity could not be ensured.
#[derive(Debug, thiserror::Error)]
#[error("cannot register {name}: {detail}")]
pub struct BootstrapError {
    /// The name being registered.
    pub name: String,
    /// What failed.
    pub detail: String,
}

/// Registers `keys` as `name` of `kind` (with an optional endorsement) unless it
/// already is. Returns the identity id.
pub async fn ensure_identity(
    store: &EventStore,
    keys: &IdentityKeys,
    name: &str,
    kind: IdentityKind,
    endorsement: Option<proto::Endorsement>,
    registered_at: prost_types::Timestamp,
) -> Result<String, BootstrapError> {
    let err = |d: String| BootstrapError {
        name: name.to_string(),
        detail: d,
    };
    let id = keys.identity_id();
    let agent = Aggregate::agent(&id).map_err(|e| err(e.to_string()))?;
    let head = store
        .chain_head(&agent)
        .await
        .map_err(|e| err(e.to_string()))?;
    if head.aggregate_seq > 0 {
        return Ok(id);
    }
    let genesis = EventDraft::new(
        agent,
        Kind::AgentRegistered(proto::AgentRegistered {
            name: name.to_string(),
            kind: kind as i32,
            signing_key: keys.public_key().as_bytes().to_vec(),
            x25519_key: keys.x25519_public().to_vec(),
            metadata: Default::default(),
            endorsement,
        }),
    )
    .id(crate::reactor::output_id(&id, 0))
    .occurred_at(registered_at)
    .sign(keys, &id);
    let genesis_hash = amai_bus::envelope::hash_bytes(&genesis.encode_to_vec());
    let claim = EventDraft::new(
        Aggregate::new(AggregateKind::Name, name).map_err(|e| err(e.to_string()))?,
        Kind::NameClaimed(proto::NameClaimed {
            name: name.to_string(),
            agent_id: id.clone(),
            genesis_hash: genesis_hash.to_vec(),
            genesis: genesis.encode_to_vec(),
        }),
    )
    .id(crate::reactor::output_id(&id, 1))
    .occurred_at(registered_at)
    .sign(keys, &id);
    // Instances racing with the same keys write byte-identical claims, which
    // come back as duplicates; NameTaken means somebody else holds the name, and
    // a deployment must not run with its service or operator name squatted.
    match store.append(claim).await {
        Ok(_) => {}
        Err(e) if e.kind() == AppendErrorKind::NameTaken => {
            return Err(err(format!(
                "the name {name:?} is held by another identity ({e}); a service or operator name must belong to its own key: choose another name or investigate who registered it"
            )))
        }
        Err(e) => return Err(err(e.to_string())),
    }
    match store.append(genesis).await {
        Ok(_) => Ok(id),
        Err(e) if e.kind() == AppendErrorKind::AlreadyRegistered => Ok(id),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Registers the deployment's operator (the trust root) as `name`.
pub async fn ensure_operator(
    store: &EventStore,
    operator: &IdentityKeys,
    name: &str,
    registered_at: prost_types::Timestamp,
) -> Result<String, BootstrapError> {
    ensure_identity(
        store,
        operator,
        name,
        IdentityKind::Operator,
        None,
        registered_at,
    )
    .await
}

/// Registers a worker role's service identity, endorsed by `operator` (the
/// trust root) to write the aggregate kinds `scopes` and nothing else.
pub async fn ensure_service(
    store: &EventStore,
    operator: &IdentityKeys,
    service: &IdentityKeys,
    name: &str,
    scopes: &[AggregateKind],
    registered_at: prost_types::Timestamp,
) -> Result<String, BootstrapError> {
    let scopes: Vec<String> = scopes.iter().map(|k| k.as_str().to_string()).collect();
    let endorsement = proto::Endorsement {
        operator_id: operator.identity_id(),
        operator_key: operator.public_key().as_bytes().to_vec(),
        signature: operator
            .endorse(&service.public_key(), "service", &scopes)
            .to_vec(),
        operator_seq: 0,
        scopes,
    };
    ensure_identity(
        store,
        service,
        name,
        IdentityKind::Service,
        Some(endorsement),
        registered_at,
    )
    .await
}
