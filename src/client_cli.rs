//! The CLI client: `get`, `mint`, `invalidate` and `whoami` against a running broker over mTLS.
//!
//! The commands run on the broker's Rust client crate ([`tableau_token_broker_client`]), the same
//! code calling services use, with its retries off: an operator sees each error as the broker (or
//! the network) gave it. Each command is a library function that returns the text to print (a
//! readable summary, or JSON for scripts) or a [`ClientCliError`], so `main.rs` stays a thin
//! dispatcher and tests can check the same code the binary runs. Tokens and JWTs are printed in
//! full only when asked for (`--json`, `--token-only`, `--jwt-only`); summaries show a short
//! prefix so a terminal or a screen share does not leak them.

use std::future::Future;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use tableau_token_broker_client::proto;
use tableau_token_broker_client::{
    Client, Credentials, CredentialsRequest, ExposeSecret, MintJwtRequest, RetryPolicy,
    SecretString,
};

/// The gRPC spec's name of a status code (`PERMISSION_DENIED`); the client crate's, re-exported
/// for the demo and other callers of this module.
pub use tableau_token_broker_client::code_name;

/// Parses a humantime duration ("30s", "5m") for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
}

/// Characters of a token or JWT shown in readable output: enough to tell two apart, too few to
/// use.
const PREFIX_CHARS: usize = 4;

/// How long a call runs before the spinner appears.
const SPINNER_DELAY: Duration = Duration::from_millis(300);

/// How to reach the broker; shared by every client command, each flag also read from the
/// environment so scripts set them once.
#[derive(Debug, Clone, Args)]
pub struct ConnectOpts {
    /// Broker address, host:port.
    #[arg(long, env = "TTB_ADDR", default_value = "localhost:7443")]
    pub addr: String,
    /// Client certificate (PEM) the broker identifies this caller by.
    #[arg(long, env = "TTB_CERT")]
    pub cert: PathBuf,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "TTB_KEY")]
    pub key: PathBuf,
    /// CA certificate (PEM) that signed the broker's certificate.
    #[arg(long, env = "TTB_CA")]
    pub ca: PathBuf,
    /// Name to check the broker's certificate against (default: the host of --addr).
    #[arg(long, env = "TTB_SERVER_NAME")]
    pub server_name: Option<String>,
}

/// What `get` and `mint` ask for: the same three things the broker's policy decides on.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Site name from the broker's configuration.
    #[arg(long)]
    pub site: String,
    /// Tableau username (the JWT's sub claim).
    #[arg(long)]
    pub user: String,
    /// Scope the token needs; repeat for more.
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// User attribute claim as NAME=VALUE; repeat for more (a name given twice has two values).
    /// The caller's grant must allow it.
    #[arg(long = "attribute", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
    /// Group claim; repeat for more. The caller's grant must allow it.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Ask for on-demand access. The caller's grant must allow it.
    #[arg(long)]
    pub on_demand_access: bool,
}

/// `--attribute NAME=VALUE`.
pub(crate) fn parse_attribute(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{s:?} is not NAME=VALUE: give the attribute as --attribute region=emea"
        )),
    }
}

/// `get`: credentials for a site and user.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Site, user and scopes.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Replace a cached token with less life left than this ("10m").
    #[arg(long, value_parser = parse_duration)]
    pub min_remaining: Option<Duration>,
    /// Sign in again even when a cached token is still good.
    #[arg(long)]
    pub force_refresh: bool,
    /// Print JSON (with the full token) instead of a summary.
    #[arg(long, conflicts_with = "token_only")]
    pub json: bool,
    /// Print only the token, for `export TOKEN=$(...)`.
    #[arg(long)]
    pub token_only: bool,
}

