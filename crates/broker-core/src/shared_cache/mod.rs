//! The shared cache (issue 16): Redis as a second tier (L2) behind each replica's own cache (L1),
//! so that many replicas sign in once per key between them, and a new replica starts warm.
//!
//! The L1 cache ([`crate::cache`]) stays in front and coalesces concurrent misses inside one
//! replica; only its one sign-in task per key comes here, through
//! [`SharedCache::get_or_sign_in`]:
//!
//! 1. `GET` the entry (under the current key's name, and every previous key's). A good entry is
//!    an L2 hit: decrypted and handed to L1, no sign-in.
//! 2. Otherwise take the key's lease, `SET NX PX` with a random fencing value. The holder checks
//!    the entry once more, signs in, writes the entry (`SET PX` to its `expires_at`), releases the
//!    lease with a compare-and-delete script and announces the entry on [`CHANNEL_PUBLISHED`].
//!    It renews the lease while the sign-in runs, so a slow Tableau does not let a second replica
//!    in, while a dead holder's lease expires within `lease_ttl`.
//! 3. A replica that finds the lease taken waits for the announcement (or polls with backoff)
//!    and reads the entry. When the lease disappears without an entry (the holder died or
//!    failed), the next `SET NX` decides which one waiter takes over. Past `lease_wait` a waiter
//!    signs in itself, so a stuck lease never holds a caller for long.
//!
//! Nothing readable is stored: key names are HMACs of (site, user, scopes) and values are
//! AES-256-GCM envelopes bound to their key names ([`crypto`]).
//!
//! Redis trouble is never an outage: every operation has a timeout (50 ms by default), every
//! failure falls back to L1-only behaviour (sign in locally, serve, count it), and a circuit
//! breaker ([`breaker`]) keeps requests from each paying the timeout while Redis is away. The
//! connection is made in the background, so the broker starts and is ready without Redis.
//!
//! Invalidation: [`SharedCache::invalidate`] deletes the entry (only if it still holds that
//! token) and sends an encrypted message on [`CHANNEL_INVALIDATE`]; every other replica evicts
//! the key from its L1. A forced refresh overwrites the entry and sends the same message, so the
//! other replicas read the new session.

pub mod admin;
pub mod breaker;
pub mod crypto;
pub mod entry;
pub mod messages;
mod stats;
mod tasks;
mod tombstones;

use stats::inc;
pub use stats::{SharedCacheSnapshot, SharedCacheStats};
pub use tombstones::SessionFingerprint;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, RedisResult};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, mpsc};

use crate::audit::Fingerprinter;
use crate::cache::{CacheKey, Credentials, Departure, Issuer, Lookup, OnDeparture};
use crate::clock::SharedClock;
use crate::error::BrokerError;
use breaker::Breaker;
use crypto::KeyRing;
use entry::unix_ms;
use tasks::{connect_loop, renew_loop, subscribe_loop};

/// Channel on which a replica announces an entry it wrote; the message is the entry's key name
/// (an HMAC), so waiting replicas read it at once instead of at their next poll.
pub const CHANNEL_PUBLISHED: &str = "ttb:v1:published";
/// Channel on which a replica tells the others to evict a key from their L1 (after
/// InvalidateCredentials or a forced refresh). The message is an encrypted envelope.
pub const CHANNEL_INVALIDATE: &str = "ttb:v1:invalidate";
/// Default per-operation timeout.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(50);
/// Default lease lifetime: how soon a dead holder's lease lets a waiter take over.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// Default bound on how long a replica waits for another's sign-in before signing in itself.
pub const DEFAULT_LEASE_WAIT: Duration = Duration::from_secs(10);
/// Default consecutive failures that open the circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// Default time the breaker stays open before one probe.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(5);

/// Compare-and-delete: deletes KEYS[1] only if it still holds ARGV[1] (a lease's fencing value,
/// or an entry's exact envelope).
const COMPARE_AND_DELETE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Compare-and-extend: renews a lease only for the holder of its fencing value.
const COMPARE_AND_EXTEND: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// First and longest pause between two polls of a waiter.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

