//! The human summary `check-config` prints: every site, trust mode, key and grant, never a secret.

use super::*;

impl Config {
    /// A human summary without secrets, for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let p = &self.policy;
        out.push_str(&format!(
            "config OK{}: {} site(s), {} caller(s), {} grant(s), {} known scope(s)\n",
            if self.development {
                " (development)"
            } else {
                ""
            },
            self.sites.len(),
            p.callers().len(),
            p.callers().iter().map(|c| c.grants.len()).sum::<usize>(),
            p.catalog().scopes().count(),
        ));
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        if let Some(s) = &self.server {
            out.push_str(&format!(
                "server: listen {} (cert {}, client CA {})\n",
                s.listen,
                s.cert.display(),
                s.client_ca.display()
            ));
        }
        if let Some(a) = &self.admin {
            out.push_str(&format!(
                "admin: listen {} (plain HTTP: /livez /readyz /metrics)\n",
                a.listen
            ));
        }
        let a = &self.audit;
        out.push_str(&format!(
            "audit: {} ({}{}; fingerprints {})\n",
            match &a.target {
                AuditTarget::Off => "off".to_owned(),
                AuditTarget::Stdout => "standard output".to_owned(),
                AuditTarget::File(p) => p.display().to_string(),
            },
            a.mode.as_str(),
            if a.sync { ", fdatasync per batch" } else { "" },
            match &a.hmac_key_file {
                Some(p) => format!("keyed by {}", p.display()),
                None => "random per process".to_owned(),
            },
        ));
        if let Some(sc) = &self.cache.shared {
            out.push_str(&shared_cache::summary(sc));
        }
        if let Some(i) = &self.issuer {
            out.push_str(&i.summary());
        }
        for site in self.sites.values() {
            let trust = match (&site.trust, &site.app) {
                (Trust::Direct, Some(app)) => format!(
                    "client_id {} secret_id {} secret from {}{}",
                    app.client_id,
                    app.secret_id,
                    app.secret_source,
                    site.standby_secret
                        .as_ref()
                        .map(|s| format!(
                            " (standby secret_id {} from {})",
                            s.secret_id, s.secret_source
                        ))
                        .unwrap_or_default(),
                ),
                (Trust::Eas(e), _) => format!(
                    "audience {:?}, signed by issuer key {}",
                    e.audience,
                    e.issuer.active().id
                ),
                (Trust::Uat(u), _) => format!(
                    "tenant_id {} username_claim {:?}, signed by issuer key {}",
                    u.tenant_id,
                    u.username_claim,
                    u.issuer.active().id
                ),
                (Trust::Direct, None) => String::new(),
            };
            out.push_str(&format!(
                "site {}: trust {} {} api {} content_url {:?} session_ttl {} jwt_ttl {} {}\n",
                site.name,
                site.trust.name(),
                site.server_url,
                site.api_version,
                site.content_url,
                humantime::format_duration(site.session_ttl),
                humantime::format_duration(site.jwt_ttl),
                trust,
            ));
        }
        for c in p.callers() {
            out.push_str(&format!("caller {}\n", c.pattern));
            for g in &c.grants {
                let users: Vec<&str> = g.users.iter().map(UserPattern::as_str).collect();
                let scopes: Vec<String> = g.scopes.iter().map(ToString::to_string).collect();
                let deny: Vec<String> = g.deny_scopes.iter().map(ToString::to_string).collect();
                out.push_str(&format!(
                    "  grant sites={:?} users={:?} scopes={:?}{}{}\n",
                    g.sites,
                    users,
                    scopes,
                    if deny.is_empty() {
                        String::new()
                    } else {
                        format!(" deny={deny:?}")
                    },
                    g.claims.summary(),
                ));
            }
        }
        out
    }
}
