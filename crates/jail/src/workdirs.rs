//! The writable directories of a jail, `/workspace` and `/tmp`: size-limited
//! tmpfs volumes held mounted by a keeper container, so their content can be
//! read after the jailed process ended.
//!
//! # Why volumes and a keeper
//!
//! A `HostConfig.Tmpfs` mount lives in the jail container's mount namespace: it
//! vanishes when the container stops, and the archive API cannot read it even
//! while it runs (it reads the container's root filesystem and its volumes, not
//! its tmpfs mounts). Writing through the root filesystem instead would need a
//! writable root (no size limit on the `fuse-overlayfs` storage driver this
//! engine runs) and would mix the diff with everything else.
//!
//! So each run gets two Docker volumes of the `local` driver with
//! `type=tmpfs, device=tmpfs, o=size=<bytes>,uid=65534,gid=65534,mode=<mode>,nosuid,nodev`
//! ([`volume_request`]): the engine mounts a fresh, size-limited tmpfs when the
//! first container using the volume starts and unmounts it when the last one
//! stops. A *keeper* container ([`keeper_config`]: `sleep`, as hardened as the
//! jail, label `amai.role=keeper`) mounts both volumes first and keeps running,
//! so the tmpfs stays mounted while the jail container runs and after it
//! stopped. Injected files are uploaded into the keeper before the start, and
//! the after snapshot is read from the keeper with the archive API, which the
//! engine serves for volumes of a running container (the before snapshot is
//! computed: fresh volumes plus the uploads, see [`crate::run`](mod@crate::run)). The worker
//! needs nothing beyond the Docker API: no host mounts, no privileges.
//!
//! The keeper runs the image given by [`RunRequest::keeper_image`]
//! (default: the jail's own image, so no second image is needed); it must
//! provide `sleep`, as the busybox image of [`crate::build_busybox`] does.
//!
//! [`RunRequest::keeper_image`]: crate::RunRequest::keeper_image
//!
//! Writes by the jailed process are charged to the jail container's memory
//! cgroup (tmpfs pages count as its page cache), so `memory` bounds them too.
//!
//! The volumes are named `amai-jail-<jail id>-workspace` and `-tmp` (characters
//! Docker refuses in volume names replaced by `_`), labelled `amai.managed=true`,
//! `amai.jail=<jail id>` and `amai.run=<nonce>`: the engine hands back an
//! existing volume of the same name instead of failing, so the nonce is how a
//! run notices a volume it did not create (a concurrent run of the same jail id
//! or a leftover: [`crate::remove_managed`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, Volume,
    VolumeCreateRequest,
};
use sha2::{Digest, Sha256};

use crate::run::{LimitMismatch, DROPPED_CAPABILITIES, JAIL_USER, NO_NEW_PRIVILEGES};
use crate::scope::Scope;
use crate::{JAIL_LABEL, MANAGED_LABEL, SCOPE_LABEL};

/// The jail's working directory volume is mounted here.
pub const WORKSPACE_DIR: &str = "/workspace";
/// The jail's temporary directory volume is mounted here.
pub const TMP_DIR: &str = "/tmp";
/// The label naming what an Amai container is for (`keeper` for keepers).
pub const ROLE_LABEL: &str = "amai.role";
/// The value of [`ROLE_LABEL`] on keeper containers.
pub const KEEPER_ROLE: &str = "keeper";
/// The label carrying the nonce of the run that created a volume.
pub const RUN_LABEL: &str = "amai.run";
/// The keeper's command: sleep for as long as `sleep` can.
pub const KEEPER_COMMAND: [&str; 2] = ["sleep", "2147483647"];
/// The keeper's memory limit. It only sleeps, but the engine's `runc init`
/// runs inside its cgroup while starting it: too tight a limit makes the
/// start fail under load ("cannot start a stopped process").
pub const KEEPER_MEMORY_BYTES: i64 = 64 * 1024 * 1024;
/// The keeper's pids limit (threads count: `runc init` starts several).
pub const KEEPER_PIDS: i64 = 32;
/// The keeper's CPU quota (a tenth of a CPU).
pub const KEEPER_NANO_CPUS: i64 = 100_000_000;

/// The two volumes of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableVolumes {
    /// The volume mounted on `/workspace`.
    pub workspace: String,
    /// The volume mounted on `/tmp`.
    pub tmp: String,
}

