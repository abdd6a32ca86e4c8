//! Prometheus metrics: one `prometheus-client` [`Registry`] with the common prefix
//! [`PREFIX`], served as OpenMetrics text on the admin listener's `/metrics`.
//!
//! Two kinds of metrics, so that domain code never sees a metrics type:
//!
//! - **Per-RPC** counts and latencies ([`RpcStats`]), recorded by the gRPC layer
//!   ([`crate::grpc::observe`]): one atomic add and one histogram observation per call, with the
//!   method and code pre-resolved to array indexes, so the hot path allocates nothing.
//! - **Domain stats**: modules count their own events with plain atomics in a `...Stats` struct
//!   with a `snapshot()` (cache hits, sign-ins, handshakes, reloads...). A [`Source`] reads those
//!   snapshots at scrape time and reports them through a [`Scrape`]; the registry's one custom
//!   collector runs every source on each scrape.
//!
//! Adding a domain's stats is a few lines where the server is assembled:
//!
//! ```ignore
//! let limits = Arc::clone(limiter.stats());
//! metrics.add_source(move |s: &mut Scrape| {
//!     let l = limits.snapshot();
//!     s.counter("requests_refused_total", "Requests refused by a limit.", &[("limit", "rate")], l.rate);
//! });
//! ```
//!
//! Label values must come from bounded sets: configured names, fixed words, gRPC codes. Never a
//! username, token or raw caller identity.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::stats::{HistogramSnapshot, LatencyHistogram};

/// Prefix of every metric name (`tableau_token_broker_...`).
pub const PREFIX: &str = "tableau_token_broker";

/// The `Content-Type` of the exposition: OpenMetrics text, which Prometheus reads natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The broker's build, for `build_info`: the crate version and the git revision it was built
/// from (`unknown` outside a git checkout).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`VERSION`].
pub const GIT_REVISION: &str = match option_env!("TTB_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// The RPCs counted one by one; everything else falls in a handful of fixed buckets so the
/// `method` label stays bounded whatever paths clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcMethod {
    /// `TokenBroker/GetCredentials`.
    GetCredentials,
    /// `TokenBroker/MintJwt`.
    MintJwt,
    /// `TokenBroker/InvalidateCredentials`.
    InvalidateCredentials,
    /// `TokenBroker/WhoAmI`.
    WhoAmI,
    /// `TokenBroker/ResolveScopes`.
    ResolveScopes,
    /// `grpc.health.v1.Health/Check`.
    HealthCheck,
    /// `grpc.health.v1.Health/Watch`.
    HealthWatch,
    /// Any server reflection call.
    Reflection,
    /// Any call of the admin service (`tableau_token_broker.admin.v1.Admin`, issue 27).
    Admin,
    /// Any other path (answered `UNIMPLEMENTED`).
    Other,
}

const METHODS: usize = 10;
const SERVICE_PREFIX: &str = "/tableau_token_broker.v1.TokenBroker/";

impl RpcMethod {
    const ALL: [RpcMethod; METHODS] = [
        RpcMethod::GetCredentials,
        RpcMethod::MintJwt,
        RpcMethod::InvalidateCredentials,
        RpcMethod::WhoAmI,
        RpcMethod::ResolveScopes,
        RpcMethod::HealthCheck,
        RpcMethod::HealthWatch,
        RpcMethod::Reflection,
        RpcMethod::Admin,
        RpcMethod::Other,
    ];

    /// Classifies a request path (`/package.Service/Method`).
    pub fn from_path(path: &str) -> RpcMethod {
        if let Some(m) = path.strip_prefix(SERVICE_PREFIX) {
            return match m {
                "GetCredentials" => RpcMethod::GetCredentials,
                "MintJwt" => RpcMethod::MintJwt,
                "InvalidateCredentials" => RpcMethod::InvalidateCredentials,
                "WhoAmI" => RpcMethod::WhoAmI,
                "ResolveScopes" => RpcMethod::ResolveScopes,
                _ => RpcMethod::Other,
            };
        }
        match path {
            "/grpc.health.v1.Health/Check" => RpcMethod::HealthCheck,
            "/grpc.health.v1.Health/Watch" => RpcMethod::HealthWatch,
            p if p.starts_with("/grpc.reflection.") => RpcMethod::Reflection,
            p if p.starts_with("/tableau_token_broker.admin.v1.Admin/") => RpcMethod::Admin,
            _ => RpcMethod::Other,
        }
    }

