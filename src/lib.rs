//! `tableau-token-broker`: keeps Tableau connected-app secrets in one place and hands internal
//! services least-privilege, cached Tableau credentials over mTLS.
//!
//! Domain modules ([`scope`], [`catalog`], [`policy`], [`config`], [`mint`], [`cache`]) know
//! nothing of gRPC; [`grpc`] is a thin layer over them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod catalog;
pub mod clock;
pub mod fake_tableau;
pub mod scope;
