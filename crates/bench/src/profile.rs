//! `--profile KIND`: one load alone for a while, for a profiler (perf, callgrind), printing the
//! requests it completed.

use std::time::Duration;

use anyhow::Context;
use prost::Message;

use crate::hits::{BrokerLoad, ClientKind, EchoLoad};
use crate::load::Point;
use crate::setup::{World, credentials_request, user};
use crate::{Args, Plan, mixed};

/// What `--profile` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Cache-hit GetCredentials.
    Hit,
    /// Cache-hit GetCredentials on the broker that writes its audit trail (a file, fail-closed).
    HitAudited,
    /// The echo baseline.
    Echo,
    /// The mixed workload's cache hits alone (64 callers over 1,000 keys; `--trail` picks the
    /// audit trail, off unless set), to profile what it costs beyond its echo.
    Mixed,
    /// The echo baseline of the mixed workload alone (its connections and message sizes).
    MixedEcho,
    /// Nothing: start-up cost only.
    Idle,
}

/// Drives `kind` for `--seconds` (10 by default) and prints what it completed.
pub(crate) async fn run(kind: Kind, args: &Args, world: &World, plan: &Plan) -> anyhow::Result<()> {
    let mixed_profile = matches!(kind, Kind::Mixed | Kind::MixedEcho);
    let seconds = args.seconds.unwrap_or(10.0);
    let d = Duration::try_from_secs_f64(seconds)
        .with_context(|| format!("--seconds {seconds} is not a duration"))?;
    let mixed_plan = mixed::Plan::new(args.quick, plan.timing);
    // The mixed workload keeps one request in flight per caller.
    let concurrency = if mixed_profile {
        mixed_plan.callers
    } else {
        args.concurrency
    };
    let p = match kind {
        Kind::Idle => Point::median(&[]),
        Kind::Hit => {
            let addr = world.broker.local_addr();
            hit_point(world, addr, plan, args.concurrency, d).await?
        }
        Kind::HitAudited => {
            let addr = world.audited.local_addr();
            hit_point(world, addr, plan, args.concurrency, d).await?
        }
        Kind::Echo => echo_point(world, plan, args.concurrency, d).await?,
        Kind::Mixed | Kind::MixedEcho => {
            let trail = args.trail.unwrap_or(mixed::Trail::Off);
            mixed::profile(&mixed_plan, trail, kind == Kind::MixedEcho, d).await?
        }
    };
    println!(
        "{kind:?} at c={concurrency}: {} requests, {:.0} req/s, p99 {:.0} µs",
        p.count, p.rps, p.p99_us
    );
    Ok(())
}

/// `--profile hit` (or `hit-audited`): cache hits from the raw client on the broker at `addr`.
async fn hit_point(
    world: &World,
    addr: std::net::SocketAddr,
    plan: &Plan,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Point> {
    let broker =
        BrokerLoad::to(world, addr, plan.connections, credentials_request(&user(0))).await?;
    // One sign-in first so that everything measured is a hit.
    broker.call_once().await?;
    broker
        .point(ClientKind::Raw, concurrency, Duration::ZERO, measure)
        .await
}

/// `--profile echo`: the echo baseline from the raw client.
async fn echo_point(
    world: &World,
    plan: &Plan,
    concurrency: usize,
    measure: Duration,
) -> anyhow::Result<Point> {
    let echo = EchoLoad::new(
        world,
        plan.connections,
        credentials_request(&user(0)).encoded_len(),
        // The size of the benchmark's GetCredentialsResponse (figure msg.get_credentials_response).
        184,
    )
    .await?;
    echo.point(ClientKind::Raw, concurrency, Duration::ZERO, measure)
        .await
}
