//! A faithful stand-in for the parts of Tableau's REST API that connected apps touch, so the
//! broker and its users can test without a real Tableau.
//!
//! It checks connected-app JWTs at sign-in the way Tableau documents (and answers with the same
//! 401001 sub-codes), hands out 32-hex credentials tokens, ends sessions after a lifetime or at
//! sign-out, and enforces JWT scopes on every REST method of the built-in
//! [catalog](tableau_common::catalog) (401002 when the scopes do not enable a method, 401000 when the token
//! is missing, unknown or ended). Allowed calls get small fixture content in the XML shapes
//! tableauserverclient parses, or Tableau's JSON when asked for.
//!
//! Three ways to use it:
//! - in process: [`FakeTableau::start`] binds `127.0.0.1:0` (or the configured address) and the
//!   [`FakeTableauHandle`] reports its address, counters ([`FakeStats`]) and takes faults; its
//!   [`FakeTableauHandle::set_app_secrets`] adds or deletes a connected app's secrets while it
//!   runs, as a Tableau admin does during secret rotation;
//! - as a command: `tableau-double --config FILE [--listen ADDR]` ([`run_from_file`]), which
//!   prints `fake-tableau listening on http://ADDR` first (the broker's development build offers
//!   the same as `tableau-token-broker fake-tableau`);
//! - behind the broker's demo.
//!
//! A test in another crate (see this crate's README for the whole example):
//!
//! ```no_run
//! # async fn example() -> Result<(), tableau_double::FakeTableauError> {
//! let double = tableau_double::FakeTableau::start(tableau_double::FakeTableauConfig::from_toml_str(
//!     r#"
//!     [[sites]]
//!     name = "Finance"
//!     content_url = "finance"
//!     luid = "0c5e1d5a-0000-4000-8000-000000000001"
//!     [[sites.users]]
//!     name = "svc-renderer"
//!     luid = "1d6f2e6b-0000-4000-8000-000000000001"
//!     [[connected_apps]]
//!     client_id = "my-client-id"
//!     [[connected_apps.secrets]]
//!     secret_id = "my-secret-id"
//!     value = "a-secret-value-of-at-least-32-bytes"
//!     "#,
//! )?)
//! .await?;
//! println!("Tableau at {}", double.base_url());
//! assert_eq!(double.stats().signins, 0);
//! # Ok(()) }
//! ```
//!
//! Configuration: [`FakeTableauConfig`], documented field by field in
//! `examples/fake-tableau.toml`.
//!
//! # Admin endpoint
//!
//! Not part of Tableau; for tests, benchmarks and people poking at it with curl:
//! - `GET /_fake/stats`: the [`FakeStats`] counters as JSON;
//! - `GET /_fake/faults`: current faults by endpoint, as JSON;
//! - `PUT /_fake/faults/{endpoint}` with a JSON [`Faults`] body (e.g.
//!   `{"error_share": 0.2, "latency": {"fixed": "150ms"}}`): replaces that endpoint's faults
//!   (204; 400 with a reason for an unknown endpoint or a bad value);
//! - `DELETE /_fake/faults/{endpoint}`, `DELETE /_fake/faults`: removes one or all (204);
//! - `DELETE /_fake/sessions`: ends every session, as a restart of Tableau would (204).
//!
//! Fault endpoints are `signin`, `signout`, `serverinfo`, `rest` (every REST method), or the
//! name of one REST method (e.g. `Query Projects`), which takes precedence over `rest`.
//!
//! # Choices where Tableau's documentation is silent
//!
//! - A `jti` seen before (same client ID, not yet expired) is refused with sub-code 10084; a
//!   missing `jti`, a claim `iss` that differs from the header's, or an algorithm other than
//!   HS256 and `none` are 10084 too; `none` is 10087. An unknown client ID is 10085.
//! - `iat` or `nbf` further in the future than the clock skew, like an `exp` in the past or more
//!   than 10 minutes after issue (`iat`, or now when absent), give sub-code 16.
//! - A site LUID in the URI other than the session's site gives 403 with code 403000.
//! - An unknown site content URL gives 401001 with no sub-code.

