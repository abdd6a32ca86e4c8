//! `tableau-token-broker`: keeps Tableau connected-app secrets in one place and hands internal
//! services least-privilege, cached Tableau credentials over mTLS.
//!
//! Domain modules ([`scope`], [`catalog`], [`policy`], [`config`], [`mint`], [`cache`]) know
//! nothing of gRPC; [`grpc`] is a thin layer over them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
pub mod broker;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod client_cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod devcerts;
pub mod error;
pub mod fake_tableau;
pub mod grpc;
pub mod local;
pub mod mint;
pub mod policy;
pub mod scope;
pub mod server;
pub mod tableau;
pub mod telemetry;
pub mod transport;
