//! Operating the policy (issue 27): who may administer the broker (`[[admins]]` and their roles),
//! which sessions a revocation or a listing selects, and the structured verdicts that `Explain`
//! and the candidate policy report. Kept apart from [`crate::policy`] so the callers' policy stays
//! about callers; the decisions themselves are the policy's own (see [`Verdict::of`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error::BrokerError;
use crate::identity::IdentitySource;
use crate::input;
use crate::policy::{Authorization, IdentityPattern, Policy, UserPattern};
use crate::scope::Scope;

/// Longest identity or pattern accepted in a selector or an `Explain` request, in bytes.
pub const MAX_IDENTITY_BYTES: usize = 512;
/// Most attributes or groups in one `Explain` request.
pub const MAX_CLAIMS: usize = 64;
/// Longest attribute name, value or group name in an `Explain` request, in bytes.
pub const MAX_CLAIM_BYTES: usize = 256;
/// Most sessions one `ListSessions` returns (the answer says when there were more).
pub const MAX_LISTED_SESSIONS: usize = 1000;
/// Most sessions one `Revoke` ends; a larger selection is refused whole so that nothing is half
/// done silently (narrow the selector, or revoke twice).
pub const MAX_REVOKED_SESSIONS: usize = 10_000;

/// What an admin may do. Roles are granted one by one; none implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `ListSessions` and `Explain`: see, change nothing.
    Read,
    /// `Revoke`: end sessions.
    Revoke,
}

impl Role {
    /// Parses a configured role name.
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "revoke" => Ok(Role::Revoke),
            other => Err(format!(
                "unknown role {}; the roles are \"read\" and \"revoke\"",
                input::quoted(other)
            )),
        }
    }

    /// The role as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Revoke => "revoke",
        }
    }
}

/// One `[[admins]]` entry: an identity (same syntax and certificate fields as `[[callers]]`)
/// and its roles.
#[derive(Debug, Clone)]
pub struct AdminEntry {
    /// Which identities this entry is for.
    pub pattern: IdentityPattern,
    /// What they may do.
    pub roles: BTreeSet<Role>,
}

/// Every `[[admins]]` entry. Separate from the callers: being allowed credentials never makes
/// anyone an admin, and being an admin never grants credentials.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    entries: Vec<AdminEntry>,
}

impl Admins {
    /// The admins of a configuration (duplicates are the config loader's job to refuse).
    pub fn new(entries: Vec<AdminEntry>) -> Admins {
        Admins { entries }
    }

    /// Every entry, as configured.
    pub fn entries(&self) -> &[AdminEntry] {
        &self.entries
    }

    /// The entry for an identity: exact beats prefix, the longest prefix wins (as for callers).
    pub fn admin(&self, source: IdentitySource, identity: &str) -> Option<&AdminEntry> {
        self.entries
            .iter()
            .filter(|a| a.pattern.matches(source, identity))
            .max_by_key(|a| a.pattern.specificity())
    }

    /// The entry that lets this identity act in `role`, or why not: `NotAnAdmin` when no entry
    /// names it (a caller entry does not count), `RoleNotGranted` when its entry lacks the role.
    pub fn authorize(
        &self,
        source: IdentitySource,
        identity: &str,
        role: Role,
    ) -> Result<&AdminEntry, BrokerError> {
        let Some(entry) = self.admin(source, identity) else {
            return Err(BrokerError::NotAnAdmin {
                identity: input::echo(identity).to_string(),
            });
        };
        if !entry.roles.contains(&role) {
            return Err(BrokerError::RoleNotGranted {
                entry: entry.pattern.to_string(),
                role: role.as_str(),
            });
        }
        Ok(entry)
    }
}

/// Which sessions a `Revoke` or `ListSessions` is about. Every field narrows; an empty field
/// matches everything, so `Revoke` requires at least one (see [`SessionSelector::is_empty`]).
#[derive(Debug, Clone, Default)]
pub struct SessionSelector {
    /// A `[[callers]]` entry as written, or a caller identity (its entry is then looked up):
    /// selects the sessions that entry's grants cover, i.e. every session the workload could
    /// have been handed.
    pub caller: Option<String>,
    /// A site name.
    pub site: Option<String>,
    /// A user name or glob (`*@example.com`).
    pub user: Option<UserPattern>,
    /// Scopes the session must include (normalized).
    pub scopes: Vec<Scope>,
}

