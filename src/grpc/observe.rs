//! The tower layer that observes every RPC: one server span per call (continuing an incoming W3C
//! `traceparent`), and its count and latency by method and gRPC status code.
//!
//! The status is read from the response headers: an error is a trailers-only response, so its
//! `grpc-status` is there; a response without one is a unary success (its `OK` comes in the
//! trailers). A stream that fails after its headers counts as `OK`: the broker's only stream
//! is the health `Watch`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::metrics::{RpcMethod, RpcStats};

/// Wraps the gRPC routes: a span, a count and a latency per call.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    stats: Arc<RpcStats>,
}

impl ObserveLayer {
    /// Records into `stats`.
    pub fn new(stats: Arc<RpcStats>) -> Self {
        Self { stats }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            stats: Arc::clone(&self.stats),
        }
    }
}

/// The service [`ObserveLayer`] wraps around the gRPC routes.
#[derive(Debug, Clone)]
pub struct ObserveService<S> {
    inner: S,
    stats: Arc<RpcStats>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = RpcMethod::from_path(req.uri().path());
        let span = crate::telemetry::rpc_span(method.span_name(), method.label(), req.headers());
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ObserveFuture {
            inner: inner.instrument(span),
            method,
            started: Instant::now(),
            stats: Arc::clone(&self.stats),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`ObserveService`]: polls the call inside its span and records it
    /// when the response (or transport error) is ready.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        method: RpcMethod,
        started: Instant,
        stats: Arc<RpcStats>,
    }
}

/// The `grpc-status` of a response's headers; absent means a unary success.
fn status_code<B>(res: &http::Response<B>) -> i32 {
    res.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl<F, B, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = std::task::ready!(this.inner.as_mut().poll(cx));
        // A transport-level failure never produced a status: count it as UNKNOWN.
        let code = out.as_ref().map_or(2, status_code);
        this.stats
            .record(*this.method, code, this.started.elapsed());
        let span = this.inner.span();
        span.record("rpc.grpc.status_code", code);
        if code != 0 {
            span.record("otel.status_code", "ERROR");
        }
        Poll::Ready(out)
    }
}
