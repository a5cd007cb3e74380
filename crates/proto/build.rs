//! Compiles `proto/amai/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates prost messages, plus tonic clients and servers with the `grpc`
//! feature (the pure domain crate links the messages only). The encoded file
//! descriptor set is written next to the code for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../proto")
        .canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());
    let files = [
        "amai/v1/envelope.proto",
        "amai/v1/identity.proto",
        "amai/v1/trust.proto",
        "amai/v1/system.proto",
        "amai/v1/llm.proto",
        "amai/v1/llm_service.proto",
        "amai/v1/jail.proto",
        "amai/v1/jail_service.proto",
        "amai/v1/gateway.proto",
        "amai/v1/trust_service.proto",
        "amai/v1/audit.proto",
        "amai/v1/audit_service.proto",
        "amai/v1/export.proto",
        "amai/v1/lifecycle.proto",
        "amai/v1/agent_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("amai_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Maps are BTreeMaps so that encoding is deterministic (sorted keys): events
    // must be canonically encoded for their hashes to have one meaning.
    // Undecodable messages are INVALID_ARGUMENT, not tonic's INTERNAL.
    let services = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .btree_map(".")
        .codec_path("crate::codec::AmaiCodec")
        .build_server(services)
        .build_client(services)
        .compile_fds(fds)?;
    Ok(())
}
