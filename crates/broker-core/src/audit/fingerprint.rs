//! Token fingerprints: an HMAC that lets two audit records about the same token be matched
//! without revealing it. With a key shared by every replica (`[audit] hmac_key_file`), one token
//! has one fingerprint on every replica and across restarts, so an operator holding a leaked
//! token can find it in the trail (`tableau-token-broker audit fingerprint`).

use std::path::Path;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};

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

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Written as its hex text straight into a record, with no string in between.
impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

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

/// Shortest key accepted from a key file: 32 bytes, the HMAC-SHA256 block's worth of security.
pub const MIN_KEY_LEN: usize = 32;
/// Longest key file read: a key is a short secret, so anything larger is a wrong path.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Why a fingerprint key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read the fingerprint key file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key is too short or too long.
    #[error(
        "the fingerprint key file {path} holds {len} byte(s); it needs {MIN_KEY_LEN} to {MAX_KEY_FILE_LEN} (make one with `head -c 32 /dev/urandom | base64 > FILE`)"
    )]
    Length {
        /// The file.
        path: std::path::PathBuf,
        /// Its key length after trimming the trailing newline.
        len: usize,
    },
}

/// HMAC-SHA256 of tokens under a key: either drawn at process start (fingerprints then match
/// within one process only) or read from a file shared by all replicas (they match everywhere).
pub struct Fingerprinter {
    key: zeroize::Zeroizing<Vec<u8>>,
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
    /// A fingerprinter with a fresh random key: fingerprints match within this process only.
    pub fn new() -> Fingerprinter {
        let key: [u8; 32] = rand::random();
        Fingerprinter {
            key: zeroize::Zeroizing::new(key.to_vec()),
        }
    }

    /// A fingerprinter with the key in `path` (its bytes, less one trailing newline), so every
    /// process given the same file computes the same fingerprints.
    pub fn from_key_file(path: &Path) -> Result<Fingerprinter, KeyFileError> {
        let read = |source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_KEY_FILE_LEN {
            return Err(KeyFileError::Length {
                path: path.to_owned(),
                len: usize::try_from(len).unwrap_or(usize::MAX),
            });
        }
        let mut key = zeroize::Zeroizing::new(std::fs::read(path).map_err(read)?);
        while matches!(key.last(), Some(b'\n' | b'\r')) {
            key.pop();
        }
        if key.len() < MIN_KEY_LEN {
            return Err(KeyFileError::Length {
                path: path.to_owned(),
                len: key.len(),
            });
        }
        Ok(Fingerprinter { key })
    }

    /// The fingerprint of a token: truncated hex HMAC.
    pub fn fingerprint(&self, token: &SecretString) -> Fingerprint {
        self.digest(token).fingerprint()
    }

    /// The fingerprint of a set of claims beyond `scp` (their canonical JSON), for the audit
    /// record: equal claims give equal fingerprints, and the values are never written.
    pub fn claims_fingerprint(&self, claims: &crate::claims::ClaimSet) -> Fingerprint {
        self.fingerprint(&SecretString::from(claims.canonical()))
    }

    /// The token's HMAC (truncated), for finding and comparing tokens without holding them.
    pub fn digest(&self, token: &SecretString) -> TokenDigest {
        let mut out = [0; 16];
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.key);
        let tag = hmac::sign(&key, token.expose_secret().as_bytes());
        out.copy_from_slice(&tag.as_ref()[..16]);
        TokenDigest(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_the_fingerprint_as_its_hex_text() {
        let fp = Fingerprinter::new().fingerprint(&SecretString::from("tok"));
        let text = fp.to_string();
        assert_eq!(text.len(), FINGERPRINT_HEX_LEN);
        assert_eq!(serde_json::to_string(&fp).unwrap(), format!("\"{text}\""));
        assert_eq!(format!("{fp:?}"), format!("Fingerprint({text})"));
    }

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
            let m = hmac::Key::new(hmac::HMAC_SHA256, &a.key);
            hex::encode(hmac::sign(&m, t.expose_secret().as_bytes()).as_ref())
        };
        assert_eq!(&mac[..FINGERPRINT_HEX_LEN], fp(&a));
        assert!(!format!("{:?}", a.digest(&t)).contains(&mac[FINGERPRINT_HEX_LEN..]));
    }

    #[test]
    fn a_key_file_gives_the_same_fingerprint_in_every_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let a = Fingerprinter::from_key_file(&path).unwrap();
        let b = Fingerprinter::from_key_file(&path).unwrap();
        let t = SecretString::from("a-token".to_owned());
        assert_eq!(a.fingerprint(&t).to_string(), b.fingerprint(&t).to_string());
        std::fs::write(&path, "short\n").unwrap();
        let e = Fingerprinter::from_key_file(&path).unwrap_err().to_string();
        assert!(e.contains("5 byte(s)"), "{e}");
        assert!(Fingerprinter::from_key_file(&dir.path().join("missing")).is_err());
    }
}
