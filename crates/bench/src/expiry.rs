//! `--only expiry`: latency of cache hits on one hot key over a window that crosses its token's
//! usable end, with `[cache] refresh_ahead` at its default (a tenth of the usable life) and off
//! (`"0s"`), beside the hit latency of the same broker away from any expiry.
//!
//! A token must become unusable within the run. The broker refuses a `[sites.X] session_ttl` of a
//! minute or less, so the double's sessions and the broker's `session_ttl` are 61 s, and
//! `[cache] safety_margin` is all but a few seconds of that: the broker hands a token out for
//! those seconds only. The double answers each sign-in after a fixed delay, so a caller that has
//! to wait for one shows it.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use prost::Message;
use prost::bytes::Bytes;
use tableau_double::{FakeTableau, FakeTableauHandle, Faults, Latency};
use tableau_token_broker::devkit::certs::DevPki;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::server::RunningServer;
use tableau_token_broker::transport::TlsFiles;

use crate::load::{self, Point};
use crate::raw::{self, RawClient};
use crate::report::Report;
use crate::setup::{
    CALLER, CLIENT_ID, SCOPE, SECRET, SECRET_ID, SITE, SITE_LUID, TempDir, credentials_request,
    site_users, user,
};

/// Requests in flight (over [`CONNECTIONS`] connections, one caller).
pub(crate) const CONCURRENCY: usize = 64;
const CONNECTIONS: usize = 8;
/// The double's delay before it answers a sign-in (a Tableau Cloud sign-in takes a few hundred
/// milliseconds; a caller that waits for one sees it).
pub(crate) const SIGNIN_LATENCY: Duration = Duration::from_millis(100);

/// Lifetimes and windows of one expiry run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Session lifetime at the double and in `[sites.X] session_ttl`.
    pub session_ttl: Duration,
    /// How long the broker hands a token out: `[cache] safety_margin` is `session_ttl` minus this.
    pub usable: Duration,
    /// Load before the hit window, not recorded (fresh connections and a fresh broker).
    pub hit_warmup: Duration,
    /// The hit window, early in a token's life.
    pub hit_window: Duration,
    /// The window centred on the token's usable end.
    pub expiry_window: Duration,
}

impl Plan {
    /// Tokens usable for 3 s (2 s with `--quick`).
    pub(crate) fn new(quick: bool) -> Plan {
        let session_ttl = Duration::from_secs(61);
        if quick {
            Plan {
                session_ttl,
                usable: Duration::from_secs(2),
                hit_warmup: Duration::from_millis(200),
                hit_window: Duration::from_millis(400),
                expiry_window: Duration::from_secs(1),
            }
        } else {
            Plan {
                session_ttl,
                usable: Duration::from_secs(3),
                hit_warmup: Duration::from_millis(300),
                hit_window: Duration::from_secs(1),
                expiry_window: Duration::from_secs(2),
            }
        }
    }

    fn safety_margin(&self) -> Duration {
        self.session_ttl.saturating_sub(self.usable)
    }
}

/// The double with short sessions and a broker with `refresh_ahead` as given.
struct ExpiryWorld {
    _dir: TempDir,
    double: FakeTableauHandle,
    broker: RunningServer,
    channels: Vec<tonic::transport::Channel>,
}

impl ExpiryWorld {
    async fn start(plan: &Plan, refresh_ahead: Option<&str>) -> anyhow::Result<ExpiryWorld> {
        let dir = TempDir::new()?;
        let mut setup = LocalSetup::new(dir.path(), LocalApp::new(CLIENT_ID, SECRET_ID, SECRET))
            .grace_period(Duration::from_secs(1))
            .admin(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .configure(crate::setup::audit_off)
            .site(LocalSite::new(SITE, SITE_LUID, site_users(10)))
            .caller(LocalCaller::new(
                CALLER,
                LocalGrant::new(&[SITE], &["*"], &[SCOPE]),
            ));
        if let Some(r) = refresh_ahead {
            let r = r.to_owned();
            setup = setup.configure(move |c| c.cache.refresh_ahead = Some(r.clone()));
        }
        // The dev kit writes 240-minute sessions and a 5-minute margin; this run needs seconds of
        // usable life.
        let (session_ttl, margin) = (
            local::duration(plan.session_ttl),
            local::duration(plan.safety_margin()),
        );
        setup = setup.configure(move |c| {
            c.cache.safety_margin = Some(margin.clone());
            for site in c.sites.values_mut() {
                site.session_ttl = Some(session_ttl.clone());
            }
        });
        let mut dc = setup.double_config();
        dc.session_ttl = plan.session_ttl;
        let double = FakeTableau::start(dc).await?;
        double.set_faults(
            "signin",
            Faults {
                latency: Some(Latency::Fixed(SIGNIN_LATENCY)),
                ..Faults::default()
            },
        )?;
        let pki = DevPki::in_memory()?;
        let (cert, key) = pki.server().write(dir.path(), "server")?;
        let client_ca = dir.path().join("ca.crt");
        std::fs::write(&client_ca, pki.ca_cert_pem())?;
        let tls = TlsFiles {
            cert,
            key,
            client_ca,
        };
        let path = dir.path().join("broker.toml");
        std::fs::write(&path, setup.broker_toml(double.base_url(), &tls)?)?;
        let config = tableau_token_broker::config::Config::load(&path)?;
        let broker =
            tableau_token_broker::server::start(config, tableau_token_broker::clock::system())
                .await
                .context("starting the expiry run's broker")?;
        let client = pki.issue_client(Some(CALLER), &[], "bench-loadgen")?;
        let mut channels = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            channels.push(local::connect(&pki, broker.local_addr(), &client).await?);
        }
        Ok(ExpiryWorld {
            _dir: dir,
            double,
            broker,
            channels,
        })
    }
}

