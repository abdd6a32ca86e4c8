//! Generates the gRPC client from the repository's `proto/` with protox (pure Rust), so the build
//! needs no `protoc` on the machine. Client only: this crate never serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("tableau_token_broker/v1/broker.proto");
    let fds = protox::compile([&proto], [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed={}", proto.display());
    Ok(())
}
