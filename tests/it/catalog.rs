//! The built-in catalog checked against facts from Tableau's documentation, kept in this
//! repository as data (`tests/data/documented_scopes.toml`): every scope string each revision of the
//! "access scopes for connected apps" page names, and the page's wildcard table.

use std::collections::BTreeSet;

use serde::Deserialize;
use tableau_token_broker::catalog::{Catalog, Kind, Origin};
use tableau_token_broker::scope::Scope;

#[derive(Deserialize)]
struct Documented {
    revisions: Vec<Revision>,
    wildcards: Vec<String>,
}

#[derive(Deserialize)]
struct Revision {
    id: String,
    language: String,
    scopes: Vec<String>,
}

fn documented() -> Documented {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/documented_scopes.toml"
    );
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn catalog_knows_every_documented_scope() {
    let catalog = Catalog::builtin();
    let doc = documented();
    assert_eq!(doc.revisions.len(), 4, "four revisions of the scopes page");
    let mut seen = BTreeSet::new();
    for rev in &doc.revisions {
        assert!(
            rev.scopes.len() >= 40,
            "revision {} ({}) lists only {} scopes: the data is damaged",
            rev.id,
            rev.language,
            rev.scopes.len()
        );
        for s in &rev.scopes {
            let scope: Scope = s.parse().unwrap_or_else(|e| panic!("{}: {e}", rev.id));
            assert!(
                catalog.is_known(&scope),
                "catalog misses {s} (revision {})",
                rev.id
            );
            seen.insert(s.clone());
        }
    }
    // And nothing the catalog marks as from the documentation is absent from it.
    for e in catalog.scopes() {
        if e.origin == Origin::Seeds {
            assert!(
                seen.contains(&e.scope.to_string()),
                "{} is marked as documented but no revision names it",
                e.scope
            );
        }
    }
}

#[test]
fn wildcard_coverage_matches_the_reference_table() {
    let table: BTreeSet<String> = documented().wildcards.into_iter().collect();
    let catalog = Catalog::builtin();
    let ours: BTreeSet<String> = catalog
        .scopes()
        .filter(|e| e.kind == Kind::Wildcard)
        .map(|e| e.scope.to_string())
        .collect();
    assert_eq!(
        table, ours,
        "wildcards in the reference table vs the catalog"
    );

    // The reference's prose, as method names.
    let expect: &[(&str, &[&str])] = &[
        (
            "tableau:datasources:*",
            &[
                "Publish Data Source",
                "Update Data Source",
                "Update Data Source Connection",
            ],
        ),
        (
            "tableau:metrics:*",
            &["Query Metric Data", "Update Metric", "Delete Metric"],
        ),
        (
            "tableau:workbooks:*",
            &[
                "Publish Workbook",
                "Update Workbook",
                "Update Workbook Connection",
                "Download Workbook",
                "Download Workbook Revision",
                "Query Workbook Preview Image",
            ],
        ),
        (
            "tableau:groups:*",
            &[
                "Create Group",
                "Query Groups",
                "Get Users in Group",
                "Add User to Group",
                "Remove User from Group",
                "Update Group",
                "Delete Group",
            ],
        ),
        (
            "tableau:projects:*",
            &["Create Project", "Delete Project", "Update Project"],
        ),
        (
            "tableau:users:*",
            &[
                "Get Users on Site",
                "Query User On Site",
                "Get Groups for a User",
                "Add User to Site",
                "Remove User from Site",
            ],
        ),
        (
            "tableau:tasks:*",
            &[
                "List Extract Refresh Tasks in Site",
                "Run Extract Refresh Task",
                "Create Subscription",
                "Get Subscription",
                "List Subscriptions",
                "Update Subscription",
                "Delete Subscription",
                "Update Data Source Now",
                "Update Workbook Now",
            ],
        ),
        (
            "tableau:permissions:*",
            &[
                "Add Data Source Permissions",
                "Add Default Permissions",
                "Add Project Permissions",
                "Add View Permissions",
                "Add Workbook Permissions",
                "Delete Data Source Permission",
                "Delete Default Permission",
                "Delete Project Permission",
                "Delete View Permission",
                "Delete Workbook Permission",
                "Query Data Source Permissions",
                "Query Default Permissions",
                "Query Project Permissions",
                "Query View Permissions",
                "Query Workbook Permissions",
            ],
        ),
        (
            "tableau:sites:*",
            &["Create Site", "Query Sites", "Update Site", "Delete Site"],
        ),
    ];
    for (wildcard, methods) in expect {
        let w: Scope = wildcard.parse().unwrap();
        let got: BTreeSet<&str> = catalog
            .methods_enabled_by(&w)
            .iter()
            .map(|m| m.name)
            .collect();
        let want: BTreeSet<&str> = methods.iter().copied().collect();
        assert_eq!(got, want, "{wildcard}");
    }
    // "not download", "reading projects needs content:read": spelled out.
    let ds: Scope = "tableau:datasources:*".parse().unwrap();
    assert!(
        !catalog
            .methods_enabled_by(&ds)
            .iter()
            .any(|m| m.name == "Download Data Source")
    );
}
