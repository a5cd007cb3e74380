//! The network of one jail whose policy is `llm-only` or an `allow` list (a jail
//! with policy `none` keeps `NetworkMode: none` and needs nothing from here).
//!
//! This module owns, per jail: a Docker bridge network, one nftables table on the
//! host, a catch-all TCP listener and a DNS responder on the network's gateway
//! address, a reader of the NFLOG group the table logs refused packets to, and
//! the network log they write. [`JailNetwork::create`] sets them up
//! before any container joins; [`JailNetwork::close`] takes them down (the caller
//! removes its containers first); [`remove_orphan_networks`] removes what a crashed
//! worker left behind.
//!
//! # How traffic flows
//!
//! The Docker network is a plain (not `--internal`) bridge with inter-container
//! traffic and IP masquerading disabled (`enable_icc=false`,
//! `enable_ip_masquerade=false`), its bridge named `amai<10 hex>` and labelled
//! `amai.managed=true`, `amai.jail=<id>` (and `amai.scope=<scope>` with
//! [`NetworkPlan::scope`]). It is deliberately not internal: an
//! internal network gives the container no default route, so a connection to an
//! outside address fails with `ENETUNREACH` inside the container and never reaches
//! anything that could log it. With the default route via the gateway, every
//! packet the jail sends arrives at the host, where the jail's nft table
//! (`table inet amai_jail_<10 hex>`, commented `amai.jail=<id>`, or
//! `amai.scope=<scope> amai.jail=<id>` with a scope) takes it:
//!
//! - an IPv4 TCP connection to an allowed destination (the LLM proxy as the jail
//!   dials it, an allowlisted `IP:port`, the synthetic address of an allowlisted
//!   name with one of its ports: the table's set `allowed_tcp`, fixed when the
//!   network is created) is redirected to the catch-all listener, which reads
//!   the original destination (`SO_ORIGINAL_DST`), logs the attempt, and
//!   forwards the bytes;
//! - every other TCP SYN from the bridge, to the host (`input`) or to anywhere
//!   else (`forward`), is logged to the jail's NFLOG group and answered with a
//!   reset; the reader of the group (see `nflog`) logs it as denied;
//! - every UDP datagram to port 53 is redirected to the DNS responder (whichever
//!   server it was sent to), which logs the question and answers or refuses;
//! - every other IPv4 UDP datagram and ICMP message from the bridge is logged to
//!   the NFLOG group too (denied, protocol `udp` or `icmp`), and rejected with an
//!   ICMP port-unreachable, like everything else from the bridge (IPv6). Nothing
//!   is forwarded off the bridge, and nothing is forwarded onto it.
//!
//! The NFLOG group (`log group <n>`) is the jail network's own: its reader binds
//! it before the table is installed, starting from a number derived from the
//! jail id and moving on while the kernel says a group is taken (a group has one
//! reader at a time, whichever process: concurrent jails of this process and of
//! others never share one); the group is free again when the reader's socket
//! closes with the network. [`JailNetwork::log_group`] tells which.
//!
//! The table is installed before [`JailNetwork::create`] returns, so it is in place
//! before any container joins; if installing it fails, the Docker network is
//! removed again and no jail can use it; [`JailNetwork::close`] and
//! [`remove_orphan_networks`] remove the network before the table, and keep the
//! table when the network stays. Without the table (deleted by hand), Docker's own
//! rules would forward the jail's packets; masquerading is off, so no replies come
//! back to its private address, but packets could leave one way:
//! [`JailNetwork::check_rules`] lets a caller verify the table right before
//! starting a container.
//!
//! # Scopes
//!
//! A network created with [`NetworkPlan::scope`] carries the scope in its Docker
//! label and in its table's comment; the table's name stays per jail (the same
//! 10 hex digits as the network's, from the jail id alone), so the table of a
//! network is found from its name whatever the scope.
//! [`remove_orphan_networks_in_scope`] removes only the networks labelled with
//! the scope, then only the tables whose comment names the scope **and** whose
//! network no longer exists: a table is never deleted while a network of its
//! name exists, whatever that network's scope. A table of another scope, or
//! without one, is left alone even when its network is gone (a table without
//! its network matches no bridge and protects nothing, but it is not ours to
//! delete): its own scope's cleanup or the unscoped [`remove_orphan_networks`]
//! removes it.
//!
//! # What the jail sees
//!
//! - The LLM proxy at [`JailNetwork::llm_base_url`], `http://<gateway>:8088`; the
//!   listener forwards that destination to the proxy's real address on the host
//!   ([`NetworkPlan::llm_proxy`], e.g. `127.0.0.1:8088`).
//! - How a denial looks to the client: a connection to a destination the
//!   policy does not allow is **refused at its SYN** (a reset answers the SYN:
//!   `ECONNREFUSED`, e.g. wget's "Connection refused"); no handshake completes
//!   and nothing of the jail's data goes anywhere. It never hangs. The attempt
//!   is in the log all the same, from the NFLOG group. A connection the table
//!   lets through but the listener then turns down (an allowlisted name that
//!   resolves onto the host, below; a connection dialling the listener's own
//!   port) completes its handshake and is reset at once (`ECONNRESET`, wget's
//!   "Connection reset by peer").
//! - DNS: the container's `HostConfig.Dns` is [`JailNetwork::dns_servers`] (the
//!   gateway). Docker's embedded resolver (127.0.0.11, always used on user-defined
//!   networks) answers the names of containers on the jail's own network and
//!   forwards every other query to that server from the container's network
//!   namespace, so it goes through the bridge and our redirect; a query sent
//!   directly to any other server is redirected to us too. Only a loopback address
//!   in `HostConfig.Dns` would make the embedded resolver query from the host's
//!   namespace: never pass one. Allowlisted names get a synthetic A record from
//!   198.18.0.0/15 (one per name, fixed for the jail); the listener maps that
//!   address back to the name and resolves it on the host ([`Resolve`]) only when
//!   the jail connects. Every other name gets `REFUSED`. AAAA and other types of an
//!   allowlisted name get an empty answer.
//! - An allowlisted name is not a way onto the host (DNS rebinding): addresses it
//!   resolves to that are loopback or unspecified are never used, and a connection
//!   that turns out to reach an address of this host (the kernel picked the
//!   destination itself as the source) is reset before any of the jail's bytes
//!   pass; both are logged as denied. An IP literal in the allowlist is taken as
//!   written.
//!
//! # Limits
//!
//! - Denials of UDP and ICMP are ICMP port-unreachable messages; a client with an
//!   unconnected UDP socket (busybox `tftp`) does not see them and times out.
//! - A UDP or ICMP flow is logged once per [`DEDUPE_WINDOW`] (a client retrying
//!   the same datagram is one entry); each refused TCP SYN is one entry. When the
//!   kernel has to drop NFLOG messages for a full socket buffer (a jail flooding
//!   refused packets), their entries are lost (the packets are still rejected).
//! - The log keeps at most [`MAX_LOG_ENTRIES`] entries and counts the rest.
//! - Each jail network takes a subnet from Docker's default address pools, which
//!   hold a few dozen networks.
//! - IPv6 is rejected by nft rules with counters but is not in the [`NetworkLog`]
//!   (the jail has no IPv6 address; only IPv4 is logged to the NFLOG group).
//! - Queries for the names Docker's embedded resolver answers itself (containers of
//!   the jail's own network) are not logged.
//! - DNS over TCP is a TCP connection to port 53 and is refused (and logged) like
//!   any other.
//! - Allowed connections are logged once, when they are forwarded; their bytes are
//!   not counted, and neither their number nor their bandwidth is limited here.

