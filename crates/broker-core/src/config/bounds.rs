//! Upper bounds of every duration and rate in the configuration (issue 24, point 14).
//!
//! A duration such as `check_interval = "400000000000years"` parses, and then reaches arithmetic
//! on clocks and instants that panics (a background task dies, and with it every reload). So each
//! duration has a documented ceiling, well above any sensible value, and `check-config` refuses a
//! value over it. The ceilings are in [`DURATION_BOUNDS`], by the key's name wherever it appears
//! (`sites.NAME.session_ttl` is `session_ttl`); a duration key not listed gets
//! [`MAX_ANY_DURATION`]. The rates (`sign_ins_per_second`, `sign_in_burst`) are bounded where they
//! are read: at most [`MAX_SIGN_INS_PER_SECOND`] and [`MAX_SIGN_IN_BURST`].

use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// The ceiling of a duration key that [`DURATION_BOUNDS`] does not list: one year.
pub const MAX_ANY_DURATION: Duration = Duration::from_secs(366 * DAY);

/// Most sign-ins per second a caller entry (or the default) may be given.
pub const MAX_SIGN_INS_PER_SECOND: f64 = 1e6;

/// Largest sign-in burst a caller entry (or the default) may be given.
pub const MAX_SIGN_IN_BURST: u64 = 1_000_000;

/// `(key, ceiling)` for every duration key of the configuration. The README's configuration
/// reference lists the same table.
pub const DURATION_BOUNDS: &[(&str, Duration)] = &[
    // [server]
    ("grace_period", Duration::from_secs(HOUR)),
    ("idle_timeout", Duration::from_secs(DAY)),
    ("keepalive_interval", Duration::from_secs(HOUR)),
    ("keepalive_timeout", Duration::from_secs(HOUR)),
    ("max_connection_age", Duration::from_secs(30 * DAY)),
    // [cache]
    ("safety_margin", Duration::from_secs(DAY)),
    ("replaced_session_grace", Duration::from_secs(DAY)),
    // [cache.shared]
    ("operation_timeout", Duration::from_secs(5)),
    ("lease_ttl", Duration::from_secs(10 * MINUTE)),
    ("lease_wait", Duration::from_secs(HOUR)),
    ("breaker_cooldown", Duration::from_secs(HOUR)),
    // [limits]
    ("negative_cache_ttl", Duration::from_secs(DAY)),
    // [tableau]
    ("connect_timeout", Duration::from_secs(5 * MINUTE)),
    ("request_timeout", Duration::from_secs(10 * MINUTE)),
    // [reload]
    ("check_interval", Duration::from_secs(DAY)),
    ("debounce", Duration::from_secs(HOUR)),
    // [sites.NAME] and grants
    ("session_ttl", Duration::from_secs(30 * DAY)),
    ("jwt_ttl", super::MAX_JWT_TTL),
    ("max_jwt_ttl", super::MAX_JWT_TTL),
];

/// The ceiling of the duration at `at` (a dotted path such as `sites.finance.session_ttl`).
pub fn max_duration(at: &str) -> Duration {
    let key = at.rsplit('.').next().unwrap_or(at);
    DURATION_BOUNDS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(MAX_ANY_DURATION, |(_, max)| *max)
}

/// `Err` with the message `check-config` shows when `d` is over the ceiling of `at`.
pub fn check(at: &str, d: Duration) -> Result<Duration, String> {
    let max = max_duration(at);
    if d > max {
        return Err(format!(
            "longer than the most this setting allows ({}); see README, \"Configuration bounds\"",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
version = 1
development = true

[sites.finance]
server_url = "https://tableau.example.com/"
content_url = "finance"

[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "a-development-secret-of-at-least-32-bytes"

[[callers]]
identity = "spiffe://example.org/ns/a/sa/b"
[[callers.grants]]
sites = ["finance"]
users = ["u"]
scopes = ["tableau:content:read"]
"#;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        Config::from_toml(text, &dir.path().join("broker.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_check_interval_of_400000000000_years_is_refused() {
        let text = format!("{BASE}\n[reload]\ncheck_interval = \"400000000000years\"\n");
        let err = load(&text).unwrap_err();
        assert!(err.contains("reload.check_interval"), "{err}");
        assert!(err.contains("longer than the most"), "{err}");
        // At the bound itself it loads.
        load(&format!("{BASE}\n[reload]\ncheck_interval = \"1day\"\n")).unwrap();
    }

    /// Every duration key at once, huge or at the parser's limit: refused, each named, no panic.
    #[test]
    fn huge_values_in_every_duration_are_refused_without_panicking() {
        for huge in [
            "400000000000years",
            "584942417355years",
            "18446744073709551615s",
        ] {
            let d = |k: &str| format!("{k} = \"{huge}\"\n");
            let text = format!(
                "version = 1\ndevelopment = true\n[server]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n{}{}{}{}{}\n[cache]\n{}{}\n[limits]\n{}\n[tableau]\n{}{}\n[reload]\n{}{}\n{}",
                d("grace_period"),
                d("idle_timeout"),
                d("keepalive_interval"),
                d("keepalive_timeout"),
                d("max_connection_age"),
                d("safety_margin"),
                d("replaced_session_grace"),
                d("negative_cache_ttl"),
                d("connect_timeout"),
                d("request_timeout"),
                d("check_interval"),
                d("debounce"),
                BASE.replace("version = 1\ndevelopment = true\n", "")
                    .replace(
                        "content_url = \"finance\"",
                        &format!(
                            "content_url = \"finance\"\n{}{}",
                            d("session_ttl"),
                            d("jwt_ttl")
                        )
                    )
                    .replace(
                        "scopes = [\"tableau:content:read\"]",
                        &format!("scopes = [\"tableau:content:read\"]\n{}", d("max_jwt_ttl"))
                    ),
            );
            let err = std::panic::catch_unwind(|| load(&text))
                .expect("the builder panicked")
                .unwrap_err();
            for key in [
                "idle_timeout",
                "max_connection_age",
                "replaced_session_grace",
                "negative_cache_ttl",
                "request_timeout",
                "check_interval",
                "debounce",
                "session_ttl",
            ] {
                assert!(err.contains(key), "{huge}: {key} not refused: {err}");
            }
        }
    }

    #[test]
    fn every_bound_is_at_least_its_default() {
        use crate::config::*;
        for (at, default) in [
            ("grace_period", DEFAULT_GRACE_PERIOD),
            ("idle_timeout", DEFAULT_IDLE_TIMEOUT),
            ("max_connection_age", DEFAULT_MAX_CONNECTION_AGE),
            ("session_ttl", DEFAULT_SESSION_TTL),
            ("check_interval", DEFAULT_RELOAD_CHECK_INTERVAL),
            ("replaced_session_grace", DEFAULT_REPLACED_SESSION_GRACE),
        ] {
            assert!(max_duration(at) >= default, "{at}");
        }
        assert_eq!(
            max_duration("sites.x.session_ttl"),
            max_duration("session_ttl")
        );
        assert_eq!(max_duration("unknown"), MAX_ANY_DURATION);
    }
}
