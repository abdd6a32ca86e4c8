//! The Tableau double used from another crate, exactly as its README shows (the README's example is
//! this file's test; `crates/tableau-double` checks the two stay the same).

use std::time::{SystemTime, UNIX_EPOCH};

use tableau_double::{AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, Site, SiteUser};

#[tokio::test]
async fn sign_in_to_the_double_with_a_connected_app_jwt() {
    // A Tableau with one site, one user and one connected app, on 127.0.0.1 and a free port.
    let secret = "a-connected-app-secret-of-32-bytes-or-more";
    let double = FakeTableau::start(FakeTableauConfig::new(
        vec![Site::new(
            "Finance",
            "finance",
            "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d",
            vec![SiteUser::new(
                "svc-renderer",
                "1d6f2e6b-0000-4000-8000-000000000001",
            )],
        )],
        vec![ConnectedApp::new(
            "my-client-id",
            vec![AppSecret::new("my-secret-id", secret)],
        )],
    ))
    .await
    .unwrap();

    // The code under test would mint this JWT; here jsonwebtoken does, as Tableau documents it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("my-secret-id".into());
    header.extras.insert("iss", "my-client-id");
    let claims = serde_json::json!({
        "iss": "my-client-id", "sub": "svc-renderer", "aud": "tableau",
        "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
        "scp": ["tableau:content:read"],
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let jwt = jsonwebtoken::encode(&header, &claims, &key).unwrap();

    // Sign in over real HTTP, the way Tableau's REST API is called (reqwest is built without a
    // crypto provider of its own, so install aws-lc-rs as the process default first).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let body = serde_json::json!({"credentials": {"jwt": jwt, "site": {"contentUrl": "finance"}}});
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/3.22/auth/signin", double.base_url()))
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["credentials"]["site"]["id"],
        "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d"
    );
    assert_eq!(double.stats().signins_ok, 1);
    double.shutdown().await;
}
