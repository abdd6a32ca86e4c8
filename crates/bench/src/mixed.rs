//! `--only mixed`: cache hits as many callers make them. Each connection is its own caller (its
//! own client certificate, SPIFFE ID and `[[callers]]` entry); the requests spread over 1,000
//! keys (site, user, scopes) with a Zipf distribution (s = 1.1), every key cached first. The
//! broker runs with the production features: the default sign-in limits, metrics (the admin
//! listener) and an audit trail, which is off, a file, or standard output piped to another
//! process (the trail the Kubernetes manifests ship, `path = "-"`).
//!
//! The stdout trail needs the broker's standard output to be a pipe, so that variant runs in a
//! child process of the bench (`--only mixed --trail stdout`) whose standard output a `cat` reads;
//! the child writes its figures to a `results.json` the parent reads back.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prost::Message;
use prost::bytes::Bytes;
use tableau_double::SiteUser;
use tableau_token_broker::config::raw::RawAudit;
use tableau_token_broker::devkit::certs::CertPair;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite, LocalSystem,
};
use tableau_token_broker::grpc::pb::GetCredentialsRequest;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tonic::transport::Channel;

use crate::hits::{ClientKind, EchoLoad, Load, Timing, pair};
use crate::load::{self, Point};
use crate::raw::{self, RawClient};
use crate::report::{Pair, Report};
use crate::setup::{CLIENT_ID, SCOPE, SECRET, SECRET_ID, TempDir, serve_echo};

/// Where the audit trail of a mixed run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Trail {
    /// `[audit] enabled = false`.
    Off,
    /// A file, fail-closed.
    File,
    /// Standard output (`path = "-"`), fail-closed, read by another process through a pipe.
    Stdout,
}

impl Trail {
    fn name(self) -> &'static str {
        match self {
            Trail::Off => "audit_off",
            Trail::File => "audit_file",
            Trail::Stdout => "audit_stdout",
        }
    }

    fn audit_section(self, dir: &Path) -> RawAudit {
        let fail_closed = |path: PathBuf| RawAudit {
            path: Some(path),
            mode: Some("fail-closed".to_owned()),
            ..RawAudit::default()
        };
        match self {
            Trail::Off => RawAudit {
                enabled: Some(false),
                ..RawAudit::default()
            },
            Trail::File => fail_closed(dir.join("audit.jsonl")),
            Trail::Stdout => fail_closed(PathBuf::from("-")),
        }
    }
}

/// The Zipf exponent of the key popularity.
pub(crate) const ZIPF_S: f64 = 1.1;

/// Sites of the mixed workload (each a site of the double with its own users).
const SITES: [(&str, &str); 2] = [
    ("finance", "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"),
    ("sales", "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d"),
];

/// The scope sets a key may ask for.
const SCOPE_SETS: [&[&str]; 2] = [&[SCOPE], &[SCOPE, "tableau:views:embed"]];

/// Sizes of a mixed run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Connections, each its own caller; also the concurrency (one request in flight each).
    pub callers: usize,
    /// Distinct keys.
    pub keys: usize,
    /// How the broker/echo pair is timed.
    pub timing: Timing,
}

impl Plan {
    /// The issue's shape (64 callers, 1,000 keys), or a small one for `--quick`.
    pub(crate) fn new(quick: bool, timing: Timing) -> Plan {
        if quick {
            Plan {
                callers: 16,
                keys: 200,
                timing,
            }
        } else {
            Plan {
                callers: 64,
                keys: 1_000,
                timing,
            }
        }
    }
}

/// The SPIFFE ID of caller `i`.
fn caller_id(i: usize) -> String {
    format!("spiffe://example.org/ns/bench/sa/caller-{i}")
}

/// Key `k`: site, scope set and user interleaved, so the popular keys spread over both sites
/// and both scope sets.
fn key(k: usize) -> GetCredentialsRequest {
    let (site, _) = SITES[k % SITES.len()];
    let scopes = SCOPE_SETS[(k / SITES.len()) % SCOPE_SETS.len()];
    GetCredentialsRequest {
        site: site.into(),
        user: format!("mixed-{}", k / (SITES.len() * SCOPE_SETS.len())),
        scopes: scopes.iter().map(|&s| s.to_owned()).collect(),
        ..Default::default()
    }
}

/// The double, the broker with `trail`, the echo baseline and one certificate per caller.
struct MixedWorld {
    _dir: TempDir,
    local: LocalSystem,
    echo_addr: std::net::SocketAddr,
    callers: Vec<CertPair>,
}