impl WritableVolumes {
    /// The volume names of `jail_id`.
    pub fn for_jail(jail_id: &str) -> Self {
        let name: String = jail_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            workspace: format!("amai-jail-{name}-workspace"),
            tmp: format!("amai-jail-{name}-tmp"),
        }
    }

    /// `(mount target, volume name, tmpfs mode)` of each volume.
    pub fn dirs(&self) -> [(&'static str, &str, &'static str); 2] {
        [
            (WORKSPACE_DIR, self.workspace.as_str(), "0755"),
            (TMP_DIR, self.tmp.as_str(), "1777"),
        ]
    }

    /// The volume mounts of a container using both (image content never copied
    /// into the volume: `NoCopy`).
    pub fn mounts(&self) -> Vec<Mount> {
        self.dirs()
            .iter()
            .map(|(target, volume, _)| Mount {
                target: Some((*target).to_owned()),
                source: Some((*volume).to_owned()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect()
    }
}

/// A fresh nonce for [`RUN_LABEL`]: 16 hex digits from the time, the process
/// and a counter (unique enough to tell two runs apart, not a secret).
pub fn run_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(nanos.to_be_bytes());
    hasher.update(std::process::id().to_be_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// The request creating one tmpfs volume of `disk_bytes` with `mode`, labelled
/// with `scope` when given.
pub fn volume_request(
    name: &str,
    jail_id: &str,
    scope: Option<&Scope>,
    nonce: &str,
    disk_bytes: u64,
    mode: &str,
) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: Some(name.to_owned()),
        driver: Some("local".to_owned()),
        driver_opts: Some(HashMap::from([
            ("type".to_owned(), "tmpfs".to_owned()),
            ("device".to_owned(), "tmpfs".to_owned()),
            (
                "o".to_owned(),
                format!("size={disk_bytes},uid=65534,gid=65534,mode={mode},nosuid,nodev"),
            ),
        ])),
        labels: Some(with_scope(
            HashMap::from([
                (MANAGED_LABEL.to_owned(), "true".to_owned()),
                (JAIL_LABEL.to_owned(), jail_id.to_owned()),
                (RUN_LABEL.to_owned(), nonce.to_owned()),
            ]),
            scope,
        )),
        ..Default::default()
    }
}

/// Compares a volume as `volume inspect` shows it with the request that created
/// it: driver, driver options and labels must read back unchanged.
pub fn verify_volume(
    requested: &VolumeCreateRequest,
    inspected: &Volume,
) -> Result<(), Vec<LimitMismatch>> {
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
    check(
        "Volume.Driver",
        requested.driver.clone().unwrap_or_default(),
        inspected.driver.clone(),
    );
    check(
        "Volume.Options",
        sorted_text(requested.driver_opts.as_ref()),
        sorted_text(Some(&inspected.options)),
    );
    check(
        "Volume.Labels",
        sorted_text(requested.labels.as_ref()),
        sorted_text(Some(&inspected.labels)),
    );
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches)
    }
}

/// `labels` plus [`SCOPE_LABEL`] when `scope` is given.
pub(crate) fn with_scope(
    mut labels: HashMap<String, String>,
    scope: Option<&Scope>,
) -> HashMap<String, String> {
    if let Some(scope) = scope {
        labels.insert(SCOPE_LABEL.to_owned(), scope.as_str().to_owned());
    }
    labels
}

fn sorted_text(map: Option<&HashMap<String, String>>) -> String {
    let mut entries: Vec<_> = map.into_iter().flatten().collect();
    entries.sort();
    format!("{entries:?}")
}

