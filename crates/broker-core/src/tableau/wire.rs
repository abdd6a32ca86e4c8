//! Tableau's wire formats for sign-in and errors: request bodies and response parsers, pure
//! functions on bytes so they are tested without a network.
//!
//! Responses are parsed by their first byte (`<` or `{`), not by the format we asked for: a proxy
//! or an older server may answer XML to a JSON request, and error bodies come in either form.

use std::time::{Duration, SystemTime};

use quick_xml::events::Event;
use secrecy::{ExposeSecret, SecretString};

use super::{Format, TableauError};

/// The fields of a successful sign-in response.
#[derive(Debug)]
pub(crate) struct SignInFields {
    pub(crate) token: SecretString,
    pub(crate) site_luid: String,
    /// `None` when the response carried no `contentUrl` (real servers always send it).
    pub(crate) site_content_url: Option<String>,
    pub(crate) user_luid: String,
}

/// A Tableau error body: `<error code="..."><summary/><detail/></error>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiErrorBody {
    pub(crate) code: String,
    pub(crate) summary: String,
    pub(crate) detail: String,
}

/// The sign-in request body and its content type.
pub(crate) fn sign_in_body(
    format: Format,
    jwt: &SecretString,
    content_url: &str,
    uat: bool,
) -> (Vec<u8>, &'static str) {
    match format {
        Format::Xml => {
            let body = format!(
                "<tsRequest><credentials jwt=\"{}\"{}><site contentUrl=\"{}\"/></credentials></tsRequest>",
                quick_xml::escape::escape(jwt.expose_secret()),
                if uat { " isUat=\"true\"" } else { "" },
                quick_xml::escape::escape(content_url),
            );
            (body.into_bytes(), "application/xml")
        }
        Format::Json => {
            let mut value = serde_json::json!({
                "credentials": {
                    "jwt": jwt.expose_secret(),
                    "site": { "contentUrl": content_url },
                }
            });
            if uat {
                value["credentials"]["isUat"] = serde_json::Value::Bool(true);
            }
            (value.to_string().into_bytes(), "application/json")
        }
    }
}

/// The `Accept` header value for a format.
pub(crate) fn accept(format: Format) -> &'static str {
    match format {
        Format::Xml => "application/xml",
        Format::Json => "application/json",
    }
}

enum Syntax {
    Xml,
    Json,
}

fn sniff(body: &[u8]) -> Option<Syntax> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => Some(Syntax::Xml),
        Some(b'{') => Some(Syntax::Json),
        _ => None,
    }
}

fn malformed(what: impl Into<String>) -> TableauError {
    TableauError::Malformed {
        what: scrub(&what.into()),
    }
}

/// Most characters of upstream text kept for a log line.
pub(crate) const MAX_UPSTREAM_CHARS: usize = 200;
/// A run of token characters at least this long that holds a digit is taken for a token or key.
const LONG_RUN: usize = 24;
/// Each of the three dot-separated parts of a JWT-shaped run is at least this long.
const JWT_PART: usize = 8;
const REDACTED: &str = "[redacted]";

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | '=' | '|' | '~' | '%')
}

fn looks_secret(run: &str) -> bool {
    let mut parts = run.split('.');
    let jwt_shaped = run.matches('.').count() >= 2
        && parts.by_ref().take(3).all(|p| {
            p.len() >= JWT_PART
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let long_run = run.len() >= LONG_RUN && run.bytes().any(|b| b.is_ascii_digit());
    jwt_shaped || long_run
}

/// Upstream (Tableau or proxy) text made fit for a log line: anything shaped like a JWT (three
/// base64url parts joined by dots) or a token or key (a long run of base64/hex characters with a
/// digit) is replaced by `[redacted]`, control characters are escaped, and the result is cut to
/// [`MAX_UPSTREAM_CHARS`]. Never sent to callers: they get fixed messages.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_UPSTREAM_CHARS + 16));
    let mut count = 0usize;
    let mut push = |out: &mut String, piece: &str| -> bool {
        for c in piece.chars() {
            if count >= MAX_UPSTREAM_CHARS {
                out.push('…');
                return false;
            }
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
            count += 1;
        }
        true
    };
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        if !run.is_empty() {
            let piece = if looks_secret(run) { REDACTED } else { run };
            if !push(&mut out, piece) {
                return out;
            }
        }
        let mut chars = tail.chars();
        if let Some(c) = chars.next() {
            let mut buf = [0u8; 4];
            if !push(&mut out, c.encode_utf8(&mut buf)) {
                return out;
            }
        }
        rest = chars.as_str();
    }
    out
}

