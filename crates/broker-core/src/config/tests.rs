use super::*;

const GOOD: &str = r#"
version = 1

[server]
listen = "127.0.0.1:7443"
cert = "tls/tls.crt"
key = "tls/tls.key"
client_ca = "tls/ca.crt"

[sites.finance]
server_url = "https://tableau.example.com/"
api_version = "3.22"
content_url = "finance"
session_ttl = "240m"
jwt_ttl = "5m"

[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret_env = "TTB_TEST_FINANCE_SECRET"

[[callers]]
identity = "spiffe://example.org/ns/reports/sa/renderer"

[[callers.grants]]
sites = ["finance"]
users = ["svc-renderer"]
scopes = ["tableau:content:read", "tableau:views:download"]
"#;

fn with_secret_file(text: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("finance.secret");
    std::fs::write(&secret, "very-secret-value-0123456789abcdef\n").unwrap();
    let text = text.replace(
        "secret_env = \"TTB_TEST_FINANCE_SECRET\"",
        &format!("secret_file = {:?}", secret.display().to_string()),
    );
    let path = dir.path().join("broker.toml");
    (dir, path, text)
}

#[test]
fn good_config_loads_with_defaults() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let c = Config::from_toml(&text, &path).unwrap();
    let site = c.site("finance").unwrap();
    assert_eq!(site.server_url, "https://tableau.example.com");
    assert_eq!(site.jwt_ttl, Duration::from_secs(300));
    assert_eq!(site.format, Format::Xml);
    assert_eq!(
        site.app.as_ref().unwrap().secret.expose_secret(),
        "very-secret-value-0123456789abcdef"
    );
    assert_eq!(c.cache.max_entries, DEFAULT_CACHE_MAX_ENTRIES);
    assert!(c.cache.sign_out_on_evict);
    let server = c.server.as_ref().unwrap();
    assert_eq!(server.cert, path.parent().unwrap().join("tls/tls.crt"));
    let summary = c.summary();
    assert!(summary.contains("caller spiffe://example.org/ns/reports/sa/renderer"));
    assert!(!summary.contains("very-secret-value-0123456789abcdef"));
    assert!(!format!("{c:?}").contains("very-secret-value-0123456789abcdef"));
}

#[test]
fn every_error_is_located_and_reported_at_once() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let text = text
        .replace(
            "\"tableau:views:download\"",
            "\"tableau:view:download\", \"tableau:datasource:read\"",
        )
        .replace("jwt_ttl = \"5m\"", "jwt_ttl = \"11m\"")
        .replace("sites = [\"finance\"]", "sites = [\"finance\", \"sales\"]");
    let err = Config::from_toml(&text, &path).unwrap_err();
    let ConfigError::Invalid { issues, .. } = &err else {
        panic!("{err}")
    };
    let at: Vec<&str> = issues.iter().map(|i| i.at.as_str()).collect();
    assert!(at.contains(&"sites.finance.jwt_ttl"), "{at:?}");
    assert!(at.contains(&"callers[0].grants[0].scopes[1]"), "{at:?}");
    assert!(at.contains(&"callers[0].grants[0].scopes[2]"), "{at:?}");
    assert!(at.contains(&"callers[0].grants[0].sites[1]"), "{at:?}");
    let msg = err.to_string();
    assert!(msg.contains("callers[0].grants[0].scopes[1]: unknown scope \"tableau:view:download\" (did you mean \"tableau:views:download\"?)"), "{msg}");
    assert!(
        msg.contains("unknown scope \"tableau:datasource:read\""),
        "{msg}"
    );
}

