//! The request and answer types of [`crate::Client`]: what a caller asks for and what it gets,
//! apart from the client that carries them (the cache and the layer use them too).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::error::Error;
use crate::proto;

/// Default of [`CredentialsRequest::min_remaining`] (and [`crate::ClientBuilder::min_remaining`]):
/// 1 minute.
pub const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(60);

/// Claims beyond scopes that a JWT carries for Tableau: user attributes (read by `USERATTRIBUTE`
/// in data policies), groups (dynamic group membership) and on-demand access. The broker allows
/// them per grant (`attributes`, `groups`, `on_demand_access` in `[[callers.grants]]`) and never
/// shares a session across different claims, so neither does this client. Kept normalized
/// (values and groups deduplicated and sorted), so equal claims are equal however they were given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Claims {
    attributes: BTreeMap<String, Vec<String>>,
    groups: Vec<String>,
    on_demand_access: bool,
}

impl Claims {
    fn attribute<I, S>(&mut self, name: impl Into<String>, values: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let v = self.attributes.entry(name.into()).or_default();
        v.extend(values.into_iter().map(Into::into));
        v.sort();
        v.dedup();
    }

    fn groups<I, S>(&mut self, groups: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.groups.extend(groups.into_iter().map(Into::into));
        self.groups.sort();
        self.groups.dedup();
    }

    /// The attributes asked for: name → values.
    pub fn attributes(&self) -> &BTreeMap<String, Vec<String>> {
        &self.attributes
    }

    /// The groups asked for.
    pub fn group_list(&self) -> &[String] {
        &self.groups
    }

    /// Whether on-demand access is asked for.
    pub fn on_demand_access(&self) -> bool {
        self.on_demand_access
    }

    /// The attributes as the broker's request field holds them.
    pub(crate) fn proto_attributes<M>(&self) -> M
    where
        M: FromIterator<(String, proto::AttributeValues)>,
    {
        self.attributes
            .iter()
            .map(|(name, values)| {
                let values = proto::AttributeValues {
                    values: values.clone(),
                };
                (name.clone(), values)
            })
            .collect()
    }
}

/// The claims builders of every request that carries [`Claims`] in a `claims` field, written
/// once for both.
macro_rules! claims_builders {
    () => {
        /// Asks for a user attribute claim with these values (one value is sent as a string,
        /// several as an array); the grant must allow the name and each value.
        pub fn attribute<I, S>(mut self, name: impl Into<String>, values: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.claims.attribute(name, values);
            self
        }

        /// Asks for groups (`https://tableau.com/groups`); the grant's globs must match each.
        pub fn groups<I, S>(mut self, groups: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.claims.groups(groups);
            self
        }

        /// Asks for on-demand access (`https://tableau.com/oda`); the grant must allow it.
        pub fn on_demand_access(mut self, yes: bool) -> Self {
            self.claims.on_demand_access = yes;
            self
        }
    };
}

/// What [`Client::credentials`](crate::Client::credentials) asks for: a site, a user, scopes
/// and any [`Claims`]. It is also the cache key (scopes deduplicated and sorted, so their order
/// does not matter); `min_remaining` and `force_refresh` only say how to use the cache.
///
/// ```
/// use tableau_token_broker_client::CredentialsRequest;
///
/// let req = CredentialsRequest::new("finance", "svc-renderer")
///     .scopes(["tableau:views:download", "tableau:content:read"]);
/// assert_eq!(req.scope_list(), ["tableau:content:read", "tableau:views:download"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialsRequest {
    pub(crate) site: String,
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) claims: Claims,
    pub(crate) min_remaining: Option<Duration>,
    pub(crate) force_refresh: bool,
}

impl CredentialsRequest {
    /// A request for `user` on `site` (a site name from the broker's configuration, never a URL),
    /// with no scopes yet: add at least one with [`Self::scopes`] or [`Self::scope`].
    pub fn new(site: impl Into<String>, user: impl Into<String>) -> Self {
        CredentialsRequest {
            site: site.into(),
            user: user.into(),
            scopes: Vec::new(),
            claims: Claims::default(),
            min_remaining: None,
            force_refresh: false,
        }
    }

    claims_builders!();

    /// The claims asked for beyond scopes.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Adds scopes, such as `"tableau:content:read"`.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self.scopes.sort();
        self.scopes.dedup();
        self
    }

    /// Adds one scope.
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.scopes([scope.into()])
    }

    /// Never returns a token with less life left than this: callers wait for a new one instead
    /// (default: the client's, [`DEFAULT_MIN_REMAINING`] unless set). Also sent to the broker,
    /// which must hand out less than a site's token life: ask for less.
    pub fn min_remaining(mut self, d: Duration) -> Self {
        self.min_remaining = Some(d);
        self
    }

    /// Skips the caches, this client's and the broker's: the broker signs in again and both keep
    /// the new token. For a token known to be bad without a 401 to show for it; otherwise use
    /// [`Client::invalidate`](crate::Client::invalidate).
    pub fn force_refresh(mut self, yes: bool) -> Self {
        self.force_refresh = yes;
        self
    }

    /// The site name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The username.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The scopes, deduplicated and sorted.
    pub fn scope_list(&self) -> &[String] {
        &self.scopes
    }
}

