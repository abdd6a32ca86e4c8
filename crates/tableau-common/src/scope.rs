//! Tableau access scopes: `tableau:<resource>:<action>`.
//!
//! A [`Scope`] is only ever built by parsing, so every value in the broker is well formed; the
//! catalog decides separately whether Tableau knows it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

/// The namespace every Tableau scope starts with.
pub const NAMESPACE: &str = "tableau";

/// What a scope allows on its resource. Closed, so a typo such as `reed` is caught at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// `create`: publish or add.
    Create,
    /// `read`: get or list.
    Read,
    /// `run`: run a task or refresh.
    Run,
    /// `update`: change.
    Update,
    /// `download`: fetch content or rendered output.
    Download,
    /// `delete`: remove.
    Delete,
    /// `embed`: newer embedding scopes (not in the seeds).
    Embed,
    /// `embed_authoring`: newer embedding scope (not in the seeds).
    EmbedAuthoring,
    /// `*`: a wildcard, which enables only its documented methods.
    Any,
}

impl Action {
    /// Every action, in the order error messages list them.
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Read,
        Action::Run,
        Action::Update,
        Action::Download,
        Action::Delete,
        Action::Embed,
        Action::EmbedAuthoring,
        Action::Any,
    ];

    /// The action as it is written in a scope string.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Run => "run",
            Action::Update => "update",
            Action::Download => "download",
            Action::Delete => "delete",
            Action::Embed => "embed",
            Action::EmbedAuthoring => "embed_authoring",
            Action::Any => "*",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Why a string is not a scope. The message names the input, so it can be shown as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeParseError {
    /// Not three colon-separated parts.
    #[error("{input:?} is not a scope: expected three parts, tableau:<resource>:<action>")]
    Shape {
        /// The rejected text.
        input: String,
    },
    /// The first part is not `tableau`.
    #[error("{input:?} is not a scope: it must start with \"tableau:\"")]
    Namespace {
        /// The rejected text.
        input: String,
    },
    /// The resource has characters outside `[a-z_]`, or is empty.
    #[error(
        "{input:?} is not a scope: resource {resource:?} must be lowercase letters and '_' (or '*')"
    )]
    Resource {
        /// The rejected text.
        input: String,
        /// The resource part.
        resource: String,
    },
    /// The action is not one Tableau uses.
    #[error(
        "{input:?} is not a scope: action {action:?} is not one of create, read, run, update, download, delete, embed, embed_authoring, *"
    )]
    Action {
        /// The rejected text.
        input: String,
        /// The action part.
        action: String,
    },
    /// `tableau:*:<action>` with an action other than `*`.
    #[error("{input:?} is not a scope: a '*' resource only exists as tableau:*:*")]
    ResourceWildcard {
        /// The rejected text.
        input: String,
    },
}

/// A syntactically valid Tableau scope. Ordered, compared and hashed by its text alone (the
/// action follows from the text), so a catalog can be searched with a `&str`. The text is shared:
/// cloning a catalog's scope onto a request is a reference count, not an allocation.
#[derive(Debug, Clone)]
pub struct Scope {
    text: Arc<str>,
    action: Action,
}

impl PartialEq for Scope {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Scope {}

impl PartialOrd for Scope {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scope {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Hash for Scope {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

// Consistent with Eq, Ord and Hash above, which look at the text only.
impl Borrow<str> for Scope {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl Scope {
    /// The resource part, such as `views`, or `*` for `tableau:*:*`.
    pub fn resource(&self) -> &str {
        let rest = &self.text[NAMESPACE.len() + 1..];
        rest.split(':').next().unwrap_or(rest)
    }

    /// The scope as written, e.g. `tableau:views:download`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The action part.
    pub fn action(&self) -> Action {
        self.action
    }

    /// True for `tableau:<resource>:*` and `tableau:*:*`.
    pub fn is_wildcard(&self) -> bool {
        self.action == Action::Any
    }
}

impl FromStr for Scope {
    type Err = ScopeParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut parts = input.split(':');
        let (Some(ns), Some(resource), Some(action), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ScopeParseError::Shape {
                input: input.to_owned(),
            });
        };
        if ns != NAMESPACE {
            return Err(ScopeParseError::Namespace {
                input: input.to_owned(),
            });
        }
        let Some(action) = Action::parse(action) else {
            return Err(ScopeParseError::Action {
                input: input.to_owned(),
                action: action.to_owned(),
            });
        };
        if resource == "*" {
            if action != Action::Any {
                return Err(ScopeParseError::ResourceWildcard {
                    input: input.to_owned(),
                });
            }
        } else if resource.is_empty()
            || !resource
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(ScopeParseError::Resource {
                input: input.to_owned(),
                resource: resource.to_owned(),
            });
        }
        Ok(Scope {
            text: input.into(),
            action,
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Parses, deduplicates and sorts scopes: the one normal form that keys the token cache.
pub fn normalize<I, S>(scopes: I) -> Result<Vec<Scope>, ScopeParseError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = scopes
        .into_iter()
        .map(|s| s.as_ref().trim().parse())
        .collect::<Result<Vec<Scope>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "tableau:content:read",
            "tableau:views:download",
            "tableau:tasks:*",
            "tableau:*:*",
            "tableau:file_uploads:create",
            "tableau:views:embed_authoring",
        ] {
            let scope: Scope = s.parse().unwrap();
            assert_eq!(scope.to_string(), s);
            assert_eq!(scope.resource(), s.split(':').nth(1).unwrap());
        }
    }

    #[test]
    fn rejects_with_named_input() {
        let cases = [
            ("tableau:views", "expected three parts"),
            ("tableau:views:read:x", "expected three parts"),
            ("tablo:views:read", "must start with"),
            ("tableau:Views:read", "resource \"Views\""),
            ("tableau::read", "resource \"\""),
            ("tableau:views:reed", "action \"reed\""),
            ("tableau:*:read", "tableau:*:*"),
            ("", "expected three parts"),
        ];
        for (input, want) in cases {
            let err = input.parse::<Scope>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input}: {err}");
        }
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        let n = normalize([
            "tableau:views:download",
            "tableau:content:read",
            "tableau:views:download",
        ])
        .unwrap();
        let s: Vec<String> = n.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["tableau:content:read", "tableau:views:download"]);
    }
}
