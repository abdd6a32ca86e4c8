//! `check-config --strict`: the placeholders a valid configuration may still hold.
//!
//! A configuration copied from `deploy/kubernetes/base/broker.toml` or `examples/config.toml` and
//! never filled in passes every normal check and starts pods that turn Ready and serve nothing:
//! its Tableau host is a documentation domain, its connected-app IDs say `REPLACE-WITH-...`, or it
//! names no caller. `serve` must keep accepting such files (the development kit and the tests use
//! `example.com` hosts on purpose), so these rules run only when asked for: in the pod's init
//! container and before `kubectl apply`. They read the validated [`Config`] and nothing else, so a
//! test can check them without files or a process.

use std::path::Path;

use super::{Config, ConfigError, Issue};

/// Domains reserved for documentation (RFC 2606, RFC 6761): no real Tableau lives under them.
pub const EXAMPLE_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

/// Text that marks a value as a placeholder still to be filled in, matched case-insensitively.
/// Tableau's client and secret IDs are UUIDs, which contain none of these.
pub const PLACEHOLDER_MARKERS: [&str; 5] =
    ["replace", "change-me", "change_me", "changeme", "xxxxxxxx"];

/// Every placeholder in `config`, each located (dotted path into the file) and saying what to put
/// there instead. Empty for a configuration ready for production.
pub fn placeholder_issues(config: &Config) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (name, site) in &config.sites {
        let at = format!("sites.{name}");
        if let Some(domain) = example_domain(&site.server_url) {
            issues.push(Issue {
                at: format!("{at}.server_url"),
                message: format!(
                    "{:?} is on {domain}, a documentation domain no Tableau lives on: give your \
                     Tableau Server's URL or your Tableau Cloud pod's (https://prod-...online.tableau.com)",
                    site.server_url
                ),
            });
        }
        let app = format!("{at}.connected_app");
        if let Some(a) = &site.app {
            if let Some(why) = placeholder(&a.client_id) {
                issues.push(Issue {
                    at: format!("{app}.client_id"),
                    message: format!(
                        "{why}: copy the Client ID from the connected app's page in Tableau \
                         (Settings > Connected Apps)"
                    ),
                });
            }
            if let Some(why) = placeholder(&a.secret_id) {
                issues.push(Issue {
                    at: format!("{app}.secret_id"),
                    message: format!(
                        "{why}: copy the Secret ID of the secret the broker signs with from the \
                         connected app's page in Tableau"
                    ),
                });
            }
            if let Some(why) = site
                .standby_secret
                .as_ref()
                .and_then(|s| placeholder(&s.secret_id))
            {
                issues.push(Issue {
                    at: format!("{app}.secrets"),
                    message: format!(
                        "the standby secret's secret_id: {why}: copy it from the connected app's page \
                         in Tableau, or list only the active secret"
                    ),
                });
            }
        }
        match &site.trust {
            super::Trust::Eas(e) => {
                if let Some(why) = placeholder(&e.audience).or_else(|| angle(&e.audience)) {
                    issues.push(Issue {
                        at: format!("{at}.eas.audience"),
                        message: format!(
                            "{why}: give tableau:<the site's LUID> (Tableau Cloud) or tableau \
                             (Tableau Server's server-wide EAS)"
                        ),
                    });
                }
            }
            super::Trust::Uat(u) => {
                if let Some(why) = placeholder(&u.tenant_id).or_else(|| angle(&u.tenant_id)) {
                    issues.push(Issue {
                        at: format!("{at}.uat.tenant_id"),
                        message: format!("{why}: copy the tenant ID from Tableau Cloud Manager"),
                    });
                }
            }
            super::Trust::Direct => {}
        }
    }
    if let Some(domain) = config.issuer.as_ref().and_then(|i| example_domain(&i.url)) {
        issues.push(Issue {
            at: "issuer.url".to_owned(),
            message: format!(
                "on {domain}, a documentation domain: give the URL Tableau reaches the broker's \
                 issuer metadata at, exactly as registered in Tableau"
            ),
        });
    }
    if config.policy.callers().is_empty() {
        issues.push(Issue {
            at: "callers".to_owned(),
            message: "no [[callers]] entry: the broker would refuse every call; add one per \
                      calling service, with its identity and grants"
                .to_owned(),
        });
    }
    issues
}

/// [`placeholder_issues`] as the error `check-config` reports (exit 64), with `path` the file.
pub fn refuse_placeholders(config: &Config, path: &Path) -> Result<(), ConfigError> {
    let issues = placeholder_issues(config);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            issues,
        })
    }
}

/// The documentation domain `url`'s host is, or is under; `None` for any other host (an IP
/// address, a single-label name such as `tableau-double`, a real domain).
fn example_domain(url: &str) -> Option<&'static str> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.domain()?.trim_end_matches('.').to_ascii_lowercase();
    EXAMPLE_DOMAINS
        .into_iter()
        .find(|d| host == *d || host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.')))
}

/// Why `value` is not a real ID: empty, or holding a placeholder marker.
fn placeholder(value: &str) -> Option<String> {
    if value.trim().is_empty() {
        return Some("empty".to_owned());
    }
    let lower = value.to_ascii_lowercase();
    PLACEHOLDER_MARKERS
        .into_iter()
        .find(|m| lower.contains(m))
        .map(|m| format!("{value:?} is a placeholder (contains {m:?})"))
}

