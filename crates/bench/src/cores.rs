//! How long a cache line takes to go from one core to another and back: the machine's state that
//! moves the audited figures most. On a virtual machine it can change from run to run, as the
//! host places the virtual CPUs on cores that share a cache or on cores that do not; every
//! record handed from a call to the audit writer, and every task woken on the other worker,
//! pays it several times.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Round trips per trial: long enough to average out a preemption, short enough (about 10 to
/// 50 ms) to run before and after each section.
const TRIPS: u64 = 100_000;

/// A trial that takes longer than this found both threads on one core (the machine is busy):
/// it is dropped rather than reported.
const TRIAL_LIMIT: Duration = Duration::from_millis(500);

/// Trials per measurement; the median is reported.
const TRIALS: usize = 5;

/// One atomic alone on its cache line (and the adjacent one, which some CPUs fetch in pairs),
/// so that the flag and the stop signal never share a line.
#[repr(align(128))]
struct Line<T>(T);

/// The median round trip between two threads, in nanoseconds, as the OS placed them; `None`
/// when no trial finished in time (a busy machine, or a single core).
pub(crate) fn round_trip_ns() -> Option<f64> {
    let mut trials: Vec<f64> = (0..TRIALS).filter_map(|_| trial()).collect();
    if trials.is_empty() {
        return None;
    }
    trials.sort_by(f64::total_cmp);
    Some(trials[trials.len() / 2])
}

/// The round trip in words, for the report's header ("unmeasured" when [`round_trip_ns`] is
/// `None`).
pub(crate) fn shown(ns: Option<f64>) -> String {
    ns.map_or_else(|| "unmeasured".to_owned(), |ns| format!("{ns:.0} ns"))
}

/// One trial: this thread and another hand a counter back and forth `TRIPS` times.
fn trial() -> Option<f64> {
    let flag = Arc::new(Line(AtomicU64::new(0)));
    let stop = Arc::new(Line(AtomicBool::new(false)));
    let other = {
        let (flag, stop) = (Arc::clone(&flag), Arc::clone(&stop));
        std::thread::spawn(move || {
            for i in 0..TRIPS {
                while flag.0.load(Ordering::Acquire) != 2 * i + 1 {
                    if stop.0.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                flag.0.store(2 * i + 2, Ordering::Release);
            }
        })
    };
    let start = Instant::now();
    let mut finished = true;
    'trips: for i in 0..TRIPS {
        flag.0.store(2 * i + 1, Ordering::Release);
        let mut spins = 0u32;
        while flag.0.load(Ordering::Acquire) != 2 * i + 2 {
            spins = spins.wrapping_add(1);
            if spins % 4096 == 0 && start.elapsed() > TRIAL_LIMIT {
                finished = false;
                break 'trips;
            }
            std::hint::spin_loop();
        }
    }
    let elapsed = start.elapsed();
    stop.0.store(true, Ordering::Relaxed);
    let _ = other.join();
    finished.then(|| elapsed.as_nanos() as f64 / TRIPS as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round trip is measured and positive on a machine with two cores or more, and the
    /// header's words say so; a missing one reads "unmeasured".
    #[test]
    fn a_round_trip_is_measured_and_shown() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
            && let Some(ns) = round_trip_ns()
        {
            assert!(ns > 0.0);
            assert!(shown(Some(ns)).ends_with(" ns"));
        }
        assert_eq!(shown(None), "unmeasured");
    }
}
