//! Removing the containers Amai manages (label `amai.managed=true`), all of them or
//! one jail's: the orphan reconciliation after a crash. Networks come later.

use std::collections::HashMap;

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};

use crate::engine::Engine;
use crate::{JAIL_LABEL, MANAGED_LABEL};

/// The containers [`remove_managed`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedContainers {
    /// Their ids.
    pub container_ids: Vec<String>,
}

/// Why [`remove_managed`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// Listing the managed containers failed.
    #[error("listing containers labelled {MANAGED_LABEL}=true failed: {0}")]
    List(#[source] bollard::errors::Error),
    /// Removing one of them failed (the others were still attempted).
    #[error("removing managed container {container_id} failed: {source}")]
    Remove {
        /// The container that stayed.
        container_id: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// Force-removes every container labelled `amai.managed=true`, or only those of
/// `jail_id` (label `amai.jail=<jail_id>`) when given. Containers already gone are
/// not an error.
pub async fn remove_managed(
    engine: &Engine,
    jail_id: Option<&str>,
) -> Result<RemovedContainers, CleanupError> {
    let mut label_filters = vec![format!("{MANAGED_LABEL}=true")];
    if let Some(jail_id) = jail_id {
        label_filters.push(format!("{JAIL_LABEL}={jail_id}"));
    }
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
        other => other,
    }
}
