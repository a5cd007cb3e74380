//! The lifecycle state machine of one catalogued agent ([`Agent`]):
//! [`decide`] turns a [`Command`] into [`Fact`]s or a [`Refusal`], and
//! [`apply`] folds facts into the state without deciding anything.
//!
//! The legal transitions are one table, [`allowed_from`], which both
//! [`decide`] and `docs/lifecycle.md` follow. Every illegal (state,
//! command) pair is refused: with a specific refusal when one says more
//! ([`Refusal::NotInstalled`], [`Refusal::NotEnabled`],
//! [`Refusal::AlreadyRunning`], [`Refusal::Disabled`], ...), otherwise with
//! [`Refusal::IllegalTransition`], which lists the states the command is
//! legal from. Every refusal's message says what to do next.
//!
//! Who may issue which command (operator or runtime) is the gateway's
//! business, not this crate's.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::health::{CrashDecision, CrashHistory, RestartPolicy};
use crate::Aggregate;

/// The longest `Disable` reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1_024;

/// The lifecycle state of a catalogued agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The manifest is known; nothing is installed.
    Catalogued,
    /// The image is built or checked and its digest pinned.
    Installed,
    /// An operator approved a subset of the requested permissions.
    Enabled,
    /// A run was requested; the container is not up yet.
    Starting,
    /// The container is up.
    Running,
    /// A stop was requested; the container has not exited yet.
    Stopping,
    /// The container exited (or never ran since the last stop).
    Stopped,
    /// The container crashed; a restart is scheduled after a backoff.
    Crashed,
    /// The kill switch: runs are refused until an operator re-enables it.
    Disabled,
}

/// Every state, in declaration order.
pub const ALL_STATES: [State; 9] = [
    State::Catalogued,
    State::Installed,
    State::Enabled,
    State::Starting,
    State::Running,
    State::Stopping,
    State::Stopped,
    State::Crashed,
    State::Disabled,
];

impl State {
    /// The lowercase name (`catalogued`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Catalogued => "catalogued",
            State::Installed => "installed",
            State::Enabled => "enabled",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Crashed => "crashed",
            State::Disabled => "disabled",
        }
    }

    /// Whether a container may exist in this state (`Starting`, `Running`,
    /// `Stopping`).
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to change an agent's lifecycle, from an operator or from the
/// runtime that watches its container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Pin the image (operator). The digest is `sha256:` and 64 lowercase
    /// hex digits.
    Install {
        /// The image digest.
        image_digest: String,
    },
    /// Approve permissions and enable (operator); replaces the approved
    /// set. Also lifts the kill switch of a disabled agent.
    Enable {
        /// The approved permissions, a subset of the manifest's requests.
        approved: Vec<String>,
    },
    /// Start a run (operator).
    Run,
    /// The container is up (runtime).
    Started {
        /// The container's id.
        container_id: String,
    },
    /// Stop the run gracefully (operator); cancels a pending restart.
    Stop,
    /// The container exited after a stop, or by itself (runtime).
    Stopped {
        /// Its exit code, when known.
        exit_code: Option<i32>,
    },
    /// The container crashed (runtime), or stopped sending heartbeats
    /// (`exit_code: None`: the runtime kills it).
    Crashed {
        /// Its exit code, when known.
        exit_code: Option<i32>,
        /// When it crashed (unix ms; a time after `now` counts as `now`).
        at_ms: i64,
    },
    /// Restart a crashed agent once its backoff has passed (the restart
    /// timer).
    Restart,
    /// The kill switch (operator, or a policy): stops a running agent at
    /// once and refuses runs until re-enabled.
    Disable {
        /// Why, in words (1 to [`MAX_REASON_BYTES`] bytes).
        reason: String,
    },
    /// Remove the installation (operator): back to `Catalogued`.
    Uninstall,
}

/// The kind of a [`Command`], without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// [`Command::Install`].
    Install,
    /// [`Command::Enable`].
    Enable,
    /// [`Command::Run`].
    Run,
    /// [`Command::Started`].
    Started,
    /// [`Command::Stop`].
    Stop,
    /// [`Command::Stopped`].
    Stopped,
    /// [`Command::Crashed`].
    Crashed,
    /// [`Command::Restart`].
    Restart,
    /// [`Command::Disable`].
    Disable,
    /// [`Command::Uninstall`].
    Uninstall,
}

