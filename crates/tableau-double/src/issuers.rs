//! EAS and UAT sign-in: JWTs signed by an external issuer, verified with the keys Tableau finds
//! through the issuer's metadata (`shared/reference/tableau.md`, section 6).
//!
//! Like Tableau Cloud's nodes, the double fetches the metadata from either well-known path (it
//! alternates, falling back to the other), then the JWKS at `jwks_uri`, over HTTPS with the CA
//! bundle of its configuration. It caches each issuer's JWKS and fetches again when a JWT names a
//! `kid` it does not hold (a key published after the last fetch).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use super::FakeTableauError;
use super::config::{EasApp, Site, UatConfig};
use super::jwt::{Accepted, MAX_LIFETIME_SECS, SubCode, b64_json, non_empty_str, number, scopes};
use tableau_common::clock::unix_secs;

/// The two metadata paths Tableau Cloud's nodes fetch.
const METADATA_PATHS: [&str; 2] = [
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
];
/// Longest wait for an issuer document.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest RSA key Tableau accepts.
const MIN_RSA_BITS: usize = 2048;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Issuers' JWKS, fetched through their metadata and cached.
#[derive(Debug)]
pub(crate) struct KeyCache {
    http: reqwest::Client,
    sets: Mutex<HashMap<String, Arc<JwkSet>>>,
    turn: AtomicUsize,
    fetches: Mutex<BTreeMap<String, u64>>,
}

impl KeyCache {
    /// A cache whose HTTPS fetches trust the certificates in `ca_bundle` (PEM).
    pub(crate) fn new(ca_bundle: Option<&Path>) -> Result<KeyCache, FakeTableauError> {
        let tls_err = |reason: String| FakeTableauError::Tls { reason };
        let mut roots = rustls::RootCertStore::empty();
        if let Some(p) = ca_bundle {
            let certs = CertificateDer::pem_file_iter(p)
                .map_err(|e| tls_err(format!("issuer CA bundle {}: {e}", p.display())))?;
            for c in certs {
                let c = c.map_err(|e| tls_err(format!("issuer CA bundle {}: {e}", p.display())))?;
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("issuer CA bundle {}: {e}", p.display())))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| tls_err(format!("issuer HTTP client: {e}")))?;
        Ok(KeyCache {
            http,
            sets: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            fetches: Mutex::new(BTreeMap::new()),
        })
    }

    /// Documents fetched so far, by path (`jwks` for the JWKS).
    pub(crate) fn fetch_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.fetches).clone()
    }

    fn counted(&self, what: &str) {
        *lock(&self.fetches).entry(what.to_owned()).or_default() += 1;
    }

    async fn get_json(&self, url: &str) -> Option<Value> {
        let resp = self.http.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// Fetches the metadata (one well-known path, the other if it fails), checks its `issuer`,
    /// then the JWKS at its `jwks_uri`.
    async fn fetch(&self, issuer: &str) -> Result<JwkSet, SubCode> {
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % 2;
        let base = issuer.trim_end_matches('/');
        let mut metadata = None;
        for i in [first, 1 - first] {
            let path = METADATA_PATHS[i];
            if let Some(m) = self.get_json(&format!("{base}{path}")).await {
                self.counted(path);
                metadata = Some(m);
                break;
            }
        }
        let m = metadata.ok_or(SubCode::MetadataUnreachable)?;
        if m.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(SubCode::MetadataUnreachable);
        }
        let uri = m
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or(SubCode::MetadataUnreachable)?;
        let set = self.get_json(uri).await.ok_or(SubCode::NoKeys)?;
        self.counted("jwks");
        serde_json::from_value(set).map_err(|_| SubCode::NoKeys)
    }

    /// The key `kid` of `issuer`: from the cache, else from a fresh fetch.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Jwk, SubCode> {
        let cached = lock(&self.sets).get(issuer).cloned();
        if let Some(k) = cached.as_ref().and_then(|s| s.find(kid)) {
            return Ok(k.clone());
        }
        let set = Arc::new(self.fetch(issuer).await?);
        lock(&self.sets).insert(issuer.to_owned(), Arc::clone(&set));
        set.find(kid).cloned().ok_or(SubCode::BadJwtHeader)
    }
}

/// Where an issued JWT's trust comes from.
enum Trusted<'a> {
    Eas,
    Uat(&'a UatConfig),
}