#[test]
fn unknown_fields_and_bad_toml_name_the_place() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let err = Config::from_toml(&text.replace("jwt_ttl", "jwt_tll"), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("jwt_tll"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn inline_secret_only_in_development() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let inline = text.replace(
        &text
            .lines()
            .find(|l| l.starts_with("secret_file"))
            .unwrap()
            .to_owned(),
        "secret = \"inline-secret-value-0123456789abcdef\"",
    );
    let err = Config::from_toml(&inline, &path).unwrap_err().to_string();
    assert!(
        err.contains("sites.finance.connected_app.secret: inline secrets are refused"),
        "{err}"
    );
    assert!(!err.contains("inline-secret-value"));
    let dev = format!("development = true\n{inline}");
    let c = Config::from_toml(&dev, &path).unwrap();
    assert_eq!(
        c.site("finance")
            .unwrap()
            .app
            .as_ref()
            .unwrap()
            .secret_source,
        "inline (development)"
    );
}

#[test]
fn missing_secret_env_is_named_without_value() {
    let err = Config::from_toml(
        &GOOD.replace("TTB_TEST_FINANCE_SECRET", "TTB_SURELY_UNSET_VAR_42"),
        Path::new("b.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("sites.finance.connected_app.secret_env: environment variable TTB_SURELY_UNSET_VAR_42 is not set"), "{err}");
}

#[test]
fn version_and_identity_checks() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let err = Config::from_toml(&text.replace("version = 1", "version = 2"), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("version 2 is not supported"), "{err}");
    let dup = format!(
        "{text}\n[[callers]]\nidentity = \"spiffe://example.org/ns/reports/sa/renderer\"\n[[callers.grants]]\nsites=[\"finance\"]\nusers=[\"x\"]\nscopes=[\"tableau:content:read\"]\n"
    );
    let err = Config::from_toml(&dup, &path).unwrap_err().to_string();
    assert!(
        err.contains("callers[1].identity") && err.contains("already configured at callers[0]"),
        "{err}"
    );
}

#[test]
fn extra_scopes_extend_the_catalog() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let text = text
        .replace(
            "version = 1",
            "version = 1\nextra_scopes = [\"tableau:pulse:read\"]",
        )
        .replace(
            "\"tableau:views:download\"]",
            "\"tableau:views:download\", \"tableau:pulse:read\"]",
        );
    let c = Config::from_toml(&text, &path).unwrap();
    assert!(
        c.policy
            .catalog()
            .is_known(&"tableau:pulse:read".parse().unwrap())
    );
}

#[test]
fn admin_listener_is_off_unless_configured_and_its_errors_are_located() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let c = Config::from_toml(&text, &path).unwrap();
    assert_eq!(c.admin, None, "off when [admin] is absent");
    assert_eq!(c.telemetry.service_name, None);

    let on = format!("{text}\n[admin]\nlisten = \"0.0.0.0:9090\"\n");
    let c = Config::from_toml(&on, &path).unwrap();
    assert_eq!(
        c.admin,
        Some(AdminConfig {
            listen: "0.0.0.0:9090".parse().unwrap()
        })
    );
    assert!(c.summary().contains("admin: listen 0.0.0.0:9090"));

    let bad = format!(
        "{}\n[admin]\nlisten = \"everywhere:9090\"\n",
        text.replace("[server]", "[telemetry]\nservice_name = \" \"\n\n[server]")
    );
    let msg = Config::from_toml(&bad, &path).unwrap_err().to_string();
    assert!(
        msg.contains("admin.listen: \"everywhere:9090\" is not an address"),
        "{msg}"
    );
    assert!(msg.contains("telemetry.service_name: empty"), "{msg}");

    let missing = format!("{text}\n[admin]\n");
    let msg = Config::from_toml(&missing, &path).unwrap_err().to_string();
    assert!(msg.contains("admin.listen: missing"), "{msg}");
    let unknown = format!("{text}\n[admin]\nlisten = \"0.0.0.0:9090\"\nport = 1\n");
    assert!(
        Config::from_toml(&unknown, &path).is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn limits_sessions_and_connections_have_defaults_and_overrides() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let c = Config::from_toml(&text, &path).unwrap();
    assert_eq!(c.limits, LimitsConfig::default());
    assert_eq!(c.cache.replaced_session_grace, Duration::from_secs(300));
    assert_eq!(c.cache.max_pending_sign_outs, 10_000);
    let conns = &c.server.as_ref().unwrap().connections;
    assert_eq!(*conns, ConnectionLimits::default());

    let text = text
        .replace(
            "client_ca = \"tls/ca.crt\"",
            "client_ca = \"tls/ca.crt\"\nmax_connections = 10\nidle_timeout = \"1m\"\nkeepalive_interval = \"30s\"\nkeepalive_timeout = \"5s\"\nmax_connection_age = \"1h\"\nconcurrency_limit_per_connection = 8",
        )
        .replace(
            "[sites.finance]",
            "[cache]\nreplaced_session_grace = \"1m\"\nmax_pending_sign_outs = 7\n\n[limits]\nsign_ins_per_second = 0.5\nsign_in_burst = 3\nmax_concurrent_sign_ins = 4\nnegative_cache_ttl = \"0s\"\n\n[sites.finance]",
        )
        .replace(
            "identity = \"spiffe://example.org/ns/reports/sa/renderer\"",
            "identity = \"spiffe://example.org/ns/reports/sa/renderer\"\nsign_in_burst = 1",
        );
    let c = Config::from_toml(&text, &path).unwrap();
    let conns = &c.server.as_ref().unwrap().connections;
    assert_eq!(conns.max_connections, 10);
    assert_eq!(conns.idle_timeout, Duration::from_secs(60));
    assert_eq!(conns.max_connection_age, Duration::from_secs(3600));
    assert_eq!(conns.concurrency_limit_per_connection, 8);
    assert_eq!(c.cache.max_pending_sign_outs, 7);
    assert_eq!(c.limits.negative_cache_ttl, Duration::ZERO);
    assert_eq!(c.limits.max_concurrent_sign_ins, 4);
    let renderer = c
        .limits
        .rate_for("spiffe://example.org/ns/reports/sa/renderer");
    assert_eq!(
        (renderer.per_second, renderer.burst),
        (0.5, 1),
        "burst overridden, rate inherited"
    );
    assert_eq!(c.limits.rate_for("someone-else").burst, 3);
}

#[test]
fn bad_limits_are_located() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let text = text
        .replace(
            "client_ca = \"tls/ca.crt\"",
            "client_ca = \"tls/ca.crt\"\nmax_connections = 0\nidle_timeout = \"0s\"",
        )
        .replace(
            "[sites.finance]",
            "[limits]\nsign_ins_per_second = -1\nsign_in_burst = 0\n\n[sites.finance]",
        )
        .replace(
            "identity = \"spiffe://example.org/ns/reports/sa/renderer\"",
            "identity = \"spiffe://example.org/ns/reports/sa/renderer\"\nsign_ins_per_second = 0",
        );
    let Err(ConfigError::Invalid { issues, .. }) = Config::from_toml(&text, &path) else {
        panic!("should fail");
    };
    let at: Vec<&str> = issues.iter().map(|i| i.at.as_str()).collect();
    for want in [
        "server.max_connections",
        "server.idle_timeout",
        "limits.sign_ins_per_second",
        "limits.sign_in_burst",
        "callers[0].sign_ins_per_second",
    ] {
        assert!(at.contains(&want), "{want} not in {at:?}");
    }
}

