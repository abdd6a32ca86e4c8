//! InvalidateCredentials: a caller drops a token it was handed (and Tableau ends its session).

use super::*;

impl Broker {
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
            entry,
            request_id,
            self.clock.now(),
        );
        r.outcome = Outcome::Ok;
        r.token_fp = Some(digest.fingerprint());
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

    pub(super) async fn invalidate_inner(
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
            // Drop the entry in Redis and from every replica's cache, and leave a tombstone.
            evicted |= shared.invalidate(&found).await;
        }
        if evicted && let Some(entry) = policy.caller(caller.source, &caller.id) {
            // The sign-in that replaces this session is this caller's doing, whoever asks next.
            self.limits
                .charge_next_sign_in(&found.key, &entry.pattern.to_string());
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
}
