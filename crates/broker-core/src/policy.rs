//! Caller policy: deny by default. Decides whether a caller (identified by its certificate) may
//! get credentials for a site, a user and a set of scopes, and returns the normalized scope set that
//! keys the token cache.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::Catalog;
use crate::echo::{MAX_SUGGEST_BYTES, quoted};
use crate::identity::{IdentitySource, validate_spiffe_id};
use crate::scope::{Scope, ScopeParseError};

/// How a `[[callers]]` entry matches a certificate identity. Every pattern names the certificate
/// field it matches, so a value found in one field can never claim an entry meant for another
/// (a subject CN spelled like a SPIFFE ID is not a SPIFFE ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    /// The identity from `source` must be equal (`spiffe://…`, `dns:NAME`, `cn:NAME`). DNS names
    /// are stored lowercase and compared without regard to ASCII case, as DNS does.
    Exact {
        /// The certificate field.
        source: IdentitySource,
        /// The value, without its `dns:`/`cn:` prefix.
        value: String,
    },
    /// `spiffe://td/path/*`: any SPIFFE ID (URI SAN) under `spiffe://td/path/` (the stored prefix
    /// ends in `/`).
    SpiffePrefix(String),
}

/// The prefix of a configured identity that matches a DNS SAN.
pub const DNS_PREFIX: &str = "dns:";
/// The prefix of a configured identity that matches the subject CN.
pub const CN_PREFIX: &str = "cn:";
const SPIFFE_SCHEME: &str = "spiffe://";

impl IdentityPattern {
    /// Parses a configured identity: `spiffe://td/path` (exact) or `spiffe://td/path/*` (prefix)
    /// for the URI SAN, `dns:NAME` for a DNS SAN, `cn:NAME` for the subject CN. A bare name is
    /// refused: it would not say which certificate field may claim it.
    pub fn parse(s: &str) -> Result<IdentityPattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("identity is empty".into());
        }
        if s.starts_with(SPIFFE_SCHEME) {
            if let Some(prefix) = s.strip_suffix("/*") {
                if prefix.len() <= SPIFFE_SCHEME.len() {
                    return Err(format!("identity {s:?}: the trust domain is missing"));
                }
                if prefix.contains('*') {
                    return Err(format!(
                        "identity {s:?}: '*' is only allowed as a trailing /* on SPIFFE IDs"
                    ));
                }
                // The prefix must be the start of some valid SPIFFE ID.
                validate_spiffe_id(&format!("{prefix}/x")).map_err(|reason| {
                    format!("identity {s:?}: not a valid SPIFFE ID prefix: {reason}")
                })?;
                return Ok(IdentityPattern::SpiffePrefix(format!("{prefix}/")));
            }
            if s.contains('*') {
                return Err(format!(
                    "identity {s:?}: '*' is only allowed as a trailing /* on SPIFFE IDs"
                ));
            }
            validate_spiffe_id(s)
                .map_err(|reason| format!("identity {s:?}: not a valid SPIFFE ID: {reason}"))?;
            return Ok(IdentityPattern::Exact {
                source: IdentitySource::Spiffe,
                value: s.to_owned(),
            });
        }
        let (source, value) = if let Some(v) = s.strip_prefix(DNS_PREFIX) {
            (IdentitySource::Dns, v.trim().to_ascii_lowercase())
        } else if let Some(v) = s.strip_prefix(CN_PREFIX) {
            (IdentitySource::CommonName, v.trim().to_owned())
        } else {
            return Err(format!(
                "identity {s:?} does not say which certificate field it matches; write \"spiffe://trust-domain/path\" for a URI SAN (SPIFFE ID), \"dns:{s}\" for a DNS SAN, or \"cn:{s}\" for the subject CN"
            ));
        };
        if value.is_empty() {
            return Err(format!(
                "identity {s:?}: the name after the prefix is empty"
            ));
        }
        if value.contains("://") {
            return Err(format!(
                "identity {s:?}: a DNS SAN or CN holding \"://\" is never taken as an identity; match a SPIFFE ID as \"spiffe://...\" (URI SAN) instead"
            ));
        }
        if value.contains('*') {
            return Err(format!(
                "identity {s:?}: '*' is only allowed as a trailing /* on SPIFFE IDs"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("identity {s:?}: holds a control character"));
        }
        Ok(IdentityPattern::Exact { source, value })
    }

    /// Whether an identity taken from `source` with this `value` is one this pattern names.
    pub fn matches(&self, source: IdentitySource, value: &str) -> bool {
        match self {
            IdentityPattern::Exact {
                source: s,
                value: v,
            } => {
                *s == source
                    && match source {
                        IdentitySource::Dns => v.eq_ignore_ascii_case(value),
                        IdentitySource::Spiffe | IdentitySource::CommonName => v == value,
                    }
            }
            IdentityPattern::SpiffePrefix(p) => {
                source == IdentitySource::Spiffe
                    && value.starts_with(p.as_str())
                    && value.len() > p.len()
            }
        }
    }

    /// The certificate field this pattern matches.
    pub fn source(&self) -> IdentitySource {
        match self {
            IdentityPattern::Exact { source, .. } => *source,
            IdentityPattern::SpiffePrefix(_) => IdentitySource::Spiffe,
        }
    }

    /// Longer patterns are more specific; exact beats any prefix.
    pub(crate) fn specificity(&self) -> usize {
        match self {
            IdentityPattern::Exact { .. } => usize::MAX,
            IdentityPattern::SpiffePrefix(p) => p.len(),
        }
    }
}

