//! Development PKI: a throwaway CA, a server certificate for `localhost` and client
//! certificates, so that the demo and the tests run real mTLS without any outside tooling.
//!
//! Not for production: the CA key sits next to the certificates it signs.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use secrecy::{ExposeSecret, SecretString};

use crate::transport::tls::TlsFiles;

/// How long the development CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// How long issued leaf certificates are valid.
const LEAF_VALIDITY: time::Duration = time::Duration::days(365);
/// Back-dating of `not_before`, so small clock differences between machines do not matter.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Why the development PKI could not be created, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertsError {
    /// A file or directory could not be read or written.
    #[error("cannot access {path}: {source}; check that the directory is writable")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// Only one of `ca.crt` / `ca.key` exists, so the CA cannot be reused.
    #[error(
        "{present} exists but {missing} does not; delete the directory {dir} to create a fresh development PKI"
    )]
    IncompleteCa {
        /// The PKI directory.
        dir: PathBuf,
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// An existing CA certificate or key could not be loaded (contents are never echoed).
    #[error(
        "cannot load the development CA from {path}: {detail}; delete the directory to create a fresh one"
    )]
    BadCa {
        /// The file at fault.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rcgen refused to build a certificate (e.g. a name that is not valid in a SAN).
    #[error("cannot issue the {what} certificate: {detail}; check the names given")]
    Issue {
        /// Which certificate ("CA", "server", "client").
        what: &'static str,
        /// What rcgen said.
        detail: String,
    },
}

/// A certificate and its private key, both PEM; the key is a secret and never printed.
#[derive(Debug, Clone)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: SecretString,
}

impl CertPair {
    /// Writes `NAME.crt` and `NAME.key` (the key with 0600 permissions on unix) into `dir`,
    /// creating it if needed; returns the two paths (certificate, key).
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), DevCertsError> {
        create_dir(dir)?;
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_file(&cert, self.cert_pem.as_bytes(), false)?;
        write_file(&key, self.key_pem.expose_secret().as_bytes(), true)?;
        Ok((cert, key))
    }
}

/// Where [`DevPki::load_or_create`] keeps its files inside its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiFiles {
    /// `ca.crt`: the CA certificate (trust anchor for both server and clients).
    pub ca_cert: PathBuf,
    /// `ca.key`: the CA private key.
    pub ca_key: PathBuf,
    /// `server.crt`: the server certificate (localhost, 127.0.0.1, ::1).
    pub server_cert: PathBuf,
    /// `server.key`: the server private key.
    pub server_key: PathBuf,
}

impl DevPkiFiles {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
        }
    }

    /// The server TLS files for these certificates: the development CA also signs clients.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            client_ca: self.ca_cert.clone(),
        }
    }
}

/// A development certificate authority with a server certificate it issued; issues client
/// certificates on demand.
pub struct DevPki {
    ca_cert_pem: String,
    ca: Issuer<'static, KeyPair>,
    server: CertPair,
}

impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki").finish_non_exhaustive()
    }
}

impl DevPki {
    /// Loads the PKI from `dir` (`ca.crt`, `ca.key`, `server.crt`, `server.key`), creating
    /// whatever is missing, so that repeated runs keep trusting the same CA. A new CA always
    /// gets a new server certificate. Keys are written with 0600 permissions on unix.
    pub fn load_or_create(dir: &Path) -> Result<Self, DevCertsError> {
        create_dir(dir)?;
        let files = DevPkiFiles::in_dir(dir);
        let (ca_cert_pem, ca, ca_is_new) = match (files.ca_cert.exists(), files.ca_key.exists()) {
            (true, true) => {
                let (pem, ca) = load_ca(&files.ca_cert, &files.ca_key)?;
                (pem, ca, false)
            }
            (false, false) => {
                let (pem, key_pem, ca) = new_ca()?;
                write_file(&files.ca_key, key_pem.expose_secret().as_bytes(), true)?;
                write_file(&files.ca_cert, pem.as_bytes(), false)?;
                (pem, ca, true)
            }
            (cert_exists, _) => {
                let (present, missing) = if cert_exists {
                    (files.ca_cert.clone(), files.ca_key.clone())
                } else {
                    (files.ca_key.clone(), files.ca_cert.clone())
                };
                return Err(DevCertsError::IncompleteCa {
                    dir: dir.to_path_buf(),
                    present,
                    missing,
                });
            }
        };
        let reuse_server = !ca_is_new && files.server_cert.exists() && files.server_key.exists();
        let server = if reuse_server {
            CertPair {
                cert_pem: read_string(&files.server_cert)?,
                key_pem: SecretString::from(read_string(&files.server_key)?),
            }
        } else {
            let server = issue_server(&ca, &default_server_names())?;
            write_file(
                &files.server_key,
                server.key_pem.expose_secret().as_bytes(),
                true,
            )?;
            write_file(&files.server_cert, server.cert_pem.as_bytes(), false)?;
            server
        };
        Ok(Self {
            ca_cert_pem,
            ca,
            server,
        })
    }

