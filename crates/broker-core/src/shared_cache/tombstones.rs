//! Tombstones and sign-out claims (issue 24, points 7 and 8).
//!
//! **Tombstones.** Whoever can write to Redis can save an entry's envelope and write it back after
//! InvalidateCredentials; the envelope still opens. So an invalidation leaves a tombstone: the
//! session's fingerprint (an HMAC of its token under each key of the ring, nothing readable),
//! kept until the session's expiry. Every replica checks it before serving a session from Redis,
//! and a tombstoned session is treated as a miss. Admin revocation (issue 27) uses the same two
//! functions: [`SharedCache::tombstone`] and [`SharedCache::is_tombstoned`].
//!
//! **Sign-out claims.** Sessions replaced in Redis, expired, or dropped with their site are
//! signed out after the grace period, by the replica that saw them go; several replicas may see
//! the same session go. [`SharedCache::claim_sign_out`] is a `SET NX` on the session's
//! fingerprint, so exactly one replica signs each session out.

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use super::SharedCache;
use super::entry::unix_ms;
use crate::cache::Credentials;

/// A session's fingerprint in Redis: the HMAC of its token under each key of the shared cache's
/// ring (current key first), so replicas on any key of the ring agree on it. Holds no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFingerprint(Vec<String>);

fn tombstone_name(h: &str) -> String {
    format!("ttb:{{{h}}}:tombstone")
}

fn claim_name(h: &str) -> String {
    format!("ttb:{{{h}}}:signout")
}

impl SharedCache {
    /// The fingerprint of the session holding `token`.
    pub fn fingerprint(&self, token: &SecretString) -> SessionFingerprint {
        SessionFingerprint(
            self.inner
                .config
                .keys
                .names(&[b"session", token.expose_secret().as_bytes()]),
        )
    }

    /// Marks the session as revoked for every replica until `until` (its expiry): no replica
    /// serves it from Redis again, whoever writes its envelope back. Returns false when Redis
    /// could not be told (or `until` has passed, when there is nothing to mark).
    pub async fn tombstone(&self, fp: &SessionFingerprint, until: SystemTime) -> bool {
        let inner = &*self.inner;
        let ttl = unix_ms(until).saturating_sub(unix_ms(inner.clock.now()));
        if ttl == 0 {
            return false;
        }
        let mut p = redis::pipe();
        for h in &fp.0 {
            p.cmd("SET")
                .arg(tombstone_name(h))
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .ignore();
        }
        inner
            .run("tombstone", |mut c| async move {
                p.query_async::<()>(&mut c).await
            })
            .await
            .is_ok()
    }

    /// True when the session has a tombstone, or when Redis cannot say (a session from Redis is
    /// then not served: the caller signs in instead).
    pub async fn is_tombstoned(&self, fp: &SessionFingerprint) -> bool {
        let names: Vec<String> = fp.0.iter().map(|h| tombstone_name(h)).collect();
        let found: Result<i64, ()> = self
            .inner
            .run("tombstone check", |mut c| async move {
                redis::cmd("EXISTS").arg(names).query_async(&mut c).await
            })
            .await;
        found.map_or(true, |n| n > 0)
    }

    /// Claims the sign-out of `c` for this replica: true for exactly one caller across replicas
    /// (until the session's expiry), and true when Redis cannot say (a second sign-out is a
    /// refused request at Tableau; a missing one is a live session).
    pub async fn claim_sign_out(&self, c: &Credentials) -> bool {
        let inner = &*self.inner;
        let Some(h) = self.fingerprint(&c.token).0.into_iter().next() else {
            return true;
        };
        // Kept a while past the session's expiry, so a late departure does not sign out again.
        let ttl = unix_ms(c.expires_at)
            .saturating_sub(unix_ms(inner.clock.now()))
            .saturating_add(60_000);
        let got: Result<Option<String>, ()> = inner
            .run("sign-out claim", |mut conn| async move {
                redis::cmd("SET")
                    .arg(claim_name(&h))
                    .arg(&inner.replica)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        got.map_or(true, |g| g.is_some())
    }
}
