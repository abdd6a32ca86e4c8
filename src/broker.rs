//! The broker's use cases, free of gRPC: get credentials (policy, cache, mint, sign-in), mint a
//! JWT, invalidate a token, and describe a caller. The gRPC layer only converts messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use crate::audit::record::{AuditRecord, CallerRecord, Event, Outcome, Scopes, rfc3339};
use crate::audit::{AuditMode, AuditSink, CallerContext, Fingerprinter};
use crate::cache::{CacheKey, CredentialCache, Credentials, KeyRef, Lookup, OnDeparture};
use crate::clock::SharedClock;
use crate::config::{Config, MAX_JWT_TTL, SiteConfig};
use crate::error::BrokerError;
use crate::input::{self, echo};
use crate::limits::{LimitStats, SignInLimits};
use crate::mint::{MintedJwt, Minter};
use crate::policy::{AccessRequest, Authorization, CallerEntry, Denial};
use crate::scope::Scope;
use crate::shared_cache::SharedCache;
use crate::sign_outs::{SignOutQueue, SignOutSnapshot};
use crate::stats::{HistogramSnapshot, LabeledCounters, LatencyHistogram};
use crate::tableau::{ClientOptions, SignInTarget, TableauClient};
use crate::transport::identity::{CallerIdentity, IdentitySource};

/// Shortest JWT lifetime `MintJwt` hands out: a shorter one can expire on its way to Tableau
/// (clock skew, a retry), and asking for one is almost always a unit mistake.
pub const MIN_MINT_TTL: Duration = Duration::from_secs(30);

/// What the broker counts about its sign-ins and sign-outs at Tableau, for metrics: plain
/// numbers, read with [`Self::snapshot`]. Labels are bounded: a configured site name and an
/// outcome from a fixed vocabulary (or Tableau's numeric error code).
#[derive(Debug, Default)]
pub struct SignInStats {
    sign_ins: LabeledCounters<SiteOutcome>,
    latency: LatencyHistogram,
    sign_outs: LabeledCounters<&'static str>,
}

/// A `(site, outcome)` label pair of [`SignInStats`].
pub type SiteOutcome = (Arc<str>, Arc<str>);

/// [`SignInStats`] as plain numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignInStatsSnapshot {
    /// `((site, outcome), count)`: outcome is `ok`, Tableau's error code (`401001`),
    /// `unavailable`, `rate_limited` or `internal`.
    pub sign_ins: Vec<(SiteOutcome, u64)>,
    /// How long sign-ins took (JWT minting and the call to Tableau), successful or not.
    pub latency: HistogramSnapshot,
    /// `(outcome, count)`: `ok` or `failed`.
    pub sign_outs: Vec<(&'static str, u64)>,
}

impl SignInStats {
    /// The counts now.
    pub fn snapshot(&self) -> SignInStatsSnapshot {
        SignInStatsSnapshot {
            sign_ins: self.sign_ins.snapshot(),
            latency: self.latency.snapshot(),
            sign_outs: self.sign_outs.snapshot(),
        }
    }

    fn record(&self, site: &str, result: &Result<Credentials, BrokerError>, took: Duration) {
        self.latency.observe(took);
        let outcome: Arc<str> = match result {
            Ok(_) => Arc::from("ok"),
            Err(e) => Arc::from(sign_in_outcome(e)),
        };
        self.sign_ins.inc((Arc::from(site), outcome));
    }
}

/// The outcome label of a failed sign-in: Tableau's error code when it answered with one (a
/// short number, so the label set stays bounded whatever Tableau sends), else a fixed word.
pub fn sign_in_outcome(e: &BrokerError) -> &str {
    match e {
        BrokerError::Unavailable { .. } => "unavailable",
        BrokerError::RateLimited { .. } => "rate_limited",
        _ => match e.tableau_codes().0 {
            Some(code)
                if (1..=6).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                code
            }
            Some(_) => "rejected",
            None => "internal",
        },
    }
}

/// A request for credentials, as the caller sent it.
#[derive(Debug, Clone, Default)]
pub struct CredentialsRequest {
    /// Site name from the configuration.
    pub site: String,
    /// Tableau username.
    pub user: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Least remaining life a returned token must have.
    pub min_remaining: Duration,
    /// Sign in again and replace the cached entry.
    pub force_refresh: bool,
}

/// A cache hit as [`Broker::repeat_hit`] may answer it again.
struct LastHit {
    /// [`CredentialCache::id`].
    cache: u64,
    /// [`CredentialCache::version`] read before the lookup that found the entry.
    version: u64,
    /// The configuration generation that allowed it.
    generation: u64,
    /// Who asked.
    caller: Arc<str>,
    /// Which certificate field `caller` came from.
    source: IdentitySource,
    /// The site's usable token life then: `min_remaining` must stay below it.
    usable: Duration,
    /// The answer.
    issued: IssuedCredentials,
    /// Its audit record after the request ID, once one was written.
    line_tail: Option<LineTail>,
}

impl LastHit {
    /// True when this hit was for the same caller (identity and certificate field), in the same
    /// cache, under the same configuration generation (so the same policy decision).
    fn holds_for(&self, broker: &Broker, snapshot: &Snapshot, caller: &CallerContext) -> bool {
        self.cache == broker.cache.id()
            && self.generation == snapshot.generation
            && self.source == caller.source
            && *self.caller == *caller.id
    }

    /// True when `g` is this hit's answer, to the same caller under the same configuration.
    fn answered(
        &self,
        broker: &Broker,
        snapshot: &Snapshot,
        caller: &CallerContext,
        g: &IssuedCredentials,
    ) -> bool {
        self.holds_for(broker, snapshot, caller)
            && Arc::ptr_eq(&self.issued.credentials, &g.credentials)
    }
}

/// What follows the request ID in a repeated hit's audit record, around the caller's address
/// (which differs between its connections), and the certificate serial it names (the same
/// identity may hold several certificates).
struct LineTail {
    cert_serial: Option<Arc<str>>,
    before_peer: Vec<u8>,
    after_peer: Vec<u8>,
}

