//! `tableau-token-broker`: keeps Tableau connected-app secrets in one place and hands internal
//! services least-privilege, cached Tableau credentials over mTLS.
//!
//! The domain lives in its own crate, `tableau-token-broker-core` (re-exported here under its
//! module names: [`policy`], [`config`], [`mint`], [`cache`], [`broker`], [`audit`], ...), which
//! knows nothing of gRPC. This crate is the binary around it: [`grpc`] is a thin layer that maps
//! the one domain error to a gRPC status in one place, [`transport`] turns a verified client
//! certificate into a caller identity, and [`admin`], [`metrics`] and [`telemetry`] observe it.
//!
//! [`reload`] and [`watch`] keep a running server in step with its files: all-or-nothing reloads,
//! triggered by file events, a periodic re-check or SIGHUP.
//!
//! The `dev-kit` feature (on by default, off in the production build) adds [`devkit`]: the
//! development PKI, a local broker + Tableau double setup, and the demo.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use tableau_token_broker_core::{
    admins, audit, broker, cache, catalog, clock, config, echo, error, format, identity, input,
    limits, mint, policy, review, scope, shared_cache, sign_outs, stats, tableau,
};

pub mod admin;
pub mod admin_cli;
pub mod cli;
pub mod client_cli;
#[cfg(feature = "dev-kit")]
pub mod devkit;
pub mod grpc;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod transport;
pub mod watch;