    /// The `method` label value.
    pub fn label(self) -> &'static str {
        match self {
            RpcMethod::GetCredentials => "GetCredentials",
            RpcMethod::MintJwt => "MintJwt",
            RpcMethod::InvalidateCredentials => "InvalidateCredentials",
            RpcMethod::WhoAmI => "WhoAmI",
            RpcMethod::ResolveScopes => "ResolveScopes",
            RpcMethod::HealthCheck => "grpc.health.v1.Health/Check",
            RpcMethod::HealthWatch => "grpc.health.v1.Health/Watch",
            RpcMethod::Reflection => "reflection",
            RpcMethod::Admin => "admin",
            RpcMethod::Other => "other",
        }
    }

    /// The full RPC name for span names (`tableau_token_broker.v1.TokenBroker/GetCredentials`).
    pub fn span_name(self) -> &'static str {
        match self {
            RpcMethod::GetCredentials => "tableau_token_broker.v1.TokenBroker/GetCredentials",
            RpcMethod::MintJwt => "tableau_token_broker.v1.TokenBroker/MintJwt",
            RpcMethod::InvalidateCredentials => {
                "tableau_token_broker.v1.TokenBroker/InvalidateCredentials"
            }
            RpcMethod::WhoAmI => "tableau_token_broker.v1.TokenBroker/WhoAmI",
            RpcMethod::ResolveScopes => "tableau_token_broker.v1.TokenBroker/ResolveScopes",
            RpcMethod::HealthCheck => "grpc.health.v1.Health/Check",
            RpcMethod::HealthWatch => "grpc.health.v1.Health/Watch",
            RpcMethod::Reflection => "grpc.reflection",
            RpcMethod::Admin => "tableau_token_broker.admin.v1.Admin",
            RpcMethod::Other => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `policy_candidate_divergence_total{direction, reason}` (issue 27): decisions on which the
/// candidate policy would differ. Both labels are bounded: two directions, and reasons from the
/// broker's fixed vocabulary of refusals.
pub fn scrape_divergences(s: &mut Scrape, divergences: &[((&'static str, Arc<str>), u64)]) {
    for ((direction, reason), n) in divergences {
        s.counter(
            "policy_candidate_divergence_total",
            "Decisions on which the candidate policy differs from the running one, by direction (would_refuse, would_allow) and the refusing side's reason.",
            &[("direction", direction), ("reason", reason)],
            *n,
        );
    }
}

/// gRPC status code names, by code number: the `code` label.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Calls by method and gRPC code, and latency by method: fixed arrays of atomics.
#[derive(Debug)]
pub struct RpcStats {
    counts: [[AtomicU64; 17]; METHODS],
    latency: [LatencyHistogram; METHODS],
}

impl Default for RpcStats {
    fn default() -> Self {
        RpcStats {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency: std::array::from_fn(|_| LatencyHistogram::new()),
        }
    }
}

impl RpcStats {
    /// Records one finished call. Codes outside 0..=16 count as `UNKNOWN` (2).
    pub fn record(&self, method: RpcMethod, code: i32, took: Duration) {
        let code = usize::try_from(code)
            .ok()
            .filter(|c| *c < GRPC_CODES.len())
            .unwrap_or(2);
        let i = method.index();
        if let Some(c) = self.counts.get(i).and_then(|row| row.get(code)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = self.latency.get(i) {
            h.observe(took);
        }
    }

    /// Calls of `method` answered with `code` so far.
    pub fn count(&self, method: RpcMethod, code: i32) -> u64 {
        usize::try_from(code)
            .ok()
            .and_then(|c| self.counts.get(method.index())?.get(c))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn report(&self, s: &mut Scrape) {
        for m in RpcMethod::ALL {
            let Some(row) = self.counts.get(m.index()) else {
                continue;
            };
            for (code, c) in row.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let code = GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN");
                    s.counter(
                        "rpc_requests_total",
                        "gRPC calls handled, by method and status code.",
                        &[("method", m.label()), ("code", code)],
                        n,
                    );
                }
            }
        }
        for m in RpcMethod::ALL {
            let Some(h) = self.latency.get(m.index()) else {
                continue;
            };
            let snap = h.snapshot();
            if snap.count > 0 {
                s.histogram(
                    "rpc_duration_seconds",
                    "Time from request to response headers, by method.",
                    &[("method", m.label())],
                    snap,
                );
            }
        }
    }
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramSnapshot),
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// What the sources report during one scrape, grouped into metric families. Names are given
/// without the prefix and, for counters, with their `_total` suffix, as they appear in the
/// exposition.
#[derive(Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.families.iter().map(|f| f.name))
            .finish()
    }
}

impl Scrape {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: &[(&'static str, &str)],
        value: Value,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, value)],
            }),
        }
    }

    /// A counter sample. `name` ends in `_total`.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        let name = name.strip_suffix("_total").unwrap_or(name);
        self.push(
            name,
            help,
            MetricType::Counter,
            labels,
            Value::Counter(value),
        );
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.push(name, help, MetricType::Gauge, labels, Value::Gauge(value));
    }

    /// A histogram sample.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: HistogramSnapshot,
    ) {
        self.push(
            name,
            help,
            MetricType::Histogram,
            labels,
            Value::Histogram(value),
        );
    }

    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut me = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, value) in &f.samples {
                if labels.is_empty() {
                    encode_value(&mut me, value)?;
                } else {
                    let mut fe = me.encode_family(labels)?;
                    encode_value(&mut fe, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_value(me: &mut MetricEncoder<'_>, value: &Value) -> Result<(), std::fmt::Error> {
    match value {
        Value::Counter(v) => me.encode_counter::<NoLabelSet, u64, u64>(v, None),
        Value::Gauge(v) => me.encode_gauge(v),
        Value::Histogram(h) => {
            // The encoder sums the buckets itself: hand it each bucket's own count.
            let mut below = 0;
            let per_bucket: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .map(|&(le, cumulative)| {
                    let own = cumulative.saturating_sub(below);
                    below = cumulative;
                    (le, own)
                })
                .collect();
            me.encode_histogram::<NoLabelSet>(h.sum, h.count, &per_bucket, None)
        }
    }
}

/// Something that reports metrics at scrape time, usually from a domain `...Stats::snapshot()`.
pub trait Source: Send + Sync + 'static {
    /// Adds this source's samples to the scrape.
    fn report(&self, scrape: &mut Scrape);
}

impl<F: Fn(&mut Scrape) + Send + Sync + 'static> Source for F {
    fn report(&self, scrape: &mut Scrape) {
        self(scrape)
    }
}

/// The registry's custom collector: runs every source on each scrape.
#[derive(Default)]
struct Sources {
    rpc: Arc<RpcStats>,
    sources: RwLock<Vec<Box<dyn Source>>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Collector for Sources {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut scrape = Scrape::default();
        self.rpc.report(&mut scrape);
        for s in self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            s.report(&mut scrape);
        }
        scrape.encode(encoder)
    }
}

