//! The local `nats-server -js` that `amai up` runs and supervises when no
//! `--nats-url` is given (the dev default).
//!
//! [`ManagedNats::start`] finds the binary, starts it bound to 127.0.0.1 with its
//! JetStream store under `<data_dir>/nats`, and waits until it is ready (log line
//! "Server is ready" and the client port accepting TCP). A background task
//! restarts it — same port, same store — with exponential backoff if it exits
//! unexpectedly. [`ManagedNats::stop`] sends SIGTERM so JetStream shuts down
//! cleanly, and kills the server if it has not exited after 5 s.
//!
//! The server runs in its own process group, so a Ctrl-C in the terminal reaches
//! only `amai` (which then stops the server in order) and the supervisor does not
//! mistake it for a crash. The server's log lines are forwarded to `tracing`
//! under the `nats_server` target (debug; warnings and errors at their level).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Default time allowed for the server to become ready.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed for a clean exit after SIGTERM before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server that ran this long before exiting restarts with the initial backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Log lines kept for error messages.
const LOG_TAIL: usize = 20;
const POLL: Duration = Duration::from_millis(50);

/// How to run the managed server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManagedNatsConfig {
    /// The amai data dir; the JetStream store goes to `<data_dir>/nats`.
    pub(crate) data_dir: PathBuf,
    /// Client port on 127.0.0.1; 0 lets the server pick a free one (kept across restarts).
    pub(crate) port: u16,
    /// HTTP monitoring port (`-m`), off when `None`.
    pub(crate) monitor_port: Option<u16>,
    /// The nats-server binary; `None` searches as [`locate_nats_server`] describes.
    pub(crate) binary: Option<PathBuf>,
    /// Server name (`-n`).
    pub(crate) server_name: String,
    /// How long to wait for the server to become ready.
    pub(crate) ready_timeout: Duration,
}

impl ManagedNatsConfig {
    /// Defaults: port 4222, no monitoring, name `amai-dev`, 15 s to become ready.
    pub(crate) fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            port: 4222,
            monitor_port: None,
            binary: None,
            server_name: "amai-dev".to_string(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// A running, supervised nats-server. Dropping it without [`ManagedNats::stop`]
/// still asks the supervisor to stop the server, in the background.
#[derive(Debug)]
pub(crate) struct ManagedNats {
    url: String,
    port: u16,
    shared: Arc<Shared>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Pid of the running server, 0 while none runs.
    pid: AtomicU32,
    restarts: AtomicU64,
}

impl ManagedNats {
    /// Starts the server and its supervisor, returning once the server is ready.
    pub(crate) async fn start(config: ManagedNatsConfig) -> anyhow::Result<ManagedNats> {
        let binary = locate_nats_server(config.binary.as_deref())?;
        if config.port != 0 {
            ensure_port_free(config.port)?;
        }
        let store_dir = config.data_dir.join("nats");
        std::fs::create_dir_all(&store_dir).with_context(|| {
            format!(
                "cannot create the nats-server store dir {}",
                store_dir.display()
            )
        })?;
        let plan = Plan {
            binary,
            store_dir,
            server_name: config.server_name,
            monitor_port: config.monitor_port,
            ready_timeout: config.ready_timeout,
        };
        let server = match plan.start(config.port).await {
            Ok(server) => server,
            Err(StartError {
                addr_in_use: true, ..
            }) => bail!(port_in_use_message(config.port)),
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        let port = server.port;
        tracing::info!(port, pid = server.pid(), store = %plan.store_dir.display(), binary = %plan.binary.display(), "nats-server ready");

        let shared = Arc::new(Shared::default());
        shared.pid.store(server.pid(), Ordering::SeqCst);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(plan, server, Arc::clone(&shared), stop_rx));
        Ok(ManagedNats {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            shared,
            stop_tx,
            task,
        })
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The client port (the chosen one when started with port 0).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Pid of the server process currently running, if any.
    pub(crate) fn pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }

    /// How many times the supervisor restarted the server.
    pub(crate) fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and the supervisor.
    pub(crate) async fn stop(self) {
        let ManagedNats { stop_tx, task, .. } = self;
        let _ = stop_tx.send(());
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "nats-server supervisor ended abnormally");
        }
    }
}

