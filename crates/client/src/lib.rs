//! Client of the Tableau token broker: one line gets a calling service Tableau credentials.
//!
//! ```no_run
//! # async fn example() -> Result<(), tableau_token_broker_client::Error> {
//! use tableau_token_broker_client::{Client, CredentialsRequest};
//!
//! // TTB_ADDR, TTB_CERT, TTB_KEY and TTB_CA, as the broker's CLI reads them.
//! let client = Client::builder().from_env().build()?;
//! let creds = client
//!     .credentials(&CredentialsRequest::new("finance", "svc-renderer").scopes(["tableau:content:read"]))
//!     .await?;
//! println!("site {} until {:?}", creds.site_luid, creds.expires_at);
//! # Ok(())
//! # }
//! ```
//!
//! What the [`Client`] does for its caller:
//!
//! - **mTLS over rustls** (aws-lc-rs provider), with the gRPC stubs generated from the broker's
//!   `proto/` ([`proto`]).
//! - **Certificate reloading.** The certificate, key and CA files are checked before each call
//!   (a `stat` of each); when they changed on disk (an SVID rotated in place by csi-driver-spiffe
//!   or spiffe-helper), they are read again and the next call opens a new connection that presents
//!   the new certificate. A half-written rotation (a certificate whose key has not arrived yet)
//!   keeps the old identity until the pair matches.
//! - **An in-process cache** of credentials per request (site, user, scopes) with refresh-ahead:
//!   a token with less than [`ClientBuilder::refresh_ahead`] left is still served while one
//!   refresh runs in the background; a token with less than the request's
//!   [`CredentialsRequest::min_remaining`] left is never served, callers wait for the new one.
//!   Concurrent callers of one request share one RPC (single flight). Expiry decisions read a
//!   [`Clock`], so tests move time by hand ([`ManualClock`]).
//! - **Retries:** `UNAVAILABLE` with exponential backoff and jitter, `RESOURCE_EXHAUSTED` after the
//!   delay of the broker's `google.rpc.RetryInfo` ([`RetryPolicy`]).
//! - **Errors** carry the broker's `google.rpc.ErrorInfo` reason and message ([`Error::Rpc`]).
//! - **Tableau's 401:** [`TableauAuthLayer`] (a `tower::Layer` for `http::Request` services) adds
//!   `X-Tableau-Auth` and, on a 401, invalidates the token at the broker, takes a new one and
//!   retries once. With the `reqwest-middleware` feature, `TableauAuthMiddleware` does the same
//!   for a `reqwest_middleware::ClientWithMiddleware`.

mod cache;
mod client;
mod clock;
mod error;
mod layer;
mod messages;
#[cfg(feature = "reqwest-middleware")]
mod middleware;
mod retry;
mod tls;

/// The gRPC messages and the generated `TokenBroker` client, as `proto/` defines them.
///
/// [`Client`] wraps these; they are public for the answers it returns as they are
/// ([`proto::WhoAmIResponse`], [`proto::ResolveScopesResponse`]) and for callers that need a raw
/// stub.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("tableau_token_broker.v1");
}

pub use cache::CacheEvent;
pub use client::{Client, ClientBuilder, DEFAULT_ADDR, DEFAULT_REFRESH_AHEAD};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, code_name};
pub use layer::{TableauAuth, TableauAuthLayer, X_TABLEAU_AUTH};
pub use messages::{
    Claims, Credentials, CredentialsRequest, DEFAULT_MIN_REMAINING, Invalidation, MintJwtRequest,
    MintedJwt,
};
#[cfg(feature = "reqwest-middleware")]
pub use middleware::TableauAuthMiddleware;
pub use retry::RetryPolicy;
/// The secret types of [`Credentials::token`] and [`MintedJwt::jwt`], re-exported so callers need
/// no `secrecy` dependency of their own to read them.
pub use secrecy::{ExposeSecret, SecretString};
