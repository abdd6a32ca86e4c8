//! The credentials cache: bounded, expiring by an injected clock, and coalescing concurrent misses
//! so Tableau sees one sign-in per key however many callers ask at once.
//!
//! A miss starts the sign-in as its own task. Callers wait on a shared handle to it, so a caller
//! that gives up (deadline, cancel) neither aborts the sign-in for the others nor starts a second
//! one. Failures are handed to every waiter and never cached.
//!
//! A hit allocates nothing here: it is looked up with a borrowed [`KeyRef`]. An entry is kept
//! small because a broker may hold a million of them: values shared by many entries (site names,
//! scope sets, site LUIDs and content URLs) are interned, LUIDs that are UUIDs are kept as 16
//! bytes, and the log fingerprint is derived from the token digest rather than stored.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use moka::notification::RemovalCause;
use secrecy::SecretString;
use tracing::Instrument;

use crate::audit::TokenDigest;
use crate::claims::ClaimSet;
use crate::clock::SharedClock;
use crate::error::BrokerError;
use crate::scope::Scope;

/// The hasher for the cache's maps. Keys only exist once policy has allowed them, so the cost
/// that matters is per lookup: foldhash, seeded per process, is several times cheaper than
/// SipHash on short keys and still unpredictable from outside.
type FastHash = foldhash::fast::RandomState;

/// What a session is cached under: site name, user, normalized scopes, and the claims beyond
/// `scp` it was signed in with (sessions with different claims are never shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// Site name from the configuration (interned: shared by every entry of the site).
    pub site: Arc<str>,
    /// Tableau username.
    pub user: Arc<str>,
    /// Deduplicated, sorted scopes (interned: shared by every entry with the same set).
    pub scopes: Arc<[Scope]>,
    /// Attributes, groups and on-demand access (normalized; empty for most keys).
    pub claims: Arc<ClaimSet>,
}

impl CacheKey {
    /// The key as borrowed parts, which is what it hashes as.
    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            site: &self.site,
            user: &self.user,
            scopes: &self.scopes,
            claims: &self.claims,
        }
    }
}

impl Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly as KeyRef does, so a borrowed key finds an owned one.
        self.as_ref().hash(state);
    }
}

/// A cache key made of borrowed parts, so that a lookup needs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    /// Site name from the configuration.
    pub site: &'a str,
    /// Tableau username.
    pub user: &'a str,
    /// Deduplicated, sorted scopes.
    pub scopes: &'a [Scope],
    /// Claims beyond `scp` ([`crate::claims::NO_CLAIMS`] for none).
    pub claims: &'a ClaimSet,
}

impl equivalent::Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self == key.as_ref()
    }
}

/// A Tableau LUID. Tableau's are UUIDs, kept as their 16 bytes; anything else (or a UUID not
/// written in canonical lowercase) is kept as the text it came as, so it is handed back unchanged.
#[derive(Clone, PartialEq, Eq)]
pub enum Luid {
    /// A canonical lowercase, hyphenated UUID.
    Uuid(uuid::Uuid),
    /// Any other text.
    Text(Box<str>),
}

impl From<String> for Luid {
    fn from(s: String) -> Luid {
        if let Ok(u) = uuid::Uuid::try_parse(&s) {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            if u.hyphenated().encode_lower(&mut buf).as_bytes() == s.as_bytes() {
                return Luid::Uuid(u);
            }
        }
        Luid::Text(s.into_boxed_str())
    }
}

impl fmt::Display for Luid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Luid::Uuid(u) => {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                f.write_str(u.hyphenated().encode_lower(&mut buf))
            }
            Luid::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Luid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

impl PartialEq<str> for Luid {
    fn eq(&self, other: &str) -> bool {
        match self {
            Luid::Uuid(u) => {
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                u.hyphenated().encode_lower(&mut buf) == other
            }
            Luid::Text(t) => &**t == other,
        }
    }
}

