//! Bounds on what a caller may send, checked before the broker does any work with it. Echoing
//! input into messages lives in [`crate::echo`].
//!
//! The limits are far above real use (the longest scope in Tableau's catalog is under 40 bytes, a
//! request names a handful of scopes) and low enough that no request can cost noticeable CPU or
//! make a log line large. They are constants, not settings: nobody needs to raise them.

use crate::echo::is_invisible_separator;
use crate::error::BrokerError;

pub use crate::echo::{ECHO_MAX_CHARS, Echo, MAX_SUGGEST_BYTES, echo, quoted};

/// Longest scope accepted, in bytes. Tableau's longest is under 40.
pub const MAX_SCOPE_BYTES: usize = 128;
/// Most scopes in one request (`GetCredentials`, `MintJwt`, `ResolveScopes`).
pub const MAX_SCOPES: usize = 64;
/// Longest Tableau username accepted, in bytes (Tableau's own limit is 255 characters).
pub const MAX_USER_BYTES: usize = 256;
/// Longest site name accepted, in bytes; configured names are short identifiers.
pub const MAX_SITE_BYTES: usize = 128;
/// Longest REST method name accepted by `ResolveScopes`, in bytes.
pub const MAX_METHOD_BYTES: usize = 128;
/// Most method names in one `ResolveScopes` request.
pub const MAX_METHODS: usize = 64;
/// Longest credentials token accepted by `InvalidateCredentials`, in bytes (Tableau's are ~60).
pub const MAX_TOKEN_BYTES: usize = 1024;
/// Largest gRPC request message the server decodes, in bytes. Every bounded request fits in a
/// fraction of it; anything larger is refused by the gRPC layer before it is decoded.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
fn too_large(field: &'static str, limit: usize, actual: usize, unit: &'static str) -> BrokerError {
    BrokerError::InputTooLarge {
        field,
        limit,
        actual,
        unit,
    }
}

/// Checks a site name's length. Emptiness is checked by the broker, after the caller lookup.
pub fn check_site(site: &str) -> Result<(), BrokerError> {
    if site.len() > MAX_SITE_BYTES {
        return Err(too_large("site", MAX_SITE_BYTES, site.len(), "bytes"));
    }
    Ok(())
}

/// Checks a username: bounded, and free of control characters and NUL (which no Tableau username
/// holds, and which could forge log lines).
pub fn check_user(user: &str) -> Result<(), BrokerError> {
    if user.len() > MAX_USER_BYTES {
        return Err(too_large("user", MAX_USER_BYTES, user.len(), "bytes"));
    }
    if user
        .chars()
        .any(|c| c.is_control() || is_invisible_separator(c))
    {
        return Err(BrokerError::InvalidArgument {
            field: "user",
            message: "holds a control character (newline, tab, NUL, ...); send the Tableau username as it is written".to_owned(),
        });
    }
    Ok(())
}

/// Checks the number and the length of requested scopes.
pub fn check_scopes(scopes: &[String]) -> Result<(), BrokerError> {
    if scopes.len() > MAX_SCOPES {
        return Err(too_large("scopes", MAX_SCOPES, scopes.len(), "scopes"));
    }
    if let Some(s) = scopes.iter().find(|s| s.len() > MAX_SCOPE_BYTES) {
        return Err(too_large(
            "scopes",
            MAX_SCOPE_BYTES,
            s.len(),
            "bytes per scope",
        ));
    }
    Ok(())
}

/// Checks the method names of a `ResolveScopes` request.
pub fn check_methods(methods: &[String]) -> Result<(), BrokerError> {
    if methods.len() > MAX_METHODS {
        return Err(too_large("methods", MAX_METHODS, methods.len(), "methods"));
    }
    if let Some(m) = methods.iter().find(|m| m.len() > MAX_METHOD_BYTES) {
        return Err(too_large(
            "methods",
            MAX_METHOD_BYTES,
            m.len(),
            "bytes per method",
        ));
    }
    Ok(())
}

/// Checks a token's length before it is hashed.
pub fn check_token(token: &str) -> Result<(), BrokerError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(too_large("token", MAX_TOKEN_BYTES, token.len(), "bytes"));
    }
    Ok(())
}

/// Every check of a credentials or JWT request, in one call.
pub fn check_request(site: &str, user: &str, scopes: &[String]) -> Result<(), BrokerError> {
    check_site(site)?;
    check_user(user)?;
    check_scopes(scopes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_controls_and_cuts_long_input() {
        assert_eq!(echo("svc-renderer").to_string(), "svc-renderer");
        assert_eq!(quoted("a\"b").to_string(), r#""a\"b""#);
        let forged = "x\n{\"level\":\"INFO\",\"forged\":true}\u{1b}[2K\0";
        let out = echo(forged).to_string();
        assert!(!out.chars().any(char::is_control), "{out}");
        assert!(out.contains("\\n"), "{out}");
        let long = "a".repeat(1 << 20);
        let out = quoted(&long).to_string();
        assert!(out.len() < ECHO_MAX_CHARS + 40, "{}", out.len());
        assert!(out.ends_with("(1048576 bytes)"), "{out}");
        assert_eq!(
            echo(&"é".repeat(ECHO_MAX_CHARS))
                .to_string()
                .chars()
                .count(),
            ECHO_MAX_CHARS
        );
        assert!(echo("a\u{2028}b").to_string().contains("\\u{2028}"));
    }

    #[test]
    fn limits_refuse_what_real_use_never_sends() {
        assert!(
            check_request(
                "finance",
                "ann@example.com",
                &["tableau:content:read".into()]
            )
            .is_ok()
        );
        assert!(check_site(&"s".repeat(MAX_SITE_BYTES + 1)).is_err());
        assert!(check_user(&"u".repeat(MAX_USER_BYTES)).is_ok());
        assert!(check_user(&"u".repeat(MAX_USER_BYTES + 1)).is_err());
        for bad in ["a\nb", "a\0", "a\rb", "\u{1b}[31m"] {
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        let many = vec!["tableau:content:read".to_owned(); MAX_SCOPES + 1];
        assert!(check_scopes(&many).is_err());
        assert!(check_scopes(&many[..MAX_SCOPES]).is_ok());
        assert!(check_scopes(&["x".repeat(MAX_SCOPE_BYTES + 1)]).is_err());
        let e = check_scopes(&["x".repeat(1 << 20)]).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        assert_eq!(e.reason(), "INPUT_TOO_LARGE");
    }
}
