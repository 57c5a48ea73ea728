//! Byte-level formatting for the CSV hot path: integers, RFC 3339
//! timestamps and quoted fields, written into a reused `Vec<u8>` without
//! allocating.

/// Appends the decimal form of `v`.
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the decimal form of `v`.
pub fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Appends `v` with exactly `width` digits, zero-padded (`v` must fit).
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Appends the shortest decimal form that reads back as the same `v`
/// (Rust's `Display`: never an exponent; `NaN`, `inf`, `-inf` otherwise).
pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    // Whole values (most CPU times and usages of idle processes are 0)
    // print as the integer they are, without the formatting machinery;
    // -0 keeps its sign as `Display` does. Below 2^53 the conversion is exact.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT && !(v == 0.0 && v.is_sign_negative()) {
        push_i64(out, v as i64);
        return;
    }
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// The proleptic Gregorian date of a day counted from 1970-01-01:
/// (year, month 1-12, day 1-31).
///
/// Works in 400-year eras starting on March 1st, so that the leap day is the
/// last day of its year and month lengths follow a regular pattern.
pub fn civil_from_days(days_since_epoch: u64) -> (u64, u32, u32) {
    // 1970-01-01 is day 719_468 counted from 0000-03-01.
    let z = days_since_epoch + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11], 0 = March
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Appends `2026-11-22T10:00:00.123456789Z` for nanoseconds since the epoch.
pub fn push_rfc3339_nanos(out: &mut Vec<u8>, unix_nanos: u64) {
    let secs = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    push_padded(out, year, 4);
    out.push(b'-');
    push_padded(out, u64::from(month), 2);
    out.push(b'-');
    push_padded(out, u64::from(day), 2);
    out.push(b'T');
    push_padded(out, second_of_day / 3_600, 2);
    out.push(b':');
    push_padded(out, second_of_day / 60 % 60, 2);
    out.push(b':');
    push_padded(out, second_of_day % 60, 2);
    out.push(b'.');
    push_padded(out, nanos, 9);
    out.push(b'Z');
}

/// Which bytes force a field into quotes: the delimiter, `"`, CR and LF.
#[derive(Clone)]
pub struct QuoteTable([bool; 256]);

impl QuoteTable {
    /// The table for `delimiter`.
    pub fn new(delimiter: u8) -> Self {
        let mut t = [false; 256];
        for b in [delimiter, b'"', b'\r', b'\n'] {
            t[usize::from(b)] = true;
        }
        Self(t)
    }

    /// Whether `field` must be quoted.
    pub fn needs_quotes(&self, field: &[u8]) -> bool {
        field.iter().any(|&b| self.0[usize::from(b)])
    }

    /// Appends `field`, quoted (with `"` doubled) when needed (RFC 4180).
    pub fn push_field(&self, out: &mut Vec<u8>, field: &[u8]) {
        if !self.needs_quotes(field) {
            out.extend_from_slice(field);
            return;
        }
        out.push(b'"');
        for &b in field {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn integers() {
        assert_eq!(text(|o| push_u64(o, 0)), "0");
        assert_eq!(text(|o| push_u64(o, 1234567890)), "1234567890");
        assert_eq!(text(|o| push_u64(o, u64::MAX)), "18446744073709551615");
        assert_eq!(text(|o| push_i64(o, i64::MIN)), "-9223372036854775808");
        assert_eq!(text(|o| push_i64(o, -5)), "-5");
        assert_eq!(text(|o| push_f64(o, 0.1 + 0.2)), "0.30000000000000004");
        assert_eq!(text(|o| push_f64(o, 2.0)), "2");
        assert_eq!(text(|o| push_f64(o, f64::NAN)), "NaN");
        // The whole-value shortcut writes what `Display` writes.
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            42.0,
            -7e3,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            -9_007_199_254_740_993.0,
            1e300,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.5,
            -2.5,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(text(|o| push_f64(o, v)), format!("{v}"), "{v:?}");
        }
    }

    /// Walks the calendar one day at a time with the plain leap-year rule
    /// and checks every day from 1970 to 2600.
    #[test]
    fn civil_dates_match_a_day_by_day_calendar() {
        let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970u64, 1u32, 1u32);
        for days in 0..(631 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(
            text(|o| push_rfc3339_nanos(o, 0)),
            "1970-01-01T00:00:00.000000000Z"
        );
        // date -u -d @1795341600 → Sun Nov 22 10:00:00 UTC 2026
        assert_eq!(
            text(|o| push_rfc3339_nanos(o, 1_795_341_600_123_456_789)),
            "2026-11-22T10:00:00.123456789Z"
        );
        // 2000-02-29T23:59:59.000000001Z, a leap day of a century divisible by 400.
        assert_eq!(
            text(|o| push_rfc3339_nanos(o, 951_868_799_000_000_001)),
            "2000-02-29T23:59:59.000000001Z"
        );
        assert_eq!(
            text(|o| push_rfc3339_nanos(o, u64::MAX)),
            "2554-07-21T23:34:33.709551615Z"
        );
    }

    #[test]
    fn quoting() {
        let q = QuoteTable::new(b',');
        let field = |s: &str| text(|o| q.push_field(o, s.as_bytes()));
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a;b"), "a;b");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field(""), "");
        let semi = QuoteTable::new(b';');
        assert!(semi.needs_quotes(b"a;b"));
        assert!(!semi.needs_quotes(b"a,b"));
    }
}
