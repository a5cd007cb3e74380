//! Layered configuration of the `amai` binary.
//!
//! Every setting is resolved from, in order of precedence:
//!
//! 1. a command-line flag (`--nats-port 4333`),
//! 2. an environment variable (`AMAI_NATS_PORT=4333`; clap reads it for the flag),
//! 3. the config file (TOML, `version = 1`, unknown keys rejected): `--config` /
//!    `AMAI_CONFIG`, else `<data_dir>/amai.toml` when that file exists,
//! 4. the built-in defaults, which bind everything to 127.0.0.1.
//!
//! Layers 1 and 2 arrive together in [`GlobalArgs`]; the few values that come from
//! the process environment without a flag (`RUST_LOG`, host name, pid) are passed
//! in as an [`Environment`], never read deep inside the resolution, so tests
//! exercise the whole precedence chain with explicit values.
//!
//! An empty string for an optional value (`AMAI_OTLP_ENDPOINT=`) means "unset", so
//! a flag or env var can switch off what the file turned on.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;

use crate::telemetry::LogFormat;

/// The config file version this binary understands.
pub(crate) const CONFIG_VERSION: u32 = 1;

/// Name of the config file looked up in the data dir when `--config` is not given.
pub(crate) const DEFAULT_CONFIG_FILE_NAME: &str = "amai.toml";

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Default values of every setting.
pub(crate) mod defaults {
    use super::*;

    /// Data directory: key files, sled projections, the managed nats-server store.
    pub(crate) const DATA_DIR: &str = "./data";
    /// Client port of the nats-server that `amai up` manages.
    pub(crate) const NATS_PORT: u16 = 4222;
    /// gRPC gateway listen address.
    pub(crate) const GATEWAY_ADDR: SocketAddr = SocketAddr::new(LOCALHOST, 50051);
    pub(crate) const LLM_ADDR: SocketAddr = SocketAddr::new(LOCALHOST, 8088);
    pub(crate) const CONSOLE_ADDR: SocketAddr = SocketAddr::new(LOCALHOST, 6767);
    /// Prometheus metrics listen address.
    pub(crate) const METRICS_ADDR: SocketAddr = SocketAddr::new(LOCALHOST, 9464);
    /// JetStream replicas per stream (1 in dev, 3 on a cluster).
    pub(crate) const STREAM_REPLICAS: usize = 1;
    /// JetStream duplicate-detection window.
    pub(crate) const DEDUP_WINDOW_SECS: u64 = 120;
    /// Largest encoded signed event accepted (256 KiB).
    pub(crate) const MAX_EVENT_BYTES: usize = 262_144;
    /// Timeout of a query to a role service over NATS.
    pub(crate) const QUERY_TIMEOUT_MS: u64 = 2_000;
    /// Freshness window of signed gateway requests.
    pub(crate) const REQUEST_FRESHNESS_SECS: u64 = 30;
    /// Log filter when neither a flag, `AMAI_LOG_LEVEL`, `RUST_LOG` nor the file set one.
    pub(crate) const LOG_LEVEL: &str = "info";
}

/// Largest `max_event_bytes` accepted: NATS' default `max_payload` is 1 MiB and an
/// event must fit in one message with its headers.
const MAX_EVENT_BYTES_LIMIT: usize = 1024 * 1024 - 4096;

