//! `tableau-token-broker demo`: the whole system on one machine, with nothing to set up.
//!
//! Creates (or reuses) a development PKI and two caller certificates in a state folder, starts
//! the Tableau double and the broker on loopback with a demo configuration written next to them,
//! then acts as a client would: a sign-in, a cache hit, a refused scope escalation. It prints
//! what to run next and serves until Ctrl-C or SIGTERM. `--no-wait` stops after the script, for
//! tests and CI.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;
use secrecy::ExposeSecret;

use crate::client_cli::{ClientCliError, code_name, token_prefix};
use crate::config::ConfigError;
use crate::devkit::certs::{DevCertsError, DevPki, DevPkiFiles};
use crate::devkit::local::{LocalApp, LocalCaller, LocalError, LocalGrant, LocalSetup, LocalSite};
use crate::grpc::pb;
use crate::grpc::pb::token_broker_client::TokenBrokerClient;
use crate::server::ServeError;
use crate::transport::client::ClientError;
use tableau_double::{FakeTableauError, SiteUser};

/// SPIFFE ID of the demo's report renderer (narrow grant).
pub const RENDERER_ID: &str = "spiffe://demo.local/ns/reports/sa/renderer";
/// SPIFFE ID of the demo's ops workload (matched by a `/*` prefix entry).
pub const OPS_ID: &str = "spiffe://demo.local/ns/ops/sa/admin";
/// LUID of the demo's `finance` site in the double.
pub const FINANCE_LUID: &str = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
/// LUID of the demo's `sales` site (Tableau's default site, content URL "").
pub const SALES_LUID: &str = "1f2e3d4c-5b6a-4789-8a0b-1c2d3e4f5a6b";
/// The `cloud` site's LUID: a connected app with OAuth 2.0 trust (EAS), the broker its issuer.
pub const CLOUD_LUID: &str = "c10bd000-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
/// The `uat` site's LUID: signed in with unified access tokens (Tableau Cloud, REST 3.27).
pub const UAT_LUID: &str = "0a7000e5-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
/// The demo's Tableau Cloud tenant ID (unified access tokens).
const UAT_TENANT: &str = "demo-tenant-7f3e";

const CLIENT_ID: &str = "d3a0c11e-0000-4000-8000-000000000001";
const SECRET_ID: &str = "d3a05ec7-0000-4000-8000-000000000002";
const DEMO_USER: &str = "svc-renderer";
const DEMO_SCOPE: &str = "tableau:content:read";
const ESCALATION_SCOPE: &str = "tableau:users:read";

