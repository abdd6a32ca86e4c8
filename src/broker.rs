//! The broker's use cases, free of gRPC: get credentials (policy, cache, mint, sign-in), mint a
//! JWT, invalidate a token, and describe a caller. The gRPC layer only converts messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use secrecy::SecretString;
use tokio::sync::mpsc;

use crate::audit::Fingerprinter;
use crate::cache::{CacheKey, CredentialCache, Credentials, KeyRef, Lookup};
use crate::clock::SharedClock;
use crate::config::{Config, MAX_JWT_TTL, SiteConfig};
use crate::error::BrokerError;
use crate::mint::{MintedJwt, Minter};
use crate::policy::{AccessRequest, Authorization, CallerEntry};
use crate::scope::Scope;
use crate::tableau::{ClientOptions, SignInTarget, TableauClient};

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
    /// Counts successful (re)loads: 0 for the configuration the broker started with.
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
    fn new(config: Config, clock: &SharedClock) -> Result<Snapshot, BrokerError> {
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
            generation: 0,
        })
    }
}

/// The broker. One per process; share it behind an `Arc`.
pub struct Broker {
    snapshot: ArcSwap<Snapshot>,
    cache: CredentialCache,
    minter: Minter,
    clock: SharedClock,
    fingerprints: Arc<Fingerprinter>,
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
    /// Builds the broker and starts its sign-out worker; call inside a tokio runtime.
    pub fn new(config: Config, clock: SharedClock) -> Result<Arc<Broker>, BrokerError> {
        let snapshot = Snapshot::new(config, &clock)?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Always wired: whether sessions are signed out is read from the configuration in force
        // when they leave, so `sign_out_on_evict` reloads.
        let cache =
            CredentialCache::new(snapshot.config.cache.max_entries, clock.clone(), Some(tx));
        let broker = Arc::new(Broker {
            snapshot: ArcSwap::from_pointee(snapshot),
            cache,
            minter: Minter::new(clock.clone()),
            clock,
            fingerprints: Arc::new(Fingerprinter::new()),
            secret_fallbacks: Arc::new(AtomicU64::new(0)),
        });
        tokio::spawn(sign_out_worker(Arc::downgrade(&broker), rx));
        tokio::spawn(housekeeping(Arc::downgrade(&broker)));
        Ok(broker)
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.snapshot.load().config)
    }

    /// Replaces the configuration. Everything is built first; on error the running one stays.
    /// Cached sessions stay, except those of sites whose server, content URL or connected app
    /// changed: each request is still checked against the new policy.
    pub fn reload(&self, config: Config) -> Result<Committed, BrokerError> {
        let prepared = self.prepare(config)?;
        Ok(self.commit(prepared))
    }

    /// Builds everything a configuration needs (the Tableau clients) without touching the
    /// running state, so a reload can check every part before it swaps any.
    pub fn prepare(&self, config: Config) -> Result<PreparedSnapshot, BrokerError> {
        Ok(PreparedSnapshot {
            snapshot: Snapshot::new(config, &self.clock)?,
        })
    }

    /// Swaps a prepared configuration in (one pointer store), then drops the cached sessions
    /// of sites that moved or went away. Cannot fail. Callers serialize reloads.
    pub fn commit(&self, prepared: PreparedSnapshot) -> Committed {
        let mut snapshot = prepared.snapshot;
        let old = self.snapshot.load_full();
        snapshot.generation = old.generation + 1;
        let generation = snapshot.generation;
        let new_config = Arc::clone(&snapshot.config);
        self.snapshot.store(Arc::new(snapshot));
        let mut dropped = Vec::new();
        for (name, site) in &old.config.sites {
            let keep = new_config
                .site(name)
                .is_some_and(|new| sessions_survive(site, new));
            if !keep {
                dropped.push((name.clone(), self.cache.drop_site(name)));
            }
        }
        Committed {
            generation,
            dropped,
        }
    }

    /// How many configurations have been swapped in since start (0: the first one). The audit
    /// trail names it so a decision can be matched to the configuration that made it.
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
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

    /// The token fingerprinter, so transport logs can match the audit lines.
    pub fn fingerprints(&self) -> &Fingerprinter {
        &self.fingerprints
    }

    fn authorize(
        &self,
        config: &Config,
        identity: &str,
        site: &str,
        user: &str,
        scopes: &[String],
    ) -> Result<(Authorization, Arc<SiteConfig>), BrokerError> {
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
        let allowed = config.policy.decide(&AccessRequest {
            identity,
            site,
            user,
            scopes,
        })?;
        let site_cfg = config
            .site(site)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownSite {
                site: site.to_owned(),
            })?;
        Ok((allowed, site_cfg))
    }

    /// Credentials for a site, a user and scopes: policy first, then the cache, then one
    /// sign-in shared by every concurrent miss for the same key.
    #[tracing::instrument(skip_all, fields(caller = %identity, site = %req.site, user = %req.user))]
    pub async fn get_credentials(
        &self,
        identity: &str,
        req: CredentialsRequest,
    ) -> Result<IssuedCredentials, BrokerError> {
        let result = self.get_credentials_inner(identity, &req).await;
        match &result {
            Ok(g) => tracing::info!(
                target: "audit",
                rpc = "GetCredentials",
                caller = %identity,
                site = %req.site,
                user = %req.user,
                scopes = %scopes_str(&g.credentials.key.scopes),
                outcome = "ok",
                from_cache = g.from_cache,
                jti = %Jti(g),
                token_fp = %g.credentials.digest.fingerprint(),
            ),
            Err(e) => tracing::info!(
                target: "audit",
                rpc = "GetCredentials",
                caller = %identity,
                site = %req.site,
                user = %req.user,
                scopes = %req.scopes.join(" "),
                outcome = %e.reason(),
                from_cache = false,
                error = %e,
            ),
        }
        result
    }

    async fn get_credentials_inner(
        &self,
        identity: &str,
        req: &CredentialsRequest,
    ) -> Result<IssuedCredentials, BrokerError> {
        let snapshot = self.snapshot.load_full();
        let (allowed, site) = self.authorize(
            &snapshot.config,
            identity,
            &req.site,
            &req.user,
            &req.scopes,
        )?;
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
        let key = KeyRef {
            site: &site.name,
            user: &req.user,
            scopes: &allowed.scopes,
        };
        let lookup = Lookup {
            min_remaining: req.min_remaining,
            force_refresh: req.force_refresh,
        };
        // Built on every call but cheap: it only borrows. Clones happen on a miss, inside it.
        let sign_in = |key: &CacheKey| {
            let client = snapshot.clients.get(&site.name).cloned();
            let (site, key) = (Arc::clone(&site), key.clone());
            let (minter, clock, fp, fallbacks) = (
                self.minter.clone(),
                self.clock.clone(),
                Arc::clone(&self.fingerprints),
                Arc::clone(&self.secret_fallbacks),
            );
            async move {
                let client = client.ok_or_else(|| {
                    BrokerError::Internal(format!("no client for site {}", site.name))
                })?;
                let ctx = SignInContext {
                    minter,
                    clock,
                    usable,
                    fp,
                    fallbacks,
                };
                sign_in(client, site, key, ctx).await
            }
        };
        let (mut credentials, mut from_cache) =
            self.cache.get_or_sign_in(key, lookup, &sign_in).await?;
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
            (credentials, from_cache) = self.cache.get_or_sign_in(key, again, &sign_in).await?;
        }
        Ok(IssuedCredentials {
            credentials,
            from_cache,
            site,
        })
    }

    /// A JWT for callers that sign in themselves or embed views; same policy as credentials.
    #[tracing::instrument(skip_all, fields(caller = %identity, site = %site, user = %user))]
    pub fn mint_jwt(
        &self,
        identity: &str,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedJwt, BrokerError> {
        let result = self.mint_jwt_inner(identity, site, user, scopes, ttl);
        match &result {
            Ok((m, scopes)) => {
                tracing::info!(target: "audit", rpc = "MintJwt", caller = %identity, site, user, scopes = %scopes_str(scopes), outcome = "ok", jti = %m.jti)
            }
            Err(e) => {
                tracing::info!(target: "audit", rpc = "MintJwt", caller = %identity, site, user, scopes = %scopes.join(" "), outcome = %e.reason(), error = %e)
            }
        }
        result.map(|(m, _)| m)
    }

    fn mint_jwt_inner(
        &self,
        identity: &str,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(MintedJwt, Vec<Scope>), BrokerError> {
        let config = self.config();
        let (allowed, site_cfg) = self.authorize(&config, identity, site, user, scopes)?;
        let limit = allowed
            .max_jwt_ttl
            .map_or(site_cfg.jwt_ttl, |g| g.min(site_cfg.jwt_ttl))
            .min(MAX_JWT_TTL);
        let ttl = ttl.unwrap_or(limit);
        if ttl.is_zero() || ttl > limit {
            return Err(BrokerError::InvalidArgument {
                field: "ttl",
                message: format!(
                    "{} is outside (0, {}], the limit of your grant and site {site:?}",
                    humantime::format_duration(ttl),
                    humantime::format_duration(limit)
                ),
            });
        }
        self.minter
            .mint(&site_cfg.app, user, &allowed.scopes, ttl)
            .map_err(|e| BrokerError::Internal(e.to_string()))
            .map(|m| (m, allowed.scopes))
    }

    /// Drops a token Tableau refused and ends its session. Unknown tokens are not an error;
    /// another caller's token is.
    #[tracing::instrument(skip_all, fields(caller = %identity))]
    pub async fn invalidate(
        &self,
        identity: &str,
        token: &SecretString,
    ) -> Result<Invalidated, BrokerError> {
        let fp = self.fingerprints.fingerprint(token);
        let digest = self.fingerprints.digest(token);
        let Some(found) = self.cache.find_by_digest(&digest) else {
            tracing::info!(target: "audit", rpc = "InvalidateCredentials", caller = %identity, token_fp = %fp, outcome = "unknown_token");
            return Ok(Invalidated {
                evicted: false,
                signed_out: false,
            });
        };
        let config = self.config();
        if !config.policy.may_hold(
            identity,
            &found.key.site,
            &found.key.user,
            &found.key.scopes,
        ) {
            tracing::warn!(target: "audit", rpc = "InvalidateCredentials", caller = %identity, site = %found.key.site, user = %found.key.user, token_fp = %fp, outcome = "TOKEN_NOT_YOURS");
            return Err(BrokerError::NotYourToken);
        }
        let evicted = self.cache.remove_by_digest(&digest).is_some();
        let signed_out = if config.cache.sign_out_on_evict {
            self.sign_out(&found).await
        } else {
            false
        };
        tracing::info!(target: "audit", rpc = "InvalidateCredentials", caller = %identity, site = %found.key.site, user = %found.key.user, token_fp = %fp, outcome = "ok", evicted, signed_out);
        Ok(Invalidated {
            evicted,
            signed_out,
        })
    }

    /// The caller entry that applies to an identity, if any.
    pub fn whoami(&self, identity: &str) -> Option<CallerEntry> {
        self.config().policy.caller(identity).cloned()
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
        match client
            .sign_out(&c.server_url, &site.api_version, &c.token)
            .await
        {
            Ok(()) => {
                tracing::debug!(site = %c.key.site, token_fp = %c.digest.fingerprint(), "signed out");
                true
            }
            Err(e) => {
                tracing::warn!(site = %c.key.site, token_fp = %c.digest.fingerprint(), error = %e, "sign-out failed");
                false
            }
        }
    }
}

/// How long a token is handed out: Tableau's session lifetime less the safety margin.
fn usable_life(config: &Config, site: &SiteConfig) -> Duration {
    site.session_ttl.saturating_sub(config.cache.safety_margin)
}

/// The `jti` in an audit line: only a sign-in has one; a cache hit shows it empty.
struct Jti<'a>(&'a IssuedCredentials);

impl std::fmt::Display for Jti<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.from_cache {
            Ok(())
        } else {
            std::fmt::Display::fmt(&self.0.credentials.jti.hyphenated(), f)
        }
    }
}

fn scopes_str(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a sign-in needs besides the client, the site and the key.
struct SignInContext {
    minter: Minter,
    clock: SharedClock,
    usable: Duration,
    fp: Arc<Fingerprinter>,
    fallbacks: Arc<AtomicU64>,
}

/// Tableau's connected-app sub-codes that say the secret did not verify: 10084 (the signature
/// fails, e.g. a wrong value) and 10085 (no secret with this ID, e.g. not added yet or deleted).
/// Only these are retried with the standby secret.
const SECRET_REFUSED: [u32; 2] = [10084, 10085];

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
            let minted = mint(&standby)?;
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
        digest: ctx.fp.digest(&s.token),
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

async fn sign_out_worker(
    broker: std::sync::Weak<Broker>,
    mut rx: mpsc::UnboundedReceiver<Arc<Credentials>>,
) {
    while let Some(c) = rx.recv().await {
        let Some(b) = broker.upgrade() else { break };
        if b.config().cache.sign_out_on_evict {
            b.sign_out(&c).await;
        }
    }
}