/// `[cache.shared]`, validated.
#[derive(Clone)]
pub struct SharedCacheConfig {
    /// `redis://` or `rediss://` URL (a username may be in it, never a password).
    pub redis_url: String,
    /// CA bundle (PEM) for `rediss://` when Redis' certificate is not from a public CA.
    pub ca_file: Option<PathBuf>,
    /// Password (from `password_file`).
    pub password: Option<SecretString>,
    /// The encryption keys: current first.
    pub keys: KeyRing,
    /// Per-operation timeout.
    pub operation_timeout: Duration,
    /// Lease lifetime (renewed while the holder signs in).
    pub lease_ttl: Duration,
    /// Longest wait for another replica's sign-in.
    pub lease_wait: Duration,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
}

impl SharedCacheConfig {
    /// True when `other` would connect to the same Redis with the same credentials and keys and
    /// behave the same. Destructured field by field, so a new setting must be compared here to
    /// compile; secrets are compared, never shown. A reload that changes any of it needs a
    /// restart (the connection and the key ring are made once, at start).
    pub fn same_as(&self, other: &SharedCacheConfig) -> bool {
        let SharedCacheConfig {
            redis_url,
            ca_file,
            password,
            keys,
            operation_timeout,
            lease_ttl,
            lease_wait,
            breaker_failures,
            breaker_cooldown,
        } = self;
        let same_password = match (password, &other.password) {
            (None, None) => true,
            (Some(a), Some(b)) => a.expose_secret() == b.expose_secret(),
            _ => false,
        };
        *redis_url == other.redis_url
            && *ca_file == other.ca_file
            && same_password
            && keys.ids() == other.keys.ids()
            && *operation_timeout == other.operation_timeout
            && *lease_ttl == other.lease_ttl
            && *lease_wait == other.lease_wait
            && *breaker_failures == other.breaker_failures
            && *breaker_cooldown == other.breaker_cooldown
    }
}

impl std::fmt::Debug for SharedCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCacheConfig")
            .field("redis_url", &self.redis_url)
            .field("ca_file", &self.ca_file)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("keys", &self.keys)
            .field("operation_timeout", &self.operation_timeout)
            .field("lease_ttl", &self.lease_ttl)
            .field("lease_wait", &self.lease_wait)
            .finish_non_exhaustive()
    }
}

/// Why the shared cache could not be set up (Redis being down is not one: that is a fallback).
#[derive(Debug, thiserror::Error)]
pub enum SharedCacheError {
    /// The URL or TLS settings are unusable.
    #[error("[cache.shared] redis_url: {0}")]
    Client(String),
    /// The CA file could not be read.
    #[error("[cache.shared] ca_file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The shared cache. One per broker; cheap to clone.
#[derive(Clone)]
pub struct SharedCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("redis_url", &self.inner.config.redis_url)
            .field("breaker", &self.inner.breaker.state())
            .finish()
    }
}

struct Inner {
    config: SharedCacheConfig,
    conn: ArcSwapOption<ConnectionManager>,
    breaker: Breaker,
    stats: SharedCacheStats,
    clock: SharedClock,
    fingerprints: Arc<Fingerprinter>,
    /// This process, so it ignores its own invalidation messages.
    replica: String,
    /// Entry name to the waiter of this replica (one per key: L1 coalesces first).
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    evict: mpsc::UnboundedSender<CacheKey>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Invalidation message IDs seen lately: a replayed message is ignored.
    replays: messages::Replays,
    /// Told of each session this replica replaced in Redis, to sign it out after the grace
    /// period (set by the broker once its sign-out schedule exists).
    on_replaced: OnceLock<OnDeparture>,
    /// Revocation orders and answers (issue 27, [`admin`]).
    admin: admin::AdminChannels,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            t.abort();
        }
    }
}

/// The Redis names of one cache key.
struct Names {
    /// The entry under each key of the ring, current first.
    entries: Vec<String>,
    /// The lease (under the current key).
    lease: String,
}

fn entry_name(h: &str) -> String {
    format!("ttb:{{{h}}}:entry")
}

fn token_name(h: &str) -> String {
    format!("ttb:{{{h}}}:token")
}

/// Aborts a task when dropped (the lease renewal ends with the sign-in, however it ends).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a waiter's registration when its wait ends.
struct WaiterGuard<'a> {
    inner: &'a Inner,
    name: String,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.waiters).remove(&self.name);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds the redis-rs client: URL, password from its file, and a private CA for `rediss://`.
