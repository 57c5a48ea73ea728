//! Configuration errors as people want to read them: file, line, column,
//! the offending line, and the closest valid name.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::suggest::closest;

/// Where a configuration problem came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The config file.
    File(PathBuf),
    /// A `--set` (or `--plugins`/`--output-file`) override on the command line.
    Override(String),
}

/// An invalid configuration, ready to print. The agent exits with code 2.
#[derive(Debug)]
pub struct ConfigDiagnostic {
    /// Where.
    pub origin: Origin,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The text of that line, when known.
    pub line_text: Option<String>,
    /// Length of the offending token (for the caret line).
    pub span_len: usize,
    /// What is wrong.
    pub message: String,
    /// "did you mean ..." or an example of a valid value.
    pub help: Option<String>,
}

impl fmt::Display for ConfigDiagnostic {
    /// Long values (a 5 MB string) are cut wherever they appear, so that a
    /// mistake gives a few lines in the journal, not megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = cut_long_words(&self.message);
        match (&self.origin, self.position) {
            (Origin::File(path), Some((line, col))) => write!(
                f,
                "invalid configuration: {}:{line}:{col}: {message}",
                path.display(),
            )?,
            (Origin::File(path), None) => {
                write!(f, "invalid configuration: {}: {message}", path.display(),)?
            }
            (Origin::Override(text), _) => {
                write!(f, "invalid override `{}`: {message}", cut_long_words(text))?
            }
        }
        if let (Some((line, col)), Some(text)) = (self.position, &self.line_text) {
            let number = line.to_string();
            let pad = " ".repeat(number.len());
            let (text, col, caret) = line_window(text, col, self.span_len.max(1));
            write!(
                f,
                "\n {pad} |\n {number} | {text}\n {pad} | {}{}",
                " ".repeat(col.saturating_sub(1)),
                "^".repeat(caret)
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n help: {}", cut_long_words(help))?;
        }
        Ok(())
    }
}

/// Most characters of a message, a backstop behind [`cut_long_words`].
const MESSAGE_MAX_CHARS: usize = 2048;
/// Characters of the offending line shown before and after its column.
const LINE_BEFORE: usize = 40;
const LINE_AFTER: usize = 60;

/// `text` with every long word (a value quoted whole) cut by
/// [`alumet::limits::shown`], and at most [`MESSAGE_MAX_CHARS`] in all.
pub fn cut_long_words(text: &str) -> String {
    let mut out = String::new();
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&alumet::limits::shown(word));
    }
    if out.chars().count() > MESSAGE_MAX_CHARS {
        let cut: String = out.chars().take(MESSAGE_MAX_CHARS).collect();
        return format!("{cut}… ({} bytes in all)", text.len());
    }
    out
}

/// The part of a long line around 1-based column `col`, with the column
/// and caret length in that part.
fn line_window(text: &str, col: usize, caret: usize) -> (String, usize, usize) {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= LINE_BEFORE + LINE_AFTER {
        return (text.to_owned(), col, caret);
    }
    let at = col.saturating_sub(1).min(chars.len());
    let start = at.saturating_sub(LINE_BEFORE);
    let end = (at + LINE_AFTER).min(chars.len());
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push('…');
    }
    let col = at - start + 1 + usize::from(start > 0);
    (shown, col, caret.min(end - at).max(1))
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The backticked names after "expected" in a serde message such as
/// "unknown field `x`, expected one of `a`, `b`" or "expected `a` or `b`".
fn expected_names(message: &str) -> Vec<&str> {
    let Some(start) = message.find("expected") else {
        return Vec::new();
    };
    message[start..].split('`').skip(1).step_by(2).collect()
}

