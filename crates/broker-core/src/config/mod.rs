//! Configuration in three stages: the file as written ([`raw`]), a builder that validates every
//! field and collects every problem with its place in the file ([`build`]), and the validated
//! [`Config`] the service runs on. A config that fails validation is never half-applied.

pub mod admins;
pub mod bounds;
mod defaults;
mod grants;
mod issues;
mod key_files;
pub mod raw;
mod sections;
mod shared_cache;
mod sites;
mod summary;
mod trust;
mod unknown;
use grants::*;
use issues::*;
use sections::*;
use sites::*;
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

pub use defaults::*;

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
        let (raw, mut problems) = unknown::parse(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: redact_toml_error(&e.to_string()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        // Unknown keys are listed with every other problem, never applied while ignored.
        let built = build(raw, base);
        let mut config = match built {
            Ok(config) if problems.is_empty() => config,
            Ok(_) => {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    issues: problems,
                });
            }
            Err(issues) => {
                problems.extend(issues);
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    issues: problems,
                });
            }
        };
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

#[cfg(test)]
mod tests;
