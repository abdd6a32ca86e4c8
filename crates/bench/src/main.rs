//! The benchmark harness: `cargo run --release --bin bench -- [--quick]` from the repository root.
//!
//! Measures a cache-hit `GetCredentials` against a bare echo service on the same mTLS stack, for
//! one key and for a mixed workload (64 callers with their own certificates over 1,000 keys,
//! Zipf-distributed, with the audit trail off, in a file, and on standard output into a pipe);
//! hit latency across a token's expiry with refresh-ahead on and off; the cold path and sign-in
//! coalescing against the Tableau double; lookups with up to a million cached entries; HS256
//! minting against PyJWT; and a broker cache hit against a client that signs in itself with
//! tableauserverclient. `--only soak` runs a minutes-long soak instead (sessions and memory under
//! forced refreshes), which a full run leaves out. It reports figures and prints PASS, MISS or
//! NOT MEASURED for each target; it never fails on a number. See docs/benchmarks.md.

mod cores;
mod expiry;
mod hits;
mod load;
mod mixed;
mod peers;
mod profile;
mod raw;
mod report;
mod setup;
mod shared;
mod soak;

/// mimalloc as in the broker's own binary, so the figures are the broker's: a tokio server allocates small, short-lived buffers on
/// every thread, where glibc's per-thread arenas cost more per call and hold more memory per
/// cached entry (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The echo baseline's generated code (`crates/bench/proto/bench/v1/echo.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all)]
mod pb {
    tonic::include_proto!("bench.v1");
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use prost::Message;
use secrecy::ExposeSecret;
use secrecy::SecretString;
use tableau_token_broker::audit::Fingerprinter;
use tableau_token_broker::cache::{CacheKey, CredentialCache, Credentials, KeyRef, Lookup};
use tableau_token_broker::error::BrokerError;
use tableau_token_broker::tableau::{ClientOptions, SignInTarget, TableauClient};

use crate::hits::{BrokerLoad, ClientKind, EchoLoad, Timing, pair};
use crate::report::Report;
use crate::setup::{SITE, World, credentials_request, user};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks the broker against the transport's limit and against its peers")]
struct Args {
    /// A short run that only checks the harness works (what CI runs); figures are rough.
    #[arg(long)]
    quick: bool,
    /// Only drive one kind of load, for a profiler such as perf or callgrind: `hit` (cache-hit
    /// GetCredentials), `echo` or `idle` (start-up only, to subtract) at `--concurrency`, or
    /// `mixed` and `mixed-echo` at one request in flight per caller.
    #[arg(long, value_name = "KIND")]
    profile: Option<profile::Kind>,
    /// How long `--profile` drives the load (default 10), or the soak (`--only soak`, default
    /// 240).
    #[arg(long, value_name = "SECONDS")]
    seconds: Option<f64>,
    /// Requests `--profile` or the soak keeps in flight.
    #[arg(long, default_value_t = 16, value_name = "N")]
    concurrency: usize,
    /// The concurrency levels of the cache-hit comparison (default 1,16,64,256), e.g. `64`
    /// to repeat the goal's level alone.
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    levels: Option<Vec<usize>>,
    /// The length of the slices in which the cache-hit comparison runs echo and broker in
    /// turns (default 100 ms), e.g. `1.5s` for one slice a round.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    slice: Option<Duration>,
    /// Where results.json goes.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Run one section only, e.g. to repeat it and see how much it moves between runs. Writes
    /// results.json but leaves docs/benchmarks.md alone (it reports complete runs only).
    #[arg(long, value_enum, value_name = "SECTION")]
    only: Option<Section>,
    /// With `--only mixed`: run that one audit trail instead of all three. `stdout` writes the
    /// trail to this process's standard output, so the figures go to results.json only; the bench
    /// runs itself this way, piped into another process, for the stdout-trail figure. With
    /// `--profile mixed`: the trail of the profiled broker (`off` or `file`).
    #[arg(long, value_enum, value_name = "TRAIL")]
    trail: Option<mixed::Trail>,
}

/// A part of the benchmark, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Cache hits vs echo.
    Hits,
    /// Cold path and coalescing.
    Cold,
    /// The tableauserverclient peer.
    Peer,
    /// Minting vs PyJWT.
    Mint,
    /// Many cached entries.
    Scale,
    /// Many callers over many keys (Zipf), with audit off, a file trail and a stdout trail.
    Mixed,
    /// p99 across a token's expiry with refresh-ahead on and off.
    Expiry,
    /// The shared cache (Redis): L2 vs L1 hits, cold calls over replicas, hit ratio.
    Shared,
    /// The soak: minutes of cache hits with 1 % forced refreshes, live sessions and memory
    /// sampled. Only with `--only soak` (its own broker and double); `--quick` runs a 1 s smoke.
    Soak,
}

