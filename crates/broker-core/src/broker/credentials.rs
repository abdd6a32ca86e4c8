//! GetCredentials: policy, then the cache, then one sign-in shared by every concurrent miss.

use super::*;

impl Broker {
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
        // The candidate policy in shadow (issue 27): counted whether or not there is a trail.
        let candidate = self.shadow(&snapshot.config, caller, &req.req());
        if !self.audit.is_enabled() {
            // No trail (a development choice): build no record, the cache hit stays cheap.
            return result;
        }
        let line = self.credentials_line(&snapshot, caller, request_id, &req, &result, candidate);
        // Boxed: the wait for the group commit stays out of the audit-off call's future.
        let commit = Box::pin(self.finish(line, result));
        commit.await
    }

    /// Policy, then the cache. A hit is answered without awaiting anything; only a miss enters
    /// [`Self::sign_in_path`], boxed, so that the future of every call (which tonic boxes and
    /// moves) is as small as a hit needs rather than as large as a sign-in does.
    pub(super) async fn get_credentials_inner(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
    ) -> Result<IssuedCredentials, BrokerError> {
        let (allowed, site) = self.authorize(&snapshot.config, caller, &req.req())?;
        let (key, lookup) = cache_lookup(&site, req, &allowed);
        let usable = usable_life(&snapshot.config, &site);
        if lookup.min_remaining < usable
            && let Some(credentials) = self.cache.hit(key, lookup, issuer(&site))
        {
            self.refresh_ahead(
                snapshot,
                caller,
                request_id,
                req,
                &allowed,
                &site,
                &credentials,
            );
            return Ok(IssuedCredentials {
                credentials,
                from_cache: true,
                site,
            });
        }
        // Boxed in a statement of its own: a temporary of the `.await` statement would be kept
        // in this future's state, which is what the box is for avoiding.
        let miss = Box::pin(self.miss_path(snapshot, caller, request_id, req, allowed, site));
        miss.await
    }

    /// [`Self::sign_in_path`], then the check that the site has not moved while it ran (issue
    /// 24, point 2): a reload may have re-pointed the site (server, content URL or connected
    /// app) after the call read its configuration. Such a session is discarded (signed out after
    /// the grace period) and the call starts again under the configuration in force, at most
    /// twice.
    async fn miss_path(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
        allowed: Authorization,
        site: Arc<SiteConfig>,
    ) -> Result<IssuedCredentials, BrokerError> {
        let mut used = Arc::clone(snapshot);
        let mut issued = self
            .sign_in_path(&used, caller, request_id, req, allowed, site)
            .await?;
        for attempt in 0..3 {
            let current = self.snapshot.load_full();
            if Arc::ptr_eq(&current, &used)
                || current
                    .config
                    .site(&issued.site.name)
                    .is_some_and(|s| issued.credentials.issued_by(issuer(s)))
            {
                return Ok(issued);
            }
            tracing::info!(site = %issued.site.name, token_fp = %issued.credentials.digest.fingerprint(), "a sign-in landed for a site that has since moved; discarding it");
            self.discard(&issued.credentials);
            if attempt == 2 {
                break;
            }
            let (allowed, site) = self.authorize(&current.config, caller, &req.req())?;
            used = current;
            issued = self
                .sign_in_path(&used, caller, request_id, req, allowed, site)
                .await?;
        }
        Err(BrokerError::Unavailable {
            site: req.site.clone(),
            reason: "the site's configuration changed during the sign-in; retry".into(),
        })
    }

    /// Drops a session that must not be handed out any more (its site moved) from the cache, and
    /// schedules its sign-out as a replaced session. Only the call that removes it schedules it,
    /// so calls that shared the sign-in do not sign it out twice.
    fn discard(&self, c: &Arc<Credentials>) {
        if let Some(c) = self.cache.remove_by_digest(&c.digest) {
            self.sign_outs
                .schedule(c, crate::cache::Departure::Replaced);
        }
    }

    /// A call the cache could not answer at once: a refused `min_remaining`, a sign-in (or one
    /// in flight to join), a session from the shared cache, or a site that moved.
    #[tracing::instrument(name = "get_credentials", skip_all, fields(caller = %echo(&caller.id), source = caller.source.cert_field(), site = %echo(&req.site), user = %echo(&req.user)))]
    pub(super) async fn sign_in_path(
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
            let slots = self.limits.site_slots(&config.limits, &site.name, &entry);
            let (remember, ttl) = (self.limits.rememberer(), config.limits.negative_cache_ttl);
            let client = snapshot.clients.get(&site.name).cloned();
            let (site, bound, key) = (Arc::clone(&site), Arc::clone(&site), key.clone());
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
                entry: entry_of(&snapshot.config, caller).cloned(),
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
                        let (c, hit) = shared
                            .get_or_sign_in(&key, issuer(&bound), lookup, signing)
                            .await?;
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
        // A session is only ever returned for the server, content URL and connected app that
        // issued it. A mismatch means the site moved while this session was cached or being
        // signed in (its entries were dropped on reload, but a sign-in that was in flight can
        // land after that); sign in again for the site as it is, once or twice at most.
        let mut retries = 0;
        while !credentials.issued_by(issuer(&site)) {
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
}

/// The cache key and lookup of a GetCredentials call, borrowed from what policy allowed.
pub(super) fn cache_lookup<'a>(
    site: &'a SiteConfig,
    req: &'a CredentialsRequest,
    allowed: &'a Authorization,
) -> (KeyRef<'a>, Lookup) {
    let key = KeyRef {
        site: &site.name,
        user: &req.user,
        scopes: &allowed.scopes,
        claims: &allowed.claims,
    };
    let lookup = Lookup {
        min_remaining: req.min_remaining,
        force_refresh: req.force_refresh,
    };
    (key, lookup)
}