/// True when a request names its cache key exactly (site and user as the key holds them, scopes
/// already normalized): its audit record then says what the key says.
fn request_is_key(req: &CredentialsRequest, key: &CacheKey) -> bool {
    *key.site == *req.site
        && *key.user == *req.user
        && req.scopes.len() == key.scopes.len()
        && req
            .scopes
            .iter()
            .zip(key.scopes.iter())
            .all(|(r, k)| r == k.as_str())
}

thread_local! {
    /// One per worker thread: no lock, and a busy connection's calls land on the thread that
    /// answered the last one.
    static LAST_HIT: std::cell::RefCell<Option<LastHit>> = const { std::cell::RefCell::new(None) };
}

/// Credentials handed to a caller.
#[derive(Debug, Clone)]
pub struct IssuedCredentials {
    /// The session.
    pub credentials: Arc<Credentials>,
    /// True when no sign-in happened for this call.
    pub from_cache: bool,
    /// The site it is for.
    pub site: Arc<SiteConfig>,
}

/// What an invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalidated {
    /// The broker held the token and dropped it.
    pub evicted: bool,
    /// The session was ended at Tableau.
    pub signed_out: bool,
}

/// Everything derived from one configuration; swapped whole on reload.
struct Snapshot {
    config: Arc<Config>,
    clients: HashMap<String, TableauClient>,
    /// 1 for the configuration the broker started with, +1 for each applied reload: every
    /// audit record names the generation that decided it.
    generation: u64,
}

/// A configuration with everything built from it (Tableau clients), checked and ready to be
/// swapped in by [`Broker::commit`], which cannot fail.
pub struct PreparedSnapshot {
    snapshot: Snapshot,
}

impl std::fmt::Debug for PreparedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedSnapshot").finish_non_exhaustive()
    }
}

impl PreparedSnapshot {
    /// The configuration that would be swapped in.
    pub fn config(&self) -> &Arc<Config> {
        &self.snapshot.config
    }
}

/// What [`Broker::commit`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The new configuration generation.
    pub generation: u64,
    /// Sites whose cached sessions were dropped (server URL, content URL or connected app
    /// changed, or the site was removed), with how many sessions each.
    pub dropped: Vec<(String, usize)>,
}

/// Whether cached sessions of a site may outlive a change from `old` to `new`: only when the
/// session still belongs to the same server, site and connected app.
fn sessions_survive(old: &SiteConfig, new: &SiteConfig) -> bool {
    old.server_url == new.server_url
        && old.content_url == new.content_url
        && old.app.client_id == new.app.client_id
}

impl Snapshot {
    fn new(config: Config, clock: &SharedClock, generation: u64) -> Result<Snapshot, BrokerError> {
        let mut clients = HashMap::new();
        for (name, site) in &config.sites {
            let client = TableauClient::new(ClientOptions {
                connect_timeout: config.tableau.connect_timeout,
                request_timeout: config.tableau.request_timeout,
                ca_bundle: site.ca_bundle.clone(),
                ..ClientOptions::default()
            })
            .map_err(|e| BrokerError::Internal(format!("site {name}: {e}")))?
            .with_clock(clock.clone());
            clients.insert(name.clone(), client);
        }
        Ok(Snapshot {
            config: Arc::new(config),
            clients,
            generation,
        })
    }
}

/// The broker. One per process; share it behind an `Arc`.
pub struct Broker {
    snapshot: ArcSwap<Snapshot>,
    cache: CredentialCache,
    sign_outs: Arc<SignOutQueue>,
    limits: Arc<SignInLimits>,
    minter: Minter,
    clock: SharedClock,
    fingerprints: Arc<Fingerprinter>,
    stats: Arc<SignInStats>,
    audit: Arc<AuditSink>,
    /// Serializes reloads so generations are handed out in order.
    reload_lock: std::sync::Mutex<()>,
    /// Redis as L2 behind `cache` (issue 16), when `[cache.shared]` is configured.
    shared: Option<SharedCache>,
    /// Sign-ins that succeeded only with the standby secret after Tableau refused the active one.
    secret_fallbacks: Arc<AtomicU64>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("cache", &self.cache)
            .finish()
    }
}

fn target(site: &SiteConfig) -> SignInTarget {
    SignInTarget {
        server_url: site.server_url.clone(),
        api_version: site.api_version.clone(),
        content_url: site.content_url.clone(),
        format: site.format,
    }
}

