//! `[issuer]` and each site's `trust` (issue 25): validated into an [`Issuer`] and a [`Trust`],
//! every problem located. Kept apart from the rest of the configuration so the trust modes' rules
//! read in one place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Issues;
use super::raw::{RawEas, RawIssuer, RawUat};
use crate::issuer::{DEFAULT_CLOCK_SKEW, Issuer, IssuerKey, IssuerTls, MAX_CLOCK_SKEW, keys};

const AT: &str = "issuer";

/// Oldest REST API version with unified access tokens (Tableau Cloud, December 2025).
pub const MIN_UAT_API_VERSION: (u32, u32) = (3, 27);
/// The username claim of a UAT unless the site names another (Tableau Cloud Manager's default).
pub const DEFAULT_USERNAME_CLAIM: &str = "email";

/// How Tableau trusts the broker for one site.
#[derive(Debug, Clone, PartialEq)]
pub enum Trust {
    /// A connected app with direct trust: HS256 with the app's shared secret
    /// (`[sites.X.connected_app]`).
    Direct,
    /// A connected app with OAuth 2.0 trust: the broker is the issuer and signs with its key.
    Eas(EasTrust),
    /// A unified access token (Tableau Cloud, REST 3.27+), signed with the issuer's key.
    Uat(UatTrust),
}

impl Trust {
    /// The mode's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            Trust::Direct => "direct",
            Trust::Eas(_) => "eas",
            Trust::Uat(_) => "uat",
        }
    }

    /// The issuer that signs for this site (EAS and UAT).
    pub fn issuer(&self) -> Option<&Arc<Issuer>> {
        match self {
            Trust::Direct => None,
            Trust::Eas(e) => Some(&e.issuer),
            Trust::Uat(u) => Some(&u.issuer),
        }
    }
}

/// `[sites.X.eas]`, with the issuer that signs.
#[derive(Debug, Clone, PartialEq)]
pub struct EasTrust {
    /// The `aud` claim: `tableau:<site LUID>` on Tableau Cloud, `tableau` on Tableau Server.
    pub audience: String,
    /// The issuer (`[issuer]`).
    pub issuer: Arc<Issuer>,
}

/// `[sites.X.uat]`, with the issuer that signs.
#[derive(Debug, Clone, PartialEq)]
pub struct UatTrust {
    /// `https://tableau.com/tenantId`.
    pub tenant_id: String,
    /// The claim that carries the Tableau username.
    pub username_claim: String,
    /// The issuer (`[issuer]`).
    pub issuer: Arc<Issuer>,
}

