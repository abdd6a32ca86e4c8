//! Live reload, all or nothing: read and check everything a configuration names (the file, the
//! server certificate against its key, the client CA, secrets, Tableau CA bundles), and only then
//! swap it in. A bad file leaves the whole running configuration in place; the failure is logged
//! with what was wrong, counted, and retried when the files change again.
//!
//! [`crate::watch`] decides *when* to reload (file events, a periodic re-check, SIGHUP);
//! [`Reloader`] decides *whether* anything changed and does the reload.
//!
//! Settings that cannot change while the process runs (the listen address, the cache capacity,
//! telemetry) refuse the reload as "restart required" rather than being silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use secrecy::ExposeSecret;

use crate::broker::Broker;
use crate::clock::{SharedClock, unix_secs};
use crate::config::{Config, ConfigError, ReloadConfig, SiteConfig};
use crate::error::BrokerError;
use crate::transport::{TlsError, TlsFiles, TlsReloader};

/// A certificate closer to its end than this is warned about at each (re)load.
pub const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a reload was refused. The running configuration stays in force in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file is unreadable, not TOML, or has invalid values.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new configuration has no `[server]` section, which the running server needs.
    #[error(
        "the new configuration has no [server] section; a running server needs listen, cert, key and client_ca"
    )]
    NoServerSection,
    /// A certificate, key or CA file is unusable (e.g. a certificate that does not match its key).
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Something built from the configuration failed (e.g. a Tableau CA bundle).
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The new configuration widens a caller's grants, and the configuration file changed
    /// between being read and a debounce interval later: it may have been read half-written.
    #[error(
        "the configuration file changed while it was being read, and it would widen the grants of {}; it is reloaded once it stops changing. Replace the file atomically (write a temporary file, then rename it over the old one) instead of writing it in place",
        .0.join(", ")
    )]
    Unsettled(Vec<String>),
    /// Settings changed that only a restart can apply.
    #[error(
        "restart required: {} cannot change while the broker runs; restart it to apply them (nothing was reloaded)",
        .0.join(", ")
    )]
    RestartRequired(Vec<String>),
}

/// A certificate as logged and exported: who, which serial, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as x509-parser prints it.
    pub subject: String,
    /// The serial number, hex with colons.
    pub serial: String,
    /// Not-after, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl CertInfo {
    /// Not-after as RFC 3339, for logs.
    pub fn not_after_rfc3339(&self) -> String {
        let t = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(self.not_after_unix).unwrap_or(0));
        humantime::format_rfc3339_seconds(t).to_string()
    }
}

/// Reload counters and certificate end dates, plain atomics for the metrics exporter.
#[derive(Debug, Default)]
pub struct ReloadStats {
    ok: AtomicU64,
    error: AtomicU64,
    last_success_unix: AtomicU64,
    server_cert_not_after_unix: AtomicI64,
    client_ca_not_after_unix: AtomicI64,
    last_failed: AtomicBool,
}

/// A copy of [`ReloadStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadStatsSnapshot {
    /// Reloads that swapped a new configuration in.
    pub ok: u64,
    /// Reloads refused (bad file, restart required); the running configuration stayed.
    pub error: u64,
    /// When the configuration in force was loaded (start or last successful reload), Unix
    /// seconds.
    pub last_success_unix: u64,
    /// The server certificate's not-after, Unix seconds.
    pub server_cert_not_after_unix: i64,
    /// The earliest not-after among the client CA certificates, Unix seconds.
    pub client_ca_not_after_unix: i64,
    /// Whether the last reload attempt was refused (false at start and after a good one): a bad
    /// edit that would otherwise stay unnoticed until the next start refuses it.
    pub last_failed: bool,
}

impl ReloadStats {
    /// Notes that a configuration was loaded now (at start), for the last-success gauge.
    pub fn mark_loaded(&self, clock: &SharedClock) {
        self.last_success_unix
            .store(unix_secs(clock.now()), Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ReloadStatsSnapshot {
        ReloadStatsSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            error: self.error.load(Ordering::Relaxed),
            last_success_unix: self.last_success_unix.load(Ordering::Relaxed),
            server_cert_not_after_unix: self.server_cert_not_after_unix.load(Ordering::Relaxed),
            client_ca_not_after_unix: self.client_ca_not_after_unix.load(Ordering::Relaxed),
            last_failed: self.last_failed.load(Ordering::Relaxed),
        }
    }
}

/// What a successful reload changed (names and serials only, never a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// The configuration generation now in force.
    pub generation: u64,
    /// Sites added.
    pub sites_added: Vec<String>,
    /// Sites removed.
    pub sites_removed: Vec<String>,
    /// Sites whose settings, connected app or secrets changed.
    pub sites_changed: Vec<String>,
    /// Caller identities added.
    pub callers_added: Vec<String>,
    /// Caller identities removed.
    pub callers_removed: Vec<String>,
    /// Caller identities whose grants changed.
    pub callers_changed: Vec<String>,
    /// Sites whose cached sessions were dropped, with how many.
    pub sessions_dropped: Vec<(String, usize)>,
    /// The server certificate now in force.
    pub server_cert: Option<CertInfo>,
    /// The client CA certificates now in force.
    pub client_ca: Vec<CertInfo>,
}

