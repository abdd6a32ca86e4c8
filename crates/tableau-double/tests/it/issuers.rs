//! EAS and UAT sign-in at the double (issue 25): keys found through a stub issuer's metadata
//! (either well-known path), the JWKS cached and fetched again for an unknown `kid`, and each
//! sub-code Tableau answers for EAS JWTs. JWTs are signed here, with rcgen's P-256 keys.

use std::sync::{Arc, Mutex};

use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tableau_double::{
    EasApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site, SiteUser, UatConfig,
};

const LUID: &str = "0f0e0d0c-0b0a-4909-8807-060504030201";
const USER: &str = "carol@example.com";
const TENANT: &str = "tenant-42";

/// A P-256 key: its signing half and its JWK under `kid`.
fn key(kid: &str) -> (EncodingKey, Value) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let enc = EncodingKey::from_ec_der(&kp.serialize_der());
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (enc, serde_json::to_value(jwk).unwrap())
}

/// An issuer serving its metadata on both well-known paths and its JWKS, over plain HTTP.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Vec<Value>>>,
}

async fn issuer() -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let jwks: Arc<Mutex<Vec<Value>>> = Arc::default();
    let meta = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks.json") });
    let (m1, m2, keys) = (meta.clone(), meta, Arc::clone(&jwks));
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(m1) }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { axum::Json(m2) }),
        )
        .route(
            "/jwks.json",
            get(move || async move { axum::Json(json!({ "keys": keys.lock().unwrap().clone() })) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { url, jwks }
}

async fn double(iss: &Issuer) -> FakeTableauHandle {
    let mut c = FakeTableauConfig::new(
        vec![Site::new(
            "Cloud",
            "cloud",
            LUID,
            vec![SiteUser::new(USER, "u-9")],
        )],
        vec![],
    );
    c.eas_apps = vec![EasApp::new(&iss.url)];
    let mut uat = UatConfig::new(&iss.url, TENANT);
    uat.scopes = vec!["tableau:content:read".to_owned()];
    c.uat_configs = vec![uat];
    FakeTableau::start(c).await.unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn eas_claims(iss: &Issuer) -> Value {
    let n = now();
    json!({
        "iss": iss.url, "sub": USER, "aud": format!("tableau:{LUID}"),
        "iat": n - 5, "nbf": n - 5, "exp": n + 300,
        "jti": uuid::Uuid::new_v4().to_string(), "scp": ["tableau:content:read"],
    })
}

fn sign(enc: &EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, enc).unwrap()
}

/// Signs in; the HTTP status and Tableau's detail (which carries the sub-code) or the token.
async fn signin(d: &FakeTableauHandle, jwt: &str, uat: bool) -> (u16, Value) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut creds = json!({ "jwt": jwt, "site": { "contentUrl": "cloud" } });
    if uat {
        creds["isUat"] = json!(true);
    }
    let r = reqwest::Client::new()
        .post(format!("{}/api/3.27/auth/signin", d.base_url()))
        .header("accept", "application/json")
        .json(&json!({ "credentials": creds }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn sub_code(body: &Value) -> String {
    body["error"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn eas_jwts_are_verified_through_the_issuers_metadata_with_tableaus_sub_codes() {
    let iss = issuer().await;
    let (k1, jwk1) = key("k1");
    iss.jwks.lock().unwrap().push(jwk1);
    let d = double(&iss).await;

    let claims = eas_claims(&iss);
    let jwt = sign(&k1, "k1", &claims);
    let (status, body) = signin(&d, &jwt, false).await;
    assert_eq!(status, 200, "{body}");
    let token = body["credentials"]["token"].as_str().unwrap();
    let kept: Value = reqwest::Client::new()
        .get(format!("{}/_fake/session/claims", d.base_url()))
        .header("X-Tableau-Auth", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kept, claims, "the session keeps its claims");
    assert_eq!(d.session_claims(token), Some(kept), "the same in process");

    let (_, body) = signin(&d, &jwt, false).await;
    assert!(sub_code(&body).contains("(10091)"), "reused jti: {body}");
    let mut c = eas_claims(&iss);
    c["exp"] = json!(now() + 700);
    let (_, body) = signin(&d, &sign(&k1, "k1", &c), false).await;
    assert!(sub_code(&body).contains("(10096)"), "exp too far: {body}");
    let mut c = eas_claims(&iss);
    c.as_object_mut().unwrap().remove("scp");
    let (_, body) = signin(&d, &sign(&k1, "k1", &c), false).await;
    assert!(sub_code(&body).contains("(10099)"), "no scp: {body}");
    let mut c = eas_claims(&iss);
    c["aud"] = json!("tableau:another-site");
    let (_, body) = signin(&d, &sign(&k1, "k1", &c), false).await;
    assert!(sub_code(&body).contains("(10084)"), "wrong aud: {body}");

    // A key published after the JWKS was cached: fetched again on its unknown kid.
    let (k2, jwk2) = key("k2");
    iss.jwks.lock().unwrap().push(jwk2);
    let (status, body) = signin(&d, &sign(&k2, "k2", &eas_claims(&iss)), false).await;
    assert_eq!(status, 200, "{body}");
    // An RSA key under 2048 bits in the JWKS: 10088, whatever the signature.
    use base64::Engine;
    let mut n = vec![0xc5u8; 128];
    n[127] |= 1;
    iss.jwks.lock().unwrap().push(json!({
        "kty": "RSA", "kid": "weak", "alg": "RS256", "use": "sig",
        "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&n), "e": "AQAB",
    }));
    let mut weak = sign(&k1, "k1", &eas_claims(&iss));
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"alg":"RS256","kid":"weak","typ":"JWT"}"#);
    weak = format!("{header}.{}", weak.split_once('.').unwrap().1);
    let (_, body) = signin(&d, &weak, false).await;
    assert!(sub_code(&body).contains("(10088)"), "short RSA key: {body}");

    let stats = d.stats();
    assert_eq!(stats.issuer_fetches["jwks"], 3, "{stats:?}");
    assert!(
        stats
            .issuer_fetches
            .contains_key("/.well-known/openid-configuration")
            && stats
                .issuer_fetches
                .contains_key("/.well-known/oauth-authorization-server"),
        "both well-known paths: {stats:?}"
    );
}

#[tokio::test]
async fn unified_access_tokens_sign_in_with_their_tenant_and_explicit_scopes() {
    let iss = issuer().await;
    let (k1, jwk1) = key("k1");
    iss.jwks.lock().unwrap().push(jwk1);
    let d = double(&iss).await;
    let uat = |scp: Value, tenant: &str| {
        let n = now();
        json!({
            "iss": iss.url, "https://tableau.com/tenantId": tenant, "email": USER,
            "iat": n, "exp": n + 300, "jti": uuid::Uuid::new_v4().to_string(), "scp": scp,
        })
    };
    let ok = sign(&k1, "k1", &uat(json!(["tableau:content:read"]), TENANT));
    let (status, body) = signin(&d, &ok, true).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = signin(
        &d,
        &sign(&k1, "k1", &uat(json!(["tableau:content:read"]), "other")),
        true,
    )
    .await;
    assert!(sub_code(&body).contains("(10084)"), "wrong tenant: {body}");
    let (_, body) = signin(
        &d,
        &sign(&k1, "k1", &uat(json!(["tableau:content:*"]), TENANT)),
        true,
    )
    .await;
    assert!(
        sub_code(&body).contains("(10084)"),
        "wildcard with explicit scopes: {body}"
    );
    // Without isUat the same JWT is taken for EAS, whose aud it lacks.
    let (status, _) = signin(
        &d,
        &sign(&k1, "k1", &uat(json!(["tableau:content:read"]), TENANT)),
        false,
    )
    .await;
    assert_eq!(status, 401);
}