/// Sizes and durations of one run.
struct Plan {
    levels: Vec<usize>,
    connections: usize,
    timing: Timing,
    cold_sequential: usize,
    coalesce_one: usize,
    coalesce_many: (usize, usize),
    scale: Vec<usize>,
    scale_lookups: usize,
    scale_grpc: Duration,
    mints: usize,
    tsc_count: usize,
    peer_requests: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                levels: vec![1, 16],
                connections: 8,
                timing: Timing {
                    warmup: Duration::from_millis(100),
                    measure: Duration::from_millis(300),
                    slice: Duration::from_millis(100),
                    rounds: 1,
                },
                cold_sequential: 5,
                coalesce_one: 100,
                coalesce_many: (1_000, 10),
                scale: vec![1_000],
                scale_lookups: 10_000,
                scale_grpc: Duration::from_millis(300),
                mints: 2_000,
                tsc_count: 10,
                peer_requests: 1_000,
            }
        } else {
            Plan {
                levels: vec![1, 16, 64, 256],
                connections: 8,
                timing: Timing {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_millis(1500),
                    slice: Duration::from_millis(100),
                    rounds: 8,
                },
                cold_sequential: 50,
                coalesce_one: 1_000,
                coalesce_many: (10_000, 100),
                scale: vec![1_000, 100_000, 1_000_000],
                scale_lookups: 200_000,
                scale_grpc: Duration::from_secs(3),
                mints: 50_000,
                tsc_count: 200,
                peer_requests: 1_000,
            }
        }
    }
}

/// Concurrency of the audit-on/audit-off comparison (the target is set at c=64).
const AUDIT_CONCURRENCY: usize = 64;

