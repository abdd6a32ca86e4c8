//! `[cache.shared]` (issue 16): validated into a [`SharedCacheConfig`], every problem located.
//! Kept apart from the rest of the configuration so the shared cache's rules read in one place.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::Issues;
use super::raw::RawSharedCache;
use crate::shared_cache::crypto::{KeyRing, parse_key};
use crate::shared_cache::{
    DEFAULT_BREAKER_COOLDOWN, DEFAULT_BREAKER_FAILURES, DEFAULT_LEASE_TTL, DEFAULT_LEASE_WAIT,
    DEFAULT_OPERATION_TIMEOUT, SharedCacheConfig,
};

const AT: &str = "cache.shared";

fn read_key(iss: &mut Issues, at: &str, path: &Path) -> Option<SecretSlice<u8>> {
    super::key_files::check(iss, at, path);
    match std::fs::read(path) {
        Err(e) => {
            iss.add(at, format!("cannot read {}: {e}", path.display()));
            None
        }
        Ok(mut bytes) => {
            let key = parse_key(&bytes);
            zeroize::Zeroize::zeroize(&mut bytes);
            key.map_err(|e| iss.add(at, format!("{}: {e}", path.display())))
                .ok()
        }
    }
}

/// Validates `[cache.shared]`; `None` when it has problems (they are in `iss`).
pub(super) fn build(
    iss: &mut Issues,
    raw: RawSharedCache,
    _development: bool,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Option<SharedCacheConfig> {
    let before = iss.0.len();
    let url = match raw.redis_url.as_deref().map(str::trim) {
        None | Some("") => {
            iss.add(
                format!("{AT}.redis_url"),
                "missing: give the Redis URL, e.g. \"rediss://tableau-broker-cache:6379/0\"",
            );
            String::new()
        }
        Some(u) => {
            match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => {
                    if url.password().is_some() {
                        iss.add(
                            format!("{AT}.redis_url"),
                            "has a password in it; put the password in password_file (a username may stay in the URL)",
                        );
                    } else if let Err(e) = redis::Client::open(u) {
                        iss.add(format!("{AT}.redis_url"), format!("{u:?}: {e}"));
                    }
                    if raw.ca_file.is_some() && url.scheme() != "rediss" {
                        iss.add(
                            format!("{AT}.ca_file"),
                            "only used with TLS: write the URL as rediss://",
                        );
                    }
                }
                _ => iss.add(
                    format!("{AT}.redis_url"),
                    format!("{u:?} is not a redis:// or rediss:// URL with a host"),
                ),
            }
            u.to_owned()
        }
    };
    let ca_file = raw.ca_file.map(|p| resolve(&p));
    if let Some(p) = &ca_file {
        if !p.is_file() {
            iss.add(
                format!("{AT}.ca_file"),
                format!("{} is not a readable file", p.display()),
            );
        }
    }
    let password = raw
        .password_file
        .map(|p| resolve(&p))
        .inspect(|p| super::key_files::check(iss, &format!("{AT}.password_file"), p))
        .and_then(|p| match std::fs::read_to_string(&p) {
            Ok(s) => {
                let pw = SecretString::from(s.trim_end_matches(['\n', '\r']).to_owned());
                if pw.expose_secret().is_empty() {
                    iss.add(
                        format!("{AT}.password_file"),
                        format!("{} is empty", p.display()),
                    );
                }
                Some(pw)
            }
            Err(e) => {
                iss.add(
                    format!("{AT}.password_file"),
                    format!("cannot read {}: {e}", p.display()),
                );
                None
            }
        });
    let current = match raw.encryption_key_file {
        None => {
            iss.add(
                format!("{AT}.encryption_key_file"),
                "missing: Redis must hold nothing readable; give a file with 32 random bytes (e.g. `openssl rand -base64 32 > cache.key`)",
            );
            None
        }
        Some(p) => read_key(iss, &format!("{AT}.encryption_key_file"), &resolve(&p)),
    };
    let previous: Vec<SecretSlice<u8>> = raw
        .previous_encryption_key_files
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            read_key(
                iss,
                &format!("{AT}.previous_encryption_key_files[{i}]"),
                &resolve(p),
            )
        })
        .collect();
    let keys = current.and_then(|c| {
        KeyRing::new(&c, &previous)
            .map_err(|e| iss.add(format!("{AT}.previous_encryption_key_files"), e.to_string()))
            .ok()
    });
    let operation_timeout = iss.duration(
        &format!("{AT}.operation_timeout"),
        raw.operation_timeout.as_deref(),
        DEFAULT_OPERATION_TIMEOUT,
    );
    if operation_timeout.is_zero() || operation_timeout > std::time::Duration::from_secs(5) {
        iss.add(
            format!("{AT}.operation_timeout"),
            "must be more than zero and at most 5s: every request may wait this long when Redis is slow",
        );
    }
    let lease_ttl = iss.duration(
        &format!("{AT}.lease_ttl"),
        raw.lease_ttl.as_deref(),
        DEFAULT_LEASE_TTL,
    );
    if lease_ttl < std::time::Duration::from_millis(100) {
        iss.add(format!("{AT}.lease_ttl"), "must be at least 100ms");
    }
    let lease_wait = iss.duration(
        &format!("{AT}.lease_wait"),
        raw.lease_wait.as_deref(),
        DEFAULT_LEASE_WAIT,
    );
    if lease_wait <= lease_ttl {
        iss.add(
            format!("{AT}.lease_wait"),
            "must be longer than lease_ttl, or a waiter gives up before a dead holder's lease expires",
        );
    }
    let breaker_failures = match raw.breaker_failures {
        Some(0) => {
            iss.add(format!("{AT}.breaker_failures"), "must be at least 1");
            DEFAULT_BREAKER_FAILURES
        }
        Some(n) => n,
        None => DEFAULT_BREAKER_FAILURES,
    };
    let breaker_cooldown = iss.duration(
        &format!("{AT}.breaker_cooldown"),
        raw.breaker_cooldown.as_deref(),
        DEFAULT_BREAKER_COOLDOWN,
    );
    if iss.0.len() > before {
        return None;
    }
    Some(SharedCacheConfig {
        redis_url: url,
        ca_file,
        password,
        keys: keys?,
        operation_timeout,
        lease_ttl,
        lease_wait,
        breaker_failures,
        breaker_cooldown,
    })
}