impl std::fmt::Display for IdentityPattern {
    /// As configured: `spiffe://…`, `spiffe://…/*`, `dns:NAME`, `cn:NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityPattern::Exact { source, value } => match source {
                IdentitySource::Spiffe => f.write_str(value),
                IdentitySource::Dns => write!(f, "{DNS_PREFIX}{value}"),
                IdentitySource::CommonName => write!(f, "{CN_PREFIX}{value}"),
            },
            IdentityPattern::SpiffePrefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A user entry of a grant. `*` matches everyone only when written on its own.
#[derive(Debug, Clone)]
pub enum UserPattern {
    /// Everyone (`"*"`).
    Any,
    /// One user; Tableau usernames are case-sensitive, so is this.
    Exact(String),
    /// A glob such as `*@example.com`.
    Glob(String, wildmatch::WildMatch),
}

impl UserPattern {
    /// Parses a configured user entry.
    pub fn parse(s: &str) -> Result<UserPattern, String> {
        if s.trim().is_empty() {
            return Err("user is empty".into());
        }
        if s == "*" {
            Ok(UserPattern::Any)
        } else if s.contains('*') || s.contains('?') {
            Ok(UserPattern::Glob(
                s.to_owned(),
                wildmatch::WildMatch::new(s),
            ))
        } else {
            Ok(UserPattern::Exact(s.to_owned()))
        }
    }

    /// Whether this pattern admits the username.
    pub fn matches(&self, user: &str) -> bool {
        match self {
            UserPattern::Any => true,
            UserPattern::Exact(u) => u == user,
            UserPattern::Glob(_, g) => g.matches(user),
        }
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        match self {
            UserPattern::Any => "*",
            UserPattern::Exact(u) | UserPattern::Glob(u, _) => u,
        }
    }
}

/// One allowlist entry: these sites, these users, these scopes.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Site names; `"*"` means every configured site.
    pub sites: Vec<String>,
    /// Users the caller may act as.
    pub users: Vec<UserPattern>,
    /// Authorization scopes; a wildcard allows its documented coverage.
    pub scopes: Vec<Scope>,
    /// Refused even when allowed above; deny wins within the grant.
    pub deny_scopes: Vec<Scope>,
    /// Longest JWT lifetime this grant allows.
    pub max_jwt_ttl: Option<Duration>,
    /// Claims beyond `scp` this grant allows (attributes, groups, on-demand access); none by
    /// default.
    pub claims: crate::claims::ClaimAllowlist,
}

impl Grant {
    /// True when this grant alone allows the site, the user and every (normalized) scope: what
    /// the access review attributes a granted request to.
    pub fn covers(&self, catalog: &Catalog, site: &str, user: &str, scopes: &[Scope]) -> bool {
        self.matches_site(site)
            && self.matches_user(user)
            && scopes.iter().all(|s| self.allows(catalog, s))
    }

    fn matches_site(&self, site: &str) -> bool {
        self.sites.iter().any(|s| s == "*" || s == site)
    }

    fn matches_user(&self, user: &str) -> bool {
        self.users.iter().any(|u| u.matches(user))
    }

