//! Configuration in three stages: the file as written ([`raw`]), a builder that validates every
//! field and collects every problem with its place in the file ([`build`]), and the validated
//! [`Config`] the service runs on. A config that fails validation is never half-applied.

pub mod admins;
pub mod bounds;
mod key_files;
pub mod raw;
mod shared_cache;
mod trust;
// ops: check-config --strict
pub mod strict;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::audit::{AuditConfig, AuditMode, AuditTarget};
use crate::catalog::Catalog;
use crate::identity::{IdentitySource, IdentitySources};
use crate::policy::{CallerEntry, Grant, IdentityPattern, Policy, UserPattern};
use crate::scope::Scope;
use raw::{RawAppSecret, RawConfig, RawConnectedApp, RawGrant, RawSite};
pub use trust::{DEFAULT_USERNAME_CLAIM, EasTrust, MIN_UAT_API_VERSION, Trust, UatTrust};

/// The only configuration format version this build understands.
pub const CONFIG_VERSION: u32 = 1;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
/// Default REST API version (connected apps need 3.17 or later).
pub const DEFAULT_API_VERSION: &str = "3.22";
/// Oldest REST API version with connected-app sign-in.
pub const MIN_API_VERSION: (u32, u32) = (3, 17);
/// Default Tableau session lifetime (Tableau Server's default idle limit).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(240 * 60);
/// Default JWT lifetime.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);
/// Tableau refuses JWTs that live longer than this.
pub const MAX_JWT_TTL: Duration = Duration::from_secs(10 * 60);
/// Default bound on cached sessions.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 10_000;
/// Longest `[cache] refresh_ahead` accepted: a day is longer than any Tableau session.
pub const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(24 * 3600);
/// Default time before Tableau's session end at which the broker stops handing a token out.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_secs(5 * 60);
pub use crate::tableau::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
/// Default drain period after SIGTERM.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(20);
/// Default audit trail: standard output, apart from the diagnostic log on stderr.
pub const DEFAULT_AUDIT_PATH: &str = "-";
/// Default audit mode: nothing secret leaves before its record is written.
pub const DEFAULT_AUDIT_MODE: AuditMode = AuditMode::FailClosed;
/// Default for `[audit] sync`: no fdatasync per batch (see the README's "Audit" section).
pub const DEFAULT_AUDIT_SYNC: bool = false;
/// Shortest connected-app secret accepted, in bytes. Tableau generates much longer ones; a short
/// value is a placeholder or a truncated copy, and an HS256 key that short can be guessed.
pub const MIN_SECRET_BYTES: usize = 32;
/// Default cap on client connections (handshaking or established). Kept well under common file
/// descriptor limits; at start the broker lowers it further if the process may open fewer files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a connection may stay without a call in progress before it is closed: frees the
/// descriptors of clients that connect and then send nothing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default interval between HTTP/2 keepalive PINGs: finds clients that vanished without a FIN.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default time a keepalive PING may go unanswered.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default maximum connection age: clients rebalance after a scale-up, and no connection
/// outlives by much the client certificate that opened it.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
/// Default cap on calls served at once on one connection (more wait their turn).
pub const DEFAULT_CONCURRENCY_PER_CONNECTION: usize = 256;
/// Default sign-ins per second one caller entry may cause.
pub const DEFAULT_SIGN_INS_PER_SECOND: f64 = 10.0;
/// Default sign-in burst one caller entry may cause.
pub const DEFAULT_SIGN_IN_BURST: u32 = 20;
/// Default cap on sign-ins in flight to one site.
pub const DEFAULT_MAX_CONCURRENT_SIGN_INS: usize = 16;
/// Default time a sign-in failure that retrying cannot fix (unknown user, misconfigured app) is
/// answered from memory instead of asking Tableau again.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default time a replaced or evicted session stays valid at Tableau: other callers may hold it.
pub const DEFAULT_REPLACED_SESSION_GRACE: Duration = Duration::from_secs(5 * 60);
/// Default cap on sign-outs waiting for their grace period.
pub const DEFAULT_MAX_PENDING_SIGN_OUTS: usize = 10_000;
/// Default interval of the periodic re-read of watched files, the fallback for filesystems that
/// send no change events.
pub const DEFAULT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Default wait after a file event for the rest of the burst (the kubelet writes several files
/// and then swaps one symlink).
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);
/// Tableau keeps at most two secrets per connected app.
pub const MAX_APP_SECRETS: usize = 2;

/// Why a configuration could not be loaded. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a field of the wrong type or an unknown field.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// The file parsed but some values are wrong; every problem is listed.
    #[error("{path}: {} problem(s):\n{}", issues.len(), issues.iter().map(|i| format!("  - {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, each with its place in the file.
        issues: Vec<Issue>,
    },
}

/// One problem, located: `callers[2].grants[0].scopes[1]: unknown scope ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted path into the file.
    pub at: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

pub use tableau_common::format::Format;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable.
    Text,
}

/// Listener and TLS settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA bundle client certificates must chain to.
    pub client_ca: PathBuf,
    /// Which certificate fields may name the caller, in order.
    pub identity_sources: IdentitySources,
    /// Drain period after SIGTERM.
    pub grace_period: Duration,
    /// Connection limits and timeouts.
    pub connections: ConnectionLimits,
}

/// What keeps idle, slow or numerous connections from starving callers (`[server]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once, handshaking or established.
    pub max_connections: usize,
    /// A connection with no call in progress for this long is closed.
    pub idle_timeout: Duration,
    /// Interval between HTTP/2 keepalive PINGs.
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Age after which a connection is sent GOAWAY (then closed after the grace period).
    pub max_connection_age: Duration,
    /// Most calls served at once on one connection.
    pub concurrency_limit_per_connection: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
            concurrency_limit_per_connection: DEFAULT_CONCURRENCY_PER_CONNECTION,
        }
    }
}

/// A token bucket's shape: how fast sign-ins are allowed on average, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignInRate {
    /// Refill rate, sign-ins per second.
    pub per_second: f64,
    /// Bucket size: sign-ins allowed back to back.
    pub burst: u32,
}

/// Limits that protect Tableau from sign-in floods (`[limits]` and per-caller overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// The rate every caller entry gets unless it sets its own.
    pub default_rate: SignInRate,
    /// Per caller entry (by its identity pattern as written), where it sets its own.
    pub caller_rates: BTreeMap<String, SignInRate>,
    /// Most sign-ins in flight to one site.
    pub max_concurrent_sign_ins: usize,
    /// How long an unknown-user or misconfigured-app failure is remembered per key (0: never).
    pub negative_cache_ttl: Duration,
}

