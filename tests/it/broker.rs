//! The broker end to end: real mTLS with an rcgen CA, real HTTP to the Tableau double on loopback.

use crate::harness::*;
use std::time::{Duration, SystemTime};

use tableau_double::Faults;
use tableau_token_broker::clock::Clock;
use tableau_token_broker::devkit::certs::DevPki;
use tableau_token_broker::grpc::pb::{self};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::slow_signins;

#[tokio::test]
async fn first_call_signs_in_second_comes_from_cache() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let a = c
        .get_credentials(req(
            "finance",
            "svc-renderer",
            &["tableau:views:download", "tableau:content:read"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!a.from_cache);
    assert_eq!(a.token.len(), 32);
    assert_eq!(a.site_luid, FIN_LUID);
    assert_eq!(a.site_content_url, "finance");
    assert_eq!(a.user_luid, "u-1");
    assert_eq!(a.server_url, h.fake.base_url());
    assert_eq!(a.api_version, "3.22");
    assert_eq!(a.scopes, ["tableau:content:read", "tableau:views:download"]);
    let exp = SystemTime::try_from(a.expires_at.unwrap()).unwrap();
    let life = exp.duration_since(h.clock.now()).unwrap();
    assert!(
        life <= Duration::from_secs(235 * 60) && life > Duration::from_secs(234 * 60),
        "{life:?}"
    );

    // Same key in another order: the cache answers.
    let b = c
        .get_credentials(req(
            "finance",
            "svc-renderer",
            &[
                "tableau:content:read",
                "tableau:views:download",
                "tableau:content:read",
            ],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(b.from_cache);
    assert_eq!(a.token, b.token);
    assert_eq!(h.fake.stats().signins_ok, 1);

    // The token works at Tableau for what its scopes allow.
    let http = crate::support::http();
    let url = format!(
        "{}/api/3.22/sites/{}/workbooks",
        h.fake.base_url(),
        a.site_luid
    );
    let r = http
        .get(&url)
        .header("X-Tableau-Auth", &a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The JSON site (default site) works too.
    let d = c
        .get_credentials(req("default", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.site_content_url, "");
    assert_eq!(d.user_luid, "u-3");
}

#[tokio::test]
async fn concurrent_cold_calls_share_one_sign_in_even_when_half_cancel() {
    let h = Harness::start().await;
    slow_signins(&h.fake, Duration::from_millis(400));
    let c = h.client(RENDERER).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let call = c.get_credentials(read_req());
            if i % 2 == 0 {
                tokio::time::timeout(Duration::from_millis(50), call)
                    .await
                    .ok()
                    .map(|r| r.unwrap().into_inner())
            } else {
                Some(call.await.unwrap().into_inner())
            }
        }));
    }
    let mut tokens = std::collections::BTreeSet::new();
    let mut cancelled = 0;
    for t in tasks {
        match t.await.unwrap() {
            Some(r) => {
                tokens.insert(r.token);
            }
            None => cancelled += 1,
        }
    }
    assert_eq!(cancelled, 100);
    assert_eq!(tokens.len(), 1, "every caller got the one token");
    assert_eq!(h.fake.stats().signins, 1);
    let mut c = c.clone();
    let again = c.get_credentials(read_req()).await.unwrap().into_inner();
    assert!(again.from_cache);
    assert_eq!(h.fake.stats().signins, 1);
}

#[tokio::test]
async fn cancelled_callers_do_not_abort_the_sign_in() {
    let h = Harness::start().await;
    slow_signins(&h.fake, Duration::from_millis(300));
    let mut c = h.client(RENDERER).await;
    let call = c.get_credentials(read_req());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    // The sign-in finishes on its own and fills the cache.
    eventually("the sign-in to finish", || {
        h.server().broker().cache().inflight() == 0
    })
    .await;
    let r = c.get_credentials(read_req()).await.unwrap().into_inner();
    assert!(r.from_cache);
    assert_eq!(h.fake.stats().signins, 1);
}

#[tokio::test]
async fn min_remaining_force_refresh_and_expiry() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let scopes = ["tableau:content:read"];
    let first = c
        .get_credentials(req("finance", "svc-renderer", &scopes))
        .await
        .unwrap()
        .into_inner();

    h.clock.advance(Duration::from_secs(200 * 60));
    let mut r = req("finance", "svc-renderer", &scopes);
    r.min_remaining = Some(prost_types::Duration {
        seconds: 10 * 60,
        nanos: 0,
    });
    let kept = c.get_credentials(r.clone()).await.unwrap().into_inner();
    assert!(kept.from_cache, "35m left is more than 10m");
    r.min_remaining = Some(prost_types::Duration {
        seconds: 40 * 60,
        nanos: 0,
    });
    let replaced = c.get_credentials(r).await.unwrap().into_inner();
    assert!(!replaced.from_cache, "35m left is less than 40m");
    assert_ne!(replaced.token, first.token);
    assert_eq!(h.fake.stats().signins_ok, 2);
    // The replaced session is signed out at Tableau once its grace period (5m) is over.
    h.clock.advance(Duration::from_secs(5 * 60));
    eventually("sign-out of the replaced session", || {
        h.fake.stats().signouts >= 1
    })
    .await;

    let mut f = req("finance", "svc-renderer", &scopes);
    f.force_refresh = true;
    let forced = c.get_credentials(f).await.unwrap().into_inner();
    assert!(!forced.from_cache);
    assert_ne!(forced.token, replaced.token);
    assert_eq!(h.fake.stats().signins_ok, 3);
    let cached = c
        .get_credentials(req("finance", "svc-renderer", &scopes))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cached.token, forced.token);

    // Past the usable life (240m - 5m margin): a new sign-in.
    h.clock.advance(Duration::from_secs(236 * 60));
    let after = c
        .get_credentials(req("finance", "svc-renderer", &scopes))
        .await
        .unwrap()
        .into_inner();
    assert!(!after.from_cache);
    assert_eq!(h.fake.stats().signins_ok, 4);

    // A min_remaining no token can meet is a bad request, not a sign-in loop.
    let mut r = req("finance", "svc-renderer", &scopes);
    r.min_remaining = Some(prost_types::Duration {
        seconds: 300 * 60,
        nanos: 0,
    });
    let e = c.get_credentials(r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn each_policy_denial_is_named() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let cases: &[(pb::GetCredentialsRequest, Code, &str, &str)] = &[
        (
            req("sales", "svc-renderer", &["tableau:content:read"]),
            Code::PermissionDenied,
            "SITE_NOT_ALLOWED",
            "site \"sales\"",
        ),
        (
            req("finance", "mallory", &["tableau:content:read"]),
            Code::PermissionDenied,
            "USER_NOT_ALLOWED",
            "user \"mallory\"",
        ),
        (
            req("finance", "svc-renderer", &["tableau:users:read"]),
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
            "tableau:users:read",
        ),
        (
            req("finance", "svc-renderer", &[]),
            Code::InvalidArgument,
            "NO_SCOPES",
            "no scopes",
        ),
        (
            req("finance", "svc-renderer", &["tableau:view:download"]),
            Code::InvalidArgument,
            "UNKNOWN_SCOPE",
            "did you mean",
        ),
        (
            req("finance", "svc-renderer", &["views"]),
            Code::InvalidArgument,
            "MALFORMED_SCOPE",
            "\"views\"",
        ),
        (
            req("", "svc-renderer", &["tableau:content:read"]),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            "site",
        ),
    ];
    for (r, code, why, text) in cases {
        let e = c.get_credentials(r.clone()).await.unwrap_err();
        assert_eq!(e.code(), *code, "{r:?}: {e:?}");
        assert_eq!(reason(&e), *why, "{r:?}");
        assert!(e.message().contains(text), "{r:?}: {}", e.message());
    }
    // Ops callers: a wildcard covers members, deny wins, and "*" sites meet an unconfigured one.
    let mut ops = h.client(ADMIN).await;
    assert!(
        ops.get_credentials(req("finance", "anyone", &["tableau:tasks:run"]))
            .await
            .is_err_and(|e| e.code() == Code::FailedPrecondition),
        "granted, but the double does not know the user"
    );
    let e = ops
        .get_credentials(req("finance", "svc-renderer", &["tableau:tasks:delete"]))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "SCOPE_DENIED");
    let e = ops
        .get_credentials(req("marketing", "svc-renderer", &["tableau:tasks:run"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // An identity with no entry at all.
    let mut stranger = h.client("spiffe://example.org/ns/other/sa/x").await;
    let e = stranger.get_credentials(read_req()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e), "CALLER_NOT_ALLOWED");
    assert_eq!(h.fake.stats().signins_ok, 0);
}

#[tokio::test]
async fn untrusted_and_two_uri_certificates_are_refused() {
    let h = Harness::start().await;
    assert!(
        !h.refuses(&h.client_cert(RENDERER)).await,
        "control: a good certificate works"
    );
    let other = DevPki::in_memory().unwrap();
    let untrusted = other.issue_client(Some(RENDERER), &[], "x").unwrap();
    assert!(h.refuses(&untrusted).await, "untrusted client CA must fail");
    let two = h
        .pki
        .issue_client_with_uris(&[RENDERER, ADMIN], &[], "x")
        .unwrap();
    assert!(h.refuses(&two).await, "two URI SANs must fail");
}

/// The error of a renderer's sign-in that Tableau refuses with `sub_code`, via a broker set up
/// with `opts`.
async fn signin_refused(opts: Opts, user: &str, sub_code: &str) -> tonic::Status {
    let e = error_for(opts, user, None).await;
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (
            Code::FailedPrecondition,
            format!("TABLEAU_SIGNIN_{sub_code}").as_str()
        ),
        "{e:?}"
    );
    e
}

