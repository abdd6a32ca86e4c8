//! The audit trail end to end: fail-closed and best-effort on a full disk (`/dev/full`), stable
//! fingerprints across broker processes with a shared key, and the access review on the fixture
//! trail in `tests/data/audit/`.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tableau_token_broker::config::raw::RawAudit;

use tableau_token_broker::grpc::pb;
use tonic::Code;

use crate::harness::{Harness, Opts, RENDERER, eventually, reason, req};
use crate::support::{self, Served, serve_command};

const BIN: &str = env!("CARGO_BIN_EXE_tableau-token-broker");

fn read_req() -> pb::GetCredentialsRequest {
    req("finance", "svc-renderer", &["tableau:content:read"])
}

fn mint_req() -> pb::MintJwtRequest {
    pb::MintJwtRequest {
        site: "finance".into(),
        user: "svc-renderer".into(),
        scopes: vec!["tableau:content:read".into()],
        ttl: None,
        ..Default::default()
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn fail_closed_on_a_full_disk_hands_nothing_out_and_never_signs_in() {
    let h = Harness::start_with(Opts {
        audit: Some(RawAudit {
            path: Some("/dev/full".into()),
            ..RawAudit::default()
        }),
        ..Opts::default()
    })
    .await;
    let mut c = h.client(RENDERER).await;
    for _ in 0..2 {
        let e = c.get_credentials(read_req()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(reason(&e), "AUDIT_UNAVAILABLE");
        assert!(e.message().contains("audit trail"), "{}", e.message());
        let e = c.mint_jwt(mint_req()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert_eq!(reason(&e), "AUDIT_UNAVAILABLE");
    }
    assert_eq!(
        h.fake.stats().signins,
        0,
        "the sign-in's record failed, so Tableau never saw the JWT"
    );
    // A refusal hands nothing out: it stays what it is, and its failed record is counted.
    let e = c
        .get_credentials(req("finance", "mallory", &["tableau:content:read"]))
        .await
        .unwrap_err();
    assert_eq!(reason(&e), "USER_NOT_ALLOWED");
    let stats = h.server().broker().audit().stats().snapshot();
    assert_eq!(stats.written, 0);
    assert!(stats.failed >= 5, "{stats:?}");
    assert!(!h.server().broker().audit().is_healthy());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn best_effort_on_a_full_disk_serves_and_counts_the_failures() {
    let h = Harness::start_with(Opts {
        audit: Some(RawAudit {
            path: Some("/dev/full".into()),
            mode: Some("best-effort".into()),
            ..RawAudit::default()
        }),
        ..Opts::default()
    })
    .await;
    let mut c = h.client(RENDERER).await;
    let a = c.get_credentials(read_req()).await.unwrap().into_inner();
    assert!(!a.token.is_empty());
    let b = c.get_credentials(read_req()).await.unwrap().into_inner();
    assert!(b.from_cache);
    let m = c.mint_jwt(mint_req()).await.unwrap().into_inner();
    assert!(!m.jwt.is_empty());
    assert_eq!(h.fake.stats().signins, 1);
    let audit = h.server().broker().audit();
    // start + sign_in + 3 decisions, all failed, none written.
    eventually("five failed records", || {
        audit.stats().snapshot().failed >= 5
    })
    .await;
    assert_eq!(audit.stats().snapshot().written, 0);
}

#[tokio::test]
async fn a_file_trail_holds_one_record_per_decision_and_a_reload_raises_the_generation() {
    let h = Harness::start().await;
    let trail = h.dir.path().join("audit.jsonl");
    let mut c = h.client(RENDERER).await;
    c.get_credentials(read_req()).await.unwrap();
    c.get_credentials(read_req()).await.unwrap();
    h.server().reload(&h.config_path).unwrap();
    assert_eq!(h.server().broker().generation(), 2);
    c.get_credentials(req("finance", "svc-renderer", &["tableau:nope:read"]))
        .await
        .unwrap_err();
    let records = read_trail(&trail);
    let rpc: Vec<_> = records.iter().filter(|r| r["event"] == "rpc").collect();
    assert_eq!(rpc.len(), 3, "{records:#?}");
    assert_eq!(rpc[0]["config_generation"], 1);
    assert_eq!(rpc[2]["config_generation"], 2);
    assert_eq!(rpc[2]["reason"], "UNKNOWN_SCOPE");
    assert_eq!(
        rpc[2]["scopes_requested"],
        serde_json::json!(["tableau:nope:read"])
    );
    assert!(rpc[2]["scopes_granted"].is_null());
    let h2 = &h;
    eventually("the reload record", || {
        read_trail(&h2.dir.path().join("audit.jsonl"))
            .iter()
            .any(|r| r["event"] == "reload" && r["config_generation"] == 2 && r["outcome"] == "ok")
    })
    .await;
    assert!(records.iter().any(|r| r["event"] == "start"));
}

fn read_trail(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The harness configuration with the trail at `trail` and `extra` lines in `[audit]`.
fn config_with_trail(h: &Harness, name: &str, trail: &Path, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let default = format!(
        "path = {:?}",
        h.dir.path().join("audit.jsonl").display().to_string()
    );
    let path = h.dir.path().join(name);
    std::fs::write(
        &path,
        text.replace(
            &default,
            &format!("path = {:?}\n{extra}", trail.display().to_string()),
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn two_processes_with_one_key_fingerprint_a_token_alike_and_the_cli_agrees() {
    let h = Harness::start().await;
    let key = h.dir.path().join("audit-hmac.key");
    std::fs::write(&key, "Zm9yLXRlc3RzLW9ubHktYS1zaGFyZWQta2V5LTMyYnl0ZXM=\n").unwrap();
    let extra = format!("hmac_key_file = {:?}", key.display().to_string());
    // A token from the harness's broker: both processes are told about the same token.
    let token = h
        .client(RENDERER)
        .await
        .get_credentials(read_req())
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut fps = Vec::new();
    for name in ["a", "b"] {
        let trail = h.dir.path().join(format!("{name}.jsonl"));
        let config = config_with_trail(&h, &format!("{name}.toml"), &trail, &extra);
        let mut serve = Served::spawn(serve_command(&config).env("RUST_LOG", "info"));
        let addr = serve.listening_addr(Duration::from_secs(20));
        let out = support::client(&h.pki, addr, &h.client_cert(RENDERER))
            .await
            .invalidate_credentials(pb::InvalidateCredentialsRequest {
                token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!out.evicted, "another process never held it");
        serve.stop().await;
        let records = read_trail(&trail);
        let inv = records
            .iter()
            .find(|r| r["rpc"] == "InvalidateCredentials")
            .unwrap();
        fps.push(inv["token_fp"].as_str().unwrap().to_owned());
        assert!(!std::fs::read_to_string(&trail).unwrap().contains(&token));
    }
    assert_eq!(fps[0], fps[1], "one key, one fingerprint in every process");

    let mut cli = std::process::Command::new(BIN)
        .args(["audit", "fingerprint", "--key-file"])
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(cli.stdin.take().unwrap(), "{token}").unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), fps[0]);
}

#[tokio::test]
async fn serve_refuses_to_start_without_a_writable_trail() {
    let h = Harness::start().await;
    let config = config_with_trail(
        &h,
        "bad.toml",
        Path::new("/nonexistent-dir/audit.jsonl"),
        "",
    );
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the audit trail /nonexistent-dir/audit.jsonl"),
        "{err}"
    );
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/audit")
        .join(name)
}

#[test]
fn review_of_the_fixture_trail_prints_the_expected_report_and_valid_toml() {
    let out = std::process::Command::new(BIN)
        .args(["audit", "review", "--config"])
        .arg(data("broker.toml"))
        .arg(data("trail.jsonl"))
        .args(["--since", "2026-03-01T00:00:00Z"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = std::fs::read_to_string(data("review.expected.txt")).unwrap();
    assert_eq!(text, expected, "review output changed:\n{text}");

    // The suggested section replaces the configuration's callers and passes check-config.
    let config = std::fs::read_to_string(data("broker.toml")).unwrap();
    let head = &config[..config.find("\n[[callers]]").unwrap()];
    let suggested = &text[text.find("# Suggested [[callers]]").unwrap()..];
    let dir = tempfile::tempdir().unwrap();
    let tightened = dir.path().join("tightened.toml");
    std::fs::write(&tightened, format!("{head}\n{suggested}")).unwrap();
    let check = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&tightened)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&check.stderr),
        std::fs::read_to_string(&tightened).unwrap()
    );

    let json = std::process::Command::new(BIN)
        .args(["audit", "review", "--json", "--config"])
        .arg(data("broker.toml"))
        .arg(data("trail.jsonl"))
        .args(["--since", "2026-03-01T00:00:00Z"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let never: Vec<(u64, u64)> = v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["grants"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["requests"] == 0)
                .map(|g| (c["index"].as_u64().unwrap(), g["index"].as_u64().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(never, vec![(0, 1), (2, 0)], "the grants never used");
}

/// A repeated cache hit's record is written from the last hit's (everything after the request
/// ID but the caller's address), so it must read exactly as a record written field by field:
/// the same keys and values, its own time and request ID, and the address and certificate serial
/// of the connection that asked.
#[tokio::test]
async fn repeated_hits_are_recorded_with_their_own_id_address_and_certificate() {
    let h = Harness::start().await;
    let trail = h.dir.path().join("audit.jsonl");
    let cert = h.client_cert(RENDERER);
    let other_cert = h.client_cert(RENDERER);
    let mut clients = [
        h.client_with(&cert).await,
        h.client_with(&cert).await,
        h.client_with(&other_cert).await,
    ];
    clients[0].get_credentials(read_req()).await.unwrap();
    for i in [0, 0, 1, 1, 2, 2, 0] {
        let r = clients[i].get_credentials(read_req()).await.unwrap();
        assert!(r.into_inner().from_cache);
    }
    let records = read_trail(&trail);
    let rpc: Vec<_> = records.iter().filter(|r| r["event"] == "rpc").collect();
    assert_eq!(rpc.len(), 8, "{records:#?}");
    let hits = &rpc[1..];
    let without_call = |r: &serde_json::Value| {
        let mut r = r.clone();
        let o = r.as_object_mut().unwrap();
        o.remove("time");
        o.remove("request_id");
        let caller = o["caller"].as_object_mut().unwrap();
        caller.remove("peer");
        caller.remove("cert_serial");
        r
    };
    for r in hits {
        assert_eq!(without_call(r), without_call(hits[0]), "{r:#}");
        assert_eq!(r["from_cache"], true);
        assert_eq!(
            r.as_object().unwrap().keys().collect::<Vec<_>>(),
            hits[0].as_object().unwrap().keys().collect::<Vec<_>>()
        );
    }
    let ids: std::collections::HashSet<_> = rpc.iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids.len(), rpc.len(), "request IDs repeat");
    let peer = |i: usize| hits[i]["caller"]["peer"].as_str().unwrap().to_owned();
    let serial = |i: usize| hits[i]["caller"]["cert_serial"].clone();
    // one, one | two, two | three, three | one
    assert_eq!(peer(0), peer(1));
    assert_eq!(peer(0), peer(6));
    assert_eq!(peer(2), peer(3));
    assert_ne!(
        peer(0),
        peer(2),
        "two connections recorded with one address"
    );
    assert_ne!(peer(2), peer(4));
    assert_eq!(serial(0), serial(3));
    assert_eq!(serial(4), serial(5));
    assert_ne!(
        serial(0),
        serial(4),
        "two certificates recorded with one serial"
    );
    assert_eq!(serial(0), rpc[0]["caller"]["cert_serial"]);
    assert_eq!(peer(0), rpc[0]["caller"]["peer"].as_str().unwrap());
}

/// A hung audit write (a FIFO whose reader never reads) stalls only the calls that wait for their
/// records: `/livez` answers within a second, WhoAmI and ResolveScopes keep answering, and
/// `/readyz` reports the stalled trail. Reading the FIFO lets the waiting calls finish.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_audit_write_stalls_only_the_audited_calls() {
    use std::io::Read;
    use std::time::Instant;

    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("trail.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    // The reader opens (and holds) the FIFO, and reads nothing until told to.
    let (drain_tx, drain_rx) = std::sync::mpsc::channel::<()>();
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&reader_path).unwrap();
        drain_rx.recv().unwrap();
        let mut sink = Vec::new();
        let _ = f.read_to_end(&mut sink);
    });
    let h = Harness::start_with(Opts {
        audit: Some(RawAudit {
            path: Some(fifo.clone()),
            ..RawAudit::default()
        }),
        admin: true,
        ..Opts::default()
    })
    .await;
    let admin = h.server().admin_addr().unwrap();
    // Fill the pipe: each granted call writes a record of several hundred bytes, so a few
    // hundred calls fill the 64 KiB buffer and the writer's next write hangs.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(h.client(RENDERER).await);
    }
    let calls: Vec<_> = (0..400)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            tokio::spawn(async move { c.get_credentials(read_req()).await })
        })
        .collect();
    // The event: the trail counts as stalled once one write has hung past STALLED_AFTER.
    let started = Instant::now();
    loop {
        if let Err(why) = h.server().readiness().check() {
            if why.contains("audit trail write has not returned") {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the trail never reported a stalled write"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let http = support::http();
    for path in ["/livez", "/readyz"] {
        let t = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(1),
            http.get(format!("http://{admin}{path}")).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within 1 s while the audit write hangs"))
        .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        match path {
            "/livez" => assert_eq!(status, 200, "{body}"),
            _ => {
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("audit trail"), "{body}");
            }
        }
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    let mut c = h.client(RENDERER).await;
    let who = tokio::time::timeout(Duration::from_secs(1), c.who_am_i(pb::WhoAmIRequest {}))
        .await
        .expect("WhoAmI waited for the hung audit write")
        .unwrap()
        .into_inner();
    assert_eq!(who.identity, RENDERER);
    let resolved = tokio::time::timeout(
        Duration::from_secs(1),
        c.resolve_scopes(pb::ResolveScopesRequest {
            methods: vec!["Query Projects".into()],
            ..Default::default()
        }),
    )
    .await
    .expect("ResolveScopes waited for the hung audit write")
    .unwrap();
    assert!(!resolved.into_inner().required_scopes.is_empty());
    // Reading the FIFO unblocks the writer: every waiting call finishes, granted.
    drain_tx.send(()).unwrap();
    for call in calls {
        let got = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("a call still waits after the trail drained")
            .unwrap();
        assert!(got.is_ok(), "{got:?}");
    }
    assert!(h.server().readiness().check().is_ok());
    drop(h);
    let _ = reader.join();
}

/// The trail as the manifests ship it: standard output into a pipe, read by another process.
/// Records arrive whole on the pipe, and when the reader stops reading the full pipe stalls only
/// the calls waiting for their records: `/livez` and WhoAmI keep answering within a second,
/// `/readyz` reports the stalled trail, and reading again lets every waiting call finish with
/// its record on the pipe.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_pipe_trail_stalls_only_the_audited_calls_when_its_reader_stops() {
    use std::io::{BufRead, BufReader};
    use std::time::Instant;

    let h = Harness::start().await;
    let config = config_with_trail(&h, "pipe.toml", Path::new("-"), "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut served = Served::spawn(serve_command(&config).stdout(writer));
    let admin: std::net::SocketAddr = served.wait_for(
        "admin listening (plain HTTP: /livez /readyz /metrics)",
        Duration::from_secs(20),
    )["fields"]["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let addr = served.listening_addr(Duration::from_secs(20));
    let client = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;

    // One call: its record is on the pipe, whole, before the call returns.
    let mut lines = BufReader::new(reader);
    client.clone().get_credentials(read_req()).await.unwrap();
    let (record, mut lines) = tokio::task::spawn_blocking(move || {
        // The start and sign-in records come first.
        let mut line = String::new();
        loop {
            line.clear();
            assert!(lines.read_line(&mut line).unwrap() > 0, "the pipe closed");
            let r: serde_json::Value = serde_json::from_str(&line).unwrap();
            if r["rpc"] == "GetCredentials" {
                return (r, lines);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(record["outcome"], "granted", "{record}");

    // The reader stops: a few hundred records of several hundred bytes fill the 64 KiB pipe.
    let calls: Vec<_> = (0..400)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.get_credentials(read_req()).await })
        })
        .collect();
    let http = support::http();
    let started = Instant::now();
    loop {
        let resp = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        if status == 503 && body.contains("audit trail write has not returned") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the trail never reported a stalled write: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    let live = tokio::time::timeout(
        Duration::from_secs(1),
        http.get(format!("http://{admin}/livez")).send(),
    )
    .await
    .expect("/livez did not answer within 1 s while the pipe is full")
    .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    // A connection of its own: the waiting calls hold the first one's streams.
    let mut fresh = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let who = tokio::time::timeout(Duration::from_secs(1), fresh.who_am_i(pb::WhoAmIRequest {}))
        .await
        .expect("WhoAmI waited for the full pipe")
        .unwrap()
        .into_inner();
    assert_eq!(who.identity, RENDERER);
    assert!(
        calls.iter().any(|c| !c.is_finished()),
        "every call finished although the pipe is full"
    );

    // Reading again: every waiting call finishes, granted, with its record on the pipe.
    let (counted_tx, counted) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut granted = 0usize;
        let mut line = String::new();
        while granted < 400 {
            line.clear();
            if lines.read_line(&mut line).unwrap() == 0 {
                break;
            }
            let r: serde_json::Value = serde_json::from_str(&line).unwrap();
            if r["rpc"] == "GetCredentials" && r["outcome"] == "granted" {
                granted += 1;
            }
        }
        let _ = counted_tx.send((granted, lines));
    });
    for call in calls {
        let got = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("a call still waits after the reader drained the pipe")
            .unwrap();
        assert!(got.is_ok(), "{got:?}");
    }
    let (granted, _lines) = tokio::time::timeout(Duration::from_secs(30), counted)
        .await
        .expect("the records of the waiting calls never reached the pipe")
        .unwrap();
    assert_eq!(granted, 400);
    served.stop().await;
}

/// Runs the real `serve` binary (JSON logs on stderr, as operators see them; the audit trail in
/// a file of its own) against the double: a process of its own, so no other test's logging can
/// interfere.
#[tokio::test]
async fn audit_records_match_tokens_without_revealing_them() {
    let h = Harness::start().await;
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let config = h.dir.path().join("serve.toml");
    let trail = h.dir.path().join("serve-audit.jsonl");
    let harness_audit = format!(
        "path = {:?}",
        h.dir.path().join("audit.jsonl").display().to_string()
    );
    assert!(text.contains(&harness_audit), "{text}");
    std::fs::write(
        &config,
        text.replace(
            &harness_audit,
            &format!("path = {:?}", trail.display().to_string()),
        )
        .replace(
            "[tableau]",
            "[telemetry]\nlog_format = \"json\"\nlog_filter = \"trace\"\n[tableau]",
        ),
    )
    .unwrap();
    let mut served = Served::spawn(serve_command(&config).stdout(std::process::Stdio::piped()));
    let addr = served.listening_addr(Duration::from_secs(20));
    let mut c = support::client(&h.pki, addr, &h.client_cert(RENDERER)).await;
    let scopes = ["tableau:content:read"];
    let a = c
        .get_credentials(req("finance", "svc-renderer", &scopes))
        .await
        .unwrap()
        .into_inner();
    c.get_credentials(req("finance", "svc-renderer", &scopes))
        .await
        .unwrap();
    let m = c
        .mint_jwt(pb::MintJwtRequest {
            site: "finance".into(),
            user: "svc-renderer".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.get_credentials(req("finance", "mallory", &scopes))
        .await
        .unwrap_err();
    c.invalidate_credentials(pb::InvalidateCredentialsRequest {
        token: a.token.clone(),
    })
    .await
    .unwrap();
    // SIGTERM, so the broker drains and exits 0.
    let lines = served.stop().await;
    let records_text = std::fs::read_to_string(&trail).unwrap();
    let text = format!("{}\n{records_text}", lines.join("\n"));

    assert!(
        !text.contains(&a.token),
        "a credentials token reached the logs or the trail"
    );
    assert!(
        !text.contains(&m.jwt),
        "a JWT reached the logs or the trail"
    );
    assert!(
        !text.contains("eyJ"),
        "something JWT-shaped reached the logs or the trail"
    );
    assert!(
        !text.contains("finance-secret-0123456789abcdef-xyz"),
        "the connected-app secret reached the logs or the trail"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"schema_version\"") || l.contains("\"target\":\"audit\"")),
        "audit records stay out of the diagnostic log and stdout"
    );

    let audit: Vec<serde_json::Value> = records_text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    assert!(audit.iter().all(|r| r["schema_version"] == 1));
    let gets: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|v| v["event"] == "rpc" && v["rpc"] == "GetCredentials")
        .collect();
    assert_eq!(gets.len(), 3, "one audit record per call: {audit:#?}");
    let (first, second, denied) = (gets[0], gets[1], gets[2]);
    assert_eq!(first["caller"]["identity"], RENDERER);
    assert_eq!(first["caller"]["source"], "uri_san");
    assert_eq!(first["caller"]["entry"], RENDERER);
    assert!(first["caller"]["cert_serial"].as_str().unwrap().len() >= 2);
    assert!(
        first["caller"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(first["site"], "finance");
    assert_eq!(first["user"], "svc-renderer");
    assert_eq!(
        first["scopes_granted"],
        serde_json::json!(["tableau:content:read"])
    );
    assert_eq!(first["outcome"], "granted");
    assert_eq!(first["reason"], "OK");
    assert_eq!(first["from_cache"], false);
    assert_eq!(first["config_generation"], 1);
    assert_eq!(
        first["jti"].as_str().unwrap().len(),
        36,
        "the sign-in's jti"
    );
    let sign_in = audit.iter().find(|v| v["event"] == "sign_in").unwrap();
    assert_eq!(
        sign_in["jti"], first["jti"],
        "the sign-in is on record with its call's jti"
    );
    assert_eq!(sign_in["request_id"], first["request_id"]);
    assert_eq!(second["from_cache"], true);
    assert!(second["jti"].is_null(), "no JWT minted on a cache hit");
    assert_ne!(first["request_id"], second["request_id"]);
    assert_eq!(
        first["token_fp"], second["token_fp"],
        "same token, same fingerprint"
    );
    assert_eq!(first["token_fp"].as_str().unwrap().len(), 16);
    assert_eq!(denied["outcome"], "denied");
    assert_eq!(denied["reason"], "USER_NOT_ALLOWED");
    assert!(
        audit.iter().any(|v| v["rpc"] == "MintJwt"
            && v["jti"] == m.jti.as_str()
            && v["outcome"] == "granted")
    );
    let inv = audit
        .iter()
        .find(|v| v["rpc"] == "InvalidateCredentials")
        .unwrap();
    assert_eq!(inv["token_fp"], first["token_fp"]);
    assert_eq!(inv["evicted"], true);
    let out = audit.iter().find(|v| v["event"] == "sign_out").unwrap();
    assert_eq!(out["token_fp"], first["token_fp"]);
}
