//! The offline commands, run as a user would: the real binary.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"))
}

#[test]
fn check_config_exits_64_with_every_located_error_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s");
    std::fs::write(&secret, "top-secret-123-0123456789abcdef-xyz").unwrap();
    let cfg = dir.path().join("b.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"version = 1
[sites.finance]
server_url = "https://tableau.example.com"
jwt_ttl = "20m"
[sites.finance.connected_app]
client_id = "c"
secret_id = "k"
secret_file = {secret:?}
[[callers]]
identity = "spiffe://example.org/a"
[[callers.grants]]
sites = ["finance"]
users = ["u"]
scopes = ["tableau:datasource:read", "tableau:content:read"]
"#
        ),
    )
    .unwrap();
    let out = bin().arg("check-config").arg(&cfg).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("sites.finance.jwt_ttl"), "{stderr}");
    assert!(
        stderr
            .contains("callers[0].grants[0].scopes[0]: unknown scope \"tableau:datasource:read\""),
        "{stderr}"
    );
    assert!(!stderr.contains("top-secret-123-0123456789abcdef-xyz"));

    let fixed = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("20m", "5m")
        .replace("\"tableau:datasource:read\", ", "");
    std::fs::write(&cfg, fixed).unwrap();
    let out = bin().arg("check-config").arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 site(s), 1 caller(s), 1 grant(s)"),
        "{stdout}"
    );
    assert!(!stdout.contains("top-secret-123-0123456789abcdef-xyz"));

    let out = bin()
        .args(["jwt", "--config"])
        .arg(&cfg)
        .args([
            "--site",
            "finance",
            "--user",
            "u",
            "--scope",
            "tableau:content:read",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
}

#[test]
fn scopes_commands_work_offline() {
    let out = bin()
        .args(["scopes", "for", "Query View PDF", "Update Workbook Now"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tableau:tasks:run\ntableau:views:download\n"
    );
    let out = bin()
        .args(["scopes", "explain", "tableau:tasks:*"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Update Workbook Now"));
    let out = bin()
        .args(["scopes", "explain", "tableau:view:download"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean \"tableau:views:download\"")
    );
    let out = bin().args(["scopes", "list", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().len() >= 50);
}
