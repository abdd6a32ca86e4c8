//! The shared cache (issue 16) against a real `redis-server` on a free loopback port: what an L2
//! hit costs next to an L1 hit, how many sign-ins cold calls spread over three replicas make, and
//! the cache-hit throughput ratio (broker/echo) with `[cache.shared]` configured.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tableau_token_broker::config::raw::{
    RawCache, RawCaller, RawConfig, RawConnectedApp, RawGrant, RawSharedCache, RawSite,
};

use anyhow::Context;
use tableau_token_broker::broker::{Broker, CredentialsRequest};
use tableau_token_broker::config::Config;

use crate::hits::{BrokerLoad, ClientKind, EchoLoad, Timing, pair};
use crate::report::Report;
use crate::setup::{CALLER, CLIENT_ID, SCOPE, SECRET, SECRET_ID, SITE, World, credentials_request};

/// A `redis-server` of the benchmark's own, without persistence; killed on drop.
pub(crate) struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub(crate) fn start() -> anyhow::Result<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run redis-server: install it (apt-get install redis-server)")?;
        let redis = Redis { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "PING"])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return Ok(redis);
            }
            anyhow::ensure!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `[cache.shared]` section for this Redis and `key_file`.
    pub(crate) fn section(&self, key_file: &Path) -> RawSharedCache {
        RawSharedCache {
            redis_url: Some(format!("redis://127.0.0.1:{}/0", self.port)),
            encryption_key_file: Some(key_file.to_path_buf()),
            ..RawSharedCache::default()
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica_config(double_url: &str, shared: &RawSharedCache, dir: &Path) -> anyhow::Result<Config> {
    let raw = RawConfig {
        version: Some(1),
        development: true,
        cache: RawCache {
            max_entries: Some(100_000),
            shared: Some(shared.clone()),
            ..RawCache::default()
        },
        // The bench measures the tiers, not the flood limits: cold calls would exhaust the
        // defaults.
        limits: crate::setup::unlimited(),
        sites: [(
            SITE.to_owned(),
            RawSite {
                server_url: Some(double_url.to_owned()),
                content_url: Some(SITE.to_owned()),
                connected_app: Some(RawConnectedApp {
                    client_id: Some(CLIENT_ID.to_owned()),
                    secret_id: Some(SECRET_ID.to_owned()),
                    secret: Some(SECRET.into()),
                    ..RawConnectedApp::default()
                }),
                ..RawSite::default()
            },
        )]
        .into(),
        callers: vec![RawCaller {
            identity: Some(CALLER.to_owned()),
            grants: vec![RawGrant {
                sites: vec![SITE.to_owned()],
                users: vec!["*".to_owned()],
                scopes: vec![SCOPE.to_owned()],
                ..RawGrant::default()
            }],
            ..RawCaller::default()
        }],
        ..RawConfig::default()
    };
    tableau_token_broker::config::build(raw, dir).map_err(|issues| {
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the replicas' configuration: {}", issues.join("; "))
    })
}

async fn connected(replicas: &[Arc<Broker>]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replicas
        .iter()
        .all(|r| r.shared_cache().is_some_and(|s| s.snapshot().connected))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "replicas did not connect to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn request(user: &str) -> CredentialsRequest {
    CredentialsRequest {
        site: SITE.into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        ..CredentialsRequest::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the section. `users` hands out names the double knows and nothing has cached.
pub(crate) async fn run(
    world: &World,
    levels: &[usize],
    lookups: usize,
    cold_calls: usize,
    timing: &Timing,
    users: &mut dyn FnMut(usize) -> anyhow::Result<Vec<String>>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let redis = Redis::start()?;
    let dir = std::env::temp_dir().join(format!("ttb-bench-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("cache.key");
    std::fs::write(&key_file, (0..32).map(|_| rand_byte()).collect::<Vec<u8>>())?;
    let section = redis.section(&key_file);
    let double_url = world.fake.base_url().to_owned();
    let replicas: Vec<Arc<Broker>> = (0..3)
        .map(|_| {
            // Audit off here, as in the echo baseline: this section measures the two tiers.
            Ok(Broker::new(
                replica_config(&double_url, &section, &dir)?,
                tableau_token_broker::clock::system(),
                tableau_token_broker::audit::AuditSink::off(),
                tableau_token_broker::audit::Fingerprinter::new(),
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    connected(&replicas).await?;
    let caller = tableau_token_broker::audit::CallerContext::from_id(CALLER);

    // L2 hit vs L1 hit: replica 0 signs in for each user; replica 1's first call for it is an
    // L1 miss answered from Redis, its second an L1 hit. Timed inside the broker (no gRPC).
    let names = users(lookups)?;
    for u in &names {
        replicas[0].get_credentials(&caller, request(u)).await?;
    }
    let (mut l2, mut l1) = (Vec::new(), Vec::new());
    for u in &names {
        let t = Instant::now();
        let got = replicas[1].get_credentials(&caller, request(u)).await?;
        l2.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(
            got.from_cache,
            "replica 1 signed in instead of reading Redis"
        );
        let t = Instant::now();
        replicas[1].get_credentials(&caller, request(u)).await?;
        l1.push(t.elapsed().as_secs_f64() * 1e6);
    }
    l2.sort_by(f64::total_cmp);
    l1.sort_by(f64::total_cmp);
    report.section("Shared cache (Redis on loopback; latencies inside the broker, no gRPC)");
    report.add("shared.l2_hit.p50", percentile(&l2, 0.5), "µs");
    report.add("shared.l2_hit.p99", percentile(&l2, 0.99), "µs");
    report.add("shared.l1_hit.p50", percentile(&l1, 0.5), "µs");
    report.add("shared.l1_hit.p99", percentile(&l1, 0.99), "µs");

    // Cold calls spread over three replicas, all for one key, at once.
    let before = world.fake.stats().signins_ok;
    let user = users(1)?.remove(0);
    let mut calls = Vec::new();
    for i in 0..cold_calls {
        let r = Arc::clone(&replicas[i % 3]);
        let u = user.clone();
        let caller = caller.clone();
        calls.push(tokio::spawn(async move {
            r.get_credentials(&caller, request(&u)).await
        }));
    }
    for c in calls {
        c.await??;
    }
    report.add(
        format!("shared.cold_{cold_calls}_calls_3_replicas.signins"),
        (world.fake.stats().signins_ok - before) as f64,
        "sign-ins",
    );
    let s = replicas
        .iter()
        .map(|r| r.shared_cache().map(|s| s.snapshot()));
    let errors: u64 = s.flatten().map(|s| s.redis_errors).sum();
    report.add("shared.redis_errors", errors as f64, "errors");
    drop(replicas);

    // Cache hits through gRPC with [cache.shared] configured, against the echo baseline.
    let shared_world =
        World::start_with(crate::SIGNIN_LATENCY, 10_000, Some(section.clone())).await?;
    let req = credentials_request(&crate::setup::user(0));
    let broker = BrokerLoad::new(&shared_world, 8, req).await?;
    let resp = broker.call_once().await?;
    let echo = EchoLoad::new(
        &shared_world,
        8,
        broker.request_len(),
        prost::Message::encoded_len(&resp) as u32,
    )
    .await?;
    // Every production feature at once: the shared world's audited broker has the sign-in
    // limits, the admin listener (metrics), a fail-closed file trail and [cache.shared].
    let all = BrokerLoad::to(
        &shared_world,
        shared_world.audited.local_addr(),
        8,
        credentials_request(&crate::setup::user(0)),
    )
    .await?;
    all.call_once().await?;
    for &c in levels {
        for (name, load) in [("shared", &broker), ("all_features", &all)] {
            let p = pair(load, &echo, timing, ClientKind::Raw, c).await?;
            report.add(
                format!("{name}.hit.c{c}.throughput_ratio"),
                p.ratio(),
                "broker/echo",
            );
            let (lo, hi) = p.ratio_range();
            report.add(
                format!("{name}.hit.c{c}.throughput_ratio.min"),
                lo,
                "broker/echo",
            );
            report.add(
                format!("{name}.hit.c{c}.throughput_ratio.max"),
                hi,
                "broker/echo",
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn rand_byte() -> u8 {
    // The key only has to be unknown outside this run; uuid's v4 randomness is enough.
    uuid::Uuid::new_v4().as_bytes()[0]
}
