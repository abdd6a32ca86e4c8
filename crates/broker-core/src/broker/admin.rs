//! The admin API's use cases (issue 27): revoke sessions by selector across every replica, list
//! the live sessions, explain a decision, and run the candidate policy in shadow.
//!
//! Every decision these report comes from [`decide`], the function the broker itself authorizes
//! with: `Explain` and the shadow evaluation call it with the running policy and the candidate.

use std::collections::HashSet;
use std::time::SystemTime;

use futures::StreamExt;

use super::*;
use crate::admins::{
    Direction, Divergence, ExplainRequest, MAX_LISTED_SESSIONS, MAX_REVOKED_SESSIONS, RawSelector,
    ResolvedSelector, Role, SessionSelector, Verdict, entries_covering,
};
use crate::audit::record::{AdminRecord, CandidateRecord, SelectorRecord};
use crate::policy::Policy;
use crate::shared_cache::admin::{RevokeOrder, RevokedSession};

/// Longest a `Revoke` waits for the other replicas to confirm; past it the answer says how many
/// did not.
pub const REVOKE_ACK_WAIT: Duration = Duration::from_secs(3);
/// Sign-outs at Tableau a `Revoke` runs at once.
const SIGN_OUT_CONCURRENCY: usize = 16;

/// The candidate policy's divergences, by direction and reason (both bounded vocabularies).
#[derive(Debug, Default)]
pub(super) struct ShadowStats {
    divergences: LabeledCounters<(&'static str, Arc<str>)>,
}

/// What a `Revoke` did.
#[derive(Debug, Clone, Default)]
pub struct Revoked {
    /// The sessions ended (by this replica, or reported by the others), never a token.
    pub sessions: Vec<RevokedSession>,
    /// Replicas the order reached (this one included); 1 without a shared cache.
    pub replicas: usize,
    /// Replicas that confirmed they hold no matching session any more (this one included).
    pub acknowledged: usize,
}

/// One live session, as `ListSessions` shows it (never the token).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Site name.
    pub site: String,
    /// Tableau username.
    pub user: String,
    /// Normalized scopes.
    pub scopes: Vec<String>,
    /// Names of the claims the session carries (none until sessions carry claims).
    pub claims: Vec<String>,
    /// The `[[callers]]` entries whose grants cover it: who may be using it.
    pub callers: Vec<String>,
    /// When it was signed in.
    pub created: SystemTime,
    /// When the broker stops handing it out.
    pub expires: SystemTime,
    /// The token's fingerprint.
    pub fingerprint: String,
    /// Held in this replica's cache.
    pub local: bool,
    /// Held in Redis.
    pub shared: bool,
}

/// What `ListSessions` found.
#[derive(Debug, Clone, Default)]
pub struct SessionList {
    /// The sessions, at most [`MAX_LISTED_SESSIONS`].
    pub sessions: Vec<SessionInfo>,
    /// True when there were more.
    pub truncated: bool,
}

