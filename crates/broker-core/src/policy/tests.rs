//! Unit tests of `policy`.
use super::*;
use proptest::prelude::*;

fn grant(sites: &[&str], users: &[&str], scopes: &[&str], deny: &[&str]) -> Grant {
    Grant {
        sites: sites.iter().map(|s| (*s).to_owned()).collect(),
        users: users
            .iter()
            .map(|u| UserPattern::parse(u).unwrap())
            .collect(),
        scopes: scopes.iter().map(|s| s.parse().unwrap()).collect(),
        deny_scopes: deny.iter().map(|s| s.parse().unwrap()).collect(),
        max_jwt_ttl: None,
        claims: Default::default(),
    }
}

fn policy(entries: Vec<(&str, Vec<Grant>)>) -> Policy {
    Policy::new(
        Catalog::builtin(),
        entries
            .into_iter()
            .map(|(id, grants)| CallerEntry {
                pattern: IdentityPattern::parse(id).unwrap(),
                grants,
            })
            .collect(),
    )
}

fn ask<'a>(
    p: &Policy,
    id: &'a str,
    site: &'a str,
    user: &'a str,
    scopes: &[&str],
) -> Result<Authorization, Denial> {
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    p.decide(&AccessRequest {
        source: IdentitySource::Spiffe,
        identity: id,
        site,
        user,
        scopes: &scopes,
    })
}

const R: &str = "spiffe://example.org/ns/reports/sa/renderer";

#[test]
fn allows_exact_and_normalizes() {
    let p = policy(vec![(
        R,
        vec![grant(
            &["finance"],
            &["svc-renderer"],
            &["tableau:content:read", "tableau:views:download"],
            &[],
        )],
    )]);
    let ok = ask(
        &p,
        R,
        "finance",
        "svc-renderer",
        &[
            "tableau:views:download",
            "tableau:content:read",
            "tableau:views:download",
        ],
    )
    .unwrap();
    let s: Vec<String> = ok.scopes.iter().map(ToString::to_string).collect();
    assert_eq!(s, ["tableau:content:read", "tableau:views:download"]);
}

#[test]
fn each_denial_names_what_failed() {
    let p = policy(vec![(
        R,
        vec![grant(
            &["finance"],
            &["svc-renderer", "*@example.com"],
            &["tableau:content:read", "tableau:tasks:*"],
            &["tableau:tasks:delete"],
        )],
    )]);
    assert!(matches!(
        ask(
            &p,
            "spiffe://example.org/other",
            "finance",
            "svc-renderer",
            &["tableau:content:read"]
        ),
        Err(Denial::UnknownCaller { .. })
    ));
    assert!(
        matches!(ask(&p, R, "sales", "svc-renderer", &["tableau:content:read"]), Err(Denial::Site { site, .. }) if site == "sales")
    );
    assert!(
        matches!(ask(&p, R, "finance", "mallory", &["tableau:content:read"]), Err(Denial::User { user, .. }) if user == "mallory")
    );
    assert!(
        ask(
            &p,
            R,
            "finance",
            "ann@example.com",
            &["tableau:content:read"]
        )
        .is_ok()
    );
    assert!(matches!(
        ask(
            &p,
            R,
            "finance",
            "ann@example.com.evil",
            &["tableau:content:read"]
        ),
        Err(Denial::User { .. })
    ));
    assert!(
        matches!(ask(&p, R, "finance", "svc-renderer", &["tableau:content:read", "tableau:views:download"]), Err(Denial::Scope { scope, .. }) if scope == "tableau:views:download")
    );
    assert!(
        ask(&p, R, "finance", "svc-renderer", &["tableau:tasks:run"]).is_ok(),
        "wildcard covers a member"
    );
    assert!(
        matches!(
            ask(&p, R, "finance", "svc-renderer", &["tableau:tasks:delete"]),
            Err(Denial::ScopeDenied { .. })
        ),
        "deny wins"
    );
    match ask(&p, R, "finance", "svc-renderer", &["tableau:tasks:*"]) {
        Err(d @ Denial::ScopeDenied { .. }) => {
            let Denial::ScopeDenied { by, .. } = &d else {
                unreachable!()
            };
            let (denied, instead) = (&by.denied, &by.instead);
            assert_eq!(denied, "tableau:tasks:delete");
            assert!(
                instead.contains(&"tableau:tasks:run".to_owned()),
                "{instead:?}"
            );
            assert!(!instead.contains(&"tableau:tasks:delete".to_owned()));
            let msg = d.to_string();
            assert!(
                msg.contains("tableau:tasks:delete") && msg.contains("tableau:tasks:run"),
                "{msg}"
            );
        }
        other => panic!("a wildcard covering a denied scope must be refused: {other:?}"),
    }
    assert!(matches!(
        ask(&p, R, "finance", "svc-renderer", &[]),
        Err(Denial::NoScopes)
    ));
    assert!(matches!(
        ask(
            &p,
            R,
            "finance",
            "svc-renderer",
            &["tableau:datasource:read"]
        ),
        Err(Denial::UnknownScope { .. })
    ));
    assert!(matches!(
        ask(&p, R, "finance", "svc-renderer", &["nope"]),
        Err(Denial::MalformedScope(_))
    ));
}

