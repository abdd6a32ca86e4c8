//! The double's configuration: sites, users, connected apps, session lifetime, clock skew, TLS and
//! faults. Loaded from TOML (see `examples/fake-tableau.toml`) or built in code by tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::FakeTableauError;
use tableau_common::catalog::Catalog;

/// Fault endpoint name for `POST /api/{version}/auth/signin`.
pub const ENDPOINT_SIGNIN: &str = "signin";
/// Fault endpoint name for `POST /api/{version}/auth/signout`.
pub const ENDPOINT_SIGNOUT: &str = "signout";
/// Fault endpoint name for every REST method (a method's own name, such as `Query Projects`, wins).
pub const ENDPOINT_REST: &str = "rest";
/// Fault endpoint name for `GET /api/{version}/serverInfo`.
pub const ENDPOINT_SERVER_INFO: &str = "serverinfo";

/// Everything the double needs to act like one Tableau Server. No `Default`: a double without
/// sites, users and apps would accept no sign-in, so tests say what they want; [`Self::new`] fills
/// in the rest with Tableau-like defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeTableauConfig {
    /// Address to bind; `127.0.0.1:0` (any free port) when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// How long a credentials token lives after sign-in (Tableau Server's default is 240 minutes).
    #[serde(default = "default_session_ttl", with = "dur")]
    pub session_ttl: Duration,
    /// Clock skew allowed when checking `exp`, `iat` and `nbf`.
    #[serde(default = "default_clock_skew", with = "dur")]
    pub clock_skew: Duration,
    /// Serve HTTPS instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The sites users can sign in to.
    pub sites: Vec<Site>,
    /// Connected apps (direct trust) whose JWTs the double accepts.
    #[serde(default)]
    pub connected_apps: Vec<ConnectedApp>,
    /// Faults by endpoint name (`signin`, `signout`, `serverinfo`, `rest`, or a REST method name).
    #[serde(default)]
    pub faults: BTreeMap<String, Faults>,
    /// Connected apps with OAuth 2.0 trust (EAS): issuers whose JWTs the double verifies with
    /// the keys it finds through their metadata.
    #[serde(default)]
    pub eas_apps: Vec<EasApp>,
    /// Unified access token configurations (Tableau Cloud Manager's).
    #[serde(default)]
    pub uat_configs: Vec<UatConfig>,
    /// CA bundle (PEM) the double trusts when it fetches issuer metadata and JWKS over HTTPS.
    #[serde(default)]
    pub issuer_ca_bundle: Option<PathBuf>,
}

/// A connected app with OAuth 2.0 trust: the issuer URL registered for it. Its JWTs' `aud` must be
/// `tableau:<site LUID>` (Tableau Cloud) or `tableau` (Tableau Server's server-wide EAS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EasApp {
    /// The `iss` its JWTs carry; its metadata is at `{issuer}/.well-known/...`.
    pub issuer: String,
}

impl EasApp {
    /// An EAS app trusting `issuer`.
    pub fn new(issuer: impl Into<String>) -> Self {
        EasApp {
            issuer: issuer.into(),
        }
    }
}

/// A unified access token configuration: issuer, tenant, username claim and allowed scopes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UatConfig {
    /// The `iss` its JWTs carry (keys found through its metadata).
    pub issuer: String,
    /// The `https://tableau.com/tenantId` its JWTs carry.
    pub tenant_id: String,
    /// The claim holding the username.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// Explicit scopes: when not empty, a wildcard scope in a JWT is refused.
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_username_claim() -> String {
    "email".to_owned()
}

impl UatConfig {
    /// A configuration with the default `email` username claim and no scope list.
    pub fn new(issuer: impl Into<String>, tenant_id: impl Into<String>) -> Self {
        UatConfig {
            issuer: issuer.into(),
            tenant_id: tenant_id.into(),
            username_claim: default_username_claim(),
            scopes: Vec::new(),
        }
    }
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(240 * 60)
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}

