//! The configuration file exactly as written: stage one of three (file → [`super::build`] →
//! [`super::Config`]). Every struct refuses unknown fields so a typo is an error, not a silent default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version; only [`super::CONFIG_VERSION`] is understood.
    pub version: Option<u32>,
    /// Marks a development config: inline secrets are allowed only then.
    #[serde(default)]
    pub development: bool,
    /// Scopes newer than the built-in catalog, added by the operator.
    #[serde(default)]
    pub extra_scopes: Vec<String>,
    /// Listener and TLS.
    pub server: Option<RawServer>,
    /// Token cache.
    #[serde(default)]
    pub cache: RawCache,
    /// HTTP client towards Tableau.
    #[serde(default)]
    pub tableau: RawTableau,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// How changed files are noticed and reloaded.
    #[serde(default)]
    pub reload: RawReload,
    /// Tableau sites by the name callers use.
    #[serde(default)]
    pub sites: BTreeMap<String, RawSite>,
    /// Who may ask for what.
    #[serde(default)]
    pub callers: Vec<RawCaller>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Server certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub key: Option<PathBuf>,
    /// CA bundle that client certificates must chain to (PEM).
    pub client_ca: Option<PathBuf>,
    /// Which certificate fields may name the caller, in order: "spiffe", "dns", "cn".
    pub identity_sources: Option<Vec<String>>,
    /// How long in-flight calls may run after SIGTERM.
    pub grace_period: Option<String>,
}

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Most cached sessions held at once.
    pub max_entries: Option<u64>,
    /// How long before Tableau ends a session the broker stops handing it out.
    pub safety_margin: Option<String>,
    /// Sign sessions out at Tableau when they leave the cache.
    pub sign_out_on_evict: Option<bool>,
}

/// `[tableau]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTableau {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Option<String>,
    /// Whole-request timeout.
    pub request_timeout: Option<String>,
}

/// `[telemetry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// "json" or "text".
    pub log_format: Option<String>,
    /// Log filter, `RUST_LOG` syntax.
    pub log_filter: Option<String>,
    /// OTLP/gRPC endpoint for traces; unset means no export.
    pub otlp_endpoint: Option<String>,
}

/// `[reload]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// How often every watched file is re-read in case no file event arrived.
    pub check_interval: Option<String>,
    /// How long to wait after a file event for the rest of a burst of writes.
    pub debounce: Option<String>,
}

/// `[sites.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// Tableau base URL.
    pub server_url: Option<String>,
    /// REST API version.
    pub api_version: Option<String>,
    /// Site content URL ("" is the default site).
    pub content_url: Option<String>,
    /// Tableau session lifetime.
    pub session_ttl: Option<String>,
    /// Default JWT lifetime.
    pub jwt_ttl: Option<String>,
    /// "xml" or "json" for sign-in.
    pub format: Option<String>,
    /// Extra CA bundle for a private Tableau certificate.
    pub ca_bundle: Option<PathBuf>,
    /// The connected app.
    pub connected_app: Option<RawConnectedApp>,
}

/// `[sites.NAME.connected_app]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnectedApp {
    /// Client ID (the JWT's `iss`).
    pub client_id: Option<String>,
    /// Secret ID (the JWT's `kid`).
    pub secret_id: Option<String>,
    /// File holding the secret value.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret value.
    pub secret_env: Option<String>,
    /// Inline secret value; development configs only.
    pub secret: Option<SecretString>,
    /// Which of `secrets` signs JWTs (the other is tried once when Tableau refuses it).
    pub active_secret_id: Option<String>,
    /// One or two secrets, for rotation without failed calls.
    pub secrets: Option<Vec<RawAppSecret>>,
}

/// `[[sites.NAME.connected_app.secrets]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppSecret {
    /// Secret ID (the JWT's `kid`).
    pub secret_id: Option<String>,
    /// File holding the secret value.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret value.
    pub secret_env: Option<String>,
    /// Inline secret value; development configs only.
    pub secret: Option<SecretString>,
}

impl std::fmt::Debug for RawAppSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAppSecret")
            .field("secret_id", &self.secret_id)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl std::fmt::Debug for RawConnectedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnectedApp")
            .field("client_id", &self.client_id)
            .field("secret_id", &self.secret_id)
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("secret", &self.secret.as_ref().map(|_| "[REDACTED]"))
            .field("active_secret_id", &self.active_secret_id)
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// `[[callers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    /// SPIFFE ID (optionally ending in `/*`), DNS name or subject CN.
    pub identity: Option<String>,
    /// What the caller may ask for.
    #[serde(default)]
    pub grants: Vec<RawGrant>,
}

/// `[[callers.grants]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    /// Site names.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Users: exact names or globs.
    #[serde(default)]
    pub users: Vec<String>,
    /// Authorization scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes refused even when allowed above.
    #[serde(default)]
    pub deny_scopes: Vec<String>,
    /// Longest JWT lifetime for this grant.
    pub max_jwt_ttl: Option<String>,
}
