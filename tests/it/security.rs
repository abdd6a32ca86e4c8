//! Issue 11, part A: each test is an attack that worked on the broker before the fix (commit
//! 5150757) and must fail now. Real parts throughout: mTLS with dev-PKI certificates, the Tableau
//! double over HTTP, the real binary where logs are read.

use std::time::Duration;

use base64::Engine;
use proptest::prelude::*;
use tableau_double::{Faults, SiteUser};
use tableau_token_broker::config::{Config, ConfigError};
use tableau_token_broker::devkit::certs::CertPair;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite, LocalSystem,
};
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{ADMIN, FIN_LUID, Harness, RENDERER, req};
use crate::support::{self, Served, serve_command};

fn reason(s: &tonic::Status) -> String {
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn mint(site: &str, user: &str, scopes: &[&str], ttl: Option<Duration>) -> pb::MintJwtRequest {
    pb::MintJwtRequest {
        site: site.into(),
        user: user.into(),
        scopes: strings(scopes),
        ttl: ttl.map(|d| prost_types::Duration::try_from(d).unwrap()),
        ..Default::default()
    }
}

/// The claims of a compact JWT, unverified (the test only reads what the broker put there).
fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. deny_scopes bypassed by asking for the wildcard
// ---------------------------------------------------------------------------------------------

/// The ops grant is `tableau:tasks:*` with `deny_scopes = ["tableau:tasks:delete"]`. Asking for
/// the wildcard itself used to return a token (and a JWT) with `scp = ["tableau:tasks:*"]`,
/// which Tableau honours for DELETE /tasks.
#[tokio::test]
async fn asking_for_a_wildcard_that_covers_a_denied_scope_is_refused() {
    let h = Harness::start().await;
    let mut c = h.client(ADMIN).await;
    let e = c
        .get_credentials(req("finance", "svc-renderer", &["tableau:tasks:*"]))
        .await
        .expect_err("tasks:* covers the denied tasks:delete");
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "SCOPE_DENIED"),
        "{e:?}"
    );
    assert!(
        e.message().contains("tableau:tasks:delete"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("tableau:tasks:run"),
        "the message lists what may be asked for instead: {}",
        e.message()
    );
    let instead = e.message().split("instead: ").nth(1).unwrap_or_default();
    assert!(
        !instead.is_empty() && !instead.contains("delete"),
        "{}",
        e.message()
    );
    assert_eq!(
        h.fake.stats().signins,
        0,
        "the refusal never reached Tableau"
    );

    let e = c
        .mint_jwt(mint("finance", "svc-renderer", &["tableau:tasks:*"], None))
        .await
        .expect_err("MintJwt follows the same rule");
    assert_eq!(reason(&e), "SCOPE_DENIED", "{e:?}");

    // The denied scope itself, and the members that are allowed, behave as before.
    let e = c
        .get_credentials(req("finance", "svc-renderer", &["tableau:tasks:delete"]))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "SCOPE_DENIED");
    c.get_credentials(req("finance", "svc-renderer", &["tableau:tasks:run"]))
        .await
        .expect("an allowed member of the wildcard");
}

const DENY_SCOPES: &[&str] = &[
    "tableau:tasks:*",
    "tableau:tasks:run",
    "tableau:tasks:delete",
    "tableau:tasks:read",
    "tableau:content:read",
];

