//! The mTLS transport end to end: a real tonic server on 127.0.0.1 behind our own rustls
//! acceptor, real rustls clients, certificates from rcgen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;
use tableau_token_broker::devkit::certs::{CertPair, DevPki, DevPkiFiles};
use tableau_token_broker::grpc::routes::GrpcRoutes;
use tableau_token_broker::transport::client::{self, client_config, connect_with_config};
use tableau_token_broker::transport::tls::PROTOCOL_VERSIONS;
use tableau_token_broker::transport::{
    CallerIdentity, IdentitySource, IdentitySources, IncomingOptions, PeerInfo, TlsReloader,
    incoming_with,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

type Seen = Arc<Mutex<Vec<Option<CallerIdentity>>>>;

/// A running server; dropping it shuts the server down.
struct TestServer {
    addr: SocketAddr,
    seen: Seen,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start(tls: TlsReloader, options: IncomingOptions) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    // Behind the identity layer: records what identity each request carries.
    let recorder =
        tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
            record
                .lock()
                .unwrap()
                .push(req.extensions().get::<CallerIdentity>().cloned());
            req
        });
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stream = incoming_with(listener, tls, IdentitySources::default(), options);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(tableau_token_broker::grpc::IdentityLayer::new())
            .layer(recorder)
            .serve_with_incoming_shutdown(GrpcRoutes::new().service(health), stream, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        seen,
        _shutdown: tx,
    }
}

fn reloader(pki: &DevPki, dir: &std::path::Path) -> TlsReloader {
    let files = DevPkiFiles::in_dir(dir);
    std::fs::write(&files.server_cert, &pki.server().cert_pem).unwrap();
    std::fs::write(&files.server_key, pki.server().key_pem.expose_secret()).unwrap();
    std::fs::write(&files.ca_cert, pki.ca_cert_pem()).unwrap();
    TlsReloader::new(files.tls_files()).unwrap()
}

/// One health check over a fresh connection; any failure (connect or RPC) is an `Err`.
async fn health_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
) -> Result<(), String> {
    let channel = connect_with_config(&addr.to_string(), config, server_name)
        .await
        .map_err(|e| format!("connect: {e} ({e:?})"))?;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        HealthClient::new(channel).check(HealthCheckRequest::default()),
    )
    .await
    .map_err(|_| "health check timed out".to_string())?
    .map_err(|s| format!("rpc: {s}"))?;
    assert_eq!(resp.into_inner().status(), ServingStatus::Serving);
    Ok(())
}

fn config_for(ca_pki: &DevPki, client: Option<&CertPair>) -> Arc<rustls::ClientConfig> {
    client_config(
        ca_pki.ca_cert_pem().as_bytes(),
        client.map(|c| (c.cert_pem.as_bytes(), c.key_pem.expose_secret().as_bytes())),
        PROTOCOL_VERSIONS,
    )
    .unwrap()
}

async fn health(addr: SocketAddr, pki: &DevPki, client: &CertPair) -> Result<(), String> {
    health_with(addr, config_for(pki, Some(client)), "localhost").await
}

#[tokio::test]
async fn good_client_is_served_with_its_spiffe_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::in_memory().unwrap();
    let server = start(reloader(&pki, dir.path()), IncomingOptions::default()).await;
    let client = pki
        .issue_client(
            Some("spiffe://example.org/ns/reports/sa/exporter"),
            &["exporter.example.org"],
            "exporter",
        )
        .unwrap();

    // Through the public `connect` helper, with a forged identity header on the request.
    let channel = client::connect(
        &server.addr.to_string(),
        pki.ca_cert_pem().as_bytes(),
        client.cert_pem.as_bytes(),
        client.key_pem.expose_secret().as_bytes(),
        "localhost",
    )
    .await
    .unwrap();
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.metadata_mut().insert(
        "x-caller-identity",
        "spiffe://example.org/ns/admin/sa/root".parse().unwrap(),
    );
    let resp = HealthClient::new(channel).check(req).await.unwrap();
    assert_eq!(resp.into_inner().status(), ServingStatus::Serving);

    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![Some(CallerIdentity {
            id: "spiffe://example.org/ns/reports/sa/exporter".into(),
            source: IdentitySource::Spiffe,
        })]
    );
}

