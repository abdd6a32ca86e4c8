//! The Tableau double over real HTTP: every sign-in rule and its sub-code, sessions, scope
//! enforcement, XML and JSON, counters, the admin endpoint and each kind of fault. JWTs are made
//! here by hand (HMAC-SHA256 over base64url JSON), not by the broker's minting code.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tableau_common::clock::{ManualClock, unix_secs};
use tableau_double::{
    AppSecret, ConnectedApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Faults, Site,
    SiteUser, TlsConfig,
};

pub(crate) const CLIENT: &str = "8e1b7172-39c3-4a32-887e-fc2b4119f56d";
pub(crate) const KID: &str = "b0115bf9-3a4b-4c91-b009-cf0c170b1a56";
pub(crate) const SECRET: &str = "first-secret-value";
pub(crate) const KID2: &str = "c1226c0a-4b5c-4da2-a11a-d0d1d1b2c3d4";
pub(crate) const SECRET2: &str = "second-secret-value";
pub(crate) const OFF_CLIENT: &str = "disabled-app";
pub(crate) const OFF_KID: &str = "disabled-kid";
pub(crate) const SITE: &str = "finance";
pub(crate) const SITE_LUID: &str = "9a8b7c6d-5e4f-4a2b-8c0d-9e8f7a6b5c4d";
pub(crate) const USER: &str = "alice@example.com";
pub(crate) const USER_LUID: &str = "9f9e9d9c-8b8a-4f8e-8d7c-7b7a6f6d6e6d";
pub(crate) const START: u64 = 1_750_000_000;

pub(crate) fn config() -> FakeTableauConfig {
    let mut app_off = ConnectedApp::new(OFF_CLIENT, vec![AppSecret::new(OFF_KID, SECRET)]);
    app_off.enabled = false;
    FakeTableauConfig::new(
        vec![
            Site::new(
                "Finance",
                SITE,
                SITE_LUID,
                vec![SiteUser::new(USER, USER_LUID)],
            ),
            Site::new(
                "Default",
                "",
                "00000000-1111-4222-8333-444444444444",
                vec![SiteUser::new("bob", "55555555-6666-4777-8888-999999999999")],
            ),
        ],
        vec![
            ConnectedApp::new(
                CLIENT,
                vec![AppSecret::new(KID, SECRET), AppSecret::new(KID2, SECRET2)],
            ),
            app_off,
        ],
    )
}

pub(crate) struct Fake {
    pub(crate) handle: FakeTableauHandle,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) http: reqwest::Client,
}

impl Fake {
    pub(crate) async fn start() -> Fake {
        Self::start_with(config()).await
    }

    pub(crate) async fn start_with(config: FakeTableauConfig) -> Fake {
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(START));
        let handle = FakeTableau::start_with_clock(config, clock.clone())
            .await
            .unwrap();
        Fake {
            handle,
            clock,
            http: http_client(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        unix_secs(tableau_common::clock::Clock::now(&*self.clock))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.base_url())
    }

    pub(crate) fn claims(&self, scp: Value) -> Value {
        let now = self.now();
        json!({
            "iss": CLIENT, "sub": USER, "aud": "tableau",
            "iat": now, "exp": now + 300,
            "jti": uuid::Uuid::new_v4().to_string(),
            "scp": scp,
        })
    }

    /// A valid JWT with these scopes.
    pub(crate) fn jwt(&self, scp: Value) -> String {
        sign(&header(), &self.claims(scp), SECRET)
    }

