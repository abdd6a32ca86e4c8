//! The access review (`tableau-token-broker audit review`): for each `[[callers]]` entry of a
//! configuration, what its grants allow against what the audit trail shows was used, the grants
//! never used, the refusals by reason, and a tightened `[[callers.grants]]` block per entry that
//! keeps only what was used (and passes `check-config` in place of the entry).
//!
//! The trail is streamed line by line; memory grows with the number of distinct sites, users and
//! scopes seen per grant, never with the size of the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, Read};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::config::admins::RawAdminEntry;
use crate::config::raw::{RawCaller, RawGrant, admins_toml, callers_toml};
use crate::policy::CallerEntry;
use crate::scope::Scope;

/// Longest line read; longer lines are skipped as unreadable (records are a few hundred bytes).
pub const MAX_LINE: usize = 64 << 10;
/// Distinct unmatched identities remembered; beyond that they are only counted.
pub const MAX_UNMATCHED_IDENTITIES: usize = 100;

/// Why a review could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The trail could not be read.
    #[error("cannot read the audit trail: {0}")]
    Read(#[from] std::io::Error),
    /// `--since` is neither a duration nor a timestamp.
    #[error(
        "--since {0:?} is neither a duration (\"30d\", \"12h\") nor an RFC 3339 time (\"2026-01-01T00:00:00Z\")"
    )]
    Since(String),
    /// The suggested entries could not be written as TOML (a bug: please report it).
    #[error("cannot write the suggested entries as TOML: {0}")]
    Toml(#[from] toml::ser::Error),
}

/// Parses `--since`: a duration back from `now`, or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, ReviewError> {
    if let Ok(d) = humantime::parse_duration(text) {
        return now
            .checked_sub(d)
            .ok_or_else(|| ReviewError::Since(text.to_owned()));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| ReviewError::Since(text.to_owned()))
}

/// The review of a trail against a configuration.
#[derive(Debug, Serialize)]
pub struct Review {
    /// Start of the window (RFC 3339), or `None` for the whole trail.
    pub since: Option<String>,
    /// Lines read.
    pub lines: u64,
    /// Lines that were not a readable record (cut short by a failed write, foreign text).
    pub unreadable: u64,
    /// RPC records (GetCredentials, MintJwt) in the window.
    pub decisions: u64,
    /// One review per configured caller entry, in configuration order.
    pub callers: Vec<CallerReview>,
    /// Decisions for identities that match no configured entry, by identity.
    pub unmatched: BTreeMap<String, u64>,
    /// Decisions from unmatched identities beyond [`MAX_UNMATCHED_IDENTITIES`].
    pub unmatched_other: u64,
}

/// One caller entry's review.
#[derive(Debug, Serialize)]
pub struct CallerReview {
    /// `callers[i]` in the configuration.
    pub index: usize,
    /// The entry's identity as configured.
    pub identity: String,
    /// Requests granted in the window.
    pub granted: u64,
    /// Granted requests that no grant of the current configuration allows any more.
    pub granted_outside_grants: u64,
    /// Refusals (policy, bad requests, limits) by reason.
    pub refused: BTreeMap<String, u64>,
    /// Failures (Tableau, the broker, the audit trail) by reason.
    pub failed: BTreeMap<String, u64>,
    /// Each grant, allowed against used.
    pub grants: Vec<GrantReview>,
    /// The entry with only what was used; `None` when nothing was.
    pub suggested_toml: Option<String>,
    /// Things a reviewer must look at, which the suggestion leaves out: users asked for by a
    /// name that contains glob characters (`*`, `?`). Such a name is never suggested, as in a
    /// grant it would be a pattern allowing every user it matches.
    pub findings: Vec<String>,
}

/// One grant: allowed against used.
#[derive(Debug, Serialize)]
pub struct GrantReview {
    /// `grants[i]` in the entry.
    pub index: usize,
    /// Granted requests attributed to it (the first grant that allows a request gets it).
    pub requests: u64,
    /// Sites allowed (`"*"` expanded to the configured sites).
    pub sites_allowed: Vec<String>,
    /// Sites used.
    pub sites_used: Vec<String>,
    /// User patterns allowed.
    pub users_allowed: Vec<String>,
    /// Users used.
    pub users_used: Vec<String>,
    /// Scopes allowed.
    pub scopes_allowed: Vec<String>,
    /// Scopes used.
    pub scopes_used: Vec<String>,
    /// Allowed sites never used.
    pub sites_unused: Vec<String>,
    /// User patterns that matched no used user.
    pub users_unused: Vec<String>,
    /// Allowed scopes that covered no used scope.
    pub scopes_unused: Vec<String>,
}

