//! Limits that protect Tableau from sign-in floods, checked only when a sign-in is about to start
//! (a cache miss or a forced refresh), never on a cache hit:
//!
//! - a token bucket per caller entry, on the injected clock, so one caller cannot sign in faster
//!   than its configured rate however many users or force refreshes it asks for;
//! - a cap on sign-ins in flight per site, waited on briefly ([`SITE_QUEUE_WAIT`]) then refused;
//!   one caller entry holds at most half of it (rounded up), so an entry flooding a site leaves
//!   slots for the others (issue 24, point 10);
//! - a short negative cache per key for failures that retrying cannot fix (unknown user, connected
//!   app misconfigured), so a bad request repeated does not reach Tableau every time.
//!
//! A sign-in is charged to the caller entry whose call caused it. When an entry's
//! InvalidateCredentials drops a session that other entries share, the next sign-in for that key
//! is that entry's doing and is charged to it, not to whoever asks next
//! ([`SignInLimits::charge_next_sign_in`], issue 24, point 3).
//!
//! Refusals are counted in [`LimitStats`] for the metrics exporter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an invalidation's charge for the next sign-in of its key is kept when nobody asks
/// for the key again.
pub const CHARGE_TTL: Duration = Duration::from_secs(15 * 60);

use crate::cache::{CacheKey, KeyRef};
use crate::clock::SharedClock;
use crate::config::{LimitsConfig, SignInRate};
use crate::error::BrokerError;

/// How long a sign-in waits for a free slot of its site's concurrency cap before it is refused.
/// Short, so a caller gets a clear answer well inside a typical gRPC deadline, yet long enough to
/// ride out a burst that Tableau answers quickly.
pub const SITE_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Most keys remembered in the negative cache; the least recently used are forgotten first.
pub const MAX_NEGATIVE_ENTRIES: u64 = 10_000;

/// Refusals and negative-cache answers, counted for the metrics exporter.
#[derive(Debug, Default)]
pub struct LimitStats {
    rate_limited: AtomicU64,
    site_busy: AtomicU64,
    negative_hits: AtomicU64,
}

/// A copy of [`LimitStats`] as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSnapshot {
    /// Sign-ins refused because the caller entry's token bucket was empty.
    pub sign_ins_rate_limited: u64,
    /// Sign-ins refused because the site had `max_concurrent_sign_ins` in flight for too long.
    pub site_sign_ins_busy: u64,
    /// Requests answered with a remembered failure instead of a sign-in.
    pub negative_cache_hits: u64,
}

impl LimitStats {
    /// The counters now.
    pub fn snapshot(&self) -> LimitSnapshot {
        LimitSnapshot {
            sign_ins_rate_limited: self.rate_limited.load(Ordering::Relaxed),
            site_sign_ins_busy: self.site_busy.load(Ordering::Relaxed),
            negative_cache_hits: self.negative_hits.load(Ordering::Relaxed),
        }
    }
}

/// A token bucket on the injected clock: `tokens` refill at the rate given on each take.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: SystemTime,
}

impl Bucket {
    fn full(rate: SignInRate, now: SystemTime) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: SignInRate, now: SystemTime) -> Result<(), Duration> {
        let elapsed = now.duration_since(self.last).unwrap_or(Duration::ZERO);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * rate.per_second).min(f64::from(rate.burst));
        if now > self.last {
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }
}

/// A failure remembered for a key until `until` (by the injected clock).
#[derive(Debug, Clone)]
struct Remembered {
    error: BrokerError,
    until: SystemTime,
}

type FastHash = foldhash::fast::RandomState;

/// Semaphores by name (a site, or a site and a caller entry), each with the size it was made for.
type Semaphores<K> = Mutex<HashMap<K, (usize, Arc<Semaphore>), FastHash>>;

/// The sign-in limits of one broker. State (buckets, site slots, remembered failures) outlives
/// configuration reloads; the numbers come from the configuration in force at each check.
pub struct SignInLimits {
    buckets: Mutex<HashMap<String, Bucket, FastHash>>,
    sites: Semaphores<String>,
    /// Per (site, caller entry): the entry's share of the site's cap.
    shares: Semaphores<(String, String)>,
    /// Keys whose next sign-in is charged to another entry than the caller's (an invalidation).
    charges: moka::sync::Cache<CacheKey, (String, SystemTime), FastHash>,
    negative: moka::sync::Cache<CacheKey, Remembered, FastHash>,
    clock: SharedClock,
    stats: Arc<LimitStats>,
}

