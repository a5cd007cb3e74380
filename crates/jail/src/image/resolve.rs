//! From the image name a jail spec gives to an image the engine has, and the list
//! of the images Amai built.
//!
//! - `busybox`: the busybox image of the current recipe, built on demand (seconds);
//! - `python`: the python image of the current recipe, which must have been built
//!   beforehand (`amai jail image build python`): resolving never spends the
//!   minutes a build takes;
//! - any other name: an image the engine already has (there is no registry to pull
//!   from).

use std::collections::HashMap;

use bollard::query_parameters::ListImagesOptionsBuilder;

use super::python::{HostSuiteError, PythonRecipe, PYTHON_REPOSITORY};
use super::{build_busybox, BuildImageError, BUSYBOX_REPOSITORY};
use crate::engine::Engine;

/// The name that resolves to the busybox image.
pub const BUSYBOX_NAME: &str = "busybox";
/// The name that resolves to the python image.
pub const PYTHON_NAME: &str = "python";

/// An image the engine has, ready for a [`crate::RunRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The reference to run (`amai/python:0123456789ab`, or the name given).
    pub reference: String,
    /// The engine's image id (`sha256:…`).
    pub image_id: String,
}

/// Why [`resolve_image`] found no image.
#[derive(Debug, thiserror::Error)]
pub enum ResolveImageError {
    /// The python image of the current recipe has not been built.
    #[error("the python jail image {reference} is not built: run `amai jail image build python` (as root; it takes a few minutes)")]
    NotBuilt {
        /// The reference of the current recipe.
        reference: String,
    },
    /// The engine has no image of that name.
    #[error("the Docker Engine has no image {name:?} and there is no registry to pull it from: build it locally or `docker load` it (Amai's own images are `busybox` and `python`)")]
    Missing {
        /// The name asked for.
        name: String,
    },
    /// Building the busybox image failed.
    #[error("the busybox jail image could not be built: {0}")]
    Busybox(#[source] BuildImageError),
    /// The python recipe could not be determined on this host.
    #[error(transparent)]
    HostSuite(#[from] HostSuiteError),
    /// The engine did not answer the image inspection.
    #[error("inspecting image {reference} failed: {source}; check that the Docker Engine answers (docker info) and retry")]
    Inspect {
        /// The reference inspected.
        reference: String,
        /// What the engine said.
        #[source]
        source: bollard::errors::Error,
    },
}

/// What kind of failure a [`ResolveImageError`] is, to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveImageErrorKind {
    /// [`ResolveImageError::NotBuilt`].
    NotBuilt,
    /// [`ResolveImageError::Missing`].
    Missing,
    /// [`ResolveImageError::Busybox`].
    Busybox,
    /// [`ResolveImageError::HostSuite`].
    HostSuite,
    /// [`ResolveImageError::Inspect`].
    Engine,
}

impl ResolveImageError {
    /// The kind of failure.
    pub fn kind(&self) -> ResolveImageErrorKind {
        match self {
            Self::NotBuilt { .. } => ResolveImageErrorKind::NotBuilt,
            Self::Missing { .. } => ResolveImageErrorKind::Missing,
            Self::Busybox(_) => ResolveImageErrorKind::Busybox,
            Self::HostSuite(_) => ResolveImageErrorKind::HostSuite,
            Self::Inspect { .. } => ResolveImageErrorKind::Engine,
        }
    }

