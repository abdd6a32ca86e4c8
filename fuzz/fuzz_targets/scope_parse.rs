//! Scope parsing never panics, and what parses displays back to the same string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::scope::Scope;

fuzz_target!(|data: &str| {
    if let Ok(scope) = data.parse::<Scope>() {
        assert_eq!(scope.to_string(), data);
    }
});
