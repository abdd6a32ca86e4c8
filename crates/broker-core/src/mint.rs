//! JWT minting for the three ways Tableau trusts the broker:
//!
//! - direct trust: HS256 signed with the connected app's secret, header `kid` = secret ID and
//!   `iss` = client ID, claims `iss`, `sub`, `aud`, `iat`, `exp`, `jti`, `scp`;
//! - EAS (OAuth 2.0 trust): signed with the issuer's active key (header `alg`, `kid`), claims
//!   `iss` (issuer URL), `sub`, `aud` (the site's audience), `iat`/`nbf` backdated by the clock
//!   skew, `exp`, `jti`, `scp`;
//! - UAT: signed with the issuer's key, claims `iss`, `https://tableau.com/tenantId`, the
//!   username claim, `scp` (explicit scopes only), `iat`/`nbf`, `exp`, `jti`; no `aud`, no `sub`.
//!
//! Every JWT gets a fresh random `jti` (Tableau refuses a reused one), carries the caller's
//! allowed claims ([`ClaimSet`]) and is refused when larger than [`MAX_JWT_BYTES`].

use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};

use crate::claims::ClaimSet;
use crate::clock::{SharedClock, unix_secs};
use crate::config::{ConnectedApp, EasTrust, MAX_JWT_TTL, SiteConfig, Trust, UatTrust};
use crate::scope::Scope;

/// Largest JWT sent to Tableau: Tableau refuses JWTs over about 8 KB (101002), so a bigger one is
/// refused here, with the reason, before anything is sent.
pub const MAX_JWT_BYTES: usize = 8 * 1024;
/// The UAT claim that names the Tableau Cloud tenant.
pub const TENANT_CLAIM: &str = "https://tableau.com/tenantId";

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
    /// The JWT is larger than Tableau accepts.
    #[error(
        "the JWT would be {bytes} bytes, over Tableau's {MAX_JWT_BYTES}-byte limit: ask for fewer scopes, attributes or groups"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A wildcard scope for a UAT site: Tableau refuses wildcards when the UAT configuration
    /// lists explicit scopes.
    #[error(
        "{scope} is a wildcard; unified access tokens take explicit scopes only: ask for the scopes it covers"
    )]
    WildcardScope {
        /// The scope.
        scope: String,
    },
    /// A direct-trust site without a connected app (a configuration bug).
    #[error("the site has no connected app to sign with")]
    NoApp,
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
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

fn check(user: &str, scopes: &[Scope], ttl: Duration) -> Result<(), MintError> {
    if ttl.is_zero() {
        return Err(MintError::ZeroTtl);
    }
    if scopes.is_empty() {
        return Err(MintError::NoScopes);
    }
    if user.is_empty() {
        return Err(MintError::NoSubject);
    }
    Ok(())
}

/// The answer for a signed `jwt` with `jti`, issued at `iat` and expiring at `exp` (Unix
/// seconds); refused when the JWT is larger than [`MAX_JWT_BYTES`].
fn minted(jwt: String, jti: uuid::Uuid, iat: u64, exp: u64) -> Result<MintedJwt, MintError> {
    let bytes = jwt.len();
    let jwt = SecretString::from(jwt);
    if bytes > MAX_JWT_BYTES {
        return Err(MintError::TooLarge { bytes });
    }
    Ok(MintedJwt {
        jwt,
        jti,
        issued_at: SystemTime::UNIX_EPOCH + Duration::from_secs(iat),
        expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(exp),
    })
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

    /// Mints a direct-trust JWT for `user` with `scopes`, living `ttl` (capped at Tableau's 10
    /// minutes).
    pub fn mint(
        &self,
        app: &ConnectedApp,
        user: &str,
        scopes: &[Scope],
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        self.mint_direct(app, user, scopes, &ClaimSet::default(), ttl)
    }

    /// Mints the JWT a site's trust mode needs: direct trust with `app` (the site's own connected
    /// app unless a standby secret is being tried), EAS or UAT with the issuer's active key.
    pub fn mint_for(
        &self,
        site: &SiteConfig,
        app: Option<&ConnectedApp>,
        user: &str,
        scopes: &[Scope],
        claims: &ClaimSet,
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        match &site.trust {
            Trust::Direct => {
                let app = app.or(site.app.as_ref()).ok_or(MintError::NoApp)?;
                self.mint_direct(app, user, scopes, claims, ttl)
            }
            Trust::Eas(eas) => self.mint_eas(eas, user, scopes, claims, ttl),
            Trust::Uat(uat) => self.mint_uat(uat, user, scopes, claims, ttl),
        }
    }

    /// A direct-trust JWT with claims beyond `scp`.
    #[tracing::instrument(name = "mint", skip_all, fields(client_id = %app.client_id, user = %user, ttl_s = ttl.as_secs()))]
    pub fn mint_direct(
        &self,
        app: &ConnectedApp,
        user: &str,
        scopes: &[Scope],
        extra: &ClaimSet,
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        check(user, scopes, ttl)?;
        let mut extra_claims = serde_json::Map::new();
        extra.insert_into(&mut extra_claims);
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
            extra: extra_claims,
        };
        let key = EncodingKey::from_secret(app.secret.expose_secret().as_bytes());
        let jwt = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| MintError::Sign(e.to_string()))?;
        minted(jwt, jti, iat, exp)
    }
}

