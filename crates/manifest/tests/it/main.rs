//! Integration tests of amai-manifest, one binary.

mod card;
mod common;
mod jail;
mod manifest;
mod permission;
mod registry;
mod scan;
