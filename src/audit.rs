//! Audit helpers: a token fingerprint that lets two log lines about the same token be matched
//! without revealing it.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Hex characters of the HMAC kept in a fingerprint: 64 bits is plenty to tell tokens apart in
/// logs, and too little to be worth attacking.
pub const FINGERPRINT_HEX_LEN: usize = 16;

/// A token's HMAC, truncated to 128 bits: what the cache indexes tokens by, so an invalidation
/// finds its entry without the cache comparing tokens. 128 bits keep collisions out of reach
/// (about 2^-88 over a million entries) at half the memory of the full MAC.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 16]);

impl TokenDigest {
    /// The short form shown in logs (the first 64 bits in hex), so that log lines about one
    /// token can be matched.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(*self)
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenDigest({})", self.fingerprint())
    }
}

/// A token's log fingerprint, formatted on display rather than stored as text.
#[derive(Clone, Copy)]
pub struct Fingerprint(TokenDigest);

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; FINGERPRINT_HEX_LEN];
        // Both lengths are fixed and match, so encoding cannot fail.
        match hex::encode_to_slice(&self.0.0[..FINGERPRINT_HEX_LEN / 2], &mut buf) {
            Ok(()) => f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?),
            Err(_) => Err(std::fmt::Error),
        }
    }
}

/// HMAC-SHA256 under a key drawn at process start. Fingerprints match within one process only,
/// so they cannot be correlated with other systems or brute-forced offline from logs.
pub struct Fingerprinter {
    key: [u8; 32],
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter([REDACTED])")
    }
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Fingerprinter::new()
    }
}

impl Fingerprinter {
    /// A fingerprinter with a fresh random key.
    pub fn new() -> Fingerprinter {
        Fingerprinter {
            key: rand::random(),
        }
    }

    /// The fingerprint of a token: truncated hex HMAC.
    pub fn fingerprint(&self, token: &SecretString) -> Fingerprint {
        self.digest(token).fingerprint()
    }

    /// The token's HMAC (truncated), for finding and comparing tokens without holding them.
    pub fn digest(&self, token: &SecretString) -> TokenDigest {
        let mut out = [0; 16];
        // HMAC accepts keys of any length, so this cannot fail; fall back to a zero digest anyway.
        if let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            mac.update(token.expose_secret().as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        }
        TokenDigest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_within_a_process_and_keyed() {
        let a = Fingerprinter::new();
        let b = Fingerprinter::new();
        let t = SecretString::from("12ab34cd56ef78ab90cd12ef34ab56cd".to_owned());
        let fp = |f: &Fingerprinter| f.fingerprint(&t).to_string();
        assert_eq!(fp(&a), fp(&a));
        assert_eq!(a.digest(&t), a.digest(&t));
        assert_ne!(fp(&a), fp(&b));
        assert_eq!(fp(&a).len(), FINGERPRINT_HEX_LEN);
        assert!(fp(&a).bytes().all(|c| c.is_ascii_hexdigit()));
        assert!(!fp(&a).contains("12ab34cd"));
        // The fingerprint is the start of the MAC, so logs and the index agree.
        let mac = {
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&a.key).unwrap();
            m.update(t.expose_secret().as_bytes());
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(&mac[..FINGERPRINT_HEX_LEN], fp(&a));
        assert!(!format!("{:?}", a.digest(&t)).contains(&mac[FINGERPRINT_HEX_LEN..]));
    }
}