    /// A fresh PKI that lives only in memory; each call makes a new, unrelated CA (which is
    /// what "untrusted CA" tests need).
    pub fn in_memory() -> Result<Self, DevCertsError> {
        let (ca_cert_pem, _key, ca) = new_ca()?;
        let server = issue_server(&ca, &default_server_names())?;
        Ok(Self {
            ca_cert_pem,
            ca,
            server,
        })
    }

    /// The CA certificate, PEM: what clients trust for the server and the server trusts for
    /// clients.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The server certificate (SANs `localhost`, `127.0.0.1`, `::1`) and its key.
    pub fn server(&self) -> &CertPair {
        &self.server
    }

    /// Issues another server certificate with the given DNS names / IP addresses, e.g. to
    /// rotate the server certificate.
    pub fn issue_server(&self, names: &[&str]) -> Result<CertPair, DevCertsError> {
        let names: Vec<String> = names.iter().map(|s| (*s).to_string()).collect();
        issue_server(&self.ca, &names)
    }

    /// Issues a client certificate with an optional SPIFFE ID (as its one URI SAN), DNS SANs
    /// and a subject common name.
    pub fn issue_client(
        &self,
        spiffe: Option<&str>,
        dns: &[&str],
        cn: &str,
    ) -> Result<CertPair, DevCertsError> {
        let uris: Vec<&str> = spiffe.into_iter().collect();
        self.issue_client_with_uris(&uris, dns, cn)
    }

    /// Issues a client certificate with any URI SANs, including several or non-SPIFFE ones,
    /// so tests can show that such certificates are refused or ignored.
    pub fn issue_client_with_uris(
        &self,
        uris: &[&str],
        dns: &[&str],
        cn: &str,
    ) -> Result<CertPair, DevCertsError> {
        issue(&self.ca, client_params(uris, dns, cn)?, "client")
    }

    /// Issues a client certificate with an optional SPIFFE ID and a subject CN that stops being
    /// valid at `not_after` (seconds precision), so tests can show what happens once it expired.
    pub fn issue_client_until(
        &self,
        spiffe: Option<&str>,
        cn: &str,
        not_after: std::time::SystemTime,
    ) -> Result<CertPair, DevCertsError> {
        let uris: Vec<&str> = spiffe.into_iter().collect();
        let mut params = client_params(&uris, &[], cn)?;
        params.not_after = time::OffsetDateTime::from(not_after);
        issue(&self.ca, params, "client")
    }

    /// Issues an intermediate CA under this CA whose name constraints permit the DNS subtrees
    /// `permitted` (none: no permitted subtree) and exclude `excluded`, so tests can show how a
    /// constrained sub-CA's certificates are treated.
    pub fn issue_sub_ca(
        &self,
        permitted: &[&str],
        excluded: &[&str],
    ) -> Result<DevSubCa, DevCertsError> {
        let key = KeyPair::generate().map_err(rcgen_err("sub-CA"))?;
        let mut params = leaf_params("tableau-token-broker development sub-CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let dns = |names: &[&str]| -> Vec<GeneralSubtree> {
            names
                .iter()
                .map(|n| GeneralSubtree::DnsName((*n).to_owned()))
                .collect()
        };
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: dns(permitted),
            excluded_subtrees: dns(excluded),
        });
        let cert = params
            .signed_by(&key, &self.ca)
            .map_err(rcgen_err("sub-CA"))?;
        Ok(DevSubCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }
}

/// An intermediate CA of a [`DevPki`] (see [`DevPki::issue_sub_ca`]).
pub struct DevSubCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevSubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSubCa").finish_non_exhaustive()
    }
}

impl DevSubCa {
    /// The sub-CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a client certificate like [`DevPki::issue_client_with_uris`]; its `cert_pem` holds
    /// the chain a client presents: the leaf, then this sub-CA.
    pub fn issue_client_with_uris(
        &self,
        uris: &[&str],
        dns: &[&str],
        cn: &str,
    ) -> Result<CertPair, DevCertsError> {
        let leaf = issue(&self.issuer, client_params(uris, dns, cn)?, "client")?;
        Ok(CertPair {
            cert_pem: format!("{}{}", leaf.cert_pem, self.cert_pem),
            key_pem: leaf.key_pem,
        })
    }
}