    /// The deny scope that refuses `scope`, if any: one that covers it (`deny tableau:tasks:*`
    /// refuses `tableau:tasks:run`) or one it covers (asking for `tableau:tasks:*` when
    /// `tableau:tasks:delete` is denied would smuggle the denied scope in through the wildcard).
    fn denied_by<'a>(&'a self, catalog: &Catalog, scope: &Scope) -> Option<&'a Scope> {
        self.deny_scopes
            .iter()
            .find(|d| catalog.covers(d, scope) || catalog.covers(scope, d))
    }

    fn grants_scope(&self, catalog: &Catalog, scope: &Scope) -> bool {
        self.scopes.iter().any(|g| catalog.covers(g, scope))
    }

    fn allows(&self, catalog: &Catalog, scope: &Scope) -> bool {
        self.grants_scope(catalog, scope) && self.denied_by(catalog, scope).is_none()
    }
}

/// A configured caller and its grants.
#[derive(Debug, Clone)]
pub struct CallerEntry {
    /// Which identities this entry is for.
    pub pattern: IdentityPattern,
    /// What they may ask for.
    pub grants: Vec<Grant>,
}

/// What a caller asks for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The certificate field the identity came from.
    pub source: IdentitySource,
    /// The certificate identity.
    pub identity: &'a str,
    /// Site name.
    pub site: &'a str,
    /// Tableau username.
    pub user: &'a str,
    /// Requested scopes, as sent.
    pub scopes: &'a [String],
}

/// A granted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Deduplicated, sorted scopes: the cache key's scope part and the JWT's `scp`.
    pub scopes: Vec<Scope>,
    /// The longest JWT lifetime any matching grant allows (`None`: no grant limit).
    pub max_jwt_ttl: Option<Duration>,
    /// Claims beyond `scp`, once [`Policy::check_claims`] allowed them: the cache key's claim
    /// part and the JWT's extra claims.
    pub claims: crate::claims::ClaimSet,
    /// The index (in its caller entry) of the first grant that allows the whole request: what
    /// `Explain` reports, taken from the decision itself so the two cannot disagree.
    pub grant: usize,
}

/// Why a request was refused. Safe to send back to the caller that asked: it names only what that
/// caller sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// No scopes were asked for; Tableau would deny every method to such a token.
    #[error(
        "no scopes requested: ask for at least one scope (a token without scopes can call no REST method)"
    )]
    NoScopes,
    /// A requested scope is not well formed.
    #[error("{0}")]
    MalformedScope(ScopeParseError),
    /// A requested scope is unknown to the catalog and not in `extra_scopes`.
    #[error("unknown scope {}{}", quoted(scope), hint.as_ref().map(|h| format!(" (did you mean {h:?}?)")).unwrap_or_default())]
    UnknownScope {
        /// The scope as sent.
        scope: String,
        /// A close known scope.
        hint: Option<String>,
    },
    /// No `[[callers]]` entry matches the certificate identity.
    #[error("identity {} from the certificate's {} has no grants in the broker's configuration; ask its operators for a [[callers]] entry naming that field", quoted(identity), field.describe())]
    UnknownCaller {
        /// The certificate identity.
        identity: String,
        /// The certificate field it came from.
        field: IdentitySource,
    },
    /// No grant of the caller names this site.
    #[error("site {} is not granted to {}", quoted(site), quoted(identity))]
    Site {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
    },
    /// No grant for the site names this user.
    #[error(
        "user {} on site {} is not granted to {}",
        quoted(user),
        quoted(site),
        quoted(identity)
    )]
    User {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
    },
    /// No grant for the site and user covers this scope.
    #[error(
        "scope {scope} is not granted to {} for user {} on site {}",
        quoted(identity),
        quoted(user),
        quoted(site)
    )]
    Scope {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
        /// The first scope that failed.
        scope: String,
    },
    /// A granted scope is refused by the grant's `deny_scopes`: it is denied, or it is a wildcard
    /// whose documented coverage includes a denied scope.
    #[error(
        "scope {scope} is refused to {} for user {} on site {}: {}",
        quoted(identity),
        quoted(user),
        quoted(site),
        denied_reason(scope, by)
    )]
    ScopeDenied {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
        /// The requested scope that was refused.
        scope: String,
        /// What refuses it, and what to ask for instead (boxed: denials travel in `Result`s).
        by: Box<DeniedBy>,
    },
    /// A user attribute, or one of its values, that no matching grant's `attributes` allows.
    #[error(
        "attribute {}{} is not allowed to {} for user {} on site {}: the grant's attributes must list it",
        quoted(name),
        value.as_ref().map(|v| format!(" value {}", quoted(v))).unwrap_or_default(),
        quoted(identity),
        quoted(user),
        quoted(site)
    )]
    AttributeNotAllowed {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
        /// The attribute.
        name: String,
        /// The refused value; `None` when the attribute itself is not allowed.
        value: Option<String>,
    },
    /// A group that no matching grant's `groups` globs allow.
    #[error(
        "group {} is not allowed to {} for user {} on site {}: the grant's groups must match it",
        quoted(group),
        quoted(identity),
        quoted(user),
        quoted(site)
    )]
    GroupNotAllowed {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
        /// The group.
        group: String,
    },
    /// On-demand access, which no matching grant allows (`on_demand_access = true`).
    #[error(
        "on-demand access is not allowed to {} for user {} on site {}: the grant must set on_demand_access = true",
        quoted(identity),
        quoted(user),
        quoted(site)
    )]
    OnDemandAccessNotAllowed {
        /// The certificate identity.
        identity: String,
        /// The site asked for.
        site: String,
        /// The user asked for.
        user: String,
    },
    /// Every scope is granted somewhere, but no single grant covers them all.
    #[error(
        "no single grant of {} covers all of the requested scopes together; ask for them in separate requests",
        quoted(identity)
    )]
    Split {
        /// The certificate identity.
        identity: String,
    },
}

