//! File-mode checks on key material outside connected-app secrets (issue 24, point 12): the
//! shared cache's `encryption_key_file`, `previous_encryption_key_files` and `password_file`, the
//! audit `hmac_key_file`, and the server's private key (`server.key`). The same rule as secret
//! files: a world-writable file is refused (anyone on the host could replace the key), a
//! world-readable one is warned about (anyone on the host can read it).

use std::path::Path;

use super::Issues;

/// Applies the secret-file mode check to the key file at `path`, configured at `at`.
pub(super) fn check(iss: &mut Issues, at: &str, path: &Path) {
    match super::check_secret_file_mode(path) {
        Ok(None) => {}
        Ok(Some(warning)) => iss.warn(at, warning),
        Err(refusal) => iss.add(at, refusal),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use crate::config::{Config, ConfigError};

    /// Writes every key file of a configuration into `dir` at mode `mode`, and the configuration
    /// that names them.
    fn files(dir: &Path, mode: u32) -> String {
        let write = |name: &str, body: &[u8]| -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let current = write("cache.key", &[7u8; 32]);
        let previous = write("cache-old.key", &[9u8; 32]);
        let password = write("redis.password", b"redis-password\n");
        let hmac = write("audit.key", &[3u8; 32]);
        let server_key = write("tls.key", b"-----BEGIN PRIVATE KEY-----\n");
        format!(
            r#"version = 1
development = true
[server]
listen = "127.0.0.1:0"
cert = "tls.crt"
key = {server_key:?}
client_ca = "ca.crt"
[audit]
hmac_key_file = {hmac:?}
[cache.shared]
redis_url = "redis://127.0.0.1:6379/0"
encryption_key_file = {current:?}
previous_encryption_key_files = [{previous:?}]
password_file = {password:?}
"#
        )
    }

    const KEYS: [&str; 5] = [
        "cache.shared.encryption_key_file",
        "cache.shared.previous_encryption_key_files[0]",
        "cache.shared.password_file",
        "audit.hmac_key_file",
        "server.key",
    ];

    #[test]
    fn world_writable_key_files_are_refused_and_each_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = files(dir.path(), 0o666);
        let err = match Config::from_toml(&text, &dir.path().join("b.toml")) {
            Ok(_) => panic!("a configuration with world-writable key files loaded"),
            Err(e) => e,
        };
        let ConfigError::Invalid { issues, .. } = &err else {
            panic!("{err}")
        };
        let issues: Vec<String> = issues.iter().map(ToString::to_string).collect();
        for key in KEYS {
            assert!(
                issues
                    .iter()
                    .any(|i| i.starts_with(&format!("{key}: ")) && i.contains("world-writable")),
                "{key} not refused: {issues:?}"
            );
        }
        // Never the key itself in a message.
        assert!(!err.to_string().contains("redis-password"));
    }

    #[test]
    fn world_readable_key_files_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let text = files(dir.path(), 0o644);
        // The configuration may fail for other reasons (the server files are not real PEM, which
        // is checked at serve time); the warnings are what this test reads.
        let warnings: Vec<String> = match Config::from_toml(&text, &dir.path().join("b.toml")) {
            Ok(c) => c.warnings.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        };
        for key in KEYS {
            assert!(
                warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("{key}: ")) && w.contains("world-readable")),
                "{key} not warned about: {warnings:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let text = files(dir.path(), 0o640);
        let c = Config::from_toml(&text, &dir.path().join("b.toml")).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
