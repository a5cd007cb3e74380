//! One jail run: create a hardened, limited container, check that the engine
//! applied every limit ([`verify_applied`]), start it, collect its demultiplexed
//! output up to a cap, enforce the wall clock, report how it ended, and always
//! remove the container.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{AttachContainerOptionsBuilder, KillContainerOptionsBuilder};
use futures::StreamExt;

use crate::cleanup::remove_container;
use crate::engine::Engine;
use crate::limits::JailLimits;
use crate::{JAIL_LABEL, MANAGED_LABEL};

/// The user and group every jailed command runs as (`nobody`).
pub const JAIL_USER: &str = "65534:65534";
/// The capability list dropped from every jail.
pub const DROPPED_CAPABILITIES: &str = "ALL";
/// The security option every jail carries.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges";
/// The network mode of every jail, for now.
pub const NETWORK_MODE: &str = "none";

/// What to run in a jail. Build with [`RunRequest::new`] and the setters.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRequest {
    /// The jail the container belongs to (label `amai.jail`).
    pub jail_id: String,
    /// The image reference, e.g. from [`crate::build_busybox`].
    pub image: String,
    /// The command and its arguments (no shell unless it names one).
    pub command: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The working directory (default `/workspace`).
    pub working_dir: String,
    /// The limits.
    pub limits: JailLimits,
}

impl RunRequest {
    /// A request with default limits, no extra environment and `/workspace` as
    /// working directory.
    pub fn new(
        jail_id: impl Into<String>,
        image: impl Into<String>,
        command: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            jail_id: jail_id.into(),
            image: image.into(),
            command: command.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            working_dir: "/workspace".to_owned(),
            limits: JailLimits::default(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, working_dir: impl Into<String>) -> Self {
        self.working_dir = working_dir.into();
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: JailLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The hardened container configuration this request creates.
    pub fn container_config(&self) -> ContainerCreateBody {
        let limits = &self.limits;
        let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
        let tmpfs_options = |mode: &str| {
            format!(
                "rw,nosuid,nodev,size={},uid=65534,gid=65534,mode={mode}",
                limits.tmpfs_bytes
            )
        };
        let host_config = HostConfig {
            privileged: Some(false),
            cap_drop: Some(vec![DROPPED_CAPABILITIES.to_owned()]),
            security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
            pids_limit: Some(limits.pids),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(limits.nano_cpus()),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([
                ("/tmp".to_owned(), tmpfs_options("1777")),
                ("/workspace".to_owned(), tmpfs_options("0755")),
            ])),
            network_mode: Some(NETWORK_MODE.to_owned()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.command.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(self.working_dir.clone()),
            user: Some(JAIL_USER.to_owned()),
            labels: Some(HashMap::from([
                (JAIL_LABEL.to_owned(), self.jail_id.clone()),
                (MANAGED_LABEL.to_owned(), "true".to_owned()),
            ])),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            open_stdin: Some(false),
            tty: Some(false),
            network_disabled: Some(true),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The container that ran (already removed).
    pub container_id: String,
    /// The exit code (137 after a kill).
    pub exit_code: i64,
    /// The wall clock ran out and the container was killed.
    pub timed_out: bool,
    /// The kernel's OOM killer killed a process of the container.
    pub oom_killed: bool,
    /// The output cap was reached and the container was killed.
    pub output_truncated: bool,
    /// Standard output, at most the cap (shared with stderr).
    pub stdout: Vec<u8>,
    /// Standard error, at most the cap (shared with stdout).
    pub stderr: Vec<u8>,
    /// From start until the container stopped.
    pub duration: Duration,
}

/// A limit the engine did not apply as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitMismatch {
    /// The setting, named as in `docker inspect` (e.g. `HostConfig.Memory`).
    pub field: &'static str,
    /// What was requested.
    pub requested: String,
    /// What `inspect` shows.
    pub applied: String,
}

impl std::fmt::Display for LimitMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requested {} but applied {}",
            self.field, self.requested, self.applied
        )
    }
}

