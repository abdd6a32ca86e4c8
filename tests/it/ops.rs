//! Operating the broker: `check-config --strict` on the shipped and the real-looking
//! configurations (the real binary), the reload outcome and generation metrics, every rendered
//! metric defined in the catalog, and dual-stack listeners.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tableau_double::SiteUser;
use tableau_token_broker::devkit::local::{
    self, LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::metrics::catalog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{FIN_LUID, RENDERER, req};

fn check_config(file: &Path, strict: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tableau-token-broker"));
    cmd.arg("check-config");
    if strict {
        cmd.arg("--strict");
    }
    // examples/config.toml reads one secret from the environment, as `.ci/run` sets it.
    let out = cmd
        .arg(file)
        .env(
            "SALES_TABLEAU_SECRET",
            "ci-placeholder-secret-of-at-least-32-bytes",
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `deploy/kubernetes/base/broker.toml` with its mounted files (the secret, the audit key) in
/// `dir`, as the container contract lays it out, so only its placeholders are wrong.
fn base_config(dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("deploy/kubernetes/base/broker.toml")).unwrap();
    std::fs::write(dir.join("finance"), "finance-secret-0123456789abcdef-xyz\n").unwrap();
    std::fs::write(
        dir.join("hmac.key"),
        "c2l4dHktZm91ci1ieXRlcy1vZi1hdWRpdC1rZXktbWF0ZXJpYWwh\n",
    )
    .unwrap();
    let d = dir.display();
    let text = text
        .replace("/var/run/secrets/tableau/", &format!("{d}/"))
        .replace(
            "/var/run/secrets/tableau-token-broker-audit/",
            &format!("{d}/"),
        );
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_strict_refuses_the_shipped_placeholders_and_accepts_real_looking_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_config(dir.path());
    let (code, out) = check_config(&base, false);
    assert_eq!(
        code,
        Some(0),
        "the base passes the normal checks; only --strict refuses it: {out}"
    );
    let (code, out) = check_config(&base, true);
    assert_eq!(code, Some(64), "{out}");
    for at in [
        "sites.finance.server_url: \"https://tableau.example.com\" is on example.com",
        "sites.finance.connected_app.client_id: \"REPLACE-WITH-CLIENT-ID\" is a placeholder",
        "sites.finance.connected_app.secret_id: \"REPLACE-WITH-SECRET-ID\" is a placeholder",
    ] {
        assert!(out.contains(at), "{at:?} not in {out}");
    }
    assert!(out.contains("3 problem(s)"), "{out}");
    assert!(!out.contains("finance-secret-0123456789abcdef-xyz"));

    // examples/config.toml: fine for CI's plain check, refused strictly (example hosts).
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/config.toml");
    assert_eq!(check_config(&example, false).0, Some(0));
    let (code, out) = check_config(&example, true);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("sites.finance.server_url"), "{out}");

    // The container contract's shape: loopback or in-cluster Tableau, UUIDs, a .test trust domain.
    let real = std::fs::read_to_string(&base)
        .unwrap()
        .replace(
            "REPLACE-WITH-CLIENT-ID",
            "7a0c1e52-0000-4000-8000-00000000c0de",
        )
        .replace(
            "REPLACE-WITH-SECRET-ID",
            "7a0c1e52-0000-4000-8000-00000000c0df",
        )
        .replace(
            "spiffe://cluster.local/ns/reports/sa/renderer",
            "spiffe://contract.test/ns/ci/sa/client",
        );
    for url in ["https://127.0.0.1:8443", "https://tableau-double:8443"] {
        std::fs::write(&base, real.replace("https://tableau.example.com", url)).unwrap();
        let (code, out) = check_config(&base, true);
        assert_eq!(code, Some(0), "{url}: {out}");
        assert!(out.contains("1 site(s), 1 caller(s)"), "{out}");
    }

    // No caller at all: refused, located at `callers`.
    let start = real.find("[[callers]]").unwrap();
    let no_callers = real[..start].replace("https://tableau.example.com", "https://127.0.0.1");
    std::fs::write(&base, no_callers).unwrap();
    let (code, out) = check_config(&base, true);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("  - callers: no [[callers]] entry"), "{out}");
}