    pub(crate) async fn signin_xml(&self, jwt: &str, site: &str) -> (u16, String) {
        let body = format!(
            "<tsRequest><credentials jwt=\"{jwt}\" isUat=\"false\"><site contentUrl=\"{site}\"/></credentials></tsRequest>"
        );
        let r = self
            .http
            .post(self.url("/api/3.17/auth/signin"))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub(crate) async fn signin_json(&self, jwt: &str, site: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/api/3.17/auth/signin"))
            .header("accept", "application/json")
            .json(&json!({"credentials": {"jwt": jwt, "site": {"contentUrl": site}}}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Signs in with these scopes; returns the token.
    pub(crate) async fn token(&self, scp: Value) -> String {
        let (status, body) = self.signin_json(&self.jwt(scp), SITE).await;
        assert_eq!(status, 200, "{body}");
        body["credentials"]["token"].as_str().unwrap().to_owned()
    }

    /// A GET that asks for JSON (`Accept: application/json`): the double answers a method, or
    /// its refusal, in the format the request asks for, and these tests check both formats.
    pub(crate) async fn get_json(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/3.17{path}")))
            .header("X-Tableau-Auth", token)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }

    /// A double with a content-read session, and then `faults` on `endpoint`: the fault tests'
    /// start. The sign-in comes first, so only the calls under test meet the faults.
    pub(crate) async fn with_faults_after_signin(endpoint: &str, faults: Faults) -> (Fake, String) {
        let f = Fake::start().await;
        let token = f.token(json!(["tableau:content:read"])).await;
        f.fault(endpoint, faults);
        (f, token)
    }

    /// Query Projects on the finance site with `token`: the method the fault tests aim at.
    pub(crate) async fn projects(&self, token: &str) -> reqwest::Response {
        self.call("GET", &sites_path("/projects"), Some(token))
            .await
    }

    /// Sets the faults of `endpoint` (a method's name, "signin" or "rest"), as every fault test
    /// does first; a refused setting fails the test here.
    pub(crate) fn fault(&self, endpoint: &str, faults: Faults) {
        self.handle.set_faults(endpoint, faults).unwrap();
    }

    pub(crate) async fn call(
        &self,
        verb: &str,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(verb.parse().unwrap(), self.url(&format!("/api/3.17{path}")));
        if let Some(t) = token {
            req = req.header("X-Tableau-Auth", t);
        }
        req.send().await.unwrap()
    }
}

pub(crate) fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

pub(crate) fn header() -> Value {
    json!({"alg": "HS256", "typ": "JWT", "kid": KID, "iss": CLIENT})
}

pub(crate) fn sign(header: &Value, claims: &Value, secret: &str) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    format!("{msg}.{}", b64(&mac.finalize().into_bytes()))
}

/// The `code` attribute and detail of an XML error body.
pub(crate) fn xml_error(body: &str) -> (String, String) {
    assert!(body.contains("xmlns=\"http://tableau.com/api\""), "{body}");
    let code = body
        .split("<error code=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no error code in {body}"));
    let detail = body
        .split("<detail>")
        .nth(1)
        .and_then(|s| s.split("</detail>").next())
        .unwrap_or_else(|| panic!("no detail in {body}"));
    (code.to_owned(), detail.to_owned())
}

pub(crate) async fn xml_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, xml_error(&r.text().await.unwrap()).0)
}

pub(crate) fn sites_path(rest: &str) -> String {
    format!("/sites/{SITE_LUID}{rest}")
}

#[tokio::test]
async fn signin_answers_the_reference_shape_in_xml_and_json() {
    let f = Fake::start().await;
    let (status, body) = f
        .signin_xml(&f.jwt(json!(["tableau:content:read"])), SITE)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<tsResponse xmlns=\"http://tableau.com/api\""),
        "{body}"
    );
    let token = body
        .split("token=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap();
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(
        body.contains(&format!("<site id=\"{SITE_LUID}\" contentUrl=\"{SITE}\"/>")),
        "{body}"
    );
    assert!(
        body.contains(&format!("<user id=\"{USER_LUID}\"/>")),
        "{body}"
    );

    let (status, json) = f
        .signin_json(&f.jwt(json!(["tableau:content:read"])), SITE)
        .await;
    assert_eq!(status, 200, "{json}");
    let creds = &json["credentials"];
    assert_eq!(creds["token"].as_str().unwrap().len(), 32);
    assert_ne!(creds["token"].as_str().unwrap(), token, "tokens are random");
    assert_eq!(creds["site"], json!({"id": SITE_LUID, "contentUrl": SITE}));
    assert_eq!(creds["user"], json!({"id": USER_LUID}));

    // The second secret of the app signs in too (rotation).
    let mut h = header();
    h["kid"] = json!(KID2);
    let (status, _) = f
        .signin_json(&sign(&h, &f.claims(json!([])), SECRET2), SITE)
        .await;
    assert_eq!(status, 200);

    let stats = f.handle.stats();
    assert_eq!(
        (stats.signins, stats.signins_ok, stats.live_sessions),
        (3, 3, 3)
    );
    assert_eq!(stats.requests.get("Sign In"), Some(&3));
}