/// Why [`run`] failed. The container, if created, has been removed (unless
/// [`RunError::Remove`] says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Creating the container failed.
    #[error("creating the jail container from {image} failed: {source}")]
    Create {
        /// The image.
        image: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Inspecting the container failed.
    #[error("inspecting jail container {container_id} failed: {source}")]
    Inspect {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine dropped or changed limits; the container was not started.
    #[error("the Docker Engine did not apply the jail's limits, refusing to start: {}", mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    LimitsNotApplied {
        /// Every difference found.
        mismatches: Vec<LimitMismatch>,
    },
    /// Attaching to the container's output failed.
    #[error("attaching to jail container {container_id} failed: {source}")]
    Attach {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Starting the container failed.
    #[error("starting jail container {container_id} failed: {source}")]
    Start {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Reading the container's output failed.
    #[error("reading the output of jail container {container_id} failed: {source}")]
    Output {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Killing the container (timeout or output cap) failed.
    #[error("killing jail container {container_id} failed: {source}")]
    Kill {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Waiting for the container to stop failed.
    #[error("waiting for jail container {container_id} failed: {source}")]
    Wait {
        /// The container.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The run finished (or failed) but removing the container failed: it is
    /// left for [`crate::remove_managed`].
    #[error("removing jail container {container_id} failed (left for remove_managed): {source}")]
    Remove {
        /// The container left behind.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Runs `request` in a hardened container; see the module documentation.
pub async fn run(engine: &Engine, request: RunRequest) -> Result<RunOutcome, RunError> {
    let config = request.container_config();
    let created = engine
        .docker()
        .create_container(None, config.clone())
        .await
        .map_err(|source| RunError::Create {
            image: request.image.clone(),
            source,
        })?;
    let container_id = created.id;
    let mut guard = RemoveOnDrop {
        engine: engine.clone(),
        container_id: Some(container_id.clone()),
    };
    let result = run_created(engine, &container_id, &config, &request.limits).await;
    let removed = remove_container(engine, &container_id).await;
    guard.container_id = None;
    match (result, removed) {
        (Ok(outcome), Ok(())) => Ok(outcome),
        (Err(error), removed) => {
            if let Err(remove_error) = removed {
                tracing::warn!(%container_id, error = %remove_error, "removing a failed jail container failed");
            }
            Err(error)
        }
        (Ok(_), Err(source)) => Err(RunError::Remove {
            container_id,
            source,
        }),
    }
}

/// Removes the container if [`run`] is dropped before it removed it itself (the
/// caller gave up, e.g. with a timeout): the removal is spawned on the current
/// runtime. Without a runtime the container is left for [`crate::remove_managed`].
struct RemoveOnDrop {
    engine: Engine,
    container_id: Option<String>,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(container_id) = self.container_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%container_id, "jail run dropped outside a runtime: container left for remove_managed");
            return;
        };
        let engine = self.engine.clone();
        runtime.spawn(async move {
            if let Err(error) = remove_container(&engine, &container_id).await {
                tracing::warn!(%container_id, %error, "removing the container of a dropped jail run failed");
            }
        });
    }
}

async fn run_created(
    engine: &Engine,
    container_id: &str,
    config: &ContainerCreateBody,
    limits: &JailLimits,
) -> Result<RunOutcome, RunError> {
    let docker = engine.docker();
    let inspect_error = |source| RunError::Inspect {
        container_id: container_id.to_owned(),
        source,
    };
    let inspected = docker
        .inspect_container(container_id, None)
        .await
        .map_err(inspect_error)?;
    verify_applied(config, &inspected)
        .map_err(|mismatches| RunError::LimitsNotApplied { mismatches })?;

    let attach_options = AttachContainerOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(true)
        .build();
    let mut attached = docker
        .attach_container(container_id, Some(attach_options))
        .await
        .map_err(|source| RunError::Attach {
            container_id: container_id.to_owned(),
            source,
        })?;
    let started_at = Instant::now();
    docker
        .start_container(container_id, None)
        .await
        .map_err(|source| RunError::Start {
            container_id: container_id.to_owned(),
            source,
        })?;
    let deadline = tokio::time::Instant::from_std(started_at + limits.wall_clock);

    let cap = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut timed_out = false;
    let mut output_truncated = false;
    let mut collected = 0usize;
    loop {
        let next = match tokio::time::timeout_at(deadline, attached.output.next()).await {
            Err(_elapsed) => {
                timed_out = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(next)) => next,
        };
        let (buffer, message) = match next.map_err(|source| RunError::Output {
            container_id: container_id.to_owned(),
            source,
        })? {
            bollard::container::LogOutput::StdOut { message } => (&mut stdout, message),
            bollard::container::LogOutput::StdErr { message } => (&mut stderr, message),
            // Not sent without a TTY or stdin; ignored.
            bollard::container::LogOutput::StdIn { .. }
            | bollard::container::LogOutput::Console { .. } => continue,
        };
        let room = cap.saturating_sub(collected);
        if message.len() > room {
            buffer.extend_from_slice(&message[..room]);
            output_truncated = true;
            break;
        }
        collected += message.len();
        buffer.extend_from_slice(&message);
    }
    drop(attached);

    if !timed_out && !output_truncated {
        // The output ended: the process exited or closed both streams. Wait for
        // the stop, still within the wall clock.
        let mut wait = docker.wait_container(container_id, None);
        match tokio::time::timeout_at(deadline, wait.next()).await {
            Err(_elapsed) => timed_out = true,
            Ok(None | Some(Ok(_))) => {}
            // Non-zero exit codes come back as this error; the code is read from inspect.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { .. }))) => {}
            Ok(Some(Err(source))) => {
                return Err(RunError::Wait {
                    container_id: container_id.to_owned(),
                    source,
                })
            }
        }
    }
    if timed_out || output_truncated {
        kill(engine, container_id).await?;
        let mut wait = docker.wait_container(container_id, None);
        match wait.next().await {
            None
            | Some(Ok(_))
            | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) => {}
            Some(Err(source)) => {
                return Err(RunError::Wait {
                    container_id: container_id.to_owned(),
                    source,
                })
            }
        }
    }
    let duration = started_at.elapsed();

    let finished = docker
        .inspect_container(container_id, None)
        .await
        .map_err(inspect_error)?;
    let state = finished.state.unwrap_or_default();
    Ok(RunOutcome {
        container_id: container_id.to_owned(),
        exit_code: state.exit_code.unwrap_or(-1),
        timed_out,
        oom_killed: state.oom_killed.unwrap_or(false),
        output_truncated,
        stdout,
        stderr,
        duration,
    })
}

async fn kill(engine: &Engine, container_id: &str) -> Result<(), RunError> {
    let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
    match engine
        .docker()
        .kill_container(container_id, Some(options))
        .await
    {
        Ok(()) => Ok(()),
        // 409: not running any more (it exited on its own meanwhile).
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Ok(()),
        Err(source) => Err(RunError::Kill {
            container_id: container_id.to_owned(),
            source,
        }),
    }
}

/// Compares the hardening and limits of `requested` with what `inspected` shows
/// the engine applied; every difference (including a setting that disappeared) is
/// a [`LimitMismatch`].
pub fn verify_applied(
    requested: &ContainerCreateBody,
    inspected: &ContainerInspectResponse,
) -> Result<(), Vec<LimitMismatch>> {
    let default_host_config = HostConfig::default();
    let want = requested
        .host_config
        .as_ref()
        .unwrap_or(&default_host_config);
    let got = inspected
        .host_config
        .as_ref()
        .unwrap_or(&default_host_config);
    let mut mismatches = Vec::new();
    let mut check = |field: &'static str, requested: String, applied: String| {
        if requested != applied {
            mismatches.push(LimitMismatch {
                field,
                requested,
                applied,
            });
        }
    };
    check("HostConfig.Memory", show(&want.memory), show(&got.memory));
    check(
        "HostConfig.MemorySwap",
        show(&want.memory_swap),
        show(&got.memory_swap),
    );
    check(
        "HostConfig.PidsLimit",
        show(&want.pids_limit),
        show(&got.pids_limit),
    );
    check(
        "HostConfig.NanoCpus",
        show(&want.nano_cpus),
        show(&got.nano_cpus),
    );
    check(
        "HostConfig.ReadonlyRootfs",
        show(&want.readonly_rootfs),
        show(&got.readonly_rootfs),
    );
    check(
        "HostConfig.CapDrop",
        show(&want.cap_drop),
        show(&got.cap_drop),
    );
    check(
        "HostConfig.SecurityOpt",
        show(&want.security_opt),
        show(&got.security_opt),
    );
    // Absent and false both mean "not privileged" on the engine side.
    check(
        "HostConfig.Privileged",
        show(&Some(want.privileged.unwrap_or(false))),
        show(&Some(got.privileged.unwrap_or(false))),
    );
    check(
        "HostConfig.NetworkMode",
        show(&want.network_mode),
        show(&got.network_mode),
    );
    check(
        "HostConfig.Tmpfs",
        show(&want.tmpfs.as_ref().map(sorted)),
        show(&got.tmpfs.as_ref().map(sorted)),
    );
    let applied_user = inspected.config.as_ref().and_then(|c| c.user.clone());
    check("Config.User", show(&requested.user), show(&applied_user));
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches)
    }
}