/// One sample line of an OpenMetrics exposition: `name{k="v",...} value`.
#[derive(Debug)]
pub(crate) struct Sample {
    /// The sample's name without the `tableau_token_broker_` prefix (`reloads_total`,
    /// `rpc_duration_seconds_bucket`).
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A parsed exposition: the `# TYPE` of each family (prefix removed) and every sample. Strict:
/// a line that is neither a comment, `# EOF` nor a well-formed sample of the broker fails.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) types: BTreeMap<String, String>,
    pub(crate) samples: Vec<Sample>,
}

const PREFIX: &str = "tableau_token_broker_";

/// Reads a quoted label value (after its opening quote) up to its closing quote, undoing the
/// escapes; returns it and the rest after the quote.
fn quoted(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, e)) => out.push(e),
                None => break,
            },
            c => out.push(c),
        }
    }
    panic!("unterminated label value in {s:?}");
}

impl Exposition {
    pub(crate) fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        assert!(text.ends_with("# EOF\n"), "no # EOF: {text}");
        for line in text.lines() {
            if line == "# EOF" || line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
                continue;
            }
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (family, kind) = t.split_once(' ').unwrap();
                let family = family.strip_prefix(PREFIX).unwrap();
                e.types.insert(family.to_owned(), kind.to_owned());
                continue;
            }
            let s = line
                .strip_prefix(PREFIX)
                .unwrap_or_else(|| panic!("not a broker sample: {line:?}"));
            let name_end = s.find(['{', ' ']).unwrap();
            let name = s[..name_end].to_owned();
            let mut rest = &s[name_end..];
            let mut labels = BTreeMap::new();
            if let Some(mut l) = rest.strip_prefix('{') {
                loop {
                    if let Some(after) = l.strip_prefix('}') {
                        rest = after;
                        break;
                    }
                    let (key, after) = l.split_once("=\"").unwrap();
                    let (value, after) = quoted(after);
                    labels.insert(key.to_owned(), value);
                    l = after.strip_prefix(',').unwrap_or(after);
                }
            }
            let value = rest.trim().split(' ').next().unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            e.samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        e
    }

    /// The value of the sample `name` (without the prefix) whose labels are exactly `labels`.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want);
        let first = found.next()?;
        assert!(found.next().is_none(), "{name} {labels:?} twice");
        Some(first.value)
    }

    /// The family (as in its `# TYPE` line) a sample belongs to: the longest family name it
    /// starts with (`rpc_duration_seconds_bucket` is `rpc_duration_seconds`'s).
    pub(crate) fn family_of(&self, sample: &str) -> &str {
        self.types
            .keys()
            .filter(|f| sample.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("{sample} has no # TYPE line"))
    }
}

