//! Claims beyond `scp` (issue 25): user attributes (read by `USERATTRIBUTE` and
//! `USERATTRIBUTEINCLUDES` in Tableau data policies), group membership and on-demand access.
//! A caller asks for them ([`ClaimSet`]); each grant says which it may ask for
//! ([`ClaimAllowlist`]). They change what the Tableau session may see, so they are part of the
//! cache key: sessions signed in with different claims are never shared.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most attributes in one request.
pub const MAX_ATTRIBUTES: usize = 16;
/// Most values of one attribute.
pub const MAX_ATTRIBUTE_VALUES: usize = 64;
/// Longest attribute name, value or group name, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Most groups in one request.
pub const MAX_GROUPS: usize = 64;
/// The claim that carries group names (dynamic group membership and on-demand access).
pub const GROUPS_CLAIM: &str = "https://tableau.com/groups";
/// The claim that turns on-demand access on (`"true"`).
pub const ODA_CLAIM: &str = "https://tableau.com/oda";
/// Tableau's own claims start with this; none may be set as an attribute.
pub const TABLEAU_CLAIM_PREFIX: &str = "https://tableau.com/";
/// Registered JWT claims the broker sets itself.
const REGISTERED: [&str; 8] = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scp"];

/// True when `name` is a registered claim or one of Tableau's (`https://tableau.com/…`): an
/// attribute with such a name would overwrite what the broker decides. Compared without case.
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    REGISTERED.contains(&lower.as_str()) || lower.starts_with(TABLEAU_CLAIM_PREFIX)
}

/// Why a request's claims are refused before the policy looks at them (bounds, reserved names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// More items than the bound.
    #[error("{actual} {what}, at most {limit} accepted")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The bound.
        limit: usize,
        /// What was sent.
        actual: usize,
    },
    /// A name or value longer than [`MAX_VALUE_BYTES`] (or empty).
    #[error(
        "{what} {} is empty or longer than {MAX_VALUE_BYTES} bytes",
        crate::echo::quoted(name)
    )]
    BadLength {
        /// Attribute name, value or group.
        what: &'static str,
        /// Which one (shortened for the message).
        name: String,
    },
    /// An attribute named like a registered or Tableau claim.
    #[error(
        "attribute {} collides with a registered or Tableau claim (iss, sub, aud, exp, iat, nbf, jti, scp, https://tableau.com/…); pick another name",
        crate::echo::quoted(name)
    )]
    Reserved {
        /// The attribute name.
        name: String,
    },
}

/// Claims as a request sent them, before bounds and policy: what the gRPC layer hands the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestedClaims {
    /// Attribute name → values.
    pub attributes: Vec<(String, Vec<String>)>,
    /// Group names.
    pub groups: Vec<String>,
    /// On-demand access.
    pub on_demand_access: bool,
}

impl RequestedClaims {
    /// True when the request asks for no claim beyond `scp` (the common case, checked for free).
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.groups.is_empty() && !self.on_demand_access
    }

    /// Bounds and reserved names checked, normalized.
    pub fn to_set(&self) -> Result<ClaimSet, ClaimError> {
        if self.is_empty() {
            return Ok(ClaimSet::default());
        }
        too_many("attributes", MAX_ATTRIBUTES, self.attributes.len())?;
        too_many("groups", MAX_GROUPS, self.groups.len())?;
        ClaimSet::from_request(
            self.attributes.iter().cloned(),
            self.groups.clone(),
            self.on_demand_access,
        )
    }
}

/// No claims beyond `scp`: what a request without any is keyed with, borrowed without allocating.
pub static NO_CLAIMS: ClaimSet = ClaimSet {
    attributes: BTreeMap::new(),
    groups: Vec::new(),
    on_demand_access: false,
};

/// What a caller asks to have in its JWT besides `scp`. Normalized (values and groups sorted and
/// deduplicated) so two requests for the same claims are the same cache key. `Debug` shows names
/// and counts, never values.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimSet {
    /// Attribute name → values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Group names for `https://tableau.com/groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `https://tableau.com/oda: "true"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand_access: bool,
}

impl fmt::Debug for ClaimSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimSet")
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .field("groups", &self.groups.len())
            .field("on_demand_access", &self.on_demand_access)
            .finish()
    }
}

fn check_len(what: &'static str, s: &str) -> Result<(), ClaimError> {
    if s.is_empty() || s.len() > MAX_VALUE_BYTES {
        return Err(ClaimError::BadLength {
            what,
            name: s.chars().take(40).collect(),
        });
    }
    Ok(())
}

