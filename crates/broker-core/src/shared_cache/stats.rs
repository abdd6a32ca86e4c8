//! The shared cache's counters for the metrics exporter, and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

use super::breaker::BreakerState;

/// Counters for the metrics exporter: plain atomics, read with `SharedCacheStats::snapshot`.
#[derive(Debug, Default)]
pub struct SharedCacheStats {
    pub(super) l2_hits: AtomicU64,
    pub(super) l2_misses: AtomicU64,
    pub(super) leases_taken: AtomicU64,
    pub(super) lease_waits: AtomicU64,
    pub(super) lease_takeovers: AtomicU64,
    pub(super) lease_wait_timeouts: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) redis_errors: AtomicU64,
    pub(super) fallback_signins: AtomicU64,
    pub(super) breaker_opened: AtomicU64,
    pub(super) invalidations_sent: AtomicU64,
    pub(super) invalidations_received: AtomicU64,
}

/// The counters at one moment, as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCacheSnapshot {
    /// L1 misses answered from Redis.
    pub l2_hits: u64,
    /// L1 misses Redis had no good entry for.
    pub l2_misses: u64,
    /// Leases this replica took to sign in.
    pub leases_taken: u64,
    /// Times this replica waited for another replica's sign-in.
    pub lease_waits: u64,
    /// Leases taken after waiting: the holder died or failed.
    pub lease_takeovers: u64,
    /// Waits that reached `lease_wait` and signed in locally.
    pub lease_wait_timeouts: u64,
    /// Entries written to Redis.
    pub published: u64,
    /// Redis operations that failed or timed out.
    pub redis_errors: u64,
    /// Sign-ins done L1-only because Redis failed or the breaker was open.
    pub fallback_signins: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Invalidation messages sent.
    pub invalidations_sent: u64,
    /// Invalidation messages from other replicas acted on.
    pub invalidations_received: u64,
    /// The fallback state: `Closed` shares, `Open` and `HalfOpen` run L1-only.
    pub breaker: BreakerState,
    /// A Redis connection has been made (it reconnects by itself after that).
    pub connected: bool,
}

impl SharedCacheSnapshot {
    /// True while the broker runs L1-only because of Redis trouble.
    pub fn fallback(&self) -> bool {
        self.breaker != BreakerState::Closed || !self.connected
    }
}

pub(super) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl SharedCacheStats {
    /// The counters now, with the breaker's state and whether a connection was made. Destructures
    /// every counter, so a new one does not compile until the snapshot carries it.
    pub(super) fn snapshot(&self, breaker: BreakerState, connected: bool) -> SharedCacheSnapshot {
        let SharedCacheStats {
            l2_hits,
            l2_misses,
            leases_taken,
            lease_waits,
            lease_takeovers,
            lease_wait_timeouts,
            published,
            redis_errors,
            fallback_signins,
            breaker_opened,
            invalidations_sent,
            invalidations_received,
        } = self;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SharedCacheSnapshot {
            l2_hits: get(l2_hits),
            l2_misses: get(l2_misses),
            leases_taken: get(leases_taken),
            lease_waits: get(lease_waits),
            lease_takeovers: get(lease_takeovers),
            lease_wait_timeouts: get(lease_wait_timeouts),
            published: get(published),
            redis_errors: get(redis_errors),
            fallback_signins: get(fallback_signins),
            breaker_opened: get(breaker_opened),
            invalidations_sent: get(invalidations_sent),
            invalidations_received: get(invalidations_received),
            breaker,
            connected,
        }
    }
}
