//! Text primitives of the line protocol: escaping of names, keys and
//! string values, and number formatting, all appending to a `Vec<u8>`.
//!
//! Escaping follows the line protocol reference: measurement names escape
//! commas and spaces; tag keys, tag values and field keys escape commas,
//! equals signs and spaces; string field values escape double quotes and
//! backslashes. Two cases the reference leaves to the writer are made safe
//! here so that a hostile name (a process can call itself anything) can
//! never break the parsing of a whole batch:
//! - newline, carriage return and tab become the two-character texts `\n`,
//!   `\r`, `\t` (the protocol cannot carry them);
//! - a backslash at the end of a name, key or tag value, or directly before
//!   a character this module escapes, is dropped: InfluxDB 1.x reads it as
//!   an escape of the separator that follows and 2.x reads it differently, so
//!   no spelling of it is safe for both.

use std::fmt::{self, Write as _};

/// An unsigned value as a field: an integer (`i` suffix) when it fits in
/// i64, else a float. The `u` suffix would keep it exact, but InfluxDB 1.x
/// rejects it unless built with unsigned support.
pub fn write_unsigned_field(v: u64, out: &mut Vec<u8>) {
    if v <= i64::MAX as u64 {
        write_u64(v, out);
        out.push(b'i');
    } else {
        write_f64(v as f64, out);
    }
}

/// Writes `v` in the shortest form that parses back to the same f64.
/// Plain decimals for ordinary magnitudes, scientific notation (`1.5e-7`,
/// `2e300`, which every server parses) for the others so that a line never
/// holds hundreds of digits. Callers skip NaN and infinities.
pub fn write_f64(v: f64, out: &mut Vec<u8>) {
    let magnitude = v.abs();
    // Whole numbers (counts of joules, bytes as floats) skip the shortest
    // digit search: their integer digits are exactly what Display prints.
    if magnitude < 1e15 && v.trunc() == v {
        write_i64(v as i64, out);
        return;
    }
    let mut w = VecWriter(out);
    // Writing into a Vec cannot fail.
    let _ = if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        write!(w, "{v:e}")
    } else {
        write!(w, "{v}")
    };
}

/// `fmt::Write` straight into a `Vec<u8>` (the `io::Write` path adds an
/// adapter and error plumbing per call).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes the decimal digits of `v`, two at a time from a table.
pub fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[pos..]);
}

/// Writes the decimal digits of `v` with its sign.
pub fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(v.unsigned_abs(), out);
}

/// Escapes a measurement name (commas and spaces).
pub fn escape_measurement(s: &str, out: &mut Vec<u8>) {
    escape_with(s, |b| b == b',' || b == b' ', &MEASUREMENT_NEEDS_WORK, out);
}

/// Escapes a tag key, tag value or field key (commas, equals signs, spaces).
pub fn escape_key(s: &str, out: &mut Vec<u8>) {
    escape_with(
        s,
        |b| b == b',' || b == b'=' || b == b' ',
        &KEY_NEEDS_WORK,
        out,
    );
}

/// A table of the bytes listed in `bytes`, for one-lookup scans.
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        set[bytes[i] as usize] = true;
        i += 1;
    }
    set
}

/// Bytes that make a measurement name leave the copy-as-is fast path.
static MEASUREMENT_NEEDS_WORK: [bool; 256] = byte_set(b", \\\n\r\t");
/// Bytes that make a key or tag value leave the fast path.
static KEY_NEEDS_WORK: [bool; 256] = byte_set(b",= \\\n\r\t");
/// Bytes that make a string field value leave the fast path.
static STRING_NEEDS_WORK: [bool; 256] = byte_set(b"\"\\\n\r\t");

fn is_control(b: u8) -> bool {
    b == b'\n' || b == b'\r' || b == b'\t'
}

fn control_text(b: u8) -> &'static [u8] {
    match b {
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        _ => b"\\t",
    }
}

fn escape_with(s: &str, special: impl Fn(u8) -> bool, needs_work: &[bool; 256], out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    // Fast path: nearly every name is plain.
    if !bytes.iter().any(|&b| needs_work[b as usize]) {
        out.extend_from_slice(bytes);
        return;
    }
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\\' {
            // A backslash that a parser would take as escaping the next
            // separator is dropped (see the module documentation).
            let unsafe_position = match bytes.get(i + 1) {
                None => true,
                Some(&next) => {
                    special(next) || next == b'\\' && ends_backslash_run(bytes, i, &special)
                }
            };
            if !unsafe_position {
                out.push(b'\\');
            }
        } else if special(b) {
            out.push(b'\\');
            out.push(b);
        } else if is_control(b) {
            out.extend_from_slice(control_text(b));
        } else {
            out.push(b);
        }
    }
}

