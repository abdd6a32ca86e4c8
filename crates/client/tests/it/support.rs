//! A broker process and a Tableau double for the tests, and the dev-kit certificates they use.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser,
    TlsConfig,
};
use tableau_token_broker_client::{Client, ClientBuilder};

/// The demo's renderer: content:read on finance as svc-renderer.
pub(crate) const RENDERER_ID: &str = "spiffe://demo.local/ns/reports/sa/renderer";
/// The demo's ops workload (matched by the `/*` entry): content:read on finance as svc-ops.
pub(crate) const OPS_ID: &str = "spiffe://demo.local/ns/ops/sa/admin";
pub(crate) const FINANCE_LUID: &str = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
pub(crate) const USER: &str = "svc-renderer";
pub(crate) const SCOPE: &str = "tableau:content:read";
const CLIENT_ID: &str = "c11e47ab-0000-4000-8000-000000000001";
const SECRET_ID: &str = "c11e47ab-0000-4000-8000-000000000002";
const SECRET: &str = "a-client-test-secret-of-at-least-32-bytes";

/// How long a test waits for something that should happen at once.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// The target profile directory (`target/debug`): this test binary is in its `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The broker program, built by `cargo build -p tableau-token-broker`.
fn broker_program() -> PathBuf {
    let path = profile_dir().join(format!(
        "tableau-token-broker{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: build the broker first (`cargo build -p tableau-token-broker`, or run `cargo test --workspace`)",
        path.display()
    );
    path
}

/// The dev kit's files: CA, server certificate and the demo's two callers.
pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) renderer: (PathBuf, PathBuf),
    pub(crate) ops: (PathBuf, PathBuf),
}

/// Makes the dev-kit certificates once per test run, with `tableau-token-broker demo --no-wait`
/// (which also runs the demo's own script, on free ports).
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("client-it-pki");
        let out = Command::new(broker_program())
            .args([
                "demo",
                "--no-wait",
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(&dir)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "demo --no-wait failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Pki {
            ca: dir.join("pki/ca.crt"),
            server_cert: dir.join("pki/server.crt"),
            server_key: dir.join("pki/server.key"),
            renderer: (dir.join("renderer.crt"), dir.join("renderer.key")),
            ops: (dir.join("ops.crt"), dir.join("ops.key")),
        }
    })
}

/// The Tableau double over HTTPS with a self-signed certificate (written to `dir/double.pem`
/// for the broker to trust), one site (`finance`), its two users and the connected app.
pub(crate) async fn start_double(dir: &Path) -> (FakeTableauHandle, PathBuf) {
    // reqwest is built without a crypto provider of its own (the tests' plain-HTTP scrapes too):
    // install aws-lc-rs, the workspace's one crypto stack.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = FakeTableauConfig::new(
        vec![Site::new(
            "Finance",
            "finance",
            FINANCE_LUID,
            vec![
                SiteUser::new(USER, "aaaaaaaa-0000-4000-8000-000000000011"),
                SiteUser::new("svc-ops", "aaaaaaaa-0000-4000-8000-000000000012"),
            ],
        )],
        vec![ConnectedApp::new(
            CLIENT_ID,
            vec![AppSecret::new(SECRET_ID, SECRET)],
        )],
    );
    config.tls = Some(TlsConfig::self_signed());
    let double = FakeTableau::start(config).await.unwrap();
    let pem = dir.join("double.pem");
    std::fs::write(&pem, double.certificate_pem().unwrap()).unwrap();
    (double, pem)
}

