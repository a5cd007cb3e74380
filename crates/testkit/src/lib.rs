//! Test support for Amai.
//!
//! Integration and end-to-end tests run against a **real** `nats-server` with
//! JetStream, never a mock. This crate starts such servers on loopback, each with
//! its own temporary store directory, and tears them down on drop:
//!
//! - [`NatsServer`]: one JetStream-enabled server on a random port, with
//!   [`NatsServer::kill`] / [`NatsServer::restart`] for crash-recovery tests (the
//!   restarted server keeps the same port and the same store directory).
//! - [`NatsCluster`]: an N-node JetStream cluster on loopback, for replicated-stream
//!   and failover tests.
//! - [`free_port`] and [`temp_data_dir`]: small helpers for tests that run other
//!   processes or need scratch space.
//!
//! The `nats-server` binary is resolved by [`nats_server_bin`], with the same
//! function `amai up` uses (`amai_nats_launcher::locate`): `AMAI_NATS_SERVER`,
//! then `nats-server` on `PATH`, then `~/.cache/amai/tools/nats-server`, then
//! `/usr/sbin/nats-server` (where Debian installs it). A missing server is a hard
//! failure (panic), never a silently skipped test: run `scripts/ensure-deps.sh`
//! (or `make test`) to install it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_ENV: &str = amai_nats_launcher::NATS_SERVER_ENV;

/// How long a single server may take to report that it is ready.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cluster may take to elect a JetStream metadata leader.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(20);

const LISTENING_MARKER: &str = "Listening for client connections on ";
const READY_MARKER: &str = "Server is ready";
const META_LEADER_MARKER: &str = "metadata leader";

/// Returns the path of the `nats-server` binary to run, resolved exactly as
/// `amai up` resolves it ([`amai_nats_launcher::locate`]).
///
/// # Panics
///
/// Panics with an actionable message when no binary can be found: tests that need
/// NATS must fail loudly, not skip.
pub fn nats_server_bin() -> PathBuf {
    match amai_nats_launcher::locate_from_process(None) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding `127.0.0.1:0` and releasing the listener, so
/// another process could in principle grab it before the caller does; that race is
/// acceptable for tests.
///
/// # Panics
///
/// Panics if the OS cannot allocate an ephemeral port.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of an ephemeral listener")
        .port()
}

/// Creates a fresh temporary directory (prefix `amai-test-`), removed on drop.
///
/// # Panics
///
/// Panics if the directory cannot be created.
pub fn temp_data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("amai-test-")
        .tempdir()
        .expect("create a temporary data directory")
}

/// Lines written by one server process to stderr, shared with the reader thread.
#[derive(Default)]
struct LogBuffer {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// The process closed stderr (it exited or is exiting).
    closed: bool,
}

