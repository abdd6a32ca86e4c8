//! Live rotation without a signal (issue 12). Every file the broker reads sits in a volume laid
//! out as the kubelet's atomic writer lays out a Secret or ConfigMap: the files live in a
//! timestamped folder, the names the configuration uses are symlinks through `..data`, and an
//! update writes a new timestamped folder and swaps `..data` to it with one rename. No test sends
//! a signal or calls reload: the in-process server watches its files (`RunningServer::watch`, as
//! `serve` does) and the tests poll for the effect with a 15 s deadline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::ExposeSecret;
use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser,
};
use tableau_token_broker::clock;
use tableau_token_broker::config::Config;
use tableau_token_broker::devkit::certs::{CertPair, DevPki};
use tableau_token_broker::devkit::local;
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::reload::ReloadStatsSnapshot;
use tableau_token_broker::server::{self, RunningServer};
use tableau_token_broker::transport::client::client_config;
use tableau_token_broker::transport::tls::PROTOCOL_VERSIONS;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::support::{self, Served, serve_command};

/// What the issue allows between a change on disk and its effect.
const DEADLINE: Duration = Duration::from_secs(15);
const RENDERER: &str = "spiffe://example.org/ns/reports/sa/renderer";
const DNS_CALLER: &str = "exporter.reports.example.org";
const CLIENT_ID: &str = "client-1";
const FIN_LUID: &str = "9a8b7c6d-e4f3-a2b1-c0d9-e8f7a6b5c4d3";
const OLD: (&str, &str) = ("old-id", "old-secret-value-0123456789abcdef");
const NEW: (&str, &str) = ("new-id", "new-secret-value-0123456789abcdef");

/// A Secret or ConfigMap volume as the kubelet keeps it.
struct KubeVolume {
    dir: PathBuf,
    updates: u32,
}

impl KubeVolume {
    fn new(dir: PathBuf, files: &[(&str, &[u8])]) -> KubeVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut v = KubeVolume { dir, updates: 0 };
        v.update(files);
        v
    }

    /// The path the configuration uses for `name` (a symlink through `..data`).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The atomic writer's update: a new timestamped folder, `..data` swapped to it by one
    /// rename, user-visible links for new names, the old folder removed.
    fn update(&mut self, files: &[(&str, &[u8])]) {
        use std::os::unix::fs::symlink;
        self.updates += 1;
        let ts = format!(
            "..2026_11_24_02_00_{:02}.{}",
            self.updates,
            std::process::id()
        );
        let ts_dir = self.dir.join(&ts);
        std::fs::create_dir(&ts_dir).unwrap();
        for (name, content) in files {
            std::fs::write(ts_dir.join(name), content).unwrap();
        }
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// How the connected app's secrets are written in the configuration.
#[derive(Clone, Copy)]
enum Secrets {
    /// The single-secret form with this secret.
    Single((&'static str, &'static str)),
    /// The list form with both secrets; this one is active.
    Both { active: &'static str },
}

/// The parts of the broker's configuration the tests change.
#[derive(Clone)]
struct Settings {
    check_interval: &'static str,
    scopes: Vec<&'static str>,
    identity_sources: Option<&'static str>,
    cert: &'static str,
    key: &'static str,
    secrets: Secrets,
    server_url: Option<String>,
    listen: &'static str,
    raw_tail: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            // Long: the watcher's file events must do the work unless a test shortens it.
            check_interval: "1h",
            scopes: vec!["tableau:content:read", "tableau:views:download"],
            identity_sources: None,
            cert: "tls.crt",
            key: "tls.key",
            secrets: Secrets::Single(OLD),
            server_url: None,
            listen: "127.0.0.1:0",
            raw_tail: "",
        }
    }
}

fn double_config(secrets: &[(&str, &str)]) -> FakeTableauConfig {
    FakeTableauConfig::new(
        vec![Site::new(
            "Finance",
            "finance",
            FIN_LUID,
            vec![SiteUser::new("svc-renderer", "u-1")],
        )],
        vec![ConnectedApp::new(
            CLIENT_ID,
            secrets
                .iter()
                .map(|(id, v)| AppSecret::new(*id, *v))
                .collect(),
        )],
    )
}

struct World {
    _dir: tempfile::TempDir,
    pki: DevPki,
    tls: KubeVolume,
    ca: KubeVolume,
    secrets: KubeVolume,
    config: KubeVolume,
    double: FakeTableauHandle,
    server: RunningServer,
    settings: Settings,
}

fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl World {
    async fn start(settings: Settings) -> World {
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::in_memory().unwrap();
        let server_pair = pki.server().clone();
        let tls = KubeVolume::new(
            dir.path().join("tls"),
            &[
                ("tls.crt", server_pair.cert_pem.as_bytes()),
                ("tls.key", server_pair.key_pem.expose_secret().as_bytes()),
            ],
        );
        let ca = KubeVolume::new(
            dir.path().join("client-ca"),
            &[("ca.crt", pki.ca_cert_pem().as_bytes())],
        );
        let secrets = KubeVolume::new(
            dir.path().join("secrets"),
            &[(OLD.0, OLD.1.as_bytes()), (NEW.0, NEW.1.as_bytes())],
        );
        let double = FakeTableau::start(double_config(&[OLD])).await.unwrap();
        let mut w_settings = settings;
        if w_settings.server_url.is_none() {
            w_settings.server_url = Some(double.base_url().to_owned());
        }
        let config_dir = dir.path().join("config");
        let mut config = KubeVolume::new(config_dir, &[]);
        let text = toml_for(&tls, &ca, &secrets, &w_settings);
        config.update(&[("broker.toml", text.as_bytes())]);
        let path = config.path("broker.toml");
        let loaded = Config::load(&path).unwrap();
        let mut server = server::start(loaded, clock::system()).await.unwrap();
        server.watch(&path).await;
        World {
            _dir: dir,
            pki,
            tls,
            ca,
            secrets,
            config,
            double,
            server,
            settings: w_settings,
        }
    }

    /// Rewrites the configuration (as a ConfigMap update) from `settings`.
    fn configure(&mut self, settings: Settings) {
        let text = toml_for(&self.tls, &self.ca, &self.secrets, &settings);
        self.config.update(&[("broker.toml", text.as_bytes())]);
        self.settings = settings;
    }

    fn write_config_text(&mut self, text: &str) {
        self.config.update(&[("broker.toml", text.as_bytes())]);
    }

    fn stats(&self) -> ReloadStatsSnapshot {
        self.server.reload_stats().unwrap().snapshot()
    }

    fn generation(&self) -> u64 {
        self.server.broker().generation()
    }

    fn client_cert(&self, spiffe: &str) -> CertPair {
        self.pki.issue_client(Some(spiffe), &[], "test").unwrap()
    }

    async fn client(&self, pair: &CertPair) -> TokenBrokerClient<Channel> {
        TokenBrokerClient::new(
            local::connect(&self.pki, self.server.local_addr(), pair)
                .await
                .unwrap(),
        )
    }

    /// WhoAmI on a fresh connection (a new handshake) as the holder of `pair`, trusting `pki`
    /// for the server certificate.
    async fn whoami_as(&self, server_pki: &DevPki, pair: &CertPair) -> Result<String, String> {
        let ch = local::connect(server_pki, self.server.local_addr(), pair)
            .await
            .map_err(|e| e.to_string())?;
        TokenBrokerClient::new(ch)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .map(|r| r.into_inner().identity)
            .map_err(|e| e.to_string())
    }

    async fn whoami(&self, pair: &CertPair) -> Result<String, String> {
        self.whoami_as(&self.pki, pair).await
    }
}

fn toml_for(tls: &KubeVolume, ca: &KubeVolume, secrets: &KubeVolume, s: &Settings) -> String {
    let mut t = format!(
        "version = 1\ndevelopment = true\n\n[server]\nlisten = {:?}\ncert = {}\nkey = {}\nclient_ca = {}\n",
        s.listen,
        quoted(&tls.path(s.cert)),
        quoted(&tls.path(s.key)),
        quoted(&ca.path("ca.crt")),
    );
    // Short, so a test that stops the serve binary does not wait long for the drain.
    t.push_str("grace_period = \"1s\"\n");
    if let Some(sources) = s.identity_sources {
        t.push_str(&format!("identity_sources = {sources}\n"));
    }
    t.push_str(&format!(
        "\n[reload]\ncheck_interval = {:?}\ndebounce = \"50ms\"\n\n# Rotation under a force_refresh loop: the sign-in limits (tested elsewhere) stay out of the way.\n[limits]\nsign_ins_per_second = 100000\nsign_in_burst = 100000\n\n[sites.finance]\nserver_url = {:?}\ncontent_url = \"finance\"\n\n[sites.finance.connected_app]\nclient_id = {CLIENT_ID:?}\n",
        s.check_interval,
        s.server_url.as_deref().unwrap_or_default(),
    ));
    match s.secrets {
        Secrets::Single((id, _)) => t.push_str(&format!(
            "secret_id = {id:?}\nsecret_file = {}\n",
            quoted(&secrets.path(id))
        )),
        Secrets::Both { active } => {
            t.push_str(&format!("active_secret_id = {active:?}\n"));
            for (id, _) in [OLD, NEW] {
                t.push_str(&format!(
                    "[[sites.finance.connected_app.secrets]]\nsecret_id = {id:?}\nsecret_file = {}\n",
                    quoted(&secrets.path(id))
                ));
            }
        }
    }
    let scopes: Vec<String> = s.scopes.iter().map(|x| format!("{x:?}")).collect();
    t.push_str(&format!(
        "\n[[callers]]\nidentity = {RENDERER:?}\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"svc-renderer\"]\nscopes = [{}]\n",
        scopes.join(", ")
    ));
    t.push_str(&format!(
        "\n[[callers]]\nidentity = \"dns:{DNS_CALLER}\"\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"svc-renderer\"]\nscopes = [\"tableau:content:read\"]\n"
    ));
    t.push_str(s.raw_tail);
    t
}