impl Broker {
    /// On a hit within `[cache] refresh_ahead` of the token's usable end, starts one background
    /// sign-in for its key (none when one is already running, or the entry was replaced), and
    /// keeps serving the current token until the new one is stored: callers on a hot key never
    /// wait for a sign-in at expiry. The sign-in goes through the same path as a miss, so it is
    /// charged to the caller entry whose call started it, waits for the site's slots and is
    /// audited; a refusal by the limits only means the token is not refreshed early.
    #[allow(clippy::too_many_arguments)]
    fn refresh_ahead(
        &self,
        snapshot: &Arc<Snapshot>,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
        allowed: &Authorization,
        site: &Arc<SiteConfig>,
        credentials: &Arc<Credentials>,
    ) {
        let usable = usable_life(&snapshot.config, site);
        let window = snapshot.config.cache.refresh_ahead_for(usable);
        let now = self.clock.now();
        if window.is_zero() || credentials.expires_at > now + window {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let key = credentials.key.clone();
        if !lock_set(&self.refreshing).insert(key.clone()) {
            return;
        }
        self.stats.refreshes_started.fetch_add(1, Ordering::Relaxed);
        let (snapshot, caller, allowed, site) = (
            Arc::clone(snapshot),
            caller.clone(),
            allowed.clone(),
            Arc::clone(site),
        );
        let old = Arc::clone(credentials);
        let req = CredentialsRequest {
            force_refresh: true,
            min_remaining: Duration::ZERO,
            ..req.clone()
        };
        tokio::spawn(async move {
            if me.cache.is_current(&old) {
                let done = me
                    .sign_in_path(&snapshot, &caller, request_id, &req, allowed, site)
                    .await;
                if done.is_err() {
                    me.stats.refreshes_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lock_set(&me.refreshing).remove(&key);
        });
    }
}

pub(super) fn lock_set(
    m: &std::sync::Mutex<std::collections::HashSet<CacheKey>>,
) -> std::sync::MutexGuard<'_, std::collections::HashSet<CacheKey>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
