//! The one integration-test binary: every module shares a single link step. Real parts throughout:
//! TLS with rcgen certificates, HTTP on 127.0.0.1, the real binary for CLI tests.

// Test helpers fail loudly: an unwrap in a helper is the test's own assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod audit;
mod broker;
mod catalog;
mod claims;
mod cli;
mod client_cli;
mod harness;
mod issuer;
mod observability;
mod ops;
#[cfg(unix)]
mod rotation;
mod security;
mod security_core;
mod security_limits;
mod security_transport;
mod shared_cache;
mod support;
mod tableau_client;
mod tableau_double;
mod transport;
