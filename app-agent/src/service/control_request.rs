//! The control socket's protocol: one request line, parsed into a
//! [`Request`] before anything runs, so that what a client sends is read in
//! one place (and fuzzed: `fuzz-targets`'s `control_request`).

use std::time::Duration;

/// One request of `alumet-agent ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `status`: the counters.
    Status,
    /// `pause PATTERN`.
    Pause(&'a str),
    /// `resume PATTERN`.
    Resume(&'a str),
    /// `set-interval PATTERN DURATION`.
    SetInterval(&'a str, Duration),
    /// `trigger [PATTERN]` (`*` when absent).
    Trigger(&'a str),
    /// `reopen`: every output flushes and reopens its files.
    Reopen,
    /// `reload`: as SIGHUP, waiting for the outcome.
    Reload,
}

/// What [`parse`] says of a line it cannot take.
const EXPECTED: &str = "expected status, pause SOURCE, resume SOURCE, set-interval SOURCE DURATION, trigger [SOURCE], reopen or reload";

/// The request in `line` (surrounding whitespace ignored); `Err`: what is
/// wrong with it, the line's value cut short.
pub fn parse(line: &str) -> Result<Request<'_>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["status"] => Request::Status,
        ["pause", pattern] => Request::Pause(pattern),
        ["resume", pattern] => Request::Resume(pattern),
        ["set-interval", pattern, interval] => match alumet::config::parse_duration(interval) {
            // An interval the agent cannot poll at is refused, as in the config.
            Ok(d) => match alumet::limits::POLL_INTERVAL.check("interval", d) {
                Ok(()) => Request::SetInterval(pattern, d),
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => {
                return Err(format!(
                    "invalid interval {}: {}",
                    alumet::limits::shown(interval),
                    alumet::limits::shown(&e)
                ))
            }
        },
        ["trigger"] => Request::Trigger("*"),
        ["trigger", pattern] => Request::Trigger(pattern),
        ["reopen"] => Request::Reopen,
        ["reload"] => Request::Reload,
        _ => {
            return Err(format!(
                "unknown request {:?}; {EXPECTED}",
                alumet::limits::shown(line.trim())
            ))
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_and_mistakes_said_briefly() {
        assert_eq!(parse(" status \n"), Ok(Request::Status));
        assert_eq!(parse("trigger"), Ok(Request::Trigger("*")));
        assert_eq!(
            parse("set-interval procfs/* 100ms"),
            Ok(Request::SetInterval("procfs/*", Duration::from_millis(100)))
        );
        // An interval the agent cannot poll at is refused, as in the config.
        let e = parse("set-interval procfs/* 1ns").unwrap_err();
        assert!(
            e.contains("between \"1ms\" and \"24h\"; got \"1ns\""),
            "{e}"
        );
        assert!(parse("set-interval procfs/* fast")
            .unwrap_err()
            .contains("invalid interval"));
        let huge = format!("pause {}", "x".repeat(100_000));
        assert!(matches!(parse(&huge), Ok(Request::Pause(_))));
        let e = parse(&"y".repeat(100_000)).unwrap_err();
        assert!(e.len() < 300, "{}", e.len());
        assert!(parse("").is_err());
    }
}
