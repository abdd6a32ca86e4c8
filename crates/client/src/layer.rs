//! A `tower::Layer` that authenticates `http::Request`s to Tableau with the broker's credentials.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode};
use secrecy::ExposeSecret;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::client::Client;
use crate::error::Error;
use crate::messages::{Credentials, CredentialsRequest};

/// The header Tableau's REST API reads the credentials token from.
pub const X_TABLEAU_AUTH: &str = "x-tableau-auth";

/// Wraps an HTTP client service so that every request carries `X-Tableau-Auth` with credentials
/// for one [`CredentialsRequest`], from the [`Client`]'s cache.
///
/// When Tableau answers **401** (its session ended: a restart, a sign-out, a token past its
/// life), the layer reports the token to the broker ([`Client::invalidate`]; once per token, even
/// when many requests failed with it at the same time), takes new credentials and sends the
/// request **once** more; the second answer is returned whatever it is. A 401 caused by missing
/// scopes (Tableau's 401002) is retried the same way and comes back as it was.
///
/// The retry resends the request, so the body type must be `Clone` (`String`, `Vec<u8>`,
/// `bytes::Bytes`, `http_body_util::Full<Bytes>`, ...). A streaming body has to be buffered
/// into one of those first (for example with `http_body_util::BodyExt::collect`); request
/// extensions are cloned along with it.
///
/// ```no_run
/// # async fn example(client: tableau_token_broker_client::Client) -> Result<(), tower::BoxError> {
/// use tableau_token_broker_client::{CredentialsRequest, TableauAuthLayer};
/// use tower::{Layer, ServiceExt};
///
/// // Any `Service<http::Request<B>>` with a `Clone` body: a program wraps its HTTP client here
/// // (hyper-util's, or reqwest's through `reqwest::Request::try_from`).
/// let transport = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// });
/// let req = CredentialsRequest::new("finance", "svc-renderer").scopes(["tableau:content:read"]);
/// let creds = client.credentials(&req).await?;
/// let tableau = TableauAuthLayer::new(client, req).layer(transport);
/// let answer = tableau
///     .oneshot(http::Request::get(format!("{}/workbooks", creds.site_url())).body(String::new())?)
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TableauAuthLayer {
    client: Client,
    request: Arc<CredentialsRequest>,
}

impl TableauAuthLayer {
    /// A layer that authenticates with credentials for `request`.
    pub fn new(client: Client, request: CredentialsRequest) -> Self {
        TableauAuthLayer {
            client,
            request: Arc::new(request),
        }
    }
}

impl<S> Layer<S> for TableauAuthLayer {
    type Service = TableauAuth<S>;

    fn layer(&self, inner: S) -> TableauAuth<S> {
        TableauAuth {
            inner,
            client: self.client.clone(),
            request: Arc::clone(&self.request),
        }
    }
}

/// The service [`TableauAuthLayer`] makes: `S` with `X-Tableau-Auth` and the 401 retry.
#[derive(Debug, Clone)]
pub struct TableauAuth<S> {
    inner: S,
    client: Client,
    request: Arc<CredentialsRequest>,
}

/// A copy of `req` for the retry: method, URI, version, headers, extensions and body.
fn copy_request<B: Clone>(req: &Request<B>) -> Request<B> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// Sets `X-Tableau-Auth` (marked sensitive, so HTTP/2 never indexes it and loggers that honour
/// the flag hide it).
pub(crate) fn auth_header(creds: &Credentials) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::from_str(creds.token.expose_secret())
        .map_err(|_| Error::Header("X-Tableau-Auth"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn with_token<B>(mut req: Request<B>, creds: &Credentials) -> Result<Request<B>, Error> {
    req.headers_mut()
        .insert(X_TABLEAU_AUTH, auth_header(creds)?);
    Ok(req)
}

impl<S, B, ResB> Service<Request<B>> for TableauAuth<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Clone + Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<ResB>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service polled ready is the one to call first; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let client = self.client.clone();
        let request = Arc::clone(&self.request);
        Box::pin(async move {
            let creds = client.credentials(&request).await?;
            let retry = copy_request(&req);
            let answer = inner
                .call(with_token(req, &creds)?)
                .await
                .map_err(Into::into)?;
            if answer.status() != StatusCode::UNAUTHORIZED {
                return Ok(answer);
            }
            drop(answer);
            tracing::debug!(
                site = %request.site(),
                user = %request.user(),
                "Tableau answered 401; invalidating the token and retrying once"
            );
            client.report_refused(&creds).await?;
            let fresh = client.credentials(&request).await?;
            let answer = inner
                .ready()
                .await
                .map_err(Into::into)?
                .call(with_token(retry, &fresh)?)
                .await
                .map_err(Into::into)?;
            Ok(answer)
        })
    }
}

impl Client {
    /// A [`TableauAuthLayer`] that authenticates requests with credentials for `req`.
    pub fn layer(&self, req: CredentialsRequest) -> TableauAuthLayer {
        TableauAuthLayer::new(self.clone(), req)
    }
}