/// A Tableau site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Display name.
    pub name: String,
    /// The content URL clients sign in with (`""` is the default site).
    pub content_url: String,
    /// The site LUID returned at sign-in and expected in REST URIs.
    pub luid: String,
    /// Users of this site; a JWT's `sub` must name one of them (case-sensitive).
    #[serde(default)]
    pub users: Vec<SiteUser>,
}

impl Site {
    /// A site with the given users.
    pub fn new(
        name: impl Into<String>,
        content_url: impl Into<String>,
        luid: impl Into<String>,
        users: Vec<SiteUser>,
    ) -> Self {
        Site {
            name: name.into(),
            content_url: content_url.into(),
            luid: luid.into(),
            users,
        }
    }
}

/// A user of a site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteUser {
    /// The user name a JWT's `sub` must match exactly.
    pub name: String,
    /// The user LUID returned at sign-in.
    pub luid: String,
}

impl SiteUser {
    /// A user.
    pub fn new(name: impl Into<String>, luid: impl Into<String>) -> Self {
        SiteUser {
            name: name.into(),
            luid: luid.into(),
        }
    }
}

/// A connected app with direct trust: a client ID and up to two secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectedApp {
    /// The client ID, which JWTs carry as `iss` (header and claim).
    pub client_id: String,
    /// A disabled app's JWTs are refused with sub-code 10090.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// One or two secrets; a JWT's `kid` names the one that signed it.
    pub secrets: Vec<AppSecret>,
}

fn yes() -> bool {
    true
}

impl ConnectedApp {
    /// An enabled app.
    pub fn new(client_id: impl Into<String>, secrets: Vec<AppSecret>) -> Self {
        ConnectedApp {
            client_id: client_id.into(),
            enabled: true,
            secrets,
        }
    }
}

/// One secret of a connected app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSecret {
    /// The secret ID, which JWTs carry as header `kid`.
    pub secret_id: String,
    /// The secret value, the HS256 key.
    pub value: SecretString,
}

impl AppSecret {
    /// A secret.
    pub fn new(secret_id: impl Into<String>, value: impl Into<String>) -> Self {
        AppSecret {
            secret_id: secret_id.into(),
            value: SecretString::from(value.into()),
        }
    }
}

/// HTTPS settings: a certificate from files, or a self-signed one made at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Generate a self-signed certificate with rcgen (for tests and demos).
    #[serde(default)]
    pub self_signed: bool,
    /// Certificate chain, PEM (with `key`, instead of `self_signed`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Private key, PEM.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Names in the self-signed certificate.
    #[serde(default = "default_sans")]
    pub subject_alt_names: Vec<String>,
    /// Where to write the self-signed certificate (PEM) so clients can trust it.
    #[serde(default)]
    pub write_cert: Option<PathBuf>,
}

fn default_sans() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

impl TlsConfig {
    /// HTTPS with a fresh self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> Self {
        TlsConfig {
            self_signed: true,
            cert: None,
            key: None,
            subject_alt_names: default_sans(),
            write_cert: None,
        }
    }
}

/// Faults injected on one endpoint. Shares are probabilities in `[0, 1]`, rolled independently on
/// each request in this order: close, 5xx, 429; then, on the real answer, truncate, malformed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added before anything else.
    pub latency: Option<Latency>,
    /// Share of requests answered 500 or 503 (picked from `error_statuses`).
    pub error_share: f64,
    /// Statuses for `error_share`; empty means 500 and 503.
    pub error_statuses: Vec<u16>,
    /// Share of requests answered 429 (code 429000) with `Retry-After`.
    pub throttle_share: f64,
    /// The `Retry-After` value, whole seconds.
    #[serde(with = "dur")]
    pub retry_after: Duration,
    /// Share of requests whose connection is closed without an answer.
    pub close_share: f64,
    /// Share of answers cut in the middle of the body (the connection then closes).
    pub truncate_share: f64,
    /// Share of answers whose body is complete but not valid XML or JSON.
    pub malformed_share: f64,
    /// Send bodies in small chunks with a pause between them.
    pub slow_body: Option<SlowBody>,
    /// Share of sign-ins refused (401001, no sub-code) with an error summary and detail that quote
    /// the JWT back, as a misbehaving server or proxy might: the broker must not pass it on.
    pub echo_jwt_share: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: None,
            error_share: 0.0,
            error_statuses: Vec::new(),
            throttle_share: 0.0,
            retry_after: Duration::from_secs(1),
            close_share: 0.0,
            truncate_share: 0.0,
            malformed_share: 0.0,
            slow_body: None,
            echo_jwt_share: 0.0,
        }
    }
}