/// A selector as sent, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct RawSelector {
    /// See [`SessionSelector::caller`].
    pub caller: String,
    /// See [`SessionSelector::site`].
    pub site: String,
    /// See [`SessionSelector::user`].
    pub user: String,
    /// See [`SessionSelector::scopes`].
    pub scopes: Vec<String>,
}

fn nonempty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

impl SessionSelector {
    /// Checks and parses a selector: every string bounded, scopes known to the policy's catalog.
    pub fn parse(raw: &RawSelector, policy: &Policy) -> Result<SessionSelector, BrokerError> {
        input::check_site(&raw.site)?;
        input::check_user(&raw.user)?;
        input::check_scopes(&raw.scopes)?;
        if raw.caller.len() > MAX_IDENTITY_BYTES {
            return Err(BrokerError::InputTooLarge {
                field: "caller",
                limit: MAX_IDENTITY_BYTES,
                actual: raw.caller.len(),
                unit: "bytes",
            });
        }
        let scopes = if raw.scopes.iter().all(|s| s.trim().is_empty()) {
            Vec::new()
        } else {
            policy.normalize_scopes(&raw.scopes)?
        };
        let user = nonempty(&raw.user)
            .map(UserPattern::parse)
            .transpose()
            .map_err(|message| BrokerError::InvalidArgument {
                field: "user",
                message,
            })?;
        Ok(SessionSelector {
            caller: nonempty(&raw.caller).map(str::to_owned),
            site: nonempty(&raw.site).map(str::to_owned),
            user,
            scopes,
        })
    }

    /// True when nothing narrows the selection.
    pub fn is_empty(&self) -> bool {
        self.caller.is_none()
            && self.site.is_none()
            && self.user.is_none()
            && self.scopes.is_empty()
    }

    /// Resolves the caller part against a policy: the entries it names.
    pub fn resolve(&self, policy: &Policy) -> Result<ResolvedSelector, BrokerError> {
        let entries = match &self.caller {
            None => None,
            Some(c) => Some(caller_entries(policy, c)?),
        };
        Ok(ResolvedSelector {
            selector: self.clone(),
            entries,
        })
    }
}

/// The `[[callers]]` entries (by index) a caller selector names: the entry written exactly so,
/// else the entry that applies to that identity. Unknown is an error, not an empty selection, so
/// a typo never reports "nothing to revoke".
fn caller_entries(policy: &Policy, caller: &str) -> Result<Vec<usize>, BrokerError> {
    let written: Vec<usize> = policy
        .callers()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pattern.to_string() == caller)
        .map(|(i, _)| i)
        .collect();
    if !written.is_empty() {
        return Ok(written);
    }
    let pattern =
        IdentityPattern::parse(caller).map_err(|message| BrokerError::InvalidArgument {
            field: "caller",
            message,
        })?;
    let (source, value) = match &pattern {
        IdentityPattern::Exact { source, value } => (*source, value.as_str()),
        IdentityPattern::SpiffePrefix(_) => {
            return Err(BrokerError::InvalidArgument {
                field: "caller",
                message: format!(
                    "{} is not a [[callers]] entry; give an entry as written or one identity",
                    input::quoted(caller)
                ),
            });
        }
    };
    match policy.caller_index(source, value) {
        Some((i, _)) => Ok(vec![i]),
        None => Err(BrokerError::InvalidArgument {
            field: "caller",
            message: format!(
                "no [[callers]] entry applies to {}; nothing could have been handed to it",
                input::quoted(caller)
            ),
        }),
    }
}

/// A selector whose caller part names configured entries.
#[derive(Debug, Clone)]
pub struct ResolvedSelector {
    /// The selector.
    pub selector: SessionSelector,
    /// The caller entries (indexes in the policy), when the selector names a caller.
    pub entries: Option<Vec<usize>>,
}

impl ResolvedSelector {
    /// Whether a session for `site`, `user` and `scopes` is selected.
    pub fn matches(&self, policy: &Policy, site: &str, user: &str, scopes: &[Scope]) -> bool {
        let s = &self.selector;
        if s.site.as_deref().is_some_and(|x| x != site)
            || s.user.as_ref().is_some_and(|u| !u.matches(user))
            || !s.scopes.iter().all(|want| scopes.contains(want))
        {
            return false;
        }
        match &self.entries {
            None => true,
            Some(entries) => entries.iter().any(|&i| {
                policy.callers().get(i).is_some_and(|e| {
                    e.grants
                        .iter()
                        .any(|g| g.covers(policy.catalog(), site, user, scopes))
                })
            }),
        }
    }
}