/// Validates `[issuer]`; `None` when it has problems (they are in `iss`).
pub(super) fn build_issuer(
    iss: &mut Issues,
    raw: RawIssuer,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<Issuer> {
    let before = iss.0.len();
    let url = match raw.url.as_deref().map(str::trim) {
        None | Some("") => {
            iss.add(
                format!("{AT}.url"),
                "missing: the iss claim, exactly as registered in Tableau, e.g. \"https://tableau-broker.example.com\"",
            );
            String::new()
        }
        Some(u) => {
            match reqwest::Url::parse(u) {
                Ok(p) if p.scheme() == "https" && p.host().is_some() => {}
                Ok(p) if p.scheme() == "http" && development => {}
                _ => iss.add(
                    format!("{AT}.url"),
                    format!("{u:?} is not an https URL; Tableau only trusts https issuers"),
                ),
            }
            if u.ends_with('/') {
                iss.add(
                    format!("{AT}.url"),
                    "ends with '/': iss must match what is registered in Tableau exactly; remove the slash",
                );
            }
            u.to_owned()
        }
    };
    let listen: Option<SocketAddr> = raw.listen.and_then(|l| {
        l.parse()
            .map_err(|e| {
                iss.add(
                    format!("{AT}.listen"),
                    format!("{l:?} is not an address ({e}); write e.g. \"0.0.0.0:8443\""),
                );
            })
            .ok()
    });
    let tls = match (raw.cert, raw.key) {
        (Some(c), Some(k)) => Some(IssuerTls {
            cert: resolve(&c),
            key: resolve(&k),
        }),
        (None, None) => None,
        _ => {
            iss.add(
                AT,
                "give both cert and key (HTTPS on the issuer listener), or neither (an Ingress terminates TLS)",
            );
            None
        }
    };
    if tls.is_some() && listen.is_none() {
        iss.add(
            AT,
            "cert and key are set but listen is not: they are only for the issuer listener",
        );
    }
    let clock_skew = iss.duration(
        &format!("{AT}.clock_skew"),
        raw.clock_skew.as_deref(),
        DEFAULT_CLOCK_SKEW,
    );
    if clock_skew > MAX_CLOCK_SKEW {
        iss.add(
            format!("{AT}.clock_skew"),
            "more than 60s; keep the broker's clock in sync instead (5s is usual)",
        );
    }
    if raw.keys.is_empty() {
        iss.add(
            format!("{AT}.keys"),
            "empty: add [[issuer.keys]] with id and private_key_file (generate one with `tableau-token-broker issuer keygen`)",
        );
    }
    let mut loaded: Vec<IssuerKey> = Vec::new();
    for (i, k) in raw.keys.into_iter().enumerate() {
        let at = format!("{AT}.keys[{i}]");
        let id = match k.id.as_deref().map(str::trim) {
            Some(id)
                if !id.is_empty()
                    && id.len() <= 128
                    && id.chars().all(|c| c.is_ascii_graphic()) =>
            {
                id.to_owned()
            }
            _ => {
                iss.add(format!("{at}.id"), "missing or not printable ASCII (at most 128 characters): it is the JWT header's kid, e.g. \"2026-12\"");
                continue;
            }
        };
        if loaded.iter().any(|l| l.id == id) {
            iss.add(
                format!("{at}.id"),
                format!("{id:?} is listed twice; never reuse a kid"),
            );
            continue;
        }
        let key = match (k.private_key_file, k.public_key_file) {
            (Some(p), None) => {
                let p = resolve(&p);
                if let Err(m) = super::check_secret_file_mode(&p) {
                    iss.add(format!("{at}.private_key_file"), m);
                    continue;
                }
                keys::load_private_key(&id, &p)
            }
            (None, Some(p)) => keys::load_public_key(&id, &resolve(&p)),
            _ => {
                iss.add(&at, "give exactly one of private_key_file (signs) or public_key_file (published only)");
                continue;
            }
        };
        match key {
            Ok(k) => loaded.push(k),
            Err(e) => iss.add(&at, e.to_string()),
        }
    }
    let active_key = match raw.active_key.as_deref().map(str::trim) {
        None | Some("") => {
            iss.add(
                format!("{AT}.active_key"),
                "missing: name the key id that signs",
            );
            String::new()
        }
        Some(a) => a.to_owned(),
    };
    if iss.0.len() > before {
        return None;
    }
    let issuer = Issuer::new(url, listen, tls, clock_skew, loaded, &active_key);
    if issuer.is_none() {
        iss.add(
            format!("{AT}.active_key"),
            format!("{active_key:?} is not the id of a key with a private_key_file"),
        );
    }
    issuer
}

/// The site's trust mode from `trust` and its `[eas]`/`[uat]` section; `Some(Trust::Direct)` also
/// tells the caller to require `[connected_app]`. `None` when it has problems.
pub(super) fn build_trust(
    iss: &mut Issues,
    at: &str,
    trust: Option<&str>,
    eas: Option<RawEas>,
    uat: Option<RawUat>,
    issuer: Option<&Arc<Issuer>>,
) -> Option<Trust> {
    let mode = trust.unwrap_or("direct");
    if eas.is_some() && mode != "eas" {
        iss.add(
            format!("{at}.eas"),
            format!("set, but trust is {mode:?}: add trust = \"eas\" or remove the section"),
        );
    }
    if uat.is_some() && mode != "uat" {
        iss.add(
            format!("{at}.uat"),
            format!("set, but trust is {mode:?}: add trust = \"uat\" or remove the section"),
        );
    }
    let need_issuer = |iss: &mut Issues| {
        let i = issuer.cloned();
        if i.is_none() {
            iss.add(
                format!("{at}.trust"),
                format!("{mode:?} needs a valid [issuer] with a signing key"),
            );
        }
        i
    };
    match mode {
        "direct" => Some(Trust::Direct),
        "eas" => {
            let audience = match eas.and_then(|e| e.audience).map(|a| a.trim().to_owned()) {
                Some(a) if !a.is_empty() => Some(a),
                _ => {
                    iss.add(format!("{at}.eas.audience"), "missing: \"tableau:<site LUID>\" on Tableau Cloud, \"tableau\" for Tableau Server's server-wide EAS");
                    None
                }
            };
            let issuer = need_issuer(iss);
            Some(Trust::Eas(EasTrust {
                audience: audience?,
                issuer: issuer?,
            }))
        }
        "uat" => {
            let (tenant, claim) = uat.map_or((None, None), |u| (u.tenant_id, u.username_claim));
            let tenant_id = match tenant.map(|t| t.trim().to_owned()) {
                Some(t) if !t.is_empty() => Some(t),
                _ => {
                    iss.add(
                        format!("{at}.uat.tenant_id"),
                        "missing: copy the tenant ID from Tableau Cloud Manager",
                    );
                    None
                }
            };
            let username_claim = claim.unwrap_or_else(|| DEFAULT_USERNAME_CLAIM.to_owned());
            if username_claim.is_empty() || crate::claims::is_reserved(&username_claim) {
                iss.add(format!("{at}.uat.username_claim"), format!("{username_claim:?} cannot carry the username (empty or a registered claim); the default is \"email\""));
            }
            let issuer = need_issuer(iss);
            Some(Trust::Uat(UatTrust {
                tenant_id: tenant_id?,
                username_claim,
                issuer: issuer?,
            }))
        }
        other => {
            iss.add(
                format!("{at}.trust"),
                format!("{other:?} is not \"direct\", \"eas\" or \"uat\""),
            );
            None
        }
    }
}

impl super::SiteConfig {
    /// Who signs this site's JWTs, as far as Tableau can tell them apart: the connected app's
    /// client ID (direct trust) or the issuer URL (EAS, UAT). A session is bound to it (issue 24
    /// point 2), so changing a site's app or trust mode never hands out an older session.
    pub fn signer_id(&self) -> &str {
        match (&self.trust, &self.app) {
            (Trust::Eas(e), _) => &e.issuer.url,
            (Trust::Uat(u), _) => &u.issuer.url,
            (Trust::Direct, Some(app)) => &app.client_id,
            (Trust::Direct, None) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::issuer::{KeyAlg, keys};
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    /// A throwaway 1024-bit RSA key: Tableau refuses it (10088), so check-config must too.
    const RSA_1024: &str = "-----BEGIN PRIVATE KEY-----
MIICdgIBADANBgkqhkiG9w0BAQEFAASCAmAwggJcAgEAAoGBAO6PzHLmk0Xkq9fl
stDMwiGmr0KSKoqA0UgqUwJ3RzOXQRUcZgmZvOjrTPcb/0JPUb7KFtBfyilzVAFb
2v7tI4YgBpUuMGJ3a/jKExI5o+LOquqxyZn8fZsu5HHag3CvaETzXX+QwHQRZnJw
P4hc0ULIIrwdYJVhCT9nXcAf8hkfAgMBAAECgYBbv7g8tIsNhW3FwdSs0yMSeB3N
d5Oe4v4aSBTWzPL4V4KzUNG5fYQW/HAEVaMtaH4i52wwxbZljLJRN3eZNbDEJaUA
77OwCraiiYuuflxZR3yuxCXxqD2eCcwf7x2+1BlIykmA6fdIV0nXB4reffCqEtD5
avdn+Y+5VTJbNpJA8QJBAP1iBaH2dKWYJaamhVEG45H9tksLyKaJrzgvGDmzoGYF
D2m7A25MGVilHGZPQnpCGZUpvhmwGLlBqBwngbbLyAkCQQDxBpZi3zjSqd/+tI0M
56HZAlXwxjBW/GuJuaYtSEsK1MhbeC4duDAeXw51581L15aczhuz/c+DoozvS/mZ
iBHnAkEAj5XGf1t8CoLHg0KF9b6jow1VCf3pfIY1Zu85GSmzUVy4uT+i2BQDoPof
t9JeZ42hlaeL9F6YBBMywpGYrg+YkQJACiDevPTobGHbGdb4fmxVbsscVWveqCkf
U8BLbWe2T5Q1fzKDrZgJ3Zzc/LNq+x7qI1i97UhjKgLwrTWiHYOMTQJAVNnC8B4S
m5B59Gz2Jd2PYxlvHszaYK3/lVq/g4BIPrsNfsht0yC+RqZM+M956j0rI/AMZt7m
+KojCDjoLYL2wg==
-----END PRIVATE KEY-----
";

    fn write_key(dir: &std::path::Path, name: &str, pem: &[u8]) {
        let p = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn config(dir: &std::path::Path, keys_toml: &str, active: &str) -> Result<Config, String> {
        let text = format!(
            r#"
version = 1
[issuer]
url = "https://broker.example.com"
active_key = "{active}"
{keys_toml}

[sites.direct]
server_url = "https://tableau.example.com"
[sites.direct.connected_app]
client_id = "cid"
secret_id = "sid"
secret_file = "direct.secret"

[sites.cloud]
server_url = "https://tableau.example.com"
content_url = "cloud"
trust = "eas"
[sites.cloud.eas]
audience = "tableau:site-luid"

[sites.uat]
server_url = "https://tableau.example.com"
content_url = "uat"
api_version = "3.27"
trust = "uat"
[sites.uat.uat]
tenant_id = "tenant-1"
"#
        );
        write_key(dir, "direct.secret", b"0123456789abcdef0123456789abcdef");
        Config::from_toml(&text, &dir.join("broker.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn three_trust_modes_load_and_check_config_shows_keys_without_material() {
        let dir = tempfile::tempdir().unwrap();
        let ec = keys::generate_pem(KeyAlg::Es256).unwrap();
        write_key(dir.path(), "new.pem", ec.expose_secret());
        let rsa = keys::generate_pem(KeyAlg::Rs256).unwrap();
        write_key(dir.path(), "old.pem", rsa.expose_secret());
        let old = keys::load_private_key("old", &dir.path().join("old.pem")).unwrap();
        write_key(dir.path(), "old.pub.pem", keys::public_pem(&old).as_bytes());
        let c = config(
            dir.path(),
            "[[issuer.keys]]\nid = \"2026-12\"\nprivate_key_file = \"new.pem\"\n[[issuer.keys]]\nid = \"2026-09\"\npublic_key_file = \"old.pub.pem\"\n",
            "2026-12",
        )
        .unwrap();
        let s = c.summary();
        assert!(s.contains("site cloud: trust eas"), "{s}");
        assert!(s.contains("site uat: trust uat"), "{s}");
        assert!(s.contains("site direct: trust direct"), "{s}");
        assert!(
            s.contains("key 2026-12 ES256 256 bits (active: signs)"),
            "{s}"
        );
        assert!(
            s.contains("key 2026-09 RS256 2048 bits (published only)"),
            "{s}"
        );
        assert!(!s.contains("BEGIN"), "{s}");
        assert!(c.watched_files().contains(&dir.path().join("new.pem")));
    }

    #[test]
    fn short_rsa_keys_unknown_active_keys_and_bad_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_key(dir.path(), "short.pem", RSA_1024.as_bytes());
        let e = config(
            dir.path(),
            "[[issuer.keys]]\nid = \"k\"\nprivate_key_file = \"short.pem\"\n",
            "k",
        )
        .unwrap_err();
        assert!(e.contains("2048"), "{e}");
        assert!(e.contains("10088"), "{e}");
        let ec = keys::generate_pem(KeyAlg::Es256).unwrap();
        write_key(dir.path(), "k.pem", ec.expose_secret());
        let e = config(
            dir.path(),
            "[[issuer.keys]]\nid = \"k\"\nprivate_key_file = \"k.pem\"\n",
            "other",
        )
        .unwrap_err();
        assert!(e.contains("issuer.active_key"), "{e}");
    }
}
