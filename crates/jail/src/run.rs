//! One jail run, in two steps so the caller can record the moment it starts:
//!
//! 1. [`prepare`]: create the run's two tmpfs volumes and check their options
//!    ([`crate::workdirs`] explains the design), start the keeper container
//!    holding them, create the hardened, limited jail container and check that
//!    the engine applied every limit, mount and namespace setting
//!    ([`verify_applied`], the keeper too), upload the injected files into the
//!    keeper and compute the "before" [`Snapshot`] of `/workspace` and `/tmp`
//!    (fresh volumes plus the uploads; a test checks it against the archive).
//! 2. [`PreparedRun::start`]: start the jail container, collect its
//!    demultiplexed output up to a cap, enforce the wall clock, follow its
//!    resource [`Usage`], take the "after" snapshot once it stopped, compute the
//!    [`FsDiff`], and remove the jail container, the keeper and the volumes.
//!
//! [`run`] is both steps. Whatever happens, nothing is left behind: a
//! [`PreparedRun`] or a [`PreparedRun::start`] future dropped before the end
//! spawns the removal on the current runtime; without a runtime (or after
//! [`std::mem::forget`]) everything carries the `amai.managed`/`amai.jail`
//! labels for [`crate::remove_managed`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use amai_jail_spec::InjectedFile;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, Mount, MountPoint,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::cleanup::{remove_container, remove_volume};
use crate::diff::{EntryKind, FsDiff, FsEntry, Snapshot, SnapshotError};
use crate::engine::Engine;
use crate::limits::JailLimits;
use crate::scope::Scope;
use crate::usage::{Usage, UsageFollower};
use crate::workdirs::{
    keeper_config, run_nonce, verify_volume, volume_request, with_scope, WritableVolumes,
    RUN_LABEL, TMP_DIR, WORKSPACE_DIR,
};
use crate::{JAIL_LABEL, MANAGED_LABEL};

/// The user and group every jailed command runs as (`nobody`).
pub const JAIL_USER: &str = "65534:65534";
/// The capability list dropped from every jail.
pub const DROPPED_CAPABILITIES: &str = "ALL";
/// The security option every jail carries.
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges";
/// The network mode of a jail without a network.
pub const NETWORK_MODE: &str = "none";
/// The IPC mode of every jail: no IPC namespace to share, no `/dev/shm`.
pub const IPC_MODE: &str = "none";

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
    /// Files written into `/workspace` or `/tmp` before the start (owner nobody).
    pub files: Vec<InjectedFile>,
    /// The Docker network to join; `None` (the default) means no network at all.
    pub network: Option<String>,
    /// DNS servers (`HostConfig.Dns`); empty means the engine's default.
    pub dns: Vec<String>,
    /// The image of the keeper container (it needs `sleep`); `None` (the
    /// default) means the jail's image.
    pub keeper_image: Option<String>,
    /// The deployment the run belongs to (label `amai.scope` on the jail
    /// container, the keeper and both volumes); `None` (the default) means no
    /// scope label, and only unscoped cleanup ([`crate::remove_managed`]) finds
    /// the leftovers.
    pub scope: Option<Scope>,
}

impl RunRequest {
    /// A request with default limits, no extra environment, no files, no
    /// network and `/workspace` as working directory.
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
            working_dir: WORKSPACE_DIR.to_owned(),
            limits: JailLimits::default(),
            files: Vec::new(),
            network: None,
            dns: Vec::new(),
            keeper_image: None,
            scope: None,
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

    /// Sets the files injected before the start (paths under `/workspace` or
    /// `/tmp`; missing parent directories are created, owned by nobody).
    pub fn files(mut self, files: Vec<InjectedFile>) -> Self {
        self.files = files;
        self
    }

    /// Joins the Docker network `name` instead of running without a network.
    pub fn network(mut self, name: impl Into<String>) -> Self {
        self.network = Some(name.into());
        self
    }

    /// Sets the DNS servers of the container.
    pub fn dns(mut self, servers: Vec<String>) -> Self {
        self.dns = servers;
        self
    }

    /// Runs the keeper from `image` (e.g. the busybox image of
    /// [`crate::build_busybox`]) instead of the jail's image, for jail images
    /// without `sleep`.
    pub fn keeper_image(mut self, image: impl Into<String>) -> Self {
        self.keeper_image = Some(image.into());
        self
    }

