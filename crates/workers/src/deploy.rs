//! Deployment wiring shared by every process that runs roles (`amai up`,
//! `amai worker`, `amai bench`): connecting to NATS, creating the streams and
//! opening the [`EventStore`], and registering a role's service identity,
//! endorsed by the operator for exactly the aggregates the role declares (plus
//! its failure records). Starting the role itself is [`RoleRuntime::start`].
//!
//! Key files, the trust-root policy and configuration stay with the caller:
//! these functions take keys and settings, never read files or the environment.
//!
//! [`RoleRuntime::start`]: crate::runtime::RoleRuntime::start

use std::time::Duration;

use amai_bus::streams::{ensure_streams, EnsureStreamsError, StreamSettings};
use amai_bus::subjects::AggregateKind;
use amai_bus::{EventStore, EventStoreConfig, IdentityKeys};

use crate::bootstrap::{ensure_operator, ensure_service, BootstrapError};
use crate::reactor::ServiceSigner;
use crate::role::Role;

/// How many times [`connect_nats`] tries before giving up.
const CONNECT_ATTEMPTS: u32 = 10;
/// Pause between two connection attempts.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

/// Why a deployment step failed; see [`DeployError::kind`].
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The NATS url is not one (or a comma-separated list of them).
    #[error("{url:?} is not a NATS url (or a comma-separated list of them): {detail}")]
    BadUrl {
        /// The url given.
        url: String,
        /// The parser's complaint.
        detail: String,
    },
    /// NATS did not accept a connection within the retries.
    #[error("cannot connect to NATS at {url}: {detail}. Is nats-server running? Pass --nats-url, or run `amai up` to start one.")]
    Connect {
        /// The url given.
        url: String,
        /// The last connection error.
        detail: String,
    },
    /// The streams could not be created or updated to their specs.
    #[error(transparent)]
    Streams(#[from] EnsureStreamsError),
    /// The operator or a service identity could not be registered.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// What kind of [`DeployError`] it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployErrorKind {
    /// [`DeployError::BadUrl`]: fix the configuration; retrying cannot help.
    BadUrl,
    /// [`DeployError::Connect`]: NATS is down or unreachable; retry later.
    Connect,
    /// [`DeployError::Streams`].
    Streams,
    /// [`DeployError::Bootstrap`].
    Bootstrap,
}

impl DeployError {
    /// The kind, to match on.
    pub fn kind(&self) -> DeployErrorKind {
        match self {
            DeployError::BadUrl { .. } => DeployErrorKind::BadUrl,
            DeployError::Connect { .. } => DeployErrorKind::Connect,
            DeployError::Streams(_) => DeployErrorKind::Streams,
            DeployError::Bootstrap(_) => DeployErrorKind::Bootstrap,
        }
    }
}

/// Connects to NATS (a url or a comma-separated list of cluster urls) as
/// client `name`, retrying for a few seconds so processes can start in any
/// order.
pub async fn connect_nats(url: &str, name: &str) -> Result<async_nats::Client, DeployError> {
    let addrs = url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DeployError::BadUrl {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    let mut last = String::new();
    for attempt in 1..=CONNECT_ATTEMPTS {
        match async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .connect(addrs.clone())
            .await
        {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
        if attempt < CONNECT_ATTEMPTS {
            tokio::time::sleep(CONNECT_RETRY).await;
        }
    }
    Err(DeployError::Connect {
        url: url.to_string(),
        detail: last,
    })
}

/// How the store is opened: stream specs and the store's limits.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Replicas of every stream (1 dev, 3 cluster).
    pub replicas: usize,
    /// JetStream dedup window of every stream.
    pub dedup_window: Duration,
    /// Largest accepted encoded event.
    pub max_event_bytes: usize,
}

/// Creates (or updates to their specs) every Amai stream and builds the store
/// with the deployment's trust root.
pub async fn open_store(
    client: &async_nats::Client,
    settings: &StoreSettings,
    trust_root: ed25519_dalek::VerifyingKey,
) -> Result<EventStore, DeployError> {
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(
        &js,
        &StreamSettings {
            replicas: settings.replicas,
            dedup_window: settings.dedup_window,
        },
    )
    .await?;
    Ok(EventStore::new(
        js,
        EventStoreConfig::default()
            .trust_root(trust_root)
            .max_event_bytes(settings.max_event_bytes),
    ))
}

/// The aggregate kinds a role's service key is endorsed for: what the role
/// declares ([`Role::writes`]), plus `failure` (every reactor records the
/// inputs it gives up on).
pub fn service_scopes(role: &dyn Role) -> Vec<AggregateKind> {
    let mut out = role.writes().to_vec();
    if !out.contains(&AggregateKind::Failure) {
        out.push(AggregateKind::Failure);
    }
    out
}

/// The operator (trust root) that endorses service identities, as registered.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a> {
    /// Its keys.
    pub keys: &'a IdentityKeys,
    /// Its registered name.
    pub name: &'a str,
    /// The deterministic `occurred_at` of its genesis (e.g. its key file's time).
    pub registered_at: prost_types::Timestamp,
}

/// A role's service identity to register.
#[derive(Debug, Clone, Copy)]
pub struct Service<'a> {
    /// Its keys (shared by every instance of the role).
    pub keys: &'a IdentityKeys,
    /// Its registered name.
    pub name: &'a str,
    /// The deterministic `occurred_at` of its genesis.
    pub registered_at: prost_types::Timestamp,
}

/// Registers the operator and `role`'s service identity (endorsed for
/// [`service_scopes`]) unless they already are, and returns the signer the
/// role's runtime signs with. Idempotent and safe to race.
pub async fn register_service(
    store: &EventStore,
    operator: Operator<'_>,
    service: Service<'_>,
    role: &dyn Role,
) -> Result<ServiceSigner, DeployError> {
    ensure_operator(store, operator.keys, operator.name, operator.registered_at).await?;
    let id = ensure_service(
        store,
        operator.keys,
        service.keys,
        service.name,
        &service_scopes(role),
        service.registered_at,
    )
    .await?;
    Ok(ServiceSigner {
        id,
        keys: service.keys.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "identity")]
    #[test]
    fn service_scopes_add_failure_once() {
        let role = crate::roles::find("identity").expect("identity");
        assert_eq!(
            service_scopes(role.as_ref()),
            vec![AggregateKind::Trust, AggregateKind::Failure]
        );
    }

    #[tokio::test]
    async fn a_bad_url_is_a_configuration_error() {
        let err = connect_nats("not a url::", "t").await.expect_err("bad url");
        assert_eq!(err.kind(), DeployErrorKind::BadUrl);
    }
}
