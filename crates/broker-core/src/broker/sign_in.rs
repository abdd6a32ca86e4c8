//! Sign-in at Tableau (minting the JWT, the standby secret, its audit record) and sign-out.

use super::*;

/// Tableau's connected-app sub-codes that say the secret did not verify: 10084 (the signature
/// fails, e.g. a wrong value) and 10085 (no secret with this ID, e.g. not added yet or deleted).
/// Only these are retried with the standby secret.
const SECRET_REFUSED: [u32; 2] = [10084, 10085];

impl Broker {
    /// A scheduled sign-out: with a shared cache, only by the replica that claims it (several
    /// may see the same session go), so each session is signed out once. False when another
    /// replica has it.
    pub(super) async fn sign_out_claimed(&self, c: &Credentials) -> bool {
        if let Some(shared) = &self.shared
            && !shared.claim_sign_out(c).await
        {
            tracing::debug!(token_fp = %c.digest.fingerprint(), "another replica signs this session out");
            return false;
        }
        self.sign_out(c).await
    }

    pub(super) async fn sign_out(&self, c: &Credentials) -> bool {
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
        r.token_fp = Some(c.digest.fingerprint());
        r.signed_out = Some(ok);
        if !ok {
            r.reason = "TABLEAU_SIGN_OUT_FAILED".into();
        }
        self.audit.enqueue(r.to_line());
        ok
    }
}

/// What a sign-in's audit record needs from the call that led it, and the fingerprinter for the
/// token it brings back.
pub(super) struct SignInAudit {
    pub(super) fingerprints: Arc<Fingerprinter>,
    pub(super) sink: Arc<AuditSink>,
    pub(super) request_id: uuid::Uuid,
    pub(super) caller: CallerContext,
    pub(super) entry: Option<crate::policy::IdentityPattern>,
    pub(super) generation: u64,
}

/// What a sign-in needs besides the client, the site and the key.
pub(super) struct SignInContext {
    pub(super) minter: Minter,
    pub(super) clock: SharedClock,
    pub(super) usable: Duration,
    pub(super) audit: SignInAudit,
    pub(super) fallbacks: Arc<AtomicU64>,
}

/// Writes the sign-in's record before its JWT leaves the broker: in fail-closed mode a trail that
/// cannot be written stops the sign-in here, so Tableau never sees it.
pub(super) async fn record_sign_in(
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
    r.request_id = Some(Id(audit.request_id));
    r.caller = Some(CallerRecord::new(&audit.caller, audit.entry.as_ref()));
    r.site = Some(&site.name);
    r.user = Some(&key.user);
    r.scopes_granted = Some(Scopes::Parsed(&key.scopes));
    if !key.claims.is_empty() {
        r.claims = Some(key.claims.names());
        r.claims_fp = Some(audit.fingerprints.claims_fingerprint(&key.claims));
    }
    r.jti = Some(Id(minted.jti));
    r.expires_at = Some(Rfc3339(minted.expires_at));
    if audit.sink.record(r.to_line()).await.is_err() && audit.sink.mode() == AuditMode::FailClosed {
        return Err(BrokerError::AuditUnavailable);
    }
    Ok(())
}

pub(super) async fn sign_in(
    client: TableauClient,
    site: Arc<SiteConfig>,
    key: CacheKey,
    ctx: SignInContext,
) -> Result<Credentials, BrokerError> {
    let mint = |app: Option<&crate::config::ConnectedApp>| {
        ctx.minter
            .mint_for(
                &site,
                app,
                &key.user,
                &key.scopes,
                &key.claims,
                site.jwt_ttl,
            )
            .map_err(mint_error)
    };
    let minted = mint(None)?;
    record_sign_in(&ctx.audit, &site, &key, &minted).await?;
    let mut signed_in_at = ctx.clock.now();
    let mut jti = minted.jti;
    let first = client.sign_in(&target(&site), &minted.jwt).await;
    let result = match (first, site.app_with_standby(), site.app.as_ref()) {
        (Err(e), Some(standby), Some(app))
            if e.sub_code().is_some_and(|c| SECRET_REFUSED.contains(&c)) =>
        {
            tracing::warn!(
                site = %site.name,
                client_id = %app.client_id,
                active_secret_id = %app.secret_id,
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
            r.reason = "SECRET_FALLBACK".into();
            r.message = Some(format!(
                "Tableau refused active secret {} of client {} (sub-code {}); trying standby secret {}",
                app.secret_id,
                app.client_id,
                e.sub_code().unwrap_or_default(),
                standby.secret_id
            ));
            ctx.audit.sink.enqueue(r.to_line());
            let minted = mint(Some(&standby))?;
            record_sign_in(&ctx.audit, &site, &key, &minted).await?;
            jti = minted.jti;
            signed_in_at = ctx.clock.now();
            client.sign_in(&target(&site), &minted.jwt).await
        }
        (first, _, _) => first,
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
        content_url: Arc::from(site.content_url.as_str()),
        client_id: Arc::from(site.signer_id()),
        user_luid: s.user_luid.into(),
        jti,
        expires_at: signed_in_at + ctx.usable,
        key,
    })
}
