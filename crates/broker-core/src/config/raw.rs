//! The configuration file exactly as written: stage one of three (file → [`super::build`] →
//! [`super::Config`]). Every struct refuses unknown fields so a typo is an error, not a silent default.
//!
//! The same types serialize back to TOML, so whatever writes a configuration (the dev kit, the
//! demo) writes it through the fields the loader reads: a renamed key does not compile there.

use std::collections::BTreeMap;
use std::path::PathBuf;

use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// The whole file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version; only [`super::CONFIG_VERSION`] is understood.
    pub version: Option<u32>,
    /// Marks a development config: inline secrets are allowed only then.
    #[serde(default)]
    pub development: bool,
    /// Scopes newer than the built-in catalog, added by the operator.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub extra_scopes: Vec<String>,
    /// Listener and TLS.
    pub server: Option<RawServer>,
    /// Token cache.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: RawCache,
    /// Limits that protect Tableau from sign-in floods.
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: RawLimits,
    /// HTTP client towards Tableau.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tableau: RawTableau,
    /// Logs and traces.
    #[serde(default, skip_serializing_if = "is_default")]
    pub telemetry: RawTelemetry,
    /// The plain-HTTP admin listener (probes and metrics); off when absent.
    pub admin: Option<RawAdmin>,
    /// The audit trail.
    #[serde(default, skip_serializing_if = "is_default")]
    pub audit: RawAudit,
    /// How changed files are noticed and reloaded.
    #[serde(default, skip_serializing_if = "is_default")]
    pub reload: RawReload,
    /// The broker as an OAuth 2.0 issuer (EAS and UAT trust); absent when every site is direct.
    pub issuer: Option<RawIssuer>,
    /// Tableau sites by the name callers use.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub sites: BTreeMap<String, RawSite>,
    /// Who may ask for what.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub callers: Vec<RawCaller>,
    /// Who may call the admin API (issue 27).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub admins: Vec<super::admins::RawAdminEntry>,
    /// `[policy]`: the candidate policy run in shadow (issue 27).
    pub policy: Option<super::admins::RawPolicy>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize, Serialize)]
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
    /// Most client connections open at once (handshaking or established).
    pub max_connections: Option<u64>,
    /// A connection with no call in progress for this long is closed.
    pub idle_timeout: Option<String>,
    /// How often an HTTP/2 PING checks that a client is still there.
    pub keepalive_interval: Option<String>,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Option<String>,
    /// Oldest a connection may grow before it is asked to go away (GOAWAY).
    pub max_connection_age: Option<String>,
    /// Most calls served at once on one connection; more wait.
    pub concurrency_limit_per_connection: Option<u64>,
}

/// `[cache]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Most cached sessions held at once.
    pub max_entries: Option<u64>,
    /// How long before Tableau ends a session the broker stops handing it out.
    pub safety_margin: Option<String>,
    /// Sign sessions out at Tableau when they leave the cache.
    pub sign_out_on_evict: Option<bool>,
    /// How long a replaced or evicted session stays valid at Tableau before it is signed out.
    pub replaced_session_grace: Option<String>,
    /// Most sign-outs waiting for their grace period to end.
    pub max_pending_sign_outs: Option<u64>,
    /// How long before a token's usable end a hit starts one background sign-in for its key
    /// (`"0s"` turns refresh-ahead off; default: a tenth of the usable life).
    pub refresh_ahead: Option<String>,
    /// `[cache.shared]`: Redis as a cache shared by every replica (issue 16).
    pub shared: Option<RawSharedCache>,
}

/// `[limits]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Sign-ins per second each caller entry may cause (refill rate of its token bucket).
    pub sign_ins_per_second: Option<f64>,
    /// Sign-ins a caller entry may cause in a burst (its bucket's size).
    pub sign_in_burst: Option<u64>,
    /// Most sign-ins in flight to one site at once.
    pub max_concurrent_sign_ins: Option<u64>,
    /// How long a sign-in failure that retrying cannot fix is remembered per key.
    pub negative_cache_ttl: Option<String>,
}

/// `[cache.shared]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharedCache {
    /// `redis://` or `rediss://` URL; a username may be in it, a password may not.
    pub redis_url: Option<String>,
    /// CA bundle (PEM) for a `rediss://` server certificate from a private CA.
    pub ca_file: Option<PathBuf>,
    /// File holding the Redis password.
    pub password_file: Option<PathBuf>,
    /// File holding the current encryption key (32 bytes, raw or base64).
    pub encryption_key_file: Option<PathBuf>,
    /// Files holding previous encryption keys, still accepted for reading.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub previous_encryption_key_files: Vec<PathBuf>,
    /// Timeout of each Redis operation.
    pub operation_timeout: Option<String>,
    /// Lifetime of a sign-in lease.
    pub lease_ttl: Option<String>,
    /// Longest wait for another replica's sign-in.
    pub lease_wait: Option<String>,
    /// Consecutive Redis failures that open the circuit breaker.
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before probing Redis again.
    pub breaker_cooldown: Option<String>,
}

/// `[tableau]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTableau {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Option<String>,
    /// Whole-request timeout.
    pub request_timeout: Option<String>,
}

/// `[telemetry]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// "json" or "text".
    pub log_format: Option<String>,
    /// Log filter, `RUST_LOG` syntax.
    pub log_filter: Option<String>,
    /// OTLP/gRPC endpoint for traces; unset means `OTEL_EXPORTER_OTLP_*` decide.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the traces; unset means `OTEL_SERVICE_NAME`, then the default.
    pub service_name: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the plain-HTTP admin listener.
    pub listen: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Where records go: a file path, or "-" for standard output.
    pub path: Option<PathBuf>,
    /// "fail-closed" or "best-effort".
    pub mode: Option<String>,
    /// fdatasync after each batch of records.
    pub sync: Option<bool>,
    /// Key shared by replicas for stable token fingerprints.
    pub hmac_key_file: Option<PathBuf>,
    /// false turns the trail off; development configurations only.
    pub enabled: Option<bool>,
}