/// Whatever the ops caller asks for, a JWT the broker mints never carries a scope that covers,
/// or is covered by, its grant's denied `tableau:tasks:delete`.
#[tokio::test(flavor = "multi_thread")]
async fn no_minted_jwt_covers_a_denied_scope() {
    let h = Harness::start().await;
    let broker = h.server().broker().clone();
    let config = broker.config();
    let catalog = config.policy.catalog().clone();
    let denied: tableau_token_broker::scope::Scope = "tableau:tasks:delete".parse().unwrap();
    let admin = tableau_token_broker::audit::CallerContext::from_id(ADMIN);
    let rt = tokio::runtime::Handle::current();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    let strategy = proptest::collection::vec(proptest::sample::select(DENY_SCOPES), 1..4);
    let granted = std::cell::Cell::new(0u32);
    runner
        .run(&strategy, |scopes| {
            let scopes = strings(&scopes);
            let minted = tokio::task::block_in_place(|| {
                rt.block_on(broker.mint_jwt(&admin, "finance", "svc-ops", &scopes, None))
            });
            if let Ok(m) = minted {
                granted.set(granted.get() + 1);
                let jwt = secrecy::ExposeSecret::expose_secret(&m.jwt).to_owned();
                for s in claims(&jwt)["scp"].as_array().unwrap() {
                    let s: tableau_token_broker::scope::Scope =
                        s.as_str().unwrap().parse().unwrap();
                    prop_assert!(
                        !catalog.covers(&s, &denied) && !catalog.covers(&denied, &s),
                        "{scopes:?} gave a JWT with {s}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(
        granted.get() > 0,
        "the property was checked on granted requests"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A certificate's CN or DNS SAN can claim a SPIFFE identity
// ---------------------------------------------------------------------------------------------

/// Calls GetCredentials for the renderer's everyday request with `pair`; Err when the broker
/// refused the connection or the call.
async fn renderer_request(
    h: &Harness,
    pair: &CertPair,
) -> Result<pb::GetCredentialsResponse, String> {
    let ch = h.channel(pair).await.map_err(|e| e.to_string())?;
    TokenBrokerClient::new(ch)
        .get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn a_cn_or_dns_san_spelled_as_a_spiffe_id_claims_nothing() {
    let h = Harness::start().await;
    assert!(
        renderer_request(&h, &h.client_cert(RENDERER)).await.is_ok(),
        "control: the real SVID works"
    );
    let cn_only = h.pki.issue_client_with_uris(&[], &[], RENDERER).unwrap();
    assert!(
        renderer_request(&h, &cn_only).await.is_err(),
        "a CN holding the renderer's SPIFFE ID got its credentials"
    );
    let dns = h.pki.issue_client_with_uris(&[], &[RENDERER], "x").unwrap();
    assert!(
        renderer_request(&h, &dns).await.is_err(),
        "a DNS SAN holding the renderer's SPIFFE ID got its credentials"
    );
    // `..` in a CN matched the ops prefix entry by string.
    let dotdot = h
        .pki
        .issue_client_with_uris(&[], &[], "spiffe://example.org/ns/ops/../reports/sa/x")
        .unwrap();
    let res = match h.channel(&dotdot).await {
        Err(e) => Err(e.to_string()),
        Ok(ch) => TokenBrokerClient::new(ch)
            .get_credentials(req("finance", "anyone", &["tableau:tasks:run"]))
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
    };
    assert!(
        res.is_err(),
        "a CN with .. matched spiffe://example.org/ns/ops/*"
    );
    assert_eq!(h.fake.stats().signins_ok, 1, "only the control signed in");
}

const PULSE: &str = "pulse.example.org";

async fn start_with_named_callers(dir: &std::path::Path) -> LocalSystem {
    let grant = || LocalGrant::new(&["finance"], &["svc-renderer"], &["tableau:content:read"]);
    LocalSetup::new(
        dir,
        LocalApp::new(
            "client-1",
            "sid-1",
            "a-connected-app-secret-of-40-bytes-xxxxx",
        ),
    )
    .site(LocalSite::new(
        "finance",
        FIN_LUID,
        vec![SiteUser::new("svc-renderer", "u-1")],
    ))
    .caller(LocalCaller::new(format!("dns:{PULSE}"), grant()))
    .caller(LocalCaller::new("cn:legacy-job", grant()))
    .start()
    .await
    .unwrap()
}

/// An entry names the certificate field it matches: `dns:` only a DNS SAN, `cn:` only the
/// subject CN; WhoAmI says which field the identity came from.
#[tokio::test]
async fn caller_entries_match_only_the_certificate_field_they_name() {
    let dir = tempfile::tempdir().unwrap();
    let local = start_with_named_callers(dir.path()).await;
    let addr = local.server.local_addr();
    let call = |pair: CertPair| {
        let pki = &local.pki;
        async move {
            let mut c = TokenBrokerClient::new(local::connect(pki, addr, &pair).await.unwrap());
            let who = c.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
            let got = c
                .get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
                .await;
            (who, got)
        }
    };
    let (who, got) = call(
        local
            .pki
            .issue_client_with_uris(&[], &[PULSE], "x")
            .unwrap(),
    )
    .await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(
        (
            who.identity.as_str(),
            who.source.as_str(),
            who.matched_entry.as_str()
        ),
        (PULSE, "dns_san", "dns:pulse.example.org")
    );
    // The same name as a CN only: the dns: entry does not apply.
    let (who, got) = call(local.pki.issue_client_with_uris(&[], &[], PULSE).unwrap()).await;
    let e = got.unwrap_err();
    assert_eq!(reason(&e), "CALLER_NOT_ALLOWED", "{e:?}");
    assert_eq!(
        (who.source.as_str(), who.matched_entry.as_str()),
        ("cn", "")
    );
    assert!(e.message().contains("subject CN"), "{}", e.message());
    let (who, got) = call(
        local
            .pki
            .issue_client_with_uris(&[], &[], "legacy-job")
            .unwrap(),
    )
    .await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(
        (who.source.as_str(), who.matched_entry.as_str()),
        ("cn", "cn:legacy-job")
    );
    // A DNS SAN spelled like the CN entry does not get it either.
    let (who, got) = call(
        local
            .pki
            .issue_client_with_uris(&[], &["legacy-job"], "x")
            .unwrap(),
    )
    .await;
    assert_eq!(reason(&got.unwrap_err()), "CALLER_NOT_ALLOWED");
    assert_eq!(who.source, "dns_san");
    local.shutdown().await.unwrap();
}

fn config_error(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    match Config::from_toml(text, &dir.path().join("broker.toml")) {
        Ok(_) => panic!("the configuration was accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn dev_config(identity: &str) -> String {
    format!(
        r#"version = 1
development = true
[sites.finance]
server_url = "http://127.0.0.1:1"
[sites.finance.connected_app]
client_id = "c"
secret_id = "k"
secret = "a-development-secret-of-at-least-32-bytes"
[[callers]]
identity = "{identity}"
[[callers.grants]]
sites = ["finance"]
users = ["u"]
scopes = ["tableau:content:read"]
"#
    )
}

#[test]
fn check_config_refuses_a_bare_identity_with_a_hint() {
    let e = config_error(&dev_config("pulse.example.org"));
    assert!(e.contains("callers[0].identity"), "{e}");
    assert!(
        e.contains("\"dns:pulse.example.org\"") && e.contains("\"cn:pulse.example.org\""),
        "{e}"
    );
    let e = config_error(&dev_config("cn:spiffe://example.org/a"));
    assert!(e.contains("callers[0].identity"), "{e}");
    // SPIFFE entries stay valid as they are.
    let dir = tempfile::tempdir().unwrap();
    Config::from_toml(
        &dev_config("spiffe://example.org/ns/reports/*"),
        &dir.path().join("b.toml"),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. Unbounded input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_caller_without_an_entry_is_refused_before_its_request_is_read() {
    let h = Harness::start().await;
    let mut c = h.client("spiffe://example.org/ns/other/sa/x").await;
    let long = format!("tableau:{}:read", "x".repeat(1000));
    let e = c
        .get_credentials(req("finance", "u", &[long.as_str()]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::PermissionDenied, "CALLER_NOT_ALLOWED"),
        "{e:?}"
    );
    assert!(e.message().len() < 400, "{}", e.message());
    let e = c
        .invalidate_credentials(pb::InvalidateCredentialsRequest {
            token: "t".repeat(5000),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "CALLER_NOT_ALLOWED", "{e:?}");
}

#[tokio::test]
async fn oversized_inputs_are_refused_before_any_work() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let too_large = |e: &tonic::Status| {
        assert_eq!(
            (e.code(), reason(e).as_str()),
            (Code::InvalidArgument, "INPUT_TOO_LARGE"),
            "{e:?}"
        );
        assert!(
            e.message().len() < 300,
            "the input is not echoed: {}",
            e.message()
        );
    };
    // 65 scopes, each valid: used to be accepted.
    let many = vec!["tableau:content:read"; 65];
    too_large(
        &c.get_credentials(req("finance", "svc-renderer", &many))
            .await
            .unwrap_err(),
    );
    too_large(
        &c.mint_jwt(mint("finance", "svc-renderer", &many, None))
            .await
            .unwrap_err(),
    );
    let long_scope = format!("tableau:content:{}", "r".repeat(200));
    too_large(
        &c.get_credentials(req("finance", "svc-renderer", &[long_scope.as_str()]))
            .await
            .unwrap_err(),
    );
    let long_user = "u".repeat(257);
    too_large(
        &c.get_credentials(req("finance", &long_user, &["tableau:content:read"]))
            .await
            .unwrap_err(),
    );
    let long_site = "s".repeat(129);
    too_large(
        &c.get_credentials(req(&long_site, "svc-renderer", &["tableau:content:read"]))
            .await
            .unwrap_err(),
    );
    too_large(
        &c.resolve_scopes(pb::ResolveScopesRequest {
            methods: vec!["Query View PDF".to_owned(); 65],
            scopes: Vec::new(),
        })
        .await
        .unwrap_err(),
    );
    too_large(
        &c.invalidate_credentials(pb::InvalidateCredentialsRequest {
            token: "t".repeat(5000),
        })
        .await
        .unwrap_err(),
    );
    for user in [
        "svc-renderer\nforged",
        "svc\0renderer",
        "svc\u{1b}[2Krenderer",
    ] {
        let e = c
            .get_credentials(req("finance", user, &["tableau:content:read"]))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::InvalidArgument, "INVALID_REQUEST"),
            "{user:?}: {e:?}"
        );
    }
    // The largest request that fits every limit is served.
    let ok = vec!["tableau:content:read"; 64];
    c.get_credentials(req("finance", "svc-renderer", &ok))
        .await
        .unwrap();
    assert_eq!(h.fake.stats().signins, 1);
}

/// A 1 MiB scope used to cost seconds of "did you mean" and was echoed whole into the error.
#[tokio::test]
async fn a_message_over_64_kib_is_refused_undecoded() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let huge = "x".repeat(1 << 20);
    let e = c
        .get_credentials(req("finance", "svc-renderer", &[huge.as_str()]))
        .await
        .unwrap_err();
    assert_ne!(
        reason(&e),
        "UNKNOWN_SCOPE",
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    assert!(
        e.code() == Code::OutOfRange,
        "{:?}: {}",
        e.code(),
        &e.message()[..200.min(e.message().len())]
    );
    assert!(e.message().len() < 400, "{} bytes", e.message().len());
    // The connection still serves.
    c.get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
}

/// The broker binary with `log_format` logs on stderr, so a test can read what operators would see;
/// the address is read from its listening line, which in text logs is not JSON.
fn serve_logging(h: &Harness, log_format: &str) -> (Served, std::net::SocketAddr) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let config = h.dir.path().join(format!("serve-{log_format}.toml"));
    std::fs::write(
        &config,
        text.replace(
            "[tableau]",
            &format!(
                "[telemetry]\nlog_format = \"{log_format}\"\nlog_filter = \"info\"\n[tableau]"
            ),
        ),
    )
    .unwrap();
    let mut served = Served::spawn(serve_command(&config).env("NO_COLOR", "1"));
    let addr = loop {
        let line = served.next_line(Duration::from_secs(20));
        if let Some(i) = line.find("addr") {
            if line.contains("broker listening") {
                let rest = &line[i..];
                let start = rest.find(|c: char| c.is_ascii_digit()).unwrap();
                let end = rest[start..]
                    .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                    .map_or(rest.len(), |e| start + e);
                break rest[start..end].parse().unwrap();
            }
        }
    };
    (served, addr)
}

/// With text logs, a username holding a newline used to start a line of its own, which could
/// pass for any log line; a long one was written out whole.
#[tokio::test]
async fn crafted_input_cannot_forge_or_flood_log_lines() {
    let h = Harness::start().await;
    let (served, addr) = serve_logging(&h, "text");
    let mut c = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let forged = "svc-renderer\n2026-01-01T00:00:00Z  INFO audit: rpc=\"GetCredentials\" outcome=\"ok\" FORGED";
    c.get_credentials(req("finance", forged, &["tableau:content:read"]))
        .await
        .unwrap_err();
    let stranger_cert = h.client_cert("spiffe://example.org/ns/other/sa/x");
    let mut stranger = support::client(&h.pki, addr, &stranger_cert).await;
    let long_user = format!("{}FLOOD", "u".repeat(250));
    stranger
        .get_credentials(req("finance", &long_user, &["tableau:content:read"]))
        .await
        .unwrap_err();
    let mut lines = served.stop().await;
    // The refusal's record is in the audit trail (JSON lines, apart from the diagnostic log).
    let trail = std::fs::read_to_string(h.dir.path().join("audit.jsonl")).unwrap_or_default();
    lines.extend(trail.lines().map(str::to_owned));
    assert!(
        !lines.iter().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("FORGED")),
        "the refusal is logged: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("FLOOD")),
        "echoes are cut: {lines:#?}"
    );
    assert!(lines.iter().all(|l| l.len() < 2000), "{lines:#?}");
}

// ---------------------------------------------------------------------------------------------
// 7. What Tableau says goes to callers and logs unfiltered
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tableau_text_echoing_the_jwt_reaches_neither_callers_nor_logs() {
    let h = Harness::start().await;
    h.fake
        .set_faults(
            "signin",
            Faults {
                echo_jwt_share: 1.0,
                ..Faults::default()
            },
        )
        .unwrap();
    let (served, addr) = serve_logging(&h, "json");
    let mut c = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let e = c
        .get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(reason(&e), "TABLEAU_401001");
    let info = e.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata.get("tableau_code").map(String::as_str),
        Some("401001")
    );
    assert!(
        !e.message().contains("eyJ"),
        "the JWT reached the caller: {}",
        e.message()
    );
    assert!(
        !e.message().contains("Signin Error for"),
        "upstream text reached the caller: {}",
        e.message()
    );
    assert_eq!(h.fake.stats().faults_injected.get("echo_jwt"), Some(&1));
    let lines = served.stop().await;
    let text = lines.join("\n");
    assert!(
        text.contains("Tableau sign-in failed"),
        "the WARN line is there: {text}"
    );
    assert!(text.contains("[redacted]"), "{text}");
    assert!(
        !text.contains("eyJ"),
        "something JWT-shaped reached the logs: {text}"
    );
}

#[tokio::test]
async fn a_huge_retry_after_is_capped_at_five_minutes() {
    let h = Harness::start().await;
    h.fake
        .set_faults(
            "signin",
            Faults {
                throttle_share: 1.0,
                retry_after: Duration::from_secs(86_400),
                ..Faults::default()
            },
        )
        .unwrap();
    let mut c = h.client(RENDERER).await;
    let e = c
        .get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let retry = e.get_error_details().retry_info().cloned().unwrap();
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(300)));
    assert!(e.message().contains("300s"), "{}", e.message());
}

// ---------------------------------------------------------------------------------------------
// 8. Secret files and small things
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mint_jwt_refuses_a_ttl_under_30_seconds() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    for ttl in [1, 29] {
        let e = c
            .mint_jwt(mint(
                "finance",
                "svc-renderer",
                &["tableau:content:read"],
                Some(Duration::from_secs(ttl)),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::InvalidArgument, "INVALID_REQUEST"),
            "{e:?}"
        );
        assert!(e.message().contains("30s"), "{}", e.message());
    }
    c.mint_jwt(mint(
        "finance",
        "svc-renderer",
        &["tableau:content:read"],
        Some(Duration::from_secs(30)),
    ))
    .await
    .unwrap();
}

const SECRET: &str = "a-connected-app-secret-value-of-40-bytes";

/// A production config reading its secret from `secret_file` or `secret_env`.
fn file_config(dir: &std::path::Path, source: &str) -> std::path::PathBuf {
    let cfg = dir.join("b.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
[sites.finance]
server_url = "https://tableau.example.com"
[sites.finance.connected_app]
client_id = "c"
secret_id = "k"
{source}
[[callers]]
identity = "spiffe://example.org/a"
[[callers.grants]]
sites = ["finance"]
users = ["u"]
scopes = ["tableau:content:read"]
"#
        ),
    )
    .unwrap();
    cfg
}

fn secret_file(dir: &std::path::Path, value: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("finance.secret");
    std::fs::write(&p, value).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    format!("secret_file = {:?}", p.display().to_string())
}

fn load(cfg: &std::path::Path) -> Result<Config, ConfigError> {
    Config::load(cfg)
}

#[test]
fn secret_files_anyone_can_write_or_short_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = secret_file(dir.path(), SECRET, 0o666);
    let e = load(&file_config(dir.path(), &src))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("secret_file") && e.contains("world-writable"),
        "{e}"
    );
    assert!(!e.contains(SECRET), "{e}");

    let src = secret_file(dir.path(), SECRET, 0o644);
    let c = load(&file_config(dir.path(), &src)).unwrap();
    assert!(
        c.summary().contains("world-readable"),
        "check-config warns: {}",
        c.summary()
    );
    let src = secret_file(dir.path(), SECRET, 0o640);
    let c = load(&file_config(dir.path(), &src)).unwrap();
    assert!(
        c.warnings.is_empty(),
        "group-readable is normal: {:?}",
        c.warnings
    );

    let src = secret_file(dir.path(), "short-secret\n", 0o600);
    let e = load(&file_config(dir.path(), &src))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shorter than 32"), "{e}");
    assert!(!e.contains("short-secret"), "{e}");
}

