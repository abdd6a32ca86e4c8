//! The broker's one domain error type. The gRPC layer maps it to a status in one place
//! (`grpc::status`); here each variant knows its stable reason string and whether its details are
//! safe for the caller.

use std::time::Duration;

use crate::echo::quoted;
use crate::policy::Denial;

/// A Tableau connected-app sub-code and what an operator should check for it.
pub fn signin_hint(sub_code: u32) -> &'static str {
    match sub_code {
        16 => {
            "Tableau could not find the user, or the JWT's exp was more than 10 minutes ahead: check the username (case-sensitive), that the user is on the site, and the broker's clock"
        }
        5 => "the user was not found on the site; usernames are case-sensitive",
        10083 => "the JWT header lacks kid or iss: a broker bug, please report it",
        10084 => {
            "Tableau could not parse or verify the JWT: check the connected app's secret value and secret ID, and that the broker's clock is in sync"
        }
        10085 => {
            "Tableau could not find the secret for this client ID: check client_id and secret_id against the connected app"
        }
        10087 => "Tableau refused the signing algorithm: a broker bug, please report it",
        10089 => "no connected app matches the client ID: check client_id",
        10090 => "the connected app is disabled in Tableau: enable it",
        126 => "the connected app was not found: check client_id",
        127 => {
            "the connected app secret was not found: check secret_id, and that the secret was not deleted or rotated"
        }
        67 => "the connected-apps feature is not enabled on this Tableau site or server",
        _ => "see Tableau's connected-apps troubleshooting page for this code",
    }
}

/// A retry hint for a message: whole milliseconds, rounded up, never "0ms".
fn retry_text(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    let ms = if Duration::from_millis(ms as u64) < d {
        ms + 1
    } else {
        ms
    };
    humantime::format_duration(Duration::from_millis(ms as u64)).to_string()
}