/// A `tableau-token-broker serve` process; killed on drop.
pub(crate) struct Broker {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// The mTLS address.
    pub(crate) addr: SocketAddr,
    /// The admin listener (plain HTTP, `/metrics`).
    pub(crate) admin: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TOML string.
fn quoted(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl Broker {
    /// Writes a development configuration into `dir` (the double at `double_url`, trusted through
    /// `double_ca`; the demo's two callers) and starts the broker on free ports.
    pub(crate) fn start(dir: &Path, double_url: &str, double_ca: &Path) -> Broker {
        let pki = pki();
        let config = format!(
            r#"version = 1
development = true

[server]
listen = "127.0.0.1:0"
cert = {cert}
key = {key}
client_ca = {ca}
grace_period = "1s"

[admin]
listen = "127.0.0.1:0"

[cache]
max_entries = 100
safety_margin = "5m"

[audit]
path = {audit}

[tableau]
connect_timeout = "2s"
request_timeout = "10s"

[sites.finance]
server_url = "{double_url}"
content_url = "finance"
ca_bundle = {double_ca}
session_ttl = "240m"
jwt_ttl = "5m"

[sites.finance.connected_app]
client_id = "{CLIENT_ID}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"

[[callers]]
identity = "{RENDERER_ID}"

[[callers.grants]]
sites = ["finance"]
users = ["{USER}"]
scopes = ["{SCOPE}"]
attributes = {{ region = ["emea", "na"] }}
groups = ["analysts-*"]

# The ops workloads may cause one sign-in, then one a second: the retry test meets the limit.
[[callers]]
identity = "spiffe://demo.local/ns/ops/*"
sign_ins_per_second = 1
sign_in_burst = 1

[[callers.grants]]
sites = ["finance"]
users = ["svc-ops"]
scopes = ["{SCOPE}"]
"#,
            cert = quoted(&pki.server_cert),
            key = quoted(&pki.server_key),
            ca = quoted(&pki.ca),
            audit = quoted(&dir.join("audit.jsonl")),
            double_ca = quoted(double_ca),
        );
        let path = dir.join("broker.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(broker_program())
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut broker = Broker {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // The two listeners log their addresses in either order.
        for _ in 0..2 {
            let (message, addr) = broker.next_listening();
            if message.starts_with("broker listening") {
                broker.addr = addr;
            } else {
                broker.admin = addr;
            }
        }
        broker
    }

    /// The next "... listening" JSON log line: its message and address.
    fn next_listening(&mut self) -> (String, SocketAddr) {
        loop {
            let line = self.lines.recv_timeout(PATIENCE).unwrap_or_else(|_| {
                panic!(
                    "the broker did not start within {PATIENCE:?}: {:#?}",
                    self.seen
                )
            });
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            self.seen.push(line);
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            if message.contains("listening") {
                let addr = v["fields"]["addr"].as_str().unwrap().parse().unwrap();
                return (message.to_owned(), addr);
            }
        }
    }

    /// A client builder for this broker with the given identity files.
    pub(crate) fn client_builder(&self, cert: &Path, key: &Path) -> ClientBuilder {
        Client::builder()
            .endpoint(self.addr.to_string())
            .server_name("localhost")
            .identity_files(cert, key)
            .ca_file(&pki().ca)
    }

    /// The calls of one gRPC method the broker handled, whatever their status, from `/metrics`.
    pub(crate) async fn rpc_count(&self, method: &str) -> u64 {
        self.rpc_count_with(method, "").await
    }

    /// The calls of one gRPC method that ended with `code` ("OK", "RESOURCE_EXHAUSTED"; "" for
    /// any).
    pub(crate) async fn rpc_count_with(&self, method: &str, code: &str) -> u64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let label = format!("method=\"{method}\"");
        let code = format!("code=\"{code}\"");
        text.lines()
            .filter(|l| {
                l.starts_with("tableau_token_broker_rpc_requests_total{")
                    && l.contains(&label)
                    && (code == "code=\"\"" || l.contains(&code))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// A double and a broker in a fresh folder.
pub(crate) struct System {
    pub(crate) double: FakeTableauHandle,
    pub(crate) broker: Broker,
    pub(crate) dir: tempfile::TempDir,
}

impl System {
    pub(crate) async fn start() -> System {
        let dir = tempfile::tempdir().unwrap();
        let (double, double_ca) = start_double(dir.path()).await;
        let broker = Broker::start(dir.path(), double.base_url(), &double_ca);
        System {
            double,
            broker,
            dir,
        }
    }

    /// A client with the renderer's identity (copied into the system's folder, so a test may
    /// replace the files).
    pub(crate) fn renderer(&self) -> ClientBuilder {
        let (cert, key) = self.identity_files();
        std::fs::copy(&pki().renderer.0, &cert).unwrap();
        std::fs::copy(&pki().renderer.1, &key).unwrap();
        self.broker.client_builder(&cert, &key)
    }

    /// A client with the ops workload's identity (rate-limited to one sign-in, then one a
    /// second).
    pub(crate) fn ops(&self) -> ClientBuilder {
        let (cert, key) = self.identity_files();
        std::fs::copy(&pki().ops.0, &cert).unwrap();
        std::fs::copy(&pki().ops.1, &key).unwrap();
        self.broker.client_builder(&cert, &key)
    }

    /// Where [`Self::renderer`] puts the identity files.
    pub(crate) fn identity_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.crt"),
            self.dir.path().join("client.key"),
        )
    }
}

/// An HTTPS client of the double, trusting its self-signed certificate.
pub(crate) fn https_client(double: &FakeTableauHandle) -> reqwest::Client {
    let cert =
        reqwest::Certificate::from_pem(double.certificate_pem().unwrap().as_bytes()).unwrap();
    // reqwest is built without a crypto provider of its own: install aws-lc-rs, the workspace's
    // one stack, as the process default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap()
}