#[tokio::test]
async fn refused_clients_do_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::in_memory().unwrap();
    let server = start(reloader(&pki, dir.path()), IncomingOptions::default()).await;
    let good = pki
        .issue_client(None, &["good.example.org"], "good")
        .unwrap();

    // No client certificate.
    let err = health_with(server.addr, config_for(&pki, None), "localhost")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");

    // A certificate from an unrelated CA (the client still trusts the real server).
    let other = DevPki::in_memory().unwrap();
    let untrusted = other
        .issue_client(None, &["good.example.org"], "good")
        .unwrap();
    let err = health_with(server.addr, config_for(&pki, Some(&untrusted)), "localhost")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");

    // A certificate from the right CA but with two URI SANs (not a valid X.509-SVID).
    let two_uris = pki
        .issue_client_with_uris(
            &["spiffe://example.org/a", "spiffe://example.org/b"],
            &["good.example.org"],
            "good",
        )
        .unwrap();
    let err = health(server.addr, &pki, &two_uris).await.unwrap_err();
    // The handshake succeeds; the connection is then closed before any request is read.
    assert!(err.contains("transport error"), "{err}");

    // None of those requests got through, and the server still serves good clients.
    assert!(server.seen.lock().unwrap().is_empty());
    health(server.addr, &pki, &good).await.unwrap();
    assert_eq!(
        server.seen.lock().unwrap().clone(),
        vec![Some(CallerIdentity {
            id: "good.example.org".into(),
            source: IdentitySource::Dns
        })]
    );
}

#[tokio::test]
async fn tls12_only_client_works_and_tls13_is_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::in_memory().unwrap();
    let server = start(reloader(&pki, dir.path()), IncomingOptions::default()).await;
    let client = pki.issue_client(None, &[], "cn-only").unwrap();
    let pair = Some((
        client.cert_pem.as_bytes(),
        client.key_pem.expose_secret().as_bytes(),
    ));

    let tls12 = client_config(
        pki.ca_cert_pem().as_bytes(),
        pair,
        &[&rustls::version::TLS12],
    )
    .unwrap();
    health_with(server.addr, tls12.clone(), "localhost")
        .await
        .unwrap();
    assert_eq!(
        negotiated(server.addr, tls12).await,
        rustls::ProtocolVersion::TLSv1_2
    );
    let default = client_config(pki.ca_cert_pem().as_bytes(), pair, PROTOCOL_VERSIONS).unwrap();
    assert_eq!(
        negotiated(server.addr, default).await,
        rustls::ProtocolVersion::TLSv1_3
    );
    assert_eq!(
        server.seen.lock().unwrap().clone(),
        vec![Some(CallerIdentity {
            id: "cn-only".into(),
            source: IdentitySource::CommonName
        })]
    );
}

async fn negotiated(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> rustls::ProtocolVersion {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    conn.protocol_version().unwrap()
}

/// Sends a minimal hand-made ClientHello with `client_version` (no `supported_versions`
/// extension) and returns the first 7 bytes of the reply.
async fn raw_hello(addr: SocketAddr, client_version: [u8; 2]) -> [u8; 7] {
    let mut body = client_version.to_vec();
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // empty session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, RSA-AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    // extensions: signature_algorithms (rustls wants it before it looks at the version):
    // ecdsa_secp256r1_sha256, rsa_pkcs1_sha256.
    body.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01,
    ]);
    let mut handshake = vec![0x01, 0x00, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        (handshake.len() >> 8) as u8,
        handshake.len() as u8,
    ];
    record.extend_from_slice(&handshake);

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&record).await.unwrap();
    let mut reply = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    reply
}

/// A TLS 1.0 or 1.1 ClientHello is answered with a fatal `protocol_version` alert: nothing
/// below TLS 1.2 is offered. (The same hello claiming TLS 1.2 fails for another reason, the
/// CBC-only cipher suites, which shows that the version is what is refused.)
#[tokio::test]
async fn server_offers_nothing_below_tls12() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::in_memory().unwrap();
    let server = start(reloader(&pki, dir.path()), IncomingOptions::default()).await;

    for old in [[0x03, 0x01], [0x03, 0x02]] {
        let reply = raw_hello(server.addr, old).await;
        // Alert record, fatal (2), protocol_version (70).
        assert_eq!(reply[0], 0x15, "expected an alert record, got {reply:?}");
        assert_eq!(
            &reply[5..],
            &[2, 70],
            "expected a fatal protocol_version alert, got {reply:?}"
        );
    }
    let reply = raw_hello(server.addr, [0x03, 0x03]).await;
    assert_eq!(reply[0], 0x15, "expected an alert record, got {reply:?}");
    assert_ne!(
        reply[6], 70,
        "TLS 1.2 must not be refused for its version: {reply:?}"
    );
}

#[tokio::test]
async fn slow_handshakes_neither_block_others_nor_linger() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::in_memory().unwrap();
    let client = pki.issue_client(None, &["c.example.org"], "c").unwrap();

    // Default (10 s) timeout: a silent client is pending while a good one is served.
    let server = start(reloader(&pki, dir.path()), IncomingOptions::default()).await;
    let silent = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    health(server.addr, &pki, &client).await.unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(silent.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent client should still be waiting in its handshake"
    );

    // Short timeout: the silent client is dropped.
    let options = IncomingOptions {
        handshake_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let server = start(reloader(&pki, dir.path()), options).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server should drop a client that does not complete its handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    health(server.addr, &pki, &client).await.unwrap();
}