impl std::fmt::Debug for SignInLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLimits")
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SignInLimits {
    /// Limits keeping time by `clock`.
    pub fn new(clock: SharedClock) -> SignInLimits {
        SignInLimits {
            buckets: Mutex::default(),
            sites: Mutex::default(),
            shares: Mutex::default(),
            charges: moka::sync::Cache::builder()
                .max_capacity(MAX_NEGATIVE_ENTRIES)
                .build_with_hasher(FastHash::default()),
            negative: moka::sync::Cache::builder()
                .max_capacity(MAX_NEGATIVE_ENTRIES)
                .build_with_hasher(FastHash::default()),
            clock,
            stats: Arc::default(),
        }
    }

    /// The refusal counters.
    pub fn stats(&self) -> &Arc<LimitStats> {
        &self.stats
    }

    /// Charges the next sign-in for `key` to the caller entry `entry` (its identity pattern as
    /// written), whoever asks for the key next: `entry` invalidated the session that others
    /// shared, so the sign-in that replaces it is its doing. Kept at most [`CHARGE_TTL`].
    pub fn charge_next_sign_in(&self, key: &CacheKey, entry: &str) {
        self.charges.insert(
            key.clone(),
            (entry.to_owned(), self.clock.now() + CHARGE_TTL),
        );
    }

    /// Checks that a sign-in for `key`, asked for by the caller entry `caller` (its identity
    /// pattern as written), may start: a failure remembered for the key is returned as it was,
    /// then the token bucket of the entry that caused it must have a token: the caller's, or the
    /// entry's whose invalidation emptied the key ([`Self::charge_next_sign_in`]).
    pub fn admit(
        &self,
        limits: &LimitsConfig,
        caller: &str,
        key: KeyRef<'_>,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        if let Some(r) = self.negative.get(&key) {
            if r.until > now {
                self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
                return Err(r.error);
            }
        }
        let charged = self
            .charges
            .remove(&key)
            .filter(|(_, until)| *until > now)
            .map(|(entry, _)| entry);
        let caller = charged.as_deref().unwrap_or(caller);
        let rate = limits.rate_for(caller);
        let mut buckets = lock(&self.buckets);
        let taken = match buckets.get_mut(caller) {
            Some(b) => b.take(rate, now),
            None => {
                let mut b = Bucket::full(rate, now);
                let taken = b.take(rate, now);
                buckets.insert(caller.to_owned(), b);
                taken
            }
        };
        drop(buckets);
        taken.map_err(|retry_after| {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(caller_entry = %caller, site = %key.site, retry_after_ms = retry_after.as_millis() as u64, "sign-in refused: caller entry over its sign-in rate");
            BrokerError::SignInRateLimited {
                caller: caller.to_owned(),
                per_second: rate.per_second,
                burst: rate.burst,
                retry_after,
            }
        })
    }

    /// The concurrency cap of a site, sized by the configuration in force (a new size takes
    /// effect for new sign-ins; those in flight finish under the old one), and the share of it
    /// that the caller entry `entry` may hold: [`entry_share`].
    pub fn site_slots(&self, limits: &LimitsConfig, site: &str, entry: &str) -> SiteSlots {
        let max = limits.max_concurrent_sign_ins;
        let sem = {
            let mut sites = lock(&self.sites);
            match sites.get(site) {
                Some((n, s)) if *n == max => Arc::clone(s),
                _ => {
                    let s = Arc::new(Semaphore::new(max));
                    sites.insert(site.to_owned(), (max, Arc::clone(&s)));
                    s
                }
            }
        };
        let share = entry_share(max);
        let mine = {
            let mut shares = lock(&self.shares);
            let k = (site.to_owned(), entry.to_owned());
            match shares.get(&k) {
                Some((n, s)) if *n == share => Arc::clone(s),
                _ => {
                    let s = Arc::new(Semaphore::new(share));
                    shares.insert(k, (share, Arc::clone(&s)));
                    s
                }
            }
        };
        SiteSlots {
            site: site.to_owned(),
            max,
            share,
            sem,
            mine,
            stats: Arc::clone(&self.stats),
        }
    }

    /// A handle that can remember failures from a sign-in task.
    pub fn rememberer(&self) -> Rememberer {
        Rememberer {
            negative: self.negative.clone(),
            clock: self.clock.clone(),
        }
    }

    /// Forgets every remembered failure: after a reload the operator may have fixed the cause.
    pub fn forget_failures(&self) {
        self.negative.invalidate_all();
    }
}

