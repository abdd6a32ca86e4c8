//! `[[admins]]` and `[policy] candidate` (issue 27), kept out of the main builder so the rest of
//! the configuration reads as before.
//!
//! A candidate file holds `[[callers]]` (and `[[admins]]`) only. It is validated by the very code
//! that validates the running file: its entries replace the running file's in a copy of that file,
//! which is built whole, so a candidate passes exactly when it would pass as the running policy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Issue, Issues, build, redact_toml_error};
use crate::admins::{AdminEntry, Admins, Candidate, Role};
use crate::policy::IdentityPattern;

/// Most `[[admins]]` entries a file may hold.
pub const MAX_ADMINS: usize = 1000;

/// `[[admins]]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminEntry {
    /// Same syntax and certificate fields as `[[callers]] identity`.
    pub identity: Option<String>,
    /// `"read"`, `"revoke"`.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// `[policy]` as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// A candidate policy file evaluated in shadow; relative to the configuration file.
    pub candidate: Option<String>,
}

/// Builds `[[admins]]`, adding every problem to `iss`.
pub(super) fn build_admins(iss: &mut Issues, raw: Vec<RawAdminEntry>) -> Admins {
    if raw.len() > MAX_ADMINS {
        iss.add("admins", format!("more than {MAX_ADMINS} entries"));
    }
    let mut out: Vec<AdminEntry> = Vec::new();
    for (i, a) in raw.into_iter().enumerate().take(MAX_ADMINS) {
        let at = format!("admins[{i}]");
        let pattern = match a.identity.as_deref().map(IdentityPattern::parse) {
            None => {
                iss.add(
                    format!("{at}.identity"),
                    "missing: give the admin's identity, written like a [[callers]] identity",
                );
                None
            }
            Some(Err(e)) => {
                iss.add(format!("{at}.identity"), e);
                None
            }
            Some(Ok(p)) => {
                if let Some(j) = out.iter().position(|e| e.pattern == p) {
                    iss.add(
                        format!("{at}.identity"),
                        format!("{p} is already configured at admins[{j}]; merge the two entries"),
                    );
                }
                Some(p)
            }
        };
        let mut roles = BTreeSet::new();
        for (ri, r) in a.roles.iter().enumerate() {
            match Role::parse(r) {
                Ok(role) => {
                    roles.insert(role);
                }
                Err(e) => iss.add(format!("{at}.roles[{ri}]"), e),
            }
        }
        if a.roles.is_empty() {
            iss.add(
                format!("{at}.roles"),
                "empty: give \"read\" and/or \"revoke\"",
            );
        }
        if let Some(pattern) = pattern {
            out.push(AdminEntry { pattern, roles });
        }
    }
    Admins::new(out)
}

/// The candidate file's path, resolved against the configuration's directory.
pub(super) fn candidate_path(raw: Option<&RawPolicy>, base: &Path) -> Option<PathBuf> {
    let p = raw?.candidate.as_deref()?;
    Some(base.join(p))
}

/// Loads the candidate named by `[policy] candidate` of the file `text` (at `path`) into
/// `config`. Any problem refuses the whole load: on reload the running configuration (and its
/// running policy) stays in force.
pub(super) fn attach_candidate(
    config: &mut Config,
    text: &str,
    path: &Path,
) -> Result<(), ConfigError> {
    let Some(candidate) = config.candidate_path.clone() else {
        return Ok(());
    };
    let cand_text = std::fs::read_to_string(&candidate).map_err(|source| ConfigError::Read {
        path: candidate.clone(),
        source,
    })?;
    let parse = |t: &str, p: &Path| {
        t.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
            path: p.to_owned(),
            message: redact_toml_error(&e.to_string()),
        })
    };
    let cand = parse(&cand_text, &candidate)?;
    let invalid = |issues: Vec<Issue>| ConfigError::Invalid {
        path: candidate.clone(),
        issues,
    };
    let stray: Vec<Issue> = cand
        .keys()
        .filter(|k| !matches!(k.as_str(), "callers" | "admins"))
        .map(|k| Issue {
            at: k.clone(),
            message: "a candidate file holds [[callers]] and [[admins]] only".to_owned(),
        })
        .collect();
    if !stray.is_empty() {
        return Err(invalid(stray));
    }
    let mut merged = parse(text, path)?;
    merged.remove("policy");
    for key in ["callers", "admins"] {
        match cand.get(key) {
            Some(v) => merged.insert(key.to_owned(), v.clone()),
            None => merged.remove(key),
        };
    }
    let raw: super::RawConfig =
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: candidate.clone(),
                message: redact_toml_error(&e.to_string()),
            })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let built = build(raw, base).map_err(invalid)?;
    config.candidate = Some(Arc::new(Candidate {
        path: candidate,
        policy: built.policy,
        admins: built.admins,
    }));
    Ok(())
}