/// `[reload]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// How often every watched file is re-read in case no file event arrived.
    pub check_interval: Option<String>,
    /// How long to wait after a file event for the rest of a burst of writes.
    pub debounce: Option<String>,
}

/// `[sites.NAME]`.
#[derive(Debug, Default, Deserialize, Serialize)]
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
    /// How Tableau trusts the broker for this site: "direct" (default), "eas" or "uat".
    pub trust: Option<String>,
    /// `[sites.NAME.eas]`, with `trust = "eas"`.
    pub eas: Option<RawEas>,
    /// `[sites.NAME.uat]`, with `trust = "uat"`.
    pub uat: Option<RawUat>,
}

/// `[issuer]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    /// The `iss` claim, exactly as registered in Tableau (https).
    pub url: Option<String>,
    /// Where to serve the metadata and the JWKS; not served when absent.
    pub listen: Option<String>,
    /// HTTPS certificate chain of the issuer listener.
    pub cert: Option<PathBuf>,
    /// HTTPS private key of the issuer listener.
    pub key: Option<PathBuf>,
    /// The `id` of the key that signs.
    pub active_key: Option<String>,
    /// How far `iat` and `nbf` are backdated (default 5s).
    pub clock_skew: Option<String>,
    /// Every key, published in the JWKS.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub keys: Vec<RawIssuerKey>,
}

/// `[[issuer.keys]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuerKey {
    /// The `kid`.
    pub id: Option<String>,
    /// A PKCS#8 PEM private key: this key may sign.
    pub private_key_file: Option<PathBuf>,
    /// A PEM public key: published only (rotation).
    pub public_key_file: Option<PathBuf>,
}

/// `[sites.NAME.eas]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEas {
    /// The `aud` claim: `tableau:<site LUID>` on Tableau Cloud, `tableau` on Tableau Server.
    pub audience: Option<String>,
}

/// `[sites.NAME.uat]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUat {
    /// The Tableau Cloud tenant ID (`https://tableau.com/tenantId`).
    pub tenant_id: Option<String>,
    /// The claim that carries the username (default `email`).
    pub username_claim: Option<String>,
}

/// `[sites.NAME.connected_app]`.
#[derive(Default, Deserialize, Serialize)]
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
    #[serde(serialize_with = "inline_secret")]
    pub secret: Option<SecretString>,
    /// Which of `secrets` signs JWTs (the other is tried once when Tableau refuses it).
    pub active_secret_id: Option<String>,
    /// One or two secrets, for rotation without failed calls.
    pub secrets: Option<Vec<RawAppSecret>>,
}

/// `[[sites.NAME.connected_app.secrets]]`.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppSecret {
    /// Secret ID (the JWT's `kid`).
    pub secret_id: Option<String>,
    /// File holding the secret value.
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret value.
    pub secret_env: Option<String>,
    /// Inline secret value; development configs only.
    #[serde(serialize_with = "inline_secret")]
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
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    /// SPIFFE ID (optionally ending in `/*`), DNS name or subject CN.
    pub identity: Option<String>,
    /// What the caller may ask for.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub grants: Vec<RawGrant>,
    /// This entry's sign-in rate, instead of `[limits] sign_ins_per_second`.
    pub sign_ins_per_second: Option<f64>,
    /// This entry's sign-in burst, instead of `[limits] sign_in_burst`.
    pub sign_in_burst: Option<u64>,
}

/// `[[callers.grants]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    /// Site names.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub sites: Vec<String>,
    /// Users: exact names or globs.
    #[serde(default)]
    pub users: Vec<String>,
    /// Authorization scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes refused even when allowed above.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub deny_scopes: Vec<String>,
    /// Longest JWT lifetime for this grant.
    pub max_jwt_ttl: Option<String>,
    /// User attributes callers may ask for: name → allowed values (`"*"`: any value).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Group names callers may ask for (globs).
    #[serde(default, skip_serializing_if = "is_empty")]
    pub groups: Vec<String>,
    /// Whether callers may ask for on-demand access.
    pub on_demand_access: Option<bool>,
}

/// `callers` as `[[callers]]` entries, for tools that write entries on their own (the access
/// review's suggestions, the dev kit's entries under their comments).
pub fn callers_toml(callers: &[RawCaller]) -> Result<String, toml::ser::Error> {
    #[derive(Serialize)]
    struct Callers<'a> {
        callers: &'a [RawCaller],
    }
    toml::to_string(&Callers { callers })
}

/// `admins` as `[[admins]]` entries (the access review's candidate file keeps them).
pub fn admins_toml(admins: &[super::admins::RawAdminEntry]) -> Result<String, toml::ser::Error> {
    #[derive(Serialize)]
    struct Admins<'a> {
        admins: &'a [super::admins::RawAdminEntry],
    }
    toml::to_string(&Admins { admins })
}

/// Leaves a section out of the written file when nothing in it is set.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Leaves an empty list or table out of the written file: the loader reads absence as empty.
fn is_empty<C>(collection: &C) -> bool
where
    for<'a> &'a C: IntoIterator,
{
    collection.into_iter().next().is_none()
}

/// Writes an inline secret. Only a development configuration holds one (the loader refuses it
/// elsewhere), and writing the file it came from is the one place its value may go.
fn inline_secret<S: Serializer>(secret: &Option<SecretString>, ser: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => ser.serialize_some(secret.expose_secret()),
        None => ser.serialize_none(),
    }
}
