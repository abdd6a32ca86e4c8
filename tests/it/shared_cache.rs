//! The shared cache (issue 16) against a real `redis-server` started on a free loopback port, and
//! the real Tableau double: several in-process brokers with caches of their own share it, and
//! one test runs a replica as the real `serve` binary to kill it mid sign-in.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser,
};
use tableau_token_broker::broker::{Broker, CredentialsRequest};
use tableau_token_broker::config::Config;
use tableau_token_broker::devkit::certs::DevPki;
use tableau_token_broker::grpc::pb;

use crate::support::{self, Served, serve_command, slow_signins};

const CALLER: &str = "spiffe://example.org/ns/reports/sa/renderer";
const CLIENT_ID: &str = "shared-client";
const SECRET_ID: &str = "shared-sid";
const SECRET: &str = "shared-cache-connected-app-secret";
const SITE_LUID: &str = "5a5a5a5a-0000-4000-8000-00000000feed";
const SCOPE: &str = "tableau:content:read";
const USERS: usize = 40;

/// The test caller, as the transport would describe it (a SPIFFE ID).
fn caller() -> tableau_token_broker::audit::CallerContext {
    tableau_token_broker::audit::CallerContext::from_id(CALLER)
}

fn user(i: usize) -> String {
    format!("analyst-{i}@example.com")
}

fn user_luid(i: usize) -> String {
    format!("7b7b7b7b-0000-4000-8000-{i:012}")
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own on a free loopback port, without persistence.
pub(crate) struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    pub(crate) fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    /// Starts (again) on the same port, and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the shared-cache tests need a real Redis; install it \
                     (Debian/Ubuntu: apt-get install redis-server; .ci/run does this)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs redis-cli; its raw output (redis-cli prints replies raw when not on a terminal).
    fn cli_bytes(&self, args: &[&str]) -> Vec<u8> {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    pub(crate) fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli_bytes(args)).into_owned()
    }

    pub(crate) fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One double, one Redis, and brokers (replicas) that share them.
struct World {
    dir: tempfile::TempDir,
    redis: Redis,
    double: FakeTableauHandle,
    key_file: PathBuf,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let users = (0..USERS)
            .map(|i| SiteUser::new(user(i), user_luid(i)))
            .collect();
        let double = FakeTableau::start(FakeTableauConfig::new(
            vec![Site::new("Finance", "finance", SITE_LUID, users)],
            vec![ConnectedApp::new(
                CLIENT_ID,
                vec![AppSecret::new(SECRET_ID, SECRET)],
            )],
        ))
        .await
        .unwrap();
        let key_file = dir.path().join("cache.key");
        std::fs::write(&key_file, rand_key()).unwrap();
        World {
            dir,
            redis: Redis::start(),
            double,
            key_file,
        }
    }

    /// The replicas' configuration; `server` adds a `[server]` section for the `serve` binary.
    fn config_text(&self, server: Option<(&Path, &Path, &Path)>) -> String {
        let mut t = String::from("version = 1\ndevelopment = true\n");
        if let Some((cert, key, ca)) = server {
            t.push_str(&format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n"
            ));
        }
        t.push_str(&format!(
            r#"
[cache]
max_entries = 1000

[cache.shared]
redis_url = "{url}"
encryption_key_file = {key:?}
# Generous for a loaded two-core test machine; production keeps the 50 ms default.
operation_timeout = "1s"
lease_ttl = "1s"
lease_wait = "30s"
breaker_failures = 2
breaker_cooldown = "200ms"

# This test is about sharing; the sign-in limits (tests/it/security_limits.rs) stay out of the way.
[limits]
sign_ins_per_second = 1000
sign_in_burst = 1000

[sites.finance]
server_url = "{double}"
content_url = "finance"

[sites.finance.connected_app]
client_id = "{CLIENT_ID}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"

[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["finance"]
users = ["*"]
scopes = ["{SCOPE}"]
"#,
            url = self.redis.url(),
            key = self.key_file.display().to_string(),
            double = self.double.base_url(),
        ));
        t
    }

    /// A replica in this process, with a cache of its own.
    fn replica(&self) -> Arc<Broker> {
        let path = self.dir.path().join("replica.toml");
        let config = Config::from_toml(&self.config_text(None), &path).unwrap();
        Broker::new(
            config,
            tableau_token_broker::clock::system(),
            tableau_token_broker::audit::AuditSink::off(),
            tableau_token_broker::audit::Fingerprinter::new(),
        )
        .unwrap()
    }

    /// `n` replicas, once each has connected to Redis (a replica that has not yet serves on
    /// its own cache, which these tests do not count on).
    async fn replicas(&self, n: usize) -> Vec<Arc<Broker>> {
        let rs: Vec<_> = (0..n).map(|_| self.replica()).collect();
        eventually(
            Duration::from_secs(10),
            "replicas connect to Redis",
            || async {
                rs.iter()
                    .all(|r| r.shared_cache().unwrap().snapshot().connected)
            },
        )
        .await;
        rs
    }

    fn sessions_made(&self) -> u64 {
        self.double.stats().signins_ok
    }
}