/// `mint`: a connected-app JWT.
#[derive(Debug, Clone, Args)]
pub struct MintArgs {
    /// Site, user and scopes.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Requested lifetime ("2m"); capped by the broker.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Print JSON (with the full JWT) instead of a summary.
    #[arg(long, conflicts_with = "jwt_only")]
    pub json: bool,
    /// Print only the JWT.
    #[arg(long)]
    pub jwt_only: bool,
}

/// `invalidate`: report a token Tableau refused.
#[derive(Debug, Clone, Args)]
pub struct InvalidateArgs {
    /// The credentials token; "-" reads it from stdin (keeps it out of the process list).
    #[arg(env = "TTB_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `whoami`: how the broker sees this caller.
#[derive(Debug, Clone, Args)]
pub struct WhoamiArgs {
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientCliError {
    /// A certificate or key file could not be read.
    #[error("cannot read the {what} file {path}: {source}; check --{flag} (or ${env})")]
    Read {
        /// Which file ("client certificate", ...).
        what: &'static str,
        /// Its flag name.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        source: Arc<std::io::Error>,
    },
    /// The token could not be read from stdin.
    #[error("cannot read the token from stdin: {0}")]
    Stdin(std::io::Error),
    /// The client could not be set up (an unusable PEM file, a malformed address or server
    /// name) or the broker's answer was malformed.
    #[error(transparent)]
    Connect(#[from] tableau_token_broker_client::Error),
    /// The admin commands' mTLS channel could not be set up (an unusable PEM file, a malformed
    /// address or server name).
    #[error(transparent)]
    Channel(Box<crate::transport::client::ClientError>),
    /// The broker answered with an error.
    #[error("{code}{}: {message}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Rpc {
        /// The gRPC status code, as in the gRPC spec ("PERMISSION_DENIED").
        code: &'static str,
        /// `ErrorInfo.reason` from the status details, when the broker gave one.
        reason: Option<String>,
        /// The broker's message.
        message: String,
    },
}

impl ClientCliError {
    /// Builds the error for a status the broker (or the transport) returned.
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::from_client(tableau_token_broker_client::Error::from_status(status))
    }