mod dns;
mod log;
mod nflog;
mod nft;
mod policy;
mod resolve;
mod tcp;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use amai_jail_spec::NetworkPolicy;
use bollard::models::{NetworkCreateRequest, NetworkDisconnectRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::scope::Scope;
use crate::{JAIL_LABEL, MANAGED_LABEL, SCOPE_LABEL};

pub use self::log::{
    NetworkLog, NetworkLogEntry, ParseLogError, Protocol, Verdict, MAX_LOG_ENTRIES,
};
pub use self::nflog::{NflogError, DEDUPE_WINDOW, FIRST_GROUP, MAX_PROBES};
pub use self::nft::{NftError, TABLE_PREFIX};
pub use self::policy::{MAX_SYNTHETIC_NAMES, SYNTHETIC_BASE};
pub use self::resolve::{Resolve, StaticResolver, SystemResolver};
pub use self::tcp::CONNECT_TIMEOUT;

/// The port on the gateway address where the jail reaches the LLM proxy.
pub const LLM_PROXY_PORT: u16 = 8088;
/// The prefix of the Docker network names.
pub const NETWORK_PREFIX: &str = "amai-jail-";
/// The prefix of the bridge interface names (plus 10 hex digits: 14 characters,
/// within Linux's 15).
pub const BRIDGE_PREFIX: &str = "amai";

/// What [`JailNetwork::create`] sets up. Build with [`NetworkPlan::new`].
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    /// The jail (label `amai.jail`): 1 to 128 characters of `[A-Za-z0-9_.-]`,
    /// and short enough for the nft table's comment: at most 118 characters
    /// without a scope, 128 − 22 − the scope's length with one.
    pub jail_id: String,
    /// `llm-only` or `allow` (`none` needs no network).
    pub policy: NetworkPolicy,
    /// Where the LLM proxy listens on the host, when the jail has an LLM session.
    pub llm_proxy: Option<SocketAddr>,
    /// How allowlisted names are resolved on the host (default: the host's
    /// resolver).
    pub resolver: Arc<dyn Resolve>,
    /// The deployment the network belongs to (label `amai.scope`, and in the nft
    /// table's comment); `None` (the default) means none.
    pub scope: Option<Scope>,
}

