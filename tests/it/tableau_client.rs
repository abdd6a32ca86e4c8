//! The Tableau client against real sockets that misbehave at the transport level: nothing
//! listening, a server that accepts and never answers, and TLS with a private CA. Responses from a
//! real HTTP peer are covered against the Tableau double elsewhere.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tableau_token_broker::tableau::{
    ClientOptions, Format, SignInTarget, TableauClient, TableauError,
};
use tokio::net::TcpListener;

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.SECRETJWTPAYLOAD.signature";

fn jwt() -> SecretString {
    SecretString::from(JWT.to_owned())
}

fn target(server_url: String) -> SignInTarget {
    SignInTarget {
        server_url,
        api_version: "3.17".to_owned(),
        content_url: "mysite".to_owned(),
        format: Format::Xml,
        uat: false,
    }
}

fn client(request_timeout: Duration) -> TableauClient {
    TableauClient::new(ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout,
        ..ClientOptions::default()
    })
    .unwrap()
}

/// Nothing in the error a caller sees may carry the JWT, the token or the server URL.
fn assert_clean(err: &TableauError, server_url: &str) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("SECRETJWTPAYLOAD"), "{text}");
        assert!(!text.contains(server_url), "{text}");
    }
}

/// Accepts connections and holds them open without ever writing a byte.
async fn silent_listener() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn closed_port_is_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = format!("http://{addr}");
    let client = client(Duration::from_secs(5));

    let err = client
        .sign_in(&target(server.clone()), &jwt())
        .await
        .unwrap_err();
    assert!(matches!(err, TableauError::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_clean(&err, &server);

    let err = client
        .sign_out(&server, "3.17", &SecretString::from("tok".to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, TableauError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn silent_server_times_out_within_request_timeout() {
    let (server, task) = silent_listener().await;
    let timeout = Duration::from_millis(400);
    let client = client(timeout);

    for format in [Format::Xml, Format::Json] {
        let started = Instant::now();
        let t = SignInTarget {
            format,
            ..target(format!("{server}/"))
        };
        let err = client.sign_in(&t, &jwt()).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err, TableauError::Timeout, "{format:?}");
        assert!(err.is_retryable());
        assert_clean(&err, &server);
        assert!(elapsed >= timeout, "gave up early: {elapsed:?}");
        assert!(
            elapsed < timeout + Duration::from_secs(2),
            "too slow: {elapsed:?}"
        );
    }

    let err = client
        .sign_out(&server, "3.17", &SecretString::from("tok".to_owned()))
        .await
        .unwrap_err();
    assert_eq!(err, TableauError::Timeout);
    task.abort();
}

#[tokio::test]
async fn bad_server_url_is_config_error_before_any_io() {
    let client = client(Duration::from_secs(1));
    let err = client
        .sign_in(&target("not a url".to_owned()), &jwt())
        .await
        .unwrap_err();
    assert!(matches!(err, TableauError::Config { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

/// A TLS server on 127.0.0.1 whose certificate comes from a private CA. It completes handshakes
/// (reporting the negotiated ALPN protocol) and then never answers.
struct PrivateTls {
    url: String,
    ca_pem: String,
    alpn: tokio::sync::mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn private_tls_server() -> PrivateTls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test private CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, alpn) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(stream).await {
                let _ = tx.send(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
                held.push(tls);
            }
        }
    });
    PrivateTls {
        url: format!("https://{addr}"),
        ca_pem: ca_cert.pem(),
        alpn,
        task,
    }
}

#[tokio::test]
async fn private_ca_is_trusted_only_when_configured() {
    let mut server = private_tls_server().await;
    let timeout = Duration::from_millis(400);

    // Without the CA bundle the handshake fails: a connect error naming the certificate problem.
    let err = client(timeout)
        .sign_in(&target(server.url.clone()), &jwt())
        .await
        .unwrap_err();
    match &err {
        TableauError::Connect { reason } => {
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert_clean(&err, &server.url);

    // With it, the handshake succeeds (over HTTP/2 by ALPN) and the silent server times out.
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &server.ca_pem).unwrap();
    let trusting = TableauClient::new(ClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: timeout,
        ca_bundle: Some(ca_path),
        ..ClientOptions::default()
    })
    .unwrap();
    let err = trusting
        .sign_in(&target(server.url.clone()), &jwt())
        .await
        .unwrap_err();
    assert_eq!(err, TableauError::Timeout);
    let alpn = server.alpn.recv().await.unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    server.task.abort();
}