/// `GET /metrics` on the admin listener at `admin`, parsed.
pub(crate) async fn scrape(admin: SocketAddr) -> Exposition {
    let resp = crate::support::http()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        resp.headers()
    );
    Exposition::parse(&resp.text().await.unwrap())
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_special_values() {
    let e = Exposition::parse(
        "# HELP tableau_token_broker_x A thing.\n# TYPE tableau_token_broker_x counter\n\
         tableau_token_broker_x_total{a=\"1\",b=\"q\\\"u,o}te\"} 3\n\
         # TYPE tableau_token_broker_g gauge\ntableau_token_broker_g 0.5\n\
         # TYPE tableau_token_broker_h histogram\ntableau_token_broker_h_bucket{le=\"+Inf\"} 2\n# EOF\n",
    );
    assert_eq!(
        e.value("x_total", &[("a", "1"), ("b", "q\"u,o}te")]),
        Some(3.0)
    );
    assert_eq!(e.value("x_total", &[("a", "1")]), None);
    assert_eq!(e.value("g", &[]), Some(0.5));
    assert_eq!(e.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(e.family_of("h_bucket"), "h");
    assert_eq!(e.types["x"], "counter");
}

/// The broker of the reload test: one site, one caller, the admin listener on.
async fn with_admin(dir: &Path) -> local::LocalSystem {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    admin_setup(dir, loopback).start().await.unwrap()
}

/// The setup of the reload and IPv6 tests: one site, one caller, the admin listener on `admin`.
fn admin_setup(dir: &Path, admin: SocketAddr) -> LocalSetup {
    let app = LocalApp::new("client-1", "sid-1", "finance-secret-0123456789abcdef-xyz");
    let site = LocalSite::new(
        "finance",
        FIN_LUID,
        vec![SiteUser::new("svc-renderer", "u-1")],
    )
    .broker_secret("sid-1", "finance-secret-0123456789abcdef-xyz")
    .secret_in_file();
    LocalSetup::new(dir, app)
        .admin(admin)
        .site(site)
        .caller(LocalCaller::new(
            RENDERER,
            LocalGrant::new(&["finance"], &["svc-renderer"], &["tableau:content:read"]),
        ))
}

/// A refused reload sets `config_reload_failed` to 1 and leaves `config_generation` (and the
/// configuration in force) as it was; the next good reload sets it back to 0 and bumps the
/// generation. Each step is read from a real scrape of the admin listener's `/metrics`, right
/// after the reload it follows has returned (the reload is the event, no waiting).
#[tokio::test]
async fn a_refused_reload_shows_in_reload_failed_and_a_good_one_clears_it_and_bumps_the_generation()
{
    let dir = tempfile::tempdir().unwrap();
    let system = with_admin(dir.path()).await;
    let server = &system.server;
    let admin = server.admin_addr().unwrap();
    let path = &system.config_path;
    let reloads = |m: &Exposition, outcome| m.value("reloads_total", &[("outcome", outcome)]);

    let m = scrape(admin).await;
    assert_eq!(m.types["config_reload_failed"], "gauge");
    assert_eq!(m.types["config_generation"], "gauge");
    assert_eq!(m.value("config_reload_failed", &[]), Some(0.0), "{m:?}");
    assert_eq!(m.value("config_generation", &[]), Some(1.0), "{m:?}");
    assert_eq!(reloads(&m, "error"), Some(0.0));

    // Not TOML: refused, the running configuration (generation 1) stays in force.
    let good = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, format!("{good}\nnot toml [")).unwrap();
    server.reload(path).unwrap_err();
    let m = scrape(admin).await;
    assert_eq!(m.value("config_reload_failed", &[]), Some(1.0), "{m:?}");
    assert_eq!(m.value("config_generation", &[]), Some(1.0), "{m:?}");
    assert_eq!(reloads(&m, "error"), Some(1.0));
    assert_eq!(reloads(&m, "ok"), Some(0.0));
    assert_eq!(server.broker().generation(), 1);

    // Valid TOML that fails validation (a caller granted an unknown site): still refused, still 1.
    let unknown_site = good.replacen("sites = [\"finance\"]", "sites = [\"nowhere\"]", 1);
    assert_ne!(
        unknown_site, good,
        "the caller's grant names its sites: {good}"
    );
    std::fs::write(path, unknown_site).unwrap();
    server.reload(path).unwrap_err();
    let m = scrape(admin).await;
    assert_eq!(m.value("config_reload_failed", &[]), Some(1.0));
    assert_eq!(m.value("config_generation", &[]), Some(1.0));
    assert_eq!(reloads(&m, "error"), Some(2.0));
    // The configuration in force still serves the caller.
    let pair = system
        .pki
        .issue_client(Some(RENDERER), &[], "test-client")
        .unwrap();
    let mut c = crate::support::client(&system.pki, server.local_addr(), &pair).await;
    c.get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();

    // The file fixed: applied, the flag back to 0, the next generation.
    std::fs::write(path, &good).unwrap();
    let report = server.reload(path).unwrap();
    assert_eq!(report.generation, 2);
    let m = scrape(admin).await;
    assert_eq!(m.value("config_reload_failed", &[]), Some(0.0), "{m:?}");
    assert_eq!(m.value("config_generation", &[]), Some(2.0), "{m:?}");
    assert_eq!(reloads(&m, "ok"), Some(1.0));
    assert_eq!(reloads(&m, "error"), Some(2.0));
    assert_eq!(server.broker().generation(), 2);

    // Every applied reload counts.
    assert_eq!(server.reload(path).unwrap().generation, 3);
    let m = scrape(admin).await;
    assert_eq!(m.value("config_generation", &[]), Some(3.0));
    assert_eq!(m.value("config_reload_failed", &[]), Some(0.0));

    drop(c);
    system.shutdown().await.unwrap();
}