/// Global flags shared by every `amai` subcommand. Each flag can also be given by
/// its `AMAI_*` environment variable; a flag left unset (`None`) falls through to
/// the config file and then to the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Config file (TOML, `version = 1`) [default: <data-dir>/amai.toml if present]
    #[arg(long, env = "AMAI_CONFIG", value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,

    /// Data directory: keys, projections, the managed nats-server store [default: ./data]
    #[arg(long, env = "AMAI_DATA_DIR", value_name = "DIR", global = true)]
    pub(crate) data_dir: Option<PathBuf>,

    /// NATS server URL to use; when unset, `amai up` runs its own nats-server
    #[arg(long, env = "AMAI_NATS_URL", value_name = "URL", global = true)]
    pub(crate) nats_url: Option<String>,

    /// Client port of the managed nats-server; 0 picks a free one [default: 4222]
    #[arg(long, env = "AMAI_NATS_PORT", value_name = "PORT", global = true)]
    pub(crate) nats_port: Option<u16>,

    /// nats-server binary for the managed server [default: PATH, then ~/.cache/amai/tools]
    #[arg(long, env = "AMAI_NATS_SERVER", value_name = "PATH", global = true)]
    pub(crate) nats_server: Option<PathBuf>,

    /// gRPC gateway listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "AMAI_GATEWAY_ADDR", value_name = "ADDR", global = true)]
    pub(crate) gateway_addr: Option<SocketAddr>,

    /// Prometheus metrics listen address [default: 127.0.0.1:9464]
    #[arg(long, env = "AMAI_METRICS_ADDR", value_name = "ADDR", global = true)]
    pub(crate) metrics_addr: Option<SocketAddr>,

    /// The llm role's OpenAI/Anthropic-compatible HTTP API [default: 127.0.0.1:8088]
    #[arg(long, env = "AMAI_LLM_ADDR", value_name = "ADDR", global = true)]
    pub(crate) llm_addr: Option<SocketAddr>,

    /// The operator console (`amai up`, `amai console`) [default: 127.0.0.1:6767]
    #[arg(long, env = "AMAI_CONSOLE_ADDR", value_name = "ADDR", global = true)]
    pub(crate) console_addr: Option<SocketAddr>,

    /// JetStream replicas per stream: 1 in dev, 3 on a cluster [default: 1]
    #[arg(long, env = "AMAI_STREAM_REPLICAS", value_name = "N", global = true)]
    pub(crate) stream_replicas: Option<usize>,

    /// JetStream duplicate-detection window in seconds [default: 120]
    #[arg(
        long,
        env = "AMAI_DEDUP_WINDOW_SECS",
        value_name = "SECS",
        global = true
    )]
    pub(crate) dedup_window_secs: Option<u64>,

    /// Largest encoded signed event accepted, in bytes [default: 262144]
    #[arg(
        long,
        env = "AMAI_MAX_EVENT_BYTES",
        value_name = "BYTES",
        global = true
    )]
    pub(crate) max_event_bytes: Option<usize>,

    /// Timeout of queries to role services, in milliseconds [default: 2000]
    #[arg(long, env = "AMAI_QUERY_TIMEOUT_MS", value_name = "MS", global = true)]
    pub(crate) query_timeout_ms: Option<u64>,

    /// Freshness window of signed requests, in seconds [default: 30]
    #[arg(
        long,
        env = "AMAI_REQUEST_FRESHNESS_SECS",
        value_name = "SECS",
        global = true
    )]
    pub(crate) request_freshness_secs: Option<u64>,

    /// Log format on stderr [default: text]
    #[arg(long, env = "AMAI_LOG_FORMAT", value_name = "FORMAT", global = true)]
    pub(crate) log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `amai=debug,async_nats=warn` [default: RUST_LOG, else info]
    #[arg(long, env = "AMAI_LOG_LEVEL", value_name = "FILTER", global = true)]
    pub(crate) log_level: Option<String>,

    /// OTLP gRPC endpoint to export traces to, e.g. http://127.0.0.1:4317 [default: off]
    #[arg(long, env = "AMAI_OTLP_ENDPOINT", value_name = "URL", global = true)]
    pub(crate) otlp_endpoint: Option<String>,

    /// Name of this instance in logs, traces and consumer names [default: <hostname>-<pid>]
    #[arg(long, env = "AMAI_INSTANCE", value_name = "NAME", global = true)]
    pub(crate) instance: Option<String>,

    /// Trust root: hex Ed25519 public key of the first operator [default: the operator key in the data dir]
    #[arg(long, env = "AMAI_TRUST_ROOT", value_name = "HEX", global = true)]
    pub(crate) trust_root: Option<String>,
}

