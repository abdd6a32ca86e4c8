//! The one way caller input and upstream text are echoed into an error message or a log line:
//! bounded, escaped, and quoted where it is a value. Kept apart from the input bounds so that the
//! error type and the bounds can both use it without depending on each other.

use std::fmt::{self, Write as _};

/// Most characters of one input echoed into an error or a log line; the rest is cut.
pub const ECHO_MAX_CHARS: usize = 100;
/// "Did you mean" suggestions are computed only for inputs up to this length: the edit distance
/// costs the product of the lengths, and a long input is not a typo.
pub const MAX_SUGGEST_BYTES: usize = 64;

/// Caller input made safe to print: at most [`ECHO_MAX_CHARS`] characters, control characters
/// (newlines, escape sequences, NUL) escaped so a crafted value cannot forge or hide a log line,
/// and the original length noted when it was cut. Use it for every input echoed into an error or
/// a log line.
#[derive(Clone, Copy)]
pub struct Echo<'a> {
    text: &'a str,
    quoted: bool,
}

/// Input to print bare (log fields): `svc-renderer`, `a\nb`.
pub fn echo(text: &str) -> Echo<'_> {
    Echo {
        text,
        quoted: false,
    }
}

/// Input to print in double quotes (error messages): `"svc-renderer"`, with `"` and `\` escaped.
pub fn quoted(text: &str) -> Echo<'_> {
    Echo { text, quoted: true }
}

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.quoted {
            f.write_char('"')?;
        }
        let mut chars = self.text.chars();
        for c in chars.by_ref().take(ECHO_MAX_CHARS) {
            match c {
                '"' | '\\' if self.quoted => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                c if c.is_control() || is_invisible_separator(c) => {
                    write!(f, "{}", c.escape_default())?;
                }
                c => f.write_char(c)?,
            }
        }
        let cut = chars.next().is_some();
        if cut {
            f.write_str("…")?;
        }
        if self.quoted {
            f.write_char('"')?;
        }
        if cut {
            write!(f, " ({} bytes)", self.text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&quoted(self.text), f)
    }
}

/// Line and paragraph separators and bidi controls end or reorder a line on some terminals.
pub(crate) fn is_invisible_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An error and its causes on one line, each cause once: some messages already quote their source,
/// and a reader should see the whole story without repeats.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