impl NetworkPlan {
    /// A plan without LLM proxy and with the host's resolver.
    pub fn new(jail_id: impl Into<String>, policy: NetworkPolicy) -> Self {
        Self {
            jail_id: jail_id.into(),
            policy,
            llm_proxy: None,
            resolver: Arc::new(SystemResolver),
            scope: None,
        }
    }

    /// Sets where the LLM proxy listens on the host.
    pub fn llm_proxy(mut self, address: SocketAddr) -> Self {
        self.llm_proxy = Some(address);
        self
    }

    /// Sets how allowlisted names are resolved.
    pub fn resolver(mut self, resolver: impl Resolve + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Labels the Docker network with `scope` and names it in the nft table's
    /// comment, for [`remove_orphan_networks_in_scope`] and
    /// [`crate::remove_scope`].
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }
}

/// The names one jail's network things carry, all derived from the jail id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailNetworkNames {
    /// The Docker network, `amai-jail-<10 hex>`.
    pub network: String,
    /// The bridge interface, `amai<10 hex>`.
    pub bridge: String,
    /// The nft table (family `inet`), `amai_jail_<10 hex>`.
    pub table: String,
}

impl JailNetworkNames {
    /// The names for `jail_id` (the 10 hex digits are the start of its SHA-256).
    pub fn for_jail(jail_id: &str) -> Self {
        let digest = hex::encode(Sha256::digest(jail_id.as_bytes()));
        let short = &digest[..10];
        Self {
            network: format!("{NETWORK_PREFIX}{short}"),
            bridge: format!("{BRIDGE_PREFIX}{short}"),
            table: format!("{TABLE_PREFIX}{short}"),
        }
    }
}

/// What the listeners of one jail share.
#[derive(Debug)]
pub(crate) struct Context {
    jail_id: String,
    rules: policy::Rules,
    log: log::SharedLog,
    resolver: Arc<dyn Resolve>,
}

/// A jail's network, live until [`JailNetwork::close`]. Dropping it without
/// closing aborts the listeners and spawns the removal of the table and the
/// network on the current runtime (without one they are left for
/// [`remove_orphan_networks`]).
#[derive(Debug)]
pub struct JailNetwork {
    engine: Engine,
    names: JailNetworkNames,
    jail_id: String,
    scope: Option<Scope>,
    gateway: Ipv4Addr,
    subnet: String,
    log: log::SharedLog,
    tasks: Vec<JoinHandle<()>>,
    /// The NFLOG reader and what it logs with, drained when the network closes.
    nflog: Option<(Arc<nflog::NflogReader>, Arc<Context>)>,
    closed: bool,
}

