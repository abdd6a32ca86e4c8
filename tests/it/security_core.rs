//! Issue 24, the domain's points, written as the attacks: a re-pointed site (2), a caller draining
//! another's sign-in budget by invalidating (3), shared-cache sessions never signed out (7), Redis
//! replay of envelopes and invalidation messages (8), and one caller filling a site's sign-in cap
//! (10). Real TLS for the callers, a real `redis-server`, the real Tableau double.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tableau_token_broker::config::raw::RawLimits;

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser,
};
use tableau_token_broker::audit::{AuditSink, CallerContext, Fingerprinter};
use tableau_token_broker::broker::{Broker, CredentialsRequest};
use tableau_token_broker::clock::ManualClock;
use tableau_token_broker::config::Config;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::shared_cache::CHANNEL_INVALIDATE;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::shared_cache::{Redis, eventually, rand_key};
use crate::support::slow_signins;

const CALLER: &str = "spiffe://example.org/ns/reports/sa/renderer";
const CLIENT_ID: &str = "core-client";
const OTHER_CLIENT_ID: &str = "core-client-2";
const SECRET_ID: &str = "core-sid";
const SECRET: &str = "security-core-connected-app-secret";
const SCOPE: &str = "tableau:content:read";
const LUID_A: &str = "1a1a1a1a-0000-4000-8000-00000000000a";
const LUID_B: &str = "1b1b1b1b-0000-4000-8000-00000000000b";
const LIMIT: Duration = Duration::from_secs(15);

fn user(i: usize) -> String {
    format!("user-{i:02}")
}

fn users() -> Vec<SiteUser> {
    (0..40)
        .map(|i| SiteUser::new(user(i), format!("u-{i}")))
        .collect()
}

/// A double with two sites (content URLs `finance` and `finance-b`) and two connected apps.
async fn double() -> FakeTableauHandle {
    FakeTableau::start(FakeTableauConfig::new(
        vec![
            Site::new("Finance", "finance", LUID_A, users()),
            Site::new("Finance B", "finance-b", LUID_B, users()),
        ],
        vec![
            ConnectedApp::new(CLIENT_ID, vec![AppSecret::new(SECRET_ID, SECRET)]),
            ConnectedApp::new(OTHER_CLIENT_ID, vec![AppSecret::new(SECRET_ID, SECRET)]),
        ],
    ))
    .await
    .unwrap()
}

