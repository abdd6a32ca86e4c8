//! Claims beyond `scp` (issue 25): attributes, groups and on-demand access allowlisted per grant.
//! Refusals name what they refuse; bounds and collisions with registered claims are refused before
//! anything is signed; claims are part of the cache key; the audit trail names claims and
//! fingerprints their values, never writing the values.

use std::collections::HashMap;

use tableau_token_broker::grpc::pb::{AttributeValues, GetCredentialsRequest, MintJwtRequest};

use crate::harness::reason;
use crate::issuer::{World, b64_claims, request};

/// The grant of the issuer world gains this allowlist.
const GRANT: &str = r#"attributes = { region = ["emea", "us"], department = ["*"] }
groups = ["Finance Viewers", "Region-*"]
on_demand_access = false
"#;

fn attrs(list: &[(&str, &[&str])]) -> HashMap<String, AttributeValues> {
    list.iter()
        .map(|(n, v)| {
            (
                (*n).to_owned(),
                AttributeValues {
                    values: v.iter().map(|s| (*s).to_owned()).collect(),
                },
            )
        })
        .collect()
}

fn with_claims(
    site: &str,
    attributes: &[(&str, &[&str])],
    groups: &[&str],
    oda: bool,
) -> GetCredentialsRequest {
    GetCredentialsRequest {
        attributes: attrs(attributes),
        groups: groups.iter().map(|s| (*s).to_owned()).collect(),
        on_demand_access: oda,
        ..request(site)
    }
}

fn mint_with(attributes: HashMap<String, AttributeValues>, groups: Vec<String>) -> MintJwtRequest {
    MintJwtRequest {
        site: "cloud".to_owned(),
        user: request("cloud").user,
        scopes: vec!["tableau:views:embed".to_owned()],
        attributes,
        groups,
        ..Default::default()
    }
}

#[tokio::test]
async fn claims_not_allowed_out_of_bounds_or_colliding_are_refused_before_signing_in() {
    let w = World::start(GRANT).await;
    let mut c = w.client().await;
    let base = c.clone();
    let refused = move |site: &str, a: &[(&str, &[&str])], g: &[&str], oda: bool| {
        let mut c = base.clone();
        let r = with_claims(site, a, g, oda);
        async move { c.get_credentials(r).await.unwrap_err() }
    };

    let e = refused("cloud", &[("team", &["a"])], &[], false).await;
    assert_eq!(reason(&e), "ATTRIBUTE_NOT_ALLOWED", "{e:?}");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("\"team\""), "{}", e.message());
    let e = refused("direct", &[("region", &["us", "apac"])], &[], false).await;
    assert_eq!(reason(&e), "ATTRIBUTE_NOT_ALLOWED", "{e:?}");
    assert!(e.message().contains("\"apac\""), "{}", e.message());
    let e = refused("uat", &[], &["Region-EU", "Admins"], false).await;
    assert_eq!(reason(&e), "GROUP_NOT_ALLOWED", "{e:?}");
    assert!(e.message().contains("\"Admins\""), "{}", e.message());
    let e = refused("cloud", &[], &[], true).await;
    assert_eq!(reason(&e), "ON_DEMAND_ACCESS_NOT_ALLOWED", "{e:?}");

    // Collisions with registered or Tableau claims, in both RPCs.
    for name in [
        "sub",
        "ISS",
        "scp",
        "https://tableau.com/groups",
        "https://tableau.com/oda",
    ] {
        let e = refused("cloud", &[(name, &["x"])], &[], false).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}: {e:?}");
        assert!(e.message().contains("collides"), "{name}: {}", e.message());
        let e = c
            .mint_jwt(mint_with(attrs(&[(name, &["x"])]), vec![]))
            .await
            .unwrap_err();
        assert!(e.message().contains("collides"), "{name}: {}", e.message());
    }

    // Bounds: 16 attributes, 64 values each, 256 bytes a value, 64 groups.
    let names: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
    let many: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), &["v"][..])).collect();
    let e = refused("cloud", &many, &[], false).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("at most 16"), "{}", e.message());
    let values: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let e = refused("cloud", &[("department", values.as_slice())], &[], false).await;
    assert!(e.message().contains("at most 64"), "{}", e.message());
    let long = "x".repeat(257);
    let e = refused("cloud", &[("department", &[long.as_str()])], &[], false).await;
    assert!(e.message().contains("256 bytes"), "{}", e.message());
    let groups: Vec<String> = (0..65).map(|i| format!("Region-{i}")).collect();
    let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    let e = refused("cloud", &[], &groups, false).await;
    assert!(e.message().contains("at most 64"), "{}", e.message());
    // Within every bound but over Tableau's 8 KB: refused before sending, saying why.
    let big: Vec<String> = (0..64)
        .map(|i| format!("{i:03}{}", "d".repeat(200)))
        .collect();
    let e = c
        .mint_jwt(mint_with(
            [("department".to_owned(), AttributeValues { values: big })].into(),
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("8192-byte"), "{}", e.message());

    // Nothing refused ever reached Tableau.
    assert_eq!(w.f.double.stats().signins, 0);
    // An allowed set is signed in with, and the JWT carries it where Tableau reads it.
    let ok = c
        .mint_jwt(mint_with(
            attrs(&[("region", &["us"]), ("department", &["b", "a"])]),
            vec!["Finance Viewers".to_owned()],
        ))
        .await
        .unwrap()
        .into_inner();
    let claims = b64_claims(&ok.jwt);
    assert_eq!(claims["region"], "us");
    assert_eq!(claims["department"], serde_json::json!(["a", "b"]));
    assert_eq!(
        claims["https://tableau.com/groups"],
        serde_json::json!(["Finance Viewers"])
    );
    assert!(claims.get("https://tableau.com/oda").is_none());
}