impl GrantReview {
    /// True when no request in the window used this grant.
    pub fn never_used(&self) -> bool {
        self.requests == 0
    }
}

/// The fields of a record the review reads; everything else is ignored.
#[derive(Deserialize)]
struct Line {
    time: String,
    event: String,
    rpc: Option<String>,
    caller: Option<LineCaller>,
    site: Option<String>,
    user: Option<String>,
    scopes_granted: Option<Vec<String>>,
    outcome: String,
    reason: String,
}

#[derive(Deserialize)]
struct LineCaller {
    identity: String,
    entry: Option<String>,
}

#[derive(Default)]
struct Usage {
    requests: u64,
    sites: BTreeSet<String>,
    users: BTreeSet<String>,
    scopes: BTreeSet<Scope>,
}

#[derive(Default)]
struct EntryAcc {
    granted: u64,
    outside: u64,
    refused: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    grants: Vec<Usage>,
}

/// Reviews `trail` against `config`, counting decisions at or after `since`.
pub fn review(
    config: &Config,
    mut trail: impl BufRead,
    since: Option<SystemTime>,
) -> Result<Review, ReviewError> {
    let policy = &config.policy;
    let entries = policy.callers();
    let names: BTreeMap<String, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.pattern.to_string(), i))
        .collect();
    let mut acc: Vec<EntryAcc> = entries
        .iter()
        .map(|e| EntryAcc {
            grants: e.grants.iter().map(|_| Usage::default()).collect(),
            ..EntryAcc::default()
        })
        .collect();
    let mut out = Review {
        since: since.map(|t| humantime::format_rfc3339(t).to_string()),
        lines: 0,
        unreadable: 0,
        decisions: 0,
        callers: Vec::new(),
        unmatched: BTreeMap::new(),
        unmatched_other: 0,
    };

    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = trail
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && n > MAX_LINE {
            // Too long: skip to the end of the line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let m = trail
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut rest)?;
                if m == 0 || rest.last() == Some(&b'\n') {
                    break;
                }
            }
            out.lines += 1;
            out.unreadable += 1;
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        let Ok(line) = serde_json::from_slice::<Line>(&buf) else {
            out.unreadable += 1;
            continue;
        };
        if line.event != "rpc" || !matches!(line.rpc.as_deref(), Some("GetCredentials" | "MintJwt"))
        {
            continue;
        }
        if let Some(since) = since {
            match humantime::parse_rfc3339_weak(&line.time) {
                Ok(t) if t >= since => {}
                Ok(_) => continue,
                Err(_) => {
                    out.unreadable += 1;
                    continue;
                }
            }
        }
        out.decisions += 1;
        let Some(caller) = line.caller else {
            out.unreadable += 1;
            continue;
        };
        let Some(&ei) = caller.entry.as_ref().and_then(|e| names.get(e)) else {
            if let Some(c) = out.unmatched.get_mut(&caller.identity) {
                *c += 1;
            } else if out.unmatched.len() < MAX_UNMATCHED_IDENTITIES {
                out.unmatched.insert(caller.identity, 1);
            } else {
                out.unmatched_other += 1;
            }
            continue;
        };
        let a = &mut acc[ei];
        match line.outcome.as_str() {
            "granted" => {
                a.granted += 1;
                let (Some(site), Some(user)) = (line.site, line.user) else {
                    a.outside += 1;
                    continue;
                };
                let scopes = line
                    .scopes_granted
                    .as_deref()
                    .and_then(|s| policy.normalize_scopes(s).ok());
                let grant = scopes.as_ref().and_then(|scopes| {
                    config.site(&site)?;
                    entries[ei]
                        .grants
                        .iter()
                        .position(|g| g.covers(policy.catalog(), &site, &user, scopes))
                });
                match (grant, scopes) {
                    (Some(gi), Some(scopes)) => {
                        let u = &mut a.grants[gi];
                        u.requests += 1;
                        u.sites.insert(site);
                        u.users.insert(user);
                        u.scopes.extend(scopes);
                    }
                    _ => a.outside += 1,
                }
            }
            "denied" => *a.refused.entry(line.reason).or_default() += 1,
            _ => *a.failed.entry(line.reason).or_default() += 1,
        }
    }

    for (i, (entry, a)) in entries.iter().zip(acc).enumerate() {
        out.callers.push(caller_review(config, i, entry, a)?);
    }
    Ok(out)
}