/// Finds the nats-server binary with the resolution shared with the test kit
/// ([`amai_nats_launcher::locate`]): `explicit` (from `--nats-server`), else
/// `AMAI_NATS_SERVER`, else `PATH`, else `~/.cache/amai/tools`, else `/usr/sbin`.
pub(crate) fn locate_nats_server(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    amai_nats_launcher::locate_from_process(explicit)
        .map_err(|e| anyhow::anyhow!("{e}; or pass --nats-url to use an existing server"))
}

fn port_in_use_message(port: u16) -> String {
    format!(
        "port {port} is in use: is another `amai up` running? pass --nats-port 0 for a free port \
         or --nats-url to use that server"
    )
}

fn ensure_port_free(port: u16) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(listener) => {
            drop(listener);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(port_in_use_message(port)),
        Err(e) => Err(e).with_context(|| format!("cannot bind 127.0.0.1:{port} for nats-server")),
    }
}

/// Everything needed to (re)start the server.
#[derive(Debug)]
struct Plan {
    binary: PathBuf,
    store_dir: PathBuf,
    server_name: String,
    monitor_port: Option<u16>,
    ready_timeout: Duration,
}

/// A server process that has become ready.
#[derive(Debug)]
struct Server {
    child: Child,
    log: Arc<Mutex<LogState>>,
    port: u16,
    started: Instant,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct LogState {
    tail: VecDeque<String>,
    ready: bool,
    client_port: Option<u16>,
    addr_in_use: bool,
}

/// Why a start attempt failed.
#[derive(Debug)]
struct StartError {
    addr_in_use: bool,
    message: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartError {}

impl Plan {
    /// Spawns the server on `port` (0 = let it choose) and waits until it is ready.
    async fn start(&self, port: u16) -> Result<Server, StartError> {
        let fail = |message: String| StartError {
            addr_in_use: false,
            message,
        };
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let mut cmd = Command::new(&self.binary);
        cmd.args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port_arg,
            "-n",
            &self.server_name,
        ])
        .arg("--store_dir")
        .arg(&self.store_dir);
        if let Some(monitor) = self.monitor_port {
            cmd.args(["-m", &monitor.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {}: {e}", self.binary.display())))?;

        let log = Arc::new(Mutex::new(LogState::default()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_log(out, Arc::clone(&log)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_log(err, Arc::clone(&log)));
        }

        let started = Instant::now();
        let deadline = started + self.ready_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    // Let the readers drain the last lines before reporting them.
                    tokio::time::sleep(POLL).await;
                    let state = lock(&log);
                    return Err(StartError {
                        addr_in_use: state.addr_in_use,
                        message: format!(
                            "nats-server exited during startup ({status}); last log lines:\n{}",
                            tail(&state)
                        ),
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(fail(format!("cannot watch nats-server: {e}"))),
            }
            let (ready, client_port) = {
                let state = lock(&log);
                (
                    state.ready,
                    state.client_port.or(Some(port).filter(|p| *p != 0)),
                )
            };
            if let (true, Some(client_port)) = (ready, client_port) {
                if tokio::net::TcpStream::connect(("127.0.0.1", client_port))
                    .await
                    .is_ok()
                {
                    return Ok(Server {
                        child,
                        log,
                        port: client_port,
                        started,
                    });
                }
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(fail(format!(
                    "nats-server was not ready within {:?}; last log lines:\n{}",
                    self.ready_timeout,
                    tail(&lock(&log))
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn lock(log: &Mutex<LogState>) -> std::sync::MutexGuard<'_, LogState> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tail(state: &LogState) -> String {
    if state.tail.is_empty() {
        return "  (no output)".to_string();
    }
    state
        .tail
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Records the server's output lines and forwards them to `tracing`.
async fn read_log(stream: impl AsyncRead + Unpin, log: Arc<Mutex<LogState>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let (level, message) = split_level(&line);
        match level {
            "FTL" | "ERR" => tracing::error!(target: "nats_server", "{message}"),
            "WRN" => tracing::warn!(target: "nats_server", "{message}"),
            _ => tracing::debug!(target: "nats_server", "{message}"),
        }
        let mut state = lock(&log);
        if line.contains("Server is ready") {
            state.ready = true;
        }
        if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
            state.client_port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        }
        if line.contains("address already in use") {
            state.addr_in_use = true;
        }
        if state.tail.len() == LOG_TAIL {
            state.tail.pop_front();
        }
        state.tail.push_back(line);
    }
}

/// Splits `[pid] date time [LVL] message` into the level and the message.
fn split_level(line: &str) -> (&str, &str) {
    for level in ["INF", "DBG", "TRC", "WRN", "ERR", "FTL"] {
        let tag = format!("[{level}] ");
        if let Some(idx) = line.find(&tag) {
            return (level, &line[idx + tag.len()..]);
        }
    }
    ("", line)
}

/// Watches the server, restarting it when it exits, until asked to stop.
async fn supervise(
    plan: Plan,
    mut server: Server,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let status = tokio::select! {
            _ = &mut stop_rx => {
                terminate(&mut server).await;
                shared.pid.store(0, Ordering::SeqCst);
                return;
            }
            status = server.child.wait() => status,
        };
        shared.pid.store(0, Ordering::SeqCst);
        if server.started.elapsed() >= STABLE_AFTER {
            backoff = INITIAL_BACKOFF;
        }
        tokio::time::sleep(POLL).await; // let the readers drain the last lines
        tracing::warn!(
            status = %status.map(|s| describe(&s)).unwrap_or_else(|e| e.to_string()),
            port = server.port,
            last_log = %tail(&lock(&server.log)),
            "nats-server exited unexpectedly; restarting"
        );
        server = loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            let attempt = tokio::select! {
                _ = &mut stop_rx => return, // dropping the attempt kills its process
                attempt = plan.start(server.port) => attempt,
            };
            match attempt {
                Ok(restarted) => {
                    shared.pid.store(restarted.pid(), Ordering::SeqCst);
                    let restarts = shared.restarts.fetch_add(1, Ordering::SeqCst) + 1;
                    tracing::warn!(
                        port = restarted.port,
                        pid = restarted.pid(),
                        restarts,
                        "nats-server restarted"
                    );
                    break restarted;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    port = server.port,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "restarting nats-server failed"
                ),
            }
        };
    }
}

fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// SIGTERM (clean JetStream shutdown), then SIGKILL after [`STOP_TIMEOUT`].
async fn terminate(server: &mut Server) {
    if let Some(pid) = server.child.id() {
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
        if sent {
            match tokio::time::timeout(STOP_TIMEOUT, server.child.wait()).await {
                Ok(_) => {
                    tracing::info!(pid, "nats-server stopped");
                    return;
                }
                Err(_) => tracing::warn!(
                    pid,
                    timeout_s = STOP_TIMEOUT.as_secs(),
                    "nats-server ignored SIGTERM; killing it"
                ),
            }
        } else {
            tracing::warn!(pid, "could not send SIGTERM to nats-server; killing it");
        }
    }
    let _ = server.child.start_kill();
    let _ = server.child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn config(dir: &Path) -> ManagedNatsConfig {
        ManagedNatsConfig {
            port: 0,
            ..ManagedNatsConfig::new(dir)
        }
    }

    /// Reads the server's INFO line over a raw TCP connection.
    async fn info(port: u16) -> serde_json::Value {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.ends_with(b"\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .expect("INFO in time")
                .expect("read");
            assert!(n > 0, "connection closed before INFO");
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8(buf).expect("utf8");
        let json = line.trim_end().strip_prefix("INFO ").expect("INFO line");
        serde_json::from_str(json).expect("INFO json")
    }

    fn process_exists(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    async fn kill(signal: &str, pid: u32) {
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }

    #[tokio::test]
    async fn starts_with_jetstream_on_a_free_port_and_stops_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = ManagedNats::start(config(dir.path())).await.expect("start");
        assert_ne!(nats.port(), 0);
        assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));
        assert!(dir.path().join("nats").is_dir());
        let info = info(nats.port()).await;
        assert_eq!(info["jetstream"], serde_json::Value::Bool(true), "{info}");
        assert_eq!(info["port"].as_u64(), Some(u64::from(nats.port())));
        assert_eq!(info["server_name"], "amai-dev");

        let pid = nats.pid().expect("pid");
        assert!(process_exists(pid));
        nats.stop().await;
        assert!(
            !process_exists(pid),
            "nats-server {pid} still running after stop()"
        );
    }

    #[tokio::test]
    async fn restarts_a_killed_server_on_the_same_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = ManagedNats::start(config(dir.path())).await.expect("start");
        let port = nats.port();
        let first = nats.pid().expect("pid");
        kill("-KILL", first).await;

        let deadline = Instant::now() + Duration::from_secs(15);
        while nats.restarts() == 0 {
            assert!(Instant::now() < deadline, "server was not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = nats.pid().expect("restarted pid");
        assert_ne!(first, second);
        assert_eq!(nats.port(), port);
        let info = info(port).await;
        assert_eq!(info["jetstream"], serde_json::Value::Bool(true));
        assert_eq!(info["port"].as_u64(), Some(u64::from(port)));

        nats.stop().await;
        assert!(!process_exists(second));
        assert_eq!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ()),
            None
        );
    }

    #[tokio::test]
    async fn sigterm_from_outside_is_also_restarted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let nats = ManagedNats::start(config(dir.path())).await.expect("start");
        kill("-TERM", nats.pid().expect("pid")).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while nats.restarts() == 0 {
            assert!(Instant::now() < deadline, "server was not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        nats.stop().await;
    }

    #[tokio::test]
    async fn port_in_use_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let err = ManagedNats::start(ManagedNatsConfig {
            port,
            ..ManagedNatsConfig::new(dir.path())
        })
        .await
        .expect_err("port taken");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("port {port} is in use")) && msg.contains("--nats-port 0"),
            "{msg}"
        );
    }

    #[test]
    fn amai_up_and_the_test_kit_resolve_the_same_binary() {
        assert_eq!(
            locate_nats_server(None).expect("nats-server"),
            amai_testkit::nats_server_bin()
        );
    }

    #[tokio::test]
    async fn missing_binary_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ManagedNatsConfig {
            binary: Some(dir.path().join("no-such-nats-server")),
            ..config(dir.path())
        };
        let msg = format!(
            "{:#}",
            ManagedNats::start(cfg).await.expect_err("missing binary")
        );
        assert!(
            msg.contains("no-such-nats-server") && msg.contains("AMAI_NATS_SERVER"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn early_exit_reports_the_last_log_lines() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("fake-nats-server");
        std::fs::write(&fake, "#!/bin/sh\necho '[1] 2025/01/01 00:00:00.000000 [FTL] boom: store is broken' >&2\nexit 1\n")
            .expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let cfg = ManagedNatsConfig {
            binary: Some(fake),
            ..config(dir.path())
        };
        let msg = format!(
            "{:#}",
            ManagedNats::start(cfg)
                .await
                .expect_err("fake server exits")
        );
        assert!(
            msg.contains("exited during startup") && msg.contains("boom: store is broken"),
            "{msg}"
        );
    }

    #[test]
    fn split_level_extracts_the_message() {
        let (level, msg) = split_level("[123] 2025/01/01 00:00:00.000000 [WRN] something odd");
        assert_eq!((level, msg), ("WRN", "something odd"));
        assert_eq!(split_level("plain"), ("", "plain"));
    }
}