#[tokio::test]
async fn sessions_with_different_claims_are_never_shared_and_the_trail_never_holds_values() {
    let w =
        World::start(&GRANT.replace("on_demand_access = false", "on_demand_access = true")).await;
    let mut c = w.client().await;
    let base = c.clone();
    let get = move |r: GetCredentialsRequest| {
        let mut c = base.clone();
        async move { c.get_credentials(r).await.unwrap().into_inner() }
    };
    const SECRET_DEPT: &str = "dept-value-nobody-may-read-7c1";
    const SECRET_GROUP: &str = "Region-group-nobody-may-read-9e4";
    for site in ["direct", "cloud", "uat"] {
        let plain = get(request(site)).await;
        let us = get(with_claims(site, &[("region", &["us"])], &[], false)).await;
        let emea = get(with_claims(site, &[("region", &["emea"])], &[], false)).await;
        let group = get(with_claims(site, &[], &[SECRET_GROUP], false)).await;
        let oda = get(with_claims(site, &[], &[], true)).await;
        let dept = get(with_claims(
            site,
            &[("department", &[SECRET_DEPT])],
            &[],
            false,
        ))
        .await;
        let tokens = [&plain, &us, &emea, &group, &oda, &dept].map(|r| r.token.clone());
        for (i, a) in tokens.iter().enumerate() {
            for b in &tokens[i + 1..] {
                assert_ne!(a, b, "{site}: a session was shared across different claims");
            }
        }
        // The same claims, in another order, are the same session.
        let again = get(with_claims(site, &[("region", &["us"])], &[], false)).await;
        assert_eq!(again.token, us.token, "{site}");
        assert!(again.from_cache, "{site}");
        // Each session at Tableau holds exactly the claims it was signed in with.
        let at = w.session_claims(&us.token);
        assert_eq!(at["region"], "us", "{site}: {at}");
        assert!(
            at.get("https://tableau.com/groups").is_none(),
            "{site}: {at}"
        );
        let at = w.session_claims(&group.token);
        assert_eq!(
            at["https://tableau.com/groups"],
            serde_json::json!([SECRET_GROUP]),
            "{site}: {at}"
        );
        assert!(at.get("region").is_none(), "{site}: {at}");
        let at = w.session_claims(&oda.token);
        assert_eq!(at["https://tableau.com/oda"], "true", "{site}: {at}");
        let at = w.session_claims(&plain.token);
        assert!(at.get("region").is_none() && at.get("https://tableau.com/oda").is_none());
    }
    // A refusal of a value: the trail names the attribute, never the value.
    let e = c
        .get_credentials(with_claims(
            "cloud",
            &[("region", &["apac-value-nobody-may-read"])],
            &[],
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "ATTRIBUTE_NOT_ALLOWED");

    let trail = std::fs::read_to_string(w.f.dir.path().join("audit.jsonl")).unwrap();
    for value in [SECRET_DEPT, SECRET_GROUP, "apac-value-nobody-may-read"] {
        assert!(!trail.contains(value), "the trail holds the value {value}");
    }
    let records: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dept: Vec<_> = records
        .iter()
        .filter(|r| r["event"] == "rpc" && r["claims"] == serde_json::json!(["department"]))
        .collect();
    assert_eq!(dept.len(), 3, "{records:#?}");
    assert!(dept.iter().all(|r| r["claims_fp"].is_string()));
    let fp = |claims: serde_json::Value| {
        records
            .iter()
            .filter(|r| r["event"] == "rpc" && r["site"] == "cloud" && r["claims"] == claims)
            .filter_map(|r| r["claims_fp"].as_str())
            .collect::<Vec<_>>()
    };
    let us_emea = fp(serde_json::json!(["region"]));
    // us, emea and us again: equal claims, equal fingerprints; different claims, different ones.
    assert_eq!(us_emea.len(), 3, "{us_emea:?}");
    assert_ne!(us_emea[0], us_emea[1]);
    assert_eq!(us_emea[0], us_emea[2]);
    assert_eq!(
        fp(serde_json::json!(["https://tableau.com/oda"])).len(),
        1,
        "{records:#?}"
    );
    let plain = records
        .iter()
        .find(|r| r["event"] == "rpc" && r["site"] == "cloud" && r["outcome"] == "granted")
        .unwrap();
    assert!(plain.get("claims").is_none() && plain.get("claims_fp").is_none());
}

/// WhoAmI shows what a grant allows beyond scopes, so a caller (or its operator) can see which
/// claims it may ask for before being refused.
#[tokio::test]
async fn whoami_shows_each_grants_claims_allowlist() {
    let w = World::start(GRANT).await;
    let mut c = w.client().await;
    let me = c
        .who_am_i(tableau_token_broker::grpc::pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let with_claims: Vec<_> = me
        .grants
        .iter()
        .filter(|g| !g.attributes.is_empty())
        .collect();
    assert_eq!(with_claims.len(), 1, "{me:?}");
    let g = with_claims[0];
    let values = |name: &str| g.attributes.get(name).map(|v| v.values.clone());
    assert_eq!(
        values("region"),
        Some(vec!["emea".to_owned(), "us".to_owned()])
    );
    assert_eq!(values("department"), Some(vec!["*".to_owned()]));
    assert_eq!(g.attributes.len(), 2);
    assert_eq!(g.groups, vec!["Finance Viewers", "Region-*"]);
    assert!(!g.on_demand_access);
}
