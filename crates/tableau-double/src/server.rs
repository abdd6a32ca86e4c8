//! HTTP(S) serving: routes, handlers, fault injection, the accept loop and TLS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method as Verb, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::FakeTableauError;
use super::config::{
    ENDPOINT_REST, ENDPOINT_SERVER_INFO, ENDPOINT_SIGNIN, ENDPOINT_SIGNOUT, Faults, TlsConfig,
    check_endpoint,
};
use super::fixtures::{self, Answer, Node};
use super::jwt;
use super::state::Shared;

/// The header that carries the credentials token.
const AUTH_HEADER: &str = "x-tableau-auth";
/// The version `serverInfo` reports.
const REST_API_VERSION: &str = "3.24";
const PRODUCT_VERSION: &str = "2024.2.0";

/// Response format, chosen from the request's `Accept` and `Content-Type`.
use tableau_common::format::Format;

fn format_of(headers: &HeaderMap) -> Format {
    let has = |name: header::HeaderName, what: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains(what))
    };
    if has(header::ACCEPT, "json") {
        Format::Json
    } else if has(header::ACCEPT, "xml") {
        Format::Xml
    } else if has(header::CONTENT_TYPE, "json") {
        Format::Json
    } else {
        Format::Xml
    }
}

fn doc(status: StatusCode, nodes: &[Node], fmt: Format) -> Response {
    let (body, ctype) = match fmt {
        Format::Xml => (fixtures::to_xml(nodes), "application/xml;charset=utf-8"),
        Format::Json => (fixtures::to_json(nodes), "application/json;charset=utf-8"),
    };
    (status, [(header::CONTENT_TYPE, ctype)], body).into_response()
}