/// Parses a successful sign-in response (XML with or without Tableau's namespace, or JSON).
pub(crate) fn parse_sign_in(body: &[u8]) -> Result<SignInFields, TableauError> {
    let raw = match sniff(body) {
        Some(Syntax::Xml) => {
            let doc = parse_xml(body)?;
            RawSignIn {
                token: doc.token,
                site_luid: doc.site_id,
                site_content_url: doc.site_content_url,
                user_luid: doc.user_id,
            }
        }
        Some(Syntax::Json) => parse_json_sign_in(body)?,
        None if body.is_empty() => return Err(malformed("sign-in response body is empty")),
        None => return Err(malformed("sign-in response body is neither XML nor JSON")),
    };
    let token = raw
        .token
        .filter(|t| !t.expose_secret().is_empty())
        .ok_or_else(|| malformed("sign-in response has no credentials token"))?;
    let site_luid = raw
        .site_luid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("sign-in response has no site id"))?;
    let user_luid = raw
        .user_luid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("sign-in response has no user id"))?;
    Ok(SignInFields {
        token,
        site_luid,
        site_content_url: raw.site_content_url,
        user_luid,
    })
}

/// Parses a Tableau error body; `None` when the body is not one (HTML from a proxy, empty, ...).
pub(crate) fn parse_error(body: &[u8]) -> Option<ApiErrorBody> {
    match sniff(body)? {
        Syntax::Xml => {
            let doc = parse_xml(body).ok()?;
            Some(ApiErrorBody {
                code: doc.error_code.filter(|c| is_error_code(c))?,
                summary: doc.summary.unwrap_or_default().trim().to_owned(),
                detail: doc.detail.unwrap_or_default().trim().to_owned(),
            })
        }
        Syntax::Json => {
            let value: serde_json::Value = serde_json::from_slice(body).ok()?;
            let error = value.get("error")?;
            let code = match error.get("code")? {
                serde_json::Value::String(s) if is_error_code(s) => s.clone(),
                serde_json::Value::Number(n) if is_error_code(&n.to_string()) => n.to_string(),
                _ => return None,
            };
            let text = |key: &str| {
                error
                    .get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            Some(ApiErrorBody {
                code,
                summary: text("summary"),
                detail: text("detail"),
            })
        }
    }
}

/// Tableau's error codes are six digits ("401001"); anything else is not a Tableau error body,
/// and the code travels on to callers (as `tableau_code` and in the reason), so it must be short.
fn is_error_code(code: &str) -> bool {
    (1..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// Turns a non-success response into the error the caller should see. Tableau's summary and
/// detail are scrubbed ([`scrub`]) here, once, so no token quoted back by the server travels
/// further; a retry hint is capped at [`MAX_RETRY_AFTER`](super::MAX_RETRY_AFTER).
pub(crate) fn error_from_response(
    http_status: u16,
    retry_after_header: Option<Duration>,
    body: &[u8],
) -> TableauError {
    let parsed = parse_error(body);
    if http_status == 429 || parsed.as_ref().is_some_and(|e| e.code == "429000") {
        let retry_after = retry_after_header
            .or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|e| retry_after_from_detail(&e.detail))
            })
            .map(|d| d.min(super::MAX_RETRY_AFTER));
        return TableauError::RateLimited { retry_after };
    }
    match parsed {
        Some(e) => TableauError::Api {
            http_status,
            sub_code: sub_code(&e.detail),
            code: e.code,
            summary: scrub(&e.summary),
            detail: scrub(&e.detail),
        },
        None if http_status >= 500 => TableauError::Unavailable { http_status },
        None if (300..400).contains(&http_status) => TableauError::Config {
            what: format!(
                "Tableau answered with a redirect (HTTP {http_status}), which is not followed so the JWT is never sent elsewhere; set the server URL to the address it redirects to"
            ),
        },
        None => malformed(format!("HTTP {http_status} without a Tableau error body")),
    }
}

