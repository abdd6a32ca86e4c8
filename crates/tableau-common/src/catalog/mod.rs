//! The scope catalog: which Tableau scopes exist, what kind each is, which REST methods each one
//! enables, and which scope each method needs.
//!
//! Built into the binary from a table of its own (`catalog/table.rs`), so policy decisions never
//! depend on the network; operators add scopes Tableau has grown since (`extra_scopes`) with
//! [`Catalog::with_extra`].

mod methods;
mod table;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use crate::scope::Scope;

/// The broad kind of a scope, as Tableau's documentation sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `tableau:content:read`: GET methods across content types.
    ContentRead,
    /// Mostly one method and one category.
    Individual,
    /// `tableau:<resource>:*`: enables the methods its documented coverage lists, and no others.
    Wildcard,
}

impl Kind {
    /// The kind as shown to people and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ContentRead => "content-read",
            Kind::Individual => "individual",
            Kind::Wildcard => "wildcard",
        }
    }
}

/// Where the broker learned about a scope; operators should know which entries are documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Listed in the seeds (Tableau's "access scopes for connected apps" page).
    Seeds,
    /// Newer Tableau scope named in the reference but not in the seeds.
    Newer,
    /// Added by the operator through `extra_scopes`.
    Extra,
}

/// Which revisions of the documentation list a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rev {
    /// Every revision.
    All,
    /// Only the newest (Japanese).
    New,
    /// Absent from the oldest (German).
    NotOld,
    /// Absent from the newest.
    NotInNew,
}

impl Rev {
    /// A short note for people, empty when every revision agrees.
    pub fn note(self) -> &'static str {
        match self {
            Rev::All => "",
            Rev::New => "only in the newest revision",
            Rev::NotOld => "absent from the oldest revision",
            Rev::NotInNew => "absent from the newest revision",
        }
    }
}

/// Table row: scope, kind, cross-category, origin, notes.
struct ScopeRow(&'static str, Kind, bool, Origin, &'static str);
/// Table row: wildcard scope and the individual scopes it covers.
struct WildcardRow(&'static str, &'static [&'static str]);
/// Table row: category, name, verb, URI template, scope, revision.
struct MethodRow(
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
    Rev,
);

/// A scope the catalog knows, with what it means.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScopeEntry {
    /// The scope.
    pub scope: Scope,
    /// Its kind.
    pub kind: Kind,
    /// True when it acts on more than one category (content read, tasks run, views download, permissions).
    pub cross_category: bool,
    /// Where the entry comes from.
    pub origin: Origin,
    /// Revision notes and oddities, for people.
    pub notes: String,
    /// For wildcards: the individual scopes it covers. Empty otherwise.
    pub covers: Vec<Scope>,
}

/// A Tableau REST method and the scope it needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Method {
    /// Category, such as `views`.
    pub category: &'static str,
    /// Name as in Tableau's REST reference.
    pub name: &'static str,
    /// HTTP verb; `None` for the bulk label methods, whose verb the reference does not give.
    pub http_method: Option<&'static str>,
    /// URI template relative to `/api/{version}`.
    pub uri: &'static str,
    /// The scope that enables it.
    pub scope: Scope,
    /// Which documentation revisions list it.
    pub rev: Rev,
}

/// The scope catalog. Cheap to share: build once, hold in an `Arc`.
#[derive(Debug, Clone)]
pub struct Catalog {
    scopes: BTreeMap<Scope, ScopeEntry>,
    methods: Vec<Method>,
}

static BUILTIN: LazyLock<Arc<Catalog>> = LazyLock::new(|| Arc::new(Catalog::build()));

impl Catalog {
    /// The catalog built into the binary.
    pub fn builtin() -> Arc<Catalog> {
        Arc::clone(&BUILTIN)
    }

    // Rows that fail to parse are dropped here and caught by the `table_is_well_formed` test,
    // so a bad edit fails CI instead of panicking at run time.
    fn build() -> Catalog {
        let mut scopes = BTreeMap::new();
        for ScopeRow(s, kind, cross_category, origin, notes) in table::SCOPES {
            if let Ok(scope) = s.parse::<Scope>() {
                let covers = table::WILDCARDS
                    .iter()
                    .find(|w| w.0 == *s)
                    .map(|w| w.1.iter().filter_map(|c| c.parse().ok()).collect())
                    .unwrap_or_default();
                scopes.insert(
                    scope.clone(),
                    ScopeEntry {
                        scope,
                        kind: *kind,
                        cross_category: *cross_category,
                        origin: *origin,
                        notes: (*notes).to_owned(),
                        covers,
                    },
                );
            }
        }
        let methods = methods::METHODS
            .iter()
            .filter_map(|MethodRow(category, name, verb, uri, scope, rev)| {
                Some(Method {
                    category,
                    name,
                    http_method: *verb,
                    uri,
                    scope: scope.parse().ok()?,
                    rev: *rev,
                })
            })
            .collect();
        Catalog { scopes, methods }
    }