/// Every documented sign-in rule, each with its sub-code, in XML and in JSON.
#[tokio::test]
async fn each_signin_rule_gives_its_sub_code() {
    let f = Fake::start().await;
    let now = f.now();
    let ok = |edit: &dyn Fn(&mut Value, &mut Value)| {
        let mut h = header();
        let mut c = f.claims(json!(["tableau:content:read"]));
        edit(&mut h, &mut c);
        sign(&h, &c, SECRET)
    };
    let without_claim = |k: &str| {
        ok(&|_, c| {
            c.as_object_mut().unwrap().remove(k);
        })
    };
    let without_header = |k: &str| {
        ok(&|h, _| {
            h.as_object_mut().unwrap().remove(k);
        })
    };
    let with_claim = |k: &str, v: Value| ok(&|_, c| c[k] = v.clone());
    let none_alg = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": KID, "iss": CLIENT})
            .to_string()
            .as_bytes()),
        b64(f.claims(json!([])).to_string().as_bytes())
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", none_alg, "10087"),
        ("alg HS512", ok(&|h, _| h["alg"] = json!("HS512")), "10084"),
        ("not a JWT", "abc.def".to_owned(), "10084"),
        ("header without kid", without_header("kid"), "10083"),
        ("header without iss", without_header("iss"), "10083"),
        (
            "unknown client ID",
            ok(&|h, c| {
                h["iss"] = json!("nobody");
                c["iss"] = json!("nobody");
            }),
            "10085",
        ),
        (
            "unknown kid",
            ok(&|h, _| h["kid"] = json!("no-such-secret")),
            "10085",
        ),
        (
            "disabled app",
            ok(&|h, c| {
                h["iss"] = json!(OFF_CLIENT);
                h["kid"] = json!(OFF_KID);
                c["iss"] = json!(OFF_CLIENT);
            }),
            "10090",
        ),
        (
            "bad signature",
            sign(&header(), &f.claims(json!([])), "wrong-secret"),
            "10084",
        ),
        ("aud Tableau", with_claim("aud", json!("Tableau")), "10084"),
        (
            "aud as a list",
            with_claim("aud", json!(["tableau"])),
            "10084",
        ),
        ("aud missing", without_claim("aud"), "10084"),
        ("sub missing", without_claim("sub"), "10084"),
        (
            "claim iss differs",
            with_claim("iss", json!("someone-else")),
            "10084",
        ),
        ("exp missing", without_claim("exp"), "16"),
        (
            "exp past",
            ok(&|_, c| {
                c["iat"] = json!(now - 400);
                c["exp"] = json!(now - 60);
            }),
            "16",
        ),
        (
            "exp 11 minutes out",
            with_claim("exp", json!(now + 660)),
            "16",
        ),
        (
            "exp 11 minutes out, no iat",
            ok(&|_, c| {
                c.as_object_mut().unwrap().remove("iat");
                c["exp"] = json!(now + 660);
            }),
            "16",
        ),
        (
            "unknown user",
            with_claim("sub", json!("mallory@example.com")),
            "16",
        ),
        (
            "user name in another case",
            with_claim("sub", json!("Alice@example.com")),
            "16",
        ),
        (
            "user of another site",
            with_claim("sub", json!("bob")),
            "16",
        ),
    ];
    for (i, (name, jwt, want)) in cases.iter().enumerate() {
        let detail = if i % 2 == 0 {
            let (status, body) = f.signin_xml(jwt, SITE).await;
            assert_eq!(status, 401, "{name}: {body}");
            let (code, detail) = xml_error(&body);
            assert_eq!(code, "401001", "{name}");
            detail
        } else {
            let (status, body) = f.signin_json(jwt, SITE).await;
            assert_eq!(status, 401, "{name}: {body}");
            assert_eq!(body["error"]["code"], "401001", "{name}");
            assert_eq!(body["error"]["summary"], "Signin Error", "{name}");
            body["error"]["detail"].as_str().unwrap().to_owned()
        };
        assert!(detail.ends_with(&format!("({want})")), "{name}: {detail}");
    }

    // Unknown site: 401001 without a sub-code.
    let (status, body) = f.signin_xml(&f.jwt(json!([])), "no-such-site").await;
    assert_eq!(status, 401);
    assert_eq!(
        xml_error(&body),
        (
            "401001".to_owned(),
            "Error signing in to Tableau Server".to_owned()
        )
    );

    let stats = f.handle.stats();
    assert_eq!(stats.signins_ok, 0);
    assert_eq!(stats.signins, u64::try_from(cases.len()).unwrap() + 1);
    assert_eq!(stats.signins_failed.get("10084"), Some(&8));
    assert_eq!(stats.signins_failed.get("16"), Some(&7));
    assert_eq!(stats.signins_failed.get("10083"), Some(&2));
    assert_eq!(stats.signins_failed.get("10085"), Some(&2));
    assert_eq!(stats.signins_failed.get("10087"), Some(&1));
    assert_eq!(stats.signins_failed.get("10090"), Some(&1));
    assert_eq!(stats.signins_failed.get("401001"), Some(&1));
    assert_eq!(stats.live_sessions, 0);
}

