//! The configuration builder never panics on huge durations, and never accepts one over its
//! documented bound (issue 24, point 14): each input picks a duration key, a number and a unit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::config::Config;
use tableau_token_broker::config::bounds::{DURATION_BOUNDS, max_duration};

const UNITS: &[&str] = &["ns", "ms", "s", "m", "h", "d", "w", "months", "years", "y"];

/// Where each duration key goes in a configuration that is otherwise valid.
fn section(key: &str) -> &'static str {
    match key {
        "grace_period" | "idle_timeout" | "keepalive_interval" | "keepalive_timeout"
        | "max_connection_age" => "server",
        "safety_margin" | "replaced_session_grace" => "cache",
        "operation_timeout" | "lease_ttl" | "lease_wait" | "breaker_cooldown" => "cache.shared",
        "negative_cache_ttl" => "limits",
        "connect_timeout" | "request_timeout" => "tableau",
        "check_interval" | "debounce" => "reload",
        "session_ttl" | "jwt_ttl" => "sites.finance",
        _ => "callers.grants",
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (key, _) = DURATION_BOUNDS[usize::from(data[0]) % DURATION_BOUNDS.len()];
    let unit = UNITS[usize::from(data[1]) % UNITS.len()];
    let mut n = [0u8; 8];
    n.copy_from_slice(&data[2..10]);
    let value = format!("{}{unit}", u64::from_le_bytes(n));
    let line = format!("{key} = \"{value}\"\n");
    let mut text = String::from("version = 1\ndevelopment = true\n");
    let s = section(key);
    if s == "server" {
        text.push_str(
            "[server]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n",
        );
        text.push_str(&line);
    } else if s == "cache.shared" {
        text.push_str("[cache.shared]\nredis_url = \"redis://127.0.0.1:6379/0\"\nencryption_key_file = \"k\"\n");
        text.push_str(&line);
    } else if s != "sites.finance" && s != "callers.grants" {
        text.push_str(&format!("[{s}]\n{line}"));
    }
    text.push_str("[sites.finance]\nserver_url = \"https://tableau.example.com\"\ncontent_url = \"finance\"\n");
    if s == "sites.finance" {
        text.push_str(&line);
    }
    text.push_str("[sites.finance.connected_app]\nclient_id = \"cid\"\nsecret_id = \"sid\"\nsecret = \"a-development-secret-of-at-least-32-bytes\"\n");
    text.push_str("[[callers]]\nidentity = \"spiffe://example.org/a\"\n[[callers.grants]]\nsites = [\"finance\"]\nusers = [\"u\"]\nscopes = [\"tableau:content:read\"]\n");
    if s == "callers.grants" {
        text.push_str(&line);
    }
    let Ok(config) = Config::from_toml(&text, std::path::Path::new("fuzz.toml")) else {
        return;
    };
    // Whatever loaded is within its bound.
    let within = |at: &str, d: std::time::Duration| assert!(d <= max_duration(at), "{at} {d:?}");
    within("check_interval", config.reload.check_interval);
    within("debounce", config.reload.debounce);
    within(
        "replaced_session_grace",
        config.cache.replaced_session_grace,
    );
    within("safety_margin", config.cache.safety_margin);
    within("negative_cache_ttl", config.limits.negative_cache_ttl);
    within("connect_timeout", config.tableau.connect_timeout);
    within("request_timeout", config.tableau.request_timeout);
    if let Some(site) = config.site("finance") {
        within("session_ttl", site.session_ttl);
        within("jwt_ttl", site.jwt_ttl);
    }
});