/// Every command kind, in declaration order.
pub const ALL_COMMANDS: [CommandKind; 10] = [
    CommandKind::Install,
    CommandKind::Enable,
    CommandKind::Run,
    CommandKind::Started,
    CommandKind::Stop,
    CommandKind::Stopped,
    CommandKind::Crashed,
    CommandKind::Restart,
    CommandKind::Disable,
    CommandKind::Uninstall,
];

impl CommandKind {
    /// The lowercase name (`install`, `run`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Install => "install",
            CommandKind::Enable => "enable",
            CommandKind::Run => "run",
            CommandKind::Started => "started",
            CommandKind::Stop => "stop",
            CommandKind::Stopped => "stopped",
            CommandKind::Crashed => "crashed",
            CommandKind::Restart => "restart",
            CommandKind::Disable => "disable",
            CommandKind::Uninstall => "uninstall",
        }
    }

    /// Whether the runtime reports it (`Started`, `Stopped`, `Crashed`)
    /// rather than an operator or a timer asking for it.
    pub fn is_runtime_report(self) -> bool {
        matches!(
            self,
            CommandKind::Started | CommandKind::Stopped | CommandKind::Crashed
        )
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Command {
    /// The kind of the command.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Install { .. } => CommandKind::Install,
            Command::Enable { .. } => CommandKind::Enable,
            Command::Run => CommandKind::Run,
            Command::Started { .. } => CommandKind::Started,
            Command::Stop => CommandKind::Stop,
            Command::Stopped { .. } => CommandKind::Stopped,
            Command::Crashed { .. } => CommandKind::Crashed,
            Command::Restart => CommandKind::Restart,
            Command::Disable { .. } => CommandKind::Disable,
            Command::Uninstall => CommandKind::Uninstall,
        }
    }
}

/// The states a command is legal from: the transition table.
///
/// Two rules are not in the table because they depend on more than the
/// state: a disabled agent whose container was still up when it was
/// disabled accepts the runtime's `Stopped`/`Crashed` report for it (a
/// [`Fact::ContainerExited`]), and refuses `Enable` and `Uninstall` until
/// then ([`Refusal::StillStopping`]).
pub fn allowed_from(command: CommandKind) -> &'static [State] {
    use State::*;
    match command {
        CommandKind::Install => &[Catalogued, Installed, Enabled, Stopped],
        CommandKind::Enable => &[Installed, Enabled, Stopped, Disabled],
        CommandKind::Run => &[Enabled, Stopped],
        CommandKind::Started => &[Starting],
        CommandKind::Stop => &[Starting, Running, Crashed],
        CommandKind::Stopped => &[Running, Stopping],
        CommandKind::Crashed => &[Starting, Running, Stopping],
        CommandKind::Restart => &[Crashed],
        CommandKind::Disable => &[
            Installed, Enabled, Starting, Running, Stopping, Stopped, Crashed,
        ],
        CommandKind::Uninstall => &[Installed, Enabled, Stopped, Disabled],
    }
}

/// Why a stop was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An operator's `Stop`: graceful (signal, then kill after a grace
    /// period).
    Operator,
    /// The kill switch: stop now (kill without a grace period).
    Disabled,
}