    /// This catalog plus operator-added scopes (`extra_scopes`), which enable no catalogued method
    /// but may be requested and granted. Scopes the catalog already knows are left as they are.
    pub fn with_extra<'a>(&self, extra: impl IntoIterator<Item = &'a Scope>) -> Catalog {
        let mut out = self.clone();
        for scope in extra {
            out.scopes
                .entry(scope.clone())
                .or_insert_with(|| ScopeEntry {
                    scope: scope.clone(),
                    kind: if scope.is_wildcard() {
                        Kind::Wildcard
                    } else {
                        Kind::Individual
                    },
                    cross_category: false,
                    origin: Origin::Extra,
                    notes: "added by the operator (extra_scopes)".to_owned(),
                    covers: Vec::new(),
                });
        }
        out
    }

    /// True when the scope is catalogued or operator-added.
    pub fn is_known(&self, scope: &Scope) -> bool {
        self.scopes.contains_key(scope)
    }

    /// The catalog's own copy of a known scope, found by its text. Requests are matched through
    /// it so that a known scope costs a lookup and a reference count, not a parse and an
    /// allocation.
    pub fn canonical(&self, text: &str) -> Option<&Scope> {
        self.scopes.get_key_value(text).map(|(k, _)| k)
    }

    /// The entry for a scope.
    pub fn get(&self, scope: &Scope) -> Option<&ScopeEntry> {
        self.scopes.get(scope)
    }

    /// Every known scope, sorted.
    pub fn scopes(&self) -> impl Iterator<Item = &ScopeEntry> {
        self.scopes.values()
    }

    /// Every catalogued method, in table order.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// True when holding `granted` gives `requested`: the same scope, or a wildcard whose
    /// documented coverage lists it. A wildcard is never implied by its members.
    pub fn covers(&self, granted: &Scope, requested: &Scope) -> bool {
        granted == requested
            || self
                .scopes
                .get(granted)
                .is_some_and(|e| e.covers.contains(requested))
    }

    /// The methods a scope enables: its own, or for a wildcard those of the scopes it covers.
    pub fn methods_enabled_by(&self, scope: &Scope) -> Vec<&Method> {
        self.methods
            .iter()
            .filter(|m| self.covers(scope, &m.scope))
            .collect()
    }

    /// True when any of `scopes` enables the method (what Tableau checks on each REST call).
    pub fn enables(&self, scopes: &[Scope], method: &Method) -> bool {
        scopes.iter().any(|s| self.covers(s, &method.scope))
    }

    /// Finds a method by name, ignoring case and surrounding space.
    pub fn method(&self, name: &str) -> Option<&Method> {
        let name = name.trim();
        self.methods
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
    }

    /// The smallest scope set that enables every named method, and the names it does not know.
    ///
    /// Every method needs exactly one individual (or content-read) scope, so the answer is the
    /// distinct set of those. A wildcard is never proposed: it would be no smaller in privilege and
    /// often larger, and least privilege is the point of asking.
    pub fn scopes_for_methods<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<Scope>, Vec<String>) {
        let mut needed = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match self.method(name) {
                Some(m) => needed.push(m.scope.clone()),
                None => unknown.push(name.to_owned()),
            }
        }
        needed.sort();
        needed.dedup();
        (needed, unknown)
    }

    /// Routes a REST call (verb and path relative to `/api/{version}`, query ignored) to its method.
    /// When several templates match, the one with more literal segments wins.
    pub fn route(&self, verb: &str, path: &str) -> Option<&Method> {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').collect();
        self.methods
            .iter()
            .filter(|m| m.http_method.is_some_and(|v| v.eq_ignore_ascii_case(verb)))
            .filter_map(|m| {
                let tpl = m.uri.split('?').next().unwrap_or(m.uri);
                let tsegs: Vec<&str> = tpl.split('/').collect();
                if tsegs.len() != segs.len() {
                    return None;
                }
                let mut literals = 0usize;
                for (t, s) in tsegs.iter().zip(&segs) {
                    if t.starts_with('{') && t.ends_with('}') {
                        if s.is_empty() {
                            return None;
                        }
                    } else if t == s {
                        literals += 1;
                    } else {
                        return None;
                    }
                }
                Some((literals, m))
            })
            .max_by_key(|(literals, _)| *literals)
            .map(|(_, m)| m)
    }

    /// The known scope closest to an unknown one, for "did you mean" hints.
    pub fn suggest(&self, unknown: &str) -> Option<&Scope> {
        self.scopes
            .keys()
            .map(|s| (strsim::levenshtein(unknown, &s.to_string()), s))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, _)| *d)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Scope {
        x.parse().unwrap()
    }

    #[test]
    fn table_is_well_formed() {
        let c = Catalog::builtin();
        assert_eq!(
            c.scopes.len(),
            table::SCOPES.len(),
            "a scope row failed to parse or repeats"
        );
        assert_eq!(
            c.methods.len(),
            methods::METHODS.len(),
            "a method row failed to parse"
        );
        for m in c.methods() {
            assert!(c.is_known(&m.scope), "{} needs unknown {}", m.name, m.scope);
        }
        for w in table::WILDCARDS {
            let e = c.get(&s(w.0)).unwrap();
            assert_eq!(e.kind, Kind::Wildcard);
            assert_eq!(e.covers.len(), w.1.len(), "{}", w.0);
            for covered in &e.covers {
                assert!(c.is_known(covered));
                assert!(!covered.is_wildcard());
            }
        }
        for e in c.scopes() {
            assert_eq!(
                e.scope.is_wildcard(),
                e.kind == Kind::Wildcard,
                "{}",
                e.scope
            );
        }
    }

    #[test]
    fn wildcard_not_implied_by_members() {
        let c = Catalog::builtin();
        assert!(c.covers(
            &s("tableau:datasources:*"),
            &s("tableau:datasources:create")
        ));
        assert!(!c.covers(
            &s("tableau:datasources:*"),
            &s("tableau:datasources:download")
        ));
        assert!(!c.covers(
            &s("tableau:datasources:create"),
            &s("tableau:datasources:*")
        ));
    }

    #[test]
    fn routes_by_verb_and_template() {
        let c = Catalog::builtin();
        let r = |v, p| c.route(v, p).map(|m| m.name);
        assert_eq!(r("GET", "/sites/abc/views/v1/pdf"), Some("Query View PDF"));
        assert_eq!(r("GET", "/sites/abc/views"), Some("Query Views for Site"));
        assert_eq!(
            r("GET", "/sites/abc/users/u1/groups"),
            Some("Get Groups for a User")
        );
        assert_eq!(
            r("DELETE", "/sites/abc/users/u1"),
            Some("Remove User from Site")
        );
        assert_eq!(
            r("POST", "/sites/abc/tasks/extractRefreshes/t1/runNow"),
            Some("Run Extract Refresh Task")
        );
        assert_eq!(
            r("GET", "/sites/abc/content/recent"),
            Some("Get Recently Viewed for Site")
        );
        assert_eq!(r("PATCH", "/sites/abc/views"), None);
        assert_eq!(r("GET", "/sites/abc/nothing"), None);
    }

    #[test]
    fn smallest_scope_set() {
        let c = Catalog::builtin();
        let (scopes, unknown) = c.scopes_for_methods([
            "Query View PDF",
            "update workbook now",
            "Query View Image",
            "Nope",
        ]);
        let scopes: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        assert_eq!(scopes, ["tableau:tasks:run", "tableau:views:download"]);
        assert_eq!(unknown, ["Nope"]);
    }

    #[test]
    fn extra_scopes_become_known() {
        let c = Catalog::builtin().with_extra([&s("tableau:pulse:read")]);
        assert!(c.is_known(&s("tableau:pulse:read")));
        assert_eq!(
            c.get(&s("tableau:pulse:read")).unwrap().origin,
            Origin::Extra
        );
        assert!(!Catalog::builtin().is_known(&s("tableau:pulse:read")));
    }

    #[test]
    fn suggests_close_scopes() {
        let c = Catalog::builtin();
        assert_eq!(
            c.suggest("tableau:view:download")
                .map(ToString::to_string)
                .as_deref(),
            Some("tableau:views:download")
        );
    }
}
