//! The admin listener: plain HTTP/1.1 on its own port (`[admin] listen`), for probes and
//! Prometheus. It serves exactly three read-only paths and nothing else:
//!
//! - `GET /livez`: 200 when the process is up and its runtime runs a task.
//! - `GET /readyz`: 200 only when a configuration is loaded, the server certificate is within
//!   its validity period, and the server is not draining; otherwise 503 with a one-line reason.
//! - `GET /metrics`: the Prometheus exposition ([`crate::metrics`]).
//!
//! It is not behind mTLS (Kubernetes probes cannot present a client certificate), so it changes
//! no state and shows no secret. Built on hyper directly: the production build links no web
//! framework.
//!
//! Anyone who can reach the port can open connections, so none of them may keep a probe out.
//! Accepting never waits: every connection is accepted at once and served on its own task. A
//! connection has [`ADMIN_HEADER_TIMEOUT`] to send its request headers (at most
//! [`ADMIN_MAX_REQUEST_BYTES`] of them), serves one request, and is closed after
//! [`ADMIN_CONNECTION_TIMEOUT`] whatever it does. At most [`MAX_ADMIN_CONNECTIONS`] are open: at
//! the cap a new connection takes the place of the oldest one that has waited more than
//! [`ADMIN_EVICTABLE_AFTER`] for its request (a probe sends its request at once, so those are
//! idle or hostile), and is closed at once when there is none. A connection, once accepted, is
//! never closed for a newer one before it had time to send its request, so a flood of new
//! connections cannot push a probe out.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::transport::TlsReloader;

/// Most admin connections open at once; at the cap a new one replaces the oldest connection
/// that has waited more than [`ADMIN_EVICTABLE_AFTER`] for its request.
pub const MAX_ADMIN_CONNECTIONS: usize = 512;
/// How long a connection may wait for its request before a newer connection may replace it.
pub const ADMIN_EVICTABLE_AFTER: Duration = Duration::from_secs(1);
/// How long a client may take to send its request headers.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an admin connection may stay open at all, slow reader of `/metrics` included.
pub const ADMIN_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of request head read from an admin connection (hyper's read buffer).
pub const ADMIN_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Most request headers read from an admin connection.
pub const ADMIN_MAX_HEADERS: usize = 32;
/// How long `/livez` waits for the runtime to run a trivial task.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` decides on. Shared by the server (which sets it) and the admin listener.
#[derive(Debug)]
pub struct Readiness {
    config_loaded: AtomicBool,
    draining: AtomicBool,
    tls: Option<TlsReloader>,
    clock: SharedClock,
    /// The audit trail's health, once the broker exists ([`Self::set_audit_health`]).
    audit: std::sync::OnceLock<AuditHealthCheck>,
}

/// Reads the audit trail's health for `/readyz`.
pub struct AuditHealthCheck(pub Box<dyn Fn() -> crate::audit::AuditHealth + Send + Sync>);

impl std::fmt::Debug for AuditHealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditHealthCheck")
    }
}

impl Readiness {
    /// Not ready yet: no configuration loaded. `tls` is where the server certificate in force is
    /// read from; the clock decides whether it is within its validity.
    pub fn new(tls: Option<TlsReloader>, clock: SharedClock) -> Arc<Readiness> {
        Arc::new(Readiness {
            config_loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            tls,
            clock,
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Makes `/readyz` report the audit trail: a trail that fails or stalls refuses every audited
    /// call (fail-closed), so the replica should leave the Service until it recovers. Set once.
    pub fn set_audit_health(&self, check: AuditHealthCheck) {
        let _ = self.audit.set(check);
    }

    /// A configuration is loaded and serving.
    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::SeqCst);
    }

    /// The server is shutting down: new traffic should go elsewhere.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True once [`Self::set_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Ok` when ready, else a one-line reason.
    pub fn check(&self) -> Result<(), String> {
        if !self.config_loaded.load(Ordering::SeqCst) {
            return Err("not ready: no configuration loaded yet".to_owned());
        }
        if self.is_draining() {
            return Err("not ready: draining (shutting down after SIGTERM)".to_owned());
        }
        if let Some(check) = self.audit.get() {
            match (check.0)() {
                crate::audit::AuditHealth::Ok => {}
                crate::audit::AuditHealth::Failing => {
                    return Err("not ready: the audit trail's last write failed (disk full, I/O error or closed pipe); fix the trail ([audit] path) — audited calls are refused until a write succeeds".to_owned());
                }
                crate::audit::AuditHealth::Stalled(d) => {
                    return Err(format!(
                        "not ready: an audit trail write has not returned for {}s (a hung file system or a reader that stopped reading); audited calls wait until it does",
                        d.as_secs()
                    ));
                }
            }
        }
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let Some(v) = tls.validity() else {
            return Err(
                "not ready: the server certificate's validity could not be read".to_owned(),
            );
        };
        let now = self.clock.now();
        let now_s = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let at = |s: i64| {
            let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or(0));
            humantime::format_rfc3339_seconds(t).to_string()
        };
        if now_s < v.server_not_before {
            return Err(format!(
                "not ready: the server certificate is not valid before {}",
                at(v.server_not_before)
            ));
        }
        if now_s >= v.server_not_after {
            return Err(format!(
                "not ready: the server certificate expired at {}; rotate it and send SIGHUP",
                at(v.server_not_after)
            ));
        }
        Ok(())
    }
}