impl Broker {
    /// Builds the broker and starts its sign-out worker; call inside a tokio runtime. Every
    /// decision is recorded in `audit`; tokens are fingerprinted with `fingerprints`.
    pub fn new(
        config: Config,
        clock: SharedClock,
        audit: AuditSink,
        fingerprints: Fingerprinter,
    ) -> Result<Arc<Broker>, BrokerError> {
        let snapshot = Snapshot::new(config, &clock, 1)?;
        let fingerprints = Arc::new(fingerprints);
        // Read at start only: a reload keeps the running Redis connection and keys.
        let shared = match &snapshot.config.cache.shared {
            Some(sc) => Some(
                SharedCache::start(sc.clone(), clock.clone(), Arc::clone(&fingerprints))
                    .map_err(|e| BrokerError::Internal(e.to_string()))?,
            ),
            None => None,
        };
        let c = &snapshot.config.cache;
        let sign_outs = SignOutQueue::new(
            clock.clone(),
            c.replaced_session_grace,
            c.max_pending_sign_outs,
        );
        // With a shared cache, a session leaving this replica's cache (by size or expiry) may
        // still be served by the other replicas, so it is not signed out; InvalidateCredentials
        // still signs out.
        // Wired whatever `sign_out_on_evict` says now: whether a session is signed out is read
        // from the configuration in force when its time comes, so the setting reloads.
        let departed = shared.is_none().then(|| {
            let queue = Arc::clone(&sign_outs);
            Arc::new(move |c, why| queue.schedule(c, why)) as OnDeparture
        });
        let cache = CredentialCache::new(c.max_entries, clock.clone(), departed);
        let (shared, remote_evictions) = match shared {
            Some((s, rx)) => (Some(s), Some(rx)),
            None => (None, None),
        };
        let broker = Arc::new(Broker {
            snapshot: ArcSwap::from_pointee(snapshot),
            cache,
            sign_outs: Arc::clone(&sign_outs),
            limits: Arc::new(SignInLimits::new(clock.clone())),
            minter: Minter::new(clock.clone()),
            clock,
            fingerprints,
            stats: Arc::default(),
            audit: Arc::new(audit),
            reload_lock: std::sync::Mutex::new(()),
            shared,
            secret_fallbacks: Arc::new(AtomicU64::new(0)),
        });
        broker
            .audit
            .enqueue(AuditRecord::new(Event::Start, broker.clock.now(), Outcome::Ok, 1).to_line());
        let weak = Arc::downgrade(&broker);
        tokio::spawn(sign_outs.run(move |c| {
            let b = weak.upgrade()?;
            Some(async move {
                // Read when the sign-out is due, so `sign_out_on_evict` reloads.
                b.config().cache.sign_out_on_evict && b.sign_out(&c).await
            })
        }));
        if let Some(rx) = remote_evictions {
            tokio::spawn(remote_eviction_worker(Arc::downgrade(&broker), rx));
        }
        tokio::spawn(housekeeping(Arc::downgrade(&broker)));
        Ok(broker)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.snapshot.load().config)
    }

    /// Replaces the configuration. Everything is built first; on error the running one stays.
    /// Cached sessions stay, except those of sites whose server, content URL or connected app
    /// changed: each request is still checked against the new policy. Both outcomes are
    /// audited; an applied reload gets the next generation.
    pub fn reload(&self, config: Config) -> Result<Committed, BrokerError> {
        match self.prepare(config) {
            Ok(prepared) => Ok(self.commit(prepared)),
            Err(e) => {
                self.record_reload_failure(&e.to_string());
                Err(e)
            }
        }
    }

    /// Builds everything a configuration needs (the Tableau clients) without touching the
    /// running state, so a reload can check every part before it swaps any.
    pub fn prepare(&self, config: Config) -> Result<PreparedSnapshot, BrokerError> {
        Ok(PreparedSnapshot {
            snapshot: Snapshot::new(config, &self.clock, 0)?,
        })
    }

    /// Swaps a prepared configuration in (one pointer store) under the next generation, then
    /// drops the cached sessions of sites that moved or went away (signed out after the grace
    /// period, as other callers may hold them) and forgets remembered sign-in failures (the
    /// reload may have fixed their cause). Cannot fail; audited.
    pub fn commit(&self, prepared: PreparedSnapshot) -> Committed {
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut snapshot = prepared.snapshot;
        let old = self.snapshot.load_full();
        snapshot.generation = old.generation + 1;
        let generation = snapshot.generation;
        let new_config = Arc::clone(&snapshot.config);
        let c = &new_config.cache;
        self.sign_outs
            .configure(c.replaced_session_grace, c.max_pending_sign_outs);
        self.snapshot.store(Arc::new(snapshot));
        self.limits.forget_failures();
        let mut dropped = Vec::new();
        for (name, site) in &old.config.sites {
            let keep = new_config
                .site(name)
                .is_some_and(|new| sessions_survive(site, new));
            if !keep {
                dropped.push((name.clone(), self.cache.drop_site(name)));
            }
        }
        self.audit.enqueue(
            AuditRecord::new(Event::Reload, self.clock.now(), Outcome::Ok, generation).to_line(),
        );
        Committed {
            generation,
            dropped,
        }
    }

    /// Audits a reload that was refused (a bad file, bad certificates): the running generation
    /// stays and the record says why.
    pub fn record_reload_failure(&self, message: &str) {
        let mut r = AuditRecord::new(
            Event::Reload,
            self.clock.now(),
            Outcome::Failed,
            self.generation(),
        );
        r.reason = "RELOAD_REFUSED".to_owned();
        r.message = Some(message.to_owned());
        self.audit.enqueue(r.to_line());
    }

    /// Audits a connection closed because no caller entry matches its identity and `quota` such
    /// connections were open already (a newer one took its place): every call on it would be
    /// refused, and it must not hold the connection slots callers need.
    pub fn record_connection_refused(&self, caller: &CallerContext, quota: usize) {
        let e = BrokerError::Denied(Denial::UnknownCaller {
            identity: caller.id.to_string(),
            field: caller.source,
        });
        let mut r = AuditRecord::new(
            Event::Connection,
            self.clock.now(),
            Outcome::Denied,
            self.generation(),
        )
        .error(&e);
        r.message = Some(format!(
            "connection closed: {quota} connections whose identity matches no caller entry were open, and a newer one took its place; {e}"
        ));
        r.caller = Some(CallerRecord::new(caller, None));
        self.audit.enqueue(r.to_line());
    }

    /// Audits a connected-app secret that could not be used for `site`, and what was tried
    /// instead (`message`: secret IDs and why, never a secret value).
    pub fn record_secret_fallback(&self, site: &str, message: &str) {
        let mut r = AuditRecord::new(
            Event::SecretFallback,
            self.clock.now(),
            Outcome::Ok,
            self.generation(),
        );
        r.site = Some(site);
        r.reason = "SECRET_FALLBACK".to_owned();
        r.message = Some(message.to_owned());
        self.audit.enqueue(r.to_line());
    }

    /// The generation of the configuration in force (1 at start, +1 per applied reload).
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// The audit sink, for its counters.
    pub fn audit(&self) -> &AuditSink {
        &self.audit
    }

    /// Counters of the sign-out schedule (and how many wait now), for metrics and tests.
    pub fn sign_out_stats(&self) -> SignOutSnapshot {
        self.sign_outs.snapshot()
    }

    /// Counters of sign-ins refused by the broker's limits, for metrics.
    pub fn limit_stats(&self) -> &Arc<LimitStats> {
        self.limits.stats()
    }

    /// Sign-ins that succeeded only with the standby secret after Tableau refused the active
    /// one (a rotation step done out of order); for metrics.
    pub fn secret_fallbacks(&self) -> u64 {
        self.secret_fallbacks.load(Ordering::Relaxed)
    }

    /// The cache, for metrics and tests.
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// Sign-ins and sign-outs at Tableau, for metrics.
    pub fn sign_in_stats(&self) -> &SignInStats {
        &self.stats
    }

    /// The shared cache (issue 16), for metrics and tests; `None` without `[cache.shared]`.
    pub fn shared_cache(&self) -> Option<&SharedCache> {
        self.shared.as_ref()
    }

    /// The token fingerprinter, so transport logs can match the audit lines.
    pub fn fingerprints(&self) -> &Fingerprinter {
        &self.fingerprints
    }

    /// The policy decision, in the order that keeps refusals cheap: the caller's entry first (a
    /// certificate without one is refused before anything else), then the size of every input,
    /// then the request itself.
    fn authorize(
        &self,
        config: &Config,
        identity: &CallerContext,
        site: &str,
        user: &str,
        scopes: &[String],
    ) -> Result<(Authorization, Arc<SiteConfig>), BrokerError> {
        let Some(entry) = config.policy.caller(identity.source, &identity.id) else {
            return Err(BrokerError::Denied(Denial::UnknownCaller {
                identity: identity.id.to_string(),
                field: identity.source,
            }));
        };
        input::check_request(site, user, scopes)?;
        if site.trim().is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "site",
                message: "empty: give a site name from the broker's configuration".into(),
            });
        }
        if user.trim().is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "user",
                message: "empty: give the Tableau username to sign in as".into(),
            });
        }
        let allowed = config.policy.decide_for(
            entry,
            &AccessRequest {
                source: identity.source,
                identity: &identity.id,
                site,
                user,
                scopes,
            },
        )?;
        let site_cfg = config
            .site(site)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownSite {
                site: site.to_owned(),
            })?;
        Ok((allowed, site_cfg))
    }

    /// Credentials for a site, a user and scopes: policy first, then the cache, then one
    /// sign-in shared by every concurrent miss for the same key. The decision is audited; in
    /// fail-closed mode the token is returned only once its record is written.
    ///
    /// A hit makes no span: nothing is logged on it, and formatting the request's fields into
    /// one cost more than the rest of the hit. The sign-in path has the span.
    pub async fn get_credentials(
        &self,
        caller: &CallerContext,
        req: CredentialsRequest,
    ) -> Result<IssuedCredentials, BrokerError> {
        let request_id = uuid::Uuid::new_v4();
        let snapshot = self.snapshot.load_full();
        let result = self
            .get_credentials_inner(&snapshot, caller, request_id, &req)
            .await;
        if !self.audit.is_enabled() {
            // No trail (a development choice): build no record, the cache hit stays cheap.
            return result;
        }
        let line = self.credentials_line(&snapshot, caller, request_id, &req, &result);
        // Boxed: the wait for the group commit stays out of the audit-off call's future.
        let commit = Box::pin(self.finish(line, result));
        commit.await
    }

    /// The audit line of one GetCredentials decision. A function of its own so that the record
    /// (borrowed while it is built) is never part of the call's future.
    fn credentials_line(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
        result: &Result<IssuedCredentials, BrokerError>,
    ) -> Vec<u8> {
        tracing::debug!(outcome = %result.as_ref().map_or_else(BrokerError::reason, |_| "OK".into()), %request_id, "decision");
        let now = self.clock.now();
        let repeat = match result {
            Ok(g) if g.from_cache && request_is_key(req, &g.credentials.key) => Some(g),
            _ => None,
        };
        if let Some(g) = repeat
            && let Some(line) = self.repeated_line(snapshot, caller, g, now, request_id)
        {
            return line;
        }
        let entry = entry_of(&snapshot.config, caller);
        let mut r = self.rpc_record(
            "GetCredentials",
            snapshot,
            caller,
            entry.as_deref(),
            request_id,
            now,
        );
        r.site = Some(&req.site);
        r.user = Some(&req.user);
        r.scopes_requested = Some(Scopes::Raw(&req.scopes));
        let r = match result {
            Ok(g) => {
                let c = &g.credentials;
                r.scopes_granted = Some(Scopes::Parsed(&c.key.scopes));
                r.from_cache = Some(g.from_cache);
                r.jti = (!g.from_cache).then(|| c.jti.hyphenated().to_string());
                r.token_fp = Some(c.digest.fingerprint().to_string());
                r.expires_at = Some(rfc3339(c.expires_at));
                r
            }
            Err(e) => {
                r.from_cache = Some(false);
                r.error(e)
            }
        };
        let line = r.to_line();
        if let Some(g) = repeat {
            self.keep_line_tail(snapshot, caller, g, &line, now, request_id);
        }
        line
    }

    /// The record of a repeated cache hit, from the remainder kept with the last hit (see
    /// [`Self::keep_line_tail`]): everything after the request ID is the same when the same
    /// caller, on the same connection address and certificate, got the same cache entry under
    /// the same configuration generation, asking exactly for its key.
    fn repeated_line(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        g: &IssuedCredentials,
        now: std::time::SystemTime,
        request_id: uuid::Uuid,
    ) -> Option<Vec<u8>> {
        LAST_HIT.with_borrow(|last| {
            let h = last
                .as_ref()
                .filter(|h| h.answered(self, snapshot, caller, g))?;
            let tail = h
                .line_tail
                .as_ref()
                .filter(|t| t.cert_serial == caller.cert_serial)?;
            let mut line = crate::audit::record::rpc_line_head(now, request_id);
            line.extend_from_slice(&tail.before_peer);
            serde_json::to_writer(&mut line, &caller.peer).ok()?;
            line.extend_from_slice(&tail.after_peer);
            Some(line)
        })
    }

    /// Keeps what follows the request ID in `line` (a hit's record) with the last hit, for
    /// [`Self::repeated_line`].
    fn keep_line_tail(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        g: &IssuedCredentials,
        line: &[u8],
        now: std::time::SystemTime,
        request_id: uuid::Uuid,
    ) {
        let head = crate::audit::record::rpc_line_head(now, request_id);
        let Some(rest) = line.strip_prefix(head.as_slice()) else {
            return;
        };
        // The caller's address differs between its connections: kept out, written per call.
        const PEER_KEY: &[u8] = b"\"peer\":";
        let Ok(peer) = serde_json::to_vec(&caller.peer) else {
            return;
        };
        let field = [PEER_KEY, &peer].concat();
        let Some(at) = rest
            .windows(field.len())
            .position(|w| w == field.as_slice())
        else {
            return;
        };
        let (before_peer, after) = rest.split_at(at + PEER_KEY.len());
        let Some(after_peer) = after.get(peer.len()..) else {
            return;
        };
        LAST_HIT.with_borrow_mut(|last| {
            if let Some(h) = last
                .as_mut()
                .filter(|h| h.answered(self, snapshot, caller, g))
            {
                h.line_tail = Some(LineTail {
                    cert_serial: caller.cert_serial.clone(),
                    before_peer: before_peer.to_vec(),
                    after_peer: after_peer.to_vec(),
                });
            }
        });
    }

    /// The common part of an RPC's record, made at `now`.
    fn rpc_record<'a>(
        &self,
        rpc: &'static str,
        snapshot: &Snapshot,
        caller: &'a CallerContext,
        entry: Option<&'a str>,
        request_id: uuid::Uuid,
        now: std::time::SystemTime,
    ) -> AuditRecord<'a> {
        let mut r = AuditRecord::new(Event::Rpc, now, Outcome::Granted, snapshot.generation);
        r.request_id = Some(request_id.hyphenated().to_string());
        r.rpc = Some(rpc);
        r.caller = Some(CallerRecord::new(caller, entry));
        r
    }

    /// Writes an RPC's record, then lets its result go. A result that hands something secret out
    /// becomes `AuditUnavailable` when the record could not be written in fail-closed mode; a
    /// refusal or failure stays what it was (nothing leaves), the write failure is counted.
    async fn finish<T>(
        &self,
        line: Vec<u8>,
        result: Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let written = self.audit.record(line).await;
        match (result, written) {
            (Ok(_), Err(_)) => Err(BrokerError::AuditUnavailable),
            (result, _) => result,
        }
    }

    /// Policy, then the cache. A hit is answered without awaiting anything; only a miss enters
    /// [`Self::sign_in_path`], boxed, so that the future of every call (which tonic boxes and
    /// moves) is as small as a hit needs rather than as large as a sign-in does.
    async fn get_credentials_inner(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
    ) -> Result<IssuedCredentials, BrokerError> {
        // Read before the lookup: a change to the cache after it makes the copy kept below stale.
        let version = self.cache.version();
        if let Some(issued) = self.repeat_hit(snapshot, caller, req, version) {
            self.cache.count_hit();
            return Ok(issued);
        }
        let (allowed, site) =
            self.authorize(&snapshot.config, caller, &req.site, &req.user, &req.scopes)?;
        let (key, lookup) = cache_lookup(&site, req, &allowed);
        let usable = usable_life(&snapshot.config, &site);
        if lookup.min_remaining < usable
            && let Some(credentials) = self.cache.hit(key, lookup, &site.server_url)
        {
            let issued = IssuedCredentials {
                credentials,
                from_cache: true,
                site,
            };
            LAST_HIT.with_borrow_mut(|last| {
                *last = Some(LastHit {
                    cache: self.cache.id(),
                    version,
                    generation: snapshot.generation,
                    caller: Arc::clone(&caller.id),
                    source: caller.source,
                    usable,
                    issued: issued.clone(),
                    line_tail: None,
                });
            });
            return Ok(issued);
        }
        // Boxed in a statement of its own: a temporary of the `.await` statement would be kept
        // in this future's state, which is what the box is for avoiding.
        let miss = Box::pin(self.sign_in_path(snapshot, caller, request_id, req, allowed, site));
        miss.await
    }

    /// The last hit this thread answered, again, when `req` asks exactly what it asked and
    /// nothing the answer depended on has moved: the same caller (identity and certificate
    /// field), the same configuration generation (so the same policy decision), the same cache
    /// entry (the cache's version has not moved since it was looked up), and still fresh enough
    /// for `req.min_remaining`. Scopes must be sent as the cache key holds them (normalized);
    /// other spellings take the full path. Saves the policy check and the cache lookup on the
    /// call that dominates a busy broker: one service asking again for what it already has.
    fn repeat_hit(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        req: &CredentialsRequest,
        version: u64,
    ) -> Option<IssuedCredentials> {
        if req.force_refresh {
            return None;
        }
        LAST_HIT.with_borrow(|last| {
            let h = last.as_ref()?;
            let c = &h.issued.credentials;
            let same = h.holds_for(self, snapshot, caller)
                && h.version == version
                && request_is_key(req, &c.key)
                && req.min_remaining < h.usable
                && c.expires_at > self.clock.now() + req.min_remaining;
            same.then(|| h.issued.clone())
        })
    }

    /// A call the cache could not answer at once: a refused `min_remaining`, a sign-in (or one
    /// in flight to join), a session from the shared cache, or a site that moved.
    #[tracing::instrument(name = "get_credentials", skip_all, fields(caller = %echo(&caller.id), source = caller.source.cert_field(), site = %echo(&req.site), user = %echo(&req.user)))]
    async fn sign_in_path(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
        allowed: Authorization,
        site: Arc<SiteConfig>,
    ) -> Result<IssuedCredentials, BrokerError> {
        let usable = usable_life(&snapshot.config, &site);
        if req.min_remaining >= usable {
            return Err(BrokerError::InvalidArgument {
                field: "min_remaining",
                message: format!(
                    "{} is not less than the longest a token from site {:?} is handed out ({}); ask for less",
                    humantime::format_duration(req.min_remaining),
                    site.name,
                    humantime::format_duration(usable)
                ),
            });
        }
        let (key, lookup) = cache_lookup(&site, req, &allowed);
        // Set when this call's miss was answered from the shared cache (Redis). Calls that
        // coalesced onto it in this replica report a sign-in, as they do for a real one. Made on a
        // miss only, so a hit allocates nothing.
        let from_l2 = std::sync::OnceLock::<Arc<std::sync::atomic::AtomicBool>>::new();
        // Built on every call but cheap: it only borrows. It runs only when this call would
        // start a sign-in, so the limits and the clones below cost nothing on a hit.
        let start = |key: &CacheKey| {
            let config = Arc::clone(&snapshot.config);
            let entry = config
                .policy
                .caller(caller.source, &caller.id)
                .map_or_else(|| caller.id.to_string(), |e| e.pattern.to_string());
            let shared = self.shared.clone();
            // Without a shared cache every start is a sign-in, so the limits are checked here and
            // refuse this caller alone. With one, Redis may still answer: they are checked inside
            // the sign-in, only when Redis did not.
            if shared.is_none() {
                self.limits.admit(&config.limits, &entry, key.as_ref())?;
            }
            let limits = Arc::clone(&self.limits);
            let slots = self.limits.site_slots(&config.limits, &site.name);
            let (remember, ttl) = (self.limits.rememberer(), config.limits.negative_cache_ttl);
            let client = snapshot.clients.get(&site.name).cloned();
            let (site, key) = (Arc::clone(&site), key.clone());
            let (minter, clock, stats, fallbacks) = (
                self.minter.clone(),
                self.clock.clone(),
                Arc::clone(&self.stats),
                Arc::clone(&self.secret_fallbacks),
            );
            let audit = SignInAudit {
                fingerprints: Arc::clone(&self.fingerprints),
                sink: Arc::clone(&self.audit),
                request_id,
                caller: caller.clone(),
                entry: entry_of(&snapshot.config, caller),
                generation: snapshot.generation,
            };
            let from_l2 = Arc::clone(from_l2.get_or_init(Arc::default));
            let check_limits_late = shared.is_some();
            let signing_key = key.clone();
            let signing = async move {
                let key = signing_key;
                if check_limits_late {
                    limits.admit(&config.limits, &entry, key.as_ref())?;
                }
                let _slot = slots.acquire().await?;
                let client = client.ok_or_else(|| {
                    BrokerError::Internal(format!("no client for site {}", site.name))
                })?;
                let started = std::time::Instant::now();
                let name = site.name.clone();
                let ctx = SignInContext {
                    minter,
                    clock,
                    usable,
                    audit,
                    fallbacks,
                };
                let result = sign_in(client, site, key.clone(), ctx).await;
                stats.record(&name, &result, started.elapsed());
                if let Err(e) = &result {
                    remember.remember(ttl, &key, e);
                }
                result
            };
            Ok(async move {
                match shared {
                    // Redis is asked before signing in (one sign-in across replicas) and is
                    // given the new session after.
                    Some(shared) => {
                        let (c, hit) = shared.get_or_sign_in(&key, lookup, signing).await?;
                        from_l2.store(hit, std::sync::atomic::Ordering::Relaxed);
                        Ok(c)
                    }
                    None => signing.await,
                }
            })
        };
        let (mut credentials, hit) = self.cache.get_or_try_sign_in(key, lookup, &start).await?;
        let mut from_cache = hit
            || from_l2
                .get()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed));
        // A session is only ever returned with the server URL that issued it. A mismatch means
        // the site moved to another server while this session was cached or being signed in
        // (its entries were dropped on reload, but a sign-in that was in flight can land after
        // that); sign in again at the current server, once or twice at most.
        let mut retries = 0;
        while *credentials.server_url != *site.server_url {
            if retries == 2 {
                return Err(BrokerError::Unavailable {
                    site: site.name.clone(),
                    reason: "the site's server changed during the sign-in; retry".into(),
                });
            }
            retries += 1;
            let again = Lookup {
                force_refresh: true,
                ..lookup
            };
            (credentials, from_cache) = self.cache.get_or_try_sign_in(key, again, &start).await?;
        }
        Ok(IssuedCredentials {
            credentials,
            from_cache,
            site,
        })
    }

    /// A JWT for callers that sign in themselves or embed views; same policy as credentials.
    /// Audited like credentials: in fail-closed mode the JWT is returned only once its record is
    /// written.
    #[tracing::instrument(skip_all, fields(caller = %echo(&caller.id), source = caller.source.cert_field(), site = %echo(site), user = %echo(user)))]
    pub async fn mint_jwt(
        &self,
        caller: &CallerContext,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedJwt, BrokerError> {
        let request_id = uuid::Uuid::new_v4();
        let snapshot = self.snapshot.load_full();
        let result = self.mint_jwt_inner(&snapshot.config, caller, site, user, scopes, ttl);
        if !self.audit.is_enabled() {
            return result.map(|(m, _)| m);
        }
        let entry = entry_of(&snapshot.config, caller);
        let mut r = self.rpc_record(
            "MintJwt",
            &snapshot,
            caller,
            entry.as_deref(),
            request_id,
            self.clock.now(),
        );
        r.site = Some(site);
        r.user = Some(user);
        r.scopes_requested = Some(Scopes::Raw(scopes));
        tracing::debug!(outcome = %result.as_ref().map_or_else(BrokerError::reason, |_| "OK".into()), %request_id, "decision");
        let r = match &result {
            Ok((m, granted)) => {
                r.scopes_granted = Some(Scopes::Parsed(granted));
                r.jti = Some(m.jti.hyphenated().to_string());
                r.expires_at = Some(rfc3339(m.expires_at));
                r
            }
            Err(e) => r.error(e),
        };
        let line = r.to_line();
        drop(r);
        self.finish(line, result).await.map(|(m, _)| m)
    }

    fn mint_jwt_inner(
        &self,
        config: &Config,
        caller: &CallerContext,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(MintedJwt, Vec<Scope>), BrokerError> {
        let (allowed, site_cfg) = self.authorize(config, caller, site, user, scopes)?;
        let limit = allowed
            .max_jwt_ttl
            .map_or(site_cfg.jwt_ttl, |g| g.min(site_cfg.jwt_ttl))
            .min(MAX_JWT_TTL);
        let ttl = ttl.unwrap_or(limit);
        if ttl < MIN_MINT_TTL || ttl > limit {
            return Err(BrokerError::InvalidArgument {
                field: "ttl",
                message: format!(
                    "{} is outside [{}, {}]: at least {} (a shorter JWT can expire on its way to Tableau), at most the limit of your grant and site {}",
                    humantime::format_duration(ttl),
                    humantime::format_duration(MIN_MINT_TTL),
                    humantime::format_duration(limit),
                    humantime::format_duration(MIN_MINT_TTL),
                    input::quoted(site)
                ),
            });
        }
        self.minter
            .mint(&site_cfg.app, user, &allowed.scopes, ttl)
            .map_err(|e| BrokerError::Internal(e.to_string()))
            .map(|m| (m, allowed.scopes))
    }

    /// Drops a token Tableau refused and ends its session. Unknown tokens are not an error;
    /// another caller's token is. A certificate without a caller entry is refused before the token
    /// is looked at. Audited with the token's fingerprint.
    #[tracing::instrument(skip_all, fields(caller = %echo(&caller.id), source = caller.source.cert_field()))]
    pub async fn invalidate(
        &self,
        caller: &CallerContext,
        token: &SecretString,
    ) -> Result<Invalidated, BrokerError> {
        let request_id = uuid::Uuid::new_v4();
        let snapshot = self.snapshot.load_full();
        let digest = self.fingerprints.digest(token);
        let mut found = None;
        let result = self
            .invalidate_inner(&snapshot, caller, token, &digest, &mut found)
            .await;
        let entry = entry_of(&snapshot.config, caller);
        let mut r = self.rpc_record(
            "InvalidateCredentials",
            &snapshot,
            caller,
            entry.as_deref(),
            request_id,
            self.clock.now(),
        );
        r.outcome = Outcome::Ok;
        r.token_fp = Some(digest.fingerprint().to_string());
        if let Some(f) = &found {
            r.site = Some(&f.key.site);
            r.user = Some(&f.key.user);
            r.scopes_granted = Some(Scopes::Parsed(&f.key.scopes));
        }
        let r = match &result {
            Ok(out) => {
                r.evicted = Some(out.evicted);
                r.signed_out = Some(out.signed_out);
                r
            }
            Err(e) => r.error(e),
        };
        // Nothing secret leaves with an invalidation's answer: a failed write is only counted.
        tracing::debug!(outcome = ?r.outcome, reason = %r.reason, "decision");
        let _ = self.audit.record(r.to_line()).await;
        result
    }

    async fn invalidate_inner(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        token: &SecretString,
        digest: &crate::audit::TokenDigest,
        found_out: &mut Option<Arc<Credentials>>,
    ) -> Result<Invalidated, BrokerError> {
        let policy = &snapshot.config.policy;
        if policy.caller(caller.source, &caller.id).is_none() {
            return Err(BrokerError::Denied(Denial::UnknownCaller {
                identity: caller.id.to_string(),
                field: caller.source,
            }));
        }
        input::check_token(token.expose_secret())?;
        let mut found = self.cache.find_by_digest(digest);
        if let (None, Some(shared)) = (&found, &self.shared) {
            // Another replica may have handed the token out.
            found = shared.find_by_token(token).await.map(Arc::new);
        }
        let Some(found) = found else {
            return Ok(Invalidated {
                evicted: false,
                signed_out: false,
            });
        };
        *found_out = Some(Arc::clone(&found));
        if !policy.may_hold(
            caller.source,
            &caller.id,
            &found.key.site,
            &found.key.user,
            &found.key.scopes,
        ) {
            return Err(BrokerError::NotYourToken);
        }
        let mut evicted = self.cache.remove_by_digest(digest).is_some();
        if let Some(shared) = &self.shared {
            // Drop the entry in Redis and from every replica's cache.
            evicted |= shared.invalidate(&found).await;
        }
        let signed_out = if snapshot.config.cache.sign_out_on_evict {
            self.sign_out(&found).await
        } else {
            false
        };
        Ok(Invalidated {
            evicted,
            signed_out,
        })
    }

    /// The caller entry that applies to an identity, if any.
    pub fn whoami(&self, identity: &CallerIdentity) -> Option<CallerEntry> {
        self.config()
            .policy
            .caller(identity.source, &identity.id)
            .cloned()
    }

    async fn sign_out(&self, c: &Credentials) -> bool {
        let snapshot = self.snapshot.load_full();
        let (Some(site), Some(client)) = (
            snapshot.config.site(&c.key.site),
            snapshot.clients.get(&*c.key.site),
        ) else {
            return false;
        };
        // At the server that issued the session, which is no longer the site's after a move.
        let ok = match client
            .sign_out(&c.server_url, &site.api_version, &c.token)
            .await
        {
            Ok(()) => {
                self.stats.sign_outs.inc("ok");
                tracing::debug!(site = %c.key.site, token_fp = %c.digest.fingerprint(), "signed out");
                true
            }
            Err(e) => {
                self.stats.sign_outs.inc("failed");
                tracing::warn!(site = %c.key.site, token_fp = %c.digest.fingerprint(), error = %e, "sign-out failed");
                false
            }
        };
        let mut r = AuditRecord::new(
            Event::SignOut,
            self.clock.now(),
            if ok { Outcome::Ok } else { Outcome::Failed },
            snapshot.generation,
        );
        r.site = Some(&c.key.site);
        r.user = Some(&c.key.user);
        r.scopes_granted = Some(Scopes::Parsed(&c.key.scopes));
        r.token_fp = Some(c.digest.fingerprint().to_string());
        r.signed_out = Some(ok);
        if !ok {
            r.reason = "TABLEAU_SIGN_OUT_FAILED".to_owned();
        }
        self.audit.enqueue(r.to_line());
        ok
    }
}

/// The cache key and lookup of a GetCredentials call, borrowed from what policy allowed.
fn cache_lookup<'a>(
    site: &'a SiteConfig,
    req: &'a CredentialsRequest,
    allowed: &'a Authorization,
) -> (KeyRef<'a>, Lookup) {
    let key = KeyRef {
        site: &site.name,
        user: &req.user,
        scopes: &allowed.scopes,
    };
    let lookup = Lookup {
        min_remaining: req.min_remaining,
        force_refresh: req.force_refresh,
    };
    (key, lookup)
}

