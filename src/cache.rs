//! The credentials cache: bounded, expiring by an injected clock, and coalescing concurrent misses
//! so Tableau sees one sign-in per key however many callers ask at once.
//!
//! A miss starts the sign-in as its own task. Callers wait on a shared handle to it, so a caller
//! that gives up (deadline, cancel) neither aborts the sign-in for the others nor starts a second
//! one. Failures are handed to every waiter and never cached.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use moka::notification::RemovalCause;
use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::clock::SharedClock;
use crate::error::BrokerError;
use crate::scope::Scope;

/// What a session is cached under: site name, user, normalized scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Site name from the configuration.
    pub site: Arc<str>,
    /// Tableau username.
    pub user: Arc<str>,
    /// Deduplicated, sorted scopes.
    pub scopes: Arc<[Scope]>,
}

/// A signed-in Tableau session.
pub struct Credentials {
    /// The key it is cached under.
    pub key: CacheKey,
    /// The credentials token (`X-Tableau-Auth`).
    pub token: SecretString,
    /// HMAC fingerprint of the token, for logs.
    pub fingerprint: String,
    /// Full HMAC of the token, to find it on invalidation.
    pub digest: [u8; 32],
    /// Site LUID.
    pub site_luid: String,
    /// Site content URL.
    pub site_content_url: String,
    /// User LUID.
    pub user_luid: String,
    /// `jti` of the JWT that signed in.
    pub jti: String,
    /// When the sign-in happened.
    pub signed_in_at: SystemTime,
    /// When the broker stops handing it out: sign-in + session lifetime − safety margin.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .field("token", &"[REDACTED]")
            .field("fingerprint", &self.fingerprint)
            .field("site_luid", &self.site_luid)
            .field("expires_at", &crate::clock::unix_secs(self.expires_at))
            .finish()
    }
}

/// How a lookup may be answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup {
    /// A cached session with less life left than this is replaced.
    pub min_remaining: Duration,
    /// Sign in again even if a good session is cached, and replace it.
    pub force_refresh: bool,
}

type SharedSignIn = Shared<BoxFuture<'static, Result<Arc<Credentials>, BrokerError>>>;

