//! Amai jails: run untrusted agent commands in hardened Docker containers.
//!
//! This crate owns the Docker layer (through bollard) and nothing else: no NATS.
//! - [`engine`]: connecting to the Docker Engine and failing closed when it cannot
//!   enforce the limits a jail needs;
//! - [`image`]: the locally built busybox image (there is no registry to pull from);
//! - [`limits`]: the resource limits of one run;
//! - [`run`](mod@run): one hardened, limited, always-removed container run;
//! - [`cleanup`]: removing the containers Amai manages (orphan reconciliation);
//! - [`net`]: the network of a jail with policy `llm-only` or `allow` (Docker
//!   network, host nft rules, LLM proxy forwarding, DNS, the network log).
#![warn(missing_docs)]

pub mod cleanup;
pub mod engine;
pub mod image;
pub mod limits;
pub mod net;
pub mod run;

pub use cleanup::{remove_managed, CleanupError, RemovedContainers};
pub use engine::{missing_capabilities, ConnectError, Engine, EngineVersion};
pub use image::python::{
    build_python, build_python_recipe, BuildPhase, BuildPythonError, BuildPythonErrorKind,
    HostSuiteError, PythonRecipe,
};
pub use image::resolve::{
    list_images, resolve_image, resolve_image_with, AmaiImage, ListImagesError, ResolveImageError,
    ResolveImageErrorKind, ResolvedImage,
};
pub use image::{build_busybox, BuildImageError, ImageRef};
pub use limits::{JailLimits, JailLimitsBuilder};
pub use net::{
    remove_orphan_networks, CloseNetworkError, CreateNetworkError, JailNetwork, NetworkLog,
    NetworkLogEntry, NetworkPlan, OrphanError, RemovedNetworks,
};
pub use run::{run, verify_applied, LimitMismatch, RunError, RunOutcome, RunRequest};

/// The label every container Amai creates carries, with the value `true`.
pub const MANAGED_LABEL: &str = "amai.managed";
/// The label naming the jail a container belongs to.
pub const JAIL_LABEL: &str = "amai.jail";