impl Faults {
    /// Checks shares and statuses; the message names the endpoint and the bad field.
    pub fn validate(&self, endpoint: &str) -> Result<(), FakeTableauError> {
        let shares = [
            ("error_share", self.error_share),
            ("throttle_share", self.throttle_share),
            ("close_share", self.close_share),
            ("truncate_share", self.truncate_share),
            ("malformed_share", self.malformed_share),
            ("echo_jwt_share", self.echo_jwt_share),
        ];
        for (name, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(FakeTableauError::InvalidConfig {
                    reason: format!(
                        "faults for {endpoint:?}: {name} is {share}, but it must be between 0 and 1"
                    ),
                });
            }
        }
        if let Some(bad) = self
            .error_statuses
            .iter()
            .find(|s| !(500..=599).contains(*s))
        {
            return Err(FakeTableauError::InvalidConfig {
                reason: format!(
                    "faults for {endpoint:?}: error_statuses has {bad}, but only 5xx statuses are allowed"
                ),
            });
        }
        if let Some(Latency::Uniform { min, max }) = &self.latency
            && min > max
        {
            return Err(FakeTableauError::InvalidConfig {
                reason: format!("faults for {endpoint:?}: latency uniform min is above max"),
            });
        }
        if let Some(slow) = &self.slow_body
            && slow.chunk_bytes == 0
        {
            return Err(FakeTableauError::InvalidConfig {
                reason: format!(
                    "faults for {endpoint:?}: slow_body.chunk_bytes must be at least 1"
                ),
            });
        }
        Ok(())
    }
}

/// Added latency: fixed, or drawn from a distribution on each request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    /// Always this long, e.g. `{ fixed = "200ms" }`.
    Fixed(#[serde(with = "dur")] Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Shortest delay.
        #[serde(with = "dur")]
        min: Duration,
        /// Longest delay.
        #[serde(with = "dur")]
        max: Duration,
    },
    /// Exponential with this mean (a long tail, like real servers), capped at `max` (default 10 x mean).
    Exponential {
        /// Mean delay.
        #[serde(with = "dur")]
        mean: Duration,
        /// Cap.
        #[serde(default, with = "opt_dur", skip_serializing_if = "Option::is_none")]
        max: Option<Duration>,
    },
}

impl Latency {
    /// One delay, given a uniform random number in `[0, 1)`.
    pub fn sample(&self, u: f64) -> Duration {
        match self {
            Latency::Fixed(d) => *d,
            Latency::Uniform { min, max } => *min + (*max - *min).mul_f64(u.clamp(0.0, 1.0)),
            Latency::Exponential { mean, max } => {
                let cap = max.unwrap_or(*mean * 10);
                let x = -(1.0 - u.clamp(0.0, 0.999_999)).ln();
                mean.mul_f64(x).min(cap)
            }
        }
    }
}

/// A slow body: `chunk_bytes` at a time, `delay` between chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowBody {
    /// Bytes per chunk.
    #[serde(default = "default_chunk")]
    pub chunk_bytes: usize,
    /// Pause before each chunk after the first.
    #[serde(with = "dur")]
    pub delay: Duration,
}

fn default_chunk() -> usize {
    16
}

