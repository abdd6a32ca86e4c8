//! Name constraints for the subject CN.
//!
//! A CA's name constraints bound the names its subordinates may certify, and webpki enforces them
//! on the SANs only: the subject CN is free text no verifier checks against them. So a
//! name-constrained sub-CA could issue a certificate whose CN names any caller outside its
//! subtree. A CN is therefore taken as an identity only when no CA on the certificate's path
//! (the intermediates the client sent and the trust anchors of the client CA file) has a name
//! constraints extension, or when the CN, read as a DNS name, satisfies every one of them: it lies
//! inside one of the CA's permitted `dNSName` subtrees (when the CA lists permitted subtrees at
//! all; a CA whose permitted subtrees hold no `dNSName` permits no CN) and inside none of its
//! excluded `dNSName` subtrees. An extension that does not parse permits no CN either.

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, GeneralSubtree, NameConstraints};
use x509_parser::prelude::FromDer;

/// Longest CA path walked from the leaf; webpki's own limit is lower.
const MAX_DEPTH: usize = 8;

/// Whether `cn`, the subject CN of `leaf`, may name the caller given the intermediates the client
/// presented (`presented`, leaf excluded) and the client CA file's certificates (`anchors`).
/// Every certificate whose subject is the issuer of a certificate on the way up counts (two CAs
/// with the same name both count: the stricter wins).
pub fn cn_satisfies_name_constraints(
    cn: &str,
    leaf: &X509Certificate<'_>,
    presented: &[CertificateDer<'_>],
    anchors: &[CertificateDer<'_>],
) -> bool {
    let mut cas = Vec::with_capacity(presented.len() + anchors.len());
    for der in presented.iter().chain(anchors) {
        match X509Certificate::from_der(der) {
            Ok((_, c)) => cas.push(c),
            // A CA certificate that cannot be read cannot be shown to leave the CN alone.
            Err(_) => return false,
        }
    }
    let mut used = vec![false; cas.len()];
    let mut issuers: Vec<&[u8]> = vec![leaf.issuer().as_raw()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for (i, ca) in cas.iter().enumerate() {
            if used[i] || !issuers.contains(&ca.subject().as_raw()) {
                continue;
            }
            used[i] = true;
            match ca.name_constraints() {
                Ok(None) => {}
                Ok(Some(nc)) => {
                    if !permits(nc.value, cn) {
                        return false;
                    }
                }
                Err(_) => return false,
            }
            // A self-issued anchor ends its branch.
            if ca.issuer().as_raw() != ca.subject().as_raw() {
                next.push(ca.issuer().as_raw());
            }
        }
        if next.is_empty() {
            return true;
        }
        issuers = next;
    }
    // Deeper than any path webpki accepts.
    false
}

/// The `dNSName` bases among `subtrees`.
fn dns<'a>(subtrees: &'a Option<Vec<GeneralSubtree<'_>>>) -> Vec<&'a str> {
    subtrees
        .iter()
        .flatten()
        .filter_map(|s| match &s.base {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect()
}

/// Whether one CA's constraints allow `cn` read as a DNS name.
fn permits(nc: &NameConstraints<'_>, cn: &str) -> bool {
    if dns(&nc.excluded_subtrees)
        .iter()
        .any(|base| dns_within(cn, base))
    {
        return false;
    }
    match &nc.permitted_subtrees {
        Some(p) if !p.is_empty() => {
            is_dns_name(cn)
                && dns(&nc.permitted_subtrees)
                    .iter()
                    .any(|base| dns_within(cn, base))
        }
        _ => true,
    }
}

/// RFC 5280 `dNSName` subtree matching: `example.org` covers itself and every name below it,
/// `.example.org` only the names below it; an empty base covers every name. Case-insensitive.
fn dns_within(name: &str, base: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let base = base.trim_end_matches('.').to_ascii_lowercase();
    if base.is_empty() {
        return true;
    }
    match base.strip_prefix('.') {
        Some(parent) => name.len() > parent.len() + 1 && name.ends_with(&format!(".{parent}")),
        None => name == base || name.ends_with(&format!(".{base}")),
    }
}

/// A host name: dot-separated labels of letters, digits, `-` and `_`, 1 to 63 bytes each, 253 in
/// all. Anything else cannot lie inside a `dNSName` subtree.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_subtrees_match_like_rfc_5280() {
        assert!(dns_within("a.example.org", "example.org"));
        assert!(dns_within("example.org", "example.org"));
        assert!(dns_within("A.Example.ORG", "example.org"));
        assert!(!dns_within("badexample.org", "example.org"));
        assert!(!dns_within("example.org", ".example.org"));
        assert!(dns_within("x.example.org", ".example.org"));
        assert!(dns_within("anything", ""));
        assert!(!is_dns_name("test client"));
        assert!(!is_dns_name("spiffe://x/y"));
        assert!(is_dns_name("svc-a.reports.example.org"));
    }
}
