//! The double's faults over real HTTP: latency, 5xx shares, throttling with Retry-After, dropped
//! connections, malformed, truncated and slow bodies, and the admin endpoint that sets them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tableau_double::{Faults, Latency, SlowBody};

use crate::double::*;

#[tokio::test]
async fn latency_fault_delays_the_answer() {
    let f = Fake::start().await;
    f.fault(
        "signin",
        Faults {
            latency: Some(Latency::Fixed(Duration::from_millis(150))),
            ..Faults::default()
        },
    );
    let t = Instant::now();
    assert_eq!(f.signin_json(&f.jwt(json!([])), SITE).await.0, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(f.handle.stats().faults_injected.get("latency"), Some(&1));
    // Other endpoints are untouched.
    f.call("GET", &sites_path("/projects"), None).await;
    assert_eq!(f.handle.stats().faults_injected.get("latency"), Some(&1));
}

#[tokio::test]
async fn error_share_gives_5xx() {
    let (f, token) = Fake::with_faults_after_signin(
        "rest",
        Faults {
            error_share: 1.0,
            error_statuses: vec![503],
            ..Faults::default()
        },
    )
    .await;
    let r = f.projects(&token).await;
    assert_eq!(xml_code(r).await, (503, "503000".to_owned()));
    f.fault(
        "rest",
        Faults {
            error_share: 1.0,
            ..Faults::default()
        },
    );
    for _ in 0..5 {
        let status = f.projects(&token).await.status();
        assert!(status == 500 || status == 503, "{status}");
    }
    f.handle.clear_faults();
    assert_eq!(f.projects(&token).await.status(), 200);
    assert_eq!(f.handle.stats().faults_injected.get("error"), Some(&6));
}

#[tokio::test]
async fn throttle_gives_429_with_retry_after() {
    // A method's own faults win over "rest".
    let (f, token) = Fake::with_faults_after_signin(
        "Query Projects",
        Faults {
            throttle_share: 1.0,
            retry_after: Duration::from_secs(3),
            ..Faults::default()
        },
    )
    .await;
    let r = f.projects(&token).await;
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(xml_code(r).await, (429, "429000".to_owned()));
    assert_eq!(
        f.call("GET", &sites_path("/workbooks"), Some(&token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn close_share_drops_the_connection() {
    let f = Fake::start().await;
    f.fault(
        "signin",
        Faults {
            close_share: 1.0,
            ..Faults::default()
        },
    );
    let err = {
        install_provider();
        reqwest::Client::builder()
    }
    .pool_max_idle_per_host(0)
    .build()
    .unwrap()
    .post(f.url("/api/3.17/auth/signin"))
    .body("<tsRequest/>")
    .send()
    .await
    .unwrap_err();
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(f.handle.stats().faults_injected.get("close"), Some(&1));
    assert_eq!(
        f.handle.stats().signins,
        0,
        "a dropped request never reaches the checks"
    );
}

#[tokio::test]
async fn malformed_and_truncated_bodies() {
    let (f, token) = Fake::with_faults_after_signin(
        "rest",
        Faults {
            malformed_share: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let r = f.get_json(&sites_path("/projects"), &token).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let xml = f.projects(&token).await.text().await.unwrap();
    assert!(!xml.trim_end().ends_with("</tsResponse>"), "{xml}");

    f.fault(
        "rest",
        Faults {
            truncate_share: 1.0,
            ..Faults::default()
        },
    );
    let r = f.projects(&token).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must fail to read"
    );
    let stats = f.handle.stats();
    assert_eq!(stats.faults_injected.get("malformed"), Some(&2));
    assert_eq!(stats.faults_injected.get("truncate"), Some(&1));
}

#[tokio::test]
async fn slow_body_trickles_but_arrives_whole() {
    let f = Fake::start().await;
    let token = f.token(json!(["tableau:content:read"])).await;
    let whole = f.projects(&token).await.text().await.unwrap();
    f.fault(
        "rest",
        Faults {
            slow_body: Some(SlowBody {
                chunk_bytes: whole.len() / 4 + 1,
                delay: Duration::from_millis(40),
            }),
            ..Faults::default()
        },
    );
    let t = Instant::now();
    let slow = f.projects(&token).await.text().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(slow, whole);
}

#[tokio::test]
async fn admin_endpoint_sets_and_clears_faults() {
    let f = Fake::start().await;
    let put = |endpoint: &str, body: Value| {
        f.http
            .put(f.url(&format!("/_fake/faults/{endpoint}")))
            .json(&body)
            .send()
    };
    assert_eq!(
        put(
            "signin",
            json!({"error_share": 1.0, "error_statuses": [500]})
        )
        .await
        .unwrap()
        .status(),
        204
    );
    assert_eq!(f.signin_json(&f.jwt(json!([])), SITE).await.0, 500);
    let listed: Value = f
        .http
        .get(f.url("/_fake/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["signin"]["error_share"], 1.0);

    // Bad values and unknown endpoints are refused with a reason.
    let r = put("signin", json!({"error_share": 2.0})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("error_share"));
    assert_eq!(put("nowhere", json!({})).await.unwrap().status(), 400);
    assert_eq!(
        put("signin", json!({"eror_share": 1.0}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert!(f.handle.set_faults("nowhere", Faults::default()).is_err());

    let r = f.http.delete(f.url("/_fake/faults")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(f.handle.faults().is_empty());
    assert_eq!(f.signin_json(&f.jwt(json!([])), SITE).await.0, 200);

    // Latency from a distribution, set over HTTP.
    assert_eq!(
        put(
            "rest",
            json!({"latency": {"uniform": {"min": "60ms", "max": "80ms"}}})
        )
        .await
        .unwrap()
        .status(),
        204
    );
    let t = Instant::now();
    f.call("GET", &sites_path("/projects"), None).await;
    assert!(t.elapsed() >= Duration::from_millis(60));
}