impl Minter {
    /// The claims EAS and UAT JWTs share: `iss`, `iat` and `nbf` backdated by the issuer's clock
    /// skew, `exp` (so that `exp - iat` stays within Tableau's 10 minutes), a fresh `jti`, `scp`.
    fn issued_claims(
        &self,
        issuer: &crate::issuer::Issuer,
        scopes: &[Scope],
        ttl: Duration,
    ) -> (
        serde_json::Map<String, serde_json::Value>,
        uuid::Uuid,
        u64,
        u64,
    ) {
        use serde_json::json;
        let ttl = ttl.min(MAX_JWT_TTL.saturating_sub(issuer.clock_skew));
        let now = unix_secs(self.clock.now());
        let iat = now.saturating_sub(issuer.clock_skew.as_secs());
        let exp = now + ttl.as_secs();
        let jti = uuid::Uuid::new_v4();
        let mut c = serde_json::Map::new();
        c.insert("iss".into(), json!(issuer.url));
        c.insert("iat".into(), json!(iat));
        c.insert("nbf".into(), json!(iat));
        c.insert("exp".into(), json!(exp));
        c.insert("jti".into(), json!(jti.hyphenated().to_string()));
        c.insert("scp".into(), json!(scopes));
        (c, jti, iat, exp)
    }

    fn sign_issued(
        issuer: &crate::issuer::Issuer,
        claims: &serde_json::Map<String, serde_json::Value>,
        jti: uuid::Uuid,
        iat: u64,
        exp: u64,
    ) -> Result<MintedJwt, MintError> {
        let signed = issuer
            .sign(claims)
            .map_err(|e| MintError::Sign(e.to_string()))?;
        minted(signed.jwt.expose_secret().to_owned(), jti, iat, exp)
    }

    /// An EAS JWT (connected app with OAuth 2.0 trust) for `user`.
    #[tracing::instrument(name = "mint", skip_all, fields(aud = %eas.audience, user = %user, ttl_s = ttl.as_secs()))]
    pub fn mint_eas(
        &self,
        eas: &EasTrust,
        user: &str,
        scopes: &[Scope],
        extra: &ClaimSet,
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        check(user, scopes, ttl)?;
        let (mut c, jti, iat, exp) = self.issued_claims(&eas.issuer, scopes, ttl);
        extra.insert_into(&mut c);
        c.insert("sub".into(), serde_json::json!(user));
        c.insert("aud".into(), serde_json::json!(eas.audience));
        Self::sign_issued(&eas.issuer, &c, jti, iat, exp)
    }

    /// A unified access token for `user`: explicit scopes only, no `aud` and no `sub`.
    #[tracing::instrument(name = "mint", skip_all, fields(tenant = %uat.tenant_id, user = %user, ttl_s = ttl.as_secs()))]
    pub fn mint_uat(
        &self,
        uat: &UatTrust,
        user: &str,
        scopes: &[Scope],
        extra: &ClaimSet,
        ttl: Duration,
    ) -> Result<MintedJwt, MintError> {
        check(user, scopes, ttl)?;
        if let Some(w) = scopes.iter().find(|s| s.is_wildcard()) {
            return Err(MintError::WildcardScope {
                scope: w.to_string(),
            });
        }
        let (mut c, jti, iat, exp) = self.issued_claims(&uat.issuer, scopes, ttl);
        extra.insert_into(&mut c);
        c.insert(TENANT_CLAIM.into(), serde_json::json!(uat.tenant_id));
        c.insert(uat.username_claim.clone(), serde_json::json!(user));
        Self::sign_issued(&uat.issuer, &c, jti, iat, exp)
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
