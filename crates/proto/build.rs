//! Compiles `proto/amai/v1/*.proto` with protox (pure Rust, no system `protoc`)
//! and generates prost messages plus tonic clients and servers. The encoded file
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
        "amai/v1/gateway.proto",
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
    // Undecodable messages are INVALID_ARGUMENT, not tonic's INTERNAL.
    tonic_prost_build::configure()
        .codec_path("crate::codec::AmaiCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