/// Every family the registry renders, with every source wired as `serve` wires it and traffic
/// through each, is defined in the catalog with the same type and label names: the README test
/// (`metrics::catalog`) then covers what a scrape really shows. Only the shared cache's families
/// (`[cache.shared]` unset), sign-outs (none happened) and candidate-policy divergences (no
/// candidate) may be missing.
#[tokio::test]
async fn every_rendered_metric_is_defined_in_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let system = with_admin(dir.path()).await;
    let pair = system
        .pki
        .issue_client(Some(RENDERER), &[], "test-client")
        .unwrap();
    let mut c = crate::support::client(&system.pki, system.server.local_addr(), &pair).await;
    c.get_credentials(req("finance", "svc-renderer", &["tableau:content:read"]))
        .await
        .unwrap();
    system.server.reload(&system.config_path).unwrap();
    let m = scrape(system.server.admin_addr().unwrap()).await;

    let mut labels: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for s in &m.samples {
        let family = m.family_of(&s.name);
        let keys = labels.entry(family).or_default();
        keys.extend(s.labels.keys().filter(|k| *k != "le").cloned());
    }
    for (family, kind) in &m.types {
        let def = catalog::by_family(family)
            .unwrap_or_else(|| panic!("{family} is rendered but not in src/metrics/catalog.rs"));
        assert_eq!(def.kind.word(), kind, "{family}");
        let want: BTreeSet<String> = def.labels.iter().map(|l| (*l).to_owned()).collect();
        assert_eq!(
            labels.get(family.as_str()).cloned().unwrap_or_default(),
            want,
            "{family}'s labels"
        );
    }
    let missing: Vec<&str> = catalog::ALL
        .iter()
        .filter(|d| !m.types.contains_key(d.family()))
        .map(|d| d.name)
        .collect();
    assert!(
        missing.iter().all(|m| m.starts_with("shared_cache_")
            || *m == "sign_outs_total"
            || *m == "policy_candidate_divergence_total"),
        "defined but not rendered: {missing:?}"
    );
    drop(c);
    system.shutdown().await.unwrap();
}

/// Whether this machine's loopback has IPv6 (containers often have it off).
fn ipv6_loopback() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// `[::]` serves IPv4 clients too, on the gRPC and the admin listener, whatever
/// `net.ipv6.bindv6only` says: the broker turns IPV6_V6ONLY off itself.
#[tokio::test]
async fn listeners_on_the_ipv6_any_address_answer_on_ipv4_and_ipv6_loopback() {
    if !ipv6_loopback() {
        eprintln!("skipped: this machine's loopback has no IPv6 (cannot bind [::1])");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "[::]:0".parse().unwrap();
    let system = admin_setup(dir.path(), any)
        .listen(any)
        .start()
        .await
        .unwrap();
    let grpc = system.server.local_addr();
    let admin = system.server.admin_addr().unwrap();
    assert!(grpc.ip().is_unspecified() && grpc.is_ipv6(), "{grpc}");
    let pair = system
        .pki
        .issue_client(Some(RENDERER), &[], "test-client")
        .unwrap();
    for ip in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let channel = local::connect(&system.pki, SocketAddr::new(ip, grpc.port()), &pair)
            .await
            .unwrap_or_else(|e| panic!("gRPC on {ip}: {e}"));
        let me = TokenBrokerClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.identity, RENDERER, "gRPC on {ip}");

        let mut tcp = tokio::net::TcpStream::connect(SocketAddr::new(ip, admin.port()))
            .await
            .unwrap_or_else(|e| panic!("admin on {ip}: {e}"));
        tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "admin on {ip}: {answer}"
        );
    }
    system.shutdown().await.unwrap();
}
