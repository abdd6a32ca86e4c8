//! What the broker and the Tableau double both need to agree on, and nothing else: the grammar of
//! connected-app scopes ([`scope`]), Tableau's catalog of scopes and the REST methods they enable
//! ([`catalog`]), and the injected [`clock`] that lets one test move time for both at once.
//!
//! It is its own crate so the double can depend on it without depending on the broker, and the
//! broker's production build can leave the double out.

pub mod catalog;
pub mod clock;
pub mod format;
pub mod scope;
