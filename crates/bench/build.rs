//! Compiles the echo baseline's proto with protox (pure Rust), so the build needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/bench/v1/echo.proto"];
    tonic_prost_build::configure().compile_fds(protox::compile(protos, ["proto"])?)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