/// Injected sign-in latency of the Tableau double.
pub(crate) const SIGNIN_LATENCY: Duration = Duration::from_millis(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let new_report = || Report {
        quick: args.quick,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        machine: report::machine(),
        load_start: report::load_average(),
        round_trip_start: cores::shown(cores::round_trip_ns()),
        date: httpdate::fmt_http_date(SystemTime::now()),
        ..Report::default()
    };
    let mixed_profile = matches!(
        args.profile,
        Some(profile::Kind::Mixed | profile::Kind::MixedEcho)
    );
    match args.trail {
        Some(mixed::Trail::Stdout) if args.profile.is_some() => {
            anyhow::bail!("--profile prints to standard output: profile with --trail off or file")
        }
        Some(_) if args.only != Some(Section::Mixed) && !mixed_profile => anyhow::bail!(
            "--trail goes with --only mixed or --profile mixed; add one of them or drop --trail"
        ),
        _ => {}
    }
    if args.profile.is_none() && args.only == Some(Section::Soak) {
        // The soak starts a broker and double of its own; the shared World is not needed.
        let soak = soak::Plan::new(args.quick, args.seconds, args.concurrency)?;
        eprintln!(
            "[soak] {:.0} s, concurrency {}, 1 % force_refresh, grace {} s",
            soak.duration.as_secs_f64(),
            soak.concurrency,
            soak.grace.as_secs()
        );
        let mut report = new_report();
        soak::run(&soak, &mut report).await?;
        return write_results(&args, &mut report);
    }
    let mut plan = Plan::new(args.quick);
    if let Some(slice) = args.slice {
        anyhow::ensure!(!slice.is_zero(), "--slice must be longer than 0");
        plan.timing.slice = slice;
    }
    if let Some(levels) = &args.levels {
        plan.levels.clone_from(levels);
    }
    let max_entries = plan.scale.iter().max().copied().unwrap_or(1_000) as u64 * 2;
    let world = World::start(SIGNIN_LATENCY, max_entries).await?;
    // The subscriber `serve` installs (JSON lines on stderr, filter `info` unless RUST_LOG says
    // otherwise): every RPC's spans are then as costly as in production. Without one, tracing
    // would skip them, and the figures would flatter the broker.
    let _telemetry =
        tableau_token_broker::telemetry::init(&world.broker.broker().config().telemetry)
            .context("installing the broker's log subscriber")?;
    let mut users = Users(1);

    if let Some(kind) = args.profile {
        return profile::run(kind, &args, &world, &plan).await;
    }

    let mut report = new_report();

    let runs = |section| args.only.is_none_or(|only| only == section);
    if runs(Section::Hits) {
        eprintln!("[1/5] cache hits vs echo");
        hits_vs_echo(&world, &plan, &mut report).await?;
    }
    if runs(Section::Cold) {
        eprintln!("[2/5] cold path and coalescing");
        cold_path(&world, &plan, &mut users, &mut report).await?;
    }
    if runs(Section::Peer) {
        eprintln!("[3/5] tableauserverclient peer");
        tsc_peer(&world, &plan, &mut users, &mut report).await?;
    }
    if runs(Section::Mint) {
        eprintln!("[4/5] minting vs PyJWT");
        minting(&plan, &mut report)?;
    }
    if runs(Section::Scale) {
        eprintln!("[5/5] scale");
        scale(&world, &plan, &mut report).await?;
    }

    if runs(Section::Shared) {
        eprintln!("[6/6] shared cache (Redis)");
        let (lookups, cold) = if args.quick {
            (50, 100)
        } else {
            (1_000, 1_000)
        };
        let levels = if args.quick { vec![16] } else { vec![16, 64] };
        shared::run(
            &world,
            &levels,
            lookups,
            cold,
            &plan.timing,
            &mut |n| users.take(n),
            &mut report,
        )
        .await?;
    }

    if runs(Section::Mixed) {
        let mixed_plan = mixed::Plan::new(args.quick, plan.timing);
        eprintln!("[mixed] {}", mixed::describe(&mixed_plan));
        mixed::run(&mixed_plan, args.trail, args.quick, &mut report).await?;
    }
    if runs(Section::Expiry) {
        eprintln!("[expiry] p99 across a token's expiry, refresh-ahead on and off");
        expiry::run(&expiry::Plan::new(args.quick), &mut report).await?;
    }

    if args.quick && args.only.is_none() {
        // The soak proper takes minutes (`--only soak`); CI's quick run only checks it works.
        eprintln!("[soak] smoke (1 s; the soak proper is --only soak)");
        let smoke = soak::Plan::new(true, None, args.concurrency)?;
        soak::run(&smoke, &mut report).await?;
    }

    write_results(&args, &mut report)?;
    if !args.quick && args.only.is_none() {
        // The repository root's docs/, two folders up from this crate.
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs)?;
        let png = docs.join("bench-throughput.png");
        let plotted = match report.plot(&png) {
            Ok(()) => Some("bench-throughput.png"),
            Err(e) => {
                report.note(format!("no plot: {e:#}"));
                None
            }
        };
        report.write_markdown(&docs.join("benchmarks.md"), plotted)?;
        println!("wrote docs/benchmarks.md");
    }
    Ok(())
}

/// Prints the report with its targets and writes `results.json` under `--out`. With `--trail
/// stdout` standard output is the audit trail: results.json only.
fn write_results(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let json = args.out.join("results.json");
    if args.trail == Some(mixed::Trail::Stdout) {
        return report.write_json(&json);
    }
    report.load_end = report::load_average();
    report.round_trip_end = cores::shown(cores::round_trip_ns());
    report.judge();
    report.print();
    report.write_json(&json)?;
    println!("\nwrote {}", json.display());
    Ok(())
}

/// Hands out user names the broker has not cached yet.
struct Users(usize);

impl Users {
    fn take(&mut self, n: usize) -> anyhow::Result<Vec<String>> {
        let v: Vec<String> = (self.0..self.0 + n).map(user).collect();
        self.0 += n;
        anyhow::ensure!(
            self.0 <= setup::USERS,
            "the double has too few users ({})",
            setup::USERS
        );
        Ok(v)
    }
}

/// Concurrency of the extra pair driven by the generated (decoding) clients.
const DECODED_CONCURRENCY: usize = 64;