/// `demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoOpts {
    /// Folder for the development PKI, client certificates and demo configuration (reused).
    #[arg(long, default_value = ".tableau-token-broker-demo")]
    pub state_dir: PathBuf,
    /// Broker address; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// Admin listener (probes, metrics: plain HTTP). Default: 127.0.0.1:9090, or a free port
    /// when `--listen` picks one (port 0).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Run the script and exit instead of serving until Ctrl-C (for tests and CI).
    #[arg(long)]
    pub no_wait: bool,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The state folder or a file in it could not be written.
    #[error("cannot write {path}: {source}; pass another --state-dir")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The development PKI could not be created or loaded.
    #[error(transparent)]
    Pki(#[from] DevCertsError),
    /// The Tableau double did not start.
    #[error("cannot start the Tableau double: {0}")]
    Double(#[from] FakeTableauError),
    /// The demo configuration did not load (a bug in the demo: please report it).
    #[error("the demo configuration does not load: {0}")]
    Config(#[from] ConfigError),
    /// The broker's port is taken.
    #[error(
        "cannot listen on {0}: the port is in use (another demo still running?); stop it or run `tableau-token-broker demo --listen 127.0.0.1:0` to pick a free port"
    )]
    PortBusy(SocketAddr),
    /// The admin port is taken.
    #[error(
        "cannot listen on {0} (admin): the port is in use (another demo still running?); stop it or pass `--admin-listen 127.0.0.1:0` to pick a free port"
    )]
    AdminPortBusy(SocketAddr),
    /// The broker did not start or stop cleanly.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The demo client could not connect.
    #[error("the demo client cannot reach the broker: {0}")]
    Client(#[from] ClientError),
    /// A call the demo expected to succeed failed.
    #[error("the demo's {step} failed: {source}")]
    Step {
        /// Which step.
        step: &'static str,
        /// The broker's error.
        source: Box<ClientCliError>,
    },
    /// A step answered, but not as the demo expected.
    #[error("the demo's {step} did not behave as expected: {detail}")]
    Unexpected {
        /// Which step.
        step: &'static str,
        /// What was seen.
        detail: String,
    },
    /// Waiting for Ctrl-C/SIGTERM failed.
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(std::io::Error),
    /// The issuer's key could not be generated.
    #[error("cannot make the demo issuer's key: {0}")]
    IssuerKey(#[from] crate::issuer::KeyError),
    /// The demo's configuration could not be written as TOML (a bug in the demo).
    #[error("cannot write the demo's configuration: {0}")]
    Toml(#[from] toml::ser::Error),
}

impl From<LocalError> for DemoError {
    fn from(e: LocalError) -> Self {
        match e {
            LocalError::Io { path, source } => DemoError::Io { path, source },
            LocalError::Pki(e) => DemoError::Pki(e),
            LocalError::Double(e) => DemoError::Double(e),
            LocalError::Config(e) => DemoError::Config(e),
            LocalError::Serve(e) => DemoError::Serve(e),
            LocalError::IssuerKey(e) => DemoError::IssuerKey(e),
            LocalError::Toml(e) => DemoError::Toml(e),
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Prints a line and flushes, so a script reading the demo's stdout through a pipe sees each
/// line as it happens. A closed stdout does not stop the demo.
macro_rules! say {
    ($out:expr) => {{ let _ = writeln!($out); let _ = $out.flush(); }};
    ($out:expr, $($arg:tt)*) => {{ let _ = writeln!($out, $($arg)*); let _ = $out.flush(); }};
}

/// The demo's double and broker: two sites (`finance`, and `sales` as Tableau's default site,
/// signed in with JSON), the users the callers may sign in as, one connected app with `secret`,
/// and the two callers. The broker's configuration is written to `state/broker.toml` and loaded
/// like any other.
fn setup(
    state: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    issuer_port: u16,
    secret: &str,
) -> LocalSetup {
    let users = |prefix: &str| {
        vec![
            SiteUser::new(DEMO_USER, format!("{prefix}-0000-4000-8000-000000000011")),
            SiteUser::new("svc-ops", format!("{prefix}-0000-4000-8000-000000000012")),
            SiteUser::new(
                "alice@example.com",
                format!("{prefix}-0000-4000-8000-000000000013"),
            ),
        ]
    };
    LocalSetup::new(state, LocalApp::new(CLIENT_ID, SECRET_ID, secret))
        .listen(listen)
        .admin(admin)
        .issuer(issuer_port)
        .header(
            "# Written by `tableau-token-broker demo` on every run; edits are overwritten.\n\
             # A development configuration: inline secret and plain-http Tableau (the in-process double).",
        )
        .site(LocalSite::new("finance", FINANCE_LUID, users("aaaaaaaa")))
        .site(
            LocalSite::new("sales", SALES_LUID, users("bbbbbbbb"))
                .default_site()
                .json(),
        )
        .site(LocalSite::new("cloud", CLOUD_LUID, users("cccccccc")).eas())
        .site(LocalSite::new("uat", UAT_LUID, users("dddddddd")).uat(UAT_TENANT))
        .caller(
            LocalCaller::new(
                RENDERER_ID,
                LocalGrant::new(
                    &["finance"],
                    &[DEMO_USER],
                    &["tableau:content:read", "tableau:views:download"],
                )
                .max_jwt_ttl(Duration::from_secs(120)),
            )
            .grant(LocalGrant::new(
                &["cloud", "uat"],
                &[DEMO_USER],
                &["tableau:content:read", "tableau:views:embed"],
            ))
            .comment(
                "The report renderer: read content and download views on finance, read and embed on cloud (EAS) and uat (unified access tokens), as svc-renderer only.",
            ),
        )
        .caller(
            LocalCaller::new(
                "spiffe://demo.local/ns/ops/*",
                LocalGrant::new(
                    &["*"],
                    &["svc-ops"],
                    &["tableau:tasks:*", "tableau:content:read"],
                )
                .deny(&["tableau:tasks:delete"]),
            )
            .comment("Every ops workload: run tasks on every site as svc-ops, but never delete them."),
        )
}

/// Issues `NAME.crt`/`NAME.key` for a caller unless they exist and the CA did not change.
fn client_cert(
    pki: &DevPki,
    dir: &Path,
    name: &str,
    spiffe: &str,
    fresh_ca: bool,
) -> Result<(PathBuf, PathBuf), DemoError> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    if !fresh_ca && crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    Ok(pki
        .issue_client(Some(spiffe), &[], name)?
        .write(dir, name)?)
}

fn request(scopes: &[&str]) -> pb::GetCredentialsRequest {
    pb::GetCredentialsRequest {
        site: "finance".into(),
        user: DEMO_USER.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

fn expires(r: &pb::GetCredentialsResponse) -> String {
    r.expires_at
        .and_then(|t| SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

/// Runs the demo, printing to `out`. Returns after the script with `--no-wait`, otherwise after
/// Ctrl-C or SIGTERM, with the broker and the double shut down.
pub async fn run(opts: &DemoOpts, out: &mut impl Write) -> Result<(), DemoError> {
    let state = std::path::absolute(&opts.state_dir).map_err(io_err(&opts.state_dir))?;
    std::fs::create_dir_all(&state).map_err(io_err(&state))?;
    let pki_dir = state.join("pki");
    let files = DevPkiFiles::in_dir(&pki_dir);
    let fresh_ca = !files.ca_cert.exists();
    let pki = DevPki::load_or_create(&pki_dir)?;
    let (renderer_crt, renderer_key) =
        client_cert(&pki, &state, "renderer", RENDERER_ID, fresh_ca)?;
    let (ops_crt, ops_key) = client_cert(&pki, &state, "ops", OPS_ID, fresh_ca)?;

    say!(out, "tableau-token-broker demo");
    say!(
        out,
        "  state folder  {} ({})",
        state.display(),
        if fresh_ca {
            "new development CA"
        } else {
            "reusing its development CA and certificates"
        }
    );

    // A fresh secret each run: the double and the config written below share it.
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let admin = opts.admin_listen.unwrap_or_else(|| {
        let port = if opts.listen.port() == 0 { 0 } else { 9090 };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    // The issuer listener (EAS): a free port, or 8443 beside a fixed broker port.
    let issuer_port = if opts.listen.port() == 0 {
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(io_err(&state))?
    } else {
        8443
    };
    let local = match setup(&state, opts.listen, admin, issuer_port, &secret)
        .pki(pki, files.tls_files())
        .start()
        .await
    {
        Ok(local) => local,
        Err(LocalError::Serve(ServeError::Bind { addr, source }))
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            return Err(DemoError::PortBusy(addr));
        }
        Err(LocalError::Serve(ServeError::AdminBind { addr, source }))
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            return Err(DemoError::AdminPortBusy(addr));
        }
        Err(e) => return Err(e.into()),
    };
    let double = &local.double;
    let double_url = double.base_url().to_owned();
    let config_path = local.config_path.clone();
    say!(out, "tableau double on {double_url}");
    let addr = local.server.local_addr();
    say!(out, "broker listening on {addr}");
    say!(out, "  config        {}", config_path.display());
    say!(out, "  callers       {RENDERER_ID} (renderer.crt)");
    say!(out, "                {OPS_ID} (ops.crt)");
    let admin_url = local
        .server
        .admin_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    say!(
        out,
        "admin on {admin_url} (plain HTTP: /livez /readyz /metrics)"
    );
    say!(
        out,
        "issuer on https://localhost:{issuer_port} (metadata: /.well-known/openid-configuration; sites cloud (EAS) and uat (UAT) trust it)"
    );

    let script = script(out, addr, &files, &renderer_crt, &renderer_key, double).await;
    if let Err(e) = script {
        let _ = local.shutdown().await;
        return Err(e);
    }

    let bin = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tableau-token-broker".into());
    let conn = format!(
        "--addr {addr} --ca {} --cert {} --key {}",
        files.ca_cert.display(),
        renderer_crt.display(),
        renderer_key.display()
    );
    say!(out);
    say!(out, "Try it yourself, in another terminal:");
    say!(out, "  alias tableau-token-broker='{bin}'");
    say!(out, "  tableau-token-broker whoami {conn}");
    say!(
        out,
        "  tableau-token-broker get {conn} --site finance --user {DEMO_USER} --scope {DEMO_SCOPE}"
    );
    say!(
        out,
        "  tableau-token-broker whoami --addr {addr} --ca {} --cert {} --key {}",
        files.ca_cert.display(),
        ops_crt.display(),
        ops_key.display()
    );
    say!(
        out,
        "  tableau-token-broker scopes explain 'tableau:tasks:*'"
    );
    say!(
        out,
        "  tableau-token-broker check-config {}",
        config_path.display()
    );
    say!(out, "  curl {double_url}/_fake/stats");
    say!(
        out,
        "  curl --cacert {} https://localhost:{issuer_port}/.well-known/jwks.json",
        files.ca_cert.display()
    );
    say!(
        out,
        "  tableau-token-broker get {conn} --site cloud --user {DEMO_USER} --scope {DEMO_SCOPE}   # EAS: signed with the issuer key"
    );
    say!(out, "  curl {admin_url}/metrics");

    if !opts.no_wait {
        say!(out);
        say!(out, "Serving until Ctrl-C.");
        let waited = wait_for_signal().await;
        say!(out, "stopping");
        local.shutdown().await?;
        waited?;
        say!(out, "stopped");
        return Ok(());
    }
    say!(out);
    say!(
        out,
        "--no-wait: stopping now; run without it to keep the broker up for the commands above."
    );
    local.shutdown().await?;
    Ok(())
}

/// The client's side of the demo: sign-in, cache hit, refused escalation.
async fn script(
    out: &mut impl Write,
    addr: SocketAddr,
    files: &DevPkiFiles,
    cert: &Path,
    key: &Path,
    double: &tableau_double::FakeTableauHandle,
) -> Result<(), DemoError> {
    let read = |p: &Path| std::fs::read(p).map_err(io_err(p));
    let key_pem = secrecy::SecretBox::new(Box::new(read(key)?));
    let channel = crate::transport::client::connect(
        &addr.to_string(),
        &read(&files.ca_cert)?,
        &read(cert)?,
        key_pem.expose_secret(),
        &addr.ip().to_string(),
    )
    .await?;
    let mut c = TokenBrokerClient::new(channel);
    let step_err = |step| {
        move |s: tonic::Status| DemoError::Step {
            step,
            source: Box::new(ClientCliError::from_status(&s)),
        }
    };

    say!(out);
    say!(
        out,
        "1. GetCredentials as the renderer: site finance, user {DEMO_USER}, scope {DEMO_SCOPE}"
    );
    let first = c
        .get_credentials(request(&[DEMO_SCOPE]))
        .await
        .map_err(step_err("first GetCredentials"))?
        .into_inner();
    let signins = double.stats().signins_ok;
    say!(
        out,
        "   sign-in: token {}, site LUID {}, from_cache={}, expires_at {}",
        token_prefix(&first.token),
        first.site_luid,
        first.from_cache,
        expires(&first)
    );
    say!(out, "   Tableau double sign-ins: {signins}");

    say!(out, "2. The same request again");
    let second = c
        .get_credentials(request(&[DEMO_SCOPE]))
        .await
        .map_err(step_err("second GetCredentials"))?
        .into_inner();
    let signins_after = double.stats().signins_ok;
    say!(
        out,
        "   cache hit: token {} ({}), from_cache={}, expires_at {}",
        token_prefix(&second.token),
        if second.token == first.token {
            "the same token"
        } else {
            "a different token"
        },
        second.from_cache,
        expires(&second)
    );
    say!(
        out,
        "   Tableau double sign-ins: {signins_after} (no new sign-in)"
    );
    if !second.from_cache || signins_after != signins {
        return Err(DemoError::Unexpected {
            step: "cache hit",
            detail: format!(
                "from_cache={}, sign-ins went from {signins} to {signins_after}",
                second.from_cache
            ),
        });
    }

    say!(
        out,
        "3. Scope escalation: the renderer asks for {ESCALATION_SCOPE}, which it was not granted"
    );
    match c
        .get_credentials(request(&[DEMO_SCOPE, ESCALATION_SCOPE]))
        .await
    {
        Ok(_) => {
            return Err(DemoError::Unexpected {
                step: "scope escalation",
                detail: "the broker granted a scope outside the caller's allowlist".into(),
            });
        }
        Err(s) => {
            let e = ClientCliError::from_status(&s);
            say!(out, "   refused: {e}");
            if code_name(s.code()) != "PERMISSION_DENIED" {
                return Err(DemoError::Unexpected {
                    step: "scope escalation",
                    detail: e.to_string(),
                });
            }
        }
    }
    say!(
        out,
        "   Tableau double sign-ins: {} (the refusal never reached Tableau)",
        double.stats().signins_ok
    );

    say!(
        out,
        "4. GetCredentials on site cloud, a connected app with OAuth 2.0 trust (EAS): no shared secret"
    );
    let eas = c
        .get_credentials(pb::GetCredentialsRequest {
            site: "cloud".into(),
            ..request(&[DEMO_SCOPE])
        })
        .await
        .map_err(step_err("EAS GetCredentials"))?
        .into_inner();
    say!(
        out,
        "   sign-in: token {}, site LUID {}; Tableau verified the broker's ES256 JWT with the JWKS it fetched from the issuer ({} JWKS fetch(es))",
        token_prefix(&eas.token),
        eas.site_luid,
        double
            .stats()
            .issuer_fetches
            .get("jwks")
            .copied()
            .unwrap_or(0)
    );

    say!(
        out,
        "5. GetCredentials on site uat, signed in with a unified access token (tenant {UAT_TENANT})"
    );
    let uat = c
        .get_credentials(pb::GetCredentialsRequest {
            site: "uat".into(),
            ..request(&[DEMO_SCOPE])
        })
        .await
        .map_err(step_err("UAT GetCredentials"))?
        .into_inner();
    say!(
        out,
        "   sign-in: token {}, site LUID {}; \"isUat\": true, the JWT signed with the same issuer key",
        token_prefix(&uat.token),
        uat.site_luid
    );
    Ok(())
}

async fn wait_for_signal() -> Result<(), DemoError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(DemoError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(DemoError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(DemoError::Signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_configuration_loads() {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::load_or_create(dir.path()).unwrap();
        let files = DevPkiFiles::in_dir(dir.path());
        let setup = setup(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            8443,
            "a-demo-secret-of-at-least-32-bytes",
        );
        setup.write_issuer_files(&pki).unwrap();
        let path = dir.path().join("broker.toml");
        let text = setup
            .broker_toml("http://127.0.0.1:1", &files.tls_files())
            .unwrap();
        assert!(
            text.starts_with("# Written by `tableau-token-broker demo`"),
            "{text}"
        );
        std::fs::write(&path, text).unwrap();
        let config = crate::config::Config::load(&path).unwrap();
        assert!(config.site("finance").is_some());
        assert!(config.site("sales").is_some());
        assert_eq!(config.site("cloud").unwrap().trust.name(), "eas");
        assert_eq!(config.site("uat").unwrap().trust.name(), "uat");
        setup.double_config().validate().unwrap();
    }
}