impl LimitsConfig {
    /// The rate that applies to a caller entry (its identity pattern as written).
    pub fn rate_for(&self, caller: &str) -> SignInRate {
        self.caller_rates
            .get(caller)
            .copied()
            .unwrap_or(self.default_rate)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_rate: SignInRate {
                per_second: DEFAULT_SIGN_INS_PER_SECOND,
                burst: DEFAULT_SIGN_IN_BURST,
            },
            caller_rates: BTreeMap::new(),
            max_concurrent_sign_ins: DEFAULT_MAX_CONCURRENT_SIGN_INS,
            negative_cache_ttl: DEFAULT_NEGATIVE_CACHE_TTL,
        }
    }
}

/// Token cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Most sessions held at once.
    pub max_entries: u64,
    /// How long before Tableau's end of session the broker stops handing a token out.
    pub safety_margin: Duration,
    /// Sign sessions out at Tableau when they leave the cache.
    pub sign_out_on_evict: bool,
    /// How long a replaced or evicted session stays valid before it is signed out (or until its
    /// `expires_at`, if sooner): another caller may still hold it.
    pub replaced_session_grace: Duration,
    /// Most sign-outs waiting at once; when full, the oldest runs early.
    pub max_pending_sign_outs: usize,
    /// `[cache.shared]`: Redis shared by every replica; `None` keeps each replica's cache its own.
    pub shared: Option<crate::shared_cache::SharedCacheConfig>,
    /// How long before a token's usable end a hit starts one background sign-in for its key,
    /// so callers on a hot key never wait for a sign-in at expiry. `None`: a tenth of the site's
    /// usable life ([`CacheConfig::refresh_ahead_for`]); zero: off.
    pub refresh_ahead: Option<Duration>,
}

impl CacheConfig {
    /// The refresh-ahead window for a site whose tokens are handed out for `usable`: the
    /// configured one (never more than half the usable life, so a refreshed token is not
    /// refreshed again at once), or a tenth of it.
    pub fn refresh_ahead_for(&self, usable: Duration) -> Duration {
        match self.refresh_ahead {
            Some(d) => d.min(usable / 2),
            None => usable / 10,
        }
    }
}

/// HTTP client settings towards Tableau.
#[derive(Debug, Clone)]
pub struct TableauHttpConfig {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
}

/// The admin listener: plain HTTP for probes (`/livez`, `/readyz`) and `/metrics`. It is not
/// behind mTLS, so it serves nothing that changes state and no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
}

/// Logging and tracing settings.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Log line format.
    pub log_format: LogFormat,
    /// Log filter (`RUST_LOG` syntax).
    pub log_filter: String,
    /// OTLP/gRPC trace endpoint; when unset, the standard `OTEL_EXPORTER_OTLP_*` variables
    /// decide whether and where traces go.
    pub otlp_endpoint: Option<String>,
    /// The traces' `service.name`; when unset, `OTEL_SERVICE_NAME` (or `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`), else [`DEFAULT_SERVICE_NAME`].
    pub service_name: Option<String>,
}

/// `service.name` of the broker's traces unless the configuration or the environment names one.
pub const DEFAULT_SERVICE_NAME: &str = "tableau-token-broker";
/// How the running broker notices changed files (`[reload]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Every watched file is re-read this often even when no file event arrived.
    pub check_interval: Duration,
    /// After a file event, wait this long for the rest of the burst before reloading.
    pub debounce: Duration,
}

/// A connected app's second configured secret, tried once when Tableau refuses the active one
/// (secret rotation). Never printed.
#[derive(Clone)]
pub struct StandbySecret {
    /// Secret ID: the JWT header's `kid` when this secret signs.
    pub secret_id: String,
    /// Secret value.
    pub secret: SecretString,
    /// Where the secret came from, for summaries.
    pub secret_source: String,
}

impl fmt::Debug for StandbySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandbySecret")
            .field("secret_id", &self.secret_id)
            .field("secret", &"[REDACTED]")
            .field("secret_source", &self.secret_source)
            .finish()
    }
}

/// A connected app's direct-trust credentials. The secret is zeroized on drop and never printed.
#[derive(Clone)]
pub struct ConnectedApp {
    /// Client ID: the JWT's `iss` (claim and header).
    pub client_id: String,
    /// Secret ID: the JWT header's `kid`.
    pub secret_id: String,
    /// Secret value: the HS256 key.
    pub secret: SecretString,
    /// Where the secret came from, for summaries ("file /x", "env X", "inline").
    pub secret_source: String,
}

impl fmt::Debug for ConnectedApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectedApp")
            .field("client_id", &self.client_id)
            .field("secret_id", &self.secret_id)
            .field("secret", &"[REDACTED]")
            .field("secret_source", &self.secret_source)
            .finish()
    }
}

/// A Tableau site the broker may sign in to.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The name callers use.
    pub name: String,
    /// Tableau base URL, without a trailing slash.
    pub server_url: String,
    /// REST API version.
    pub api_version: String,
    /// Site content URL ("" is the default site).
    pub content_url: String,
    /// Tableau's session lifetime for this server.
    pub session_ttl: Duration,
    /// Default JWT lifetime (at most [`MAX_JWT_TTL`]).
    pub jwt_ttl: Duration,
    /// Sign-in body format.
    pub format: Format,
    /// Extra CA bundle for a private Tableau certificate.
    pub ca_bundle: Option<PathBuf>,
    /// How Tableau trusts the broker for this site (`trust`): direct, EAS or UAT.
    pub trust: Trust,
    /// Connected-app credentials, signing with the active secret; `Some` exactly when `trust`
    /// is [`Trust::Direct`].
    pub app: Option<ConnectedApp>,
    /// The app's other configured secret, if two are configured (rotation).
    pub standby_secret: Option<StandbySecret>,
    /// The secret files this site reads, so the running broker can watch them.
    pub secret_files: Vec<PathBuf>,
}

impl SiteConfig {
    /// The connected app signing with the standby secret instead of the active one, for the one
    /// retry after Tableau refuses the active secret.
    pub fn app_with_standby(&self) -> Option<ConnectedApp> {
        let app = self.app.as_ref()?;
        self.standby_secret.as_ref().map(|s| ConnectedApp {
            client_id: app.client_id.clone(),
            secret_id: s.secret_id.clone(),
            secret: s.secret.clone(),
            secret_source: s.secret_source.clone(),
        })
    }
}