async fn hits_vs_echo(world: &World, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let req = credentials_request(&user(0));
    let broker = BrokerLoad::new(world, plan.connections, req.clone()).await?;
    // The first call signs in; every later one is a hit.
    let resp = broker.call_once().await?;
    let echo = EchoLoad::new(
        world,
        plan.connections,
        broker.request_len(),
        resp.encoded_len() as u32,
    )
    .await?;
    report.section("Message sizes");
    report.add(
        "msg.get_credentials_request",
        req.encoded_len() as f64,
        "bytes",
    );
    report.add(
        "msg.get_credentials_response",
        resp.encoded_len() as f64,
        "bytes",
    );
    for &c in &plan.levels {
        let p = pair(&broker, &echo, &plan.timing, ClientKind::Raw, c).await?;
        if p.echo.errors + p.broker.errors > 0 {
            report.note(format!(
                "c={c}: {} echo and {} broker requests failed",
                p.echo.errors, p.broker.errors
            ));
        }
        report.pairs.push(p);
    }

    // Hits with the audit trail on (a file, fail-closed): each reply waits for its record's
    // group commit. Beside the audit-off figure at the same concurrency.
    let audited = BrokerLoad::to(
        world,
        world.audited.local_addr(),
        plan.connections,
        req.clone(),
    )
    .await?;
    audited.call_once().await?;
    let c = AUDIT_CONCURRENCY;
    let off = pair(&broker, &echo, &plan.timing, ClientKind::Raw, c).await?;
    let on = pair(&audited, &echo, &plan.timing, ClientKind::Raw, c).await?;
    report.section(&format!(
        "Hits with audit (fail-closed, file) at concurrency {c}, beside audit off"
    ));
    let name = |what: &str| format!("hit.c{c}.{what}");
    report.add(name("audit_off.throughput"), off.broker.rps, "req/s");
    report.add(
        name("audit_off.throughput_ratio"),
        off.ratio(),
        "broker/echo",
    );
    report.add(name("audit_file.throughput"), on.broker.rps, "req/s");
    report.add(
        name("audit_file.throughput_ratio"),
        on.ratio(),
        "broker/echo",
    );
    for (what, p) in [("audit_off", &off), ("audit_file", &on)] {
        let (lo, hi) = p.ratio_range();
        report.add(
            name(&format!("{what}.throughput_ratio.min")),
            lo,
            "broker/echo",
        );
        report.add(
            name(&format!("{what}.throughput_ratio.max")),
            hi,
            "broker/echo",
        );
    }
    report.add(name("audit_off.p99"), off.broker.p99_us, "µs");
    report.add(name("audit_file.p99"), on.broker.p99_us, "µs");
    let stats = world.audited.broker().audit().stats().snapshot();
    report.add(
        "audit.records_per_write",
        stats.written as f64 / stats.batches.max(1) as f64,
        "records",
    );
    report.add("audit.failed", stats.failed as f64, "records");

    // The same pair with the generated clients, which decode every reply (as a real caller
    // would): the client's decode work is charged against the broker here.
    let c = DECODED_CONCURRENCY;
    let d = pair(&broker, &echo, &plan.timing, ClientKind::Decoded, c).await?;
    report.section(&format!(
        "Decoded client at concurrency {c} (generated tonic clients, every reply decoded)"
    ));
    let name = |what: &str| format!("hit.c{c}.decoded_client.{what}");
    report.add(name("echo.throughput"), d.echo.rps, "req/s");
    report.add(name("broker.throughput"), d.broker.rps, "req/s");
    report.add(name("throughput_ratio"), d.ratio(), "broker/echo");
    report.add(name("echo.p50"), d.echo.p50_us, "µs");
    report.add(name("broker.p50"), d.broker.p50_us, "µs");
    report.add(name("echo.p99"), d.echo.p99_us, "µs");
    report.add(name("broker.p99"), d.broker.p99_us, "µs");
    report.add(name("p99_ratio"), d.p99_ratio(), "broker/echo");
    report.add(name("echo.errors"), d.echo.errors as f64, "requests");
    report.add(name("broker.errors"), d.broker.errors as f64, "requests");
    if d.echo.errors + d.broker.errors > 0 {
        report.note(format!(
            "decoded client, c={c}: {} echo and {} broker requests failed",
            d.echo.errors, d.broker.errors
        ));
    }
    Ok(())
}

