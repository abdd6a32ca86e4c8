//! Prometheus metrics: one `prometheus-client` [`Registry`] with the common prefix
//! [`PREFIX`], served as OpenMetrics text on the admin listener's `/metrics`.
//!
//! Every metric is defined in one place, [`catalog`] (name, type, labels, help), and a test keeps
//! the README's metrics table equal to it. Two kinds of sources report values against those
//! definitions, so that domain code never sees a metrics type:
//!
//! - **Per-RPC** counts and latencies ([`RpcStats`], in [`rpc`]), recorded by the gRPC layer
//!   ([`crate::grpc::observe`]): one atomic add and one histogram observation per call, with the
//!   method and code pre-resolved to array indexes, so the hot path allocates nothing.
//! - **Domain stats**: modules count their own events with plain atomics in a `...Stats` struct
//!   with a `snapshot()` (cache hits, sign-ins, handshakes, reloads...). A [`Source`] (in
//!   [`sources`]) reads those snapshots at scrape time and reports them through a [`Scrape`]; the
//!   registry's one custom collector runs every source on each scrape. The server only wires
//!   them: `metrics.add_source(sources::reloads(stats))`.
//!
//! Adding a metric: a line in [`catalog`], a row in the README's table, and the value reported
//! from a source:
//!
//! ```ignore
//! s.counter(&catalog::REQUESTS_REFUSED, &["sign_in_rate"], l.sign_ins_rate_limited);
//! ```
//!
//! Label values must come from bounded sets: configured names, fixed words, gRPC codes. Never a
//! username, token or raw caller identity.

pub mod catalog;
pub mod rpc;
pub mod sources;

use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::stats::HistogramSnapshot;
use catalog::{CounterDef, Def, GaugeDef, HistogramDef};
pub use rpc::{GRPC_CODES, RpcMethod, RpcStats};

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

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramSnapshot),
}

struct Family {
    def: &'static Def,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// What the sources report during one scrape, grouped into metric families. Each sample names its
/// metric by a [`catalog`] definition and gives the label values in the definition's order.
#[derive(Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.families.iter().map(|f| f.def.name))
            .finish()
    }
}

impl Scrape {
    fn push(&mut self, def: &'static Def, labels: &[&str], value: Value) {
        debug_assert_eq!(
            labels.len(),
            def.labels.len(),
            "{}: one value per label of its definition",
            def.name
        );
        let labels = def
            .labels
            .iter()
            .zip(labels)
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        match self.families.iter_mut().find(|f| std::ptr::eq(f.def, def)) {
            Some(f) => f.samples.push((labels, value)),
            None => self.families.push(Family {
                def,
                samples: vec![(labels, value)],
            }),
        }
    }

    /// A counter sample; `labels` are the values of `def`'s labels, in order.
    pub fn counter(&mut self, def: &'static CounterDef, labels: &[&str], value: u64) {
        self.push(&def.0, labels, Value::Counter(value));
    }

    /// A gauge sample; `labels` are the values of `def`'s labels, in order.
    pub fn gauge(&mut self, def: &'static GaugeDef, labels: &[&str], value: f64) {
        self.push(&def.0, labels, Value::Gauge(value));
    }

    /// A histogram sample; `labels` are the values of `def`'s labels, in order.
    pub fn histogram(
        &mut self,
        def: &'static HistogramDef,
        labels: &[&str],
        value: HistogramSnapshot,
    ) {
        self.push(&def.0, labels, Value::Histogram(value));
    }

    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            let mut me = encoder.encode_descriptor(
                f.def.family(),
                f.def.help,
                None,
                f.def.kind.metric_type(),
            )?;
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
        let def = &catalog::BUILD_INFO.0;
        // The registry adds the `_info` suffix and the help's final period itself.
        registry.register(def.family(), def.help.trim_end_matches('.'), build);
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn exposition_has_prefix_types_and_eof() {
        let m = Metrics::new();
        m.rpc()
            .record(RpcMethod::GetCredentials, 0, Duration::from_millis(2));
        m.add_source(|s: &mut Scrape| {
            s.counter(&catalog::CACHE_HITS, &[], 3);
            s.gauge(&catalog::CERTIFICATE_NOT_AFTER, &["server"], 1.7e9);
            s.gauge(&catalog::CERTIFICATE_NOT_AFTER, &["client_ca"], 1.8e9);
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
            text.contains("tableau_token_broker_certificate_not_after_seconds{cert=\"client_ca\"} 1800000000.0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "# HELP tableau_token_broker_build The broker's version and git revision.\n"
            ) && text.contains("tableau_token_broker_build_info{version=\""),
            "{text}"
        );
    }
}
