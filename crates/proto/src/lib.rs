//! Amai's wire types: the event envelope, domain payloads and the gateway's gRPC
//! services, generated from `proto/amai/v1` at build time.
#![allow(missing_docs, unreachable_pub, clippy::all)]

#[cfg(feature = "grpc")]
pub mod codec;
#[cfg(feature = "grpc")]
pub mod wire;

/// `amai.v1`: every message and service.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/amai.v1.rs"));
}

/// Encoded `FileDescriptorSet` of all Amai protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/amai_descriptor.bin"));

pub use prost;
pub use prost_types;
