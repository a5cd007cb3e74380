//! Amai jails: run untrusted agent commands in hardened Docker containers.
//!
//! This crate owns the Docker layer (through bollard) and nothing else: no NATS.
//! - [`engine`]: connecting to the Docker Engine and failing closed when it cannot
//!   enforce the limits a jail needs;
//! - [`image`]: the locally built busybox image (there is no registry to pull from);
//! - [`limits`]: the resource limits of one run;
//! - [`workdirs`]: the size-limited tmpfs volumes of `/workspace` and `/tmp`,
//!   held by a keeper container so they can be read after the run;
//! - [`run`](mod@run): one hardened, limited, always-removed container run, in
//!   two steps ([`prepare`], [`PreparedRun::start`]);
//! - [`diff`]: snapshots of the writable dirs, their diff, its normalised tar and
//!   the diff policy check;
//! - [`usage`]: resource usage followed through the engine's stats;
//! - [`scope`]: the deployment a resource belongs to (label `amai.scope`);
//! - [`cleanup`]: removing the containers and volumes Amai manages, all of them,
//!   one jail's or one scope's (orphan reconciliation);
//! - [`net`]: the network of a jail with policy `llm-only` or `allow` (Docker
//!   network, host nft rules, LLM proxy forwarding, DNS, the network log).
#![warn(missing_docs)]

pub mod cleanup;
pub mod diff;
pub mod engine;
pub mod image;
pub mod limits;
pub mod net;
pub mod run;
pub mod scope;
pub mod usage;
pub mod workdirs;

pub use cleanup::{
    remove_managed, remove_scope, CleanupError, RemoveScopeError, RemovedContainers, RemovedScope,
};
pub use diff::{
    check_policy, Change, DiffEntry, EntryKind, FsDiff, FsEntry, PolicyViolation, Snapshot,
    SnapshotError,
};
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
    remove_orphan_networks, remove_orphan_networks_in_scope, CloseNetworkError, CreateNetworkError,
    JailNetwork, NetworkLog, NetworkLogEntry, NetworkPlan, OrphanError, RemovedNetworks,
};
pub use run::{
    prepare, run, verify_applied, Cleanup, LimitMismatch, PreparedRun, RunError, RunOutcome,
    RunRequest,
};
pub use scope::{InvalidScope, Scope};
pub use usage::Usage;
pub use workdirs::{verify_volume, WritableVolumes};

/// The label every container, volume and network Amai creates carries, with the value `true`.
pub const MANAGED_LABEL: &str = "amai.managed";
/// The label naming the jail a container belongs to.
pub const JAIL_LABEL: &str = "amai.jail";
/// The label naming the deployment (the [`Scope`]) a resource belongs to.
pub const SCOPE_LABEL: &str = "amai.scope";