/// Values taken from the process environment that have no `AMAI_*` flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Environment {
    /// `RUST_LOG`, used as the log filter below `--log-level` / `AMAI_LOG_LEVEL`.
    pub(crate) rust_log: Option<String>,
    /// The host name, for the default instance name.
    pub(crate) hostname: Option<String>,
    /// The process id, for the default instance name.
    pub(crate) pid: u32,
}

impl Environment {
    /// Reads `RUST_LOG`, the host name and the pid of this process.
    pub(crate) fn from_process() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        Self {
            rust_log: std::env::var("RUST_LOG").ok(),
            hostname,
            pid: std::process::id(),
        }
    }
}

/// The fully resolved configuration of one `amai` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Data directory (keys, projections, the managed nats-server store).
    pub(crate) data_dir: PathBuf,
    /// The NATS server to connect to; `None` makes `amai up` run its own.
    pub(crate) nats_url: Option<String>,
    /// Client port of the managed nats-server (0 = pick a free one).
    pub(crate) nats_port: u16,
    /// Explicit nats-server binary for the managed server (`None` = search for it).
    pub(crate) nats_server: Option<PathBuf>,
    /// gRPC gateway listen address.
    pub(crate) gateway_addr: SocketAddr,
    /// Prometheus metrics listen address.
    pub(crate) metrics_addr: SocketAddr,
    /// The llm role's HTTP API listen address.
    pub(crate) llm_addr: SocketAddr,
    /// The operator console's address.
    pub(crate) console_addr: SocketAddr,
    /// JetStream replicas per stream (1..=5).
    pub(crate) stream_replicas: usize,
    /// JetStream duplicate-detection window, in seconds.
    pub(crate) dedup_window_secs: u64,
    /// Largest encoded signed event accepted, in bytes.
    pub(crate) max_event_bytes: usize,
    /// Timeout of queries to role services, in milliseconds.
    pub(crate) query_timeout_ms: u64,
    /// Freshness window of signed requests, in seconds.
    pub(crate) request_freshness_secs: u64,
    /// Log format on stderr.
    pub(crate) log_format: LogFormat,
    /// Log filter (`EnvFilter` directives).
    pub(crate) log_level: String,
    /// OTLP gRPC endpoint for trace export; `None` disables OpenTelemetry export.
    pub(crate) otlp_endpoint: Option<String>,
    /// Name of this instance.
    pub(crate) instance: String,
    /// Whether the instance name was given (flag, env or file) rather than
    /// derived from host and pid: a given name keeps a worker's state dir stable
    /// across restarts.
    pub(crate) instance_given: bool,
    /// Hex Ed25519 public key of the trust root; `None` = the operator key in the data dir.
    pub(crate) trust_root: Option<String>,
    /// The config file that was read, if any.
    pub(crate) config_file: Option<PathBuf>,
}

/// The config file: every key optional except `version`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[allow(dead_code)] // checked before deserialising, kept so the key is known
    version: u32,
    data_dir: Option<PathBuf>,
    nats_url: Option<String>,
    nats_port: Option<u16>,
    nats_server: Option<PathBuf>,
    gateway_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    llm_addr: Option<SocketAddr>,
    console_addr: Option<SocketAddr>,
    stream_replicas: Option<usize>,
    dedup_window_secs: Option<u64>,
    max_event_bytes: Option<usize>,
    query_timeout_ms: Option<u64>,
    request_freshness_secs: Option<u64>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    otlp_endpoint: Option<String>,
    instance: Option<String>,
    trust_root: Option<String>,
}

impl Settings {
    /// Resolves the settings from flags/env (`args`), the config file and defaults,
    /// reading `RUST_LOG`, the host name and the pid from this process.
    ///
    /// `file` overrides `args.config`; with neither, `<data_dir>/amai.toml` is read
    /// when it exists. An explicitly named file that does not exist is an error.
    pub(crate) fn resolve(args: &GlobalArgs, file: Option<&Path>) -> anyhow::Result<Settings> {
        Self::resolve_with(args, file, &Environment::from_process())
    }

