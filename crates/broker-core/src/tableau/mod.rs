//! Tableau REST client: signs in with a connected-app JWT and signs out. The broker calls it on a
//! cache miss, so it is built to fail fast and say precisely why (see [`TableauError`]).
//!
//! One [`TableauClient`] serves every site: it holds a single pooled `reqwest` client (rustls,
//! HTTP/1.1 and HTTP/2 by ALPN) and is cheap to clone. The trust roots are the Mozilla roots from
//! `webpki-roots` plus, optionally, a private CA bundle ([`ClientOptions::ca_bundle`]).
//!
//! Secrets: the JWT and the credentials token are [`SecretString`]s, never logged, never put in an
//! error, and the token header is marked sensitive (kept out of HTTP/2 header compression tables).
//! Redirects are not followed, so a JWT is only ever sent to the configured server.

mod error;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::clock::{SharedClock, SystemClock};

/// Default connect timeout towards Tableau.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default whole-request timeout towards Tableau.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub use error::TableauError;

/// Largest response body read; sign-in and error bodies are well under 1 KiB, so anything bigger
/// is not Tableau talking.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Longest wait a `Retry-After` (header or error detail) is passed on as: a server or proxy asking
/// for hours would otherwise park every caller that much.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// Parses a successful sign-in response body as Tableau sends it (XML or JSON). Public for the fuzz
/// target (`fuzz/fuzz_targets/signin_response.rs`); the client uses the same parser.
pub fn parse_sign_in_response(body: &[u8]) -> Result<SignedIn, TableauError> {
    let fields = wire::parse_sign_in(body)?;
    Ok(SignedIn {
        token: fields.token,
        site_luid: fields.site_luid,
        site_content_url: fields.site_content_url.unwrap_or_default(),
        user_luid: fields.user_luid,
    })
}

/// The error for a non-success answer (`http_status`, `Retry-After` already parsed, `body`), with
/// upstream text scrubbed and the retry hint capped. Public for the fuzz target.
pub fn error_from_response(
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> TableauError {
    wire::error_from_response(http_status, retry_after, body)
}

/// How the client connects to Tableau. Set once at start-up, shared by every site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on establishing a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Limit on a whole request, from sending it to the last byte of the response.
    pub request_timeout: Duration,
    /// A PEM file of extra CA certificates to trust (for a Tableau Server behind a private CA),
    /// added to the built-in Mozilla roots.
    pub ca_bundle: Option<PathBuf>,
    /// The `User-Agent` header, so Tableau administrators can tell the broker's sessions apart.
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ca_bundle: None,
            user_agent: concat!("tableau-token-broker/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

pub use tableau_common::format::Format;

/// Where to sign in: one Tableau site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInTarget {
    /// Base URL of the server, for example `https://tableau.example.com` (a trailing slash is
    /// fine; a path prefix is kept).
    pub server_url: String,
    /// REST API version, for example `3.17` (connected apps need 3.17 or later).
    pub api_version: String,
    /// The site's content URL; empty for the default site.
    pub content_url: String,
    /// Wire format to use.
    pub format: Format,
    /// Sign in with a unified access token: `"isUat": true` in JSON, `isUat="true"` in XML.
    pub uat: bool,
}

/// A successful sign-in: what the broker caches and hands out. `Debug` redacts the token.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The credentials token, sent later as `X-Tableau-Auth`.
    pub token: SecretString,
    /// The site LUID that goes into later REST URIs.
    pub site_luid: String,
    /// The site's content URL as Tableau reports it (the requested one if Tableau omitted it).
    pub site_content_url: String,
    /// The LUID of the user the JWT signed in as.
    pub user_luid: String,
}

/// Signs in to and out of Tableau. Clone it freely: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct TableauClient {
    http: reqwest::Client,
    clock: SharedClock,
}

