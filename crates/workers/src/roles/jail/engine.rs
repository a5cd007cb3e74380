//! The role's link to the Docker Engine: the connection made at preflight
//! (shared by the reactors), and the translation of `amai-jail` results into
//! the failure kinds jail events carry.

use std::sync::{Arc, OnceLock};

use amai_bus::proto::JailFailureKind;
use amai_jail::Engine;

/// The engine as the role's preflight connected it, and the scope labelling
/// everything the role creates on it (its deployment).
#[derive(Clone, Debug)]
pub struct Connected {
    /// The engine.
    pub engine: Engine,
    /// The deployment's scope.
    pub scope: amai_jail::Scope,
}

/// The engine, connected by the role's preflight; empty until then.
pub type EngineSlot = Arc<OnceLock<Connected>>;

/// Why something about a jail failed, as a `jail.run_failed` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind.
    pub kind: JailFailureKind,
    /// What happened and what to do.
    pub detail: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: JailFailureKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// The image id `name` resolves to on the engine: `busybox` is built on
/// demand (cheap, cached by its recipe), `python` must have been built
/// (`amai jail image build python`), any other name must be present. An
/// engine that does not answer is `ENGINE_UNAVAILABLE` (the caller retries).
pub async fn resolve_image(engine: &Engine, name: &str) -> Result<String, Failure> {
    use amai_jail::ResolveImageErrorKind as K;
    match amai_jail::resolve_image(engine, name).await {
        Ok(image) => Ok(image.image_id),
        Err(e) => {
            let kind = match e.kind() {
                K::Engine => JailFailureKind::EngineUnavailable,
                K::NotBuilt | K::Missing | K::Busybox | K::HostSuite => {
                    JailFailureKind::ImageMissing
                }
            };
            Err(Failure::new(kind, e.to_string()))
        }
    }
}

/// The failure kind of a run error.
pub fn run_failure(error: &amai_jail::RunError) -> Failure {
    use amai_jail::RunError as E;
    let kind = match error {
        E::LimitsNotApplied { .. } | E::KeeperNotApplied { .. } | E::VolumeNotApplied { .. } => {
            JailFailureKind::LimitDropped
        }
        E::Create { source, .. } if is_missing_image(source) => JailFailureKind::ImageMissing,
        E::File { .. } => JailFailureKind::InvalidSpec,
        E::Output { .. }
        | E::Kill { .. }
        | E::Wait { .. }
        | E::Remove { .. }
        | E::Download { .. }
        | E::Snapshot { .. } => JailFailureKind::Collection,
        _ => JailFailureKind::Internal,
    };
    Failure::new(kind, error.to_string())
}

fn is_missing_image(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