/// The `deny_scopes` entry behind a [`Denial::ScopeDenied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedBy {
    /// The `deny_scopes` entry that refuses the scope.
    pub denied: String,
    /// For a wildcard: the scopes it covers that the caller may ask for one by one.
    pub instead: Vec<String>,
}

fn denied_reason(scope: &str, by: &DeniedBy) -> String {
    let (denied, instead) = (by.denied.as_str(), &by.instead);
    if scope == denied {
        return format!("{denied} is in the grant's deny_scopes");
    }
    let mut out = if denied.ends_with(":*") && !scope.ends_with(":*") {
        format!("the grant's deny_scopes has {denied}, which covers it")
    } else {
        format!("it covers {denied}, which the grant's deny_scopes refuses")
    };
    if instead.is_empty() {
        out.push_str("; no scope it covers is allowed");
    } else {
        out.push_str("; ask for the individual scopes you need instead: ");
        out.push_str(&instead.join(", "));
    }
    out
}

/// The whole policy: the catalog it reasons with and every caller entry.
#[derive(Debug, Clone)]
pub struct Policy {
    catalog: Arc<Catalog>,
    callers: Vec<CallerEntry>,
    /// The exact entries by certificate field and value, so that finding a caller's entry is one
    /// lookup whatever the number of `[[callers]]`, rather than a comparison with each.
    exact: ExactIndex,
    /// The positions of the prefix (`spiffe://…/*`) entries, the only ones still compared.
    prefixes: Vec<usize>,
}

type IndexMap = std::collections::HashMap<Box<str>, usize, foldhash::fast::RandomState>;

/// Exact identity patterns by certificate field, each to its entry's position.
#[derive(Debug, Clone, Default)]
struct ExactIndex {
    spiffe: IndexMap,
    dns: IndexMap,
    cn: IndexMap,
}

impl ExactIndex {
    fn field(&self, source: IdentitySource) -> &IndexMap {
        match source {
            IdentitySource::Spiffe => &self.spiffe,
            IdentitySource::Dns => &self.dns,
            IdentitySource::CommonName => &self.cn,
        }
    }

    fn field_mut(&mut self, source: IdentitySource) -> &mut IndexMap {
        match source {
            IdentitySource::Spiffe => &mut self.spiffe,
            IdentitySource::Dns => &mut self.dns,
            IdentitySource::CommonName => &mut self.cn,
        }
    }

    /// The key of a value from `source`: DNS names compare without regard to ASCII case.
    fn key(source: IdentitySource, value: &str) -> std::borrow::Cow<'_, str> {
        match source {
            IdentitySource::Dns if value.bytes().any(|b| b.is_ascii_uppercase()) => {
                std::borrow::Cow::Owned(value.to_ascii_lowercase())
            }
            IdentitySource::Dns | IdentitySource::Spiffe | IdentitySource::CommonName => {
                std::borrow::Cow::Borrowed(value)
            }
        }
    }

    fn get(&self, source: IdentitySource, value: &str) -> Option<usize> {
        self.field(source).get(&*Self::key(source, value)).copied()
    }
}

