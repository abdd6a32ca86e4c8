//! Issuer key files: PKCS#8 private keys (RSA of at least 2048 bits for RS256, P-256 for ES256)
//! and SubjectPublicKeyInfo public keys (published only, for rotation). Parsed with aws-lc-rs, the
//! one crypto stack; the PEM text is held in a zeroized buffer while it is read and never printed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaPublicKeyComponents,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use secrecy::{ExposeSecret, SecretSlice};

/// Shortest RSA key Tableau accepts (shorter ones get sub-code 10088).
pub const MIN_RSA_BITS: usize = 2048;

/// The DER prefix of every P-256 SubjectPublicKeyInfo with an uncompressed point: what follows
/// is `04 || x || y`. Checked byte for byte, so nothing else passes for a P-256 key.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A JOSE signature algorithm the issuer signs with; one per key, decided by the key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (an RSA key of at least 2048 bits).
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl KeyAlg {
    /// The JOSE name, as in the JWT header's `alg` and the JWK's `alg`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Rs256 => "RS256",
            KeyAlg::Es256 => "ES256",
        }
    }

    /// Parses a JOSE name (`RS256`, `ES256`), for `issuer keygen --alg`.
    pub fn parse(s: &str) -> Option<KeyAlg> {
        match s.to_ascii_uppercase().as_str() {
            "RS256" => Some(KeyAlg::Rs256),
            "ES256" => Some(KeyAlg::Es256),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key file cannot be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{} holds no {what} PEM block; {hint}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// `PRIVATE KEY` or `PUBLIC KEY`.
        what: &'static str,
        /// What to do about it.
        hint: &'static str,
    },
    /// The key is neither RSA nor P-256, or its encoding is broken.
    #[error("{} is not an RSA (RS256) or P-256 (ES256) key: {why}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        why: String,
    },
    /// An RSA key shorter than Tableau accepts.
    #[error("{} is a {bits}-bit RSA key; Tableau refuses RSA keys under {MIN_RSA_BITS} bits (sub-code 10088): generate a new one with `tableau-token-broker issuer keygen`", path.display())]
    RsaTooShort {
        /// The file.
        path: PathBuf,
        /// Its modulus length (0 when the parser refused it before saying).
        bits: usize,
    },
    /// Generating or writing a key failed.
    #[error("{0}")]
    Generate(String),
}

/// The public half as JWK parameters need it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PublicParts {
    /// Big-endian modulus and exponent.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The P-256 point's coordinates, 32 bytes each.
    Ec { x: Vec<u8>, y: Vec<u8> },
}

/// A private key that signs. Opaque: it has no `Debug` that could show key material.
pub(crate) enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// Signs `message`; the result is the JWS signature (RSA PKCS#1 v1.5, or ECDSA `r || s`).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| "RSA signing failed".to_owned())?;
                Ok(sig)
            }
            Signer::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "ECDSA signing failed".to_owned()),
        }
    }
}

/// One issuer key: its `kid`, algorithm, size and public half, and the private half when the
/// configuration gave a private key file (a published-only key has none and never signs).
#[derive(Clone)]
pub struct IssuerKey {
    /// The JWT header's `kid` and the JWK's `kid`.
    pub id: String,
    /// RS256 or ES256, from the key's type.
    pub alg: KeyAlg,
    /// Modulus bits (RSA) or curve size (256 for P-256).
    pub bits: usize,
    /// The file it was read from, for summaries and watching.
    pub file: PathBuf,
    pub(crate) public: PublicParts,
    pub(crate) signer: Option<Arc<Signer>>,
}

impl fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKey")
            .field("id", &self.id)
            .field("alg", &self.alg)
            .field("bits", &self.bits)
            .field("file", &self.file)
            .field("private", &self.signer.is_some())
            .finish()
    }
}

impl PartialEq for IssuerKey {
    /// Same ID, algorithm, file and public key, and both private or both published-only: what a
    /// reload compares (two private keys with the same public half are the same key).
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.alg == other.alg
            && self.file == other.file
            && self.public == other.public
            && self.signer.is_some() == other.signer.is_some()
    }
}

impl IssuerKey {
    /// True when this key can sign (it came from a private key file).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }
}