#[test]
fn wildcard_never_granted_from_members() {
    let p = policy(vec![(
        R,
        vec![grant(
            &["finance"],
            &["u"],
            &["tableau:datasources:create", "tableau:datasources:update"],
            &[],
        )],
    )]);
    assert!(matches!(
        ask(&p, R, "finance", "u", &["tableau:datasources:*"]),
        Err(Denial::Scope { .. })
    ));
}

#[test]
fn star_user_only_when_explicit_and_prefix_callers() {
    let p = policy(vec![
        (
            "spiffe://example.org/ns/reports/*",
            vec![grant(&["*"], &["*"], &["tableau:content:read"], &[])],
        ),
        (
            R,
            vec![grant(
                &["finance"],
                &["svc"],
                &["tableau:views:download"],
                &[],
            )],
        ),
    ]);
    // The exact entry is more specific and replaces the prefix entry for R.
    assert!(matches!(
        ask(&p, R, "finance", "svc", &["tableau:content:read"]),
        Err(Denial::Scope { .. })
    ));
    assert!(
        ask(
            &p,
            "spiffe://example.org/ns/reports/sa/x",
            "any",
            "anyone",
            &["tableau:content:read"]
        )
        .is_ok()
    );
    assert!(
        ask(
            &p,
            "spiffe://example.org/ns/reportsX/sa/x",
            "any",
            "anyone",
            &["tableau:content:read"]
        )
        .is_err()
    );
    assert!(IdentityPattern::parse("web.example.com/*").is_err());
    assert!(IdentityPattern::parse("spiffe://a/*b").is_err());
}

#[test]
fn identity_patterns_name_their_certificate_field() {
    use IdentitySource::*;
    let spiffe = IdentityPattern::parse("spiffe://acme.test/ns/reports/sa/renderer").unwrap();
    assert!(spiffe.matches(Spiffe, "spiffe://acme.test/ns/reports/sa/renderer"));
    assert!(!spiffe.matches(CommonName, "spiffe://acme.test/ns/reports/sa/renderer"));
    assert!(!spiffe.matches(Dns, "spiffe://acme.test/ns/reports/sa/renderer"));
    let prefix = IdentityPattern::parse("spiffe://acme.test/ns/ops/*").unwrap();
    assert!(prefix.matches(Spiffe, "spiffe://acme.test/ns/ops/sa/x"));
    assert!(!prefix.matches(CommonName, "spiffe://acme.test/ns/ops/../reports/sa/x"));
    let dns = IdentityPattern::parse("dns:Pulse.Example.com").unwrap();
    assert_eq!(dns.to_string(), "dns:pulse.example.com");
    assert!(dns.matches(Dns, "pulse.example.com"));
    assert!(dns.matches(Dns, "PULSE.example.com"));
    assert!(!dns.matches(CommonName, "pulse.example.com"));
    let cn = IdentityPattern::parse("cn:pulse").unwrap();
    assert!(cn.matches(CommonName, "pulse") && !cn.matches(Dns, "pulse"));
    assert_eq!(cn.to_string(), "cn:pulse");
    let bare = IdentityPattern::parse("pulse.example.com").unwrap_err();
    assert!(
        bare.contains("\"dns:pulse.example.com\"") && bare.contains("\"cn:pulse.example.com\""),
        "{bare}"
    );
    for bad in [
        "cn:spiffe://acme.test/a",
        "dns:",
        "cn:a*",
        "spiffe://Acme.test/a",
        "spiffe://acme.test/../a",
        "spiffe://acme.test/a/../*",
    ] {
        assert!(IdentityPattern::parse(bad).is_err(), "{bad}");
    }
    assert!(IdentityPattern::parse("spiffe://acme.test/*").is_ok());
}