    /// Labels the jail container, the keeper and both volumes with `scope`
    /// ([`crate::SCOPE_LABEL`]), for [`crate::remove_scope`].
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    /// The hardened jail container configuration this request creates, with
    /// `volumes` on `/workspace` and `/tmp`.
    pub fn container_config(&self, volumes: &WritableVolumes) -> ContainerCreateBody {
        let limits = &self.limits;
        let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
        let host_config = HostConfig {
            privileged: Some(false),
            cap_drop: Some(vec![DROPPED_CAPABILITIES.to_owned()]),
            security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
            pids_limit: Some(limits.pids),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some(limits.nano_cpus()),
            readonly_rootfs: Some(true),
            mounts: Some(volumes.mounts()),
            network_mode: Some(
                self.network
                    .clone()
                    .unwrap_or_else(|| NETWORK_MODE.to_owned()),
            ),
            ipc_mode: Some(IPC_MODE.to_owned()),
            dns: (!self.dns.is_empty()).then(|| self.dns.clone()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.command.clone()),
            env: Some(self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: Some(self.working_dir.clone()),
            user: Some(JAIL_USER.to_owned()),
            labels: Some(with_scope(
                HashMap::from([
                    (JAIL_LABEL.to_owned(), self.jail_id.clone()),
                    (MANAGED_LABEL.to_owned(), "true".to_owned()),
                ]),
                self.scope.as_ref(),
            )),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            open_stdin: Some(false),
            tty: Some(false),
            network_disabled: Some(self.network.is_none()),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
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
    /// What the run used (sampled; see [`crate::usage`]).
    pub usage: Usage,
    /// What the run changed in `/workspace` and `/tmp`.
    pub diff: FsDiff,
}

/// A setting the engine did not apply as requested.
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

fn joined(mismatches: &[LimitMismatch]) -> String {
    mismatches
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why [`prepare`], [`PreparedRun::start`] or [`run`] failed. Everything the run
/// created has been removed (unless [`RunError::Remove`] says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An injected file cannot be written where it asks.
    #[error("injected file {path}: {detail}")]
    File {
        /// The file's path.
        path: String,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// Creating a writable-directory volume failed.
    #[error("creating the tmpfs volume {volume} failed (does the local volume driver accept type=tmpfs?): {source}")]
    CreateVolume {
        /// The volume.
        volume: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// A volume of that name already belongs to another run.
    #[error("volume {volume} already exists for another run of this jail id: use a new jail id, or remove the leftovers with remove_managed")]
    VolumeTaken {
        /// The volume.
        volume: String,
    },
    /// Inspecting a volume failed.
    #[error("inspecting volume {volume} failed: {source}")]
    InspectVolume {
        /// The volume.
        volume: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine created a volume other than requested; the run was not started.
    #[error(
        "the Docker Engine did not create volume {volume} as requested, refusing to start: {}",
        joined(mismatches)
    )]
    VolumeNotApplied {
        /// The volume.
        volume: String,
        /// Every difference found.
        mismatches: Vec<LimitMismatch>,
    },
    /// Creating or starting the keeper container failed.
    #[error("{step} the keeper container of jail {jail_id} failed: {source}")]
    Keeper {
        /// `creating` or `starting`.
        step: &'static str,
        /// The jail.
        jail_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
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
    #[error(
        "the Docker Engine did not apply the jail's limits, refusing to start: {}",
        joined(mismatches)
    )]
    LimitsNotApplied {
        /// Every difference found.
        mismatches: Vec<LimitMismatch>,
    },
    /// The engine dropped or changed a setting of the keeper container (a
    /// mount, a limit); it was not started.
    #[error(
        "the Docker Engine did not create the keeper container as requested, refusing to start: {}",
        joined(mismatches)
    )]
    KeeperNotApplied {
        /// Every difference found.
        mismatches: Vec<LimitMismatch>,
    },
    /// Uploading the injected files into the keeper failed.
    #[error(
        "uploading the injected files into {dir} failed (do they fit in the disk limit?): {source}"
    )]
    Upload {
        /// `/workspace` or `/tmp`.
        dir: &'static str,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Reading a writable directory through the archive API failed.
    #[error("reading {dir} from the keeper container failed: {source}")]
    Download {
        /// `/workspace` or `/tmp`.
        dir: &'static str,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// The archive of a writable directory could not be read.
    #[error("snapshotting {dir} failed: {source}")]
    Snapshot {
        /// `/workspace` or `/tmp`.
        dir: &'static str,
        /// What was wrong with the tar.
        #[source]
        source: SnapshotError,
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
    /// The background removal task did not finish (runtime shut down).
    #[error("the background removal of a jail run did not finish ({detail}): leftovers are for remove_managed")]
    CleanupAborted {
        /// Why the task ended.
        detail: String,
    },
    /// The run finished (or failed) but removing a container or volume failed:
    /// it is left for [`crate::remove_managed`].
    #[error("removing {what} failed (left for remove_managed): {source}")]
    Remove {
        /// The container id or volume name left behind.
        what: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// A jail container created and verified, its volumes and keeper running, its
/// files injected and its "before" snapshot taken: ready to [`start`](Self::start).
/// Dropping it removes everything (spawned on the current runtime).
#[derive(Debug)]
pub struct PreparedRun {
    engine: Engine,
    request: RunRequest,
    container_id: String,
    keeper_id: String,
    volumes: WritableVolumes,
    before: Snapshot,
    resources: Resources,
}

impl PreparedRun {
    /// The jail container.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// The keeper container holding the volumes.
    pub fn keeper_id(&self) -> &str {
        &self.keeper_id
    }

    /// The limits, as verified on the created container.
    pub fn limits(&self) -> &JailLimits {
        &self.request.limits
    }

    /// The request being run.
    pub fn request(&self) -> &RunRequest {
        &self.request
    }

    /// The volumes of `/workspace` and `/tmp`.
    pub fn volumes(&self) -> &WritableVolumes {
        &self.volumes
    }

    /// `/workspace` and `/tmp` before the start (injected files included).
    pub fn before(&self) -> &Snapshot {
        &self.before
    }

    /// Starts the jail and runs it to the end; see the module documentation.
    /// Returns once the jail container, the keeper and the volumes are removed.
    pub async fn start(self) -> Result<RunOutcome, RunError> {
        let (result, resources) = self.run_to_end().await;
        let removed = resources.remove_now().await;
        match (result, removed) {
            (Ok(outcome), Ok(())) => Ok(outcome),
            (Err(error), removed) => {
                if let Err(remove_error) = removed {
                    tracing::warn!(error = %remove_error, "removing a failed jail run failed");
                }
                Err(error)
            }
            (Ok(_), Err(error)) => Err(error),
        }
    }

    /// Like [`start`](Self::start), but returns as soon as the outcome is known
    /// (the jail container already removed) and removes the keeper and the
    /// volumes in a task spawned on the current runtime; [`Cleanup::wait`]
    /// reports how that went. If the process exits first, they are left for
    /// [`crate::remove_managed`]. On error the removal is spawned the same way.
    pub async fn start_with_background_cleanup(self) -> Result<(RunOutcome, Cleanup), RunError> {
        let (result, resources) = self.run_to_end().await;
        let task = tokio::spawn(resources.remove_now());
        result.map(|outcome| (outcome, Cleanup { task }))
    }

    async fn run_to_end(self) -> (Result<RunOutcome, RunError>, Resources) {
        let Self {
            engine,
            request,
            container_id,
            keeper_id,
            volumes: _,
            before,
            mut resources,
        } = self;
        let result = run_prepared(
            &engine,
            &container_id,
            &keeper_id,
            &request.limits,
            &before,
            &mut resources,
        )
        .await;
        (result, resources)
    }
}

/// The background removal of a run's keeper and volumes
/// ([`PreparedRun::start_with_background_cleanup`]). Dropping it does not stop
/// the removal.
#[derive(Debug)]
pub struct Cleanup {
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

impl Cleanup {
    /// Waits for the removal to finish.
    pub async fn wait(self) -> Result<(), RunError> {
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(RunError::CleanupAborted {
                detail: join_error.to_string(),
            }),
        }
    }
}

/// Runs `request` in a hardened container: [`prepare`] then [`PreparedRun::start`].
pub async fn run(engine: &Engine, request: RunRequest) -> Result<RunOutcome, RunError> {
    prepare(engine, request).await?.start().await
}

/// Prepares `request`; see the module documentation. On error everything
/// created so far is removed.
pub async fn prepare(engine: &Engine, request: RunRequest) -> Result<PreparedRun, RunError> {
    let uploads = file_uploads(&request.files)?;
    let volumes = WritableVolumes::for_jail(&request.jail_id);
    let mut resources = Resources::new(engine);
    match prepare_in(engine, &request, &volumes, &uploads, &mut resources).await {
        Ok((container_id, keeper_id, before)) => Ok(PreparedRun {
            engine: engine.clone(),
            request,
            container_id,
            keeper_id,
            volumes,
            before,
            resources,
        }),
        Err(error) => {
            if let Err(remove_error) = resources.remove_now().await {
                tracing::warn!(jail_id = %request.jail_id, error = %remove_error, "removing a jail run that failed to prepare failed");
            }
            Err(error)
        }
    }
}

async fn prepare_in(
    engine: &Engine,
    request: &RunRequest,
    volumes: &WritableVolumes,
    uploads: &[(&'static str, Vec<u8>)],
    resources: &mut Resources,
) -> Result<(String, String, Snapshot), RunError> {
    let docker = engine.docker();
    let nonce = run_nonce();
    let volume_requests: Vec<(String, VolumeCreateRequest)> = volumes
        .dirs()
        .iter()
        .map(|(_, name, mode)| {
            let request = volume_request(
                name,
                &request.jail_id,
                request.scope.as_ref(),
                &nonce,
                request.limits.tmpfs_bytes,
                mode,
            );
            ((*name).to_owned(), request)
        })
        .collect();

    // Both volumes at once.
    let created =
        futures::future::join_all(volume_requests.iter().map(|(name, volume)| async move {
            (name, docker.create_volume(volume.clone()).await)
        }))
        .await;
    let mut first_error = None;
    for (name, result) in created {
        match result {
            Ok(volume) => {
                if volume.labels.get(RUN_LABEL) != Some(&nonce) {
                    // Not ours: never remove it.
                    first_error.get_or_insert(RunError::VolumeTaken {
                        volume: name.clone(),
                    });
                } else {
                    resources.volumes.push(name.clone());
                }
            }
            Err(source) => {
                first_error.get_or_insert(RunError::CreateVolume {
                    volume: name.clone(),
                    source,
                });
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }

    // The keeper and the jail container at once, with the volume read-back.
    let keeper_image = request.keeper_image.as_deref().unwrap_or(&request.image);
    let keeper_config = keeper_config(
        &request.jail_id,
        request.scope.as_ref(),
        keeper_image,
        volumes,
    );
    let config = request.container_config(volumes);
    let (keeper, jail, inspected_volumes) = tokio::join!(
        docker.create_container(None, keeper_config.clone()),
        docker.create_container(None, config.clone()),
        futures::future::join_all(
            volume_requests
                .iter()
                .map(|(name, _)| docker.inspect_volume(name))
        ),
    );
    let keeper = keeper.map(|created| {
        resources.containers.push(created.id.clone());
        created.id
    });
    let jail = jail.map(|created| {
        resources.containers.push(created.id.clone());
        created.id
    });
    let keeper_id = keeper.map_err(|source| RunError::Keeper {
        step: "creating",
        jail_id: request.jail_id.clone(),
        source,
    })?;
    let container_id = jail.map_err(|source| RunError::Create {
        image: request.image.clone(),
        source,
    })?;
    for ((name, requested), inspected) in volume_requests.iter().zip(inspected_volumes) {
        let inspected = inspected.map_err(|source| RunError::InspectVolume {
            volume: name.clone(),
            source,
        })?;
        verify_volume(requested, &inspected).map_err(|mismatches| RunError::VolumeNotApplied {
            volume: name.clone(),
            mismatches,
        })?;
    }

    // Both verified before the keeper starts: the engine would copy the image's
    // content into the volumes at the first start without NoCopy.
    let (inspected, keeper_inspected) = tokio::join!(
        docker.inspect_container(&container_id, None),
        docker.inspect_container(&keeper_id, None),
    );
    let inspected = inspected.map_err(|source| RunError::Inspect {
        container_id: container_id.clone(),
        source,
    })?;
    verify_applied(&config, &inspected)
        .map_err(|mismatches| RunError::LimitsNotApplied { mismatches })?;
    let keeper_inspected = keeper_inspected.map_err(|source| RunError::Inspect {
        container_id: keeper_id.clone(),
        source,
    })?;
    verify_applied(&keeper_config, &keeper_inspected)
        .map_err(|mismatches| RunError::KeeperNotApplied { mismatches })?;
    docker
        .start_container(&keeper_id, None)
        .await
        .map_err(|source| RunError::Keeper {
            step: "starting",
            jail_id: request.jail_id.clone(),
            source,
        })?;

    for (dir, tar) in uploads {
        let options = UploadToContainerOptionsBuilder::new().path(dir).build();
        docker
            .upload_to_container(
                &keeper_id,
                Some(options),
                bollard::body_full(tar.clone().into()),
            )
            .await
            .map_err(|source| RunError::Upload { dir, source })?;
    }
    Ok((
        container_id,
        keeper_id,
        expected_before(request.files.as_slice()),
    ))
}

/// The tar to upload into each writable dir holding injected files: the
/// missing parent directories (0755) and the files with their modes.
fn file_uploads(files: &[InjectedFile]) -> Result<Vec<(&'static str, Vec<u8>)>, RunError> {
    let mut by_root: BTreeMap<&'static str, Vec<(String, &InjectedFile)>> = BTreeMap::new();
    for file in files {
        let invalid = |detail| RunError::File {
            path: file.path.clone(),
            detail,
        };
        let (root, relative) = [WORKSPACE_DIR, TMP_DIR]
            .iter()
            .find_map(|root| {
                file.path
                    .strip_prefix(root)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .map(|rest| (*root, rest))
            })
            .ok_or_else(|| invalid("must be under /workspace/ or /tmp/"))?;
        if relative
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(
                "must not contain empty, \".\" or \"..\" components",
            ));
        }
        if file.mode > 0o7777 {
            return Err(invalid("mode must be at most 0o7777"));
        }
        by_root
            .entry(root)
            .or_default()
            .push((relative.to_owned(), file));
    }
    let mut uploads = Vec::new();
    for (root, files) in by_root {
        let mut dirs = BTreeSet::new();
        for (relative, _) in &files {
            let mut parent = relative.as_str();
            while let Some((dir, _)) = parent.rsplit_once('/') {
                dirs.insert(dir.to_owned());
                parent = dir;
            }
        }
        let tar_error = |_: std::io::Error| RunError::File {
            path: root.to_owned(),
            detail: "cannot be packed into a tar (path too long?)",
        };
        let mut builder = tar::Builder::new(Vec::new());
        for dir in &dirs {
            let mut header = upload_header(tar::EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut header, dir, std::io::empty())
                .map_err(tar_error)?;
        }
        for (relative, file) in &files {
            let mut header = upload_header(
                tar::EntryType::Regular,
                file.mode,
                file.content.len() as u64,
            );
            builder
                .append_data(&mut header, relative, file.content.as_slice())
                .map_err(tar_error)?;
        }
        uploads.push((root, builder.into_inner().map_err(tar_error)?));
    }
    Ok(uploads)
}

/// `/workspace` and `/tmp` right before the start, computed rather than read:
/// both volumes were created by this run (their `amai.run` nonce is ours), so
/// each is a fresh, empty tmpfs whose root has the `mode=` of its verified
/// options; nothing was copied in (`NoCopy` verified on the keeper and the
/// jail before the keeper's first start); and the only writes were the
/// uploads of [`file_uploads`], which the engine extracts with the tar's modes.
/// The test `the_computed_before_snapshot_is_what_the_archive_shows` checks
/// this against the archive API.
fn expected_before(files: &[InjectedFile]) -> Snapshot {
    let mut before = Snapshot::new();
    let dir = |mode| FsEntry {
        kind: EntryKind::Dir,
        mode,
        size: 0,
        sha256: None,
        link_target: None,
    };
    before.insert(WORKSPACE_DIR, dir(0o755), None);
    before.insert(TMP_DIR, dir(0o1777), None);
    for file in files {
        let mut parent = file.path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if up == WORKSPACE_DIR || up == TMP_DIR || up.is_empty() {
                break;
            }
            before.insert(up, dir(0o755), None);
            parent = up;
        }
        let entry = FsEntry {
            kind: EntryKind::File,
            mode: file.mode,
            size: file.content.len() as u64,
            sha256: Some(Sha256::digest(&file.content).into()),
            link_target: None,
        };
        before.insert(file.path.clone(), entry, None);
    }
    before
}

fn upload_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(65534);
    header.set_gid(65534);
    header.set_mtime(0);
    header.set_size(size);
    header
}

/// `/workspace` and `/tmp` of the keeper, read through the archive API.
async fn snapshot(
    engine: &Engine,
    keeper_id: &str,
    keep_contents: bool,
) -> Result<Snapshot, RunError> {
    let read = |dir: &'static str| async move {
        let options = DownloadFromContainerOptionsBuilder::new().path(dir).build();
        let mut stream = engine
            .docker()
            .download_from_container(keeper_id, Some(options));
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RunError::Download { dir, source })?;
            tar.extend_from_slice(&chunk);
        }
        Ok::<_, RunError>((dir, tar))
    };
    let (workspace, tmp) = tokio::join!(read(WORKSPACE_DIR), read(TMP_DIR));
    let tars = [workspace?, tmp?];
    let parsed = tokio::task::spawn_blocking(move || {
        let mut snapshot = Snapshot::new();
        for (dir, tar) in tars {
            snapshot
                .add_tar(tar.as_slice(), keep_contents)
                .map_err(|source| RunError::Snapshot { dir, source })?;
        }
        Ok(snapshot)
    })
    .await;
    match parsed {
        Ok(result) => result,
        Err(join_error) => Err(RunError::Snapshot {
            dir: WORKSPACE_DIR,
            source: SnapshotError::Tar(std::io::Error::other(join_error)),
        }),
    }
}

/// The containers and volumes of one run, removed by [`Resources::remove_now`]
/// or, if dropped first, by a task spawned on the current runtime.
#[derive(Debug)]
struct Resources {
    engine: Engine,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Resources {
    fn new(engine: &Engine) -> Self {
        Self {
            engine: engine.clone(),
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// Removes the containers (at once), then the volumes (at once).
    async fn remove_now(mut self) -> Result<(), RunError> {
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        remove_all(&self.engine, containers, volumes).await
    }
}

async fn remove_all(
    engine: &Engine,
    containers: Vec<String>,
    volumes: Vec<String>,
) -> Result<(), RunError> {
    let mut first_error = None;
    let removed =
        futures::future::join_all(containers.iter().map(|id| remove_container(engine, id))).await;
    for (id, result) in containers.iter().zip(removed) {
        if let Err(source) = result {
            first_error.get_or_insert(RunError::Remove {
                what: format!("container {id}"),
                source,
            });
        }
    }
    let removed =
        futures::future::join_all(volumes.iter().map(|name| remove_volume(engine, name))).await;
    for (name, result) in volumes.iter().zip(removed) {
        if let Err(source) = result {
            first_error.get_or_insert(RunError::Remove {
                what: format!("volume {name}"),
                source,
            });
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if self.containers.is_empty() && self.volumes.is_empty() {
            return;
        }
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                ?containers,
                ?volumes,
                "jail run dropped outside a runtime: left for remove_managed"
            );
            return;
        };
        let engine = self.engine.clone();
        runtime.spawn(async move {
            if let Err(error) = remove_all(&engine, containers, volumes).await {
                tracing::warn!(%error, "removing a dropped jail run failed");
            }
        });
    }
}

async fn run_prepared(
    engine: &Engine,
    container_id: &str,
    keeper_id: &str,
    limits: &JailLimits,
    before: &Snapshot,
    resources: &mut Resources,
) -> Result<RunOutcome, RunError> {
    let docker = engine.docker();
    // Attached before the start, so the stream carries every byte; asking
    // for the logs too (`logs=true`) replays what the log driver already
    // holds, which under load repeats output the stream also delivers (seen:
    // "same\nsame\n" from one `echo same`). `docker run` attaches the same way.
    let attach_options = AttachContainerOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(false)
        .build();
    let mut attached = docker
        .attach_container(container_id, Some(attach_options))
        .await
        .map_err(|source| RunError::Attach {
            container_id: container_id.to_owned(),
            source,
        })?;
    let follower = UsageFollower::start(engine, container_id);
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
    let usage = follower.finish();

    // The jail container is not needed once inspected: removed while the
    // keeper's directories are read.
    let inspect_and_remove = async {
        let finished = docker.inspect_container(container_id, None).await;
        let removed = match &finished {
            Ok(_) => Some(remove_container(engine, container_id).await),
            Err(_) => None,
        };
        (finished, removed)
    };
    let ((finished, removed), after) =
        tokio::join!(inspect_and_remove, snapshot(engine, keeper_id, true));
    let finished = finished.map_err(|source| RunError::Inspect {
        container_id: container_id.to_owned(),
        source,
    })?;
    match removed {
        Some(Ok(())) => resources.containers.retain(|id| id != container_id),
        Some(Err(source)) => {
            return Err(RunError::Remove {
                what: format!("container {container_id}"),
                source,
            })
        }
        None => {}
    }
    let diff = FsDiff::between(before, &after?);
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
        usage,
        diff,
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

/// Compares the hardening, limits, mounts and namespaces of `requested` with
/// what `inspected` shows the engine applied; every difference (including a
/// setting or mount that disappeared) is a [`LimitMismatch`].
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
        "HostConfig.IpcMode",
        show(&want.ipc_mode),
        show(&got.ipc_mode),
    );
    // Absent and empty both mean "the engine's default servers".
    check(
        "HostConfig.Dns",
        format!("{:?}", want.dns.clone().unwrap_or_default()),
        format!("{:?}", got.dns.clone().unwrap_or_default()),
    );
    // Absent and empty both mean "no tmpfs mounts".
    check(
        "HostConfig.Tmpfs",
        format!("{:?}", sorted(want.tmpfs.as_ref())),
        format!("{:?}", sorted(got.tmpfs.as_ref())),
    );
    check(
        "HostConfig.Mounts",
        format!("{:?}", mount_summary(want.mounts.as_deref())),
        format!("{:?}", mount_summary(got.mounts.as_deref())),
    );
    // What is really mounted: every requested volume, writable, at its target.
    let wanted_points: Vec<(String, String, bool)> = mount_summary(want.mounts.as_deref())
        .into_iter()
        .map(|(target, source, _, read_only, _)| (target, source, !read_only))
        .collect();
    check(
        "Mounts",
        format!("{wanted_points:?}"),
        format!("{:?}", mount_point_summary(inspected.mounts.as_deref())),
    );
    let applied_user = inspected.config.as_ref().and_then(|c| c.user.clone());
    check("Config.User", show(&requested.user), show(&applied_user));
    // Every requested label (amai.managed, amai.jail, amai.scope, ...) reads back
    // unchanged; the image may add labels of its own.
    let applied_labels = inspected.config.as_ref().and_then(|c| c.labels.as_ref());
    let wanted_labels = sorted(requested.labels.as_ref());
    let read_back: Vec<(String, String)> = wanted_labels
        .iter()
        .filter_map(|(key, _)| {
            applied_labels
                .and_then(|labels| labels.get(key))
                .map(|value| (key.clone(), value.clone()))
        })
        .collect();
    check(
        "Config.Labels",
        format!("{wanted_labels:?}"),
        format!("{read_back:?}"),
    );
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches)
    }
}