/// The caller entries (as written) whose grants cover a session: who may be using it.
pub fn entries_covering(policy: &Policy, site: &str, user: &str, scopes: &[Scope]) -> Vec<String> {
    policy
        .callers()
        .iter()
        .filter(|e| {
            e.grants
                .iter()
                .any(|g| g.covers(policy.catalog(), site, user, scopes))
        })
        .map(|e| e.pattern.to_string())
        .collect()
}

/// What an `Explain` asks about: a request as a caller would send it, with the identity and its
/// certificate field given explicitly.
#[derive(Debug, Clone, Default)]
pub struct ExplainRequest {
    /// The identity.
    pub identity: String,
    /// The certificate field it comes from.
    pub source: Option<IdentitySource>,
    /// Site name.
    pub site: String,
    /// Tableau username.
    pub user: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Claims attributes (`name`, `value`; a name given twice has several values), checked
    /// against the grants' allowlists like a request's.
    pub attributes: Vec<(String, String)>,
    /// Claims groups, checked against the grants' allowlists like a request's.
    pub groups: Vec<String>,
    /// On-demand access asked for.
    pub on_demand_access: bool,
}

/// Parses a certificate field as `Explain` takes it: `spiffe` (or `uri_san`), `dns` (or
/// `dns_san`), `cn`.
pub fn parse_source(s: &str) -> Result<IdentitySource, BrokerError> {
    match s.trim() {
        "spiffe" | "uri_san" => Ok(IdentitySource::Spiffe),
        "dns" | "dns_san" => Ok(IdentitySource::Dns),
        "cn" => Ok(IdentitySource::CommonName),
        other => Err(BrokerError::InvalidArgument {
            field: "source",
            message: format!(
                "{} is not a certificate field; use \"spiffe\", \"dns\" or \"cn\"",
                input::quoted(other)
            ),
        }),
    }
}

impl ExplainRequest {
    /// The caller as the transport would present it. Without `source`, the identity says its
    /// field as configured identities do: `dns:NAME`, `cn:NAME`, else a SPIFFE ID.
    pub fn caller(&self) -> Result<crate::audit::CallerContext, BrokerError> {
        let id = self.identity.trim();
        let (source, value) = match self.source {
            Some(s) => (s, id),
            None => {
                if let Some(v) = id.strip_prefix(crate::policy::DNS_PREFIX) {
                    (IdentitySource::Dns, v)
                } else if let Some(v) = id.strip_prefix(crate::policy::CN_PREFIX) {
                    (IdentitySource::CommonName, v)
                } else {
                    (IdentitySource::Spiffe, id)
                }
            }
        };
        Ok(crate::audit::CallerContext {
            id: Arc::from(value),
            source,
            cert_serial: None,
            peer: None,
        })
    }
}

impl ExplainRequest {
    /// The claims as a request would carry them: values of one attribute name gathered, in the
    /// order given.
    pub fn claims(&self) -> crate::claims::RequestedClaims {
        let mut attributes: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in &self.attributes {
            match attributes.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value.clone()),
                None => attributes.push((name.clone(), vec![value.clone()])),
            }
        }
        crate::claims::RequestedClaims {
            attributes,
            groups: self.groups.clone(),
            on_demand_access: self.on_demand_access,
        }
    }

    /// Checks the parts the policy does not bound itself (identity, claims).
    pub fn check(&self) -> Result<(), BrokerError> {
        if self.identity.len() > MAX_IDENTITY_BYTES {
            return Err(BrokerError::InputTooLarge {
                field: "identity",
                limit: MAX_IDENTITY_BYTES,
                actual: self.identity.len(),
                unit: "bytes",
            });
        }
        if self.identity.trim().is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "identity",
                message: "empty: give the caller identity to explain".into(),
            });
        }
        for (field, n) in [
            ("attributes", self.attributes.len()),
            ("groups", self.groups.len()),
        ] {
            if n > MAX_CLAIMS {
                return Err(BrokerError::InputTooLarge {
                    field,
                    limit: MAX_CLAIMS,
                    actual: n,
                    unit: "entries",
                });
            }
        }
        let longest = self
            .attributes
            .iter()
            .flat_map(|(k, v)| [k.len(), v.len()])
            .chain(self.groups.iter().map(String::len))
            .max()
            .unwrap_or(0);
        if longest > MAX_CLAIM_BYTES {
            return Err(BrokerError::InputTooLarge {
                field: "claims",
                limit: MAX_CLAIM_BYTES,
                actual: longest,
                unit: "bytes",
            });
        }
        Ok(())
    }
}

