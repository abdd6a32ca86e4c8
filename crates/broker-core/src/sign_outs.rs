//! Sign-outs at Tableau for sessions that left the cache, on a schedule that keeps other callers'
//! tokens valid.
//!
//! Two callers allowed the same key share one cached session. When one of them forces a refresh
//! (or asks for more remaining life, or the cache evicts the entry to make room), the old session
//! may still be in the other caller's hands, inside the `expires_at` it was promised. So a
//! replaced or evicted session is signed out only after a grace period
//! (`[cache] replaced_session_grace`), or at its `expires_at` if that comes first; never at once.
//! An expired session is signed out at once, as nobody may use it any more. (An invalidation
//! signs out at once too, in the broker: Tableau has already refused that token.)
//!
//! Waiting sign-outs are bounded (`[cache] max_pending_sign_outs`): when full, the one due
//! soonest runs early and is counted. Sign-outs run concurrently, at most
//! [`MAX_SIGN_OUTS_IN_FLIGHT`] at a time. Time comes from the injected clock; the worker looks at
//! it at least every [`TICK`], so a test that moves a `ManualClock` sees the effect promptly.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};

use crate::cache::{Credentials, Departure};
use crate::clock::SharedClock;

/// Most sign-outs sent to Tableau at once.
pub const MAX_SIGN_OUTS_IN_FLIGHT: usize = 8;

/// The longest the worker sleeps before looking at the clock again.
pub const TICK: Duration = Duration::from_millis(200);

/// Counters of the sign-out schedule, for the metrics exporter.
#[derive(Debug, Default)]
pub struct SignOutStats {
    scheduled: AtomicU64,
    early: AtomicU64,
    signed_out: AtomicU64,
    failed: AtomicU64,
}

/// A copy of [`SignOutStats`] as plain numbers, with the queue's current length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignOutSnapshot {
    /// Sessions handed to the schedule (expired, replaced or evicted).
    pub scheduled: u64,
    /// Sign-outs run before their grace period ended because the queue was full.
    pub early: u64,
    /// Sign-outs Tableau accepted.
    pub signed_out: u64,
    /// Sign-outs that failed (Tableau unreachable, or the session already gone).
    pub failed: u64,
    /// Sign-outs waiting for their time now.
    pub pending: u64,
}

#[derive(Default)]
struct Pending {
    /// Waiting sign-outs by due time (then arrival, to keep keys unique).
    waiting: BTreeMap<(SystemTime, u64), Arc<Credentials>>,
    /// Sign-outs to run now.
    due: VecDeque<Arc<Credentials>>,
    seq: u64,
}

/// The schedule of sign-outs. Fed by the cache's departures; drained by [`SignOutQueue::run`].
pub struct SignOutQueue {
    pending: Mutex<Pending>,
    notify: Notify,
    clock: SharedClock,
    grace: Mutex<(Duration, usize)>,
    stats: SignOutStats,
}