    /// [`Settings::resolve`] with the process environment passed in.
    pub(crate) fn resolve_with(
        args: &GlobalArgs,
        file: Option<&Path>,
        env: &Environment,
    ) -> anyhow::Result<Settings> {
        let explicit = file.map(Path::to_path_buf).or_else(|| args.config.clone());
        let (file_cfg, config_file) = match explicit {
            Some(path) => (load_file(&path)?, Some(path)),
            None => {
                let data_dir = args
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
                let path = data_dir.join(DEFAULT_CONFIG_FILE_NAME);
                if path.is_file() {
                    (load_file(&path)?, Some(path))
                } else {
                    (FileConfig::default(), None)
                }
            }
        };
        let source = match &config_file {
            Some(p) => format!("config file {}", p.display()),
            None => "flags/environment".to_string(),
        };

        let given_instance =
            non_empty(args.instance.clone()).or_else(|| non_empty(file_cfg.instance.clone()));
        let instance_given = given_instance.is_some();
        let instance = given_instance.unwrap_or_else(|| {
            format!("{}-{}", env.hostname.as_deref().unwrap_or("amai"), env.pid)
        });
        let log_level = non_empty(args.log_level.clone())
            .or_else(|| non_empty(env.rust_log.clone()))
            .or_else(|| non_empty(file_cfg.log_level.clone()))
            .unwrap_or_else(|| defaults::LOG_LEVEL.to_string());

        let settings = Settings {
            data_dir: pick(
                args.data_dir.clone(),
                file_cfg.data_dir,
                PathBuf::from(defaults::DATA_DIR),
            ),
            nats_url: optional(args.nats_url.clone(), file_cfg.nats_url),
            nats_port: pick(args.nats_port, file_cfg.nats_port, defaults::NATS_PORT),
            nats_server: args
                .nats_server
                .clone()
                .or(file_cfg.nats_server)
                .filter(|p| !p.as_os_str().is_empty()),
            gateway_addr: pick(
                args.gateway_addr,
                file_cfg.gateway_addr,
                defaults::GATEWAY_ADDR,
            ),
            metrics_addr: pick(
                args.metrics_addr,
                file_cfg.metrics_addr,
                defaults::METRICS_ADDR,
            ),
            llm_addr: pick(args.llm_addr, file_cfg.llm_addr, defaults::LLM_ADDR),
            console_addr: pick(
                args.console_addr,
                file_cfg.console_addr,
                defaults::CONSOLE_ADDR,
            ),
            stream_replicas: pick(
                args.stream_replicas,
                file_cfg.stream_replicas,
                defaults::STREAM_REPLICAS,
            ),
            dedup_window_secs: pick(
                args.dedup_window_secs,
                file_cfg.dedup_window_secs,
                defaults::DEDUP_WINDOW_SECS,
            ),
            max_event_bytes: pick(
                args.max_event_bytes,
                file_cfg.max_event_bytes,
                defaults::MAX_EVENT_BYTES,
            ),
            query_timeout_ms: pick(
                args.query_timeout_ms,
                file_cfg.query_timeout_ms,
                defaults::QUERY_TIMEOUT_MS,
            ),
            request_freshness_secs: pick(
                args.request_freshness_secs,
                file_cfg.request_freshness_secs,
                defaults::REQUEST_FRESHNESS_SECS,
            ),
            log_format: pick(args.log_format, file_cfg.log_format, LogFormat::default()),
            log_level,
            otlp_endpoint: optional(args.otlp_endpoint.clone(), file_cfg.otlp_endpoint),
            instance,
            instance_given,
            trust_root: optional(args.trust_root.clone(), file_cfg.trust_root),
            config_file,
        };
        settings
            .validate()
            .with_context(|| format!("invalid configuration ({source})"))?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=5).contains(&self.stream_replicas) {
            bail!(
                "stream_replicas = {}: must be between 1 and 5",
                self.stream_replicas
            );
        }
        if self.dedup_window_secs == 0 {
            bail!("dedup_window_secs must be greater than 0");
        }
        if self.max_event_bytes == 0 || self.max_event_bytes > MAX_EVENT_BYTES_LIMIT {
            bail!(
                "max_event_bytes = {}: must be between 1 and {MAX_EVENT_BYTES_LIMIT}",
                self.max_event_bytes
            );
        }
        if self.query_timeout_ms == 0 {
            bail!("query_timeout_ms must be greater than 0");
        }
        if self.request_freshness_secs == 0 {
            bail!("request_freshness_secs must be greater than 0");
        }
        if self.instance.is_empty()
            || self
                .instance
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!(
                "instance = {:?}: must be non-empty without whitespace",
                self.instance
            );
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level).map_err(|e| {
            anyhow!(
                "log_level = {:?}: not a valid log filter: {e}",
                self.log_level
            )
        })?;
        if let Some(url) = &self.nats_url {
            if url
                .split(',')
                .any(|part| part.trim().is_empty() || part.trim().contains(char::is_whitespace))
            {
                bail!("nats_url = {url:?}: not a NATS URL (e.g. nats://127.0.0.1:4222)");
            }
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("otlp_endpoint = {endpoint:?}: must be an http:// or https:// URL (e.g. http://127.0.0.1:4317)");
            }
        }
        if let Some(root) = &self.trust_root {
            parse_public_key(root).map_err(|e| anyhow!("trust_root: {e}"))?;
        }
        Ok(())
    }

    /// The JetStream duplicate-detection window.
    pub(crate) fn dedup_window(&self) -> Duration {
        Duration::from_secs(self.dedup_window_secs)
    }

    /// The timeout of queries to role services.
    pub(crate) fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// The freshness window of signed requests.
    pub(crate) fn request_freshness(&self) -> Duration {
        Duration::from_secs(self.request_freshness_secs)
    }

    /// The configured trust root as 32 public-key bytes, if one is configured
    /// (already validated by [`Settings::resolve`]).
    pub(crate) fn trust_root_bytes(&self) -> anyhow::Result<Option<[u8; 32]>> {
        self.trust_root
            .as_deref()
            .map(parse_public_key)
            .transpose()
            .map_err(|e| anyhow!("trust_root: {e}"))
    }
}