    /// Builds the error for what the client crate returned: a file it could not read names its
    /// flag and variable, a gRPC error keeps the broker's code, reason and message.
    pub fn from_client(e: tableau_token_broker_client::Error) -> Self {
        use tableau_token_broker_client::Error;
        match e {
            Error::Read { what, path, source } => {
                let (what, flag, env) = match what {
                    "client certificate" => ("client certificate", "cert", "TTB_CERT"),
                    "client key" => ("client key", "key", "TTB_KEY"),
                    _ => ("CA certificate", "ca", "TTB_CA"),
                };
                ClientCliError::Read {
                    what,
                    flag,
                    env,
                    path,
                    source,
                }
            }
            Error::Rpc {
                code,
                reason,
                message,
                ..
            } => ClientCliError::Rpc {
                code: code_name(code),
                reason,
                message,
            },
            other => ClientCliError::Connect(other),
        }
    }
}

/// The first characters of a token or JWT for readable output (`12ab…`): a raw prefix that is
/// too short to use, unlike the audit log's keyed `audit::Fingerprint`, which reveals nothing.
pub fn token_prefix(secret: &str) -> String {
    let prefix: String = secret.chars().take(PREFIX_CHARS).collect();
    format!("{prefix}…")
}

/// The address without a scheme, and the host part for certificate checks.
fn split_addr(addr: &str) -> (String, String) {
    let addr = addr
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr.as_str(),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    (addr, host)
}

fn read(
    path: &Path,
    what: &'static str,
    flag: &'static str,
    env: &'static str,
) -> Result<Vec<u8>, ClientCliError> {
    std::fs::read(path).map_err(|source| ClientCliError::Read {
        what,
        flag,
        env,
        path: path.to_path_buf(),
        source: Arc::new(source),
    })
}

/// An mTLS channel to the broker, for any of its services (the admin commands use it too).
pub async fn channel(opts: &ConnectOpts) -> Result<tonic::transport::Channel, ClientCliError> {
    let ca = read(&opts.ca, "CA certificate", "ca", "TTB_CA")?;
    let cert = read(&opts.cert, "client certificate", "cert", "TTB_CERT")?;
    let key = SecretString::from(
        String::from_utf8_lossy(&read(&opts.key, "client key", "key", "TTB_KEY")?).into_owned(),
    );
    let (addr, host) = split_addr(&opts.addr);
    let server_name = opts.server_name.clone().unwrap_or(host);
    let channel = crate::transport::client::connect(
        &addr,
        &ca,
        &cert,
        key.expose_secret().as_bytes(),
        &server_name,
    )
    .await
    .map_err(|e| ClientCliError::Channel(Box::new(e)))?;
    Ok(channel)
}

/// The client for the settings in `opts`: reads the certificate, key and CA files now (errors
/// name the flag to fix); connects on the first call. No retries, and no credentials cache that
/// outlives the command.
pub fn client(opts: &ConnectOpts) -> Result<Client, ClientCliError> {
    let mut builder = Client::builder()
        .endpoint(&opts.addr)
        .identity_files(&opts.cert, &opts.key)
        .ca_file(&opts.ca)
        .retry(RetryPolicy::none());
    if let Some(name) = &opts.server_name {
        builder = builder.server_name(name);
    }
    builder.build().map_err(ClientCliError::from_client)
}

/// Runs `fut`, showing a spinner on stderr when it takes longer than [`SPINNER_DELAY`] (a
/// sign-in against a slow Tableau) and stderr is a terminal; nothing otherwise, so quick calls do
/// not flicker and piped output and logs stay clean.
async fn with_spinner<T>(message: &'static str, fut: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return fut.await;
    }
    let mut fut = std::pin::pin!(fut);
    tokio::select! {
        out = &mut fut => return out,
        () = tokio::time::sleep(SPINNER_DELAY) => {}
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(100));
    let out = fut.await;
    spinner.finish_and_clear();
    out
}