/// One broker's configuration: site `finance` at `content_url` signed in by `client_id`, with
/// `[cache.shared]` when `redis` is given (URL and key file).
fn config_text(
    double: &FakeTableauHandle,
    content_url: &str,
    client_id: &str,
    redis: Option<(&str, &Path)>,
) -> String {
    let mut t = String::from(
        "version = 1\ndevelopment = true\n[cache]\nmax_entries = 1000\nreplaced_session_grace = \"0s\"\n",
    );
    if let Some((url, key)) = redis {
        t.push_str(&format!(
            "[cache.shared]\nredis_url = \"{url}\"\nencryption_key_file = {key:?}\noperation_timeout = \"1s\"\nlease_ttl = \"1s\"\nlease_wait = \"30s\"\n",
            key = key.display().to_string()
        ));
    }
    t.push_str(&format!(
        r#"
[limits]
sign_ins_per_second = 1000
sign_in_burst = 1000

[sites.finance]
server_url = "{double}"
content_url = "{content_url}"

[sites.finance.connected_app]
client_id = "{client_id}"
secret_id = "{SECRET_ID}"
secret = "{SECRET}"

[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["finance"]
users = ["*"]
scopes = ["{SCOPE}"]
"#,
        double = double.base_url(),
    ));
    t
}

fn broker(dir: &Path, text: &str) -> Arc<Broker> {
    let config = Config::from_toml(text, &dir.join("broker.toml")).unwrap();
    Broker::new(
        config,
        tableau_token_broker::clock::system(),
        AuditSink::off(),
        Fingerprinter::new(),
    )
    .unwrap()
}

fn caller() -> CallerContext {
    CallerContext::from_id(CALLER)
}

fn request(user: &str, force_refresh: bool) -> CredentialsRequest {
    CredentialsRequest {
        site: "finance".into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        force_refresh,
        ..CredentialsRequest::default()
    }
}

/// The token and the content URL a broker hands out for `user`.
async fn session(b: &Broker, user: &str, force_refresh: bool) -> (String, String) {
    let g = b
        .get_credentials(&caller(), request(user, force_refresh))
        .await
        .unwrap();
    (
        g.credentials.token.expose_secret().to_owned(),
        g.credentials.site_content_url.to_string(),
    )
}

/// Replicas sharing `redis`, once each is connected.
async fn replicas(dir: &Path, texts: &[String]) -> Vec<Arc<Broker>> {
    let rs: Vec<_> = texts.iter().map(|t| broker(dir, t)).collect();
    eventually(LIMIT, "replicas connect to Redis", || async {
        rs.iter()
            .all(|r| r.shared_cache().unwrap().snapshot().connected)
    })
    .await;
    rs
}

/// Point 2, without Redis: a reload moves the site to another content URL while a sign-in for
/// the old one is in flight. The session that lands must not be handed out, and is signed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_landing_after_its_site_moved_is_discarded_and_signed_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = double().await;
    let b = broker(dir.path(), &config_text(&d, "finance", CLIENT_ID, None));
    slow_signins(&d, Duration::from_millis(400));
    let call = {
        let b = Arc::clone(&b);
        tokio::spawn(async move { session(&b, &user(0), false).await })
    };
    eventually(LIMIT, "the sign-in is in flight", || async {
        b.cache().inflight() > 0
    })
    .await;
    let moved = config_text(&d, "finance-b", CLIENT_ID, None);
    b.reload(Config::from_toml(&moved, &dir.path().join("broker.toml")).unwrap())
        .unwrap();
    let (_, content_url) = call.await.unwrap();
    assert_eq!(
        content_url, "finance-b",
        "the old site's session was handed out"
    );
    eventually(LIMIT, "the discarded session is signed out", || async {
        d.stats().live_sessions == 1
    })
    .await;
}

/// Point 2, with Redis: a replica whose site points at another content URL, or signs in with
/// another connected app, never reads the old site's session from the shared cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_pointed_site_is_not_served_the_old_sites_session_from_redis() {
    let dir = tempfile::tempdir().unwrap();
    let d = double().await;
    let redis = Redis::start();
    let key = dir.path().join("cache.key");
    std::fs::write(&key, rand_key()).unwrap();
    let shared = Some((redis.url(), key.as_path()));
    let shared = shared.as_ref().map(|(u, k)| (u.as_str(), *k));
    let rs = replicas(
        dir.path(),
        &[
            config_text(&d, "finance", CLIENT_ID, shared),
            config_text(&d, "finance-b", CLIENT_ID, shared),
            config_text(&d, "finance", OTHER_CLIENT_ID, shared),
        ],
    )
    .await;
    let (old, _) = session(&rs[0], &user(0), false).await;
    let (moved, content_url) = session(&rs[1], &user(0), false).await;
    assert_ne!(moved, old, "the old site's session came from Redis");
    assert_eq!(content_url, "finance-b");
    let (other_app, _) = session(&rs[2], &user(0), false).await;
    assert_ne!(
        other_app, old,
        "the old connected app's session came from Redis"
    );
    assert_eq!(d.stats().signins_ok, 3);
}