impl FakeTableauConfig {
    /// A configuration with these sites and apps and Tableau-like defaults: 240-minute sessions,
    /// 30 s clock skew, plain HTTP on `127.0.0.1:0`, no faults.
    pub fn new(sites: Vec<Site>, connected_apps: Vec<ConnectedApp>) -> Self {
        FakeTableauConfig {
            listen: None,
            session_ttl: default_session_ttl(),
            clock_skew: default_clock_skew(),
            tls: None,
            sites,
            connected_apps,
            faults: BTreeMap::new(),
            eas_apps: Vec::new(),
            uat_configs: Vec::new(),
            issuer_ca_bundle: None,
        }
    }

    /// Parses and checks a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, FakeTableauError> {
        Self::parse(text, "<string>")
    }

    /// Reads, parses and checks a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, FakeTableauError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| FakeTableauError::ReadConfig {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, FakeTableauError> {
        let config: FakeTableauConfig =
            toml::from_str(text).map_err(|source| FakeTableauError::ParseConfig {
                origin: origin.to_owned(),
                source: Box::new(source),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: unique sites and apps, one or two secrets, known fault
    /// endpoints, shares in range, a complete TLS setting.
    pub fn validate(&self) -> Result<(), FakeTableauError> {
        let bad = |reason: String| Err(FakeTableauError::InvalidConfig { reason });
        if self.sites.is_empty() {
            return bad("no sites: add at least one [[sites]] entry".to_owned());
        }
        let mut urls = BTreeSet::new();
        for site in &self.sites {
            if !urls.insert(site.content_url.as_str()) {
                return bad(format!(
                    "two sites have content_url {:?}; content URLs must be unique",
                    site.content_url
                ));
            }
            let mut names = BTreeSet::new();
            for user in &site.users {
                if !names.insert(user.name.as_str()) {
                    return bad(format!(
                        "site {:?} lists user {:?} twice",
                        site.content_url, user.name
                    ));
                }
            }
        }
        let mut ids = BTreeSet::new();
        for app in &self.connected_apps {
            if !ids.insert(app.client_id.as_str()) {
                return bad(format!(
                    "two connected apps have client_id {:?}",
                    app.client_id
                ));
            }
            if app.secrets.is_empty() || app.secrets.len() > 2 {
                return bad(format!(
                    "connected app {:?} has {} secrets; Tableau allows one or two",
                    app.client_id,
                    app.secrets.len()
                ));
            }
            if app.secrets.len() == 2 && app.secrets[0].secret_id == app.secrets[1].secret_id {
                return bad(format!(
                    "connected app {:?} has two secrets with the same secret_id",
                    app.client_id
                ));
            }
        }
        for (endpoint, faults) in &self.faults {
            check_endpoint(endpoint)?;
            faults.validate(endpoint)?;
        }
        if let Some(tls) = &self.tls {
            match (tls.self_signed, &tls.cert, &tls.key) {
                (true, None, None) | (false, Some(_), Some(_)) => {}
                _ => {
                    return bad(
                        "tls: set either self_signed = true, or both cert and key (PEM files)"
                            .to_owned(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Checks a fault endpoint name: `signin`, `signout`, `serverinfo`, `rest`, or a catalogued REST
/// method name.
pub fn check_endpoint(endpoint: &str) -> Result<(), FakeTableauError> {
    let fixed = [
        ENDPOINT_SIGNIN,
        ENDPOINT_SIGNOUT,
        ENDPOINT_REST,
        ENDPOINT_SERVER_INFO,
    ];
    if fixed.contains(&endpoint)
        || Catalog::builtin()
            .methods()
            .iter()
            .any(|m| m.name == endpoint)
    {
        Ok(())
    } else {
        Err(FakeTableauError::InvalidConfig {
            reason: format!(
                "unknown fault endpoint {endpoint:?}: use signin, signout, serverinfo, rest, or a REST method name such as \"Query Projects\""
            ),
        })
    }
}

/// Durations as humantime strings (`"250ms"`, `"4h"`).
pub(crate) mod dur {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"4h\""
            ))
        })
    }
}

/// Optional durations as humantime strings.
pub(crate) mod opt_dur {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::dur::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::dur::deserialize(d).map(Some)
    }
}