/// How long a token is handed out: Tableau's session lifetime less the safety margin.
fn usable_life(config: &Config, site: &SiteConfig) -> Duration {
    site.session_ttl.saturating_sub(config.cache.safety_margin)
}

/// The `[[callers]]` entry that applies to an identity, as configured, for audit records.
fn entry_of(config: &Config, caller: &CallerContext) -> Option<String> {
    config
        .policy
        .caller(caller.source, &caller.id)
        .map(|e| e.pattern.to_string())
}

/// What a sign-in's audit record needs from the call that led it, and the fingerprinter for the
/// token it brings back.
struct SignInAudit {
    fingerprints: Arc<Fingerprinter>,
    sink: Arc<AuditSink>,
    request_id: uuid::Uuid,
    caller: CallerContext,
    entry: Option<String>,
    generation: u64,
}

/// What a sign-in needs besides the client, the site and the key.
struct SignInContext {
    minter: Minter,
    clock: SharedClock,
    usable: Duration,
    audit: SignInAudit,
    fallbacks: Arc<AtomicU64>,
}

/// Tableau's connected-app sub-codes that say the secret did not verify: 10084 (the signature
/// fails, e.g. a wrong value) and 10085 (no secret with this ID, e.g. not added yet or deleted).
/// Only these are retried with the standby secret.
const SECRET_REFUSED: [u32; 2] = [10084, 10085];

