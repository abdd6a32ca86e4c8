//! The in-process credentials cache: one slot per request (site, user, scopes), refresh-ahead,
//! and single flight.
//!
//! A slot holds the last credentials and, while one runs, the fetch that will replace them, as a
//! shared future every caller of the slot awaits. The fetch runs on a task of its own, so it
//! finishes (and fills the slot) even when the callers that wanted it have gone.
//!
//! With `left` the time until the cached token's `expires_at` by the [`Clock`]:
//! - `left > min_remaining` (the caller's): the cached token is returned at once. When also
//!   `left <= window`, a background refresh starts unless one runs (or one failed less than
//!   [`REFRESH_RETRY`] ago). `window` is the client's refresh-ahead time, at most half the life the
//!   token had when it arrived, so a short-lived token is not refreshed on every call.
//! - otherwise the caller waits for the running fetch, or starts one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::error::Error;
use crate::messages::{Claims, Credentials, CredentialsRequest};

/// How long after a failed background refresh the next one may start (the old token is served
/// meanwhile).
pub(crate) const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// Slots kept before expired ones are dropped.
const MAX_SLOTS: usize = 1024;

/// What the cache tells subscribers ([`Client::subscribe`](crate::Client::subscribe)): for
/// metrics, logs, and tests that wait for a refresh instead of sleeping.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CacheEvent {
    /// Credentials arrived from the broker and are cached.
    Fetched {
        /// The request's site.
        site: String,
        /// The request's user.
        user: String,
        /// True for a refresh-ahead (the old token was served meanwhile), false for a miss.
        refresh_ahead: bool,
        /// The new token's `expires_at`.
        expires_at: SystemTime,
    },
    /// A background refresh failed; the old token is still served until its `min_remaining`
    /// point, and the refresh is tried again after a short pause.
    RefreshFailed {
        /// The request's site.
        site: String,
        /// The request's user.
        user: String,
        /// Why.
        error: Error,
    },
    /// A token was dropped from the cache because Tableau refused it (or the caller said so).
    Evicted {
        /// The request's site.
        site: String,
        /// The request's user.
        user: String,
    },
}

/// A cache key: what the broker's answer depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) site: String,
    pub(crate) user: String,
    /// Deduplicated and sorted.
    pub(crate) scopes: Vec<String>,
    /// Normalized: sessions with different claims are never shared.
    pub(crate) claims: Claims,
}

/// What a fetch is asked for.
#[derive(Debug, Clone)]
pub(crate) struct Fetch {
    /// The least life the broker's token must have.
    pub(crate) min_remaining: Duration,
    /// The token this fetch replaces, if any: a fetch that gets it back must insist.
    pub(crate) replacing: Option<SecretString>,
    /// True for a background refresh.
    pub(crate) refresh_ahead: bool,
}

/// Calls the broker for a key.
pub(crate) type FetchFn =
    Arc<dyn Fn(Key, Fetch) -> BoxFuture<'static, Result<Credentials, Error>> + Send + Sync>;

type Inflight = Shared<BoxFuture<'static, Result<Credentials, Error>>>;

struct Entry {
    creds: Credentials,
    received_at: SystemTime,
}

#[derive(Default)]
struct Slot {
    cached: Option<Entry>,
    inflight: Option<Inflight>,
    refresh_not_before: Option<SystemTime>,
}

pub(crate) struct Cache {
    clock: Arc<dyn Clock>,
    refresh_ahead: Duration,
    fetch: FetchFn,
    slots: Mutex<HashMap<Key, Slot>>,
    events: broadcast::Sender<CacheEvent>,
}

fn left(expires_at: SystemTime, now: SystemTime) -> Duration {
    expires_at.duration_since(now).unwrap_or(Duration::ZERO)
}