impl PartialEq<&str> for Luid {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

/// A signed-in Tableau session.
pub struct Credentials {
    /// The key it is cached under.
    pub key: CacheKey,
    /// The credentials token (`X-Tableau-Auth`).
    pub token: SecretString,
    /// HMAC of the token: finds it on invalidation and fingerprints it in logs.
    pub digest: TokenDigest,
    /// Site LUID.
    pub site_luid: Arc<str>,
    /// Site content URL.
    pub site_content_url: Arc<str>,
    /// The Tableau server that issued the token (interned): a token is only ever handed out
    /// next to this server URL, so a site moved to another server never returns the old
    /// server's token.
    pub server_url: Arc<str>,
    /// The site content URL the sign-in asked for, as configured (interned). With
    /// `server_url` and `client_id`, what the session is bound to: see [`Issuer`].
    pub content_url: Arc<str>,
    /// The connected app's client ID that signed in (interned).
    pub client_id: Arc<str>,
    /// User LUID.
    pub user_luid: Luid,
    /// `jti` of the JWT that signed in.
    pub jti: uuid::Uuid,
    /// When the broker stops handing it out: sign-in + session lifetime − safety margin.
    pub expires_at: SystemTime,
}

/// What a session is bound to: the server, the site's content URL and the connected app that
/// issued it (issue 24, point 2). A session is handed out only for a site that still has all
/// three, so a site re-pointed by a reload never serves the old site's (or old app's) session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer<'a> {
    /// The Tableau server URL.
    pub server_url: &'a str,
    /// The site content URL as configured.
    pub content_url: &'a str,
    /// The connected app's client ID.
    pub client_id: &'a str,
}

impl Credentials {
    /// What this session is bound to.
    pub fn issuer(&self) -> Issuer<'_> {
        Issuer {
            server_url: &self.server_url,
            content_url: &self.content_url,
            client_id: &self.client_id,
        }
    }

    /// True when `issuer` issued this session.
    pub fn issued_by(&self, issuer: Issuer<'_>) -> bool {
        self.issuer() == issuer
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key)
            .field("token", &"[REDACTED]")
            .field("fingerprint", &self.digest.fingerprint().to_string())
            .field("site_luid", &self.site_luid)
            .field("expires_at", &crate::clock::unix_secs(self.expires_at))
            .finish()
    }
}

/// Why a session left the cache, which decides when it is signed out (see `sign_outs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// Past its `expires_at`: nobody may use it any more.
    Expired,
    /// Replaced by a new sign-in for its key (force refresh, `min_remaining`).
    Replaced,
    /// Dropped to make room (least recently used).
    Evicted,
}

/// Told of every session that leaves the cache other than by an explicit removal (an
/// invalidation, which signs out by itself). Called on the thread that caused the departure:
/// it must not block.
pub type OnDeparture = Arc<dyn Fn(Arc<Credentials>, Departure) + Send + Sync>;

/// How a lookup may be answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup {
    /// A cached session with less life left than this is replaced.
    pub min_remaining: Duration,
    /// Sign in again even if a good session is cached, and replace it.
    pub force_refresh: bool,
}

type SharedSignIn = Shared<BoxFuture<'static, Result<Arc<Credentials>, BrokerError>>>;

/// A sign-in in flight: the shared result, and the span it runs in, so that callers who join it
/// can link their own span to it.
type Inflight = HashMap<CacheKey, (SharedSignIn, tracing::Span)>;

/// What the cache counts about itself, for metrics: plain atomics, read with [`Self::snapshot`].
#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_size: AtomicU64,
    evicted_replaced: AtomicU64,
    evicted_invalidated: AtomicU64,
}

/// [`CacheStats`] as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStatsSnapshot {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that started a sign-in.
    pub misses: u64,
    /// Lookups that waited for a sign-in another caller had started.
    pub coalesced: u64,
    /// Entries dropped because their session reached its end.
    pub evicted_expired: u64,
    /// Entries dropped to stay within `max_entries`.
    pub evicted_size: u64,
    /// Entries replaced by a newer session for the same key.
    pub evicted_replaced: u64,
    /// Entries removed by `InvalidateCredentials`.
    pub evicted_invalidated: u64,
}