pub(crate) fn rand_key() -> Vec<u8> {
    (0..32).map(|_| rand::random::<u8>()).collect()
}

fn request(user: &str) -> CredentialsRequest {
    CredentialsRequest {
        site: "finance".into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        ..CredentialsRequest::default()
    }
}

async fn token(b: &Broker, user: &str) -> String {
    b.get_credentials(&caller(), request(user))
        .await
        .unwrap()
        .credentials
        .token
        .expose_secret()
        .to_owned()
}

/// Polls `check` until it holds or `limit` passes (then fails with `what`).
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_cold_calls_over_three_replicas_sign_in_once() {
    let w = World::start().await;
    let replicas = w.replicas(3).await;
    // A slow sign-in keeps every call's miss overlapping the holder's sign-in.
    slow_signins(&w.double, Duration::from_millis(300));
    let mut calls = Vec::new();
    for i in 0..300 {
        let b = Arc::clone(&replicas[i % 3]);
        calls.push(tokio::spawn(async move { token(&b, &user(0)).await }));
    }
    let mut tokens = std::collections::HashSet::new();
    for c in calls {
        tokens.insert(c.await.unwrap());
    }
    assert_eq!(
        w.sessions_made(),
        1,
        "one sign-in at the double across replicas"
    );
    assert_eq!(tokens.len(), 1, "every replica hands out the same session");
    let snaps: Vec<_> = replicas
        .iter()
        .map(|b| b.shared_cache().unwrap().snapshot())
        .collect();
    assert_eq!(snaps.iter().map(|s| s.published).sum::<u64>(), 1);
    assert_eq!(snaps.iter().map(|s| s.fallback_signins).sum::<u64>(), 0);
    assert!(snaps.iter().map(|s| s.lease_waits + s.l2_hits).sum::<u64>() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_calls_over_thirty_keys_sign_in_thirty_times() {
    let w = World::start().await;
    let replicas = w.replicas(3).await;
    slow_signins(&w.double, Duration::from_millis(50));
    let mut calls = Vec::new();
    for i in 0..3000 {
        let b = Arc::clone(&replicas[i % 3]);
        // Keys and replicas cycle at different rates, so each key is asked of every replica.
        let u = user((i / 3) % 30);
        calls.push(tokio::spawn(async move { token(&b, &u).await }));
    }
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(w.sessions_made(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_on_one_replica_reaches_the_others() {
    let w = World::start().await;
    let [a, b, c]: [Arc<Broker>; 3] = w.replicas(3).await.try_into().unwrap();
    let t = token(&a, &user(1)).await;
    assert_eq!(token(&b, &user(1)).await, t);
    assert_eq!(token(&c, &user(1)).await, t);
    assert_eq!(w.sessions_made(), 1);
    let done = a
        .invalidate(&caller(), &SecretString::from(t.clone()))
        .await
        .unwrap();
    assert!(done.evicted);
    for r in [&b, &c] {
        eventually(
            Duration::from_secs(10),
            "a peer stopped serving the invalidated token",
            || async { token(r, &user(1)).await != t },
        )
        .await;
    }
    let fresh = token(&b, &user(1)).await;
    assert_eq!(
        token(&c, &user(1)).await,
        fresh,
        "the new session is shared too"
    );

    // A replica that never held a token finds it through Redis.
    let t2 = token(&a, &user(2)).await;
    let fresh_replica = w.replicas(1).await.remove(0);
    let done = fresh_replica
        .invalidate(&caller(), &SecretString::from(t2.clone()))
        .await
        .unwrap();
    assert!(done.evicted, "found and dropped through the shared cache");
    eventually(
        Duration::from_secs(10),
        "the holder stopped serving it",
        || async { token(&a, &user(2)).await != t2 },
    )
    .await;

    // A forced refresh replaces the session for everyone.
    let before = token(&c, &user(3)).await;
    let mut refresh = request(&user(3));
    refresh.force_refresh = true;
    let after = a.get_credentials(&caller(), refresh).await.unwrap();
    let after = after.credentials.token.expose_secret().to_owned();
    assert_ne!(before, after);
    eventually(
        Duration::from_secs(10),
        "peers serve the refreshed session",
        || async { token(&c, &user(3)).await == after },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_means_local_sign_ins_and_sharing_resumes_after_a_restart() {
    let mut w = World::start().await;
    let [a, b]: [Arc<Broker>; 2] = w.replicas(2).await.try_into().unwrap();
    token(&a, &user(4)).await;
    token(&b, &user(4)).await;
    assert_eq!(w.sessions_made(), 1, "shared while Redis runs");
    w.redis.stop();
    for i in 5..10 {
        token(&a, &user(i)).await;
        token(&b, &user(i)).await;
    }
    assert_eq!(w.sessions_made(), 11, "each replica signed in for itself");
    for r in [&a, &b] {
        let s = r.shared_cache().unwrap().snapshot();
        assert!(s.fallback_signins >= 5, "{s:?}");
        assert!(s.redis_errors >= 1, "{s:?}");
    }
    w.redis.restart();
    let mut next = 10;
    eventually(
        Duration::from_secs(30),
        "sharing resumed after Redis restarted",
        || {
            let (a, b) = (Arc::clone(&a), Arc::clone(&b));
            let u = user(next);
            next += 1;
            let signins = w.sessions_made();
            let double = &w.double;
            async move {
                token(&a, &u).await;
                let after_a = double.stats().signins_ok;
                token(&b, &u).await;
                after_a == signins + 1 && double.stats().signins_ok == after_a
            }
        },
    )
    .await;
    assert!(!b.shared_cache().unwrap().snapshot().fallback());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_nothing_readable() {
    let w = World::start().await;
    let replicas = w.replicas(2).await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(token(&replicas[i % 2], &user(i)).await);
        tokens.push(token(&replicas[(i + 1) % 2], &user(i)).await);
    }
    // One invalidation, so its traces (if any) are in the dump too.
    replicas[0]
        .invalidate(&caller(), &SecretString::from(tokens[0].clone()))
        .await
        .unwrap();
    let keys = w.redis.keys("*");
    assert!(keys.len() >= 8, "entries and token indexes: {keys:?}");
    let mut dump = Vec::new();
    for k in &keys {
        dump.extend_from_slice(k.as_bytes());
        dump.extend(w.redis.cli_bytes(&["GET", k]));
        dump.extend(w.redis.cli_bytes(&["DUMP", k]));
    }
    let key_bytes = std::fs::read(&w.key_file).unwrap();
    let mut forbidden: Vec<Vec<u8>> = tokens.iter().map(|t| t.as_bytes().to_vec()).collect();
    for i in 0..5 {
        forbidden.push(user(i).into_bytes());
        forbidden.push(user_luid(i).into_bytes());
    }
    for s in [SCOPE, SECRET, SITE_LUID, "analyst", "finance", "tableau:"] {
        forbidden.push(s.as_bytes().to_vec());
    }
    forbidden.push(key_bytes.clone());
    forbidden.push(hex::encode(&key_bytes).into_bytes());
    for f in &forbidden {
        assert!(
            !dump.windows(f.len()).any(|w| w == f.as_slice()),
            "the Redis dump contains {:?}",
            String::from_utf8_lossy(f)
        );
    }
    for k in &keys {
        assert!(
            k.starts_with("ttb:{") && k.len() < 60,
            "key names are HMACs with a hash tag: {k}"
        );
    }
}

/// The holder is the real `serve` binary, SIGKILLed while the double holds its sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_sign_in_costs_at_most_one_more_sign_in() {
    let w = World::start().await;
    let pki = DevPki::in_memory().unwrap();
    let (cert, key) = pki.server().write(w.dir.path(), "server").unwrap();
    let ca = w.dir.path().join("ca.crt");
    std::fs::write(&ca, pki.ca_cert_pem()).unwrap();
    let config = w.dir.path().join("holder.toml");
    std::fs::write(&config, w.config_text(Some((&cert, &key, &ca)))).unwrap();
    let mut holder = Served::spawn(&mut serve_command(&config));
    let addr = holder.listening_addr(Duration::from_secs(30));
    let client = pki.issue_client(Some(CALLER), &[], "renderer").unwrap();
    let mut c = support::client(&pki, addr, &client).await;
    // The double holds the holder's sign-in until the holder is dead.
    slow_signins(&w.double, Duration::from_secs(60));
    let held = tokio::spawn(async move {
        c.get_credentials(pb::GetCredentialsRequest {
            site: "finance".into(),
            user: user(7),
            scopes: vec![SCOPE.into()],
            ..Default::default()
        })
        .await
    });
    eventually(
        Duration::from_secs(20),
        "the holder took the lease",
        || async { !w.redis.keys("ttb:*:lease").is_empty() },
    )
    .await;
    let replicas = w.replicas(2).await;
    let mut waiters = Vec::new();
    for i in 0..20 {
        let b = Arc::clone(&replicas[i % 2]);
        waiters.push(tokio::spawn(async move {
            b.get_credentials(&caller(), request(&user(7))).await
        }));
    }
    eventually(
        Duration::from_secs(20),
        "both replicas wait on the lease",
        || async {
            replicas
                .iter()
                .all(|r| r.shared_cache().unwrap().snapshot().lease_waits == 1)
        },
    )
    .await;
    holder.kill();
    assert!(
        held.await.unwrap().is_err(),
        "the holder's own caller lost its broker"
    );
    let before = w.sessions_made();
    w.double.clear_faults();
    let mut tokens = std::collections::HashSet::new();
    for c in waiters {
        let issued = c.await.unwrap().expect("no waiting call fails");
        tokens.insert(issued.credentials.token.expose_secret().to_owned());
    }
    assert_eq!(tokens.len(), 1);
    assert!(
        w.sessions_made() <= before + 1,
        "at most one more sign-in: {} then {}",
        before,
        w.sessions_made()
    );
    let snaps: Vec<_> = replicas
        .iter()
        .map(|r| r.shared_cache().unwrap().snapshot())
        .collect();
    assert_eq!(
        snaps.iter().map(|s| s.lease_takeovers).sum::<u64>(),
        1,
        "{snaps:?}"
    );
    assert_eq!(
        snaps.iter().map(|s| s.fallback_signins).sum::<u64>(),
        0,
        "{snaps:?}"
    );
}
