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
pub(crate) struct Point {
    /// Completed requests per second.
    pub rps: f64,
    /// Latency, microseconds.
    pub p50_us: f64,
    /// Latency, microseconds.
    pub p99_us: f64,
    /// Latency, microseconds.
    pub p999_us: f64,
    /// The slowest request, microseconds (the median's over several runs).
    pub max_us: f64,
    /// Requests that failed (should be 0).
    pub errors: u64,
    /// Requests that succeeded.
    pub count: u64,
    /// CPU time of the whole process (load generator and servers, user and system) per
    /// completed request, microseconds; 0 where `/proc` cannot tell. Less disturbed than
    /// throughput by other work on the machine, since time spent waiting is not counted.
    pub cpu_us: f64,
}

impl Point {
    /// The median of several runs of the same point, figure by figure: one run disturbed by
    /// the rest of the machine moves it less than it moves a mean.
    pub(crate) fn median(points: &[Point]) -> Point {
        let med = |f: fn(&Point) -> f64| median(points.iter().map(f).collect());
        Point {
            rps: med(|p| p.rps),
            p50_us: med(|p| p.p50_us),
            p99_us: med(|p| p.p99_us),
            p999_us: med(|p| p.p999_us),
            max_us: med(|p| p.max_us),
            errors: points.iter().map(|p| p.errors).sum(),
            count: points.iter().map(|p| p.count).sum(),
            cpu_us: med(|p| p.cpu_us),
        }
    }
}

impl Point {
    /// Slices of one load, taken in turns with another load's slices, as one point: throughput
    /// over their summed time, CPU per request over their summed requests, latencies the median
    /// of the slices'.
    pub(crate) fn pooled(points: &[Point]) -> Point {
        let count: u64 = points.iter().map(|p| p.count).sum();
        let secs: f64 = points
            .iter()
            .filter(|p| p.rps > 0.0)
            .map(|p| p.count as f64 / p.rps)
            .sum();
        let cpu: f64 = points.iter().map(|p| p.cpu_us * p.count as f64).sum();
        let n = count.max(1) as f64;
        Point {
            rps: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            cpu_us: cpu / n,
            ..Point::median(points)
        }
    }
}

/// The median of some values (the mean of the middle two for an even count; 0 for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A new latency histogram in nanoseconds (1 ns to 100 s, 3 significant digits).
pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 100_000_000_000, 3)?)
}

/// Runs `call(i)` (where `i` counts up per task, starting from the task number) from
/// `concurrency` tasks for `duration`, after `warmup` of the same load that is not recorded.
pub(crate) async fn run<F, Fut, E>(
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
    let cpu_start = process_cpu();
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
    let mut p = summarize(&all, errors, elapsed);
    if let (Some(a), Some(b)) = (cpu_start, process_cpu()) {
        p.cpu_us = b.saturating_sub(a).as_secs_f64() * 1e6 / p.count.max(1) as f64;
    }
    p
}

/// User plus system CPU time of this process so far, from `/proc/self/stat` (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let mut rest = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Figures from a histogram of nanoseconds collected over `elapsed_s` seconds.
pub(crate) fn summarize(h: &Histogram<u64>, errors: u64, elapsed_s: f64) -> Point {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Point {
        rps: h.len() as f64 / elapsed_s,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: h.max() as f64 / 1000.0,
        errors,
        count: h.len(),
        cpu_us: 0.0,
    }
}
