//! The server-side commands: `amai up`, `amai gateway`, `amai worker` and
//! `amai projections rebuild|digest`: connecting to NATS, creating streams,
//! bootstrapping the operator and service identities, running roles and the
//! gateway until shutdown.

use std::path::Path;
use std::process::ExitCode;

use std::sync::Arc;

use amai_bus::streams::{ensure_streams, StreamSettings};
use amai_bus::{EventStore, IdentityKeys};
use amai_workers::deploy;
use amai_workers::reactor::{ReactorOptions, ServiceSigner};
use amai_workers::role::{Role, RoleError};
use amai_workers::runtime::{RoleMetrics, RoleRuntime, RoleRuntimeConfig};
use anyhow::Context;

use crate::config::Settings;
use crate::keystore::Keystore;
use crate::nats_supervisor::{ManagedNats, ManagedNatsConfig};
use crate::shutdown::Shutdown;

/// `amai worker` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    /// The role to run (one of the registry: `amai worker --role help` lists them).
    #[arg(long)]
    role: String,
}

/// `amai projections ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// List the events the identity projection refused because they failed
    /// verification (asks the running workers through the gateway).
    Violations {
        /// At most this many (oldest first).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The digest (SHA-256 over the whole sled tree, see
    /// `amai_projections::ProjectionDigest`) of every projection: rebuilt
    /// from the streams into a scratch dir (no reactor, no bootstrap: run it
    /// on a deployment whose streams do not move), or read from a stopped
    /// worker's store with --state. Two deployments with equal streams have
    /// equal digests.
    Digest {
        /// Only this role's projections (default: every role of this build).
        #[arg(long)]
        role: Option<String>,
        /// Read the store of a stopped worker, `<data-dir>/state/<STATE>`
        /// (e.g. identity-w1), instead of rebuilding (needs --role).
        #[arg(long, requires = "role")]
        state: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Clear a projection so it rebuilds from stream sequence 1 on next start.
    /// Run it while the worker is stopped.
    Rebuild {
        /// Which projection.
        #[arg(long, default_value = "identity")]
        name: String,
        /// The worker instance whose state to rebuild (default: the role's default state dir).
        #[arg(long, default_value = "identity")]
        state: String,
    },
}

/// `amai streams ...`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum StreamsCommand {
    /// Create every Amai stream, or update it to its spec (idempotent). With
    /// NATS accounts, only the admin user may: pass its credentials in
    /// --nats-url (`nats://admin:<password>@host:4222`).
    Ensure,
}

