//! The broker's use cases, free of gRPC: get credentials (policy, cache, mint, sign-in), mint a
//! JWT, invalidate a token, and describe a caller. The gRPC layer only converts messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;

use crate::audit::record::{AuditRecord, CallerRecord, Event, Id, Outcome, Rfc3339, Scopes};
use crate::audit::{AuditMode, AuditSink, CallerContext, Fingerprinter};
use crate::cache::{CacheKey, CredentialCache, Credentials, Issuer, KeyRef, Lookup, OnDeparture};
use crate::clock::SharedClock;
use crate::config::{Config, MAX_JWT_TTL, SiteConfig};
use crate::error::BrokerError;
use crate::identity::CallerIdentity;
use crate::input::{self, echo};
use crate::limits::{LimitStats, SignInLimits};
use crate::mint::{MintedJwt, Minter};
use crate::policy::{AccessRequest, Authorization, CallerEntry, Denial};
use crate::scope::Scope;
use crate::shared_cache::SharedCache;
use crate::sign_outs::{SignOutQueue, SignOutSnapshot};
use crate::stats::{HistogramSnapshot, LabeledCounters, LatencyHistogram};
use crate::tableau::{ClientOptions, SignInTarget, TableauClient};

/// Shortest JWT lifetime `MintJwt` hands out: a shorter one can expire on its way to Tableau
/// (clock skew, a retry), and asking for one is almost always a unit mistake.
mod admin;
mod credentials;
mod invalidate;
mod jwt;
mod records;
mod sign_in;
mod stats;
#[cfg(test)]
mod tests;

pub use admin::{Explanation, REVOKE_ACK_WAIT, Revoked, SessionInfo, SessionList, explain};
use sign_in::{SignInAudit, SignInContext, sign_in};
pub use stats::{SignInStats, SignInStatsSnapshot, SiteOutcome, sign_in_outcome};

/// Shortest JWT lifetime `MintJwt` hands out: a shorter one can expire on its way to Tableau
/// (clock skew, a retry), and asking for one is almost always a unit mistake.
pub const MIN_MINT_TTL: Duration = Duration::from_secs(30);

/// How often expired entries are dropped (and signed out) when the cache is otherwise idle.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);

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
    /// Claims beyond `scp` asked for (attributes, groups, on-demand access).
    pub claims: crate::claims::RequestedClaims,
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
        && signer_of(old) == signer_of(new)
}

/// Whom Tableau's sessions of a site belong to: the connected app (direct trust), or the issuer
/// with the audience (EAS) or tenant (UAT). Issuer key rotation keeps them; a new app does not.
fn signer_of(site: &SiteConfig) -> (&'static str, &str, &str) {
    match &site.trust {
        crate::config::Trust::Direct => (
            "direct",
            site.app.as_ref().map_or("", |a| a.client_id.as_str()),
            "",
        ),
        crate::config::Trust::Eas(e) => ("eas", e.issuer.url.as_str(), e.audience.as_str()),
        crate::config::Trust::Uat(u) => ("uat", u.issuer.url.as_str(), u.tenant_id.as_str()),
    }
}

/// A minting failure as the caller sees it: what the caller can change (an oversized JWT, a
/// wildcard scope for a UAT site) is an invalid argument; the rest is the broker's.
fn mint_error(e: crate::mint::MintError) -> BrokerError {
    use crate::mint::MintError as M;
    match e {
        M::TooLarge { .. } => BrokerError::InvalidArgument {
            field: "claims",
            message: e.to_string(),
        },
        M::WildcardScope { .. } => BrokerError::InvalidArgument {
            field: "scopes",
            message: e.to_string(),
        },
        e => BrokerError::Internal(e.to_string()),
    }
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
    /// Keys with a refresh-ahead sign-in running: at most one per key.
    refreshing: std::sync::Mutex<std::collections::HashSet<CacheKey>>,
    /// This broker, for the background tasks a call starts (refresh-ahead).
    me: std::sync::Weak<Broker>,
    /// Candidate-policy divergences (issue 27, [`admin`]).
    shadow: admin::ShadowStats,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("cache", &self.cache)
            .finish()
    }
}

/// What a session of `site` must be bound to, as configured now.
pub(super) fn issuer(site: &SiteConfig) -> Issuer<'_> {
    Issuer {
        server_url: &site.server_url,
        content_url: &site.content_url,
        client_id: site.signer_id(),
    }
}

