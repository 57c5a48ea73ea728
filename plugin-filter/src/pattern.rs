//! A pattern on one field of a point: a glob (`*` any run, `?` any one
//! character; the common case, and what other plugins' selectors use), or,
//! where a glob cannot say it (alternatives, character classes, anchors
//! inside), a regular expression written `regex:<expression>`. Either
//! matches the whole text.

use alumet_kernelfs::glob::Glob;
use regex::Regex;

/// The prefix that makes a pattern a regular expression.
pub const REGEX_PREFIX: &str = "regex:";

/// Why a pattern is refused.
#[derive(Debug, thiserror::Error)]
#[error("\"{pattern}\" is not a valid regular expression: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// The regex crate's explanation.
    pub reason: String,
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `*` or `?` wildcards, or a literal.
    Glob(Glob),
    /// A regular expression, anchored at both ends.
    Regex(Regex),
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Result<Self, PatternError> {
        match text.strip_prefix(REGEX_PREFIX) {
            Some(re) => Regex::new(&format!("^(?:{re})$"))
                .map(Pattern::Regex)
                .map_err(|e| PatternError {
                    pattern: text.to_owned(),
                    reason: e.to_string(),
                }),
            None => Ok(Pattern::Glob(Glob::new(text))),
        }
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Glob(g) => g.matches(text.as_bytes()),
            Pattern::Regex(r) => r.is_match(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_regexes_match_the_whole_text() {
        let g = Pattern::new("rapl_*").unwrap();
        assert!(g.matches("rapl_consumed_energy"));
        assert!(!g.matches("xrapl_"));
        let r = Pattern::new("regex:cpu_(time|usage)").unwrap();
        assert!(r.matches("cpu_time") && r.matches("cpu_usage"));
        assert!(!r.matches("process_cpu_time"), "anchored");
        let e = Pattern::new("regex:(").unwrap_err().to_string();
        assert!(e.contains("\"regex:(\""), "{e}");
    }
}
