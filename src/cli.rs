//! Command-line surface. `main.rs` parses [`Cli`] and dispatches; the work lives in library
//! functions so tests can call them without a process.

// The doc comments of this module's clap types are `--help` text, where `[[callers]]`,
// `[admins]` and `[audit]` are TOML sections, not links.
#![allow(rustdoc::broken_intra_doc_links)]

#[cfg(feature = "dev-kit")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::catalog::Catalog;
use crate::client_cli::{ConnectOpts, GetArgs, InvalidateArgs, MintArgs, WhoamiArgs};
#[cfg(feature = "dev-kit")]
use crate::devkit::demo::DemoOpts;

/// Exit code for a configuration that does not validate (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

/// Why `tableau-token-broker jwt` could not print a JWT.
#[derive(Debug, thiserror::Error)]
pub enum OfflineJwtError {
    /// The site is not in the configuration.
    #[error("site {0:?} is not in the configuration; use a [sites.NAME] name from it")]
    UnknownSite(String),
    /// A scope is unknown or malformed, or none was given.
    #[error("{0}")]
    Scopes(#[from] crate::policy::Denial),
    /// Signing failed.
    #[error("{0}")]
    Mint(#[from] crate::mint::MintError),
}

/// `tableau-token-broker jwt`: a connected-app JWT for `site` with the configured secret, for
/// operators debugging a connected app. No caller policy applies: whoever can read the
/// configuration's secrets can sign anyway.
pub fn offline_jwt(
    config: &crate::config::Config,
    site: &str,
    user: &str,
    scopes: &[String],
    ttl: Option<Duration>,
) -> Result<crate::mint::MintedJwt, OfflineJwtError> {
    let site_cfg = config
        .site(site)
        .ok_or_else(|| OfflineJwtError::UnknownSite(site.to_owned()))?;
    let scopes = config.policy.normalize_scopes(scopes)?;
    let minter = crate::mint::Minter::new(crate::clock::system());
    Ok(minter.mint_for(
        site_cfg,
        None,
        user,
        &scopes,
        &crate::claims::ClaimSet::default(),
        ttl.unwrap_or(site_cfg.jwt_ttl),
    )?)
}

/// `tableau-token-broker`: Tableau credentials for internal services, over mTLS.
#[derive(Debug, Parser)]
#[command(name = "tableau-token-broker", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (gRPC over mTLS).
    #[command(
        after_help = "Example:\n  tableau-token-broker serve --config /etc/tableau-token-broker/broker.toml"
    )]
    Serve {
        /// Configuration file.
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file and print a summary (no secrets); exit 64 on errors.
    #[command(
        name = "check-config",
        after_help = "Example:\n  tableau-token-broker check-config examples/config.toml\n  tableau-token-broker check-config --strict broker.toml   # in CI, before kubectl apply"
    )]
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
        /// Also refuse placeholders a valid file may still hold: a server_url on example.com,
        /// example.org or example.net, connected-app IDs that are empty or say REPLACE,
        /// CHANGE-ME or xxxxxxxx, and an empty [[callers]] list. For the pod's init container
        /// and CI before `kubectl apply`; `serve` accepts them.
        #[arg(long)]
        strict: bool,
    },
    /// Print a connected-app JWT offline, for debugging a connected app.
    ///
    /// Uses the configured secret and applies NO caller policy: it is an operator tool, for
    /// whoever can already read the secret.
    #[command(
        after_help = "Example:\n  tableau-token-broker jwt --config broker.toml --site finance --user svc-renderer --scope tableau:content:read"
    )]
    Jwt {
        /// Configuration file.
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
        /// Site name from the configuration.
        #[arg(long)]
        site: String,
        /// Tableau username (the `sub` claim).
        #[arg(long)]
        user: String,
        /// Scope for the `scp` claim; repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Lifetime (default: the site's jwt_ttl; at most 10m).
        #[arg(long, value_parser = crate::client_cli::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Work with the audit trail offline: fingerprint a token, review access.
    #[command(
        subcommand,
        after_help = "Example:\n  tableau-token-broker audit review --config broker.toml /var/log/tableau-token-broker/audit.jsonl --since 30d"
    )]
    Audit(AuditCommand),
    /// The broker as an OAuth 2.0 issuer (EAS and UAT trust): print what the issuer listener
    /// serves, for static hosting, or generate a key.
    #[command(
        subcommand,
        after_help = "Example:\n  tableau-token-broker issuer keygen --alg ES256 --out /etc/tableau-token-broker/issuer/2026-12.pem\n  tableau-token-broker issuer jwks --config broker.toml"
    )]
    Issuer(IssuerCommand),
    /// Explore the scope catalog offline.
    #[command(
        subcommand,
        after_help = "Example:\n  tableau-token-broker scopes explain 'tableau:tasks:*'"
    )]
    Scopes(ScopesCommand),
    /// Run the Tableau double (a stand-in for Tableau's REST API, for tests and demos).
    ///
    /// Development builds only (the `dev-kit` feature); the same program ships as `tableau-double`.
    #[cfg(feature = "dev-kit")]
    #[command(
        name = "fake-tableau",
        after_help = "Example:\n  tableau-token-broker fake-tableau --config examples/fake-tableau.toml --listen 127.0.0.1:8080"
    )]
    FakeTableau {
        /// Double's configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Address to listen on (overrides the file); port 0 picks a free one.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the whole system locally: dev certificates, the Tableau double, the broker, a client.
    ///
    /// Creates (or reuses) a development CA and client certificates in the state folder, starts
    /// the Tableau double and the broker on loopback, asks for credentials twice (a sign-in, then
    /// a cache hit), shows a refused scope escalation, prints what to try next, and serves until
    /// Ctrl-C. Development builds only (the `dev-kit` feature).
    #[cfg(feature = "dev-kit")]
    #[command(
        after_help = "Example:\n  tableau-token-broker demo\n  tableau-token-broker demo --listen 127.0.0.1:0 --state-dir /tmp/ttb-demo --no-wait"
    )]
    Demo(DemoOpts),
    /// Get Tableau credentials (X-Tableau-Auth token, site LUID) from a broker.
    ///
    /// The summary shows only a short prefix of the token; --token-only or --json print it.
    #[command(
        after_help = "Example:\n  tableau-token-broker get --addr localhost:7443 --ca ca.crt --cert renderer.crt --key renderer.key \\\n    --site finance --user svc-renderer --scope tableau:content:read\n  export TOKEN=$(tableau-token-broker get --site finance --user svc-renderer --scope tableau:content:read --token-only)\n\nTTB_ADDR, TTB_CA, TTB_CERT and TTB_KEY set the connection once for every command."
    )]
    Get {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// Request.
        #[command(flatten)]
        args: GetArgs,
    },
    /// Get a connected-app JWT from a broker (for callers that sign in or embed themselves).
    #[command(
        after_help = "Example:\n  tableau-token-broker mint --site finance --user svc-renderer --scope tableau:views:embed --ttl 2m --json"
    )]
    Mint {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// Request.
        #[command(flatten)]
        args: MintArgs,
    },
    /// Report a token Tableau refused: the broker evicts it and signs its session out.
    #[command(
        after_help = "Example:\n  tableau-token-broker invalidate \"$TOKEN\"\n  echo \"$TOKEN\" | tableau-token-broker invalidate -"
    )]
    Invalidate {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// Request.
        #[command(flatten)]
        args: InvalidateArgs,
    },
    /// Operate a running broker (issue 27): revoke sessions, list them, explain a decision.
    /// Needs a client certificate listed in [[admins]].
    #[command(subcommand)]
    Admin(crate::admin_cli::AdminCommand),
    /// Ask a configuration's policy offline (no broker running).
    #[command(subcommand)]
    Policy(crate::admin_cli::PolicyCommand),
    /// Show who the broker thinks this client is, and what it may ask for.
    #[command(
        after_help = "Example:\n  tableau-token-broker whoami --addr localhost:7443 --ca ca.crt --cert renderer.crt --key renderer.key"
    )]
    Whoami {
        /// Connection.
        #[command(flatten)]
        conn: ConnectOpts,
        /// Output.
        #[command(flatten)]
        args: WhoamiArgs,
    },
}