#[tokio::test]
async fn clock_skew_is_allowed_and_configurable() {
    let mut cfg = config();
    cfg.clock_skew = Duration::from_secs(20);
    let f = Fake::start_with(cfg).await;
    let now = f.now();
    let with_exp = |exp: u64| {
        let mut c = f.claims(json!([]));
        c["iat"] = json!(now - 200);
        c["exp"] = json!(exp);
        sign(&header(), &c, SECRET)
    };
    // Expired 10 s ago: inside the 20 s allowance.
    assert_eq!(f.signin_json(&with_exp(now - 10), SITE).await.0, 200);
    // Expired 30 s ago: outside it.
    let (status, body) = f.signin_json(&with_exp(now - 30), SITE).await;
    assert_eq!(status, 401);
    assert!(body["error"]["detail"].as_str().unwrap().ends_with("(16)"));
    // Issued 10 s in the future (the minting clock runs ahead): allowed.
    let mut c = f.claims(json!([]));
    c["iat"] = json!(now + 10);
    c["exp"] = json!(now + 300);
    assert_eq!(
        f.signin_json(&sign(&header(), &c, SECRET), SITE).await.0,
        200
    );
}

#[tokio::test]
async fn a_jti_is_single_use_within_its_lifetime() {
    let f = Fake::start().await;
    let jwt = f.jwt(json!(["tableau:content:read"]));
    assert_eq!(f.signin_json(&jwt, SITE).await.0, 200);
    let (status, body) = f.signin_json(&jwt, SITE).await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["detail"]
            .as_str()
            .unwrap()
            .ends_with("(10084)"),
        "{body}"
    );
    // The same jti in a freshly signed JWT is refused too.
    let mut c = f.claims(json!([]));
    let jti = jwt.split('.').nth(1).map(|p| {
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        v["jti"].clone()
    });
    c["jti"] = jti.unwrap();
    assert_eq!(
        f.signin_json(&sign(&header(), &c, SECRET), SITE).await.0,
        401
    );
    assert_eq!(f.handle.stats().signins_ok, 1);
}

