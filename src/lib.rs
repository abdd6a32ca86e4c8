//! `tableau-token-broker`: keeps Tableau connected-app secrets in one place and hands internal
//! services least-privilege, cached Tableau credentials over mTLS.
//!
//! Domain modules ([`scope`], [`catalog`], [`policy`], [`config`], [`mint`], [`cache`],
//! [`broker`], [`audit`]) know nothing of gRPC; [`grpc`] is a thin layer over them and maps the one
//! domain error to a gRPC status in one place.
//!
//! [`reload`] and [`watch`] keep a running server in step with its files: all-or-nothing reloads,
//! triggered by file events, a periodic re-check or SIGHUP.
//!
//! The `dev-kit` feature (on by default, off in the production build) adds [`devkit`]: the
//! development PKI, a local broker + Tableau double setup, and the demo.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use tableau_common::{catalog, clock, scope};

pub mod admin;
pub mod audit;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod client_cli;
pub mod config;
#[cfg(feature = "dev-kit")]
pub mod devkit;
pub mod error;
pub mod grpc;
pub mod input;
pub mod limits;
pub mod metrics;
pub mod mint;
pub mod policy;
pub mod reload;
pub mod server;
pub mod shared_cache;
pub mod sign_outs;
pub mod stats;
pub mod tableau;
pub mod telemetry;
pub mod transport;
pub mod watch;