/// A Tableau error body: `<error code=...><summary/><detail/></error>`.
fn ts_error(status: StatusCode, code: &str, summary: &str, detail: &str, fmt: Format) -> Response {
    match fmt {
        Format::Xml => doc(
            status,
            &[Node::new("error")
                .attr("code", code)
                .child(Node::new("summary").text(summary))
                .child(Node::new("detail").text(detail))],
            fmt,
        ),
        Format::Json => {
            let body = serde_json::json!({
                "error": {"summary": summary, "detail": detail, "code": code}
            });
            (
                status,
                [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

fn no_credentials(fmt: Format) -> Response {
    ts_error(
        StatusCode::UNAUTHORIZED,
        "401000",
        "Unauthorized Access",
        "Invalid authentication credentials were provided: the credentials token is missing, unknown or its session has ended. Sign in again.",
        fmt,
    )
}

/// Marks a response whose connection must be closed without an answer.
#[derive(Debug, Clone, Copy)]
struct CloseConnection;

/// What the hyper service returns to make hyper drop the connection.
#[derive(Debug, thiserror::Error)]
#[error("fake-tableau closed the connection on purpose (close_share fault)")]
struct Closed;

fn close_connection() -> Response {
    let mut resp = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    resp.extensions_mut().insert(CloseConnection);
    resp
}

/// The rolls for one request, made up front so no random generator is held across an await.
struct Rolls {
    delay: Option<Duration>,
    close: bool,
    error: Option<u16>,
    throttle: bool,
    truncate: bool,
    malformed: bool,
}

fn roll(f: &Faults) -> Rolls {
    let mut rng = rand::rng();
    let mut hit = |share: f64| share > 0.0 && rng.random::<f64>() < share;
    let close = hit(f.close_share);
    let error = hit(f.error_share);
    let throttle = hit(f.throttle_share);
    let truncate = hit(f.truncate_share);
    let malformed = hit(f.malformed_share);
    let status = if f.error_statuses.is_empty() {
        if rng.random::<bool>() { 500 } else { 503 }
    } else {
        f.error_statuses[rng.random_range(0..f.error_statuses.len())]
    };
    Rolls {
        delay: f.latency.as_ref().map(|l| l.sample(rng.random::<f64>())),
        close,
        error: error.then_some(status),
        throttle,
        truncate,
        malformed,
    }
}

/// Runs `answer` behind the faults configured for the first of `keys` that has any.
async fn faulted<F, Fut>(s: &Shared, keys: &[&str], fmt: Format, answer: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    let Some(faults) = s.faults_for(keys) else {
        return answer().await;
    };
    let r = roll(&faults);
    if let Some(d) = r.delay {
        s.count_fault("latency");
        tokio::time::sleep(d).await;
    }
    if r.close {
        s.count_fault("close");
        return close_connection();
    }
    if let Some(status) = r.error {
        s.count_fault("error");
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let summary = status.canonical_reason().unwrap_or("Server Error");
        return ts_error(
            status,
            &format!("{}000", status.as_u16()),
            summary,
            "fake-tableau injected this error (error_share fault)",
            fmt,
        );
    }
    if r.throttle {
        s.count_fault("throttle");
        let secs = faults.retry_after.as_secs().max(1);
        let mut resp = ts_error(
            StatusCode::TOO_MANY_REQUESTS,
            "429000",
            "Too Many Requests",
            &format!("Too many requests; retry after {secs} seconds."),
            fmt,
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let resp = answer().await;
    if !(r.truncate || r.malformed || faults.slow_body.is_some()) {
        return resp;
    }
    mangle_body(s, resp, &r, &faults).await
}

async fn mangle_body(s: &Shared, resp: Response, r: &Rolls, faults: &Faults) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(mut bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return close_connection();
    };
    if r.malformed {
        s.count_fault("malformed");
        let cut = bytes.len() / 2;
        let mut broken = bytes.slice(..cut).to_vec();
        broken.extend_from_slice(b"<<\x00 malformed by fake-tableau");
        bytes = Bytes::from(broken);
        if parts.status == StatusCode::NO_CONTENT {
            parts.status = StatusCode::OK;
        }
    }
    if r.truncate && bytes.is_empty() {
        s.count_fault("close");
        return close_connection();
    }
    let declared = bytes.len();
    let payload = if r.truncate {
        s.count_fault("truncate");
        bytes.slice(..declared / 2)
    } else {
        bytes
    };
    let (chunk, delay) = match &faults.slow_body {
        Some(slow) => {
            s.count_fault("slow_body");
            (slow.chunk_bytes.max(1), slow.delay)
        }
        None => (payload.len().max(1), Duration::ZERO),
    };
    let chunks: Vec<Bytes> = payload.chunks(chunk).map(Bytes::copy_from_slice).collect();
    let truncate = r.truncate;
    let items = chunks
        .into_iter()
        .map(Ok)
        .chain(truncate.then(|| {
            Err(std::io::Error::other(
                "fake-tableau cut the body short on purpose (truncate_share fault)",
            ))
        }))
        .enumerate();
    let stream = futures::stream::iter(items).then(move |(i, item)| async move {
        if item.is_err() {
            // Let hyper flush the status line and the first half before the connection drops,
            // so clients see a response whose body ends early rather than no response.
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        item
    });
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// What a sign-in request carries.
struct SigninRequest {
    jwt: Option<String>,
    content_url: String,
    /// `"isUat": true` (JSON) or `isUat="true"` (XML): a unified access token.
    uat: bool,
}

fn parse_signin(body: &[u8]) -> Result<SigninRequest, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| format!("the JSON body does not parse: {e}"))?;
        let creds = v
            .get("credentials")
            .ok_or("the JSON body has no \"credentials\" object")?;
        return Ok(SigninRequest {
            jwt: creds.get("jwt").and_then(|j| j.as_str()).map(str::to_owned),
            content_url: creds
                .pointer("/site/contentUrl")
                .and_then(|c| c.as_str())
                .unwrap_or("")
                .to_owned(),
            uat: creds.get("isUat").and_then(|u| u.as_bool()) == Some(true),
        });
    }
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut seen_root = false;
    let mut req = SigninRequest {
        jwt: None,
        content_url: String::new(),
        uat: false,
    };
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                let name = e.local_name();
                let wanted: &[u8] = match name.as_ref() {
                    b"tsRequest" => {
                        seen_root = true;
                        b""
                    }
                    b"credentials" => {
                        for a in e.attributes().flatten() {
                            if a.key.local_name().as_ref() == b"isUat" {
                                req.uat = a.value.as_ref() == b"true";
                            }
                        }
                        b"jwt"
                    }
                    b"site" => b"contentUrl",
                    _ => b"",
                };
                if wanted.is_empty() {
                    buf.clear();
                    continue;
                }
                for a in e.attributes().flatten() {
                    if a.key.local_name().as_ref() == wanted {
                        let value = a
                            .unescape_value()
                            .map_err(|e| format!("bad attribute value in the XML body: {e}"))?
                            .into_owned();
                        if wanted == b"jwt" {
                            req.jwt = Some(value);
                        } else {
                            req.content_url = value;
                        }
                    }
                }
            }
            Ok(quick_xml::events::Event::Eof) => break,
            Err(e) => return Err(format!("the XML body does not parse: {e}")),
            Ok(_) => {}
        }
        buf.clear();
    }
    if !seen_root {
        return Err("the body is neither a <tsRequest> document nor JSON".to_owned());
    }
    Ok(req)
}

#[tracing::instrument(skip_all, fields(endpoint = "signin"))]
async fn signin(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    s.count_request("Sign In");
    let fmt = format_of(&headers);
    let echo_jwt = s
        .faults_for(&[ENDPOINT_SIGNIN])
        .is_some_and(|f| f.echo_jwt_share > 0.0 && rand::rng().random::<f64>() < f.echo_jwt_share);
    faulted(&s, &[ENDPOINT_SIGNIN], fmt, || async {
        do_signin(&s, &body, fmt, echo_jwt).await
    })
    .await
}

/// `GET /_fake/session/claims` (double only): the claims of the JWT the session of the
/// `X-Tableau-Auth` token was signed in with, so tests can check what the broker sent.
async fn admin_session_claims(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match token_of(&headers).and_then(|t| s.session(t)) {
        Some(session) => axum::Json(serde_json::Value::Object(session.claims)).into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn do_signin(s: &Shared, body: &[u8], fmt: Format, echo_jwt: bool) -> Response {
    let fail = |key: &str| {
        s.count(|st| {
            st.signins += 1;
            *st.signins_failed.entry(key.to_owned()).or_default() += 1;
        });
    };
    let req = match parse_signin(body) {
        Ok(r) => r,
        Err(why) => {
            fail("400000");
            return ts_error(StatusCode::BAD_REQUEST, "400000", "Bad Request", &why, fmt);
        }
    };
    let Some(jwt) = req.jwt else {
        fail("400000");
        return ts_error(
            StatusCode::BAD_REQUEST,
            "400000",
            "Bad Request",
            "this double only accepts connected-app sign-in: <credentials jwt=\"...\">",
            fmt,
        );
    };
    if echo_jwt {
        fail("401001");
        s.count_fault("echo_jwt");
        return ts_error(
            StatusCode::UNAUTHORIZED,
            "401001",
            &format!("Signin Error for {jwt}"),
            &format!(
                "Error signing in with the token {jwt}; echoed by fake-tableau (echo_jwt_share fault)"
            ),
            fmt,
        );
    }
    let Some(site_index) = s
        .sites
        .iter()
        .position(|x| x.content_url == req.content_url)
    else {
        fail("401001");
        return ts_error(
            StatusCode::UNAUTHORIZED,
            "401001",
            "Signin Error",
            "Error signing in to Tableau Server",
            fmt,
        );
    };
    let site = &s.sites[site_index];
    let now = s.clock.now();
    let checked = if req.uat || !jwt::is_direct_trust_jwt(&jwt) {
        super::issuers::check(
            &jwt,
            req.uat,
            site,
            &s.eas_apps,
            &s.uat_configs,
            &s.issuer_keys,
            now,
            s.clock_skew,
            |c, j| s.jti_seen(c, j),
        )
        .await
    } else {
        let apps = s.apps();
        jwt::check(&jwt, site, &apps, now, s.clock_skew, |c, j| {
            s.jti_seen(c, j)
        })
    };
    match checked {
        Err(code) => {
            let n = code.number();
            fail(&n.to_string());
            tracing::debug!(sub_code = n, site = %site.content_url, "fake-tableau refused a sign-in");
            ts_error(
                StatusCode::UNAUTHORIZED,
                "401001",
                "Signin Error",
                &format!("Error signing in to Tableau Server ({n})"),
                fmt,
            )
        }
        Ok(ok) => {
            s.remember_jti(&ok.client_id, &ok.jti, ok.jti_until);
            let token = s.open_session(site_index, ok.scopes, ok.claims);
            s.count(|st| {
                st.signins += 1;
                st.signins_ok += 1;
            });
            doc(
                StatusCode::OK,
                &[Node::new("credentials")
                    .attr("token", token)
                    .child(
                        Node::new("site")
                            .attr("id", site.luid.clone())
                            .attr("contentUrl", site.content_url.clone()),
                    )
                    .child(Node::new("user").attr("id", ok.user_luid))],
                fmt,
            )
        }
    }
}

fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[tracing::instrument(skip_all, fields(endpoint = "signout"))]
async fn signout(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.count_request("Sign Out");
    let fmt = format_of(&headers);
    faulted(&s, &[ENDPOINT_SIGNOUT], fmt, || async {
        if token_of(&headers).is_some_and(|t| s.close_session(t)) {
            s.count(|st| st.signouts += 1);
            StatusCode::NO_CONTENT.into_response()
        } else {
            s.count(|st| st.unauthenticated += 1);
            no_credentials(fmt)
        }
    })
    .await
}

async fn server_info(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    s.count_request("Server Info");
    let fmt = format_of(&headers);
    faulted(&s, &[ENDPOINT_SERVER_INFO], fmt, || async {
        doc(
            StatusCode::OK,
            &[Node::new("serverInfo")
                .child(
                    Node::new("productVersion")
                        .attr("build", "20242.24.0711.1636")
                        .text(PRODUCT_VERSION),
                )
                .child(Node::new("restApiVersion").text(REST_API_VERSION))],
            fmt,
        )
    })
    .await
}

/// `/api/{version}/rest...` to `/rest...`.
fn strip_api(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/api/")?;
    let slash = rest.find('/')?;
    Some(&rest[slash..])
}

#[tracing::instrument(skip_all, fields(verb = %verb, path = %uri.path()))]
async fn rest(State(s): State<Arc<Shared>>, verb: Verb, uri: Uri, headers: HeaderMap) -> Response {
    let fmt = format_of(&headers);
    let Some(path) = strip_api(uri.path()) else {
        s.count_request("unrouted");
        return ts_error(
            StatusCode::NOT_FOUND,
            "404000",
            "Resource Not Found",
            "fake-tableau serves /api/{version}/... and /_fake/...",
            fmt,
        );
    };
    let method = s.catalog.route(verb.as_str(), path);
    let name = method.map_or("unrouted", |m| m.name);
    s.count_request(name);
    faulted(&s, &[name, ENDPOINT_REST], fmt, || async {
        let Some(session) = token_of(&headers).and_then(|t| s.session(t)) else {
            s.count(|st| st.unauthenticated += 1);
            return no_credentials(fmt);
        };
        let Some(method) = method else {
            return ts_error(
                StatusCode::NOT_FOUND,
                "404000",
                "Resource Not Found",
                &format!("no REST method matches {verb} {path}"),
                fmt,
            );
        };
        if !s.catalog.enables(&session.scopes, method) {
            s.count(|st| st.denied_by_scope += 1);
            return ts_error(
                StatusCode::UNAUTHORIZED,
                "401002",
                "Unauthorized Access",
                &format!(
                    "The scopes of this session do not allow {} (it needs {}).",
                    method.name, method.scope
                ),
                fmt,
            );
        }
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        let site = &s.sites[session.site_index];
        if segs.first() == Some(&"sites") && segs.len() >= 2 && segs[1] != site.luid {
            return ts_error(
                StatusCode::FORBIDDEN,
                "403000",
                "Forbidden",
                &format!(
                    "site {} in the URI is not the site of this session ({})",
                    segs[1], site.luid
                ),
                fmt,
            );
        }
        let content = &s.contents[session.site_index];
        match fixtures::answer(method, &segs, uri.query(), content) {
            Answer::Doc(status, nodes) => doc(
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                &nodes,
                fmt,
            ),
            Answer::Empty => StatusCode::NO_CONTENT.into_response(),
            Answer::File(ctype, bytes) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, ctype)], bytes).into_response()
            }
            Answer::NotFound(detail) => ts_error(
                StatusCode::NOT_FOUND,
                "404000",
                "Resource Not Found",
                &detail,
                fmt,
            ),
        }
    })
    .await
}

