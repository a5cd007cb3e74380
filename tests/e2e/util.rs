//! Shared helpers for the end-to-end tests (in the spirit of ripgrep's
//! `tests/util.rs`): spawning the real `amai` binary, a real nats-server per
//! test, bounded polling, and reading JetStream directly to check invariants.

#![allow(dead_code)] // not every test uses every helper

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use amai_bus::proto;
use amai_client::AmaiClient;
use amai_testkit::NatsServer;
use futures::StreamExt;
use tempfile::TempDir;

/// Default deadline of every bounded wait.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// The `amai` binary under test.
pub(crate) fn amai_bin() -> &'static str {
    env!("CARGO_BIN_EXE_amai")
}

/// Removes every inherited `AMAI_*` / `RUST_LOG` variable (except the
/// nats-server location) so the tests are hermetic.
fn hermetic(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if (key.starts_with("AMAI_") && key != "AMAI_NATS_SERVER") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
}

/// A long-running `amai` process (server, gateway, worker) whose stdout and
/// stderr go to a log file. Killed (SIGKILL) on drop.
pub(crate) struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `amai <args>`, logging to `<log_dir>/<name>.log` (appending, so a
    /// restarted process keeps the earlier log).
    pub(crate) fn spawn(name: &str, log_dir: &Path, args: &[String]) -> Proc {
        Proc::spawn_with_env(name, log_dir, args, &[])
    }

    /// [`Proc::spawn`] with extra environment variables (set after the
    /// hermetic clean-up).
    pub(crate) fn spawn_with_env(
        name: &str,
        log_dir: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open process log");
        let err = file.try_clone().expect("clone log handle");
        let mut cmd = Command::new(amai_bin());
        hermetic(&mut cmd);
        cmd.args(args)
            .env("AMAI_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
            status: None,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    /// Everything the process wrote so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Crashes the process (SIGKILL) and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }

    /// Sends SIGTERM (a graceful shutdown request).
    pub(crate) fn sigterm(&self) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub(crate) async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("process was started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.status = Some(status);
                return status;
            }
            if start.elapsed() > deadline {
                panic!(
                    "{} did not exit within {deadline:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the log contains `needle`; panics with the log on timeout or
    /// when the process exits first.
    pub(crate) async fn wait_for_log(&mut self, needle: &str, deadline: Duration) {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return;
            }
            if !self.is_running() {
                panic!(
                    "{} exited before logging {needle:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            if start.elapsed() > deadline {
                panic!(
                    "{} did not log {needle:?} within {deadline:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of {} ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log(), 80)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `f` every 100 ms until it returns `Ok`, for at most `deadline`;
/// panics naming `what` and the last error otherwise.
pub(crate) async fn wait_until<T, E, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting until {what}; last: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Output of a CLI command run to completion.
#[derive(Debug)]
pub(crate) struct CliOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CliOutput {
    /// Asserts success and returns stdout.
    pub(crate) fn ok(self) -> String {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Asserts success and parses stdout as one JSON document.
    pub(crate) fn json(self) -> serde_json::Value {
        let out = self.ok();
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}"))
    }
}

/// Runs `amai <args>` to completion (bounded by 60 s) and returns its output.
pub(crate) async fn run_cli(args: &[String]) -> CliOutput {
    let mut cmd = Command::new(amai_bin());
    hermetic(&mut cmd);
    cmd.args(args).stdin(Stdio::null());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("amai {args:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("run amai {args:?}: {e}"));
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Converts `&str`s to owned arguments.
pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until the gateway at `addr` accepts a gRPC connection.
pub(crate) async fn wait_gateway(addr: &str) -> AmaiClient {
    let url = format!("http://{addr}");
    wait_until("the gateway accepts connections", DEADLINE, || {
        let url = url.clone();
        async move { AmaiClient::connect(url).await }
    })
    .await
}

/// One test's world: a temp dir (data dir + logs) and a real nats-server,
/// with helpers to run `amai` processes against them.
pub(crate) struct World {
    pub(crate) nats: NatsServer,
    pub(crate) dir: TempDir,
    pub(crate) gateway_addr: String,
}

impl Drop for World {
    /// Removes what this deployment's jail workers left on the engine (the
    /// processes are dropped, so killed, before the world).
    fn drop(&mut self) {
        if let Ok(operator) =
            amai_bus::IdentityKeys::load(&self.data_dir().join("keys/operator.json"))
        {
            amai_testkit::remove_jail_scope(
                &amai_workers::role::PreflightContext {
                    trust_root: Some(operator.public_key()),
                }
                .deployment(),
            );
        }
    }
}

impl World {
    /// A fresh nats-server and temp dir; a free port for the gateway.
    pub(crate) fn new() -> World {
        let nats = NatsServer::start();
        let dir = tempfile::Builder::new()
            .prefix("amai-e2e-")
            .tempdir()
            .expect("temp dir");
        let gateway_addr = format!("127.0.0.1:{}", amai_testkit::free_port());
        // The operator provisions the deployment's trust root (only `amai up`
        // generates one): its key file in the shared data dir.
        amai_bus::IdentityKeys::generate()
            .save(&dir.path().join("data/keys/operator.json"))
            .expect("operator key");
        World {
            nats,
            dir,
            gateway_addr,
        }
    }

    /// The operator key file (reads everything: signs the tests' reads).
    pub(crate) fn operator_key_file(&self) -> String {
        self.data_dir()
            .join("keys/operator.json")
            .display()
            .to_string()
    }

    /// The data dir shared by all processes of this world (keys, state).
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Directory for logs and key files written by tests.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Global flags pointing at this world's NATS, data dir and gateway.
    pub(crate) fn globals(&self) -> Vec<String> {
        vec![
            "--nats-url".into(),
            self.nats.url(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--gateway-addr".into(),
            self.gateway_addr.clone(),
            // Generous min_position waits, so a loaded machine slows the tests
            // down rather than failing them.
            "--query-timeout-ms".into(),
            "5000".into(),
        ]
    }

    /// Starts `amai worker --role identity --instance <instance>` and waits
    /// until its role is up.
    pub(crate) async fn worker(&self, instance: &str) -> Proc {
        self.worker_with_env(instance, &[]).await
    }

    /// [`World::worker`] with extra environment variables (e.g. `AMAI_FAULT`).
    pub(crate) async fn worker_with_env(&self, instance: &str, env: &[(&str, &str)]) -> Proc {
        let mut a = self.globals();
        a.extend(args(&[
            "worker",
            "--role",
            "identity",
            "--instance",
            instance,
        ]));
        let mut p = Proc::spawn_with_env(&format!("worker-{instance}"), self.path(), &a, env);
        p.wait_for_log("identity role up", DEADLINE).await;
        p
    }

    /// Starts `amai gateway` and waits until it accepts connections and a
    /// query reaches a worker (start a worker first): a worker logs "role up"
    /// slightly before its query service has subscribed.
    pub(crate) async fn gateway(&self) -> (Proc, AmaiClient) {
        let mut a = self.globals();
        a.extend(args(&["gateway", "--instance", "gw"]));
        let mut p = Proc::spawn("gateway", self.path(), &a);
        p.wait_for_log("listening on", DEADLINE).await;
        // Reads are signed: the tests' client reads as the operator.
        let operator = amai_bus::IdentityKeys::load(&self.data_dir().join("keys/operator.json"))
            .expect("operator key");
        let client = wait_gateway(&self.gateway_addr)
            .await
            .with_signer(operator.identity_id(), operator);
        wait_until("a worker answers queries", DEADLINE, || {
            stats_at(&client, None)
        })
        .await;
        (p, client)
    }

    /// Runs a client command against this world's gateway.
    pub(crate) async fn cli(&self, list: &[&str]) -> CliOutput {
        let mut a = vec![
            "--data-dir".to_string(),
            self.data_dir().display().to_string(),
            "--gateway-addr".to_string(),
            self.gateway_addr.clone(),
        ];
        a.extend(args(list));
        run_cli(&a).await
    }

    /// A JetStream context on this world's NATS.
    pub(crate) async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connect to nats");
        async_nats::jetstream::new(client)
    }
}

/// Number of messages per subject in `stream` matching `filter`.
pub(crate) async fn subject_counts(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
) -> BTreeMap<String, usize> {
    let s = js.get_stream(stream).await.expect("get stream");
    let mut subjects = s.info_with_subjects(filter).await.expect("stream info");
    let mut counts = BTreeMap::new();
    while let Some(item) = subjects.next().await {
        let (subject, n) = item.expect("subject count");
        counts.insert(subject, n);
    }
    counts
}

/// Number of `trust.initialized` events per agent id (`amai.trust.<id>`).
pub(crate) async fn trust_counts(js: &async_nats::jetstream::Context) -> BTreeMap<String, usize> {
    subject_counts(js, "AMAI_TRUST", "amai.trust.>")
        .await
        .into_iter()
        .map(|(s, n)| (s.trim_start_matches("amai.trust.").to_string(), n))
        .collect()
}

/// Messages in a stream.
pub(crate) async fn stream_messages(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let s = js.get_stream(stream).await.expect("get stream");
    s.get_info().await.expect("stream info").state.messages
}

/// Asserts every id has exactly one event in `amai.trust.<id>`.
pub(crate) async fn assert_one_trust_init_each(
    js: &async_nats::jetstream::Context,
    ids: &[String],
) {
    let counts = trust_counts(js).await;
    for id in ids {
        assert_eq!(
            counts.get(id).copied(),
            Some(1),
            "agent {id} must have exactly one trust.initialized"
        );
    }
}

/// `GetStats` that waits for the projection to reach `min` (the consistency token).
pub(crate) async fn stats_at(
    client: &AmaiClient,
    min: Option<proto::Position>,
) -> Result<proto::Stats, tonic::Status> {
    client
        .identity_service()
        .get_stats(proto::GetStatsRequest { min_position: min })
        .await
        .map(|r| r.into_inner())
}

/// `GetIdentity` by id waiting for `min`.
pub(crate) async fn identity_at(
    client: &AmaiClient,
    id: &str,
    min: Option<proto::Position>,
) -> Result<proto::Identity, tonic::Status> {
    let mut req = amai_client::selector(id);
    req.min_position = min;
    client
        .identity_service()
        .get_identity(req)
        .await
        .map(|r| r.into_inner())
}

/// Writes a fresh key file under the world dir with `amai keys generate --json`
/// and returns (path, id).
pub(crate) async fn gen_keys(world: &World, name: &str) -> (String, String) {
    let path = world.path().join(format!("{name}.key"));
    let out = world
        .cli(&[
            "keys",
            "generate",
            "--out",
            &path.display().to_string(),
            "--json",
        ])
        .await
        .json();
    let id = out["id"].as_str().expect("id in keys generate").to_string();
    (path.display().to_string(), id)
}

/// One registered agent: its keys and the register response (the position is
/// the consistency token of the registration).
#[derive(Clone, Debug)]
pub(crate) struct Registered {
    pub(crate) keys: amai_bus::IdentityKeys,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) position: proto::Position,
}

/// Registers `n` fresh agents named `<prefix>-<i>` through the gateway,
/// `concurrency` at a time; returns them in order.
pub(crate) async fn register_many(
    client: &AmaiClient,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> Vec<Registered> {
    let mut out: Vec<(usize, Registered)> = futures::stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let name = format!("{prefix}-{i}");
            async move { (i, register_one(&client, &name).await) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Registers one fresh agent named `name`, retrying (the SDK's register is
/// idempotent) while the gateway or a worker is briefly unavailable.
pub(crate) async fn register_one(client: &AmaiClient, name: &str) -> Registered {
    let keys = amai_bus::IdentityKeys::generate();
    let agent = client.agent(keys.clone());
    let resp = wait_until(&format!("{name} is registered"), DEADLINE, || {
        let agent = agent.clone();
        async move {
            agent
                .register(name, proto::IdentityKind::Agent, BTreeMap::new())
                .await
        }
    })
    .await;
    assert_eq!(resp.agent_id, keys.identity_id());
    Registered {
        id: resp.agent_id.clone(),
        keys,
        name: name.to_string(),
        position: resp.position.expect("register returns a position"),
    }
}

/// Waits until every id has a `trust.initialized` event, then asserts each
/// has exactly one.
pub(crate) async fn wait_one_trust_init_each(js: &async_nats::jetstream::Context, ids: &[String]) {
    wait_until(
        "every agent has its trust.initialized",
        DEADLINE,
        || async {
            let counts = trust_counts(js).await;
            let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} of {} not initialised yet", ids.len()))
            }
        },
    )
    .await;
    assert_one_trust_init_each(js, ids).await;
}

/// Starts `amai worker --role audit --instance <instance>` checkpointing on
/// request only (the tests decide when), and waits until its role is up.
pub(crate) async fn audit_worker(world: &World, instance: &str) -> Proc {
    let mut a = world.globals();
    a.extend(args(&["worker", "--role", "audit", "--instance", instance]));
    let env = [
        ("AMAI_AUDIT_CHECKPOINT_EVERY", "1000000"),
        ("AMAI_AUDIT_CHECKPOINT_INTERVAL", "1h"),
    ];
    let mut p = Proc::spawn_with_env(&format!("audit-{instance}"), world.path(), &a, &env);
    p.wait_for_log("audit role up", DEADLINE).await;
    p
}

/// Registers a fresh agent `name` through the SDK; returns its handle.
pub(crate) async fn sdk_agent(
    client: &AmaiClient,
    name: &str,
    keys: amai_bus::IdentityKeys,
) -> amai_client::Agent {
    let agent = client.agent(keys);
    agent
        .register(
            name,
            amai_bus::proto::IdentityKind::Agent,
            Default::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    agent
}