/// Why [`JailNetwork::create`] failed. Whatever it had set up is removed again.
#[derive(Debug, thiserror::Error)]
pub enum CreateNetworkError {
    /// The jail id cannot name a network.
    #[error(
        "jail id {jail_id:?} cannot name a jail network: use 1 to 128 characters of [A-Za-z0-9_.-]"
    )]
    InvalidJailId {
        /// The id given.
        jail_id: String,
    },
    /// The jail id is too long to name in the nft table's comment (at most 128
    /// characters, the scope included).
    #[error("jail id {jail_id:?} is too long for a jail network{}: at most {max} characters fit in the nft table comment", scope.as_ref().map(|s| format!(" in scope {s}")).unwrap_or_default())]
    JailIdTooLong {
        /// The id given.
        jail_id: String,
        /// The scope given.
        scope: Option<Scope>,
        /// The longest jail id that fits with that scope.
        max: usize,
    },
    /// Policy `none` needs no network.
    #[error("network policy none needs no jail network: run the container with NetworkMode none")]
    PolicyNone,
    /// `llm-only` without an LLM proxy would reach nothing.
    #[error("network policy llm-only needs the LLM proxy's address: set NetworkPlan::llm_proxy (or use policy none)")]
    NoLlmProxy,
    /// The allowlist has more names than synthetic addresses exist.
    #[error("the allowlist names {names} hosts, more than the {MAX_SYNTHETIC_NAMES} synthetic addresses: shorten it")]
    TooManyNames {
        /// How many.
        names: usize,
    },
    /// A network for this jail exists already.
    #[error("Docker network {network} for jail {jail_id} exists already: close the jail's JailNetwork, or run remove_orphan_networks if its worker is gone")]
    Exists {
        /// The network.
        network: String,
        /// The jail.
        jail_id: String,
    },
    /// The engine refused a step.
    #[error("{step} for jail network {network} failed: {source}")]
    Docker {
        /// What was being done.
        step: &'static str,
        /// The network.
        network: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine did not report an IPv4 gateway and subnet for the network.
    #[error("Docker network {network} has no IPv4 gateway and subnet in its IPAM config ({found}): the bridge driver should assign one; check the engine's default address pools")]
    NoGateway {
        /// The network.
        network: String,
        /// What inspect showed.
        found: String,
    },
    /// Binding a listener on the gateway address failed.
    #[error("binding the jail's {what} on {address} failed: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Where.
        address: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Opening the NFLOG reader of refused attempts failed.
    #[error("reading refused attempts of jail network {network} (NFLOG) failed: {source}")]
    Nflog {
        /// The network.
        network: String,
        /// What went wrong.
        #[source]
        source: NflogError,
    },
    /// Installing the nft table failed.
    #[error("installing the nft table of jail network {network} failed: {source}")]
    Rules {
        /// The network.
        network: String,
        /// What nft said.
        #[source]
        source: NftError,
    },
}

