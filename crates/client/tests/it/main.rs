//! The client against the real broker binary and the Tableau double over HTTPS, with dev-kit
//! certificates. One test binary; the modules share [`support`].
//!
//! The broker runs as the `tableau-token-broker` program (`serve --config`), found next to this
//! test's binary in the target directory: build it first (`cargo build -p tableau-token-broker`;
//! `cargo test --workspace` does). Its command line and configuration file are the broker's
//! stable interface, while its library is being reorganised, so this crate's tests depend on
//! nothing of the broker but the program. The certificates come from the same program's dev kit
//! (`demo --no-wait` writes its CA, server and caller certificates), and the Tableau double runs
//! in-process from the `tableau-double` crate, which is made to be a test dependency.

// Test helpers fail loudly: an unwrap in a helper is the test's own assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
mod layer;
mod support;