/// What `Explain` answers: the running policy's verdict, and the candidate's when one is loaded.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The decision the running policy makes.
    pub running: Verdict,
    /// The candidate's decision, when a candidate is loaded.
    pub candidate: Option<Verdict>,
    /// How the two differ, if they do.
    pub divergence: Option<Direction>,
    /// The candidate file, when one is loaded.
    pub candidate_file: Option<String>,
    /// Divergences counted so far, by `(direction, reason)`: the shadow's summary.
    pub divergences: Vec<((&'static str, Arc<str>), u64)>,
}

/// The verdict of `policy` on a request, through the broker's own decision path.
fn verdict(policy: &Policy, config: &Config, caller: &CallerContext, req: &Req<'_>) -> Verdict {
    let result = super::authorize_under(policy, config, caller, req).map(|(a, _)| a);
    Verdict::of(policy, caller.source, &caller.id, &result)
}

/// `Explain` without a broker: the same answer from a loaded configuration (the offline
/// `policy explain` command), the candidate included when the file names one.
pub fn explain(config: &Config, req: &ExplainRequest) -> Result<Explanation, BrokerError> {
    req.check()?;
    let caller = req.caller()?;
    let claims = req.claims();
    let r = Req {
        site: &req.site,
        user: &req.user,
        scopes: &req.scopes,
        claims: &claims,
    };
    let running = verdict(&config.policy, config, &caller, &r);
    let candidate = config
        .candidate
        .as_ref()
        .map(|c| verdict(&c.policy, config, &caller, &r));
    let divergence = candidate
        .as_ref()
        .and_then(|c| Divergence::between(&running, c))
        .map(|d| d.direction);
    Ok(Explanation {
        running,
        candidate,
        divergence,
        candidate_file: config
            .candidate
            .as_ref()
            .map(|c| c.path.display().to_string()),
        divergences: Vec::new(),
    })
}

fn selector_record(raw: &RawSelector) -> SelectorRecord {
    let opt = |s: &str| (!s.trim().is_empty()).then(|| input::echo(s).to_string());
    SelectorRecord {
        caller: opt(&raw.caller),
        site: opt(&raw.site),
        user: opt(&raw.user),
        scopes: raw
            .scopes
            .iter()
            .take(input::MAX_SCOPES)
            .map(|s| input::echo(s).to_string())
            .collect(),
    }
}

impl Broker {
    /// Counts a divergence of the candidate on one decision and returns it for the decision's
    /// audit record. Costs nothing without a candidate.
    pub(super) fn shadow(
        &self,
        config: &Config,
        caller: &CallerContext,
        req: &Req<'_>,
    ) -> Option<CandidateRecord> {
        let cand = config.candidate.as_ref()?;
        let running = verdict(&config.policy, config, caller, req);
        let candidate = verdict(&cand.policy, config, caller, req);
        let d = Divergence::between(&running, &candidate)?;
        self.shadow
            .divergences
            .inc((d.direction.as_str(), Arc::from(d.reason.as_str())));
        Some(CandidateRecord {
            divergence: d.direction.as_str(),
            outcome: if d.candidate.allowed {
                "granted"
            } else {
                "denied"
            },
            reason: d.candidate.reason.into(),
            entry: d.candidate.entry,
            grant: d.candidate.grant,
        })
    }

    /// `policy_candidate_divergence_total` by `(direction, reason)`, for metrics and `Explain`.
    pub fn divergences(&self) -> Vec<((&'static str, Arc<str>), u64)> {
        self.shadow.divergences.snapshot()
    }

    /// The admin record of a call, written whatever its outcome.
    async fn admin_audit(
        &self,
        rpc: &'static str,
        admin: &CallerContext,
        record: AdminRecord,
        result: &Result<(), &BrokerError>,
    ) {
        let snapshot = self.snapshot.load_full();
        let mut r = self.rpc_record(
            rpc,
            &snapshot,
            admin,
            None,
            uuid::Uuid::new_v4(),
            self.clock.now(),
        );
        r.outcome = Outcome::Ok;
        r.admin = Some(record);
        let r = match result {
            Ok(()) => r,
            Err(e) => r.error(e),
        };
        // An admin call hands nothing secret out: a failed write is counted, not fatal.
        let _ = self.audit.record(r.to_line()).await;
    }

    /// `Explain` (role `read`): the running policy's decision on a request, with the rule that
    /// decided, and the candidate's. Audited.
    pub async fn explain(
        &self,
        admin: &CallerContext,
        req: ExplainRequest,
    ) -> Result<Explanation, BrokerError> {
        let config = self.config();
        let entry = config
            .admins
            .admin(admin.source, &admin.id)
            .map(|e| e.pattern.to_string());
        let result = config
            .admins
            .authorize(admin.source, &admin.id, Role::Read)
            .and_then(|_| explain(&config, &req))
            .map(|mut e| {
                e.divergences = self.divergences();
                e
            });
        let record = AdminRecord {
            role: Role::Read.as_str(),
            entry,
            identity: Some(input::echo(&req.identity).to_string()),
            verdict: result.as_ref().ok().map(|e| {
                format!(
                    "{} {}",
                    if e.running.allowed {
                        "granted"
                    } else {
                        "denied"
                    },
                    e.running.reason
                )
            }),
            ..AdminRecord::default()
        };
        self.admin_audit("Explain", admin, record, &result.as_ref().map(|_| ()))
            .await;
        result
    }

    /// `ListSessions` (role `read`): the live sessions this replica holds and, with a shared
    /// cache, those in Redis, narrowed by `raw`. Audited.
    pub async fn list_sessions(
        &self,
        admin: &CallerContext,
        raw: RawSelector,
    ) -> Result<SessionList, BrokerError> {
        let config = self.config();
        let entry = config
            .admins
            .admin(admin.source, &admin.id)
            .map(|e| e.pattern.to_string());
        let result = match config.admins.authorize(admin.source, &admin.id, Role::Read) {
            Ok(_) => self.list_inner(&config, &raw).await,
            Err(e) => Err(e),
        };
        let record = AdminRecord {
            role: Role::Read.as_str(),
            entry,
            selector: Some(selector_record(&raw)),
            sessions: result.as_ref().ok().map(|l| l.sessions.len()),
            ..AdminRecord::default()
        };
        self.admin_audit("ListSessions", admin, record, &result.as_ref().map(|_| ()))
            .await;
        result
    }

    async fn list_inner(
        &self,
        config: &Config,
        raw: &RawSelector,
    ) -> Result<SessionList, BrokerError> {
        let selector = SessionSelector::parse(raw, &config.policy)?.resolve(&config.policy)?;
        let (found, truncated) = self.matching(config, &selector, MAX_LISTED_SESSIONS).await;
        let sessions = found
            .into_iter()
            .map(|(c, local, shared)| {
                let k = &c.key;
                let usable = config
                    .site(&k.site)
                    .map_or(Duration::ZERO, |s| usable_life(config, s));
                SessionInfo {
                    site: k.site.to_string(),
                    user: k.user.to_string(),
                    scopes: k.scopes.iter().map(ToString::to_string).collect(),
                    claims: Vec::new(),
                    callers: entries_covering(&config.policy, &k.site, &k.user, &k.scopes),
                    created: c.expires_at.checked_sub(usable).unwrap_or(c.expires_at),
                    expires: c.expires_at,
                    fingerprint: c.digest.fingerprint().to_string(),
                    local,
                    shared,
                }
            })
            .collect();
        Ok(SessionList {
            sessions,
            truncated,
        })
    }

    /// The sessions a selector picks, from this replica's cache and Redis, one per session
    /// (`jti`), with where each was found; at most `limit` (`true` when there were more).
    async fn matching(
        &self,
        config: &Config,
        selector: &ResolvedSelector,
        limit: usize,
    ) -> (Vec<(Arc<Credentials>, bool, bool)>, bool) {
        let picks = |c: &Credentials| {
            selector.matches(&config.policy, &c.key.site, &c.key.user, &c.key.scopes)
        };
        let mut out: Vec<(Arc<Credentials>, bool, bool)> = self
            .cache
            .sessions(usize::MAX)
            .into_iter()
            .filter(|c| picks(c))
            .map(|c| (c, true, false))
            .collect();
        let mut truncated = false;
        if let Some(shared) = &self.shared {
            // Redis trouble leaves the listing to this replica's cache (logged by the cache).
            if let Ok((remote, more)) = shared.sessions(MAX_REVOKED_SESSIONS).await {
                truncated |= more;
                for c in remote.into_iter().filter(|c| picks(c)) {
                    match out.iter_mut().find(|(l, _, _)| l.jti == c.jti) {
                        Some(l) => l.2 = true,
                        None => out.push((Arc::new(c), false, true)),
                    }
                }
            }
        }
        if out.len() > limit {
            out.truncate(limit);
            truncated = true;
        }
        (out, truncated)
    }

    /// `Revoke` (role `revoke`): ends every session the selector picks, in every replica. They
    /// are tombstoned and deleted in Redis, evicted from this replica's cache and signed out at
    /// Tableau at once; then every replica is told to drop its own matching sessions and confirm.
    /// Audited with the admin and the selector.
    pub async fn revoke(
        &self,
        admin: &CallerContext,
        raw: RawSelector,
    ) -> Result<Revoked, BrokerError> {
        let config = self.config();
        let entry = config
            .admins
            .admin(admin.source, &admin.id)
            .map(|e| e.pattern.to_string());
        let result = match config
            .admins
            .authorize(admin.source, &admin.id, Role::Revoke)
        {
            Ok(_) => self.revoke_inner(&config, &raw).await,
            Err(e) => Err(e),
        };
        let record = AdminRecord {
            role: Role::Revoke.as_str(),
            entry,
            selector: Some(selector_record(&raw)),
            sessions: result.as_ref().ok().map(|r| r.sessions.len()),
            fingerprints: result
                .as_ref()
                .ok()
                .map(|r| r.sessions.iter().map(|s| s.fingerprint.clone()).collect()),
            replicas: result.as_ref().ok().map(|r| r.replicas),
            acknowledged: result.as_ref().ok().map(|r| r.acknowledged),
            ..AdminRecord::default()
        };
        self.admin_audit("Revoke", admin, record, &result.as_ref().map(|_| ()))
            .await;
        result
    }

    async fn revoke_inner(
        &self,
        config: &Config,
        raw: &RawSelector,
    ) -> Result<Revoked, BrokerError> {
        let selector = SessionSelector::parse(raw, &config.policy)?;
        if selector.is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "selector",
                message: "empty: give at least one of caller, site, user or scopes (revoking every session takes --site for each site)".into(),
            });
        }
        let resolved = selector.resolve(&config.policy)?;
        let (found, truncated) = self.matching(config, &resolved, MAX_REVOKED_SESSIONS).await;
        if truncated {
            return Err(BrokerError::InvalidArgument {
                field: "selector",
                message: format!(
                    "selects more than {MAX_REVOKED_SESSIONS} sessions; narrow it (by site, user or scopes) and revoke in parts"
                ),
            });
        }
        let ended: Vec<Arc<Credentials>> = found.into_iter().map(|(c, _, _)| c).collect();
        // Redis first: once the tombstone is there, no replica reads the session back.
        if let Some(shared) = &self.shared {
            futures::stream::iter(&ended)
                .for_each_concurrent(SIGN_OUT_CONCURRENCY, |c| shared.revoke_entry(c))
                .await;
        }
        for c in &ended {
            if let Some(held) = self.cache.find_by_digest(&c.digest) {
                self.cache.remove(held.key.as_ref());
            }
        }
        futures::stream::iter(&ended)
            .for_each_concurrent(SIGN_OUT_CONCURRENCY, |c| async move {
                self.sign_out(c).await;
            })
            .await;
        let mut out = Revoked {
            sessions: ended.iter().map(|c| RevokedSession::of(c)).collect(),
            replicas: 1,
            acknowledged: 1,
        };
        if let Some(shared) = &self.shared {
            let order = RevokeOrder {
                id: uuid::Uuid::new_v4().to_string(),
                sender: String::new(),
                caller: selector.caller.clone(),
                site: selector.site.clone(),
                user: selector.user.as_ref().map(|u| u.as_str().to_owned()),
                scopes: selector.scopes.iter().map(ToString::to_string).collect(),
                done: out.sessions.iter().map(|s| s.jti.clone()).collect(),
            };
            match shared.broadcast_revoke(order, REVOKE_ACK_WAIT).await {
                Ok(b) => {
                    out.replicas = b.replicas.max(1);
                    out.acknowledged = b.acks.len().max(1);
                    let mut seen: HashSet<String> =
                        out.sessions.iter().map(|s| s.jti.clone()).collect();
                    for s in b.acks.into_iter().flat_map(|a| a.sessions) {
                        if seen.insert(s.jti.clone()) {
                            out.sessions.push(s);
                        }
                    }
                    if out.acknowledged < out.replicas {
                        tracing::warn!(
                            replicas = out.replicas,
                            acknowledged = out.acknowledged,
                            "not every replica confirmed the revocation in time"
                        );
                    }
                }
                Err(()) => tracing::warn!(
                    "Redis could not carry the revocation to the other replicas; their caches may still hold matching sessions"
                ),
            }
        }
        Ok(out)
    }

    /// Another replica's order: drop and sign out the matching sessions this replica holds that
    /// the sender did not end itself, and report them.
    async fn on_revoke_order(&self, order: RevokeOrder) -> Vec<RevokedSession> {
        let config = self.config();
        let raw = RawSelector {
            caller: order.caller.unwrap_or_default(),
            site: order.site.unwrap_or_default(),
            user: order.user.unwrap_or_default(),
            scopes: order.scopes,
        };
        let selector = match SessionSelector::parse(&raw, &config.policy)
            .and_then(|s| s.resolve(&config.policy))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "a revocation order does not apply to this replica's policy; dropping the matching sites' sessions by site and user only");
                let mut loose = raw.clone();
                loose.caller.clear();
                loose.scopes.clear();
                match SessionSelector::parse(&loose, &config.policy)
                    .and_then(|s| s.resolve(&config.policy))
                {
                    Ok(s) => s,
                    Err(_) => return Vec::new(),
                }
            }
        };
        let done: HashSet<String> = order.done.into_iter().collect();
        let mine: Vec<Arc<Credentials>> = self
            .cache
            .sessions(usize::MAX)
            .into_iter()
            .filter(|c| selector.matches(&config.policy, &c.key.site, &c.key.user, &c.key.scopes))
            .collect();
        let mut ended = Vec::new();
        for c in mine {
            self.cache.remove(c.key.as_ref());
            if !done.contains(&c.jti.hyphenated().to_string()) {
                if let Some(shared) = &self.shared {
                    shared.revoke_entry(&c).await;
                }
                self.sign_out(&c).await;
                ended.push(RevokedSession::of(&c));
            }
        }
        ended
    }
}

/// Lets the shared cache hand this broker the other replicas' revocation orders.
pub(super) fn listen_for_revocations(broker: &Arc<Broker>) {
    let Some(shared) = &broker.shared else { return };
    let weak = Arc::downgrade(broker);
    shared.on_revoke(Arc::new(move |order| {
        let weak = weak.clone();
        Box::pin(async move {
            match weak.upgrade() {
                Some(b) => b.on_revoke_order(order).await,
                None => Vec::new(),
            }
        })
    }));
}
