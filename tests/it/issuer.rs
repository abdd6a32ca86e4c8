//! The broker as an OAuth 2.0 issuer (issue 25): one broker with a direct, an EAS and a UAT site
//! against the double over HTTPS, the double verifying EAS and UAT JWTs through the broker's own
//! issuer listener (metadata, then JWKS); key rotation under a loop of sign-ins; the listener's
//! documents and bounds.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;
use tableau_double::{
    AppSecret, ConnectedApp, EasApp, FakeTableau, FakeTableauConfig, FakeTableauHandle, Site,
    SiteUser, TlsConfig, UatConfig,
};
use tableau_token_broker::config::Config;
use tableau_token_broker::devkit::certs::DevPki;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::grpc::pb::{GetCredentialsRequest, MintJwtRequest};
use tableau_token_broker::issuer::{KeyAlg, keys};
use tableau_token_broker::server::{self, RunningServer};
use tonic::transport::Channel;

const CLIENT_ID: &str = "8e1b7172-39c3-4a32-887e-fc2b4119f56d";
const SECRET: &str = "direct-trust-secret-0123456789abcdef";
const CLOUD_LUID: &str = "c0c0c0c0-0000-4000-8000-000000000001";
const TENANT: &str = "tenant-7f3e";
const USER: &str = "analyst@example.com";
const CALLER: &str = "spiffe://example.org/ns/reports/sa/renderer";

/// Writes a file readable by its owner only, as a mounted Secret is.
fn write_private(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A free loopback port: the issuer's URL names its port before the broker binds it.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a broker configuration is written from: the folder, the PKI, the double, the issuer URL.
pub(crate) struct Files {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pki: DevPki,
    pub(crate) double: FakeTableauHandle,
    pub(crate) config_path: PathBuf,
    pub(crate) issuer_url: String,
    /// Extra TOML appended to every configuration written (e.g. claim grants).
    extra: String,
    double_ca: PathBuf,
}

/// One double (HTTPS) and one broker with the three trust modes and the issuer listener on.
pub(crate) struct World {
    pub(crate) f: Files,
    pub(crate) server: RunningServer,
}

/// `[[issuer.keys]]` entries: (id, file, private).
type KeyList<'a> = &'a [(&'a str, &'a str, bool)];

impl World {
    /// Starts everything with ES256 key `k1` active (a PKCS#8 file in the folder).
    pub(crate) async fn start(extra: &str) -> World {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::in_memory().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, pki.ca_cert_pem()).unwrap();
        pki.server().write(dir.path(), "server").unwrap();
        pki.issue_server(&["localhost"])
            .unwrap()
            .write(dir.path(), "issuer-tls")
            .unwrap();
        for (name, alg) in [("k1", KeyAlg::Es256), ("k2", KeyAlg::Rs256)] {
            let pem = keys::generate_pem(alg).unwrap();
            let p = dir.path().join(format!("{name}.pem"));
            write_private(&p, pem.expose_secret());
            let k = keys::load_private_key(name, &p).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.pub.pem")),
                keys::public_pem(&k),
            )
            .unwrap();
        }
        let port = free_port();
        let issuer_url = format!("https://localhost:{port}");
        let users = || vec![SiteUser::new(USER, "u-1")];
        let mut double_config = FakeTableauConfig::new(
            vec![
                Site::new(
                    "Direct",
                    "direct",
                    "d0d0d0d0-0000-4000-8000-000000000001",
                    users(),
                ),
                Site::new("Cloud", "cloud", CLOUD_LUID, users()),
                Site::new(
                    "Uat",
                    "uat",
                    "e0e0e0e0-0000-4000-8000-000000000001",
                    users(),
                ),
            ],
            vec![ConnectedApp::new(
                CLIENT_ID,
                vec![AppSecret::new("s1", SECRET)],
            )],
        );
        double_config.tls = Some(TlsConfig::self_signed());
        double_config.eas_apps = vec![EasApp::new(&issuer_url)];
        double_config.uat_configs = vec![UatConfig::new(&issuer_url, TENANT)];
        double_config.issuer_ca_bundle = Some(ca);
        let double = FakeTableau::start(double_config).await.unwrap();
        let double_ca = dir.path().join("double-ca.crt");
        std::fs::write(&double_ca, double.certificate_pem().unwrap()).unwrap();
        let config_path = dir.path().join("broker.toml");
        let f = Files {
            dir,
            pki,
            double,
            config_path,
            issuer_url,
            extra: extra.to_owned(),
            double_ca,
        };
        f.write_config(&[("k1", "k1.pem", true)], "k1");
        let config = Config::load(&f.config_path).unwrap();
        let server = server::start(config, tableau_token_broker::clock::system())
            .await
            .unwrap();
        World { f, server }
    }

    /// Rewrites the configuration with these keys and reloads it.
    pub(crate) fn rotate(&self, keys: KeyList<'_>, active: &str) {
        self.f.write_config(keys, active);
        self.server.reload(&self.f.config_path).unwrap();
    }

    pub(crate) async fn client(&self) -> TokenBrokerClient<Channel> {
        let who = self
            .f
            .pki
            .issue_client(Some(CALLER), &[], "renderer")
            .unwrap();
        crate::support::client(&self.f.pki, self.server.local_addr(), &who).await
    }

    /// An HTTPS client trusting the development CA (the issuer listener) and the double.
    pub(crate) fn https(&self) -> reqwest::Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let cert = |pem: &str| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(cert(self.f.pki.ca_cert_pem()))
            .add_root_certificate(cert(self.f.double.certificate_pem().unwrap()))
            .build()
            .unwrap()
    }

    /// The claims the double keeps for the session of `token`.
    pub(crate) fn session_claims(&self, token: &str) -> serde_json::Value {
        self.f.double.session_claims(token).unwrap()
    }
}