/// Checks an EAS JWT (`uat` false) or a unified access token (`uat` true) for a sign-in to `site`.
/// `seen_jti` answers whether an `(issuer, jti)` is still remembered.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn check(
    jwt: &str,
    uat: bool,
    site: &Site,
    eas_apps: &[EasApp],
    uat_configs: &[UatConfig],
    keys: &KeyCache,
    now: SystemTime,
    skew: Duration,
    seen_jti: impl Fn(&str, &str) -> bool,
) -> Result<Accepted, SubCode> {
    let mut parts = jwt.trim().split('.');
    let (Some(h64), Some(p64), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SubCode::ParseError);
    };
    let header = b64_json(h64).ok_or(SubCode::ParseError)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some(a) if a.eq_ignore_ascii_case("none") => return Err(SubCode::BlockedAlgorithm),
        _ => return Err(SubCode::ParseError),
    };
    let kid = non_empty_str(&header, "kid").ok_or(SubCode::BadJwtHeader)?;
    // Read before the signature is checked only to know whose keys to fetch.
    let claims = b64_json(p64).ok_or(SubCode::ParseError)?;
    let iss = non_empty_str(&claims, "iss").ok_or(SubCode::ParseError)?;
    let trusted = if uat {
        Trusted::Uat(
            uat_configs
                .iter()
                .find(|c| c.issuer == iss)
                .ok_or(SubCode::NoKeys)?,
        )
    } else {
        eas_apps
            .iter()
            .find(|a| a.issuer == iss)
            .ok_or(SubCode::NoKeys)?;
        Trusted::Eas
    };
    let jwk = keys.key(iss, kid).await?;
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let n = URL_SAFE_NO_PAD
            .decode(rsa.n.as_bytes())
            .map_err(|_| SubCode::ParseError)?;
        let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
        if n.len() * 8 < MIN_RSA_BITS {
            return Err(SubCode::RsaTooShort);
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| SubCode::ParseError)?;
    let message = format!("{h64}.{p64}");
    if !jsonwebtoken::crypto::verify(sig, message.as_bytes(), &key, alg).unwrap_or(false) {
        return Err(SubCode::ParseError);
    }

    let username = match &trusted {
        Trusted::Eas => {
            let aud_ok = |a: &Value| {
                a.as_str()
                    .is_some_and(|a| a == "tableau" || a == format!("tableau:{}", site.luid))
            };
            let aud = claims.get("aud").ok_or(SubCode::ParseError)?;
            let ok = match aud {
                Value::Array(list) => list.iter().any(aud_ok),
                one => aud_ok(one),
            };
            if !ok {
                return Err(SubCode::ParseError);
            }
            non_empty_str(&claims, "sub").ok_or(SubCode::ParseError)?
        }
        Trusted::Uat(c) => {
            if non_empty_str(&claims, "https://tableau.com/tenantId") != Some(c.tenant_id.as_str())
            {
                return Err(SubCode::ParseError);
            }
            non_empty_str(&claims, &c.username_claim).ok_or(SubCode::LoginFailed)?
        }
    };
    let now_s = i64::try_from(unix_secs(now)).unwrap_or(i64::MAX);
    let skew_s = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    let exp = number(&claims, "exp").ok_or(SubCode::LoginFailed)?;
    if now_s >= exp.saturating_add(skew_s) {
        return Err(SubCode::LoginFailed);
    }
    if exp
        > now_s
            .saturating_add(MAX_LIFETIME_SECS)
            .saturating_add(skew_s)
    {
        return Err(SubCode::ExpTooFar);
    }
    if number(&claims, "iat").is_some_and(|t| t > now_s.saturating_add(skew_s))
        || number(&claims, "nbf").is_some_and(|t| t > now_s.saturating_add(skew_s))
    {
        return Err(SubCode::LoginFailed);
    }
    if !matches!(claims.get("scp"), Some(Value::Array(_))) {
        return Err(SubCode::MissingScope);
    }
    let granted = scopes(&claims);
    if let Trusted::Uat(c) = &trusted
        && !c.scopes.is_empty()
        && granted.iter().any(|s| s.is_wildcard())
    {
        return Err(SubCode::ParseError);
    }
    let jti = non_empty_str(&claims, "jti").ok_or(SubCode::ParseError)?;
    let user = site
        .users
        .iter()
        .find(|u| u.name == username)
        .ok_or(SubCode::LoginFailed)?;
    if seen_jti(iss, jti) {
        return Err(SubCode::ReusedJti);
    }
    let remember = u64::try_from(exp.saturating_add(skew_s)).unwrap_or(0);
    Ok(Accepted {
        client_id: iss.to_owned(),
        user_luid: user.luid.clone(),
        scopes: granted,
        jti: jti.to_owned(),
        jti_until: SystemTime::UNIX_EPOCH + Duration::from_secs(remember),
        claims: claims.clone(),
    })
}
