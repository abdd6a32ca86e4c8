//! Checks a connected-app JWT the way Tableau documents it, and names the sub-code Tableau gives
//! for each failure (`shared/reference/tableau.md`, sections 2 and 4).

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::config::{ConnectedApp, Site};
use tableau_common::clock::unix_secs;
use tableau_common::scope::Scope;

/// Longest `exp` Tableau accepts after issue.
pub(crate) const MAX_LIFETIME_SECS: i64 = 10 * 60;

/// Why a sign-in failed: the connected-app sub-code shown in parentheses in the 401001 detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubCode {
    /// 16: login failed (unknown user, `exp` missing, past, or too far ahead).
    LoginFailed,
    /// 10083: the header lacks `kid` or `iss`.
    BadJwtHeader,
    /// 10084: the JWT cannot be parsed or verified (signature, `aud`, `sub`, replayed `jti`).
    ParseError,
    /// 10085: no secret for this client ID and `kid`.
    NoKeys,
    /// 10087: blocklisted signing algorithm (`none`).
    BlockedAlgorithm,
    /// 10090: the connected app is disabled.
    AppDisabled,
    /// 10081: the issuer's metadata could not be fetched (EAS, UAT).
    MetadataUnreachable,
    /// 10088: an RSA key under 2048 bits.
    RsaTooShort,
    /// 10091: a `jti` already used (EAS, UAT).
    ReusedJti,
    /// 10096: `exp` more than 10 minutes ahead (EAS, UAT).
    ExpTooFar,
    /// 10099: no `scp` claim (EAS, UAT).
    MissingScope,
}

impl SubCode {
    /// The number Tableau shows.
    pub(crate) fn number(self) -> u32 {
        match self {
            SubCode::LoginFailed => 16,
            SubCode::BadJwtHeader => 10083,
            SubCode::ParseError => 10084,
            SubCode::NoKeys => 10085,
            SubCode::BlockedAlgorithm => 10087,
            SubCode::AppDisabled => 10090,
            SubCode::MetadataUnreachable => 10081,
            SubCode::RsaTooShort => 10088,
            SubCode::ReusedJti => 10091,
            SubCode::ExpTooFar => 10096,
            SubCode::MissingScope => 10099,
        }
    }
}

/// A JWT that passed every check.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The signing app's client ID.
    pub client_id: String,
    /// The signed-in user's LUID.
    pub user_luid: String,
    /// Scopes from `scp`; empty when `scp` was missing, malformed or empty.
    pub scopes: Vec<Scope>,
    /// The `jti`, for replay protection.
    pub jti: String,
    /// Until when the `jti` must be remembered.
    pub jti_until: SystemTime,
    /// Every claim of the JWT, kept with the session.
    pub claims: Map<String, Value>,
}

/// True for a direct-trust JWT: its header names an `iss`, or it is HS256 (a shared secret; one
/// without `iss` is then refused as direct trust, 10083). EAS and UAT JWTs are RS256 or ES256
/// with no `iss` in the header.
pub(crate) fn is_direct_trust_jwt(jwt: &str) -> bool {
    jwt.split('.')
        .next()
        .and_then(b64_json)
        .is_some_and(|h| h.contains_key("iss") || h.get("alg") == Some(&Value::from("HS256")))
}

pub(crate) fn b64_json(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

pub(crate) fn non_empty_str<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn number(map: &Map<String, Value>, key: &str) -> Option<i64> {
    let v = map.get(key)?;
    // Truncation is intended: NumericDate may carry a fraction.
    #[allow(clippy::cast_possible_truncation)]
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))
}

/// Scopes Tableau would honour: `scp` as a non-empty list of strings; scopes that do not parse
/// simply enable nothing.
pub(crate) fn scopes(claims: &Map<String, Value>) -> Vec<Scope> {
    let Some(Value::Array(items)) = claims.get("scp") else {
        return Vec::new();
    };
    let strings: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
    strings
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Checks `jwt` for a sign-in to `site`. `seen_jti` answers whether a `(client ID, jti)` is still
/// remembered from an earlier sign-in.
pub(crate) fn check(
    jwt: &str,
    site: &Site,
    apps: &[ConnectedApp],
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
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {}
        Some(alg) if alg.eq_ignore_ascii_case("none") => return Err(SubCode::BlockedAlgorithm),
        _ => return Err(SubCode::ParseError),
    }
    let (Some(kid), Some(iss)) = (non_empty_str(&header, "kid"), non_empty_str(&header, "iss"))
    else {
        return Err(SubCode::BadJwtHeader);
    };
    let app = apps
        .iter()
        .find(|a| a.client_id == iss)
        .ok_or(SubCode::NoKeys)?;
    if !app.enabled {
        return Err(SubCode::AppDisabled);
    }
    let secret = app
        .secrets
        .iter()
        .find(|s| s.secret_id == kid)
        .ok_or(SubCode::NoKeys)?;
    let key = DecodingKey::from_secret(secret.value.expose_secret().as_bytes());
    let message = format!("{h64}.{p64}");
    if !jsonwebtoken::crypto::verify(sig, message.as_bytes(), &key, Algorithm::HS256)
        .unwrap_or(false)
    {
        return Err(SubCode::ParseError);
    }
    let claims = b64_json(p64).ok_or(SubCode::ParseError)?;
    if non_empty_str(&claims, "iss") != Some(iss) {
        return Err(SubCode::ParseError);
    }
    if claims.get("aud").and_then(Value::as_str) != Some("tableau") {
        return Err(SubCode::ParseError);
    }
    let sub = non_empty_str(&claims, "sub").ok_or(SubCode::ParseError)?;
    let jti = non_empty_str(&claims, "jti").ok_or(SubCode::ParseError)?;

    let now_s = i64::try_from(unix_secs(now)).unwrap_or(i64::MAX);
    let skew_s = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    let exp = number(&claims, "exp").ok_or(SubCode::LoginFailed)?;
    if now_s >= exp.saturating_add(skew_s) {
        return Err(SubCode::LoginFailed);
    }
    let issued = number(&claims, "iat");
    if issued.is_some_and(|iat| iat > now_s.saturating_add(skew_s))
        || number(&claims, "nbf").is_some_and(|nbf| nbf > now_s.saturating_add(skew_s))
    {
        return Err(SubCode::LoginFailed);
    }
    let issued = issued.unwrap_or(now_s);
    if exp.saturating_sub(issued) > MAX_LIFETIME_SECS
        || exp
            > now_s
                .saturating_add(MAX_LIFETIME_SECS)
                .saturating_add(skew_s)
    {
        return Err(SubCode::LoginFailed);
    }
    let user = site
        .users
        .iter()
        .find(|u| u.name == sub)
        .ok_or(SubCode::LoginFailed)?;
    if seen_jti(iss, jti) {
        return Err(SubCode::ParseError);
    }
    let remember = u64::try_from(exp.saturating_add(skew_s)).unwrap_or(0);
    Ok(Accepted {
        client_id: iss.to_owned(),
        user_luid: user.luid.clone(),
        scopes: scopes(&claims),
        jti: jti.to_owned(),
        jti_until: SystemTime::UNIX_EPOCH + Duration::from_secs(remember),
        claims,
    })
}
