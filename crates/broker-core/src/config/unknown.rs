//! Unknown and misspelled keys, reported with every other problem in the file.
//!
//! The raw configuration refuses unknown fields (a misspelled `deny_scopes` must never be
//! ignored). The TOML parser stops at the first one, which would hide every other problem. So
//! each unknown key is recorded at its line, with a "did you mean" from the keys its table takes,
//! and blanked out (spaces, newlines kept, so every later line number stays right); the parse
//! is tried again, and the file is still refused with all of them listed.

use super::Issue;
use super::raw::RawConfig;

/// More unknown keys than this in one file: the file is likely not a broker configuration, and
/// the parser's own message is shown for the rest.
const MAX_UNKNOWN: usize = 32;

/// Parses `text`, collecting each unknown key as an [`Issue`] instead of stopping at the first.
/// Any other TOML error is returned as the parser gave it.
pub(super) fn parse(text: &str) -> Result<(RawConfig, Vec<Issue>), toml::de::Error> {
    let mut text = text.to_owned();
    let mut unknown = Vec::new();
    loop {
        let e = match toml::from_str::<RawConfig>(&text) {
            Ok(raw) => return Ok((raw, unknown)),
            Err(e) => e,
        };
        let (Some((key, expected)), Some(span)) = (unknown_field(e.message()), e.span()) else {
            return Err(e);
        };
        if unknown.len() == MAX_UNKNOWN || span.start >= text.len() {
            return Err(e);
        }
        let line = text[..span.start].matches('\n').count() + 1;
        let table = table_of(&text, span.start);
        let mut message = format!("unknown key {} in {table}", crate::echo::quoted(&key));
        match suggest(&key, &expected) {
            Some(s) => message.push_str(&format!("; did you mean {}?", crate::echo::quoted(s))),
            None if expected.is_empty() => message.push_str("; this table takes no keys"),
            None => message.push_str(&format!(
                "; it takes: {}",
                expected
                    .iter()
                    .map(|k| crate::echo::quoted(k).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        unknown.push(Issue {
            at: format!("line {line}"),
            message,
        });
        if !blank(&mut text, span.start) {
            return Err(e);
        }
    }
}

/// The key and the expected keys of serde's "unknown field `k`, expected one of `a`, `b`".
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split_once("unknown field `")?.1;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((key.to_owned(), expected))
}

/// The closest expected key, when it is close enough to be a misspelling.
fn suggest<'a>(key: &str, expected: &'a [String]) -> Option<&'a str> {
    expected
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.as_str())
}

/// The table header in force at `at` (`[sites.finance]`), or "the top level".
fn table_of(text: &str, at: usize) -> String {
    text[..at]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map_or_else(
            || "the top level".to_owned(),
            |l| l.split('#').next().unwrap_or(l).trim().to_owned(),
        )
}

/// Blanks the entry whose key starts at `at`: a `key = value` (with a value over several lines,
/// until its brackets close), or a whole `[table]` with its keys. Newlines are kept. False when
/// nothing could be blanked.
fn blank(text: &mut String, at: usize) -> bool {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let header = text[start..].trim_start().starts_with('[');
    let mut end = start;
    let mut depth: i32 = 0;
    let mut first = true;
    for line in text[start..].split_inclusive('\n') {
        let body = line.split('#').next().unwrap_or(line).trim();
        if header {
            if !first && body.starts_with('[') {
                break;
            }
        } else {
            if !first && depth <= 0 {
                break;
            }
            depth += body.matches(['[', '{']).count() as i32;
            depth -= body.matches([']', '}']).count() as i32;
        }
        first = false;
        end += line.len();
    }
    if end <= start {
        return false;
    }
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blanked);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
development = true

[cache]
max_entries = 10

[sites.finance]
server_url = "https://tableau.example.com/"
content_url = "finance"
[sites.finance.connected_app]
client_id = "cid"
secret_id = "sid"
secret = "a-development-secret-of-at-least-32-bytes"
"#;

    #[test]
    fn each_unknown_key_is_located_with_a_suggestion() {
        let text = GOOD
            .replace(
                "max_entries = 10",
                "max_entries = 10\nmax_entires = [\n  1,\n  2,\n]",
            )
            .replace(
                "content_url = \"finance\"",
                "content_url = \"finance\"\ncontnt_url = \"x\"",
            );
        let (raw, unknown) = parse(&text).unwrap();
        assert_eq!(raw.cache.max_entries, Some(10));
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        assert_eq!(unknown[0].at, "line 7");
        assert!(
            unknown[0].message.contains("max_entires")
                && unknown[0].message.contains("[cache]")
                && unknown[0].message.contains("did you mean \"max_entries\""),
            "{unknown:?}"
        );
        assert_eq!(unknown[1].at, "line 15");
        assert!(
            unknown[1].message.contains("did you mean \"content_url\""),
            "{unknown:?}"
        );
    }

    #[test]
    fn a_misspelled_table_is_one_problem_and_other_errors_still_stop() {
        let text = format!("{GOOD}\n[cahce]\nmax_entries = 1\nsafety_margin = \"1m\"\n");
        let (_, unknown) = parse(&text).unwrap();
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert!(
            unknown[0].message.contains("did you mean \"cache\""),
            "{unknown:?}"
        );
        // A wrong type is not an unknown key: the parser's message stands.
        let wrong = GOOD.replace("max_entries = 10", "max_entries = \"ten\"");
        assert!(parse(&wrong).is_err());
    }
}