/// Parses a hex Ed25519 public key.
fn parse_public_key(hex_key: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| format!("{hex_key:?} is not hex: {e}"))?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| format!("{hex_key:?} must be 64 hex characters (an Ed25519 public key)"))?;
    if amai_bus::keys::verifying_key(&key).is_none() {
        return Err(format!("{hex_key:?} is not a valid Ed25519 public key"));
    }
    Ok(key)
}

/// Reads and checks a config file: `version` first (so a newer file gets a version
/// error rather than an unknown-key error), then the keys.
fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    match table.get("version") {
        None => bail!("config file {}: missing key `version` (add `version = {CONFIG_VERSION}`)", path.display()),
        Some(toml::Value::Integer(v)) if *v == i64::from(CONFIG_VERSION) => {}
        Some(v) => bail!(
            "config file {}: unsupported `version = {v}` (this amai reads version {CONFIG_VERSION})",
            path.display()
        ),
    }
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// Flag/env, else file, else default.
fn pick<T>(arg: Option<T>, file: Option<T>, default: T) -> T {
    arg.or(file).unwrap_or(default)
}

/// Flag/env, else file; an empty string at any layer means "unset" and stops the search.
fn optional(arg: Option<String>, file: Option<String>) -> Option<String> {
    arg.or(file).filter(|s| !s.trim().is_empty())
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
    }

    fn env() -> Environment {
        Environment {
            rust_log: None,
            hostname: Some("box".into()),
            pid: 42,
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }

    fn no_default_file() -> GlobalArgs {
        // Points the default lookup at an empty temp dir, never at ./data.
        GlobalArgs {
            data_dir: Some(PathBuf::from("/nonexistent/amai-test-data")),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_bind_localhost() {
        let s = Settings::resolve_with(&GlobalArgs::default(), None, &env()).expect("resolve");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.nats_url, None);
        assert_eq!(s.nats_port, 4222);
        assert_eq!(s.gateway_addr, "127.0.0.1:50051".parse().expect("addr"));
        assert_eq!(s.metrics_addr, "127.0.0.1:9464".parse().expect("addr"));
        assert_eq!(s.stream_replicas, 1);
        assert_eq!(s.dedup_window(), Duration::from_secs(120));
        assert_eq!(s.max_event_bytes, 262_144);
        assert_eq!(s.query_timeout(), Duration::from_millis(2000));
        assert_eq!(s.request_freshness(), Duration::from_secs(30));
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.log_level, "info");
        assert_eq!(s.otlp_endpoint, None);
        assert_eq!(s.instance, "box-42");
        assert!(!s.instance_given, "a derived name is not a given one");
        assert_eq!(s.trust_root, None);
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "version = 1\nnats_port = 5000\nstream_replicas = 3\nlog_format = \"json\"\nlog_level = \"debug\"\n\
             otlp_endpoint = \"http://127.0.0.1:4317\"\ninstance = \"from-file\"\n",
        );
        let args = GlobalArgs {
            nats_port: Some(6000),
            instance: Some("from-flag".into()),
            ..no_default_file()
        };
        let s = Settings::resolve_with(&args, Some(&file), &env()).expect("resolve");
        assert_eq!(s.nats_port, 6000, "flag beats file");
        assert_eq!(s.instance, "from-flag", "flag beats file");
        assert!(s.instance_given);
        assert_eq!(s.stream_replicas, 3, "file beats default");
        assert_eq!(s.log_format, LogFormat::Json, "file beats default");
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!(s.dedup_window_secs, 120, "default when nobody sets it");
        assert_eq!(s.config_file.as_deref(), Some(file.as_path()));

        // An empty value at the flag/env layer switches off what the file set.
        let args = GlobalArgs {
            otlp_endpoint: Some(String::new()),
            ..no_default_file()
        };
        let s = Settings::resolve_with(&args, Some(&file), &env()).expect("resolve");
        assert_eq!(s.otlp_endpoint, None);
    }

    #[test]
    fn log_level_flag_then_rust_log_then_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", "version = 1\nlog_level = \"warn\"\n");
        let with_rust_log = Environment {
            rust_log: Some("amai=trace".into()),
            ..env()
        };
        let args = GlobalArgs {
            log_level: Some("error".into()),
            ..no_default_file()
        };
        assert_eq!(
            Settings::resolve_with(&args, Some(&file), &with_rust_log)
                .expect("r")
                .log_level,
            "error"
        );
        let args = no_default_file();
        assert_eq!(
            Settings::resolve_with(&args, Some(&file), &with_rust_log)
                .expect("r")
                .log_level,
            "amai=trace"
        );
        assert_eq!(
            Settings::resolve_with(&args, Some(&file), &env())
                .expect("r")
                .log_level,
            "warn"
        );
    }

    #[test]
    fn config_flag_and_default_file_in_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "amai.toml",
            "version = 1\nquery_timeout_ms = 900\n",
        );
        let args = GlobalArgs {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let s = Settings::resolve_with(&args, None, &env()).expect("resolve");
        assert_eq!(
            s.query_timeout_ms, 900,
            "default file in the data dir is read"
        );

        let other = write(
            dir.path(),
            "other.toml",
            "version = 1\nquery_timeout_ms = 700\n",
        );
        let args = GlobalArgs {
            config: Some(other),
            ..args
        };
        assert_eq!(
            Settings::resolve_with(&args, None, &env())
                .expect("r")
                .query_timeout_ms,
            700
        );

        let missing = GlobalArgs {
            config: Some(dir.path().join("missing.toml")),
            ..no_default_file()
        };
        let err =
            Settings::resolve_with(&missing, None, &env()).expect_err("missing explicit file");
        assert!(format!("{err:#}").contains("missing.toml"), "{err:#}");
    }

    #[test]
    fn unknown_key_is_rejected_naming_key_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "bad.toml", "version = 1\nnats_prot = 4222\n");
        let err = Settings::resolve_with(&no_default_file(), Some(&file), &env())
            .expect_err("unknown key");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("nats_prot") && msg.contains("bad.toml"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_or_missing_version_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v2 = write(
            dir.path(),
            "v2.toml",
            "version = 2\nsome_future_key = true\n",
        );
        let msg = format!(
            "{:#}",
            Settings::resolve_with(&no_default_file(), Some(&v2), &env()).expect_err("v2")
        );
        assert!(
            msg.contains("version = 2") && msg.contains("v2.toml"),
            "{msg}"
        );
        let none = write(dir.path(), "none.toml", "nats_port = 1\n");
        let msg = format!(
            "{:#}",
            Settings::resolve_with(&no_default_file(), Some(&none), &env()).expect_err("none")
        );
        assert!(
            msg.contains("missing key `version`") && msg.contains("none.toml"),
            "{msg}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = [
            ("stream_replicas = 7", "stream_replicas"),
            ("gateway_addr = \"localhost\"", "gateway_addr"),
            ("trust_root = \"abcd\"", "trust_root"),
            ("otlp_endpoint = \"127.0.0.1:4317\"", "otlp_endpoint"),
            ("max_event_bytes = 0", "max_event_bytes"),
            ("log_format = \"xml\"", "log_format"),
        ];
        for (line, key) in cases {
            let file = write(dir.path(), "c.toml", &format!("version = 1\n{line}\n"));
            let err =
                Settings::resolve_with(&no_default_file(), Some(&file), &env()).expect_err(line);
            let msg = format!("{err:#}");
            assert!(msg.contains(key) && msg.contains("c.toml"), "{line}: {msg}");
        }
    }

    #[test]
    fn valid_trust_root_is_accepted() {
        let key = amai_bus::IdentityKeys::generate().public_key();
        let args = GlobalArgs {
            trust_root: Some(hex::encode(key.as_bytes())),
            ..no_default_file()
        };
        let s = Settings::resolve_with(&args, None, &env()).expect("resolve");
        assert_eq!(s.trust_root_bytes().expect("bytes"), Some(*key.as_bytes()));
    }

    #[test]
    fn flags_parse_through_clap() {
        let cli = Cli::try_parse_from([
            "amai",
            "--nats-port",
            "0",
            "--log-format",
            "json",
            "--gateway-addr",
            "0.0.0.0:1",
        ])
        .expect("parse");
        assert_eq!(cli.global.nats_port, Some(0));
        assert_eq!(cli.global.log_format, Some(LogFormat::Json));
        assert_eq!(
            cli.global.gateway_addr,
            Some("0.0.0.0:1".parse().expect("addr"))
        );
    }

    /// Runs in a child process (see `flag_beats_env_beats_file`), so that setting
    /// environment variables cannot race with other tests.
    #[test]
    fn env_probe_child() {
        if std::env::var_os("AMAI_CONFIG_TEST_PROBE").is_none() {
            return;
        }
        let file =
            PathBuf::from(std::env::var_os("AMAI_CONFIG").expect("AMAI_CONFIG set by parent"));
        let from_env = Cli::try_parse_from(["amai"]).expect("parse");
        let s = Settings::resolve_with(&from_env.global, None, &env()).expect("resolve");
        assert_eq!(s.nats_port, 5555, "env beats file");
        assert_eq!(s.stream_replicas, 3, "file beats default");
        assert_eq!(
            s.config_file.as_deref(),
            Some(file.as_path()),
            "AMAI_CONFIG names the file"
        );
        let from_flag = Cli::try_parse_from(["amai", "--nats-port", "6666"]).expect("parse");
        let s = Settings::resolve_with(&from_flag.global, None, &env()).expect("resolve");
        assert_eq!(s.nats_port, 6666, "flag beats env");
    }

    #[test]
    fn flag_beats_env_beats_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "c.toml",
            "version = 1\nnats_port = 4444\nstream_replicas = 3\n",
        );
        crate::test_support::run_probe_child(
            "config::tests::env_probe_child",
            &[
                ("AMAI_CONFIG_TEST_PROBE", std::ffi::OsStr::new("1")),
                ("AMAI_CONFIG", file.as_os_str()),
                ("AMAI_NATS_PORT", std::ffi::OsStr::new("5555")),
                ("AMAI_DATA_DIR", dir.path().as_os_str()),
            ],
        );
    }
}