impl MixedWorld {
    async fn start(plan: &Plan, trail: Trail) -> anyhow::Result<MixedWorld> {
        let dir = TempDir::new()?;
        let users_per_site = plan.keys.div_ceil(SITES.len() * SCOPE_SETS.len());
        let users: Vec<SiteUser> = (0..users_per_site)
            .map(|i| {
                SiteUser::new(
                    format!("mixed-{i}"),
                    format!("00000000-0000-4000-9000-{i:012}"),
                )
            })
            .collect();
        let mut setup = LocalSetup::new(dir.path(), LocalApp::new(CLIENT_ID, SECRET_ID, SECRET))
            .grace_period(Duration::from_secs(2))
            // Metrics on, as in production; limits left at their defaults.
            .admin(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .configure({
                let audit = trail.audit_section(dir.path());
                move |c| c.audit = audit.clone()
            })
            .max_entries(plan.keys as u64 * 2);
        for (name, luid) in SITES {
            setup = setup.site(LocalSite::new(name, luid, users.clone()));
        }
        let sites: Vec<&str> = SITES.iter().map(|&(n, _)| n).collect();
        let scopes: Vec<&str> = SCOPE_SETS.iter().flat_map(|s| s.iter().copied()).collect();
        for i in 0..plan.callers {
            setup = setup.caller(LocalCaller::new(
                caller_id(i),
                LocalGrant::new(&sites, &["*"], &scopes),
            ));
        }
        let local = setup
            .start()
            .await
            .context("starting the double and the mixed workload's broker")?;
        let echo_addr = serve_echo(&local.config_path, &local.tls, &local.identity_sources).await?;
        let callers = (0..plan.callers)
            .map(|i| {
                local
                    .pki
                    .issue_client(Some(&caller_id(i)), &[], &format!("bench-caller-{i}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MixedWorld {
            _dir: dir,
            local,
            echo_addr,
            callers,
        })
    }

    /// One connection per caller to `addr`.
    async fn channels(&self, addr: std::net::SocketAddr) -> anyhow::Result<Vec<Channel>> {
        let mut v = Vec::with_capacity(self.callers.len());
        for c in &self.callers {
            v.push(local::connect(&self.local.pki, addr, c).await?);
        }
        Ok(v)
    }
}

/// Cumulative Zipf probabilities over ranks `1..=n`.
pub(crate) struct Zipf(Vec<f64>);

impl Zipf {
    /// Ranks `1..=n` with exponent `s`.
    pub(crate) fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|r| {
                acc += (r as f64).powf(-s);
                acc
            })
            .collect();
        for p in &mut cdf {
            *p /= acc;
        }
        Zipf(cdf)
    }

    /// The 0-based rank drawn for the call numbered `i` (a hash of it: no shared generator).
    pub(crate) fn sample(&self, i: usize) -> usize {
        let u = (splitmix64(i as u64) >> 11) as f64 / (1u64 << 53) as f64;
        self.0
            .partition_point(|&p| p < u)
            .min(self.0.len().saturating_sub(1))
    }

    /// The probability of the most popular key.
    pub(crate) fn top(&self) -> f64 {
        self.0.first().copied().unwrap_or(0.0)
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cache hits over the keys, each call on its task's caller connection, its key drawn from
/// the Zipf distribution; every reply must be as long as its key's warm reply.
struct MixedLoad {
    raw: Arc<Vec<RawClient>>,
    bodies: Arc<Vec<Bytes>>,
    expected: Arc<Vec<usize>>,
    zipf: Arc<Zipf>,
}

impl MixedLoad {
    /// Signs every key in (spread over the callers, a few at a time so the default limits hold)
    /// and records each key's reply length.
    async fn warm(world: &MixedWorld, keys: usize) -> anyhow::Result<MixedLoad> {
        let channels = world.channels(world.local.server.local_addr()).await?;
        let decoding: Vec<_> = channels
            .iter()
            .cloned()
            .map(TokenBrokerClient::new)
            .collect();
        let raw = RawClient::on_each(channels, raw::GET_CREDENTIALS);
        let requests: Vec<GetCredentialsRequest> = (0..keys).map(key).collect();
        // First pass signs in (at most one in flight per caller); the second must be all hits.
        for pass in 0..2 {
            let mut tasks = tokio::task::JoinSet::new();
            for (c, client) in decoding.iter().enumerate() {
                let mut client = client.clone();
                let mine: Vec<GetCredentialsRequest> = requests
                    .iter()
                    .skip(c)
                    .step_by(decoding.len())
                    .cloned()
                    .collect();
                tasks.spawn(async move {
                    for r in mine {
                        let reply = client
                            .get_credentials(r.clone())
                            .await
                            .with_context(|| format!("warming {} on {}", r.user, r.site))?;
                        anyhow::ensure!(
                            pass == 0 || reply.into_inner().from_cache,
                            "a warmed key was not answered from cache"
                        );
                    }
                    Ok(())
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
        }
        let bodies: Vec<Bytes> = requests
            .iter()
            .map(|r| Bytes::from(r.encode_to_vec()))
            .collect();
        let mut expected = Vec::with_capacity(keys);
        let mut c = raw.first().context("no broker connection")?.clone();
        for b in &bodies {
            expected.push(c.call(b.clone()).await?.len());
        }
        Ok(MixedLoad {
            raw,
            bodies: Arc::new(bodies),
            expected: Arc::new(expected),
            zipf: Arc::new(Zipf::new(keys, ZIPF_S)),
        })
    }

    /// The median request and reply sizes over the keys, for the echo baseline.
    fn sizes(&self) -> (usize, usize) {
        let med = |mut v: Vec<usize>| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        (
            med(self.bodies.iter().map(Bytes::len).collect()),
            med(self.expected.to_vec()),
        )
    }
}

impl Load for MixedLoad {
    async fn point(
        &self,
        client: ClientKind,
        concurrency: usize,
        warmup: Duration,
        measure: Duration,
    ) -> anyhow::Result<Point> {
        anyhow::ensure!(
            client == ClientKind::Raw,
            "the mixed workload runs with the raw client only"
        );
        let (raw, bodies, expected, zipf) = (
            Arc::clone(&self.raw),
            Arc::clone(&self.bodies),
            Arc::clone(&self.expected),
            Arc::clone(&self.zipf),
        );
        load::run(concurrency, warmup, measure, move |i| {
            let k = zipf.sample(i);
            let mut c = raw[i % raw.len()].clone();
            let (b, e) = (bodies[k].clone(), expected[k]);
            async move { c.call_expecting(b, e).await }
        })
        .await
    }
}

/// The echo baseline of `mixed`: one connection per caller, messages sized like the median
/// request and reply over its keys.
async fn echo_like(world: &MixedWorld, mixed: &MixedLoad) -> anyhow::Result<EchoLoad> {
    let (request_len, reply_len) = mixed.sizes();
    // The echo reply's payload is sized so that the encoded reply is as long as the median
    // GetCredentials reply (a tag and a length byte or two on top of the payload).
    let payload = reply_len.saturating_sub(3) as u32;
    Ok(EchoLoad::on(
        world.channels(world.echo_addr).await?,
        request_len,
        payload,
    ))
}

/// `--profile mixed` (or `mixed-echo`): one side of the workload alone for `d`, one request in
/// flight per caller, so that a profiler sees only that side.
pub(crate) async fn profile(
    plan: &Plan,
    trail: Trail,
    echo: bool,
    d: Duration,
) -> anyhow::Result<Point> {
    let world = MixedWorld::start(plan, trail).await?;
    let mixed = MixedLoad::warm(&world, plan.keys).await?;
    let p = if echo {
        let echo = echo_like(&world, &mixed).await?;
        echo.point(ClientKind::Raw, plan.callers, Duration::ZERO, d)
            .await?
    } else {
        mixed
            .point(ClientKind::Raw, plan.callers, Duration::ZERO, d)
            .await?
    };
    world.local.shutdown().await?;
    Ok(p)
}

/// One trail in this process: starts its world, warms the keys, times the mixed load against
/// echo at one request in flight per caller, and adds `mixed.c{N}.{trail}.*` to `report`.
pub(crate) async fn run_here(plan: &Plan, trail: Trail, report: &mut Report) -> anyhow::Result<()> {
    let round_trip_before = crate::cores::round_trip_ns();
    let world = MixedWorld::start(plan, trail).await?;
    let mixed = MixedLoad::warm(&world, plan.keys).await?;
    let echo = echo_like(&world, &mixed).await?;
    let c = plan.callers;
    let p = pair(&mixed, &echo, &plan.timing, ClientKind::Raw, c).await?;
    add(report, c, trail, &p);
    if trail != Trail::Off {
        let stats = world.local.server.broker().audit().stats().snapshot();
        let name = format!("mixed.c{c}.{}", trail.name());
        report.add(
            format!("{name}.records_per_write"),
            stats.written as f64 / stats.batches.max(1) as f64,
            "records",
        );
        report.add(
            format!("{name}.records_failed"),
            stats.failed as f64,
            "records",
        );
    }
    world.local.shutdown().await?;
    // The machine's state around the measurement: the audited ratios drop by several points
    // when the cores are far apart (see `crate::cores`).
    let name = format!("mixed.c{c}.{}.core_round_trip", trail.name());
    for (when, ns) in [
        ("before", round_trip_before),
        ("after", crate::cores::round_trip_ns()),
    ] {
        if let Some(ns) = ns {
            report.add(format!("{name}.{when}"), ns, "ns");
        }
    }
    Ok(())
}

fn add(report: &mut Report, c: usize, trail: Trail, p: &Pair) {
    let name = |what: &str| format!("mixed.c{c}.{}.{what}", trail.name());
    let (lo, hi) = p.ratio_range();
    report.add(name("echo.throughput"), p.echo.rps, "req/s");
    report.add(name("broker.throughput"), p.broker.rps, "req/s");
    report.add(name("throughput_ratio"), p.ratio(), "broker/echo");
    report.add(name("throughput_ratio.min"), lo, "broker/echo");
    report.add(name("throughput_ratio.max"), hi, "broker/echo");
    report.add(name("cpu_per_request_ratio"), p.cpu_ratio(), "broker/echo");
    report.add(name("echo.p99"), p.echo.p99_us, "µs");
    report.add(name("broker.p99"), p.broker.p99_us, "µs");
    let errors = p.echo.errors + p.broker.errors;
    report.add(name("errors"), errors as f64, "requests");
    if errors > 0 {
        report.note(format!(
            "mixed, {}: {} echo and {} broker requests failed",
            trail.name(),
            p.echo.errors,
            p.broker.errors
        ));
    }
}

/// The stdout trail: runs this bench again as `--only mixed --trail stdout`, its standard
/// output piped into `cat > /dev/null` (another process, as a log collector would be), and adds
/// the child's `mixed.*` figures to `report`.
pub(crate) async fn run_stdout_child(quick: bool, report: &mut Report) -> anyhow::Result<()> {
    let out = TempDir::new()?;
    let out_path = out.path().to_path_buf();
    let figures = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let exe = std::env::current_exe().context("finding the bench's own executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["--only", "mixed", "--trail", "stdout", "--out"])
            .arg(&out_path);
        if quick {
            cmd.arg("--quick");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the stdout-trail child")?;
        let pipe = child
            .stdout
            .take()
            .context("the child's standard output is not a pipe")?;
        let mut reader = Command::new("cat")
            .stdin(Stdio::from(pipe))
            .stdout(Stdio::null())
            .spawn()
            .context("starting `cat` to read the audit trail")?;
        let status = child.wait()?;
        let read = reader.wait()?;
        anyhow::ensure!(status.success(), "the stdout-trail child failed: {status}");
        anyhow::ensure!(read.success(), "the trail's reader failed: {read}");
        let json = std::fs::read_to_string(out_path.join("results.json"))
            .context("reading the child's results.json")?;
        Ok(serde_json::from_str(&json)?)
    })
    .await??;
    let map = figures
        .get("figures")
        .and_then(|f| f.as_object())
        .context("the child's results.json has no figures")?;
    for (name, f) in map.iter().filter(|(n, _)| n.starts_with("mixed.")) {
        let value = f.get("value").and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        let unit = f.get("unit").and_then(|u| u.as_str()).unwrap_or_default();
        report.add(name.clone(), value, unit.to_owned());
    }
    if let Some(notes) = figures.get("notes").and_then(|n| n.as_array()) {
        for n in notes.iter().filter_map(|n| n.as_str()) {
            report.note(format!("stdout-trail child: {n}"));
        }
    }
    Ok(())
}

/// The workload's description, for the report.
pub(crate) fn describe(plan: &Plan) -> String {
    let z = Zipf::new(plan.keys, ZIPF_S);
    format!(
        "{} connections, each its own caller (client certificate, SPIFFE ID, `[[callers]]` entry), one request in flight each, over {} keys ({} sites × {} scope sets × {} users), Zipf s = {ZIPF_S} (the top key takes {:.1} % of calls); default sign-in limits, metrics on",
        plan.callers,
        plan.keys,
        SITES.len(),
        SCOPE_SETS.len(),
        plan.keys.div_ceil(SITES.len() * SCOPE_SETS.len()),
        z.top() * 100.0
    )
}

/// The mixed workload with every trail (or only `only`; `--trail stdout` is the child's run),
/// each against echo, under one heading of `report`.
pub(crate) async fn run(
    plan: &Plan,
    only: Option<Trail>,
    quick: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.section(&format!("Mixed workload: {}", describe(plan)));
    match only {
        Some(trail) => run_here(plan, trail, report).await,
        None => {
            run_here(plan, Trail::Off, report).await?;
            run_here(plan, Trail::File, report).await?;
            run_stdout_child(quick, report).await
        }
    }
}