/// Whether the run of backslashes starting at `i` is followed by a special
/// byte or the end (then every backslash of the run is dropped).
fn ends_backslash_run(bytes: &[u8], i: usize, special: &impl Fn(u8) -> bool) -> bool {
    match bytes[i..].iter().find(|&&b| b != b'\\') {
        None => true,
        Some(&b) => special(b),
    }
}

/// Escapes the content of a string field value (double quotes and
/// backslashes; control characters as `\n`, `\r`, `\t` texts).
pub fn escape_string_field(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| STRING_NEEDS_WORK[b as usize]) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            b if is_control(b) => out.extend_from_slice(control_text(b)),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(f: fn(&str, &mut Vec<u8>), s: &str) -> String {
        let mut out = Vec::new();
        f(s, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_are_formatted_like_display() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            12345,
            999_999,
            1_000_000,
            u32::MAX as u64,
            i64::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        for v in [0i64, -1, -100, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn floats_round_trip() {
        for v in [
            0.0f64,
            -0.0,
            1.0,
            0.1,
            1.5,
            -2.75,
            123456.789,
            1e-4,
            1.5e-7,
            9.999e15,
            1e16,
            2e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            std::f64::consts::PI,
        ] {
            let mut out = Vec::new();
            write_f64(v, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.len() < 30, "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
        }
    }

    #[test]
    fn unsigned_fields_use_the_integer_suffix_or_a_float_beyond_i64() {
        let mut out = Vec::new();
        write_unsigned_field(42, &mut out);
        assert_eq!(out, b"42i");
        out.clear();
        write_unsigned_field(i64::MAX as u64, &mut out);
        assert_eq!(out, b"9223372036854775807i");
        out.clear();
        write_unsigned_field(u64::MAX, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.parse::<f64>().unwrap(), u64::MAX as f64);
        assert!(!text.ends_with('i') && !text.ends_with('u'));
    }

    // The escaping examples of the line protocol reference.
    #[test]
    fn measurement_escapes_commas_and_spaces_only() {
        assert_eq!(esc(escape_measurement, "wea ther"), "wea\\ ther");
        assert_eq!(esc(escape_measurement, "wea,ther"), "wea\\,ther");
        assert_eq!(
            esc(escape_measurement, "my Measurement"),
            "my\\ Measurement"
        );
        assert_eq!(esc(escape_measurement, "a=b"), "a=b");
        assert_eq!(esc(escape_measurement, "cpu"), "cpu");
    }

    #[test]
    fn keys_escape_commas_equals_and_spaces() {
        assert_eq!(esc(escape_key, "location place"), "location\\ place");
        assert_eq!(esc(escape_key, "us,midwest"), "us\\,midwest");
        assert_eq!(esc(escape_key, "temp=rature"), "temp\\=rature");
        assert_eq!(esc(escape_key, "tag Key1"), "tag\\ Key1");
        assert_eq!(esc(escape_key, "🍭"), "🍭");
    }

    #[test]
    fn string_fields_escape_quotes_and_backslashes() {
        assert_eq!(
            esc(escape_string_field, "\"string\" within a string"),
            "\\\"string\\\" within a string"
        );
        assert_eq!(esc(escape_string_field, "too\"hot\""), "too\\\"hot\\\"");
        assert_eq!(esc(escape_string_field, "C:\\dir"), "C:\\\\dir");
        assert_eq!(esc(escape_string_field, "a, b = c"), "a, b = c");
        assert_eq!(esc(escape_string_field, "Launch 🚀"), "Launch 🚀");
    }

    #[test]
    fn newlines_and_dangerous_backslashes_cannot_break_a_line() {
        assert_eq!(esc(escape_key, "a\nb"), "a\\nb");
        assert_eq!(esc(escape_string_field, "a\nb"), "a\\nb");
        assert_eq!(esc(escape_key, "a\\b"), "a\\b");
        assert_eq!(esc(escape_key, "end\\"), "end");
        assert_eq!(esc(escape_key, "end\\\\"), "end");
        assert_eq!(esc(escape_key, "a\\,b"), "a\\,b");
        assert_eq!(esc(escape_key, "a\\\\ b"), "a\\ b");
        assert_eq!(esc(escape_key, "a\\\\b"), "a\\\\b");
        assert_eq!(esc(escape_measurement, "m\\"), "m");
    }
}