/// What [`JailNetwork::close`] could not remove.
#[derive(Debug, thiserror::Error)]
pub enum CloseNetworkError {
    /// Deleting the nft table failed; it is left for [`remove_orphan_networks`].
    #[error("deleting nft table {table} failed (left for remove_orphan_networks): {source}")]
    Rules {
        /// The table.
        table: String,
        /// What nft said.
        #[source]
        source: NftError,
    },
    /// Disconnecting a container or removing the Docker network failed; it is
    /// left for [`remove_orphan_networks`].
    #[error(
        "{step} for Docker network {network} failed (left for remove_orphan_networks): {source}"
    )]
    Docker {
        /// What was being done.
        step: &'static str,
        /// The network.
        network: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Why [`JailNetwork::check_rules`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckRulesError {
    /// The table is gone: the jail must not run.
    #[error("nft table {table} of the jail network is missing: do not start containers on it; close it and create it again")]
    Missing {
        /// The table.
        table: String,
    },
    /// Listing it failed.
    #[error("listing nft table {table} failed: {source}")]
    List {
        /// The table.
        table: String,
        /// What nft said.
        #[source]
        source: NftError,
    },
}

impl JailNetwork {
    /// Creates the jail's Docker network, binds the catch-all TCP listener and the
    /// DNS responder on its gateway address and installs its nft table; see the
    /// module documentation. Needs root (nft) and the `nft` CLI.
    pub async fn create(engine: &Engine, plan: NetworkPlan) -> Result<Self, CreateNetworkError> {
        let NetworkPlan {
            jail_id,
            policy,
            llm_proxy,
            resolver,
            scope,
        } = plan;
        let valid = !jail_id.is_empty()
            && jail_id.len() <= 128
            && jail_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(CreateNetworkError::InvalidJailId { jail_id });
        }
        let max = nft::max_jail_id_len(scope.as_ref().map(Scope::as_str));
        if jail_id.len() > max {
            return Err(CreateNetworkError::JailIdTooLong {
                jail_id,
                scope,
                max,
            });
        }
        match (&policy, llm_proxy) {
            (NetworkPolicy::None, _) => return Err(CreateNetworkError::PolicyNone),
            (NetworkPolicy::LlmOnly, None) => return Err(CreateNetworkError::NoLlmProxy),
            _ => {}
        }
        let names = JailNetworkNames::for_jail(&jail_id);
        let network = names.network.clone();
        let docker_error = |step: &'static str| {
            let network = network.clone();
            move |source| CreateNetworkError::Docker {
                step,
                network,
                source,
            }
        };

        let request = NetworkCreateRequest {
            name: names.network.clone(),
            driver: Some("bridge".to_owned()),
            internal: Some(false),
            attachable: Some(false),
            enable_ipv6: Some(false),
            options: Some(HashMap::from([
                (
                    "com.docker.network.bridge.name".to_owned(),
                    names.bridge.clone(),
                ),
                (
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_owned(),
                    "false".to_owned(),
                ),
            ])),
            labels: Some(crate::workdirs::with_scope(
                HashMap::from([
                    (MANAGED_LABEL.to_owned(), "true".to_owned()),
                    (JAIL_LABEL.to_owned(), jail_id.clone()),
                ]),
                scope.as_ref(),
            )),
            ..Default::default()
        };
        // Engines before API 1.44 create a second network with the same name
        // unless asked not to; look first (the bridge name, derived from the jail
        // id too, makes a racing second creation fail).
        match engine.docker().inspect_network(&names.network, None).await {
            Ok(_) => {
                return Err(CreateNetworkError::Exists {
                    network: names.network,
                    jail_id,
                })
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(source) => return Err(docker_error("looking for an existing network")(source)),
        }
        match engine.docker().create_network(request).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 409
                || (status_code == 403 && message.contains("same bridge name")) =>
            {
                return Err(CreateNetworkError::Exists {
                    network: names.network,
                    jail_id,
                })
            }
            Err(source) => return Err(docker_error("creating the network")(source)),
        }

        // From here on, a failure removes what was set up.
        let mut network = Self {
            engine: engine.clone(),
            names,
            jail_id,
            scope,
            gateway: Ipv4Addr::UNSPECIFIED,
            subnet: String::new(),
            log: log::SharedLog::default(),
            tasks: Vec::new(),
            nflog: None,
            closed: false,
        };
        match network.start(&policy, llm_proxy, resolver).await {
            Ok(()) => Ok(network),
            Err(error) => {
                if let Err(cleanup) = network.teardown().await {
                    tracing::warn!(jail = %network.jail_id, error = %cleanup, "removing a half-created jail network failed");
                }
                network.closed = true;
                Err(error)
            }
        }
    }

    async fn start(
        &mut self,
        policy: &NetworkPolicy,
        llm_proxy: Option<SocketAddr>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<(), CreateNetworkError> {
        let name = self.names.network.clone();
        let inspected = self
            .engine
            .docker()
            .inspect_network(&name, None)
            .await
            .map_err(|source| CreateNetworkError::Docker {
                step: "inspecting the network",
                network: name.clone(),
                source,
            })?;
        let configs = inspected
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default();
        let found = format!("{configs:?}");
        let (gateway, subnet) = configs
            .iter()
            .find_map(|config| {
                let gateway = config.gateway.as_deref()?.parse::<Ipv4Addr>().ok()?;
                let subnet = config.subnet.clone()?;
                Some((gateway, subnet))
            })
            .ok_or(CreateNetworkError::NoGateway {
                network: name.clone(),
                found,
            })?;
        self.gateway = gateway;
        self.subnet = subnet;

        let proxy = llm_proxy.map(|real| (SocketAddr::new(gateway.into(), LLM_PROXY_PORT), real));
        let rules = policy::Rules::new(policy, proxy);
        if rules.name_count() > MAX_SYNTHETIC_NAMES {
            return Err(CreateNetworkError::TooManyNames {
                names: rules.name_count(),
            });
        }
        let context = Arc::new(Context {
            jail_id: self.jail_id.clone(),
            rules,
            log: self.log.clone(),
            resolver,
        });

        let any_port = SocketAddr::new(gateway.into(), 0);
        let bind_error = |what| {
            move |source| CreateNetworkError::Bind {
                what,
                address: any_port,
                source,
            }
        };
        let tcp = TcpListener::bind(any_port)
            .await
            .map_err(bind_error("catch-all TCP listener"))?;
        let udp = UdpSocket::bind(any_port)
            .await
            .map_err(bind_error("DNS responder"))?;
        let tcp_port = tcp
            .local_addr()
            .map_err(bind_error("catch-all TCP listener"))?
            .port();
        let dns_port = udp
            .local_addr()
            .map_err(bind_error("DNS responder"))?
            .port();
        let allowed_tcp = context.rules.allowed_tcp();
        let reader = Arc::new(
            nflog::NflogReader::bind(
                &Sha256::digest(self.jail_id.as_bytes()),
                self.names.table.clone(),
            )
            .map_err(|source| CreateNetworkError::Nflog {
                network: name.clone(),
                source,
            })?,
        );
        let log_group = reader.group();
        self.tasks
            .push(tokio::spawn(tcp::serve(tcp, context.clone())));
        self.tasks
            .push(tokio::spawn(dns::serve(udp, context.clone())));
        self.tasks
            .push(tokio::spawn(reader.clone().serve(context.clone())));
        self.nflog = Some((reader, context));

        let spec = nft::TableSpec {
            table: self.names.table.clone(),
            jail_id: self.jail_id.clone(),
            scope: self.scope.as_ref().map(|scope| scope.as_str().to_owned()),
            bridge: self.names.bridge.clone(),
            gateway,
            tcp_port,
            dns_port,
            log_group,
            allowed_tcp,
        };
        nft::install(&spec)
            .await
            .map_err(|source| CreateNetworkError::Rules {
                network: name,
                source,
            })?;
        tracing::info!(jail = %self.jail_id, network = %self.names.network, %gateway, tcp_port, dns_port, log_group, "jail network up");
        Ok(())
    }

    /// The Docker network to put in `HostConfig.NetworkMode`.
    pub fn docker_network_name(&self) -> &str {
        &self.names.network
    }

    /// The names of the network, the bridge and the nft table.
    pub fn names(&self) -> &JailNetworkNames {
        &self.names
    }

    /// The jail this network belongs to.
    pub fn jail_id(&self) -> &str {
        &self.jail_id
    }

    /// The deployment this network belongs to, if it has a scope.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_ref()
    }

    /// The gateway address (the bridge's address on the host).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The network's subnet in CIDR notation, e.g. `172.18.0.0/16`.
    pub fn subnet(&self) -> &str {
        &self.subnet
    }

    /// The DNS servers for `HostConfig.Dns`: the gateway.
    pub fn dns_servers(&self) -> Vec<String> {
        vec![self.gateway.to_string()]
    }

    /// The LLM proxy's base URL as the jail sees it, `http://<gateway>:8088`.
    pub fn llm_base_url(&self) -> String {
        format!("http://{}:{LLM_PROXY_PORT}", self.gateway)
    }

    /// A snapshot of the network log so far.
    pub fn log(&self) -> NetworkLog {
        self.log.snapshot()
    }

    /// The NFLOG group the table logs refused attempts to (bound by this
    /// network's reader until it closes), or `None` before it is set up.
    pub fn log_group(&self) -> Option<u16> {
        self.nflog.as_ref().map(|(reader, _)| reader.group())
    }

    /// The jail's nft table as `nft list table` prints it, failing when it is
    /// missing: call before starting a container to know the rules are in place.
    pub async fn check_rules(&self) -> Result<String, CheckRulesError> {
        let table = self.names.table.clone();
        match nft::list(&table).await {
            Ok(Some(listing)) => Ok(listing),
            Ok(None) => Err(CheckRulesError::Missing { table }),
            Err(source) => Err(CheckRulesError::List { table, source }),
        }
    }

    /// Stops the listeners, deletes the nft table and removes the Docker network
    /// (force-disconnecting any container still attached; the caller should
    /// remove its containers first). Returns the complete network log.
    pub async fn close(mut self) -> Result<NetworkLog, CloseNetworkError> {
        self.closed = true;
        let result = self.teardown().await;
        let log = self.log.snapshot();
        result.map(|()| log)
    }

    async fn teardown(&mut self) -> Result<(), CloseNetworkError> {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        // What was refused before now is in the socket already (the kernel
        // sends each logged packet at once): log it, then close the socket,
        // which unbinds the group.
        if let Some((reader, context)) = self.nflog.take() {
            reader.drain(&context);
        }
        // The network goes first: while a container may still be attached, the
        // table keeps it closed.
        remove_network(&self.engine, &self.names.network).await?;
        nft::delete(&self.names.table)
            .await
            .map_err(|source| CloseNetworkError::Rules {
                table: self.names.table.clone(),
                source,
            })
    }
}

