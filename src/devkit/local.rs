//! A broker and a Tableau double on loopback with development certificates, for the demo, the
//! benchmark and tests.
//!
//! All three need the same thing: a [double](tableau_double) that knows some sites, users
//! and one connected app, and a broker configured for the same sites, apps and callers, each
//! started on `127.0.0.1`. [`LocalSetup`] says that once, from a few parameters, so the double's
//! configuration and the broker's cannot drift apart. [`LocalSetup::start`] starts the double,
//! writes the broker's configuration as a file (a development configuration like any other, which
//! `check-config` and `serve` read), loads it and starts the broker the way `serve` does.
//!
//! ```no_run
//! # async fn example() -> Result<(), tableau_token_broker::devkit::local::LocalError> {
//! use tableau_double::SiteUser;
//! use tableau_token_broker::devkit::local::{LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite};
//!
//! let dir = std::env::temp_dir().join("local-example");
//! let local = LocalSetup::new(&dir, LocalApp::new("client-id", "secret-id", "a-development-secret-of-32-bytes+"))
//!     .site(LocalSite::new(
//!         "finance",
//!         "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d",
//!         vec![SiteUser::new("svc-renderer", "u-1")],
//!     ))
//!     .caller(LocalCaller::new(
//!         "spiffe://example.org/ns/reports/sa/renderer",
//!         LocalGrant::new(&["finance"], &["svc-renderer"], &["tableau:content:read"]),
//!     ))
//!     .start()
//!     .await?;
//! println!("broker on {}", local.server.local_addr());
//! local.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::transport::Channel;

use crate::clock::{self, SharedClock};
use crate::config::raw::RawConfig;
use crate::config::{Config, ConfigError, Format};
use crate::devkit::certs::{CertPair, DevCertsError, DevPki};
use crate::server::{self, RunningServer, ServeError};
use crate::transport::TlsFiles;
use crate::transport::client::ClientError;
use crate::transport::identity::IdentitySources;
use tableau_double::{
    AppSecret, ConnectedApp, EasApp, FakeTableau, FakeTableauConfig, FakeTableauError,
    FakeTableauHandle, Site, SiteUser, UatConfig,
};

mod written;
pub use written::duration;

/// The broker configuration's file name inside the setup's folder.
pub const CONFIG_FILE: &str = "broker.toml";