/// `amai streams ensure`.
pub(crate) async fn run_streams(
    settings: &Settings,
    cmd: StreamsCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        StreamsCommand::Ensure => {
            let url = settings
                .nats_url
                .clone()
                .context("amai streams ensure needs --nats-url (or AMAI_NATS_URL)")?;
            let client = connect_nats(&url, "amai-streams").await?;
            let js = async_nats::jetstream::new(client.clone());
            ensure_streams(
                &js,
                &StreamSettings {
                    replicas: settings.stream_replicas,
                    dedup_window: settings.dedup_window(),
                },
            )
            .await?;
            // The blob bucket too, with the same replicas (whoever opens it
            // first creates it: better here than by a role with defaults).
            amai_bus::blob::BlobStore::open(&js, settings.stream_replicas, usize::MAX)
                .await
                .context("cannot create the blob bucket AMAI_BLOBS")?;
            let _ = client.flush().await;
            eprintln!(
                "streams and the blob bucket ensured ({} replicas, dedup window {} s)",
                settings.stream_replicas, settings.dedup_window_secs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Name of the operator identity `amai up` registers.
pub(crate) const OPERATOR_NAME: &str = "operator";

/// Connects to NATS (a url or a comma-separated list of cluster urls), retrying
/// for a few seconds at start so processes can be started in any order.
pub(crate) async fn connect_nats(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    Ok(deploy::connect_nats(url, name).await?)
}

/// Whether a missing trust root may be generated (only `amai up`, the dev mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrustRootSource {
    /// `--trust-root`, else the operator key file, else generate that file.
    GenerateIfMissing,
    /// `--trust-root`, else the operator key file; neither is an error.
    Required,
}

/// The trust root: `--trust-root`, else the operator key in the data dir; only
/// `amai up` may generate one ([`TrustRootSource::GenerateIfMissing`]).
pub(crate) fn trust_root(
    settings: &Settings,
    keystore: &Keystore,
    source: TrustRootSource,
) -> anyhow::Result<IdentityKeysOrKey> {
    if let Some(bytes) = settings.trust_root_bytes()? {
        let key = amai_bus::keys::verifying_key(&bytes)
            .context("--trust-root is not an Ed25519 public key")?;
        return Ok(IdentityKeysOrKey::Key(key));
    }
    if source == TrustRootSource::Required && !keystore.operator_path().exists() {
        anyhow::bail!(
            "no trust root: pass --trust-root <hex> (or set AMAI_TRUST_ROOT) with the deployment's \
             operator public key, or put the operator key file at {} \
             (only `amai up` generates a new trust root)",
            keystore.operator_path().display()
        );
    }
    Ok(IdentityKeysOrKey::Keys(keystore.operator()?))
}

pub(crate) enum IdentityKeysOrKey {
    Keys(IdentityKeys),
    Key(ed25519_dalek::VerifyingKey),
}

impl IdentityKeysOrKey {
    pub(crate) fn public(&self) -> ed25519_dalek::VerifyingKey {
        match self {
            IdentityKeysOrKey::Keys(k) => k.public_key(),
            IdentityKeysOrKey::Key(k) => *k,
        }
    }
}

/// Connects, creates streams, and builds the store (the wiring every process
/// shares: [`deploy::open_store`]).
pub(crate) async fn open_store(
    settings: &Settings,
    url: &str,
    name: &str,
    trust_root: ed25519_dalek::VerifyingKey,
) -> anyhow::Result<(async_nats::Client, EventStore)> {
    let client = deploy::connect_nats(url, name).await?;
    let store = deploy::open_store(&client, &store_settings(settings), trust_root).await?;
    Ok((client, store))
}

/// NATS and the store for a command that reads the streams directly
/// (`amai replay`, `--as-of`): `--nats-url` and the trust root are required.
pub(crate) async fn nats_store(
    settings: &Settings,
    name: &str,
) -> anyhow::Result<(async_nats::Client, EventStore)> {
    let url = settings
        .nats_url
        .clone()
        .context("this command reads the streams: pass --nats-url (or AMAI_NATS_URL)")?;
    let keystore = Keystore::open(&settings.data_dir)?;
    let root = trust_root(settings, &keystore, TrustRootSource::Required)?;
    open_store(settings, &url, name, root.public()).await
}

/// The store settings of [`deploy::open_store`] from the configuration.
pub(crate) fn store_settings(settings: &Settings) -> deploy::StoreSettings {
    deploy::StoreSettings {
        replicas: settings.stream_replicas,
        dedup_window: settings.dedup_window(),
        max_event_bytes: settings.max_event_bytes,
    }
}

/// Creation time of a key file, as the deterministic `occurred_at` of bootstrap events.
fn key_time(path: &Path) -> prost_types::Timestamp {
    let secs = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    }
}

/// Registers the operator (when its key is here) and the role's service identity,
/// endorsed to write the aggregates the role declares (and its failure records).
async fn bootstrap_service(
    store: &EventStore,
    keystore: &Keystore,
    root: &IdentityKeysOrKey,
    role: &dyn Role,
) -> anyhow::Result<ServiceSigner> {
    let key = role.service_key();
    let service = keystore.service(key)?;
    match root {
        IdentityKeysOrKey::Keys(operator) => Ok(deploy::register_service(
            store,
            deploy::Operator {
                keys: operator,
                name: OPERATOR_NAME,
                registered_at: key_time(&keystore.operator_path()),
            },
            deploy::Service {
                keys: &service,
                name: &format!("svc-{key}"),
                registered_at: key_time(&keystore.service_path(key)?),
            },
            role,
        )
        .await?),
        IdentityKeysOrKey::Key(_) => {
            let agg = amai_bus::Aggregate::agent(service.identity_id())?;
            if store.chain_head(&agg).await?.aggregate_seq == 0 {
                anyhow::bail!("the {key} service identity {} is not registered and the operator key is not in {}: register it once with the operator key (`amai up` does) or copy keys/operator.json", service.identity_id(), keystore.operator_path().display());
            }
            Ok(ServiceSigner {
                id: service.identity_id(),
                keys: service,
            })
        }
    }
}

/// The jail role, told where the LLM proxy listens (`--llm-addr`, or the
/// address `amai up`'s llm role bound); other roles unchanged.
fn with_llm_proxy(role: Arc<dyn Role>, llm_addr: std::net::SocketAddr) -> Arc<dyn Role> {
    if role.name() == amai_workers::roles::jail::NAME {
        Arc::new(amai_workers::roles::jail::JailRole::with_config(
            amai_workers::roles::jail::JailConfig::from_env().llm_proxy(llm_addr),
        ))
    } else {
        role
    }
}

/// Starts one instance of `role`: its service identity, then every component.
async fn start_role(
    settings: &Settings,
    client: &async_nats::Client,
    store: &EventStore,
    keystore: &Keystore,
    root: &IdentityKeysOrKey,
    role: Arc<dyn Role>,
    instance: Option<&str>,
) -> anyhow::Result<RoleRuntime> {
    let signer = bootstrap_service(store, keystore, root, role.as_ref()).await?;
    let mut config = RoleRuntimeConfig::new(
        client.clone(),
        store.clone(),
        settings.data_dir.join("state"),
        signer,
    )
    .min_position_timeout(settings.query_timeout())
    .listen_addr(amai_workers::roles::llm::LISTENER, settings.llm_addr);
    if let Some(instance) = instance {
        config = config.instance(instance);
    }
    if let Some(hook) = crate::fault::reactor_hook_from_env()? {
        config = config.reactor_options(ReactorOptions::default().fault_hook(hook));
    }
    let name = role.name();
    RoleRuntime::start(role, config)
        .await
        .with_context(|| format!("cannot start the {name} role"))
}

/// Runs every role until `shutdown`, then stops them all; the first failure wins.
async fn run_roles(
    roles: Vec<RoleRuntime>,
    shutdown: &Shutdown,
) -> Result<(), amai_workers::role::RoleError> {
    let mut set = tokio::task::JoinSet::new();
    for role in roles {
        let stop = shutdown.wait_owned();
        set.spawn(role.run_until(stop));
    }
    let mut first = Ok(());
    while let Some(done) = set.join_next().await {
        // One role stopping (cleanly or not) stops the others.
        shutdown.trigger();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if first.is_ok() {
                    first = Err(e);
                }
            }
            Err(e) => tracing::error!(error = %e, "role task failed"),
        }
    }
    first
}