/// A usable Tableau session, as the broker handed it out. `Debug` never shows the token.
#[derive(Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// The credentials token: send it as the `X-Tableau-Auth` header. Never log it.
    pub token: SecretString,
    /// Site LUID for REST URIs (`/api/{api_version}/sites/{site_luid}/...`).
    pub site_luid: String,
    /// Content URL of the site (`""` is the default site).
    pub site_content_url: String,
    /// LUID of the signed-in user.
    pub user_luid: String,
    /// Tableau server URL to send REST calls to.
    pub server_url: String,
    /// REST API version the broker signed in with.
    pub api_version: String,
    /// When the broker stops handing out this token (before Tableau ends the session).
    pub expires_at: SystemTime,
    /// Normalized scopes (deduplicated, sorted) the token carries.
    pub scopes: Vec<String>,
    /// True when the broker answered from its own cache rather than a fresh sign-in.
    pub from_broker_cache: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &"[redacted]")
            .field("site_luid", &self.site_luid)
            .field("site_content_url", &self.site_content_url)
            .field("user_luid", &self.user_luid)
            .field("server_url", &self.server_url)
            .field("api_version", &self.api_version)
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("from_broker_cache", &self.from_broker_cache)
            .finish()
    }
}

impl Credentials {
    /// The REST base URL of the site: `{server_url}/api/{api_version}/sites/{site_luid}`.
    pub fn site_url(&self) -> String {
        format!(
            "{}/api/{}/sites/{}",
            self.server_url.trim_end_matches('/'),
            self.api_version,
            self.site_luid
        )
    }

    /// The life left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }

    #[cfg(test)]
    pub(crate) fn for_tests(token: &str, expires_at: SystemTime) -> Self {
        Credentials {
            token: SecretString::from(token.to_owned()),
            site_luid: "site-luid".into(),
            site_content_url: "finance".into(),
            user_luid: "user-luid".into(),
            server_url: "https://tableau.example.com".into(),
            api_version: "3.22".into(),
            expires_at,
            scopes: vec!["tableau:content:read".into()],
            from_broker_cache: false,
        }
    }
}

/// The broker's `GetCredentials` answer as [`Credentials`], for callers that hold a raw stub's
/// answer ([`proto`]) and for tests of code that takes `Credentials`. Fails with
/// [`Error::Malformed`] when `expires_at` is missing or out of range.
impl TryFrom<proto::GetCredentialsResponse> for Credentials {
    type Error = Error;

    fn try_from(r: proto::GetCredentialsResponse) -> Result<Self, Error> {
        let expires_at = r
            .expires_at
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or(Error::Malformed("expires_at"))?;
        Ok(Credentials {
            token: SecretString::from(r.token),
            site_luid: r.site_luid,
            site_content_url: r.site_content_url,
            user_luid: r.user_luid,
            server_url: r.server_url,
            api_version: r.api_version,
            expires_at,
            scopes: r.scopes,
            from_broker_cache: r.from_cache,
        })
    }
}

/// What [`Client::mint_jwt`](crate::Client::mint_jwt) asks for: a connected-app JWT for `user`
/// on `site`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintJwtRequest {
    pub(crate) site: String,
    pub(crate) user: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) claims: Claims,
}

impl MintJwtRequest {
    /// A request for a JWT whose `sub` is `user`, for `site`; add scopes with [`Self::scopes`].
    pub fn new(site: impl Into<String>, user: impl Into<String>) -> Self {
        MintJwtRequest {
            site: site.into(),
            user: user.into(),
            scopes: Vec::new(),
            ttl: None,
            claims: Claims::default(),
        }
    }

    claims_builders!();

    /// Adds scopes for the `scp` claim.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Asks for a lifetime; the broker caps it (grant, site, Tableau's 10 minutes). Unset: the
    /// site's `jwt_ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A connected-app JWT. `Debug` never shows it.
#[derive(Clone)]
#[non_exhaustive]
pub struct MintedJwt {
    /// The compact JWT. Secret until it expires: never log it.
    pub jwt: SecretString,
    /// Its unique ID (`jti`), safe to log.
    pub jti: String,
    /// Its `exp` claim.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("jwt", &"[redacted]")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What [`Client::invalidate`](crate::Client::invalidate) did at the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invalidation {
    /// The broker held the token and dropped it from its cache.
    pub evicted: bool,
    /// The broker also ended the session at Tableau.
    pub signed_out: bool,
}
