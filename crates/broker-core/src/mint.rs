//! Connected-app JWT minting (direct trust): HS256 signed with the connected app's secret, header
//! `kid` = secret ID and `iss` = client ID, claims `iss`, `sub`, `aud`, `iat`, `exp`, `jti`, `scp`.

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::{SharedClock, unix_secs};
use crate::config::{ConnectedApp, MAX_JWT_TTL};
use crate::scope::Scope;

/// The audience Tableau requires, case-sensitive.
pub const AUDIENCE: &str = "tableau";

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The lifetime asked for is zero.
    #[error("JWT lifetime must be more than zero")]
    ZeroTtl,
    /// Tableau needs at least one scope; without one every REST method is denied.
    #[error(
        "a JWT needs at least one scope: Tableau denies every REST method to a token without scopes"
    )]
    NoScopes,
    /// The user name is empty.
    #[error("the JWT subject (Tableau username) is empty")]
    NoSubject,
    /// The signing library failed (never includes the key).
    #[error("signing the JWT failed: {0}")]
    Sign(String),
}

/// A signed JWT. The token is a bearer credential until it expires, so it is a secret.
pub struct MintedJwt {
    /// The compact JWT.
    pub jwt: SecretString,
    /// The `jti` claim (a random UUID), safe to log.
    pub jti: uuid::Uuid,
    /// The `iat` claim.
    pub issued_at: SystemTime,
    /// The `exp` claim.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedJwt")
            .field("jwt", &"[REDACTED]")
            .field("jti", &self.jti)
            .field("expires_at", &unix_secs(self.expires_at))
            .finish()
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    scp: &'a [Scope],
}

/// Mints JWTs with an injected clock, so tests decide `iat` and `exp`.
#[derive(Debug, Clone)]
pub struct Minter {
    clock: SharedClock,
}

impl Minter {
    /// A minter on this clock.
    pub fn new(clock: SharedClock) -> Minter {
        Minter { clock }
    }

    /// Mints a JWT for `user` with `scopes`, living `ttl` (capped at Tableau's 10 minutes).
    #[tracing::instrument(skip_all, fields(client_id = %app.client_id, user = %user, ttl_s = ttl.as_secs()))]
    pub fn mint(
        &self,
        app: &ConnectedApp,
        user: &str,
        scopes: &[Scope],
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        if ttl.is_zero() {
            return Err(MintError::ZeroTtl);
        }
        if scopes.is_empty() {
            return Err(MintError::NoScopes);
        }
        if user.is_empty() {
            return Err(MintError::NoSubject);
        }
        let ttl = ttl.min(MAX_JWT_TTL);
        let now = self.clock.now();
        let iat = unix_secs(now);
        let exp = iat + ttl.as_secs();
        let jti = uuid::Uuid::new_v4();
        let mut jti_buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(app.secret_id.clone());
        header.extras.insert("iss", app.client_id.as_str());
        let claims = Claims {
            iss: &app.client_id,
            sub: user,
            aud: AUDIENCE,
            iat,
            exp,
            jti: jti.hyphenated().encode_lower(&mut jti_buf),
            scp: scopes,
        };
        let key = EncodingKey::from_secret(app.secret.expose_secret().as_bytes());
        let jwt = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| MintError::Sign(e.to_string()))?;
        Ok(MintedJwt {
            jwt: SecretString::from(jwt),
            jti,
            issued_at: SystemTime::UNIX_EPOCH + Duration::from_secs(iat),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    fn app() -> ConnectedApp {
        ConnectedApp {
            client_id: "8e1b7172-39c3-4a32-887e-fc2b4119f56d".into(),
            secret_id: "b0115bf9-3a4b-4c91-b009-cf0c170b1a56".into(),
            secret: SecretString::from("s3cr3t-value".to_owned()),
            secret_source: "test".into(),
        }
    }

    #[test]
    fn header_and_claims_are_what_tableau_wants() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let m = Minter::new(ManualClock::new(t0));
        let scopes = vec![
            "tableau:content:read".parse().unwrap(),
            "tableau:views:download".parse().unwrap(),
        ];
        let out = m
            .mint(
                &app(),
                "rmohan@tableau.com",
                &scopes,
                Duration::from_secs(3600),
            )
            .unwrap();
        let jwt = out.jwt.expose_secret();
        let h = decode_header(jwt).unwrap();
        assert_eq!(h.alg, Algorithm::HS256);
        assert_eq!(
            h.kid.as_deref(),
            Some("b0115bf9-3a4b-4c91-b009-cf0c170b1a56")
        );
        assert_eq!(h.typ.as_deref(), Some("JWT"));
        assert_eq!(
            h.extras.get::<String>("iss").unwrap().as_deref(),
            Some("8e1b7172-39c3-4a32-887e-fc2b4119f56d")
        );
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["tableau"]);
        v.validate_exp = false;
        let c = decode::<serde_json::Value>(jwt, &DecodingKey::from_secret(b"s3cr3t-value"), &v)
            .unwrap()
            .claims;
        assert_eq!(c["sub"], "rmohan@tableau.com");
        assert_eq!(c["aud"], "tableau");
        assert_eq!(c["iat"], 1_700_000_000u64);
        assert_eq!(c["exp"], 1_700_000_600u64, "capped at 10 minutes");
        assert_eq!(
            c["scp"],
            serde_json::json!(["tableau:content:read", "tableau:views:download"])
        );
        assert_eq!(c["jti"], out.jti.to_string());
        assert_eq!(out.jti.get_version_num(), 4);
        assert!(!format!("{out:?}").contains(jwt));
    }

    #[test]
    fn refuses_empty_inputs() {
        let m = Minter::new(crate::clock::system());
        let s = vec!["tableau:content:read".parse().unwrap()];
        assert!(matches!(
            m.mint(&app(), "u", &[], Duration::from_secs(60)),
            Err(MintError::NoScopes)
        ));
        assert!(matches!(
            m.mint(&app(), "", &s, Duration::from_secs(60)),
            Err(MintError::NoSubject)
        ));
        assert!(matches!(
            m.mint(&app(), "u", &s, Duration::ZERO),
            Err(MintError::ZeroTtl)
        ));
    }
}
