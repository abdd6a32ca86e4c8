//! The domain's metric sources: each reads a `snapshot()` at scrape time and reports it against
//! the definitions in [`super::catalog`]. The server only wires them (`metrics.add_source(...)`);
//! none holds the broker alive.

use std::sync::{Arc, Weak};

use super::catalog as c;
use super::{Scrape, Source};
use crate::broker::Broker;
use crate::reload::ReloadStats;
use crate::transport::{ConnectionStats, HandshakeStats, TlsReloader};

/// The broker's cache, sign-ins, sign-outs, limits, audit sink, shared cache and configuration
/// generation. Reports nothing once the broker is gone.
pub fn broker(broker: Weak<Broker>) -> impl Source {
    move |s: &mut Scrape| {
        if let Some(b) = broker.upgrade() {
            report_broker(s, &b);
        }
    }
}

fn report_broker(s: &mut Scrape, b: &Broker) {
    // Settles moka's pending work so the entry count is exact, as housekeeping would.
    b.cache().run_pending_tasks();
    let cache = b.cache().stats().snapshot();
    s.counter(&c::CACHE_HITS, &[], cache.hits);
    s.counter(&c::CACHE_MISSES, &[], cache.misses);
    s.counter(&c::CACHE_COALESCED_WAITERS, &[], cache.coalesced);
    for (cause, n) in [
        ("expired", cache.evicted_expired),
        ("size", cache.evicted_size),
        ("replaced", cache.evicted_replaced),
        ("invalidated", cache.evicted_invalidated),
    ] {
        s.counter(&c::CACHE_EVICTIONS, &[cause], n);
    }
    s.gauge(&c::CACHE_ENTRIES, &[], b.cache().len() as f64);
    s.gauge(&c::SIGN_INS_IN_FLIGHT, &[], b.cache().inflight() as f64);
    // Both labels bounded: two directions, reasons from the broker's fixed vocabulary of refusals.
    for ((direction, reason), n) in &b.divergences() {
        s.counter(&c::POLICY_CANDIDATE_DIVERGENCE, &[direction, reason], *n);
    }
    let si = b.sign_in_stats().snapshot();
    for ((site, outcome), n) in &si.sign_ins {
        s.counter(&c::SIGN_INS, &[site, outcome], *n);
    }
    s.histogram(&c::SIGN_IN_DURATION, &[], si.latency);
    for (outcome, n) in &si.sign_outs {
        s.counter(&c::SIGN_OUTS, &[outcome], *n);
    }
    for (outcome, n) in [
        ("started", si.refreshes_started),
        ("failed", si.refreshes_failed),
    ] {
        s.counter(&c::CACHE_REFRESH_AHEAD, &[outcome], n);
    }
    let audit = b.audit().stats().snapshot();
    for (outcome, n) in [("written", audit.written), ("failed", audit.failed)] {
        s.counter(&c::AUDIT_RECORDS, &[outcome], n);
    }
    let limits = b.limit_stats().snapshot();
    for (limit, n) in [
        ("sign_in_rate", limits.sign_ins_rate_limited),
        ("site_concurrency", limits.site_sign_ins_busy),
    ] {
        s.counter(&c::REQUESTS_REFUSED, &[limit], n);
    }
    s.counter(&c::SECRET_FALLBACKS, &[], b.secret_fallbacks());
    s.counter(&c::NEGATIVE_CACHE_HITS, &[], limits.negative_cache_hits);
    let so = b.sign_out_stats();
    s.counter(&c::SIGN_OUTS_EARLY, &[], so.early);
    s.gauge(&c::SIGN_OUTS_PENDING, &[], so.pending as f64);
    if let Some(sc) = b.shared_cache() {
        let x = sc.snapshot();
        for (result, n) in [("hit", x.l2_hits), ("miss", x.l2_misses)] {
            s.counter(&c::SHARED_CACHE_LOOKUPS, &[result], n);
        }
        for (event, n) in [
            ("taken", x.leases_taken),
            ("waited", x.lease_waits),
            ("takeover", x.lease_takeovers),
            ("wait_timeout", x.lease_wait_timeouts),
        ] {
            s.counter(&c::SHARED_CACHE_LEASES, &[event], n);
        }
        s.counter(&c::SHARED_CACHE_ERRORS, &[], x.redis_errors);
        s.counter(&c::SHARED_CACHE_FALLBACK_SIGN_INS, &[], x.fallback_signins);
        s.gauge(
            &c::SHARED_CACHE_FALLBACK,
            &[],
            if x.fallback() { 1.0 } else { 0.0 },
        );
        for (direction, n) in [
            ("sent", x.invalidations_sent),
            ("received", x.invalidations_received),
        ] {
            s.counter(&c::SHARED_CACHE_INVALIDATIONS, &[direction], n);
        }
    }
    s.counter(&c::AUDIT_WRITES, &[], audit.batches);
    s.gauge(&c::CONFIG_GENERATION, &[], b.generation() as f64);
}

/// Client connections: open now, and those closed to protect the broker.
pub fn connections(stats: Arc<ConnectionStats>) -> impl Source {
    move |s: &mut Scrape| {
        let conns = stats.snapshot();
        s.gauge(&c::CONNECTIONS_OPEN, &[], conns.open as f64);
        for (reason, n) in [
            ("max_connections", conns.refused),
            ("handshake_dropped", conns.handshakes_dropped),
        ] {
            s.counter(&c::CONNECTIONS_REFUSED, &[reason], n);
        }
    }
}

/// TLS handshakes that failed or were dropped, by reason.
pub fn handshakes(stats: Arc<HandshakeStats>) -> impl Source {
    move |s: &mut Scrape| {
        let h = stats.snapshot();
        for (reason, n) in [
            ("closed", h.closed),
            ("failed", h.failed),
            ("timeout", h.timed_out),
            ("no_identity", h.no_identity),
            ("no_caller_entry", h.unmatched_closed),
        ] {
            s.counter(&c::TLS_HANDSHAKE_FAILURES, &[reason], n);
        }
    }
}

/// The end dates of the certificates in force.
pub fn certificates(tls: TlsReloader) -> impl Source {
    move |s: &mut Scrape| {
        if let Some(v) = tls.validity() {
            for (cert, t) in [
                ("server", v.server_not_after),
                ("client_ca", v.client_ca_not_after),
            ] {
                s.gauge(&c::CERTIFICATE_NOT_AFTER, &[cert], t as f64);
            }
        }
    }
}

/// Reloads by outcome, when the configuration in force was loaded, and whether the last attempt
/// failed (a bad edit that would otherwise stay latent until the next start).
pub fn reloads(stats: Arc<ReloadStats>) -> impl Source {
    move |s: &mut Scrape| {
        let r = stats.snapshot();
        for (outcome, n) in [("ok", r.ok), ("error", r.error)] {
            s.counter(&c::RELOADS, &[outcome], n);
        }
        s.gauge(
            &c::CONFIG_LAST_RELOAD_SUCCESS,
            &[],
            r.last_success_unix as f64,
        );
        s.gauge(
            &c::CONFIG_RELOAD_FAILED,
            &[],
            if r.last_failed { 1.0 } else { 0.0 },
        );
    }
}
