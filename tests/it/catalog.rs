//! The built-in catalog checked against the source documents in `../shared`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tableau_token_broker::catalog::{Catalog, Kind};
use tableau_token_broker::scope::Scope;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Pulls `tableau:<resource>:<action>` out of running text, where the seeds often glue the next
/// word on ("tableau:content:readOttieni"): the action is matched greedily against the known ones.
fn scopes_in(text: &str) -> BTreeSet<String> {
    const ACTIONS: [&str; 7] = ["download", "create", "delete", "update", "read", "run", "*"];
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tableau:") {
        rest = &rest[i + "tableau:".len()..];
        let res_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        if res_len == 0 || rest.as_bytes().get(res_len) != Some(&b':') {
            continue;
        }
        let after = &rest[res_len + 1..];
        if let Some(a) = ACTIONS.iter().find(|a| after.starts_with(**a)) {
            found.insert(format!("tableau:{}:{}", &rest[..res_len], a));
        }
    }
    found
}

#[test]
fn catalog_knows_every_scope_in_the_seeds() {
    let catalog = Catalog::builtin();
    let mut seen = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(shared().join("seeds")).expect("shared/seeds beside the repo") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "txt") {
            files += 1;
            seen.extend(scopes_in(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    assert_eq!(files, 4, "four revisions of the scopes page");
    assert!(
        seen.len() >= 45,
        "found only {} scopes: the scan is broken",
        seen.len()
    );
    let unknown: Vec<&String> = seen
        .iter()
        .filter(|s| !catalog.is_known(&s.parse::<Scope>().unwrap()))
        .collect();
    assert!(unknown.is_empty(), "catalog misses {unknown:?}");
    // And nothing the catalog marks as from the seeds is absent from them.
    for e in catalog.scopes() {
        if e.origin == tableau_token_broker::catalog::Origin::Seeds {
            assert!(
                seen.contains(&e.scope.to_string()),
                "{} is marked as from the seeds but is not in them",
                e.scope
            );
        }
    }
}

#[test]
fn wildcard_coverage_matches_the_reference_table() {
    let reference = std::fs::read_to_string(shared().join("reference/tableau.md")).unwrap();
    let table: BTreeSet<String> = reference
        .lines()
        .filter_map(|l| l.strip_prefix("| `tableau:"))
        .filter_map(|l| l.split('`').next())
        .filter(|s| s.ends_with(":*"))
        .map(|s| format!("tableau:{s}"))
        .collect();
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
