//! Invalidation messages on [`super::CHANNEL_INVALIDATE`] (issue 24, point 8).
//!
//! A message is an AES-256-GCM envelope under the shared cache's key ring ([`super::crypto`]):
//! its tag is a MAC keyed from the ring, so a message from anyone without the key does not open.
//! Inside are the sender, a random message ID and the time it was sent. A receiver ignores a
//! message older (or further in the future) than [`MESSAGE_MAX_AGE`] by its injected clock, and
//! one whose ID it has already seen within that window: a captured message published again does
//! nothing. Public so that the fuzz target feeds hostile payloads to the same decoder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::crypto::{KeyRing, Purpose};
use super::entry::{parse_scopes, scope_strings, unix_ms};
use crate::cache::CacheKey;

/// How far a message's time may be from the receiver's clock: older ones (and ones from further
/// in the future, a skewed or forging sender) are ignored.
pub const MESSAGE_MAX_AGE: Duration = Duration::from_secs(30);

/// Most message IDs remembered; past it the oldest are forgotten first (they are about to age
/// out anyway). Bounds the memory a flood of valid messages can take.
pub const MAX_REMEMBERED_MESSAGES: usize = 100_000;

/// An invalidation message's envelope content.
#[derive(Serialize, Deserialize)]
struct Evict {
    sender: String,
    /// Random, per message: replays are recognised by it.
    #[serde(default)]
    id: String,
    /// When it was sent, by the sender's clock; an older format without it is stale.
    #[serde(default)]
    sent_ms: u64,
    site: String,
    user: String,
    scopes: Vec<String>,
}

/// A message that opened, is fresh and was not seen before.
#[derive(Debug)]
pub struct Invalidation {
    /// The replica that sent it.
    pub sender: String,
    /// The key to evict.
    pub key: CacheKey,
}

/// Seals an invalidation of `key` from `sender` at `now`.
pub fn seal_message(
    keys: &KeyRing,
    channel: &str,
    sender: &str,
    key: &CacheKey,
    now: SystemTime,
) -> Option<Vec<u8>> {
    let msg = Evict {
        sender: sender.to_owned(),
        id: hex::encode(rand::random::<[u8; 16]>()),
        sent_ms: unix_ms(now),
        site: key.site.to_string(),
        user: key.user.to_string(),
        scopes: scope_strings(&key.scopes),
    };
    let plain = serde_json::to_vec(&msg).ok()?;
    keys.seal(Purpose::Message, channel, plain)
}

/// The message IDs seen within [`MESSAGE_MAX_AGE`], to recognise replays.
#[derive(Debug, Default)]
pub struct Replays {
    seen: Mutex<HashMap<String, u64>>,
}

impl Replays {
    /// True the first time `id` is offered (it is then remembered until it ages out).
    fn first_time(&self, id: &str, sent_ms: u64, now_ms: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = u64::try_from(MESSAGE_MAX_AGE.as_millis()).unwrap_or(u64::MAX);
        if seen.len() >= MAX_REMEMBERED_MESSAGES {
            seen.retain(|_, t| t.saturating_add(window) >= now_ms);
            if seen.len() >= MAX_REMEMBERED_MESSAGES {
                // A flood of fresh, valid messages (someone holds the key): forget the oldest.
                if let Some(oldest) = seen.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                    seen.remove(&oldest);
                }
            }
        }
        if seen.contains_key(id) {
            return false;
        }
        seen.insert(id.to_owned(), sent_ms);
        true
    }
}

/// Opens a payload received on `channel`. `None` when it does not open (no MAC under the ring),
/// does not parse, is stale or from the future by more than [`MESSAGE_MAX_AGE`], has no ID, or
/// was seen before. Never panics, whatever the bytes.
pub fn open_message(
    keys: &KeyRing,
    channel: &str,
    payload: &[u8],
    now: SystemTime,
    replays: &Replays,
) -> Option<Invalidation> {
    let mut plain = keys.open(Purpose::Message, channel, payload)?;
    let parsed: Result<Evict, _> = serde_json::from_slice(&plain);
    plain.zeroize();
    let msg = parsed.ok()?;
    let now_ms = unix_ms(now);
    let window = u64::try_from(MESSAGE_MAX_AGE.as_millis()).unwrap_or(u64::MAX);
    if msg.id.is_empty() || msg.sent_ms.abs_diff(now_ms) > window {
        tracing::debug!("ignored a stale or unidentified invalidation message");
        return None;
    }
    let scopes = parse_scopes(&msg.scopes)?;
    if !replays.first_time(&msg.id, msg.sent_ms, now_ms) {
        tracing::warn!("ignored a replayed invalidation message");
        return None;
    }
    Some(Invalidation {
        sender: msg.sender,
        key: CacheKey {
            site: Arc::from(msg.site),
            user: Arc::from(msg.user),
            scopes: Arc::from(scopes),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretSlice;

    fn ring() -> KeyRing {
        KeyRing::new(&SecretSlice::from(vec![5u8; 32]), &[]).unwrap()
    }

    fn key() -> CacheKey {
        CacheKey {
            site: Arc::from("finance"),
            user: Arc::from("u"),
            scopes: Arc::from(vec!["tableau:content:read".parse().unwrap()]),
        }
    }

    #[test]
    fn a_message_opens_once_within_its_window_and_never_when_stale_or_forged() {
        let keys = ring();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let sealed = seal_message(&keys, "ch", "a", &key(), t0).unwrap();
        let replays = Replays::default();
        assert!(open_message(&keys, "ch", &sealed, t0, &replays).is_some());
        assert!(
            open_message(&keys, "ch", &sealed, t0, &replays).is_none(),
            "replay"
        );
        let fresh = Replays::default();
        let late = t0 + MESSAGE_MAX_AGE + Duration::from_millis(1);
        assert!(
            open_message(&keys, "ch", &sealed, late, &fresh).is_none(),
            "stale"
        );
        assert!(
            open_message(&keys, "other", &sealed, t0, &fresh).is_none(),
            "channel"
        );
        let other = KeyRing::new(&SecretSlice::from(vec![6u8; 32]), &[]).unwrap();
        let forged = seal_message(&other, "ch", "a", &key(), t0).unwrap();
        assert!(
            open_message(&keys, "ch", &forged, t0, &fresh).is_none(),
            "no MAC"
        );
        // The older format (no ID, no time) is stale.
        let old = serde_json::to_vec(&serde_json::json!({
            "sender": "a", "site": "finance", "user": "u", "scopes": []
        }))
        .unwrap();
        let old = keys.seal(Purpose::Message, "ch", old).unwrap();
        assert!(open_message(&keys, "ch", &old, t0, &fresh).is_none());
    }
}