/// The keeper container of a run: mounts both volumes and sleeps, hardened like
/// the jail (nobody, no capabilities, no new privileges, read-only root, no
/// network, no IPC namespace sharing, small memory/pids/CPU limits), labelled
/// with `scope` when given.
pub fn keeper_config(
    jail_id: &str,
    scope: Option<&Scope>,
    image: &str,
    volumes: &WritableVolumes,
) -> ContainerCreateBody {
    let host_config = HostConfig {
        privileged: Some(false),
        cap_drop: Some(vec![DROPPED_CAPABILITIES.to_owned()]),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.to_owned()]),
        pids_limit: Some(KEEPER_PIDS),
        memory: Some(KEEPER_MEMORY_BYTES),
        memory_swap: Some(KEEPER_MEMORY_BYTES),
        nano_cpus: Some(KEEPER_NANO_CPUS),
        readonly_rootfs: Some(true),
        network_mode: Some("none".to_owned()),
        ipc_mode: Some("none".to_owned()),
        mounts: Some(volumes.mounts()),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(KEEPER_COMMAND.iter().map(|s| (*s).to_owned()).collect()),
        user: Some(JAIL_USER.to_owned()),
        labels: Some(with_scope(
            HashMap::from([
                (JAIL_LABEL.to_owned(), jail_id.to_owned()),
                (MANAGED_LABEL.to_owned(), "true".to_owned()),
                (ROLE_LABEL.to_owned(), KEEPER_ROLE.to_owned()),
            ]),
            scope,
        )),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        attach_stdin: Some(false),
        tty: Some(false),
        network_disabled: Some(true),
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faithful(requested: &VolumeCreateRequest) -> Volume {
        Volume {
            name: requested.name.clone().unwrap_or_default(),
            driver: requested.driver.clone().unwrap_or_default(),
            options: requested.driver_opts.clone().unwrap_or_default(),
            labels: requested.labels.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    fn requested() -> VolumeCreateRequest {
        volume_request("amai-jail-j-workspace", "j", None, "n", 1 << 20, "0755")
    }

    fn fields(result: Result<(), Vec<LimitMismatch>>) -> Vec<&'static str> {
        result
            .err()
            .unwrap_or_default()
            .iter()
            .map(|m| m.field)
            .collect()
    }

    #[test]
    fn volume_names_follow_docker_rules() {
        let volumes = WritableVolumes::for_jail("jail/1 é");
        assert_eq!(volumes.workspace, "amai-jail-jail_1__-workspace");
        assert_eq!(volumes.tmp, "amai-jail-jail_1__-tmp");
        let plain = WritableVolumes::for_jail("test-1.a_b");
        assert_eq!(plain.workspace, "amai-jail-test-1.a_b-workspace");
    }

    #[test]
    fn the_volume_request_is_a_limited_tmpfs() {
        let request = requested();
        let options = request.driver_opts.unwrap_or_default();
        assert_eq!(options.get("type").map(String::as_str), Some("tmpfs"));
        assert_eq!(options.get("device").map(String::as_str), Some("tmpfs"));
        assert_eq!(
            options.get("o").map(String::as_str),
            Some("size=1048576,uid=65534,gid=65534,mode=0755,nosuid,nodev")
        );
        let labels = request.labels.unwrap_or_default();
        assert_eq!(labels.get("amai.managed").map(String::as_str), Some("true"));
        assert_eq!(labels.get("amai.jail").map(String::as_str), Some("j"));
    }

    #[test]
    fn a_faithful_volume_passes() {
        let request = requested();
        assert_eq!(verify_volume(&request, &faithful(&request)), Ok(()));
    }

    #[test]
    fn a_dropped_volume_option_is_caught() {
        let request = requested();
        let mut volume = faithful(&request);
        volume
            .options
            .insert("o".to_owned(), "uid=65534,gid=65534,mode=0755".to_owned());
        assert_eq!(fields(verify_volume(&request, &volume)), ["Volume.Options"]);
        let mut volume = faithful(&request);
        volume.options.clear();
        assert_eq!(fields(verify_volume(&request, &volume)), ["Volume.Options"]);
    }

    #[test]
    fn another_driver_or_run_label_is_caught() {
        let request = requested();
        let mut volume = faithful(&request);
        volume.driver = "other".to_owned();
        volume
            .labels
            .insert(RUN_LABEL.to_owned(), "someone-else".to_owned());
        assert_eq!(
            fields(verify_volume(&request, &volume)),
            ["Volume.Driver", "Volume.Labels"]
        );
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(run_nonce(), run_nonce());
        assert_eq!(run_nonce().len(), 16);
    }

    #[test]
    fn the_keeper_is_hardened_and_mounts_both_volumes() {
        let volumes = WritableVolumes::for_jail("j");
        let config = keeper_config("j", None, "img", &volumes);
        let host = config.host_config.clone().unwrap_or_default();
        assert_eq!(config.user.as_deref(), Some(JAIL_USER));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        let mounts = host.mounts.unwrap_or_default();
        let targets: Vec<_> = mounts.iter().filter_map(|m| m.target.as_deref()).collect();
        assert_eq!(targets, ["/workspace", "/tmp"]);
        let labels = config.labels.unwrap_or_default();
        assert_eq!(
            labels.get(ROLE_LABEL).map(String::as_str),
            Some(KEEPER_ROLE)
        );
    }

    #[test]
    fn scoped_volumes_and_keepers_carry_the_scope_label() {
        let scope = Scope::new("dep-a").expect("valid scope");
        let request = volume_request("v", "j", Some(&scope), "n", 1 << 20, "0755");
        let labels = request.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("amai.scope").map(String::as_str), Some("dep-a"));
        assert_eq!(labels.get("amai.jail").map(String::as_str), Some("j"));
        // The scope is part of what verify_volume reads back.
        let mut inspected = faithful(&request);
        inspected.labels.remove("amai.scope");
        assert_eq!(
            fields(verify_volume(&request, &inspected)),
            ["Volume.Labels"]
        );

        let volumes = WritableVolumes::for_jail("j");
        let keeper = keeper_config("j", Some(&scope), "img", &volumes);
        let labels = keeper.labels.unwrap_or_default();
        assert_eq!(labels.get("amai.scope").map(String::as_str), Some("dep-a"));
        assert_eq!(
            labels.get(ROLE_LABEL).map(String::as_str),
            Some(KEEPER_ROLE)
        );

        let unscoped = volume_request("v", "j", None, "n", 1 << 20, "0755");
        assert_eq!(unscoped.labels.unwrap_or_default().get("amai.scope"), None);
    }
}