#[tokio::test]
async fn sessions_end_after_their_lifetime() {
    let mut cfg = config();
    cfg.session_ttl = Duration::from_secs(3600);
    let f = Fake::start_with(cfg).await;
    let token = f.token(json!(["tableau:content:read"])).await;
    let projects = sites_path("/projects");
    assert_eq!(f.call("GET", &projects, Some(&token)).await.status(), 200);
    f.clock.advance(Duration::from_secs(3599));
    assert_eq!(f.call("GET", &projects, Some(&token)).await.status(), 200);
    assert_eq!(f.handle.stats().live_sessions, 1);
    f.clock.advance(Duration::from_secs(2));
    assert_eq!(
        xml_code(f.call("GET", &projects, Some(&token)).await).await,
        (401, "401000".to_owned())
    );
    let stats = f.handle.stats();
    assert_eq!((stats.live_sessions, stats.unauthenticated), (0, 1));
}

#[tokio::test]
async fn signout_ends_the_session() {
    let f = Fake::start().await;
    let token = f.token(json!(["tableau:content:read"])).await;
    let r = f.call("POST", "/auth/signout", Some(&token)).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        xml_code(f.call("GET", &sites_path("/projects"), Some(&token)).await).await,
        (401, "401000".to_owned())
    );
    assert_eq!(
        xml_code(f.call("POST", "/auth/signout", Some(&token)).await).await,
        (401, "401000".to_owned())
    );
    let stats = f.handle.stats();
    assert_eq!((stats.signouts, stats.live_sessions), (1, 0));
    assert_eq!(stats.requests.get("Sign Out"), Some(&2));
}