fn client(config: &SharedCacheConfig) -> Result<redis::Client, SharedCacheError> {
    let mut info = config
        .redis_url
        .as_str()
        .into_connection_info()
        .map_err(|e| SharedCacheError::Client(e.to_string()))?;
    if let Some(pw) = &config.password {
        let settings = info
            .redis_settings()
            .clone()
            .set_password(pw.expose_secret());
        info = info.set_redis_settings(settings);
    }
    match &config.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| SharedCacheError::CaFile {
                path: path.clone(),
                source,
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
        None => redis::Client::open(info),
    }
    .map_err(|e| SharedCacheError::Client(e.to_string()))
}

impl SharedCache {
    /// Sets up the shared cache and starts connecting in the background (the broker does not
    /// wait for Redis). Keys that other replicas invalidate arrive on the returned receiver, for
    /// the broker to evict from its L1. Call inside a tokio runtime.
    pub fn start(
        config: SharedCacheConfig,
        clock: SharedClock,
        fingerprints: Arc<Fingerprinter>,
    ) -> Result<(SharedCache, mpsc::UnboundedReceiver<CacheKey>), SharedCacheError> {
        let client = client(&config)?;
        let (evict, evicted) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            breaker: Breaker::new(
                config.breaker_failures,
                config.breaker_cooldown,
                clock.clone(),
            ),
            config,
            conn: ArcSwapOption::empty(),
            stats: SharedCacheStats::default(),
            clock,
            fingerprints,
            replica: hex::encode(rand::random::<[u8; 16]>()),
            waiters: Mutex::new(HashMap::new()),
            evict,
            tasks: Mutex::new(Vec::new()),
            replays: messages::Replays::default(),
            on_replaced: OnceLock::new(),
            admin: admin::AdminChannels::default(),
        });
        let weak = Arc::downgrade(&inner);
        let connect = tokio::spawn(connect_loop(weak.clone(), client.clone()));
        let subscribe = tokio::spawn(subscribe_loop(weak, client));
        lock(&inner.tasks).extend([connect.abort_handle(), subscribe.abort_handle()]);
        tracing::info!(
            redis = %redact_url(&inner.config.redis_url),
            key_id = %inner.config.keys.current_id(),
            "shared cache configured; connecting to Redis in the background"
        );
        Ok((SharedCache { inner }, evicted))
    }

    /// Sets what is told of each session this replica replaces in Redis (once; later calls are
    /// ignored): the broker schedules its sign-out after `replaced_session_grace`.
    pub fn on_replaced(&self, f: OnDeparture) {
        let _ = self.inner.on_replaced.set(f);
    }

    /// The counters, for the metrics exporter.
    pub fn snapshot(&self) -> SharedCacheSnapshot {
        self.inner
            .stats
            .snapshot(self.inner.breaker.state(), self.inner.conn.load().is_some())
    }

    /// An L1 miss: a good entry from Redis, or else `sign_in` run by exactly one replica (this
    /// one, or the lease holder whose entry this one then reads). Falls back to running
    /// `sign_in` here whenever Redis fails. The key is the owned L1 key the result is cached
    /// under.
    #[tracing::instrument(skip_all, fields(site = %key.site))]
    pub async fn get_or_sign_in<F>(
        &self,
        key: &CacheKey,
        issuer: Issuer<'_>,
        lookup: Lookup,
        sign_in: F,
    ) -> Result<(Credentials, bool), BrokerError>
    where
        F: Future<Output = Result<Credentials, BrokerError>> + Send,
    {
        let inner = &*self.inner;
        let names = inner.names(key, issuer);
        let expected = (key, issuer);
        if lookup.force_refresh {
            // Replaces the entry for every replica: sign in, overwrite, tell the others.
            return match sign_in.await {
                Ok(c) => {
                    inner.publish(&names, &c, None).await;
                    inner.send_evict(key).await;
                    Ok((c, false))
                }
                Err(e) => Err(e),
            };
        }
        match self.fetch(expected, &names, lookup.min_remaining).await {
            Ok(Some(c)) => {
                inc(&inner.stats.l2_hits);
                return Ok((c, true));
            }
            Ok(None) => inc(&inner.stats.l2_misses),
            Err(()) => return inner.fallback(sign_in).await.map(|c| (c, false)),
        }
        // Registered before the first lease attempt, so an announcement is never missed.
        let notify = Arc::new(Notify::new());
        lock(&inner.waiters).insert(names.entries[0].clone(), Arc::clone(&notify));
        let _registered = WaiterGuard {
            inner,
            name: names.entries[0].clone(),
        };
        let fence = hex::encode(rand::random::<[u8; 16]>());
        let deadline = Instant::now() + inner.config.lease_wait;
        let mut waited = false;
        let mut pause = POLL_FIRST;
        loop {
            match inner.try_lease(&names.lease, &fence).await {
                Err(()) => return inner.fallback(sign_in).await.map(|c| (c, false)),
                Ok(true) => {
                    inc(&inner.stats.leases_taken);
                    if waited {
                        inc(&inner.stats.lease_takeovers);
                        tracing::info!("took over a lease another replica left behind");
                    }
                    // Another replica may have written the entry between our read and our lease.
                    if let Ok(Some(c)) = self.fetch(expected, &names, lookup.min_remaining).await {
                        inner.release(&names.lease, &fence).await;
                        inc(&inner.stats.l2_hits);
                        return Ok((c, true));
                    }
                    return self
                        .sign_in_holding(&names, &fence, sign_in)
                        .await
                        .map(|c| (c, false));
                }
                Ok(false) => {
                    if !waited {
                        waited = true;
                        inc(&inner.stats.lease_waits);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        inc(&inner.stats.lease_wait_timeouts);
                        tracing::warn!(
                            lease_wait = ?inner.config.lease_wait,
                            "another replica's sign-in did not finish within lease_wait; signing in here"
                        );
                        let c = sign_in.await?;
                        inner.publish(&names, &c, None).await;
                        return Ok((c, false));
                    }
                    let _ =
                        tokio::time::timeout(pause.min(deadline - now), notify.notified()).await;
                    pause = (pause * 2).min(POLL_MAX);
                    match self.fetch(expected, &names, lookup.min_remaining).await {
                        Ok(Some(c)) => {
                            inc(&inner.stats.l2_hits);
                            return Ok((c, true));
                        }
                        Ok(None) => {}
                        Err(()) => return inner.fallback(sign_in).await.map(|c| (c, false)),
                    }
                }
            }
        }
    }

    async fn sign_in_holding<F>(
        &self,
        names: &Names,
        fence: &str,
        sign_in: F,
    ) -> Result<Credentials, BrokerError>
    where
        F: Future<Output = Result<Credentials, BrokerError>> + Send,
    {
        let inner = &*self.inner;
        let renewal = tokio::spawn(renew_loop(
            Arc::downgrade(&self.inner),
            names.lease.clone(),
            fence.to_owned(),
        ));
        let _renewal = AbortOnDrop(renewal.abort_handle());
        match sign_in.await {
            Ok(c) => {
                inner.publish(names, &c, Some(fence)).await;
                Ok(c)
            }
            Err(e) => {
                inner.release(&names.lease, fence).await;
                Err(e)
            }
        }
    }

    /// A token this replica does not hold, looked up through Redis (another replica handed it
    /// out), so InvalidateCredentials works on any replica.
    pub async fn find_by_token(&self, token: &SecretString) -> Option<Credentials> {
        let inner = &*self.inner;
        let index: Vec<String> = inner
            .config
            .keys
            .names(&[b"token", token.expose_secret().as_bytes()])
            .iter()
            .map(|h| token_name(h))
            .collect();
        let mut p = redis::pipe();
        for n in &index {
            p.cmd("GET").arg(n);
        }
        let found: Vec<Option<String>> = inner
            .run("token lookup", |mut c| async move {
                p.query_async(&mut c).await
            })
            .await
            .ok()?;
        for entry in found.into_iter().flatten() {
            let name = entry.clone();
            let got: Option<Vec<u8>> = inner
                .run("get", |mut c| async move {
                    redis::cmd("GET").arg(name).query_async(&mut c).await
                })
                .await
                .ok()?;
            if let Some(creds) = got.and_then(|v| inner.decode(&entry, &v, None)) {
                if creds.token.expose_secret() == token.expose_secret() {
                    return Some(creds);
                }
            }
        }
        None
    }

    /// Deletes the entry for `c`'s key if it still holds `c`'s token, and tells every other
    /// replica to evict the key from its L1. Returns true if an entry was deleted.
    pub async fn invalidate(&self, c: &Credentials) -> bool {
        let inner = &*self.inner;
        // First the tombstone, so no replica serves the session from Redis again, even if its
        // envelope is written back.
        self.tombstone(&self.fingerprint(&c.token), c.expires_at)
            .await;
        let names = inner.names(&c.key, c.issuer());
        let mut deleted = false;
        for name in &names.entries {
            let name = name.clone();
            let got: Result<Option<Vec<u8>>, ()> = inner
                .run("get", |mut conn| {
                    let name = name.clone();
                    async move { redis::cmd("GET").arg(&name).query_async(&mut conn).await }
                })
                .await;
            let Ok(Some(envelope)) = got else { continue };
            let same = inner
                .decode(&name, &envelope, Some((&c.key, c.issuer())))
                .is_some_and(|e| e.token.expose_secret() == c.token.expose_secret());
            if same {
                let n: Result<i64, ()> = inner
                    .run("delete", |mut conn| async move {
                        redis::cmd("EVAL")
                            .arg(COMPARE_AND_DELETE)
                            .arg(1)
                            .arg(&name)
                            .arg(envelope)
                            .query_async(&mut conn)
                            .await
                    })
                    .await;
                deleted |= n.is_ok_and(|n| n > 0);
            }
        }
        let index: Vec<String> = inner
            .config
            .keys
            .names(&[b"token", c.token.expose_secret().as_bytes()])
            .iter()
            .map(|h| token_name(h))
            .collect();
        let _: Result<i64, ()> = inner
            .run("delete", |mut conn| async move {
                redis::cmd("DEL").arg(index).query_async(&mut conn).await
            })
            .await;
        inner.send_evict(&c.key).await;
        deleted
    }
}