impl std::fmt::Debug for SignOutQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignOutQueue")
            .field("stats", &self.snapshot())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SignOutQueue {
    /// A queue where replaced and evicted sessions wait `grace` (at most until their
    /// `expires_at`), at most `max_pending` of them.
    pub fn new(clock: SharedClock, grace: Duration, max_pending: usize) -> Arc<SignOutQueue> {
        Arc::new(SignOutQueue {
            pending: Mutex::default(),
            notify: Notify::new(),
            clock,
            grace: Mutex::new((grace, max_pending.max(1))),
            stats: SignOutStats::default(),
        })
    }

    /// Applies new settings (a reload); sign-outs already waiting keep their time.
    pub fn configure(&self, grace: Duration, max_pending: usize) {
        *lock(&self.grace) = (grace, max_pending.max(1));
    }

    /// Schedules the sign-out of a session that left the cache.
    pub fn schedule(&self, c: Arc<Credentials>, why: Departure) {
        let now = self.clock.now();
        let (grace, max_pending) = *lock(&self.grace);
        self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
        let at = match why {
            Departure::Expired => now,
            Departure::Replaced | Departure::Evicted => (now + grace).min(c.expires_at),
        };
        {
            let mut p = lock(&self.pending);
            if at <= now {
                p.due.push_back(c);
            } else {
                p.seq += 1;
                let seq = p.seq;
                p.waiting.insert((at, seq), c);
                if p.waiting.len() > max_pending {
                    if let Some((_, first)) = p.waiting.pop_first() {
                        p.due.push_back(first);
                        self.stats.early.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.notify.notify_one();
    }

    /// Up to `max` sign-outs whose time has come, and when the next one is due.
    fn take_due(&self, max: usize) -> (Vec<Arc<Credentials>>, Option<SystemTime>) {
        let now = self.clock.now();
        let mut p = lock(&self.pending);
        let mut out = Vec::new();
        while out.len() < max {
            if let Some(c) = p.due.pop_front() {
                out.push(c);
                continue;
            }
            match p.waiting.first_key_value() {
                Some(((at, _), _)) if *at <= now => {
                    if let Some((_, c)) = p.waiting.pop_first() {
                        out.push(c);
                    }
                }
                _ => break,
            }
        }
        let next = if p.due.is_empty() {
            p.waiting.first_key_value().map(|((at, _), _)| *at)
        } else {
            Some(now)
        };
        (out, next)
    }

    /// The counters now.
    pub fn snapshot(&self) -> SignOutSnapshot {
        let pending = {
            let p = lock(&self.pending);
            (p.waiting.len() + p.due.len()) as u64
        };
        SignOutSnapshot {
            scheduled: self.stats.scheduled.load(Ordering::Relaxed),
            early: self.stats.early.load(Ordering::Relaxed),
            signed_out: self.stats.signed_out.load(Ordering::Relaxed),
            failed: self.stats.failed.load(Ordering::Relaxed),
            pending,
        }
    }

    /// Runs sign-outs as they fall due, at most [`MAX_SIGN_OUTS_IN_FLIGHT`] at once, until
    /// `sign_out` says the owner is gone (returns `None`) or nothing else holds the queue. `sign_out` resolves to whether
    /// Tableau accepted the sign-out.
    pub async fn run<F, Fut>(self: Arc<Self>, sign_out: F)
    where
        F: Fn(Arc<Credentials>) -> Option<Fut>,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let slots = Arc::new(Semaphore::new(MAX_SIGN_OUTS_IN_FLIGHT));
        loop {
            let (ready, next) = self.take_due(MAX_SIGN_OUTS_IN_FLIGHT);
            let busy = !ready.is_empty();
            for c in ready {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let Some(fut) = sign_out(c) else { return };
                let queue = Arc::clone(&self);
                tokio::spawn(async move {
                    let counter = if fut.await {
                        &queue.stats.signed_out
                    } else {
                        &queue.stats.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
            if busy {
                continue;
            }
            if Arc::strong_count(&self) == 1 {
                // Nothing can schedule a sign-out any more: the broker and its cache are gone.
                return;
            }
            let now = self.clock.now();
            let wait = next
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
                .unwrap_or(TICK)
                .min(TICK);
            tokio::select! {
                () = self.notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKey;
    use crate::clock::{Clock, ManualClock};
    use secrecy::SecretString;

    fn creds(token: &str, expires_at: SystemTime) -> Arc<Credentials> {
        let token = SecretString::from(token.to_owned());
        let fp = crate::audit::Fingerprinter::new();
        Arc::new(Credentials {
            key: CacheKey {
                site: Arc::from("s"),
                user: Arc::from("u"),
                scopes: Arc::from(Vec::new()),
            },
            digest: fp.digest(&token),
            token,
            site_luid: Arc::from("l"),
            site_content_url: Arc::from("c"),
            server_url: Arc::from("https://tableau.example.com"),
            content_url: Arc::from("c"),
            client_id: Arc::from("cid"),
            user_luid: String::from("u-1").into(),
            jti: uuid::Uuid::new_v4(),
            expires_at,
        })
    }

    #[test]
    fn replaced_sessions_wait_for_the_grace_or_their_expiry_and_expired_ones_do_not() {
        let clock = ManualClock::new(SystemTime::now());
        let q = SignOutQueue::new(clock.clone(), Duration::from_secs(300), 10);
        let now = clock.now();
        q.schedule(
            creds("a", now + Duration::from_secs(3600)),
            Departure::Replaced,
        );
        q.schedule(
            creds("b", now + Duration::from_secs(60)),
            Departure::Evicted,
        );
        q.schedule(
            creds("c", now + Duration::from_secs(3600)),
            Departure::Expired,
        );
        let (ready, next) = q.take_due(10);
        assert_eq!(ready.len(), 1, "only the expired one at once");
        assert_eq!(next, Some(now + Duration::from_secs(60)));
        clock.advance(Duration::from_secs(60));
        assert_eq!(q.take_due(10).0.len(), 1, "b at its expires_at");
        clock.advance(Duration::from_secs(239));
        assert!(q.take_due(10).0.is_empty());
        clock.advance(Duration::from_secs(1));
        assert_eq!(q.take_due(10).0.len(), 1, "a after the grace");
        assert_eq!(q.snapshot().pending, 0);
    }

    #[test]
    fn a_full_queue_runs_the_soonest_early_and_counts_it() {
        let clock = ManualClock::new(SystemTime::now());
        let q = SignOutQueue::new(clock.clone(), Duration::from_secs(300), 2);
        let late = clock.now() + Duration::from_secs(3600);
        for t in ["a", "b", "c"] {
            q.schedule(creds(t, late), Departure::Replaced);
            clock.advance(Duration::from_secs(1));
        }
        let s = q.snapshot();
        assert_eq!((s.early, s.pending), (1, 3));
        let (ready, _) = q.take_due(10);
        assert_eq!(ready.len(), 1);
        assert_eq!(q.snapshot().pending, 2, "bounded by max_pending_sign_outs");
    }
}