/// `amai up`.
pub(crate) async fn run_up(settings: &Settings) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::with_signals();
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create the data dir {}", settings.data_dir.display()))?;
    let keystore = Keystore::open(&settings.data_dir)?;
    let managed = match &settings.nats_url {
        Some(_) => None,
        None => {
            let mut cfg = ManagedNatsConfig::new(&settings.data_dir);
            cfg.port = settings.nats_port;
            cfg.binary = settings.nats_server.clone();
            Some(ManagedNats::start(cfg).await?)
        }
    };
    let url = settings
        .nats_url
        .clone()
        .or_else(|| managed.as_ref().map(|m| m.url().to_string()))
        .context("no NATS url")?;
    let root = trust_root(settings, &keystore, TrustRootSource::GenerateIfMissing)?;
    let (client, store) = open_store(settings, &url, "amai-up", root.public()).await?;
    let mut roles = Vec::new();
    let mut unavailable = Vec::new();
    for role in amai_workers::roles::registry() {
        let name = role.name();
        // Jails reach the LLM proxy this process serves (its bound address).
        let llm_addr = roles
            .iter()
            .find_map(|r: &RoleRuntime| r.listener_addr(amai_workers::roles::llm::LISTENER))
            .unwrap_or(settings.llm_addr);
        let role = with_llm_proxy(role, llm_addr);
        match start_role(settings, &client, &store, &keystore, &root, role, None).await {
            Ok(runtime) => roles.push(runtime),
            // A role missing something outside NATS (the jail role without a
            // Docker Engine) says why; everything else runs.
            Err(e) => match e.downcast_ref::<RoleError>() {
                Some(RoleError::Unavailable { reason, .. }) => {
                    eprintln!("amai up: role {name} unavailable: {reason}");
                    tracing::warn!(role = name, %reason, "role unavailable; the others run");
                    unavailable.push(name);
                }
                _ => return Err(e),
            },
        }
    }
    let listener = tokio::net::TcpListener::bind(settings.gateway_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another amai running? pass --gateway-addr",
                settings.gateway_addr
            )
        })?;
    let gateway_cfg = gateway_config(
        settings,
        client.clone(),
        store.clone(),
        settings.gateway_addr,
    );
    let gateway_metrics = gateway_cfg.get_metrics();
    let gateway = tokio::spawn(amai_gateway::serve(
        gateway_cfg,
        listener,
        shutdown.wait_owned(),
    ));
    let console = start_console(settings, &client, &store, &root, &shutdown).await?;
    let names: Vec<_> = roles.iter().map(|r| r.name()).collect();
    if let Some(addr) = roles
        .iter()
        .find_map(|r| r.listener_addr(amai_workers::roles::llm::LISTENER))
    {
        eprintln!(
            "amai up: LLM proxy on http://{addr} (OpenAI base_url http://{addr}/v1, Anthropic base_url http://{addr}; key from `amai llm session create`)"
        );
    }
    let unavailable = if unavailable.is_empty() {
        String::new()
    } else {
        format!(" (unavailable: {})", unavailable.join(", "))
    };
    eprintln!(
        "amai up: gateway on {} | roles {}{unavailable} | nats {} | data {} | trust root {}\n         Ctrl-C stops everything.",
        settings.gateway_addr,
        names.join(", "),
        url,
        settings.data_dir.display(),
        hex::encode(root.public().as_bytes())
    );
    tracing::info!(gateway = %settings.gateway_addr, nats = %url, roles = ?names, "amai is up");
    spawn_metrics(
        settings,
        &store,
        roles.iter().map(RoleRuntime::metrics).collect(),
        Some(gateway_metrics),
        &shutdown,
    );
    let role_result = run_roles(roles, &shutdown).await;
    shutdown.trigger();
    let gateway_result = gateway.await;
    let _ = client.flush().await;
    if let Some(m) = managed {
        m.stop().await;
    }
    role_result?;
    gateway_result.context("gateway task")??;
    if let Some(console) = console {
        console.await.context("console task")??;
    }
    eprintln!("amai up: stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Serves the operator console as the trust-root operator (whose key `amai
/// up` holds) and prints its one-time sign-in link; `None` when this `amai up`
/// was given only the trust root's public key (`--trust-root`).
async fn start_console(
    settings: &Settings,
    client: &async_nats::Client,
    store: &amai_bus::EventStore,
    root: &IdentityKeysOrKey,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<tokio::task::JoinHandle<Result<(), amai_console::ConsoleError>>>> {
    let IdentityKeysOrKey::Keys(operator) = root else {
        eprintln!(
            "amai up: no console (it acts as the operator, whose key is not in this data dir)"
        );
        return Ok(None);
    };
    let config = amai_console::ConsoleConfig::builder()
        .addr(settings.console_addr)
        .nats(client.clone())
        .store(store.clone())
        .operator_keys(operator.clone())
        .login_token(amai_console::generate_login_token())
        .build()
        .context("console settings")?;
    let listener = config.bind().await.with_context(|| {
        format!(
            "cannot listen on {} for the console: is another amai running? pass --console-addr",
            settings.console_addr
        )
    })?;
    let origin = amai_console::origin_of(listener.local_addr()?);
    eprintln!(
        "amai up: console on {origin}; sign in with {}",
        config.login_link(&origin)
    );
    Ok(Some(tokio::spawn(amai_console::serve(
        config,
        listener,
        shutdown.wait_owned(),
    ))))
}

fn gateway_config(
    settings: &Settings,
    client: async_nats::Client,
    store: EventStore,
    addr: std::net::SocketAddr,
) -> amai_gateway::GatewayConfig {
    amai_gateway::GatewayConfig::new(client, store)
        .listen_addr(addr)
        .query_timeout(settings.query_timeout())
        .freshness_window(settings.request_freshness())
        .max_event_bytes(settings.max_event_bytes)
        .replicas(settings.stream_replicas)
}

/// Serves `/metrics` for whatever this process runs.
fn spawn_metrics(
    settings: &Settings,
    store: &EventStore,
    roles: Vec<RoleMetrics>,
    gateway: Option<std::sync::Arc<amai_gateway::metrics::GatewayMetrics>>,
    shutdown: &Shutdown,
) {
    let sources = crate::metrics::MetricsSources {
        js: store.jetstream().clone(),
        roles,
        gateway,
    };
    tokio::spawn(crate::metrics::serve(
        settings.metrics_addr,
        sources,
        shutdown.wait_owned(),
    ));
}

/// `amai gateway`.
pub(crate) async fn run_gateway(settings: &Settings) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::with_signals();
    let url = settings
        .nats_url
        .clone()
        .context("amai gateway needs --nats-url (or AMAI_NATS_URL)")?;
    let keystore = Keystore::open(&settings.data_dir)?;
    let root = trust_root(settings, &keystore, TrustRootSource::Required)?;
    let (client, store) = open_store(
        settings,
        &url,
        &format!("amai-gateway-{}", settings.instance),
        root.public(),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(settings.gateway_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.gateway_addr))?;
    let addr = listener.local_addr()?;
    eprintln!("amai gateway: listening on {addr}");
    let cfg = gateway_config(settings, client, store.clone(), addr);
    spawn_metrics(
        settings,
        &store,
        Vec::new(),
        Some(cfg.get_metrics()),
        &shutdown,
    );
    amai_gateway::serve(cfg, listener, shutdown.wait_owned()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `amai worker --role <role>`: any role of the registry.
pub(crate) async fn run_worker(settings: &Settings, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    let role = amai_workers::roles::find(&args.role)?;
    let shutdown = Shutdown::with_signals();
    let url = settings
        .nats_url
        .clone()
        .context("amai worker needs --nats-url (or AMAI_NATS_URL)")?;
    let keystore = Keystore::open(&settings.data_dir)?;
    let root = trust_root(settings, &keystore, TrustRootSource::Required)?;
    let (client, store) = open_store(
        settings,
        &url,
        &format!("amai-{}-{}", role.name(), settings.instance),
        root.public(),
    )
    .await?;
    let instance = settings
        .instance_given
        .then_some(settings.instance.as_str());
    let role = with_llm_proxy(role, settings.llm_addr);
    let runtime = start_role(settings, &client, &store, &keystore, &root, role, instance).await?;
    eprintln!(
        "amai worker: {} role up (state in {})",
        runtime.name(),
        runtime.state_dir().display()
    );
    spawn_metrics(settings, &store, vec![runtime.metrics()], None, &shutdown);
    run_roles(vec![runtime], &shutdown).await?;
    let _ = client.flush().await;
    Ok(ExitCode::SUCCESS)
}

/// `amai projections rebuild`.
pub(crate) async fn run_projections(
    settings: &Settings,
    cmd: ProjectionsCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        ProjectionsCommand::Violations { limit, json } => {
            crate::client_cmd::violations(settings, limit, json).await
        }
        ProjectionsCommand::Digest { role, state, json } => {
            projection_digests(settings, role, state, json).await
        }
        ProjectionsCommand::Rebuild { name, state } => {
            // The role whose sled holds this projection.
            let role = amai_workers::roles::registry()
                .into_iter()
                .find(|r| r.projections().iter().any(|p| p.name() == name))
                .with_context(|| {
                    let known: Vec<_> = amai_workers::roles::registry()
                        .iter()
                        .flat_map(|r| r.projections())
                        .map(|p| p.name())
                        .collect();
                    format!(
                        "no role has a projection named {name:?}; projections: {}",
                        known.join(", ")
                    )
                })?;
            let path = amai_workers::runtime::sled_path(
                &settings.data_dir.join("state").join(&state),
                role.name(),
            );
            if !path.exists() {
                anyhow::bail!(
                    "no projection store at {}: check --data-dir and --state",
                    path.display()
                );
            }
            let db = sled::open(&path).with_context(|| {
                format!(
                    "cannot open {} (is the worker still running? stop it first)",
                    path.display()
                )
            })?;
            amai_projections::rebuild_projection(&db, &name)?;
            db.flush()?;
            eprintln!("projection {name} cleared in {}; it rebuilds from sequence 1 when the worker starts", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `amai projections digest`.
async fn projection_digests(
    settings: &Settings,
    role: Option<String>,
    state: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let roles = match &role {
        Some(name) => vec![amai_workers::roles::find(name)?],
        None => amai_workers::roles::registry(),
    };
    let mut digests = Vec::new();
    match state {
        Some(state) => {
            // Invariant: clap requires --role with --state, so there is one role.
            for role in &roles {
                let path = amai_workers::runtime::sled_path(
                    &settings.data_dir.join("state").join(&state),
                    role.name(),
                );
                if !path.exists() {
                    anyhow::bail!(
                        "no projection store at {}: check --data-dir, --role and --state",
                        path.display()
                    );
                }
                let db = sled::open(&path).with_context(|| {
                    format!(
                        "cannot open {} (is the worker still running? stop it first)",
                        path.display()
                    )
                })?;
                for p in role.projections() {
                    digests.push((
                        role.name(),
                        amai_projections::runner::digest_projection(&db, p.as_ref())?,
                    ));
                }
            }
        }
        None => {
            let url = settings.nats_url.clone().context(
                "amai projections digest rebuilds from the streams: it needs --nats-url (or AMAI_NATS_URL), or --role and --state to read a stopped worker's store",
            )?;
            let keystore = Keystore::open(&settings.data_dir)?;
            let root = trust_root(settings, &keystore, TrustRootSource::Required)?.public();
            let client = connect_nats(&url, "amai-projections-digest").await?;
            let js = async_nats::jetstream::new(client.clone());
            let store = EventStore::new(
                js.clone(),
                amai_bus::EventStoreConfig::default().trust_root(root),
            );
            let scratch = tempfile::Builder::new()
                .prefix("amai-digest-")
                .tempdir()
                .context("cannot create a scratch dir")?;
            for role in &roles {
                let db = sled::open(amai_workers::runtime::sled_path(
                    scratch.path(),
                    role.name(),
                ))?;
                for p in role.projections() {
                    let mut targets = Vec::new();
                    for stream in p.streams() {
                        let last = js
                            .get_stream(*stream)
                            .await
                            .with_context(|| format!("cannot read stream {stream}"))?
                            .cached_info()
                            .state
                            .last_sequence;
                        targets.push(amai_bus::Position::new(*stream, last));
                    }
                    let handle = amai_projections::ProjectionRunner::spawn(
                        db.clone(),
                        store.clone(),
                        p.clone(),
                        futures::future::pending::<()>(),
                    )
                    .await?;
                    for target in &targets {
                        handle
                            .wait_for(target, PROJECTION_DIGEST_WAIT)
                            .await
                            .with_context(|| format!("rebuilding projection {}", p.name()))?;
                    }
                    handle.shutdown();
                    handle.stopped().await;
                    digests.push((role.name(), handle.digest()?));
                }
            }
            let _ = client.flush().await;
        }
    }
    if json {
        let list: Vec<_> = digests
            .iter()
            .map(|(role, d)| {
                serde_json::json!({
                    "role": role,
                    "projection": d.projection,
                    "version": d.version,
                    "sha256": d.sha256_hex(),
                    "entries": d.entries,
                    "checkpoints": d.checkpoints.iter().map(|p| (p.stream.clone(), p.seq)).collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "projections": list }));
    } else {
        for (role, d) in &digests {
            let ckpts: Vec<String> = d.checkpoints.iter().map(ToString::to_string).collect();
            println!(
                "{role}/{}  {}  {} entries  {}",
                d.projection,
                d.sha256_hex(),
                d.entries,
                ckpts.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Longest wait for a rebuilt projection to reach one stream's last sequence.
const PROJECTION_DIGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Environment, GlobalArgs};

    fn settings(data_dir: &Path, trust_root: Option<String>) -> Settings {
        let args = GlobalArgs {
            data_dir: Some(data_dir.to_path_buf()),
            trust_root,
            ..Default::default()
        };
        Settings::resolve_with(&args, None, &Environment::default()).expect("settings")
    }

    #[test]
    fn gateway_and_worker_refuse_to_invent_a_trust_root() {
        let data = tempfile::tempdir().expect("tempdir");
        let s = settings(data.path(), None);
        let keystore = Keystore::open(data.path()).expect("keystore");
        let err = trust_root(&s, &keystore, TrustRootSource::Required)
            .err()
            .expect("no trust root is an error outside `amai up`");
        let msg = err.to_string();
        for needle in [
            "--trust-root <hex>",
            "AMAI_TRUST_ROOT",
            &keystore.operator_path().display().to_string(),
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        assert!(
            !keystore.operator_path().exists(),
            "no operator key was generated"
        );
    }

    #[test]
    fn gateway_and_worker_take_the_trust_root_from_the_flag_or_the_key_file() {
        let data = tempfile::tempdir().expect("tempdir");
        let keystore = Keystore::open(data.path()).expect("keystore");
        let key = IdentityKeys::generate().public_key();
        let flag = settings(data.path(), Some(hex::encode(key.as_bytes())));
        let root = trust_root(&flag, &keystore, TrustRootSource::Required).expect("flag");
        assert_eq!(root.public(), key);
        assert!(!keystore.operator_path().exists());

        let operator = keystore.operator().expect("operator file");
        let file = settings(data.path(), None);
        let root = trust_root(&file, &keystore, TrustRootSource::Required).expect("file");
        assert_eq!(root.public(), operator.public_key());
    }

    #[test]
    fn amai_up_generates_the_trust_root_when_missing() {
        let data = tempfile::tempdir().expect("tempdir");
        let keystore = Keystore::open(data.path()).expect("keystore");
        let s = settings(data.path(), None);
        let root = trust_root(&s, &keystore, TrustRootSource::GenerateIfMissing).expect("up");
        assert!(keystore.operator_path().exists());
        assert_eq!(
            root.public(),
            keystore.operator().expect("operator").public_key()
        );
    }
}
