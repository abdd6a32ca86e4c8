//! The end-to-end harness: a broker on real mTLS (an rcgen CA from the dev kit) in front of the
//! Tableau double on loopback, on a manual clock, with helpers every end-to-end module shares.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tableau_token_broker::config::raw::RawAudit;

use tableau_double::{FakeTableauHandle, SiteUser};
use tableau_token_broker::clock::ManualClock;
use tableau_token_broker::devkit::certs::{CertPair, DevPki};
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::grpc::pb::{self};
use tableau_token_broker::server::RunningServer;
use tableau_token_broker::transport::client::ClientError;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub(crate) const RENDERER: &str = "spiffe://example.org/ns/reports/sa/renderer";
pub(crate) const ADMIN: &str = "spiffe://example.org/ns/ops/sa/admin";
pub(crate) const FIN_LUID: &str = "9a8b7c6d-e4f3-a2b1-c0d9-e8f7a6b5c4d3";

pub(crate) struct Harness {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    pub fake: FakeTableauHandle,
    pub server: Option<RunningServer>,
    pub clock: Arc<ManualClock>,
    pub config_path: std::path::PathBuf,
}

pub(crate) struct Opts {
    pub secret: &'static str,
    pub secret_id: &'static str,
    pub app_enabled: bool,
    pub server_url: Option<String>,
    pub max_entries: u64,
    /// The `[audit]` section (default: a file in the harness folder, fail-closed).
    pub audit: Option<RawAudit>,
    /// Turn the admin listener (probes, metrics) on, on a free loopback port.
    pub admin: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            secret: "finance-secret-0123456789abcdef-xyz",
            secret_id: "sid-1",
            app_enabled: true,
            server_url: None,
            max_entries: 1000,
            audit: None,
            admin: false,
        }
    }
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::start_with(Opts::default()).await
    }

    pub(crate) async fn start_with(opts: Opts) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemTime::now());
        let mut app = LocalApp::new("client-1", "sid-1", "finance-secret-0123456789abcdef-xyz");
        app.enabled = opts.app_enabled;
        let mut finance = LocalSite::new(
            "finance",
            FIN_LUID,
            vec![
                SiteUser::new("svc-renderer", "u-1"),
                SiteUser::new("ann@example.com", "u-2"),
            ],
        )
        .broker_secret(opts.secret_id, opts.secret)
        .secret_in_file();
        if let Some(url) = opts.server_url {
            finance = finance.server_url(url);
        }
        let default = LocalSite::new(
            "default",
            "0f0f0f0f-0000-4000-8000-000000000000",
            vec![SiteUser::new("svc-renderer", "u-3")],
        )
        .default_site()
        .json();
        let mut setup = LocalSetup::new(dir.path(), app);
        if let Some(audit) = opts.audit {
            setup = setup.configure(move |c| c.audit = audit.clone());
        }
        if opts.admin {
            setup = setup.admin("127.0.0.1:0".parse().unwrap());
        }
        let local = setup
            .clock(clock.clone())
            .max_entries(opts.max_entries)
            .site(finance)
            .site(default)
            .caller(LocalCaller::new(
                RENDERER,
                LocalGrant::new(
                    &["finance", "default"],
                    &["svc-renderer", "*@example.com", "ghost"],
                    &["tableau:content:read", "tableau:views:download"],
                )
                .max_jwt_ttl(Duration::from_secs(120)),
            ))
            .caller(LocalCaller::new(
                "spiffe://example.org/ns/ops/*",
                LocalGrant::new(&["*"], &["*"], &["tableau:tasks:*", "tableau:content:read"])
                    .deny(&["tableau:tasks:delete"]),
            ))
            .start()
            .await
            .unwrap();
        Harness {
            dir,
            pki: local.pki,
            fake: local.double,
            server: Some(local.server),
            clock,
            config_path: local.config_path,
        }
    }

    pub(crate) fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub(crate) fn client_cert(&self, spiffe: &str) -> CertPair {
        self.pki
            .issue_client(Some(spiffe), &[], "test-client")
            .unwrap()
    }

    /// An mTLS channel to the broker as the holder of `pair`.
    pub(crate) async fn channel(&self, pair: &CertPair) -> Result<Channel, ClientError> {
        local::connect(&self.pki, self.server().local_addr(), pair).await
    }

    pub(crate) async fn client_with(&self, pair: &CertPair) -> TokenBrokerClient<Channel> {
        TokenBrokerClient::new(self.channel(pair).await.unwrap())
    }

    pub(crate) async fn client(&self, spiffe: &str) -> TokenBrokerClient<Channel> {
        let pair = self.client_cert(spiffe);
        self.client_with(&pair).await
    }
}

/// The renderer's everyday request: content read on finance as svc-renderer.
pub(crate) fn read_req() -> pb::GetCredentialsRequest {
    req("finance", "svc-renderer", &["tableau:content:read"])
}

pub(crate) fn req(site: &str, user: &str, scopes: &[&str]) -> pb::GetCredentialsRequest {
    pb::GetCredentialsRequest {
        site: site.into(),
        user: user.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

pub(crate) fn reason(s: &tonic::Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// Waits (bounded) for the double's counters to reach a value; sign-outs run in the background.
pub(crate) async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

impl Harness {
    /// Connects with a client certificate and makes one call; true when the broker refused it.
    pub(crate) async fn refuses(&self, pair: &CertPair) -> bool {
        match self.channel(pair).await {
            Err(_) => true,
            Ok(ch) => TokenBrokerClient::new(ch)
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .is_err(),
        }
    }
}
