//! The broker configuration a [`LocalSetup`] writes, built from the loader's own file types
//! ([`RawConfig`] and its sections) and serialized by the `toml` crate: a key the loader renames
//! or drops stops this module compiling, and no value is ever quoted by hand.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{ISSUER_KEY_FILE, ISSUER_KEY_ID, LocalError, LocalGrant, LocalSetup, LocalSite};
use crate::config::raw::{
    RawAdmin, RawCaller, RawConfig, RawConnectedApp, RawEas, RawGrant, RawIssuer, RawIssuerKey,
    RawServer, RawSite, RawTableau, RawUat, callers_toml,
};
use crate::config::{CONFIG_VERSION, Format};
use crate::transport::TlsFiles;

/// `d` as the configuration writes durations: whole minutes as `Nm`, otherwise seconds, or
/// milliseconds when it is not a whole number of seconds.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs > 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl LocalSetup {
    /// The broker's configuration for a double at `double_url` and the server TLS files `tls`:
    /// what the setup models, then every [`Self::configure`] edit in order.
    pub fn broker_config(&self, double_url: &str, tls: &TlsFiles) -> RawConfig {
        let mut c = RawConfig {
            version: Some(CONFIG_VERSION),
            development: true,
            server: Some(RawServer {
                listen: Some(self.listen.to_string()),
                cert: Some(tls.cert.clone()),
                key: Some(tls.key.clone()),
                client_ca: Some(tls.client_ca.clone()),
                grace_period: Some(duration(self.grace_period)),
                ..RawServer::default()
            }),
            admin: self.admin.map(|a| RawAdmin {
                listen: Some(a.to_string()),
            }),
            tableau: RawTableau {
                connect_timeout: Some("2s".to_owned()),
                request_timeout: Some("10s".to_owned()),
            },
            issuer: self.issuer_section(),
            ..RawConfig::default()
        };
        c.cache.max_entries = Some(self.max_entries);
        c.cache.safety_margin = Some("5m".to_owned());
        c.audit.path = Some(self.audit_path());
        for site in &self.sites {
            c.sites
                .insert(site.name.clone(), self.site_section(site, double_url));
        }
        c.callers = self
            .callers
            .iter()
            .map(|caller| RawCaller {
                identity: Some(caller.identity.clone()),
                grants: caller.grants.iter().map(grant_section).collect(),
                sign_ins_per_second: caller.sign_ins_per_second,
                sign_in_burst: caller.sign_in_burst,
            })
            .collect();
        for edit in &self.edits {
            edit(&mut c);
        }
        c
    }

    /// [`Self::broker_config`] as the file [`Self::start`] writes: the header, the settings, then
    /// each caller entry under its comment.
    pub fn broker_toml(&self, double_url: &str, tls: &TlsFiles) -> Result<String, LocalError> {
        let mut config = self.broker_config(double_url, tls);
        let callers = std::mem::take(&mut config.callers);
        let mut text = String::new();
        if let Some(header) = &self.header {
            text.push_str(header.trim_end());
            text.push_str("\n\n");
        }
        text.push_str(&toml::to_string(&config)?);
        // One entry at a time, so that each comment is written right above its entry.
        for (i, caller) in callers.iter().enumerate() {
            text.push('\n');
            if let Some(comment) = self.callers.get(i).and_then(|c| c.comment.as_deref()) {
                for line in comment.lines() {
                    text.push_str("# ");
                    text.push_str(line);
                    text.push('\n');
                }
            }
            text.push_str(&callers_toml(std::slice::from_ref(caller))?);
        }
        Ok(text)
    }

    /// `[issuer]`, when the setup has one: HTTPS on localhost with the setup's ES256 key.
    fn issuer_section(&self) -> Option<RawIssuer> {
        let (port, url) = (self.issuer_port?, self.issuer_url()?);
        Some(RawIssuer {
            url: Some(url),
            listen: Some(format!("127.0.0.1:{port}")),
            cert: Some(self.dir.join("issuer-tls.crt")),
            key: Some(self.dir.join("issuer-tls.key")),
            active_key: Some(ISSUER_KEY_ID.to_owned()),
            keys: vec![RawIssuerKey {
                id: Some(ISSUER_KEY_ID.to_owned()),
                private_key_file: Some(self.dir.join(ISSUER_KEY_FILE)),
                public_key_file: None,
            }],
            ..RawIssuer::default()
        })
    }

    /// `[sites.NAME]` for `site`, in the trust mode it was given.
    fn site_section(&self, site: &LocalSite, double_url: &str) -> RawSite {
        let mut s = RawSite {
            server_url: Some(site.server_url.as_deref().unwrap_or(double_url).to_owned()),
            content_url: Some(site.double.content_url.clone()),
            session_ttl: Some("240m".to_owned()),
            jwt_ttl: Some("5m".to_owned()),
            format: (site.format == Format::Json).then(|| "json".to_owned()),
            ..RawSite::default()
        };
        if let Some(tenant) = &site.uat_tenant {
            s.api_version = Some("3.27".to_owned());
            s.trust = Some("uat".to_owned());
            s.uat = Some(RawUat {
                tenant_id: Some(tenant.clone()),
                username_claim: None,
            });
        } else if site.eas {
            s.trust = Some("eas".to_owned());
            s.eas = Some(RawEas {
                audience: Some(format!("tableau:{}", site.double.luid)),
            });
        } else {
            let (secret_id, secret) = match &site.broker_secret {
                Some((id, secret)) => (id, secret),
                None => (&self.app.secret_id, &self.app.secret),
            };
            let (secret_file, secret) = if site.secret_in_file {
                (Some(self.secret_path(site)), None)
            } else {
                let inline = SecretString::from(secret.expose_secret().to_owned());
                (None, Some(inline))
            };
            s.connected_app = Some(RawConnectedApp {
                client_id: Some(self.app.client_id.clone()),
                secret_id: Some(secret_id.clone()),
                secret_file,
                secret,
                ..RawConnectedApp::default()
            });
        }
        s
    }
}