fn caller_review(
    config: &Config,
    index: usize,
    entry: &CallerEntry,
    a: EntryAcc,
) -> Result<CallerReview, ReviewError> {
    let catalog = config.policy.catalog();
    let mut grants = Vec::new();
    for (gi, (g, u)) in entry.grants.iter().zip(&a.grants).enumerate() {
        let sites_allowed: Vec<String> = if g.sites.iter().any(|s| s == "*") {
            config.sites.keys().cloned().collect()
        } else {
            g.sites.clone()
        };
        let scopes_used: Vec<String> = u.scopes.iter().map(ToString::to_string).collect();
        grants.push(GrantReview {
            index: gi,
            requests: u.requests,
            sites_unused: sites_allowed
                .iter()
                .filter(|s| !u.sites.contains(*s))
                .cloned()
                .collect(),
            sites_allowed,
            sites_used: u.sites.iter().cloned().collect(),
            users_allowed: g.users.iter().map(|p| p.as_str().to_owned()).collect(),
            users_unused: g
                .users
                .iter()
                .filter(|p| !u.users.iter().any(|name| p.matches(name)))
                .map(|p| p.as_str().to_owned())
                .collect(),
            users_used: u.users.iter().cloned().collect(),
            scopes_allowed: g.scopes.iter().map(ToString::to_string).collect(),
            scopes_unused: g
                .scopes
                .iter()
                .filter(|s| !u.scopes.iter().any(|used| catalog.covers(s, used)))
                .map(ToString::to_string)
                .collect(),
            scopes_used,
        });
    }
    let identity = entry.pattern.to_string();
    let suggested_toml = suggest(&identity, entry, &a.grants)?;
    let findings = glob_named_users(&a.grants);
    Ok(CallerReview {
        index,
        identity,
        granted: a.granted,
        granted_outside_grants: a.outside,
        refused: a.refused,
        failed: a.failed,
        grants,
        suggested_toml,
        findings,
    })
}

/// `s` quoted, for findings and comments that name a user or an identity.
fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// True when a username would be a pattern if written in a grant (`*` or `?` in it).
fn has_glob(name: &str) -> bool {
    name.contains(['*', '?'])
}

/// The findings about users asked for by a name with glob characters: such a name matched a
/// pattern as a literal, and suggesting it would keep (or create) a pattern.
fn glob_named_users(usage: &[Usage]) -> Vec<String> {
    let mut out = Vec::new();
    for (gi, u) in usage.iter().enumerate() {
        for name in u.users.iter().filter(|n| has_glob(n)) {
            out.push(format!(
                "grants[{gi}]: user {} was asked for by name but contains glob characters (* or ?); it is left out of the suggestion, where it would be a pattern allowing every user it matches: find out who asked for it and why",
                quoted(name)
            ));
        }
    }
    out
}

/// The entry with one grant per used grant, each narrowed to the sites, users and scopes used.
/// A user whose name contains glob characters is never suggested (see [`glob_named_users`]); a
/// grant used only by such names is left out.
fn suggest(
    identity: &str,
    entry: &CallerEntry,
    usage: &[Usage],
) -> Result<Option<String>, ReviewError> {
    let strings = |items: &mut dyn Iterator<Item = &str>| items.map(str::to_owned).collect();
    let mut grants = Vec::new();
    for (g, u) in entry.grants.iter().zip(usage) {
        let users: Vec<String> =
            strings(&mut u.users.iter().map(String::as_str).filter(|n| !has_glob(n)));
        if u.requests == 0 || users.is_empty() {
            continue;
        }
        grants.push(RawGrant {
            sites: u.sites.iter().cloned().collect(),
            users,
            scopes: strings(&mut u.scopes.iter().map(Scope::as_str)),
            // Denials only matter under a wildcard; with exact scopes they are redundant.
            deny_scopes: if u.scopes.iter().any(Scope::is_wildcard) {
                strings(&mut g.deny_scopes.iter().map(Scope::as_str))
            } else {
                Vec::new()
            },
            max_jwt_ttl: g
                .max_jwt_ttl
                .map(|ttl| humantime::format_duration(ttl).to_string()),
            // The trail does not say which claims were used: the allowlists stay as they are.
            attributes: g.claims.attributes.clone(),
            groups: g.claims.groups.clone(),
            on_demand_access: g.claims.on_demand_access.then_some(true),
        });
    }
    if grants.is_empty() {
        return Ok(None);
    }
    let caller = RawCaller {
        identity: Some(identity.to_owned()),
        grants,
        ..RawCaller::default()
    };
    Ok(Some(callers_toml(&[caller])?))
}

