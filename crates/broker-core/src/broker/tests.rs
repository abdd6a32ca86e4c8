//! The broker's use cases against the Tableau double over real HTTP, without gRPC: the policy
//! decides before Tableau is asked, hits answer from the cache, and every call writes its own
//! audit record (no field of one call's record is carried into another's).

use std::net::SocketAddr;
use std::path::Path;

use tableau_double::{AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, Site, SiteUser};

use super::*;
use crate::audit::{AuditConfig, AuditTarget};
use crate::clock::system;

const RENDERER: &str = "spiffe://example.org/ns/reports/sa/renderer";
const SECRET: &str = "finance-secret-0123456789abcdef-xyz";

struct Setup {
    _dir: tempfile::TempDir,
    double: tableau_double::FakeTableauHandle,
    broker: Arc<Broker>,
    trail: std::path::PathBuf,
}

async fn setup() -> Setup {
    setup_with(system(), "").await
}

/// A broker and a double sharing `clock`, with `cache` as the broker's `[cache]` table body.
async fn setup_with(clock: crate::clock::SharedClock, cache: &str) -> Setup {
    let double = FakeTableau::start_with_clock(
        FakeTableauConfig::new(
            vec![Site::new(
                "Finance",
                "finance",
                "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d",
                vec![
                    SiteUser::new("svc-renderer", "1d6f2e6b-0000-4000-8000-000000000001"),
                    SiteUser::new("svc-other", "1d6f2e6b-0000-4000-8000-000000000002"),
                ],
            )],
            vec![ConnectedApp::new(
                "cid",
                vec![AppSecret::new("sid", SECRET)],
            )],
        ),
        Arc::clone(&clock),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trail = dir.path().join("audit.jsonl");
    let text = format!(
        r#"
version = 1
development = true

[audit]
path = {trail:?}

[cache]
{cache}

[sites.finance]
server_url = "{url}"
api_version = "3.22"
content_url = "finance"

[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "{SECRET}"

[[callers]]
identity = "{RENDERER}"

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer"]
scopes = ["tableau:content:read"]
"#,
        trail = trail.display().to_string(),
        url = double.base_url(),
    );
    let config = Config::from_toml(&text, &dir.path().join("broker.toml")).unwrap();
    let audit = AuditSink::open(&AuditConfig {
        target: AuditTarget::File(trail.clone()),
        ..AuditConfig::default()
    })
    .unwrap();
    let broker = Broker::new(config, clock, audit, Fingerprinter::new()).unwrap();
    Setup {
        _dir: dir,
        double,
        broker,
        trail,
    }
}

fn request(user: &str, scopes: &[&str]) -> CredentialsRequest {
    CredentialsRequest {
        site: "finance".into(),
        user: user.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..CredentialsRequest::default()
    }
}

fn caller(peer: &str, serial: &str) -> CallerContext {
    CallerContext {
        peer: Some(peer.parse::<SocketAddr>().unwrap()),
        cert_serial: Some(Arc::from(serial)),
        ..CallerContext::from_id(RENDERER)
    }
}

/// The trail's RPC records, parsed.
fn rpc_records(trail: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(trail)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"] == "rpc")
        .collect()
}

#[tokio::test]
async fn a_miss_signs_in_once_and_a_repeat_is_a_hit() {
    let s = setup().await;
    let c = caller("127.0.0.1:40001", "01");
    let first = s
        .broker
        .get_credentials(&c, request("svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
    assert!(!first.from_cache);
    let second = s
        .broker
        .get_credentials(&c, request("svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
    assert!(second.from_cache);
    assert!(Arc::ptr_eq(&first.credentials, &second.credentials));
    assert_eq!(s.double.stats().signins_ok, 1);
}

#[tokio::test]
async fn a_refusal_never_reaches_tableau() {
    let s = setup().await;
    let c = caller("127.0.0.1:40001", "01");
    let e = s
        .broker
        .get_credentials(&c, request("svc-other", &["tableau:content:read"]))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "USER_NOT_ALLOWED", "{e}");
    let e = s
        .broker
        .get_credentials(&c, request("svc-renderer", &["tableau:users:read"]))
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "SCOPE_NOT_ALLOWED", "{e}");
    let stranger = CallerContext::from_id("spiffe://example.org/ns/x/sa/stranger");
    let e = s
        .broker
        .get_credentials(
            &stranger,
            request("svc-renderer", &["tableau:content:read"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "CALLER_NOT_ALLOWED", "{e}");
    assert_eq!(s.double.stats().signins_ok, 0);
}

/// Every record is built from its own call: two hits on one key by the same identity from two
/// connections (another address, another certificate) and a third with the scopes spelled
/// differently each name their own request ID, address, certificate and requested scopes.
#[tokio::test]
async fn each_hit_writes_its_own_record() {
    let s = setup().await;
    let a = caller("127.0.0.1:40001", "0a");
    let b = caller("127.0.0.1:40002", "0b");
    let read = ["tableau:content:read"];
    s.broker
        .get_credentials(&a, request("svc-renderer", &read))
        .await
        .unwrap();
    for c in [&a, &b, &a] {
        let g = s
            .broker
            .get_credentials(c, request("svc-renderer", &read))
            .await
            .unwrap();
        assert!(g.from_cache);
    }
    let spelled = s
        .broker
        .get_credentials(&b, request("svc-renderer", &[" tableau:content:read"]))
        .await
        .unwrap();
    assert!(spelled.from_cache);
    s.broker.audit().flush().await;
    let records = rpc_records(&s.trail);
    assert_eq!(records.len(), 5, "{records:#?}");
    let peers: Vec<_> = records
        .iter()
        .map(|r| r["caller"]["peer"].clone())
        .collect();
    assert_eq!(
        peers,
        [
            "127.0.0.1:40001",
            "127.0.0.1:40001",
            "127.0.0.1:40002",
            "127.0.0.1:40001",
            "127.0.0.1:40002"
        ]
        .map(serde_json::Value::from)
    );
    let serials: Vec<_> = records
        .iter()
        .map(|r| r["caller"]["cert_serial"].clone())
        .collect();
    assert_eq!(
        serials,
        ["0a", "0a", "0b", "0a", "0b"].map(serde_json::Value::from)
    );
    let mut ids: Vec<_> = records.iter().map(|r| r["request_id"].clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "request IDs repeat: {ids:?}");
    assert_eq!(
        records[4]["scopes_requested"],
        serde_json::json!([" tableau:content:read"])
    );
    assert!(records.iter().all(|r| r["outcome"] == "granted"));
}

#[tokio::test]
async fn an_invalidated_token_is_not_served_again() {
    let s = setup().await;
    let c = caller("127.0.0.1:40001", "01");
    let first = s
        .broker
        .get_credentials(&c, request("svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
    let done = s
        .broker
        .invalidate(&c, &first.credentials.token)
        .await
        .unwrap();
    assert!(done.evicted);
    let again = s
        .broker
        .get_credentials(&c, request("svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
    assert!(!again.from_cache);
    assert!(!Arc::ptr_eq(&first.credentials, &again.credentials));
    assert_eq!(s.double.stats().signins_ok, 2);
}

/// Waits (without sleeping) until `done` holds, yielding to the runtime between checks.
async fn until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the condition never held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_inside_refresh_ahead_serves_the_old_token_and_signs_in_once_behind_it() {
    let clock = crate::clock::ManualClock::new(std::time::SystemTime::now());
    let s = setup_with(clock.clone(), r#"refresh_ahead = "10m""#).await;
    let c = caller("127.0.0.1:40001", "01");
    let req = || request("svc-renderer", &["tableau:content:read"]);
    let started = || s.broker.sign_in_stats().snapshot().refreshes_started;
    let first = s.broker.get_credentials(&c, req()).await.unwrap();
    assert_eq!(s.double.stats().signins_ok, 1);
    let usable_end = first.credentials.expires_at;

    // Outside the window: a plain hit, nothing started.
    assert!(
        s.broker
            .get_credentials(&c, req())
            .await
            .unwrap()
            .from_cache
    );
    assert_eq!(started(), 0);

    // Inside the window: every caller gets the current token at once, and one sign-in runs
    // behind them however many hits arrive while it runs.
    clock.set(usable_end - std::time::Duration::from_secs(5 * 60));
    let hit = s.broker.get_credentials(&c, req()).await.unwrap();
    assert!(hit.from_cache);
    assert_eq!(
        hit.credentials.token.expose_secret(),
        first.credentials.token.expose_secret()
    );
    for _ in 0..20 {
        assert!(
            s.broker
                .get_credentials(&c, req())
                .await
                .unwrap()
                .from_cache
        );
    }
    until(|| credentials::lock_set(&s.broker.refreshing).is_empty()).await;
    assert_eq!(started(), 1);
    assert_eq!(s.double.stats().signins_ok, 2);
    assert_eq!(s.broker.sign_in_stats().snapshot().refreshes_failed, 0);

    // Once stored, the new token is what hits get, good for a full usable life again.
    let next = s.broker.get_credentials(&c, req()).await.unwrap();
    assert!(next.from_cache);
    assert_ne!(
        next.credentials.token.expose_secret(),
        first.credentials.token.expose_secret()
    );
    assert!(next.credentials.expires_at > usable_end);
}