fn read_secret(path: &Path) -> Result<SecretSlice<u8>, KeyError> {
    std::fs::read(path)
        .map(SecretSlice::from)
        .map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Bits of a big-endian unsigned integer.
fn bit_len(n: &[u8]) -> usize {
    let n = n.iter().skip_while(|b| **b == 0).collect::<Vec<_>>();
    match n.first() {
        None => 0,
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`): RSA of at least 2048 bits or
/// P-256. The PEM text and the DER are zeroized once the key is parsed.
pub fn load_private_key(id: &str, path: &Path) -> Result<IssuerKey, KeyError> {
    let pem = read_secret(path)?;
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.expose_secret()).map_err(|_| {
        KeyError::NotPem {
            path: path.to_owned(),
            what: "PRIVATE KEY (PKCS#8)",
            hint: "convert a traditional key with `openssl pkcs8 -topk8 -nocrypt`, or generate one with `tableau-token-broker issuer keygen`",
        }
    })?;
    let bytes = der.secret_pkcs8_der();
    let rsa = aws_lc_rs::rsa::KeyPair::from_pkcs8(bytes);
    let (alg, public, signer) = match rsa {
        Ok(k) => {
            let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
            (
                KeyAlg::Rs256,
                PublicParts::Rsa { n: c.n, e: c.e },
                Signer::Rsa(k),
            )
        }
        Err(rsa_err) => match EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes) {
            Ok(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = ec_point(path, point)?;
                (KeyAlg::Es256, PublicParts::Ec { x, y }, Signer::Ec(k))
            }
            Err(_) if rsa_err.description_() == "TooSmall" => {
                return Err(KeyError::RsaTooShort {
                    path: path.to_owned(),
                    bits: 0,
                });
            }
            Err(_) => {
                return Err(KeyError::Unsupported {
                    path: path.to_owned(),
                    why: format!("the RSA parser said {:?}", rsa_err.description_()),
                });
            }
        },
    };
    finish(id, path, alg, public, Some(Arc::new(signer)))
}

/// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo): published in the
/// JWKS, never signing.
pub fn load_public_key(id: &str, path: &Path) -> Result<IssuerKey, KeyError> {
    let pem = read_secret(path)?;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.expose_secret()).map_err(|_| {
        KeyError::NotPem {
            path: path.to_owned(),
            what: "PUBLIC KEY",
            hint: "export it with `openssl pkey -pubout`",
        }
    })?;
    let der: &[u8] = spki.as_ref();
    let (alg, public) = if let Some(point) = der.strip_prefix(P256_SPKI_PREFIX.as_slice()) {
        let (x, y) = ec_point(path, point)?;
        (KeyAlg::Es256, PublicParts::Ec { x, y })
    } else {
        let k = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|e| KeyError::Unsupported {
            path: path.to_owned(),
            why: format!("the RSA parser said {:?}", e.description_()),
        })?;
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(&k);
        (KeyAlg::Rs256, PublicParts::Rsa { n: c.n, e: c.e })
    };
    finish(id, path, alg, public, None)
}

fn ec_point(path: &Path, point: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    match point.split_first() {
        Some((4, xy)) if xy.len() == 64 => {
            let (x, y) = xy.split_at(32);
            Ok((x.to_vec(), y.to_vec()))
        }
        _ => Err(KeyError::Unsupported {
            path: path.to_owned(),
            why: "the P-256 point is not uncompressed".to_owned(),
        }),
    }
}

fn finish(
    id: &str,
    path: &Path,
    alg: KeyAlg,
    public: PublicParts,
    signer: Option<Arc<Signer>>,
) -> Result<IssuerKey, KeyError> {
    let bits = match &public {
        PublicParts::Rsa { n, .. } => bit_len(n),
        PublicParts::Ec { .. } => 256,
    };
    if alg == KeyAlg::Rs256 && bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooShort {
            path: path.to_owned(),
            bits,
        });
    }
    Ok(IssuerKey {
        id: id.to_owned(),
        alg,
        bits,
        file: path.to_owned(),
        public,
        signer,
    })
}

/// A new private key as PKCS#8 PEM: RSA 2048 (RS256) or P-256 (ES256). For `issuer keygen`.
pub fn generate_pem(alg: KeyAlg) -> Result<SecretSlice<u8>, KeyError> {
    let der: Vec<u8> = match alg {
        KeyAlg::Rs256 => {
            let k = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| KeyError::Generate("generating an RSA key failed".into()))?;
            k.as_der()
                .map_err(|_| KeyError::Generate("encoding the RSA key failed".into()))?
                .as_ref()
                .to_vec()
        }
        KeyAlg::Es256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Generate("generating a P-256 key failed".into()))?
                .as_ref()
                .to_vec()
        }
    };
    let der = SecretSlice::from(der);
    Ok(SecretSlice::from(pem_encode(
        "PRIVATE KEY",
        der.expose_secret(),
    )))
}

/// The public half of a key as a SubjectPublicKeyInfo PEM, for Tableau Cloud Manager (UAT) and
/// for publishing a key before it signs.
pub fn public_pem(key: &IssuerKey) -> String {
    let der = match &key.public {
        PublicParts::Ec { x, y } => {
            let mut d = P256_SPKI_PREFIX.to_vec();
            d.push(4);
            d.extend_from_slice(x);
            d.extend_from_slice(y);
            d
        }
        PublicParts::Rsa { n, e } => {
            let comps = RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            comps
                .as_der()
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default()
        }
    };
    String::from_utf8(pem_encode("PUBLIC KEY", &der)).unwrap_or_default()
}

fn pem_encode(label: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n").into_bytes();
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(format!("-----END {label}-----\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn generated_keys_load_and_their_public_halves_load_too() {
        let dir = tempfile::tempdir().unwrap();
        for (alg, bits) in [(KeyAlg::Es256, 256), (KeyAlg::Rs256, 2048)] {
            let pem = generate_pem(alg).unwrap();
            let p = write(dir.path(), "k.pem", pem.expose_secret());
            let k = load_private_key("k1", &p).unwrap();
            assert_eq!((k.alg, k.bits, k.can_sign()), (alg, bits, true));
            let pubp = write(dir.path(), "k.pub.pem", public_pem(&k).as_bytes());
            let pk = load_public_key("k1", &pubp).unwrap();
            assert_eq!((pk.alg, pk.bits, pk.can_sign()), (alg, bits, false));
            assert!(pk.public == k.public);
            assert!(!format!("{k:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn other_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x.pem", b"not a key");
        let e = load_private_key("k", &p).unwrap_err().to_string();
        assert!(e.contains("PRIVATE KEY"), "{e}");
        let e = load_public_key("k", &p).unwrap_err().to_string();
        assert!(e.contains("PUBLIC KEY"), "{e}");
    }
}
