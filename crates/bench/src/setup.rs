//! Everything the benchmark runs against: a dev PKI, the Tableau double, the broker started the
//! way `serve` starts it, and the echo baseline served through the same mTLS stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tableau_token_broker::config::raw::{RawAudit, RawConfig, RawLimits, RawSharedCache};

use anyhow::Context;
use tableau_double::{FakeTableauHandle, Faults, Latency, SiteUser};
use tableau_token_broker::devkit::certs::{CertPair, DevPki};
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::IdentityLayer;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::grpc::routes::GrpcRoutes;
use tableau_token_broker::server::{self, RunningServer};
use tableau_token_broker::transport::identity::IdentitySources;
use tableau_token_broker::transport::{self, TlsFiles, TlsReloader};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::pb::echo_sized_like_the_broker_server::{
    EchoSizedLikeTheBroker as Echo, EchoSizedLikeTheBrokerServer as EchoServer,
};
use crate::pb::{EchoRequest, EchoResponse};

/// The load generator's identity (a SPIFFE ID in its client certificate).
pub(crate) const CALLER: &str = "spiffe://example.org/ns/bench/sa/loadgen";
/// Connected app known to the double and the broker.
pub(crate) const CLIENT_ID: &str = "8e1b7172-39c3-4a32-887e-fc2b4119f56d";
/// Its secret ID (`kid`).
pub(crate) const SECRET_ID: &str = "b0115bf9-3a4b-4c91-b009-cf0c170b1a56";
/// Its secret value.
pub(crate) const SECRET: &str = "bench-connected-app-secret-value";
/// Site content URL and broker site name.
pub(crate) const SITE: &str = "finance";
/// The site's LUID at the double.
pub(crate) const SITE_LUID: &str = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
/// The scope every benchmark request asks for.
pub(crate) const SCOPE: &str = "tableau:content:read";
/// Users the double knows (`user-0` .. `user-{USERS-1}`); cold-path requests use them.
pub(crate) const USERS: usize = 12_000;

/// A user name the double knows.
pub(crate) fn user(i: usize) -> String {
    format!("user-{i}")
}

/// The first `n` users the double knows, each with its own user LUID.
pub(crate) fn site_users(n: usize) -> Vec<SiteUser> {
    (0..n)
        .map(|i| SiteUser::new(user(i), format!("00000000-0000-4000-8000-{i:012}")))
        .collect()
}

/// The running system under test.
pub(crate) struct World {
    _dir: TempDir,
    pub pki: DevPki,
    pub fake: FakeTableauHandle,
    /// The broker with the audit trail off (`[audit] enabled = false`): the figures of record.
    pub broker: RunningServer,
    /// A second broker on the same double, writing its audit trail to a file in fail-closed
    /// mode: every cache hit waits for its record's group commit.
    pub audited: RunningServer,
    pub echo_addr: SocketAddr,
    client: CertPair,
}

impl World {
    /// Starts the double (sign-in latency `signin_latency`), the broker (cache of at most
    /// `max_entries`) and the echo server.
    pub(crate) async fn start(signin_latency: Duration, max_entries: u64) -> anyhow::Result<World> {
        World::start_with(signin_latency, max_entries, None).await
    }