/// Point 7: forced refreshes through the shared cache leave one live session at Tableau, and
/// each replaced one is signed out exactly once across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_replaced_in_redis_are_signed_out_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = double().await;
    let redis = Redis::start();
    let key = dir.path().join("cache.key");
    std::fs::write(&key, rand_key()).unwrap();
    let text = config_text(&d, "finance", CLIENT_ID, Some((&redis.url(), &key)));
    let rs = replicas(dir.path(), &[text.clone(), text]).await;
    session(&rs[0], &user(0), false).await;
    for i in 0..15 {
        session(&rs[i % 2], &user(0), true).await;
    }
    assert_eq!(d.stats().signins_ok, 16);
    eventually(LIMIT, "15 replaced sessions signed out", || async {
        d.stats().live_sessions == 1 && d.stats().signouts == 15
    })
    .await;
    let failed: u64 = rs
        .iter()
        .flat_map(|r| r.sign_in_stats().snapshot().sign_outs)
        .filter(|(o, _)| *o == "failed")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(failed, 0, "a session was signed out twice");
}

/// Point 8: an envelope saved before InvalidateCredentials and written back is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_written_back_after_invalidation_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = double().await;
    let redis = Redis::start();
    let key = dir.path().join("cache.key");
    std::fs::write(&key, rand_key()).unwrap();
    let text = config_text(&d, "finance", CLIENT_ID, Some((&redis.url(), &key)));
    let rs = replicas(dir.path(), &[text.clone(), text]).await;
    let (token, _) = session(&rs[0], &user(0), false).await;
    let entries = redis.keys("ttb:*:entry");
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The attacker, who can write to Redis, keeps a copy of the entry.
    assert_eq!(
        redis.cli(&["COPY", &entries[0], "attacker:saved"]).trim(),
        "1"
    );
    let out = rs[0]
        .invalidate(&caller(), &SecretString::from(token.clone()))
        .await
        .unwrap();
    assert!(out.evicted);
    assert_eq!(
        redis
            .cli(&["COPY", "attacker:saved", &entries[0], "REPLACE"])
            .trim(),
        "1"
    );
    for r in &rs {
        let (again, _) = session(r, &user(0), false).await;
        assert_ne!(again, token, "the invalidated session was served again");
    }
}

/// Point 8: a captured invalidation message published again is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_invalidation_message_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let d = double().await;
    let redis = Redis::start();
    let key = dir.path().join("cache.key");
    std::fs::write(&key, rand_key()).unwrap();
    let text = config_text(&d, "finance", CLIENT_ID, Some((&redis.url(), &key)));
    let rs = replicas(dir.path(), &[text.clone(), text]).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut ps = client.get_async_pubsub().await.unwrap();
    ps.subscribe(CHANNEL_INVALIDATE).await.unwrap();
    let mut captured = ps.into_on_message();
    let received = || {
        rs[1]
            .shared_cache()
            .unwrap()
            .snapshot()
            .invalidations_received
    };

    let (t1, _) = session(&rs[0], &user(0), false).await;
    rs[0]
        .invalidate(&caller(), &SecretString::from(t1))
        .await
        .unwrap();
    let payload: Vec<u8> = captured.next().await.unwrap().get_payload_bytes().to_vec();
    eventually(LIMIT, "the first message arrives", || async {
        received() == 1
    })
    .await;

    // The attacker replays the captured message, then a real one follows.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(CHANNEL_INVALIDATE)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (t2, _) = session(&rs[0], &user(1), false).await;
    rs[0]
        .invalidate(&caller(), &SecretString::from(t2))
        .await
        .unwrap();
    eventually(LIMIT, "the second real message arrives", || async {
        received() >= 2
    })
    .await;
    assert_eq!(received(), 2, "the replayed message was acted on");
}

/// Callers over real TLS against an in-process server (points 3 and 10).
struct Callers {
    _dir: tempfile::TempDir,
    system: local::LocalSystem,
}

const ATTACKER: &str = "spiffe://example.org/ns/batch/sa/attacker";
const VICTIM: &str = "spiffe://example.org/ns/reports/sa/victim";
const FINANCE_LUID: &str = "9a8b7c6d-e4f3-a2b1-c0d9-e8f7a6b5c4d3";

