//! The CLI client and the demo, run as a user would: the real binary against a real broker over
//! mTLS (the broker harness of `broker.rs`), and `demo --no-wait` end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{ADMIN, FIN_LUID, Harness, RENDERER};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Connection flags for a caller whose certificate files are in `dir`.
struct Conn {
    addr: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Conn {
    fn new(h: &Harness, spiffe: &str, name: &str) -> Conn {
        let (cert, key) = h.client_cert(spiffe).write(h.dir.path(), name).unwrap();
        Conn {
            addr: h.server().local_addr().to_string(),
            ca: h.dir.path().join("ca.crt"),
            cert,
            key,
        }
    }

    /// Runs the binary off the async runtime (the broker runs on it) and returns its output.
    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = bin();
        cmd.args(args)
            .arg("--addr")
            .arg(&self.addr)
            .arg("--ca")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key)
            .env_remove("TTB_ADDR")
            .env_remove("TTB_TOKEN");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// `CMD` (get or mint) as svc-renderer on finance for `scope`, then `extra` flags.
fn as_renderer<'a>(cmd: &'a str, scope: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let flags = [
        "--site",
        "finance",
        "--user",
        "svc-renderer",
        "--scope",
        scope,
    ];
    [&[cmd][..], &flags, extra].concat()
}