    /// Whether retrying unchanged may succeed (only engine trouble; the other
    /// kinds need an image built or loaded first).
    pub fn is_retryable(&self) -> bool {
        self.kind() == ResolveImageErrorKind::Engine
    }
}

/// Resolves `name` with the host's python recipe; see the module documentation.
pub async fn resolve_image(
    engine: &Engine,
    name: &str,
) -> Result<ResolvedImage, ResolveImageError> {
    match name {
        PYTHON_NAME => resolve_python(engine, &PythonRecipe::for_host()?).await,
        _ => resolve_other(engine, name).await,
    }
}

/// Resolves `name`, taking `python` to be the image of `python_recipe` (for a
/// recipe other than the host's, e.g. in tests).
pub async fn resolve_image_with(
    engine: &Engine,
    name: &str,
    python_recipe: &PythonRecipe,
) -> Result<ResolvedImage, ResolveImageError> {
    match name {
        PYTHON_NAME => resolve_python(engine, python_recipe).await,
        _ => resolve_other(engine, name).await,
    }
}

/// The python image of `recipe`, never built here.
async fn resolve_python(
    engine: &Engine,
    recipe: &PythonRecipe,
) -> Result<ResolvedImage, ResolveImageError> {
    let reference = recipe.reference();
    match inspect_id(engine, &reference).await? {
        Some(image_id) => Ok(ResolvedImage {
            reference,
            image_id,
        }),
        None => Err(ResolveImageError::NotBuilt { reference }),
    }
}

/// `busybox` (built on demand) or an image the engine already has.
async fn resolve_other(engine: &Engine, name: &str) -> Result<ResolvedImage, ResolveImageError> {
    if name == BUSYBOX_NAME {
        let image = build_busybox(engine)
            .await
            .map_err(ResolveImageError::Busybox)?;
        return Ok(ResolvedImage {
            reference: image.reference,
            image_id: image.image_id,
        });
    }
    let missing = || ResolveImageError::Missing {
        name: name.to_owned(),
    };
    if name.trim().is_empty() {
        return Err(missing());
    }
    match inspect_id(engine, name).await? {
        Some(image_id) => Ok(ResolvedImage {
            reference: name.to_owned(),
            image_id,
        }),
        None => Err(missing()),
    }
}

async fn inspect_id(engine: &Engine, reference: &str) -> Result<Option<String>, ResolveImageError> {
    match engine.docker().inspect_image(reference).await {
        Ok(image) => Ok(Some(image.id.unwrap_or_default())),
        // 400: not a valid reference at all, which no image can carry either.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 400,
            ..
        }) => Ok(None),
        Err(source) => Err(ResolveImageError::Inspect {
            reference: reference.to_owned(),
            source,
        }),
    }
}

/// One of the images Amai built (repository `amai/busybox` or `amai/python`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmaiImage {
    /// The engine's image id (`sha256:…`).
    pub image_id: String,
    /// Its Amai tags (`amai/python:0123456789ab`), sorted.
    pub references: Vec<String>,
    /// Its size on the engine, in bytes.
    pub size_bytes: i64,
    /// When it was created (imported), seconds since the Unix epoch.
    pub created: i64,
}

/// Why [`list_images`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ListImagesError {
    /// The engine did not answer.
    #[error("listing the Docker Engine's images failed: {0}; check that the engine answers (docker info) and retry")]
    Engine(#[source] bollard::errors::Error),
}

/// The images Amai built, newest first.
pub async fn list_images(engine: &Engine) -> Result<Vec<AmaiImage>, ListImagesError> {
    let filters = HashMap::from([(
        "reference".to_owned(),
        vec![
            format!("{BUSYBOX_REPOSITORY}:*"),
            format!("{PYTHON_REPOSITORY}:*"),
        ],
    )]);
    let summaries = engine
        .docker()
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(ListImagesError::Engine)?;
    let mut images: Vec<AmaiImage> = summaries
        .into_iter()
        .filter_map(|summary| {
            let mut references: Vec<String> = summary
                .repo_tags
                .into_iter()
                .filter(|tag| is_amai_reference(tag))
                .collect();
            references.sort();
            (!references.is_empty()).then_some(AmaiImage {
                image_id: summary.id,
                references,
                size_bytes: summary.size,
                created: summary.created,
            })
        })
        .collect();
    images.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.references.cmp(&b.references))
    });
    Ok(images)
}

fn is_amai_reference(reference: &str) -> bool {
    [BUSYBOX_REPOSITORY, PYTHON_REPOSITORY].iter().any(|repo| {
        reference
            .strip_prefix(repo)
            .is_some_and(|rest| rest.starts_with(':'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_amai_repositories_are_listed() {
        assert!(is_amai_reference("amai/python:0123456789ab"));
        assert!(is_amai_reference("amai/busybox:0123456789ab"));
        assert!(!is_amai_reference("amai/pythonic:1"));
        assert!(!is_amai_reference("python:3"));
    }

    #[test]
    fn not_built_says_how_to_build() {
        let error = ResolveImageError::NotBuilt {
            reference: "amai/python:000000000000".to_owned(),
        };
        assert_eq!(error.kind(), ResolveImageErrorKind::NotBuilt);
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("amai jail image build python"));
    }
}
