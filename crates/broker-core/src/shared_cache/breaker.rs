//! A circuit breaker in front of Redis, so that while Redis is down or slow the requests do not
//! each pay the operation timeout: after `failures` consecutive failures it opens for a cooldown,
//! then lets one probe through (half-open); the probe's success closes it again.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::clock::SharedClock;

/// Where the breaker stands, as the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis answers: the cache is shared.
    Closed,
    /// Redis failed: every request runs L1-only until the cooldown ends.
    Open,
    /// The cooldown ended: one probe is out; the others stay L1-only until it answers.
    HalfOpen,
}

impl BreakerState {
    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: SystemTime },
    HalfOpen { probe_since: SystemTime },
}

/// The breaker. Time comes from the injected clock, so tests can move through the cooldown.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<Inner>,
    threshold: u32,
    cooldown: Duration,
    clock: SharedClock,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (at least 1), for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration, clock: SharedClock) -> Breaker {
        Breaker {
            state: Mutex::new(Inner::Closed { failures: 0 }),
            threshold: threshold.max(1),
            cooldown,
            clock,
        }
    }

    /// May a Redis operation be tried now? In half-open state only the first caller after the
    /// cooldown is let through (a probe that hangs is given up after one more cooldown).
    pub fn allow(&self) -> bool {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        match *s {
            Inner::Closed { .. } => true,
            Inner::Open { until } if now >= until => {
                *s = Inner::HalfOpen { probe_since: now };
                true
            }
            Inner::Open { .. } => false,
            Inner::HalfOpen { probe_since } if now >= probe_since + self.cooldown => {
                *s = Inner::HalfOpen { probe_since: now };
                true
            }
            Inner::HalfOpen { .. } => false,
        }
    }

    /// An operation succeeded: the breaker closes. Returns true if it was not closed before.
    pub fn success(&self) -> bool {
        let mut s = lock(&self.state);
        let was_open = !matches!(*s, Inner::Closed { .. });
        *s = Inner::Closed { failures: 0 };
        was_open
    }

    /// An operation failed. Returns true if this failure opened the breaker.
    pub fn failure(&self) -> bool {
        let now = self.clock.now();
        let mut s = lock(&self.state);
        match *s {
            Inner::Closed { failures } if failures + 1 < self.threshold => {
                *s = Inner::Closed {
                    failures: failures + 1,
                };
                false
            }
            Inner::Closed { .. } | Inner::HalfOpen { .. } => {
                *s = Inner::Open {
                    until: now + self.cooldown,
                };
                true
            }
            Inner::Open { .. } => false,
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        match *lock(&self.state) {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let clock = ManualClock::new(SystemTime::now());
        let b = Breaker::new(3, Duration::from_secs(5), clock.clone());
        assert!(b.allow());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert!(b.failure(), "third consecutive failure opens it");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        clock.advance(Duration::from_secs(5));
        assert!(b.allow(), "one probe after the cooldown");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one");
        assert!(b.failure(), "a failed probe opens it again");
        assert!(!b.allow());
        clock.advance(Duration::from_secs(5));
        assert!(b.allow());
        assert!(b.success(), "a good probe closes it");
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }
}