/// Why a local system could not be set up or started.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file in the setup's folder could not be written.
    #[error("cannot write {path}: {source}; check that the folder is writable")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The development PKI could not be made or its files written.
    #[error(transparent)]
    Pki(#[from] DevCertsError),
    /// The Tableau double did not start.
    #[error(transparent)]
    Double(#[from] FakeTableauError),
    /// The broker configuration written from the setup did not load (a bug in the setup).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker did not start (the double has been shut down again).
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The issuer's signing key could not be generated.
    #[error(transparent)]
    IssuerKey(#[from] crate::issuer::KeyError),
    /// The configuration built from the setup could not be written as TOML (a bug in the setup).
    #[error("cannot write the broker configuration as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// The one connected app the double trusts and every site of the broker signs in with.
#[derive(Debug, Clone)]
pub struct LocalApp {
    /// Client ID (the JWT's `iss`).
    pub client_id: String,
    /// Secret ID (the JWT's `kid`).
    pub secret_id: String,
    /// The secret value, written inline into the development configuration unless a site keeps
    /// it in a file.
    pub secret: SecretString,
    /// Whether the double accepts the app's JWTs; `false` tests Tableau's "app disabled" answer.
    pub enabled: bool,
}

impl LocalApp {
    /// An enabled app with one secret.
    pub fn new(
        client_id: impl Into<String>,
        secret_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        LocalApp {
            client_id: client_id.into(),
            secret_id: secret_id.into(),
            secret: SecretString::from(secret.into()),
            enabled: true,
        }
    }
}

/// A site both sides know: a site of the double and a `[sites.NAME]` of the broker.
#[derive(Debug, Clone)]
pub struct LocalSite {
    /// The name callers use (`[sites.NAME]`).
    pub name: String,
    /// The site as the double knows it: display name (`name` capitalised), content URL, LUID
    /// and users.
    pub double: Site,
    /// The sign-in body format the broker uses.
    pub format: Format,
    /// Where the broker sends this site's sign-ins; the double when `None`.
    pub server_url: Option<String>,
    /// Secret ID and value the broker is given instead of the app's, so tests can see Tableau
    /// refuse a wrong one.
    pub broker_secret: Option<(String, SecretString)>,
    /// Keep the secret in `NAME.secret` next to the configuration (`secret_file`) rather than
    /// inline, as production configurations do.
    pub secret_in_file: bool,
    /// Connected app with OAuth 2.0 trust (EAS): the broker signs with its issuer key (see
    /// [`LocalSetup::issuer`]) instead of the app's secret; the audience is `tableau:<LUID>`.
    pub eas: bool,
    /// Unified access tokens with this tenant ID: signed with the issuer key, REST API 3.27.
    pub uat_tenant: Option<String>,
}

impl LocalSite {
    /// A site whose content URL is its name, served by the double with XML sign-ins, and the
    /// app's secret inline.
    pub fn new(name: impl Into<String>, luid: impl Into<String>, users: Vec<SiteUser>) -> Self {
        let name = name.into();
        LocalSite {
            double: Site::new(title(&name), &name, luid, users),
            name,
            format: Format::Xml,
            server_url: None,
            broker_secret: None,
            secret_in_file: false,
            eas: false,
            uat_tenant: None,
        }
    }

    /// Signs in with unified access tokens for `tenant` (needs [`LocalSetup::issuer`]).
    pub fn uat(mut self, tenant: impl Into<String>) -> Self {
        self.uat_tenant = Some(tenant.into());
        self
    }

    /// Trusts the broker as an EAS issuer (needs [`LocalSetup::issuer`]).
    pub fn eas(mut self) -> Self {
        self.eas = true;
        self
    }

    /// Makes this Tableau's default site (content URL `""`).
    pub fn default_site(mut self) -> Self {
        self.double.content_url = String::new();
        self
    }

    /// Signs in with JSON bodies instead of XML.
    pub fn json(mut self) -> Self {
        self.format = Format::Json;
        self
    }

    /// Sends this site's sign-ins to `url` instead of the double (e.g. a closed port).
    pub fn server_url(mut self, url: impl Into<String>) -> Self {
        self.server_url = Some(url.into());
        self
    }

    /// Gives the broker this secret ID and value instead of the app's.
    pub fn broker_secret(
        mut self,
        secret_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.broker_secret = Some((secret_id.into(), SecretString::from(secret.into())));
        self
    }

    /// Keeps the secret in a file (`secret_file`) rather than inline.
    pub fn secret_in_file(mut self) -> Self {
        self.secret_in_file = true;
        self
    }
}

/// A site's display name in the double: the broker's name, capitalised.
fn title(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A `[[callers]]` entry.
#[derive(Debug, Clone)]
pub struct LocalCaller {
    /// SPIFFE ID (optionally ending in `/*`), DNS name or subject CN.
    pub identity: String,
    /// A comment written above the entry, for configurations people read (the demo's).
    pub comment: Option<String>,
    /// What the caller may ask for.
    pub grants: Vec<LocalGrant>,
    /// The entry's own sign-in rate, instead of `[limits] sign_ins_per_second`.
    pub sign_ins_per_second: Option<f64>,
    /// The entry's own sign-in burst, instead of `[limits] sign_in_burst`.
    pub sign_in_burst: Option<u64>,
}

impl LocalCaller {
    /// A caller with one grant.
    pub fn new(identity: impl Into<String>, grant: LocalGrant) -> Self {
        LocalCaller {
            identity: identity.into(),
            comment: None,
            grants: vec![grant],
            sign_ins_per_second: None,
            sign_in_burst: None,
        }
    }

    /// Adds another grant to the entry.
    pub fn grant(mut self, grant: LocalGrant) -> Self {
        self.grants.push(grant);
        self
    }

    /// Gives the entry its own sign-in rate.
    pub fn sign_ins_per_second(mut self, rate: f64) -> Self {
        self.sign_ins_per_second = Some(rate);
        self
    }

    /// Gives the entry its own sign-in burst.
    pub fn sign_in_burst(mut self, burst: u64) -> Self {
        self.sign_in_burst = Some(burst);
        self
    }

    /// Writes `text` as a comment above the entry.
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.comment = Some(text.into());
        self
    }
}

/// A `[[callers.grants]]` entry.
#[derive(Debug, Clone)]
pub struct LocalGrant {
    /// Site names, or `*`.
    pub sites: Vec<String>,
    /// User names or patterns.
    pub users: Vec<String>,
    /// IssuedCredentials scopes (wildcards allowed).
    pub scopes: Vec<String>,
    /// Scopes refused even when `scopes` covers them.
    pub deny_scopes: Vec<String>,
    /// Longest JWT lifetime this grant allows; the site's when `None`.
    pub max_jwt_ttl: Option<Duration>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl LocalGrant {
    /// A grant of `scopes` on `sites` as `users`.
    pub fn new(sites: &[&str], users: &[&str], scopes: &[&str]) -> Self {
        LocalGrant {
            sites: strings(sites),
            users: strings(users),
            scopes: strings(scopes),
            deny_scopes: Vec::new(),
            max_jwt_ttl: None,
        }
    }

    /// Refuses `scopes` even where the granted ones cover them.
    pub fn deny(mut self, scopes: &[&str]) -> Self {
        self.deny_scopes = strings(scopes);
        self
    }

    /// Caps the JWT lifetime.
    pub fn max_jwt_ttl(mut self, ttl: Duration) -> Self {
        self.max_jwt_ttl = Some(ttl);
        self
    }
}

/// What to start: the app, sites and callers, and a few broker settings. Build it with the
/// methods below, then [`Self::start`].
pub struct LocalSetup {
    dir: PathBuf,
    app: LocalApp,
    pki: Option<(DevPki, TlsFiles)>,
    clock: SharedClock,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    grace_period: Duration,
    max_entries: u64,
    header: Option<String>,
    sites: Vec<LocalSite>,
    callers: Vec<LocalCaller>,
    edits: Vec<ConfigEdit>,
    issuer_port: Option<u16>,
}

/// A change to the broker's configuration beyond what the setup models (see
/// [`LocalSetup::configure`]).
pub type ConfigEdit = Arc<dyn Fn(&mut RawConfig) + Send + Sync>;

/// The issuer's signing key (ES256, PKCS#8) in the setup's folder, made on every start.
pub const ISSUER_KEY_FILE: &str = "issuer-es256.pem";
/// The issuer key's `kid`.
pub const ISSUER_KEY_ID: &str = "demo-es256";

/// The audit trail file a local setup writes into its folder unless told otherwise.
pub const AUDIT_FILE: &str = "audit.jsonl";

impl std::fmt::Debug for LocalSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSetup")
            .field("dir", &self.dir)
            .field("listen", &self.listen)
            .field("sites", &self.sites)
            .field("callers", &self.callers)
            .finish_non_exhaustive()
    }
}

impl LocalSetup {
    /// A setup that keeps its files (configuration, secrets, certificates of an in-memory PKI) in
    /// `dir`, with `app` as the one connected app. Defaults: a fresh in-memory PKI, the system
    /// clock, `127.0.0.1:0`, a 5 s grace period and a cache of 1000 entries.
    pub fn new(dir: impl Into<PathBuf>, app: LocalApp) -> Self {
        LocalSetup {
            dir: dir.into(),
            app,
            pki: None,
            clock: clock::system(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            grace_period: Duration::from_secs(5),
            max_entries: 1000,
            header: None,
            sites: Vec::new(),
            callers: Vec::new(),
            edits: Vec::new(),
            issuer_port: None,
        }
    }

    /// Makes the broker an OAuth 2.0 issuer at `https://localhost:PORT`, serving its metadata
    /// and JWKS there over HTTPS (a certificate from the setup's PKI), for [`LocalSite::eas`]
    /// sites; the double fetches them trusting the PKI's CA.
    pub fn issuer(mut self, port: u16) -> Self {
        self.issuer_port = Some(port);
        self
    }

    /// The issuer URL, when the setup has an issuer.
    pub fn issuer_url(&self) -> Option<String> {
        self.issuer_port.map(|p| format!("https://localhost:{p}"))
    }

    /// Writes the issuer's files into the folder: a fresh ES256 key (mode 0600) and an HTTPS
    /// certificate for `localhost` from `pki`. Nothing without an issuer.
    pub fn write_issuer_files(&self, pki: &DevPki) -> Result<(), LocalError> {
        if self.issuer_port.is_none() {
            return Ok(());
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalError::Io { path, source }
        };
        pki.issue_server(&["localhost"])?
            .write(&self.dir, "issuer-tls")?;
        let pem = crate::issuer::keys::generate_pem(crate::issuer::KeyAlg::Es256)?;
        let p = self.dir.join(ISSUER_KEY_FILE);
        std::fs::write(&p, pem.expose_secret()).map_err(io(&p))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io(&p))?;
        }
        Ok(())
    }

    /// Where the default `[audit]` section writes the trail.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// Changes the broker's configuration beyond what the setup models (its limits, the
    /// `[audit]` section, `[cache.shared]`, admins), after the setup has filled it in. Edits run
    /// in the order given. For example, `configure(|c| c.limits.sign_in_burst = Some(2))`.
    pub fn configure(mut self, edit: impl Fn(&mut RawConfig) + Send + Sync + 'static) -> Self {
        self.edits.push(Arc::new(edit));
        self
    }

    /// Uses `pki`, whose server certificate, key and CA are already in `files` (the demo keeps
    /// one across runs), instead of a fresh in-memory one.
    pub fn pki(mut self, pki: DevPki, files: TlsFiles) -> Self {
        self.pki = Some((pki, files));
        self
    }

    /// Gives the double and the broker this clock, so tests can move time by hand.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// The broker's address; port 0 picks a free one.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Turns the admin listener (probes, metrics) on at `addr`; port 0 picks a free one.
    pub fn admin(mut self, addr: SocketAddr) -> Self {
        self.admin = Some(addr);
        self
    }

    /// How long in-flight calls may run when the broker shuts down.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// The most sessions the broker's cache holds.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = n;
        self
    }

    /// A comment at the top of the configuration file (one or more lines, each starting `#`).
    pub fn header(mut self, comment: impl Into<String>) -> Self {
        self.header = Some(comment.into());
        self
    }

    /// Adds a site.
    pub fn site(mut self, site: LocalSite) -> Self {
        self.sites.push(site);
        self
    }

    /// Adds a caller.
    pub fn caller(mut self, caller: LocalCaller) -> Self {
        self.callers.push(caller);
        self
    }

    /// The double's configuration: every site with its users, and the app.
    pub fn double_config(&self) -> FakeTableauConfig {
        let sites = self.sites.iter().map(|s| s.double.clone()).collect();
        let mut app = ConnectedApp::new(
            &self.app.client_id,
            vec![AppSecret::new(
                &self.app.secret_id,
                self.app.secret.expose_secret(),
            )],
        );
        app.enabled = self.app.enabled;
        let mut config = FakeTableauConfig::new(sites, vec![app]);
        if let Some(url) = self.issuer_url() {
            config.eas_apps = vec![EasApp::new(&url)];
            config.uat_configs = self
                .sites
                .iter()
                .filter_map(|s| s.uat_tenant.as_ref())
                .map(|t| UatConfig::new(&url, t))
                .collect();
        }
        config
    }

    /// The double's configuration, trusting `ca` for the issuer's HTTPS.
    fn double_config_with_ca(&self, ca: &Path) -> FakeTableauConfig {
        let mut config = self.double_config();
        if self.issuer_port.is_some() {
            config.issuer_ca_bundle = Some(ca.to_path_buf());
        }
        config
    }

    /// Where a site's secret file goes when it keeps its secret in one.
    fn secret_path(&self, site: &LocalSite) -> PathBuf {
        self.dir.join(format!("{}.secret", site.name))
    }

    /// Starts the double, writes the PKI's files (unless given), the secret files and
    /// [`CONFIG_FILE`] into the folder, loads the configuration and starts the broker. When the
    /// broker does not start, the double is shut down before the error returns.
    pub async fn start(mut self) -> Result<LocalSystem, LocalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalError::Io { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let (pki, tls) = self.resolve_pki()?;
        self.write_issuer_files(&pki)?;
        let double = FakeTableau::start_with_clock(
            self.double_config_with_ca(&tls.client_ca),
            self.clock.clone(),
        )
        .await?;
        let written = self.write_files((pki, tls), double.base_url());
        let config =
            match written.and_then(|(pki, tls, path)| Ok((pki, tls, Config::load(&path)?, path))) {
                Ok(v) => v,
                Err(e) => {
                    double.shutdown().await;
                    return Err(e);
                }
            };
        let (pki, tls, config, config_path) = config;
        let identity_sources = config
            .server
            .as_ref()
            .map(|s| s.identity_sources.clone())
            .unwrap_or_default();
        match server::start(config, self.clock.clone()).await {
            Ok(server) => Ok(LocalSystem {
                pki,
                tls,
                double,
                server,
                config_path,
                identity_sources,
            }),
            Err(e) => {
                double.shutdown().await;
                Err(e.into())
            }
        }
    }

    /// The PKI given, or a fresh in-memory one with its server certificate and CA written.
    fn resolve_pki(&mut self) -> Result<(DevPki, TlsFiles), LocalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalError::Io { path, source }
        };
        Ok(match self.pki.take() {
            Some(given) => given,
            None => {
                let pki = DevPki::in_memory()?;
                let (cert, key) = pki.server().write(&self.dir, "server")?;
                let client_ca = self.dir.join("ca.crt");
                std::fs::write(&client_ca, pki.ca_cert_pem()).map_err(io(&client_ca))?;
                (
                    pki,
                    TlsFiles {
                        cert,
                        key,
                        client_ca,
                    },
                )
            }
        })
    }

    /// Writes what the broker's configuration names; returns the PKI, its TLS files and the
    /// configuration's path.
    fn write_files(
        &self,
        (pki, tls): (DevPki, TlsFiles),
        double_url: &str,
    ) -> Result<(DevPki, TlsFiles, PathBuf), LocalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalError::Io { path, source }
        };
        for site in self.sites.iter().filter(|s| s.secret_in_file) {
            let secret = match &site.broker_secret {
                Some((_, s)) => s,
                None => &self.app.secret,
            };
            let p = self.secret_path(site);
            std::fs::write(&p, secret.expose_secret()).map_err(io(&p))?;
            // As a mounted Kubernetes Secret would be: only the owner reads it.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&p))?;
            }
        }
        let config_path = self.dir.join(CONFIG_FILE);
        std::fs::write(&config_path, self.broker_toml(double_url, &tls)?)
            .map_err(io(&config_path))?;
        Ok((pki, tls, config_path))
    }
}

