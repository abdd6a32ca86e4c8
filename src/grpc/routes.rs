//! Dispatches each gRPC request to its service by the path's service name (`/pkg.Service/Method`).
//!
//! tonic's own router is built on axum (its `router` feature); the broker serves four fixed
//! services, so a prefix match is all the routing it needs, and the production build links no HTTP
//! framework it does not use.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::error::BrokerError;

type GrpcService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The broker's gRPC services by name; unknown services and methods get `UNIMPLEMENTED` with an
/// `ErrorInfo`, like every other error.
#[derive(Clone, Default)]
pub struct GrpcRoutes {
    services: Vec<(String, GrpcService)>,
}

impl std::fmt::Debug for GrpcRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.services.iter().map(|(name, _)| name))
            .finish()
    }
}

impl GrpcRoutes {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server under its fully qualified service name.
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services
            .push((format!("/{}/", S::NAME), BoxCloneSyncService::new(svc)));
        self
    }

    fn route(&self, path: &str) -> Option<GrpcService> {
        self.services
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, svc)| svc.clone())
    }
}

impl Service<http::Request<Body>> for GrpcRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each routed service is cloned and driven to readiness in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self.route(req.uri().path()) {
            Some(mut svc) => Box::pin(async move {
                futures::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                svc.call(req).await
            }),
            None => {
                let path: String = req.uri().path().chars().take(100).collect();
                let status = super::status::to_status(&BrokerError::Unimplemented { path });
                Box::pin(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}
