//! The broker as an OAuth 2.0 issuer, for Tableau's connected apps with OAuth 2.0 trust (EAS) and
//! for unified access tokens (UAT): no shared secret exists, the broker signs with a private key
//! and Tableau verifies with the public keys the broker publishes (a JWKS found through the
//! issuer's metadata).
//!
//! This module holds the validated `[issuer]` ([`Issuer`]): its keys ([`keys`]), the documents the
//! issuer listener serves ([`Issuer::jwks`], [`Issuer::metadata`]), and JWS signing with the
//! active key ([`Issuer::sign`]). Which claims go in a JWT is [`crate::mint`]'s business.

pub mod keys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

use keys::PublicParts;
pub use keys::{IssuerKey, KeyAlg, KeyError, MIN_RSA_BITS};

/// Where the JWKS is served, under the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The OpenID Connect discovery path; Tableau Cloud's nodes fetch this one or the next.
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
/// The OAuth 2.0 authorization server metadata path (RFC 8414); same content as the above.
pub const OAUTH_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Default backdating of `iat` and `nbf`: Tableau documents no clock skew, and a JWT whose `iat`
/// is a second ahead of Tableau's clock is refused (tableau-mcp backdates by 5 s too).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Longest `clock_skew` accepted: more would make a JWT's life look longer than 10 minutes.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long clients may cache the metadata and the JWKS (`Cache-Control: max-age`): short enough
/// that a newly published key is seen within minutes during a rotation.
pub const DOCUMENT_MAX_AGE: Duration = Duration::from_secs(300);

/// The issuer listener's own HTTPS certificate and key (omitted when an Ingress terminates TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// The validated `[issuer]`: the `iss` URL, the keys, which one signs, and where the metadata
/// and JWKS are served.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuer {
    /// The `iss` claim, exactly as registered in Tableau (https, no trailing slash).
    pub url: String,
    /// Where the issuer listener serves the metadata and the JWKS; `None`: not served here.
    pub listen: Option<SocketAddr>,
    /// HTTPS on the issuer listener; `None`: plain HTTP behind a TLS-terminating Ingress.
    pub tls: Option<IssuerTls>,
    /// How far `iat` and `nbf` are backdated.
    pub clock_skew: Duration,
    /// Every key, published in the JWKS in this order.
    pub keys: Vec<IssuerKey>,
    /// Index in `keys` of the key that signs (always one with a private key).
    active: usize,
}

/// A JWT signed by the issuer. The JWT is a bearer credential until it expires: a secret.
pub struct SignedJwt {
    /// The compact JWS.
    pub jwt: SecretString,
    /// The `kid` that signed it.
    pub kid: String,
    /// The algorithm.
    pub alg: KeyAlg,
}

impl std::fmt::Debug for SignedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedJwt")
            .field("jwt", &"[REDACTED]")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

/// Why the issuer could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The claims did not serialize (a bug).
    #[error("serializing the JWT failed: {0}")]
    Serialize(String),
    /// The crypto library refused (never includes key material).
    #[error("{0}")]
    Crypto(String),
}

impl Issuer {
    /// An issuer whose `active_key` names one of `keys` that has a private key; `None` otherwise
    /// (the configuration builder says why, with the place in the file).
    pub fn new(
        url: String,
        listen: Option<SocketAddr>,
        tls: Option<IssuerTls>,
        clock_skew: Duration,
        keys: Vec<IssuerKey>,
        active_key: &str,
    ) -> Option<Issuer> {
        let active = keys
            .iter()
            .position(|k| k.id == active_key && k.can_sign())?;
        Some(Issuer {
            url,
            listen,
            tls,
            clock_skew,
            keys,
            active,
        })
    }

    /// The key that signs.
    pub fn active(&self) -> &IssuerKey {
        &self.keys[self.active]
    }

    /// The JWKS URL the metadata points at.
    pub fn jwks_uri(&self) -> String {
        format!("{}{JWKS_PATH}", self.url.trim_end_matches('/'))
    }

