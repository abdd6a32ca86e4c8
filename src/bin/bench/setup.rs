//! Everything the benchmark runs against: a dev PKI, the Tableau double, the broker started the
//! way `serve` starts it, and the echo baseline served through the same mTLS stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tableau_token_broker::config::Config;
use tableau_token_broker::devcerts::DevPki;
use tableau_token_broker::fake_tableau::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Faults, Latency,
    Site, SiteUser,
};
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::server::{self, RunningServer};
use tableau_token_broker::transport::{self, IdentityLayer, TlsFiles, TlsReloader};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::pb::echo_sized_like_the_broker_server::{
    EchoSizedLikeTheBroker as Echo, EchoSizedLikeTheBrokerServer as EchoServer,
};
use crate::pb::{EchoRequest, EchoResponse};

/// The load generator's identity (a SPIFFE ID in its client certificate).
pub const CALLER: &str = "spiffe://example.org/ns/bench/sa/loadgen";
/// Connected app known to the double and the broker.
pub const CLIENT_ID: &str = "8e1b7172-39c3-4a32-887e-fc2b4119f56d";
/// Its secret ID (`kid`).
pub const SECRET_ID: &str = "b0115bf9-3a4b-4c91-b009-cf0c170b1a56";
/// Its secret value.
pub const SECRET: &str = "bench-connected-app-secret-value";
/// Site content URL and broker site name.
pub const SITE: &str = "finance";
const SITE_LUID: &str = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
/// The scope every benchmark request asks for.
pub const SCOPE: &str = "tableau:content:read";
/// Users the double knows (`user-0` .. `user-{USERS-1}`); cold-path requests use them.
pub const USERS: usize = 12_000;

/// A user name the double knows.
pub fn user(i: usize) -> String {
    format!("user-{i}")
}

/// The running system under test.
pub struct World {
    _dir: TempDir,
    pub pki: DevPki,
    pub fake: FakeTableauHandle,
    pub broker: RunningServer,
    pub echo_addr: SocketAddr,
    pub client_cert: String,
    pub client_key: String,
}

impl World {
    /// Starts the double (sign-in latency `signin_latency`), the broker (cache of at most
    /// `max_entries`) and the echo server.
    pub async fn start(signin_latency: Duration, max_entries: u64) -> anyhow::Result<World> {
        let dir = TempDir::new()?;
        let users = (0..USERS)
            .map(|i| SiteUser::new(user(i), format!("00000000-0000-4000-8000-{i:012}")))
            .collect();
        let app = ConnectedApp::new(CLIENT_ID, vec![AppSecret::new(SECRET_ID, SECRET)]);
        let fake = FakeTableau::start(FakeTableauConfig::new(
            vec![Site::new("Finance", SITE, SITE_LUID, users)],
            vec![app],
        ))
        .await
        .context("starting the Tableau double")?;
        fake.set_faults(
            "signin",
            Faults {
                latency: Some(Latency::Fixed(signin_latency)),
                ..Faults::default()
            },
        )?;

        let pki = DevPki::in_memory()?;
        let (cert, key) = pki.server().write(dir.path(), "server")?;
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, pki.ca_cert_pem())?;
        let text = format!(
            r#"version = 1
development = true
[server]
listen = "127.0.0.1:0"
cert = {cert:?}
key = {key:?}
client_ca = {ca:?}
grace_period = "2s"
[cache]
max_entries = {max_entries}
safety_margin = "5m"
[tableau]
connect_timeout = "2s"
request_timeout = "10s"
[sites.{SITE}]
server_url = "{url}"
content_url = "{SITE}"
session_ttl = "240m"
jwt_ttl = "5m"
[sites.{SITE}.connected_app]
client_id = "{CLIENT_ID}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"
[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["{SITE}"]
users = ["*"]
scopes = ["{SCOPE}"]
"#,
            cert = cert.display().to_string(),
            key = key.display().to_string(),
            ca = ca.display().to_string(),
            url = fake.base_url(),
        );
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, &text)?;
        let config = Config::load(&path).context("loading the benchmark's broker config")?;
        let identity_sources = config
            .server
            .as_ref()
            .map(|s| s.identity_sources.clone())
            .context("no [server] section")?;
        let broker = server::start(config, tableau_token_broker::clock::system())
            .await
            .context("starting the broker")?;

        // The echo baseline: same acceptor, certificates, identity layer and tonic server.
        let tls = TlsReloader::new(TlsFiles {
            cert,
            key,
            client_ca: ca,
        })?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = listener.local_addr()?;
        let incoming = transport::incoming(listener, tls, identity_sources);
        let router = tonic::transport::Server::builder()
            .layer(IdentityLayer::new())
            .add_service(EchoServer::new(EchoService));
        tokio::spawn(router.serve_with_incoming(incoming));

        let pair = pki.issue_client(Some(CALLER), &[], "bench-loadgen")?;
        Ok(World {
            _dir: dir,
            client_cert: pair.cert_pem.clone(),
            client_key: pair.key_pem.expose_secret().to_owned(),
            pki,
            fake,
            broker,
            echo_addr,
        })
    }

    async fn channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        Ok(transport::client::connect(
            &addr.to_string(),
            self.pki.ca_cert_pem().as_bytes(),
            self.client_cert.as_bytes(),
            self.client_key.as_bytes(),
            "localhost",
        )
        .await?)
    }

    /// `n` HTTP/2 connections to the broker.
    pub async fn broker_channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.channel(self.broker.local_addr()).await?);
        }
        Ok(v)
    }

    /// `n` HTTP/2 connections to the echo server.
    pub async fn echo_channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.channel(self.echo_addr).await?);
        }
        Ok(v)
    }

    /// `n` broker clients, each on its own HTTP/2 connection.
    pub async fn broker_clients(
        &self,
        n: usize,
    ) -> anyhow::Result<Vec<TokenBrokerClient<Channel>>> {
        Ok(self
            .broker_channels(n)
            .await?
            .into_iter()
            .map(TokenBrokerClient::new)
            .collect())
    }
}

/// Echoes the payload, or answers `reply_size` bytes when set, so that its messages can be
/// sized like `GetCredentials`' request and response.
struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo_get_credentials(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        let req = request.into_inner();
        let payload = if req.reply_size == 0 {
            req.payload
        } else {
            vec![b'x'; req.reply_size as usize]
        };
        Ok(Response::new(EchoResponse { payload }))
    }
}

/// A cache-hit request for `user`.
pub fn credentials_request(user: &str) -> tableau_token_broker::grpc::pb::GetCredentialsRequest {
    tableau_token_broker::grpc::pb::GetCredentialsRequest {
        site: SITE.into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        ..Default::default()
    }
}

/// A scratch directory for the broker's files, removed when the run ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("ttb-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
