//! Byte-level parsers for kernel pseudo-files (no UTF-8 check, no
//! allocation): they return `None` for anything odd so that a reader can
//! skip a line instead of failing.

/// Fields of a line separated by ASCII whitespace (runs count as one).
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// A decimal unsigned integer, `None` on anything else or on overflow.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(value)
}

/// A decimal u32.
pub fn parse_u32(digits: &[u8]) -> Option<u32> {
    parse_u64(digits).and_then(|v| u32::try_from(v).ok())
}

/// Parses a `key value` line such as `ctxt 123` (/proc/stat) or `usage_usec 42` (cpu.stat).
pub fn parse_key_value(line: &[u8]) -> Option<(&[u8], u64)> {
    let mut it = fields(line);
    let key = it.next()?;
    let value = parse_u64(it.next()?)?;
    Some((key, value))
}

/// Strips ASCII whitespace on both sides.
pub fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

/// Lines of a file's content, without their `\n`.
pub fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    content.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_key_values() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(
            parse_key_value(b"usage_usec 42"),
            Some((&b"usage_usec"[..], 42))
        );
        assert_eq!(parse_key_value(b"usage_usec"), None);
        assert_eq!(trim(b"  x \n"), b"x");
        assert_eq!(lines(b"a\n\nb\n").count(), 2);
    }
}