fn too_many(what: &'static str, limit: usize, actual: usize) -> Result<(), ClaimError> {
    if actual > limit {
        return Err(ClaimError::TooMany {
            what,
            limit,
            actual,
        });
    }
    Ok(())
}

impl ClaimSet {
    /// Checks a request's claims against the bounds and reserved names, and normalizes them.
    pub fn from_request<I>(
        attributes: I,
        groups: Vec<String>,
        on_demand_access: bool,
    ) -> Result<ClaimSet, ClaimError>
    where
        I: IntoIterator<Item = (String, Vec<String>)>,
    {
        let mut out = ClaimSet {
            on_demand_access,
            ..ClaimSet::default()
        };
        for (name, mut values) in attributes {
            too_many("attributes", MAX_ATTRIBUTES, out.attributes.len() + 1)?;
            check_len("attribute name", &name)?;
            if is_reserved(&name) {
                return Err(ClaimError::Reserved { name });
            }
            too_many("values", MAX_ATTRIBUTE_VALUES, values.len())?;
            for v in &values {
                check_len("attribute value", v)?;
            }
            values.sort_unstable();
            values.dedup();
            out.attributes.insert(name, values);
        }
        too_many("groups", MAX_GROUPS, groups.len())?;
        for g in &groups {
            check_len("group", g)?;
        }
        out.groups = groups;
        out.groups.sort_unstable();
        out.groups.dedup();
        Ok(out)
    }

    /// True when nothing beyond `scp` is asked for.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.groups.is_empty() && !self.on_demand_access
    }

    /// Adds the claims to a JWT's: each attribute top-level (a string when it has one value, else
    /// an array), groups in [`GROUPS_CLAIM`], on-demand access as [`ODA_CLAIM`] `"true"`.
    pub fn insert_into(&self, claims: &mut Map<String, Value>) {
        for (name, values) in &self.attributes {
            let v = match values.as_slice() {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            claims.insert(name.clone(), v);
        }
        if !self.groups.is_empty() {
            claims.insert(
                GROUPS_CLAIM.to_owned(),
                Value::Array(self.groups.iter().cloned().map(Value::String).collect()),
            );
        }
        if self.on_demand_access {
            claims.insert(ODA_CLAIM.to_owned(), Value::String("true".to_owned()));
        }
    }

    /// The claim names this set puts in a JWT, for the audit record (never the values).
    pub fn names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.attributes.keys().cloned().collect();
        if !self.groups.is_empty() {
            out.push(GROUPS_CLAIM.to_owned());
        }
        if self.on_demand_access {
            out.push(ODA_CLAIM.to_owned());
        }
        out
    }

    /// This set behind an `Arc`, for a cache key: the common empty set is one shared allocation
    /// rather than one per entry.
    pub fn into_shared(self) -> std::sync::Arc<ClaimSet> {
        static EMPTY: std::sync::LazyLock<std::sync::Arc<ClaimSet>> =
            std::sync::LazyLock::new(std::sync::Arc::default);
        if self.is_empty() {
            EMPTY.clone()
        } else {
            std::sync::Arc::new(self)
        }
    }

    /// A canonical encoding (sorted JSON), for fingerprints and shared-cache key names.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Which claims a grant allows (`attributes`, `groups`, `on_demand_access` in `[[callers.grants]]`).
/// Empty: none (the default), so existing grants allow no claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimAllowlist {
    /// Attribute name → allowed values; `"*"` allows any value.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// Group name globs (`*` and `?`).
    pub groups: Vec<String>,
    /// Whether on-demand access may be asked for.
    pub on_demand_access: bool,
}

/// What an allowlist refused: the first claim no grant allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// An attribute name, or one of its values.
    Attribute {
        /// The attribute.
        name: String,
        /// The refused value; `None` when the name itself is not allowed.
        value: Option<String>,
    },
    /// A group name.
    Group {
        /// The group.
        name: String,
    },
    /// On-demand access.
    OnDemandAccess,
}