/// One policy's decision on a request, as `Explain` and the audit trail report it. Built from
/// the very result the broker's decision path returned ([`Verdict::of`]), never recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// True when the request would be granted.
    pub allowed: bool,
    /// `OK`, or the stable reason of the refusal (the gRPC `ErrorInfo.reason`).
    pub reason: String,
    /// What refused it (the first rule that did), or empty when allowed.
    pub message: String,
    /// The `[[callers]]` entry that applied, as written.
    pub entry: Option<String>,
    /// Its index in `[[callers]]`.
    pub entry_index: Option<usize>,
    /// The index, in that entry, of the grant that allowed it.
    pub grant: Option<usize>,
    /// The normalized scopes granted.
    pub scopes: Vec<String>,
}

impl Verdict {
    /// The verdict of `policy` on a request from `identity`, given the decision path's result.
    pub fn of(
        policy: &Policy,
        source: IdentitySource,
        identity: &str,
        result: &Result<Authorization, BrokerError>,
    ) -> Verdict {
        let found = policy.caller_index(source, identity);
        let (entry, entry_index) = match found {
            Some((i, e)) => (Some(e.pattern.to_string()), Some(i)),
            None => (None, None),
        };
        match result {
            Ok(a) => Verdict {
                allowed: true,
                reason: "OK".to_owned(),
                message: String::new(),
                entry,
                entry_index,
                grant: Some(a.grant),
                scopes: a.scopes.iter().map(ToString::to_string).collect(),
            },
            Err(e) => Verdict {
                allowed: false,
                reason: e.reason(),
                message: e.to_string(),
                entry,
                entry_index,
                grant: None,
                scopes: Vec::new(),
            },
        }
    }
}

/// Which way a candidate policy departs from the running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The running policy grants; the candidate would refuse.
    WouldRefuse,
    /// The running policy refuses; the candidate would grant.
    WouldAllow,
}

impl Direction {
    /// The metric label and audit value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::WouldRefuse => "would_refuse",
            Direction::WouldAllow => "would_allow",
        }
    }
}

/// A decision on which the candidate disagrees with the running policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Which way.
    pub direction: Direction,
    /// The candidate's verdict.
    pub candidate: Verdict,
    /// The reason label: the refusing side's reason (candidate's for `would_refuse`, the running
    /// policy's for `would_allow`), a bounded vocabulary.
    pub reason: String,
}

impl Divergence {
    /// The divergence between two verdicts, if they differ on allow/refuse.
    pub fn between(running: &Verdict, candidate: &Verdict) -> Option<Divergence> {
        match (running.allowed, candidate.allowed) {
            (true, false) => Some(Divergence {
                direction: Direction::WouldRefuse,
                reason: candidate.reason.clone(),
                candidate: candidate.clone(),
            }),
            (false, true) => Some(Divergence {
                direction: Direction::WouldAllow,
                reason: running.reason.clone(),
                candidate: candidate.clone(),
            }),
            _ => None,
        }
    }
}

/// A candidate policy loaded in shadow (`[policy] candidate`): evaluated on every decision,
/// never enforced.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The file it came from.
    pub path: std::path::PathBuf,
    /// Its callers.
    pub policy: Arc<Policy>,
    /// Its admins (checked; promoted with the callers).
    pub admins: Arc<Admins>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
version = 1
development = true

