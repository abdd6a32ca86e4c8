//! The load generator: `concurrency` tasks, each keeping one request in flight, spread over the
//! given clients (one HTTP/2 connection each), for a fixed time; latencies go to an HDR
//! histogram.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What one load point measured.
#[derive(Debug, Clone)]
pub struct Point {
    /// Completed requests per second.
    pub rps: f64,
    /// Latency, microseconds.
    pub p50_us: f64,
    /// Latency, microseconds.
    pub p99_us: f64,
    /// Latency, microseconds.
    pub p999_us: f64,
    /// Requests that failed (should be 0).
    pub errors: u64,
    /// Requests that succeeded.
    pub count: u64,
}

impl Point {
    /// The mean of several runs of the same point (figure by figure).
    pub fn mean(points: &[Point]) -> Point {
        let n = points.len().max(1) as f64;
        let sum = |f: fn(&Point) -> f64| points.iter().map(f).sum::<f64>() / n;
        Point {
            rps: sum(|p| p.rps),
            p50_us: sum(|p| p.p50_us),
            p99_us: sum(|p| p.p99_us),
            p999_us: sum(|p| p.p999_us),
            errors: points.iter().map(|p| p.errors).sum(),
            count: points.iter().map(|p| p.count).sum(),
        }
    }
}

/// A new latency histogram in nanoseconds (1 ns to 100 s, 3 significant digits).
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 100_000_000_000, 3)?)
}

/// Runs `call(i)` (where `i` counts up per task, starting from the task number) from
/// `concurrency` tasks for `duration`, after `warmup` of the same load that is not recorded.
pub async fn run<F, Fut, E>(
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    call: F,
) -> anyhow::Result<Point>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let call = Arc::new(call);
    let empty = histogram()?;
    if !warmup.is_zero() {
        once(concurrency, warmup, Arc::clone(&call), &empty).await;
    }
    Ok(once(concurrency, duration, call, &empty).await)
}

async fn once<F, Fut, E>(
    concurrency: usize,
    duration: Duration,
    call: Arc<F>,
    empty: &Histogram<u64>,
) -> Point
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let call = Arc::clone(&call);
            let stop = Arc::clone(&stop);
            let mut h = empty.clone();
            tokio::spawn(async move {
                let mut errors = 0u64;
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let ok = call(i).await.is_ok();
                    let ns = t0.elapsed().as_nanos() as u64;
                    if ok {
                        h.saturating_record(ns.max(1));
                    } else {
                        errors += 1;
                    }
                    i += concurrency;
                }
                (h, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = empty.clone();
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = all.add(&h);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    summarize(&all, errors, elapsed)
}

/// Figures from a histogram of nanoseconds collected over `elapsed_s` seconds.
pub fn summarize(h: &Histogram<u64>, errors: u64, elapsed_s: f64) -> Point {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Point {
        rps: h.len() as f64 / elapsed_s,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        errors,
        count: h.len(),
    }
}
