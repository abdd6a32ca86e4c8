//! Who the caller is, derived only from its verified TLS client certificate.
//!
//! The rules follow the X.509-SVID profile where SPIFFE is in use: a certificate with more than
//! one URI SAN is refused outright (an SVID carries exactly one), a single `spiffe://` URI SAN is
//! the identity, a URI SAN that is not a SPIFFE ID is not an identity; otherwise the first DNS
//! SAN, otherwise the subject CN. Which of these sources count, and in which order, is
//! configurable with [`IdentitySources`].
//!
//! The identity keeps its source end to end: a caller entry names the field it matches, so a CN or
//! DNS SAN can never stand in for a SPIFFE ID. A CN or DNS SAN holding `://` is never an identity
//! at all (it can only be an attempt to look like a URI).

use std::sync::Arc;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

pub use tableau_token_broker_core::identity::{
    CallerIdentity, IdentitySource, IdentitySources, IdentitySourcesError, validate_spiffe_id,
};

/// Why no caller identity could be derived from a (verified) certificate; the connection is
/// then refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate could not be parsed as X.509.
    #[error("client certificate is not valid X.509: {0}")]
    Parse(String),
    /// The certificate has more than one URI SAN, which the X.509-SVID rules forbid.
    #[error(
        "client certificate has {0} URI SANs; an X.509-SVID must have exactly one, so issue it with a single URI SAN"
    )]
    MultipleUriSans(usize),
    /// The certificate has a SAN entry that could not be decoded.
    #[error("client certificate has a malformed subject alternative name; reissue it")]
    MalformedSan,
    /// The single URI SAN claims to be a SPIFFE ID but is not a valid one.
    #[error(
        "client certificate URI SAN {} is not a valid SPIFFE ID: {reason}",
        crate::input::quoted(uri)
    )]
    InvalidSpiffeId {
        /// The URI as found in the certificate.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// None of the enabled sources is present in the certificate.
    #[error(
        "client certificate has no identity in any enabled source ({tried}); issue it with one of those, or enable another source"
    )]
    NoIdentity {
        /// The enabled sources, comma-separated.
        tried: String,
    },
}

/// Derives the caller identity from the DER of a leaf certificate that TLS has already
/// verified, trying `sources` in order. It sees no CA, so it cannot apply name constraints to the
/// subject CN; the transport uses [`identity_from_chain`].
pub fn identity_from_cert(
    der: &[u8],
    sources: &IdentitySources,
) -> Result<CallerIdentity, IdentityError> {
    identity_with(der, sources, |_, _| true)
}

/// [`identity_from_cert`] for a verified chain as the client presented it (`chain`, leaf first)
/// and the client CA file's certificates (`anchors`): the subject CN counts only when it
/// satisfies the name constraints of every CA on its path
/// ([`super::name_constraints::cn_satisfies_name_constraints`]).
pub fn identity_from_chain(
    chain: &[rustls_pki_types::CertificateDer<'_>],
    anchors: &[rustls_pki_types::CertificateDer<'_>],
    sources: &IdentitySources,
) -> Result<CallerIdentity, IdentityError> {
    let Some((leaf, presented)) = chain.split_first() else {
        return Err(IdentityError::Parse("no certificate".to_owned()));
    };
    identity_with(leaf, sources, |cert, cn| {
        let ok =
            super::name_constraints::cn_satisfies_name_constraints(cn, cert, presented, anchors);
        if !ok {
            tracing::info!(cn = %crate::input::echo(cn), "the subject CN is outside the name constraints of a CA on its path; it names no caller");
        }
        ok
    })
}

fn identity_with(
    der: &[u8],
    sources: &IdentitySources,
    cn_allowed: impl Fn(&X509Certificate<'_>, &str) -> bool,
) -> Result<CallerIdentity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
    let names: Vec<&GeneralName<'_>> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(IdentityError::MalformedSan),
    };
    if names.iter().any(|n| matches!(n, GeneralName::Invalid(..))) {
        return Err(IdentityError::MalformedSan);
    }
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    if uris.len() > 1 {
        return Err(IdentityError::MultipleUriSans(uris.len()));
    }

    for source in sources.as_slice() {
        let found = match source {
            IdentitySource::Spiffe => match uris.first() {
                Some(uri) if has_spiffe_scheme(uri) => {
                    validate_spiffe_id(uri).map_err(|reason| IdentityError::InvalidSpiffeId {
                        uri: (*uri).to_string(),
                        reason,
                    })?;
                    Some((*uri).to_string())
                }
                _ => None,
            },
            IdentitySource::Dns => names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) if usable_name(d) => Some((*d).to_string()),
                _ => None,
            }),
            IdentitySource::CommonName => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .filter(|cn| usable_name(cn) && cn_allowed(&cert, cn))
                .map(str::to_string),
        };
        if let Some(id) = found {
            return Ok(CallerIdentity {
                id: Arc::from(id),
                source: *source,
            });
        }
    }
    Err(IdentityError::NoIdentity {
        tried: sources
            .as_slice()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Longest DNS SAN or CN taken as an identity; DNS names stop at 253 bytes.
const MAX_NAME_BYTES: usize = 255;

/// Whether a DNS SAN or CN value may be an identity: not empty, not absurdly long, no control
/// characters, and never anything URI-shaped (`://`), which only a URI SAN may carry.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && !name.contains("://")
        && !name.chars().any(char::is_control)
}

fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("spiffe://"))
}

