//! What makes Redis hold nothing readable: AES-256-GCM envelopes under a key ring (current key
//! plus previous ones, each with a key ID), and key names that are HMACs of (site, user, scopes).
//!
//! An envelope is `"T1" | key ID (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)`. The
//! associated data is the purpose, the key ID and the Redis key name (or channel), so an envelope
//! copied under another name, or re-labelled with another key ID, fails to open.
//!
//! A key ID is the first 4 bytes of SHA-256 over the key (8 hex characters in logs and docs).
//! Nonces are 96 random bits per envelope: safe for far more writes than a key sees between
//! rotations (NIST's bound for random nonces is 2^32 envelopes per key).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hmac};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretSlice};
use zeroize::Zeroize;

/// Envelope magic and version.
const MAGIC: &[u8; 2] = b"T1";
/// Length of a key ID in bytes.
pub const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;
/// The label the key-name HMAC key is derived under, so the names key never equals the
/// encryption key itself.
const NAMES_LABEL: &[u8] = b"tableau-token-broker/shared-cache/key-names/v1";

/// Why an encryption key file could not be used. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Neither 32 raw bytes nor base64 of 32 bytes.
    #[error(
        "holds {0} bytes: give exactly 32 raw bytes, or 32 bytes in base64 (e.g. `openssl rand -base64 32`)"
    )]
    BadLength(usize),
    /// Two keys of the ring are the same key (same key ID).
    #[error("key {0} appears twice in the key ring")]
    Duplicate(String),
}

/// A key's identifier: the first 4 bytes of its SHA-256, stored in every envelope so a reader
/// knows which key of the ring opens it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Reads a key file's content: exactly 32 bytes are the raw key; anything else must be base64
/// (standard alphabet, padding optional, surrounding whitespace ignored) of 32 bytes.
pub fn parse_key(bytes: &[u8]) -> Result<SecretSlice<u8>, KeyError> {
    if bytes.len() == 32 {
        return Ok(SecretSlice::from(bytes.to_vec()));
    }
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim().trim_end_matches('=');
    let mut decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|_| KeyError::BadLength(bytes.len()))?;
    if decoded.len() != 32 {
        let n = decoded.len();
        decoded.zeroize();
        return Err(KeyError::BadLength(n));
    }
    Ok(SecretSlice::from(decoded))
}

struct DataKey {
    id: KeyId,
    aead: LessSafeKey,
    names: hmac::Key,
}

/// The encryption keys: the current one seals, every one opens. Cheap to clone.
#[derive(Clone)]
pub struct KeyRing(Arc<Vec<DataKey>>);

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current_id())
            .field(
                "previous",
                &self.0.iter().skip(1).map(|k| k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn data_key(secret: &SecretSlice<u8>) -> Result<DataKey, KeyError> {
    let key = secret.expose_secret();
    let digest = digest::digest(&digest::SHA256, key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
    let aead = UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::BadLength(key.len()))?;
    let derive = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), NAMES_LABEL);
    let mut names_key = [0u8; 32];
    names_key.copy_from_slice(derive.as_ref());
    let names = hmac::Key::new(hmac::HMAC_SHA256, &names_key);
    names_key.zeroize();
    Ok(DataKey {
        id: KeyId(id),
        aead,
        names,
    })
}

/// What an envelope protects, for the associated data.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    /// A cache entry, bound to its Redis key name.
    Entry,
    /// An invalidation message, bound to its channel.
    Message,
}