impl Drop for JailNetwork {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.closed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(jail = %self.jail_id, "jail network dropped outside a runtime: left for remove_orphan_networks");
            return;
        };
        let engine = self.engine.clone();
        let names = self.names.clone();
        runtime.spawn(async move {
            // Network first, as in close: the table stays while it may be in use.
            if let Err(error) = remove_network(&engine, &names.network).await {
                tracing::warn!(network = %names.network, %error, "removing a dropped jail network failed; its table stays, left for remove_orphan_networks");
                return;
            }
            if let Err(error) = nft::delete(&names.table).await {
                tracing::warn!(table = %names.table, %error, "deleting the nft table of a dropped jail network failed");
            }
        });
    }
}

/// Force-disconnects every container from `network` and removes it; a network
/// already gone counts as removed.
async fn remove_network(engine: &Engine, network: &str) -> Result<(), CloseNetworkError> {
    let docker = engine.docker();
    let docker_error = |step: &'static str| {
        move |source| CloseNetworkError::Docker {
            step,
            network: network.to_owned(),
            source,
        }
    };
    let inspected = match docker.inspect_network(network, None).await {
        Ok(inspected) => inspected,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(()),
        Err(source) => return Err(docker_error("inspecting the network")(source)),
    };
    for container in inspected.containers.unwrap_or_default().into_keys() {
        let request = NetworkDisconnectRequest {
            container,
            force: Some(true),
        };
        match docker.disconnect_network(network, request).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(source) => return Err(docker_error("disconnecting a container")(source)),
        }
    }
    match docker.remove_network(network).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(docker_error("removing the network")(source)),
    }
}