async fn admin_stats(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.stats()).into_response()
}

async fn admin_faults(State(s): State<Arc<Shared>>) -> Response {
    axum::Json(s.all_faults()).into_response()
}

async fn admin_clear_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    s.clear_faults();
    StatusCode::NO_CONTENT
}

async fn admin_put_faults(
    State(s): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Faults>(&body)
        .map_err(|e| format!("faults for {endpoint:?}: the JSON body does not parse: {e}"))
        .and_then(|f| {
            check_endpoint(&endpoint)
                .and_then(|()| f.validate(&endpoint))
                .map(|()| f)
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(f) => {
            s.set_faults(&endpoint, Some(f));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(why) => (StatusCode::BAD_REQUEST, why).into_response(),
    }
}

async fn admin_delete_faults(
    State(s): State<Arc<Shared>>,
    Path(endpoint): Path<String>,
) -> StatusCode {
    s.set_faults(&endpoint, None);
    StatusCode::NO_CONTENT
}

async fn admin_end_sessions(State(s): State<Arc<Shared>>) -> StatusCode {
    s.end_all_sessions();
    StatusCode::NO_CONTENT
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_fake/stats", get(admin_stats))
        .route(
            "/_fake/faults",
            get(admin_faults).delete(admin_clear_faults),
        )
        .route(
            "/_fake/faults/{endpoint}",
            put(admin_put_faults).delete(admin_delete_faults),
        )
        .route("/_fake/sessions", delete(admin_end_sessions))
        .route("/_fake/session/claims", get(admin_session_claims))
        .route("/api/{version}/auth/signin", post(signin))
        .route("/api/{version}/auth/signout", post(signout))
        .route("/api/{version}/serverInfo", get(server_info))
        .fallback(rest)
        .with_state(shared)
}

/// A TLS acceptor and, for a self-signed certificate, its PEM.
pub(crate) fn tls_acceptor(
    tls: &TlsConfig,
) -> Result<(TlsAcceptor, Option<String>), FakeTableauError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let err = |reason: String| FakeTableauError::Tls { reason };
    let (certs, key, pem) = if tls.self_signed {
        let ck = rcgen::generate_simple_self_signed(tls.subject_alt_names.clone())
            .map_err(|e| err(format!("cannot make a self-signed certificate: {e}")))?;
        let pem = ck.cert.pem();
        if let Some(path) = &tls.write_cert {
            std::fs::write(path, &pem).map_err(|e| {
                err(format!(
                    "cannot write the self-signed certificate to {}: {e}",
                    path.display()
                ))
            })?;
        }
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        (vec![ck.cert.der().clone()], key, Some(pem))
    } else {
        let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
            return Err(err(
                "tls: set either self_signed = true, or both cert and key".to_owned(),
            ));
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                err(format!(
                    "cannot read certificates from {}: {e}",
                    cert.display()
                ))
            })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            err(format!(
                "cannot read a private key from {}: {e}",
                key.display()
            ))
        })?;
        (certs, key, None)
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(format!("TLS protocol setup failed: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        err(format!(
            "the certificate and key do not make a TLS identity: {e}"
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), pem))
}

/// Accepts connections until `stop` fires (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "fake-tableau could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve_conn(TokioIo::new(stream), app).await,
                            Err(e) => tracing::debug!(error = %e, "fake-tableau TLS handshake failed"),
                        },
                        None => serve_conn(TokioIo::new(stream), app).await,
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

async fn serve_conn<I>(io: I, app: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let resp = tower::ServiceExt::oneshot(app, req)
                .await
                .unwrap_or_else(|never| match never {});
            if resp.extensions().get::<CloseConnection>().is_some() {
                Err(Closed)
            } else {
                Ok(resp)
            }
        }
    });
    if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(error = %e, "fake-tableau connection ended with an error");
    }
}
