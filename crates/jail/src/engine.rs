//! The connection to the Docker Engine and its preflight: an [`Engine`] exists only
//! once the engine has answered, told its version, and shown that it can enforce
//! memory (with swap), pids and CPU limits. Anything else fails closed with an
//! error saying what is missing and what to do.

use bollard::models::SystemInfo;
use bollard::Docker;

/// Where bollard connects when `DOCKER_HOST` is not set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// A Docker Engine that answered the preflight.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
    version: EngineVersion,
}

/// What the engine said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVersion {
    /// The engine's release, e.g. `20.10.24+dfsg1`.
    pub server_version: String,
    /// The highest API version the engine speaks, e.g. `1.41`.
    pub api_version: String,
    /// The API version bollard negotiated and uses.
    pub negotiated_api_version: String,
    /// The cgroup version the engine runs with (`1` or `2`).
    pub cgroup_version: String,
}

/// Why [`Engine::connect`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No Docker Engine answers at the configured address.
    #[error("no Docker Engine answers on {host}: run scripts/ensure-deps.sh docker and start the engine (dockerd), or set DOCKER_HOST: {source}")]
    NoEngine {
        /// The address tried (`DOCKER_HOST` or the default socket).
        host: String,
        /// What bollard reported.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine answered but did not say which version it runs.
    #[error(
        "the Docker Engine on {host} does not report its {what}: cannot know which API it speaks"
    )]
    VersionUnknown {
        /// The address tried.
        host: String,
        /// The missing field.
        what: &'static str,
    },
    /// The engine cannot enforce some of the limits a jail needs.
    #[error("the Docker Engine on {host} cannot enforce {}: {hint}", missing.join(", "))]
    MissingControllers {
        /// The address tried.
        host: String,
        /// The `docker info` capabilities that are absent or false.
        missing: Vec<&'static str>,
        /// What to do about it.
        hint: &'static str,
    },
}

impl Engine {
    /// Connects with bollard's local defaults (`DOCKER_HOST` or the local socket),
    /// negotiates the API version and runs the preflight.
    pub async fn connect() -> Result<Self, ConnectError> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_owned());
        let no_engine = |source| ConnectError::NoEngine {
            host: host.clone(),
            source,
        };
        let docker = Docker::connect_with_local_defaults().map_err(no_engine)?;
        let docker = docker.negotiate_version().await.map_err(no_engine)?;
        let version = docker.version().await.map_err(no_engine)?;
        let info = docker.info().await.map_err(no_engine)?;

        let server_version = version.version.ok_or(ConnectError::VersionUnknown {
            host: host.clone(),
            what: "server version",
        })?;
        let api_version = version.api_version.ok_or(ConnectError::VersionUnknown {
            host: host.clone(),
            what: "API version",
        })?;

        let missing = missing_capabilities(&info);
        if !missing.is_empty() {
            return Err(ConnectError::MissingControllers {
                host,
                missing,
                hint: "enable the memory, pids and cpu cgroup controllers for dockerd (cgroup v1: boot with cgroup_enable=memory swapaccount=1; cgroup v2: delegate memory pids cpu to dockerd's cgroup), then restart dockerd",
            });
        }

        let cgroup_version = info
            .cgroup_version
            .map(|v| v.to_string())
            .unwrap_or_default();
        let negotiated_api_version = docker.client_version().to_string();
        Ok(Self {
            docker,
            version: EngineVersion {
                server_version,
                api_version,
                negotiated_api_version,
                cgroup_version,
            },
        })
    }

    /// The bollard client, for the other modules of this crate.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// What the engine said about itself during the preflight.
    pub fn version(&self) -> &EngineVersion {
        &self.version
    }
}

/// The `docker info` capabilities a jail needs that `info` does not report as
/// present (absent counts as missing: fail closed).
pub fn missing_capabilities(info: &SystemInfo) -> Vec<&'static str> {
    let capabilities = [
        ("MemoryLimit (memory cgroup)", info.memory_limit),
        (
            "SwapLimit (memory.memsw, needed for memory_swap = memory)",
            info.swap_limit,
        ),
        ("PidsLimit (pids cgroup)", info.pids_limit),
        (
            "CpuCfsQuota (cpu cgroup, needed for nano_cpus)",
            info.cpu_cfs_quota,
        ),
        (
            "CpuCfsPeriod (cpu cgroup, needed for nano_cpus)",
            info.cpu_cfs_period,
        ),
    ];
    capabilities
        .iter()
        .filter(|(_, present)| *present != Some(true))
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capable() -> SystemInfo {
        SystemInfo {
            memory_limit: Some(true),
            swap_limit: Some(true),
            pids_limit: Some(true),
            cpu_cfs_quota: Some(true),
            cpu_cfs_period: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn a_capable_engine_misses_nothing() {
        assert!(missing_capabilities(&capable()).is_empty());
    }

    #[test]
    fn false_and_absent_capabilities_are_named() {
        let info = SystemInfo {
            pids_limit: Some(false),
            swap_limit: None,
            ..capable()
        };
        let missing = missing_capabilities(&info);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("SwapLimit"));
        assert!(missing[1].starts_with("PidsLimit"));
    }
}
