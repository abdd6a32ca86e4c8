//! The double's integration tests: real HTTP(S) on 127.0.0.1, JWTs signed here with HMAC.

// Test helpers fail loudly: an unwrap in a helper is the test's own assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod double;
mod faults;
mod issuers;