fn aad(purpose: Purpose, id: KeyId, name: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(32 + name.len());
    a.extend_from_slice(match purpose {
        Purpose::Entry => b"ttb/entry/v1\0",
        Purpose::Message => b"ttb/message/v1\0",
    });
    a.extend_from_slice(&id.0);
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

impl KeyRing {
    /// A ring whose first key seals and whose every key opens.
    pub fn new(current: &SecretSlice<u8>, previous: &[SecretSlice<u8>]) -> Result<Self, KeyError> {
        let mut keys = vec![data_key(current)?];
        for p in previous {
            let k = data_key(p)?;
            if keys.iter().any(|e| e.id == k.id) {
                return Err(KeyError::Duplicate(k.id.to_string()));
            }
            keys.push(k);
        }
        Ok(KeyRing(Arc::new(keys)))
    }

    /// The ID of the key that seals.
    pub fn current_id(&self) -> KeyId {
        self.0.first().map_or(KeyId([0; KEY_ID_LEN]), |k| k.id)
    }

    /// The IDs of every key, current first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.0.iter().map(|k| k.id).collect()
    }

    /// 128-bit hex HMAC of `parts` under each key's names key, current first: one name per key
    /// of the ring, so entries written under a previous key are still found.
    pub fn names(&self, parts: &[&[u8]]) -> Vec<String> {
        self.0
            .iter()
            .map(|k| {
                let mut mac = hmac::Context::with_key(&k.names);
                for p in parts {
                    // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
                    mac.update(&(p.len() as u64).to_be_bytes());
                    mac.update(p);
                }
                hex::encode(&mac.sign().as_ref()[..16])
            })
            .collect()
    }

    /// Seals `plaintext` under the current key; the plaintext buffer is wiped.
    pub fn seal(&self, purpose: Purpose, name: &str, mut plaintext: Vec<u8>) -> Option<Vec<u8>> {
        let key = self.0.first()?;
        let nonce: [u8; NONCE_LEN] = rand::random();
        let result = key.aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(purpose, key.id, name)),
            &mut plaintext,
        );
        if result.is_err() {
            plaintext.zeroize();
            return None;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&key.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plaintext);
        Some(out)
    }

    /// Opens an envelope sealed for `name` by any key of the ring. The caller must wipe the
    /// returned plaintext.
    pub fn open(&self, purpose: Purpose, name: &str, envelope: &[u8]) -> Option<Vec<u8>> {
        if envelope.len() < HEADER_LEN + TAG_LEN || &envelope[..MAGIC.len()] != MAGIC {
            return None;
        }
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&envelope[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
        let key = self.0.iter().find(|k| k.id.0 == id)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&envelope[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let mut buf = envelope[HEADER_LEN..].to_vec();
        let len = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(purpose, key.id, name)),
                &mut buf,
            )
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretSlice<u8> {
        SecretSlice::from(vec![b; 32])
    }

    #[test]
    fn keys_are_raw_or_base64_of_32_bytes() {
        assert!(parse_key(&[7u8; 32]).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let k = parse_key(format!("{b64}\n").as_bytes()).unwrap();
        assert_eq!(k.expose_secret(), &[9u8; 32]);
        assert_eq!(parse_key(b"short").err(), Some(KeyError::BadLength(5)));
        let b64_16 = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert_eq!(
            parse_key(b64_16.as_bytes()).err(),
            Some(KeyError::BadLength(16))
        );
    }

    #[test]
    fn envelopes_open_under_any_key_of_the_ring_and_only_for_their_name() {
        let old = KeyRing::new(&key(1), &[]).unwrap();
        let new = KeyRing::new(&key(2), &[key(1)]).unwrap();
        let sealed = old.seal(Purpose::Entry, "n1", b"secret".to_vec()).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(new.open(Purpose::Entry, "n1", &sealed).unwrap(), b"secret");
        assert!(
            new.open(Purpose::Entry, "n2", &sealed).is_none(),
            "bound to its name"
        );
        assert!(
            new.open(Purpose::Message, "n1", &sealed).is_none(),
            "bound to its purpose"
        );
        let sealed_new = new.seal(Purpose::Entry, "n1", b"x".to_vec()).unwrap();
        assert!(
            old.open(Purpose::Entry, "n1", &sealed_new).is_none(),
            "unknown key"
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(new.open(Purpose::Entry, "n1", &tampered).is_none());
        assert_eq!(new.ids().len(), 2);
        assert_eq!(new.ids()[1], old.current_id());
        assert!(KeyRing::new(&key(1), &[key(1)]).is_err());
    }

    #[test]
    fn names_are_keyed_and_length_prefixed() {
        let ring = KeyRing::new(&key(1), &[key(2)]).unwrap();
        let a = ring.names(&[b"ab", b"c"]);
        let b = ring.names(&[b"a", b"bc"]);
        assert_eq!(a.len(), 2);
        assert_ne!(a[0], b[0]);
        assert_ne!(a[0], a[1], "one name per key");
        assert_eq!(a[0].len(), 32);
        let other = KeyRing::new(&key(3), &[]).unwrap();
        assert_ne!(other.names(&[b"ab", b"c"])[0], a[0]);
    }
}
