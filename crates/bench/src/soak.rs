//! The soak (issue 11, point 5): cache-hit `GetCredentials` for a few keys for minutes, 1 % of
//! calls with `force_refresh`, against a broker of its own that keeps the default sign-in limits
//! and has a short `[cache] replaced_session_grace`. Every forced refresh that gets through the
//! caller entry's token bucket replaces a cached session, and the replaced one is signed out at
//! Tableau only when its grace period is over; the soak watches the sessions alive at the Tableau
//! double stay under the bound that design gives (sign-in rate × grace + burst + keys), and the
//! resident set stay flat. Refusals by the sign-in limit (`RESOURCE_EXHAUSTED`) are expected and
//! counted on their own, not as errors.
//!
//! Everything runs in one process (load generator, broker, double), so the resident set is all of
//! them together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tableau_double::{FakeTableauHandle, Faults, Latency};
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::server::RunningServer;
use tonic::Code;
use tonic::transport::Channel;

use crate::report::Report;
use crate::setup::{
    CALLER, CLIENT_ID, SCOPE, SECRET, SECRET_ID, SITE, SITE_LUID, TempDir, credentials_request,
    site_users, user,
};

/// The double's sign-in latency in the soak: small, so that forced refreshes are not slowed by it.
const SIGNIN_LATENCY: Duration = Duration::from_millis(1);

/// One call in this many (per key) sets `force_refresh`.
const FORCE_EVERY: u64 = 100;

/// How often the sampler reads the live sessions and the resident set for their maxima, between
/// the rows of the table.
const POLL: Duration = Duration::from_millis(100);

/// Sizes and durations of the soak.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// How long the load runs.
    pub duration: Duration,
    /// A row of the samples table this often.
    pub sample_every: Duration,
    /// `[cache] replaced_session_grace` of the soak's broker.
    pub grace: Duration,
    /// Requests kept in flight.
    pub concurrency: usize,
    /// HTTP/2 connections they are spread over.
    pub connections: usize,
    /// Distinct keys (users) asked for.
    pub keys: usize,
    /// Before the load, let the sign-in bucket refill from the first sign-ins (the load starts
    /// with the whole burst available); after it, wait for the last grace period to end and count
    /// the sessions again. Off in the `--quick` smoke, to keep it short.
    pub settle: bool,
}

impl Plan {
    /// The full soak (`--only soak`: 240 s unless `seconds` says otherwise, a 10 s grace), or the
    /// smoke of `--quick` (1 s, a 1 s grace, no settling before or after).
    pub(crate) fn new(
        quick: bool,
        seconds: Option<f64>,
        concurrency: usize,
    ) -> anyhow::Result<Plan> {
        let duration = match seconds {
            Some(s) => Duration::try_from_secs_f64(s)
                .with_context(|| format!("--seconds {s} is not a duration"))?,
            None if quick => Duration::from_secs(1),
            None => Duration::from_secs(240),
        };
        anyhow::ensure!(!duration.is_zero(), "--seconds must be more than 0");
        Ok(Plan {
            duration,
            sample_every: (duration / 48).clamp(Duration::from_millis(250), Duration::from_secs(5)),
            grace: Duration::from_secs(if quick { 1 } else { 10 }),
            concurrency: concurrency.max(1),
            connections: 8,
            keys: 4,
            settle: !quick,
        })
    }
}

/// The soak's own double and broker.
struct SoakWorld {
    _dir: TempDir,
    double: FakeTableauHandle,
    server: RunningServer,
    clients: Vec<TokenBrokerClient<Channel>>,
}

