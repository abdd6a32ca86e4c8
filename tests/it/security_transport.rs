//! Issue 24 (third security pass), the transport and reload points, written as the attacks: TLS
//! session resumption past a certificate's expiry (1), a starved admin listener (4), certificates
//! without a caller entry holding the connection slots (5), a subject CN outside a sub-CA's name
//! constraints (6), a half-written configuration (13) and a check interval that overflows (14).
//! Real TLS, real sockets, the real double; each failed on 66689f7.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use secrecy::ExposeSecret;
use tableau_double::SiteUser;
use tableau_token_broker::devkit::certs::{CertPair, DevPki};
use tableau_token_broker::devkit::local::{
    LocalApp, LocalCaller, LocalGrant, LocalSetup, LocalSite,
};
use tableau_token_broker::grpc::pb;
use tableau_token_broker::grpc::pb::token_broker_client::TokenBrokerClient;
use tableau_token_broker::server::RunningServer;
use tableau_token_broker::transport::client::{client_config, connect_with_config};
use tableau_token_broker::transport::tls::PROTOCOL_VERSIONS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{RENDERER, reason, req};

const OPS: &str = "spiffe://example.org/ns/ops/sa/admin";
const LUID: &str = "9a8b7c6d-e4f3-a2b1-c0d9-e8f7a6b5c4d3";
/// A CN inside the sub-CA's subtree, and one outside it; both have caller entries.
const CN_INSIDE: &str = "svc.reports.example.org";
const CN_OUTSIDE: &str = "admin.ops.example.org";

struct World {
    dir: tempfile::TempDir,
    pki: DevPki,
    server: RunningServer,
    config_path: std::path::PathBuf,
    _double: tableau_double::FakeTableauHandle,
}

/// Broker + double: RENDERER reads finance as svc-renderer; two `cn:` callers; OPS (last, so a
/// cut before its `deny_scopes` parses) may run tasks on every site but never delete them.
async fn world(setup: impl FnOnce(LocalSetup) -> LocalSetup) -> World {
    let dir = tempfile::tempdir().unwrap();
    let read = || LocalGrant::new(&["finance"], &["svc-renderer"], &["tableau:content:read"]);
    let base = LocalSetup::new(
        dir.path(),
        LocalApp::new("client-1", "sid-1", "transport-test-secret-of-32-bytes+"),
    )
    .site(LocalSite::new(
        "finance",
        LUID,
        vec![SiteUser::new("svc-renderer", "u-1")],
    ))
    .caller(LocalCaller::new(RENDERER, read()))
    .caller(LocalCaller::new(format!("cn:{CN_INSIDE}"), read()))
    .caller(LocalCaller::new(format!("cn:{CN_OUTSIDE}"), read()))
    .caller(LocalCaller::new(
        "spiffe://example.org/ns/ops/*",
        LocalGrant::new(&["*"], &["*"], &["tableau:tasks:*", "tableau:content:read"])
            .deny(&["tableau:tasks:delete"]),
    ));
    let local = setup(base).start().await.unwrap();
    World {
        dir,
        pki: local.pki,
        server: local.server,
        config_path: local.config_path,
        _double: local.double,
    }
}

impl World {
    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn tls(
        &self,
        pair: &CertPair,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        client_config(
            self.pki.ca_cert_pem().as_bytes(),
            Some((
                pair.cert_pem.as_bytes(),
                pair.key_pem.expose_secret().as_bytes(),
            )),
            versions,
        )
        .unwrap()
    }
}

/// One GetCredentials (RENDERER's everyday request) over a new connection made with `config`;
/// any failure, at connect or in the call, is an `Err`.
async fn credentials_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let ch = connect_with_config(&addr.to_string(), config, "localhost")
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        TokenBrokerClient::new(ch).get_credentials(req(
            "finance",
            "svc-renderer",
            &["tableau:content:read"],
        )),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map(|_| ())
    .map_err(|s| format!("call: {s:?}"))
}