impl Cache {
    pub(crate) fn new(clock: Arc<dyn Clock>, refresh_ahead: Duration, fetch: FetchFn) -> Self {
        Cache {
            clock,
            refresh_ahead,
            fetch,
            slots: Mutex::new(HashMap::new()),
            events: broadcast::channel(256).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.events.subscribe()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refresh-ahead window of an entry.
    fn window(&self, e: &Entry) -> Duration {
        self.refresh_ahead
            .min(left(e.creds.expires_at, e.received_at) / 2)
    }

    /// Credentials for `key` with more than `min_remaining` left, from the cache or the one
    /// fetch in flight for it.
    pub(crate) async fn get(
        self: &Arc<Self>,
        key: &Key,
        min_remaining: Duration,
    ) -> Result<Credentials, Error> {
        let waiting = {
            let mut slots = self.slots();
            let now = self.clock.now();
            if !slots.contains_key(key) {
                if slots.len() >= MAX_SLOTS {
                    slots.retain(|_, s| {
                        s.inflight.is_some()
                            || s.cached.as_ref().is_some_and(|e| e.creds.expires_at > now)
                    });
                }
                slots.insert(key.clone(), Slot::default());
            }
            let Some(slot) = slots.get_mut(key) else {
                return Err(Error::Background("cache slot vanished".into()));
            };
            if let Some(e) = &slot.cached {
                let left = left(e.creds.expires_at, now);
                if left > min_remaining {
                    let window = self.window(e);
                    let may_refresh = slot.refresh_not_before.is_none_or(|t| now >= t);
                    if left <= window && slot.inflight.is_none() && may_refresh {
                        let fetch = Fetch {
                            min_remaining: window,
                            replacing: Some(e.creds.token.clone()),
                            refresh_ahead: true,
                        };
                        slot.inflight = Some(self.start(key.clone(), fetch));
                    }
                    return Ok(e.creds.clone());
                }
            }
            match &slot.inflight {
                Some(f) => f.clone(),
                None => {
                    let fetch = Fetch {
                        min_remaining,
                        replacing: slot.cached.as_ref().map(|e| e.creds.token.clone()),
                        refresh_ahead: false,
                    };
                    let f = self.start(key.clone(), fetch);
                    slot.inflight = Some(f.clone());
                    f
                }
            }
        };
        waiting.await
    }

    /// Starts a fetch on a task of its own; the slot is filled when it ends.
    fn start(self: &Arc<Self>, key: Key, fetch: Fetch) -> Inflight {
        let refresh_ahead = fetch.refresh_ahead;
        let call = (self.fetch)(key.clone(), fetch);
        let cache = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = call.await;
            cache.settle(&key, &result, refresh_ahead);
            result
        });
        async move {
            task.await
                .map_err(|e| Error::Background(e.to_string()))
                .and_then(|r| r)
        }
        .boxed()
        .shared()
    }

    /// Puts a fetch's answer into its slot.
    fn settle(&self, key: &Key, result: &Result<Credentials, Error>, refresh_ahead: bool) {
        let now = self.clock.now();
        let mut slots = self.slots();
        let slot = slots.entry(key.clone()).or_default();
        slot.inflight = None;
        let event = match result {
            Ok(c) => {
                slot.cached = Some(Entry {
                    creds: c.clone(),
                    received_at: now,
                });
                slot.refresh_not_before = None;
                CacheEvent::Fetched {
                    site: key.site.clone(),
                    user: key.user.clone(),
                    refresh_ahead,
                    expires_at: c.expires_at,
                }
            }
            Err(e) => {
                if !refresh_ahead {
                    return;
                }
                slot.refresh_not_before = Some(now + REFRESH_RETRY);
                CacheEvent::RefreshFailed {
                    site: key.site.clone(),
                    user: key.user.clone(),
                    error: e.clone(),
                }
            }
        };
        drop(slots);
        let _ = self.events.send(event);
    }

    /// Caches credentials fetched outside the cache (a forced refresh).
    pub(crate) fn store(&self, key: &Key, creds: &Credentials) {
        self.settle(key, &Ok(creds.clone()), false);
    }