/// A value still holding a `<...>` placeholder from the documentation (e.g. `tableau:<site LUID>`).
fn angle(value: &str) -> Option<String> {
    (value.contains('<') || value.contains('>'))
        .then(|| format!("{value:?} still holds a <placeholder>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(server_url: &str, client_id: &str, secret_id: &str, callers: bool) -> Config {
        let mut text = format!(
            r#"version = 1
development = true

[sites.finance]
server_url = "{server_url}"
content_url = "finance"

[sites.finance.connected_app]
client_id = "{client_id}"
secret_id = "{secret_id}"
secret = "finance-secret-0123456789abcdef-xyz"
"#
        );
        if callers {
            text.push_str(
                r#"
[[callers]]
identity = "spiffe://contract.test/ns/ci/sa/client"

[[callers.grants]]
sites = ["finance"]
users = ["svc-contract"]
scopes = ["tableau:content:read"]
"#,
            );
        }
        Config::from_toml(&text, Path::new("strict.toml")).unwrap()
    }

    const UUID: &str = "7a0c1e52-0000-4000-8000-00000000c0de";
    const UUID2: &str = "7a0c1e52-0000-4000-8000-00000000c0df";

    #[test]
    fn real_looking_configurations_pass() {
        for url in [
            "https://127.0.0.1:8443",
            "https://[::1]:8443",
            "https://tableau-double:8443",
            "https://prod-useast-a.online.tableau.com",
            "https://tableau.corp.test",
            "https://notexample.com",
            "https://example.com.evil.org",
        ] {
            let issues = placeholder_issues(&config(url, UUID, UUID2, true));
            assert!(issues.is_empty(), "{url}: {issues:?}");
        }
    }

    #[test]
    fn example_hosts_placeholder_ids_and_no_callers_are_each_located() {
        for url in [
            "https://example.com",
            "https://tableau.example.org/",
            "https://a.b.EXAMPLE.NET:8443",
            "https://tableau.example.com.",
        ] {
            let issues = placeholder_issues(&config(url, UUID, UUID2, true));
            assert_eq!(issues.len(), 1, "{url}: {issues:?}");
            assert_eq!(issues[0].at, "sites.finance.server_url");
            assert!(issues[0].message.contains("Tableau Cloud"), "{issues:?}");
        }
        let issues = placeholder_issues(&config(
            "https://tableau.example.com",
            "REPLACE-WITH-CLIENT-ID",
            "change-me",
            false,
        ));
        let at: Vec<&str> = issues.iter().map(|i| i.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "sites.finance.server_url",
                "sites.finance.connected_app.client_id",
                "sites.finance.connected_app.secret_id",
                "callers",
            ]
        );
        assert!(issues[1].message.contains("Client ID"), "{issues:?}");
        for id in ["xxxxxxxx-xxxx-xxxx", "CHANGEME", "Replace me", " "] {
            assert!(placeholder(id).is_some(), "{id:?}");
        }
        assert_eq!(placeholder(UUID), None);
    }

    #[test]
    fn the_standby_secret_id_is_checked_too() {
        let text = format!(
            r#"version = 1
development = true
[sites.finance]
server_url = "https://127.0.0.1:8443"
[sites.finance.connected_app]
client_id = "{UUID}"
active_secret_id = "{UUID2}"
[[sites.finance.connected_app.secrets]]
secret_id = "{UUID2}"
secret = "finance-secret-0123456789abcdef-xyz"
[[sites.finance.connected_app.secrets]]
secret_id = "REPLACE-WITH-NEW-SECRET-ID"
secret = "finance-secret-0123456789abcdef-new"
[[callers]]
identity = "spiffe://contract.test/a"
[[callers.grants]]
sites = ["finance"]
users = ["u"]
scopes = ["tableau:content:read"]
"#
        );
        let c = Config::from_toml(&text, Path::new("s.toml")).unwrap();
        let issues = placeholder_issues(&c);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].at, "sites.finance.connected_app.secrets");
        assert!(matches!(
            refuse_placeholders(&c, Path::new("s.toml")),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn eas_audience_uat_tenant_and_issuer_url_placeholders_are_located() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let pem = crate::issuer::keys::generate_pem(crate::issuer::KeyAlg::Es256).unwrap();
        std::fs::write(&key, secrecy::ExposeSecret::expose_secret(&pem)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let site = |name: &str, trust: &str| {
            format!(
                "[sites.{name}]\nserver_url = \"https://prod-useast-a.online.tableau.com\"\ncontent_url = \"{name}\"\napi_version = \"3.27\"\ntrust = \"{trust}\"\n"
            )
        };
        let text = |url: &str, audience: &str, tenant: &str| {
            format!(
                "version = 1\ndevelopment = true\n[issuer]\nurl = \"{url}\"\nactive_key = \"k\"\n[[issuer.keys]]\nid = \"k\"\nprivate_key_file = {:?}\n{}[sites.cloud.eas]\naudience = \"{audience}\"\n{}[sites.u.uat]\ntenant_id = \"{tenant}\"\n[[callers]]\nidentity = \"spiffe://contract.test/ns/ci/sa/client\"\n[[callers.grants]]\nsites = [\"cloud\"]\nusers = [\"svc\"]\nscopes = [\"tableau:content:read\"]\n",
                key.display().to_string(),
                site("cloud", "eas"),
                site("u", "uat"),
            )
        };
        let path = dir.path().join("strict.toml");
        let good = text(
            "https://broker.corp.test",
            &format!("tableau:{UUID}"),
            "t-7f3e",
        );
        let issues = placeholder_issues(&Config::from_toml(&good, &path).unwrap());
        assert!(issues.is_empty(), "{issues:?}");
        let bad = text(
            "https://tableau-broker.example.com",
            "tableau:<site LUID>",
            "REPLACE-ME",
        );
        let issues = placeholder_issues(&Config::from_toml(&bad, &path).unwrap());
        let at: Vec<&str> = issues.iter().map(|i| i.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "sites.cloud.eas.audience",
                "sites.u.uat.tenant_id",
                "issuer.url"
            ],
            "{issues:?}"
        );
    }
}