/// The validated configuration the broker runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// True when the file says it is for development (inline secrets allowed).
    pub development: bool,
    /// Things that do not stop the file from loading but that an operator should fix (a
    /// world-readable secret file); `check-config` prints them and `serve` logs them.
    pub warnings: Vec<Issue>,
    /// Listener and TLS; `None` for offline uses (`jwt`, `check-config` of a partial file).
    pub server: Option<ServerConfig>,
    /// Token cache.
    pub cache: CacheConfig,
    /// Sign-in limits.
    pub limits: LimitsConfig,
    /// HTTP client towards Tableau.
    pub tableau: TableauHttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The admin listener (probes, metrics); `None` when the file has no `[admin]`.
    pub admin: Option<AdminConfig>,
    /// The audit trail. Read at start only: changing it needs a restart.
    pub audit: AuditConfig,
    /// How changed files are noticed.
    pub reload: ReloadConfig,
    /// Sites by name.
    pub sites: BTreeMap<String, Arc<SiteConfig>>,
    /// `[issuer]`: the broker's keys for EAS and UAT sites; `None` when absent.
    pub issuer: Option<Arc<crate::issuer::Issuer>>,
    /// Caller policy and the catalog it uses.
    pub policy: Arc<Policy>,
    /// `[[admins]]`: who may call the admin API, in which roles (issue 27).
    pub admins: Arc<crate::admins::Admins>,
    /// `[policy] candidate`, resolved: the file of the candidate policy, when one is named.
    pub candidate_path: Option<PathBuf>,
    /// The candidate policy evaluated in shadow, once loaded (by [`Config::from_toml`]).
    pub candidate: Option<Arc<crate::admins::Candidate>>,
}

impl Config {
    /// Reads, parses and validates a file. Secret files and variables are read here too.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` is used in messages and to resolve relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: redact_toml_error(&e.to_string()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = build(raw, base).map_err(|issues| ConfigError::Invalid {
            path: path.to_owned(),
            issues,
        })?;
        admins::attach_candidate(&mut config, text, path)?;
        Ok(config)
    }

    /// Logs every warning (at WARN); `serve` calls it once logging is up, and on each reload.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(at = %w.at, "{}", w.message);
        }
    }

    /// Every file this configuration reads (besides the configuration file itself): the server
    /// certificate, key and client CA, each secret file and each Tableau CA bundle. The running
    /// broker watches them and reloads when one changes.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(s) = &self.server {
            out.extend([s.cert.clone(), s.key.clone(), s.client_ca.clone()]);
        }
        for site in self.sites.values() {
            out.extend(site.secret_files.iter().cloned());
            out.extend(site.ca_bundle.iter().cloned());
        }
        if let Some(i) = &self.issuer {
            out.extend(i.watched_files());
        }
        out.extend(self.candidate_path.iter().cloned());
        out.sort();
        out.dedup();
        out
    }

    /// A site by name.
    pub fn site(&self, name: &str) -> Option<&Arc<SiteConfig>> {
        self.sites.get(name)
    }

    /// A human summary without secrets, for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let p = &self.policy;
        out.push_str(&format!(
            "config OK{}: {} site(s), {} caller(s), {} grant(s), {} known scope(s)\n",
            if self.development {
                " (development)"
            } else {
                ""
            },
            self.sites.len(),
            p.callers().len(),
            p.callers().iter().map(|c| c.grants.len()).sum::<usize>(),
            p.catalog().scopes().count(),
        ));
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        if let Some(s) = &self.server {
            out.push_str(&format!(
                "server: listen {} (cert {}, client CA {})\n",
                s.listen,
                s.cert.display(),
                s.client_ca.display()
            ));
        }
        if let Some(a) = &self.admin {
            out.push_str(&format!(
                "admin: listen {} (plain HTTP: /livez /readyz /metrics)\n",
                a.listen
            ));
        }
        let a = &self.audit;
        out.push_str(&format!(
            "audit: {} ({}{}; fingerprints {})\n",
            match &a.target {
                AuditTarget::Off => "off".to_owned(),
                AuditTarget::Stdout => "standard output".to_owned(),
                AuditTarget::File(p) => p.display().to_string(),
            },
            a.mode.as_str(),
            if a.sync { ", fdatasync per batch" } else { "" },
            match &a.hmac_key_file {
                Some(p) => format!("keyed by {}", p.display()),
                None => "random per process".to_owned(),
            },
        ));
        if let Some(sc) = &self.cache.shared {
            out.push_str(&shared_cache::summary(sc));
        }
        if let Some(i) = &self.issuer {
            out.push_str(&i.summary());
        }
        for site in self.sites.values() {
            let trust = match (&site.trust, &site.app) {
                (Trust::Direct, Some(app)) => format!(
                    "client_id {} secret_id {} secret from {}{}",
                    app.client_id,
                    app.secret_id,
                    app.secret_source,
                    site.standby_secret
                        .as_ref()
                        .map(|s| format!(
                            " (standby secret_id {} from {})",
                            s.secret_id, s.secret_source
                        ))
                        .unwrap_or_default(),
                ),
                (Trust::Eas(e), _) => format!(
                    "audience {:?}, signed by issuer key {}",
                    e.audience,
                    e.issuer.active().id
                ),
                (Trust::Uat(u), _) => format!(
                    "tenant_id {} username_claim {:?}, signed by issuer key {}",
                    u.tenant_id,
                    u.username_claim,
                    u.issuer.active().id
                ),
                (Trust::Direct, None) => String::new(),
            };
            out.push_str(&format!(
                "site {}: trust {} {} api {} content_url {:?} session_ttl {} jwt_ttl {} {}\n",
                site.name,
                site.trust.name(),
                site.server_url,
                site.api_version,
                site.content_url,
                humantime::format_duration(site.session_ttl),
                humantime::format_duration(site.jwt_ttl),
                trust,
            ));
        }
        for c in p.callers() {
            out.push_str(&format!("caller {}\n", c.pattern));
            for g in &c.grants {
                let users: Vec<&str> = g.users.iter().map(UserPattern::as_str).collect();
                let scopes: Vec<String> = g.scopes.iter().map(ToString::to_string).collect();
                let deny: Vec<String> = g.deny_scopes.iter().map(ToString::to_string).collect();
                out.push_str(&format!(
                    "  grant sites={:?} users={:?} scopes={:?}{}{}\n",
                    g.sites,
                    users,
                    scopes,
                    if deny.is_empty() {
                        String::new()
                    } else {
                        format!(" deny={deny:?}")
                    },
                    g.claims.summary(),
                ));
            }
        }
        out
    }
}

/// Collects issues while validating.
/// Problems (`.0`, which refuse the file) and warnings (`.1`, which do not).
struct Issues(Vec<Issue>, Vec<Issue>);

impl Issues {
    fn warn(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.1.push(Issue {
            at: at.into(),
            message: message.into(),
        });
    }

