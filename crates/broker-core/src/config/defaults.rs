//! The defaults and limits every configuration section is built with, in one place so the
//! README, check-config and the builder quote the same values.

use std::time::Duration;

use crate::audit::AuditMode;

/// The only configuration format version this build understands.
pub const CONFIG_VERSION: u32 = 1;
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
/// Default REST API version (connected apps need 3.17 or later).
pub const DEFAULT_API_VERSION: &str = "3.22";
/// Oldest REST API version with connected-app sign-in.
pub const MIN_API_VERSION: (u32, u32) = (3, 17);
/// Default Tableau session lifetime (Tableau Server's default idle limit).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(240 * 60);
/// Default JWT lifetime.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);
/// Tableau refuses JWTs that live longer than this.
pub const MAX_JWT_TTL: Duration = Duration::from_secs(10 * 60);
/// Default bound on cached sessions.
pub const DEFAULT_CACHE_MAX_ENTRIES: u64 = 10_000;
/// Longest `[cache] refresh_ahead` accepted: a day is longer than any Tableau session.
pub const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(24 * 3600);
/// Default time before Tableau's session end at which the broker stops handing a token out.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::from_secs(5 * 60);
pub use crate::tableau::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
/// Default drain period after SIGTERM.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(20);
/// Default audit trail: standard output, apart from the diagnostic log on stderr.
pub const DEFAULT_AUDIT_PATH: &str = "-";
/// Default audit mode: nothing secret leaves before its record is written.
pub const DEFAULT_AUDIT_MODE: AuditMode = AuditMode::FailClosed;
/// Default for `[audit] sync`: no fdatasync per batch (see the README's "Audit" section).
pub const DEFAULT_AUDIT_SYNC: bool = false;
/// Shortest connected-app secret accepted, in bytes. Tableau generates much longer ones; a short
/// value is a placeholder or a truncated copy, and an HS256 key that short can be guessed.
pub const MIN_SECRET_BYTES: usize = 32;
/// Default cap on client connections (handshaking or established). Kept well under common file
/// descriptor limits; at start the broker lowers it further if the process may open fewer files.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default time a connection may stay without a call in progress before it is closed: frees the
/// descriptors of clients that connect and then send nothing.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default interval between HTTP/2 keepalive PINGs: finds clients that vanished without a FIN.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default time a keepalive PING may go unanswered.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default maximum connection age: clients rebalance after a scale-up, and no connection
/// outlives by much the client certificate that opened it.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
/// Default cap on calls served at once on one connection (more wait their turn).
pub const DEFAULT_CONCURRENCY_PER_CONNECTION: usize = 256;
/// Default sign-ins per second one caller entry may cause.
pub const DEFAULT_SIGN_INS_PER_SECOND: f64 = 10.0;
/// Default sign-in burst one caller entry may cause.
pub const DEFAULT_SIGN_IN_BURST: u32 = 20;
/// Default cap on sign-ins in flight to one site.
pub const DEFAULT_MAX_CONCURRENT_SIGN_INS: usize = 16;
/// Default time a sign-in failure that retrying cannot fix (unknown user, misconfigured app) is
/// answered from memory instead of asking Tableau again.
pub const DEFAULT_NEGATIVE_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default time a replaced or evicted session stays valid at Tableau: other callers may hold it.
pub const DEFAULT_REPLACED_SESSION_GRACE: Duration = Duration::from_secs(5 * 60);
/// Default cap on sign-outs waiting for their grace period.
pub const DEFAULT_MAX_PENDING_SIGN_OUTS: usize = 10_000;
/// Default interval of the periodic re-read of watched files, the fallback for filesystems that
/// send no change events.
pub const DEFAULT_RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Default wait after a file event for the rest of the burst (the kubelet writes several files
/// and then swaps one symlink).
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(500);
/// Tableau keeps at most two secrets per connected app.
pub const MAX_APP_SECRETS: usize = 2;