#[test]
fn split_across_grants_is_explained() {
    let p = policy(vec![(
        R,
        vec![
            grant(&["f"], &["u"], &["tableau:content:read"], &[]),
            grant(&["f"], &["u"], &["tableau:views:download"], &[]),
        ],
    )]);
    assert!(matches!(
        ask(
            &p,
            R,
            "f",
            "u",
            &["tableau:content:read", "tableau:views:download"]
        ),
        Err(Denial::Split { .. })
    ));
}

const SCOPES: &[&str] = &[
    "tableau:content:read",
    "tableau:views:download",
    "tableau:tasks:*",
    "tableau:tasks:run",
    "tableau:tasks:delete",
    "tableau:datasources:*",
    "tableau:datasources:create",
    "tableau:users:read",
];
const USERS: &[&str] = &["u1", "u2", "*@example.com", "*"];
const SITES: &[&str] = &["a", "b", "*"];

fn arb_grant() -> impl Strategy<Value = Grant> {
    (
        proptest::sample::subsequence(SITES, 1..=2),
        proptest::sample::subsequence(USERS, 1..=2),
        proptest::sample::subsequence(SCOPES, 1..=4),
        proptest::sample::subsequence(SCOPES, 0..=1),
    )
        .prop_map(|(s, u, sc, d)| grant(&s, &u, &sc, &d))
}

fn arb_request() -> impl Strategy<Value = (String, String, Vec<String>)> {
    (
        proptest::sample::select(&["a", "b", "c"][..]),
        proptest::sample::select(&["u1", "u2", "x@example.com", "z"][..]),
        proptest::collection::vec(proptest::sample::select(SCOPES), 1..4),
    )
        .prop_map(|(s, u, sc)| {
            (
                s.to_owned(),
                u.to_owned(),
                sc.into_iter().map(str::to_owned).collect(),
            )
        })
}

proptest! {
    #[test]
    fn adding_a_grant_never_turns_allow_into_deny(grants in proptest::collection::vec(arb_grant(), 0..4), extra in arb_grant(), (site, user, scopes) in arb_request()) {
        let before = policy(vec![(R, grants.clone())]);
        let mut more = grants;
        more.push(extra);
        let after = policy(vec![(R, more)]);
        let req = AccessRequest { source: IdentitySource::Spiffe, identity: R, site: &site, user: &user, scopes: &scopes };
        if before.decide(&req).is_ok() {
            prop_assert!(after.decide(&req).is_ok());
        }
    }

    #[test]
    fn removing_a_grant_never_turns_deny_into_allow(grants in proptest::collection::vec(arb_grant(), 1..5), idx in 0usize..5, (site, user, scopes) in arb_request()) {
        let before = policy(vec![(R, grants.clone())]);
        let mut fewer = grants;
        let idx = idx % fewer.len();
        fewer.remove(idx);
        let after = policy(vec![(R, fewer)]);
        let req = AccessRequest { source: IdentitySource::Spiffe, identity: R, site: &site, user: &user, scopes: &scopes };
        if before.decide(&req).is_err() {
            prop_assert!(after.decide(&req).is_err());
        }
    }

    /// Issue 11.1: whatever the grants, a granted request's scopes (the JWT's `scp`) never
    /// cover nor are covered by a scope that the allowing grant denies.
    #[test]
    fn no_granted_scope_set_covers_a_denied_scope(grants in proptest::collection::vec(arb_grant(), 1..4), (site, user, scopes) in arb_request()) {
        let p = policy(vec![(R, grants.clone())]);
        let req = AccessRequest { source: IdentitySource::Spiffe, identity: R, site: &site, user: &user, scopes: &scopes };
        if let Ok(auth) = p.decide(&req) {
            let c = p.catalog();
            let clean = grants.iter().filter(|g| g.matches_site(&site) && g.matches_user(&user)).any(|g| {
                auth.scopes.iter().all(|s| g.grants_scope(c, s)
                    && !g.deny_scopes.iter().any(|d| c.covers(s, d) || c.covers(d, s)))
            });
            prop_assert!(clean, "{:?} granted despite deny_scopes", auth.scopes);
        }
    }

    #[test]
    fn normalization_is_idempotent_and_order_independent(
        (input, shuffled) in proptest::collection::vec(proptest::sample::select(SCOPES), 1..8)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        let p = policy(vec![]);
        let input: Vec<String> = input.iter().map(|s| (*s).to_owned()).collect();
        let shuffled: Vec<String> = shuffled.iter().map(|s| (*s).to_owned()).collect();
        let once = p.normalize_scopes(&input).unwrap();
        let again: Vec<String> = once.iter().map(ToString::to_string).collect();
        prop_assert_eq!(&p.normalize_scopes(&again).unwrap(), &once);
        prop_assert_eq!(p.normalize_scopes(&shuffled).unwrap(), once);
    }
}

