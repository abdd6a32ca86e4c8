//! The shared cache's part in operating the broker (issue 27): listing the sessions Redis holds,
//! tombstones that keep a revoked session from ever being served again, and the revocation
//! broadcast every replica acknowledges.
//!
//! - **Revoked entries** ([`SharedCache::revoke_entry`]): the session gets the same tombstone an
//!   invalidation leaves ([`SharedCache::tombstone`], kept a minute past its expiry for clock
//!   skew), so an old envelope written back (a backup restored, a replayed `SET`) is never
//!   served, and then its entry and token index go.
//! - **Revocation broadcast** ([`SharedCache::broadcast_revoke`]): an encrypted order on
//!   [`CHANNEL_REVOKE`] that every replica (the sender included) answers on
//!   [`CHANNEL_REVOKE_ACK`] once its own cache no longer holds a matching session. `PUBLISH`
//!   says how many replicas listen, so the sender knows how many answers to wait for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use zeroize::Zeroize;

use super::crypto::Purpose;
use super::{COMPARE_AND_DELETE, Inner, SharedCache, inc, lock, token_name};
use crate::cache::{CacheKey, Credentials};

/// Channel of revocation orders (encrypted [`RevokeOrder`]s).
pub const CHANNEL_REVOKE: &str = "ttb:v1:revoke";
/// Channel of the replicas' answers to an order (encrypted [`RevokeAck`]s).
pub const CHANNEL_REVOKE_ACK: &str = "ttb:v1:revoke-ack";
/// Most entry names one listing reads from Redis: a bound on the work of one admin call.
pub const MAX_SCANNED_ENTRIES: usize = 100_000;
/// How long a tombstone outlives the session it names: covers clock skew between replicas.
const TOMBSTONE_MARGIN: Duration = Duration::from_secs(60);
/// Names asked for per `SCAN` step and per `MGET`.
const BATCH: usize = 500;

/// A revocation order: the selector as sent (each replica resolves it against its own policy)
/// and the sessions the sender already ended, so nobody signs them out twice.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RevokeOrder {
    /// Unique per order; answers carry it.
    pub id: String,
    /// The replica that sent it.
    pub sender: String,
    /// The selector's caller entry or identity, if any.
    pub caller: Option<String>,
    /// The selector's site, if any.
    pub site: Option<String>,
    /// The selector's user glob, if any.
    pub user: Option<String>,
    /// Scopes a session must include.
    pub scopes: Vec<String>,
    /// `jti`s of the sessions the sender already signed out at Tableau.
    pub done: Vec<String>,
}

/// A session one replica ended, as its answer reports it (never the token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RevokedSession {
    /// Token fingerprint, as the replica's audit trail writes it.
    pub fingerprint: String,
    /// The `jti` of the JWT that signed it in.
    pub jti: String,
    /// Site name.
    pub site: String,
    /// Tableau username.
    pub user: String,
    /// Normalized scopes.
    pub scopes: Vec<String>,
}

impl RevokedSession {
    /// The report of a session.
    pub fn of(c: &Credentials) -> RevokedSession {
        RevokedSession {
            fingerprint: c.digest.fingerprint().to_string(),
            jti: c.jti.hyphenated().to_string(),
            site: c.key.site.to_string(),
            user: c.key.user.to_string(),
            scopes: c.key.scopes.iter().map(ToString::to_string).collect(),
        }
    }
}

/// One replica's answer to an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeAck {
    /// The order answered.
    pub id: String,
    /// The replica answering.
    pub replica: String,
    /// Sessions it held that nobody had ended yet, now ended.
    pub sessions: Vec<RevokedSession>,
}

/// What a broadcast came back with.
#[derive(Debug, Clone, Default)]
pub struct RevokeBroadcast {
    /// Replicas listening when the order was sent (the sender included).
    pub replicas: usize,
    /// The answers received before the deadline.
    pub acks: Vec<RevokeAck>,
}

