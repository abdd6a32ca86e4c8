//! Every metric the broker exposes, defined once: name, type, label names and help text.
//!
//! Sources ([`super::sources`], [`super::rpc`]) report values against these definitions and
//! cannot name a metric of their own: [`super::Scrape`] takes only a definition from here. The
//! list [`ALL`] is made by the same macro as the definitions, so a metric cannot be defined and
//! left out of it, and a test checks it against the README's metrics table, so a metric cannot be
//! added, renamed or dropped without its documentation following.

use prometheus_client::metrics::MetricType;

/// A metric's definition. `name` is without the common prefix and as it appears in the
/// exposition's samples and the README: counters end in `_total`, the info metric in `_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    /// Name without the `tableau_token_broker_` prefix.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The metric type.
    pub kind: Kind,
    /// Label names, in the order sources give their values.
    pub labels: &'static [&'static str],
}

/// A metric type, as the README's table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A monotonic count.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations in buckets.
    Histogram,
    /// Constant labels with the value 1 (`build_info`).
    Info,
}

impl Kind {
    /// The word the README's table and the OpenMetrics `# TYPE` line use.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Info => "info",
        }
    }

    /// The encoder's type.
    pub(super) fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
            Kind::Info => MetricType::Info,
        }
    }
}

impl Def {
    /// The family name in the `# TYPE` line: OpenMetrics drops a counter's `_total` and an info
    /// metric's `_info` there.
    pub fn family(&self) -> &'static str {
        let suffix = match self.kind {
            Kind::Counter => "_total",
            Kind::Info => "_info",
            Kind::Gauge | Kind::Histogram => return self.name,
        };
        self.name.strip_suffix(suffix).unwrap_or(self.name)
    }
}

