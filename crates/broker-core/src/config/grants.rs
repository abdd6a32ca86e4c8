//! Building `[[callers.grants]]`: sites, users, scopes and the claims allowlist of each grant.

use super::*;

pub(super) fn build_grant(
    iss: &mut Issues,
    at: &str,
    g: RawGrant,
    catalog: &Catalog,
    sites: &BTreeMap<String, Arc<SiteConfig>>,
) -> Grant {
    if g.sites.is_empty() {
        iss.add(
            format!("{at}.sites"),
            "empty: name at least one site (or \"*\" for every site)",
        );
    }
    for (i, s) in g.sites.iter().enumerate() {
        if s != "*" && !sites.contains_key(s) {
            iss.add(
                format!("{at}.sites[{i}]"),
                format!(
                    "unknown site {s:?}; configured sites: {:?}",
                    sites.keys().collect::<Vec<_>>()
                ),
            );
        }
    }
    if g.users.is_empty() {
        iss.add(
            format!("{at}.users"),
            "empty: name at least one user or pattern (\"*\" for everyone must be written out)",
        );
    }
    let users = g
        .users
        .iter()
        .enumerate()
        .filter_map(|(i, u)| match UserPattern::parse(u) {
            Ok(p) => Some(p),
            Err(e) => {
                iss.add(format!("{at}.users[{i}]"), e);
                None
            }
        })
        .collect();
    let mut scopes_of = |field: &str, list: &[String]| -> Vec<Scope> {
        list.iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let here = format!("{at}.{field}[{i}]");
                match s.parse::<Scope>() {
                    Err(e) => {
                        iss.add(here, e.to_string());
                        None
                    }
                    Ok(scope) if !catalog.is_known(&scope) => {
                        let hint = catalog
                            .suggest(s)
                            .map(|h| format!(" (did you mean {:?}?)", h.to_string()))
                            .unwrap_or_default();
                        iss.add(here, format!("unknown scope {s:?}{hint}; add it to extra_scopes if Tableau has it"));
                        None
                    }
                    Ok(scope) => Some(scope),
                }
            })
            .collect()
    };
    let scopes = scopes_of("scopes", &g.scopes);
    let deny_scopes = scopes_of("deny_scopes", &g.deny_scopes);
    if g.scopes.is_empty() {
        iss.add(
            format!("{at}.scopes"),
            "empty: a grant without scopes allows nothing",
        );
    }
    let max_jwt_ttl = g.max_jwt_ttl.as_deref().map(|s| {
        let d = iss.duration(&format!("{at}.max_jwt_ttl"), Some(s), MAX_JWT_TTL);
        if d > MAX_JWT_TTL {
            iss.add(
                format!("{at}.max_jwt_ttl"),
                "more than 10m; Tableau would refuse such JWTs",
            );
        }
        d
    });
    let claims = claim_allowlist(iss, at, g.attributes, g.groups, g.on_demand_access);
    Grant {
        sites: g.sites,
        users,
        scopes,
        deny_scopes,
        max_jwt_ttl,
        claims,
    }
}

/// A grant's `attributes`, `groups` and `on_demand_access`: names that would overwrite the
/// broker's own claims are refused, as are empty or oversized names, values and globs.
pub(super) fn claim_allowlist(
    iss: &mut Issues,
    at: &str,
    attributes: BTreeMap<String, Vec<String>>,
    groups: Vec<String>,
    on_demand_access: Option<bool>,
) -> crate::claims::ClaimAllowlist {
    use crate::claims::{MAX_VALUE_BYTES, is_reserved};
    let bad = |s: &str| s.is_empty() || s.len() > MAX_VALUE_BYTES;
    for (name, values) in &attributes {
        let here = format!("{at}.attributes.{name}");
        if is_reserved(name) {
            iss.add(&here, "collides with a registered or Tableau claim (iss, sub, aud, exp, iat, nbf, jti, scp, https://tableau.com/…); pick another name");
        } else if bad(name) {
            iss.add(
                &here,
                format!("attribute names are 1 to {MAX_VALUE_BYTES} bytes"),
            );
        }
        if values.is_empty() {
            iss.add(
                &here,
                "no values: list the allowed values, or [\"*\"] for any value",
            );
        }
        if values.iter().any(|v| bad(v)) {
            iss.add(&here, format!("values are 1 to {MAX_VALUE_BYTES} bytes"));
        }
    }
    if groups.iter().any(|g| bad(g)) {
        iss.add(
            format!("{at}.groups"),
            format!("group globs are 1 to {MAX_VALUE_BYTES} bytes"),
        );
    }
    crate::claims::ClaimAllowlist {
        attributes,
        groups,
        on_demand_access: on_demand_access.unwrap_or(false),
    }
}