/// The `check-config` line: where Redis is and which key seals, nothing secret.
pub(super) fn summary(c: &SharedCacheConfig) -> String {
    let previous: Vec<String> = c
        .keys
        .ids()
        .iter()
        .skip(1)
        .map(ToString::to_string)
        .collect();
    format!(
        "shared cache: {} (password {}, ca_file {}) key {} previous {:?} operation_timeout {} lease_ttl {} lease_wait {}\n",
        crate::shared_cache::redact_url(&c.redis_url),
        if c.password.is_some() {
            "from file"
        } else {
            "none"
        },
        c.ca_file
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        c.keys.current_id(),
        previous,
        humantime::format_duration(c.operation_timeout),
        humantime::format_duration(c.lease_ttl),
        humantime::format_duration(c.lease_wait),
    )
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn load(dir: &std::path::Path, shared: &str) -> Result<Config, ConfigError> {
        let text = format!("version = 1\n[cache.shared]\n{shared}\n");
        Config::from_toml(&text, &dir.join("broker.toml"))
    }

    fn issues(dir: &std::path::Path, shared: &str) -> Vec<String> {
        match load(dir, shared) {
            Err(ConfigError::Invalid { issues, .. }) => {
                issues.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected issues, got {other:?}"),
        }
    }

    #[test]
    fn a_good_section_loads_and_its_summary_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1"), [7u8; 32]).unwrap();
        std::fs::write(dir.path().join("k0"), [8u8; 32]).unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2-redis\n").unwrap();
        let c = load(
            dir.path(),
            "redis_url = \"redis://broker@127.0.0.1:6379/0\"\nencryption_key_file = \"k1\"\nprevious_encryption_key_files = [\"k0\"]\npassword_file = \"pw\"",
        )
        .unwrap();
        let s = c.cache.shared.as_ref().unwrap();
        assert_eq!(
            s.operation_timeout,
            crate::shared_cache::DEFAULT_OPERATION_TIMEOUT
        );
        assert_eq!(s.keys.ids().len(), 2);
        let summary = c.summary();
        assert!(
            summary.contains("shared cache: redis://127.0.0.1:6379/0"),
            "{summary}"
        );
        assert!(summary.contains(&s.keys.current_id().to_string()));
        assert!(!summary.contains("hunter2") && !summary.contains("broker@"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn problems_are_located() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), "c2hvcnQ=").unwrap();
        let got = issues(
            dir.path(),
            "redis_url = \"redis://u:pw@h:6379\"\nencryption_key_file = \"short\"\nlease_ttl = \"5s\"\nlease_wait = \"5s\"\noperation_timeout = \"0s\"\nbreaker_failures = 0",
        );
        let at = |p: &str| got.iter().any(|i| i.starts_with(p));
        assert!(at("cache.shared.redis_url: has a password"), "{got:?}");
        assert!(at("cache.shared.encryption_key_file: "), "{got:?}");
        assert!(at("cache.shared.lease_wait: "), "{got:?}");
        assert!(at("cache.shared.operation_timeout: "), "{got:?}");
        assert!(at("cache.shared.breaker_failures: "), "{got:?}");
        let got = issues(dir.path(), "redis_url = \"http://h\"");
        assert!(
            got.iter()
                .any(|i| i.starts_with("cache.shared.redis_url: "))
        );
        assert!(
            got.iter()
                .any(|i| i.starts_with("cache.shared.encryption_key_file: missing"))
        );
    }
}