/// WhoAmI over a new connection with `config`.
async fn who_am_i(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<pb::WhoAmIResponse, String> {
    let ch = connect_with_config(&addr.to_string(), config, "localhost")
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        TokenBrokerClient::new(ch).who_am_i(pb::WhoAmIRequest {}),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
    .map(tonic::Response::into_inner)
    .map_err(|s| format!("call: {s:?}"))
}

async fn eventually(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {within:?} waiting for {what}");
}

// ---------------------------------------------------------------------------------------------
// 1. TLS session resumption skips the client-certificate checks
// ---------------------------------------------------------------------------------------------

/// A client whose certificate expired kept getting credentials by resuming its TLS session
/// (TLS 1.3 tickets, TLS 1.2 session IDs): rustls reuses the chain it verified the first time.
/// The certificate here expires for real (TLS checks the system time), a few seconds after it
/// was used; the clients keep the sessions they were given and offer them when they reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_does_not_outlive_its_expired_certificate() {
    let w = world(|s| s).await;
    let not_after = SystemTime::now() + Duration::from_secs(4);
    let pair = w
        .pki
        .issue_client_until(Some(RENDERER), "renderer", not_after)
        .unwrap();
    // Each config keeps its own session cache (rustls' default: in-memory resumption).
    let tls13 = w.tls(&pair, &[&rustls::version::TLS13]);
    let tls12 = w.tls(&pair, &[&rustls::version::TLS12]);
    for (name, config) in [("TLS 1.3", &tls13), ("TLS 1.2", &tls12)] {
        credentials_with(w.addr(), Arc::clone(config))
            .await
            .unwrap_or_else(|e| panic!("{name}: the certificate is still valid: {e}"));
    }
    // Past notAfter (whole seconds), with a margin.
    let wait = not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;

    // Control: without a session to resume, the expired certificate is refused.
    let fresh = w.tls(&pair, PROTOCOL_VERSIONS);
    assert!(
        credentials_with(w.addr(), fresh).await.is_err(),
        "control: a full handshake with an expired certificate must fail"
    );
    // The attack: offer the stored session.
    let mut served = Vec::new();
    for (name, config) in [("TLS 1.3", tls13), ("TLS 1.2", tls12)] {
        if credentials_with(w.addr(), config).await.is_ok() {
            served.push(name);
        }
    }
    assert!(
        served.is_empty(),
        "a resumed session served an expired certificate over {served:?}"
    );
    // A valid certificate still works.
    let renewed = w.pki.issue_client(Some(RENDERER), &[], "renderer").unwrap();
    credentials_with(w.addr(), w.tls(&renewed, PROTOCOL_VERSIONS))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. The admin listener starved without authentication
// ---------------------------------------------------------------------------------------------

/// One probe: `GET path` on a new connection; the status line's code, within `within`.
async fn probe(addr: SocketAddr, path: &str, within: Duration) -> Result<u16, String> {
    let run = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        tcp.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&got);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status line: {text:?}"))
    };
    tokio::time::timeout(within, run)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

/// About 19 silent TCP connections a second made every `/livez` and `/readyz` time out. Here
/// 500 connections are held open (half silent, half trickling a request head that never ends),
/// each reopened as soon as the listener closes it; every probe must still answer within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_500_idle_or_slow_connections_are_held() {
    use tableau_token_broker::admin::{AdminState, Readiness};
    const HELD: usize = 500;
    let limit = rlimit::increase_nofile_limit(4096).unwrap_or(1024);
    assert!(
        limit >= 2 * HELD as u64 + 128,
        "open-file limit {limit} is too low for this test"
    );
    let readiness = Readiness::new(None, tableau_token_broker::clock::system());
    readiness.set_config_loaded();
    let admin = tableau_token_broker::admin::serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        AdminState {
            readiness,
            metrics: Arc::new(tableau_token_broker::metrics::Metrics::new()),
        },
    )
    .await
    .unwrap();
    let addr = admin.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let connects = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for i in 0..HELD {
        let (stop, open, connects) = (Arc::clone(&stop), Arc::clone(&open), Arc::clone(&connects));
        attackers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut tcp) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                open.fetch_add(1, Ordering::Relaxed);
                connects.fetch_add(1, Ordering::Relaxed);
                let slow = i % 2 == 1;
                if slow {
                    let _ = tcp.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").await;
                }
                // Hold it until the listener closes it (or the test ends); a slow one sends a
                // header byte now and then, never the blank line.
                let mut buf = [0u8; 64];
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut buf)).await
                    {
                        Ok(Ok(0) | Err(_)) => break,
                        Ok(Ok(_)) => {}
                        Err(_) if slow => {
                            if tcp.write_all(b"X").await.is_err() {
                                break;
                            }
                        }
                        Err(_) => {}
                    }
                }
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }));
    }
    // Wait until all 500 have connected (the listener may already have closed some: they
    // come straight back).
    eventually(
        "500 connections made",
        Duration::from_secs(20),
        async || connects.load(Ordering::Relaxed) >= HELD,
    )
    .await;
    let start = Instant::now();
    let mut probes = 0;
    while start.elapsed() < Duration::from_secs(4) {
        for path in ["/livez", "/readyz"] {
            let t = Instant::now();
            let got = probe(addr, path, Duration::from_secs(1)).await;
            assert_eq!(
                got,
                Ok(200),
                "{path} after {:?} of the attack ({} held, {} made, took {:?})",
                start.elapsed(),
                open.load(Ordering::Relaxed),
                connects.load(Ordering::Relaxed),
                t.elapsed()
            );
            probes += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(probes >= 10);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }
    admin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Certificates without a caller entry holding every max_connections slot
// ---------------------------------------------------------------------------------------------

/// A completed mTLS handshake that then sends nothing; `None` when the broker refused it.
async fn silent_mtls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()?;
    // TLS 1.3: the server's verdict on the certificate comes after the client's Finished. Read
    // its first bytes (HTTP/2 SETTINGS) to know the connection was taken.
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(tls),
        _ => None,
    }
}

