//! Tableau's answers are untrusted input: the sign-in parser and the error mapping never panic,
//! upstream text comes back short, and a retry hint is never longer than the cap.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tableau_token_broker::tableau::{
    MAX_RETRY_AFTER, TableauError, error_from_response, parse_sign_in_response,
};

const STATUSES: [u16; 8] = [200, 301, 400, 401, 403, 429, 500, 503];

fuzz_target!(|data: &[u8]| {
    let _ = parse_sign_in_response(data);
    let (head, body) = data.split_first().map_or((0, data), |(h, b)| (*h, b));
    let status = STATUSES[usize::from(head) % STATUSES.len()];
    let hint = (head & 0x80 != 0).then(|| Duration::from_secs(u64::from(head) * 1000));
    let e = error_from_response(status, hint, body);
    // Summary and detail are cut to 200 characters each; the fixed text around them is short.
    assert!(e.to_string().chars().count() < 1000, "{e}");
    if let TableauError::RateLimited {
        retry_after: Some(d),
    } = &e
    {
        assert!(*d <= MAX_RETRY_AFTER, "{d:?}");
    }
});
