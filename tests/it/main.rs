//! The one integration-test binary: every module shares a single link step. Real parts throughout:
//! TLS with rcgen certificates, HTTP on 127.0.0.1, the real binary for CLI tests.

mod broker;
mod catalog;
mod cli;
mod client_cli;
mod fake_tableau;
mod tableau_client;
mod transport;
