//! The `tableau-token-broker` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keeps Tableau connected-app secrets in one place and hands out least-privilege credentials.
#[derive(Debug, Parser)]
#[command(name = "tableau-token-broker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a stand-in for Tableau's REST API (sign-in, sessions, scopes, faults) for tests.
    FakeTableau {
        /// The double's configuration (see examples/fake-tableau.toml).
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on, overriding the configuration; port 0 picks a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::FakeTableau { config, listen } => {
            tableau_token_broker::fake_tableau::run_from_file(&config, listen).await?;
        }
    }
    Ok(())
}