/// `[[callers.grants]]` for `g`.
fn grant_section(g: &LocalGrant) -> RawGrant {
    RawGrant {
        sites: g.sites.clone(),
        users: g.users.clone(),
        scopes: g.scopes.clone(),
        deny_scopes: g.deny_scopes.clone(),
        max_jwt_ttl: g.max_jwt_ttl.map(duration),
        ..RawGrant::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::local::{LocalApp, LocalCaller};
    use std::path::PathBuf;

    #[test]
    fn durations_are_written_as_the_configuration_reads_them() {
        assert_eq!(duration(Duration::from_secs(240 * 60)), "240m");
        assert_eq!(duration(Duration::from_secs(2)), "2s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    fn tls() -> TlsFiles {
        TlsFiles {
            cert: PathBuf::from("/d/server.crt"),
            key: PathBuf::from("/d/server.key"),
            client_ca: PathBuf::from("/d/ca.crt"),
        }
    }

    #[test]
    fn the_written_file_reads_back_as_the_config_it_was_built_from_with_comments_in_place() {
        let caller = |id: &str| {
            LocalCaller::new(
                id,
                LocalGrant::new(&["finance"], &["svc-\"q\""], &["tableau:content:read"]),
            )
        };
        let setup = LocalSetup::new(
            "/d",
            LocalApp::new("client \"1\"", "sid", "secret with \"quotes\" and \\ = [x]"),
        )
        .header("# line one\n# line two")
        .site(LocalSite::new("finance", "l-1", vec![]))
        .site(
            LocalSite::new("files", "l-2", vec![])
                .secret_in_file()
                .json(),
        )
        .caller(caller("spiffe://e.org/a").comment("first\nover two lines"))
        .caller(caller("spiffe://e.org/b").sign_in_burst(3))
        .configure(|c| c.limits.sign_in_burst = Some(7))
        .configure(|c| c.reload.debounce = Some("300ms".to_owned()));
        let text = setup.broker_toml("http://127.0.0.1:1", &tls()).unwrap();
        assert!(text.starts_with("# line one\n# line two\n"), "{text}");
        assert!(
            text.contains(
                "# first\n# over two lines\n[[callers]]\nidentity = \"spiffe://e.org/a\""
            ),
            "{text}"
        );
        let back: RawConfig = toml::from_str(&text).unwrap();
        let built = setup.broker_config("http://127.0.0.1:1", &tls());
        assert_eq!(back.limits, built.limits);
        assert_eq!(back.reload.debounce.as_deref(), Some("300ms"));
        assert_eq!(back.callers.len(), 2);
        assert_eq!(back.callers[1].sign_in_burst, Some(3));
        assert_eq!(back.callers[0].grants[0].users, ["svc-\"q\""]);
        let app = back.sites["finance"].connected_app.as_ref().unwrap();
        assert_eq!(app.client_id.as_deref(), Some("client \"1\""));
        assert_eq!(
            app.secret.as_ref().unwrap().expose_secret(),
            "secret with \"quotes\" and \\ = [x]"
        );
        let files = back.sites["files"].connected_app.as_ref().unwrap();
        assert!(files.secret.is_none());
        assert_eq!(files.secret_file, Some(PathBuf::from("/d/files.secret")));
        assert_eq!(back.sites["files"].format.as_deref(), Some("json"));
        // Sections nothing set are left out rather than written empty.
        assert!(!text.contains("[telemetry]"), "{text}");
    }
}
