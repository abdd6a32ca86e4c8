//! A shared-cache entry: what its envelope holds, and its codec. Public so that the fuzz target
//! can feed hostile envelopes to the same decoder the replicas use.
//!
//! An entry is bound to the session's issuer (server URL, content URL and client ID, issue 24
//! point 2) twice: its Redis name is an HMAC over the cache key *and* the issuer, and the name is
//! part of the envelope's associated data; the encrypted value repeats the issuer, and the decoder
//! refuses a value whose issuer is not the one expected.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::crypto::{KeyRing, Purpose};
use crate::audit::Fingerprinter;
use crate::cache::{CacheKey, Credentials, Issuer, Luid};
use crate::scope::Scope;

/// What an entry's envelope holds: everything a peer needs to rebuild [`Credentials`].
#[derive(Serialize)]
struct EntryOut<'a> {
    site: &'a str,
    user: &'a str,
    scopes: Vec<String>,
    token: &'a str,
    site_luid: &'a str,
    content_url: &'a str,
    server_url: &'a str,
    bound_content_url: &'a str,
    client_id: &'a str,
    user_luid: String,
    jti: String,
    expires_ms: u64,
}

#[derive(Deserialize)]
struct EntryIn {
    site: String,
    user: String,
    scopes: Vec<String>,
    token: String,
    site_luid: String,
    content_url: String,
    /// The issuer; an entry without it (an older replica's) never matches a site, so it is
    /// signed in again rather than trusted.
    #[serde(default)]
    server_url: String,
    #[serde(default)]
    bound_content_url: String,
    #[serde(default)]
    client_id: String,
    user_luid: String,
    jti: String,
    expires_ms: u64,
}

/// Milliseconds since the Unix epoch (0 before it, saturating far after it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The scopes as text.
pub fn scope_strings(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(ToString::to_string).collect()
}

/// Parses scopes; `None` if any is not a scope.
pub fn parse_scopes(scopes: &[String]) -> Option<Vec<Scope>> {
    scopes.iter().map(|s| s.parse().ok()).collect()
}

/// The parts of an entry's Redis name: the cache key and the issuer, length-prefixed by
/// [`KeyRing::names`].
pub fn name_parts<'a>(scopes: &'a str, key: &'a CacheKey, issuer: Issuer<'a>) -> [&'a [u8]; 7] {
    [
        b"entry/v2",
        key.site.as_bytes(),
        key.user.as_bytes(),
        scopes.as_bytes(),
        issuer.server_url.as_bytes(),
        issuer.content_url.as_bytes(),
        issuer.client_id.as_bytes(),
    ]
}

/// Seals `c` as the value of the entry called `name`; `None` if it cannot be sealed.
pub fn seal_entry(keys: &KeyRing, name: &str, c: &Credentials) -> Option<Vec<u8>> {
    let body = EntryOut {
        site: &c.key.site,
        user: &c.key.user,
        scopes: scope_strings(&c.key.scopes),
        token: c.token.expose_secret(),
        site_luid: &c.site_luid,
        content_url: &c.site_content_url,
        server_url: &c.server_url,
        bound_content_url: &c.content_url,
        client_id: &c.client_id,
        user_luid: c.user_luid.to_string(),
        jti: c.jti.hyphenated().to_string(),
        expires_ms: unix_ms(c.expires_at),
    };
    let plain = serde_json::to_vec(&body).ok()?;
    keys.seal(Purpose::Entry, name, plain)
}

/// Opens the entry called `name`. With `expected`, it must be for that key and issuer (and then
/// carries the caller's own key, interned). `None` for anything that does not open, parse and
/// match; never panics, whatever the bytes.
pub fn open_entry(
    keys: &KeyRing,
    fingerprints: &Fingerprinter,
    name: &str,
    envelope: &[u8],
    expected: Option<(&CacheKey, Issuer<'_>)>,
) -> Option<Credentials> {
    let Some(mut plain) = keys.open(Purpose::Entry, name, envelope) else {
        tracing::warn!(
            "a shared-cache entry could not be decrypted (written under a key this replica does not have?); ignoring it"
        );
        return None;
    };
    let parsed: Result<EntryIn, _> = serde_json::from_slice(&plain);
    plain.zeroize();
    let mut e = parsed.ok()?;
    let token = SecretString::from(std::mem::take(&mut e.token));
    let scopes = parse_scopes(&e.scopes)?;
    let key = match expected {
        Some((k, issuer)) => {
            let bound = Issuer {
                server_url: &e.server_url,
                content_url: &e.bound_content_url,
                client_id: &e.client_id,
            };
            if *k.site != *e.site || *k.user != *e.user || *k.scopes != *scopes || bound != issuer {
                return None;
            }
            k.clone()
        }
        None => CacheKey {
            site: Arc::from(e.site),
            user: Arc::from(e.user),
            scopes: Arc::from(scopes),
        },
    };
    Some(Credentials {
        key,
        digest: fingerprints.digest(&token),
        token,
        site_luid: Arc::from(e.site_luid),
        site_content_url: Arc::from(e.content_url),
        server_url: Arc::from(e.server_url),
        content_url: Arc::from(e.bound_content_url),
        client_id: Arc::from(e.client_id),
        user_luid: Luid::from(e.user_luid),
        jti: uuid::Uuid::try_parse(&e.jti).ok()?,
        expires_at: UNIX_EPOCH.checked_add(Duration::from_millis(e.expires_ms))?,
    })
}