/// The connected-app code at the end of a detail such as `"Error signing in to Tableau Server
/// (10084)"`.
pub(crate) fn sub_code(detail: &str) -> Option<u32> {
    let inner = detail.trim_end().strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let digits = inner[open + 1..].trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A wait time from a `Retry-After` header: delay-seconds or an HTTP date (relative to `now`; a
/// date in the past means "now").
pub(crate) fn retry_after_header(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A wait time from the words of a 429000 detail, such as "Retry after 30 seconds.".
///
/// A number followed by a unit (ms, s, sec, seconds, min, minutes) wins; otherwise a bare number
/// after "retry", "wait" or "after" is taken as seconds. Anything else (for example "error 429,
/// retry later") gives `None`.
pub(crate) fn retry_after_from_detail(detail: &str) -> Option<Duration> {
    let lower = detail.to_ascii_lowercase();
    let hint_at = ["retry", "wait", "after"]
        .iter()
        .filter_map(|w| lower.find(w))
        .min();
    let bytes = lower.as_bytes();
    let mut fallback = None;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let Ok(n) = lower[start..i].parse::<u64>() else {
            continue;
        };
        let word: String = lower[i..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let unit = match word.as_str() {
            "ms" | "millisecond" | "milliseconds" => Some(Duration::from_millis(n)),
            "s" | "sec" | "secs" | "second" | "seconds" => Some(Duration::from_secs(n)),
            "m" | "min" | "mins" | "minute" | "minutes" => {
                Some(Duration::from_secs(n.saturating_mul(60)))
            }
            _ => None,
        };
        if unit.is_some() {
            return unit;
        }
        if fallback.is_none() && hint_at.is_some_and(|h| h < start) {
            fallback = Some(Duration::from_secs(n));
        }
    }
    fallback
}

struct RawSignIn {
    token: Option<SecretString>,
    site_luid: Option<String>,
    site_content_url: Option<String>,
    user_luid: Option<String>,
}

fn parse_json_sign_in(body: &[u8]) -> Result<RawSignIn, TableauError> {
    // serde_json's messages can quote values; report only where it failed.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        malformed(format!(
            "sign-in response is not valid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let credentials = value
        .get("credentials")
        .ok_or_else(|| malformed("sign-in response has no credentials object"))?;
    let string = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
    Ok(RawSignIn {
        token: credentials
            .get("token")
            .and_then(|v| v.as_str())
            .map(|t| SecretString::from(t.to_owned())),
        site_luid: string(credentials.get("site").and_then(|s| s.get("id"))),
        site_content_url: string(credentials.get("site").and_then(|s| s.get("contentUrl"))),
        user_luid: string(credentials.get("user").and_then(|u| u.get("id"))),
    })
}

/// What the XML walker keeps from a `tsResponse`.
#[derive(Default)]
struct XmlDoc {
    token: Option<SecretString>,
    site_id: Option<String>,
    site_content_url: Option<String>,
    user_id: Option<String>,
    error_code: Option<String>,
    summary: Option<String>,
    detail: Option<String>,
}

/// Where a text node goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TextSlot {
    Summary,
    Detail,
}

/// Walks a `tsResponse` document, matching elements by local name so the `http://tableau.com/api`
/// namespace (default or prefixed) and its absence both work. Fails on syntax errors and on a
/// document that ends before its root closes (a truncated body).
fn parse_xml(body: &[u8]) -> Result<XmlDoc, TableauError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let decoder = reader.decoder();
    let mut doc = XmlDoc::default();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut saw_root = false;
    let xml_err = |e: &dyn std::fmt::Display| {
        malformed(format!(
            "response is not well-formed XML ({e}); it may be truncated"
        ))
    };

    loop {
        let event = reader.read_event().map_err(|e| xml_err(&e))?;
        let (start, is_empty) = match &event {
            Event::Start(s) => (Some(s), false),
            Event::Empty(s) => (Some(s), true),
            _ => (None, false),
        };
        if let Some(start) = start {
            let name = start.local_name().as_ref().to_vec();
            if stack.is_empty() {
                if saw_root {
                    return Err(malformed("response has more than one root element"));
                }
                if name != b"tsResponse" {
                    return Err(malformed("response root element is not tsResponse"));
                }
                saw_root = true;
            }
            let parent = stack.last().map(Vec::as_slice);
            let in_credentials = parent == Some(b"credentials".as_slice()) && stack.len() == 2;
            for attr in start.attributes() {
                let attr = attr.map_err(|e| xml_err(&e))?;
                let key = attr.key.local_name();
                let key = key.as_ref();
                let value = || {
                    attr.decode_and_unescape_value(decoder)
                        .map(|v| v.into_owned())
                        .map_err(|e| xml_err(&e))
                };
                match (name.as_slice(), key) {
                    (b"credentials", b"token") if stack.len() == 1 => {
                        doc.token = Some(SecretString::from(value()?));
                    }
                    (b"site", b"id") if in_credentials => doc.site_id = Some(value()?),
                    (b"site", b"contentUrl") if in_credentials => {
                        doc.site_content_url = Some(value()?);
                    }
                    (b"user", b"id") if in_credentials => doc.user_id = Some(value()?),
                    (b"error", b"code") if stack.len() == 1 => doc.error_code = Some(value()?),
                    _ => {}
                }
            }
            if !is_empty {
                stack.push(name);
            }
            continue;
        }
        let slot = match stack.as_slice() {
            [_, error, leaf] if error == b"error" && leaf == b"summary" => Some(TextSlot::Summary),
            [_, error, leaf] if error == b"error" && leaf == b"detail" => Some(TextSlot::Detail),
            _ => None,
        };
        let piece: Option<String> = match &event {
            Event::End(_) => {
                stack.pop();
                None
            }
            Event::Eof => break,
            Event::Text(t) if slot.is_some() => Some(t.decode().map_err(|e| xml_err(&e))?.into()),
            Event::CData(t) if slot.is_some() => Some(t.decode().map_err(|e| xml_err(&e))?.into()),
            Event::GeneralRef(r) if slot.is_some() => {
                Some(match r.resolve_char_ref().map_err(|e| xml_err(&e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| xml_err(&e))?;
                        match quick_xml::escape::resolve_xml_entity(&name) {
                            Some(s) => s.to_owned(),
                            None => format!("&{name};"),
                        }
                    }
                })
            }
            _ => None,
        };
        if let (Some(slot), Some(piece)) = (slot, piece) {
            let target = match slot {
                TextSlot::Summary => &mut doc.summary,
                TextSlot::Detail => &mut doc.detail,
            };
            target.get_or_insert_with(String::new).push_str(&piece);
        }
    }
    if !saw_root {
        return Err(malformed("response has no tsResponse element"));
    }
    if !stack.is_empty() {
        return Err(malformed(
            "response XML ends before tsResponse closes; it is truncated",
        ));
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGN_IN_NS: &[u8] = br#"<?xml version='1.0' encoding='UTF-8'?>
<tsResponse xmlns="http://tableau.com/api" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://tableau.com/api http://tableau.com/api/ts-api-3.17.xsd">
  <credentials token="12ab34cd56ef78ab90cd12ef34ab56cd" estimatedTimeToExpiration="365:21:13">
    <site id="9a8b7c6d5-e4f3-a2b1-c0d9-e8f7a6b5c4d" contentUrl="mycodotcom"/>
    <user id="9f9e9d9c-8b8a-8f8e-7d7c-7b7a6f6d6e6d"/>
  </credentials>
</tsResponse>"#;

    fn api(body: &[u8]) -> ApiErrorBody {
        parse_error(body).expect("an error body")
    }

    #[test]
    fn sign_in_xml_with_namespace() {
        let s = parse_sign_in(SIGN_IN_NS).unwrap();
        assert_eq!(s.token.expose_secret(), "12ab34cd56ef78ab90cd12ef34ab56cd");
        assert_eq!(s.site_luid, "9a8b7c6d5-e4f3-a2b1-c0d9-e8f7a6b5c4d");
        assert_eq!(s.site_content_url.as_deref(), Some("mycodotcom"));
        assert_eq!(s.user_luid, "9f9e9d9c-8b8a-8f8e-7d7c-7b7a6f6d6e6d");
    }

    #[test]
    fn sign_in_xml_without_namespace_and_default_site() {
        let body = br#"<tsResponse><credentials token="tok&amp;en"><site id="s1" contentUrl=""/><user id="u1"/></credentials></tsResponse>"#;
        let s = parse_sign_in(body).unwrap();
        assert_eq!(s.token.expose_secret(), "tok&en");
        assert_eq!(s.site_content_url.as_deref(), Some(""));
        assert_eq!(s.site_luid, "s1");
        assert_eq!(s.user_luid, "u1");
    }

    #[test]
    fn sign_in_xml_with_prefixed_namespace() {
        let body = br#"<ts:tsResponse xmlns:ts="http://tableau.com/api"><ts:credentials token="t"><ts:site id="s" contentUrl="c"></ts:site><ts:user id="u"/></ts:credentials></ts:tsResponse>"#;
        let s = parse_sign_in(body).unwrap();
        assert_eq!(s.token.expose_secret(), "t");
        assert_eq!(s.site_content_url.as_deref(), Some("c"));
    }

    #[test]
    fn sign_in_json() {
        let body = br#"{"credentials":{"token":"abc","site":{"id":"s","contentUrl":"c"},"user":{"id":"u"},"estimatedTimeToExpiration":"1:00:00"}}"#;
        let s = parse_sign_in(body).unwrap();
        assert_eq!(s.token.expose_secret(), "abc");
        assert_eq!(s.site_luid, "s");
        assert_eq!(s.site_content_url.as_deref(), Some("c"));
        assert_eq!(s.user_luid, "u");
    }

    #[test]
    fn sign_in_missing_parts_are_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"<tsResponse><credentials><site id="s" contentUrl=""/><user id="u"/></credentials></tsResponse>"#,
                "token",
            ),
            (
                br#"<tsResponse><credentials token=""><site id="s" contentUrl=""/><user id="u"/></credentials></tsResponse>"#,
                "token",
            ),
            (
                br#"<tsResponse><credentials token="t"><site contentUrl=""/><user id="u"/></credentials></tsResponse>"#,
                "site id",
            ),
            (
                br#"<tsResponse><credentials token="t"><site id="s"/></credentials></tsResponse>"#,
                "user id",
            ),
            (
                br#"{"credentials":{"site":{"id":"s"},"user":{"id":"u"}}}"#,
                "token",
            ),
            (br#"{"token":"t"}"#, "credentials"),
            (b"", "empty"),
            (b"<html><body>Bad gateway</body></html>", "tsResponse"),
            (b"Service Unavailable", "neither"),
        ];
        for (body, needle) in cases {
            match parse_sign_in(body) {
                Err(TableauError::Malformed { what }) => {
                    assert!(what.contains(needle), "{what:?} lacks {needle:?}");
                }
                other => panic!(
                    "expected Malformed for {:?}, got {other:?}",
                    String::from_utf8_lossy(body)
                ),
            }
        }
    }

    #[test]
    fn truncated_bodies_are_malformed() {
        let after_credentials = SIGN_IN_NS
            .windows(b"</credentials>".len())
            .position(|w| w == b"</credentials>")
            .unwrap()
            + b"</credentials>".len();
        for cut in [
            40,
            100,
            after_credentials,
            SIGN_IN_NS.len() - 5,
            SIGN_IN_NS.len() - 1,
        ] {
            let r = parse_sign_in(&SIGN_IN_NS[..cut]);
            assert!(
                matches!(r, Err(TableauError::Malformed { .. })),
                "cut at {cut}: {r:?}"
            );
        }
        let json = br#"{"credentials":{"token":"abc","site":{"id":"s"#;
        assert!(matches!(
            parse_sign_in(json),
            Err(TableauError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_messages_never_echo_the_token() {
        let json = br#"{"credentials":{"token":"SECRET-TOKEN","site":"SECRET-TOKEN""#;
        let xml = br#"<tsResponse><credentials token="SECRET-TOKEN"><site id="s" contentUrl=""/></credentials>"#;
        for body in [&json[..], &xml[..]] {
            let e = parse_sign_in(body).unwrap_err();
            assert!(!e.to_string().contains("SECRET"), "{e}");
            assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
        }
    }

    #[test]
    fn error_xml_with_sub_codes() {
        for (sub, want) in [
            ("10084", Some(10084)),
            ("16", Some(16)),
            ("10085", Some(10085)),
        ] {
            let body = format!(
                r#"<?xml version='1.0' encoding='UTF-8'?><tsResponse xmlns="http://tableau.com/api"><error code="401001"><summary>Signin Error</summary><detail>Error signing in to Tableau Server ({sub})</detail></error></tsResponse>"#
            );
            let e = error_from_response(401, None, body.as_bytes());
            assert_eq!(
                e,
                TableauError::Api {
                    http_status: 401,
                    code: "401001".into(),
                    sub_code: want,
                    summary: "Signin Error".into(),
                    detail: format!("Error signing in to Tableau Server ({sub})"),
                }
            );
        }
    }

    #[test]
    fn error_without_sub_code() {
        let body = br#"<tsResponse><error code="401001"><summary>Signin Error</summary><detail>Error signing in to Tableau Server</detail></error></tsResponse>"#;
        let e = error_from_response(401, None, body);
        assert_eq!(e.sub_code(), None);
        assert_eq!(e.code(), Some("401001"));
    }

    #[test]
    fn error_text_with_entities_and_whitespace() {
        let body = b"<tsResponse xmlns=\"http://tableau.com/api\">\n  <error code=\"401002\">\n    <summary>Unauthorized Access</summary>\n    <detail>Scope &quot;tableau:views:download&quot; &amp; more &#x28;x&#41; (5)</detail>\n  </error>\n</tsResponse>";
        let e = api(body);
        assert_eq!(e.code, "401002");
        assert_eq!(e.summary, "Unauthorized Access");
        assert_eq!(e.detail, "Scope \"tableau:views:download\" & more (x) (5)");
        assert_eq!(sub_code(&e.detail), Some(5));
    }

    #[test]
    fn error_json_code_as_string_or_number() {
        let body = br#"{"error":{"summary":"Signin Error","detail":"Error signing in to Tableau Server (10084)","code":"401001"}}"#;
        let e = error_from_response(401, None, body);
        assert_eq!(e.sub_code(), Some(10084));
        assert_eq!(e.code(), Some("401001"));
        let body = br#"{"error":{"summary":"S","detail":"D (16)","code":401001}}"#;
        assert_eq!(api(body).code, "401001");
        assert_eq!(error_from_response(401, None, body).sub_code(), Some(16));
    }

    #[test]
    fn rate_limit_from_code_with_retry_detail() {
        let body = br#"<tsResponse xmlns="http://tableau.com/api"><error code="429000"><summary>Too Many Requests</summary><detail>Too many requests. Retry after 30 seconds.</detail></error></tsResponse>"#;
        assert_eq!(
            error_from_response(429, None, body),
            TableauError::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        // Code 429000 even when the proxy changed the status.
        assert_eq!(
            error_from_response(400, None, body),
            TableauError::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        // The header wins over the detail.
        assert_eq!(
            error_from_response(429, Some(Duration::from_secs(7)), body),
            TableauError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        // Bare 429 with no body and no header.
        assert_eq!(
            error_from_response(429, None, b""),
            TableauError::RateLimited { retry_after: None }
        );
    }

    #[test]
    fn retry_after_detail_heuristics() {
        let d = retry_after_from_detail;
        assert_eq!(d("Retry after 30 seconds."), Some(Duration::from_secs(30)));
        assert_eq!(d("retry in 2 min"), Some(Duration::from_secs(120)));
        assert_eq!(d("wait 1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(d("Please retry after 12"), Some(Duration::from_secs(12)));
        assert_eq!(
            d("Error 429: retry after 5 s"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(d("Error 429, retry later"), None);
        assert_eq!(d("Too many requests"), None);
        assert_eq!(d(""), None);
        assert_eq!(d("retry after 99999999999999999999999 seconds"), None);
    }

    #[test]
    fn retry_after_header_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            retry_after_header(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after_header("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after_header("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after_header("soon", now), None);
        assert_eq!(retry_after_header("", now), None);
        assert_eq!(retry_after_header("-5", now), None);
    }

    #[test]
    fn unparseable_errors_by_status() {
        assert_eq!(
            error_from_response(503, None, b"<html>Service Unavailable</html>"),
            TableauError::Unavailable { http_status: 503 }
        );
        assert_eq!(
            error_from_response(502, None, b""),
            TableauError::Unavailable { http_status: 502 }
        );
        assert!(matches!(
            error_from_response(404, None, b"Not Found"),
            TableauError::Malformed { what } if what.contains("404")
        ));
        assert!(matches!(
            error_from_response(302, None, b""),
            TableauError::Config { what } if what.contains("redirect")
        ));
        // A parseable error on a 5xx stays an API error, and is retryable.
        let body = br#"<tsResponse><error code="500000"><summary>Internal Server Error</summary><detail>oops</detail></error></tsResponse>"#;
        let e = error_from_response(500, None, body);
        assert_eq!(e.code(), Some("500000"));
        assert!(e.is_retryable());
        // An error element without a code is not a Tableau error body.
        let body = br#"<tsResponse><error><summary>x</summary></error></tsResponse>"#;
        assert_eq!(parse_error(body), None);
    }

    #[test]
    fn sub_code_parsing() {
        assert_eq!(
            sub_code("Error signing in to Tableau Server (10084)"),
            Some(10084)
        );
        assert_eq!(sub_code("x (16)  "), Some(16));
        assert_eq!(sub_code("x ( 67 )"), Some(67));
        assert_eq!(sub_code("x (abc)"), None);
        assert_eq!(sub_code("x ()"), None);
        assert_eq!(sub_code("x (10084) trailing"), None);
        assert_eq!(sub_code("x (99999999999)"), None);
        assert_eq!(sub_code(""), None);
    }

    #[test]
    fn xml_request_escapes_attributes() {
        let jwt = SecretString::from("a.b.c".to_owned());
        let (body, ct) = sign_in_body(Format::Xml, &jwt, r#"we"ird&<site>'"#, false);
        assert_eq!(ct, "application/xml");
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            body,
            r#"<tsRequest><credentials jwt="a.b.c"><site contentUrl="we&quot;ird&amp;&lt;site&gt;&apos;"/></credentials></tsRequest>"#
        );
        // And it round-trips through an XML parser to the same values.
        let mut reader = quick_xml::Reader::from_str(&body);
        let mut seen = Vec::new();
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) | Event::Empty(e) => {
                    for a in e.attributes() {
                        seen.push(a.unwrap().unescape_value().unwrap().into_owned());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(
            seen,
            vec!["a.b.c".to_owned(), r#"we"ird&<site>'"#.to_owned()]
        );
    }

    #[test]
    fn json_request_body() {
        let jwt = SecretString::from("h.p.s".to_owned());
        let (body, ct) = sign_in_body(Format::Json, &jwt, "my\"site", false);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"credentials":{"jwt":"h.p.s","site":{"contentUrl":"my\"site"}}})
        );
        assert_eq!(accept(Format::Json), "application/json");
        assert_eq!(accept(Format::Xml), "application/xml");
    }

    #[test]
    fn upstream_text_is_scrubbed_cut_and_retry_after_capped() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtcmVuZGVyZXIifQ.c2lnbmF0dXJlLXZhbHVlLWhlcmU";
        let token = "HvZMqFFfQQmOM4L-AZNIQA|5fI6T54OGqxlb0XkWbE6SbwXPMBD9Vov";
        let body = format!(
            "<tsResponse><error code=\"401001\"><summary>Signin Error for {jwt}</summary><detail>token {token} hex 0123456789abcdef0123456789abcdef\nforged line</detail></error></tsResponse>"
        );
        let e = error_from_response(401, None, body.as_bytes());
        let text = e.to_string();
        for secret in [jwt, token, "0123456789abcdef0123456789abcdef", "eyJ"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("Signin Error for [redacted]"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let long = format!(
            "<tsResponse><error code=\"401001\"><summary>{}</summary><detail>x (10084)</detail></error></tsResponse>",
            "word ".repeat(10_000)
        );
        match error_from_response(401, None, long.as_bytes()) {
            TableauError::Api {
                summary, sub_code, ..
            } => {
                assert!(
                    summary.chars().count() <= MAX_UPSTREAM_CHARS + 1,
                    "{}",
                    summary.len()
                );
                assert_eq!(sub_code, Some(10084));
            }
            other => panic!("{other:?}"),
        }
        // Ordinary words, versions and short hosts survive.
        assert_eq!(
            scrub("Error signing in to Tableau Server 3.22 (10084)"),
            "Error signing in to Tableau Server 3.22 (10084)"
        );
        // A code that is not a Tableau code means the body is not a Tableau error.
        let odd = "<tsResponse><error code=\"x'; drop\"><summary>s</summary></error></tsResponse>";
        assert!(!matches!(
            error_from_response(401, None, odd.as_bytes()),
            TableauError::Api { .. }
        ));
        let day = Duration::from_secs(86_400);
        assert_eq!(
            error_from_response(429, Some(day), b""),
            TableauError::RateLimited {
                retry_after: Some(super::super::MAX_RETRY_AFTER)
            }
        );
        let detail = b"<tsResponse><error code=\"429000\"><summary>s</summary><detail>Retry after 99999 minutes.</detail></error></tsResponse>";
        assert_eq!(
            error_from_response(429, None, detail),
            TableauError::RateLimited {
                retry_after: Some(super::super::MAX_RETRY_AFTER)
            }
        );
    }
}
