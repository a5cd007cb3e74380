//! Removing what Amai manages (label `amai.managed=true`), all of it, one
//! jail's ([`remove_managed`]) or one deployment's ([`remove_scope`]): the orphan
//! reconciliation after a crash. Containers first (jail containers and the
//! keepers holding their volumes), then the volumes, then (for a scope) the
//! networks and their nft tables.
//!
//! On an engine shared by several deployments (or by parallel tests), each
//! labels what it creates with its [`Scope`] ([`crate::RunRequest::scope`],
//! [`crate::NetworkPlan::scope`]) and reconciles with [`remove_scope`] only:
//! `remove_managed(engine, None)` removes every deployment's jails.

use std::collections::HashMap;

use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};

use crate::engine::Engine;
use crate::net::{remove_orphan_networks_in_scope, OrphanError};
use crate::scope::Scope;
use crate::{JAIL_LABEL, MANAGED_LABEL, SCOPE_LABEL};

/// What [`remove_managed`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedContainers {
    /// The ids of the containers (jail containers and keepers).
    pub container_ids: Vec<String>,
    /// The names of the volumes.
    pub volume_names: Vec<String>,
}

/// Why [`remove_managed`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// Listing the managed containers failed.
    #[error("listing containers labelled {MANAGED_LABEL}=true failed: {0}")]
    List(#[source] bollard::errors::Error),
    /// Listing the managed volumes failed.
    #[error("listing volumes labelled {MANAGED_LABEL}=true failed: {0}")]
    ListVolumes(#[source] bollard::errors::Error),
    /// Removing one of the containers failed (the others were still attempted).
    #[error("removing managed container {container_id} failed: {source}")]
    Remove {
        /// The container that stayed.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Removing one of the volumes failed (the others were still attempted); a
    /// volume still mounted by a container not labelled as managed stays.
    #[error(
        "removing managed volume {volume} failed (is a container outside Amai using it?): {source}"
    )]
    RemoveVolume {
        /// The volume that stayed.
        volume: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Force-removes every container labelled `amai.managed=true`, then every such
/// volume, or only those of `jail_id` (label `amai.jail=<jail_id>`) when given,
/// whatever their scope. What is already gone is not an error.
pub async fn remove_managed(
    engine: &Engine,
    jail_id: Option<&str>,
) -> Result<RemovedContainers, CleanupError> {
    let mut label_filters = vec![format!("{MANAGED_LABEL}=true")];
    if let Some(jail_id) = jail_id {
        label_filters.push(format!("{JAIL_LABEL}={jail_id}"));
    }
    remove_labelled(engine, label_filters).await
}

/// What [`remove_scope`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedScope {
    /// The ids of the containers (jail containers and keepers).
    pub containers: Vec<String>,
    /// The names of the volumes.
    pub volumes: Vec<String>,
    /// The Docker networks.
    pub networks: Vec<String>,
    /// The nft tables.
    pub tables: Vec<String>,
}

/// Why [`remove_scope`] failed. Both steps were attempted; when both failed,
/// the containers' error is the one returned.
#[derive(Debug, thiserror::Error)]
pub enum RemoveScopeError {
    /// Listing or removing the scope's containers or volumes failed.
    #[error("removing the containers and volumes of scope {scope} failed: {source}")]
    Containers {
        /// The scope.
        scope: Scope,
        /// What failed.
        #[source]
        source: CleanupError,
    },
    /// Listing or removing the scope's networks or nft tables failed.
    #[error("removing the networks and nft tables of scope {scope} failed: {source}")]
    Networks {
        /// The scope.
        scope: Scope,
        /// What failed.
        #[source]
        source: OrphanError,
    },
}

/// Removes everything labelled `amai.managed=true` and `amai.scope=<scope>`:
/// force-removes the containers, then the volumes, then the Docker networks
/// (force-disconnecting what is still attached), then the nft tables whose
/// comment names `scope` and whose network is gone (see
/// [`remove_orphan_networks_in_scope`]). Resources without a scope or of
/// another scope stay. What is already gone is not an error. For the orphan
/// reconciliation of a deployment at start, when none of its jails is live.
pub async fn remove_scope(
    engine: &Engine,
    scope: &Scope,
) -> Result<RemovedScope, RemoveScopeError> {
    let label_filters = vec![
        format!("{MANAGED_LABEL}=true"),
        format!("{SCOPE_LABEL}={scope}"),
    ];
    // Containers first: no jail of the scope is running when its network goes.
    let containers = remove_labelled(engine, label_filters).await;
    let networks = remove_orphan_networks_in_scope(engine, scope, |_| false).await;
    match (containers, networks) {
        (Ok(containers), Ok(networks)) => Ok(RemovedScope {
            containers: containers.container_ids,
            volumes: containers.volume_names,
            networks: networks.networks,
            tables: networks.tables,
        }),
        (Err(source), _) => Err(RemoveScopeError::Containers {
            scope: scope.clone(),
            source,
        }),
        (Ok(_), Err(source)) => Err(RemoveScopeError::Networks {
            scope: scope.clone(),
            source,
        }),
    }
}

/// Force-removes the containers, then the volumes, carrying every label of
/// `label_filters` (`key=value`).
async fn remove_labelled(
    engine: &Engine,
    label_filters: Vec<String>,
) -> Result<RemovedContainers, CleanupError> {
    let filters = HashMap::from([("label".to_owned(), label_filters)]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let containers = engine
        .docker()
        .list_containers(Some(options))
        .await
        .map_err(CleanupError::List)?;

    let mut removed = RemovedContainers::default();
    let mut first_error = None;
    for container_id in containers.into_iter().filter_map(|c| c.id) {
        match remove_container(engine, &container_id).await {
            Ok(()) => removed.container_ids.push(container_id),
            Err(source) => {
                first_error.get_or_insert(CleanupError::Remove {
                    container_id,
                    source,
                });
            }
        }
    }

    let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
    let volumes = engine
        .docker()
        .list_volumes(Some(options))
        .await
        .map_err(CleanupError::ListVolumes)?;
    for volume in volumes.volumes.unwrap_or_default() {
        match remove_volume(engine, &volume.name).await {
            Ok(()) => removed.volume_names.push(volume.name),
            Err(source) => {
                first_error.get_or_insert(CleanupError::RemoveVolume {
                    volume: volume.name,
                    source,
                });
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(removed),
    }
}

/// Force-removes one container (and its anonymous volumes); a container already
/// gone counts as removed.
pub(crate) async fn remove_container(
    engine: &Engine,
    container_id: &str,
) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match engine
        .docker()
        .remove_container(container_id, Some(options))
        .await
    {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        // Another remover (a run's own cleanup) got there first: wait for it.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message,
        }) if message.contains("already in progress") => {
            for _ in 0..REMOVAL_POLLS {
                match engine.docker().inspect_container(container_id, None).await {
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Ok(()),
                    _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            })
        }
        other => other,
    }
}

/// How many times (100 ms apart) a removal in progress elsewhere is awaited.
const REMOVAL_POLLS: u32 = 300;

/// Removes one volume; a volume already gone counts as removed.
pub(crate) async fn remove_volume(
    engine: &Engine,
    name: &str,
) -> Result<(), bollard::errors::Error> {
    match engine
        .docker()
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        other => other,
    }
}
