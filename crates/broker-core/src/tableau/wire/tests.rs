//! Unit tests of `wire`.
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
