//! # amai-workers
//!
//! The worker runtime and the worker roles. A role is (design contract §5):
//! (a) a [`reactor`] on a shared durable pull consumer (all instances share the
//! work), (b) the role's projections, each instance keeping a full copy in its
//! own sled (`amai-projections`), and (c) a [`query_service`] on NATS
//! request/reply in a queue group, answered from those projections.
//!
//! Roles: [`identity`] (registration, keys, soulchain, messaging, and the first
//! reactor, [`trust_init`]).
#![warn(missing_docs)]

pub mod bootstrap;
pub mod identity;
mod inbox;
pub mod query_service;
pub mod reactor;
pub mod trust_init;