/// Remembers sign-in failures from inside a sign-in task, which outlives the request.
#[derive(Clone)]
pub struct Rememberer {
    negative: moka::sync::Cache<CacheKey, Remembered, FastHash>,
    clock: SharedClock,
}

impl std::fmt::Debug for Rememberer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rememberer").finish_non_exhaustive()
    }
}

impl Rememberer {
    /// Remembers a failure for `key` for `ttl` if retrying cannot fix it (unknown user,
    /// misconfigured app); anything else (Tableau down, 5xx, timeouts, rate limiting) is not.
    pub fn remember(&self, ttl: Duration, key: &CacheKey, error: &BrokerError) {
        if ttl.is_zero() || !is_permanent(error) {
            return;
        }
        self.negative.insert(
            key.clone(),
            Remembered {
                error: error.clone(),
                until: self.clock.now() + ttl,
            },
        );
    }
}

/// Failures that the same request will meet again until someone changes Tableau or the broker.
fn is_permanent(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::UserNotFound { .. } | BrokerError::AppMisconfigured { .. }
    )
}

/// The most slots of a site's cap (`max_concurrent_sign_ins`) one caller entry may hold: half,
/// rounded up, so that an entry flooding the site leaves slots for every other entry (a cap of 1
/// cannot be shared).
pub fn entry_share(max: usize) -> usize {
    max.div_ceil(2).max(1)
}

/// One site's concurrency cap and the caller entry's share of it, ready to be waited on by a
/// sign-in task.
#[derive(Debug)]
pub struct SiteSlots {
    site: String,
    max: usize,
    share: usize,
    sem: Arc<Semaphore>,
    mine: Arc<Semaphore>,
    stats: Arc<LimitStats>,
}

/// A slot of a site's cap and of the entry's share of it; both are given back when dropped.
#[derive(Debug)]
pub struct SitePermit {
    _mine: OwnedSemaphorePermit,
    _site: OwnedSemaphorePermit,
}

impl SiteSlots {
    /// A slot of the entry's share, then of the site's cap, waiting at most [`SITE_QUEUE_WAIT`]
    /// for both; then `SiteSignInsBusy`. An entry over its share waits for its own sign-ins,
    /// never ahead of another entry's.
    pub async fn acquire(self) -> Result<SitePermit, BrokerError> {
        let both = async {
            let mine = Arc::clone(&self.mine).acquire_owned().await.ok()?;
            let site = Arc::clone(&self.sem).acquire_owned().await.ok()?;
            Some(SitePermit {
                _mine: mine,
                _site: site,
            })
        };
        match tokio::time::timeout(SITE_QUEUE_WAIT, both).await {
            Ok(Some(p)) => Ok(p),
            _ => {
                self.stats.site_busy.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(site = %self.site, max_concurrent_sign_ins = self.max, entry_share = self.share, "sign-in refused: site (or this caller entry's share of it) has its cap of sign-ins in flight");
                Err(BrokerError::SiteSignInsBusy {
                    site: self.site,
                    max: self.max,
                    retry_after: SITE_QUEUE_WAIT,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_refills_on_the_injected_clock() {
        let rate = SignInRate {
            per_second: 2.0,
            burst: 3,
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut b = Bucket::full(rate, t0);
        for _ in 0..3 {
            assert!(b.take(rate, t0).is_ok());
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(rate, t0 + Duration::from_millis(499)).is_err());
        assert!(b.take(rate, t0 + Duration::from_millis(500)).is_ok());
        // A long pause refills to the burst, no further.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.take(rate, later).is_ok());
        }
        assert!(b.take(rate, later).is_err());
        // A clock that steps back refills nothing and does not panic.
        assert!(b.take(rate, t0).is_err());
    }
}