macro_rules! typed_def {
    ($(#[$doc:meta])* $ty:ident, $kind:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty(pub Def);
        impl $ty {
            const KIND: Kind = Kind::$kind;
        }
    };
}

typed_def!(
    /// A counter's definition: only [`super::Scrape::counter`] takes it.
    CounterDef, Counter
);
typed_def!(
    /// A gauge's definition: only [`super::Scrape::gauge`] takes it.
    GaugeDef, Gauge
);
typed_def!(
    /// A histogram's definition: only [`super::Scrape::histogram`] takes it.
    HistogramDef, Histogram
);
typed_def!(
    /// The info metric's definition, registered once in [`super::Metrics::new`].
    InfoDef, Info
);

macro_rules! metrics {
    ($($ty:ident $id:ident = $name:literal [$($label:literal),*] $help:literal;)*) => {
        $(
            #[doc = $help]
            // The help text is Prometheus' HELP line: `[cache]` names a configuration section,
            // not an item to link to.
            #[allow(rustdoc::broken_intra_doc_links)]
            pub const $id: $ty = $ty(Def {
                name: $name,
                help: $help,
                kind: $ty::KIND,
                labels: &[$($label),*],
            });
        )*
        /// Every definition above, in the README table's order.
        pub const ALL: &[&Def] = &[$(&$id.0),*];
    };
}

metrics! {
    InfoDef BUILD_INFO = "build_info" ["version", "revision"]
        "The broker's version and git revision.";
    CounterDef RPC_REQUESTS = "rpc_requests_total" ["method", "code"]
        "gRPC calls handled, by method and status code.";
    HistogramDef RPC_DURATION = "rpc_duration_seconds" ["method"]
        "Time from request to response headers, by method.";
    CounterDef CACHE_HITS = "cache_hits_total" []
        "Lookups answered from the cache.";
    CounterDef CACHE_MISSES = "cache_misses_total" []
        "Lookups that started a sign-in at Tableau.";
    CounterDef CACHE_COALESCED_WAITERS = "cache_coalesced_waiters_total" []
        "Lookups that waited for a sign-in another call had already started.";
    CounterDef CACHE_EVICTIONS = "cache_evictions_total" ["cause"]
        "Entries that left the cache, by cause.";
    GaugeDef CACHE_ENTRIES = "cache_entries" []
        "Sessions held in the cache (approximate between housekeeping runs).";
    CounterDef SIGN_INS = "sign_ins_total" ["site", "outcome"]
        "Sign-ins at Tableau by site and outcome (ok, a Tableau error code, unavailable, rate_limited).";
    HistogramDef SIGN_IN_DURATION = "sign_in_duration_seconds" []
        "How long sign-ins took: minting the JWT and Tableau's answer.";
    GaugeDef SIGN_INS_IN_FLIGHT = "sign_ins_in_flight" []
        "Sign-ins at Tableau in progress now.";
    CounterDef SIGN_OUTS = "sign_outs_total" ["outcome"]
        "Sign-outs at Tableau of evicted or invalidated sessions, by outcome.";
    CounterDef CACHE_REFRESH_AHEAD = "cache_refresh_ahead_total" ["outcome"]
        "Background sign-ins started by a hit within [cache] refresh_ahead of the token's usable end, and those that failed.";
    CounterDef POLICY_CANDIDATE_DIVERGENCE = "policy_candidate_divergence_total" ["direction", "reason"]
        "Decisions on which the candidate policy differs from the running one, by direction (would_refuse, would_allow) and the refusing side's reason.";
    CounterDef TLS_HANDSHAKE_FAILURES = "tls_handshake_failures_total" ["reason"]
        "Connections refused or dropped during the TLS handshake, by reason (closed: the peer hung up, as TCP probes do; no_caller_entry: no caller entry matches the identity, closed to make room for a newer such connection within their quota).";
    CounterDef RELOADS = "reloads_total" ["outcome"]
        "Configuration and certificate reloads (file changes or SIGHUP), by outcome.";
    GaugeDef CONFIG_LAST_RELOAD_SUCCESS = "config_last_reload_success_timestamp_seconds" []
        "When the configuration in force was loaded: at start or by the last good reload (unix seconds).";
    GaugeDef CONFIG_RELOAD_FAILED = "config_reload_failed" []
        "1 while the last reload attempt failed (the previous configuration stays in force), 0 after a good one or at start.";
    GaugeDef CONFIG_GENERATION = "config_generation" []
        "The generation of the configuration in force (1 at start, +1 per applied reload), as in the audit records' config_generation.";
    GaugeDef CERTIFICATE_NOT_AFTER = "certificate_not_after_seconds" ["cert"]
        "When a certificate in force expires (unix seconds); client_ca is the earliest CA in the bundle.";
    CounterDef REQUESTS_REFUSED = "requests_refused_total" ["limit"]
        "Requests refused by a limit that protects Tableau (sign_in_rate: the caller entry's sign-in budget; site_concurrency: the site's cap on sign-ins in flight).";
    CounterDef SECRET_FALLBACKS = "secret_fallbacks_total" []
        "Sign-ins that succeeded only with the standby connected-app secret after Tableau refused the active one (finish the rotation).";
    CounterDef NEGATIVE_CACHE_HITS = "negative_cache_hits_total" []
        "Requests answered with a remembered sign-in failure (unknown user, misconfigured app) instead of asking Tableau again.";
    GaugeDef SIGN_OUTS_PENDING = "sign_outs_pending" []
        "Replaced or evicted sessions waiting for their grace period before the sign-out.";
    CounterDef SIGN_OUTS_EARLY = "sign_outs_early_total" []
        "Sign-outs run before their grace period because the pending queue was full.";
    GaugeDef CONNECTIONS_OPEN = "connections_open" []
        "Client connections open now (handshaking or established).";
    CounterDef CONNECTIONS_REFUSED = "connections_refused_total" ["reason"]
        "Connections closed to protect the broker (max_connections: at the cap; handshake_dropped: the oldest unfinished handshake made room).";
    CounterDef SHARED_CACHE_LOOKUPS = "shared_cache_lookups_total" ["result"]
        "Local-cache misses looked up in the shared cache (Redis), by result.";
    CounterDef SHARED_CACHE_LEASES = "shared_cache_leases_total" ["event"]
        "Sign-in leases in Redis: taken to sign in, waited on (another replica signing in), taken over from a holder that died, waits that gave up.";
    CounterDef SHARED_CACHE_ERRORS = "shared_cache_errors_total" []
        "Redis operations that failed or timed out.";
    CounterDef SHARED_CACHE_FALLBACK_SIGN_INS = "shared_cache_fallback_sign_ins_total" []
        "Sign-ins done by this replica alone because Redis failed or the circuit breaker was open.";
    GaugeDef SHARED_CACHE_FALLBACK = "shared_cache_fallback" []
        "1 while this replica runs without the shared cache (Redis unreachable or the circuit breaker open).";
    CounterDef SHARED_CACHE_INVALIDATIONS = "shared_cache_invalidations_total" ["direction"]
        "Invalidations sent to, and acted on from, the other replicas.";
    CounterDef AUDIT_RECORDS = "audit_records_total" ["outcome"]
        "Audit records by outcome (failed: a write error, or a full queue in best-effort mode).";
    CounterDef AUDIT_WRITES = "audit_writes_total" []
        "Writes to the audit sink; each carries one or more records (group commit).";
}

/// The definition named `name` (as in [`Def::name`]), if any.
pub fn find(name: &str) -> Option<&'static Def> {
    ALL.iter().copied().find(|d| d.name == name)
}