    fn add(&mut self, at: impl Into<String>, message: impl Into<String>) {
        self.0.push(Issue {
            at: at.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, at: &str, v: Option<&str>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => {
                match humantime::parse_duration(s.trim()) {
                    Ok(d) => bounds::check(at, d).unwrap_or_else(|m| {
                        self.add(at, m);
                        default
                    }),
                    Err(e) => {
                        self.add(at, format!("{s:?} is not a duration ({e}); write e.g. \"5m\", \"240m\", \"30s\""));
                        default
                    }
                }
            }
        }
    }
}

impl Issues {
    /// A positive count that fits `usize`; 0 is refused with `why`.
    fn count(&mut self, at: &str, v: Option<u64>, default: usize, why: &str) -> usize {
        match v {
            None => default,
            Some(0) => {
                self.add(at, format!("0: {why}; use at least 1"));
                default
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        }
    }

    /// A duration that must not be zero.
    fn positive(&mut self, at: &str, v: Option<&str>, default: Duration) -> Duration {
        let d = self.duration(at, v, default);
        if d.is_zero() {
            self.add(at, "must be more than zero");
            return default;
        }
        d
    }

    /// `sign_ins_per_second` and `sign_in_burst` under `at`, each falling back to `default`.
    fn rate(
        &mut self,
        at: &str,
        per_second: Option<f64>,
        burst: Option<u64>,
        default: SignInRate,
    ) -> SignInRate {
        let per_second = match per_second {
            None => default.per_second,
            Some(r) if r.is_finite() && r > 0.0 && r <= bounds::MAX_SIGN_INS_PER_SECOND => r,
            Some(r) => {
                self.add(
                    format!("{at}.sign_ins_per_second"),
                    format!("{r} is not a rate in (0, 1000000]; e.g. 10, or 0.5 for one every 2s"),
                );
                default.per_second
            }
        };
        let burst = match burst {
            None => default.burst,
            Some(b) if (1..=bounds::MAX_SIGN_IN_BURST).contains(&b) => {
                u32::try_from(b).unwrap_or(u32::MAX)
            }
            Some(b) => {
                self.add(
                    format!("{at}.sign_in_burst"),
                    format!(
                        "{b} is not in [1, 1000000]; it is how many sign-ins may run back to back"
                    ),
                );
                default.burst
            }
        };
        SignInRate { per_second, burst }
    }
}

fn build_connections(iss: &mut Issues, s: &raw::RawServer) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    ConnectionLimits {
        max_connections: iss.count(
            "server.max_connections",
            s.max_connections,
            d.max_connections,
            "no client could connect",
        ),
        idle_timeout: iss.positive(
            "server.idle_timeout",
            s.idle_timeout.as_deref(),
            d.idle_timeout,
        ),
        keepalive_interval: iss.positive(
            "server.keepalive_interval",
            s.keepalive_interval.as_deref(),
            d.keepalive_interval,
        ),
        keepalive_timeout: iss.positive(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            d.keepalive_timeout,
        ),
        max_connection_age: iss.positive(
            "server.max_connection_age",
            s.max_connection_age.as_deref(),
            d.max_connection_age,
        ),
        concurrency_limit_per_connection: iss.count(
            "server.concurrency_limit_per_connection",
            s.concurrency_limit_per_connection,
            d.concurrency_limit_per_connection,
            "no call could ever run",
        ),
    }
}

/// Stage two: validates a raw file into a [`Config`], or returns every problem found.
/// Relative paths are resolved against `base` (the config file's folder).
pub fn build(raw: RawConfig, base: &Path) -> Result<Config, Vec<Issue>> {
    let mut iss = Issues(Vec::new(), Vec::new());
    match raw.version {
        Some(CONFIG_VERSION) => {}
        Some(v) => iss.add(
            "version",
            format!("version {v} is not supported; this build reads version {CONFIG_VERSION}"),
        ),
        None => iss.add(
            "version",
            format!("missing; add `version = {CONFIG_VERSION}` at the top of the file"),
        ),
    }

    let mut extra = Vec::new();
    for (i, s) in raw.extra_scopes.iter().enumerate() {
        match s.parse::<Scope>() {
            Ok(scope) => extra.push(scope),
            Err(e) => iss.add(format!("extra_scopes[{i}]"), e.to_string()),
        }
    }
    let catalog = Arc::new(Catalog::builtin().with_extra(&extra));

    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };

    let server = raw.server.map(|s| {
        let connections = build_connections(&mut iss, &s);
        let listen_s = s.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_s.parse().unwrap_or_else(|e| {
            iss.add(
                "server.listen",
                format!("{listen_s:?} is not an address ({e}); write e.g. \"0.0.0.0:7443\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 7443))
        });
        let mut path = |field: &str, v: Option<PathBuf>| match v {
            Some(p) => resolve(&p),
            None => {
                iss.add(
                    format!("server.{field}"),
                    "missing: the broker only serves mTLS; give a PEM file path",
                );
                PathBuf::new()
            }
        };
        let cert = path("cert", s.cert);
        let key = path("key", s.key);
        let client_ca = path("client_ca", s.client_ca);
        if !key.as_os_str().is_empty() {
            key_files::check(&mut iss, "server.key", &key);
        }
        let identity_sources = match s.identity_sources {
            None => IdentitySources::default(),
            Some(names) => {
                let mut list = Vec::new();
                for (i, src) in names.iter().enumerate() {
                    match src.as_str() {
                        "spiffe" => list.push(IdentitySource::Spiffe),
                        "dns" => list.push(IdentitySource::Dns),
                        "cn" => list.push(IdentitySource::CommonName),
                        _ => iss.add(
                            format!("server.identity_sources[{i}]"),
                            format!("{src:?} is not one of \"spiffe\", \"dns\", \"cn\""),
                        ),
                    }
                }
                IdentitySources::new(list).unwrap_or_else(|e| {
                    iss.add("server.identity_sources", e.to_string());
                    IdentitySources::default()
                })
            }
        };
        let grace_period = iss.duration(
            "server.grace_period",
            s.grace_period.as_deref(),
            DEFAULT_GRACE_PERIOD,
        );
        ServerConfig {
            listen,
            cert,
            key,
            client_ca,
            identity_sources,
            grace_period,
            connections,
        }
    });

    let cache = CacheConfig {
        max_entries: match raw.cache.max_entries {
            Some(0) => {
                iss.add(
                    "cache.max_entries",
                    "0 would cache nothing and sign in on every call; use at least 1",
                );
                DEFAULT_CACHE_MAX_ENTRIES
            }
            Some(n) => n,
            None => DEFAULT_CACHE_MAX_ENTRIES,
        },
        safety_margin: iss.duration(
            "cache.safety_margin",
            raw.cache.safety_margin.as_deref(),
            DEFAULT_SAFETY_MARGIN,
        ),
        sign_out_on_evict: raw.cache.sign_out_on_evict.unwrap_or(true),
        replaced_session_grace: iss.duration(
            "cache.replaced_session_grace",
            raw.cache.replaced_session_grace.as_deref(),
            DEFAULT_REPLACED_SESSION_GRACE,
        ),
        max_pending_sign_outs: iss.count(
            "cache.max_pending_sign_outs",
            raw.cache.max_pending_sign_outs,
            DEFAULT_MAX_PENDING_SIGN_OUTS,
            "a sign-out must be able to wait for its grace period",
        ),
        refresh_ahead: raw.cache.refresh_ahead.as_deref().map(|v| {
            let d = iss.duration("cache.refresh_ahead", Some(v), Duration::ZERO);
            if d > MAX_REFRESH_AHEAD {
                iss.add(
                    "cache.refresh_ahead",
                    format!(
                        "{} is more than the longest refresh-ahead window ({}); a token is refreshed at most half its usable life early",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_REFRESH_AHEAD)
                    ),
                );
            }
            d.min(MAX_REFRESH_AHEAD)
        }),
        shared: raw
            .cache
            .shared
            .and_then(|s| shared_cache::build(&mut iss, s, raw.development, &resolve)),
    };
    let mut limits = LimitsConfig {
        default_rate: iss.rate(
            "limits",
            raw.limits.sign_ins_per_second,
            raw.limits.sign_in_burst,
            LimitsConfig::default().default_rate,
        ),
        caller_rates: BTreeMap::new(),
        max_concurrent_sign_ins: iss.count(
            "limits.max_concurrent_sign_ins",
            raw.limits.max_concurrent_sign_ins,
            DEFAULT_MAX_CONCURRENT_SIGN_INS,
            "no sign-in could ever run",
        ),
        negative_cache_ttl: iss.duration(
            "limits.negative_cache_ttl",
            raw.limits.negative_cache_ttl.as_deref(),
            DEFAULT_NEGATIVE_CACHE_TTL,
        ),
    };
    let tableau = TableauHttpConfig {
        connect_timeout: iss.duration(
            "tableau.connect_timeout",
            raw.tableau.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        request_timeout: iss.duration(
            "tableau.request_timeout",
            raw.tableau.request_timeout.as_deref(),
            DEFAULT_REQUEST_TIMEOUT,
        ),
    };
    let telemetry = TelemetryConfig {
        log_format: match raw.telemetry.log_format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                iss.add(
                    "telemetry.log_format",
                    format!("{other:?} is not \"json\" or \"text\""),
                );
                LogFormat::Json
            }
        },
        log_filter: raw
            .telemetry
            .log_filter
            .unwrap_or_else(|| "info".to_owned()),
        otlp_endpoint: raw.telemetry.otlp_endpoint,
        service_name: match raw.telemetry.service_name {
            Some(n) if n.trim().is_empty() => {
                iss.add(
                    "telemetry.service_name",
                    "empty: remove the key to use OTEL_SERVICE_NAME or the default",
                );
                None
            }
            other => other,
        },
    };
    let admin = raw.admin.map(|a| {
        let listen = match a.listen {
            None => {
                iss.add(
                    "admin.listen",
                    "missing: give an address such as \"0.0.0.0:9090\", or remove [admin] to turn the admin listener off",
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
            Some(l) => l.parse().unwrap_or_else(|e| {
                iss.add(
                    "admin.listen",
                    format!("{l:?} is not an address ({e}); write e.g. \"0.0.0.0:9090\""),
                );
                SocketAddr::from(([127, 0, 0, 1], 0))
            }),
        };
        AdminConfig { listen }
    });

    let audit = build_audit(&mut iss, raw.audit, raw.development, &resolve);

    let reload = ReloadConfig {
        check_interval: iss.duration(
            "reload.check_interval",
            raw.reload.check_interval.as_deref(),
            DEFAULT_RELOAD_CHECK_INTERVAL,
        ),
        debounce: iss.duration(
            "reload.debounce",
            raw.reload.debounce.as_deref(),
            DEFAULT_RELOAD_DEBOUNCE,
        ),
    };
    if reload.check_interval < Duration::from_millis(100) {
        iss.add(
            "reload.check_interval",
            "shorter than 100ms would re-read every file in a busy loop; use e.g. \"30s\"",
        );
    }

    let issuer = raw
        .issuer
        .and_then(|i| trust::build_issuer(&mut iss, i, raw.development, &resolve))
        .map(Arc::new);
    let mut sites = BTreeMap::new();
    for (name, site) in raw.sites {
        if let Some(s) = build_site(
            &mut iss,
            &name,
            site,
            raw.development,
            &resolve,
            issuer.as_ref(),
        ) {
            sites.insert(name, Arc::new(s));
        }
    }

    let mut callers: Vec<CallerEntry> = Vec::new();
    for (ci, c) in raw.callers.into_iter().enumerate() {
        let at = format!("callers[{ci}]");
        let pattern = match c.identity.as_deref().map(IdentityPattern::parse) {
            None => {
                iss.add(
                    format!("{at}.identity"),
                    "missing: give a SPIFFE ID (\"spiffe://trust-domain/path\", or a prefix ending in /*), \"dns:NAME\" for a DNS SAN, or \"cn:NAME\" for the subject CN",
                );
                None
            }
            Some(Err(e)) => {
                iss.add(format!("{at}.identity"), e);
                None
            }
            Some(Ok(p)) => {
                if let Some(j) = callers.iter().position(|e| e.pattern == p) {
                    iss.add(
                        format!("{at}.identity"),
                        format!("{p} is already configured at callers[{j}]; merge the two entries"),
                    );
                }
                Some(p)
            }
        };
        if c.grants.is_empty() {
            iss.add(format!("{at}.grants"), "no grants: this caller could ask for nothing; add [[callers.grants]] or remove the entry");
        }
        let grants = c
            .grants
            .into_iter()
            .enumerate()
            .map(|(gi, g)| {
                build_grant(&mut iss, &format!("{at}.grants[{gi}]"), g, &catalog, &sites)
            })
            .collect();
        let rate = (c.sign_ins_per_second.is_some() || c.sign_in_burst.is_some()).then(|| {
            iss.rate(
                &at,
                c.sign_ins_per_second,
                c.sign_in_burst,
                limits.default_rate,
            )
        });
        if let Some(pattern) = pattern {
            if let Some(rate) = rate {
                limits.caller_rates.insert(pattern.to_string(), rate);
            }
            callers.push(CallerEntry { pattern, grants });
        }
    }

    if let Some(site) = sites
        .values()
        .find(|s| s.session_ttl <= cache.safety_margin)
    {
        iss.add("cache.safety_margin", format!("not shorter than sites.{}.session_ttl: no token could ever be handed out; lower it", site.name));
    }
    let admins = admins::build_admins(&mut iss, raw.admins);
    let candidate_path = admins::candidate_path(raw.policy.as_ref(), base);
    if !iss.0.is_empty() {
        return Err(iss.0);
    }
    Ok(Config {
        development: raw.development,
        warnings: iss.1,
        server,
        cache,
        limits,
        tableau,
        telemetry,
        admin,
        audit,
        reload,
        sites,
        issuer,
        policy: Arc::new(Policy::new(catalog, callers)),
        admins: Arc::new(admins),
        candidate_path,
        candidate: None,
    })
}

fn build_audit(
    iss: &mut Issues,
    a: raw::RawAudit,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> AuditConfig {
    let mode = match a.mode.as_deref() {
        None => DEFAULT_AUDIT_MODE,
        Some("fail-closed") => AuditMode::FailClosed,
        Some("best-effort") => AuditMode::BestEffort,
        Some(other) => {
            iss.add(
                "audit.mode",
                format!("{other:?} is not \"fail-closed\" or \"best-effort\""),
            );
            DEFAULT_AUDIT_MODE
        }
    };
    let target = match (a.enabled, a.path) {
        (Some(false), path) => {
            if !development {
                iss.add("audit.enabled", "an audit trail is required outside development configurations; remove `enabled = false` (or set development = true for a benchmark)");
            }
            if path.is_some() {
                iss.add(
                    "audit.path",
                    "set, but enabled = false turns the trail off; remove one of them",
                );
            }
            AuditTarget::Off
        }
        (_, None) => AuditTarget::Stdout,
        (_, Some(p)) if p.as_os_str() == DEFAULT_AUDIT_PATH => AuditTarget::Stdout,
        (_, Some(p)) if p.as_os_str().is_empty() => {
            iss.add(
                "audit.path",
                "empty: give a file path, or \"-\" for standard output",
            );
            AuditTarget::Stdout
        }
        (_, Some(p)) => AuditTarget::File(resolve(&p)),
    };
    let hmac_key_file = a.hmac_key_file.map(|p| resolve(&p));
    if let Some(p) = &hmac_key_file {
        key_files::check(iss, "audit.hmac_key_file", p);
        if let Err(e) = crate::audit::Fingerprinter::from_key_file(p) {
            iss.add("audit.hmac_key_file", e.to_string());
        }
    }
    AuditConfig {
        target,
        mode,
        sync: a.sync.unwrap_or(DEFAULT_AUDIT_SYNC),
        hmac_key_file,
    }
}

fn build_site(
    iss: &mut Issues,
    name: &str,
    s: RawSite,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
    issuer: Option<&Arc<crate::issuer::Issuer>>,
) -> Option<SiteConfig> {
    let at = format!("sites.{name}");
    let before = iss.0.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        iss.add(&at, "site names may use letters, digits, '-' and '_'");
    }
    let server_url = match s.server_url {
        None => {
            iss.add(
                format!("{at}.server_url"),
                "missing: give the Tableau base URL, e.g. \"https://tableau.example.com\"",
            );
            String::new()
        }
        Some(u) => {
            let trimmed = u.trim_end_matches('/').to_owned();
            match reqwest::Url::parse(&trimmed) {
                Ok(url)
                    if (url.scheme() == "https" || url.scheme() == "http")
                        && url.host().is_some() =>
                {
                    if url.scheme() == "http" && !development {
                        iss.add(format!("{at}.server_url"), "plain http sends JWTs and tokens in clear; use https (http is allowed only with development = true)");
                    }
                    if url.query().is_some() || url.path().contains("/api") {
                        iss.add(
                            format!("{at}.server_url"),
                            "give the base URL only; the broker adds /api/{version}/...",
                        );
                    }
                }
                _ => iss.add(
                    format!("{at}.server_url"),
                    format!("{u:?} is not an http(s) URL"),
                ),
            }
            trimmed
        }
    };
    let api_version = s
        .api_version
        .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    match api_version
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
    {
        Some(v) if v >= MIN_API_VERSION => {}
        Some(_) => iss.add(
            format!("{at}.api_version"),
            format!(
                "{api_version:?} is older than 3.17, the first REST API version with connected apps"
            ),
        ),
        None => iss.add(
            format!("{at}.api_version"),
            format!("{api_version:?} is not a version like \"3.22\""),
        ),
    }
    let content_url = s.content_url.unwrap_or_default();
    let session_ttl = iss.duration(
        &format!("{at}.session_ttl"),
        s.session_ttl.as_deref(),
        DEFAULT_SESSION_TTL,
    );
    let jwt_ttl = iss.duration(
        &format!("{at}.jwt_ttl"),
        s.jwt_ttl.as_deref(),
        DEFAULT_JWT_TTL,
    );
    if jwt_ttl > MAX_JWT_TTL {
        iss.add(
            format!("{at}.jwt_ttl"),
            "Tableau refuses JWTs that live more than 10m; use at most \"10m\"",
        );
    }
    if jwt_ttl.is_zero() {
        iss.add(format!("{at}.jwt_ttl"), "must be more than zero");
    }
    if session_ttl <= Duration::from_secs(60) {
        iss.add(
            format!("{at}.session_ttl"),
            "too short to cache; Tableau Server defaults to 240m, Tableau Cloud to 120m",
        );
    }
    let format = match s.format.as_deref() {
        None | Some("xml") => Format::Xml,
        Some("json") => Format::Json,
        Some(f) => {
            iss.add(
                format!("{at}.format"),
                format!("{f:?} is not \"xml\" or \"json\""),
            );
            Format::Xml
        }
    };
    let ca_bundle = s.ca_bundle.map(|p| resolve(&p));
    if let Some(p) = &ca_bundle {
        if !p.is_file() {
            iss.add(
                format!("{at}.ca_bundle"),
                format!("{} is not a readable file", p.display()),
            );
        }
    }
    let trust = trust::build_trust(iss, &at, s.trust.as_deref(), s.eas, s.uat, issuer);
    if matches!(trust, Some(Trust::Uat(_)))
        && api_version
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .is_some_and(|v| v < MIN_UAT_API_VERSION)
    {
        iss.add(
            format!("{at}.api_version"),
            format!("{api_version:?} is older than 3.27, the first REST API version with unified access tokens"),
        );
    }
    let app = match (&trust, s.connected_app) {
        (Some(Trust::Direct), None) => {
            iss.add(format!("{at}.connected_app"), "missing: add [sites.NAME.connected_app] with client_id, secret_id and secret_file or secret_env (or set trust = \"eas\" or \"uat\")");
            None
        }
        (Some(Trust::Direct), Some(a)) => {
            build_app(iss, &format!("{at}.connected_app"), a, development, resolve)
        }
        (_, Some(_)) => {
            iss.add(format!("{at}.connected_app"), "only for trust = \"direct\": EAS and UAT sites are signed with the issuer's key; remove the section");
            None
        }
        (_, None) => None,
    };
    if iss.0.len() > before {
        return None;
    }
    let trust = trust?;
    Some(SiteConfig {
        name: name.to_owned(),
        server_url,
        api_version,
        content_url,
        session_ttl,
        jwt_ttl,
        format,
        ca_bundle,
        trust,
        standby_secret: app.as_ref().and_then(|a| a.standby.clone()),
        secret_files: app.as_ref().map(|a| a.files.clone()).unwrap_or_default(),
        app: app.map(|a| a.app),
    })
}

/// A connected app as validated: the active secret in `app`, the other one (if any) as standby,
/// and the secret files read.
struct BuiltApp {
    app: ConnectedApp,
    standby: Option<StandbySecret>,
    files: Vec<PathBuf>,
}

/// One secret as read: ID, value, where from, and its file if it came from one.
struct ReadSecret {
    secret_id: String,
    secret: SecretString,
    source: String,
    file: Option<PathBuf>,
}

fn build_app(
    iss: &mut Issues,
    at: &str,
    a: RawConnectedApp,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<BuiltApp> {
    let client_id = match a.client_id.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            iss.add(
                format!("{at}.client_id"),
                "missing: copy it from the connected app's page in Tableau",
            );
            None
        }
    };
    let single = RawAppSecret {
        secret_id: a.secret_id,
        secret_file: a.secret_file,
        secret_env: a.secret_env,
        secret: a.secret,
    };
    let has_single = single.secret_id.is_some()
        || single.secret_file.is_some()
        || single.secret_env.is_some()
        || single.secret.is_some();
    let secrets: Vec<ReadSecret> = match a.secrets {
        Some(list) => {
            if has_single {
                iss.add(
                    at,
                    "give either secret_id with secret_file/secret_env, or a [[...connected_app.secrets]] list, not both",
                );
                return None;
            }
            if list.is_empty() || list.len() > MAX_APP_SECRETS {
                iss.add(
                    format!("{at}.secrets"),
                    format!(
                        "{} secrets listed; Tableau keeps one or two per connected app",
                        list.len()
                    ),
                );
                return None;
            }
            let read: Vec<Option<ReadSecret>> = list
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    read_secret(iss, &format!("{at}.secrets[{i}]"), r, development, resolve)
                })
                .collect();
            let read: Vec<ReadSecret> = read.into_iter().collect::<Option<_>>()?;
            if read.len() == 2 && read[0].secret_id == read[1].secret_id {
                iss.add(
                    format!("{at}.secrets[1].secret_id"),
                    format!(
                        "{:?} is listed twice; each secret has its own ID",
                        read[1].secret_id
                    ),
                );
                return None;
            }
            read
        }
        None => vec![read_secret(iss, at, single, development, resolve)?],
    };
    let active_index = match a.active_secret_id.as_deref().map(str::trim) {
        Some(id) => match secrets.iter().position(|s| s.secret_id == id) {
            Some(i) => i,
            None => {
                iss.add(
                    format!("{at}.active_secret_id"),
                    format!(
                        "{id:?} is not one of the configured secret IDs {:?}",
                        secrets
                            .iter()
                            .map(|s| s.secret_id.as_str())
                            .collect::<Vec<_>>()
                    ),
                );
                return None;
            }
        },
        None if secrets.len() == 1 => 0,
        None => {
            iss.add(
                format!("{at}.active_secret_id"),
                "missing: with two secrets, name the one that signs JWTs",
            );
            return None;
        }
    };
    let files = secrets.iter().filter_map(|s| s.file.clone()).collect();
    let mut secrets = secrets;
    let active = secrets.remove(active_index);
    let standby = secrets.pop().map(|s| StandbySecret {
        secret_id: s.secret_id,
        secret: s.secret,
        secret_source: s.source,
    });
    Some(BuiltApp {
        app: ConnectedApp {
            client_id: client_id?,
            secret_id: active.secret_id,
            secret: active.secret,
            secret_source: active.source,
        },
        standby,
        files,
    })
}