/// Handles an order from another replica: evicts and ends the matching sessions it holds, and
/// returns them. Installed by the broker ([`SharedCache::on_revoke`]).
pub type RevokeHandler = Arc<
    dyn Fn(RevokeOrder) -> futures::future::BoxFuture<'static, Vec<RevokedSession>> + Send + Sync,
>;

/// The admin state of the shared cache: the handler for orders and the senders waiting for
/// answers.
#[derive(Default)]
pub(super) struct AdminChannels {
    handler: OnceLock<RevokeHandler>,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<RevokeAck>>>,
}

/// Forgets a waiting order when its wait ends, however it ends.
struct Waiting<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.inner.admin.waiting).remove(&self.id);
    }
}

impl SharedCache {
    /// Installs what this replica does with another replica's order (once; later calls are
    /// ignored).
    pub fn on_revoke(&self, handler: RevokeHandler) {
        let _ = self.inner.admin.handler.set(handler);
    }

    /// This replica's name in orders and answers.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// Every session Redis holds (at most `limit`; `true` when there were more), decrypted,
    /// tombstoned ones left out. `Err(())` when Redis could not be read.
    pub async fn sessions(&self, limit: usize) -> Result<(Vec<Credentials>, bool), ()> {
        let inner = &*self.inner;
        let mut cursor: u64 = 0;
        let mut names: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = inner
                .run("scan", |mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg("ttb:*:entry")
                        .arg("COUNT")
                        .arg(BATCH)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            names.extend(batch);
            cursor = next;
            if cursor == 0 || names.len() >= MAX_SCANNED_ENTRIES {
                break;
            }
        }
        names.sort();
        names.dedup();
        let now = inner.clock.now();
        let mut out = Vec::new();
        let mut more = false;
        for chunk in names.chunks(BATCH) {
            let keys = chunk.to_vec();
            let values: Vec<Option<Vec<u8>>> = inner
                .run("mget", |mut c| async move {
                    redis::cmd("MGET").arg(keys).query_async(&mut c).await
                })
                .await?;
            for (name, v) in chunk.iter().zip(values) {
                let Some(c) = v.and_then(|v| inner.decode(name, &v, None)) else {
                    continue;
                };
                if c.expires_at <= now || self.is_tombstoned(&self.fingerprint(&c.token)).await {
                    continue;
                }
                if out.len() == limit {
                    more = true;
                    break;
                }
                out.push(c);
            }
        }
        Ok((out, more))
    }

    /// Ends a session in Redis for good: a tombstone first (so a copy written back is refused),
    /// then the entry (only if it still holds this token) and its token index. Other replicas'
    /// L1 copies are the broadcast's business.
    pub async fn revoke_entry(&self, c: &Credentials) {
        let inner = &*self.inner;
        let token = c.token.expose_secret().as_bytes();
        self.tombstone(&self.fingerprint(&c.token), c.expires_at + TOMBSTONE_MARGIN)
            .await;
        // The entry goes only if it still holds this session: a newer sign-in stays.
        for name in inner.names(&c.key, c.issuer()).entries {
            let got: Result<Option<Vec<u8>>, ()> = inner
                .run("get", |mut conn| {
                    let name = name.clone();
                    async move { redis::cmd("GET").arg(&name).query_async(&mut conn).await }
                })
                .await;
            let Ok(Some(envelope)) = got else { continue };
            let same = inner
                .decode(&name, &envelope, None)
                .is_some_and(|e| e.token.expose_secret() == c.token.expose_secret());
            if same {
                let _: Result<i64, ()> = inner
                    .run("delete", |mut conn| async move {
                        redis::cmd("EVAL")
                            .arg(COMPARE_AND_DELETE)
                            .arg(1)
                            .arg(&name)
                            .arg(envelope)
                            .query_async(&mut conn)
                            .await
                    })
                    .await;
            }
        }
        let index: Vec<String> = inner
            .config
            .keys
            .names(&[b"token", token])
            .iter()
            .map(|h| token_name(h))
            .collect();
        let _: Result<i64, ()> = inner
            .run("delete", |mut conn| async move {
                redis::cmd("DEL").arg(index).query_async(&mut conn).await
            })
            .await;
    }

