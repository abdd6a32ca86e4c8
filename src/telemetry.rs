//! Logs and traces: structured logs to stderr (JSON or text) and, when an endpoint is configured
//! (or the standard `OTEL_EXPORTER_OTLP_*` variables name one), OpenTelemetry traces over
//! OTLP/gRPC. Secrets never reach either: spans skip all arguments.
//!
//! [`init`] must run inside the tokio runtime: the OTLP exporter's gRPC channel spawns its
//! connection task there. The standard variables are honoured (endpoint, headers, service name,
//! resource attributes, sampler); a value in the configuration file wins over its variable.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{DEFAULT_SERVICE_NAME, LogFormat, TelemetryConfig};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {message}")]
    Otlp {
        /// The configured endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("logging already initialised: {0}")]
    Init(String),
}

/// Flushes traces when dropped; keep it alive for the life of the process, and drop it while the
/// tokio runtime still runs (the exporter sends through it).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when traces are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("flushing traces at exit failed: {e}");
            }
        }
    }
}

/// Where traces go, if anywhere: the configured endpoint, else the standard variables.
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn export off.
fn trace_endpoint(cfg: &TelemetryConfig) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return None;
    }
    cfg.otlp_endpoint
        .clone()
        .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The traces' resource: the SDK's detectors (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`,
/// telemetry.sdk.*), the broker's version, and the service name: the configuration's if set,
/// else the environment's, else [`DEFAULT_SERVICE_NAME`].
fn resource(cfg: &TelemetryConfig) -> opentelemetry_sdk::Resource {
    let env_names_service = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let mut b = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", crate::metrics::VERSION),
    );
    match &cfg.service_name {
        Some(name) => b = b.with_service_name(name.clone()),
        None if !env_names_service => b = b.with_service_name(DEFAULT_SERVICE_NAME),
        None => {}
    }
    b.build()
}

/// The target of the per-RPC server span ([`rpc_span`]), which exists only when traces are
/// exported (see [`init`]).
pub const RPC_SPAN_TARGET: &str = "tableau_token_broker::rpc";

/// Installs the global subscriber. `RUST_LOG` overrides the configured filter. Call inside the
/// tokio runtime.
///
/// Without a trace exporter the per-RPC server span is turned off: the log layer would format its
/// fields on every call (a cache hit cost about a third more with it), and what a log line inside
/// a call needs is carried by the spans of the work that logs (a sign-in, a mint). With an
/// exporter, traces get one server span per RPC.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_filter));
    let fmt = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut provider = None;
    let otel = match trace_endpoint(cfg) {
        None => {
            if let Ok(off) = format!("{RPC_SPAN_TARGET}=off").parse() {
                filter = filter.add_directive(off);
            }
            None
        }
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            // The configuration's endpoint is given to the builder (which then wins over the
            // variables); otherwise the builder reads the variables itself, signal-specific first.
            let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(e) = &cfg.otlp_endpoint {
                builder = builder.with_endpoint(e.clone());
            }
            let exporter = builder.build().map_err(|e| TelemetryError::Otlp {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?;
            // The builder's defaults read OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
            let p = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource(cfg))
                .build();
            let tracer = p.tracer("tableau-token-broker");
            provider = Some(p);
            // A call that joins another's sign-in links its span to that sign-in's.
            tableau_token_broker_core::cache::set_span_linker(link_to);
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// A plain text subscriber for interactive commands (demo, CLI client), honouring `RUST_LOG`.
pub fn init_cli(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
}

/// Reads W3C trace context headers from an HTTP/2 request.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The server span of one RPC, continuing the caller's trace when the request carries a W3C
/// `traceparent`. Only the method name and, later, the status code are recorded: never metadata,
/// which may carry credentials.
pub fn rpc_span(
    name: &'static str,
    method: &'static str,
    headers: &http::HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: RPC_SPAN_TARGET,
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if headers.contains_key("traceparent") && !span.is_disabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        if parent.span().span_context().is_valid() {
            // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Links `span` to `to` (a coalesced waiter to the sign-in it waits for), when traces are on.
pub fn link_to(span: &tracing::Span, to: &tracing::Span) {
    if span.is_disabled() || to.is_disabled() {
        return;
    }
    let target = to.context().span().span_context().clone();
    span.add_link(target);
}
