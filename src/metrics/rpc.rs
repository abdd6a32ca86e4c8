//! Per-RPC counts and latencies, recorded by the gRPC layer ([`crate::grpc::observe`]): one
//! atomic add and one histogram observation per call, with the method and code pre-resolved to
//! array indexes, so the hot path allocates nothing and the `method` label stays bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Scrape, catalog};
use crate::stats::LatencyHistogram;

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

    pub(super) fn report(&self, s: &mut Scrape) {
        for m in RpcMethod::ALL {
            let Some(row) = self.counts.get(m.index()) else {
                continue;
            };
            for (code, c) in row.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let code = GRPC_CODES.get(code).copied().unwrap_or("UNKNOWN");
                    s.counter(&catalog::RPC_REQUESTS, &[m.label(), code], n);
                }
            }
        }
        for m in RpcMethod::ALL {
            let Some(h) = self.latency.get(m.index()) else {
                continue;
            };
            let snap = h.snapshot();
            if snap.count > 0 {
                s.histogram(&catalog::RPC_DURATION, &[m.label()], snap);
            }
        }
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
}
