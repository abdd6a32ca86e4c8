//! `tableau-double`: the Tableau stand-in as a program, for tests in other languages, smoke tests
//! of a cluster without a Tableau, and people trying the broker by hand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A stand-in for Tableau's connected-app sign-in and REST API, over real HTTP(S).
///
/// The first line on stdout is `fake-tableau listening on http://ADDR` (https:// with [tls]), so a
/// script can start it on port 0 and read the address. Stops on SIGTERM or Ctrl-C.
#[derive(Debug, Parser)]
#[command(
    name = "tableau-double",
    version,
    after_help = "Example:\n  tableau-double --config examples/fake-tableau.toml --listen 127.0.0.1:0"
)]
struct Args {
    /// The double's configuration file (see examples/fake-tableau.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Address to listen on (overrides the file); port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tableau_double::run_from_file(&args.config, args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
