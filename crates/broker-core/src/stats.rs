//! Plain, lock-free counters that domain modules keep about themselves, and read back as plain
//! numbers with `snapshot()`. They know nothing of Prometheus: the broker's `metrics` module reads
//! them at scrape time, so the domain stays free of any metrics crate and the hot path pays one
//! atomic add per event.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: from half a millisecond (a cache hit) to ten
/// seconds (a slow Tableau sign-in), roughly ×2.5 apart.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUCKETS: usize = LATENCY_BUCKETS.len();

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`]): one atomic add per bucket,
/// count and sum, and no lock, so recording one observation per request stays cheap.
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds_ns: [u64; BUCKETS],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram as plain numbers: cumulative counts per upper bound (seconds), the total count
/// and the sum of all observations in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, seconds.
    pub sum: f64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        LatencyHistogram {
            bounds_ns: LATENCY_BUCKETS.map(|s| (s * 1e9) as u64),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Counters keyed by a small, bounded label set (a site name and an outcome, say), for events
/// that happen at most once per sign-in rather than once per request: a mutex is fine there.
#[derive(Debug)]
pub struct LabeledCounters<K: Ord> {
    counts: Mutex<BTreeMap<K, u64>>,
}

impl<K: Ord> Default for LabeledCounters<K> {
    fn default() -> Self {
        LabeledCounters {
            counts: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<K: Ord + Clone> LabeledCounters<K> {
    /// Adds one to `key`'s count.
    pub fn inc(&self, key: K) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }

    /// Every key seen so far with its count, in key order.
    pub fn snapshot(&self) -> Vec<(K, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_bounds_inclusive() {
        let h = LatencyHistogram::new();
        h.observe(Duration::from_micros(500)); // exactly the first bound
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[3], (0.005, 2));
        assert_eq!(s.buckets[BUCKETS - 1], (10.0, 2));
        assert_eq!(s.buckets[BUCKETS], (f64::INFINITY, 3));
        assert!((s.sum - 60.0035).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn labeled_counters_count_per_key() {
        let c = LabeledCounters::default();
        c.inc(("finance", "ok"));
        c.inc(("finance", "ok"));
        c.inc(("finance", "401001"));
        assert_eq!(
            c.snapshot(),
            vec![(("finance", "401001"), 1), (("finance", "ok"), 2)]
        );
    }
}