/// `scopes` subcommands.
#[derive(Debug, Subcommand)]
pub enum ScopesCommand {
    /// List every known scope with its kind.
    #[command(after_help = "Example:\n  tableau-token-broker scopes list")]
    List(ScopesOpts),
    /// Show the REST methods a scope enables.
    #[command(after_help = "Example:\n  tableau-token-broker scopes explain 'tableau:tasks:*'")]
    Explain {
        /// The scope.
        scope: String,
        /// Output options.
        #[command(flatten)]
        opts: ScopesOpts,
    },
    /// The smallest scope set for some REST methods.
    #[command(
        after_help = "Example:\n  tableau-token-broker scopes for \"Query View PDF\" \"Update Workbook Now\""
    )]
    For {
        /// Method names as in Tableau's REST reference.
        #[arg(required = true)]
        methods: Vec<String>,
        /// Output options.
        #[command(flatten)]
        opts: ScopesOpts,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the fingerprint of a token read on standard input, as the audit trail shows it.
    ///
    /// With the brokers' shared [audit] hmac_key_file, the fingerprint finds a leaked token in
    /// the trail of every replica.
    #[command(
        after_help = "Example:\n  printf %s \"$LEAKED_TOKEN\" | tableau-token-broker audit fingerprint --key-file /etc/tableau-token-broker/audit-hmac.key\n  grep '\"token_fp\":\"<printed>\"' /var/log/tableau-token-broker/audit.jsonl"
    )]
    Fingerprint {
        /// The key file named by [audit] hmac_key_file.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Access review: per caller entry, what its grants allow against what was used, grants
    /// never used, refusals by reason, and a tightened [[callers]] section.
    #[command(
        after_help = "Example:\n  tableau-token-broker audit review --config broker.toml audit.jsonl --since 30d\n  tableau-token-broker audit review --config broker.toml audit.jsonl --since 2026-01-01T00:00:00Z --json"
    )]
    Review {
        /// The broker's configuration (its [[callers]] are reviewed).
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
        /// The audit trail (JSON lines); "-" reads standard input.
        trail: PathBuf,
        /// Only decisions since then: a duration back from now ("30d") or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the tightened grants as a candidate policy file (`[policy] candidate`).
        #[arg(long, value_name = "FILE")]
        emit_candidate: Option<PathBuf>,
    },
}