/// What happened to an agent's lifecycle: the events [`decide`] produces
/// and [`apply`] folds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fact")]
pub enum Fact {
    /// The image digest was pinned; approvals are cleared (they were given
    /// for the previous image). State: `Installed`.
    Installed {
        /// The image digest.
        image_digest: String,
    },
    /// Permissions approved (sorted, unique); the crash history and any
    /// disable reason are cleared. State: `Enabled`.
    Enabled {
        /// The approved permissions.
        approved: Vec<String>,
    },
    /// A run was requested. State: `Starting`.
    StartRequested,
    /// The container is up. State: `Running`.
    Started {
        /// The container's id.
        container_id: String,
        /// When (the decision's `now`).
        at_ms: i64,
    },
    /// The runtime must stop the container. State: `Stopping`.
    StopRequested {
        /// Graceful (operator) or at once (kill switch).
        reason: StopReason,
    },
    /// The container exited. State: `Stopped`.
    Stopped {
        /// Its exit code, when known.
        exit_code: Option<i32>,
        /// When (the decision's `now`).
        at_ms: i64,
    },
    /// The container crashed. State: `Crashed`. The crash is recorded in
    /// the history, cleared first when the run was healthy.
    Crashed {
        /// Its exit code; `None` when heartbeats were lost (the runtime
        /// kills the container).
        exit_code: Option<i32>,
        /// When (the reported time, at most the decision's `now`).
        at_ms: i64,
        /// Whether the run stayed up long enough to clear the history.
        healthy_run: bool,
    },
    /// A restart is scheduled.
    RestartScheduled {
        /// The attempt number.
        attempt: u32,
        /// The backoff delay.
        delay_ms: u64,
        /// When the restart is due.
        restart_at_ms: i64,
    },
    /// The crashes reached the crash-loop limit (followed by `Disabled`).
    CrashLoopDetected {
        /// The crashes counted in the window.
        crashes: u32,
        /// The window.
        window_ms: u64,
    },
    /// An operator's stop cancelled the pending restart. State: `Stopped`.
    RestartCancelled,
    /// The restart is under way. State: `Starting`.
    Restarting {
        /// The attempt number.
        attempt: u32,
    },
    /// The kill switch. State: `Disabled`.
    Disabled {
        /// Why.
        reason: String,
        /// Whether a container was up (or starting) and must still report
        /// its exit.
        awaiting_exit: bool,
    },
    /// The container of a disabled agent exited.
    ContainerExited {
        /// Its exit code, when known.
        exit_code: Option<i32>,
        /// When (the decision's `now`).
        at_ms: i64,
    },
    /// The installation was removed. State: `Catalogued`.
    Uninstalled,
}

/// A restart waiting for its backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestart {
    /// The attempt number.
    pub attempt: u32,
    /// When it is due.
    pub restart_at_ms: i64,
}

/// One catalogued agent's lifecycle state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    name: String,
    requested: BTreeSet<String>,
    restart_policy: RestartPolicy,
    state: State,
    image_digest: Option<String>,
    approved: Vec<String>,
    container_id: Option<String>,
    started_at_ms: Option<i64>,
    awaiting_exit: bool,
    disabled_reason: Option<String>,
    crashes: CrashHistory,
    pending_restart: Option<PendingRestart>,
    last_exit_code: Option<i32>,
}