impl SoakWorld {
    async fn start(plan: &Plan) -> anyhow::Result<SoakWorld> {
        let dir = TempDir::new()?;
        let grace = plan.grace;
        let local = LocalSetup::new(dir.path(), LocalApp::new(CLIENT_ID, SECRET_ID, SECRET))
            .grace_period(Duration::from_secs(1))
            // Metrics on, as in production; the audit trail off (minutes of calls would write
            // gigabytes of records to the scratch folder).
            .admin(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .configure(crate::setup::audit_off)
            .configure(move |c| c.cache.replaced_session_grace = Some(local::duration(grace)))
            // No [limits] lines: the default sign-in budget (10/s, burst 20) is what is soaked.
            .site(LocalSite::new(SITE, SITE_LUID, site_users(plan.keys)))
            .caller(LocalCaller::new(
                CALLER,
                LocalGrant::new(&[SITE], &["*"], &[SCOPE]),
            ))
            .start()
            .await
            .context("starting the soak's Tableau double and broker")?;
        local.double.set_faults(
            "signin",
            Faults {
                latency: Some(Latency::Fixed(SIGNIN_LATENCY)),
                ..Faults::default()
            },
        )?;
        let cert = local.pki.issue_client(Some(CALLER), &[], "bench-soak")?;
        let mut clients = Vec::with_capacity(plan.connections);
        for _ in 0..plan.connections {
            let channel = local::connect(&local.pki, local.server.local_addr(), &cert).await?;
            clients.push(TokenBrokerClient::new(channel));
        }
        Ok(SoakWorld {
            _dir: dir,
            double: local.double,
            server: local.server,
            clients,
        })
    }

    async fn stop(self) {
        let SoakWorld {
            _dir,
            double,
            server,
            clients,
        } = self;
        drop(clients);
        let _ = server.shutdown().await;
        double.shutdown().await;
    }
}

/// What the load tasks count, as calls complete.
#[derive(Debug, Default)]
struct Counters {
    /// Calls handed out (picks the key and whether to force).
    next: AtomicU64,
    /// Calls completed, whatever the outcome.
    calls: AtomicU64,
    /// Completed calls that set `force_refresh`.
    forced: AtomicU64,
    /// Of those, the ones answered with credentials.
    forced_ok: AtomicU64,
    /// Calls refused with `RESOURCE_EXHAUSTED` (the sign-in limits).
    refused: AtomicU64,
    /// Any other failure.
    errors: AtomicU64,
}

/// One reading of everything the soak watches.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    calls: u64,
    forced: u64,
    refused: u64,
    errors: u64,
    sign_ins: u64,
    live: u64,
    pending: u64,
    signed_out: u64,
    rss: Option<u64>,
}

/// The resident set of this process, from `VmRSS` in `/proc/self/status` (Linux), in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn read(world: &SoakWorld, c: &Counters) -> Reading {
    let fake = world.double.stats();
    let so = world.server.broker().sign_out_stats();
    Reading {
        calls: c.calls.load(Ordering::Relaxed),
        forced: c.forced.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        sign_ins: fake.signins_ok,
        live: fake.live_sessions,
        pending: so.pending,
        signed_out: so.signed_out,
        rss: rss_bytes(),
    }
}

/// A row of the samples table; `live_max` is the most live sessions polled since the last row,
/// `base` the reading at the start of the load (sign-ins are counted from there).
fn row(
    label: String,
    r: &Reading,
    base: &Reading,
    live_max: u64,
    rate: Option<f64>,
) -> Vec<String> {
    vec![
        label,
        r.calls.to_string(),
        rate.map_or_else(|| "-".to_owned(), |x| format!("{x:.0}")),
        r.forced.to_string(),
        r.refused.to_string(),
        r.errors.to_string(),
        (r.sign_ins - base.sign_ins).to_string(),
        r.live.to_string(),
        live_max.to_string(),
        r.pending.to_string(),
        r.signed_out.to_string(),
        r.rss
            .map_or_else(|| "-".to_owned(), |b| format!("{:.1}", mib(b))),
    ]
}

const COLUMNS: &[&str] = &[
    "t (s)",
    "calls",
    "calls/s",
    "force refreshes",
    "refused by limit",
    "errors",
    "sign-ins",
    "live sessions",
    "live max since last row",
    "pending sign-outs",
    "signed out",
    "RSS MiB",
];