/// Everything that can go wrong serving a request. `Clone` because a coalesced sign-in hands the
/// same failure to every waiter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The request is malformed (missing field, bad duration, bad scope).
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong and what to send instead.
        message: String,
    },
    /// An input is larger than the broker accepts (see [`crate::input`]); nothing was done with it.
    #[error(
        "{field} is too large: {actual} {unit}, at most {limit} accepted; real requests stay far below this, so check what is being sent"
    )]
    InputTooLarge {
        /// The request field.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// What was sent.
        actual: usize,
        /// What the numbers count ("bytes", "scopes", ...).
        unit: &'static str,
    },
    /// The connection carries no verified client-certificate identity. The TLS layer refuses such
    /// connections, so reaching a handler without one is a wiring fault, still answered cleanly.
    #[error(
        "no verified client certificate on this connection; connect with mTLS and a client certificate from the broker's client CA"
    )]
    Unauthenticated,
    /// No service or method of the broker has this path.
    #[error(
        "{} is not a method of the broker; see proto/tableau_token_broker/v1/broker.proto or use server reflection",
        crate::echo::echo(path)
    )]
    Unimplemented {
        /// The request path (at most 100 characters of it).
        path: String,
    },
    /// The caller's policy refuses the request.
    #[error("{0}")]
    Denied(Denial),
    /// The site name is not in the broker's configuration.
    #[error(
        "site {} is not configured in the broker; ask its operators, or call WhoAmI to see your grants",
        quoted(site)
    )]
    UnknownSite {
        /// The site asked for.
        site: String,
    },
    /// The token to invalidate belongs to a session this caller may not hold.
    #[error("that token belongs to another caller's session; you can only invalidate your own")]
    NotYourToken,
    /// Tableau does not know the user (sub-codes 16 and 5).
    #[error(
        "Tableau could not sign in user {} on site {} (error {sub_code}): check the username (case-sensitive) and that the user belongs to the site",
        quoted(user),
        quoted(site)
    )]
    UserNotFound {
        /// Site name.
        site: String,
        /// Username.
        user: String,
        /// Tableau's sub-code.
        sub_code: u32,
    },
    /// Tableau refused the connected app (10083, 10084, 10085, 10087, 10089, 10090, 126, 127, 67).
    #[error(
        "Tableau refused the broker's connected app for site {site:?} (error {sub_code}); the broker's operators must check its configuration"
    )]
    AppMisconfigured {
        /// Site name.
        site: String,
        /// Tableau's sub-code.
        sub_code: u32,
    },
    /// Tableau rejected the sign-in for another reason. The message is fixed: Tableau's own text
    /// (`summary`) is upstream content that may quote the JWT, so it goes to the broker's log
    /// (scrubbed), never to the caller.
    #[error("Tableau rejected the sign-in on site {site:?} (error {code}{}); the broker's log has Tableau's message, ask its operators", sub_code.map(|s| format!(" ({s})")).unwrap_or_default())]
    SignInRejected {
        /// Site name.
        site: String,
        /// Tableau's error code.
        code: String,
        /// Connected-app sub-code, if any.
        sub_code: Option<u32>,
        /// Tableau's summary line, scrubbed of token-shaped text and cut short; for logs only.
        summary: String,
    },
    /// Tableau could not be reached, timed out or answered 5xx.
    #[error("Tableau for site {site:?} is unavailable ({reason}); retry with backoff")]
    Unavailable {
        /// Site name.
        site: String,
        /// What happened, without URLs.
        reason: String,
    },
    /// Tableau is rate limiting.
    #[error("Tableau is rate limiting sign-ins for site {site:?}{}; retry later", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Site name.
        site: String,
        /// Tableau's hint.
        retry_after: Option<Duration>,
    },
    /// The audit record of a decision could not be written, so in fail-closed mode nothing
    /// secret is handed out.
    #[error(
        "the broker cannot write its audit trail, so it hands out no credentials; retry with backoff (operators: check the [audit] path's disk)"
    )]
    AuditUnavailable,
    /// The caller entry has used its sign-in budget (`[limits]`); cached credentials are still
    /// served, only new sign-ins wait.
    #[error(
        "caller entry {caller:?} has used its sign-in budget ({per_second} per second, burst {burst}): no new Tableau sign-in for it now; cached credentials are still served; retry in {}",
        retry_text(*retry_after)
    )]
    SignInRateLimited {
        /// The caller entry's identity pattern as configured.
        caller: String,
        /// Its rate.
        per_second: f64,
        /// Its burst.
        burst: u32,
        /// When a token will be there.
        retry_after: Duration,
    },
    /// The site has its cap of sign-ins in flight (`[limits] max_concurrent_sign_ins`).
    #[error(
        "site {site:?} already has {max} sign-ins to Tableau in flight, the broker's cap; retry in {}",
        retry_text(*retry_after)
    )]
    SiteSignInsBusy {
        /// Site name.
        site: String,
        /// The cap.
        max: usize,
        /// A suggested wait.
        retry_after: Duration,
    },
    /// The broker itself failed.
    #[error("internal error: {0}")]
    Internal(String),
    /// An admin call from an identity no `[[admins]]` entry names (a `[[callers]]` entry does
    /// not make anyone an admin).
    #[error(
        "identity {} is not an admin of the broker; the admin API is for identities listed in [[admins]]",
        quoted(identity)
    )]
    NotAnAdmin {
        /// The certificate identity (echoed, bounded).
        identity: String,
    },
    /// An admin call that needs a role the admin's entry lacks.
    #[error("admin entry {entry:?} does not have the role {role:?} this call needs")]
    RoleNotGranted {
        /// The `[[admins]]` entry as configured.
        entry: String,
        /// The missing role.
        role: &'static str,
    },
}

