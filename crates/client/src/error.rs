//! What can go wrong, with the broker's own words kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

/// Why a [`Client`](crate::Client) call or its setup failed. Cheap to clone: callers that shared
/// one RPC (single flight) each get the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or malformed (an unset `TTB_*` variable, an address that is not
    /// `host:port`, ...). The message names the setting and how to give it.
    #[error("{0}")]
    Config(String),
    /// A certificate, key or CA file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// Which file ("client certificate", "client key", "CA certificate").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What the OS said.
        source: Arc<std::io::Error>,
    },
    /// A PEM file holds nothing usable, or the key does not belong to the certificate. Key
    /// contents are never echoed.
    #[error("the {what} file {} is not usable: {detail}", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The broker (or the transport on its way) answered with a gRPC error.
    #[error("{}{}: {message}", code_name(*code), reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// `google.rpc.ErrorInfo.reason` from the status details, when the broker gave one: a
        /// stable name such as `SCOPE_NOT_ALLOWED` to match on.
        reason: Option<String>,
        /// `ErrorInfo.metadata` (for example `tableau_code`, `tableau_sub_code`).
        metadata: HashMap<String, String>,
        /// The broker's message.
        message: String,
        /// `google.rpc.RetryInfo.retry_delay`, when the broker said when to try again.
        retry_after: Option<Duration>,
    },
    /// The broker's answer lacks a field every answer carries (a broker bug or a version skew).
    #[error("the broker's answer has no {0}")]
    Malformed(&'static str),
    /// A request header could not be built (the token holds bytes a header cannot carry).
    #[error("cannot put the token into the {0} header")]
    Header(&'static str),
    /// A background task of the client ended without an answer (the runtime is shutting down).
    #[error("the client's background call ended without an answer: {0}")]
    Background(String),
}

impl Error {
    /// The error for a gRPC status: its code and message, and the `ErrorInfo` and `RetryInfo`
    /// details when the status carries them.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let (reason, metadata) = match details.error_info() {
            Some(info) => (Some(info.reason.clone()), info.metadata.clone()),
            None => (None, HashMap::new()),
        };
        Error::Rpc {
            code: status.code(),
            reason,
            metadata,
            message: status.message().to_owned(),
            retry_after: details.retry_info().and_then(|r| r.retry_delay),
        }
    }

    /// The gRPC code, for an [`Error::Rpc`].
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The broker's `ErrorInfo.reason`, for an [`Error::Rpc`] that carried one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Rpc { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }
}

/// The gRPC spec's name of a status code (`PERMISSION_DENIED`), as operators read it in docs and
/// dashboards.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    #[test]
    fn a_status_keeps_the_brokers_reason_message_and_retry_hint() {
        let mut details = ErrorDetails::with_error_info(
            "SCOPE_NOT_ALLOWED",
            "tableau-token-broker",
            HashMap::new(),
        );
        details.set_retry_info(Some(Duration::from_secs(2)));
        let status = tonic::Status::with_error_details(
            Code::PermissionDenied,
            "scope x is not granted",
            details,
        );
        let e = Error::from_status(&status);
        assert_eq!(e.code(), Some(Code::PermissionDenied));
        assert_eq!(e.reason(), Some("SCOPE_NOT_ALLOWED"));
        assert_eq!(
            e.to_string(),
            "PERMISSION_DENIED (SCOPE_NOT_ALLOWED): scope x is not granted"
        );
        assert!(
            matches!(e, Error::Rpc { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        let plain = Error::from_status(&tonic::Status::unavailable("down"));
        assert_eq!(plain.to_string(), "UNAVAILABLE: down");
        assert_eq!(plain.reason(), None);
    }
}