/// Why an `audit` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// The key file cannot be used.
    #[error(transparent)]
    Key(#[from] crate::audit::KeyFileError),
    /// Standard input could not be read, or held no token.
    #[error("reading the token from standard input: {0}")]
    Stdin(String),
    /// The trail could not be opened.
    #[error("cannot open the audit trail {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The candidate file could not be written.
    #[error("cannot write the candidate file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The review failed.
    #[error(transparent)]
    Review(#[from] crate::review::ReviewError),
}

/// Longest token read by `audit fingerprint` (Tableau tokens are well under 1 KiB).
pub const MAX_TOKEN_LEN: u64 = 64 << 10;

/// `audit fingerprint`: the fingerprint of the token in `input` (surrounding whitespace ignored)
/// under the key in `key_file`, followed by a newline.
pub fn audit_fingerprint(
    key_file: &std::path::Path,
    input: impl std::io::Read,
) -> Result<String, AuditCliError> {
    use std::io::Read as _;
    let fp = crate::audit::Fingerprinter::from_key_file(key_file)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    input
        .take(MAX_TOKEN_LEN)
        .read_to_string(&mut text)
        .map_err(|e| AuditCliError::Stdin(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(AuditCliError::Stdin(
            "no token; pipe the token in, e.g. `printf %s \"$TOKEN\" | tableau-token-broker audit fingerprint --key-file F`".into(),
        ));
    }
    let token = secrecy::SecretString::from(token.to_owned());
    Ok(format!("{}\n", fp.fingerprint(&token)))
}

/// `audit review`: the review of the trail at `trail` ("-": `stdin`) against `config`, as text
/// or JSON.
pub fn audit_review(
    config: &crate::config::Config,
    trail: &std::path::Path,
    stdin: impl std::io::Read,
    since: Option<&str>,
    json: bool,
    emit_candidate: Option<&std::path::Path>,
) -> Result<String, AuditCliError> {
    use crate::review;
    let since = since
        .map(|s| review::parse_since(s, std::time::SystemTime::now()))
        .transpose()?;
    let result = if trail.as_os_str() == "-" {
        review::review(config, std::io::BufReader::new(stdin), since)?
    } else {
        let file = std::fs::File::open(trail).map_err(|source| AuditCliError::Open {
            path: trail.to_owned(),
            source,
        })?;
        review::review(
            config,
            std::io::BufReader::with_capacity(256 << 10, file),
            since,
        )?
    };
    if let Some(path) = emit_candidate {
        std::fs::write(path, result.candidate_toml(config)?).map_err(|source| {
            AuditCliError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(if json {
        let mut s = serde_json::to_string_pretty(&result).unwrap_or_default();
        s.push('\n');
        s
    } else {
        result.to_text()
    })
}

/// Options shared by the `scopes` subcommands.
#[derive(Debug, Args)]
pub struct ScopesOpts {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why an offline `scopes` query failed.
#[derive(Debug, thiserror::Error)]
pub enum ScopesError {
    /// Not a scope at all.
    #[error(transparent)]
    Parse(#[from] crate::scope::ScopeParseError),
    /// Well formed but unknown.
    #[error("unknown scope {0:?}{1}; run `tableau-token-broker scopes list` to see the known ones")]
    Unknown(String, String),
    /// Some method names are unknown.
    #[error(
        "unknown method(s): {0:?}; names are as in Tableau's REST reference, e.g. \"Query View PDF\""
    )]
    UnknownMethods(Vec<String>),
}

/// `scopes list`.
pub fn scopes_list(catalog: &Catalog, json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(&catalog.scopes().collect::<Vec<_>>())
            .unwrap_or_default();
    }
    let mut out = String::new();
    for e in catalog.scopes() {
        let n = catalog.methods_enabled_by(&e.scope).len();
        out.push_str(&format!(
            "{:<34} {:<13}{} {:>2} method(s){}\n",
            e.scope.to_string(),
            e.kind.as_str(),
            if e.cross_category { " cross" } else { "      " },
            n,
            if e.notes.is_empty() {
                String::new()
            } else {
                format!("  ({})", e.notes)
            }
        ));
    }
    out
}

/// `scopes explain SCOPE`.
pub fn scopes_explain(catalog: &Catalog, scope: &str, json: bool) -> Result<String, ScopesError> {
    let s: crate::scope::Scope = scope.trim().parse()?;
    let Some(e) = catalog.get(&s) else {
        let hint = catalog
            .suggest(scope)
            .map(|h| format!(" (did you mean {:?}?)", h.to_string()))
            .unwrap_or_default();
        return Err(ScopesError::Unknown(scope.to_owned(), hint));
    };
    let methods = catalog.methods_enabled_by(&s);
    if json {
        return Ok(serde_json::to_string_pretty(
            &serde_json::json!({"scope": e, "methods": methods}),
        )
        .unwrap_or_default());
    }
    let mut out = format!(
        "{}: {}{}\n",
        e.scope,
        e.kind.as_str(),
        if e.cross_category {
            ", cross-category"
        } else {
            ""
        }
    );
    if !e.notes.is_empty() {
        out.push_str(&format!("  note: {}\n", e.notes));
    }
    if !e.covers.is_empty() {
        let c: Vec<String> = e.covers.iter().map(ToString::to_string).collect();
        out.push_str(&format!("  covers: {}\n", c.join(", ")));
    }
    if methods.is_empty() {
        out.push_str("  enables no catalogued REST method\n");
    }
    for m in methods {
        out.push_str(&format!(
            "  {:<6} /api/{{v}}{:<70} {}\n",
            m.http_method.unwrap_or("(bulk)"),
            m.uri,
            m.name
        ));
    }
    Ok(out)
}

/// `scopes for METHOD...`.
pub fn scopes_for(
    catalog: &Catalog,
    methods: &[String],
    json: bool,
) -> Result<String, ScopesError> {
    let (scopes, unknown) = catalog.scopes_for_methods(methods.iter().map(String::as_str));
    if !unknown.is_empty() {
        return Err(ScopesError::UnknownMethods(unknown));
    }
    let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
    Ok(if json {
        serde_json::to_string_pretty(&scopes).unwrap_or_default()
    } else {
        scopes.join("\n") + "\n"
    })
}

/// `issuer` subcommands.
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Print the JWKS the issuer listener serves at `jwks_uri` (public keys only).
    #[command(after_help = "Example:\n  tableau-token-broker issuer jwks --config broker.toml")]
    Jwks {
        /// Configuration file.
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
    },
    /// Print the issuer metadata (`issuer`, `jwks_uri`), served on both well-known paths.
    #[command(after_help = "Example:\n  tableau-token-broker issuer metadata --config broker.toml")]
    Metadata {
        /// Configuration file.
        #[arg(long, short, env = "TTB_CONFIG")]
        config: PathBuf,
    },
    /// Write a new PKCS#8 private key (mode 0600) and print its public key (PEM), e.g. for
    /// Tableau Cloud Manager's UAT configuration.
    #[command(
        after_help = "Example:\n  tableau-token-broker issuer keygen --alg ES256 --out /etc/tableau-token-broker/issuer/2026-12.pem"
    )]
    Keygen {
        /// `ES256` (P-256) or `RS256` (RSA 2048).
        #[arg(long, value_parser = parse_alg)]
        alg: crate::issuer::KeyAlg,
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_alg(s: &str) -> Result<crate::issuer::KeyAlg, String> {
    crate::issuer::KeyAlg::parse(s).ok_or_else(|| format!("{s:?} is not ES256 or RS256"))
}

/// Why an `issuer` command failed.
#[derive(Debug, thiserror::Error)]
pub enum IssuerCliError {
    /// The configuration has no `[issuer]`.
    #[error("the configuration has no [issuer] section")]
    NoIssuer,
    /// A key could not be generated or read back.
    #[error("{0}")]
    Key(#[from] crate::issuer::KeyError),
    /// The key file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// `issuer jwks` and `issuer metadata`: the document as the listener serves it, pretty-printed.
pub fn issuer_document(
    config: &crate::config::Config,
    jwks: bool,
) -> Result<String, IssuerCliError> {
    let issuer = config.issuer.as_ref().ok_or(IssuerCliError::NoIssuer)?;
    let doc = if jwks {
        issuer.jwks()
    } else {
        issuer.metadata()
    };
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    ))
}

/// `issuer keygen`: writes a new key to `out` (created with mode 0600, never overwriting) and
/// returns what to print: the algorithm and the public key in PEM.
pub fn issuer_keygen(
    alg: crate::issuer::KeyAlg,
    out: &std::path::Path,
) -> Result<String, IssuerCliError> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    let pem = crate::issuer::keys::generate_pem(alg)?;
    let write_err = |source| IssuerCliError::Write {
        path: out.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(out).map_err(write_err)?;
    f.write_all(pem.expose_secret()).map_err(write_err)?;
    f.sync_all().map_err(write_err)?;
    let key = crate::issuer::keys::load_private_key("new", out)?;
    Ok(format!(
        "wrote a {} key ({} bits) to {} (mode 0600); add it to [[issuer.keys]] with a new id. Its public key:\n{}",
        key.alg,
        key.bits,
        out.display(),
        crate::issuer::keys::public_pem(&key)
    ))
}
