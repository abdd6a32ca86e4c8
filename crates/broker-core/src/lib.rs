//! The broker's domain, free of gRPC, HTTP serving, metrics and the command line: who a caller is
//! ([`identity`]), what it may have ([`policy`], [`config`]), and the use cases that hand it out
//! ([`broker`]: the cache, minting, sign-in at Tableau, sign-outs, limits and the audit trail).
//!
//! The binary (`tableau-token-broker`) adds the transport (certificate → identity), the gRPC
//! layer that maps [`error::BrokerError`] to a status in one place, the admin listener, metrics,
//! telemetry and reloads. Keeping the domain in its own crate makes "the domain imports nothing
//! from tonic or the transport" a fact the compiler checks.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use tableau_common::{catalog, clock, format, scope};

pub mod admins;
pub mod audit;
pub mod broker;
pub mod cache;
pub mod config;
pub mod echo;
pub mod error;
pub mod identity;
pub mod input;
pub mod limits;
pub mod mint;
pub mod policy;
pub mod review;
pub mod shared_cache;
pub mod sign_outs;
pub mod stats;
pub mod tableau;