fn read_secret(
    iss: &mut Issues,
    at: &str,
    a: RawAppSecret,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<ReadSecret> {
    let secret_id = match a.secret_id.map(|s| s.trim().to_owned()) {
        Some(s) if !s.is_empty() => Some(s),
        _ => {
            iss.add(
                format!("{at}.secret_id"),
                "missing: copy it from the connected app's page in Tableau",
            );
            None
        }
    };
    let sources = [
        a.secret_file.is_some(),
        a.secret_env.is_some(),
        a.secret.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources != 1 {
        iss.add(
            at,
            "give exactly one of secret_file, secret_env (or, in a development config, secret)",
        );
        return None;
    }
    let mut file = None;
    let (secret, secret_source) = if let Some(p) = a.secret_file {
        let p = resolve(&p);
        match check_secret_file_mode(&p) {
            Err(message) => {
                iss.add(format!("{at}.secret_file"), message);
                return None;
            }
            Ok(Some(warning)) => iss.warn(format!("{at}.secret_file"), warning),
            Ok(None) => {}
        }
        match std::fs::read_to_string(&p) {
            Ok(s) => {
                let source = format!("file {}", p.display());
                file = Some(p);
                (SecretString::from(strip_one_newline(&s).to_owned()), source)
            }
            Err(e) => {
                iss.add(
                    format!("{at}.secret_file"),
                    format!("cannot read {}: {e}", p.display()),
                );
                return None;
            }
        }
    } else if let Some(var) = a.secret_env {
        match std::env::var(&var) {
            Ok(s) => (
                SecretString::from(strip_one_newline(&s).to_owned()),
                format!("env {var}"),
            ),
            Err(_) => {
                iss.add(
                    format!("{at}.secret_env"),
                    format!("environment variable {var} is not set (or not UTF-8)"),
                );
                return None;
            }
        }
    } else if let Some(s) = a.secret {
        if !development {
            iss.add(format!("{at}.secret"), "inline secrets are refused outside development configs; use secret_file or secret_env (or set development = true for local use)");
            return None;
        }
        (s, "inline (development)".to_owned())
    } else {
        return None;
    };
    if secret.expose_secret().is_empty() {
        iss.add(at, format!("the secret from {secret_source} is empty"));
        return None;
    }
    let len = secret.expose_secret().len();
    if len < MIN_SECRET_BYTES {
        iss.add(
            at,
            format!(
                "the secret from {secret_source} is {len} bytes, shorter than {MIN_SECRET_BYTES}: copy the whole secret value from the connected app's page in Tableau"
            ),
        );
        return None;
    }
    Some(ReadSecret {
        secret_id: secret_id?,
        secret,
        source: secret_source,
        file,
    })
}

/// Removes exactly one trailing newline (`\n` or `\r\n`), as `echo` and editors add one; any
/// other whitespace is part of the secret. Files and environment variables are read alike.
fn strip_one_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

/// Refuses a secret file anyone may write (whoever can write it can sign in as any user), and
/// warns when anyone may read it. Group-readable is normal: Kubernetes mounts Secrets with the
/// pod's fsGroup.
#[cfg(unix)]
fn check_secret_file_mode(p: &Path) -> Result<Option<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(p) else {
        // Unreadable or missing: reading it reports the problem.
        return Ok(None);
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(format!(
            "{} is world-writable (mode {:o}): anyone on the host could replace the secret; run chmod o-w (0600 or 0640 is usual)",
            p.display(),
            mode & 0o777
        ));
    }
    if mode & 0o004 != 0 {
        return Ok(Some(format!(
            "{} is world-readable (mode {:o}): any user on the host can read the secret; run chmod o-r (0600, or 0640 with the pod's fsGroup, is usual)",
            p.display(),
            mode & 0o777
        )));
    }
    Ok(None)
}

#[cfg(not(unix))]
fn check_secret_file_mode(_p: &Path) -> Result<Option<String>, String> {
    Ok(None)
}

/// The TOML parser's message quotes the offending source line. A line that mentions a secret
/// could hold its value (an unterminated `secret = "...`), so such lines are replaced.
fn redact_toml_error(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for line in message.trim_end().lines() {
        // Source lines look like `12 | text`; the caret lines below them like `   |    ^`.
        let quoted_source = line.split_once('|').is_some_and(|(n, _)| {
            !n.trim().is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit())
        });
        if quoted_source && line.to_ascii_lowercase().contains("secret") {
            let (n, _) = line.split_once('|').unwrap_or((line, ""));
            out.push_str(n);
            out.push_str("| [line not shown: it may hold a secret]");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.trim_end().to_owned()
}

fn build_grant(
    iss: &mut Issues,
    at: &str,
    g: RawGrant,
    catalog: &Catalog,
    sites: &BTreeMap<String, Arc<SiteConfig>>,
) -> Grant {
    if g.sites.is_empty() {
        iss.add(
            format!("{at}.sites"),
            "empty: name at least one site (or \"*\" for every site)",
        );
    }
    for (i, s) in g.sites.iter().enumerate() {
        if s != "*" && !sites.contains_key(s) {
            iss.add(
                format!("{at}.sites[{i}]"),
                format!(
                    "unknown site {s:?}; configured sites: {:?}",
                    sites.keys().collect::<Vec<_>>()
                ),
            );
        }
    }
    if g.users.is_empty() {
        iss.add(
            format!("{at}.users"),
            "empty: name at least one user or pattern (\"*\" for everyone must be written out)",
        );
    }
    let users = g
        .users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match UserPattern::parse(u) {
            Ok(p) => Some(p),
            Err(e) => {
                iss.add(format!("{at}.users[{i}]"), e);
                None
            }
        })
        .collect();
    let mut scopes_of = |field: &str, list: &[String]| -> Vec<Scope> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let here = format!("{at}.{field}[{i}]");
                match s.parse::<Scope>() {
                    Err(e) => {
                        iss.add(here, e.to_string());
                        None
                    }
                    Ok(scope) if !catalog.is_known(&scope) => {
                        let hint = catalog
                            .suggest(s)
                            .map(|h| format!(" (did you mean {:?}?)", h.to_string()))
                            .unwrap_or_default();
                        iss.add(here, format!("unknown scope {s:?}{hint}; add it to extra_scopes if Tableau has it"));
                        None
                    }
                    Ok(scope) => Some(scope),
                }
            })
            .collect()
    };
    let scopes = scopes_of("scopes", &g.scopes);
    let deny_scopes = scopes_of("deny_scopes", &g.deny_scopes);
    if g.scopes.is_empty() {
        iss.add(
            format!("{at}.scopes"),
            "empty: a grant without scopes allows nothing",
        );
    }
    let max_jwt_ttl = g.max_jwt_ttl.as_deref().map(|s| {
        let d = iss.duration(&format!("{at}.max_jwt_ttl"), Some(s), MAX_JWT_TTL);
        if d > MAX_JWT_TTL {
            iss.add(
                format!("{at}.max_jwt_ttl"),
                "more than 10m; Tableau would refuse such JWTs",
            );
        }
        d
    });
    let claims = claim_allowlist(iss, at, g.attributes, g.groups, g.on_demand_access);
    Grant {
        sites: g.sites,
        users,
        scopes,
        deny_scopes,
        max_jwt_ttl,
        claims,
    }
}

