//! Audit helpers: a token fingerprint that lets two log lines about the same token be matched
//! without revealing it.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Hex characters of the HMAC kept in a fingerprint: 64 bits is plenty to tell tokens apart in
/// logs, and too little to be worth attacking.
pub const FINGERPRINT_HEX_LEN: usize = 16;

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
    pub fn fingerprint(&self, token: &SecretString) -> String {
        hex::encode(self.digest(token))[..FINGERPRINT_HEX_LEN].to_owned()
    }

    /// The full HMAC, for comparing tokens without holding them side by side.
    pub fn digest(&self, token: &SecretString) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail; fall back to a zero digest anyway.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(token.expose_secret().as_bytes());
                mac.finalize().into_bytes().into()
            }
            Err(_) => [0; 32],
        }
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
        assert_eq!(a.fingerprint(&t), a.fingerprint(&t));
        assert_ne!(a.fingerprint(&t), b.fingerprint(&t));
        assert_eq!(a.fingerprint(&t).len(), FINGERPRINT_HEX_LEN);
        assert!(!a.fingerprint(&t).contains("12ab34cd"));
    }
}