async fn error_for(opts: Opts, user: &str, faults: Option<Faults>) -> tonic::Status {
    let h = Harness::start_with(opts).await;
    if let Some(f) = faults {
        h.fake.set_faults("signin", f).unwrap();
    }
    let mut c = h.client(RENDERER).await;
    c.get_credentials(req("finance", user, &["tableau:content:read"]))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn tableau_errors_map_to_documented_statuses() {
    let e = signin_refused(Opts::default(), "ghost", "16").await;
    let info = e.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        info.metadata.get("tableau_code").map(String::as_str),
        Some("401001")
    );
    assert_eq!(
        info.metadata.get("tableau_sub_code").map(String::as_str),
        Some("16")
    );

    let opts = Opts {
        secret: "wrong-secret-0123456789abcdef-xyz00",
        ..Opts::default()
    };
    let e = signin_refused(opts, "svc-renderer", "10084").await;
    assert!(
        e.message().contains("check the connected app's secret"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("wrong-secret-0123456789abcdef-xyz00"));

    let opts = Opts {
        secret_id: "sid-unknown",
        ..Opts::default()
    };
    let e = signin_refused(opts, "svc-renderer", "10085").await;
    assert!(
        !e.message().contains("sid-unknown"),
        "secret IDs stay in the log"
    );

    let opts = Opts {
        app_enabled: false,
        ..Opts::default()
    };
    signin_refused(opts, "svc-renderer", "10090").await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let e = error_for(
        Opts {
            server_url: Some(url.clone()),
            ..Opts::default()
        },
        "svc-renderer",
        None,
    )
    .await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(!e.message().contains(&url), "upstream URLs stay in the log");

    let e = error_for(
        Opts::default(),
        "svc-renderer",
        Some(Faults {
            error_share: 1.0,
            error_statuses: vec![503],
            ..Faults::default()
        }),
    )
    .await;
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");

    let e = error_for(
        Opts::default(),
        "svc-renderer",
        Some(Faults {
            throttle_share: 1.0,
            retry_after: Duration::from_secs(7),
            ..Faults::default()
        }),
    )
    .await;
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::ResourceExhausted, "TABLEAU_RATE_LIMITED"),
        "{e:?}"
    );
    let retry = e.get_error_details().retry_info().cloned().unwrap();
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));

    // Failures are not cached: the next call tries again.
    let h = Harness::start().await;
    h.fake
        .set_faults(
            "signin",
            Faults {
                error_share: 1.0,
                error_statuses: vec![500],
                ..Faults::default()
            },
        )
        .unwrap();
    let mut c = h.client(RENDERER).await;
    assert!(c.get_credentials(read_req()).await.is_err());
    h.fake.clear_faults();
    assert!(c.get_credentials(read_req()).await.is_ok());
}