#[tokio::test]
async fn missing_or_unknown_tokens_get_401000() {
    let f = Fake::start().await;
    let path = sites_path("/projects");
    assert_eq!(
        xml_code(f.call("GET", &path, None).await).await,
        (401, "401000".to_owned())
    );
    let r = f
        .call("GET", &path, Some("0123456789abcdef0123456789abcdef"))
        .await;
    assert_eq!(xml_code(r).await, (401, "401000".to_owned()));
    // Ended by the admin endpoint (a Tableau restart).
    let token = f.token(json!(["tableau:content:read"])).await;
    let r = f
        .http
        .delete(f.url("/_fake/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        xml_code(f.call("GET", &path, Some(&token)).await).await,
        (401, "401000".to_owned())
    );
}

#[tokio::test]
async fn scopes_decide_each_rest_method() {
    let f = Fake::start().await;
    // (scopes, verb, path under the site, status)
    let cases: Vec<(Value, &str, &str, u16)> = vec![
        // Content read: GET of projects, workbooks, views, data sources; not users.
        (json!(["tableau:content:read"]), "GET", "/projects", 200),
        (json!(["tableau:content:read"]), "GET", "/workbooks", 200),
        (json!(["tableau:content:read"]), "GET", "/datasources", 200),
        (json!(["tableau:content:read"]), "GET", "/users", 401),
        (json!(["tableau:content:read"]), "POST", "/projects", 401),
        // Individual scopes.
        (json!(["tableau:users:read"]), "GET", "/users", 200),
        (json!(["tableau:users:read"]), "GET", "/projects", 401),
        (json!(["tableau:projects:create"]), "POST", "/projects", 201),
        (
            json!(["tableau:views:download"]),
            "GET",
            "/views/v1/pdf",
            200,
        ),
        // Wildcards cover exactly their documented methods.
        (json!(["tableau:groups:*"]), "GET", "/groups", 200),
        (json!(["tableau:groups:*"]), "DELETE", "/groups/g1", 204),
        (
            json!(["tableau:workbooks:*"]),
            "GET",
            "/workbooks/w1/content",
            200,
        ),
        (
            json!(["tableau:datasources:*"]),
            "GET",
            "/datasources/d1/content",
            401,
        ),
        (json!(["tableau:projects:*"]), "GET", "/projects", 401),
        // Cross-category: tasks:run refreshes workbooks and data sources.
        (
            json!(["tableau:tasks:run"]),
            "POST",
            "/workbooks/w1/refresh",
            202,
        ),
        (
            json!(["tableau:tasks:run"]),
            "POST",
            "/datasources/d1/refresh",
            202,
        ),
        (
            json!(["tableau:tasks:*"]),
            "POST",
            "/datasources/d1/refresh",
            202,
        ),
        // No usable scp: the session exists, every method is denied.
        (json!([]), "GET", "/projects", 401),
        (Value::Null, "GET", "/projects", 401),
        (json!("tableau:content:read"), "GET", "/projects", 401),
        (json!(["tableau:content:read", 7]), "GET", "/projects", 401),
        // Unknown scopes enable nothing but do not spoil the others.
        (
            json!(["tableau:pulse:read", "not a scope"]),
            "GET",
            "/projects",
            401,
        ),
        (
            json!(["tableau:pulse:read", "tableau:content:read"]),
            "GET",
            "/projects",
            200,
        ),
    ];
    let mut denied = 0;
    for (scp, verb, path, want) in &cases {
        let path = &sites_path(path);
        let token = if scp.is_null() {
            let mut c = f.claims(json!([]));
            c.as_object_mut().unwrap().remove("scp");
            let (status, body) = f.signin_json(&sign(&header(), &c, SECRET), SITE).await;
            assert_eq!(status, 200, "no scp still signs in");
            body["credentials"]["token"].as_str().unwrap().to_owned()
        } else {
            f.token(scp.clone()).await
        };
        let r = f.call(verb, path, Some(&token)).await;
        assert_eq!(r.status().as_u16(), *want, "{scp} {verb} {path}");
        if *want == 401 {
            denied += 1;
            assert_eq!(
                xml_error(&r.text().await.unwrap()).0,
                "401002",
                "{scp} {verb} {path}"
            );
        }
    }
    let stats = f.handle.stats();
    assert_eq!(stats.denied_by_scope, denied);
    assert_eq!(stats.requests.get("Query Projects"), Some(&9));
    assert_eq!(stats.requests.get("Update Workbook Now"), Some(&1));
}

#[tokio::test]
async fn fixtures_answer_in_xml_and_json() {
    let f = Fake::start().await;
    let token = f
        .token(json!(["tableau:content:read", "tableau:users:read"]))
        .await;
    let body = f
        .call("GET", &sites_path("/workbooks"), Some(&token))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("<pagination pageNumber=\"1\" pageSize=\"100\" totalAvailable=\"2\"/>"),
        "{body}"
    );
    assert!(
        body.contains("<workbook id=") && body.contains("<project id=") && body.contains("<tags>"),
        "{body}"
    );
    assert!(
        body.contains(&format!("<owner id=\"{USER_LUID}\"/>")),
        "{body}"
    );

    let r = f
        .get_json(&sites_path("/projects?pageSize=2&pageNumber=2"), &token)
        .await;
    assert_eq!(r.status(), 200);
    let json: Value = r.json().await.unwrap();
    assert_eq!(
        json["pagination"],
        json!({"pageNumber": "2", "pageSize": "2", "totalAvailable": "3"})
    );
    assert_eq!(json["projects"]["project"].as_array().unwrap().len(), 1);

    let r = f
        .get_json(
            &sites_path("/users?filter=name:eq:alice@example.com"),
            &token,
        )
        .await;
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["users"]["user"][0]["id"], USER_LUID);

    // A denied call answers in JSON too.
    let r = f.get_json(&sites_path("/groups"), &token).await;
    assert_eq!(r.status(), 401);
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "401002");

    // Unknown item: 404; another site's LUID in the URI: 403.
    let r = f
        .call("GET", &sites_path("/workbooks/nope"), Some(&token))
        .await;
    assert_eq!(xml_code(r).await, (404, "404000".to_owned()));
    let r = f
        .call("GET", "/sites/other-site/projects", Some(&token))
        .await;
    assert_eq!(xml_code(r).await, (403, "403000".to_owned()));
}