impl Policy {
    /// A policy over these entries. Duplicated patterns are the config loader's job to refuse
    /// (of two equal ones, the later applies).
    pub fn new(catalog: Arc<Catalog>, callers: Vec<CallerEntry>) -> Policy {
        let mut exact = ExactIndex::default();
        let mut prefixes = Vec::new();
        for (i, c) in callers.iter().enumerate() {
            match &c.pattern {
                IdentityPattern::Exact { source, value } => {
                    let key = ExactIndex::key(*source, value)
                        .into_owned()
                        .into_boxed_str();
                    exact.field_mut(*source).insert(key, i);
                }
                IdentityPattern::SpiffePrefix(_) => prefixes.push(i),
            }
        }
        Policy {
            catalog,
            callers,
            exact,
            prefixes,
        }
    }

    /// The catalog in force (built-in plus `extra_scopes`).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Every caller entry.
    pub fn callers(&self) -> &[CallerEntry] {
        &self.callers
    }

    /// The entry that applies to an identity taken from `source`: an exact match, else the
    /// longest matching prefix. Only entries naming that certificate field can match.
    pub fn caller(&self, source: IdentitySource, identity: &str) -> Option<&CallerEntry> {
        self.caller_index(source, identity).map(|(_, c)| c)
    }

    /// [`Policy::caller`] with the entry's position in `[[callers]]`, which `Explain` reports.
    pub fn caller_index(
        &self,
        source: IdentitySource,
        identity: &str,
    ) -> Option<(usize, &CallerEntry)> {
        // An exact entry is more specific than any prefix.
        if let Some(i) = self.exact.get(source, identity) {
            return self.callers.get(i).map(|c| (i, c));
        }
        self.prefixes
            .iter()
            .filter_map(|&i| self.callers.get(i).map(|c| (i, c)))
            .filter(|(_, c)| c.pattern.matches(source, identity))
            .max_by_key(|(_, c)| c.pattern.specificity())
    }

    /// Parses and normalizes requested scopes against the catalog, refusing empty, malformed and
    /// unknown ones. Independent of who asks.
    pub fn normalize_scopes(&self, scopes: &[String]) -> Result<Vec<Scope>, Denial> {
        // The common case: every scope is known, so each is a catalog lookup.
        let mut known = Vec::with_capacity(scopes.len());
        for s in scopes {
            match self.catalog.canonical(s.trim()) {
                Some(scope) => known.push(scope.clone()),
                None => return self.normalize_slow(scopes),
            }
        }
        if known.is_empty() {
            return Err(Denial::NoScopes);
        }
        known.sort_unstable();
        known.dedup();
        Ok(known)
    }

    /// Parses every scope, so that errors are reported as before the fast path: empty first,
    /// then the first malformed one, then the first unknown one in sorted order.
    fn normalize_slow(&self, scopes: &[String]) -> Result<Vec<Scope>, Denial> {
        if scopes.iter().all(|s| s.trim().is_empty()) {
            return Err(Denial::NoScopes);
        }
        let normalized = crate::scope::normalize(scopes.iter().filter(|s| !s.trim().is_empty()))
            .map_err(Denial::MalformedScope)?;
        if let Some(unknown) = normalized.iter().find(|s| !self.catalog.is_known(s)) {
            let scope = unknown.to_string();
            // The edit distance costs the product of the lengths: only typos get a hint.
            let hint = (scope.len() <= MAX_SUGGEST_BYTES)
                .then(|| self.catalog.suggest(&scope).map(ToString::to_string))
                .flatten();
            return Err(Denial::UnknownScope { hint, scope });
        }
        Ok(normalized)
    }

    /// Decides a request. Deny by default: allowed only when one grant matches the site and the user
    /// and covers every requested scope without denying any. The caller entry is looked up
    /// first, so an unknown caller is refused before its request is looked at.
    pub fn decide(&self, req: &AccessRequest<'_>) -> Result<Authorization, Denial> {
        let Some(entry) = self.caller(req.source, req.identity) else {
            return Err(Denial::UnknownCaller {
                identity: req.identity.to_owned(),
                field: req.source,
            });
        };
        self.decide_for(entry, req)
    }

