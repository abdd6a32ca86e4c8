//! The audit records of RPC decisions, and the fail-closed wait for them.

use super::*;

impl Broker {
    /// The audit line of one GetCredentials decision. A function of its own so that the record
    /// (borrowed while it is built) is never part of the call's future.
    pub(super) fn credentials_line(
        &self,
        snapshot: &Snapshot,
        caller: &CallerContext,
        request_id: uuid::Uuid,
        req: &CredentialsRequest,
        result: &Result<IssuedCredentials, BrokerError>,
        candidate: Option<crate::audit::record::CandidateRecord>,
    ) -> Vec<u8> {
        tracing::debug!(outcome = %result.as_ref().map_or_else(BrokerError::reason, |_| "OK".into()), %request_id, "decision");
        let now = self.clock.now();
        let entry = entry_of(&snapshot.config, caller);
        let mut r = self.rpc_record("GetCredentials", snapshot, caller, entry, request_id, now);
        r.site = Some(&req.site);
        r.user = Some(&req.user);
        r.scopes_requested = Some(Scopes::Raw(&req.scopes));
        r.claims = requested_claim_names(&req.claims);
        r.candidate = candidate;
        let r = match result {
            Ok(g) => {
                let c = &g.credentials;
                r.scopes_granted = Some(Scopes::Parsed(&c.key.scopes));
                if !c.key.claims.is_empty() {
                    r.claims_fp = Some(self.fingerprints.claims_fingerprint(&c.key.claims));
                }
                r.from_cache = Some(g.from_cache);
                r.jti = (!g.from_cache).then_some(Id(c.jti));
                r.token_fp = Some(c.digest.fingerprint());
                r.expires_at = Some(Rfc3339(c.expires_at));
                r
            }
            Err(e) => {
                r.from_cache = Some(false);
                r.error(e)
            }
        };
        r.to_line()
    }

    /// The fingerprint of granted claims, for MintJwt's record.
    pub(super) fn claims_fp(
        &self,
        claims: &crate::claims::ClaimSet,
    ) -> Option<crate::audit::fingerprint::Fingerprint> {
        (!claims.is_empty()).then(|| self.fingerprints.claims_fingerprint(claims))
    }

    /// The common part of an RPC's record, made at `now`.
    pub(super) fn rpc_record<'a>(
        &self,
        rpc: &'static str,
        snapshot: &Snapshot,
        caller: &'a CallerContext,
        entry: Option<&'a crate::policy::IdentityPattern>,
        request_id: uuid::Uuid,
        now: std::time::SystemTime,
    ) -> AuditRecord<'a> {
        let mut r = AuditRecord::new(Event::Rpc, now, Outcome::Granted, snapshot.generation);
        r.request_id = Some(Id(request_id));
        r.rpc = Some(rpc);
        r.caller = Some(CallerRecord::new(caller, entry));
        r
    }

    /// Writes an RPC's record, then lets its result go. A result that hands something secret out
    /// becomes `AuditUnavailable` when the record could not be written in fail-closed mode; a
    /// refusal or failure stays what it was (nothing leaves), the write failure is counted.
    pub(super) async fn finish<T>(
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
}

/// The names of the claims a request asked for, for its record: never the values, at most
/// [`crate::claims::MAX_ATTRIBUTES`] attribute names, each cut like echoed input (a refused
/// request may have sent anything). `None` when it asked for none.
pub(super) fn requested_claim_names(c: &crate::claims::RequestedClaims) -> Option<Vec<String>> {
    if c.is_empty() {
        return None;
    }
    let mut names: Vec<String> = c
        .attributes
        .iter()
        .take(crate::claims::MAX_ATTRIBUTES)
        .map(|(n, _)| crate::input::echo(n).to_string())
        .collect();
    names.sort_unstable();
    if !c.groups.is_empty() {
        names.push(crate::claims::GROUPS_CLAIM.to_owned());
    }
    if c.on_demand_access {
        names.push(crate::claims::ODA_CLAIM.to_owned());
    }
    Some(names)
}