// The development PKI makes the certificates, so these run in the default (dev-kit) build.
#[cfg(all(test, feature = "dev-kit"))]
mod tests {
    use super::*;
    use crate::devkit::certs::DevPki;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use serde::Deserialize;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn ident(
        uris: &[&str],
        dns: &[&str],
        cn: &str,
        sources: &IdentitySources,
    ) -> Result<CallerIdentity, IdentityError> {
        let pki = DevPki::in_memory().unwrap();
        let pair = pki.issue_client_with_uris(uris, dns, cn).unwrap();
        identity_from_cert(&der(&pair.cert_pem), sources)
    }

    #[test]
    fn spiffe_id_wins_by_default() {
        let id = ident(
            &["spiffe://example.org/ns/a/sa/b"],
            &["a.example.org"],
            "a",
            &IdentitySources::default(),
        )
        .unwrap();
        assert_eq!(&*id.id, "spiffe://example.org/ns/a/sa/b");
        assert_eq!(id.source, IdentitySource::Spiffe);
    }

    #[test]
    fn two_uri_sans_are_refused_whatever_the_sources() {
        let sources = IdentitySources::new(vec![IdentitySource::CommonName]).unwrap();
        let err = ident(
            &["spiffe://example.org/a", "spiffe://example.org/b"],
            &[],
            "a",
            &sources,
        )
        .unwrap_err();
        assert_eq!(err, IdentityError::MultipleUriSans(2));
    }

    #[test]
    fn non_spiffe_uri_falls_through_to_dns_then_cn() {
        let d = IdentitySources::default();
        let id = ident(&["https://example.org/x"], &["svc.example.org"], "svc", &d).unwrap();
        assert_eq!(
            (&*id.id, id.source),
            ("svc.example.org", IdentitySource::Dns)
        );
        let id = ident(&["https://example.org/x"], &[], "svc", &d).unwrap();
        assert_eq!((&*id.id, id.source), ("svc", IdentitySource::CommonName));
    }

    #[test]
    fn disabled_sources_are_skipped_and_order_is_respected() {
        let only_cn = IdentitySources::new(vec![IdentitySource::CommonName]).unwrap();
        let id = ident(
            &["spiffe://example.org/a"],
            &["a.example.org"],
            "the-cn",
            &only_cn,
        )
        .unwrap();
        assert_eq!(&*id.id, "the-cn");
        let dns_first =
            IdentitySources::new(vec![IdentitySource::Dns, IdentitySource::Spiffe]).unwrap();
        let id = ident(
            &["spiffe://example.org/a"],
            &["a.example.org"],
            "x",
            &dns_first,
        )
        .unwrap();
        assert_eq!(id.source, IdentitySource::Dns);
        let only_spiffe = IdentitySources::new(vec![IdentitySource::Spiffe]).unwrap();
        let err = ident(&[], &["a.example.org"], "x", &only_spiffe).unwrap_err();
        assert!(matches!(err, IdentityError::NoIdentity { .. }), "{err}");
    }

    #[test]
    fn malformed_spiffe_ids_are_refused() {
        for bad in [
            "spiffe://Example.org/a",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "spiffe://example.org:443/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a//b",
            "spiffe://example.org/../a",
            "SPIFFE://example.org/a",
            "spiffe:///a",
        ] {
            assert!(validate_spiffe_id(bad).is_err(), "{bad} should be refused");
        }
        for good in [
            "spiffe://example.org/a",
            "spiffe://td-1.x_y/ns/a.b/sa/c-d_e",
        ] {
            assert_eq!(validate_spiffe_id(good), Ok(()), "{good}");
        }
        let err = ident(
            &["spiffe://Example.org/a"],
            &["a"],
            "a",
            &IdentitySources::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidSpiffeId { .. }),
            "{err}"
        );
    }

    #[test]
    fn sources_deserialize_from_names_and_refuse_bad_lists() {
        #[derive(Deserialize)]
        struct C {
            sources: IdentitySources,
        }
        let c: C = toml::from_str(r#"sources = ["dns", "cn"]"#).unwrap();
        assert_eq!(
            c.sources.as_slice(),
            &[IdentitySource::Dns, IdentitySource::CommonName]
        );
        assert!(toml::from_str::<C>(r#"sources = []"#).is_err());
        assert!(toml::from_str::<C>(r#"sources = ["dns", "dns"]"#).is_err());
        assert!(toml::from_str::<C>(r#"sources = ["email"]"#).is_err());
    }

    #[test]
    fn uri_shaped_cn_or_dns_san_is_never_an_identity() {
        let d = IdentitySources::default();
        let spiffe = "spiffe://example.org/ns/reports/sa/renderer";
        let err = ident(&[], &[], spiffe, &d).unwrap_err();
        assert!(matches!(err, IdentityError::NoIdentity { .. }), "{err}");
        let id = ident(&[], &[spiffe, "b.example.org"], "c", &d).unwrap();
        assert_eq!((&*id.id, id.source), ("b.example.org", IdentitySource::Dns));
        let id = ident(&[], &[spiffe], "plain-cn", &d).unwrap();
        assert_eq!(
            (&*id.id, id.source),
            ("plain-cn", IdentitySource::CommonName)
        );
        assert_eq!(id.to_string(), "plain-cn (cn)");
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            identity_from_cert(b"not a cert", &IdentitySources::default()),
            Err(IdentityError::Parse(_))
        ));
    }
}
