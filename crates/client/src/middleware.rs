//! `reqwest-middleware` support (feature `reqwest-middleware`).

use http::Extensions;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::client::Client;
use crate::layer::{X_TABLEAU_AUTH, auth_header};
use crate::messages::CredentialsRequest;

/// A `reqwest_middleware::Middleware` that does what [`TableauAuthLayer`](crate::TableauAuthLayer)
/// does: adds `X-Tableau-Auth` with credentials for one request, and on a 401 invalidates the
/// token, takes new credentials and sends the request once more.
///
/// The retry needs a copy of the request: requests whose body cannot be cloned (a stream) are
/// sent once and their 401 returned as it is (the token is still reported, so the next request
/// gets a new one).
///
/// ```no_run
/// # async fn example(client: tableau_token_broker_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use tableau_token_broker_client::{CredentialsRequest, TableauAuthMiddleware};
///
/// let req = CredentialsRequest::new("finance", "svc-renderer").scopes(["tableau:content:read"]);
/// let creds = client.credentials(&req).await?;
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(TableauAuthMiddleware::new(client, req))
///     .build();
/// let workbooks = http.get(format!("{}/workbooks", creds.site_url())).send().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TableauAuthMiddleware {
    client: Client,
    request: CredentialsRequest,
}

impl TableauAuthMiddleware {
    /// Middleware that authenticates with credentials for `request`.
    pub fn new(client: Client, request: CredentialsRequest) -> Self {
        TableauAuthMiddleware { client, request }
    }
}

#[async_trait::async_trait]
impl Middleware for TableauAuthMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let creds = self
            .client
            .credentials(&self.request)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let retry = req.try_clone();
        req.headers_mut().insert(
            X_TABLEAU_AUTH,
            auth_header(&creds).map_err(reqwest_middleware::Error::middleware)?,
        );
        let answer = next.clone().run(req, extensions).await?;
        if answer.status() != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        self.client
            .report_refused(&creds)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(mut retry) = retry else {
            return Ok(answer);
        };
        drop(answer);
        let fresh = self
            .client
            .credentials(&self.request)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        retry.headers_mut().insert(
            X_TABLEAU_AUTH,
            auth_header(&fresh).map_err(reqwest_middleware::Error::middleware)?,
        );
        next.run(retry, extensions).await
    }
}