[sites.finance]
server_url = "https://tableau.example.com/"
content_url = "finance"
[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "a-development-secret-of-at-least-32-bytes"

[sites.sales]
server_url = "https://tableau.example.com/"
content_url = "sales"
[sites.sales.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "a-development-secret-of-at-least-32-bytes"

[[callers]]
identity = "spiffe://example.org/ns/reports/sa/renderer"
[[callers.grants]]
sites = ["finance"]
users = ["*@example.com"]
scopes = ["tableau:content:read"]

[[callers]]
identity = "spiffe://example.org/ns/ops/*"
[[callers.grants]]
sites = ["*"]
users = ["svc"]
scopes = ["tableau:tasks:run"]

[[admins]]
identity = "spiffe://example.org/ns/security/*"
roles = ["read"]

[[admins]]
identity = "spiffe://example.org/ns/security/sa/admin"
roles = ["read", "revoke"]
"#;

    fn load(text: &str, files: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn admins_are_looked_up_like_callers_and_need_their_role() {
        let c = load(BASE, &[]).unwrap();
        let a = &c.admins;
        let spiffe = IdentitySource::Spiffe;
        let admin = "spiffe://example.org/ns/security/sa/admin";
        assert!(
            a.authorize(spiffe, admin, Role::Revoke).is_ok(),
            "exact beats prefix"
        );
        let e = a
            .authorize(
                spiffe,
                "spiffe://example.org/ns/security/sa/x",
                Role::Revoke,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "ROLE_NOT_GRANTED");
        assert!(
            a.authorize(spiffe, "spiffe://example.org/ns/security/sa/x", Role::Read)
                .is_ok()
        );
        let e = a
            .authorize(
                spiffe,
                "spiffe://example.org/ns/reports/sa/renderer",
                Role::Read,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "NOT_AN_ADMIN", "a caller entry is not an admin");
        assert!(
            a.authorize(IdentitySource::CommonName, admin, Role::Read)
                .is_err()
        );
    }

    #[test]
    fn bad_admin_entries_are_located() {
        let text = format!(
            "{BASE}\n[[admins]]\nidentity = \"spiffe://example.org/ns/security/sa/admin\"\nroles = [\"write\"]\n[[admins]]\nidentity = \"bare\"\nroles = []\n"
        );
        let e = load(&text, &[]).unwrap_err().to_string();
        for at in [
            "admins[2].identity",
            "admins[2].roles[0]",
            "admins[3].identity",
            "admins[3].roles",
        ] {
            assert!(e.contains(at), "{at}: {e}");
        }
    }

    #[test]
    fn a_candidate_is_validated_like_the_running_file_and_refused_whole() {
        let with = format!("{BASE}\n[policy]\ncandidate = \"candidate.toml\"\n");
        let good = "[[callers]]\nidentity = \"spiffe://example.org/ns/reports/sa/renderer\"\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"ann@example.com\"]\nscopes = [\"tableau:content:read\"]\n";
        let c = load(&with, &[("candidate.toml", good)]).unwrap();
        let cand = c.candidate.as_ref().unwrap();
        assert_eq!(cand.policy.callers().len(), 1);
        assert!(cand.admins.entries().is_empty());
        assert!(
            c.watched_files()
                .iter()
                .any(|p| p.ends_with("candidate.toml"))
        );
        // Unknown sites and scopes, stray sections and a missing file all refuse the load.
        let bad_site = good.replace("[\"finance\"]", "[\"nowhere\"]");
        let e = load(&with, &[("candidate.toml", &bad_site)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("candidate.toml") && e.contains("unknown site"),
            "{e}"
        );
        let stray = format!("{good}\n[cache]\nmax_entries = 1\n");
        let e = load(&with, &[("candidate.toml", &stray)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[callers]] and [[admins]] only"), "{e}");
        assert!(load(&with, &[]).is_err());
    }

    fn explain(c: &Config, identity: &str, site: &str, user: &str, scope: &str) -> Verdict {
        crate::broker::explain(
            c,
            &ExplainRequest {
                identity: identity.into(),
                site: site.into(),
                user: user.into(),
                scopes: vec![scope.into()],
                ..ExplainRequest::default()
            },
        )
        .unwrap()
        .running
    }

    /// Explain and the candidate in shadow judge claims as the real decision does: a grant's
    /// attribute and group allowlists, and on-demand access.
    #[test]
    fn explain_judges_claims_like_the_real_decision() {
        let claims_base = BASE.replace(
            "users = [\"*@example.com\"]\nscopes = [\"tableau:content:read\"]",
            "users = [\"*@example.com\"]\nscopes = [\"tableau:content:read\"]\nattributes = { region = [\"emea\"] }\ngroups = [\"Finance *\"]",
        );
        assert_ne!(claims_base, BASE, "the grant gained an allowlist");
        let with = format!("{claims_base}\n[policy]\ncandidate = \"candidate.toml\"\n");
        // The candidate drops the group allowlist: the same request would be refused.
        let candidate = "[[callers]]\nidentity = \"spiffe://example.org/ns/reports/sa/renderer\"\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"*@example.com\"]\nscopes = [\"tableau:content:read\"]\nattributes = { region = [\"emea\"] }\n";
        let c = load(&with, &[("candidate.toml", candidate)]).unwrap();
        let ask = |attributes: &[(&str, &str)], groups: &[&str], oda: bool| {
            crate::broker::explain(
                &c,
                &ExplainRequest {
                    identity: "spiffe://example.org/ns/reports/sa/renderer".into(),
                    site: "finance".into(),
                    user: "ann@example.com".into(),
                    scopes: vec!["tableau:content:read".into()],
                    attributes: attributes
                        .iter()
                        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                        .collect(),
                    groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                    on_demand_access: oda,
                    ..ExplainRequest::default()
                },
            )
            .unwrap()
        };
        let e = ask(&[("region", "emea")], &["Finance Viewers"], false);
        assert!(e.running.allowed, "{:?}", e.running);
        let cand = e.candidate.as_ref().unwrap();
        assert!(!cand.allowed);
        assert_eq!(cand.reason, "GROUP_NOT_ALLOWED");
        assert!(e.divergence.is_some());
        let e = ask(&[("region", "us")], &[], false);
        assert_eq!(
            (e.running.allowed, e.running.reason.as_str()),
            (false, "ATTRIBUTE_NOT_ALLOWED")
        );
        let e = ask(&[], &[], true);
        assert_eq!(e.running.reason, "ON_DEMAND_ACCESS_NOT_ALLOWED");
        // A name reserved for registered claims is a bad request, as in GetCredentials.
        let e = ask(&[("iss", "x")], &[], false);
        assert!(!e.running.allowed, "{:?}", e.running);
    }

    #[test]
    fn verdicts_name_the_entry_and_grant_or_the_refusal() {
        let c = load(BASE, &[]).unwrap();
        let v = explain(
            &c,
            "spiffe://example.org/ns/ops/sa/x",
            "sales",
            "svc",
            "tableau:tasks:run",
        );
        assert!(v.allowed);
        assert_eq!(
            (v.entry.as_deref(), v.entry_index, v.grant),
            (Some("spiffe://example.org/ns/ops/*"), Some(1), Some(0))
        );
        let v = explain(
            &c,
            "spiffe://example.org/ns/reports/sa/renderer",
            "sales",
            "ann@example.com",
            "tableau:content:read",
        );
        assert_eq!((v.allowed, v.reason.as_str()), (false, "SITE_NOT_ALLOWED"));
        assert!(v.message.contains("sales"), "{}", v.message);
        let v = explain(&c, "cn:nobody", "finance", "svc", "tableau:tasks:run");
        assert_eq!(
            (v.reason.as_str(), v.entry.as_deref()),
            ("CALLER_NOT_ALLOWED", None)
        );
        let d = Divergence::between(
            &explain(
                &c,
                "spiffe://example.org/ns/ops/sa/x",
                "sales",
                "svc",
                "tableau:tasks:run",
            ),
            &v,
        )
        .unwrap();
        assert_eq!(
            (d.direction, d.reason.as_str()),
            (Direction::WouldRefuse, "CALLER_NOT_ALLOWED")
        );
    }

    #[test]
    fn selectors_are_bounded_and_match_by_every_field() {
        let c = load(BASE, &[]).unwrap();
        let p = &c.policy;
        let sel = |caller: &str, site: &str, user: &str| {
            SessionSelector::parse(
                &RawSelector {
                    caller: caller.into(),
                    site: site.into(),
                    user: user.into(),
                    scopes: Vec::new(),
                },
                p,
            )
            .and_then(|s| s.resolve(p))
        };
        let read: Vec<Scope> = vec!["tableau:content:read".parse().unwrap()];
        let s = sel("", "finance", "*@example.com").unwrap();
        assert!(s.matches(p, "finance", "ann@example.com", &read));
        assert!(!s.matches(p, "sales", "ann@example.com", &read));
        assert!(!s.matches(p, "finance", "svc", &read));
        // A caller entry selects what its grants cover; an identity selects its entry's.
        let s = sel("spiffe://example.org/ns/reports/sa/renderer", "", "").unwrap();
        assert!(s.matches(p, "finance", "ann@example.com", &read));
        let tasks: Vec<Scope> = vec!["tableau:tasks:run".parse().unwrap()];
        assert!(!s.matches(p, "finance", "svc", &tasks));
        let s = sel("spiffe://example.org/ns/ops/sa/y", "", "").unwrap();
        assert!(s.matches(p, "finance", "svc", &tasks));
        assert_eq!(
            sel("spiffe://example.org/ns/none", "", "")
                .unwrap_err()
                .reason(),
            "INVALID_REQUEST"
        );
        assert_eq!(
            sel("", &"s".repeat(10_000), "").unwrap_err().reason(),
            "INPUT_TOO_LARGE"
        );
        assert_eq!(
            sel(&"c".repeat(10_000), "", "").unwrap_err().reason(),
            "INPUT_TOO_LARGE"
        );
        assert!(sel("", "", "").unwrap().selector.is_empty());
    }
}
