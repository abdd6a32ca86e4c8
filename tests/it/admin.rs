//! The admin API and the candidate policy (issue 27): revocation across three replicas sharing a
//! real redis-server, the admin roles, `Explain` against the real decision, and a candidate in
//! shadow.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tableau_token_broker::config::admins::{RawAdminEntry, RawPolicy};
use tableau_token_broker::config::raw::RawConfig;

use secrecy::ExposeSecret;
use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser,
};
use tableau_token_broker::admins::{ExplainRequest, RawSelector};
use tableau_token_broker::audit::CallerContext;
use tableau_token_broker::broker::{Broker, CredentialsRequest};
use tableau_token_broker::config::Config;
use tableau_token_broker::devkit::certs::CertPair;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite, LocalSystem,
};
use tableau_token_broker::grpc::admin::pb as apb;
use tableau_token_broker::grpc::admin::pb::admin_client::AdminClient;
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tonic::transport::Channel;

use crate::harness::reason;
use crate::shared_cache::{Redis, eventually, rand_key};

const CALLER: &str = "spiffe://example.org/ns/reports/sa/renderer";
const ADMIN: &str = "spiffe://example.org/ns/security/sa/broker-admin";
const READER: &str = "spiffe://example.org/ns/security/sa/auditor";
const SITE_LUID: &str = "5a5a5a5a-0000-4000-8000-00000000a001";
const SALES_LUID: &str = "5a5a5a5a-0000-4000-8000-00000000a002";
const READ: &str = "tableau:content:read";

fn user(i: usize) -> String {
    format!("analyst-{i}@example.com")
}

/// Three replicas, one double, one Redis.
struct Replicas {
    dir: tempfile::TempDir,
    redis: Redis,
    double: FakeTableauHandle,
    brokers: Vec<Arc<Broker>>,
}