/// What [`remove_orphan_networks`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedNetworks {
    /// The Docker networks removed.
    pub networks: Vec<String>,
    /// The nft tables deleted.
    pub tables: Vec<String>,
}

/// Why [`remove_orphan_networks`] failed (the other orphans were still
/// attempted).
#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    /// Listing the managed networks failed.
    #[error("listing Docker networks labelled {MANAGED_LABEL}=true failed: {0}")]
    List(#[source] bollard::errors::Error),
    /// Listing or deleting nft tables failed.
    #[error("nft tables {TABLE_PREFIX}*: {0}")]
    Rules(#[source] NftError),
    /// Removing a network failed.
    #[error(transparent)]
    Remove(CloseNetworkError),
    /// Looking for the network of a table failed (the table stays).
    #[error("looking for Docker network {network} (of nft table {table}) failed, the table stays: {source}")]
    Inspect {
        /// The network looked for.
        network: String,
        /// The table kept.
        table: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Removes the Docker networks labelled `amai.managed=true` and the nft tables
/// named `amai_jail_*` whose jail is not live (`is_live(jail_id)` false; a table
/// or network without a jail id is always an orphan), **whatever their scope**:
/// only for an engine no other deployment uses; otherwise use
/// [`remove_orphan_networks_in_scope`]. At worker start nothing is live: pass
/// `|_| false`. Networks go first (force-disconnecting containers); the table of
/// a network that could not be removed stays, so it stays closed.
pub async fn remove_orphan_networks(
    engine: &Engine,
    is_live: impl Fn(&str) -> bool,
) -> Result<RemovedNetworks, OrphanError> {
    let mut removed = RemovedNetworks::default();
    let mut first_error = None;
    // Jails whose network stayed: their tables stay too, to keep them closed.
    let mut kept = Vec::new();

    let filters = HashMap::from([("label".to_owned(), vec![format!("{MANAGED_LABEL}=true")])]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    match engine.docker().list_networks(Some(options)).await {
        Ok(networks) => {
            for network in networks {
                let jail = network
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(JAIL_LABEL))
                    .cloned();
                if jail.as_deref().is_some_and(&is_live) {
                    continue;
                }
                let Some(name) = network.name else { continue };
                match remove_network(engine, &name).await {
                    Ok(()) => removed.networks.push(name),
                    Err(error) => {
                        kept.extend(jail);
                        first_error.get_or_insert(OrphanError::Remove(error));
                    }
                }
            }
        }
        Err(error) => {
            // Without the list, no network is known gone: keep every table.
            return Err(OrphanError::List(error));
        }
    }

    match nft::owned_tables().await {
        Ok(tables) => {
            for nft::OwnedTable {
                name: table, jail, ..
            } in tables
            {
                if jail
                    .as_deref()
                    .is_some_and(|jail| is_live(jail) || kept.iter().any(|k| k == jail))
                {
                    continue;
                }
                match nft::delete(&table).await {
                    Ok(()) => removed.tables.push(table),
                    Err(error) => {
                        first_error.get_or_insert(OrphanError::Rules(error));
                    }
                }
            }
        }
        Err(error) => {
            first_error.get_or_insert(OrphanError::Rules(error));
        }
    }

    match first_error {
        Some(error) => Err(error),
        None => Ok(removed),
    }
}

/// [`remove_orphan_networks`] limited to `scope`: removes the Docker networks
/// labelled `amai.managed=true` and `amai.scope=<scope>` whose jail is not live
/// (`is_live(jail_id)` false), then deletes the nft tables whose comment names
/// `scope`, whose jail is not live and whose Docker network (same short id) no
/// longer exists. Networks and tables of other scopes or without a scope stay,
/// and a table whose network still exists (it could not be removed, or it
/// belongs to another scope) stays too, so that network stays closed. See the
/// module documentation, section Scopes.
pub async fn remove_orphan_networks_in_scope(
    engine: &Engine,
    scope: &Scope,
    is_live: impl Fn(&str) -> bool,
) -> Result<RemovedNetworks, OrphanError> {
    let mut removed = RemovedNetworks::default();
    let mut first_error = None;

    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_LABEL}=true"),
            format!("{SCOPE_LABEL}={scope}"),
        ],
    )]);
    let options = ListNetworksOptionsBuilder::new().filters(&filters).build();
    let networks = engine
        .docker()
        .list_networks(Some(options))
        .await
        .map_err(OrphanError::List)?;
    for network in networks {
        let jail = network
            .labels
            .as_ref()
            .and_then(|labels| labels.get(JAIL_LABEL));
        if jail.is_some_and(|jail| is_live(jail)) {
            continue;
        }
        let Some(name) = network.name else { continue };
        match remove_network(engine, &name).await {
            Ok(()) => removed.networks.push(name),
            Err(error) => {
                first_error.get_or_insert(OrphanError::Remove(error));
            }
        }
    }

    match nft::owned_tables().await {
        Ok(tables) => {
            for table in tables {
                if table.scope.as_deref() != Some(scope.as_str())
                    || table.jail.as_deref().is_some_and(&is_live)
                {
                    continue;
                }
                let network = format!("{NETWORK_PREFIX}{}", table.short_id());
                match network_exists(engine, &network).await {
                    Ok(false) => {}
                    // Its network is still there: keep it closed.
                    Ok(true) => continue,
                    Err(source) => {
                        first_error.get_or_insert(OrphanError::Inspect {
                            network,
                            table: table.name,
                            source,
                        });
                        continue;
                    }
                }
                match nft::delete(&table.name).await {
                    Ok(()) => removed.tables.push(table.name),
                    Err(error) => {
                        first_error.get_or_insert(OrphanError::Rules(error));
                    }
                }
            }
        }
        Err(error) => {
            first_error.get_or_insert(OrphanError::Rules(error));
        }
    }

    match first_error {
        Some(error) => Err(error),
        None => Ok(removed),
    }
}

/// Whether a Docker network named `network` exists (with any labels).
async fn network_exists(engine: &Engine, network: &str) -> Result<bool, bollard::errors::Error> {
    match engine.docker().inspect_network(network, None).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(error) => Err(error),
    }
}