/// GOOD with the connected app given as a list of two secrets read from files.
fn with_two_secrets(active: Option<&str>) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("old"),
        "old-value-of-at-least-32-bytes-long\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("new"),
        "new-value-of-at-least-32-bytes-long\n",
    )
    .unwrap();
    let active = active
        .map(|a| format!("active_secret_id = {a:?}\n"))
        .unwrap_or_default();
    let text = GOOD.replace(
        "secret_id = \"sid\"\nsecret_env = \"TTB_TEST_FINANCE_SECRET\"\n",
        &format!(
            "{active}[[sites.finance.connected_app.secrets]]\nsecret_id = \"old-id\"\nsecret_file = \"old\"\n[[sites.finance.connected_app.secrets]]\nsecret_id = \"new-id\"\nsecret_file = \"new\"\n"
        ),
    );
    let path = dir.path().join("broker.toml");
    (dir, path, text)
}

#[test]
fn two_secrets_sign_with_the_active_one_and_keep_the_other_as_standby() {
    let (dir, path, text) = with_two_secrets(Some("new-id"));
    let c = Config::from_toml(&text, &path).unwrap();
    let site = c.site("finance").unwrap();
    assert_eq!(site.app.as_ref().unwrap().secret_id, "new-id");
    assert_eq!(
        site.app.as_ref().unwrap().secret.expose_secret(),
        "new-value-of-at-least-32-bytes-long"
    );
    let standby = site.app_with_standby().unwrap();
    assert_eq!(standby.secret_id, "old-id");
    assert_eq!(
        standby.secret.expose_secret(),
        "old-value-of-at-least-32-bytes-long"
    );
    assert_eq!(standby.client_id, "cid");
    // Both secret files are watched; neither value is printed.
    let watched = c.watched_files();
    assert!(watched.contains(&dir.path().join("old")));
    assert!(watched.contains(&dir.path().join("new")));
    let summary = c.summary();
    assert!(summary.contains("standby secret_id old-id"), "{summary}");
    assert!(!summary.contains("old-value") && !summary.contains("new-value"));
    assert!(!format!("{site:?}").contains("old-value"));
}