pub(crate) fn rfc3339_ts(ts: Option<prost_types::Timestamp>) -> String {
    ts.and_then(|t| SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "(not set)".to_owned())
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn to_json(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// `get`: asks for credentials; shows a spinner while the broker signs in.
pub async fn get(conn: &ConnectOpts, args: &GetArgs) -> Result<String, ClientCliError> {
    let c = client(conn)?;
    // No --min-remaining is zero, as the broker reads an unset one: any live cached token.
    let t = &args.target;
    let mut req = CredentialsRequest::new(&t.site, &t.user)
        .scopes(&t.scopes)
        .groups(&t.groups)
        .on_demand_access(t.on_demand_access)
        .min_remaining(args.min_remaining.unwrap_or(Duration::ZERO))
        .force_refresh(args.force_refresh);
    for (name, value) in &t.attributes {
        req = req.attribute(name, [value]);
    }
    let creds = with_spinner(
        "waiting for the broker (signing in to Tableau)…",
        c.credentials(&req),
    )
    .await
    .map_err(ClientCliError::from_client)?;
    Ok(render_credentials(&creds, args.json, args.token_only))
}

/// Formats credentials: JSON, the bare token, or a summary without the token.
pub fn render_credentials(r: &Credentials, json: bool, token_only: bool) -> String {
    let token = r.token.expose_secret();
    if token_only {
        return format!("{token}\n");
    }
    if json {
        return to_json(&serde_json::json!({
            "token": token,
            "site_luid": r.site_luid,
            "site_content_url": r.site_content_url,
            "user_luid": r.user_luid,
            "server_url": r.server_url,
            "api_version": r.api_version,
            "expires_at": rfc3339(r.expires_at),
            "scopes": r.scopes,
            "from_cache": r.from_broker_cache,
        }));
    }
    format!(
        "token        {} (full token: --token-only or --json)\n\
         source       {}\n\
         site LUID    {}\n\
         content URL  {:?}\n\
         user LUID    {}\n\
         server       {} (REST API {})\n\
         scopes       {}\n\
         expires at   {}\n",
        token_prefix(token),
        if r.from_broker_cache {
            "cache hit"
        } else {
            "fresh sign-in"
        },
        r.site_luid,
        r.site_content_url,
        r.user_luid,
        r.server_url,
        r.api_version,
        r.scopes.join(", "),
        rfc3339(r.expires_at),
    )
}

/// `mint`: a connected-app JWT.
pub async fn mint(conn: &ConnectOpts, args: &MintArgs) -> Result<String, ClientCliError> {
    let c = client(conn)?;
    let t = &args.target;
    let mut req = MintJwtRequest::new(&t.site, &t.user)
        .scopes(&t.scopes)
        .groups(&t.groups)
        .on_demand_access(t.on_demand_access);
    for (name, value) in &t.attributes {
        req = req.attribute(name, [value]);
    }
    if let Some(ttl) = args.ttl {
        req = req.ttl(ttl);
    }
    let r = c
        .mint_jwt(&req)
        .await
        .map_err(ClientCliError::from_client)?;
    let jwt = r.jwt.expose_secret();
    if args.jwt_only {
        return Ok(format!("{jwt}\n"));
    }
    if args.json {
        return Ok(to_json(&serde_json::json!({
            "jwt": jwt,
            "jti": r.jti,
            "expires_at": rfc3339(r.expires_at),
        })));
    }
    Ok(format!(
        "jwt          {} (full JWT: --jwt-only or --json)\n\
         jti          {}\n\
         expires at   {}\n",
        token_prefix(jwt),
        r.jti,
        rfc3339(r.expires_at),
    ))
}

/// `invalidate`: evicts a token Tableau refused and ends its session.
pub async fn invalidate(
    conn: &ConnectOpts,
    args: &InvalidateArgs,
) -> Result<String, ClientCliError> {
    let token = if args.token == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(ClientCliError::Stdin)?;
        SecretString::from(s.trim().to_owned())
    } else {
        SecretString::from(args.token.clone())
    };
    let c = client(conn)?;
    let r = c
        .invalidate(&token)
        .await
        .map_err(ClientCliError::from_client)?;
    if args.json {
        return Ok(to_json(&serde_json::json!({
            "evicted": r.evicted,
            "signed_out": r.signed_out,
        })));
    }
    Ok(format!(
        "token {}: {}, {}\n",
        token_prefix(token.expose_secret()),
        if r.evicted {
            "evicted from the cache"
        } else {
            "not in the cache"
        },
        if r.signed_out {
            "session signed out at Tableau"
        } else {
            "no session signed out"
        },
    ))
}

/// `whoami`: the identity the broker read from the client certificate and its grants.
pub async fn whoami(conn: &ConnectOpts, args: &WhoamiArgs) -> Result<String, ClientCliError> {
    let c = client(conn)?;
    let r = c.whoami().await.map_err(ClientCliError::from_client)?;
    let ttl = |g: &proto::Grant| {
        g.max_jwt_ttl
            .and_then(|d| Duration::try_from(d).ok())
            .map(|d| humantime::format_duration(d).to_string())
    };
    if args.json {
        let grants: Vec<_> = r
            .grants
            .iter()
            .map(|g| {
                serde_json::json!({
                    "sites": g.sites,
                    "users": g.users,
                    "scopes": g.scopes,
                    "deny_scopes": g.deny_scopes,
                    "max_jwt_ttl": ttl(g),
                    "attributes": g
                        .attributes
                        .iter()
                        .map(|(name, v)| (name.clone(), v.values.clone()))
                        .collect::<std::collections::BTreeMap<_, _>>(),
                    "groups": g.groups,
                    "on_demand_access": g.on_demand_access,
                })
            })
            .collect();
        return Ok(to_json(&serde_json::json!({
            "identity": r.identity,
            "source": r.source,
            "matched_entry": r.matched_entry,
            "grants": grants,
        })));
    }
    let mut out = format!(
        "identity     {}\nsource       {}\nmatched      {}\n",
        r.identity, r.source, r.matched_entry
    );
    if r.grants.is_empty() {
        out.push_str("grants       none: the broker refuses every request from this caller\n");
    }
    for (i, g) in r.grants.iter().enumerate() {
        out.push_str(&format!(
            "grant {}\n  sites      {}\n  users      {}\n  scopes     {}\n",
            i + 1,
            g.sites.join(", "),
            g.users.join(", "),
            g.scopes.join(", ")
        ));
        if !g.deny_scopes.is_empty() {
            out.push_str(&format!("  denied     {}\n", g.deny_scopes.join(", ")));
        }
        if let Some(t) = ttl(g) {
            out.push_str(&format!("  max JWT    {t}\n"));
        }
        // Sorted: a protobuf map arrives in no particular order.
        let attributes: std::collections::BTreeMap<_, _> = g.attributes.iter().collect();
        for (name, v) in attributes {
            out.push_str(&format!("  attribute  {name} = {}\n", v.values.join(", ")));
        }
        if !g.groups.is_empty() {
            out.push_str(&format!("  groups     {}\n", g.groups.join(", ")));
        }
        if g.on_demand_access {
            out.push_str("  on-demand access allowed\n");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn opts(dir: &std::path::Path) -> ConnectOpts {
        ConnectOpts {
            addr: "127.0.0.1:1".into(),
            cert: dir.join("c.crt"),
            key: dir.join("c.key"),
            ca: dir.join("ca.crt"),
            server_name: None,
        }
    }

    #[test]
    fn a_missing_file_names_its_flag_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (file, flag) in [
            (None, "client certificate file"),
            (Some("c.crt"), "client key file"),
            (Some("c.key"), "CA certificate file"),
        ] {
            if let Some(f) = file {
                std::fs::write(dir.path().join(f), pem).unwrap();
            }
            let err = client(&o).unwrap_err().to_string();
            assert!(err.starts_with(&format!("cannot read the {flag}")), "{err}");
            let (opt, var) = match flag {
                "client certificate file" => ("--cert", "$TTB_CERT"),
                "client key file" => ("--key", "$TTB_KEY"),
                _ => ("--ca", "$TTB_CA"),
            };
            assert!(err.ends_with(&format!("check {opt} (or {var})")), "{err}");
        }
    }

    #[test]
    fn errors_read_like_the_broker_said_them() {
        let e = ClientCliError::Rpc {
            code: code_name(Code::PermissionDenied),
            reason: Some("SCOPE_NOT_ALLOWED".into()),
            message: "scope x is not granted".into(),
        };
        assert_eq!(
            e.to_string(),
            "PERMISSION_DENIED (SCOPE_NOT_ALLOWED): scope x is not granted"
        );
        let unavailable = ClientCliError::from_status(&tonic::Status::unavailable("down"));
        assert_eq!(unavailable.to_string(), "UNAVAILABLE: down");
        assert_eq!(token_prefix("12abcdef"), "12ab…");
    }

    #[test]
    fn summaries_never_hold_the_token() {
        let token = "0123456789abcdef0123456789abcdef";
        let r = Credentials::try_from(proto::GetCredentialsResponse {
            token: token.into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .unwrap();
        let text = render_credentials(&r, false, false);
        assert!(!text.contains(token), "{text}");
        assert!(text.contains("0123…"), "{text}");
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        let json = render_credentials(&r, true, false);
        assert!(json.contains(token), "{json}");
        assert!(json.contains("\"from_cache\": false"), "{json}");
        assert_eq!(render_credentials(&r, false, true), format!("{token}\n"));
    }
}
