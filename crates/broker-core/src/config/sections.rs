//! Building the `[server]` connection limits and the `[audit]` section.

use super::*;

pub(super) fn build_connections(iss: &mut Issues, s: &raw::RawServer) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    ConnectionLimits {
        max_connections: iss.count(
            "server.max_connections",
            s.max_connections,
            d.max_connections,
            "no client could connect",
        ),
        idle_timeout: iss.positive(
            "server.idle_timeout",
            s.idle_timeout.as_deref(),
            d.idle_timeout,
        ),
        keepalive_interval: iss.positive(
            "server.keepalive_interval",
            s.keepalive_interval.as_deref(),
            d.keepalive_interval,
        ),
        keepalive_timeout: iss.positive(
            "server.keepalive_timeout",
            s.keepalive_timeout.as_deref(),
            d.keepalive_timeout,
        ),
        max_connection_age: iss.positive(
            "server.max_connection_age",
            s.max_connection_age.as_deref(),
            d.max_connection_age,
        ),
        concurrency_limit_per_connection: iss.count(
            "server.concurrency_limit_per_connection",
            s.concurrency_limit_per_connection,
            d.concurrency_limit_per_connection,
            "no call could ever run",
        ),
    }
}

pub(super) fn build_audit(
    iss: &mut Issues,
    a: raw::RawAudit,
    development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> AuditConfig {
    let mode = match a.mode.as_deref() {
        None => DEFAULT_AUDIT_MODE,
        Some("fail-closed") => AuditMode::FailClosed,
        Some("best-effort") => AuditMode::BestEffort,
        Some(other) => {
            iss.add(
                "audit.mode",
                format!("{other:?} is not \"fail-closed\" or \"best-effort\""),
            );
            DEFAULT_AUDIT_MODE
        }
    };
    let target = match (a.enabled, a.path) {
        (Some(false), path) => {
            if !development {
                iss.add("audit.enabled", "an audit trail is required outside development configurations; remove `enabled = false` (or set development = true for a benchmark)");
            }
            if path.is_some() {
                iss.add(
                    "audit.path",
                    "set, but enabled = false turns the trail off; remove one of them",
                );
            }
            AuditTarget::Off
        }
        (_, None) => AuditTarget::Stdout,
        (_, Some(p)) if p.as_os_str() == DEFAULT_AUDIT_PATH => AuditTarget::Stdout,
        (_, Some(p)) if p.as_os_str().is_empty() => {
            iss.add(
                "audit.path",
                "empty: give a file path, or \"-\" for standard output",
            );
            AuditTarget::Stdout
        }
        (_, Some(p)) => AuditTarget::File(resolve(&p)),
    };
    let hmac_key_file = a.hmac_key_file.map(|p| resolve(&p));
    if let Some(p) = &hmac_key_file {
        key_files::check(iss, "audit.hmac_key_file", p);
        if let Err(e) = crate::audit::Fingerprinter::from_key_file(p) {
            iss.add("audit.hmac_key_file", e.to_string());
        }
    }
    AuditConfig {
        target,
        mode,
        sync: a.sync.unwrap_or(DEFAULT_AUDIT_SYNC),
        hmac_key_file,
    }
}