impl ClaimAllowlist {
    /// The `check-config` words for this allowlist (empty when it allows no claim).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if !self.attributes.is_empty() {
            out.push_str(&format!(" attributes={:?}", self.attributes));
        }
        if !self.groups.is_empty() {
            out.push_str(&format!(" groups={:?}", self.groups));
        }
        if self.on_demand_access {
            out.push_str(" on_demand_access");
        }
        out
    }

    /// `Ok` when every claim in `c` is allowed, else the first one that is not.
    pub fn check(&self, c: &ClaimSet) -> Result<(), ClaimRefusal> {
        for (name, values) in &c.attributes {
            let Some(allowed) = self.attributes.get(name) else {
                return Err(ClaimRefusal::Attribute {
                    name: name.clone(),
                    value: None,
                });
            };
            if allowed.iter().any(|a| a == "*") {
                continue;
            }
            if let Some(v) = values.iter().find(|v| !allowed.contains(v)) {
                return Err(ClaimRefusal::Attribute {
                    name: name.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        if let Some(g) = c.groups.iter().find(|g| {
            !self
                .groups
                .iter()
                .any(|p| wildmatch::WildMatch::new(p).matches(g))
        }) {
            return Err(ClaimRefusal::Group { name: g.clone() });
        }
        if c.on_demand_access && !self.on_demand_access {
            return Err(ClaimRefusal::OnDemandAccess);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(attrs: &[(&str, &[&str])], groups: &[&str], oda: bool) -> Result<ClaimSet, ClaimError> {
        ClaimSet::from_request(
            attrs
                .iter()
                .map(|(n, v)| (n.to_string(), v.iter().map(|s| s.to_string()).collect())),
            groups.iter().map(|s| s.to_string()).collect(),
            oda,
        )
    }

    #[test]
    fn reserved_names_and_bounds_are_refused() {
        for n in [
            "iss",
            "SUB",
            "scp",
            "https://tableau.com/groups",
            "https://tableau.com/x",
        ] {
            assert!(
                matches!(
                    set(&[(n, &["a"])], &[], false),
                    Err(ClaimError::Reserved { .. })
                ),
                "{n}"
            );
        }
        let many: Vec<(String, Vec<String>)> = (0..17)
            .map(|i| (format!("a{i}"), vec!["v".into()]))
            .collect();
        assert!(matches!(
            ClaimSet::from_request(many, vec![], false),
            Err(ClaimError::TooMany {
                what: "attributes",
                ..
            })
        ));
        let long = "x".repeat(257);
        assert!(matches!(
            set(&[("a", &[long.as_str()])], &[], false),
            Err(ClaimError::BadLength { .. })
        ));
        let groups: Vec<String> = (0..65).map(|i| format!("g{i}")).collect();
        assert!(matches!(
            ClaimSet::from_request(Vec::new(), groups, false),
            Err(ClaimError::TooMany { what: "groups", .. })
        ));
        let values: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
        assert!(matches!(
            ClaimSet::from_request(vec![("a".to_owned(), values)], vec![], false),
            Err(ClaimError::TooMany { what: "values", .. })
        ));
    }

    #[test]
    fn the_allowlist_names_what_it_refuses() {
        let allow = ClaimAllowlist {
            attributes: [
                (
                    "region".to_owned(),
                    vec!["emea".to_owned(), "us".to_owned()],
                ),
                ("department".to_owned(), vec!["*".to_owned()]),
            ]
            .into(),
            groups: vec!["Finance Viewers".into(), "Region-*".into()],
            on_demand_access: false,
        };
        let ok = set(
            &[("region", &["us", "emea"]), ("department", &["x"])],
            &["Region-EU"],
            false,
        )
        .unwrap();
        assert_eq!(allow.check(&ok), Ok(()));
        assert_eq!(
            allow.check(&set(&[("region", &["apac"])], &[], false).unwrap()),
            Err(ClaimRefusal::Attribute {
                name: "region".into(),
                value: Some("apac".into())
            })
        );
        assert_eq!(
            allow.check(&set(&[("team", &["a"])], &[], false).unwrap()),
            Err(ClaimRefusal::Attribute {
                name: "team".into(),
                value: None
            })
        );
        assert_eq!(
            allow.check(&set(&[], &["Admins"], false).unwrap()),
            Err(ClaimRefusal::Group {
                name: "Admins".into()
            })
        );
        assert_eq!(
            allow.check(&set(&[], &[], true).unwrap()),
            Err(ClaimRefusal::OnDemandAccess)
        );
    }

    #[test]
    fn claims_go_where_tableau_reads_them_and_debug_hides_values() {
        let c = set(
            &[("region", &["us"]), ("dept", &["b", "a", "b"])],
            &["G"],
            true,
        )
        .unwrap();
        let mut m = Map::new();
        c.insert_into(&mut m);
        assert_eq!(m["region"], "us");
        assert_eq!(m["dept"], serde_json::json!(["a", "b"]));
        assert_eq!(m[GROUPS_CLAIM], serde_json::json!(["G"]));
        assert_eq!(m[ODA_CLAIM], "true");
        assert!(!format!("{c:?}").contains("us"));
        assert_eq!(c.names(), vec!["dept", "region", GROUPS_CLAIM, ODA_CLAIM]);
    }
}