/// With `max_connections = 8`, a certificate the CA issued but no caller entry names held all
/// eight slots (connections that handshake and then idle), and RENDERER was refused at connect.
/// Twice the cap of such connections is attempted and held; RENDERER must still be served,
/// those connections stay within their small quota, and the ones closed for it are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_without_a_caller_entry_cannot_hold_the_connection_slots() {
    let w = world(|s| s.configure(|c| c.server.get_or_insert_default().max_connections = Some(8)))
        .await;
    let stranger = w
        .pki
        .issue_client(Some("spiffe://example.org/ns/other/sa/squatter"), &[], "x")
        .unwrap();
    let stranger = w.tls(&stranger, PROTOCOL_VERSIONS);
    let mut held = Vec::new();
    for _ in 0..16 {
        if let Some(c) = silent_mtls(w.addr(), Arc::clone(&stranger)).await {
            held.push(c);
        }
    }
    let stats = w.server.connection_stats();
    eprintln!(
        "{} of 16 squatting connections taken; {:?}",
        held.len(),
        stats.snapshot()
    );
    let renderer = w.pki.issue_client(Some(RENDERER), &[], "renderer").unwrap();
    for i in 0..3 {
        credentials_with(w.addr(), w.tls(&renderer, PROTOCOL_VERSIONS))
            .await
            .unwrap_or_else(|e| {
                panic!("RENDERER's connection {i} while squatters hold slots: {e}")
            });
        // The squatter comes back for more between calls.
        if let Some(c) = silent_mtls(w.addr(), Arc::clone(&stranger)).await {
            held.push(c);
        }
    }
    // The quota (8 / 16 → 1) holds: at most one squatter is open, so all but one of those it
    // took were closed by the broker.
    let open_squatters = {
        let mut n = 0;
        for c in &mut held {
            let mut buf = [0u8; 256];
            let open = loop {
                match tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await {
                    Err(_) => break true,
                    Ok(Ok(0) | Err(_)) => break false,
                    Ok(Ok(_)) => {}
                }
            };
            n += usize::from(open);
        }
        n
    };
    assert!(
        open_squatters <= 1,
        "{open_squatters} squatting connections still open"
    );
    // A certificate without an entry is still told why it is refused (one at a time).
    let stranger_who = who_am_i(w.addr(), Arc::clone(&stranger)).await.unwrap();
    assert_eq!(stranger_who.matched_entry, "");
    w.server.broker().audit().flush().await;
    let trail = std::fs::read_to_string(w.dir.path().join("audit.jsonl")).unwrap();
    let closed = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "connection")
        .collect::<Vec<_>>();
    assert!(!closed.is_empty(), "closing a squatter is audited");
    assert_eq!(closed[0]["reason"], "CALLER_NOT_ALLOWED");
    assert_eq!(closed[0]["outcome"], "denied");
    assert_eq!(
        closed[0]["caller"]["identity"],
        "spiffe://example.org/ns/other/sa/squatter"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The subject CN escapes a sub-CA's name constraints
// ---------------------------------------------------------------------------------------------

/// A sub-CA constrained to `reports.example.org` issued a certificate whose only name is the CN
/// `admin.ops.example.org`: webpki checks name constraints on SANs only, so the CN claimed the
/// `cn:admin.ops.example.org` entry. A CN counts now only when it satisfies the constraints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cn_outside_a_sub_cas_name_constraints_names_no_caller() {
    let w = world(|s| s).await;
    let sub = w.pki.issue_sub_ca(&["reports.example.org"], &[]).unwrap();
    // Control: a SAN outside the subtree is refused by the chain check itself.
    let san_outside = sub.issue_client_with_uris(&[], &[CN_OUTSIDE], "x").unwrap();
    assert!(
        who_am_i(w.addr(), w.tls(&san_outside, PROTOCOL_VERSIONS))
            .await
            .is_err()
    );
    // Control: a CN inside the subtree names its caller.
    let inside = sub.issue_client_with_uris(&[], &[], CN_INSIDE).unwrap();
    let who = who_am_i(w.addr(), w.tls(&inside, PROTOCOL_VERSIONS))
        .await
        .unwrap();
    assert_eq!(
        (who.identity.as_str(), who.source.as_str()),
        (CN_INSIDE, "cn")
    );
    // The attack: the CN outside the subtree.
    let outside = sub.issue_client_with_uris(&[], &[], CN_OUTSIDE).unwrap();
    let got = who_am_i(w.addr(), w.tls(&outside, PROTOCOL_VERSIONS)).await;
    assert!(
        !matches!(&got, Ok(who) if who.identity == CN_OUTSIDE),
        "a CN outside the sub-CA's subtree named {got:?}"
    );
    assert!(
        credentials_with(w.addr(), w.tls(&outside, PROTOCOL_VERSIONS))
            .await
            .is_err()
    );
    // A CN that is no DNS name cannot lie inside a dNSName subtree either.
    let free_text = sub.issue_client_with_uris(&[], &[], "ops admin").unwrap();
    let got = who_am_i(w.addr(), w.tls(&free_text, PROTOCOL_VERSIONS)).await;
    assert!(!matches!(&got, Ok(who) if who.source == "cn"), "{got:?}");
    // The same CN from the unconstrained root still names its caller.
    let direct = w.pki.issue_client_with_uris(&[], &[], CN_OUTSIDE).unwrap();
    let who = who_am_i(w.addr(), w.tls(&direct, PROTOCOL_VERSIONS))
        .await
        .unwrap();
    assert_eq!(who.identity, CN_OUTSIDE);
}

