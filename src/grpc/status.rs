//! The one place a [`BrokerError`] becomes a gRPC [`Status`], with `google.rpc` details: an
//! `ErrorInfo` carrying a stable reason and Tableau's codes, and `RetryInfo` when Tableau or one
//! of the broker's limits gave a retry hint. Messages carry what the caller may see; upstream
//! URLs and secret IDs stay in logs.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{BrokerError, signin_hint};
use crate::policy::Denial;

/// `ErrorInfo.domain` for every error the broker raises.
pub const ERROR_DOMAIN: &str = "tableau-token-broker";

/// The gRPC code for an error.
pub fn code(e: &BrokerError) -> Code {
    match e {
        BrokerError::InvalidArgument { .. } | BrokerError::InputTooLarge { .. } => {
            Code::InvalidArgument
        }
        BrokerError::Unauthenticated => Code::Unauthenticated,
        BrokerError::Unimplemented { .. } => Code::Unimplemented,
        BrokerError::Denied(
            Denial::NoScopes | Denial::MalformedScope(_) | Denial::UnknownScope { .. },
        ) => Code::InvalidArgument,
        BrokerError::Denied(_)
        | BrokerError::NotYourToken
        | BrokerError::NotAnAdmin { .. }
        | BrokerError::RoleNotGranted { .. } => Code::PermissionDenied,
        BrokerError::UnknownSite { .. } => Code::NotFound,
        BrokerError::UserNotFound { .. }
        | BrokerError::AppMisconfigured { .. }
        | BrokerError::SignInRejected { .. } => Code::FailedPrecondition,
        BrokerError::Unavailable { .. } | BrokerError::AuditUnavailable => Code::Unavailable,
        BrokerError::RateLimited { .. }
        | BrokerError::SignInRateLimited { .. }
        | BrokerError::SiteSignInsBusy { .. } => Code::ResourceExhausted,
        BrokerError::Internal(_) => Code::Internal,
    }
}

/// Converts a domain error to a status with details.
pub fn to_status(e: &BrokerError) -> Status {
    let mut metadata = HashMap::new();
    let (tableau_code, sub_code) = e.tableau_codes();
    if let Some(c) = tableau_code {
        metadata.insert("tableau_code".to_owned(), c.to_owned());
    }
    if let Some(s) = sub_code {
        metadata.insert("tableau_sub_code".to_owned(), s.to_string());
    }
    let mut details = ErrorDetails::with_error_info(e.reason(), ERROR_DOMAIN, metadata);
    if let Some(d) = e.retry_after() {
        details.set_retry_info(Some(d));
    }
    let message = match e {
        BrokerError::AppMisconfigured { sub_code, .. } => {
            format!("{e}: {}", signin_hint(*sub_code))
        }
        BrokerError::Internal(_) => {
            "internal error in the broker; its logs have the details".to_owned()
        }
        _ => e.to_string(),
    };
    if let BrokerError::Internal(detail) = e {
        tracing::error!(error = %detail, "internal error");
    }
    Status::with_error_details(code(e), message, details)
}