/// Writes the sign-in's record before its JWT leaves the broker: in fail-closed mode a trail that
/// cannot be written stops the sign-in here, so Tableau never sees it.
async fn record_sign_in(
    audit: &SignInAudit,
    site: &SiteConfig,
    key: &CacheKey,
    minted: &MintedJwt,
) -> Result<(), BrokerError> {
    let mut r = AuditRecord::new(
        Event::SignIn,
        minted.issued_at,
        Outcome::Ok,
        audit.generation,
    );
    r.request_id = Some(audit.request_id.hyphenated().to_string());
    r.caller = Some(CallerRecord::new(&audit.caller, audit.entry.as_deref()));
    r.site = Some(&site.name);
    r.user = Some(&key.user);
    r.scopes_granted = Some(Scopes::Parsed(&key.scopes));
    r.jti = Some(minted.jti.hyphenated().to_string());
    r.expires_at = Some(rfc3339(minted.expires_at));
    if audit.sink.record(r.to_line()).await.is_err() && audit.sink.mode() == AuditMode::FailClosed {
        return Err(BrokerError::AuditUnavailable);
    }
    Ok(())
}

async fn sign_in(
    client: TableauClient,
    site: Arc<SiteConfig>,
    key: CacheKey,
    ctx: SignInContext,
) -> Result<Credentials, BrokerError> {
    let mint = |app: &crate::config::ConnectedApp| {
        ctx.minter
            .mint(app, &key.user, &key.scopes, site.jwt_ttl)
            .map_err(|e| BrokerError::Internal(e.to_string()))
    };
    let minted = mint(&site.app)?;
    record_sign_in(&ctx.audit, &site, &key, &minted).await?;
    let mut signed_in_at = ctx.clock.now();
    let mut jti = minted.jti;
    let first = client.sign_in(&target(&site), &minted.jwt).await;
    let result = match (first, site.app_with_standby()) {
        (Err(e), Some(standby)) if e.sub_code().is_some_and(|c| SECRET_REFUSED.contains(&c)) => {
            tracing::warn!(
                site = %site.name,
                client_id = %site.app.client_id,
                active_secret_id = %site.app.secret_id,
                standby_secret_id = %standby.secret_id,
                sub_code = e.sub_code(),
                "Tableau refused the active connected-app secret; trying the standby secret once (finish the rotation: see README, Operations)"
            );
            ctx.fallbacks.fetch_add(1, Ordering::Relaxed);
            let mut r = AuditRecord::new(
                Event::SecretFallback,
                ctx.clock.now(),
                Outcome::Ok,
                ctx.audit.generation,
            );
            r.site = Some(&site.name);
            r.reason = "SECRET_FALLBACK".to_owned();
            r.message = Some(format!(
                "Tableau refused active secret {} of client {} (sub-code {}); trying standby secret {}",
                site.app.secret_id,
                site.app.client_id,
                e.sub_code().unwrap_or_default(),
                standby.secret_id
            ));
            ctx.audit.sink.enqueue(r.to_line());
            let minted = mint(&standby)?;
            record_sign_in(&ctx.audit, &site, &key, &minted).await?;
            jti = minted.jti;
            signed_in_at = ctx.clock.now();
            client.sign_in(&target(&site), &minted.jwt).await
        }
        (first, _) => first,
    };
    let s = result.map_err(|e| {
        tracing::warn!(site = %site.name, server = %site.server_url, jti = %jti, error = %e, "Tableau sign-in failed");
        BrokerError::from_signin(&site.name, &key.user, e)
    })?;
    Ok(Credentials {
        digest: ctx.audit.fingerprints.digest(&s.token),
        token: s.token,
        site_luid: Arc::from(s.site_luid),
        site_content_url: Arc::from(s.site_content_url),
        server_url: Arc::from(site.server_url.as_str()),
        user_luid: s.user_luid.into(),
        jti,
        expires_at: signed_in_at + ctx.usable,
        key,
    })
}

/// How often expired entries are dropped (and signed out) when the cache is otherwise idle.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

async fn housekeeping(broker: std::sync::Weak<Broker>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        let Some(b) = broker.upgrade() else { break };
        b.cache.run_pending_tasks();
    }
}

/// Evicts from L1 the keys other replicas invalidated or replaced (shared cache, issue 16).
async fn remote_eviction_worker(
    broker: std::sync::Weak<Broker>,
    mut rx: mpsc::UnboundedReceiver<CacheKey>,
) {
    while let Some(key) = rx.recv().await {
        let Some(b) = broker.upgrade() else { break };
        b.cache.remove(key.as_ref());
    }
}