async fn cold_path(
    world: &World,
    plan: &Plan,
    users: &mut Users,
    report: &mut Report,
) -> anyhow::Result<()> {
    let broker = world.broker.broker();
    let config = broker.config();
    let site = config.site(SITE).context("the benchmark site is missing")?;
    let app = site
        .app
        .clone()
        .context("the benchmark site has no connected app")?;
    let target = SignInTarget {
        server_url: world.fake.base_url().to_owned(),
        api_version: site.api_version.clone(),
        content_url: SITE.to_owned(),
        format: site.format,
        uat: false,
    };
    // The double's own sign-in latency, as a direct client sees it (mint + HTTP sign-in).
    let direct = TableauClient::new(ClientOptions::default())?;
    let minter = tableau_token_broker::mint::Minter::new(tableau_token_broker::clock::system());
    let scopes = tableau_token_broker::scope::normalize([setup::SCOPE])?;
    let mut h = load::histogram()?;
    for u in users.take(plan.cold_sequential)? {
        let t0 = Instant::now();
        let jwt = minter.mint(&app, &u, &scopes, Duration::from_secs(300))?;
        direct.sign_in(&target, &jwt.jwt).await?;
        h.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    let direct_mean = h.mean() / 1e6;
    let direct_p50 = h.value_at_quantile(0.5) as f64 / 1e6;

    let mut client = world.broker_clients(1).await?.remove(0);
    let mut h = load::histogram()?;
    for u in users.take(plan.cold_sequential)? {
        let t0 = Instant::now();
        let r = client.get_credentials(credentials_request(&u)).await?;
        h.saturating_record(t0.elapsed().as_nanos() as u64);
        anyhow::ensure!(
            !r.into_inner().from_cache,
            "a cold request was answered from cache"
        );
    }
    let broker_mean = h.mean() / 1e6;
    let broker_p50 = h.value_at_quantile(0.5) as f64 / 1e6;
    report.section("Cold path (Tableau double with a fixed 20 ms sign-in latency)");
    report.add(
        "cold.double_signin_latency_injected",
        SIGNIN_LATENCY.as_secs_f64() * 1e3,
        "ms",
    );
    report.add("cold.direct_signin.mean", direct_mean, "ms");
    report.add("cold.direct_signin.p50", direct_p50, "ms");
    report.add("cold.broker.mean", broker_mean, "ms");
    report.add("cold.broker.p50", broker_p50, "ms");
    report.add("cold.broker_added.mean", broker_mean - direct_mean, "ms");
    report.add("cold.broker_added.p50", broker_p50 - direct_p50, "ms");

    let clients = Arc::new(world.broker_clients(plan.connections).await?);
    let one = users.take(1)?.remove(0);
    let (signins, failed) =
        burst(world, &clients, (0..plan.coalesce_one).map(|_| one.clone())).await?;
    report.add(
        format!("coalesce.{}_concurrent_one_key.signins", plan.coalesce_one),
        signins as f64,
        "sign-ins",
    );
    let (n, keys) = plan.coalesce_many;
    let many = users.take(keys)?;
    let (signins_many, failed_many) =
        burst(world, &clients, (0..n).map(|i| many[i % keys].clone())).await?;
    report.add(
        format!("coalesce.{n}_over_{keys}_keys.signins"),
        signins_many as f64,
        "sign-ins",
    );
    if failed + failed_many > 0 {
        report.note(format!(
            "coalescing: {} requests failed",
            failed + failed_many
        ));
    }
    Ok(())
}

/// Sends all requests at once; returns the sign-ins Tableau saw and the failures.
async fn burst(
    world: &World,
    clients: &Arc<Vec<pb_broker::TokenBrokerClient<tonic::transport::Channel>>>,
    users: impl Iterator<Item = String>,
) -> anyhow::Result<(u64, u64)> {
    let before = world.fake.stats().signins;
    let tasks: Vec<_> = users
        .enumerate()
        .map(|(i, u)| {
            let mut c = clients[i % clients.len()].clone();
            tokio::spawn(async move { c.get_credentials(credentials_request(&u)).await })
        })
        .collect();
    let mut failed = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    Ok((world.fake.stats().signins - before, failed))
}

mod pb_broker {
    pub(crate) use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
}

async fn tsc_peer(
    world: &World,
    plan: &Plan,
    users: &mut Users,
    report: &mut Report,
) -> anyhow::Result<()> {
    report.section(
        "Peer: a request that signs in itself with tableauserverclient (same double, same 20 ms)",
    );
    let before = world.fake.stats().signins;
    let peer_user = users.take(1)?.remove(0);
    let url = world.fake.base_url().to_owned();
    let count = plan.tsc_count;
    let peer =
        tokio::task::spawn_blocking(move || peers::tsc_peer(&url, SITE, &peer_user, count)).await?;
    let peer_signins = world.fake.stats().signins - before;

    // The broker: one client, the same number of requests in a row, first one cold.
    let mut client = world.broker_clients(1).await?.remove(0);
    let u = users.take(1)?.remove(0);
    let before = world.fake.stats().signins;
    let mut h = load::histogram()?;
    for _ in 0..plan.peer_requests {
        let t0 = Instant::now();
        client.get_credentials(credentials_request(&u)).await?;
        h.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    let broker_signins = world.fake.stats().signins - before;
    let broker_mean_ms = h.mean() / 1e6;
    let broker_p50_ms = h.value_at_quantile(0.5) as f64 / 1e6;
    report.add("peer.broker.time_to_token.mean", broker_mean_ms, "ms");
    report.add("peer.broker.time_to_token.p50", broker_p50_ms, "ms");
    report.add(
        "peer.broker.signins_per_1000_requests",
        broker_signins as f64 * 1000.0 / plan.peer_requests as f64,
        "sign-ins",
    );
    match peer {
        Ok(p) => {
            report.add("peer.tsc.time_to_token.mean", p.mean_ms, "ms");
            report.add("peer.tsc.time_to_token.p50", p.p50_ms, "ms");
            report.add(
                "peer.tsc.signins_per_1000_requests",
                peer_signins as f64 * 1000.0 / p.count.max(1) as f64,
                "sign-ins",
            );
            report.add(
                "peer.time_to_token_ratio_tsc_over_broker",
                p.mean_ms / broker_mean_ms,
                "x",
            );
        }
        Err(e) => report.note(format!("tableauserverclient peer skipped: {e:#}")),
    }
    Ok(())
}

fn minting(plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    report.section("Minting HS256 connected-app JWTs (one thread)");
    let rust = peers::mint_rate(plan.mints)?;
    report.add("mint.broker", rust, "JWT/s");
    match peers::pyjwt_rate(plan.mints) {
        Ok(py) => {
            report.add("mint.pyjwt", py, "JWT/s");
            report.add("mint.ratio_broker_over_pyjwt", rust / py, "x");
        }
        Err(e) => report.note(format!("PyJWT comparison skipped: {e}")),
    }
    Ok(())
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn scale(world: &World, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    report.section("Scale: lookups with many cached entries (filled directly, no Tableau)");
    let broker = world.broker.broker();
    let cache = broker.cache();
    // A real entry to copy field sizes from.
    let mut client = world.broker_clients(1).await?.remove(0);
    client
        .get_credentials(credentials_request(&user(0)))
        .await?;
    let template = cache
        .find_by_digest(
            &broker.fingerprints().digest(&SecretString::from(
                client
                    .get_credentials(credentials_request(&user(0)))
                    .await?
                    .into_inner()
                    .token,
            )),
        )
        .context("the warm entry is not in the cache")?;
    cache.run_pending_tasks();
    let mut prev_entries = cache.len();
    let mut prev_rss = rss_bytes();
    let mut filled = 0usize;
    let clients = Arc::new(world.broker_clients(plan.connections).await?);
    for &n in &plan.scale {
        let t0 = Instant::now();
        fill(cache, broker.fingerprints(), &template, filled, n).await?;
        let added = n - filled;
        filled = n;
        cache.run_pending_tasks();
        let fill_s = t0.elapsed().as_secs_f64();
        let label = label(n);
        report.add(
            format!("scale.{label}.fill_rate"),
            added as f64 / fill_s,
            "inserts/s",
        );
        // Marginal: resident-set growth over the entries added since the previous level.
        let rss = rss_bytes();
        let entries = cache.len();
        if let (Some(a), Some(b)) = (prev_rss, rss) {
            report.add(
                format!("scale.{label}.rss_per_entry"),
                b.saturating_sub(a) as f64 / entries.saturating_sub(prev_entries).max(1) as f64,
                "bytes",
            );
        }
        prev_rss = rss;
        prev_entries = entries;
        // In-process lookups over a sample of keys spread across the whole population.
        let sample: Vec<String> = (0..10_000usize).map(|j| scale_user(spread(j, n))).collect();
        let mut h = load::histogram()?;
        let mut misses = 0u64;
        let t0 = Instant::now();
        for j in 0..plan.scale_lookups {
            let k = KeyRef {
                site: &template.key.site,
                user: &sample[j % sample.len()],
                scopes: &template.key.scopes,
                claims: &template.key.claims,
            };
            let t = Instant::now();
            let r = cache
                .get_or_sign_in(k, Lookup::default(), |_| async {
                    Err::<Credentials, _>(BrokerError::Internal("benchmark lookup missed".into()))
                })
                .await;
            h.saturating_record(t.elapsed().as_nanos() as u64);
            if !matches!(r, Ok((_, true))) {
                misses += 1;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        report.add(
            format!("scale.{label}.lookup.throughput_one_task"),
            plan.scale_lookups as f64 / secs,
            "lookups/s",
        );
        report.add(
            format!("scale.{label}.lookup.p50"),
            h.value_at_quantile(0.5) as f64,
            "ns",
        );
        report.add(
            format!("scale.{label}.lookup.p99"),
            h.value_at_quantile(0.99) as f64,
            "ns",
        );
        if misses > 0 {
            report.note(format!("scale {label}: {misses} lookups missed"));
        }
        // End to end over gRPC, keys spread over the population, concurrency 64.
        let cl = Arc::clone(&clients);
        let p = load::run(64, Duration::ZERO, plan.scale_grpc, move |i| {
            let mut c = cl[i % cl.len()].clone();
            let r = credentials_request(&format!("scale-{}", spread(i, n)));
            async move { c.get_credentials(r).await.map(|_| ()) }
        })
        .await?;
        report.add(format!("scale.{label}.grpc_c64.throughput"), p.rps, "req/s");
        report.add(format!("scale.{label}.grpc_c64.p99"), p.p99_us, "µs");
        if p.errors > 0 {
            report.note(format!("scale {label}: {} gRPC lookups failed", p.errors));
        }
        eprintln!(
            "  {label}: filled in {fill_s:.1} s; gRPC {:.0} req/s",
            p.rps
        );
    }
    Ok(())
}

/// Index `j` scattered over `0..n`.
fn spread(j: usize, n: usize) -> usize {
    (j.wrapping_mul(2_654_435_761)) % n
}

fn label(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn scale_user(i: usize) -> String {
    format!("scale-{i}")
}

/// Inserts entries `from..to` through the cache's own path (a "sign-in" that answers at once),
/// each shaped like the template: a token of the same length, its own user and user LUID, and
/// the site's LUID and content URL as fresh strings (the cache interns them, as on a sign-in).
async fn fill(
    cache: &CredentialCache,
    fingerprints: &Fingerprinter,
    template: &Credentials,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let now = SystemTime::now();
    let width = template.token.expose_secret().len();
    for i in from..to {
        let user = scale_user(i);
        let token = SecretString::from(format!("{i:0width$x}"));
        let creds = |key: &CacheKey| {
            let c = Credentials {
                key: key.clone(),
                digest: fingerprints.digest(&token),
                token: token.clone(),
                site_luid: Arc::from(template.site_luid.to_string()),
                site_content_url: Arc::from(template.site_content_url.to_string()),
                server_url: Arc::clone(&template.server_url),
                content_url: Arc::clone(&template.content_url),
                client_id: Arc::clone(&template.client_id),
                user_luid: format!("00000000-0000-4000-8000-{i:012}").into(),
                jti: uuid::Uuid::new_v4(),
                expires_at: now + Duration::from_secs(4 * 3600),
            };
            async move { Ok(c) }
        };
        let key = KeyRef {
            site: &template.key.site,
            user: &user,
            scopes: &template.key.scopes,
            claims: &template.key.claims,
        };
        cache.get_or_sign_in(key, Lookup::default(), creds).await?;
    }
    Ok(())
}