/// The secret the `jwt` command signs with, found by verifying its JWT against candidates.
fn signing_secret(cfg: &std::path::Path, env: Option<(&str, &str)>, candidates: &[&str]) -> String {
    use hmac::Mac;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"));
    cmd.args(["jwt", "--config"]).arg(cfg).args([
        "--site",
        "finance",
        "--user",
        "u",
        "--scope",
        "tableau:content:read",
    ]);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwt = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    candidates
        .iter()
        .find(|c| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(c.as_bytes()).unwrap();
            mac.update(signed.as_bytes());
            mac.verify_slice(&sig).is_ok()
        })
        .map(|c| (*c).to_owned())
        .expect("the JWT is signed with one of the candidates")
}

#[test]
fn exactly_one_trailing_newline_is_stripped_from_files_and_variables_alike() {
    let dir = tempfile::tempdir().unwrap();
    let one = format!("{SECRET}\n");
    let two = format!("{SECRET}\n\n");
    let candidates = [SECRET, one.as_str(), two.as_str()];
    let src = secret_file(dir.path(), &two, 0o600);
    assert_eq!(
        signing_secret(&file_config(dir.path(), &src), None, &candidates),
        one
    );
    let src = secret_file(dir.path(), &one, 0o600);
    assert_eq!(
        signing_secret(&file_config(dir.path(), &src), None, &candidates),
        SECRET
    );
    let cfg = file_config(dir.path(), "secret_env = \"TTB_SEC_A_SECRET\"");
    assert_eq!(
        signing_secret(&cfg, Some(("TTB_SEC_A_SECRET", &one)), &candidates),
        SECRET,
        "an environment variable loses its trailing newline like a file"
    );
    assert_eq!(
        signing_secret(&cfg, Some(("TTB_SEC_A_SECRET", &two)), &candidates),
        one
    );
}

#[test]
fn a_toml_syntax_error_never_prints_a_line_holding_a_secret() {
    let text = dev_config("spiffe://example.org/a").replace(
        "secret = \"a-development-secret-of-at-least-32-bytes\"",
        "secret = \"a-development-secret-of-at-least-32-bytes",
    );
    let e = config_error(&text);
    assert!(!e.contains("a-development-secret"), "{e}");
    assert!(e.contains("line"), "the error still says where: {e}");
}
