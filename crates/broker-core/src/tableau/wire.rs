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
mod tests;