impl SharedCache {
    /// A good entry for the key and issuer from Redis, unless its session has a tombstone.
    async fn fetch(
        &self,
        expected: (&CacheKey, Issuer<'_>),
        names: &Names,
        min_remaining: Duration,
    ) -> Result<Option<Credentials>, ()> {
        let inner = &*self.inner;
        let mut p = redis::pipe();
        for n in &names.entries {
            p.cmd("GET").arg(n);
        }
        let values: Vec<Option<Vec<u8>>> = inner
            .run("get", |mut c| async move { p.query_async(&mut c).await })
            .await?;
        let good_until = inner.clock.now() + min_remaining;
        let found = names
            .entries
            .iter()
            .zip(values)
            .filter_map(|(n, v)| inner.decode(n, &v?, Some(expected)))
            .find(|c| c.expires_at > good_until);
        match found {
            Some(c) if self.is_tombstoned(&self.fingerprint(&c.token)).await => {
                tracing::warn!(token_fp = %c.digest.fingerprint(), "the shared cache holds an invalidated session (written back?); not serving it");
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

impl Inner {
    fn names(&self, key: &CacheKey, issuer: Issuer<'_>) -> Names {
        let scopes = key
            .scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let claims = entry::claims_part(key);
        let hashes = self
            .config
            .keys
            .names(&entry::name_parts(&scopes, &claims, key, issuer));
        let lease = hashes
            .first()
            .map(|h| format!("ttb:{{{h}}}:lease"))
            .unwrap_or_default();
        Names {
            entries: hashes.iter().map(|h| entry_name(h)).collect(),
            lease,
        }
    }

    /// Runs one Redis operation under the timeout and the breaker. `Err(())` means "fall back":
    /// the failure has been counted and logged.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, ()>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow() {
            return Err(());
        }
        // Before the first connection there is nothing to wait for: fall back at once, without
        // counting against the breaker (the connection task logs and retries).
        let conn = self.conn.load_full().ok_or(())?;
        match tokio::time::timeout(self.config.operation_timeout, op((*conn).clone())).await {
            Ok(Ok(v)) => {
                if self.breaker.success() {
                    tracing::info!("Redis answers again; the cache is shared again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                Err(())
            }
            Err(_) => {
                self.failed(what, "timed out");
                Err(())
            }
        }
    }

    fn failed(&self, what: &str, why: &str) {
        inc(&self.stats.redis_errors);
        if self.breaker.failure() {
            inc(&self.stats.breaker_opened);
            tracing::warn!(
                operation = what,
                error = why,
                cooldown = ?self.config.breaker_cooldown,
                "Redis is failing; serving from this replica's cache alone until it answers again"
            );
        } else {
            tracing::debug!(operation = what, error = why, "Redis operation failed");
        }
    }

    async fn fallback<F>(&self, sign_in: F) -> Result<Credentials, BrokerError>
    where
        F: Future<Output = Result<Credentials, BrokerError>>,
    {
        inc(&self.stats.fallback_signins);
        sign_in.await
    }

    /// Opens an entry. With `expected`, the entry must be for that key and issuer (and then
    /// carries the L1's own key, interned).
    fn decode(
        &self,
        name: &str,
        envelope: &[u8],
        expected: Option<(&CacheKey, Issuer<'_>)>,
    ) -> Option<Credentials> {
        entry::open_entry(
            &self.config.keys,
            &self.fingerprints,
            name,
            envelope,
            expected,
        )
    }

    async fn try_lease(&self, lease: &str, fence: &str) -> Result<bool, ()> {
        let ttl = u64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let got: Option<String> = self
            .run("lease", |mut c| async move {
                redis::cmd("SET")
                    .arg(lease)
                    .arg(fence)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(got.is_some())
    }

    async fn release(&self, lease: &str, fence: &str) {
        let _: Result<i64, ()> = self
            .run("release", |mut c| async move {
                redis::cmd("EVAL")
                    .arg(COMPARE_AND_DELETE)
                    .arg(1)
                    .arg(lease)
                    .arg(fence)
                    .query_async(&mut c)
                    .await
            })
            .await;
    }

    /// Writes the entry (expiring at its `expires_at`) and its token index, releases the lease
    /// if held, and announces the entry, in one round trip.
    async fn publish(&self, names: &Names, c: &Credentials, fence: Option<&str>) {
        let Some(name) = names.entries.first() else {
            return;
        };
        let ttl = unix_ms(c.expires_at).saturating_sub(unix_ms(self.clock.now()));
        if ttl == 0 {
            return;
        }
        let Some(envelope) = entry::seal_entry(&self.config.keys, name, c) else {
            return;
        };
        let index = self
            .config
            .keys
            .names(&[b"token", c.token.expose_secret().as_bytes()]);
        let mut p = redis::pipe();
        // GET: the session this write replaces, if any, to sign it out (issue 24, point 7).
        p.cmd("SET")
            .arg(name)
            .arg(envelope)
            .arg("PX")
            .arg(ttl)
            .arg("GET");
        if let Some(h) = index.first() {
            p.cmd("SET")
                .arg(token_name(h))
                .arg(name)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        if let Some(fence) = fence {
            p.cmd("EVAL")
                .arg(COMPARE_AND_DELETE)
                .arg(1)
                .arg(&names.lease)
                .arg(fence)
                .ignore();
        }
        p.cmd("PUBLISH").arg(CHANNEL_PUBLISHED).arg(name).ignore();
        let written: Result<(Option<Vec<u8>>,), ()> = self
            .run("publish", |mut conn| async move {
                p.query_async(&mut conn).await
            })
            .await;
        let Ok((old,)) = written else { return };
        inc(&self.stats.published);
        // The replaced session (under the same name, so for the same key and issuer) is signed
        // out after the grace period, as without Redis; the claim makes it one replica's job.
        if let (Some(old), Some(replaced)) = (old, self.on_replaced.get())
            && let Some(old) = self.decode(name, &old, None)
            && old.digest != c.digest
        {
            replaced(Arc::new(old), Departure::Replaced);
        }
    }

    async fn send_evict(&self, key: &CacheKey) {
        let Some(envelope) = messages::seal_message(
            &self.config.keys,
            CHANNEL_INVALIDATE,
            &self.replica,
            key,
            self.clock.now(),
        ) else {
            return;
        };
        let sent: Result<i64, ()> = self
            .run("invalidate", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(CHANNEL_INVALIDATE)
                    .arg(envelope)
                    .query_async(&mut c)
                    .await
            })
            .await;
        if sent.is_ok() {
            inc(&self.stats.invalidations_sent);
        }
    }

    fn on_message(&self, channel: &str, payload: &[u8]) {
        match channel {
            CHANNEL_PUBLISHED => {
                let Ok(name) = std::str::from_utf8(payload) else {
                    return;
                };
                if let Some(n) = lock(&self.waiters).get(name) {
                    n.notify_one();
                }
            }
            CHANNEL_INVALIDATE => {
                let Some(msg) = messages::open_message(
                    &self.config.keys,
                    channel,
                    payload,
                    self.clock.now(),
                    &self.replays,
                ) else {
                    return;
                };
                if msg.sender == self.replica {
                    return;
                }
                inc(&self.stats.invalidations_received);
                let _ = self.evict.send(msg.key);
            }
            _ => {}
        }
    }
}

/// The URL without any user part, for logs and `check-config`.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