impl LogBuffer {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means a reader panicked mid-push; the lines are
        // still usable for diagnostics.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, line: String) {
        self.lock().lines.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    /// Waits until a line containing `needle` appears; returns it, or `None` on
    /// timeout or when the process closed stderr without printing it.
    fn wait_for(&self, needle: &str, deadline: Instant) -> Option<String> {
        let mut state = self.lock();
        loop {
            if let Some(line) = state.lines.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

/// A running (or killed) `nats-server` process with JetStream enabled, listening on
/// 127.0.0.1, storing its data in a temporary directory.
///
/// Dropping it kills the process (SIGKILL) and removes the store directory.
pub struct NatsServer {
    bin: PathBuf,
    /// Arguments other than the client port.
    args: Vec<OsString>,
    /// Client port; `None` until the first start when a random port was requested.
    port: Option<u16>,
    child: Option<Child>,
    log: Arc<LogBuffer>,
    store: PathBuf,
    // Declared last so the directory is removed after the process is gone.
    dir: TempDir,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("bin", &self.bin)
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("store_dir", &self.store)
            .finish_non_exhaustive()
    }
}

impl NatsServer {
    /// Starts a single JetStream-enabled `nats-server` on 127.0.0.1 and a random
    /// port, with a fresh temporary store directory, and waits until it is ready.
    ///
    /// # Panics
    ///
    /// Panics if `nats-server` cannot be found or started, or is not ready within
    /// 10 seconds (the panic message includes the server's log).
    pub fn start() -> NatsServer {
        NatsServer::start_with_args::<&str>(&[])
    }

    /// Like [`NatsServer::start`], with extra `nats-server` command-line arguments
    /// appended (for example `["-c", "limits.conf"]` or `["-m", "8222"]`). Do not
    /// pass `-p`/`--port`, `-a` or `--store_dir`: those are managed.
    ///
    /// # Panics
    ///
    /// Same as [`NatsServer::start`].
    pub fn start_with_args<S: AsRef<std::ffi::OsStr>>(extra: &[S]) -> NatsServer {
        let dir = temp_data_dir();
        let store = dir.path().join("store");
        let mut args: Vec<OsString> = ["-js", "-a", "127.0.0.1", "--store_dir"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(store.clone().into_os_string());
        args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
        let mut server = NatsServer::new(args, None, store, dir);
        server.spawn_and_wait();
        server
    }

    fn new(args: Vec<OsString>, port: Option<u16>, store: PathBuf, dir: TempDir) -> NatsServer {
        NatsServer {
            bin: nats_server_bin(),
            args,
            port,
            child: None,
            log: Arc::new(LogBuffer::default()),
            store,
            dir,
        }
    }

    /// Client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// Client port on 127.0.0.1 (stable across [`NatsServer::restart`]).
    pub fn port(&self) -> u16 {
        // Invariant: the port is learned (or fixed) by the first successful start,
        // which completes inside the constructors.
        self.port
            .expect("port is known once the server has started")
    }

    /// JetStream store directory of this server (stable across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Root of this server's temporary directory (contains the store directory).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// OS process id of the running server, or `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the current (or last) server process wrote to stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Kills the server with SIGKILL (a crash: no graceful shutdown, no flush) and
    /// waits for the process to exit. The store directory is kept. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process already exited, which is what we want.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the **same** port with the **same** store
    /// directory (killing it first if it is still running), and waits until ready.
    /// Use after [`NatsServer::kill`] to test crash recovery.
    ///
    /// # Panics
    ///
    /// Panics if the server does not come back within 10 seconds.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn_and_wait();
    }

    fn spawn_and_wait(&mut self) {
        let port_arg = self.port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .arg("-p")
            .arg(&port_arg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", self.bin.display()));

        let log = Arc::new(LogBuffer::default());
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            thread::Builder::new()
                .name(format!("nats-server-{}-log", child.id()))
                .spawn(move || {
                    for line in BufReader::new(stderr).lines() {
                        match line {
                            Ok(line) => sink.push(line),
                            Err(_) => break,
                        }
                    }
                    sink.close();
                })
                .expect("spawn the nats-server log reader thread");
        }
        self.log = log;
        self.child = Some(child);

        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        let Some(listening) = self.log.wait_for(LISTENING_MARKER, deadline) else {
            self.fail("did not report its client port");
        };
        let port = parse_listening_port(&listening)
            .unwrap_or_else(|| self.fail(&format!("printed an unparsable line: {listening}")));
        if let Some(expected) = self.port {
            if expected != port {
                self.fail(&format!("listens on port {port}, expected {expected}"));
            }
        }
        self.port = Some(port);
        if self.log.wait_for(READY_MARKER, deadline).is_none() {
            self.fail("did not report \"Server is ready\"");
        }
    }

    /// Waits until this server's log contains `needle`.
    fn wait_for_log(&self, needle: &str, deadline: Instant) -> bool {
        self.log.wait_for(needle, deadline).is_some()
    }

    /// Kills the process and panics with `why` and the server's log.
    fn fail(&mut self, why: &str) -> ! {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map_or_else(|| "still running".to_owned(), |s| s.to_string());
        self.kill();
        let mut log = String::new();
        for line in self.log.lines() {
            let _ = writeln!(log, "  {line}");
        }
        panic!(
            "nats-server {} (args {:?}, port {:?}) {why} within {:?} (process: {status}); log:\n{log}",
            self.bin.display(),
            self.args,
            self.port,
            SERVER_READY_TIMEOUT,
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Extracts the port from `... Listening for client connections on 127.0.0.1:4222`.
fn parse_listening_port(line: &str) -> Option<u16> {
    let (_, addr) = line.split_once(LISTENING_MARKER)?;
    let (_, port) = addr.trim().rsplit_once(':')?;
    port.parse().ok()
}

/// An N-node JetStream cluster on 127.0.0.1, each node with its own client port,
/// route port, store directory and `server_name` (`n1`, `n2`, ...).
///
/// Dropping it kills every node and removes their store directories.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts an `n`-node JetStream cluster (use 3 for replicated streams) and waits
    /// until every node is ready and has seen a JetStream metadata leader.
    ///
    /// # Panics
    ///
    /// Panics if `n` is 0, if `nats-server` cannot be found or started, or if the
    /// cluster is not ready within 20 seconds.
    pub fn start(n: usize) -> NatsCluster {
        assert!(n > 0, "a cluster needs at least one node");
        let cluster_name = format!("amai-test-{}", free_port());
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();

        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let dir = temp_data_dir();
            let store = dir.path().join("store");
            let routes = route_ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(",");
            let mut args: Vec<OsString> = vec![
                "-js".into(),
                "-a".into(),
                "127.0.0.1".into(),
                "--store_dir".into(),
                store.clone().into_os_string(),
                "--server_name".into(),
                format!("n{}", i + 1).into(),
                "--cluster_name".into(),
                cluster_name.clone().into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", route_ports[i]).into(),
            ];
            if !routes.is_empty() {
                args.push("--routes".into());
                args.push(routes.into());
            }
            let mut node = NatsServer::new(args, Some(client_ports[i]), store, dir);
            // Nodes report "Server is ready" on their own; the JetStream meta
            // leader is only elected once a quorum is up, checked below.
            node.spawn_and_wait();
            nodes.push(node);
        }

        let cluster = NatsCluster { nodes };
        cluster.wait_for_meta_leader(Instant::now() + CLUSTER_READY_TIMEOUT);
        cluster
    }

    fn wait_for_meta_leader(&self, deadline: Instant) {
        if self.nodes.len() == 1 {
            // A single-node "cluster" elects itself; nothing to wait for beyond ready.
            return;
        }
        for node in &self.nodes {
            if !node.wait_for_log(META_LEADER_MARKER, deadline) {
                let mut logs = String::new();
                for n in &self.nodes {
                    let _ = writeln!(logs, "--- node on port {} ---", n.port());
                    for line in n.log_lines() {
                        let _ = writeln!(logs, "  {line}");
                    }
                }
                panic!(
                    "JetStream cluster did not elect a metadata leader within {CLUSTER_READY_TIMEOUT:?}; logs:\n{logs}"
                );
            }
        }
    }

    /// Client URLs of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Client URLs of every node joined with commas, the form accepted by
    /// `async_nats::connect` and `--nats-url`.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// The nodes, in order (`n1` first).
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Mutable access to node `i` (0-based), to [`NatsServer::kill`] or
    /// [`NatsServer::restart`] it for failover tests. A restarted node rejoins the
    /// cluster on the same ports with the same store.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false`: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Removes, with the docker and nft CLIs, everything a jail worker of the
/// deployment `scope` left on the local engine (containers, volumes, networks
/// labelled `amai.scope=<scope>`, and nft tables whose comment names it).
/// For test teardown, also while unwinding from a failed assertion, when the
/// test's runtime (and so the worker's own cleanup) is gone. Never fails:
/// what it cannot remove stays for the next deployment of that scope.
pub fn remove_jail_scope(scope: &str) {
    let label = format!("label=amai.scope={scope}");
    let ids = |args: &[&str]| -> Vec<String> {
        Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let quietly = |args: &[&str]| {
        let _ = Command::new(args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    for id in ids(&["ps", "-aq", "--filter", &label]) {
        quietly(&["docker", "rm", "-f", "-v", &id]);
    }
    for id in ids(&["volume", "ls", "-q", "--filter", &label]) {
        quietly(&["docker", "volume", "rm", "-f", &id]);
    }
    for id in ids(&["network", "ls", "-q", "--filter", &label]) {
        quietly(&["docker", "network", "rm", &id]);
    }
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let needle = format!("amai.scope={scope} ");
    for line in tables.lines() {
        let mut words = line.split_whitespace().skip(1);
        let (Some(family), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        if !name.starts_with("amai_jail_") {
            continue;
        }
        let listed = Command::new("nft")
            .args(["list", "table", family, name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if listed.contains(&needle) {
            quietly(&["nft", "delete", "table", family, name]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    /// Connects with a raw TCP socket and returns the server's `INFO {...}` line.
    fn read_info(port: u16) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set read timeout");
        let mut buf = Vec::new();
        let mut byte = [0_u8; 1];
        while !buf.ends_with(b"\r\n") {
            let n = stream.read(&mut byte).expect("read INFO from nats-server");
            assert_eq!(n, 1, "connection closed before INFO was complete");
            buf.push(byte[0]);
        }
        String::from_utf8(buf).expect("INFO is UTF-8")
    }

    #[test]
    fn parses_listening_line() {
        let line =
            "[1] 2024/01/01 00:00:00.000 [INF] Listening for client connections on 127.0.0.1:4222";
        assert_eq!(parse_listening_port(line), Some(4222));
        assert_eq!(parse_listening_port("Server is ready"), None);
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("free port can be bound");
    }

    #[test]
    fn server_starts_with_jetstream() {
        let server = NatsServer::start();
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        let info = read_info(server.port());
        assert!(info.starts_with("INFO {"), "unexpected greeting: {info}");
        assert!(info.contains("\"jetstream\":true"), "JetStream off: {info}");
        assert!(server.store_dir().starts_with(server.temp_dir()));
    }

    #[test]
    fn kill_and_restart_keep_port_and_store() {
        let mut server = NatsServer::start();
        let port = server.port();
        let store = server.store_dir().to_path_buf();
        read_info(port);

        server.kill();
        assert!(!server.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "killed server still accepts connections"
        );

        server.restart();
        assert!(server.is_running());
        assert_eq!(server.port(), port);
        assert_eq!(server.store_dir(), store);
        assert!(read_info(port).contains("\"jetstream\":true"));
    }

    #[test]
    fn drop_removes_store_dir() {
        let server = NatsServer::start();
        let root = server.temp_dir().to_path_buf();
        assert!(root.exists());
        drop(server);
        assert!(!root.exists());
    }

    #[test]
    fn cluster_of_three_elects_meta_leader() {
        let mut cluster = NatsCluster::start(3);
        assert_eq!(cluster.len(), 3);
        let urls = cluster.urls();
        assert_eq!(urls.len(), 3);
        assert_eq!(cluster.url().split(',').count(), 3);
        for node in cluster.nodes() {
            let info = read_info(node.port());
            assert!(info.contains("\"jetstream\":true"), "JetStream off: {info}");
            assert!(info.contains("\"cluster\":"), "not clustered: {info}");
        }

        // A crashed node rejoins on the same port.
        let port = cluster.nodes()[2].port();
        cluster.node_mut(2).kill();
        cluster.node_mut(2).restart();
        assert_eq!(cluster.nodes()[2].port(), port);
        read_info(port);
    }
}
