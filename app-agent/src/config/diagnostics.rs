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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.position) {
            (Origin::File(path), Some((line, col))) => write!(
                f,
                "invalid configuration: {}:{line}:{col}: {}",
                path.display(),
                self.message
            )?,
            (Origin::File(path), None) => write!(
                f,
                "invalid configuration: {}: {}",
                path.display(),
                self.message
            )?,
            (Origin::Override(text), _) => {
                write!(f, "invalid override `{text}`: {}", self.message)?
            }
        }
        if let (Some((line, col)), Some(text)) = (self.position, &self.line_text) {
            let number = line.to_string();
            let pad = " ".repeat(number.len());
            write!(
                f,
                "\n {pad} |\n {number} | {text}\n {pad} | {}{}",
                " ".repeat(col.saturating_sub(1)),
                "^".repeat(self.span_len.max(1))
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n help: {help}")?;
        }
        Ok(())
    }
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
        message: format!("unknown {what} `{name}`"),
        help: Some(help),
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