/// `get` of content read, then `extra` flags.
fn get(extra: &[&'static str]) -> Vec<&'static str> {
    as_renderer("get", "tableau:content:read", extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_json_whoami_mint_and_invalidate_through_the_binary() {
    let h = Harness::start().await;
    let c = Conn::new(&h, RENDERER, "renderer");

    // Summary: a sign-in, the token only as a prefix.
    let first = c.run(&get(&["--json"])).await;
    let first = json(&first);
    let token = first["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 32);
    assert_eq!(first["site_luid"], FIN_LUID);
    assert_eq!(first["from_cache"], false);
    assert_eq!(first["scopes"], serde_json::json!(["tableau:content:read"]));
    assert!(first["expires_at"].as_str().unwrap().ends_with('Z'));

    let summary = ok(&c.run(&get(&[])).await);
    assert!(summary.contains("cache hit"), "{summary}");
    assert!(summary.contains(FIN_LUID), "{summary}");
    assert!(summary.contains(&format!("{}…", &token[..4])), "{summary}");
    assert!(
        !summary.contains(&token),
        "the summary leaks the token: {summary}"
    );

    let only = ok(&c.run(&get(&["--token-only"])).await);
    assert_eq!(only, format!("{token}\n"));
    assert_eq!(h.fake.stats().signins_ok, 1);

    let who = json(&c.run(&["whoami", "--json"]).await);
    assert_eq!(who["identity"], RENDERER);
    assert_eq!(who["source"], "uri_san");
    assert_eq!(who["matched_entry"], RENDERER);
    assert_eq!(
        who["grants"][0]["scopes"],
        serde_json::json!(["tableau:content:read", "tableau:views:download"])
    );
    assert_eq!(who["grants"][0]["max_jwt_ttl"], "2m");

    let minted = json(
        &c.run(&as_renderer("mint", "tableau:content:read", &["--json"]))
            .await,
    );
    assert_eq!(minted["jwt"].as_str().unwrap().split('.').count(), 3);
    assert!(!minted["jti"].as_str().unwrap().is_empty());

    let inv = ok(&c.run(&["invalidate", &token]).await);
    assert!(inv.contains("evicted from the cache"), "{inv}");
    assert!(!inv.contains(&token), "{inv}");
    let again = json(&c.run(&["invalidate", "--json", &token]).await);
    assert_eq!(
        again,
        serde_json::json!({"evicted": false, "signed_out": false})
    );

    // After invalidation the next get signs in again.
    let fresh = json(&c.run(&get(&["--json"])).await);
    assert_eq!(fresh["from_cache"], false);
    assert_ne!(fresh["token"], token.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_get_exits_non_zero_with_status_reason_and_message() {
    let h = Harness::start().await;
    let c = Conn::new(&h, RENDERER, "renderer");
    let out = c.run(&as_renderer("get", "tableau:users:read", &[])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: PERMISSION_DENIED (SCOPE_NOT_ALLOWED): "),
        "{err}"
    );
    assert!(err.contains("tableau:users:read"), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(h.fake.stats().signins, 0);

    // Claims travel with get and mint: the renderer's grant allows none.
    for cmd in ["get", "mint"] {
        let out = c
            .run(&as_renderer(
                cmd,
                "tableau:content:read",
                &["--attribute", "region=emea"],
            ))
            .await;
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: PERMISSION_DENIED (ATTRIBUTE_NOT_ALLOWED): "),
            "{cmd}: {err}"
        );
        assert!(err.contains("region"), "{cmd}: {err}");
    }
    assert_eq!(h.fake.stats().signins, 0);

    // Deny wins for the ops caller, whose wildcard covers tableau:tasks:delete.
    let ops = Conn::new(&h, ADMIN, "ops");
    let out = ops
        .run(&as_renderer("get", "tableau:tasks:delete", &[]))
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: PERMISSION_DENIED (SCOPE_DENIED)"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_settings_come_from_the_environment_and_errors_name_the_file() {
    let h = Harness::start().await;
    let c = Conn::new(&h, RENDERER, "renderer");
    let mut cmd = bin();
    cmd.args(["whoami", "--json"])
        .env("TTB_ADDR", &c.addr)
        .env("TTB_CA", &c.ca)
        .env("TTB_CERT", &c.cert)
        .env("TTB_KEY", &c.key);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(json(&out)["identity"], RENDERER);

    let missing = h.dir.path().join("nope.crt");
    let mut cmd = bin();
    cmd.args(["whoami", "--addr", &c.addr, "--ca"])
        .arg(&c.ca)
        .arg("--cert")
        .arg(&missing)
        .arg("--key")
        .arg(&c.key);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("client certificate") && err.contains("nope.crt"),
        "{err}"
    );
}

fn demo(state: &Path) -> Output {
    bin()
        .args([
            "demo",
            "--no-wait",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(state)
        .output()
        .unwrap()
}

#[test]
fn demo_runs_the_script_and_reuses_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = demo(&state);
    let stdout = ok(&out);
    for line in [
        "state folder",
        "new development CA",
        "tableau double on http://127.0.0.1:",
        "broker listening on 127.0.0.1:",
        "   sign-in: token ",
        "from_cache=false",
        "Tableau double sign-ins: 1\n",
        "   cache hit: token ",
        "(the same token), from_cache=true",
        "Tableau double sign-ins: 1 (no new sign-in)",
        "refused: PERMISSION_DENIED (SCOPE_NOT_ALLOWED): scope tableau:users:read",
        "tableau-token-broker whoami --addr 127.0.0.1:",
        "tableau-token-broker get --addr 127.0.0.1:",
        "tableau-token-broker scopes explain",
        "/_fake/stats",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    for f in [
        "renderer.crt",
        "renderer.key",
        "ops.crt",
        "ops.key",
        "broker.toml",
    ] {
        assert!(state.join(f).exists(), "{f}");
    }
    let cert = std::fs::read_to_string(state.join("renderer.crt")).unwrap();
    let ca = std::fs::read_to_string(state.join("pki/ca.crt")).unwrap();
    assert!(stdout.contains(&state.join("renderer.crt").display().to_string()));

    // The demo's configuration is a real one.
    let check = bin()
        .arg("check-config")
        .arg(state.join("broker.toml"))
        .output()
        .unwrap();
    ok(&check);

    // The second run reuses the CA and the client certificates.
    let again = ok(&demo(&state));
    assert!(again.contains("reusing its development CA"), "{again}");
    assert_eq!(
        std::fs::read_to_string(state.join("renderer.crt")).unwrap(),
        cert
    );
    assert_eq!(
        std::fs::read_to_string(state.join("pki/ca.crt")).unwrap(),
        ca
    );
}

#[test]
fn demo_says_what_to_do_when_its_port_is_busy() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["demo", "--no-wait", "--listen", &addr, "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains("--listen 127.0.0.1:0"), "{err}");
}

#[test]
fn every_subcommand_help_has_an_example() {
    for cmd in [
        &["serve"][..],
        &["check-config"],
        &["jwt"],
        &["scopes"],
        &["scopes", "list"],
        &["scopes", "explain"],
        &["scopes", "for"],
        &["fake-tableau"],
        &["demo"],
        &["get"],
        &["mint"],
        &["invalidate"],
        &["whoami"],
    ] {
        let out = bin().args(cmd).arg("--help").output().unwrap();
        let help = ok(&out);
        assert!(
            help.contains("Example"),
            "{cmd:?} --help has no example:\n{help}"
        );
    }
}