impl Files {
    fn port(&self) -> u16 {
        self.issuer_url.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Writes the broker's configuration with these issuer keys.
    pub(crate) fn write_config(&self, keys: KeyList<'_>, active: &str) {
        let port = self.port();
        let d = self.dir.path();
        let p = |n: &str| format!("{:?}", d.join(n).display().to_string());
        let mut key_toml = String::new();
        for (id, file, private) in keys {
            let field = if *private {
                "private_key_file"
            } else {
                "public_key_file"
            };
            key_toml.push_str(&format!(
                "[[issuer.keys]]\nid = \"{id}\"\n{field} = {}\n",
                p(file)
            ));
        }
        let url = self.double.base_url();
        let text = format!(
            r#"version = 1
development = true

[server]
listen = "127.0.0.1:0"
cert = {cert}
key = {key}
client_ca = {ca}

[limits]
sign_ins_per_second = 100000
sign_in_burst = 100000

[audit]
path = {audit}

[issuer]
url = "{issuer}"
listen = "127.0.0.1:{port}"
cert = {icert}
key = {ikey}
active_key = "{active}"
{key_toml}
[sites.direct]
server_url = "{url}"
content_url = "direct"
ca_bundle = {dca}
[sites.direct.connected_app]
client_id = "{CLIENT_ID}"
secret_id = "s1"
secret = "{SECRET}"

[sites.cloud]
server_url = "{url}"
content_url = "cloud"
ca_bundle = {dca}
trust = "eas"
[sites.cloud.eas]
audience = "tableau:{CLOUD_LUID}"

[sites.uat]
server_url = "{url}"
content_url = "uat"
api_version = "3.27"
format = "json"
ca_bundle = {dca}
trust = "uat"
[sites.uat.uat]
tenant_id = "{TENANT}"

[[callers]]
identity = "{CALLER}"
[[callers.grants]]
sites = ["*"]
users = ["*"]
scopes = ["tableau:content:read", "tableau:views:embed", "tableau:tasks:*"]
{extra}
"#,
            cert = p("server.crt"),
            key = p("server.key"),
            ca = p("ca.crt"),
            audit = p("audit.jsonl"),
            issuer = self.issuer_url,
            icert = p("issuer-tls.crt"),
            ikey = p("issuer-tls.key"),
            dca = format!("{:?}", self.double_ca.display().to_string()),
            extra = self.extra,
        );
        std::fs::write(&self.config_path, text).unwrap();
    }
}

pub(crate) fn request(site: &str) -> GetCredentialsRequest {
    GetCredentialsRequest {
        site: site.to_owned(),
        user: USER.to_owned(),
        scopes: vec!["tableau:content:read".to_owned()],
        ..Default::default()
    }
}

pub(crate) fn b64_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn one_broker_serves_direct_eas_and_uat_sites_verified_through_its_own_issuer_listener() {
    let w = World::start("").await;
    let mut c = w.client().await;

    // The listener: both well-known paths, identical, cached; the JWKS they point at.
    let addr = w.server.issuer_addr().unwrap();
    let http = w.https();
    let base = format!("https://localhost:{}", addr.port());
    let mut docs = Vec::new();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(cc.contains("max-age="), "{cc}");
        docs.push(r.text().await.unwrap());
    }
    assert_eq!(docs[0], docs[1]);
    let meta: serde_json::Value = serde_json::from_str(&docs[0]).unwrap();
    assert_eq!(meta["issuer"], w.f.issuer_url);
    let jwks_uri = meta["jwks_uri"].as_str().unwrap();
    let r = http.get(jwks_uri).send().await.unwrap();
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let jwks: serde_json::Value = r.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kid"], &key["kty"], &key["alg"], &key["use"]),
        (&"k1".into(), &"EC".into(), &"ES256".into(), &"sig".into())
    );
    assert!(key.get("d").is_none(), "never the private half");
    let post = http.post(jwks_uri).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert!(post.headers().contains_key("cache-control"));
    let other = http.get(format!("{base}/secrets")).send().await.unwrap();
    assert_eq!(other.status(), 404);

    // Each trust mode signs in; the double kept what each JWT said.
    let direct = c
        .get_credentials(request("direct"))
        .await
        .unwrap()
        .into_inner();
    let eas = c
        .get_credentials(request("cloud"))
        .await
        .unwrap()
        .into_inner();
    let uat = c
        .get_credentials(request("uat"))
        .await
        .unwrap()
        .into_inner();
    let dc = w.session_claims(&direct.token);
    assert_eq!(dc["iss"], CLIENT_ID);
    let ec = w.session_claims(&eas.token);
    assert_eq!(ec["iss"], w.f.issuer_url);
    assert_eq!(ec["aud"], format!("tableau:{CLOUD_LUID}"));
    assert_eq!(ec["sub"], USER);
    assert_eq!(ec["scp"], serde_json::json!(["tableau:content:read"]));
    let (iat, nbf, exp) = (
        ec["iat"].as_u64().unwrap(),
        ec["nbf"].as_u64().unwrap(),
        ec["exp"].as_u64().unwrap(),
    );
    assert_eq!(iat, nbf);
    assert!(
        exp - iat <= 600,
        "within Tableau's 10 minutes, backdating included"
    );
    let uc = w.session_claims(&uat.token);
    assert_eq!(uc["https://tableau.com/tenantId"], TENANT);
    assert_eq!(uc["email"], USER);
    assert!(uc.get("aud").is_none() && uc.get("sub").is_none(), "{uc}");

    // MintJwt for the EAS site: header alg + kid, a fresh jti every time.
    let mint = |site: &str| MintJwtRequest {
        site: site.to_owned(),
        user: USER.to_owned(),
        scopes: vec!["tableau:views:embed".to_owned()],
        ..Default::default()
    };
    let a = c.mint_jwt(mint("cloud")).await.unwrap().into_inner();
    let b = c.mint_jwt(mint("cloud")).await.unwrap().into_inner();
    let h = jsonwebtoken::decode_header(&a.jwt).unwrap();
    assert_eq!(
        (h.alg, h.kid.as_deref()),
        (jsonwebtoken::Algorithm::ES256, Some("k1"))
    );
    assert_ne!(b64_claims(&a.jwt)["jti"], b64_claims(&b.jwt)["jti"]);
    // A UAT with a wildcard scope is refused before anything is sent.
    let mut wild = request("uat");
    wild.scopes = vec!["tableau:tasks:*".to_owned()];
    let e = c.get_credentials(wild).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("wildcard"), "{}", e.message());

    let stats = w.f.double.stats();
    assert_eq!(stats.signins_failed, Default::default(), "{stats:?}");
    assert!(stats.issuer_fetches.contains_key("jwks"), "{stats:?}");
    w.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_rotation_under_a_loop_of_sign_ins_fails_no_call() {
    let w = World::start("").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = w.client().await;
    let looping = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for site in ["cloud", "uat"] {
                    let mut r = request(site);
                    r.force_refresh = true;
                    let out = c.get_credentials(r).await.map(|_| ());
                    if tx.send(out.map_err(|e| e.message().to_owned())).is_err() {
                        return;
                    }
                }
            }
        })
    };
    let mut calls = 0;
    // Waits for `n` more sign-ins, every one of which must succeed.
    let mut settle = async |n: usize| {
        for _ in 0..n {
            let r = rx.recv().await.unwrap();
            calls += 1;
            assert_eq!(r, Ok(()), "call {calls} failed");
        }
    };
    settle(6).await;
    // 1. Publish k2 (public half only): it is in the JWKS, k1 still signs.
    w.rotate(&[("k1", "k1.pem", true), ("k2", "k2.pub.pem", false)], "k1");
    settle(6).await;
    // 2. Tableau's cache: the double refetches when it meets the unknown kid. 3. Activate k2.
    w.rotate(&[("k1", "k1.pub.pem", false), ("k2", "k2.pem", true)], "k2");
    settle(6).await;
    // 4. Retire k1 once no JWT it signed can still be in flight.
    w.rotate(&[("k2", "k2.pem", true)], "k2");
    settle(6).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(r) = rx.recv().await {
        assert_eq!(r, Ok(()));
    }
    looping.await.unwrap();
    let stats = w.f.double.stats();
    assert_eq!(stats.signins_failed, Default::default(), "{stats:?}");
    assert!(
        stats.issuer_fetches["jwks"] >= 2,
        "refetched on the new kid: {stats:?}"
    );
    let jwks: serde_json::Value = w
        .https()
        .get(format!("{}/.well-known/jwks.json", w.f.issuer_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], "k2");
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    w.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn check_config_shows_each_sites_trust_and_the_issuer_keys_never_key_material() {
    let w = World::start("attributes = { region = [\"us\"] }\n").await;
    w.f.write_config(&[("k1", "k1.pem", true), ("k2", "k2.pub.pem", false)], "k1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"))
        .arg("check-config")
        .arg(&w.f.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "site direct: trust direct",
        "site cloud: trust eas",
        "site uat: trust uat",
        "key k1 ES256 256 bits (active: signs)",
        "key k2 RS256 2048 bits (published only)",
        "attributes={\"region\": [\"us\"]}",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("BEGIN"),
        "{text}"
    );
}
