//! Compiles `proto/` with protox (pure Rust), so the build needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/tableau_token_broker/v1/broker.proto",
        "proto/tableau_token_broker/admin/v1/admin.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection serves these descriptors; protox already has them, so write them directly.
    std::fs::write(
        out_dir.join("broker_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    git_revision();
    Ok(())
}

/// `TTB_GIT_REVISION` for the `build_info` metric: the commit being built, when this is a git
/// checkout with git installed (otherwise the metric says `unknown`). Rebuilt when HEAD moves.
fn git_revision() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let Some(rev) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=TTB_GIT_REVISION={rev}");
    let mut watched = vec!["HEAD".to_owned()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(r);
    }
    for w in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &w]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