/// What the last reload attempt saw, so a periodic check only reloads when a file changed.
#[derive(Debug, Default)]
struct Seen {
    /// Digest of the configuration file and every file it (or the last candidate) names.
    fingerprint: Option<[u8; 32]>,
    /// Files the last candidate configuration named, even if it was refused: fixing one of them
    /// must trigger a retry.
    candidate_files: Vec<PathBuf>,
}

/// Does reloads for one running server: the configuration file it reads, the broker and the TLS
/// acceptor it swaps.
pub struct Reloader {
    config_path: PathBuf,
    broker: Arc<Broker>,
    tls: TlsReloader,
    clock: SharedClock,
    stats: Arc<ReloadStats>,
    seen: Mutex<Seen>,
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Reloader {
    /// A reloader for the configuration the broker and `tls` were started with, read from
    /// `config_path`. Logs the certificates' end dates as at every reload.
    pub fn new(
        config_path: PathBuf,
        broker: Arc<Broker>,
        tls: TlsReloader,
        clock: SharedClock,
        stats: Arc<ReloadStats>,
    ) -> Reloader {
        let r = Reloader {
            config_path,
            broker,
            tls,
            clock,
            stats,
            seen: Mutex::new(Seen::default()),
            reloading: Mutex::new(()),
        };
        r.stats
            .last_success_unix
            .store(unix_secs(r.clock.now()), Ordering::Relaxed);
        let files = r.tls.snapshot().files.clone();
        let (server, ca) = cert_infos(&files);
        r.note_certs(server.as_ref(), &ca);
        if let Some(s) = &server {
            tracing::info!(target: "reload", server_cert_serial = %s.serial, server_cert_not_after = %s.not_after_rfc3339(), client_ca = %ca_list(&ca), "certificates loaded");
        }
        let (fp, _) = r.fingerprint();
        lock(&r.seen).fingerprint = Some(fp);
        r
    }

    /// The counters, for the metrics exporter.
    pub fn stats(&self) -> &Arc<ReloadStats> {
        &self.stats
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The `[reload]` settings in force.
    pub fn settings(&self) -> ReloadConfig {
        self.broker.config().reload.clone()
    }

    /// Every file a change of which should trigger a reload: the configuration file, the files
    /// the running configuration reads, and those the last refused candidate named.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.config_path.clone()];
        files.extend(self.broker.config().watched_files());
        files.extend(lock(&self.seen).candidate_files.iter().cloned());
        files.sort();
        files.dedup();
        files
    }

    /// A digest of every watched file's path and content: equal digests, unchanged files. The
    /// watcher compares two of them a debounce apart to know that a write has settled.
    pub fn digest(&self) -> [u8; 32] {
        self.fingerprint().0
    }

    /// A digest of every watched file's path and content, and the files it covers.
    fn fingerprint(&self) -> ([u8; 32], Vec<PathBuf>) {
        let files = self.watched_files();
        let mut h = digest::Context::new(&digest::SHA256);
        for f in &files {
            h.update(f.as_os_str().as_encoded_bytes());
            h.update(&[0]);
            match std::fs::read(f) {
                Ok(bytes) => {
                    let bytes = zeroize::Zeroizing::new(bytes);
                    h.update(digest::digest(&digest::SHA256, &bytes).as_ref());
                }
                Err(e) => h.update(format!("unreadable: {:?}", e.kind()).as_bytes()),
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        (out, files)
    }

    /// Reloads when any watched file differs from what the last attempt saw; `None` when nothing
    /// changed (so a refused file is not retried, and not counted again, until it changes).
    pub fn check(&self, trigger: &str) -> Option<Result<ReloadReport, ReloadError>> {
        let (fp, _) = self.fingerprint();
        if lock(&self.seen).fingerprint == Some(fp) {
            return None;
        }
        Some(self.reload(trigger))
    }

    /// Reloads now (SIGHUP, or a check that saw a change): everything is read and checked
    /// first; only then is the new configuration swapped in, whole. Logs one line either way.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        // One reload at a time: the watcher and a manual trigger may race.
        let _one = lock(&self.reloading);
        let (before, before_files) = self.fingerprint();
        let result = self.try_reload();
        // Remember what this attempt read: the digest taken *before* reading, so a file swapped
        // while loading differs from it and is reloaded at the next check. Only when the set of
        // files changed (a new configuration names new files) is the digest taken again.
        let (after, after_files) = self.fingerprint();
        lock(&self.seen).fingerprint = Some(if after_files == before_files {
            before
        } else {
            after
        });
        match &result {
            Ok(r) => {
                self.stats.ok.fetch_add(1, Ordering::Relaxed);
                self.stats.last_failed.store(false, Ordering::Relaxed);
                self.stats
                    .last_success_unix
                    .store(unix_secs(self.clock.now()), Ordering::Relaxed);
                self.note_certs(r.server_cert.as_ref(), &r.client_ca);
                let server_cert = r.server_cert.as_ref();
                tracing::info!(
                    target: "reload",
                    trigger,
                    config = %self.config_path.display(),
                    generation = r.generation,
                    sites_added = ?r.sites_added,
                    sites_removed = ?r.sites_removed,
                    sites_changed = ?r.sites_changed,
                    callers_added = ?r.callers_added,
                    callers_removed = ?r.callers_removed,
                    callers_changed = ?r.callers_changed,
                    sessions_dropped = ?r.sessions_dropped,
                    server_cert_serial = server_cert.map(|c| c.serial.as_str()).unwrap_or(""),
                    server_cert_not_after = %server_cert.map(CertInfo::not_after_rfc3339).unwrap_or_default(),
                    client_ca = %ca_list(&r.client_ca),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.stats.error.fetch_add(1, Ordering::Relaxed);
                self.stats.last_failed.store(true, Ordering::Relaxed);
                self.broker
                    .record_reload_failure(&crate::echo::error_chain(e));
                tracing::error!(
                    target: "reload",
                    trigger,
                    config = %self.config_path.display(),
                    error = %e,
                    "reload refused; the running configuration stays in force"
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, ReloadError> {
        lock(&self.seen).candidate_files.clear();
        let read = file_digest(&self.config_path);
        let config = Config::load(&self.config_path)?;
        config.log_warnings();
        lock(&self.seen).candidate_files = config.watched_files();
        let running = self.broker.config();
        let server = config.server.clone().ok_or(ReloadError::NoServerSection)?;
        let restart = restart_required(&running, &config);
        if !restart.is_empty() {
            return Err(ReloadError::RestartRequired(restart));
        }
        let files = TlsFiles {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: server.client_ca.clone(),
        };
        let tls_config = files.load()?;
        let (server_cert, client_ca) = cert_infos(&files);
        let mut report = diff(&running, &config);
        let widened = widened_callers(&running, &config);
        let prepared = self.broker.prepare(config)?;
        if !widened.is_empty() {
            // A half-written file can parse and widen a grant (cut before its `deny_scopes`):
            // one more look, a debounce later, that the file is still what was read.
            std::thread::sleep(running.reload.debounce.min(MAX_WIDENING_RECHECK));
            if file_digest(&self.config_path) != read {
                return Err(ReloadError::Unsettled(widened));
            }
        }
        // Everything is checked: swap. Neither store can fail.
        let committed = self.broker.commit(prepared);
        self.tls
            .replace(files, tls_config, server.identity_sources.clone());
        report.generation = committed.generation;
        report.sessions_dropped = committed.dropped;
        report.server_cert = server_cert;
        report.client_ca = client_ca;
        Ok(report)
    }

    fn note_certs(&self, server: Option<&CertInfo>, ca: &[CertInfo]) {
        let now = i64::try_from(unix_secs(self.clock.now())).unwrap_or(i64::MAX);
        let warn_within = i64::try_from(CERT_EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
        if let Some(s) = server {
            self.stats
                .server_cert_not_after_unix
                .store(s.not_after_unix, Ordering::Relaxed);
            if s.not_after_unix.saturating_sub(now) < warn_within {
                tracing::warn!(target: "reload", serial = %s.serial, subject = %s.subject, not_after = %s.not_after_rfc3339(), "the server certificate ends in less than 7 days; renew it (the broker picks the new one up from disk)");
            }
        }
        if let Some(first) = ca.iter().min_by_key(|c| c.not_after_unix) {
            self.stats
                .client_ca_not_after_unix
                .store(first.not_after_unix, Ordering::Relaxed);
            if first.not_after_unix.saturating_sub(now) < warn_within {
                tracing::warn!(target: "reload", serial = %first.serial, subject = %first.subject, not_after = %first.not_after_rfc3339(), "a client CA certificate ends in less than 7 days; add its successor to the bundle");
            }
        }
    }
}

/// The longest wait of the extra check of a configuration that widens grants.
const MAX_WIDENING_RECHECK: Duration = Duration::from_secs(2);

/// A digest of one file's content; `None` when it cannot be read.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, &bytes).as_ref());
    Some(out)
}

/// The caller entries `new` may grant more than `running` does: entries that are new, and
/// entries with a grant that is not, verbatim, one of their running grants. (Removing a grant or
/// an entry only narrows.)
fn widened_callers(running: &Config, new: &Config) -> Vec<String> {
    let grants_of = |c: &Config, pattern: &str| -> Option<Vec<String>> {
        c.policy
            .callers()
            .iter()
            .find(|e| e.pattern.to_string() == pattern)
            .map(|e| e.grants.iter().map(|g| format!("{g:?}")).collect())
    };
    new.policy
        .callers()
        .iter()
        .filter_map(|e| {
            let pattern = e.pattern.to_string();
            let wider = match grants_of(running, &pattern) {
                None => true,
                Some(old) => e.grants.iter().any(|g| !old.contains(&format!("{g:?}"))),
            };
            wider.then_some(pattern)
        })
        .collect()
}

fn ca_list(ca: &[CertInfo]) -> String {
    ca.iter()
        .map(|c| format!("{} until {}", c.serial, c.not_after_rfc3339()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The server certificate's leaf and the client CA certificates, as far as they parse (the
/// TLS load has already refused files that do not).
fn cert_infos(files: &TlsFiles) -> (Option<CertInfo>, Vec<CertInfo>) {
    (
        read_cert_infos(&files.cert).into_iter().next(),
        read_cert_infos(&files.client_ca),
    )
}

fn read_cert_infos(path: &Path) -> Vec<CertInfo> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let Ok(pem) = std::fs::read(path) else {
        return Vec::new();
    };
    CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .filter_map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            Some(CertInfo {
                subject: cert.subject().to_string(),
                serial: cert.raw_serial_as_string(),
                not_after_unix: cert.validity().not_after.timestamp(),
            })
        })
        .collect()
}

/// Settings the running process cannot apply: listen address (the socket is bound), cache
/// capacity (the cache is sized at start) and telemetry (the subscriber is installed once).
fn restart_required(running: &Config, new: &Config) -> Vec<String> {
    // Destructured without `..`: a new setting does not compile until it is classified here as
    // applied by a reload or read only at start.
    let Config {
        // Applied by a reload: sites and callers swap with the snapshot, the limits, Tableau
        // timeouts and reload timing are read per call or per tick.
        development: _,
        warnings: _,
        sites: _,
        policy: _,
        // The admins and the candidate policy swap with the snapshot too (issue 27).
        admins: _,
        candidate_path: _,
        candidate: _,
        limits: _,
        tableau: _,
        reload: _,
        // Read at start, in part or whole: compared below.
        server,
        cache,
        telemetry,
        admin,
        audit,
        // The keys swap with the snapshot (the listener serves the current ones); its listen
        // address is bound at start.
        issuer,
    } = new;
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (&running.server, server) {
        let crate::config::ServerConfig {
            listen,
            connections,
            // Reloaded: certificates and the CA through the TLS reloader, the rest per handshake
            // or per shutdown.
            cert: _,
            key: _,
            client_ca: _,
            identity_sources: _,
            grace_period: _,
        } = b;
        if a.listen != *listen {
            out.push(format!("server.listen ({} → {})", a.listen, listen));
        }
        // Read by the connection layer and the HTTP/2 server when they start.
        if a.connections != *connections {
            out.push("server connection limits".to_owned());
        }
    }
    let crate::config::CacheConfig {
        max_entries,
        shared,
        // Read when a session is cached or leaves the cache.
        safety_margin: _,
        sign_out_on_evict: _,
        replaced_session_grace: _,
        max_pending_sign_outs: _,
        refresh_ahead: _,
    } = cache;
    if running.cache.max_entries != *max_entries {
        out.push(format!(
            "cache.max_entries ({} → {})",
            running.cache.max_entries, max_entries
        ));
    }
    // The Redis connection and the key ring are made once: any change (another server, a
    // rotated password, a new encryption key) waits for a restart rather than being ignored.
    let shared_same = match (&running.cache.shared, shared) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_as(b),
        _ => false,
    };
    if !shared_same {
        out.push("cache.shared".to_owned());
    }
    let crate::config::TelemetryConfig {
        log_format,
        log_filter,
        otlp_endpoint,
        service_name,
    } = telemetry;
    let a = &running.telemetry;
    if a.log_format != *log_format {
        out.push("telemetry.log_format".to_owned());
    }
    if a.log_filter != *log_filter {
        out.push("telemetry.log_filter".to_owned());
    }
    if a.otlp_endpoint != *otlp_endpoint {
        out.push("telemetry.otlp_endpoint".to_owned());
    }
    if a.service_name != *service_name {
        out.push("telemetry.service_name".to_owned());
    }
    if running.admin != *admin {
        out.push("admin".to_owned());
    }
    if running.audit != *audit {
        out.push("audit".to_owned());
    }
    let issuer_listen =
        |c: Option<&std::sync::Arc<crate::issuer::Issuer>>| c.and_then(|i| i.listen);
    if issuer_listen(running.issuer.as_ref()) != issuer_listen(issuer.as_ref()) {
        out.push("issuer.listen".to_owned());
    }
    out
}

/// Whether anything a site's sessions or sign-ins depend on differs, secrets included
/// (compared, never shown).
fn site_changed(a: &SiteConfig, b: &SiteConfig) -> bool {
    let same_standby = match (&a.standby_secret, &b.standby_secret) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.secret_id == y.secret_id && x.secret.expose_secret() == y.secret.expose_secret()
        }
        _ => false,
    };
    let same_app = match (&a.app, &b.app) {
        (None, None) => true,
        (Some(x), Some(y)) => x.secret.expose_secret() == y.secret.expose_secret(),
        _ => false,
    };
    format!("{a:?}") != format!("{b:?}") || !same_app || !same_standby
}

fn diff(running: &Config, new: &Config) -> ReloadReport {
    let mut r = ReloadReport::default();
    for (name, site) in &new.sites {
        match running.site(name) {
            None => r.sites_added.push(name.clone()),
            Some(old) if site_changed(old, site) => r.sites_changed.push(name.clone()),
            Some(_) => {}
        }
    }
    r.sites_removed = running
        .sites
        .keys()
        .filter(|n| !new.sites.contains_key(*n))
        .cloned()
        .collect();
    let callers = |c: &Config| -> BTreeMap<String, String> {
        c.policy
            .callers()
            .iter()
            .map(|e| (e.pattern.to_string(), format!("{:?}", e.grants)))
            .collect()
    };
    let (old, now) = (callers(running), callers(new));
    for (id, grants) in &now {
        match old.get(id) {
            None => r.callers_added.push(id.clone()),
            Some(g) if g != grants => r.callers_changed.push(id.clone()),
            Some(_) => {}
        }
    }
    r.callers_removed = old
        .keys()
        .filter(|k| !now.contains_key(*k))
        .cloned()
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, shared: &str) -> Config {
        let text = format!("version = 1\n[cache.shared]\n{shared}\n");
        Config::from_toml(&text, &dir.join("broker.toml")).unwrap()
    }

    /// A changed `[cache.shared]` is never "applied" while the running connection and key ring
    /// stay as they were: every change to it is refused as restart-required.
    #[test]
    fn a_changed_shared_cache_needs_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        for (name, byte) in [("k1", 7u8), ("k2", 9), ("k0", 8)] {
            std::fs::write(dir.path().join(name), [byte; 32]).unwrap();
        }
        std::fs::write(dir.path().join("pw1"), "first-password\n").unwrap();
        std::fs::write(dir.path().join("pw2"), "second-password\n").unwrap();
        let base = "redis_url = \"redis://127.0.0.1:6379/0\"\nencryption_key_file = \"k1\"\npassword_file = \"pw1\"";
        let running = config(dir.path(), base);
        assert!(restart_required(&running, &config(dir.path(), base)).is_empty());
        for changed in [
            base.replace("\"k1\"", "\"k2\""),
            format!("{base}\nprevious_encryption_key_files = [\"k0\"]"),
            base.replace("pw1", "pw2"),
            base.replace("6379/0", "6380/0"),
            format!("{base}\nlease_ttl = \"4s\""),
        ] {
            let new = config(dir.path(), &changed);
            assert_eq!(
                restart_required(&running, &new),
                ["cache.shared"],
                "{changed}"
            );
        }
        let none = Config::from_toml("version = 1\n", &dir.path().join("broker.toml")).unwrap();
        assert_eq!(restart_required(&running, &none), ["cache.shared"]);
        assert_eq!(restart_required(&none, &running), ["cache.shared"]);
    }
}