    /// As [`World::start`], with `shared` as the broker's `[cache.shared]`.
    pub(crate) async fn start_with(
        signin_latency: Duration,
        max_entries: u64,
        shared: Option<RawSharedCache>,
    ) -> anyhow::Result<World> {
        let dir = TempDir::new()?;
        let users = site_users(USERS);
        let local = LocalSetup::new(dir.path(), LocalApp::new(CLIENT_ID, SECRET_ID, SECRET))
            .grace_period(Duration::from_secs(2))
            // Metrics on, as in production: every RPC is counted and timed.
            .admin(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .configure(audit_off)
            .max_entries(max_entries)
            // The bench measures the broker, not its flood limits: the cold and scale parts
            // sign in as fast as the double answers, from one caller entry.
            .configure(|c| c.limits = unlimited())
            .site(LocalSite::new(SITE, SITE_LUID, users))
            .caller(LocalCaller::new(
                CALLER,
                LocalGrant::new(&[SITE], &["*"], &[SCOPE]),
            ))
            .configure(move |c| c.cache.shared = shared.clone())
            .start()
            .await
            .context("starting the Tableau double and the broker")?;
        local.double.set_faults(
            "signin",
            Faults {
                latency: Some(Latency::Fixed(signin_latency)),
                ..Faults::default()
            },
        )?;

        let echo_addr = serve_echo(&local.config_path, &local.tls, &local.identity_sources).await?;

        // The audited broker: the same configuration with a file trail, fail-closed.
        let text = std::fs::read_to_string(&local.config_path)?;
        let trail = dir.path().join("bench-audit.jsonl");
        let audited_path = dir.path().join("broker-audited.toml");
        std::fs::write(
            &audited_path,
            text.replace(
                "[audit]\nenabled = false",
                &format!(
                    "[audit]\npath = {:?}\nmode = \"fail-closed\"",
                    trail.display().to_string()
                ),
            ),
        )?;
        let config = tableau_token_broker::config::Config::load(&audited_path)?;
        anyhow::ensure!(
            config.audit.target != tableau_token_broker::audit::AuditTarget::Off,
            "the audited broker's configuration has no trail"
        );
        let audited =
            tableau_token_broker::server::start(config, tableau_token_broker::clock::system())
                .await
                .context("starting the audited broker")?;

        let client = local.pki.issue_client(Some(CALLER), &[], "bench-loadgen")?;
        Ok(World {
            _dir: dir,
            client,
            pki: local.pki,
            fake: local.double,
            broker: local.server,
            audited,
            echo_addr,
        })
    }

    async fn channel(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        Ok(local::connect(&self.pki, addr, &self.client).await?)
    }

    /// `n` HTTP/2 connections to the broker.
    pub(crate) async fn broker_channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        self.channels_to(self.broker.local_addr(), n).await
    }

    /// `n` HTTP/2 connections to the broker at `addr` (the audited one, say).
    pub(crate) async fn channels_to(
        &self,
        addr: SocketAddr,
        n: usize,
    ) -> anyhow::Result<Vec<Channel>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.channel(addr).await?);
        }
        Ok(v)
    }

    /// `n` HTTP/2 connections to the echo server.
    pub(crate) async fn echo_channels(&self, n: usize) -> anyhow::Result<Vec<Channel>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.channel(self.echo_addr).await?);
        }
        Ok(v)
    }

    /// `n` broker clients, each on its own HTTP/2 connection.
    pub(crate) async fn broker_clients(
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

/// Starts the echo baseline beside the broker whose configuration is at `config_path`: the
/// broker's transport as its `[server]` section configures it (acceptor and certificates,
/// connection cap, idle and age closes, HTTP/2 keepalive, per-connection concurrency limit), its
/// identity layer and its gRPC routing. What the broker adds on top (the per-RPC metrics and span
/// layer, the handler) is what a comparison with it measures.
pub(crate) async fn serve_echo(
    config_path: &Path,
    tls: &TlsFiles,
    identity_sources: &IdentitySources,
) -> anyhow::Result<SocketAddr> {
    let server_cfg = tableau_token_broker::config::Config::load(config_path)?
        .server
        .context("the broker's configuration has no [server] section")?;
    let tls = TlsReloader::new(tls.clone())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = listener.local_addr()?;
    let incoming = transport::incoming_with(
        listener,
        tls,
        identity_sources.clone(),
        server::incoming_options(&server_cfg),
    );
    let routes = GrpcRoutes::new().service(EchoServer::new(EchoService));
    tokio::spawn(
        server::grpc_server(&server_cfg.connections)
            .layer(IdentityLayer::new())
            .serve_with_incoming(routes, incoming),
    );
    Ok(echo_addr)
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
pub(crate) fn credentials_request(
    user: &str,
) -> tableau_token_broker::grpc::pb::GetCredentialsRequest {
    tableau_token_broker::grpc::pb::GetCredentialsRequest {
        site: SITE.into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        ..Default::default()
    }
}

/// A scratch directory for the broker's files, removed when the run ends.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory under the system's temporary folder.
    pub(crate) fn new() -> std::io::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ttb-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// No audit trail: the baseline the trails are measured against.
pub(crate) fn audit_off(c: &mut RawConfig) {
    c.audit = RawAudit {
        enabled: Some(false),
        ..RawAudit::default()
    };
}

/// Sign-in limits far above anything the bench causes, for the parts that measure the broker
/// rather than its flood limits.
pub(crate) fn unlimited() -> RawLimits {
    RawLimits {
        sign_ins_per_second: Some(1_000_000.0),
        sign_in_burst: Some(1_000_000),
        max_concurrent_sign_ins: Some(100_000),
        negative_cache_ttl: None,
    }
}
