//! The shared cache's decoders never panic on what someone with write access to Redis can put
//! there: entry envelopes and invalidation messages, both as raw bytes (which must not open
//! without the key) and as hostile plaintext sealed under the right key (which must parse or be
//! refused, never crash), including replays and stale or future timestamps.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::audit::Fingerprinter;
use tableau_token_broker::cache::{CacheKey, Issuer};
use tableau_token_broker::shared_cache::CHANNEL_INVALIDATE;
use tableau_token_broker::shared_cache::crypto::{KeyRing, Purpose, parse_key};
use tableau_token_broker::shared_cache::entry::open_entry;
use tableau_token_broker::shared_cache::messages::{Replays, open_message};

const NAME: &str = "ttb:{00112233445566778899aabbccddeeff}:entry";

fuzz_target!(|data: &[u8]| {
    let Ok(key) = parse_key(&[7u8; 32]) else {
        return;
    };
    let Ok(keys) = KeyRing::new(&key, &[]) else {
        return;
    };
    let fingerprints = Fingerprinter::new();
    let cache_key = CacheKey {
        site: Arc::from("finance"),
        user: Arc::from("u"),
        scopes: Arc::from(Vec::new()),
    };
    let issuer = Issuer {
        server_url: "https://tableau.example.com",
        content_url: "finance",
        client_id: "cid",
    };
    let now = match data.first() {
        // The receiver's clock anywhere from the epoch to far in the future.
        Some(b) => SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(*b) << 28),
        None => SystemTime::UNIX_EPOCH,
    };
    let replays = Replays::default();

    // Raw bytes: nothing opens without the key.
    assert!(open_entry(&keys, &fingerprints, NAME, data, None).is_none());
    assert!(open_message(&keys, CHANNEL_INVALIDATE, data, now, &replays).is_none());

    // Hostile plaintext under the right key: parsed or refused, and a replay never opens twice.
    if let Some(sealed) = keys.seal(Purpose::Entry, NAME, data.to_vec()) {
        let _ = open_entry(&keys, &fingerprints, NAME, &sealed, None);
        let _ = open_entry(
            &keys,
            &fingerprints,
            NAME,
            &sealed,
            Some((&cache_key, issuer)),
        );
    }
    if let Some(sealed) = keys.seal(Purpose::Message, CHANNEL_INVALIDATE, data.to_vec()) {
        let first = open_message(&keys, CHANNEL_INVALIDATE, &sealed, now, &replays);
        let again = open_message(&keys, CHANNEL_INVALIDATE, &sealed, now, &replays);
        assert!(first.is_none() || again.is_none(), "a replay opened twice");
    }
});