/// `(target, source, type, read-only, no-copy)` of each mount, sorted.
fn mount_summary(mounts: Option<&[Mount]>) -> Vec<(String, String, String, bool, bool)> {
    let mut summary: Vec<_> = mounts
        .unwrap_or_default()
        .iter()
        .map(|m| {
            (
                m.target.clone().unwrap_or_default(),
                m.source.clone().unwrap_or_default(),
                m.typ.map(|t| t.to_string()).unwrap_or_default(),
                m.read_only.unwrap_or(false),
                m.volume_options
                    .as_ref()
                    .and_then(|o| o.no_copy)
                    .unwrap_or(false),
            )
        })
        .collect();
    summary.sort();
    summary
}

/// `(destination, volume name, writable)` of each mount point, sorted.
fn mount_point_summary(points: Option<&[MountPoint]>) -> Vec<(String, String, bool)> {
    let mut summary: Vec<_> = points
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p.destination.clone().unwrap_or_default(),
                p.name.clone().unwrap_or_default(),
                p.rw.unwrap_or(false),
            )
        })
        .collect();
    summary.sort();
    summary
}

fn sorted(map: Option<&HashMap<String, String>>) -> Vec<(String, String)> {
    let mut entries: Vec<_> = map
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
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
            .container_config(&WritableVolumes::for_jail("jail-1"))
    }

    /// What an engine that applied everything shows.
    fn faithful(requested: &ContainerCreateBody) -> ContainerInspectResponse {
        let mounts = requested
            .host_config
            .as_ref()
            .and_then(|h| h.mounts.clone())
            .unwrap_or_default();
        ContainerInspectResponse {
            host_config: requested.host_config.clone(),
            mounts: Some(
                mounts
                    .iter()
                    .map(|m| MountPoint {
                        typ: Some("volume".to_owned()),
                        name: m.source.clone(),
                        destination: m.target.clone(),
                        rw: Some(true),
                        ..Default::default()
                    })
                    .collect(),
            ),
            config: Some(ContainerConfig {
                user: requested.user.clone(),
                labels: requested.labels.clone(),
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
        assert_eq!(host.ipc_mode.as_deref(), Some("none"));
        assert_eq!(host.tmpfs, None);
        assert_eq!(requested.network_disabled, Some(true));
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
    fn a_tmpfs_mount_appearing_is_caught_and_absent_means_empty() {
        assert_eq!(
            mismatched_fields(|h, _| {
                h.tmpfs = Some(HashMap::from([("/tmp".to_owned(), String::new())]));
            }),
            ["HostConfig.Tmpfs"]
        );
        assert!(mismatched_fields(|h, _| h.tmpfs = Some(HashMap::new())).is_empty());
    }

    #[test]
    fn a_dropped_or_changed_mount_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| {
                if let Some(mounts) = h.mounts.as_mut() {
                    mounts.retain(|m| m.target.as_deref() != Some("/workspace"));
                }
            }),
            ["HostConfig.Mounts"]
        );
        assert_eq!(
            mismatched_fields(|h, _| {
                for mount in h.mounts.iter_mut().flatten() {
                    mount.volume_options = None;
                }
            }),
            ["HostConfig.Mounts"]
        );
        assert_eq!(
            mismatched_fields(|h, _| {
                for mount in h.mounts.iter_mut().flatten() {
                    mount.read_only = Some(true);
                }
            }),
            ["HostConfig.Mounts"]
        );
    }

    #[test]
    fn a_mount_point_missing_or_read_only_is_caught() {
        let requested = requested();
        let mut inspected = faithful(&requested);
        if let Some(points) = inspected.mounts.as_mut() {
            points.pop();
        }
        let fields: Vec<_> = verify_applied(&requested, &inspected)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(fields, ["Mounts"]);
        let mut inspected = faithful(&requested);
        for point in inspected.mounts.iter_mut().flatten() {
            point.rw = Some(false);
        }
        assert!(verify_applied(&requested, &inspected).is_err());
    }

    #[test]
    fn another_ipc_mode_is_caught() {
        assert_eq!(
            mismatched_fields(|h, _| h.ipc_mode = Some("private".to_owned())),
            ["HostConfig.IpcMode"]
        );
        assert_eq!(
            mismatched_fields(|h, _| h.ipc_mode = None),
            ["HostConfig.IpcMode"]
        );
    }

    #[test]
    fn a_requested_network_and_dns_are_configured_and_checked() {
        let request = RunRequest::new("jail-1", "img", ["true"])
            .network("amai-jail-net")
            .dns(vec!["10.0.0.2".to_owned()]);
        let requested = request.container_config(&WritableVolumes::for_jail("jail-1"));
        let host = requested.host_config.clone().unwrap_or_default();
        assert_eq!(host.network_mode.as_deref(), Some("amai-jail-net"));
        assert_eq!(host.dns, Some(vec!["10.0.0.2".to_owned()]));
        assert_eq!(requested.network_disabled, Some(false));
        let mut inspected = faithful(&requested);
        assert_eq!(verify_applied(&requested, &inspected), Ok(()));
        if let Some(h) = inspected.host_config.as_mut() {
            h.dns = Some(Vec::new());
            h.network_mode = Some("none".to_owned());
        }
        let fields: Vec<_> = verify_applied(&requested, &inspected)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|m| m.field)
            .collect();
        assert_eq!(fields, ["HostConfig.NetworkMode", "HostConfig.Dns"]);
    }

    #[test]
    fn injected_files_become_one_tar_per_dir_with_parents() {
        let files = vec![
            InjectedFile {
                path: "/workspace/a/b/c.txt".to_owned(),
                content: b"c".to_vec(),
                mode: 0o640,
            },
            InjectedFile {
                path: "/tmp/t".to_owned(),
                content: b"t".to_vec(),
                mode: 0o4755,
            },
        ];
        let uploads = file_uploads(&files).expect("valid files");
        let dirs: Vec<&str> = uploads.iter().map(|(dir, _)| *dir).collect();
        assert_eq!(dirs, ["/tmp", "/workspace"]);
        let mut archive = tar::Archive::new(uploads[1].1.as_slice());
        let entries: Vec<(String, u32, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let path = e.path().expect("path").to_string_lossy().into_owned();
                (
                    path,
                    e.header().mode().expect("mode"),
                    e.header().uid().expect("uid"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("a".to_owned(), 0o755, 65534),
                ("a/b".to_owned(), 0o755, 65534),
                ("a/b/c.txt".to_owned(), 0o640, 65534),
            ]
        );
    }

    #[test]
    fn injected_files_outside_the_writable_dirs_are_refused() {
        for path in [
            "/etc/passwd",
            "/workspace",
            "/workspace/../etc/x",
            "/tmpx/y",
            "/tmp//y",
        ] {
            let files = vec![InjectedFile {
                path: path.to_owned(),
                content: Vec::new(),
                mode: 0o644,
            }];
            assert!(
                matches!(file_uploads(&files), Err(RunError::File { .. })),
                "{path} accepted"
            );
        }
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

    fn scoped(scope: &str) -> ContainerCreateBody {
        let scope = Scope::new(scope).expect("valid scope");
        RunRequest::new("jail-1", "amai/busybox:0123456789ab", ["true"])
            .scope(scope)
            .container_config(&WritableVolumes::for_jail("jail-1"))
    }

    #[test]
    fn a_scoped_request_labels_its_container_with_the_scope() {
        let labels = scoped("dep-a").labels.unwrap_or_default();
        assert_eq!(labels.get("amai.scope").map(String::as_str), Some("dep-a"));
        assert_eq!(labels.get("amai.jail").map(String::as_str), Some("jail-1"));
        assert_eq!(labels.get("amai.managed").map(String::as_str), Some("true"));
        // Unscoped: no scope label at all.
        assert_eq!(
            requested().labels.unwrap_or_default().get("amai.scope"),
            None
        );
    }

    #[test]
    fn a_scope_label_dropped_or_changed_is_caught_and_image_labels_are_not() {
        let requested = scoped("dep-a");
        let mut inspected = faithful(&requested);
        let config = inspected.config.get_or_insert_with(Default::default);
        let labels = config.labels.get_or_insert_with(Default::default);
        labels.insert("org.example.from-image".to_owned(), "x".to_owned());
        assert_eq!(verify_applied(&requested, &inspected), Ok(()));

        for change in [Some("dep-b"), None] {
            let mut inspected = faithful(&requested);
            let config = inspected.config.get_or_insert_with(Default::default);
            let labels = config.labels.get_or_insert_with(Default::default);
            match change {
                Some(other) => labels.insert("amai.scope".to_owned(), other.to_owned()),
                None => labels.remove("amai.scope"),
            };
            let fields: Vec<_> = verify_applied(&requested, &inspected)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|m| m.field)
                .collect();
            assert_eq!(fields, ["Config.Labels"], "{change:?}");
        }
    }
}