fn join(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.join(", ")
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Review {
    /// The tightened policy as a candidate file (issue 27, `audit review --emit-candidate`): the
    /// suggested `[[callers]]` entries (entries that used nothing are left out) and the running
    /// `[[admins]]` unchanged, so the file can be loaded as `[policy] candidate` and, after its
    /// week in shadow, promoted as it is.
    pub fn candidate_toml(&self, config: &Config) -> Result<String, ReviewError> {
        let mut t = String::from(
            "# Candidate policy written by `tableau-token-broker audit review --emit-candidate`:\n# only the grants the trail shows were used. Load it with [policy] candidate = \"FILE\",\n# watch policy_candidate_divergence_total for a week, then promote it.\n",
        );
        for c in &self.callers {
            match &c.suggested_toml {
                Some(toml) => {
                    let _ = writeln!(t, "\n{}", toml.trim_end());
                }
                None => {
                    let _ = writeln!(
                        t,
                        "\n# callers[{}] {}: nothing used, left out",
                        c.index,
                        quoted(&c.identity)
                    );
                }
            }
        }
        let admins: Vec<RawAdminEntry> = config
            .admins
            .entries()
            .iter()
            .map(|a| RawAdminEntry {
                identity: Some(a.pattern.to_string()),
                roles: a.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            })
            .collect();
        if !admins.is_empty() {
            let _ = writeln!(t, "\n{}", admins_toml(&admins)?.trim_end());
        }
        Ok(t)
    }

    /// The review for a reader: per entry, each grant allowed against used, the grants never
    /// used, refusals by reason; then the suggested `[[callers]]` blocks, ready to paste.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "access review: {} decision(s) {}; {} line(s) read, {} unreadable",
            self.decisions,
            match &self.since {
                Some(s) => format!("since {s}"),
                None => "in the whole trail".to_owned(),
            },
            self.lines,
            self.unreadable
        );
        for c in &self.callers {
            let _ = writeln!(t, "\ncallers[{}] {}", c.index, c.identity);
            let _ = writeln!(
                t,
                "  granted {}, refused {}, failed {}",
                c.granted,
                c.refused.values().sum::<u64>(),
                c.failed.values().sum::<u64>()
            );
            if c.granted_outside_grants > 0 {
                let _ = writeln!(
                    t,
                    "  granted but outside today's grants: {}",
                    c.granted_outside_grants
                );
            }
            for g in &c.grants {
                if g.never_used() {
                    let _ = writeln!(
                        t,
                        "  grants[{}]: NEVER USED (sites {}; users {}; scopes {})",
                        g.index,
                        join(&g.sites_allowed),
                        join(&g.users_allowed),
                        join(&g.scopes_allowed)
                    );
                    continue;
                }
                let _ = writeln!(t, "  grants[{}]: {} request(s)", g.index, g.requests);
                for (what, allowed, used, unused) in [
                    ("sites", &g.sites_allowed, &g.sites_used, &g.sites_unused),
                    ("users", &g.users_allowed, &g.users_used, &g.users_unused),
                    (
                        "scopes",
                        &g.scopes_allowed,
                        &g.scopes_used,
                        &g.scopes_unused,
                    ),
                ] {
                    let _ = writeln!(
                        t,
                        "    {what}: allowed {}; used {}; unused {}",
                        join(allowed),
                        join(used),
                        join(unused)
                    );
                }
            }
            if !c.refused.is_empty() {
                let _ = writeln!(t, "  refused: {}", counts(&c.refused));
            }
            if !c.failed.is_empty() {
                let _ = writeln!(t, "  failed: {}", counts(&c.failed));
            }
            for f in &c.findings {
                let _ = writeln!(t, "  FINDING {f}");
            }
        }
        if !self.unmatched.is_empty() || self.unmatched_other > 0 {
            let _ = writeln!(
                t,
                "\nidentities matching no entry: {}",
                counts(&self.unmatched)
            );
            if self.unmatched_other > 0 {
                let _ = writeln!(t, "  and {} more decision(s)", self.unmatched_other);
            }
        }
        let _ = writeln!(
            t,
            "\n# Suggested [[callers]] section: only what was used. Replace the configuration's\n# [[callers]] entries with it, then run check-config."
        );
        for c in &self.callers {
            match &c.suggested_toml {
                Some(toml) => {
                    let _ = writeln!(t, "\n{}", toml.trim_end());
                }
                None if !c.findings.is_empty() => {
                    let _ = writeln!(
                        t,
                        "\n# callers[{}] {:?}: only names with glob characters used; see its FINDING lines",
                        c.index, c.identity
                    );
                }
                None => {
                    let _ = writeln!(
                        t,
                        "\n# callers[{}] {:?}: nothing used; remove the entry",
                        c.index, c.identity
                    );
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
version = 1
development = true

[sites.finance]
server_url = "https://tableau.example.com/"
content_url = "finance"

[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "a-development-secret-of-at-least-32-bytes"

[[callers]]
identity = "spiffe://example.org/ns/a/sa/minter"
[[callers.grants]]
sites = ["finance"]
users = ["*@example.com"]
scopes = ["tableau:content:read"]
"#;

    fn line(user: &str) -> String {
        serde_json::json!({
            "time": "2026-12-01T00:00:00Z", "event": "rpc", "rpc": "MintJwt",
            "caller": {"identity": "spiffe://example.org/ns/a/sa/minter",
                       "entry": "spiffe://example.org/ns/a/sa/minter"},
            "site": "finance", "user": user, "scopes_granted": ["tableau:content:read"],
            "outcome": "granted", "reason": "OK"
        })
        .to_string()
    }

    /// Issue 24, point 11: a caller that asked for the literal user `*@example.com` (which the
    /// glob matches) must not get the glob back in its "tightened" block.
    #[test]
    fn a_literal_name_with_glob_characters_is_a_finding_never_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(CONFIG, &dir.path().join("b.toml")).unwrap();
        let trail = format!(
            "{}\n{}\n{}\n",
            line("*@example.com"),
            line("an?lyst@example.com"),
            line("ann@example.com")
        );
        let r = review(&config, trail.as_bytes(), None).unwrap();
        let c = &r.callers[0];
        let toml = c.suggested_toml.as_deref().unwrap();
        assert!(toml.contains("users = [\"ann@example.com\"]"), "{toml}");
        assert!(!toml.contains('*') && !toml.contains('?'), "{toml}");
        assert_eq!(c.findings.len(), 2, "{:?}", c.findings);
        assert!(c.findings.iter().any(|f| f.contains("\"*@example.com\"")));
        assert!(r.to_text().contains("\"an?lyst@example.com\""));

        // Only glob-named users used: the grant is left out of the suggestion, with findings.
        let r = review(
            &config,
            format!("{}\n", line("*@example.com")).as_bytes(),
            None,
        )
        .unwrap();
        let c = &r.callers[0];
        assert!(c.suggested_toml.is_none(), "{:?}", c.suggested_toml);
        assert_eq!(c.findings.len(), 1);
    }

    /// The suggestion narrows sites, users and scopes to what was used and keeps the grant's
    /// claims allowlists (the trail does not say which claims were used); the candidate file
    /// with it and the admins loads as a configuration's candidate.
    #[test]
    fn the_suggestion_keeps_claims_allowlists_and_the_candidate_loads() {
        let dir = tempfile::tempdir().unwrap();
        let text = CONFIG.replace(
            "scopes = [\"tableau:content:read\"]",
            "scopes = [\"tableau:content:read\", \"tableau:views:embed\"]\n\
             attributes = { region = [\"emea\", \"na \\\"east\\\"\"] }\n\
             groups = [\"analysts-*\"]\non_demand_access = true\n\
             max_jwt_ttl = \"2m\"\n\n\
             [[admins]]\nidentity = \"spiffe://example.org/ns/security/sa/admin\"\nroles = [\"read\"]",
        );
        let config = Config::from_toml(&text, &dir.path().join("b.toml")).unwrap();
        let r = review(
            &config,
            format!("{}\n", line("ann@example.com")).as_bytes(),
            None,
        )
        .unwrap();
        let candidate = r.candidate_toml(&config).unwrap();
        let raw: crate::config::raw::RawConfig = toml::from_str(&candidate).unwrap();
        let grant = &raw.callers[0].grants[0];
        assert_eq!(grant.users, ["ann@example.com"]);
        assert_eq!(grant.scopes, ["tableau:content:read"]);
        assert_eq!(grant.attributes["region"], ["emea", "na \"east\""]);
        assert_eq!(grant.groups, ["analysts-*"]);
        assert_eq!(grant.on_demand_access, Some(true));
        assert_eq!(grant.max_jwt_ttl.as_deref(), Some("2m"));
        assert_eq!(raw.admins.len(), 1);
        assert!(candidate.starts_with("# Candidate policy"), "{candidate}");
        std::fs::write(dir.path().join("candidate.toml"), &candidate).unwrap();
        let with = format!("{text}\n[policy]\ncandidate = \"candidate.toml\"\n");
        let loaded = Config::from_toml(&with, &dir.path().join("b.toml")).unwrap();
        assert_eq!(loaded.candidate.unwrap().policy.callers().len(), 1);
    }
}
