//! Credentials from a running broker, in a few lines.
//!
//! Against the demo (`cargo run -- demo` at the repository root, in another terminal):
//!
//! ```sh
//! export TTB_ADDR=127.0.0.1:7443
//! export TTB_CA=.tableau-token-broker-demo/pki/ca.crt
//! export TTB_CERT=.tableau-token-broker-demo/renderer.crt
//! export TTB_KEY=.tableau-token-broker-demo/renderer.key
//! cargo run -p tableau-token-broker-client --example get
//! ```
//!
//! `TTB_SITE`, `TTB_USER` and `TTB_SCOPES` (comma-separated) choose what to ask for; they default
//! to the demo's renderer: site `finance`, user `svc-renderer`, scope `tableau:content:read`.

use std::process::ExitCode;
use std::time::SystemTime;

use tableau_token_broker_client::{Client, CredentialsRequest, Error, ExposeSecret};

const HELP: &str = "\
This example reads the broker's address and this caller's certificate files from the environment,
as the broker's CLI does. Against the demo (`cargo run -- demo` at the repository root):

  export TTB_ADDR=127.0.0.1:7443
  export TTB_CA=.tableau-token-broker-demo/pki/ca.crt
  export TTB_CERT=.tableau-token-broker-demo/renderer.crt
  export TTB_KEY=.tableau-token-broker-demo/renderer.key
  cargo run -p tableau-token-broker-client --example get";

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let client = match Client::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::FAILURE;
        }
    };
    let scopes = var("TTB_SCOPES", "tableau:content:read");
    let req = CredentialsRequest::new(var("TTB_SITE", "finance"), var("TTB_USER", "svc-renderer"))
        .scopes(scopes.split(',').map(str::trim).filter(|s| !s.is_empty()));
    match client.credentials(&req).await {
        Ok(c) => {
            let token: String = c.token.expose_secret().chars().take(4).collect();
            let left = c.remaining(SystemTime::now());
            println!("token        {token}… (never print it whole)");
            println!("site LUID    {}", c.site_luid);
            println!("user LUID    {}", c.user_luid);
            println!("REST base    {}", c.site_url());
            println!("scopes       {}", c.scopes.join(", "));
            println!("expires in   {} s", left.as_secs());
            ExitCode::SUCCESS
        }
        Err(e @ Error::Rpc { .. }) => {
            eprintln!("the broker refused: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}\n\nIs the broker running (`cargo run -- demo`)?");
            ExitCode::FAILURE
        }
    }
}