/// A running double and broker, and what a client needs to reach them.
pub struct LocalSystem {
    /// The development PKI: its CA signs the server certificate and issues client certificates.
    pub pki: DevPki,
    /// The broker's server certificate, key and client CA files.
    pub tls: TlsFiles,
    /// The Tableau double.
    pub double: FakeTableauHandle,
    /// The broker.
    pub server: RunningServer,
    /// The configuration file the broker loaded.
    pub config_path: PathBuf,
    /// The certificate fields that name callers, as configured (for servers beside the broker
    /// that should identify callers the same way).
    pub identity_sources: IdentitySources,
}

impl std::fmt::Debug for LocalSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSystem")
            .field("broker", &self.server.local_addr())
            .field("double", &self.double.base_url())
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl LocalSystem {
    /// Stops the broker (letting in-flight calls finish), then the double.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let stopped = self.server.shutdown().await;
        self.double.shutdown().await;
        stopped
    }
}

/// An mTLS channel to `addr` as the holder of `client`, trusting `pki`'s CA for the server
/// (which it checks as `localhost`, a name every development server certificate carries).
pub async fn connect(
    pki: &DevPki,
    addr: SocketAddr,
    client: &CertPair,
) -> Result<Channel, ClientError> {
    crate::transport::client::connect(
        &addr.to_string(),
        pki.ca_cert_pem().as_bytes(),
        client.cert_pem.as_bytes(),
        client.key_pem.expose_secret().as_bytes(),
        "localhost",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_titles_are_capitalised_names() {
        let s = LocalSite::new("finance", "l", vec![]);
        assert_eq!(s.double.name, "Finance");
        assert_eq!(title(""), "");
    }
}
