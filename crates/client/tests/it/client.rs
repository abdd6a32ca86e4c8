//! The client's own behaviour against the real broker: single flight, certificate reloading,
//! refresh-ahead, errors and the other RPCs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tableau_token_broker_client::{
    CacheEvent, Clock, CredentialsRequest, Error, ExposeSecret, ManualClock, MintJwtRequest,
    RetryPolicy,
};

use crate::support::{OPS_ID, PATIENCE, RENDERER_ID, SCOPE, System, USER, pki};

fn request() -> CredentialsRequest {
    CredentialsRequest::new("finance", USER).scopes([SCOPE])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_of_one_key_make_one_rpc() {
    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();
    let before = sys.broker.rpc_count("GetCredentials").await;
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, barrier) = (client.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                client.credentials(&request()).await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap().token.expose_secret().to_owned());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(sys.broker.rpc_count("GetCredentials").await - before, 1);
    assert_eq!(sys.double.stats().signins_ok, 1);
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_used_by_the_next_connection() {
    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();
    assert_eq!(client.whoami().await.unwrap().identity, RENDERER_ID);

    // Half a rotation: the ops certificate with the renderer's key does not make an identity, so
    // the client keeps the renderer's.
    let (cert, key) = sys.identity_files();
    std::fs::write(&cert, std::fs::read(&pki().ops.0).unwrap()).unwrap();
    assert_eq!(client.whoami().await.unwrap().identity, RENDERER_ID);

    // The key arrives: the next call connects anew with the ops identity.
    std::fs::write(&key, std::fs::read(&pki().ops.1).unwrap()).unwrap();
    let me = client.whoami().await.unwrap();
    assert_eq!(me.identity, OPS_ID);
    assert_eq!(me.matched_entry, "spiffe://demo.local/ns/ops/*");

    // And back, by renaming new files over the old ones (as spiffe-helper does).
    let (tmp_cert, tmp_key) = (
        cert.with_extension("crt.new"),
        key.with_extension("key.new"),
    );
    std::fs::copy(&pki().renderer.0, &tmp_cert).unwrap();
    std::fs::copy(&pki().renderer.1, &tmp_key).unwrap();
    std::fs::rename(&tmp_key, &key).unwrap();
    std::fs::rename(&tmp_cert, &cert).unwrap();
    assert_eq!(client.whoami().await.unwrap().identity, RENDERER_ID);
}

#[tokio::test]
async fn refresh_ahead_takes_a_new_token_before_the_min_remaining_point() {
    let sys = System::start().await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let client = sys
        .renderer()
        .clock(clock.clone())
        .refresh_ahead(Duration::from_secs(300))
        .build()
        .unwrap();
    let req = request().min_remaining(Duration::from_secs(60));
    let mut events = client.subscribe();

    let first = client.credentials(&req).await.unwrap();
    assert_eq!(sys.double.stats().signins_ok, 1);
    // Four minutes left by the client's clock: inside the refresh-ahead window (5 min), before
    // the min_remaining point (1 min).
    clock.set(first.expires_at - Duration::from_secs(240));
    let served = client.credentials(&req).await.unwrap();
    assert_eq!(
        served.token.expose_secret(),
        first.token.expose_secret(),
        "the old token is served while the refresh runs"
    );
    let refreshed = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await.unwrap() {
                CacheEvent::Fetched {
                    refresh_ahead: true,
                    ..
                } => return,
                CacheEvent::RefreshFailed { error, .. } => panic!("refresh failed: {error}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(refreshed.is_ok(), "no refresh within {PATIENCE:?}");
    let second = client.credentials(&req).await.unwrap();
    assert_ne!(second.token.expose_secret(), first.token.expose_secret());
    assert!(second.expires_at > first.expires_at);
    assert!(
        clock.now() + Duration::from_secs(60) < first.expires_at,
        "still before the old token's min_remaining point"
    );
    assert_eq!(sys.double.stats().signins_ok, 2, "one new sign-in");
}

#[tokio::test]
async fn the_other_rpcs_and_the_brokers_errors() {
    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();

    let jwt = client
        .mint_jwt(&MintJwtRequest::new("finance", USER).scopes([SCOPE]))
        .await
        .unwrap();
    assert_eq!(jwt.jwt.expose_secret().split('.').count(), 3);
    assert!(!format!("{jwt:?}").contains(jwt.jwt.expose_secret()));

    let resolved = client
        .resolve_scopes(["Query Workbooks for Site"], Vec::<String>::new())
        .await
        .unwrap();
    assert_eq!(resolved.required_scopes, [SCOPE]);

    let creds = client.credentials(&request()).await.unwrap();
    assert_eq!(creds.site_luid, crate::support::FINANCE_LUID);
    assert_eq!(creds.server_url, sys.double.base_url());
    assert!(!format!("{creds:?}").contains(creds.token.expose_secret()));
    let gone = client.invalidate(&creds.token).await.unwrap();
    assert!(gone.evicted && gone.signed_out, "{gone:?}");
    let next = client.credentials(&request()).await.unwrap();
    assert_ne!(next.token.expose_secret(), creds.token.expose_secret());

    // A scope outside the grant: PERMISSION_DENIED with the broker's reason.
    let err = client
        .credentials(&request().scope("tableau:users:read"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(err.reason().is_some(), "{err:?}");
}

#[tokio::test]
async fn a_broker_that_is_not_there_is_unavailable_after_the_retries() {
    let sys = System::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let client = sys
        .renderer()
        .endpoint(addr.to_string())
        .retry(
            tableau_token_broker_client::RetryPolicy::default()
                .with_max_attempts(2)
                .with_backoff(Duration::from_millis(1), Duration::from_millis(2)),
        )
        .build()
        .unwrap();
    let err = client.whoami().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
}

#[tokio::test]
async fn resource_exhausted_is_retried_after_the_brokers_retry_info() {
    let sys = System::start().await;
    let req = CredentialsRequest::new("finance", "svc-ops")
        .scopes([SCOPE])
        .force_refresh(true);

    // Without retries the limit shows: RESOURCE_EXHAUSTED with the broker's reason and delay.
    let strict = sys.ops().retry(RetryPolicy::none()).build().unwrap();
    strict.credentials(&req).await.unwrap();
    let err = strict.credentials(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::ResourceExhausted), "{err}");
    assert!(err.reason().is_some(), "{err:?}");
    let Error::Rpc { retry_after, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(retry_after.is_some(), "{err:?}");

    // With the default policy the client waits for that delay and gets its token.
    let patient = sys.ops().build().unwrap();
    let limited = sys
        .broker
        .rpc_count_with("GetCredentials", "RESOURCE_EXHAUSTED")
        .await;
    patient.credentials(&req).await.unwrap();
    patient.credentials(&req).await.unwrap();
    assert!(
        sys.broker
            .rpc_count_with("GetCredentials", "RESOURCE_EXHAUSTED")
            .await
            > limited,
        "the limit was met on the way"
    );
}

/// Claims reach Tableau in the JWT, key the client's cache (a repeat is served from it, other
/// claims are another session), and a claim the grant does not allow is the broker's refusal.
#[tokio::test]
async fn claims_are_sent_cached_apart_and_refused_when_the_grant_does_not_allow_them() {
    let sys = System::start().await;
    let client = sys.renderer().build().unwrap();
    let emea = || {
        request()
            .attribute("region", ["emea"])
            .groups(["analysts-emea"])
    };
    let before = sys.broker.rpc_count("GetCredentials").await;
    let a = client.credentials(&emea()).await.unwrap();
    let claims = sys.double.session_claims(a.token.expose_secret()).unwrap();
    assert_eq!(claims["region"], "emea", "{claims}");
    assert_eq!(
        claims["https://tableau.com/groups"],
        serde_json::json!(["analysts-emea"]),
        "{claims}"
    );

    // The same claims, given in another order: this client's cache answers.
    let again = client
        .credentials(
            &request()
                .groups(["analysts-emea"])
                .attribute("region", ["emea"]),
        )
        .await
        .unwrap();
    assert_eq!(again.token.expose_secret(), a.token.expose_secret());
    assert_eq!(sys.broker.rpc_count("GetCredentials").await - before, 1);

    // Other claims, and none: other sessions.
    let na = client
        .credentials(&request().attribute("region", ["na"]))
        .await
        .unwrap();
    let plain = client.credentials(&request()).await.unwrap();
    assert_ne!(na.token.expose_secret(), a.token.expose_secret());
    assert_ne!(plain.token.expose_secret(), a.token.expose_secret());
    assert_ne!(plain.token.expose_secret(), na.token.expose_secret());
    assert_eq!(sys.double.stats().signins_ok, 3);

    // Outside the grant's allowlists: the broker's reasons.
    let refused = |req: CredentialsRequest| {
        let client = client.clone();
        async move { client.credentials(&req).await.unwrap_err() }
    };
    let e = refused(request().attribute("region", ["apac"])).await;
    assert_eq!(e.reason(), Some("ATTRIBUTE_NOT_ALLOWED"), "{e}");
    let e = refused(request().groups(["admins"])).await;
    assert_eq!(e.reason(), Some("GROUP_NOT_ALLOWED"), "{e}");
    let e = refused(request().on_demand_access(true)).await;
    assert_eq!(e.reason(), Some("ON_DEMAND_ACCESS_NOT_ALLOWED"), "{e}");
    let e = client
        .mint_jwt(
            &MintJwtRequest::new("finance", USER)
                .scopes([SCOPE])
                .attribute("region", ["apac"]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.reason(), Some("ATTRIBUTE_NOT_ALLOWED"), "{e}");
}