/// The entry a scan of every `[[callers]]` entry picks: any matching one, the most specific.
fn scanned(p: &Policy, source: IdentitySource, id: &str) -> Option<usize> {
    p.callers()
        .iter()
        .enumerate()
        .filter(|(_, c)| c.pattern.matches(source, id))
        .max_by_key(|(_, c)| c.pattern.specificity())
        .map(|(i, _)| i)
}

proptest! {
    /// The index finds the entry a scan of every entry would (exact before prefix, the longest
    /// prefix, DNS names without regard to case, each field only for its own patterns).
    #[test]
    fn the_caller_index_finds_what_a_scan_finds(
        entries in proptest::collection::vec((0usize..3, 0usize..4, 0usize..3, any::<bool>()), 0..12),
        asks in proptest::collection::vec((0usize..3, 0usize..4, 0usize..4, any::<bool>()), 1..16),
    ) {
        let names = ["a", "b", "team/c", "team"];
        let sources = [IdentitySource::Spiffe, IdentitySource::Dns, IdentitySource::CommonName];
        let pattern = |field: usize, name: &str, depth: usize, upper: bool| -> String {
            let name = if upper { name.to_ascii_uppercase() } else { name.to_owned() };
            match field {
                0 => match depth {
                    0 => format!("spiffe://td/{name}"),
                    1 => format!("spiffe://td/{name}/*"),
                    _ => "spiffe://td/*".to_owned(),
                },
                1 => format!("dns:{name}.svc"),
                _ => format!("cn:{name}"),
            }
        };
        let mut seen = std::collections::HashSet::new();
        let callers: Vec<CallerEntry> = entries
            .iter()
            .map(|&(f, n, d, u)| pattern(f, names[n], d, u))
            // Duplicates are refused by the loader.
            .filter(|p| {
                seen.insert(if p.starts_with("dns:") { p.to_ascii_lowercase() } else { p.clone() })
            })
            .map(|p| CallerEntry { pattern: IdentityPattern::parse(&p).unwrap(), grants: vec![] })
            .collect();
        let p = Policy::new(Catalog::builtin(), callers);
        for &(f, n, tail, upper) in &asks {
            let name = if upper { names[n].to_ascii_uppercase() } else { names[n].to_owned() };
            let id = match (f, tail) {
                (0, 0) => format!("spiffe://td/{name}"),
                (0, t) => format!("spiffe://td/{name}/x{t}"),
                (1, _) => format!("{name}.svc"),
                _ => name,
            };
            let source = sources[f];
            prop_assert_eq!(
                p.caller_index(source, &id).map(|(i, _)| i),
                scanned(&p, source, &id),
                "{:?} {}", source, id
            );
        }
    }
}