mod config;
mod fixtures;
mod issuers;
mod jwt;
mod server;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    AppSecret, ConnectedApp, ENDPOINT_REST, ENDPOINT_SERVER_INFO, ENDPOINT_SIGNIN,
    ENDPOINT_SIGNOUT, EasApp, FakeTableauConfig, Faults, Latency, Site, SiteUser, SlowBody,
    TlsConfig, UatConfig, check_endpoint,
};
pub use state::FakeStats;

use tableau_common::clock::{self, SharedClock};

/// Why the double could not load its configuration or start.
#[derive(Debug, thiserror::Error)]
pub enum FakeTableauError {
    /// The configuration file could not be read.
    #[error(
        "cannot read the fake-tableau configuration {path}: {source}; check the path passed to --config"
    )]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is not valid TOML for this format.
    #[error(
        "the fake-tableau configuration {origin} does not parse: {source}; see examples/fake-tableau.toml"
    )]
    ParseConfig {
        /// The file, or `<string>`.
        origin: String,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// The configuration parses but is not usable.
    #[error("invalid fake-tableau configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The listening address could not be bound.
    #[error("fake-tableau cannot listen on {addr}: {source}; pick another address or port 0")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded or made.
    #[error("fake-tableau TLS setup failed: {reason}")]
    Tls {
        /// What failed.
        reason: String,
    },
    /// Waiting for a shutdown signal failed.
    #[error("fake-tableau cannot wait for Ctrl-C or SIGTERM: {source}")]
    Signal {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Starts the double. A unit type: the running server is the [`FakeTableauHandle`].
#[derive(Debug)]
pub struct FakeTableau;

impl FakeTableau {
    /// Starts the double on the configured address (or `127.0.0.1:0`) with the system clock.
    pub async fn start(config: FakeTableauConfig) -> Result<FakeTableauHandle, FakeTableauError> {
        Self::start_with_clock(config, clock::system()).await
    }

    /// Starts the double with an injected clock, which decides JWT time checks and session
    /// expiry, so tests can move time by hand.
    pub async fn start_with_clock(
        config: FakeTableauConfig,
        clock: SharedClock,
    ) -> Result<FakeTableauHandle, FakeTableauError> {
        config.validate()?;
        let addr = config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tls, certificate_pem) = match &config.tls {
            Some(t) => {
                let (acceptor, pem) = server::tls_acceptor(t)?;
                (Some(acceptor), pem)
            }
            None => (None, None),
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| FakeTableauError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeTableauError::Bind { addr, source })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let keys = issuers::KeyCache::new(config.issuer_ca_bundle.as_deref())?;
        let shared = Arc::new(state::Shared::new(&config, clock, base_url.clone(), keys));
        let app = server::router(Arc::clone(&shared));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, tls, app, stop_rx));
        tracing::info!(%base_url, "fake-tableau started");
        Ok(FakeTableauHandle {
            addr,
            base_url,
            shared,
            certificate_pem,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A running double. Dropping it stops the server too; [`Self::shutdown`] also waits for it.
#[derive(Debug)]
pub struct FakeTableauHandle {
    addr: SocketAddr,
    base_url: String,
    shared: Arc<state::Shared>,
    certificate_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeTableauHandle {
    /// The bound address (with the real port when `:0` was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`: what a Tableau client takes as its server URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The self-signed certificate (PEM) clients must trust, when TLS is self-signed.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> FakeStats {
        self.shared.stats()
    }

    /// The claims of the JWT the session of `token` (an `X-Tableau-Auth` value) was signed in
    /// with, as `GET /_fake/session/claims` answers them; `None` when no such session is live.
    /// In process, so a test checks what its client or broker sent in one call, without an HTTP
    /// client that trusts the double's certificate.
    pub fn session_claims(&self, token: &str) -> Option<serde_json::Value> {
        self.shared
            .session(token)
            .map(|s| serde_json::Value::Object(s.claims))
    }

    /// Replaces the faults of one endpoint (`signin`, `signout`, `serverinfo`, `rest`, or a
    /// REST method name). Refuses unknown endpoints and out-of-range values.
    pub fn set_faults(&self, endpoint: &str, faults: Faults) -> Result<(), FakeTableauError> {
        check_endpoint(endpoint)?;
        faults.validate(endpoint)?;
        self.shared.set_faults(endpoint, Some(faults));
        Ok(())
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The faults now in force, by endpoint.
    pub fn faults(&self) -> BTreeMap<String, Faults> {
        self.shared.all_faults()
    }

    /// Replaces the secrets of the connected app `client_id`, as a Tableau admin adding or
    /// deleting a secret does (one or two, distinct IDs); sessions already open stay. For
    /// secret-rotation tests: start with the old secret, add the new one, then drop the old.
    pub fn set_app_secrets(
        &self,
        client_id: &str,
        secrets: Vec<AppSecret>,
    ) -> Result<(), FakeTableauError> {
        if secrets.is_empty() || secrets.len() > 2 {
            return Err(FakeTableauError::InvalidConfig {
                reason: format!(
                    "connected app {client_id:?} would have {} secrets; Tableau allows one or two",
                    secrets.len()
                ),
            });
        }
        if secrets.len() == 2 && secrets[0].secret_id == secrets[1].secret_id {
            return Err(FakeTableauError::InvalidConfig {
                reason: format!(
                    "connected app {client_id:?} would have two secrets with the same secret_id"
                ),
            });
        }
        if self.shared.set_app_secrets(client_id, secrets) {
            Ok(())
        } else {
            Err(FakeTableauError::InvalidConfig {
                reason: format!("no connected app has client_id {client_id:?}"),
            })
        }
    }

    /// Ends every session, as a Tableau restart would; later calls get 401000.
    pub fn end_all_sessions(&self) {
        self.shared.end_all_sessions();
    }

    /// Stops accepting, closes open connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "fake-tableau server task ended abnormally");
        }
    }
}

impl Drop for FakeTableauHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the configuration in `path` until Ctrl-C or SIGTERM; `listen` overrides its address.
/// The first line on stdout is `fake-tableau listening on http://ADDR` (or `https://`), so a
/// script that passed port 0 can read the port.
pub async fn run_from_file(
    path: &Path,
    listen: Option<SocketAddr>,
) -> Result<(), FakeTableauError> {
    let mut config = FakeTableauConfig::from_file(path)?;
    if listen.is_some() {
        config.listen = listen;
    }
    let handle = FakeTableau::start(config).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // A closed stdout must not stop the server; the line is a convenience.
        let _ = writeln!(out, "fake-tableau listening on {}", handle.base_url());
        let _ = out.flush();
    }
    wait_for_signal().await?;
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), FakeTableauError> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|source| FakeTableauError::Signal { source })?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|source| FakeTableauError::Signal { source }),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .map_err(|source| FakeTableauError::Signal { source })
    }
}

#[cfg(test)]
mod readme_tests {
    /// The README's Rust example is the broker's `tests/it/tableau_double.rs`, which CI runs; this
    /// keeps the README from drifting away from code that compiles and passes.
    #[test]
    fn readme_example_is_the_tested_file() {
        let readme = include_str!("../README.md");
        let test = include_str!("../../../tests/it/tableau_double.rs");
        let body = &test[test.find("use std::time").unwrap()..];
        assert!(
            readme.contains(body),
            "README.md's example differs from tests/it/tableau_double.rs: copy the file's code from `use std::time` on"
        );
    }
}
