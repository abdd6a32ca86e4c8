//! Who the caller is: the identity types. The certificate → identity extraction lives with the
//! transport in the broker binary; this crate only names the identity and its source.
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

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a caller identity was taken from; kept with the identity so logs and policy errors can
/// say which part of the certificate was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdentitySource {
    /// The certificate's single URI SAN, a SPIFFE ID (`spiffe://trust-domain/path`).
    #[serde(rename = "spiffe")]
    Spiffe,
    /// The certificate's first DNS SAN.
    #[serde(rename = "dns")]
    Dns,
    /// The subject's common name.
    #[serde(rename = "cn")]
    CommonName,
}

impl IdentitySource {
    /// The name used in configuration files (`spiffe`, `dns`, `cn`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spiffe => "spiffe",
            Self::Dns => "dns",
            Self::CommonName => "cn",
        }
    }

    /// The certificate field, as `WhoAmI` and audit lines name it: `uri_san`, `dns_san`, `cn`.
    pub fn cert_field(self) -> &'static str {
        match self {
            Self::Spiffe => "uri_san",
            Self::Dns => "dns_san",
            Self::CommonName => "cn",
        }
    }

    /// The field in words, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Spiffe => "URI SAN (SPIFFE ID)",
            Self::Dns => "DNS SAN",
            Self::CommonName => "subject CN",
        }
    }
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller of an RPC: what policy is checked against. It can only be built
/// from a verified certificate (or by tests), never from anything the client sends in a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallerIdentity {
    /// The identity string, e.g. `spiffe://example.org/ns/reports/sa/exporter`. Shared, because
    /// every request on the connection carries a copy.
    pub id: Arc<str>,
    /// Which part of the certificate it came from.
    pub source: IdentitySource,
}

impl fmt::Display for CallerIdentity {
    /// `value (field)`, escaped and cut like any echoed input: a CN is free text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            crate::echo::echo(&self.id),
            self.source.cert_field()
        )
    }
}

/// Which certificate fields may name the caller, in the order they are tried. Operators narrow
/// it (e.g. SPIFFE only) so that a certificate cannot identify itself through a weaker field.
///
/// Deserializes from a non-empty list of distinct names: `["spiffe", "dns", "cn"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<IdentitySource>", into = "Vec<IdentitySource>")]
pub struct IdentitySources(Vec<IdentitySource>);

impl Default for IdentitySources {
    /// All three sources: SPIFFE ID, then DNS SAN, then subject CN.
    fn default() -> Self {
        Self(vec![
            IdentitySource::Spiffe,
            IdentitySource::Dns,
            IdentitySource::CommonName,
        ])
    }
}

/// Why a list of identity sources was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentitySourcesError {
    /// The list is empty, so no caller could ever be identified.
    #[error("identity sources must not be empty; list at least one of \"spiffe\", \"dns\", \"cn\"")]
    Empty,
    /// A source is listed twice.
    #[error("identity source \"{0}\" is listed twice; list each source at most once")]
    Duplicate(IdentitySource),
}

impl IdentitySources {
    /// Builds a list, refusing an empty one or one with duplicates.
    pub fn new(sources: Vec<IdentitySource>) -> Result<Self, IdentitySourcesError> {
        if sources.is_empty() {
            return Err(IdentitySourcesError::Empty);
        }
        for (i, s) in sources.iter().enumerate() {
            if sources[..i].contains(s) {
                return Err(IdentitySourcesError::Duplicate(*s));
            }
        }
        Ok(Self(sources))
    }

    /// The sources in the order they are tried.
    pub fn as_slice(&self) -> &[IdentitySource] {
        &self.0
    }

    /// Whether `source` may name the caller.
    pub fn contains(&self, source: IdentitySource) -> bool {
        self.0.contains(&source)
    }
}

impl TryFrom<Vec<IdentitySource>> for IdentitySources {
    type Error = IdentitySourcesError;
    fn try_from(v: Vec<IdentitySource>) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<IdentitySources> for Vec<IdentitySource> {
    fn from(s: IdentitySources) -> Self {
        s.0
    }
}

/// Checks the SPIFFE ID shape (also used on configured SPIFFE IDs, which could never match if
/// invalid): `spiffe://` scheme (lowercase), a lowercase trust domain of
/// `[a-z0-9.-_]`, and a non-empty path of non-empty segments of `[a-zA-Z0-9.-_]` other than
/// `.` and `..` (so no port, userinfo, query or fragment).
pub fn validate_spiffe_id(uri: &str) -> Result<(), &'static str> {
    const MAX_LEN: usize = 2048;
    const MAX_TRUST_DOMAIN: usize = 255;
    if uri.len() > MAX_LEN {
        return Err("longer than 2048 bytes");
    }
    let rest = uri
        .strip_prefix("spiffe://")
        .ok_or("the scheme must be lowercase `spiffe://`")?;
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => return Err("the path is empty; a workload ID needs a path"),
    };
    if trust_domain.is_empty() {
        return Err("the trust domain is empty");
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN {
        return Err("the trust domain is longer than 255 bytes");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(
            "the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (no port, userinfo, query or fragment)",
        );
    }
    // `path` starts with '/'.
    let segments = path.split('/').skip(1);
    for segment in segments {
        if segment.is_empty() {
            return Err("the path has an empty segment or a trailing `/`");
        }
        if segment == "." || segment == ".." {
            return Err("the path has a `.` or `..` segment");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(
                "the path may hold only letters, digits, `.`, `-`, `_` and `/` (no query or fragment)",
            );
        }
    }
    Ok(())
}
