//! The development kit: everything needed to run the broker with no Tableau and no PKI, and
//! nothing a production deployment should carry. Compiled only with the `dev-kit` feature, which
//! the production build (`--no-default-features`) leaves out, together with the Tableau double and
//! rcgen it pulls in.
//!
//! - [`certs`]: a development CA and server/client certificates (rcgen);
//! - [`local`]: a broker and a Tableau double on loopback, configured from one description;
//! - [`demo`]: the README's quick start, `tableau-token-broker demo`.

pub mod certs;
pub mod demo;
pub mod local;