#[tokio::test]
async fn invalidation_signs_out_and_guards_other_callers_tokens() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let t = c
        .get_credentials(req(
            "finance",
            "svc-renderer",
            &["tableau:content:read", "tableau:views:download"],
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    assert_eq!(h.fake.stats().live_sessions, 1);

    let mut ops = h.client(ADMIN).await;
    let e = ops
        .invalidate_credentials(pb::InvalidateCredentialsRequest { token: t.clone() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let out = c
        .invalidate_credentials(pb::InvalidateCredentialsRequest { token: t.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(out.evicted && out.signed_out, "{out:?}");
    assert_eq!(h.fake.stats().signouts, 1);
    assert_eq!(h.fake.stats().live_sessions, 0);

    let again = c
        .invalidate_credentials(pb::InvalidateCredentialsRequest { token: t })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.evicted && !again.signed_out);
    let fresh = c.get_credentials(read_req()).await.unwrap().into_inner();
    assert!(!fresh.from_cache);
}

#[tokio::test]
async fn bounded_cache_signs_out_what_it_evicts() {
    let h = Harness::start_with(Opts {
        max_entries: 2,
        ..Opts::default()
    })
    .await;
    let mut c = h.client(RENDERER).await;
    for scopes in [
        &["tableau:content:read"][..],
        &["tableau:views:download"],
        &["tableau:content:read", "tableau:views:download"],
    ] {
        c.get_credentials(req("finance", "svc-renderer", scopes))
            .await
            .unwrap();
        h.server().broker().cache().run_pending_tasks();
    }
    h.server().broker().cache().run_pending_tasks();
    assert!(h.server().broker().cache().len() <= 2);
    // Evicted sessions stay valid for the grace period (5m), then are signed out.
    h.clock.advance(Duration::from_secs(5 * 60));
    eventually("sign-out of the evicted session", || {
        h.fake.stats().signouts >= 1
    })
    .await;
}

#[tokio::test]
async fn whoami_resolve_scopes_and_mint_jwt() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let me = c.who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!(me.identity, RENDERER);
    assert_eq!(me.grants.len(), 1);
    assert_eq!(
        me.grants[0].scopes,
        ["tableau:content:read", "tableau:views:download"]
    );
    let mut ops = h.client("spiffe://example.org/ns/ops/sa/cron").await;
    assert_eq!(
        ops.who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner()
            .matched_entry,
        "spiffe://example.org/ns/ops/*"
    );

    let r = c
        .resolve_scopes(pb::ResolveScopesRequest {
            methods: vec![
                "Query View PDF".into(),
                "Update Workbook Now".into(),
                "Nope".into(),
            ],
            scopes: vec!["tableau:tasks:*".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.required_scopes,
        ["tableau:tasks:run", "tableau:views:download"]
    );
    assert_eq!(r.unknown, ["Nope"]);
    assert!(
        r.scopes[0]
            .methods
            .iter()
            .any(|m| m.name == "Update Workbook Now")
    );

    let m = c
        .mint_jwt(pb::MintJwtRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: vec!["tableau:content:read".into()],
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let exp = SystemTime::try_from(m.expires_at.unwrap()).unwrap();
    let life = exp
        .duration_since(h.clock.now())
        .unwrap_or_default()
        .as_secs();
    assert!((119..=120).contains(&life), "the grant's 2m limit: {life}s");
    let over = c
        .mint_jwt(pb::MintJwtRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: vec!["tableau:content:read".into()],
            ttl: Some(prost_types::Duration {
                seconds: 300,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::InvalidArgument);
    // The minted JWT signs in at the double: the connected app accepts it.
    let body = format!(
        r#"<tsRequest><credentials jwt="{}"><site contentUrl="finance"/></credentials></tsRequest>"#,
        m.jwt
    );
    let resp = crate::support::http()
        .post(format!("{}/api/3.22/auth/signin", h.fake.base_url()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let h = Harness::start().await;
    let ch = h.channel(&h.client_cert(RENDERER)).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let s = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tableau_token_broker.v1.TokenBroker".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        s.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut refl =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(ch);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = refl
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let text = format!("{resp:?}");
    assert!(
        text.contains("tableau_token_broker.v1.TokenBroker"),
        "{text}"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_in_flight_call() {
    let mut h = Harness::start().await;
    slow_signins(&h.fake, Duration::from_millis(500));
    let mut c = h.client(RENDERER).await;
    let call = tokio::spawn(async move { c.get_credentials(read_req()).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let server = h.server.take().unwrap();
    let addr = server.local_addr();
    server.shutdown().await.unwrap();
    let r = call.await.unwrap();
    assert!(r.is_ok(), "in-flight call finished: {r:?}");
    // And the listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn bad_reload_keeps_the_running_configuration() {
    let h = Harness::start().await;
    let good = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        good.replace("tableau:views:download", "tableau:view:download"),
    )
    .unwrap();
    assert!(h.server().reload(&h.config_path).is_err());
    let mut c = h.client(RENDERER).await;
    assert!(
        c.get_credentials(req("finance", "svc-renderer", &["tableau:views:download"]))
            .await
            .is_ok()
    );
    // A good reload takes effect: the renderer loses views:download.
    std::fs::write(
        &h.config_path,
        good.replace(", \"tableau:views:download\"]", "]"),
    )
    .unwrap();
    h.server().reload(&h.config_path).unwrap();
    let e = c
        .get_credentials(req("finance", "svc-renderer", &["tableau:views:download"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let _ = &h.dir;
}

/// Repeats of one cache hit on a server running on one thread (the traffic a memo of the last hit
/// would serve). Everything the answer depends on must still take it away: another caller, an
/// invalidation, `min_remaining`, `force_refresh` and a reload that withdraws the grant.
#[tokio::test]
async fn a_repeated_hit_still_answers_to_caller_invalidation_expiry_and_reload() {
    let h = Harness::start().await;
    let mut c = h.client(RENDERER).await;
    let r = || req("finance", "svc-renderer", &["tableau:content:read"]);
    let first = c.get_credentials(r()).await.unwrap().into_inner();
    assert!(!first.from_cache);
    for _ in 0..3 {
        let again = c.get_credentials(r()).await.unwrap().into_inner();
        assert!(again.from_cache);
        assert_eq!(again.token, first.token);
    }

    // Another caller with the same request gets its own decision: it has no entry at all.
    let mut stranger = h.client("spiffe://example.org/ns/other/sa/nobody").await;
    let e = stranger.get_credentials(r()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e), "CALLER_NOT_ALLOWED");
    // The same caller asking for a user its grant does not cover is refused too.
    let e = c
        .get_credentials(req("finance", "nobody", &["tableau:content:read"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Invalidated: the next call signs in again, and its token is the one repeated after.
    let hit = c.get_credentials(r()).await.unwrap().into_inner();
    assert!(hit.from_cache);
    c.invalidate_credentials(pb::InvalidateCredentialsRequest {
        token: first.token.clone(),
    })
    .await
    .unwrap();
    let second = c.get_credentials(r()).await.unwrap().into_inner();
    assert!(
        !second.from_cache,
        "an invalidated token was handed out again"
    );
    assert_ne!(second.token, first.token);
    let hit = c.get_credentials(r()).await.unwrap().into_inner();
    assert!(hit.from_cache);
    assert_eq!(hit.token, second.token);

    // Forced: a new session, then that one is repeated.
    let mut f = r();
    f.force_refresh = true;
    let third = c.get_credentials(f).await.unwrap().into_inner();
    assert!(!third.from_cache);
    assert_ne!(third.token, second.token);
    let hit = c.get_credentials(r()).await.unwrap().into_inner();
    assert_eq!(hit.token, third.token);

    // 35 minutes of usable life left: enough for 10, not for 40.
    h.clock.advance(Duration::from_secs(200 * 60));
    let mut m = r();
    m.min_remaining = Some(prost_types::Duration {
        seconds: 10 * 60,
        nanos: 0,
    });
    assert_eq!(
        c.get_credentials(m.clone())
            .await
            .unwrap()
            .into_inner()
            .token,
        third.token
    );
    m.min_remaining = Some(prost_types::Duration {
        seconds: 40 * 60,
        nanos: 0,
    });
    let fourth = c.get_credentials(m).await.unwrap().into_inner();
    assert!(
        !fourth.from_cache,
        "a token with too little life left was repeated"
    );
    assert_eq!(h.fake.stats().signins_ok, 4);

    // A reload that withdraws the scope: refused at once, though the same request was a hit.
    assert!(
        c.get_credentials(r())
            .await
            .unwrap()
            .into_inner()
            .from_cache
    );
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let narrowed = text.replacen(
        "\"tableau:content:read\", \"tableau:views:download\"",
        "\"tableau:views:download\"",
        1,
    );
    assert_ne!(
        narrowed, text,
        "the renderer's grant was not found in {text}"
    );
    std::fs::write(&h.config_path, narrowed).unwrap();
    h.server().reload(&h.config_path).unwrap();
    let e = c.get_credentials(r()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
}