/// Hits on one key at [`CONCURRENCY`] for `window`; any OK reply with a body counts.
async fn window(
    raw: &std::sync::Arc<Vec<RawClient>>,
    body: &Bytes,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Point> {
    let (raw, body) = (std::sync::Arc::clone(raw), body.clone());
    load::run(CONCURRENCY, warmup, window, move |i| {
        let mut c = raw[i % raw.len()].clone();
        let b = body.clone();
        async move {
            match c.call(b).await {
                Ok(reply) if !reply.is_empty() => Ok(()),
                Ok(_) => Err(tonic::Status::internal("an empty reply")),
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// What one variant measured.
struct Measured {
    hit: Point,
    across: Point,
    signins: u64,
    refreshes_started: u64,
    refreshes_failed: u64,
}

async fn measure(plan: &Plan, refresh_ahead: Option<&str>) -> anyhow::Result<Measured> {
    let world = ExpiryWorld::start(plan, refresh_ahead).await?;
    let req = credentials_request(&user(0));
    let body = Bytes::from(req.encode_to_vec());
    let raw = RawClient::on_each(world.channels.clone(), raw::GET_CREDENTIALS);
    let mut client = TokenBrokerClient::new(
        world
            .channels
            .first()
            .context("no broker connection")?
            .clone(),
    );
    // The first call signs in; its token's usable end is what the expiry window is centred on.
    let reply = client.get_credentials(req.clone()).await?.into_inner();
    let end = reply.expires_at.context("the reply has no expires_at")?;
    let end = SystemTime::UNIX_EPOCH
        + Duration::new(u64::try_from(end.seconds)?, u32::try_from(end.nanos)?);
    let hit = window(&raw, &body, plan.hit_warmup, plan.hit_window).await?;
    let start = end
        .checked_sub(plan.expiry_window / 2)
        .context("the token's end is before the epoch")?;
    let wait = start.duration_since(SystemTime::now()).context(
        "the hit window ran past the start of the expiry window; lengthen the usable life",
    )?;
    tokio::time::sleep(wait).await;
    let before = world.double.stats().signins;
    let refreshes = || world.broker.broker().sign_in_stats().snapshot();
    let r0 = refreshes();
    let t0 = Instant::now();
    let across = window(&raw, &body, Duration::ZERO, plan.expiry_window).await?;
    let signins = world.double.stats().signins - before;
    let r1 = refreshes();
    anyhow::ensure!(
        t0.elapsed() >= plan.expiry_window / 2,
        "the expiry window did not reach the token's end"
    );
    world.broker.shutdown().await?;
    world.double.shutdown().await;
    Ok(Measured {
        hit,
        across,
        signins,
        refreshes_started: r1.refreshes_started - r0.refreshes_started,
        refreshes_failed: r1.refreshes_failed - r0.refreshes_failed,
    })
}

/// Runs both variants and adds `expiry.*` to `report`.
pub(crate) async fn run(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    report.section(&format!(
        "Across an expiry: one hot key at concurrency {CONCURRENCY}, tokens usable for {} ms, sign-ins answered after {} ms",
        plan.usable.as_millis(),
        SIGNIN_LATENCY.as_millis()
    ));
    for (name, setting) in [
        ("refresh_ahead_on", None),
        ("refresh_ahead_off", Some("0s")),
    ] {
        let m = measure(plan, setting).await?;
        let f = |what: &str| format!("expiry.{name}.{what}");
        report.add(f("hit.p99"), m.hit.p99_us, "µs");
        report.add(f("across.p50"), m.across.p50_us, "µs");
        report.add(f("across.p99"), m.across.p99_us, "µs");
        report.add(f("across.p99_9"), m.across.p999_us, "µs");
        report.add(f("across.max"), m.across.max_us, "µs");
        report.add(
            f("across.p99_over_hit_p99"),
            m.across.p99_us / m.hit.p99_us.max(1e-9),
            "x",
        );
        report.add(f("across.signins"), m.signins as f64, "sign-ins");
        report.add(
            f("across.refreshes_started"),
            m.refreshes_started as f64,
            "sign-ins",
        );
        report.add(
            f("across.refreshes_failed"),
            m.refreshes_failed as f64,
            "sign-ins",
        );
        let errors = m.hit.errors + m.across.errors;
        report.add(f("errors"), errors as f64, "requests");
        if errors > 0 {
            report.note(format!("expiry, {name}: {errors} requests failed"));
        }
        if m.refreshes_started > 0 && m.signins > m.refreshes_started {
            report.note(format!(
                "expiry, {name}: {} sign-ins in the window but {} from refresh-ahead: callers still waited for a sign-in at the expiry (slowest request {:.0} ms)",
                m.signins,
                m.refreshes_started,
                m.across.max_us / 1e3
            ));
        }
        if m.signins == 0 {
            report.note(format!(
                "expiry, {name}: no sign-in in the window; it did not cross an expiry"
            ));
        }
        eprintln!(
            "  {name}: hit p99 {:.0} µs | across expiry p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs, {} sign-in(s), {} of them refresh-ahead ({} failed)",
            m.hit.p99_us,
            m.across.p99_us,
            m.across.p999_us,
            m.across.max_us,
            m.signins,
            m.refreshes_started,
            m.refreshes_failed
        );
    }
    Ok(())
}