fn client_params(
    uris: &[&str],
    dns: &[&str],
    cn: &str,
) -> Result<CertificateParams, DevCertsError> {
    let mut sans = Vec::new();
    for u in uris {
        sans.push(SanType::URI(ia5("client", u)?));
    }
    for d in dns {
        sans.push(SanType::DnsName(ia5("client", d)?));
    }
    let mut params = leaf_params(cn);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
}

fn rcgen_err(what: &'static str) -> impl Fn(rcgen::Error) -> DevCertsError {
    move |e| DevCertsError::Issue {
        what,
        detail: e.to_string(),
    }
}

fn ia5(what: &'static str, s: &str) -> Result<rcgen::string::Ia5String, DevCertsError> {
    rcgen::string::Ia5String::try_from(s).map_err(rcgen_err(what))
}

fn new_ca() -> Result<(String, SecretString, Issuer<'static, KeyPair>), DevCertsError> {
    let key = KeyPair::generate().map_err(rcgen_err("CA"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    // A unique name per CA, so a certificate from another development CA is reported as
    // "unknown issuer" rather than as a bad signature.
    let id = uuid::Uuid::new_v4().simple().to_string();
    dn.push(
        DnType::CommonName,
        format!("tableau-token-broker development CA {}", &id[..8]),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key).map_err(rcgen_err("CA"))?;
    let key_pem = SecretString::from(key.serialize_pem());
    Ok((cert.pem(), key_pem, Issuer::new(params, key)))
}

fn load_ca(cert: &Path, key: &Path) -> Result<(String, Issuer<'static, KeyPair>), DevCertsError> {
    let cert_pem = read_string(cert)?;
    let key_pem = SecretString::from(read_string(key)?);
    let key_pair =
        KeyPair::from_pem(key_pem.expose_secret()).map_err(|_| DevCertsError::BadCa {
            path: key.to_path_buf(),
            detail: "not a PEM private key rcgen can use".into(),
        })?;
    let issuer =
        Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(|e| DevCertsError::BadCa {
            path: cert.to_path_buf(),
            detail: e.to_string(),
        })?;
    Ok((cert_pem, issuer))
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    params
}

fn issue_server(
    ca: &Issuer<'static, KeyPair>,
    names: &[String],
) -> Result<CertPair, DevCertsError> {
    let with_sans = CertificateParams::new(names.to_vec()).map_err(rcgen_err("server"))?;
    let mut params = leaf_params(names.first().map_or("server", String::as_str));
    params.subject_alt_names = with_sans.subject_alt_names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(ca, params, "server")
}

fn issue(
    ca: &Issuer<'static, KeyPair>,
    params: CertificateParams,
    what: &'static str,
) -> Result<CertPair, DevCertsError> {
    let key = KeyPair::generate().map_err(rcgen_err(what))?;
    let cert = params.signed_by(&key, ca).map_err(rcgen_err(what))?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: SecretString::from(key.serialize_pem()),
    })
}

fn create_dir(dir: &Path) -> Result<(), DevCertsError> {
    std::fs::create_dir_all(dir).map_err(|source| DevCertsError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn read_string(path: &Path) -> Result<String, DevCertsError> {
    std::fs::read_to_string(path).map_err(|source| DevCertsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a server reloading concurrently never sees
/// a half-written file; `secret` files get 0600 permissions on unix.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), DevCertsError> {
    let io_err = |source| DevCertsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp).map_err(io_err)?;
    #[cfg(unix)]
    {
        // `mode` applies only when the file is created; make sure a stale temp file is tight too.
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err)?;
    }
    file.write_all(contents).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_or_create_reuses_files_and_protects_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevPki::load_or_create(dir.path()).unwrap();
        let second = DevPki::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
        assert_eq!(first.server().cert_pem, second.server().cert_pem);
        let client = second.issue_client(None, &[], "c").unwrap();
        client.write(dir.path(), "client").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in ["ca.key", "server.key", "client.key"] {
                let mode = std::fs::metadata(dir.path().join(key))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{key}");
            }
        }
        assert!(!format!("{first:?}").contains("PRIVATE"));
        assert!(!format!("{:?}", client).contains("PRIVATE"));
    }

    #[test]
    fn incomplete_ca_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        DevPki::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let err = DevPki::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, DevCertsError::IncompleteCa { .. }));
        assert!(err.to_string().contains("delete the directory"), "{err}");
    }

    #[test]
    fn a_new_ca_gets_a_new_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = DevPki::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let second = DevPki::load_or_create(dir.path()).unwrap();
        assert_ne!(first.ca_cert_pem(), second.ca_cert_pem());
        assert_ne!(first.server().cert_pem, second.server().cert_pem);
    }
}