/// Bounded, coalescing credentials cache.
pub struct CredentialCache {
    entries: moka::sync::Cache<CacheKey, Arc<Credentials>>,
    /// Token digest to key, so invalidation is a lookup rather than a scan.
    by_digest: Arc<Mutex<HashMap<[u8; 32], CacheKey>>>,
    inflight: Arc<Mutex<HashMap<CacheKey, SharedSignIn>>>,
    clock: SharedClock,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

struct ExpireAtDeadline {
    clock: SharedClock,
}

impl moka::Expiry<CacheKey, Arc<Credentials>> for ExpireAtDeadline {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Credentials>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            value
                .expires_at
                .duration_since(self.clock.now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// Removes a key from the in-flight map when the sign-in task ends, even by panic.
struct InflightGuard {
    map: Arc<Mutex<HashMap<CacheKey, SharedSignIn>>>,
    key: CacheKey,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        lock(&self.map).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CredentialCache {
    /// A cache of at most `max_entries` sessions. Sessions that leave it by expiry, size or
    /// replacement are sent to `evicted` (for sign-out at Tableau) when given.
    pub fn new(
        max_entries: u64,
        clock: SharedClock,
        evicted: Option<mpsc::UnboundedSender<Arc<Credentials>>>,
    ) -> CredentialCache {
        let by_digest: Arc<Mutex<HashMap<[u8; 32], CacheKey>>> = Arc::default();
        let index = Arc::clone(&by_digest);
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(ExpireAtDeadline {
                clock: clock.clone(),
            })
            .eviction_listener(move |_k, v: Arc<Credentials>, cause| {
                lock(&index).remove(&v.digest);
                // Explicit removals are invalidations, which sign out themselves.
                if cause != RemovalCause::Explicit {
                    if let Some(tx) = &evicted {
                        let _ = tx.send(v);
                    }
                }
            })
            .build();
        CredentialCache {
            entries,
            by_digest,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            clock,
        }
    }

    fn fresh(&self, key: &CacheKey, lookup: Lookup) -> Option<Arc<Credentials>> {
        if lookup.force_refresh {
            return None;
        }
        let c = self.entries.get(key)?;
        let now = self.clock.now();
        (c.expires_at > now + lookup.min_remaining).then_some(c)
    }

    /// Returns a cached session (`true`) or one from a sign-in shared with every concurrent miss
    /// for the key (`false`). `sign_in` runs only when no good session is cached and none is in flight.
    pub async fn get_or_sign_in<F, Fut>(
        &self,
        key: &CacheKey,
        lookup: Lookup,
        sign_in: F,
    ) -> Result<(Arc<Credentials>, bool), BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Credentials, BrokerError>> + Send + 'static,
    {
        if let Some(c) = self.fresh(key, lookup) {
            return Ok((c, true));
        }
        let shared = {
            let mut inflight = lock(&self.inflight);
            // Checked again under the lock: a sign-in inserts before it leaves the map.
            if let Some(c) = self.fresh(key, lookup) {
                return Ok((c, true));
            }
            match inflight.get(key) {
                Some(s) => s.clone(),
                None => {
                    let fut = sign_in();
                    let entries = self.entries.clone();
                    let by_digest = Arc::clone(&self.by_digest);
                    let guard = InflightGuard {
                        map: Arc::clone(&self.inflight),
                        key: key.clone(),
                    };
                    let task = tokio::spawn(async move {
                        let result = fut.await.map(Arc::new);
                        if let Ok(c) = &result {
                            lock(&by_digest).insert(c.digest, guard.key.clone());
                            entries.insert(guard.key.clone(), Arc::clone(c));
                        }
                        drop(guard);
                        result
                    });
                    let shared = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(BrokerError::Internal(format!("sign-in task failed: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key.clone(), shared.clone());
                    shared
                }
            }
        };
        shared.await.map(|c| (c, false))
    }

    /// Finds the entry holding a token (by its HMAC digest) and removes it.
    pub fn remove_by_digest(&self, digest: &[u8; 32]) -> Option<Arc<Credentials>> {
        let found = self.find_by_digest(digest)?;
        self.entries.remove(&found.key)
    }

    /// Finds the entry holding a token without removing it.
    pub fn find_by_digest(&self, digest: &[u8; 32]) -> Option<Arc<Credentials>> {
        let key = lock(&self.by_digest).get(digest).cloned()?;
        self.entries.get(&key).filter(|c| &c.digest == digest)
    }

    /// Removes an entry by key.
    pub fn remove(&self, key: &CacheKey) -> Option<Arc<Credentials>> {
        self.entries.remove(key)
    }

    /// Runs moka's pending housekeeping (expiry, eviction notifications) now.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    /// Entries held (approximate until housekeeping runs).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sign-ins in flight now.
    pub fn inflight(&self) -> usize {
        lock(&self.inflight).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock, system};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(user: &str) -> CacheKey {
        CacheKey {
            site: Arc::from("s"),
            user: Arc::from(user),
            scopes: Arc::from(vec!["tableau:content:read".parse::<Scope>().unwrap()]),
        }
    }

    fn creds(key: &CacheKey, expires_at: SystemTime) -> Credentials {
        Credentials {
            key: key.clone(),
            token: SecretString::from("t".to_owned()),
            fingerprint: String::new(),
            digest: [0; 32],
            site_luid: String::new(),
            site_content_url: String::new(),
            user_luid: String::new(),
            jti: String::new(),
            signed_in_at: expires_at,
            expires_at,
        }
    }

    #[tokio::test]
    async fn coalesces_and_does_not_cache_failures() {
        let clock = ManualClock::new(SystemTime::now());
        let cache = Arc::new(CredentialCache::new(10, clock.clone(), None));
        let calls = Arc::new(AtomicUsize::new(0));
        let k = key("u");
        let fail = cache
            .get_or_sign_in(&k, Lookup::default(), || async {
                Err(BrokerError::Internal("boom".into()))
            })
            .await;
        assert!(fail.is_err());
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, calls, k, clock) = (cache.clone(), calls.clone(), k.clone(), clock.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_sign_in(&k, Lookup::default(), move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let c = creds(&key("u"), clock.now() + Duration::from_secs(60));
                        async move {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(c)
                        }
                    })
                    .await
                    .map(|(_, hit)| hit)
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.inflight(), 0);
        clock.advance(Duration::from_secs(61));
        let (_, hit) = cache
            .get_or_sign_in(&k, Lookup::default(), || async move {
                Ok(creds(
                    &key("u"),
                    SystemTime::now() + Duration::from_secs(60),
                ))
            })
            .await
            .unwrap();
        assert!(!hit, "expired by the injected clock");
    }

    #[tokio::test]
    async fn evicts_expired_entries_on_its_own_and_reports_them() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cache = CredentialCache::new(10, system(), Some(tx));
        let k = key("u");
        cache
            .get_or_sign_in(&k, Lookup::default(), || async move {
                Ok(creds(
                    &key("u"),
                    SystemTime::now() + Duration::from_millis(50),
                ))
            })
            .await
            .unwrap();
        assert_eq!(cache.entries.iter().count(), 1);
        // moka's timer wheel works in ~1 s buckets: poll, bounded.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            cache.run_pending_tasks();
            if cache.is_empty() {
                break;
            }
        }
        assert_eq!(cache.len(), 0);
        let gone = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gone.key, k);
    }
}
