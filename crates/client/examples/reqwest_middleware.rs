//! Lists the workbooks of the demo's `finance` site through `reqwest-middleware`, with
//! `X-Tableau-Auth` added (and a 401 recovered) by `TableauAuthMiddleware`.
//!
//! Needs the demo running and the `TTB_*` variables set as for the `get` example:
//!
//! ```sh
//! cargo run -p tableau-token-broker-client --features reqwest-middleware --example reqwest_middleware
//! ```

use std::process::ExitCode;

use tableau_token_broker_client::{Client, CredentialsRequest, TableauAuthMiddleware};

async fn run() -> Result<String, Box<dyn std::error::Error>> {
    let client = Client::from_env()?;
    let req = CredentialsRequest::new("finance", "svc-renderer").scopes(["tableau:content:read"]);
    let creds = client.credentials(&req).await?;
    let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(TableauAuthMiddleware::new(client, req))
        .build();
    let answer = http
        .get(format!("{}/workbooks", creds.site_url()))
        .header("Accept", "application/json")
        .send()
        .await?
        .error_for_status()?;
    Ok(answer.text().await?)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