/// What the admin listener serves from.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// `/readyz`.
    pub readiness: Arc<Readiness>,
    /// `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// A running admin listener; [`AdminServer::stop`] ends it.
pub type AdminServer = crate::transport::listen::Background;

/// Binds `addr` (dual-stack on `[::]`, like the gRPC listener) and serves the admin endpoints
/// until stopped.
pub async fn serve(addr: SocketAddr, state: AdminState) -> std::io::Result<AdminServer> {
    let server = AdminServer::spawn(addr, |listener, stopped| {
        accept_loop(listener, state, stopped)
    })?;
    tracing::info!(addr = %server.local_addr(), "admin listening (plain HTTP: /livez /readyz /metrics)");
    Ok(server)
}

/// Open admin connections: all of them counted, the ones still waiting for their request
/// registered oldest first, so the oldest can make room for a new one.
#[derive(Default)]
struct AdminConns {
    open: AtomicUsize,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    tasks: BTreeMap<u64, (AbortHandle, tokio::time::Instant)>,
}

impl AdminConns {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the oldest connection still waiting for its request if it has waited more than
    /// [`ADMIN_EVICTABLE_AFTER`]; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut waiting = self.waiting();
        let old_enough = waiting
            .tasks
            .first_key_value()
            .is_some_and(|(_, (_, since))| since.elapsed() >= ADMIN_EVICTABLE_AFTER);
        if !old_enough {
            return false;
        }
        let oldest = waiting.tasks.pop_first();
        // The task's guard takes this lock when it drops: never abort while holding it.
        drop(waiting);
        match oldest {
            Some((_, (task, _))) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

/// One open admin connection, counted until its task ends (or is aborted).
struct OpenConn(Arc<AdminConns>, u64);

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.waiting().tasks.remove(&self.1);
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(listener: TcpListener, state: AdminState, mut stopped: oneshot::Receiver<()>) {
    let conns = Arc::new(AdminConns::default());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if conns.open.load(Ordering::Relaxed) >= MAX_ADMIN_CONNECTIONS && !conns.evict_oldest() {
            tracing::debug!(peer = %peer, "admin: connection refused, the open connections are all new or being answered");
            continue;
        }
        conns.open.fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        let mut waiting = conns.waiting();
        let id = waiting.next;
        waiting.next += 1;
        let guard = OpenConn(Arc::clone(&conns), id);
        // Registered before the task can run: it unregisters itself under the same lock.
        let task = tokio::spawn(serve_admin_connection(tcp, peer, state, guard));
        waiting
            .tasks
            .insert(id, (task.abort_handle(), tokio::time::Instant::now()));
        drop(waiting);
    }
}

/// Serves one request on `tcp` within the admin limits.
async fn serve_admin_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: AdminState,
    guard: OpenConn,
) {
    let guard = Arc::new(guard);
    let in_service = Arc::clone(&guard);
    let svc = service_fn(move |req| {
        // The request is in: no longer one that may make room for a newer connection.
        in_service.0.waiting().tasks.remove(&in_service.1);
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, &req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .max_buf_size(ADMIN_MAX_REQUEST_BYTES)
        .max_headers(ADMIN_MAX_HEADERS)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), svc);
    match tokio::time::timeout(ADMIN_CONNECTION_TIMEOUT, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "admin connection ended with an error");
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "admin connection closed: open longer than its limit");
        }
    }
    drop(guard);
}

fn text(status: http::StatusCode, body: String) -> http::Response<String> {
    let mut res = http::Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    res
}

async fn handle<B>(state: &AdminState, req: &http::Request<B>) -> http::Response<String> {
    use http::StatusCode;
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin listener is read-only: use GET\n".to_owned(),
        );
        res.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return res;
    }
    match req.uri().path() {
        "/livez" => match tokio::time::timeout(LIVENESS_TIMEOUT, tokio::spawn(async {})).await {
            Ok(Ok(())) => text(StatusCode::OK, "ok\n".to_owned()),
            _ => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not live: the runtime did not run a task in time\n".to_owned(),
            ),
        },
        "/readyz" => match state.readiness.check() {
            Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
        "/metrics" => {
            let mut res = text(StatusCode::OK, state.metrics.encode());
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            res
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the admin listener serves /livez, /readyz and /metrics\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::system;

    #[test]
    fn not_ready_before_a_configuration_nor_while_draining() {
        let r = Readiness::new(None, system());
        assert!(r.check().unwrap_err().contains("no configuration loaded"));
        r.set_config_loaded();
        assert_eq!(r.check(), Ok(()));
        r.set_draining();
        assert!(r.check().unwrap_err().contains("draining"));
    }
}