/// Runs the soak and adds its figures, samples and a statement on the bound to `report`.
pub(crate) async fn run(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let world = SoakWorld::start(plan).await?;
    let broker = Arc::clone(world.server.broker());
    let config = broker.config();
    let rate = config.limits.rate_for(CALLER);
    let grace = config.cache.replaced_session_grace;
    let max_pending = config.cache.max_pending_sign_outs;
    // Sessions alive at the double at any time: the one cached per key, plus those replaced
    // within the last grace period, which the caller entry's bucket lets in at most at its rate
    // after a full burst.
    let bound = (rate.per_second * grace.as_secs_f64()).ceil() as u64
        + u64::from(rate.burst)
        + plan.keys as u64;
    let keys: Arc<Vec<String>> = Arc::new((0..plan.keys).map(user).collect());

    // One sign-in per key first, so that every call without force_refresh is a cache hit.
    for (i, k) in keys.iter().enumerate() {
        let mut c = world.clients[i % world.clients.len()].clone();
        c.get_credentials(credentials_request(k))
            .await
            .with_context(|| format!("the soak's first sign-in for {k}"))?;
    }
    if plan.settle {
        // Let the bucket refill from those sign-ins: the load starts with the whole burst.
        tokio::time::sleep(Duration::from_secs_f64(
            plan.keys as f64 / rate.per_second.max(0.1),
        ))
        .await;
    }

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start_reading = read(&world, &counters);
    let start = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|t| {
            let mut client = world.clients[t % world.clients.len()].clone();
            let keys = Arc::clone(&keys);
            let counters = Arc::clone(&counters);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let n_keys = keys.len() as u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = counters.next.fetch_add(1, Ordering::Relaxed);
                    // Keys in turn; every key gets one forced refresh in FORCE_EVERY of its calls,
                    // starting with its first (so that even the short smoke forces some).
                    let key = &keys[(n % n_keys) as usize];
                    let force = (n / n_keys) % FORCE_EVERY == 0;
                    let mut req = credentials_request(key);
                    req.force_refresh = force;
                    let result = client.get_credentials(req).await;
                    counters.calls.fetch_add(1, Ordering::Relaxed);
                    if force {
                        counters.forced.fetch_add(1, Ordering::Relaxed);
                    }
                    match result {
                        Ok(_) if force => {
                            counters.forced_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(s) if s.code() == Code::ResourceExhausted => {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();

    let base = start_reading;
    let mut rows = vec![row("0".to_owned(), &base, &base, base.live, None)];
    let mut live_max = start_reading.live;
    let mut pending_max = start_reading.pending;
    let mut rss_max = start_reading.rss;
    let mut since_row = start_reading.live;
    let mut last = (Duration::ZERO, start_reading);
    let mut next_row = plan.sample_every;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= plan.duration {
            break;
        }
        tokio::time::sleep(POLL.min(plan.duration - elapsed)).await;
        let r = read(&world, &counters);
        let t = start.elapsed();
        live_max = live_max.max(r.live);
        since_row = since_row.max(r.live);
        pending_max = pending_max.max(r.pending);
        rss_max = rss_max.max(r.rss);
        // The last row is the reading once the load has stopped, below.
        if t >= next_row && t < plan.duration {
            let dt = (t - last.0).as_secs_f64();
            let rate = (r.calls - last.1.calls) as f64 / dt.max(1e-9);
            rows.push(row(
                format!("{:.1}", t.as_secs_f64()),
                &r,
                &base,
                since_row,
                Some(rate),
            ));
            since_row = r.live;
            last = (t, r);
            next_row += plan.sample_every;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let load_secs = start.elapsed().as_secs_f64();
    let end = read(&world, &counters);
    live_max = live_max.max(end.live);
    since_row = since_row.max(end.live);
    rss_max = rss_max.max(end.rss);
    let dt = load_secs - last.0.as_secs_f64();
    rows.push(row(
        format!("{load_secs:.1}"),
        &end,
        &base,
        since_row,
        Some((end.calls - last.1.calls) as f64 / dt.max(1e-9)),
    ));

    // The last replaced sessions wait out their grace period; then only the cached ones are left.
    let mut drained = None;
    if plan.settle {
        let deadline = Instant::now() + grace + Duration::from_secs(5);
        let mut r = end;
        while Instant::now() < deadline && (r.pending > 0 || r.live > plan.keys as u64) {
            tokio::time::sleep(POLL).await;
            r = read(&world, &counters);
        }
        let t = start.elapsed().as_secs_f64();
        let waited = t - load_secs;
        rows.push(row(format!("{t:.1} (drained)"), &r, &base, r.live, None));
        drained = Some((r, waited));
    }

    let so = broker.sign_out_stats();
    let limits = broker.limit_stats().snapshot();
    let forced_ok = counters.forced_ok.load(Ordering::Relaxed);
    report.section(&format!(
        "Soak: {keys} keys at concurrency {c}, 1 % force_refresh, replaced_session_grace {g} s, \
         sign-in limits {r}/s burst {b} (its own broker and double; RSS is the whole process)",
        keys = plan.keys,
        c = plan.concurrency,
        g = grace.as_secs(),
        r = rate.per_second,
        b = rate.burst,
    ));
    report.add("soak.duration", load_secs, "s");
    report.add("soak.calls", end.calls as f64, "calls");
    report.add(
        "soak.calls_per_second",
        end.calls as f64 / load_secs,
        "calls/s",
    );
    report.add("soak.force_refreshes", end.forced as f64, "calls");
    report.add("soak.force_refreshes_answered", forced_ok as f64, "calls");
    report.add("soak.refused_by_limit", end.refused as f64, "calls");
    report.add(
        "soak.refused.sign_in_rate",
        limits.sign_ins_rate_limited as f64,
        "sign-ins",
    );
    report.add(
        "soak.refused.site_concurrency",
        limits.site_sign_ins_busy as f64,
        "sign-ins",
    );
    report.add("soak.errors", end.errors as f64, "calls");
    report.add(
        "soak.sign_ins",
        (end.sign_ins - start_reading.sign_ins) as f64,
        "sign-ins",
    );
    report.add("soak.sign_outs", so.signed_out as f64, "sign-outs");
    report.add("soak.sign_outs_failed", so.failed as f64, "sign-outs");
    report.add("soak.sign_outs_early", so.early as f64, "sign-outs");
    report.add(
        "soak.pending_sign_outs.max",
        pending_max as f64,
        "sign-outs",
    );
    report.add(
        "soak.pending_sign_outs.limit",
        max_pending as f64,
        "sign-outs",
    );
    report.add(
        "soak.live_sessions.start",
        start_reading.live as f64,
        "sessions",
    );
    report.add("soak.live_sessions.max", live_max as f64, "sessions");
    report.add("soak.live_sessions.end", end.live as f64, "sessions");
    if let Some((r, waited)) = drained {
        report.add("soak.live_sessions.after_drain", r.live as f64, "sessions");
        report.add("soak.drain_wait", waited, "s");
    }
    report.add("soak.live_sessions.bound", bound as f64, "sessions");
    for (name, v) in [
        ("soak.rss.start", start_reading.rss),
        ("soak.rss.max", rss_max),
        ("soak.rss.end", end.rss),
    ] {
        if let Some(b) = v {
            report.add(name, mib(b), "MiB");
        }
    }
    if end.rss.is_none() {
        report.note("soak: no resident set figures (/proc/self/status has no VmRSS here)");
    }
    report.note(format!(
        "soak: live sessions at the double peaked at {live_max} (polled every {} ms), {} the \
         designed bound of {bound} = {}/s x {} s grace + burst {} + {} keys",
        POLL.as_millis(),
        if live_max <= bound { "within" } else { "above" },
        rate.per_second,
        grace.as_secs(),
        rate.burst,
        plan.keys,
    ));
    if end.errors > 0 {
        report.note(format!("soak: {} calls failed", end.errors));
    }
    report.table(
        &format!(
            "Soak samples (every {:.2} s; counters cumulative from the start of the load)",
            plan.sample_every.as_secs_f64()
        ),
        COLUMNS,
        rows,
    );
    eprintln!(
        "  {} calls ({:.0}/s), {} force refreshes, {} refused by limit, {} errors; live sessions max {live_max} (bound {bound})",
        end.calls,
        end.calls as f64 / load_secs,
        end.forced,
        end.refused,
        end.errors
    );
    drop(broker);
    world.stop().await;
    Ok(())
}