/// The first backticked name in a message (the unknown field itself).
fn first_backticked(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

/// Builds a diagnostic from a TOML/serde error on `text`.
pub fn from_toml_error(origin: Origin, text: &str, error: &toml::de::Error) -> ConfigDiagnostic {
    from_toml_error_also_valid(origin, text, error, &[])
}

/// [`from_toml_error`] where `also_valid` are names valid beside those the
/// error expects (a plugin's section also takes `enabled`, which the agent
/// reads before the plugin sees the section).
pub fn from_toml_error_also_valid(
    origin: Origin,
    text: &str,
    error: &toml::de::Error,
    also_valid: &[&str],
) -> ConfigDiagnostic {
    let message = error.message().trim().to_owned();
    let (position, line_text, span_len) = match error.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let line_text = text.lines().nth(line - 1).map(str::to_owned);
            let len = text
                .get(span.clone())
                .map(|s| s.lines().next().unwrap_or("").chars().count())
                .unwrap_or(1);
            (Some((line, col)), line_text, len)
        }
        None => (None, None, 1),
    };
    let mut help = None;
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        if let Some(unknown) = first_backticked(&message) {
            let mut names = expected_names(&message);
            if message.starts_with("unknown field") {
                for name in also_valid {
                    if !names.contains(name) {
                        names.push(name);
                    }
                }
            }
            help = match closest(unknown, names.iter().copied()) {
                Some(best) => Some(format!("did you mean `{best}`?")),
                None if !names.is_empty() => Some(format!("valid names: {}", names.join(", "))),
                None => None,
            };
        }
    } else if message.contains("expected a map") {
        help =
            Some("this key holds a table: `key = { a = 1 }`, or a `[section.key]` header".into());
    }
    // Other messages (wrong type, bad duration) already say what is expected.
    ConfigDiagnostic {
        origin,
        position,
        line_text,
        span_len,
        message,
        help,
    }
}

/// A diagnostic about a name (plugin, section) that is not known.
pub fn unknown_name(
    origin: Origin,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    what: &str,
    name: &str,
    valid: &[&str],
) -> ConfigDiagnostic {
    let (position, line_text) = match &span {
        Some(s) => {
            let (line, col) = line_col(text, s.start);
            (
                Some((line, col)),
                text.lines().nth(line - 1).map(str::to_owned),
            )
        }
        None => (None, None),
    };
    let help = match closest(name, valid.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? (valid: {})", valid.join(", ")),
        None => format!("valid names: {}", valid.join(", ")),
    };
    ConfigDiagnostic {
        origin,
        position,
        line_text,
        span_len: span.map(|s| s.len()).unwrap_or(1),
        message: format!("unknown {what} `{}`", alumet::limits::shown(name)),
        help: Some(help),
    }
}

/// A diagnostic about the value of `path` (e.g. `["agent",
/// "output_queue_capacity"]`), found after the document was read (a range,
/// two keys that disagree): it points at the value's line when the
/// document sets it.
pub fn at_key(
    origin: Origin,
    document: &alumet::plugin::ParsedDocument<'_>,
    text: &str,
    path: &[&str],
    message: String,
) -> ConfigDiagnostic {
    let span = match origin {
        Origin::File(_) => document.span_of(path),
        // Positions in text rewritten by overrides mean nothing to the user.
        Origin::Override(_) => None,
    };
    let (position, line_text, span_len) = match span {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            let len = text
                .get(span)
                .map(|s| s.lines().next().unwrap_or("").chars().count())
                .unwrap_or(1);
            (
                Some((line, col)),
                text.lines().nth(line - 1).map(str::to_owned),
                len,
            )
        }
        None => (None, None, 1),
    };
    ConfigDiagnostic {
        origin,
        position,
        line_text,
        span_len,
        message,
        help: None,
    }
}

/// Shorthand for the file origin.
pub fn file(path: &Path) -> Origin {
    Origin::File(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
    }

    #[test]
    fn a_huge_value_gives_a_short_message() {
        let value = "9".repeat(5_000_000);
        let text = format!("[agent]\nx = \"{value}\"\n");
        let d = ConfigDiagnostic {
            origin: Origin::File("a.toml".into()),
            position: Some((2, 5)),
            line_text: text.lines().nth(1).map(str::to_owned),
            span_len: value.len() + 2,
            message: format!("invalid duration \"{value}\": missing unit"),
            help: Some(format!("not `{value}`")),
        };
        let shown = d.to_string();
        assert!(
            shown.len() < 600,
            "{} bytes: {}",
            shown.len(),
            &shown[..600]
        );
        assert!(shown.contains("(5000002 bytes in all)"), "{shown}");
        assert!(shown.contains(" 2 | x = \"999"), "{shown}");
        // The caret stays under the value.
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[3].find('^'), Some(lines[2].find('"').unwrap()));
    }

    #[test]
    fn expected_names_are_extracted() {
        let m = "unknown field `pol`, expected one of `poll_interval`, `flush_interval`";
        assert_eq!(expected_names(m), vec!["poll_interval", "flush_interval"]);
        assert_eq!(first_backticked(m), Some("pol"));
        assert_eq!(
            expected_names("unknown field `x`, expected `a` or `b`"),
            vec!["a", "b"]
        );
    }
}