    /// Drops every cached entry holding `token`; true when there was one.
    pub(crate) fn evict_token(&self, token: &SecretString) -> bool {
        let mut evicted = Vec::new();
        {
            let mut slots = self.slots();
            for (key, slot) in slots.iter_mut() {
                let holds = slot
                    .cached
                    .as_ref()
                    .is_some_and(|e| e.creds.token.expose_secret() == token.expose_secret());
                if holds {
                    slot.cached = None;
                    evicted.push(key.clone());
                }
            }
        }
        for key in &evicted {
            let _ = self.events.send(CacheEvent::Evicted {
                site: key.site.clone(),
                user: key.user.clone(),
            });
        }
        !evicted.is_empty()
    }
}

impl CredentialsRequest {
    /// The cache key of this request: site, user, scopes and claims (not how to use the cache).
    pub(crate) fn key(&self) -> Key {
        Key {
            site: self.site.clone(),
            user: self.user.clone(),
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    const HOUR: Duration = Duration::from_secs(3600);
    const MIN: Duration = Duration::from_secs(60);

    /// A broker stand-in: each fetch waits for a permit of `gate`, records what it was asked,
    /// and answers `token-N` (N counting from 1) valid for an hour from the clock's now.
    struct Fake {
        clock: Arc<ManualClock>,
        gate: Arc<Semaphore>,
        calls: Arc<AtomicUsize>,
        asked: Arc<Mutex<Vec<Fetch>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    fn fake(open: bool) -> (Arc<Cache>, Fake) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + 1000 * HOUR));
        let fake = Fake {
            clock: Arc::clone(&clock),
            gate: Arc::new(Semaphore::new(if open {
                Semaphore::MAX_PERMITS
            } else {
                0
            })),
            calls: Arc::new(AtomicUsize::new(0)),
            asked: Arc::new(Mutex::new(Vec::new())),
            fail: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let (c2, gate, calls, asked, fail) = (
            Arc::clone(&clock),
            Arc::clone(&fake.gate),
            Arc::clone(&fake.calls),
            Arc::clone(&fake.asked),
            Arc::clone(&fake.fail),
        );
        let fetch: FetchFn = Arc::new(move |_key, f| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            asked.lock().unwrap().push(f);
            let (clock, gate, fail) = (Arc::clone(&c2), Arc::clone(&gate), Arc::clone(&fail));
            async move {
                gate.acquire().await.unwrap().forget();
                if fail.load(Ordering::SeqCst) {
                    return Err(Error::from_status(&tonic::Status::unavailable("down")));
                }
                Ok(Credentials::for_tests(
                    &format!("token-{n}"),
                    clock.now() + HOUR,
                ))
            }
            .boxed()
        });
        let cache = Arc::new(Cache::new(clock, 5 * MIN, fetch));
        (cache, fake)
    }

    fn key() -> Key {
        Key {
            site: "finance".into(),
            user: "svc".into(),
            scopes: vec!["tableau:content:read".into()],
            claims: Claims::default(),
        }
    }

    fn token(c: &Credentials) -> &str {
        c.token.expose_secret()
    }

    async fn next_fetched(rx: &mut broadcast::Receiver<CacheEvent>) -> bool {
        loop {
            match rx.recv().await.unwrap() {
                CacheEvent::Fetched { refresh_ahead, .. } => return refresh_ahead,
                CacheEvent::RefreshFailed { .. } => panic!("refresh failed"),
                CacheEvent::Evicted { .. } => {}
            }
        }
    }