fn req(scopes: &[&str], force_refresh: bool) -> pb::GetCredentialsRequest {
    pb::GetCredentialsRequest {
        site: "finance".into(),
        user: "svc-renderer".into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        force_refresh,
        ..Default::default()
    }
}

/// Polls `check` until it holds, for at most [`DEADLINE`].
async fn within_deadline<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {DEADLINE:?}: {what}");
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// One mTLS handshake with the broker: the leaf certificate it presented, and a gRPC channel
/// that can only ever use this one connection (it cannot reconnect), to show that an existing
/// connection keeps working across a rotation.
async fn one_connection(w: &World, client: &CertPair) -> (Vec<u8>, Channel) {
    let config = client_config(
        w.pki.ca_cert_pem().as_bytes(),
        Some((
            client.cert_pem.as_bytes(),
            client.key_pem.expose_secret().as_bytes(),
        )),
        PROTOCOL_VERSIONS,
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(w.server.local_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let slot = Arc::new(Mutex::new(Some(tls)));
    let connector = tower::service_fn(move |_: Uri| {
        let conn = slot.lock().unwrap().take();
        async move {
            conn.map(TokioIo::new)
                .ok_or_else(|| std::io::Error::other("this channel has one connection only"))
        }
    });
    let channel = Endpoint::from_static("https://localhost")
        .connect_with_connector(connector)
        .await
        .unwrap();
    (leaf, channel)
}

async fn presented(w: &World, client: &CertPair) -> Vec<u8> {
    one_connection(w, client).await.0
}

#[tokio::test]
async fn a_rotated_server_certificate_is_presented_by_file_events_and_old_connections_live_on() {
    // check_interval is one hour: only the watcher's events can make this pass in time.
    let mut w = World::start(Settings::default()).await;
    let client = w.client_cert(RENDERER);
    let (first, existing) = one_connection(&w, &client).await;
    assert_eq!(first, der_of(&w.pki.server().cert_pem));
    let mut existing = TokenBrokerClient::new(existing);
    existing.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    let renewed = w.pki.issue_server(&["localhost", "127.0.0.1"]).unwrap();
    w.tls.update(&[
        ("tls.crt", renewed.cert_pem.as_bytes()),
        ("tls.key", renewed.key_pem.expose_secret().as_bytes()),
    ]);
    let want = der_of(&renewed.cert_pem);
    within_deadline("new handshakes get the renewed certificate", || {
        let (w, client, want) = (&w, &client, &want);
        async move { presented(w, client).await == *want }
    })
    .await;
    // The connection made before the rotation still serves calls (it cannot reconnect).
    let me = existing
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.identity, RENDERER);
    let stats = w.stats();
    assert_eq!(stats.error, 0);
    assert!(stats.ok >= 1, "{stats:?}");
    assert!(stats.server_cert_not_after_unix > 0);
}

#[tokio::test]
async fn client_ca_rotation_accepts_the_new_ca_then_refuses_the_old_one() {
    // The periodic re-check alone (events may or may not arrive): a short interval.
    let mut w = World::start(Settings {
        check_interval: "200ms",
        ..Settings::default()
    })
    .await;
    let next_ca = DevPki::in_memory().unwrap();
    let old_caller = w.client_cert(RENDERER);
    let new_caller = next_ca.issue_client(Some(RENDERER), &[], "new").unwrap();
    assert!(w.whoami(&old_caller).await.is_ok());
    assert!(w.whoami(&new_caller).await.is_err(), "not trusted yet");

    // Step 1: the bundle holds both CAs.
    let both = format!("{}{}", w.pki.ca_cert_pem(), next_ca.ca_cert_pem());
    w.ca.update(&[("ca.crt", both.as_bytes())]);
    within_deadline("callers from the new CA are accepted", || {
        let (w, c) = (&w, &new_caller);
        async move { w.whoami(c).await.is_ok() }
    })
    .await;
    assert!(w.whoami(&old_caller).await.is_ok(), "old CA still trusted");

    // Step 2: the old CA is removed.
    w.ca.update(&[("ca.crt", next_ca.ca_cert_pem().as_bytes())]);
    within_deadline("callers from the removed CA are refused", || {
        let (w, c) = (&w, &old_caller);
        async move { w.whoami(c).await.is_err() }
    })
    .await;
    assert_eq!(w.whoami(&new_caller).await.unwrap(), RENDERER);
    assert_eq!(w.stats().error, 0);
}

#[tokio::test]
async fn grants_identity_sources_and_certificate_paths_follow_the_configuration() {
    let mut w = World::start(Settings::default()).await;
    let renderer = w.client_cert(RENDERER);
    let mut c = w.client(&renderer).await;
    let download = ["tableau:views:download"];
    c.get_credentials(req(&download, false)).await.unwrap();

    // A removed grant is refused.
    let start = w.generation();
    w.configure(Settings {
        scopes: vec!["tableau:content:read"],
        ..w.settings.clone()
    });
    within_deadline("the removed scope is refused", || {
        let mut c = c.clone();
        async move {
            matches!(c.get_credentials(req(&download, false)).await,
                Err(s) if s.code() == tonic::Code::PermissionDenied)
        }
    })
    .await;
    assert!(w.generation() > start);

    // identity_sources narrowed to SPIFFE: a caller named by its DNS SAN is no longer one.
    let dns_caller = w.pki.issue_client(None, &[DNS_CALLER], "dns").unwrap();
    assert_eq!(w.whoami(&dns_caller).await.unwrap(), DNS_CALLER);
    w.configure(Settings {
        identity_sources: Some("[\"spiffe\"]"),
        ..w.settings.clone()
    });
    within_deadline("a DNS-named caller is refused", || {
        let (w, p) = (&w, &dns_caller);
        async move { w.whoami(p).await.is_err() }
    })
    .await;
    assert_eq!(w.whoami(&renderer).await.unwrap(), RENDERER);

    // A changed certificate path: the new files are read, not the old paths again.
    let other = w.pki.issue_server(&["localhost"]).unwrap();
    let old_pair = w.pki.server().clone();
    w.tls.update(&[
        ("tls.crt", old_pair.cert_pem.as_bytes()),
        ("tls.key", old_pair.key_pem.expose_secret().as_bytes()),
        ("other.crt", other.cert_pem.as_bytes()),
        ("other.key", other.key_pem.expose_secret().as_bytes()),
    ]);
    w.configure(Settings {
        cert: "other.crt",
        key: "other.key",
        ..w.settings.clone()
    });
    let want = der_of(&other.cert_pem);
    within_deadline("the certificate at the new path is presented", || {
        let (w, c, want) = (&w, &renderer, &want);
        async move { presented(w, c).await == *want }
    })
    .await;
    assert_eq!(w.stats().error, 0);
}

#[tokio::test]
async fn bad_files_leave_everything_running_and_fixing_them_applies_the_change() {
    let mut w = World::start(Settings::default()).await;
    let renderer = w.client_cert(RENDERER);
    let original = der_of(&w.pki.server().cert_pem);
    let generation = w.generation();

    // A certificate that does not match its key.
    let renewed = w.pki.issue_server(&["localhost"]).unwrap();
    let old_key = w.pki.server().key_pem.clone();
    w.tls.update(&[
        ("tls.crt", renewed.cert_pem.as_bytes()),
        ("tls.key", old_key.expose_secret().as_bytes()),
    ]);
    within_deadline("the mismatched pair is counted as a failed reload", || {
        let errors = w.stats().error;
        async move { errors == 1 }
    })
    .await;
    assert_eq!(presented(&w, &renderer).await, original);
    assert_eq!(w.generation(), generation);

    // Bad TOML in the configuration, while the certificate is fixed in the same breath: nothing
    // applies, not even the good certificate.
    let good = std::fs::read_to_string(w.config.path("broker.toml")).unwrap();
    w.write_config_text(&format!("{good}\n[[callers]\nidentity = "));
    w.tls.update(&[
        ("tls.crt", renewed.cert_pem.as_bytes()),
        ("tls.key", renewed.key_pem.expose_secret().as_bytes()),
    ]);
    within_deadline("the bad TOML is counted as a failed reload", || {
        let errors = w.stats().error;
        async move { errors >= 2 }
    })
    .await;
    assert_eq!(presented(&w, &renderer).await, original);
    assert_eq!(w.generation(), generation);
    let mut c = w.client(&renderer).await;
    c.get_credentials(req(&["tableau:views:download"], false))
        .await
        .unwrap();

    // A setting that needs a restart is reported as such and changes nothing either.
    let errors = w.stats().error;
    w.configure(Settings {
        listen: "127.0.0.1:1",
        ..w.settings.clone()
    });
    within_deadline("the listen change is refused", || {
        let now = w.stats().error;
        async move { now > errors }
    })
    .await;
    assert_eq!(w.generation(), generation);
    assert_eq!(presented(&w, &renderer).await, original);

    // Fixing the file applies everything.
    w.configure(Settings {
        listen: "127.0.0.1:0",
        ..w.settings.clone()
    });
    let want = der_of(&renewed.cert_pem);
    within_deadline("the fixed configuration applies", || {
        let (w, c, want) = (&w, &renderer, &want);
        async move { presented(w, c).await == *want }
    })
    .await;
    assert_eq!(w.generation(), generation + 1);
}

/// A client loop with `force_refresh` against the double: every call signs in afresh.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(mut c: TokenBrokerClient<Channel>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match c
                    .get_credentials(req(&["tableau:content:read"], true))
                    .await
                {
                    Ok(_) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => f.lock().unwrap().push(e.message().to_owned()),
                }
            }
        });
        Load {
            stop,
            ok,
            failures,
            task,
        }
    }

    /// Waits until some more calls have succeeded.
    async fn progress(&self) {
        let from = self.ok.load(Ordering::Relaxed);
        within_deadline("calls keep succeeding", || {
            let now = self.ok.load(Ordering::Relaxed);
            async move { now >= from + 5 }
        })
        .await;
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn next_generation(w: &World, after: u64) {
    within_deadline("the configuration reloads", || {
        let g = w.generation();
        async move { g > after }
    })
    .await;
}

#[tokio::test]
async fn secret_rotation_in_four_steps_under_load_fails_no_call() {
    let mut w = World::start(Settings::default()).await;
    let c = w.client(&w.client_cert(RENDERER)).await;
    let load = Load::start(c);
    load.progress().await;

    // 1. Add the new secret in Tableau.
    w.double
        .set_app_secrets(
            CLIENT_ID,
            vec![AppSecret::new(OLD.0, OLD.1), AppSecret::new(NEW.0, NEW.1)],
        )
        .unwrap();
    load.progress().await;
    // 2. Add it to the configuration; the old one still signs.
    let g = w.generation();
    w.configure(Settings {
        secrets: Secrets::Both { active: OLD.0 },
        ..w.settings.clone()
    });
    next_generation(&w, g).await;
    load.progress().await;
    // 3. Switch active_secret_id.
    let g = w.generation();
    w.configure(Settings {
        secrets: Secrets::Both { active: NEW.0 },
        ..w.settings.clone()
    });
    next_generation(&w, g).await;
    load.progress().await;
    // 4. Delete the old secret in Tableau, then from the configuration.
    w.double
        .set_app_secrets(CLIENT_ID, vec![AppSecret::new(NEW.0, NEW.1)])
        .unwrap();
    load.progress().await;
    let g = w.generation();
    w.configure(Settings {
        secrets: Secrets::Single(NEW),
        ..w.settings.clone()
    });
    next_generation(&w, g).await;
    load.progress().await;

    let (ok, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed calls: {failures:?}",
        failures.len()
    );
    assert!(ok >= 35, "{ok} calls");
    // Done in order, no sign-in needed the standby secret and Tableau refused none.
    assert_eq!(w.server.broker().secret_fallbacks(), 0);
    assert!(
        w.double.stats().signins_failed.is_empty(),
        "{:?}",
        w.double.stats()
    );
    assert_eq!(w.stats().error, 0);
}

#[tokio::test]
async fn a_refused_active_secret_is_retried_once_with_the_standby_secret() {
    // The configuration already signs with the new secret, which Tableau does not have yet.
    let w = World::start(Settings {
        secrets: Secrets::Both { active: NEW.0 },
        ..Settings::default()
    })
    .await;
    let mut c = w.client(&w.client_cert(RENDERER)).await;
    c.get_credentials(req(&["tableau:content:read"], true))
        .await
        .unwrap();
    assert_eq!(w.server.broker().secret_fallbacks(), 1);
    let failed = w.double.stats().signins_failed;
    assert_eq!(failed.get("10085"), Some(&1), "{failed:?}");
    assert_eq!(w.double.stats().signins_ok, 1);
}

#[tokio::test]
async fn a_token_is_never_returned_with_a_server_url_that_did_not_issue_it() {
    let mut w = World::start(Settings::default()).await;
    let other = FakeTableau::start(double_config(&[OLD])).await.unwrap();
    let first_url = w.double.base_url().to_owned();
    let mut c = w.client(&w.client_cert(RENDERER)).await;
    let http = crate::support::http();
    // The token works at the server it comes with.
    let works_at = |server_url: String, luid: String, token: String| {
        let http = http.clone();
        async move {
            http.get(format!("{server_url}/api/3.22/sites/{luid}/projects"))
                .header("X-Tableau-Auth", token)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    };
    let first = c
        .get_credentials(req(&["tableau:content:read"], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.server_url, first_url);
    let cached = c
        .get_credentials(req(&["tableau:content:read"], false))
        .await
        .unwrap()
        .into_inner();
    assert!(cached.from_cache);

    w.configure(Settings {
        server_url: Some(other.base_url().to_owned()),
        ..w.settings.clone()
    });
    // Every answer, before and after the switch, is a token its server_url knows.
    let mut switched = false;
    let end = tokio::time::Instant::now() + DEADLINE;
    while !switched {
        assert!(tokio::time::Instant::now() < end, "the site never moved");
        let r = c
            .get_credentials(req(&["tableau:content:read"], false))
            .await
            .unwrap()
            .into_inner();
        assert!(
            works_at(r.server_url.clone(), r.site_luid.clone(), r.token.clone()).await,
            "token returned with {} does not work there",
            r.server_url
        );
        switched = r.server_url == other.base_url();
        if switched {
            assert_ne!(r.token, first.token);
        }
    }
    // And it stays with the new server, from the cache too.
    let again = c
        .get_credentials(req(&["tableau:content:read"], false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.server_url, other.base_url());
    assert!(works_at(again.server_url, again.site_luid, again.token).await);
}

/// The real `serve` binary, watching the same kubelet-style files: a changed configuration is
/// applied with no signal, and logged as one structured `reload` line that names what changed
/// and the certificate serials, and holds no secret.
#[tokio::test]
async fn the_serve_binary_reloads_on_its_own_and_logs_one_line_per_reload() {
    let mut w = World::start(Settings::default()).await;
    // Killed on drop if the test fails half-way, so no broker outlives it.
    let mut served = Served::spawn(&mut serve_command(&w.config.path("broker.toml")));
    let addr = served.listening_addr(DEADLINE);
    let loaded = served.wait_for("certificates loaded", DEADLINE);
    assert!(
        !loaded["fields"]["server_cert_serial"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let mut c = support::client(&w.pki, addr, &w.client_cert(RENDERER)).await;
    c.get_credentials(req(&["tableau:views:download"], false))
        .await
        .unwrap();
    w.configure(Settings {
        scopes: vec!["tableau:content:read"],
        ..w.settings.clone()
    });
    let reloaded = served.wait_for("configuration reloaded", DEADLINE);
    let f = &reloaded["fields"];
    assert_eq!(reloaded["target"], "reload");
    assert_eq!(
        f["generation"], 2,
        "the first reload after the start (generation 1)"
    );
    assert!(
        f["callers_changed"].as_str().unwrap().contains(RENDERER),
        "{f}"
    );
    assert_eq!(f["sites_changed"], "[]");
    assert!(!f["server_cert_serial"].as_str().unwrap().is_empty());
    assert!(f["client_ca"].as_str().unwrap().contains("until"), "{f}");
    let e = c
        .get_credentials(req(&["tableau:views:download"], false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // Close the connection, or the drain waits for it through the whole grace period.
    drop(c);

    let all = served.stop().await.join("\n");
    assert!(
        !all.contains(OLD.1) && !all.contains(NEW.1),
        "a secret in the logs"
    );
}