#[tokio::test]
async fn stats_are_the_same_in_process_and_over_http() {
    let f = Fake::start().await;
    let token = f.token(json!(["tableau:content:read"])).await;
    f.call("GET", &sites_path("/views"), Some(&token)).await;
    f.call("GET", "/sites/x/nothing/here", Some(&token)).await;
    let over_http: tableau_double::FakeStats = f
        .http
        .get(f.url("/_fake/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, f.handle.stats());
    assert_eq!(over_http.requests.get("Query Views for Site"), Some(&1));
    assert_eq!(over_http.requests.get("unrouted"), Some(&1));
    assert_eq!((over_http.signins_ok, over_http.live_sessions), (1, 1));
}

#[tokio::test]
async fn serves_https_with_a_self_signed_certificate() {
    let mut cfg = config();
    cfg.tls = Some(TlsConfig::self_signed());
    let handle = FakeTableau::start(cfg).await.unwrap();
    assert!(handle.base_url().starts_with("https://127.0.0.1:"));
    let pem = handle.certificate_pem().unwrap();
    let http = {
        install_provider();
        reqwest::Client::builder()
    }
    .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
    .build()
    .unwrap();
    let now = unix_secs(SystemTime::now());
    let claims = json!({"iss": CLIENT, "sub": USER, "aud": "tableau", "iat": now, "exp": now + 120,
        "jti": uuid::Uuid::new_v4().to_string(), "scp": ["tableau:content:read"]});
    let r = http
        .post(format!("{}/api/3.17/auth/signin", handle.base_url()))
        .header("accept", "application/json")
        .json(&json!({"credentials": {"jwt": sign(&header(), &claims, SECRET), "site": {"contentUrl": SITE}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    handle.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let f = Fake::start().await;
    let addr = f.handle.addr();
    f.handle.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn configuration_loads_and_is_checked() {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fake-tableau.toml");
    let cfg = FakeTableauConfig::from_file(&example).unwrap();
    assert_eq!(cfg.sites.len(), 2);
    assert_eq!(cfg.connected_apps[0].secrets.len(), 2);
    assert!(!cfg.connected_apps[1].enabled);
    assert_eq!(cfg.session_ttl, Duration::from_secs(240 * 60));

    let base = r#"
        [[sites]]
        name = "S"
        content_url = ""
        luid = "l"
        [[connected_apps]]
        client_id = "c"
        [[connected_apps.secrets]]
        secret_id = "k"
        value = "v"
    "#;
    let cfg = FakeTableauConfig::from_toml_str(base).unwrap();
    assert!(cfg.connected_apps[0].enabled);
    assert_eq!(cfg.clock_skew, Duration::from_secs(30));
    let bad = [
        (format!("{base}\nsesion_ttl = \"1h\""), "sesion_ttl"),
        (format!("session_ttl = \"soon\"\n{base}"), "not a duration"),
        (
            format!("{base}\n[faults.everywhere]\nerror_share = 0.5"),
            "everywhere",
        ),
        (
            format!("{base}\n[faults.rest]\nclose_share = 1.5"),
            "close_share",
        ),
        (format!("{base}\n[tls]\ncert = \"c.pem\""), "tls"),
        (
            format!(
                "{base}\n[[connected_apps.secrets]]\nsecret_id = \"k2\"\nvalue = \"v\"\n[[connected_apps.secrets]]\nsecret_id = \"k3\"\nvalue = \"v\""
            ),
            "one or two",
        ),
        ("sites = []".to_owned(), "no sites"),
    ];
    for (text, want) in bad {
        let err = FakeTableauConfig::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
    let err = FakeTableauConfig::from_file(std::path::Path::new("/no/such/file.toml")).unwrap_err();
    assert!(err.to_string().contains("/no/such/file.toml"));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let text = format!("{:?}", config());
    assert!(!text.contains(SECRET) && !text.contains(SECRET2), "{text}");
}

/// reqwest is built without a crypto provider of its own: the tests install aws-lc-rs, the
/// workspace's one stack, as the process default.
pub(crate) fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub(crate) fn http_client() -> reqwest::Client {
    install_provider();
    reqwest::Client::new()
}
