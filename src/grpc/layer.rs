//! The tower layer that turns the connection's [`PeerInfo`] into the request's
//! [`CallerIdentity`], so every RPC handler can authorize against it.

use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::transport::PeerInfo;
use crate::transport::activity::{ActiveBody, ActiveFuture};

/// Puts the caller's [`CallerIdentity`](crate::identity::CallerIdentity) into every request's
/// extensions, taken only from the connection's verified certificate ([`PeerInfo`]); headers and
/// metadata are never read. A request that did not come through the mTLS transport is answered
/// `UNAUTHENTICATED` and never reaches the service. Each call is marked active on its connection
/// until its response body ends, so the connection's idle timeout never closes it under a call.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityLayer;

impl IdentityLayer {
    /// The layer; it has no settings.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentityService { inner }
    }
}

/// The service [`IdentityLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct IdentityService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for IdentityService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ActiveBody<ResBody>>;
    type Error = S::Error;
    type Future = ActiveFuture<
        futures::future::Either<futures::future::Ready<Result<S::Response, S::Error>>, S::Future>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        use futures::future::{Either, ready};
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .map(|peer| (peer.identity.clone(), peer.activity.begin()));
        match peer {
            Some((identity, guard)) => {
                // Overwrites anything already there: only the connection decides.
                req.extensions_mut().insert(identity);
                ActiveFuture::new(Either::Right(self.inner.call(req)), Some(guard))
            }
            None => {
                tracing::warn!("request without an authenticated peer refused");
                let status = super::status::to_status(&crate::error::BrokerError::Unauthenticated);
                ActiveFuture::new(Either::Left(ready(Ok(status.into_http()))), None)
            }
        }
    }
}