/// The broker's metrics: the registry, the per-RPC stats, and the domain sources.
pub struct Metrics {
    registry: Registry,
    sources: Arc<Sources>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with `build_info` and the collector for RPC stats and sources.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let build = Info::new(vec![("version", VERSION), ("revision", GIT_REVISION)]);
        debug_assert!(matches!(build.metric_type(), MetricType::Info));
        registry.register("build", "The broker's version and git revision", build);
        let sources = Arc::new(Sources::default());
        registry.register_collector(Box::new(Arc::clone(&sources)));
        Metrics { registry, sources }
    }

    /// The per-RPC stats the gRPC layer records into.
    pub fn rpc(&self) -> &Arc<RpcStats> {
        &self.sources.rpc
    }

    /// Adds a source read on every scrape (see the module documentation).
    pub fn add_source(&self, source: impl Source) {
        self.sources
            .sources
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(source));
    }

    /// The whole exposition, OpenMetrics text ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; a source bug would show as a truncated scrape.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_codes_are_bounded_labels() {
        assert_eq!(
            RpcMethod::from_path("/tableau_token_broker.v1.TokenBroker/GetCredentials"),
            RpcMethod::GetCredentials
        );
        assert_eq!(
            RpcMethod::from_path("/tableau_token_broker.v1.TokenBroker/Nope"),
            RpcMethod::Other
        );
        assert_eq!(
            RpcMethod::from_path("/x.Y/anything-at-all"),
            RpcMethod::Other
        );
        assert_eq!(
            RpcMethod::from_path("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            RpcMethod::Reflection
        );
        for (i, m) in RpcMethod::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
        let s = RpcStats::default();
        s.record(RpcMethod::WhoAmI, 99, Duration::from_millis(1));
        assert_eq!(
            s.count(RpcMethod::WhoAmI, 2),
            1,
            "out-of-range codes are UNKNOWN"
        );
    }

    #[test]
    fn exposition_has_prefix_types_and_eof() {
        let m = Metrics::new();
        m.rpc()
            .record(RpcMethod::GetCredentials, 0, Duration::from_millis(2));
        m.add_source(|s: &mut Scrape| {
            s.counter("cache_hits_total", "Hits.", &[], 3);
            s.gauge(
                "certificate_not_after_seconds",
                "Not after.",
                &[("cert", "server")],
                1.7e9,
            );
            s.gauge(
                "certificate_not_after_seconds",
                "Not after.",
                &[("cert", "client_ca")],
                1.8e9,
            );
        });
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE tableau_token_broker_cache_hits counter\n"),
            "{text}"
        );
        assert!(
            text.contains("tableau_token_broker_cache_hits_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "tableau_token_broker_rpc_requests_total{method=\"GetCredentials\",code=\"OK\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("tableau_token_broker_rpc_duration_seconds_bucket{le=\"0.0025\",method=\"GetCredentials\"} 1\n")
                && text.contains("tableau_token_broker_rpc_duration_seconds_bucket{le=\"+Inf\",method=\"GetCredentials\"} 1\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE tableau_token_broker_certificate_not_after_seconds gauge")
                .count(),
            1,
            "{text}"
        );
        assert!(
            text.contains("tableau_token_broker_build_info{version=\""),
            "{text}"
        );
    }
}
