//! What can go wrong talking to Tableau, sorted by what the broker should do about it.
//!
//! No variant ever holds the connected-app JWT, the credentials token, or the upstream URL: these
//! errors travel to callers of the broker. The server URL and site are recorded as tracing span
//! fields (`server`, `site`) by [`TableauClient`](super::TableauClient) instead, so operators still
//! see where a failure happened.

use std::time::Duration;

/// A failed call to Tableau's REST API. Callers branch on the variant (retry, report upstream
/// rejection, fix configuration) rather than on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableauError {
    /// No connection could be made or kept: DNS failure, connection refused or reset, TLS
    /// handshake failure (for example an untrusted certificate), or the connect timeout elapsed.
    #[error(
        "could not connect to Tableau ({reason}); check the server URL, DNS, firewall and CA bundle, then retry"
    )]
    Connect {
        /// Why, from the network stack; never includes the URL.
        reason: String,
    },

    /// Connected, but Tableau did not answer within the configured request timeout.
    #[error(
        "Tableau did not answer within the request timeout; the server may be overloaded, retry later or raise the timeout"
    )]
    Timeout,

    /// Tableau answered with a well-formed REST API error (its `<error code=...>` body).
    #[error("Tableau rejected the request: HTTP {http_status}, error {code} ({summary}): {detail}")]
    Api {
        /// HTTP status of the response.
        http_status: u16,
        /// Tableau's error code, for example `"401001"` (sign-in error) or `"401002"`.
        code: String,
        /// The connected-app code from the end of the detail, for example 10084 for "could not
        /// parse the access token", when the detail ends with `(NNNN)`.
        sub_code: Option<u32>,
        /// Tableau's one-line summary, for example "Signin Error".
        summary: String,
        /// Tableau's detail text.
        detail: String,
    },

    /// Tableau is throttling us (HTTP 429 or error code 429000).
    #[error(
        "Tableau is rate limiting requests{}; retry later",
        retry_hint(retry_after)
    )]
    RateLimited {
        /// How long Tableau asked us to wait, from `Retry-After` or the error detail, if it said.
        retry_after: Option<Duration>,
    },

    /// Tableau (or a proxy in front of it) answered with a 5xx status and no Tableau error body.
    #[error("Tableau is unavailable (HTTP {http_status}); retry later")]
    Unavailable {
        /// HTTP status of the response.
        http_status: u16,
    },

    /// The response could not be understood: an unparseable or truncated body, a missing
    /// attribute, or an unexpected status without a Tableau error body.
    #[error(
        "Tableau's response could not be understood: {what}; check that the server URL points at Tableau and the API version is supported"
    )]
    Malformed {
        /// What was wrong; never contains body bytes that could hold a token.
        what: String,
    },

    /// The client or request is misconfigured: a bad CA bundle, server URL or API version, or a
    /// server that answers with a redirect.
    #[error("Tableau client configuration error: {what}")]
    Config {
        /// What is wrong and what to change.
        what: String,
    },
}

fn retry_hint(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {}s)", d.as_secs()),
        None => String::new(),
    }
}

impl TableauError {
    /// Whether trying the same call again later may succeed (network trouble, timeouts, throttling,
    /// 5xx). Rejections such as a bad JWT (401001) and configuration errors are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            TableauError::Connect { .. }
            | TableauError::Timeout
            | TableauError::RateLimited { .. }
            | TableauError::Unavailable { .. } => true,
            TableauError::Api { http_status, .. } => *http_status >= 500,
            TableauError::Malformed { .. } | TableauError::Config { .. } => false,
        }
    }

    /// The connected-app sub-code of an API error (for example 16, 10084, 10085), if any.
    pub fn sub_code(&self) -> Option<u32> {
        match self {
            TableauError::Api { sub_code, .. } => *sub_code,
            _ => None,
        }
    }

    /// Tableau's error code (for example `"401001"`) of an API error, if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            TableauError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status Tableau answered with, when there was an answer with a status to report.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            TableauError::Api { http_status, .. } | TableauError::Unavailable { http_status } => {
                Some(*http_status)
            }
            TableauError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_split() {
        assert!(
            TableauError::Connect {
                reason: "refused".into()
            }
            .is_retryable()
        );
        assert!(TableauError::Timeout.is_retryable());
        assert!(TableauError::RateLimited { retry_after: None }.is_retryable());
        assert!(TableauError::Unavailable { http_status: 503 }.is_retryable());
        let api = |status| TableauError::Api {
            http_status: status,
            code: "401001".into(),
            sub_code: Some(10084),
            summary: "Signin Error".into(),
            detail: "Error signing in to Tableau Server (10084)".into(),
        };
        assert!(!api(401).is_retryable());
        assert!(api(500).is_retryable());
        assert_eq!(api(401).sub_code(), Some(10084));
        assert_eq!(api(401).code(), Some("401001"));
        assert!(!TableauError::Malformed { what: "x".into() }.is_retryable());
        assert!(!TableauError::Config { what: "x".into() }.is_retryable());
        assert_eq!(TableauError::Timeout.sub_code(), None);
    }

    #[test]
    fn display_mentions_retry_after() {
        let e = TableauError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert!(e.to_string().contains("retry after 30s"), "{e}");
        let e = TableauError::RateLimited { retry_after: None };
        assert!(!e.to_string().contains("retry after"), "{e}");
    }
}
