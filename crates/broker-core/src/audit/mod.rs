//! Governance: the audit trail. Every decision the broker makes (each RPC, each sign-in to
//! Tableau, sign-outs, reloads) becomes one JSON record in a sink of its own, apart from the
//! diagnostic log, following a versioned schema (`docs/audit-schema.v1.json`). In fail-closed
//! mode nothing secret leaves the broker before its record is written.
//!
//! - [`fingerprint`]: token fingerprints, stable across replicas with a shared key;
//! - [`record`]: the record and its schema version;
//! - [`sink`]: the sink, its modes and counters, fed to a writer with group commit (a thread for
//!   a file, a task for standard output into a pipe);
//! - [`crate::review`]: the access review over a trail (`tableau-token-broker audit review`).

pub mod fingerprint;
pub mod record;
pub mod sink;
mod writer;

pub use fingerprint::{FINGERPRINT_HEX_LEN, Fingerprint, Fingerprinter, KeyFileError, TokenDigest};
pub use record::{AuditRecord, CallerContext, Event, IdentityField, Outcome, SCHEMA_VERSION};
pub use sink::{
    AuditConfig, AuditHealth, AuditMode, AuditOpenError, AuditSink, AuditStats, AuditStatsSnapshot,
    AuditTarget, AuditWriteFailed,
};