fn target(site: &SiteConfig) -> SignInTarget {
    SignInTarget {
        server_url: site.server_url.clone(),
        api_version: site.api_version.clone(),
        content_url: site.content_url.clone(),
        format: site.format,
        uat: matches!(site.trust, crate::config::Trust::Uat(_)),
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
        // Wired whatever `sign_out_on_evict` says now: whether a session is signed out is read
        // from the configuration in force when its time comes, so the setting reloads.
        // With a shared cache (issue 24, point 7), a session evicted from this replica's cache to
        // make room may still be served by the other replicas from Redis, so it is not signed
        // out; an expired one, one replaced here or in Redis, and one dropped with its site are,
        // after the grace period, by the one replica that claims it (see `sign_out_claimed`).
        let queue = Arc::clone(&sign_outs);
        let with_redis = shared.is_some();
        let departed: OnDeparture = Arc::new(move |c, why| {
            if !(with_redis && why == crate::cache::Departure::Evicted) {
                queue.schedule(c, why);
            }
        });
        if let Some((s, _)) = &shared {
            let queue = Arc::clone(&sign_outs);
            s.on_replaced(Arc::new(move |c, why| queue.schedule(c, why)));
        }
        let cache = CredentialCache::new(c.max_entries, clock.clone(), Some(departed));
        let (shared, remote_evictions) = match shared {
            Some((s, rx)) => (Some(s), Some(rx)),
            None => (None, None),
        };
        let broker = Arc::new_cyclic(|me| Broker {
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
            refreshing: std::sync::Mutex::default(),
            me: me.clone(),
            shadow: admin::ShadowStats::default(),
        });
        admin::listen_for_revocations(&broker);
        broker
            .audit
            .enqueue(AuditRecord::new(Event::Start, broker.clock.now(), Outcome::Ok, 1).to_line());
        let weak = Arc::downgrade(&broker);
        tokio::spawn(sign_outs.run(move |c| {
            let b = weak.upgrade()?;
            Some(async move {
                // Read when the sign-out is due, so `sign_out_on_evict` reloads.
                b.config().cache.sign_out_on_evict && b.sign_out_claimed(&c).await
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
        r.reason = "RELOAD_REFUSED".into();
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
        r.reason = "SECRET_FALLBACK".into();
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
        req: &Req<'_>,
    ) -> Result<(Authorization, Arc<SiteConfig>), BrokerError> {
        authorize_under(&config.policy, config, identity, req)
    }

    /// The caller entry that applies to an identity, if any.
    pub fn whoami(&self, identity: &CallerIdentity) -> Option<CallerEntry> {
        self.config()
            .policy
            .caller(identity.source, &identity.id)
            .cloned()
    }
}

/// The parts of a request the policy decides on, as [`authorize_under`] and the shadow take them.
#[derive(Clone, Copy)]
pub(super) struct Req<'a> {
    site: &'a str,
    user: &'a str,
    scopes: &'a [String],
    claims: &'a crate::claims::RequestedClaims,
}

impl CredentialsRequest {
    /// What the policy decides on in this request.
    fn req(&self) -> Req<'_> {
        Req {
            site: &self.site,
            user: &self.user,
            scopes: &self.scopes,
            claims: &self.claims,
        }
    }
}

/// The whole decision under a given policy, claims included: [`decide`], then the claims beyond
/// `scp` against the grants that allowed the scopes. The running policy, a candidate in shadow
/// and `Explain` all run this one function, so they cannot disagree with the real decision.
pub(super) fn authorize_under(
    policy: &crate::policy::Policy,
    config: &Config,
    identity: &CallerContext,
    req: &Req<'_>,
) -> Result<(Authorization, Arc<SiteConfig>), BrokerError> {
    let Req {
        site,
        user,
        scopes,
        claims,
    } = *req;
    let (mut allowed, site_cfg) = decide(policy, config, identity, site, user, scopes)?;
    if claims.is_empty() {
        return Ok((allowed, site_cfg));
    }
    let claims = claims.to_set().map_err(|e| BrokerError::InvalidArgument {
        field: "claims",
        message: e.to_string(),
    })?;
    // `decide` found the entry; looked up again rather than trusted to exist.
    let Some(entry) = policy.caller(identity.source, &identity.id) else {
        return Err(BrokerError::Denied(Denial::UnknownCaller {
            identity: identity.id.to_string(),
            field: identity.source,
        }));
    };
    let access = AccessRequest {
        source: identity.source,
        identity: &identity.id,
        site,
        user,
        scopes,
    };
    policy.check_claims(entry, &access, &allowed.scopes, &claims)?;
    allowed.claims = claims;
    Ok((allowed, site_cfg))
}

/// [`Broker::authorize`] under a given policy: the running one, or a candidate (shadow and
/// `Explain` run this very function, so they cannot disagree with the real decision).
pub(super) fn decide(
    policy: &crate::policy::Policy,
    config: &Config,
    identity: &CallerContext,
    site: &str,
    user: &str,
    scopes: &[String],
) -> Result<(Authorization, Arc<SiteConfig>), BrokerError> {
    let Some(entry) = policy.caller(identity.source, &identity.id) else {
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
    let allowed = policy.decide_for(
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

/// How long a token is handed out: Tableau's session lifetime less the safety margin.
pub(super) fn usable_life(config: &Config, site: &SiteConfig) -> Duration {
    site.session_ttl.saturating_sub(config.cache.safety_margin)
}

/// The `[[callers]]` entry that applies to an identity, as configured, for audit records.
pub(super) fn entry_of<'c>(
    config: &'c Config,
    caller: &CallerContext,
) -> Option<&'c crate::policy::IdentityPattern> {
    config
        .policy
        .caller(caller.source, &caller.id)
        .map(|e| &e.pattern)
}

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