/// The definition whose `# TYPE` line names `family` (without the prefix), if any.
pub fn by_family(family: &str) -> Option<&'static Def> {
    ALL.iter().copied().find(|d| d.family() == family)
}

/// The README's metrics table as (name, type) pairs: the rows of the table under `### Metrics`
/// whose first cell is a backquoted name, the type being the second cell's first word.
pub fn readme_table(readme: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with('#') {
            inside = line.trim() == "### Metrics";
            continue;
        }
        if !inside {
            continue;
        }
        let mut cells = line.split('|').map(str::trim).skip(1);
        let (Some(name), Some(kind)) = (cells.next(), cells.next()) else {
            continue;
        };
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        let kind = kind.split_whitespace().next().unwrap_or_default();
        rows.push((name.to_owned(), kind.to_owned()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = BTreeSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} defined twice", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.name.ends_with("_total"),
                d.kind == Kind::Counter,
                "{}: counters, and only counters, end in _total",
                d.name
            );
            assert!(d.help.ends_with('.'), "{}: help is a sentence", d.name);
        }
    }

    /// The README's table lists exactly the metrics defined here, with their types: a metric
    /// added, renamed or retyped without its row (or a row left behind) fails here.
    #[test]
    fn the_readme_table_lists_exactly_the_defined_metrics() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let table: BTreeSet<(String, String)> = readme_table(&readme).into_iter().collect();
        let defined: BTreeSet<(String, String)> = ALL
            .iter()
            .map(|d| (d.name.to_owned(), d.kind.word().to_owned()))
            .collect();
        let undocumented: Vec<_> = defined.difference(&table).collect();
        let stale: Vec<_> = table.difference(&defined).collect();
        assert!(
            undocumented.is_empty() && stale.is_empty(),
            "README.md's metrics table and src/metrics/catalog.rs differ:\n  \
             defined but not in the README (add a row): {undocumented:?}\n  \
             in the README but not defined (remove the row, or fix its name or type): {stale:?}"
        );
        assert_eq!(table.len(), ALL.len(), "a README row is duplicated");
    }

    #[test]
    fn the_table_parser_reads_names_and_types_only_from_the_metrics_section() {
        let readme = "## A\n| `x_total` | counter | | no |\n### Metrics\n\n| metric | type |\n| --- | --- |\n\
                      | `build_info` | info (gauge, 1) | `version` | v |\n| `a_total` | counter | | a |\n### Next\n| `y` | gauge | | no |\n";
        assert_eq!(
            readme_table(readme),
            [
                ("build_info".to_owned(), "info".to_owned()),
                ("a_total".to_owned(), "counter".to_owned())
            ]
        );
        assert_eq!(BUILD_INFO.0.family(), "build");
        assert_eq!(CACHE_HITS.0.family(), "cache_hits");
        assert_eq!(by_family("cache_hits"), Some(&CACHE_HITS.0));
        assert_eq!(find("cache_entries"), Some(&CACHE_ENTRIES.0));
    }
}