    /// The issuer metadata, served identically on both well-known paths: `issuer` and `jwks_uri`
    /// are what Tableau reads; the rest says what the keys are for.
    pub fn metadata(&self) -> Value {
        let mut algs: Vec<&str> = self.keys.iter().map(|k| k.alg.as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        json!({
            "issuer": self.url,
            "jwks_uri": self.jwks_uri(),
            "id_token_signing_alg_values_supported": algs,
        })
    }

    /// The JWKS: every key (active, standby and retiring), each with `kid`, `kty`, `alg` and
    /// `use: "sig"`, and `n`/`e` (RSA) or `crv`/`x`/`y` (P-256). Public halves only.
    pub fn jwks(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| match &k.public {
                PublicParts::Rsa { n, e } => json!({
                    "kid": k.id, "kty": "RSA", "alg": k.alg.as_str(), "use": "sig",
                    "n": b64(n), "e": b64(e),
                }),
                PublicParts::Ec { x, y } => json!({
                    "kid": k.id, "kty": "EC", "alg": k.alg.as_str(), "use": "sig",
                    "crv": "P-256", "x": b64(x), "y": b64(y),
                }),
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` with the active key; the header carries `alg`, `kid` and `typ`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<SignedJwt, SignError> {
        let key = self.active();
        let signer = key
            .signer
            .as_ref()
            .ok_or_else(|| SignError::Crypto("the active key has no private half".into()))?;
        let header = json!({ "alg": key.alg.as_str(), "kid": key.id, "typ": "JWT" });
        let h = serde_json::to_vec(&header).map_err(|e| SignError::Serialize(e.to_string()))?;
        let c = serde_json::to_vec(claims).map_err(|e| SignError::Serialize(e.to_string()))?;
        let mut jwt = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h),
            URL_SAFE_NO_PAD.encode(c)
        );
        let sig = signer.sign(jwt.as_bytes()).map_err(SignError::Crypto)?;
        jwt.push('.');
        jwt.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(SignedJwt {
            jwt: SecretString::from(jwt),
            kid: key.id.clone(),
            alg: key.alg,
        })
    }

    /// Every file the issuer reads: key files and the listener's certificate and key, so the
    /// running broker watches them and reloads when one changes.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.keys.iter().map(|k| k.file.clone()).collect();
        if let Some(t) = &self.tls {
            out.extend([t.cert.clone(), t.key.clone()]);
        }
        out
    }

    /// The `check-config` lines: URL, listener, and each key's kid, algorithm and size (never key
    /// material).
    pub fn summary(&self) -> String {
        let mut out = format!(
            "issuer: {} (jwks_uri {}, clock_skew {}){}\n",
            self.url,
            self.jwks_uri(),
            humantime::format_duration(self.clock_skew),
            match (&self.listen, &self.tls) {
                (Some(l), Some(_)) => format!("; serves metadata and JWKS on https://{l}"),
                (Some(l), None) => format!("; serves metadata and JWKS on http://{l}"),
                (None, _) => "; not served by the broker (publish `issuer jwks` yourself)".into(),
            }
        );
        for (i, k) in self.keys.iter().enumerate() {
            out.push_str(&format!(
                "  key {} {} {} bits ({}) from {}\n",
                k.id,
                k.alg,
                k.bits,
                if i == self.active {
                    "active: signs"
                } else if k.can_sign() {
                    "standby: published, private key present"
                } else {
                    "published only"
                },
                k.file.display()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn issuer(dir: &std::path::Path) -> Issuer {
        let mut ks = Vec::new();
        for (id, alg) in [("ec", KeyAlg::Es256), ("rsa", KeyAlg::Rs256)] {
            let p = dir.join(format!("{id}.pem"));
            std::fs::write(&p, keys::generate_pem(alg).unwrap().expose_secret()).unwrap();
            ks.push(keys::load_private_key(id, &p).unwrap());
        }
        Issuer::new(
            "https://issuer.example.com".into(),
            None,
            None,
            DEFAULT_CLOCK_SKEW,
            ks,
            "rsa",
        )
        .unwrap()
    }

    #[test]
    fn jwks_and_metadata_carry_what_tableau_reads() {
        let dir = tempfile::tempdir().unwrap();
        let i = issuer(dir.path());
        let m = i.metadata();
        assert_eq!(m["issuer"], "https://issuer.example.com");
        assert_eq!(
            m["jwks_uri"],
            "https://issuer.example.com/.well-known/jwks.json"
        );
        let j = i.jwks();
        let ks = j["keys"].as_array().unwrap();
        assert_eq!(ks[0]["kty"], "EC");
        assert_eq!(ks[0]["crv"], "P-256");
        assert_eq!(ks[0]["use"], "sig");
        assert_eq!(ks[1]["kty"], "RSA");
        assert_eq!(ks[1]["alg"], "RS256");
        assert_eq!(ks[1]["e"], "AQAB");
        assert!(!j.to_string().contains("\"d\""));
    }

    #[test]
    fn signatures_verify_with_the_published_keys() {
        let dir = tempfile::tempdir().unwrap();
        for active in ["ec", "rsa"] {
            let mut i = issuer(dir.path());
            i.active = i.keys.iter().position(|k| k.id == active).unwrap();
            let mut c = Map::new();
            c.insert("sub".into(), json!("u"));
            let s = i.sign(&c).unwrap();
            let jwt = s.jwt.expose_secret();
            let h = jsonwebtoken::decode_header(jwt).unwrap();
            assert_eq!(h.kid.as_deref(), Some(active));
            let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(i.jwks()).unwrap();
            let jwk = jwks.find(active).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
            let mut v = jsonwebtoken::Validation::new(h.alg);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            let got = jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap();
            assert_eq!(got.claims["sub"], "u");
        }
    }
}