    #[tokio::test]
    async fn concurrent_callers_of_one_key_share_one_fetch() {
        let (cache, fake) = fake(false);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.get(&key(), MIN).await })
            })
            .collect();
        // On this single-threaded runtime the yield lets every task reach the fetch first.
        tokio::task::yield_now().await;
        fake.gate.add_permits(1);
        for t in tasks {
            assert_eq!(token(&t.await.unwrap().unwrap()), "token-1");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // And a later caller is a hit.
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refresh_ahead_serves_the_old_token_while_one_refresh_runs() {
        let (cache, fake) = fake(false);
        let mut events = cache.subscribe();
        fake.gate.add_permits(1);
        let first = cache.get(&key(), MIN).await.unwrap();
        assert!(!next_fetched(&mut events).await);
        // 4 minutes left: inside the 5-minute window, above the 1-minute min_remaining.
        fake.clock.advance(HOUR - 4 * MIN);
        for _ in 0..3 {
            assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-1");
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "one refresh for three calls"
        );
        {
            let asked = fake.asked.lock().unwrap();
            let refresh = &asked[1];
            assert!(refresh.refresh_ahead);
            assert_eq!(refresh.min_remaining, 5 * MIN);
            assert_eq!(
                refresh
                    .replacing
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
                Some(token(&first).to_owned())
            );
        }
        fake.gate.add_permits(1);
        assert!(next_fetched(&mut events).await);
        let second = cache.get(&key(), MIN).await.unwrap();
        assert_eq!(token(&second), "token-2");
        assert!(second.expires_at > first.expires_at);
    }

    #[tokio::test]
    async fn past_min_remaining_callers_wait_for_a_new_token() {
        let (cache, fake) = fake(true);
        cache.get(&key(), MIN).await.unwrap();
        fake.clock.advance(HOUR - MIN / 2);
        let c = cache.get(&key(), MIN).await.unwrap();
        assert_eq!(token(&c), "token-2");
        let asked = fake.asked.lock().unwrap();
        assert!(!asked[1].refresh_ahead);
        assert_eq!(asked[1].min_remaining, MIN);
        assert!(asked[1].replacing.is_some());
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_old_token_and_pauses() {
        let (cache, fake) = fake(true);
        let mut events = cache.subscribe();
        cache.get(&key(), MIN).await.unwrap();
        assert!(!next_fetched(&mut events).await);
        fake.fail.store(true, Ordering::SeqCst);
        fake.clock.advance(HOUR - 4 * MIN);
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-1");
        match events.recv().await.unwrap() {
            CacheEvent::RefreshFailed { error, .. } => {
                assert_eq!(error.code(), Some(tonic::Code::Unavailable));
            }
            other => panic!("{other:?}"),
        }
        // Within the pause: served from cache, no new fetch.
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-1");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // After it, the refresh is tried again.
        fake.fail.store(false, Ordering::SeqCst);
        fake.clock.advance(REFRESH_RETRY);
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-1");
        assert!(next_fetched(&mut events).await);
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-3");
    }

    #[tokio::test]
    async fn eviction_drops_only_the_refused_token() {
        let (cache, fake) = fake(true);
        let first = cache.get(&key(), MIN).await.unwrap();
        assert!(cache.evict_token(&first.token));
        assert!(!cache.evict_token(&first.token), "already gone");
        let second = cache.get(&key(), MIN).await.unwrap();
        assert_eq!(token(&second), "token-2");
        // A late report of the old token leaves the new one alone.
        assert!(!cache.evict_token(&first.token));
        assert_eq!(token(&cache.get(&key(), MIN).await.unwrap()), "token-2");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_short_lived_token_is_refreshed_at_half_its_life_at_most() {
        let (cache, fake) = fake(true);
        let first = cache.get(&key(), MIN).await.unwrap();
        // The window is min(5 min, 30 min): 5 minutes here; check the cap with a bigger window.
        let wide = Arc::new(Cache::new(
            fake.clock.clone(),
            10 * HOUR,
            Arc::clone(&cache.fetch),
        ));
        let c = wide.get(&key(), MIN).await.unwrap();
        fake.clock.advance(HOUR / 2 - MIN);
        assert_eq!(token(&wide.get(&key(), MIN).await.unwrap()), token(&c));
        let asked_before = fake.calls.load(Ordering::SeqCst);
        assert_eq!(asked_before, 2, "more than half the life left: no refresh");
        drop(first);
    }
}