impl CacheStats {
    /// The counts now.
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStatsSnapshot {
            hits: l(&self.hits),
            misses: l(&self.misses),
            coalesced: l(&self.coalesced),
            evicted_expired: l(&self.evicted_expired),
            evicted_size: l(&self.evicted_size),
            evicted_replaced: l(&self.evicted_replaced),
            evicted_invalidated: l(&self.evicted_invalidated),
        }
    }

    fn evicted(&self, cause: RemovalCause) {
        let c = match cause {
            RemovalCause::Expired => &self.evicted_expired,
            RemovalCause::Size => &self.evicted_size,
            RemovalCause::Replaced => &self.evicted_replaced,
            RemovalCause::Explicit => &self.evicted_invalidated,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One shared copy of each value in use. Entries are dropped by [`Interner::prune`] once
/// nothing but the interner holds them, so it never grows past what the cache refers to.
struct Interner<T: ?Sized>(Mutex<HashSet<Arc<T>, FastHash>>);

impl<T: ?Sized + Hash + Eq> Interner<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    fn new() -> Self {
        Interner(Mutex::new(HashSet::default()))
    }

    fn intern(&self, value: &T) -> Arc<T> {
        let mut set = lock(&self.0);
        if let Some(v) = set.get(value) {
            return Arc::clone(v);
        }
        let v: Arc<T> = Arc::from(value);
        set.insert(Arc::clone(&v));
        v
    }

    fn prune(&self) {
        lock(&self.0).retain(|v| Arc::strong_count(v) > 1);
    }

    fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

/// Bounded, coalescing credentials cache.
pub struct CredentialCache {
    entries: moka::sync::Cache<CacheKey, Arc<Credentials>, FastHash>,
    /// Token digest to entry, so invalidation is a lookup rather than a scan. Weak, so the index
    /// never keeps a token alive.
    by_digest: Arc<Mutex<HashMap<TokenDigest, Weak<Credentials>, FastHash>>>,
    inflight: Arc<Mutex<Inflight>>,
    strings: Arc<Interner<str>>,
    scope_sets: Interner<[Scope]>,
    clock: SharedClock,
    stats: Arc<CacheStats>,
    /// Where sessions that leave the cache go for sign-out; also used for sessions dropped
    /// because their site moved.
    departed: Option<OnDeparture>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// Each entry lives until its own token's end. Both hooks are needed: a refresh ahead of expiry
/// replaces the value under the same key, and the new token's end must then count, not the old's.
struct ExpireAtDeadline {
    clock: SharedClock,
}

impl ExpireAtDeadline {
    fn left(&self, value: &Credentials) -> Duration {
        value
            .expires_at
            .duration_since(self.clock.now())
            .unwrap_or(Duration::ZERO)
    }
}

impl moka::Expiry<CacheKey, Arc<Credentials>> for ExpireAtDeadline {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Credentials>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(self.left(value))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Credentials>,
        _updated_at: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.left(value))
    }
}

/// Removes a key from the in-flight map when the sign-in task ends, even by panic.
struct InflightGuard {
    map: Arc<Mutex<Inflight>>,
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
    /// replacement are handed to `departed` (to be signed out at Tableau) when given.
    pub fn new(
        max_entries: u64,
        clock: SharedClock,
        departed: Option<OnDeparture>,
    ) -> CredentialCache {
        let by_digest: Arc<Mutex<HashMap<TokenDigest, Weak<Credentials>, FastHash>>> =
            Arc::default();
        let index = Arc::clone(&by_digest);
        let stats = Arc::new(CacheStats::default());
        let counted = Arc::clone(&stats);
        let departed_for_drops = departed.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(ExpireAtDeadline {
                clock: clock.clone(),
            })
            .eviction_listener(move |_k, v: Arc<Credentials>, cause| {
                counted.evicted(cause);
                {
                    let mut index = lock(&index);
                    // Only this entry's mapping: a replacement has its own token and digest.
                    if index
                        .get(&v.digest)
                        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&v)))
                    {
                        index.remove(&v.digest);
                    }
                }
                // Explicit removals are invalidations, which sign out themselves.
                let why = match cause {
                    RemovalCause::Explicit => None,
                    RemovalCause::Expired => Some(Departure::Expired),
                    RemovalCause::Replaced => Some(Departure::Replaced),
                    RemovalCause::Size => Some(Departure::Evicted),
                };
                if let (Some(why), Some(departed)) = (why, &departed) {
                    departed(v, why);
                }
            })
            .build_with_hasher(FastHash::default());
        CredentialCache {
            entries,
            by_digest,
            inflight: Arc::new(Mutex::new(HashMap::new())),
            strings: Arc::new(Interner::new()),
            scope_sets: Interner::new(),
            clock,
            stats,
            departed: departed_for_drops,
        }
    }

    /// Hits, misses, coalesced waiters and evictions by cause, for metrics.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    fn fresh(&self, key: KeyRef<'_>, lookup: Lookup) -> Option<Arc<Credentials>> {
        if lookup.force_refresh {
            return None;
        }
        let c = self.entries.get(&key)?;
        let now = self.clock.now();
        (c.expires_at > now + lookup.min_remaining).then_some(c)
    }

    /// A cached session good for `lookup` that `issuer` issued, counted as a hit; `None`
    /// (and nothing counted) otherwise. The synchronous front of
    /// [`Self::get_or_try_sign_in`], for callers that keep their miss path out of line.
    pub fn hit(
        &self,
        key: KeyRef<'_>,
        lookup: Lookup,
        issuer: Issuer<'_>,
    ) -> Option<Arc<Credentials>> {
        let c = self.fresh(key, lookup).filter(|c| c.issued_by(issuer))?;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(c)
    }

    /// Returns a cached session (`true`) or one from a sign-in shared with every concurrent miss
    /// for the key (`false`). `sign_in` runs only when no good session is cached and none is in
    /// flight; it is given the owned key the session will be cached under.
    pub async fn get_or_sign_in<F, Fut>(
        &self,
        key: KeyRef<'_>,
        lookup: Lookup,
        sign_in: F,
    ) -> Result<(Arc<Credentials>, bool), BrokerError>
    where
        F: FnOnce(&CacheKey) -> Fut,
        Fut: Future<Output = Result<Credentials, BrokerError>> + Send + 'static,
    {
        self.get_or_try_sign_in(key, lookup, |k| Ok(sign_in(k)))
            .await
    }

    /// [`Self::get_or_sign_in`] where starting a sign-in may be refused: `start` runs only when
    /// this call would start one (no good session cached, none in flight), so limits on
    /// sign-ins cost nothing on a hit and are never charged to callers that join a sign-in in
    /// flight. Its error goes to this caller alone.
    pub async fn get_or_try_sign_in<F, Fut>(
        &self,
        key: KeyRef<'_>,
        lookup: Lookup,
        start: F,
    ) -> Result<(Arc<Credentials>, bool), BrokerError>
    where
        F: FnOnce(&CacheKey) -> Result<Fut, BrokerError>,
        Fut: Future<Output = Result<Credentials, BrokerError>> + Send + 'static,
    {
        if let Some(c) = self.fresh(key, lookup) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((c, true));
        }
        let owned = CacheKey {
            site: self.strings.intern(key.site),
            user: Arc::from(key.user),
            scopes: self.scope_sets.intern(key.scopes),
            claims: key.claims.clone().into_shared(),
        };
        let shared = {
            let mut inflight = lock(&self.inflight);
            // Checked again under the lock: a sign-in inserts before it leaves the map.
            if let Some(c) = self.fresh(key, lookup) {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((c, true));
            }
            match inflight.get(&owned) {
                Some((s, leader)) => {
                    self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                    link_spans(&tracing::Span::current(), leader);
                    s.clone()
                }
                None => {
                    // Limits on sign-ins are checked in `start`: only a call that would start one
                    // pays for them, never a hit or a joiner.
                    let fut = start(&owned)?;
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    // The sign-in runs as a task of its own but belongs to this caller's trace:
                    // its span is a child of the current one, and joiners link to it.
                    let span = tracing::info_span!("cache.sign_in", site = %owned.site);
                    let entries = self.entries.clone();
                    let by_digest = Arc::clone(&self.by_digest);
                    let strings = Arc::clone(&self.strings);
                    let guard = InflightGuard {
                        map: Arc::clone(&self.inflight),
                        key: owned.clone(),
                    };
                    let task = tokio::spawn(
                        async move {
                            let result = fut.await.map(|mut c| {
                                c.site_luid = strings.intern(&c.site_luid);
                                c.site_content_url = strings.intern(&c.site_content_url);
                                c.server_url = strings.intern(&c.server_url);
                                c.content_url = strings.intern(&c.content_url);
                                c.client_id = strings.intern(&c.client_id);
                                Arc::new(c)
                            });
                            if let Ok(c) = &result {
                                lock(&by_digest).insert(c.digest, Arc::downgrade(c));
                                entries.insert(guard.key.clone(), Arc::clone(c));
                            }
                            drop(guard);
                            result
                        }
                        .instrument(span.clone()),
                    );
                    let shared = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(BrokerError::Internal(format!("sign-in task failed: {e}")))
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(owned, (shared.clone(), span));
                    shared
                }
            }
        };
        shared.await.map(|c| (c, false))
    }

    /// Finds the entry holding a token (by its digest) and removes it.
    pub fn remove_by_digest(&self, digest: &TokenDigest) -> Option<Arc<Credentials>> {
        let found = self.find_by_digest(digest)?;
        self.entries.remove(&found.key)
    }

    /// Removes a key's entry: another replica invalidated or replaced it (shared cache).
    pub fn remove(&self, key: KeyRef<'_>) -> Option<Arc<Credentials>> {
        self.entries.remove(&key)
    }

    /// Drops every cached session of `site` (its server, content URL or connected app changed,
    /// or it was removed) and hands them to the sign-out schedule as replaced sessions: other
    /// callers may still hold their tokens, so they get the grace period. Returns how many.
    pub fn drop_site(&self, site: &str) -> usize {
        let keys: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .filter(|(k, _)| &*k.site == site)
            .map(|(k, _)| k)
            .collect();
        let mut dropped = 0;
        for key in keys {
            // An explicit removal skips the listener's sign-out hand-off; do it here instead.
            if let Some(c) = self.entries.remove(&*key) {
                dropped += 1;
                if let Some(departed) = &self.departed {
                    departed(c, Departure::Replaced);
                }
            }
        }
        dropped
    }

    /// True when `c` is still the session cached under its key (nothing replaced or removed it).
    pub fn is_current(&self, c: &Arc<Credentials>) -> bool {
        self.entries.get(&c.key).is_some_and(|e| Arc::ptr_eq(&e, c))
    }

    /// Finds the entry holding a token without removing it.
    pub fn find_by_digest(&self, digest: &TokenDigest) -> Option<Arc<Credentials>> {
        let c = lock(&self.by_digest).get(digest)?.upgrade()?;
        self.entries.get(&c.key).filter(|e| Arc::ptr_eq(e, &c))
    }

    /// Runs moka's pending housekeeping (expiry, eviction notifications) now, and forgets
    /// interned values no entry uses any more.
    pub fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
        self.strings.prune();
        self.scope_sets.prune();
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

    /// The live sessions held (at most `limit`), for the admin API's listing and revocation
    /// (issue 27); an O(entries) walk, never on a caller's path.
    pub fn sessions(&self, limit: usize) -> Vec<Arc<Credentials>> {
        let now = self.clock.now();
        self.entries
            .iter()
            .filter(|(_, c)| c.expires_at > now)
            .take(limit)
            .map(|(_, c)| c)
            .collect()
    }

    /// Distinct shared values (site names, scope sets, site LUIDs and URLs) held for entries.
    pub fn interned(&self) -> usize {
        self.strings.len() + self.scope_sets.len()
    }
}

/// How a call that joins another call's sign-in links its span to the sign-in's span. The
/// domain knows only `tracing`; the binary's telemetry installs the OpenTelemetry link once at
/// start ([`set_span_linker`]), so a trace shows which sign-in served a joiner.
static SPAN_LINKER: std::sync::OnceLock<fn(&tracing::Span, &tracing::Span)> =
    std::sync::OnceLock::new();

/// Installs the function that links a joiner's span to the sign-in it waits for. The first call
/// wins; later calls are ignored (the linker is a process-wide choice made at start).
pub fn set_span_linker(link: fn(&tracing::Span, &tracing::Span)) {
    let _ = SPAN_LINKER.set(link);
}

fn link_spans(span: &tracing::Span, to: &tracing::Span) {
    if let Some(link) = SPAN_LINKER.get() {
        link(span, to);
    }
}

#[cfg(test)]
mod tests;
