//! # amai-workers
//!
//! The worker runtime and the worker roles. A role is (design contract §5):
//! (a) [`reactor`]s on shared durable pull consumers (all instances share the
//! work), (b) the role's projections, each instance keeping a full copy in its
//! own sled (`amai-projections`), (c) a [`query_service`] on NATS
//! request/reply in a queue group, answered from those projections, and
//! (d) optional extra listeners (an HTTP API).
//!
//! Roles are declared ([`role::Role`]), registered ([`roles::registry`]) and run
//! by one runtime ([`runtime::RoleRuntime`]); the binary iterates over the
//! registry and has no per-role code; [`deploy`] holds the wiring they share
//! (NATS connection, streams and store, service identities).
//!
//! Roles: [`roles::identity`] (registration, keys, soulchain, messaging, and
//! the first reactor, trust initialisation).
//!
//! ## Features: heavy role dependencies
//!
//! Each role is a cargo feature of this crate (`identity` is on by default). A
//! role with heavy dependencies (the jail role's Docker client) makes them
//! optional and enables them from its feature only, e.g.
//! `jail = ["dep:bollard"]`, with `#[cfg(feature = "jail")]` on its module and
//! on its registry line. The `amai` binary forwards the feature
//! (`jail = ["amai-workers/jail"]`) and leaves it off by default, so only the
//! build that runs jails links the Docker client.
#![warn(missing_docs)]

pub mod as_of;
pub mod bootstrap;
pub mod deploy;
#[cfg(any(feature = "trust", feature = "audit"))]
mod duration;
mod inbox;
pub mod query_service;
pub mod reactor;
pub mod role;
pub mod roles;
pub mod runtime;