impl Agent {
    /// A catalogued agent: its name, the permissions its manifest requests
    /// and its restart policy (fixed for its life, so replays decide the
    /// same).
    pub fn catalogued(
        name: impl Into<String>,
        requested: impl IntoIterator<Item = String>,
        restart_policy: RestartPolicy,
    ) -> Agent {
        Agent {
            name: name.into(),
            requested: requested.into_iter().collect(),
            restart_policy,
            state: State::Catalogued,
            image_digest: None,
            approved: Vec::new(),
            container_id: None,
            started_at_ms: None,
            awaiting_exit: false,
            disabled_reason: None,
            crashes: CrashHistory::new(),
            pending_restart: None,
            last_exit_code: None,
        }
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The permissions the manifest requests.
    pub fn requested(&self) -> &BTreeSet<String> {
        &self.requested
    }

    /// The restart policy.
    pub fn restart_policy(&self) -> &RestartPolicy {
        &self.restart_policy
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The pinned image digest.
    pub fn image_digest(&self) -> Option<&str> {
        self.image_digest.as_deref()
    }

    /// The approved permissions (sorted, unique).
    pub fn approved(&self) -> &[String] {
        &self.approved
    }

    /// The container of the current run.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// When the current run's container came up.
    pub fn started_at_ms(&self) -> Option<i64> {
        self.started_at_ms
    }

    /// Whether the agent is disabled while its container has not reported
    /// its exit yet.
    pub fn awaiting_exit(&self) -> bool {
        self.awaiting_exit
    }

    /// Why the agent is disabled.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.disabled_reason.as_deref()
    }

    /// The crashes since the last healthy run (or enable).
    pub fn crashes(&self) -> &CrashHistory {
        &self.crashes
    }

    /// The restart waiting for its backoff.
    pub fn pending_restart(&self) -> Option<PendingRestart> {
        self.pending_restart
    }

    /// The exit code of the last container that exited.
    pub fn last_exit_code(&self) -> Option<i32> {
        self.last_exit_code
    }
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The command is not legal from the agent's state.
    #[error("cannot {command} agent {agent} while it is {from} (legal from: {}): {}", state_list(allowed_from), hint(agent, *from, *command))]
    IllegalTransition {
        /// The agent.
        agent: String,
        /// Its state.
        from: State,
        /// The command refused.
        command: CommandKind,
        /// The states the command is legal from.
        allowed_from: Vec<State>,
    },
    /// The agent has no installation.
    #[error("agent {agent} is not installed: install it first: amai agent install {agent}")]
    NotInstalled {
        /// The agent.
        agent: String,
    },
    /// The agent is installed but not enabled.
    #[error("agent {agent} is installed but not enabled: enable it first: amai agent enable {agent} --approve <permission>...")]
    NotEnabled {
        /// The agent.
        agent: String,
    },
    /// The agent is already starting or running.
    #[error(
        "agent {agent} is already {state}: stop it first (amai agent stop {agent}) to run it again"
    )]
    AlreadyRunning {
        /// The agent.
        agent: String,
        /// `Starting` or `Running`.
        state: State,
    },
    /// The agent is disabled (the kill switch).
    #[error("agent {agent} is disabled ({reason}): re-enable it first: amai agent enable {agent} --approve <permission>...")]
    Disabled {
        /// The agent.
        agent: String,
        /// Why it was disabled.
        reason: String,
    },
    /// The agent is already disabled.
    #[error("agent {agent} is already disabled ({reason}); nothing to do")]
    AlreadyDisabled {
        /// The agent.
        agent: String,
        /// Why it was disabled.
        reason: String,
    },
    /// The restart's backoff has not passed yet.
    #[error("agent {agent} restarts after its backoff, due at {restart_at_ms} ({remaining_ms} ms left): retry then, or stop it: amai agent stop {agent}")]
    BackoffPending {
        /// The agent.
        agent: String,
        /// When the restart is due.
        restart_at_ms: i64,
        /// How long until then.
        remaining_ms: u64,
    },
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    #[error("{digest:?} is not an image digest (sha256: followed by 64 lowercase hex digits)")]
    InvalidDigest {
        /// The digest given.
        digest: String,
    },
    /// `Enable` approved permissions the manifest does not request.
    #[error("agent {agent}'s manifest does not request {}: approve only permissions it requests", permissions.join(", "))]
    NotRequested {
        /// The agent.
        agent: String,
        /// The permissions approved but not requested, sorted.
        permissions: Vec<String>,
    },
    /// The agent was disabled while its container was up, and the container
    /// has not reported its exit yet.
    #[error("agent {agent} is disabled and its container has not exited yet: wait for the runtime to report its exit, then retry")]
    StillStopping {
        /// The agent.
        agent: String,
    },
    /// The `Disable` reason is empty or too long.
    #[error(
        "a reason to disable agent {agent} is required (1 to {MAX_REASON_BYTES} bytes, not blank)"
    )]
    InvalidReason {
        /// The agent.
        agent: String,
    },
}

/// The kind of a [`Refusal`], to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// [`Refusal::IllegalTransition`].
    IllegalTransition,
    /// [`Refusal::NotInstalled`].
    NotInstalled,
    /// [`Refusal::NotEnabled`].
    NotEnabled,
    /// [`Refusal::AlreadyRunning`].
    AlreadyRunning,
    /// [`Refusal::Disabled`].
    Disabled,
    /// [`Refusal::AlreadyDisabled`].
    AlreadyDisabled,
    /// [`Refusal::BackoffPending`].
    BackoffPending,
    /// [`Refusal::InvalidDigest`].
    InvalidDigest,
    /// [`Refusal::NotRequested`].
    NotRequested,
    /// [`Refusal::StillStopping`].
    StillStopping,
    /// [`Refusal::InvalidReason`].
    InvalidReason,
}