#[tokio::test]
async fn reload_keeps_old_config_on_bad_files_and_picks_up_a_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::load_or_create(dir.path()).unwrap();
    let files = DevPkiFiles::in_dir(dir.path());
    let tls = TlsReloader::new(files.tls_files()).unwrap();
    let server = start(tls.clone(), IncomingOptions::default()).await;
    let client = pki.issue_client(None, &["c.example.org"], "c").unwrap();
    health(server.addr, &pki, &client).await.unwrap();

    // Bad new files: reload fails with a message naming the file, the old config stays.
    let before = tls.current();
    std::fs::write(&files.server_cert, "not a certificate").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("server.crt"), "{err}");
    assert!(Arc::ptr_eq(&before, &tls.current()));
    health(server.addr, &pki, &client).await.unwrap();

    // A key that does not match the certificate is refused too.
    let rotated = pki.issue_server(&["broker.test"]).unwrap();
    std::fs::write(&files.server_cert, &rotated.cert_pem).unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("server.key"), "{err}");
    health(server.addr, &pki, &client).await.unwrap();

    // Good files: new handshakes present the new certificate (valid only for broker.test).
    rotated.write(dir.path(), "server").unwrap();
    tls.reload().unwrap();
    health_with(server.addr, config_for(&pki, Some(&client)), "broker.test")
        .await
        .unwrap();
    let err = health(server.addr, &pki, &client).await.unwrap_err();
    assert!(
        err.starts_with("connect:") && err.contains("NotValidForName"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_files_are_refused_at_start_with_a_helpful_message() {
    let dir = tempfile::tempdir().unwrap();
    DevPki::load_or_create(dir.path()).unwrap();
    let mut files = DevPkiFiles::in_dir(dir.path()).tls_files();
    files.client_ca = dir.path().join("missing-ca.crt");
    let err = TlsReloader::new(files.clone()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("missing-ca.crt") && msg.contains("client CA"),
        "{msg}"
    );

    files.client_ca = files.key.clone(); // a key where a CA certificate should be
    let msg = TlsReloader::new(files).unwrap_err().to_string();
    assert!(msg.contains("holds no certificate"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
}

// --- IdentityLayer on its own -------------------------------------------------------------

fn echo_identity() -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<tonic::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(|req: http::Request<()>| async move {
        let id = req
            .extensions()
            .get::<CallerIdentity>()
            .map(|i| format!("{}|{}", i.id, i.source))
            .unwrap_or_default();
        let mut resp = http::Response::new(tonic::body::Body::empty());
        resp.headers_mut()
            .insert("echo-identity", id.parse().unwrap());
        Ok(resp)
    })
}

fn peer(id: &str) -> PeerInfo {
    PeerInfo {
        remote_addr: "127.0.0.1:5555".parse().unwrap(),
        identity: CallerIdentity {
            id: id.into(),
            source: IdentitySource::Spiffe,
        },
        cert_serial: None,
        activity: Default::default(),
    }
}

#[tokio::test]
async fn identity_layer_takes_identity_from_the_connection_only() {
    let svc = tower::Layer::layer(
        &tableau_token_broker::grpc::IdentityLayer::new(),
        echo_identity(),
    );
    let mut req = http::Request::builder()
        .header("x-caller-identity", "spiffe://evil.example/admin")
        .header("x-forwarded-client-cert", "URI=spiffe://evil.example/admin")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(peer("spiffe://example.org/app"));
    // Even a stale identity already in the extensions is replaced by the connection's.
    req.extensions_mut().insert(CallerIdentity {
        id: "stale".into(),
        source: IdentitySource::Dns,
    });
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(
        resp.headers()["echo-identity"],
        "spiffe://example.org/app|spiffe"
    );
}

#[tokio::test]
async fn identity_layer_refuses_requests_without_a_peer() {
    let called = Arc::new(Mutex::new(false));
    let flag = called.clone();
    let inner = echo_identity().map_request(move |r: http::Request<()>| {
        *flag.lock().unwrap() = true;
        r
    });
    let svc = tower::Layer::layer(&tableau_token_broker::grpc::IdentityLayer::new(), inner);
    let req = http::Request::builder()
        .header("x-caller-identity", "spiffe://example.org/app")
        .body(())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "16"); // UNAUTHENTICATED
    assert!(!*called.lock().unwrap(), "the service must not be reached");
}