#[test]
fn secret_lists_are_checked_and_located() {
    let issues = |text: &str, path: &Path| match Config::from_toml(text, path) {
        Err(ConfigError::Invalid { issues, .. }) => issues,
        other => panic!("expected invalid, got {other:?}"),
    };
    // Two secrets need active_secret_id.
    let (_d, path, text) = with_two_secrets(None);
    let found = issues(&text, &path);
    assert_eq!(found[0].at, "sites.finance.connected_app.active_secret_id");
    // It must name a configured secret.
    let (_d, path, text) = with_two_secrets(Some("other-id"));
    let found = issues(&text, &path);
    assert!(found[0].message.contains("\"old-id\""), "{found:?}");
    // The same ID twice.
    let (_d, path, text) = with_two_secrets(Some("old-id"));
    let found = issues(&text.replace("\"new-id\"", "\"old-id\""), &path);
    assert_eq!(
        found[0].at,
        "sites.finance.connected_app.secrets[1].secret_id"
    );
    // The list and the single form together.
    let (_d, path, text) = with_two_secrets(Some("old-id"));
    let mixed = text.replace(
        "client_id = \"cid\"",
        "client_id = \"cid\"\nsecret_id = \"x\"",
    );
    let found = issues(&mixed, &path);
    assert_eq!(found[0].at, "sites.finance.connected_app");
    // A missing file is located in the list.
    let (d, path, text) = with_two_secrets(Some("old-id"));
    std::fs::remove_file(d.path().join("new")).unwrap();
    let found = issues(&text, &path);
    assert_eq!(
        found[0].at,
        "sites.finance.connected_app.secrets[1].secret_file"
    );
}

#[test]
fn single_secret_form_may_name_itself_active_and_reload_settings_default() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let text = text.replace(
        "client_id = \"cid\"",
        "client_id = \"cid\"\nactive_secret_id = \"sid\"",
    );
    let c = Config::from_toml(&text, &path).unwrap();
    assert!(c.site("finance").unwrap().standby_secret.is_none());
    assert_eq!(c.reload.check_interval, DEFAULT_RELOAD_CHECK_INTERVAL);
    assert_eq!(c.reload.debounce, DEFAULT_RELOAD_DEBOUNCE);
    let text = format!("{text}\n[reload]\ncheck_interval = \"10ms\"\ndebounce = \"x\"\n");
    // TOML tables after [[callers.grants]] belong to the root again only when named: [reload].
    match Config::from_toml(&text, &path) {
        Err(ConfigError::Invalid { issues, .. }) => {
            let at: Vec<&str> = issues.iter().map(|i| i.at.as_str()).collect();
            assert!(at.contains(&"reload.check_interval"), "{at:?}");
            assert!(at.contains(&"reload.debounce"), "{at:?}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn grant_claims_load_and_collisions_with_registered_claims_are_refused() {
    let (_d, path, text) = with_secret_file(GOOD);
    let good = format!(
        "{text}attributes = {{ region = [\"emea\", \"us\"], department = [\"*\"] }}\ngroups = [\"Finance Viewers\", \"Region-*\"]\non_demand_access = true\n"
    );
    let c = Config::from_toml(&good, &path).unwrap();
    let entry = &c.policy.callers()[0];
    let allow = &entry.grants[0].claims;
    assert_eq!(allow.attributes["region"], ["emea", "us"]);
    assert_eq!(allow.groups.len(), 2);
    assert!(allow.on_demand_access);
    for name in ["sub", "SCP", "\"https://tableau.com/groups\""] {
        let bad = format!("{text}attributes = {{ {name} = [\"*\"] }}\n");
        let Err(ConfigError::Invalid { issues, .. }) = Config::from_toml(&bad, &path) else {
            panic!("{name}: expected a collision");
        };
        assert!(
            issues[0].at.starts_with("callers[0].grants[0].attributes.")
                && issues[0].message.contains("collides"),
            "{name}: {issues:?}"
        );
    }
    let empty = format!("{text}attributes = {{ region = [] }}\n");
    assert!(Config::from_toml(&empty, &path).is_err());
}

#[test]
fn a_misspelled_key_is_listed_at_its_line_with_every_other_problem() {
    let (_dir, path, text) = with_secret_file(GOOD);
    let text = text
        .replace(
            "jwt_ttl = \"5m\"",
            "jwt_ttl = \"5m\"\ndeny_scope = [\"tableau:views:download\"]",
        )
        .replace("sites = [\"finance\"]", "sites = [\"nowhere\"]");
    let e = Config::from_toml(&text, &path).unwrap_err();
    let ConfigError::Invalid { issues, .. } = &e else {
        panic!("not a list of problems: {e}");
    };
    assert!(
        issues.iter().any(|i| i.at == "line 16"
            && i.message
                .contains("unknown key \"deny_scope\" in [sites.finance]")),
        "{e}"
    );
    assert!(
        issues.iter().any(|i| i.message.contains("nowhere")),
        "the unknown site is reported too: {e}"
    );
}