// ---------------------------------------------------------------------------------------------
// 13. A half-written configuration applied
// ---------------------------------------------------------------------------------------------

/// An in-place write that pauses longer than `debounce`, cut just before OPS's `deny_scopes`,
/// widened OPS's grant to `tableau:tasks:delete` until the write finished. OPS asks for that
/// scope all along; every answer must be SCOPE_DENIED, and the finished file must be applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_configuration_is_not_applied() {
    let mut w = world(|s| s.configure(|c| c.reload.debounce = Some("300ms".into()))).await;
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let cut = text.find("deny_scopes").expect("OPS's deny_scopes");
    let finished = format!("{text}\n# edited in place\n");
    w.server.watch(&w.config_path).await;
    let reloads = w.server.reload_stats().unwrap();
    // Let the watcher's first check pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = reloads.snapshot().ok;

    let ops = w.pki.issue_client(Some(OPS), &[], "ops").unwrap();
    let ch = connect_with_config(
        &w.addr().to_string(),
        w.tls(&ops, PROTOCOL_VERSIONS),
        "localhost",
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = Arc::clone(&stop);
        let mut c = TokenBrokerClient::new(ch);
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let got = c
                    .get_credentials(req("finance", "svc-renderer", &["tableau:tasks:delete"]))
                    .await;
                answers.push(match got {
                    Ok(_) => "granted".to_owned(),
                    Err(e) => reason(&e),
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The in-place write: truncate, the head, a pause longer than the debounce, the rest.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&w.config_path)
            .unwrap();
        f.write_all(&finished.as_bytes()[..cut]).unwrap();
        f.sync_data().unwrap();
        tokio::time::sleep(Duration::from_millis(450)).await;
        f.write_all(&finished.as_bytes()[cut..]).unwrap();
        f.sync_data().unwrap();
    }
    eventually(
        "the finished file applied",
        Duration::from_secs(10),
        async || reloads.snapshot().ok > before,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = poller.await.unwrap();
    assert!(answers.len() > 20, "{answers:?}");
    assert!(
        answers.iter().all(|a| a == "SCOPE_DENIED"),
        "OPS's grant widened while the file was half-written: {answers:?}"
    );
    let config = w.server.broker().config();
    assert!(format!("{:?}", config.policy.callers()).contains("tableau:tasks:delete"));
}

/// The same write met by a manual reload (SIGHUP) instead of the watcher: the head parses and
/// widens OPS's grant. A configuration that widens a grant is read once more a debounce later;
/// the file changed in between, so the reload is refused, and the finished file reloads after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_reload_of_a_file_still_being_written_is_refused_when_it_widens_a_grant() {
    let w = world(|s| s.configure(|c| c.reload.debounce = Some("300ms".into()))).await;
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let cut = text.find("deny_scopes").expect("OPS's deny_scopes");
    let writer = {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&w.config_path)
            .unwrap();
        f.write_all(&text.as_bytes()[..cut]).unwrap();
        f.sync_data().unwrap();
        let rest = text.as_bytes()[cut..].to_vec();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            f.write_all(&rest).unwrap();
            f.sync_data().unwrap();
        })
    };
    let got = tokio::task::block_in_place(|| w.server.reload(&w.config_path));
    writer.join().unwrap();
    let e = got.expect_err("the half-written file widened OPS's grant");
    assert!(
        e.to_string().contains("changed while it was being read"),
        "{e}"
    );
    let ops = w.pki.issue_client(Some(OPS), &[], "ops").unwrap();
    let ch = connect_with_config(
        &w.addr().to_string(),
        w.tls(&ops, PROTOCOL_VERSIONS),
        "localhost",
    )
    .await
    .unwrap();
    let denied = TokenBrokerClient::new(ch)
        .get_credentials(req("finance", "svc-renderer", &["tableau:tasks:delete"]))
        .await
        .unwrap_err();
    assert_eq!(reason(&denied), "SCOPE_DENIED");
    tokio::task::block_in_place(|| w.server.reload(&w.config_path)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 14. A check interval that overflows kills the watch task
// ---------------------------------------------------------------------------------------------

/// `check_interval = "400000000000years"` passed check-config, then panicked the watch task
/// (`Instant + Duration` overflowed), and no reload, not even on SIGHUP, ever happened again.
/// The interval is put in force directly here (however the configuration bounds it, the task
/// must survive any value), then a new caller is added to the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_check_interval_does_not_stop_reloads() {
    let mut w = world(|s| s.configure(|c| c.reload.debounce = Some("100ms".into()))).await;
    let broker = Arc::clone(w.server.broker());
    let mut config = (*broker.config()).clone();
    config.reload.check_interval = Duration::MAX;
    broker.commit(broker.prepare(config).unwrap());
    w.server.watch(&w.config_path).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        w.server.request_reload(),
        "the watch task is alive (SIGHUP is heard)"
    );

    const NEWCOMER: &str = "spiffe://example.org/ns/reports/sa/newcomer";
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let added = format!(
        "{text}\n[[callers]]\nidentity = \"{NEWCOMER}\"\n\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"svc-renderer\"]\nscopes = [\"tableau:content:read\"]\n"
    );
    let tmp = w.dir.path().join("broker.toml.tmp");
    std::fs::write(&tmp, added).unwrap();
    std::fs::rename(&tmp, &w.config_path).unwrap();
    let newcomer = w.pki.issue_client(Some(NEWCOMER), &[], "n").unwrap();
    let addr = w.addr();
    let config = w.tls(&newcomer, PROTOCOL_VERSIONS);
    eventually(
        "the newcomer's entry loaded",
        Duration::from_secs(10),
        async || {
            who_am_i(addr, Arc::clone(&config))
                .await
                .is_ok_and(|who| who.matched_entry == NEWCOMER)
        },
    )
    .await;
    assert!(w.server.request_reload(), "still alive after reloading");
}
