//! Configuration loading never panics on any text, and never echoes a secret it read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::config::Config;

fuzz_target!(|data: &str| {
    let _ = Config::from_toml(data, std::path::Path::new("fuzz.toml"));
});