impl Replicas {
    async fn start() -> Replicas {
        let dir = tempfile::tempdir().unwrap();
        let users = (0..4)
            .map(|i| SiteUser::new(user(i), format!("7b7b7b7b-0000-4000-8000-{i:012}")))
            .collect();
        let double = FakeTableau::start(FakeTableauConfig::new(
            vec![Site::new("Finance", "finance", SITE_LUID, users)],
            vec![ConnectedApp::new(
                "c1",
                vec![AppSecret::new(
                    "s1",
                    "admin-test-secret-of-at-least-32-bytes",
                )],
            )],
        ))
        .await
        .unwrap();
        let key = dir.path().join("cache.key");
        std::fs::write(&key, rand_key()).unwrap();
        let redis = Redis::start();
        let text = format!(
            r#"version = 1
development = true
[cache]
max_entries = 1000
[cache.shared]
redis_url = "{url}"
encryption_key_file = {key:?}
operation_timeout = "1s"
lease_ttl = "1s"
lease_wait = "30s"
[limits]
sign_ins_per_second = 1000
sign_in_burst = 1000
[sites.finance]
server_url = "{double}"
content_url = "finance"
[sites.finance.connected_app]
client_id = "c1"
secret_id = "s1"
secret = "admin-test-secret-of-at-least-32-bytes"
[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["finance"]
users = ["*"]
scopes = ["{READ}"]
[[admins]]
identity = "{ADMIN}"
roles = ["read", "revoke"]
"#,
            url = redis.url(),
            key = key.display().to_string(),
            double = double.base_url(),
        );
        let path = dir.path().join("replica.toml");
        let brokers: Vec<Arc<Broker>> = (0..3)
            .map(|_| {
                Broker::new(
                    Config::from_toml(&text, &path).unwrap(),
                    tableau_token_broker::clock::system(),
                    tableau_token_broker::audit::AuditSink::off(),
                    tableau_token_broker::audit::Fingerprinter::new(),
                )
                .unwrap()
            })
            .collect();
        let r = Replicas {
            dir,
            redis,
            double,
            brokers,
        };
        // Every replica connected and subscribed to the revocation channel: the state a
        // revocation relies on, read from Redis itself.
        eventually(
            Duration::from_secs(10),
            "replicas connect and subscribe",
            || async {
                r.brokers
                    .iter()
                    .all(|b| b.shared_cache().unwrap().snapshot().connected)
                    && r.redis
                        .cli(&["PUBSUB", "NUMSUB", "ttb:v1:revoke"])
                        .lines()
                        .nth(1)
                        .is_some_and(|n| n.trim() == "3")
            },
        )
        .await;
        r
    }

    async fn token(&self, i: usize, u: &str) -> String {
        let req = CredentialsRequest {
            site: "finance".into(),
            user: u.into(),
            scopes: vec![READ.into()],
            ..CredentialsRequest::default()
        };
        self.brokers[i]
            .get_credentials(&CallerContext::from_id(CALLER), req)
            .await
            .unwrap()
            .credentials
            .token
            .expose_secret()
            .to_owned()
    }

    async fn rest_status(&self, token: &str) -> u16 {
        let url = format!(
            "{}/api/3.22/sites/{SITE_LUID}/workbooks",
            self.double.base_url()
        );
        crate::support::http()
            .get(&url)
            .header("X-Tableau-Auth", token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Issue 27, done when: a Revoke by site through replica B ends the sessions signed in through
/// A and C: their tokens get 401 at the double at once, the next GetCredentials on any replica
/// signs in anew, and a copy of the old Redis entry written back is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_through_one_replica_ends_the_sessions_of_every_replica() {
    let w = Replicas::start().await;
    let (a, b, c) = (0, 1, 2);
    let t0 = w.token(a, &user(0)).await;
    let t1 = w.token(c, &user(1)).await;
    assert_eq!(
        w.token(c, &user(0)).await,
        t0,
        "C reads A's session from Redis"
    );
    assert_eq!(w.double.stats().signins_ok, 2);
    assert_eq!(
        (w.rest_status(&t0).await, w.rest_status(&t1).await),
        (200, 200)
    );

    // The raw entries as Redis holds them now, to write back after the revocation.
    let mut conn = redis_conn(&w.redis.url()).await;
    let names = w.redis.keys("ttb:*:entry");
    assert_eq!(names.len(), 2, "{names:?}");
    let mut old = Vec::new();
    for n in &names {
        let v: Vec<u8> = redis::cmd("GET")
            .arg(n)
            .query_async(&mut conn)
            .await
            .unwrap();
        old.push((n.clone(), v));
    }

    let admin = CallerContext::from_id(ADMIN);
    let selector = RawSelector {
        site: "finance".into(),
        ..RawSelector::default()
    };
    let revoked = w.brokers[b].revoke(&admin, selector).await.unwrap();
    let returned = Instant::now();
    assert_eq!(revoked.sessions.len(), 2, "{revoked:?}");
    assert_eq!(
        (revoked.replicas, revoked.acknowledged),
        (3, 3),
        "{revoked:?}"
    );
    assert_eq!(
        (w.rest_status(&t0).await, w.rest_status(&t1).await),
        (401, 401)
    );
    assert!(returned.elapsed() < Duration::from_secs(1));
    for br in &w.brokers {
        assert!(
            br.cache().sessions(usize::MAX).is_empty(),
            "a replica still holds a revoked session"
        );
    }

    // A copy of an old entry written back is refused: the tombstone names its session.
    for (n, v) in &old {
        let _: () = redis::cmd("SET")
            .arg(n)
            .arg(v)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let fresh = w.token(b, &user(0)).await;
    assert_ne!(fresh, t0, "the written-back entry was served");
    assert_eq!(w.double.stats().signins_ok, 3, "B signed in anew");
    for i in [a, c] {
        let t = w.token(i, &user(0)).await;
        assert_ne!(t, t0, "replica {i} served the revoked session");
        assert_eq!(t, fresh);
    }
    let t1_again = w.token(a, &user(1)).await;
    assert_ne!(t1_again, t1);
    assert_eq!(w.double.stats().signins_ok, 4);
    drop(w.dir);
}

const PREFIX: &str = "spiffe://example.org/ns/ops/*";
const OPS: &str = "spiffe://example.org/ns/ops/sa/runner";
const PULSE: &str = "pulse.example.org";
const LEGACY: &str = "legacy-job";
const STRANGER: &str = "spiffe://example.org/ns/other/sa/y";

fn policy_setup(dir: &Path) -> LocalSetup {
    let mut renderer = LocalCaller::new(
        CALLER,
        LocalGrant::new(
            &["finance"],
            &["svc-renderer", "*@example.com"],
            &[READ, "tableau:tasks:*"],
        )
        .deny(&["tableau:tasks:delete"]),
    );
    renderer.grants.push(LocalGrant::new(
        &["*"],
        &["svc-renderer"],
        &["tableau:views:download"],
    ));
    let users = vec![
        SiteUser::new("svc-renderer", "u-1"),
        SiteUser::new("ann@example.com", "u-2"),
    ];
    LocalSetup::new(
        dir,
        LocalApp::new(
            "client-1",
            "sid-1",
            "a-connected-app-secret-of-40-bytes-xxxxx",
        ),
    )
    .site(LocalSite::new("finance", SITE_LUID, users.clone()))
    .site(LocalSite::new("sales", SALES_LUID, users))
    .caller(renderer)
    .caller(LocalCaller::new(
        PREFIX,
        LocalGrant::new(&["*"], &["*"], &["tableau:tasks:run"]),
    ))
    .caller(LocalCaller::new(
        format!("dns:{PULSE}"),
        LocalGrant::new(
            &["sales"],
            &["*@example.com"],
            &[READ, "tableau:views:download"],
        ),
    ))
    .caller(LocalCaller::new(
        format!("cn:{LEGACY}"),
        LocalGrant::new(&["finance"], &["svc-renderer"], &[READ]),
    ))
}

/// The broker admin (read and revoke) and the auditor (read only).
fn admins(c: &mut RawConfig) {
    let admin = |identity: &str, roles: &[&str]| RawAdminEntry {
        identity: Some(identity.to_owned()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    c.admins = vec![
        admin(
            "spiffe://example.org/ns/security/sa/broker-admin",
            &["read", "revoke"],
        ),
        admin("spiffe://example.org/ns/security/sa/auditor", &["read"]),
    ];
}

async fn admin_client(local: &LocalSystem, pair: &CertPair) -> AdminClient<Channel> {
    AdminClient::new(
        local::connect(&local.pki, local.server.local_addr(), pair)
            .await
            .unwrap(),
    )
}

fn spiffe_cert(local: &LocalSystem, id: &str) -> CertPair {
    local.pki.issue_client(Some(id), &[], "test").unwrap()
}

fn audit_records(local: &LocalSystem) -> Vec<serde_json::Value> {
    let path = local.config_path.parent().unwrap().join(local::AUDIT_FILE);
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Issue 27, done when: a caller gets NOT_AN_ADMIN, a `read` admin ROLE_NOT_GRANTED on Revoke;
/// every admin call is audited with the admin and what it asked.
#[tokio::test]
async fn admin_roles_are_enforced_and_every_admin_call_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let local = policy_setup(dir.path())
        .configure(admins)
        .start()
        .await
        .unwrap();
    let revoke = apb::RevokeRequest {
        site: "finance".into(),
        ..Default::default()
    };
    let mut caller = admin_client(&local, &spiffe_cert(&local, CALLER)).await;
    let e = caller.revoke(revoke.clone()).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (tonic::Code::PermissionDenied, "NOT_AN_ADMIN")
    );
    let e = caller
        .list_sessions(apb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "NOT_AN_ADMIN");
    let mut reader = admin_client(&local, &spiffe_cert(&local, READER)).await;
    let e = reader.revoke(revoke.clone()).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (tonic::Code::PermissionDenied, "ROLE_NOT_GRANTED")
    );
    let listed = reader
        .list_sessions(apb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sessions.is_empty());

    // A session, listed (never its token), then revoked by the full admin.
    let mut renderer = TokenBrokerClient::new(
        local::connect(
            &local.pki,
            local.server.local_addr(),
            &spiffe_cert(&local, CALLER),
        )
        .await
        .unwrap(),
    );
    let got = renderer
        .get_credentials(pb::GetCredentialsRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: vec![READ.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed = reader
        .list_sessions(apb::ListSessionsRequest {
            site: "finance".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    let s = &listed.sessions[0];
    assert_eq!(
        (s.site.as_str(), s.user.as_str(), s.local),
        ("finance", "svc-renderer", true)
    );
    assert_eq!(s.callers, vec![CALLER.to_owned(), format!("cn:{LEGACY}")]);
    assert!(!format!("{listed:?}").contains(&got.token));
    let mut admin = admin_client(&local, &spiffe_cert(&local, ADMIN)).await;
    let e = admin
        .revoke(apb::RevokeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        reason(&e),
        "INVALID_REQUEST",
        "an empty selector is refused"
    );
    let e = admin
        .revoke(apb::RevokeRequest {
            user: "x".repeat(10_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "INPUT_TOO_LARGE");
    let out = admin.revoke(revoke).await.unwrap().into_inner();
    assert_eq!(out.revoked, 1);
    assert_eq!(out.fingerprints, vec![s.fingerprint.clone()]);
    let again = renderer
        .get_credentials(pb::GetCredentialsRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: vec![READ.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.from_cache && again.token != got.token);

    let records = audit_records(&local);
    let admin_records: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["admin"].is_object()).collect();
    let rpcs: Vec<&str> = admin_records
        .iter()
        .map(|r| r["rpc"].as_str().unwrap())
        .collect();
    assert_eq!(
        rpcs,
        [
            "Revoke",
            "ListSessions",
            "Revoke",
            "ListSessions",
            "ListSessions",
            "Revoke",
            "Revoke",
            "Revoke"
        ]
    );
    assert_eq!(admin_records[0]["reason"], "NOT_AN_ADMIN");
    assert_eq!(admin_records[2]["reason"], "ROLE_NOT_GRANTED");
    let done = admin_records[7];
    assert_eq!(done["caller"]["identity"], ADMIN);
    assert_eq!(done["admin"]["entry"], ADMIN);
    assert_eq!(done["admin"]["selector"]["site"], "finance");
    assert_eq!(done["admin"]["sessions"], 1);
    assert_eq!(done["admin"]["fingerprints"][0], s.fingerprint.as_str());
    assert!(!records.iter().any(|r| r.to_string().contains(&got.token)));
}

/// Claims a request of the matrix carries beyond `scp`.
#[derive(Debug, Clone, Copy)]
struct Claims {
    attribute: Option<(&'static str, &'static str)>,
    group: Option<&'static str>,
    on_demand_access: bool,
}

const NO_CLAIMS: Claims = Claims {
    attribute: None,
    group: None,
    on_demand_access: false,
};

/// The claim sets the matrix cycles through: none, an attribute value allowed by one grant and
/// one allowed by none, an attribute any value of which one grant allows, a group matching a
/// glob and one matching none, and on-demand access.
const CLAIM_SETS: [Claims; 7] = [
    NO_CLAIMS,
    Claims {
        attribute: Some(("region", "emea")),
        ..NO_CLAIMS
    },
    Claims {
        attribute: Some(("region", "apac")),
        ..NO_CLAIMS
    },
    Claims {
        attribute: Some(("department", "sales")),
        ..NO_CLAIMS
    },
    Claims {
        group: Some("analysts-emea"),
        ..NO_CLAIMS
    },
    Claims {
        group: Some("admins"),
        ..NO_CLAIMS
    },
    Claims {
        on_demand_access: true,
        ..NO_CLAIMS
    },
];

/// The claims allowlists of the matrix: the renderer's finance grant allows two regions and the
/// `analysts-*` groups, the ops prefix on-demand access, the DNS caller any department.
fn claim_allowlists(c: &mut RawConfig) {
    let grant = &mut c.callers[0].grants[0];
    grant.attributes = [(
        "region".to_owned(),
        vec!["emea".to_owned(), "na".to_owned()],
    )]
    .into();
    grant.groups = vec!["analysts-*".to_owned()];
    c.callers[1].grants[0].on_demand_access = Some(true);
    c.callers[2].grants[0].attributes = [("department".to_owned(), vec!["*".to_owned()])].into();
}

/// The real decision (MintJwt, which authorizes exactly as GetCredentials does) as a verdict:
/// `OK` or the refusal's reason.
async fn real(
    local: &LocalSystem,
    pair: &CertPair,
    site: &str,
    user: &str,
    scopes: &[&str],
    claims: Claims,
) -> String {
    let mut c = TokenBrokerClient::new(
        local::connect(&local.pki, local.server.local_addr(), pair)
            .await
            .unwrap(),
    );
    match c
        .mint_jwt(pb::MintJwtRequest {
            site: site.into(),
            user: user.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl: None,
            attributes: claims
                .attribute
                .map(|(name, value)| {
                    let values = pb::AttributeValues {
                        values: vec![value.to_owned()],
                    };
                    (name.to_owned(), values)
                })
                .into_iter()
                .collect(),
            groups: claims.group.map(str::to_owned).into_iter().collect(),
            on_demand_access: claims.on_demand_access,
        })
        .await
    {
        Ok(_) => "OK".to_owned(),
        Err(e) => reason(&e),
    }
}

/// Issue 27, done when: `Explain` agrees with the real decision on a generated matrix of at
/// least 500 requests, covering wildcards, denies, globs, identity sources and claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_real_decision_on_a_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let local = policy_setup(dir.path())
        .configure(admins)
        .configure(claim_allowlists)
        .start()
        .await
        .unwrap();
    // Each identity as its certificate presents it, and as Explain is told it.
    let identities: Vec<(CertPair, String)> = vec![
        (spiffe_cert(&local, CALLER), CALLER.to_owned()),
        (spiffe_cert(&local, OPS), OPS.to_owned()),
        (
            local
                .pki
                .issue_client_with_uris(&[], &[PULSE], "x")
                .unwrap(),
            format!("dns:{PULSE}"),
        ),
        (
            local.pki.issue_client_with_uris(&[], &[], LEGACY).unwrap(),
            format!("cn:{LEGACY}"),
        ),
        (spiffe_cert(&local, STRANGER), STRANGER.to_owned()),
    ];
    let sites = ["finance", "sales", "nosuch"];
    let users = [
        "svc-renderer",
        "ann@example.com",
        "ann@example.com.evil",
        "mallory",
        "",
    ];
    let scope_sets: [&[&str]; 8] = [
        &[READ],
        &["tableau:views:download"],
        &["tableau:tasks:run"],
        &["tableau:tasks:*"],
        &["tableau:tasks:delete"],
        &[READ, "tableau:views:download"],
        &["tableau:nope:read"],
        &[],
    ];
    let mut admin = admin_client(&local, &spiffe_cert(&local, READER)).await;
    let (mut n, mut allowed) = (0, 0);
    let mut verdicts: std::collections::BTreeMap<String, u32> = Default::default();
    for (pair, identity) in &identities {
        for site in sites {
            for user in users {
                // Each request once without claims and once with a claim set, in turn.
                for (i, scopes) in scope_sets.iter().flat_map(|s| [s, s]).enumerate() {
                    let claims = match i % 2 {
                        0 => NO_CLAIMS,
                        _ => CLAIM_SETS[1 + (n / 2) % (CLAIM_SETS.len() - 1)],
                    };
                    let expected = real(&local, pair, site, user, scopes, claims).await;
                    let e = admin
                        .explain(apb::ExplainRequest {
                            identity: identity.clone(),
                            site: site.into(),
                            user: user.into(),
                            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                            attributes: claims
                                .attribute
                                .map(|(name, value)| apb::Attribute {
                                    name: name.to_owned(),
                                    value: value.to_owned(),
                                })
                                .into_iter()
                                .collect(),
                            groups: claims.group.map(str::to_owned).into_iter().collect(),
                            on_demand_access: claims.on_demand_access,
                            ..Default::default()
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    let v = e.running.unwrap();
                    assert_eq!(
                        (v.reason.as_str(), v.allowed),
                        (expected.as_str(), expected == "OK"),
                        "{identity} {site} {user} {scopes:?} {claims:?}: {v:?}"
                    );
                    let claimed = claims.attribute.is_some()
                        || claims.group.is_some()
                        || claims.on_demand_access;
                    let key = format!("{}{}", v.reason, if claimed { " with claims" } else { "" });
                    *verdicts.entry(key).or_default() += 1;
                    if v.allowed {
                        allowed += 1;
                        assert!(v.entry_index >= 0 && v.grant >= 0, "{v:?}");
                    }
                    n += 1;
                }
            }
        }
    }
    assert!(
        n >= 1000 && allowed >= 15,
        "{n} requests, {allowed} allowed"
    );
    // Claims were allowed as well as refused for each kind, so the agreement covers them.
    for verdict in [
        "OK with claims",
        "ATTRIBUTE_NOT_ALLOWED with claims",
        "GROUP_NOT_ALLOWED with claims",
        "ON_DEMAND_ACCESS_NOT_ALLOWED with claims",
    ] {
        assert!(
            verdicts.get(verdict).is_some_and(|&k| k >= 1),
            "{verdict}: {verdicts:?}"
        );
    }
    // The same answer offline, from the file.
    let config = Config::load(&local.config_path).unwrap();
    let offline = tableau_token_broker::broker::explain(
        &config,
        &ExplainRequest {
            identity: format!("dns:{PULSE}"),
            site: "sales".into(),
            user: "ann@example.com".into(),
            scopes: vec![READ.into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert!(offline.running.allowed);
    assert_eq!(
        offline.running.entry.as_deref(),
        Some("dns:pulse.example.org")
    );
}

/// Issue 27, done when: a candidate that removes a grant in use yields `would_refuse`
/// divergences, counted and audited, while the calls still succeed; `--emit-candidate` output is
/// accepted as a candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_in_shadow_counts_and_audits_divergences() {
    let dir = tempfile::tempdir().unwrap();
    // The candidate drops the renderer's second grant (views:download everywhere).
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(
        &candidate,
        format!(
            r#"[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer"]
scopes = ["{READ}"]
"#
        ),
    )
    .unwrap();
    let local = policy_setup(dir.path())
        .configure(|c| {
            admins(c);
            c.policy = Some(RawPolicy {
                candidate: Some("candidate.toml".to_owned()),
            });
        })
        .start()
        .await
        .unwrap();
    let broker = Arc::clone(local.server.broker());
    assert!(broker.config().candidate.is_some());
    let renderer = spiffe_cert(&local, CALLER);
    let mut c = TokenBrokerClient::new(
        local::connect(&local.pki, local.server.local_addr(), &renderer)
            .await
            .unwrap(),
    );
    for _ in 0..3 {
        let got = c
            .get_credentials(pb::GetCredentialsRequest {
                site: "sales".into(),
                user: "svc-renderer".into(),
                scopes: vec!["tableau:views:download".into()],
                ..Default::default()
            })
            .await;
        assert!(got.is_ok(), "the running policy still decides: {got:?}");
    }
    let granted_same = c
        .get_credentials(pb::GetCredentialsRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: vec![READ.into()],
            ..Default::default()
        })
        .await;
    assert!(granted_same.is_ok());
    assert_eq!(
        broker.divergences(),
        vec![(("would_refuse", Arc::from("SITE_NOT_ALLOWED")), 3)]
    );
    let metrics = local.server.metrics().encode();
    assert!(
        metrics.contains(
            "tableau_token_broker_policy_candidate_divergence_total{direction=\"would_refuse\",reason=\"SITE_NOT_ALLOWED\"} 3"
        ),
        "{metrics}"
    );
    let records = audit_records(&local);
    let shadowed: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["rpc"] == "GetCredentials")
        .collect();
    assert_eq!(shadowed.len(), 4);
    for r in &shadowed[..3] {
        assert_eq!(r["outcome"], "granted");
        assert_eq!(r["candidate"]["divergence"], "would_refuse");
        assert_eq!(r["candidate"]["reason"], "SITE_NOT_ALLOWED");
    }
    assert!(
        shadowed[3].get("candidate").is_none(),
        "no divergence, no candidate object"
    );

    // Explain shows both decisions.
    let mut admin = admin_client(&local, &spiffe_cert(&local, READER)).await;
    let e = admin
        .explain(apb::ExplainRequest {
            identity: CALLER.into(),
            site: "sales".into(),
            user: "svc-renderer".into(),
            scopes: vec!["tableau:views:download".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(e.running.unwrap().allowed);
    assert!(!e.candidate.unwrap().allowed);
    assert_eq!(e.divergence, "would_refuse");

    // The review's candidate file loads as a candidate.
    let audit = local.config_path.parent().unwrap().join(local::AUDIT_FILE);
    let emitted = dir.path().join("emitted.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"))
        .args(["audit", "review", "--config"])
        .arg(&local.config_path)
        .arg(&audit)
        .arg("--emit-candidate")
        .arg(&emitted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&local.config_path)
        .unwrap()
        .replace(
            "candidate = \"candidate.toml\"",
            "candidate = \"emitted.toml\"",
        );
    let promoted = dir.path().join("with-emitted.toml");
    std::fs::write(&promoted, text).unwrap();
    let config = Config::load(&promoted).unwrap();
    let cand = config.candidate.as_ref().unwrap();
    assert_eq!(
        cand.policy.callers().len(),
        1,
        "only the renderer used anything"
    );
    assert_eq!(cand.admins.entries().len(), 2, "the admins are kept");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"))
        .arg("check-config")
        .arg(&promoted)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A bad candidate is refused whole: the running configuration stays.
    std::fs::write(&candidate, "[[callers]]\nidentity = \"bare-name\"\n").unwrap();
    assert!(Config::load(&local.config_path).is_err());
}