    /// Sends `order` to every replica and waits (at most `wait`) until each one listening has
    /// answered. The sender answers its own order at once: its cache is the caller's business.
    pub async fn broadcast_revoke(
        &self,
        mut order: RevokeOrder,
        wait: Duration,
    ) -> Result<RevokeBroadcast, ()> {
        let inner = &*self.inner;
        order.sender.clone_from(&inner.replica);
        let (tx, mut rx) = mpsc::unbounded_channel();
        lock(&inner.admin.waiting).insert(order.id.clone(), tx);
        let _waiting = Waiting {
            inner,
            id: order.id.clone(),
        };
        let envelope = seal(inner, CHANNEL_REVOKE, &order).ok_or(())?;
        let receivers: i64 = inner
            .run("revoke", |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(CHANNEL_REVOKE)
                    .arg(envelope)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        inc(&inner.stats.invalidations_sent);
        let replicas = usize::try_from(receivers).unwrap_or(0);
        let mut out = RevokeBroadcast {
            replicas,
            acks: Vec::new(),
        };
        let deadline = tokio::time::Instant::now() + wait;
        while out.acks.len() < replicas {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ack)) => {
                    if !out.acks.iter().any(|a| a.replica == ack.replica) {
                        out.acks.push(ack);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Ok(out)
    }
}

fn seal<T: Serialize>(inner: &Inner, channel: &str, msg: &T) -> Option<Vec<u8>> {
    let plain = serde_json::to_vec(msg).ok()?;
    inner.config.keys.seal(Purpose::Message, channel, plain)
}

fn open<T: for<'de> Deserialize<'de>>(inner: &Inner, channel: &str, payload: &[u8]) -> Option<T> {
    let mut plain = inner.config.keys.open(Purpose::Message, channel, payload)?;
    let parsed = serde_json::from_slice(&plain).ok();
    plain.zeroize();
    parsed
}

impl Inner {
    /// An order or an answer arrived.
    pub(super) fn on_admin_message(self: &Arc<Self>, channel: &str, payload: &[u8]) {
        match channel {
            CHANNEL_REVOKE => {
                let Some(order) = open::<RevokeOrder>(self, channel, payload) else {
                    return;
                };
                inc(&self.stats.invalidations_received);
                let handler = if order.sender == self.replica {
                    None
                } else {
                    self.admin.handler.get().cloned()
                };
                let inner = Arc::downgrade(self);
                tokio::spawn(async move {
                    let sessions = match handler {
                        Some(h) => h(order.clone()).await,
                        None => Vec::new(),
                    };
                    let Some(inner) = inner.upgrade() else { return };
                    let ack = RevokeAck {
                        id: order.id,
                        replica: inner.replica.clone(),
                        sessions,
                    };
                    let Some(envelope) = seal(&inner, CHANNEL_REVOKE_ACK, &ack) else {
                        return;
                    };
                    let _: Result<i64, ()> = inner
                        .run("revoke ack", |mut c| async move {
                            redis::cmd("PUBLISH")
                                .arg(CHANNEL_REVOKE_ACK)
                                .arg(envelope)
                                .query_async(&mut c)
                                .await
                        })
                        .await;
                });
            }
            CHANNEL_REVOKE_ACK => {
                let Some(ack) = open::<RevokeAck>(self, channel, payload) else {
                    return;
                };
                if let Some(tx) = lock(&self.admin.waiting).get(&ack.id) {
                    let _ = tx.send(ack);
                }
            }
            _ => {}
        }
    }
}

/// The key a revoked session was cached under, from a report (for L1 evictions by key).
pub fn key_of(s: &RevokedSession) -> Option<CacheKey> {
    let scopes: Option<Vec<crate::scope::Scope>> =
        s.scopes.iter().map(|x| x.parse().ok()).collect();
    Some(CacheKey {
        site: Arc::from(s.site.as_str()),
        user: Arc::from(s.user.as_str()),
        scopes: Arc::from(scopes?),
    })
}
