//! The time source of expiry decisions, injected so tests move time by hand.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Tells the current wall-clock time. The [`Client`](crate::Client) reads it for every expiry
/// decision (is a cached token still good, is it time to refresh); back-off sleeps between retries
/// use Tokio's timer instead.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's clock ([`SystemTime::now`]): the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to, for tests of caching and refresh without sleeping.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use tableau_token_broker_client::{Clock, ManualClock};
///
/// let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now(), SystemTime::UNIX_EPOCH + Duration::from_secs(60));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock to `to` (which may be earlier).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