impl Refusal {
    /// The kind, to match on.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::IllegalTransition { .. } => RefusalKind::IllegalTransition,
            Refusal::NotInstalled { .. } => RefusalKind::NotInstalled,
            Refusal::NotEnabled { .. } => RefusalKind::NotEnabled,
            Refusal::AlreadyRunning { .. } => RefusalKind::AlreadyRunning,
            Refusal::Disabled { .. } => RefusalKind::Disabled,
            Refusal::AlreadyDisabled { .. } => RefusalKind::AlreadyDisabled,
            Refusal::BackoffPending { .. } => RefusalKind::BackoffPending,
            Refusal::InvalidDigest { .. } => RefusalKind::InvalidDigest,
            Refusal::NotRequested { .. } => RefusalKind::NotRequested,
            Refusal::StillStopping { .. } => RefusalKind::StillStopping,
            Refusal::InvalidReason { .. } => RefusalKind::InvalidReason,
        }
    }

    /// Whether the same command may succeed later without anyone changing
    /// anything (the backoff passes, the container exits).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Refusal::BackoffPending { .. } | Refusal::StillStopping { .. }
        )
    }
}

fn state_list(states: &[State]) -> String {
    if states.is_empty() {
        return "none".to_owned();
    }
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to do after an illegal transition, in words.
fn hint(agent: &str, from: State, command: CommandKind) -> String {
    use State::*;
    match (command, from) {
        (c, _) if c.is_runtime_report() => {
            "the runtime's report does not match the agent's state: it is stale, drop it".to_owned()
        }
        (CommandKind::Install, Disabled) => format!(
            "re-enable it first (amai agent enable {agent} --approve <permission>...) or uninstall it (amai agent uninstall {agent})"
        ),
        (CommandKind::Run, Stopping) => {
            format!("wait until it has stopped, then run it: amai agent run {agent}")
        }
        (CommandKind::Run, Crashed) => format!(
            "it restarts by itself after its backoff; to run it by hand, stop it first: amai agent stop {agent}"
        ),
        (CommandKind::Stop, Stopping) => "it is already stopping".to_owned(),
        (CommandKind::Stop, _) => "it is not running; nothing to stop".to_owned(),
        (CommandKind::Restart, _) => format!(
            "only a crashed agent restarts; to start it: amai agent run {agent}"
        ),
        (_, Starting | Running | Stopping | Crashed) => {
            format!("stop it first: amai agent stop {agent}")
        }
        (CommandKind::Enable, _) => format!("install it first: amai agent install {agent}"),
        _ => format!("see amai agent show {agent}"),
    }
}

fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The refusal of a command that the table does not allow from the
/// agent's state: the most specific one.
fn refuse(agent: &Agent, command: CommandKind) -> Refusal {
    let name = agent.name.clone();
    let reason = || agent.disabled_reason.clone().unwrap_or_default();
    match (command, agent.state) {
        (_, State::Catalogued) => Refusal::NotInstalled { agent: name },
        (CommandKind::Run | CommandKind::Started, State::Disabled) => Refusal::Disabled {
            agent: name,
            reason: reason(),
        },
        (CommandKind::Run, State::Installed) => Refusal::NotEnabled { agent: name },
        (CommandKind::Run, state @ (State::Starting | State::Running)) => {
            Refusal::AlreadyRunning { agent: name, state }
        }
        (CommandKind::Disable, State::Disabled) => Refusal::AlreadyDisabled {
            agent: name,
            reason: reason(),
        },
        (command, from) => Refusal::IllegalTransition {
            agent: name,
            from,
            command,
            allowed_from: allowed_from(command).to_vec(),
        },
    }
}

/// Decides what a command does to an agent at `now_ms`: the facts to
/// record, or why it is refused. Pure: the same state, command and time
/// give the same answer.
pub fn decide(agent: &Agent, command: &Command, now_ms: i64) -> Result<Vec<Fact>, Refusal> {
    let kind = command.kind();
    let from = agent.state;
    // The exit report of a container that was up when the agent was
    // disabled.
    if from == State::Disabled && agent.awaiting_exit {
        match command {
            Command::Stopped { exit_code } | Command::Crashed { exit_code, .. } => {
                return Ok(vec![Fact::ContainerExited {
                    exit_code: *exit_code,
                    at_ms: now_ms,
                }]);
            }
            Command::Enable { .. } | Command::Uninstall => {
                return Err(Refusal::StillStopping {
                    agent: agent.name.clone(),
                });
            }
            _ => {}
        }
    }
    if !allowed_from(kind).contains(&from) {
        return Err(refuse(agent, kind));
    }
    let facts = match command {
        Command::Install { image_digest } => {
            if !valid_digest(image_digest) {
                return Err(Refusal::InvalidDigest {
                    digest: image_digest.clone(),
                });
            }
            if from != State::Catalogued && agent.image_digest.as_deref() == Some(image_digest) {
                // Re-installing the pinned image changes nothing.
                return Ok(Vec::new());
            }
            vec![Fact::Installed {
                image_digest: image_digest.clone(),
            }]
        }
        Command::Enable { approved } => {
            let approved: BTreeSet<&String> = approved.iter().collect();
            let not_requested: Vec<String> = approved
                .iter()
                .filter(|p| !agent.requested.contains(p.as_str()))
                .map(|p| (*p).clone())
                .collect();
            if !not_requested.is_empty() {
                return Err(Refusal::NotRequested {
                    agent: agent.name.clone(),
                    permissions: not_requested,
                });
            }
            vec![Fact::Enabled {
                approved: approved.into_iter().cloned().collect(),
            }]
        }
        Command::Run => vec![Fact::StartRequested],
        Command::Started { container_id } => vec![Fact::Started {
            container_id: container_id.clone(),
            at_ms: now_ms,
        }],
        Command::Stop => match from {
            State::Crashed => vec![Fact::RestartCancelled],
            _ => vec![Fact::StopRequested {
                reason: StopReason::Operator,
            }],
        },
        Command::Stopped { exit_code } => vec![Fact::Stopped {
            exit_code: *exit_code,
            at_ms: now_ms,
        }],
        Command::Crashed { exit_code, at_ms } => {
            if from == State::Stopping {
                // It was asked to stop and it is gone: stopped.
                vec![Fact::Stopped {
                    exit_code: *exit_code,
                    at_ms: now_ms,
                }]
            } else {
                crash(agent, *exit_code, (*at_ms).min(now_ms), now_ms)
            }
        }
        Command::Restart => {
            let pending = agent.pending_restart.unwrap_or(PendingRestart {
                attempt: 1,
                restart_at_ms: now_ms,
            });
            if now_ms < pending.restart_at_ms {
                return Err(Refusal::BackoffPending {
                    agent: agent.name.clone(),
                    restart_at_ms: pending.restart_at_ms,
                    remaining_ms: pending.restart_at_ms.abs_diff(now_ms),
                });
            }
            vec![Fact::Restarting {
                attempt: pending.attempt,
            }]
        }
        Command::Disable { reason } => {
            if reason.trim().is_empty() || reason.len() > MAX_REASON_BYTES {
                return Err(Refusal::InvalidReason {
                    agent: agent.name.clone(),
                });
            }
            let disabled = |awaiting_exit| Fact::Disabled {
                reason: reason.clone(),
                awaiting_exit,
            };
            if from.is_active() {
                vec![
                    Fact::StopRequested {
                        reason: StopReason::Disabled,
                    },
                    disabled(true),
                ]
            } else {
                vec![disabled(false)]
            }
        }
        Command::Uninstall => vec![Fact::Uninstalled],
    };
    Ok(facts)
}

/// The facts of a crash of a starting or running agent at `at_ms`.
fn crash(agent: &Agent, exit_code: Option<i32>, at_ms: i64, now_ms: i64) -> Vec<Fact> {
    let policy = &agent.restart_policy;
    let healthy_run = agent
        .started_at_ms
        .is_some_and(|started| policy.was_healthy(started, at_ms));
    let mut history = if healthy_run {
        CrashHistory::new()
    } else {
        agent.crashes.clone()
    };
    history.record(at_ms);
    let crashed = Fact::Crashed {
        exit_code,
        at_ms,
        healthy_run,
    };
    match policy.after_crash(&history, now_ms) {
        CrashDecision::RestartAfter { delay_ms, attempt } => vec![
            crashed,
            Fact::RestartScheduled {
                attempt,
                delay_ms,
                restart_at_ms: now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
            },
        ],
        CrashDecision::DisableCrashLoop { crashes, window_ms } => vec![
            crashed,
            Fact::CrashLoopDetected { crashes, window_ms },
            Fact::Disabled {
                reason: format!(
                    "crash loop: {crashes} crashes within {}",
                    crate::policy::format_duration_ms(window_ms)
                ),
                awaiting_exit: false,
            },
        ],
    }
}

/// Folds one fact into the state. Holds no business logic: every
/// decision was made by [`decide`] and is carried by the fact.
pub fn apply(agent: &mut Agent, fact: &Fact) {
    match fact {
        Fact::Installed { image_digest } => {
            agent.state = State::Installed;
            agent.image_digest = Some(image_digest.clone());
            agent.approved.clear();
        }
        Fact::Enabled { approved } => {
            agent.state = State::Enabled;
            agent.approved = approved.clone();
            agent.disabled_reason = None;
            agent.crashes.clear();
            agent.pending_restart = None;
        }
        Fact::StartRequested => {
            agent.state = State::Starting;
            agent.started_at_ms = None;
        }
        Fact::Started {
            container_id,
            at_ms,
        } => {
            agent.state = State::Running;
            agent.container_id = Some(container_id.clone());
            agent.started_at_ms = Some(*at_ms);
        }
        Fact::StopRequested { .. } => {
            agent.state = State::Stopping;
        }
        Fact::Stopped { exit_code, .. } => {
            agent.state = State::Stopped;
            agent.container_id = None;
            agent.started_at_ms = None;
            agent.last_exit_code = *exit_code;
        }
        Fact::Crashed {
            exit_code,
            at_ms,
            healthy_run,
        } => {
            agent.state = State::Crashed;
            agent.container_id = None;
            agent.started_at_ms = None;
            agent.last_exit_code = *exit_code;
            if *healthy_run {
                agent.crashes.clear();
            }
            agent.crashes.record(*at_ms);
        }
        Fact::RestartScheduled {
            attempt,
            restart_at_ms,
            ..
        } => {
            agent.pending_restart = Some(PendingRestart {
                attempt: *attempt,
                restart_at_ms: *restart_at_ms,
            });
        }
        Fact::CrashLoopDetected { .. } => {}
        Fact::RestartCancelled => {
            agent.state = State::Stopped;
            agent.pending_restart = None;
        }
        Fact::Restarting { .. } => {
            agent.state = State::Starting;
            agent.pending_restart = None;
            agent.started_at_ms = None;
        }
        Fact::Disabled {
            reason,
            awaiting_exit,
        } => {
            agent.state = State::Disabled;
            agent.disabled_reason = Some(reason.clone());
            agent.awaiting_exit = *awaiting_exit;
            agent.pending_restart = None;
        }
        Fact::ContainerExited { exit_code, .. } => {
            agent.awaiting_exit = false;
            agent.container_id = None;
            agent.started_at_ms = None;
            agent.last_exit_code = *exit_code;
        }
        Fact::Uninstalled => {
            agent.state = State::Catalogued;
            agent.image_digest = None;
            agent.approved.clear();
            agent.disabled_reason = None;
            agent.crashes.clear();
            agent.pending_restart = None;
            agent.last_exit_code = None;
        }
    }
}

impl Aggregate for Agent {
    type Command = Command;
    type Fact = Fact;
    type Refusal = Refusal;

    fn decide(&self, command: &Command, now_ms: i64) -> Result<Vec<Fact>, Refusal> {
        decide(self, command, now_ms)
    }

    fn apply(&mut self, fact: &Fact) {
        apply(self, fact);
    }
}
