//! Amai's wire types: the event envelope, domain payloads and the gateway's gRPC
//! services, generated from `proto/amai/v1` at build time.
#![allow(missing_docs, unreachable_pub, clippy::all)]

pub mod codec;

/// `amai.v1`: every message and service.
pub mod v1 {
    tonic::include_proto!("amai.v1");
}

/// Encoded `FileDescriptorSet` of all Amai protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/amai_descriptor.bin"));

pub use prost;
pub use prost_types;
