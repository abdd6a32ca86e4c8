//! MintJwt: a JWT for callers that sign in themselves or embed views, under the same policy.

use super::*;

impl Broker {
    /// A JWT for callers that sign in themselves or embed views; same policy as credentials.
    /// Audited like credentials: in fail-closed mode the JWT is returned only once its record is
    /// written.
    pub async fn mint_jwt(
        &self,
        caller: &CallerContext,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<MintedJwt, BrokerError> {
        let none = crate::claims::RequestedClaims::default();
        self.mint_jwt_with_claims(caller, site, user, scopes, ttl, &none)
            .await
    }

    /// [`Self::mint_jwt`] with claims beyond `scp`, each allowed by the caller's grant.
    #[tracing::instrument(skip_all, fields(caller = %echo(&caller.id), source = caller.source.cert_field(), site = %echo(site), user = %echo(user)))]
    pub async fn mint_jwt_with_claims(
        &self,
        caller: &CallerContext,
        site: &str,
        user: &str,
        scopes: &[String],
        ttl: Option<Duration>,
        claims: &crate::claims::RequestedClaims,
    ) -> Result<MintedJwt, BrokerError> {
        let request_id = uuid::Uuid::new_v4();
        let snapshot = self.snapshot.load_full();
        let req = Req {
            site,
            user,
            scopes,
            claims,
        };
        let result = self.mint_jwt_inner(&snapshot.config, caller, &req, ttl);
        // The candidate policy in shadow (issue 27).
        let candidate = self.shadow(&snapshot.config, caller, &req);
        if !self.audit.is_enabled() {
            return result.map(|(m, _, _)| m);
        }
        let entry = entry_of(&snapshot.config, caller);
        let mut r = self.rpc_record(
            "MintJwt",
            &snapshot,
            caller,
            entry,
            request_id,
            self.clock.now(),
        );
        r.site = Some(site);
        r.user = Some(user);
        r.scopes_requested = Some(Scopes::Raw(scopes));
        r.claims = super::records::requested_claim_names(claims);
        r.candidate = candidate;
        tracing::debug!(outcome = %result.as_ref().map_or_else(BrokerError::reason, |_| "OK".into()), %request_id, "decision");
        let r = match &result {
            Ok((m, granted, claims)) => {
                r.scopes_granted = Some(Scopes::Parsed(granted));
                r.claims_fp = self.claims_fp(claims);
                r.jti = Some(Id(m.jti));
                r.expires_at = Some(Rfc3339(m.expires_at));
                r
            }
            Err(e) => r.error(e),
        };
        let line = r.to_line();
        drop(r);
        self.finish(line, result).await.map(|(m, _, _)| m)
    }

    fn mint_jwt_inner(
        &self,
        config: &Config,
        caller: &CallerContext,
        req: &Req<'_>,
        ttl: Option<Duration>,
    ) -> Result<(MintedJwt, Vec<Scope>, crate::claims::ClaimSet), BrokerError> {
        let (allowed, site_cfg) = self.authorize(config, caller, req)?;
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
                    input::quoted(req.site)
                ),
            });
        }
        self.minter
            .mint_for(
                &site_cfg,
                None,
                req.user,
                &allowed.scopes,
                &allowed.claims,
                ttl,
            )
            .map_err(mint_error)
            .map(|m| (m, allowed.scopes, allowed.claims))
    }
}