impl BrokerError {
    /// A stable, machine-readable reason (`google.rpc.ErrorInfo.reason`).
    pub fn reason(&self) -> String {
        match self {
            BrokerError::InvalidArgument { .. } => "INVALID_REQUEST".into(),
            BrokerError::InputTooLarge { .. } => "INPUT_TOO_LARGE".into(),
            BrokerError::Unauthenticated => "UNAUTHENTICATED".into(),
            BrokerError::Unimplemented { .. } => "UNIMPLEMENTED".into(),
            BrokerError::Denied(d) => match d {
                Denial::NoScopes => "NO_SCOPES".into(),
                Denial::MalformedScope(_) => "MALFORMED_SCOPE".into(),
                Denial::UnknownScope { .. } => "UNKNOWN_SCOPE".into(),
                Denial::UnknownCaller { .. } => "CALLER_NOT_ALLOWED".into(),
                Denial::Site { .. } => "SITE_NOT_ALLOWED".into(),
                Denial::User { .. } => "USER_NOT_ALLOWED".into(),
                Denial::Scope { .. } => "SCOPE_NOT_ALLOWED".into(),
                Denial::ScopeDenied { .. } => "SCOPE_DENIED".into(),
                Denial::Split { .. } => "SCOPES_SPLIT_ACROSS_GRANTS".into(),
            },
            BrokerError::UnknownSite { .. } => "UNKNOWN_SITE".into(),
            BrokerError::NotYourToken => "TOKEN_NOT_YOURS".into(),
            BrokerError::UserNotFound { sub_code, .. }
            | BrokerError::AppMisconfigured { sub_code, .. } => {
                format!("TABLEAU_SIGNIN_{sub_code}")
            }
            BrokerError::SignInRejected { code, sub_code, .. } => match sub_code {
                Some(s) => format!("TABLEAU_SIGNIN_{s}"),
                None => format!("TABLEAU_{code}"),
            },
            BrokerError::Unavailable { .. } => "TABLEAU_UNAVAILABLE".into(),
            BrokerError::RateLimited { .. } => "TABLEAU_RATE_LIMITED".into(),
            BrokerError::AuditUnavailable => "AUDIT_UNAVAILABLE".into(),
            BrokerError::SignInRateLimited { .. } => "SIGN_IN_RATE_LIMITED".into(),
            BrokerError::SiteSignInsBusy { .. } => "SITE_SIGN_INS_BUSY".into(),
            BrokerError::Internal(_) => "INTERNAL".into(),
            BrokerError::NotAnAdmin { .. } => "NOT_AN_ADMIN".into(),
            BrokerError::RoleNotGranted { .. } => "ROLE_NOT_GRANTED".into(),
        }
    }

    /// How long the caller should wait before retrying, when the broker or Tableau said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BrokerError::RateLimited { retry_after, .. } => *retry_after,
            BrokerError::SignInRateLimited { retry_after, .. }
            | BrokerError::SiteSignInsBusy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Tableau's error code and sub-code, when Tableau answered.
    pub fn tableau_codes(&self) -> (Option<&str>, Option<u32>) {
        match self {
            BrokerError::UserNotFound { sub_code, .. }
            | BrokerError::AppMisconfigured { sub_code, .. } => (Some("401001"), Some(*sub_code)),
            BrokerError::SignInRejected { code, sub_code, .. } => (Some(code), *sub_code),
            BrokerError::RateLimited { .. } => (Some("429000"), None),
            _ => (None, None),
        }
    }

    /// Maps a Tableau sign-in failure for `site`/`user` onto the domain.
    pub fn from_signin(site: &str, user: &str, e: crate::tableau::TableauError) -> BrokerError {
        use crate::tableau::TableauError as T;
        let site = site.to_owned();
        match e {
            T::Api {
                sub_code: Some(s @ (16 | 5)),
                ..
            } => BrokerError::UserNotFound {
                site,
                user: user.to_owned(),
                sub_code: s,
            },
            T::Api {
                sub_code: Some(s @ (10083 | 10084 | 10085 | 10087 | 10089 | 10090 | 126 | 127 | 67)),
                ..
            } => BrokerError::AppMisconfigured { site, sub_code: s },
            T::Api { code, .. } if code == "429000" => BrokerError::RateLimited {
                site,
                retry_after: None,
            },
            T::Api { http_status, .. } if http_status >= 500 => BrokerError::Unavailable {
                site,
                reason: format!("HTTP {http_status}"),
            },
            T::Api {
                code,
                sub_code,
                summary,
                ..
            } => BrokerError::SignInRejected {
                site,
                code,
                sub_code,
                summary,
            },
            T::RateLimited { retry_after } => BrokerError::RateLimited { site, retry_after },
            T::Connect { .. } => BrokerError::Unavailable {
                site,
                reason: "cannot connect".into(),
            },
            T::Timeout => BrokerError::Unavailable {
                site,
                reason: "timed out".into(),
            },
            T::Unavailable { http_status } => BrokerError::Unavailable {
                site,
                reason: format!("HTTP {http_status}"),
            },
            T::Malformed { .. } => BrokerError::Unavailable {
                site,
                reason: "unreadable answer".into(),
            },
            other => BrokerError::Internal(format!("Tableau client: {other}")),
        }
    }
}

impl From<Denial> for BrokerError {
    fn from(d: Denial) -> Self {
        BrokerError::Denied(d)
    }
}