    /// [`Policy::decide`] for a caller entry already looked up (with [`Policy::caller`]), so the
    /// broker can refuse unknown callers and bound the request in between.
    pub fn decide_for(
        &self,
        entry: &CallerEntry,
        req: &AccessRequest<'_>,
    ) -> Result<Authorization, Denial> {
        let scopes = self.normalize_scopes(req.scopes)?;
        // One pass, no allocation: the common case is an allowed request.
        let (mut site_matched, mut user_matched, mut allowed) = (false, false, false);
        let (mut unlimited, mut max_jwt_ttl, mut first) = (false, None, 0);
        for (i, g) in entry.grants.iter().enumerate() {
            if !g.matches_site(req.site) {
                continue;
            }
            site_matched = true;
            if !g.matches_user(req.user) {
                continue;
            }
            user_matched = true;
            if scopes.iter().all(|s| g.allows(&self.catalog, s)) {
                if !allowed {
                    first = i;
                }
                allowed = true;
                match g.max_jwt_ttl {
                    None => unlimited = true,
                    Some(t) => max_jwt_ttl = max_jwt_ttl.max(Some(t)),
                }
            }
        }
        if allowed {
            return Ok(Authorization {
                claims: crate::claims::ClaimSet::default(),
                scopes,
                max_jwt_ttl: if unlimited { None } else { max_jwt_ttl },
                grant: first,
            });
        }
        let identity = req.identity.to_owned();
        if !site_matched {
            return Err(Denial::Site {
                identity,
                site: req.site.to_owned(),
            });
        }
        if !user_matched {
            return Err(Denial::User {
                identity,
                site: req.site.to_owned(),
                user: req.user.to_owned(),
            });
        }
        let for_user = entry
            .grants
            .iter()
            .filter(|g| g.matches_site(req.site) && g.matches_user(req.user));
        if let Some(s) = scopes
            .iter()
            .find(|s| !for_user.clone().any(|g| g.allows(&self.catalog, s)))
        {
            // Granted by some grant but refused by its deny_scopes: say so, and for a wildcard
            // list what may be asked for instead.
            if let Some((g, denied)) = for_user.clone().find_map(|g| {
                g.grants_scope(&self.catalog, s)
                    .then(|| g.denied_by(&self.catalog, s).map(|d| (g, d)))
                    .flatten()
            }) {
                let instead = self
                    .catalog
                    .get(s)
                    .map(|e| {
                        e.covers
                            .iter()
                            .filter(|c| g.allows(&self.catalog, c))
                            .map(ToString::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(Denial::ScopeDenied {
                    identity,
                    site: req.site.to_owned(),
                    user: req.user.to_owned(),
                    scope: s.to_string(),
                    by: Box::new(DeniedBy {
                        denied: denied.to_string(),
                        instead,
                    }),
                });
            }
            return Err(Denial::Scope {
                identity,
                site: req.site.to_owned(),
                user: req.user.to_owned(),
                scope: s.to_string(),
            });
        }
        Err(Denial::Split { identity })
    }

    /// Checks claims beyond `scp` for a request [`Policy::decide_for`] allowed: one grant that
    /// matches the site and the user and covers every scope must also allow every claim.
    /// Otherwise the refusal names the first claim the first such grant refuses.
    pub fn check_claims(
        &self,
        entry: &CallerEntry,
        req: &AccessRequest<'_>,
        scopes: &[Scope],
        claims: &crate::claims::ClaimSet,
    ) -> Result<(), Denial> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut first = None;
        for g in entry.grants.iter().filter(|g| {
            g.matches_site(req.site)
                && g.matches_user(req.user)
                && scopes.iter().all(|s| g.allows(&self.catalog, s))
        }) {
            match g.claims.check(claims) {
                Ok(()) => return Ok(()),
                Err(r) => {
                    first.get_or_insert(r);
                }
            }
        }
        let (identity, site, user) = (
            req.identity.to_owned(),
            req.site.to_owned(),
            req.user.to_owned(),
        );
        Err(match first {
            Some(crate::claims::ClaimRefusal::Attribute { name, value }) => {
                Denial::AttributeNotAllowed {
                    identity,
                    site,
                    user,
                    name,
                    value,
                }
            }
            Some(crate::claims::ClaimRefusal::Group { name }) => Denial::GroupNotAllowed {
                identity,
                site,
                user,
                group: name,
            },
            Some(crate::claims::ClaimRefusal::OnDemandAccess) | None => {
                Denial::OnDemandAccessNotAllowed {
                    identity,
                    site,
                    user,
                }
            }
        })
    }

    /// True when the caller may hold credentials for this site, user and (normalized) scopes:
    /// used to check that an invalidation concerns the caller's own key.
    pub fn may_hold(
        &self,
        source: IdentitySource,
        identity: &str,
        site: &str,
        user: &str,
        scopes: &[Scope],
    ) -> bool {
        let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        self.decide(&AccessRequest {
            source,
            identity,
            site,
            user,
            scopes: &scopes,
        })
        .is_ok()
    }
}

#[cfg(test)]
mod tests;