/// The attacker and the victim; `victim` and `limits` adjust the victim's entry and `[limits]`.
async fn callers(
    limits: impl Fn(&mut RawLimits) + Send + Sync + 'static,
    victim: impl FnOnce(LocalCaller) -> LocalCaller,
) -> Callers {
    let dir = tempfile::tempdir().unwrap();
    let grant = || LocalGrant::new(&["finance"], &["*"], &[SCOPE]);
    let v = victim(LocalCaller::new(VICTIM, grant()));
    let setup = LocalSetup::new(
        dir.path(),
        LocalApp::new("client-1", "sid-1", "core-test-secret-of-at-least-32-bytes"),
    )
    .clock(ManualClock::new(SystemTime::now()))
    .site(LocalSite::new("finance", FINANCE_LUID, users()))
    .caller(LocalCaller::new(ATTACKER, grant()))
    .caller(v)
    .configure(move |c| limits(&mut c.limits));
    let system = setup.start().await.unwrap();
    Callers { _dir: dir, system }
}

impl Callers {
    async fn client(&self, spiffe: &str) -> TokenBrokerClient<Channel> {
        let pair = self
            .system
            .pki
            .issue_client(Some(spiffe), &[], "t")
            .unwrap();
        let ch = local::connect(&self.system.pki, self.system.server.local_addr(), &pair)
            .await
            .unwrap();
        TokenBrokerClient::new(ch)
    }
}

fn req(user: &str) -> pb::GetCredentialsRequest {
    pb::GetCredentialsRequest {
        site: "finance".into(),
        user: user.into(),
        scopes: vec![SCOPE.into()],
        ..Default::default()
    }
}

fn reason(s: &tonic::Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// Point 3: the attacker repeatedly takes the victim's shared session and invalidates it. The
/// sign-ins that follow are the attacker's doing and never spend the victim's budget, so the
/// victim still signs in for a key of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_shared_session_does_not_spend_another_entrys_budget() {
    let w = callers(|_| {}, |v| v.sign_in_burst(3).sign_ins_per_second(0.001)).await;
    let mut attacker = w.client(ATTACKER).await;
    let mut victim = w.client(VICTIM).await;
    victim.get_credentials(req(&user(0))).await.unwrap();
    for _ in 0..4 {
        let held = attacker
            .get_credentials(req(&user(0)))
            .await
            .unwrap()
            .into_inner();
        attacker
            .invalidate_credentials(pb::InvalidateCredentialsRequest { token: held.token })
            .await
            .unwrap();
        // The victim's next call misses: whatever it is answered, it must not pay for it.
        let _ = victim.get_credentials(req(&user(0))).await;
    }
    let own = victim.get_credentials(req(&user(39))).await;
    assert!(
        own.is_ok(),
        "the victim was refused on its own key: {:?}",
        own.err().map(|s| reason(&s))
    );
}

/// Point 10: while one caller entry floods a site with slow sign-ins, another entry's miss on the
/// same site gets a slot instead of SITE_SIGN_INS_BUSY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_entry_leaves_site_sign_in_slots_for_another_entry() {
    let w = callers(|l| l.max_concurrent_sign_ins = Some(4), |v| v).await;
    // Slower than the wait for a slot (1 s): a full cap cannot drain in time for the victim.
    slow_signins(&w.system.double, Duration::from_millis(1500));
    let attacker = w.client(ATTACKER).await;
    let mut flood = Vec::new();
    for i in 0..12 {
        let mut c = attacker.clone();
        flood.push(tokio::spawn(async move {
            c.get_credentials(req(&user(i))).await
        }));
    }
    let broker = Arc::clone(w.system.server.broker());
    let double = &w.system.double;
    eventually(LIMIT, "the flood holds sign-ins at Tableau", || async {
        broker.cache().inflight() >= 12
            && double
                .stats()
                .faults_injected
                .get("latency")
                .is_some_and(|n| *n >= 2)
    })
    .await;
    let mut victim = w.client(VICTIM).await;
    let got = victim.get_credentials(req(&user(39))).await;
    assert!(
        got.is_ok(),
        "the victim was refused: {:?}",
        got.err().map(|s| reason(&s))
    );
    for f in flood {
        let _ = f.await.unwrap();
    }
}