/// A grant's `attributes`, `groups` and `on_demand_access`: names that would overwrite the
/// broker's own claims are refused, as are empty or oversized names, values and globs.
fn claim_allowlist(
    iss: &mut Issues,
    at: &str,
    attributes: BTreeMap<String, Vec<String>>,
    groups: Vec<String>,
    on_demand_access: Option<bool>,
) -> crate::claims::ClaimAllowlist {
    use crate::claims::{MAX_VALUE_BYTES, is_reserved};
    let bad = |s: &str| s.is_empty() || s.len() > MAX_VALUE_BYTES;
    for (name, values) in &attributes {
        let here = format!("{at}.attributes.{name}");
        if is_reserved(name) {
            iss.add(&here, "collides with a registered or Tableau claim (iss, sub, aud, exp, iat, nbf, jti, scp, https://tableau.com/…); pick another name");
        } else if bad(name) {
            iss.add(
                &here,
                format!("attribute names are 1 to {MAX_VALUE_BYTES} bytes"),
            );
        }
        if values.is_empty() {
            iss.add(
                &here,
                "no values: list the allowed values, or [\"*\"] for any value",
            );
        }
        if values.iter().any(|v| bad(v)) {
            iss.add(&here, format!("values are 1 to {MAX_VALUE_BYTES} bytes"));
        }
    }
    if groups.iter().any(|g| bad(g)) {
        iss.add(
            format!("{at}.groups"),
            format!("group globs are 1 to {MAX_VALUE_BYTES} bytes"),
        );
    }
    crate::claims::ClaimAllowlist {
        attributes,
        groups,
        on_demand_access: on_demand_access.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests;