impl TableauClient {
    /// Builds the client. Fails with [`TableauError::Config`] when the CA bundle cannot be read or
    /// holds no usable certificate, or when the TLS stack cannot be set up.
    pub fn new(options: ClientOptions) -> Result<TableauClient, TableauError> {
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(options.ca_bundle.as_deref())?)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(options.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60));
        let http = builder.build().map_err(|e| TableauError::Config {
            what: format!(
                "could not set up the HTTP client ({}); check the CA bundle",
                crate::echo::error_chain(&e.without_url())
            ),
        })?;
        Ok(TableauClient {
            http,
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` to turn an HTTP-date `Retry-After` into a wait time (tests pin it).
    pub fn with_clock(mut self, clock: SharedClock) -> TableauClient {
        self.clock = clock;
        self
    }

    /// Signs in to `target` with a connected-app JWT (`POST {server}/api/{version}/auth/signin`)
    /// and returns the credentials token with the site and user LUIDs.
    ///
    /// Errors: [`TableauError::Api`] when Tableau rejects the JWT (for example 401001 with
    /// sub-code 10084), [`TableauError::RateLimited`] when throttled, and the transport variants
    /// otherwise. The span records the server origin and site, never the JWT or token.
    #[tracing::instrument(
        name = "tableau.sign_in",
        skip_all,
        fields(
            server = tracing::field::Empty,
            site = %target.content_url,
            api_version = %target.api_version,
            format = ?target.format,
            http_status = tracing::field::Empty,
        )
    )]
    pub async fn sign_in(
        &self,
        target: &SignInTarget,
        jwt: &SecretString,
    ) -> Result<SignedIn, TableauError> {
        let url = endpoint(&target.server_url, &target.api_version, "signin")?;
        let span = tracing::Span::current();
        span.record("server", url.origin().ascii_serialization());
        let (body, content_type) =
            wire::sign_in_body(target.format, jwt, &target.content_url, target.uat);
        let request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, content_type)
            .header(ACCEPT, wire::accept(target.format))
            .body(body);
        let (status, retry_after, body) = self.exchange(request).await?;
        span.record("http_status", status);
        if !(200..300).contains(&status) {
            let err = wire::error_from_response(status, retry_after, &body);
            tracing::debug!(error = %err, "Tableau sign-in failed");
            return Err(err);
        }
        let fields = wire::parse_sign_in(&body)?;
        tracing::debug!(
            site_luid = %fields.site_luid,
            user_luid = %fields.user_luid,
            "signed in to Tableau"
        );
        Ok(SignedIn {
            token: fields.token,
            site_luid: fields.site_luid,
            site_content_url: fields
                .site_content_url
                .unwrap_or_else(|| target.content_url.clone()),
            user_luid: fields.user_luid,
        })
    }

    /// Ends the session of `token` (`POST {server}/api/{version}/auth/signout`).
    ///
    /// A 401 answer means the session had already ended (expired or signed out): that is the
    /// state the caller wants, so it is `Ok(())`, logged at debug with `already_ended = true`.
    /// Other failures are errors as for [`sign_in`](Self::sign_in).
    #[tracing::instrument(
        name = "tableau.sign_out",
        skip_all,
        fields(
            server = tracing::field::Empty,
            api_version = %api_version,
            http_status = tracing::field::Empty,
        )
    )]
    pub async fn sign_out(
        &self,
        server_url: &str,
        api_version: &str,
        token: &SecretString,
    ) -> Result<(), TableauError> {
        let url = endpoint(server_url, api_version, "signout")?;
        let span = tracing::Span::current();
        span.record("server", url.origin().ascii_serialization());
        let mut auth =
            HeaderValue::from_str(token.expose_secret()).map_err(|_| TableauError::Malformed {
                what: "the credentials token is not a valid HTTP header value".to_owned(),
            })?;
        auth.set_sensitive(true);
        let request = self
            .http
            .post(url)
            .header("X-Tableau-Auth", auth)
            .body(Vec::new());
        let (status, retry_after, body) = self.exchange(request).await?;
        span.record("http_status", status);
        match status {
            200..=299 => {
                tracing::debug!(already_ended = false, "signed out of Tableau");
                Ok(())
            }
            401 => {
                tracing::debug!(already_ended = true, "Tableau session had already ended");
                Ok(())
            }
            _ => {
                let err = wire::error_from_response(status, retry_after, &body);
                tracing::debug!(error = %err, "Tableau sign-out failed");
                Err(err)
            }
        }
    }

    /// Sends a request and reads the status, `Retry-After` and a bounded body (zeroized on drop:
    /// a sign-in body holds the token).
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<Duration>, Zeroizing<Vec<u8>>), TableauError> {
        let mut response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| wire::retry_after_header(v, self.clock.now()));
        let capacity = response
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1024)
            .min(MAX_BODY_BYTES);
        let mut body = Zeroizing::new(Vec::with_capacity(capacity));
        while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(TableauError::Malformed {
                    what: format!(
                        "HTTP {status} response body is larger than {} KiB",
                        MAX_BODY_BYTES / 1024
                    ),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, retry_after, body))
    }
}

/// Reads a PEM bundle of CA certificates.
fn load_ca_bundle(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TableauError> {
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| TableauError::Config {
        what: format!("cannot read CA bundle {}: {e}", path.display()),
    })?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TableauError::Config {
            what: format!("CA bundle {} is not valid PEM ({e})", path.display()),
        })?;
    if certs.is_empty() {
        return Err(TableauError::Config {
            what: format!(
                "CA bundle {} holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)",
                path.display()
            ),
        });
    }
    Ok(certs)
}

/// The TLS settings towards Tableau: the aws-lc-rs provider (the broker's one crypto stack, set
/// here rather than through a process-wide default), TLS 1.2 and 1.3, the Mozilla roots from
/// `webpki-roots` plus the configured CA bundle, and ALPN for HTTP/2 and HTTP/1.1.
fn tls_config(ca_bundle: Option<&std::path::Path>) -> Result<rustls::ClientConfig, TableauError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        for cert in load_ca_bundle(path)? {
            roots.add(cert).map_err(|e| TableauError::Config {
                what: format!(
                    "CA bundle {} holds a certificate that cannot be a trust anchor ({e}); keep only CA certificates in it",
                    path.display()
                ),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TableauError::Config {
            what: format!("could not set up TLS towards Tableau ({e})"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Builds `{server}/api/{version}/auth/{action}` after checking both parts, so a typo in
/// configuration fails as [`TableauError::Config`] instead of a confusing 404.
fn endpoint(
    server_url: &str,
    api_version: &str,
    action: &str,
) -> Result<reqwest::Url, TableauError> {
    let config = |what: &str| TableauError::Config {
        what: what.to_owned(),
    };
    let valid_version = !api_version.is_empty()
        && api_version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !api_version.starts_with('.')
        && !api_version.ends_with('.')
        && !api_version.contains("..");
    if !valid_version {
        return Err(config(
            "the API version must look like 3.17 (digits and dots only)",
        ));
    }
    let base = server_url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|e| TableauError::Config {
        what: format!("the server URL is not a valid absolute URL ({e})"),
    })?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(config(
            "the server URL must start with https:// (or http://)",
        ));
    }
    if parsed.host().is_none() {
        return Err(config("the server URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(config(
            "the server URL must not carry credentials (user:password@)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(config(
            "the server URL must not have a query or fragment; give only the base address",
        ));
    }
    reqwest::Url::parse(&format!("{base}/api/{api_version}/auth/{action}")).map_err(|e| {
        TableauError::Config {
            what: format!("cannot build the Tableau endpoint from the server URL ({e})"),
        }
    })
}

/// Maps a transport failure, keeping the URL out of the message.
fn transport_error(e: reqwest::Error) -> TableauError {
    let e = e.without_url();
    if e.is_connect() {
        let reason = if e.is_timeout() {
            "connect timed out".to_owned()
        } else {
            crate::echo::error_chain(&e)
        };
        TableauError::Connect { reason }
    } else if e.is_timeout() {
        TableauError::Timeout
    } else if e.is_builder() {
        TableauError::Config {
            what: format!(
                "cannot build the request ({})",
                crate::echo::error_chain(&e)
            ),
        }
    } else if e.is_decode() {
        TableauError::Malformed {
            what: format!(
                "response could not be decoded ({})",
                crate::echo::error_chain(&e)
            ),
        }
    } else if e.is_body() {
        TableauError::Connect {
            reason: format!(
                "connection lost while reading the response: {}",
                crate::echo::error_chain(&e)
            ),
        }
    } else {
        TableauError::Connect {
            reason: crate::echo::error_chain(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_tolerates_trailing_slash_and_keeps_prefix() {
        assert_eq!(
            endpoint("https://tableau.example.com/", "3.17", "signin")
                .unwrap()
                .as_str(),
            "https://tableau.example.com/api/3.17/auth/signin"
        );
        assert_eq!(
            endpoint("https://h.example:8443/tableau//", "3.24", "signout")
                .unwrap()
                .as_str(),
            "https://h.example:8443/tableau/api/3.24/auth/signout"
        );
        assert_eq!(
            endpoint("http://127.0.0.1:9000", "3.17", "signin")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/api/3.17/auth/signin"
        );
    }

    #[test]
    fn endpoint_rejects_bad_config_without_echoing_url() {
        for (server, version) in [
            ("tableau.example.com", "3.17"),
            ("ftp://tableau.example.com", "3.17"),
            ("https://user:pw@tableau.example.com", "3.17"),
            ("https://tableau.example.com/?x=1", "3.17"),
            ("https://tableau.example.com", ""),
            ("https://tableau.example.com", "3.17/../x"),
            ("https://tableau.example.com", "v3"),
            ("https://tableau.example.com", "3..17"),
        ] {
            match endpoint(server, version, "signin") {
                Err(TableauError::Config { what }) => {
                    assert!(!what.contains("pw@"), "{what}");
                    assert!(!what.contains("tableau.example.com"), "{what}");
                }
                other => panic!("{server} {version}: {other:?}"),
            }
        }
    }

    #[test]
    fn signed_in_debug_redacts_token() {
        let s = SignedIn {
            token: SecretString::from("very-secret-token".to_owned()),
            site_luid: "s".into(),
            site_content_url: "c".into(),
            user_luid: "u".into(),
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("very-secret-token"), "{dbg}");
        assert!(dbg.contains("site_luid"), "{dbg}");
    }

    #[test]
    fn format_deserializes_lowercase() {
        #[derive(serde::Deserialize)]
        struct T {
            f: Format,
        }
        let t: T = toml::from_str("f = \"json\"").unwrap();
        assert_eq!(t.f, Format::Json);
        let t: T = toml::from_str("f = \"xml\"").unwrap();
        assert_eq!(t.f, Format::Xml);
        assert!(toml::from_str::<T>("f = \"yaml\"").is_err());
    }

    #[test]
    fn ca_bundle_errors_are_config() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"this is not PEM").unwrap();
        let bad_pem = dir.path().join("bad.pem");
        std::fs::write(
            &bad_pem,
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [missing, garbage, bad_pem] {
            let r = TableauClient::new(ClientOptions {
                ca_bundle: Some(path.clone()),
                ..ClientOptions::default()
            });
            assert!(
                matches!(r, Err(TableauError::Config { .. })),
                "{}: {r:?}",
                path.display()
            );
        }
    }

    #[test]
    fn ca_bundle_with_a_real_cert_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        TableauClient::new(ClientOptions {
            ca_bundle: Some(path),
            ..ClientOptions::default()
        })
        .unwrap();
    }
}