fn sorted(map: &HashMap<String, String>) -> Vec<(String, String)> {
    let mut entries: Vec<_> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    entries.sort();
    entries
}

fn show<T: std::fmt::Debug>(value: &Option<T>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "(unset)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::ContainerConfig;

    use super::*;

    fn requested() -> ContainerCreateBody {
        let limits = JailLimits::builder()
            .memory_bytes(64 * 1024 * 1024)
            .pids(32)
            .cpus(0.5)
            .build();
        RunRequest::new("jail-1", "amai/busybox:0123456789ab", ["true"])
            .limits(limits)
            .container_config()
    }

    /// What an engine that applied everything shows.
    fn faithful(requested: &ContainerCreateBody) -> ContainerInspectResponse {
        ContainerInspectResponse {
            host_config: requested.host_config.clone(),
            config: Some(ContainerConfig {
                user: requested.user.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn mismatched_fields(
        change: impl FnOnce(&mut HostConfig, &mut ContainerConfig),
    ) -> Vec<&'static str> {
        let requested = requested();
        let mut inspected = faithful(&requested);
        let host_config = inspected.host_config.get_or_insert_with(Default::default);
        let config = inspected.config.get_or_insert_with(Default::default);
        change(host_config, config);
        match verify_applied(&requested, &inspected) {
            Ok(()) => Vec::new(),
            Err(mismatches) => mismatches.into_iter().map(|m| m.field).collect(),
        }
    }

    #[test]
    fn a_faithful_engine_passes() {
        let requested = requested();
        assert_eq!(verify_applied(&requested, &faithful(&requested)), Ok(()));
    }

    #[test]
    fn the_requested_config_is_hardened() {
        let requested = requested();
        let host = requested.host_config.clone().unwrap_or_default();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.pids_limit, Some(32));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_owned()])
        );
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(requested.user.as_deref(), Some("65534:65534"));
        let labels = requested.labels.unwrap_or_default();
        assert_eq!(labels.get("amai.jail").map(String::as_str), Some("jail-1"));
        assert_eq!(labels.get("amai.managed").map(String::as_str), Some("true"));
    }

    #[test]
    fn memory_dropped_or_changed_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.memory = None),
            ["HostConfig.Memory"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.memory = Some(0)),
            ["HostConfig.Memory"]
        );
    }

    #[test]
    fn memory_swap_dropped_or_changed_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.memory_swap = Some(-1)),
            ["HostConfig.MemorySwap"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.memory_swap = None),
            ["HostConfig.MemorySwap"]
        );
    }

    #[test]
    fn pids_limit_dropped_or_changed_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.pids_limit = None),
            ["HostConfig.PidsLimit"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.pids_limit = Some(0)),
            ["HostConfig.PidsLimit"]
        );
    }

    #[test]
    fn nano_cpus_dropped_or_changed_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.nano_cpus = Some(0)),
            ["HostConfig.NanoCpus"]
        );
    }

    #[test]
    fn a_writable_root_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.readonly_rootfs = Some(false)),
            ["HostConfig.ReadonlyRootfs"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.readonly_rootfs = None),
            ["HostConfig.ReadonlyRootfs"]
        );
    }

    #[test]
    fn capabilities_kept_are_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.cap_drop = None),
            ["HostConfig.CapDrop"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.cap_drop = Some(vec!["NET_RAW".to_owned()])),
            ["HostConfig.CapDrop"]
        );
    }

    #[test]
    fn security_opt_dropped_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.security_opt = Some(Vec::new())),
            ["HostConfig.SecurityOpt"]
        );
    }

    #[test]
    fn privileged_is_caught_and_absent_means_unprivileged() {
        assert_eq!(
            mismatched_fields(|h, _| h.privileged = Some(true)),
            ["HostConfig.Privileged"]
        );
        assert!(mismatched_fields(|h, _| h.privileged = None).is_empty());
    }

    #[test]
    fn another_network_mode_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.network_mode = Some("bridge".to_owned())),
            ["HostConfig.NetworkMode"]
        );
    }

    #[test]
    fn tmpfs_changes_are_caught() {
        assert_eq!(
            mismatched_fields(|h, _| {
                if let Some(tmpfs) = h.tmpfs.as_mut() {
                    tmpfs.remove("/workspace");
                }
            }),
            ["HostConfig.Tmpfs"]
        );
    }

    #[test]
    fn another_user_is_caught() {
        assert_eq!(
            mismatched_fields(|_, c| c.user = Some(String::new())),
            ["Config.User"]
        );
        assert_eq!(
            mismatched_fields(|_, c| c.user = Some("0:0".to_owned())),
            ["Config.User"]
        );
    }

    #[test]
    fn every_difference_is_reported() {
        let fields = mismatched_fields(|h, c| {
            h.memory = None;
            h.pids_limit = None;
            c.user = None;
        });
        assert_eq!(
            fields,
            ["HostConfig.Memory", "HostConfig.PidsLimit", "Config.User"]
        );
    }
}
